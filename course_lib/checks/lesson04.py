"""Checkers for the exercises of lesson 04 (masks).

References: ``course_lib.masks`` and ``torch.softmax``; each typical wrong answer (inverted mask, shape that
does not broadcast, future visible, OR instead of AND, NaN left in an empty row, ...) is computed and named.
"""
from __future__ import annotations

import numbers
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor

from .._checks import shape_str
from ..masks import causal_mask, document_mask, padding_mask_from_ids
from ._harness import Hint, NotDone, call_learner, checker, compare, expect_tensor, is_close

INVERTED = "your mask hides the real tokens, not the padding: True must mean 'may attend' (a real token)"
FUTURE = ("future visible: query i must see keys 0..i, the lower triangle (torch.tril), not the upper one "
          "(torch.triu)")
NO_DIAGONAL = "the diagonal is excluded, so a token cannot see itself: use torch.tril(..., diagonal=0)"
OR = "OR instead of AND: a key is visible only when *both* masks allow it: combine with &, not |"


def _mask(value: Any, what: str, shape: tuple[int, ...], shape_hints: Mapping[tuple[int, ...], str]) -> Tensor:
    """The learner's mask: a tensor of ``shape`` (known wrong shapes get their hint) and dtype bool."""
    out = expect_tensor(value, what)
    if tuple(out.shape) != shape:
        hint = shape_hints.get(tuple(out.shape), "")
        raise Hint(f"{what} has shape {shape_str(out.shape)}; expected {shape_str(shape)}. {hint}".strip())
    if out.dtype != torch.bool:
        raise Hint(f"{what} has dtype {out.dtype}: make it bool (a comparison such as ids != pad_id gives one). "
                   "masked_fill refuses other dtypes, and F.scaled_dot_product_attention *adds* a float mask to "
                   "the scores instead of blocking them")
    return out


def _compare_masks(out: Tensor, expected: Tensor, what: str, case: str, mistakes: list[tuple[Tensor, str]]) -> None:
    compare(out.double(), expected.double(), what=what, case=case,
            mistakes=[(m.expand_as(expected).double(), hint) for m, hint in mistakes])


_IDS = [  # name, token ids [B, S], pad_id
    ("B=3, pad_id=0", [[5, 16, 20, 0, 0], [4, 7, 6, 9, 10], [11, 12, 0, 0, 0]], 0),
    ("batch of 1, no padding", [[3, 5, 8]], 0),
    ("pad_id=3, where id 0 is a real word", [[1, 0, 5, 3, 3], [1, 7, 0, 2, 3]], 3),
]


@checker("padding mask")
def check_padding_mask(make_padding_mask: Callable[[Tensor, int], Tensor]) -> str:
    """``make_padding_mask(token_ids [B, S], pad_id) -> bool [B, 1, 1, S]``, True at real tokens."""
    what = "make_padding_mask(token_ids, pad_id)"
    for name, rows, pad_id in _IDS:
        ids = torch.tensor(rows)
        b, s = ids.shape
        out = _mask(call_learner(make_padding_mask, ids.clone(), pad_id, what=what), what, (b, 1, 1, s), {
            (b, s): "[B, S] does not broadcast against the scores [B, H, T_q, S]: broadcasting aligns shapes from "
                    "the right, so B would line up with the query axis. Add two axes: mask[:, None, None, :]",
            (b, s, 1, 1): "The key axis must come last, as in the scores [B, H, T_q, S]: use [:, None, None, :]",
            (b, 1, s): "One axis is missing: the scores have 4 dims [B, H, T_q, S]",
            (b, 1, s, 1): "The key axis must come last, as in the scores [B, H, T_q, S]: use [:, None, None, :]",
        })
        expected = padding_mask_from_ids(ids, pad_id)
        zero = (ids != 0)[:, None, None, :]
        _compare_masks(out, expected, what, name, [
            (~expected, INVERTED),
            (zero, f"you compared with 0, but the pad id here is pad_id={pad_id}: compare with pad_id"),
            (~zero, f"inverted, and compared with 0 instead of pad_id={pad_id}: True must mark real tokens"),
        ])
    return "bool [B, 1, 1, S], True at real tokens, for any pad_id (3 cases)"


_TGT = [  # name, target ids [B, T], pad_id
    ("B=2, one sentence padded on the left", [[1, 13, 16, 20, 0, 0], [0, 0, 1, 14, 17, 18]], 0),
    ("batch of 1, no padding", [[1, 5, 6]], 0),
    ("pad_id=3", [[1, 0, 4, 3, 3]], 3),
]


