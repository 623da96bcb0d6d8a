"""Checkers for the exercises of lesson 04 (masks).

Each exercise is its reference, its cases and its list of named mistakes (``MISTAKES``), run by
``_harness.run_cases`` (or ``check_answer`` for the prediction). References: ``course_lib.masks`` and
``torch.softmax``. A few mistakes show as a property of the result rather than one wrong output (any finite
fill value, rows that do not sum to 1); those are named from the property after the harness has found no
listed mistake.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from ..masks import causal_mask, document_mask, padding_mask_from_ids
from ._answers import check_answer
from ._cases import Case, Mistake, call_learner
from ._compare import compare, same
from ._harness import run_cases, second_look
from ._results import Hint, checker

INVERTED = "your mask hides the real tokens, not the padding: True must mean 'may attend' (a real token)"
FUTURE = ("future visible: query i must see keys 0..i, the lower triangle (torch.tril), not the upper one "
          "(torch.triu)")
NO_DIAGONAL = "the diagonal is excluded, so a token cannot see itself: use torch.tril(..., diagonal=0)"
OR = "OR instead of AND: a key is visible only when *both* masks allow it: combine with &, not |"
NOT_BOOL = ("make it bool (a comparison such as ids != pad_id gives one). masked_fill refuses other dtypes, and "
            "F.scaled_dot_product_attention *adds* a float mask to the scores instead of blocking them")
HEAD_AXIS = "Add the head axis, [B, 1, T, T], so the mask broadcasts over the heads"
# a second look for failures no listed mistake explained, and for a dtype alone: a mistake that differs from the
# reference only in dtype is never matched by value
_SECOND_LOOK = (None, "wrong_dtype")


def _tril(n: int, diagonal: int = 0) -> Tensor:
    return torch.ones(n, n, dtype=torch.bool).tril(diagonal)


def _triu(n: int, diagonal: int = 0) -> Tensor:
    return torch.ones(n, n, dtype=torch.bool).triu(diagonal)


# --- Exercise 1 · make_padding_mask(token_ids, pad_id) ---------------------------------------------

_IDS = [  # name, token ids [B, S], pad_id
    ("B=3, pad_id=0", [[5, 16, 20, 0, 0], [4, 7, 6, 9, 10], [11, 12, 0, 0, 0]], 0),
    ("batch of 1, no padding", [[3, 5, 8]], 0),
    ("pad_id=3, where id 0 is a real word", [[1, 0, 5, 3, 3], [1, 7, 0, 2, 3]], 3),
]
# a batch of 1 that is padded: without it, code that is wrong in a way a mask without padding hides (a flip,
# a finite fill) would look right for a batch of 1 only
_PADDED_ONE = ("batch of 1, padded", [[7, 2, 9, 0, 0]], 0)
# pad_id=3 first: there, "inverted" and "inverted and compared with 0" give different masks
PADDING_CASES = [Case(name, (torch.tensor(rows), pad), batch=len(rows), info={"pad_id": pad})
                 for name, rows, pad in (_IDS[2], _IDS[0], _IDS[1], _PADDED_ONE)]


def padding_mask_reference(token_ids: Tensor, pad_id: int) -> Tensor:
    return padding_mask_from_ids(token_ids, pad_id)  # [B, 1, 1, S]


_KEY_LAST = "The key axis must come last, as in the scores [B, H, T_q, S]: use [:, None, None, :]"
PADDING_MISTAKES = [
    Mistake("inverted", INVERTED, lambda ids, pad: (ids == pad)[:, None, None, :]),
    Mistake("compared_with_zero", "you compared with 0, but the pad id here is pad_id={pad_id}: compare with pad_id",
            lambda ids, pad: (ids != 0)[:, None, None, :]),
    Mistake("inverted_and_compared_with_zero", "inverted, and compared with 0 instead of pad_id={pad_id}: True must "
            "mark real tokens", lambda ids, pad: (ids == 0)[:, None, None, :]),
    Mistake("greater_than_pad_id", "ids > pad_id also hides every real token whose id is below pad_id (here "
            "pad_id={pad_id}): use ids != pad_id", lambda ids, pad: (ids > pad)[:, None, None, :]),
    Mistake("not_bool", NOT_BOOL, lambda ids, pad: (ids != pad)[:, None, None, :].long()),  # float too
    Mistake("does_not_broadcast", "[B, S] does not broadcast against the scores [B, H, T_q, S]: broadcasting aligns "
            "shapes from the right, so B would line up with the query axis. Add two axes: mask[:, None, None, :]",
            lambda ids, pad: ids != pad, match="shape"),
    Mistake("key_axis_first", _KEY_LAST, lambda ids, pad: (ids != pad)[:, :, None, None], match="shape"),
    Mistake("key_axis_third", _KEY_LAST, lambda ids, pad: (ids != pad)[:, None, :, None], match="shape"),
    Mistake("axis_missing", "One axis is missing: the scores have 4 dims [B, H, T_q, S]: use [:, None, None, :]",
            lambda ids, pad: (ids != pad)[:, None, :], match="shape"),
]


@checker("Exercise 1 · make_padding_mask(token_ids, pad_id)")
def check_padding_mask(make_padding_mask: Callable[[Tensor, int], Tensor]) -> str:
    """``make_padding_mask(token_ids [B, S], pad_id) -> bool [B, 1, 1, S]``, True at real tokens."""
    return run_cases(make_padding_mask, reference=padding_mask_reference, cases=PADDING_CASES,
                     mistakes=PADDING_MISTAKES, what="make_padding_mask(token_ids, pad_id)",
                     passed="bool [B, 1, 1, S], True at real tokens, for any pad_id (4 cases)")


# --- Exercise 2 · make_decoder_mask(tgt_ids, pad_id) ----------------------------------------------

_TGT = [  # name, target ids [B, T], pad_id
    ("B=2, one sentence padded on the left", [[1, 13, 16, 20, 0, 0], [0, 0, 1, 14, 17, 18]], 0),
    ("batch of 1, no padding", [[1, 5, 6]], 0),
    ("pad_id=3", [[1, 0, 4, 3, 3]], 3),
]
DECODER_CASES = [Case(name, (torch.tensor(rows), pad), batch=len(rows)) for name, rows, pad in _TGT]


def decoder_mask_reference(tgt_ids: Tensor, pad_id: int) -> Tensor:
    return padding_mask_from_ids(tgt_ids, pad_id) & causal_mask(tgt_ids.shape[1])  # [B, 1, T, T]


def _decoder(tgt_ids: Tensor, pad_id: int, causal: Callable[[int], Tensor] = _tril,
             combine: Callable[[Tensor, Tensor], Tensor] = lambda pad, causal: pad & causal,
             padding: str = "keys") -> Tensor:
    """The decoder mask with one knob per typical mistake; always ``[B, 1, T, T]``."""
    b, t = tgt_ids.shape
    keys = padding_mask_from_ids(tgt_ids, pad_id)  # [B, 1, 1, T]
    pad = {"keys": keys, "queries": keys.transpose(-2, -1), "both": keys & keys.transpose(-2, -1),
           "none": torch.ones_like(keys)}[padding]
    return combine(pad, causal(t)).expand(b, 1, t, t)


DECODER_MISTAKES = [
    Mistake("upper_triangle", FUTURE, lambda ids, pad: _decoder(ids, pad, causal=_triu)),
    Mistake("strict_upper_triangle", FUTURE, lambda ids, pad: _decoder(ids, pad, causal=lambda n: _triu(n, 1))),
    Mistake("no_diagonal", NO_DIAGONAL, lambda ids, pad: _decoder(ids, pad, causal=lambda n: _tril(n, -1))),
    Mistake("or_instead_of_and", OR, lambda ids, pad: _decoder(ids, pad, combine=lambda p, c: p | c)),
    Mistake("padding_missing", "the padding part is missing: <pad> keys are visible",
            lambda ids, pad: _decoder(ids, pad, padding="none")),
    Mistake("causal_missing", "the causal part is missing: every query sees the future",
            lambda ids, pad: _decoder(ids, pad, causal=lambda n: _tril(n, n))),
    Mistake("padded_queries", "you masked padded queries (rows) instead of padded keys (columns): the padding mask "
            "must be [B, 1, 1, T], so it blocks keys", lambda ids, pad: _decoder(ids, pad, padding="queries")),
    Mistake("padded_queries_and_keys", "you masked padded queries as well as keys: those rows are left with no key "
            "at all (NaN after a plain softmax), and nobody reads them anyway: mask keys only",
            lambda ids, pad: _decoder(ids, pad, padding="both")),
    Mistake("inverted", "inverted: True must mean 'may attend'", lambda ids, pad: ~decoder_mask_reference(ids, pad)),
    Mistake("not_bool", NOT_BOOL, lambda ids, pad: decoder_mask_reference(ids, pad).long()),  # float too
    Mistake("no_head_axis", HEAD_AXIS, lambda ids, pad: decoder_mask_reference(ids, pad)[:, 0], match="shape"),
    Mistake("no_batch_axis", "Padding differs from sentence to sentence, so the mask needs the batch axis: "
            "[B, 1, T, T]", lambda ids, pad: _tril(ids.shape[1]), match="shape"),
    Mistake("padding_mask_alone", "That is the padding mask alone: combine it with a causal mask [T, T] using &",
            lambda ids, pad: padding_mask_from_ids(ids, pad), match="shape"),
]


@checker("Exercise 2 · make_decoder_mask(tgt_ids, pad_id)")
def check_decoder_mask(make_decoder_mask: Callable[[Tensor, int], Tensor]) -> str:
    """``make_decoder_mask(tgt_ids [B, T], pad_id) -> bool [B, 1, T, T]``: causal AND padding (keys)."""
    return run_cases(make_decoder_mask, reference=decoder_mask_reference, cases=DECODER_CASES,
                     mistakes=DECODER_MISTAKES, what="make_decoder_mask(tgt_ids, pad_id)",
                     passed="causal AND key padding, [B, 1, T, T] (3 cases)")


# --- Exercise 3 · to_key_padding_mask(mask) and to_additive_mask(mask) -----------------------------

def _padding_masks() -> list[tuple[str, Tensor]]:
    return [(name, padding_mask_from_ids(torch.tensor(rows), pad)) for name, rows, pad in (*_IDS[:2], _PADDED_ONE)]


KEY_PADDING_CASES = [Case(name, (mask,)) for name, mask in _padding_masks()]


def key_padding_mask_reference(mask: Tensor) -> Tensor:
    return ~mask[:, 0, 0, :]  # [B, S], True = ignore


_TAKE = "nn.MultiheadAttention wants key_padding_mask as [B, S]: take mask[:, 0, 0, :]"
KEY_PADDING_MISTAKES = [
    Mistake("not_inverted", "you forgot to invert: key_padding_mask uses True = ignore, the course mask True = "
            "attend. Passed like this, nn.MultiheadAttention attends only to the padding",
            lambda mask: mask[:, 0, 0, :]),
    Mistake("squeezed_the_batch", "`.squeeze()` also drops the batch axis when B = 1: take mask[:, 0, 0, :] (or "
            "squeeze only dims 1 and 2)", lambda mask: ~mask.squeeze()),
    Mistake("not_bool", NOT_BOOL, lambda mask: (~mask[:, 0, 0, :]).float()),
    Mistake("four_dims", _TAKE, lambda mask: ~mask, match="shape"),
    Mistake("three_dims", _TAKE, lambda mask: ~mask[:, 0], match="shape"),
]


@checker("Exercise 3 · to_key_padding_mask(mask)")
def check_key_padding_mask(to_key_padding_mask: Callable[[Tensor], Tensor]) -> str:
    """``to_key_padding_mask(mask [B, 1, 1, S], True = attend) -> bool [B, S], True = ignore``; then
    ``nn.MultiheadAttention`` with it must ignore exactly the padding."""
    what = "to_key_padding_mask(mask)"
    run_cases(to_key_padding_mask, reference=key_padding_mask_reference, cases=KEY_PADDING_CASES,
              mistakes=KEY_PADDING_MISTAKES, what=what)
    gen = torch.Generator().manual_seed(4)
    mask = KEY_PADDING_CASES[0].args[0]
    mha = torch.nn.MultiheadAttention(8, 2, batch_first=True)
    x, source = torch.randn(3, 4, 8, generator=gen), torch.randn(3, mask.shape[-1], 8, generator=gen)
    key_padding_mask = call_learner(to_key_padding_mask, mask.clone(), what=what)
    with torch.no_grad():
        theirs = mha(x, source, source, key_padding_mask=key_padding_mask)[0]
        ours = mha(x[:1], source[:1, :3], source[:1, :3])[0]  # sentence 0 without its two pads
    compare(theirs[:1], ours, what="nn.MultiheadAttention with your key_padding_mask", case="behaviour")
    return "[B, S], True = ignore: nn.MultiheadAttention with it ignores exactly the padding"


ADDITIVE_CASES = [Case(name, (mask,)) for name, mask in _padding_masks()] + [
    Case("causal [4, 4]", (causal_mask(4),)),
    Case("combined [2, 1, 6, 6]", (padding_mask_from_ids(torch.tensor(_TGT[0][1]), 0) & causal_mask(6),)),
]


def additive_mask_reference(mask: Tensor) -> Tensor:
    return torch.zeros(mask.shape, dtype=torch.float32).masked_fill(~mask, float("-inf"))


FINITE_FILL = ("blocked positions hold a large finite number, not -inf. It gives the same weights in float32, but "
               "not in float16 (-1e9 overflows, masked_fill refuses it) and it turns an empty row into a uniform one "
               "instead of exposing it: use float('-inf')")
ADDITIVE_MISTAKES = [
    Mistake("one_zero", "1 / 0 instead of 0 / -inf: the mask is *added* to the scores, so +1 and +0 block nothing. "
            "Use 0.0 where True and float('-inf') where False", lambda mask: mask.float()),
    Mistake("zero_one", "0 / 1: adding 1 to a blocked score does not block it: use float('-inf') there",
            lambda mask: (~mask).float()),
    Mistake("inverted", "inverted: -inf where the mask is True (may attend); it belongs where it is False",
            lambda mask: torch.zeros(mask.shape).masked_fill(mask, float("-inf"))),
    Mistake("one_where_true", "1.0 where the mask is True: an additive mask holds 0.0 where it lets a key through, "
            "so adding it leaves those scores as they are (and it can be added to other masks and biases): "
            "torch.zeros(...).masked_fill(~mask, float('-inf'))",
            lambda mask: torch.ones(mask.shape).masked_fill(~mask, float("-inf"))),
    Mistake("nan_from_zero_times_inf", "NaN in your mask. 0 * -inf is NaN, so (~mask).float() * float('-inf') puts "
            "NaN where the mask is True: use torch.zeros(...).masked_fill(~mask, float('-inf'))",
            lambda mask: (~mask).float() * float("-inf")),
    Mistake("finite_fill", FINITE_FILL, lambda mask: torch.zeros(mask.shape).masked_fill(~mask, -1e9)),
    Mistake("float64", "the exercise asks for float32 (torch.zeros(...) gives it by default); a float64 mask turns "
            "float32 scores into float64 when added", lambda mask: additive_mask_reference(mask).double()),
    Mistake("bool_returned", "an additive mask is a float tensor (0.0 / -inf). F.scaled_dot_product_attention reads "
            "a bool mask as True = attend, and ints are refused", lambda mask: mask),
]


def _explain_additive(result: Any, case: Case) -> Hint | None:
    mask = case.args[0]
    if not isinstance(result, Tensor) or result.shape != mask.shape or not result.dtype.is_floating_point:
        return None
    if result.dtype == torch.float64 and same(result, additive_mask_reference(mask)):
        mistake = next(m for m in ADDITIVE_MISTAKES if m.name == "float64")
        return Hint(f"case '{case.name}': {mistake.hint}", mistake=mistake.name, case=case.name)
    out, blocked = result.detach().cpu(), result.detach().cpu()[~mask]
    if bool((out[mask] == 0).all()) and blocked.numel() and bool((blocked < -1).all()) and \
            bool(blocked.isfinite().all()):
        mistake = next(m for m in ADDITIVE_MISTAKES if m.name == "finite_fill")
        return Hint(f"case '{case.name}': {mistake.hint} (yours: {blocked.min().item():g})", mistake=mistake.name,
                    case=case.name)
    return None


@checker("Exercise 3 · to_additive_mask(mask)")
def check_additive_mask(to_additive_mask: Callable[[Tensor], Tensor]) -> str:
    """``to_additive_mask(mask) -> float32 mask of the same shape``: 0.0 where True, ``-inf`` where False."""
    try:
        return run_cases(to_additive_mask, reference=additive_mask_reference, cases=ADDITIVE_CASES,
                         mistakes=ADDITIVE_MISTAKES, what="to_additive_mask(mask)",
                         passed="0.0 where True, -inf where False, float32, same shape (padding, causal and "
                                "combined masks)")
    except Hint as hint:
        # a finite fill is right on the batch of 1 (no padding), so it looks "batch-1 only": the fill is the news
        raise second_look(hint, to_additive_mask, ADDITIVE_CASES, _explain_additive,
                          on=(*_SECOND_LOOK, "batch_one_only")) from None


# --- Exercise 4 · masked_softmax(attn_scores, mask), any float dtype --------------------------------

def masked_softmax_reference(attn_scores: Tensor, mask: Tensor, dim: int = -1) -> Tensor:
    """torch's softmax of the masked scores (computed in float64), with the 0/0 of empty rows replaced by 0."""
    weights = torch.softmax(attn_scores.double().masked_fill(~mask, float("-inf")), dim=dim).nan_to_num(0.0)
    return weights.to(attn_scores.dtype)


