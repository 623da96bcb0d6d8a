"""The lesson 01 checkers pass the worked solutions, name each typical mistake, and never raise."""
from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import Tensor

from course_lib.checks import CheckResult, lesson01

# --- the solutions, identical in behaviour to solutions/01_self_attention.ipynb -------------------

def attention(q: Tensor, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
    attn_scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])  # [..., T_q, T_k]
    attn_weights = torch.softmax(attn_scores, dim=-1)  # [..., T_q, T_k]
    return attn_weights @ v, attn_weights  # [..., T_q, d_v], [..., T_q, T_k]


def masked_attention(q: Tensor, k: Tensor, v: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
    attn_scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])  # [..., T_q, T_k]
    attn_scores = attn_scores.masked_fill(~mask, float("-inf"))
    row_has_key = mask.any(dim=-1, keepdim=True)  # [..., T_q, 1]
    attn_weights = torch.softmax(attn_scores, dim=-1).masked_fill(~row_has_key, 0.0)  # NaN rows -> 0
    return attn_weights @ v, attn_weights


PREDICTION = "B"
PREDICTED_WEIGHTS = [1 / 3, 0.2, 0.1333, 1 / 3]


def assert_fails(result: CheckResult, phrase: str) -> None:
    assert result.status == "fail", result
    assert phrase in result.message, result.message


def scores_with(q: Tensor, k: Tensor, scale: float) -> Tensor:
    return q @ k.transpose(-2, -1) * scale


# --- exercise 1 --------------------------------------------------------------------------------------

def test_attention_solution_passes() -> None:
    result = lesson01.check_attention(attention)
    assert result.passed, result
    assert str(result).startswith("✅")