@checker("decoder self-attention mask")
def check_decoder_mask(make_decoder_mask: Callable[[Tensor, int], Tensor]) -> str:
    """``make_decoder_mask(tgt_ids [B, T], pad_id) -> bool [B, 1, T, T]``: causal AND padding (keys)."""
    what = "make_decoder_mask(tgt_ids, pad_id)"
    for name, rows, pad_id in _TGT:
        ids = torch.tensor(rows)
        b, t = ids.shape
        out = _mask(call_learner(make_decoder_mask, ids.clone(), pad_id, what=what), what, (b, 1, t, t), {
            (b, t, t): "Add the head axis, [B, 1, T, T], so the mask broadcasts over the heads",
            (t, t): "Padding differs from sentence to sentence, so the mask needs the batch axis: [B, 1, T, T]",
            (b, 1, 1, t): "That is the padding mask alone: combine it with a causal mask [T, T] using &",
        })
        keys = padding_mask_from_ids(ids, pad_id)  # [B, 1, 1, T]
        queries = keys.transpose(-2, -1)  # [B, 1, T, 1]
        ones = torch.ones(t, t, dtype=torch.bool)
        causal = causal_mask(t)
        expected = keys & causal
        _compare_masks(out, expected, what, name, [
            (keys & ones.triu(), FUTURE), (keys & ones.triu(1), FUTURE), (keys & ones.tril(-1), NO_DIAGONAL),
            (keys | causal, OR),
            (causal, "the padding part is missing: <pad> keys are visible"),
            (keys, "the causal part is missing: every query sees the future"),
            (queries & causal, "you masked padded queries (rows) instead of padded keys (columns): the padding "
                               "mask must be [B, 1, 1, T], so it blocks keys"),
            (queries & keys & causal, "you masked padded queries as well as keys: those rows are left with no key "
                                      "at all (NaN after a plain softmax), and nobody reads them anyway: mask keys "
                                      "only"),
            (~expected, "inverted: True must mean 'may attend'"),
        ])
    return "causal AND key padding, [B, 1, T, T] (3 cases)"


def _padding_masks() -> list[tuple[str, Tensor]]:
    return [(name, padding_mask_from_ids(torch.tensor(rows), pad)) for name, rows, pad in _IDS[:2]]


@checker("course mask -> key_padding_mask")
def check_key_padding_mask(to_key_padding_mask: Callable[[Tensor], Tensor]) -> str:
    """``to_key_padding_mask(mask [B, 1, 1, S], True = attend) -> bool [B, S], True = ignore``."""
    what = "to_key_padding_mask(mask)"
    for name, mask in _padding_masks():
        b, s = mask.shape[0], mask.shape[-1]
        out = _mask(call_learner(to_key_padding_mask, mask.clone(), what=what), what, (b, s), {
            (b, 1, 1, s): "nn.MultiheadAttention wants key_padding_mask as [B, S]: take mask[:, 0, 0, :]",
            (b, 1, s): "nn.MultiheadAttention wants key_padding_mask as [B, S]: take mask[:, 0, 0, :]",
        })
        _compare_masks(out, ~mask[:, 0, 0, :], what, name, [
            (mask[:, 0, 0, :], "you forgot to invert: key_padding_mask uses True = ignore, the course mask True = "
                               "attend. Passed like this, nn.MultiheadAttention attends only to the padding"),
        ])
    gen = torch.Generator().manual_seed(4)
    mask = _padding_masks()[0][1]
    mha = torch.nn.MultiheadAttention(8, 2, batch_first=True)
    x, source = torch.randn(3, 4, 8, generator=gen), torch.randn(3, mask.shape[-1], 8, generator=gen)
    key_padding_mask = call_learner(to_key_padding_mask, mask.clone(), what=what)
    with torch.no_grad():
        theirs = mha(x, source, source, key_padding_mask=key_padding_mask)[0]
        ours = mha(x[:1], source[:1, :3], source[:1, :3])[0]  # sentence 0 without its two pads
    compare(theirs[:1], ours, what="nn.MultiheadAttention with your key_padding_mask", case="behaviour")
    return "[B, S], True = ignore: nn.MultiheadAttention with it ignores exactly the padding"