def _masked_softmax_cases() -> list[Case]:
    gen = torch.Generator().manual_seed(5)
    left = padding_mask_from_ids(torch.tensor([[0, 0, 1, 13, 16, 20]]), 0) & causal_mask(6)
    cases = [
        Case("padding mask, one sentence all <pad>", (torch.randn(3, 2, 4, 5, generator=gen),
             torch.tensor([[1, 1, 1, 0, 0], [0, 0, 0, 0, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)[:, None, None, :]),
             square=False),
        Case("left padding + causal: two empty rows", (torch.randn(1, 2, 6, 6, generator=gen), left), square=True),
        Case("causal, no empty row", (torch.randn(2, 2, 4, 4, generator=gen), causal_mask(4)), square=True),
        Case("float64, T_q != T_k, mask [T_q, T_k]", (torch.randn(2, 3, 5, generator=gen, dtype=torch.float64),
             torch.rand(3, 5, generator=gen) > 0.5), square=False),
    ]
    gen16 = torch.Generator().manual_seed(6)
    half_mask = torch.tensor([[1, 1, 0, 1, 0, 0], [0, 0, 0, 0, 0, 0], [1, 0, 0, 0, 0, 1]], dtype=torch.bool)
    cases.append(Case("float16, an empty row", ((3 * torch.randn(2, 3, 6, generator=gen16)).half(), half_mask),
                      square=False))
    return cases


MASKED_SOFTMAX_CASES = _masked_softmax_cases()


def _zero_rows(weights: Tensor, mask: Tensor) -> Tensor:
    return weights.masked_fill(~mask.any(dim=-1, keepdim=True), 0.0)


def _plain(scores: Tensor, mask: Tensor, fill: float) -> Tensor:
    return torch.softmax(scores.masked_fill(~mask, fill), dim=-1)


MASKED_SOFTMAX_MISTAKES = [
    Mistake("nan_left_in", "NaN left in. A row whose keys are all masked is softmax(-inf, ..., -inf) = 0/0: find "
            "those rows with mask.any(dim=-1, keepdim=True) and give them zeros",
            lambda s, m: _plain(s, m, float("-inf"))),
    Mistake("inverted_mask", "your mask is inverted: True means 'may attend', so the scores to hide are where the "
            "mask is False (~mask)", lambda s, m: masked_softmax_reference(s, ~m)),
    Mistake("mask_ignored", "the mask is ignored: set masked scores to -inf before the softmax",
            lambda s, m: torch.softmax(s, dim=-1)),
    Mistake("zeroed_after_softmax", "you zeroed masked weights after the softmax without renormalising, so rows "
            "with visible keys no longer sum to 1: mask the scores (-inf) *before* the softmax",
            lambda s, m: torch.softmax(s, dim=-1) * m),
    Mistake("uniform_empty_rows", "fully masked rows came out uniform (every key equally weighted): a finite fill "
            "value hides the empty row instead of handling it. Set the weights of rows with no visible key to 0",
            lambda s, m: _plain(s, m, torch.finfo(s.dtype).min)),
    Mistake("zeroed_wrong_rows", "zeros put in the wrong rows: you zeroed every row with *some* masked key; only rows "
            "where *every* key is masked (mask.any(dim=-1) is False) should be zero",
            lambda s, m: masked_softmax_reference(s, m).masked_fill(~m.all(dim=-1, keepdim=True), 0.0)),
    Mistake("softmax_over_queries", "softmax over the queries (dim=-2): use dim=-1, the keys",
            lambda s, m: masked_softmax_reference(s, m, dim=-2)),
    Mistake("finite_fill_overflows_in_float16", "a fill value like -1e9 does not fit in float16 (its largest "
            "magnitude is 65504), so masked_fill refuses it: fill with float('-inf') (or "
            "torch.finfo(attn_scores.dtype).min), which works in every float dtype",
            lambda s, m: _zero_rows(_plain(s, m, -1e9), m)),
    Mistake("promoted_to_float32", "your float16 scores came back as float32: something promoted them, e.g. adding "
            "a float32 tensor such as `(~mask) * -1e9` (and -1e9 does not fit in float16 anyway) or a .float(). "
            "masked_fill(~mask, float('-inf')) keeps the scores' dtype",
            lambda s, m: _zero_rows(torch.softmax(s + (~m) * -1e9, dim=-1), m)),
    Mistake("empty_rows_not_zero", "rows with no visible key must be all zeros; yours are not",
            lambda s, m: masked_softmax_reference(s, m) + 0.1 * ~m.any(dim=-1, keepdim=True)),
    Mistake("rows_do_not_sum_to_1", "rows with a visible key must sum to 1 over those keys; yours do not",
            lambda s, m: 0.9 * masked_softmax_reference(s, m)),
]


def _explain_masked_softmax(result: Any, case: Case) -> Hint | None:
    scores, mask = case.args
    if not isinstance(result, Tensor) or result.shape != scores.shape:
        return None
    empty = ~mask.any(dim=-1, keepdim=True).expand(scores.shape[:-1] + (1,))  # [..., T_q, 1]
    out = result.detach().cpu().double()
    sums = out.sum(dim=-1, keepdim=True)[~empty]
    by_name = {m.name: m for m in MASKED_SOFTMAX_MISTAKES}
    if result.dtype != scores.dtype:
        if (scores.dtype, result.dtype) != (torch.float16, torch.float32) or \
                not same(result, masked_softmax_reference(scores, mask), atol=1e-2, rtol=1e-2):
            return None
        mistake = by_name["promoted_to_float32"]
    elif not bool((out * empty).eq(0).all()):
        mistake = by_name["empty_rows_not_zero"]
    elif not torch.allclose(sums, torch.ones_like(sums), atol=1e-2 if scores.dtype == torch.float16 else 1e-5):
        mistake = by_name["rows_do_not_sum_to_1"]
        return Hint(f"case '{case.name}': {mistake.hint} (they sum to {sums.min().item():.3g} ... "
                    f"{sums.max().item():.3g})", mistake=mistake.name, case=case.name)
    else:
        return None
    return Hint(f"case '{case.name}': {mistake.hint}", mistake=mistake.name, case=case.name)


@checker("Exercise 4 · masked_softmax(attn_scores, mask)")
def check_masked_softmax(masked_softmax: Callable[[Tensor, Tensor], Tensor]) -> str:
    """``masked_softmax(attn_scores [..., T_q, T_k], mask) -> attn_weights`` for any float dtype (float16, float32
    and float64 are tried); fully masked rows give zeros."""
    try:
        return run_cases(masked_softmax, reference=masked_softmax_reference, cases=MASKED_SOFTMAX_CASES,
                         mistakes=MASKED_SOFTMAX_MISTAKES, what="masked_softmax(attn_scores, mask)",
                         passed="softmax over the visible keys, zeros for rows with none, never NaN (5 cases: "
                                "float16, float32 and float64)")
    except Hint as hint:
        raise second_look(hint, masked_softmax, MASKED_SOFTMAX_CASES, _explain_masked_softmax,
                          on=_SECOND_LOOK) from None


# --- Exercise 5 · make_packed_causal_mask(segment_ids) ----------------------------------------------

PACKED_CASES = [Case(name, (torch.tensor(rows),), batch=len(rows))
                for name, rows in [("three documents in one row", [[0, 0, 0, 1, 1, 1, 1, 2, 2, 2]]),
                                   ("B=2, different packings", [[0, 0, 1, 1, 1], [0, 1, 1, 2, 2]]),
                                   ("one document, id 5", [[5, 5, 5, 5]])]]


def packed_causal_mask_reference(segment_ids: Tensor) -> Tensor:
    return document_mask(segment_ids) & causal_mask(segment_ids.shape[1])  # [B, 1, T, T]


def _packed(ids: Tensor, causal: Callable[[int], Tensor] = _tril,
            combine: Callable[[Tensor, Tensor], Tensor] = lambda doc, causal: doc & causal) -> Tensor:
    b, t = ids.shape
    return combine(document_mask(ids), causal(t)).expand(b, 1, t, t)


PACKED_MISTAKES = [
    Mistake("causal_missing", "the causal part is missing: inside a document, tokens see their own future",
            lambda ids: _packed(ids, causal=lambda n: _tril(n, n))),
    Mistake("document_part_missing", "the document part is missing: tokens see the documents packed before theirs",
            lambda ids: _packed(ids, combine=lambda doc, causal: causal & torch.ones_like(doc))),
    Mistake("or_instead_of_and", OR, lambda ids: _packed(ids, combine=lambda doc, causal: doc | causal)),
    Mistake("upper_triangle", FUTURE, lambda ids: _packed(ids, causal=_triu)),
    Mistake("no_diagonal", NO_DIAGONAL, lambda ids: _packed(ids, causal=lambda n: _tril(n, -1))),
    Mistake("inverted", "inverted: True must mean 'may attend'", lambda ids: ~packed_causal_mask_reference(ids)),
    Mistake("not_bool", "make it bool (== and & give one): masked_fill refuses other dtypes, and "
            "F.scaled_dot_product_attention *adds* a float mask to the scores instead of blocking them",
            lambda ids: packed_causal_mask_reference(ids).long()),
    Mistake("no_head_axis", HEAD_AXIS, lambda ids: packed_causal_mask_reference(ids)[:, 0], match="shape"),
    Mistake("no_batch_axis", "Packings differ between rows, so the mask needs the batch axis: [B, 1, T, T]",
            lambda ids: _tril(ids.shape[1]), match="shape"),
]


@checker("Exercise 5 · make_packed_causal_mask(segment_ids)")
def check_packed_causal_mask(make_packed_causal_mask: Callable[[Tensor], Tensor]) -> str:
    """``make_packed_causal_mask(segment_ids [B, T]) -> bool [B, 1, T, T]``: same document AND causal."""
    return run_cases(make_packed_causal_mask, reference=packed_causal_mask_reference, cases=PACKED_CASES,
                     mistakes=PACKED_MISTAKES, what="make_packed_causal_mask(segment_ids)",
                     passed="block-diagonal AND causal, [B, 1, T, T] (3 cases)")


# --- Exercise 6 · predict, then verify: empty rows with left padding ---------------------------------

EMPTY_ROWS_IDS = torch.tensor([[1, 13, 16, 20, 2], [0, 0, 0, 1, 14]])
EMPTY_ROWS_MISTAKES = [
    Mistake("no_empty_row", "left padding puts the pads first: query 0 of the second sentence may look only at key 0 "
            "(causal), and key 0 is <pad>", 0),
    Mistake("only_query_0", "query 0 is not the only one: query 1 of the second sentence sees keys 0-1, query 2 "
            "keys 0-2", 1),
    Mistake("one_short", "one more: query 2 of the second sentence sees keys 0, 1 and 2, all three <pad>", 2),
]


def empty_rows_experiment() -> tuple[list[tuple[int, int]], int]:
    """The (sentence, query) rows of the exercise's mask with no visible key, and how many rows a plain
    softmax turns into NaN."""
    mask = padding_mask_from_ids(EMPTY_ROWS_IDS, 0) & causal_mask(5)  # [2, 1, 5, 5]
    empty = ~mask.any(dim=-1)[:, 0]  # [2, 5]
    nan_rows = torch.softmax(torch.zeros(2, 1, 5, 5).masked_fill(~mask, float("-inf")), -1).isnan().all(-1)[:, 0]
    return [(int(b), int(i)) for b, i in empty.nonzero()], int(nan_rows.sum())


@checker("Exercise 6 · predict: empty rows with left padding")
def check_empty_rows_prediction(predicted_empty_rows: Any) -> str:
    """How many query rows of the left-padded batch of the exercise have no key to attend to (3, 3.0 or a numpy
    integer; a tensor gets the ".item()" hint)."""
    rows, nan_rows = empty_rows_experiment()
    check_answer(predicted_empty_rows, len(rows), what="predicted_empty_rows", mistakes=EMPTY_ROWS_MISTAKES,
                 template="{got} is not it: {hint}",
                 otherwise=f"the experiment finds {len(rows)}: (sentence, query) = {rows}")
    return (f"{len(rows)} rows, (sentence, query) = {rows}: each sees only keys at or before it, all <pad>; "
            f"a plain softmax gives NaN in exactly those rows ({nan_rows})")


MISTAKES = {
    "check_padding_mask": PADDING_MISTAKES,
    "check_decoder_mask": DECODER_MISTAKES,
    "check_key_padding_mask": KEY_PADDING_MISTAKES,
    "check_additive_mask": ADDITIVE_MISTAKES,
    "check_masked_softmax": MASKED_SOFTMAX_MISTAKES,
    "check_packed_causal_mask": PACKED_MISTAKES,
    "check_empty_rows_prediction": EMPTY_ROWS_MISTAKES,
}
CASES = {"check_padding_mask": PADDING_CASES, "check_decoder_mask": DECODER_CASES,
         "check_key_padding_mask": KEY_PADDING_CASES, "check_additive_mask": ADDITIVE_CASES,
         "check_masked_softmax": MASKED_SOFTMAX_CASES, "check_packed_causal_mask": PACKED_CASES}
REFERENCES = {"check_padding_mask": padding_mask_reference, "check_decoder_mask": decoder_mask_reference,
              "check_key_padding_mask": key_padding_mask_reference, "check_additive_mask": additive_mask_reference,
              "check_masked_softmax": masked_softmax_reference,
              "check_packed_causal_mask": packed_causal_mask_reference}