def no_scale(q: Tensor, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
    w = torch.softmax(scores_with(q, k, 1.0), dim=-1)
    return w @ v, w


def scale_by_d_k(q: Tensor, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
    w = torch.softmax(scores_with(q, k, 1 / q.shape[-1]), dim=-1)
    return w @ v, w


def softmax_over_queries(q: Tensor, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
    w = torch.softmax(scores_with(q, k, q.shape[-1] ** -0.5), dim=-2)
    return w @ v, w


def keys_not_transposed(q: Tensor, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
    w = torch.softmax(q @ k / math.sqrt(q.shape[-1]), dim=-1)
    return w @ v, w


def transpose_1_2(q: Tensor, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:  # fine in 3-D, wrong in 4-D
    w = torch.softmax(q @ k.transpose(1, 2) / math.sqrt(q.shape[-1]), dim=-1)
    return w @ v, w


def swapped(q: Tensor, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
    output, weights = attention(q, k, v)
    return weights, output


def weighted_keys(q: Tensor, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
    _, w = attention(q, k, v)
    return w @ k, w


def only_output(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    return attention(q, k, v)[0]


def in_place(q: Tensor, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
    q /= math.sqrt(q.shape[-1])
    w = torch.softmax(q @ k.transpose(-2, -1), dim=-1)
    return w @ v, w


def casts_to_float32(q: Tensor, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
    output, weights = attention(q.float(), k.float(), v.float())
    return output, weights


@pytest.mark.parametrize(("wrong", "phrase"), [
    (no_scale, "without the scale"),
    (scale_by_d_k, "divided the scores by d_k"),
    (softmax_over_queries, "over the queries (dim=-2)"),
    (keys_not_transposed, "instead of by k transposed"),
    (transpose_1_2, "k.transpose(-2, -1)"),
    (swapped, "returned (attn_weights, output)"),
    (weighted_keys, "a weighted sum of the values"),
    (only_output, "return a pair"),
    (in_place, "changed its inputs in place"),
    (casts_to_float32, "keep the inputs' dtype"),
])
def test_attention_mistakes_get_their_hint(wrong: Callable[..., Any], phrase: str) -> None:
    assert_fails(lesson01.check_attention(wrong), phrase)


# --- exercise 2 --------------------------------------------------------------------------------------

def test_masked_attention_solution_passes() -> None:
    assert lesson01.check_masked_attention(masked_attention).passed


def inverted_mask(q: Tensor, k: Tensor, v: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
    return masked_attention(q, k, v, ~mask)


def mask_after_softmax(q: Tensor, k: Tensor, v: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
    w = torch.softmax(scores_with(q, k, q.shape[-1] ** -0.5), dim=-1) * mask
    return w @ v, w


def nan_on_full_rows(q: Tensor, k: Tensor, v: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
    w = torch.softmax(scores_with(q, k, q.shape[-1] ** -0.5).masked_fill(~mask, float("-inf")), dim=-1)
    return w @ v, w


def finite_fill(q: Tensor, k: Tensor, v: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
    w = torch.softmax(scores_with(q, k, q.shape[-1] ** -0.5).masked_fill(~mask, -1e9), dim=-1)
    return w @ v, w


def masked_no_scale(q: Tensor, k: Tensor, v: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
    return masked_attention(q * math.sqrt(q.shape[-1]), k, v, mask)


def ignores_mask(q: Tensor, k: Tensor, v: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
    return attention(q, k, v)


@pytest.mark.parametrize(("wrong", "phrase"), [
    (inverted_mask, "hides the real tokens instead of the blocked ones"),
    (mask_after_softmax, "masked after the softmax"),
    (nan_on_full_rows, "NaN in the fully masked row"),
    (finite_fill, "uniform weights 1/T_k"),
    (masked_no_scale, "not scaled"),
    (ignores_mask, "the mask has no effect"),
])
def test_masked_attention_mistakes_get_their_hint(wrong: Callable[..., Any], phrase: str) -> None:
    assert_fails(lesson01.check_masked_attention(wrong), phrase)


# --- exercises 3 and 4 -------------------------------------------------------------------------------

def test_scale_experiment_shows_saturation_without_the_scale() -> None:
    measured = lesson01.max_weight_experiment()
    assert measured["raw"] == sorted(measured["raw"]) and measured["raw"][-1] > 0.9
    assert max(measured["scaled"]) - min(measured["scaled"]) < 0.05 and max(measured["scaled"]) < 0.4


@pytest.mark.parametrize("answer", ["B", "b", " B) "])
def test_scale_prediction_passes(answer: str) -> None:
    result = lesson01.check_scale_prediction(answer)
    assert result.passed and "→" in result.message


@pytest.mark.parametrize(("answer", "phrase"), [
    ("A", "not their spread"), ("C", "goes the other way"), ("D", "never overflows"), ("E", "one letter"),
    (3, "one letter"),
])
def test_wrong_scale_predictions_are_explained(answer: Any, phrase: str) -> None:
    result = lesson01.check_scale_prediction(answer)
    assert_fails(result, phrase)
    if answer in ("A", "C", "D"):
        assert "Measured mean max weight" in result.message


def test_duplicate_key_experiment_matches_the_formula() -> None:
    before, after = lesson01.duplicate_key_experiment()
    torch.testing.assert_close(before, torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64))
    torch.testing.assert_close(after, torch.tensor([1 / 3, 0.2, 2 / 15, 1 / 3], dtype=torch.float64))


@pytest.mark.parametrize("answer", [PREDICTED_WEIGHTS, (1 / 3, 1 / 5, 2 / 15, 1 / 3), torch.tensor(PREDICTED_WEIGHTS)])
def test_duplicate_key_prediction_passes(answer: Any) -> None:
    assert lesson01.check_duplicate_key_prediction(answer).passed


@pytest.mark.parametrize(("answer", "phrase"), [
    ([0.25, 0.3, 0.2, 0.25], "do not share A's old weight"),
    ([0.5, 0.3, 0.2, 0.5], "sum to 1.5"),
    ([0.5, 0.3, 0.2, 0.0], "same key, so the same score"),
    ([0.4, 0.2, 0.1, 0.3], "same key, so the same score"),
    ([0.3, 0.2, 0.2, 0.3], "not quite"),
    ([0.5, 0.3, 0.2], "give 4 numbers"),
    (["a", "b", "c", "d"], "give 4 numbers"),
])
def test_wrong_duplicate_key_predictions_are_explained(answer: Any, phrase: str) -> None:
    result = lesson01.check_duplicate_key_prediction(answer)
    assert_fails(result, phrase)
    if "4 numbers" not in phrase:
        assert "0.333" in result.message


# --- every checker: unfinished, None, broken answers ---------------------------------------------------

FUNCTION_CHECKERS = [lesson01.check_attention, lesson01.check_masked_attention]
ALL_CHECKERS = [*FUNCTION_CHECKERS, lesson01.check_scale_prediction, lesson01.check_duplicate_key_prediction]


def stub(*args: Any) -> Any:
    raise NotImplementedError("exercise not done yet")


@pytest.mark.parametrize("check", ALL_CHECKERS)
def test_none_is_not_done(check: Callable[[Any], CheckResult]) -> None:
    result = check(None)
    assert result.status == "not_done" and str(result).startswith("⏳")


@pytest.mark.parametrize("check", FUNCTION_CHECKERS)
def test_unfinished_stub_is_not_done(check: Callable[[Any], CheckResult]) -> None:
    assert check(stub).status == "not_done"


def raises_value_error(*args: Any) -> Any:
    raise ValueError("boom")


@pytest.mark.parametrize("check", FUNCTION_CHECKERS)
@pytest.mark.parametrize(("broken", "phrase"), [
    (raises_value_error, "raised ValueError: boom"),
    (lambda *args: "hello", "got str"),
    (lambda *args: (1, 2), "should return a torch.Tensor"),
    (lambda q, k, v, *m: (torch.zeros(3), torch.zeros(3)), "expected"),
    (lambda q, k, v, *m: (q, k, v), "should return a pair"),
    (42, "should be a function"),
])
def test_broken_answers_fail_without_raising(check: Callable[[Any], CheckResult], broken: Any, phrase: str) -> None:
    assert_fails(check(broken), phrase)