@checker("course mask -> additive float mask")
def check_additive_mask(to_additive_mask: Callable[[Tensor], Tensor]) -> str:
    """``to_additive_mask(mask) -> float mask of the same shape``: 0.0 where True, ``-inf`` where False."""
    what = "to_additive_mask(mask)"
    cases = _padding_masks() + [("causal [4, 4]", causal_mask(4)),
                                ("combined [2, 1, 6, 6]", padding_mask_from_ids(torch.tensor(_TGT[0][1]), 0)
                                 & causal_mask(6))]
    for name, mask in cases:
        out = expect_tensor(call_learner(to_additive_mask, mask.clone(), what=what), what, expected_shape=mask.shape)
        if not out.dtype.is_floating_point:
            raise Hint(f"{what} has dtype {out.dtype}: an additive mask is a float tensor (0.0 / -inf). "
                       "F.scaled_dot_product_attention reads a bool mask as True = attend, and ints are refused")
        if out.isnan().any():
            raise Hint(f"case '{name}': NaN in your mask. 0 * -inf is NaN, so (~mask).float() * float('-inf') puts "
                       "NaN where the mask is True: use torch.zeros(...).masked_fill(~mask, float('-inf'))")
        expected = torch.zeros(mask.shape).masked_fill(~mask, float("-inf"))
        blocked = out.detach().cpu()[~mask]
        if bool((out.detach().cpu()[mask] == 0).all()) and blocked.numel() and bool((blocked < -1).all()) \
                and bool(blocked.isfinite().all()):
            raise Hint(f"blocked positions hold {blocked.min().item():g}, not -inf. A large finite number gives the "
                       "same weights in float32, but not in float16 (-1e9 overflows, masked_fill refuses it) and "
                       "it turns an empty row into a uniform one instead of exposing it: use float('-inf')")
        compare(out.float(), expected, what=what, case=name, mistakes=[
            (mask.float(), "1 / 0 instead of 0 / -inf: the mask is *added* to the scores, so +1 and +0 block "
                           "nothing. Use 0.0 where True and float('-inf') where False"),
            ((~mask).float(), "0 / 1: adding 1 to a blocked score does not block it: use float('-inf') there"),
            (torch.zeros(mask.shape).masked_fill(mask, float("-inf")), "inverted: -inf where the mask is True "
                                                                       "(may attend); it belongs where it is False"),
        ])
    return "0.0 where True, -inf where False, same shape (padding, causal and combined masks)"


def _reference_softmax(scores: Tensor, mask: Tensor, dim: int = -1) -> Tensor:
    """torch's softmax of the masked scores, with the 0/0 of empty rows replaced by 0."""
    return torch.softmax(scores.masked_fill(~mask, float("-inf")), dim=dim).nan_to_num(0.0)


