"""The lesson 04 checkers: hand-written wrong answers get their hints, the stated dtypes (float16 included) are
enforced, and the prediction is checked. What every function checker must do runs in tests/test_checks_generic.py,
over this module's CHECKS, GENERIC, ALTERNATIVES and BROKEN."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from checker_helpers import assert_diagnosed, assert_named, broken_answers

import course_lib as cl
from course_lib.checks import lesson04


# --- the solutions, identical in behaviour to solutions/04_masks.ipynb ------------------------------
def make_padding_mask(token_ids: torch.Tensor, pad_id: int) -> torch.Tensor:
    return (token_ids != pad_id)[:, None, None, :]  # [B, 1, 1, S]


def make_decoder_mask(tgt_ids: torch.Tensor, pad_id: int) -> torch.Tensor:
    length = tgt_ids.shape[1]
    causal = torch.ones(length, length, dtype=torch.bool, device=tgt_ids.device).tril()  # [T, T]
    return make_padding_mask(tgt_ids, pad_id) & causal  # [B, 1, T, T]


def to_key_padding_mask(mask: torch.Tensor) -> torch.Tensor:
    return ~mask[:, 0, 0, :]  # [B, S], True = ignore


def to_additive_mask(mask: torch.Tensor) -> torch.Tensor:
    return torch.zeros(mask.shape, device=mask.device).masked_fill(~mask, float("-inf"))


def masked_softmax(attn_scores: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    row_has_key = mask.any(dim=-1, keepdim=True)  # [..., T_q, 1]
    attn_scores = attn_scores.masked_fill(~mask, float("-inf")).masked_fill(~row_has_key, 0.0)
    return torch.softmax(attn_scores, dim=-1).masked_fill(~mask, 0.0)


def make_packed_causal_mask(segment_ids: torch.Tensor) -> torch.Tensor:
    length = segment_ids.shape[1]
    same_document = segment_ids[:, None, :, None] == segment_ids[:, None, None, :]  # [B, 1, T, T]
    return same_document & torch.ones(length, length, dtype=torch.bool, device=segment_ids.device).tril()


# every function checker with its solution: tests/test_checks_generic.py runs over CHECKS, GENERIC, ALTERNATIVES
# and BROKEN
CHECKS = {
    "check_padding_mask": (lesson04.check_padding_mask, make_padding_mask),
    "check_decoder_mask": (lesson04.check_decoder_mask, make_decoder_mask),
    "check_key_padding_mask": (lesson04.check_key_padding_mask, to_key_padding_mask),
    "check_additive_mask": (lesson04.check_additive_mask, to_additive_mask),
    "check_masked_softmax": (lesson04.check_masked_softmax, masked_softmax),
    "check_packed_causal_mask": (lesson04.check_packed_causal_mask, make_packed_causal_mask),
}
BROKEN = [(name, answer, phrase) for name in CHECKS
          for answer, phrase in broken_answers(torch.zeros(1, 2, 3, 4, 5, dtype=torch.bool))]


def _tril(n: int, diagonal: int = 0) -> torch.Tensor:
    return torch.ones(n, n, dtype=torch.bool).tril(diagonal)


def _triu(n: int, diagonal: int = 0) -> torch.Tensor:
    return torch.ones(n, n, dtype=torch.bool).triu(diagonal)


# --- every wrong prediction gets its own hint -----------------------------------------------------------

@pytest.mark.parametrize("mistake", lesson04.EMPTY_ROWS_MISTAKES, ids=lambda m: m.name)
def test_every_wrong_empty_rows_prediction_gets_its_own_hint(mistake: Any) -> None:
    assert_named(lesson04.check_empty_rows_prediction(mistake.wrong), mistake)
    assert_named(lesson04.check_empty_rows_prediction(float(mistake.wrong)), mistake)


def test_masked_softmax_tries_float16() -> None:
    assert {c.args[0].dtype for c in lesson04.MASKED_SOFTMAX_CASES} == {torch.float16, torch.float32, torch.float64}


# --- correct alternatives (they must pass) ----------------------------------------------------

def padding_eq_not(ids, pad):
    return ~(ids == pad).unsqueeze(1).unsqueeze(2)


def padding_ne_view(ids, pad):
    return torch.ne(ids, pad).view(ids.shape[0], 1, 1, -1)


def padding_where(ids, pad):
    return torch.where(ids == pad, False, True).reshape(len(ids), 1, 1, ids.size(1))


def decoder_tril_indices(ids, pad):
    t = ids.shape[1]
    rows, cols = torch.arange(t)[:, None], torch.arange(t)[None, :]
    return (ids != pad)[:, None, None, :] & (cols <= rows)


def decoder_logical_and(ids, pad):
    t = ids.shape[1]
    causal = ~torch.ones(t, t, dtype=torch.bool).triu(1)
    return torch.logical_and(make_padding_mask(ids, pad), causal).expand(ids.shape[0], 1, t, t)


def decoder_mul(ids, pad):
    t = ids.shape[1]
    return ((ids != pad).long()[:, None, None, :] * torch.ones(t, t, dtype=torch.long).tril()).bool()


def kpm_logical_not(mask):
    return torch.logical_not(mask.squeeze(1).squeeze(1))


def kpm_reshape(mask):
    return (mask == 0).reshape(mask.shape[0], -1)


def kpm_library(mask):
    return cl.key_padding_mask_from_mask(mask)


def additive_where(mask):
    return torch.where(mask, 0.0, float("-inf")).float()


def additive_log(mask):
    return mask.float().log()  # log 1 = 0, log 0 = -inf


def additive_full(mask):
    return torch.full(mask.shape, float("-inf")).masked_fill(mask, 0.0)


def softmax_nan_to_num(s, m):
    return torch.softmax(s.masked_fill(~m, float("-inf")), dim=-1).nan_to_num(0.0)


def softmax_finfo_min(s, m):  # a finite fill that fits every dtype, with the empty rows zeroed
    return torch.softmax(s.masked_fill(~m, torch.finfo(s.dtype).min), dim=-1) * m.any(dim=-1, keepdim=True)


def softmax_by_hand(s, m):
    s = s.masked_fill(~m, float("-inf"))
    top = s.amax(dim=-1, keepdim=True).nan_to_num(0.0, neginf=0.0)
    e = torch.exp(s - top)
    total = e.sum(dim=-1, keepdim=True)
    return torch.where(total > 0, e / total.clamp_min(torch.finfo(s.dtype).tiny), torch.zeros_like(e))


def softmax_where(s, m):
    weights = torch.softmax(torch.where(m, s, float("-inf")), dim=-1)
    return torch.where(m.any(dim=-1, keepdim=True), weights, torch.zeros_like(weights))


def packed_eq_unsqueeze(ids):
    same = ids.unsqueeze(2) == ids.unsqueeze(1)  # [B, T, T]
    return (same & torch.ones(ids.shape[1], ids.shape[1], dtype=torch.bool).tril()).unsqueeze(1)


def packed_loop(ids):
    b, t = ids.shape
    out = torch.zeros(b, 1, t, t, dtype=torch.bool)
    for n in range(b):
        for i in range(t):
            for j in range(i + 1):
                out[n, 0, i, j] = bool(ids[n, i] == ids[n, j])
    return out


def packed_cumsum_blocks(ids):  # documents by a running count of boundaries
    doc = torch.cat([torch.zeros_like(ids[:, :1]), (ids[:, 1:] != ids[:, :-1]).long()], dim=1).cumsum(1)
    return (doc[:, None, :, None] == doc[:, None, None, :]) & _tril(ids.shape[1])


ALTERNATIVES = [
    ("check_padding_mask", padding_eq_not), ("check_padding_mask", padding_ne_view),
    ("check_padding_mask", padding_where), ("check_padding_mask", cl.padding_mask_from_ids),
    ("check_decoder_mask", decoder_tril_indices), ("check_decoder_mask", decoder_logical_and),
    ("check_decoder_mask", decoder_mul),
    ("check_key_padding_mask", kpm_logical_not), ("check_key_padding_mask", kpm_reshape),
    ("check_key_padding_mask", kpm_library),
    ("check_additive_mask", additive_where), ("check_additive_mask", additive_log),
    ("check_additive_mask", additive_full), ("check_additive_mask", cl.additive_mask_from_mask),
    ("check_masked_softmax", softmax_nan_to_num), ("check_masked_softmax", softmax_finfo_min),
    ("check_masked_softmax", softmax_by_hand), ("check_masked_softmax", softmax_where),
    ("check_packed_causal_mask", packed_eq_unsqueeze), ("check_packed_causal_mask", packed_loop),
    ("check_packed_causal_mask", packed_cumsum_blocks),
]


def test_masked_softmax_solution_matches_course_lib():
    scores = torch.randn(2, 3, 4)  # [B, T_q, T_k]
    mask = torch.tensor([[True, False, True, False], [False] * 4, [True] * 4])  # row 1 has no visible key
    keys = torch.eye(4)  # q @ keys.T == scores, so with scale=1 the library's weights are masked_softmax's
    _, expected = cl.scaled_dot_product_attention(scores, keys, torch.randn(4, 5), mask, scale=1.0)
    torch.testing.assert_close(masked_softmax(scores, mask), expected)
    assert masked_softmax(scores, mask)[:, 1].abs().sum() == 0


def test_packed_causal_mask_solution_agrees_with_course_lib():
    ids = torch.tensor([[0, 0, 1, 1, 1, 2]])
    expected = cl.combine_masks(cl.document_mask(ids), cl.causal_mask(6))
    assert torch.equal(make_packed_causal_mask(ids), expected)


# --- generic mistake classes ----------------------------------------------------------------------

def _mutating(solution: Callable[..., Any]) -> Callable[..., Any]:
    """Right result, then the first tensor argument edited in place (`mask.logical_not_()`, `ids[ids == pad] = 0`)."""
    def wrong(*args: Any) -> Any:
        out = solution(*(a.clone() if isinstance(a, torch.Tensor) else a for a in args))
        first = args[0]
        if first.dtype == torch.bool:
            first.logical_not_()
        elif first.is_floating_point():
            first.masked_fill_(torch.ones_like(first, dtype=torch.bool), -1.0)
        else:
            first.add_(1)
        return out
    return wrong


def _first_row_only(solution: Callable[..., Any]) -> Callable[..., Any]:
    """Code that handles only the first sentence of the batch and repeats it."""
    def wrong(*args: Any) -> Any:
        first, *rest = args
        out = solution(first[:1], *rest)
        return out.expand(first.shape[0], *out.shape[1:]).clone()
    return wrong


def _numpy(solution: Callable[..., Any]) -> Callable[..., Any]:
    return lambda *args: solution(*args).numpy()


GENERIC = [(name, _mutating(solution), "mutated_input", "changed its inputs in place")
           for name, (_, solution) in CHECKS.items()]
GENERIC += [(name, _first_row_only(CHECKS[name][1]), "batch_one_only", "right for a batch of 1")
            for name in ("check_padding_mask", "check_decoder_mask", "check_packed_causal_mask")]
GENERIC += [(name, _numpy(solution), "wrong_type", "numpy.ndarray") for name, (_, solution) in CHECKS.items()]


@pytest.mark.parametrize(("name", "wrong", "mistake", "phrase"), [
    ("check_masked_softmax", lambda s, m: masked_softmax(s.double(), m), "wrong_dtype", "keep the inputs' dtype"),
    ("check_masked_softmax", lambda s, m: masked_softmax(s, m).float(), "wrong_dtype", "keep the inputs' dtype"),
    ("check_masked_softmax", lambda s, m: masked_softmax(s, m).float() if s.dtype == torch.float16
     else masked_softmax(s, m), "promoted_to_float32", "came back as float32"),
    ("check_additive_mask", lambda m: to_additive_mask(m).half(), "wrong_dtype", "expected torch.float32"),
    ("check_additive_mask", lambda m: to_additive_mask(m).double(), "float64", "asks for float32"),
    ("check_padding_mask", lambda ids, pad: make_padding_mask(ids, pad).int(), "not_bool", "make it bool"),
])
def test_stated_dtypes_are_enforced(name, wrong, mistake, phrase) -> None:
    assert_diagnosed(CHECKS[name][0](wrong), mistake, phrase)


# --- float16: "any float dtype" ---------------------------------------------------------------------

def fill_then_zero(value: float) -> Callable[..., Any]:
    """Right in float32 and float64; the fill value decides float16."""
    def fn(s, m):
        return torch.softmax(s.masked_fill(~m, value), dim=-1) * m.any(dim=-1, keepdim=True)
    return fn


@pytest.mark.parametrize("value", [-1e9, -1e30, -1e5])
def test_a_fill_that_overflows_float16_fails(value: float) -> None:
    result = lesson04.check_masked_softmax(fill_then_zero(value))
    assert result.mistake == "finite_fill_overflows_in_float16" and result.case == "float16, an empty row", result


def test_an_additive_fill_that_promotes_float16_fails() -> None:
    result = lesson04.check_masked_softmax(lambda s, m: torch.softmax(s + (~m) * -1e9, -1) * m.any(-1, keepdim=True))
    assert result.mistake == "promoted_to_float32" and result.case == "float16, an empty row", result


@pytest.mark.parametrize("value", [-1e4, -65504.0])
def test_a_fill_that_fits_float16_passes(value: float) -> None:
    assert lesson04.check_masked_softmax(fill_then_zero(value)).passed


# --- the wrong answers of the earlier tests, written by hand (each with its phrase) -------------------

@pytest.mark.parametrize(("wrong", "mistake", "phrase"), [
    (lambda ids, pad: (ids == pad)[:, None, None, :], "inverted", "hides the real tokens, not the padding"),
    (lambda ids, pad: ids != pad, "does_not_broadcast", "does not broadcast"),
    (lambda ids, pad: (ids != pad)[:, :, None, None], "key_axis_first", "key axis must come last"),
    (lambda ids, pad: (ids != pad)[:, None, :], "axis_missing", "One axis is missing"),
    (lambda ids, pad: (ids != pad)[:, None, None, :].long(), "not_bool", "make it bool"),
    (lambda ids, pad: (ids != pad)[:, None, None, :].float(), "not_bool", "*adds* a float mask"),
    (lambda ids, pad: (ids != 0)[:, None, None, :], "compared_with_zero", "compared with 0"),
    (lambda ids, pad: (ids == 0)[:, None, None, :], "inverted_and_compared_with_zero", "inverted, and compared"),
    (lambda ids, pad: (ids > pad)[:, None, None, :], "greater_than_pad_id", "ids > pad_id"),
    (lambda ids, pad: (ids != pad)[:, None, None, :].flip(-1), None, "differs from the reference"),
])
def test_hand_written_padding_mask_mistakes(wrong, mistake, phrase):
    assert_diagnosed(lesson04.check_padding_mask(wrong), mistake, phrase)


def _decoder_variant(causal_fn=_tril, combine=lambda pad, causal: pad & causal, query_side=False):
    def make(ids, pad_id):
        keys = make_padding_mask(ids, pad_id)
        pad = keys.transpose(-2, -1) if query_side else keys
        return combine(pad, causal_fn(ids.shape[1])).expand(ids.shape[0], 1, ids.shape[1], ids.shape[1])
    return make


@pytest.mark.parametrize(("wrong", "mistake", "phrase"), [
    (_decoder_variant(causal_fn=_triu), "upper_triangle", "future visible"),
    (_decoder_variant(causal_fn=lambda n: _triu(n, 1)), "strict_upper_triangle", "future visible"),
    (_decoder_variant(causal_fn=lambda n: _tril(n, -1)), "no_diagonal", "cannot see itself"),
    (_decoder_variant(combine=lambda pad, causal: pad | causal), "or_instead_of_and", "OR instead of AND"),
    (_decoder_variant(combine=lambda pad, causal: causal & torch.ones_like(pad)), "padding_missing",
     "padding part is missing"),
    (_decoder_variant(combine=lambda pad, causal: pad & torch.ones_like(causal)), "causal_missing",
     "causal part is missing"),
    (_decoder_variant(query_side=True), "padded_queries", "instead of padded keys"),
    (lambda ids, pad: make_decoder_mask(ids, pad) & make_padding_mask(ids, pad).transpose(-2, -1),
     "padded_queries_and_keys", "as well as keys"),
    (lambda ids, pad: ~make_decoder_mask(ids, pad), "inverted", "inverted"),
    (lambda ids, pad: make_decoder_mask(ids, pad)[:, 0], "no_head_axis", "Add the head axis"),
    (lambda ids, pad: make_padding_mask(ids, pad), "padding_mask_alone", "padding mask alone"),
    (lambda ids, pad: _tril(ids.shape[1]), "no_batch_axis", "needs the batch axis"),
])
def test_hand_written_decoder_mask_mistakes(wrong, mistake, phrase):
    assert_diagnosed(lesson04.check_decoder_mask(wrong), mistake, phrase)


@pytest.mark.parametrize(("wrong", "mistake", "phrase"), [
    (lambda mask: mask[:, 0, 0, :], "not_inverted", "forgot to invert"),
    (lambda mask: ~mask, "four_dims", "take mask[:, 0, 0, :]"),
    (lambda mask: (~mask[:, 0, 0, :]).float(), "not_bool", "make it bool"),
    (lambda mask: ~mask[:, 0, 0, :].flip(-1), None, "differs from the reference"),
    (lambda mask: (~mask).squeeze(), "squeezed_the_batch", "drops the batch axis when B = 1"),
    (lambda mask: mask.logical_not_()[:, 0, 0, :], "mutated_input", "changed its inputs in place"),
])
def test_hand_written_key_padding_mask_mistakes(wrong, mistake, phrase):
    assert_diagnosed(lesson04.check_key_padding_mask(wrong), mistake, phrase)


@pytest.mark.parametrize(("wrong", "mistake", "phrase"), [
    (lambda mask: mask.float(), "one_zero", "1 / 0 instead of 0 / -inf"),
    (lambda mask: (~mask).float(), "zero_one", "0 / 1"),
    (lambda mask: torch.zeros(mask.shape).masked_fill(mask, float("-inf")), "inverted", "inverted"),
    (lambda mask: torch.zeros(mask.shape).masked_fill(~mask, -1e9), "finite_fill", "not -inf"),
    (lambda mask: torch.zeros(mask.shape).masked_fill(~mask, -1e4), "finite_fill", "not -inf"),
    (lambda mask: torch.zeros(mask.shape).masked_fill(~mask, torch.finfo(torch.float32).min), "finite_fill",
     "not -inf"),
    (lambda mask: (~mask).float() * float("-inf"), "nan_from_zero_times_inf", "0 * -inf is NaN"),
    (lambda mask: mask, "bool_returned", "an additive mask is a float tensor"),
    (lambda mask: to_additive_mask(mask).squeeze(), "wrong_shape", "has shape"),
    (lambda mask: torch.ones(mask.shape).masked_fill(~mask, float("-inf")), "one_where_true", "1.0 where the mask"),
    (lambda mask: torch.zeros(mask.shape, dtype=torch.float64).masked_fill(~mask, float("-inf")), "float64",
     "asks for float32"),
])
def test_hand_written_additive_mask_mistakes(wrong, mistake, phrase):
    assert_diagnosed(lesson04.check_additive_mask(wrong), mistake, phrase)


def test_an_undiagnosed_additive_mask_is_described_where_it_differs():
    result = lesson04.check_additive_mask(lambda mask: torch.zeros(mask.shape).masked_fill(~mask, float("-inf")) + 0.5)
    assert result.mistake is None and "(yours 0.5, expected 0)" in result.message, result


def _zero_rows_with_any_mask(scores, mask):
    weights = torch.softmax(scores.masked_fill(~mask, float("-inf")), dim=-1).nan_to_num(0.0)
    return weights.masked_fill(~mask.all(dim=-1, keepdim=True), 0.0)


@pytest.mark.parametrize(("wrong", "mistake", "phrase"), [
    (lambda s, m: torch.softmax(s.masked_fill(~m, float("-inf")), dim=-1), "nan_left_in", "NaN left in"),
    (lambda s, m: torch.softmax(s, dim=-1), "mask_ignored", "the mask is ignored"),
    (lambda s, m: torch.softmax(s, dim=-1) * m, "zeroed_after_softmax", "without renormalising"),
    (lambda s, m: torch.softmax(s.masked_fill(~m, -1e9), dim=-1), "uniform_empty_rows", "came out uniform"),
    (_zero_rows_with_any_mask, "zeroed_wrong_rows", "zeros put in the wrong rows"),
    (lambda s, m: masked_softmax(s.transpose(-2, -1), m.transpose(-2, -1)).transpose(-2, -1)
     if s.shape[-1] == s.shape[-2] else masked_softmax(s, m), "softmax_over_queries", "softmax over the queries"),
    (lambda s, m: masked_softmax(s, m).float(), "wrong_dtype", "keep the inputs' dtype"),
    (lambda s, m: masked_softmax(s, m) + (~m.any(-1, keepdim=True)) * 0.1, "empty_rows_not_zero",
     "must be all zeros"),
    (lambda s, m: masked_softmax(s, ~m), "inverted_mask", "your mask is inverted"),
    (lambda s, m: torch.softmax(s.masked_fill_(~m, float("-inf")), -1).nan_to_num(0.0), "mutated_input",
     "changed its inputs in place (`attn_scores`"),
    (lambda s, m: masked_softmax(s, m) * 0.5 + masked_softmax(s, m) ** 2 * 0.1, "rows_do_not_sum_to_1",
     "must sum to 1"),
])
def test_hand_written_masked_softmax_mistakes(wrong, mistake, phrase):
    assert_diagnosed(lesson04.check_masked_softmax(wrong), mistake, phrase)


@pytest.mark.parametrize(("wrong", "mistake", "phrase"), [
    (lambda ids: ids[:, None, :, None] == ids[:, None, None, :], "causal_missing", "causal part is missing"),
    (lambda ids: _tril(ids.shape[1]).expand(ids.shape[0], 1, ids.shape[1], ids.shape[1]), "document_part_missing",
     "document part"),
    (lambda ids: (ids[:, None, :, None] == ids[:, None, None, :]) | _tril(ids.shape[1]), "or_instead_of_and",
     "OR instead of AND"),
    (lambda ids: (ids[:, None, :, None] == ids[:, None, None, :]) & _triu(ids.shape[1]), "upper_triangle",
     "future visible"),
    (lambda ids: (ids[:, None, :, None] == ids[:, None, None, :]) & _tril(ids.shape[1], -1), "no_diagonal",
     "cannot see itself"),
    (lambda ids: ~make_packed_causal_mask(ids), "inverted", "inverted"),
    (lambda ids: make_packed_causal_mask(ids)[:, 0], "no_head_axis", "Add the head axis"),
    (lambda ids: make_packed_causal_mask(ids[:1]).expand(ids.shape[0], -1, -1, -1), "batch_one_only",
     "right for a batch of 1"),
    (lambda ids: make_packed_causal_mask(ids[:1]), "batch_one_only", "right for a batch of 1"),
])
def test_hand_written_packed_causal_mask_mistakes(wrong, mistake, phrase):
    assert_diagnosed(lesson04.check_packed_causal_mask(wrong), mistake, phrase)


# --- predict, then verify: empty rows -------------------------------------------------------------------

@pytest.mark.parametrize("answer", [3, 3.0, np.int64(3), np.float32(3.0)])
def test_empty_rows_prediction_passes(answer):
    result = lesson04.check_empty_rows_prediction(answer)
    assert result.passed, result
    assert "(1, 0), (1, 1), (1, 2)" in result.message and "NaN in exactly those rows (3)" in result.message


def test_empty_rows_experiment():
    assert lesson04.empty_rows_experiment() == ([(1, 0), (1, 1), (1, 2)], 3)


@pytest.mark.parametrize(("prediction", "mistake", "phrase"), [
    (0, "no_empty_row", "left padding puts the pads first"),
    (1, "only_query_0", "query 0 is not the only one"),
    (2.0, "one_short", "one more"),
    (7, None, "the experiment finds 3"),
    (3.5, "wrong_type", "whole number"),
    ("three", "wrong_type", "whole number"),
    (True, "wrong_type", "whole number"),
    (torch.tensor(3), "wrong_type", ".item()"),
])
def test_empty_rows_prediction_mistakes_get_their_hint(prediction, mistake, phrase):
    assert_diagnosed(lesson04.check_empty_rows_prediction(prediction), mistake, phrase)


def test_empty_rows_prediction_unanswered_is_not_done():
    assert lesson04.check_empty_rows_prediction(None).status == "not_done"


# --- titles -----------------------------------------------------------------------------------------------

def test_titles_follow_one_pattern() -> None:
    checks = [lesson04.check_padding_mask, lesson04.check_decoder_mask, lesson04.check_key_padding_mask,
              lesson04.check_additive_mask, lesson04.check_masked_softmax, lesson04.check_packed_causal_mask,
              lesson04.check_empty_rows_prediction]
    for n, check in zip([1, 2, 3, 3, 4, 5, 6], checks):
        result = check(None)
        assert result.status == "not_done" and result.title.startswith(f"Exercise {n} · ")


def test_key_padding_mask_behaves_in_nn_multihead_attention():
    """The check also runs nn.MultiheadAttention with the learner's mask; F's reference agrees."""
    mask = lesson04.KEY_PADDING_CASES[0].args[0]
    assert torch.equal(to_key_padding_mask(mask), ~mask[:, 0, 0, :])
    q = torch.randn(3, 2, 4, 8)
    out = F.scaled_dot_product_attention(q, q[:, :, :1].expand(3, 2, 5, 8), q[:, :, :1].expand(3, 2, 5, 8),
                                         attn_mask=~to_key_padding_mask(mask)[:, None, None, :])
    assert not out.isnan().any()
