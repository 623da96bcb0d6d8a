"""The lesson 04 checkers pass the solutions, name each typical mistake, and never raise."""
from __future__ import annotations

import pytest
import torch
from checker_helpers import assert_fail, broken_answers, raise_not_implemented

import course_lib as cl
from course_lib.checks import lesson04


# Reference solutions, identical in behaviour to solutions/04_masks.ipynb.
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


def _tril(n: int, diagonal: int = 0) -> torch.Tensor:
    return torch.ones(n, n, dtype=torch.bool).tril(diagonal)


def _triu(n: int, diagonal: int = 0) -> torch.Tensor:
    return torch.ones(n, n, dtype=torch.bool).triu(diagonal)


# --- padding mask ----------------------------------------------------------------------------------
def test_padding_mask_solution_passes():
    assert lesson04.check_padding_mask(make_padding_mask).passed


@pytest.mark.parametrize("wrong, phrase", [
    (lambda ids, pad: (ids == pad)[:, None, None, :], "hides the real tokens, not the padding"),
    (lambda ids, pad: ids != pad, "does not broadcast"),
    (lambda ids, pad: (ids != pad)[:, :, None, None], "key axis must come last"),
    (lambda ids, pad: (ids != pad)[:, None, :], "One axis is missing"),
    (lambda ids, pad: (ids != pad)[:, None, None, :].long(), "make it bool"),
    (lambda ids, pad: (ids != pad)[:, None, None, :].float(), "*adds* a float mask"),
    (lambda ids, pad: (ids != 0)[:, None, None, :], "compared with 0"),
])
def test_padding_mask_mistakes_get_their_hint(wrong, phrase):
    assert_fail(lesson04.check_padding_mask(wrong), phrase)


# --- decoder mask ----------------------------------------------------------------------------------
def test_decoder_mask_solution_passes():
    assert lesson04.check_decoder_mask(make_decoder_mask).passed


def _decoder_variant(causal_fn=_tril, combine=lambda pad, causal: pad & causal, query_side=False):
    def make(ids, pad_id):
        keys = make_padding_mask(ids, pad_id)
        pad = keys.transpose(-2, -1) if query_side else keys
        return combine(pad, causal_fn(ids.shape[1])).expand(ids.shape[0], 1, ids.shape[1], ids.shape[1])
    return make


@pytest.mark.parametrize("wrong, phrase", [
    (_decoder_variant(causal_fn=_triu), "future visible"),
    (_decoder_variant(causal_fn=lambda n: _triu(n, 1)), "future visible"),
    (_decoder_variant(causal_fn=lambda n: _tril(n, -1)), "cannot see itself"),
    (_decoder_variant(combine=lambda pad, causal: pad | causal), "OR instead of AND"),
    (_decoder_variant(combine=lambda pad, causal: causal & torch.ones_like(pad)), "padding part is missing"),
    (_decoder_variant(combine=lambda pad, causal: pad & torch.ones_like(causal)), "causal part is missing"),
    (_decoder_variant(query_side=True), "instead of padded keys"),
    (lambda ids, pad: make_decoder_mask(ids, pad) & make_padding_mask(ids, pad).transpose(-2, -1),
     "as well as keys"),
    (lambda ids, pad: ~make_decoder_mask(ids, pad), "inverted"),
    (lambda ids, pad: make_decoder_mask(ids, pad)[:, 0], "Add the head axis"),
    (lambda ids, pad: make_padding_mask(ids, pad), "padding mask alone"),
])
def test_decoder_mask_mistakes_get_their_hint(wrong, phrase):
    assert_fail(lesson04.check_decoder_mask(wrong), phrase)


# --- conversions -----------------------------------------------------------------------------------
def test_key_padding_mask_solution_passes():
    result = lesson04.check_key_padding_mask(to_key_padding_mask)
    assert result.passed, result


def test_library_converter_passes_too():
    assert lesson04.check_key_padding_mask(cl.key_padding_mask_from_mask).passed
    assert lesson04.check_additive_mask(cl.additive_mask_from_mask).passed


@pytest.mark.parametrize("wrong, phrase", [
    (lambda mask: mask[:, 0, 0, :], "forgot to invert"),
    (lambda mask: ~mask, "take mask[:, 0, 0, :]"),
    (lambda mask: (~mask[:, 0, 0, :]).float(), "make it bool"),
    (lambda mask: ~mask[:, 0, 0, :].flip(-1), "differs from the reference"),
])
def test_key_padding_mask_mistakes_get_their_hint(wrong, phrase):
    assert_fail(lesson04.check_key_padding_mask(wrong), phrase)


def test_additive_mask_solution_passes():
    result = lesson04.check_additive_mask(to_additive_mask)
    assert result.passed, result


@pytest.mark.parametrize("wrong, phrase", [
    (lambda mask: mask.float(), "1 / 0 instead of 0 / -inf"),
    (lambda mask: (~mask).float(), "0 / 1"),
    (lambda mask: torch.zeros(mask.shape).masked_fill(mask, float("-inf")), "inverted"),
    (lambda mask: torch.zeros(mask.shape).masked_fill(~mask, -1e9), "not -inf"),
    (lambda mask: (~mask).float() * float("-inf"), "0 * -inf is NaN"),
    (lambda mask: mask, "an additive mask is a float tensor"),
    (lambda mask: to_additive_mask(mask).squeeze(), "has shape"),
])
def test_additive_mask_mistakes_get_their_hint(wrong, phrase):
    assert_fail(lesson04.check_additive_mask(wrong), phrase)