@checker("masked softmax without NaN")
def check_masked_softmax(masked_softmax: Callable[[Tensor, Tensor], Tensor]) -> str:
    """``masked_softmax(attn_scores [..., T_q, T_k], mask) -> attn_weights``; fully masked rows give zeros."""
    what = "masked_softmax(attn_scores, mask)"
    gen = torch.Generator().manual_seed(5)
    left = padding_mask_from_ids(torch.tensor([[0, 0, 1, 13, 16, 20]]), 0) & causal_mask(6)
    cases = [
        ("padding mask, one sentence all <pad>", torch.randn(3, 2, 4, 5, generator=gen),
         torch.tensor([[1, 1, 1, 0, 0], [0, 0, 0, 0, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)[:, None, None, :]),
        ("left padding + causal: two empty rows", torch.randn(1, 2, 6, 6, generator=gen), left),
        ("causal, no empty row", torch.randn(2, 2, 4, 4, generator=gen), causal_mask(4)),
        ("float64, T_q != T_k, mask [T_q, T_k]", torch.randn(2, 3, 5, generator=gen, dtype=torch.float64),
         torch.rand(3, 5, generator=gen) > 0.5),
    ]
    for name, scores, mask in cases:
        out = expect_tensor(call_learner(masked_softmax, scores.clone(), mask.clone(), what=what), what,
                            expected_shape=scores.shape)
        if out.dtype != scores.dtype:
            raise Hint(f"{what} returned {out.dtype} for {scores.dtype} scores: keep the scores' dtype")
        empty = ~mask.any(dim=-1, keepdim=True).expand(scores.shape[:-1] + (1,))  # [..., T_q, 1]
        if out.isnan().any():
            raise Hint(f"case '{name}': NaN left in. A row whose keys are all masked is softmax(-inf, ..., -inf) "
                       "= 0/0: find those rows with mask.any(dim=-1, keepdim=True) and give them zeros")
        expected = _reference_softmax(scores, mask)
        if is_close(out, expected):
            continue
        zero_any = expected.masked_fill(~mask.all(dim=-1, keepdim=True), 0.0)
        for wrong, hint in [
            (torch.softmax(scores, dim=-1), "the mask is ignored: set masked scores to -inf before the softmax"),
            (torch.softmax(scores, dim=-1) * mask, "you zeroed masked weights after the softmax without "
                                                   "renormalising, so rows with visible keys no longer sum to 1: "
                                                   "mask the scores (-inf) *before* the softmax"),
            (torch.softmax(scores.masked_fill(~mask, torch.finfo(scores.dtype).min), dim=-1),
             "fully masked rows came out uniform (every key equally weighted): a finite fill value hides the empty "
             "row instead of handling it. Set the weights of rows with no visible key to 0"),
            (zero_any, "zeros put in the wrong rows: you zeroed every row with *some* masked key; only rows where "
                       "*every* key is masked (mask.any(dim=-1) is False) should be zero"),
            (_reference_softmax(scores, mask, dim=-2), "softmax over the queries (dim=-2): use dim=-1, the keys"),
        ]:
            if is_close(out, wrong.expand_as(out)):
                raise Hint(f"case '{name}': {hint}")
        if not bool((out * empty).eq(0).all()):
            raise Hint(f"case '{name}': rows with no visible key must be all zeros; yours are not")
        sums = out.sum(dim=-1, keepdim=True)[~empty]
        if not torch.allclose(sums.double(), torch.ones_like(sums, dtype=torch.float64), atol=1e-5):
            raise Hint(f"case '{name}': rows with a visible key must sum to 1; yours sum to "
                       f"{sums.min().item():.3g} ... {sums.max().item():.3g}")
        compare(out, expected, what=what, case=name)
    return "softmax over the visible keys, zeros for rows with none, never NaN (4 cases, float64 too)"


@checker("packed causal mask")
def check_packed_causal_mask(make_packed_causal_mask: Callable[[Tensor], Tensor]) -> str:
    """``make_packed_causal_mask(segment_ids [B, T]) -> bool [B, 1, T, T]``: same document AND causal."""
    what = "make_packed_causal_mask(segment_ids)"
    for name, rows in [("three documents in one row", [[0, 0, 0, 1, 1, 1, 1, 2, 2, 2]]),
                       ("B=2, different packings", [[0, 0, 1, 1, 1], [0, 1, 1, 2, 2]]),
                       ("one document, id 5", [[5, 5, 5, 5]])]:
        ids = torch.tensor(rows)
        b, t = ids.shape
        out = _mask(call_learner(make_packed_causal_mask, ids.clone(), what=what), what, (b, 1, t, t), {
            (b, t, t): "Add the head axis, [B, 1, T, T], so the mask broadcasts over the heads",
            (t, t): "Packings differ between rows, so the mask needs the batch axis: [B, 1, T, T]",
        })
        same_doc, ones = document_mask(ids), torch.ones(t, t, dtype=torch.bool)
        expected = same_doc & causal_mask(t)
        _compare_masks(out, expected, what, name, [
            (same_doc, "the causal part is missing: inside a document, tokens see their own future"),
            (causal_mask(t), "the document part is missing: tokens see the documents packed before theirs"),
            (same_doc | causal_mask(t), OR),
            (same_doc & ones.triu(), FUTURE), (same_doc & ones.tril(-1), NO_DIAGONAL),
            (~expected, "inverted: True must mean 'may attend'"),
        ])
    return "block-diagonal AND causal, [B, 1, T, T] (3 cases)"


@checker("predict: empty rows with left padding")
def check_empty_rows_prediction(predicted_empty_rows: Any) -> str:
    """How many query rows of the left-padded batch of the exercise have no key to attend to."""
    if predicted_empty_rows is None:
        raise NotDone("not done yet: predicted_empty_rows is still None")
    if isinstance(predicted_empty_rows, bool) or not isinstance(predicted_empty_rows, numbers.Integral):
        raise Hint(f"predicted_empty_rows should be a whole number, but got {predicted_empty_rows!r}")
    ids = torch.tensor([[1, 13, 16, 20, 2], [0, 0, 0, 1, 14]])
    mask = padding_mask_from_ids(ids, 0) & causal_mask(5)  # [2, 1, 5, 5]
    empty = ~mask.any(dim=-1)[:, 0]  # [2, 5]
    rows = [(int(b), int(i)) for b, i in empty.nonzero()]
    nan_rows = torch.softmax(torch.zeros(2, 1, 5, 5).masked_fill(~mask, float("-inf")), -1).isnan().all(-1)[:, 0]
    if predicted_empty_rows == len(rows):
        return (f"{len(rows)} rows, (sentence, query) = {rows}: each sees only keys at or before it, all <pad>; "
                f"a plain softmax gives NaN in exactly those rows ({int(nan_rows.sum())})")
    hints = {
        0: "left padding puts the pads first: query 0 of the second sentence may look only at key 0 (causal), "
           "and key 0 is <pad>",
        1: "query 0 is not the only one: query 1 of the second sentence sees keys 0-1, query 2 keys 0-2",
        2: "one more: query 2 of the second sentence sees keys 0, 1 and 2, all three <pad>",
    }
    raise Hint(f"{predicted_empty_rows} is not it: "
               + hints.get(int(predicted_empty_rows), f"the experiment finds {len(rows)}: (sentence, query) = {rows}"))