# --- masked softmax --------------------------------------------------------------------------------
def test_masked_softmax_solution_passes():
    result = lesson04.check_masked_softmax(masked_softmax)
    assert result.passed, result


def test_masked_softmax_solution_matches_course_lib():
    scores = torch.randn(2, 3, 4)  # [B, T_q, T_k]
    mask = torch.tensor([[True, False, True, False], [False] * 4, [True] * 4])  # row 1 has no visible key
    keys = torch.eye(4)  # q @ keys.T == scores, so with scale=1 the library's weights are masked_softmax's
    _, expected = cl.scaled_dot_product_attention(scores, keys, torch.randn(4, 5), mask, scale=1.0)
    torch.testing.assert_close(masked_softmax(scores, mask), expected)
    assert masked_softmax(scores, mask)[:, 1].abs().sum() == 0


def _zero_rows_with_any_mask(scores, mask):
    weights = torch.softmax(scores.masked_fill(~mask, float("-inf")), dim=-1).nan_to_num(0.0)
    return weights.masked_fill(~mask.all(dim=-1, keepdim=True), 0.0)


@pytest.mark.parametrize("wrong, phrase", [
    (lambda s, m: torch.softmax(s.masked_fill(~m, float("-inf")), dim=-1), "NaN left in"),
    (lambda s, m: torch.softmax(s, dim=-1), "the mask is ignored"),
    (lambda s, m: torch.softmax(s, dim=-1) * m, "without renormalising"),
    (lambda s, m: torch.softmax(s.masked_fill(~m, -1e9), dim=-1), "came out uniform"),
    (_zero_rows_with_any_mask, "zeros put in the wrong rows"),
    (lambda s, m: masked_softmax(s.transpose(-2, -1), m.transpose(-2, -1)).transpose(-2, -1)
     if s.shape[-1] == s.shape[-2] else masked_softmax(s, m), "softmax over the queries"),
    (lambda s, m: masked_softmax(s, m).float(), "keep the scores' dtype"),
    (lambda s, m: masked_softmax(s, m) + (~m.any(-1, keepdim=True)) * 0.1, "must be all zeros"),
])
def test_masked_softmax_mistakes_get_their_hint(wrong, phrase):
    assert_fail(lesson04.check_masked_softmax(wrong), phrase)


# --- packed causal mask ----------------------------------------------------------------------------
def test_packed_causal_mask_solution_passes():
    assert lesson04.check_packed_causal_mask(make_packed_causal_mask).passed


def test_packed_causal_mask_solution_agrees_with_course_lib():
    ids = torch.tensor([[0, 0, 1, 1, 1, 2]])
    expected = cl.combine_masks(cl.document_mask(ids), cl.causal_mask(6))
    assert torch.equal(make_packed_causal_mask(ids), expected)


@pytest.mark.parametrize("wrong, phrase", [
    (lambda ids: ids[:, None, :, None] == ids[:, None, None, :], "causal part is missing"),
    (lambda ids: _tril(ids.shape[1]).expand(ids.shape[0], 1, ids.shape[1], ids.shape[1]), "document part"),
    (lambda ids: (ids[:, None, :, None] == ids[:, None, None, :]) | _tril(ids.shape[1]), "OR instead of AND"),
    (lambda ids: (ids[:, None, :, None] == ids[:, None, None, :]) & _triu(ids.shape[1]), "future visible"),
    (lambda ids: (ids[:, None, :, None] == ids[:, None, None, :]) & _tril(ids.shape[1], -1), "cannot see itself"),
    (lambda ids: ~make_packed_causal_mask(ids), "inverted"),
    (lambda ids: make_packed_causal_mask(ids)[:, 0], "Add the head axis"),
])
def test_packed_causal_mask_mistakes_get_their_hint(wrong, phrase):
    assert_fail(lesson04.check_packed_causal_mask(wrong), phrase)


# --- every function checker: not done, broken, wrong type or shape --------------------------------
FUNCTION_CHECKERS = [lesson04.check_padding_mask, lesson04.check_decoder_mask, lesson04.check_key_padding_mask,
                     lesson04.check_additive_mask, lesson04.check_masked_softmax, lesson04.check_packed_causal_mask]


@pytest.mark.parametrize("check", FUNCTION_CHECKERS)
@pytest.mark.parametrize("answer", [None, raise_not_implemented])
def test_unfinished_answer_is_not_done(check, answer):
    assert check(answer).status == "not_done"


@pytest.mark.parametrize("check", FUNCTION_CHECKERS)
@pytest.mark.parametrize("answer, phrase", broken_answers(torch.zeros(1, 2, 3, 4, 5, dtype=torch.bool)))
def test_broken_answer_fails_without_raising(check, answer, phrase):
    assert_fail(check(answer), phrase)


# --- predict, then verify: empty rows ---------------------------------------------------------------
def test_empty_rows_prediction_passes():
    result = lesson04.check_empty_rows_prediction(3)
    assert result.passed, result
    assert "(1, 0), (1, 1), (1, 2)" in result.message and "NaN in exactly those rows (3)" in result.message


@pytest.mark.parametrize("prediction, phrase", [
    (0, "left padding puts the pads first"),
    (1, "query 0 is not the only one"),
    (2, "one more"),
    (7, "the experiment finds 3"),
    (3.0, "whole number"),
    ("three", "whole number"),
    (True, "whole number"),
])
def test_empty_rows_prediction_mistakes_get_their_hint(prediction, phrase):
    assert_fail(lesson04.check_empty_rows_prediction(prediction), phrase)


def test_empty_rows_prediction_unanswered_is_not_done():
    assert lesson04.check_empty_rows_prediction(None).status == "not_done"
