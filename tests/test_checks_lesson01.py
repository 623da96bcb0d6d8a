"""The lesson 01 checkers: hand-written wrong answers get their hints, and the predictions are checked. What every
function checker must do runs in tests/test_checks_generic.py, over this module's CHECKS, GENERIC and
ALTERNATIVES."""
from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from checker_helpers import (
    assert_diagnosed,
    assert_fail,
    assert_named,
    casts_to,
    mutates_input,
    tensor_exercise_mistakes,
)
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
# every function checker with its solution: tests/test_checks_generic.py runs over CHECKS, GENERIC, ALTERNATIVES
CHECKS = {"check_attention": (lesson01.check_attention, attention),
          "check_masked_attention": (lesson01.check_masked_attention, masked_attention)}


def scores_with(q: Tensor, k: Tensor, scale: float) -> Tensor:
    return q @ k.transpose(-2, -1) * scale


# --- correct alternatives (they must pass) ----------------------------------------------------

def attention_f_softmax(q, k, v):
    w = F.softmax(q @ k.transpose(-2, -1) / q.size(-1) ** 0.5, dim=-1)
    return w @ v, w


def attention_einsum(q, k, v):
    w = torch.einsum("...qd,...kd->...qk", q / math.sqrt(q.shape[-1]), k).softmax(-1)
    return torch.einsum("...qk,...kd->...qd", w, v), w


def attention_bmm(q, k, v):  # flatten the leading dims, then torch.bmm
    lead, (t_q, d), t_k = q.shape[:-2], q.shape[-2:], k.shape[-2]
    q3, k3, v3 = q.reshape(-1, t_q, d), k.reshape(-1, t_k, d), v.reshape(-1, t_k, v.shape[-1])
    w = torch.softmax(torch.bmm(q3, k3.transpose(1, 2)) / math.sqrt(d), dim=-1)
    return torch.bmm(w, v3).reshape(*lead, t_q, -1), w.reshape(*lead, t_q, t_k)


def attention_manual_softmax(q, k, v):
    s = torch.matmul(q, k.mT) / torch.tensor(q.shape[-1]).sqrt()
    e = torch.exp(s - s.amax(dim=-1, keepdim=True))
    w = e / e.sum(dim=-1, keepdim=True)
    return torch.matmul(w, v), w


def attention_sdpa(q, k, v):
    w = torch.softmax(q @ k.transpose(-2, -1) * q.shape[-1] ** -0.5, dim=-1)
    return F.scaled_dot_product_attention(q, k, v), w


def attention_in_float64(q, k, v):
    out, w = attention(q.double(), k.double(), v.double())
    return out.to(q.dtype), w.to(q.dtype)


def masked_where(q, k, v, mask):
    s = torch.where(mask, q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1]), float("-inf"))
    w = torch.where(mask.any(-1, keepdim=True), torch.softmax(s, -1), 0.0)
    return w @ v, w


def masked_nan_to_num(q, k, v, mask):
    s = (q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])).masked_fill(mask == 0, float("-inf"))
    w = torch.nan_to_num(F.softmax(s, dim=-1), nan=0.0)
    return w @ v, w


def masked_finite_fill_then_zero_rows(q, k, v, mask):
    s = (q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])).masked_fill(~mask, -1e9)
    w = torch.softmax(s, dim=-1) * mask.any(dim=-1, keepdim=True)
    return w @ v, w


def masked_additive(q, k, v, mask):
    bias = torch.zeros(mask.shape, dtype=q.dtype).masked_fill(~mask, float("-inf"))
    w = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1]) + bias, dim=-1).nan_to_num(0.0)
    return w @ v, w


ALTERNATIVES = [
    ("check_attention", attention_f_softmax), ("check_attention", attention_einsum),
    ("check_attention", attention_bmm), ("check_attention", attention_manual_softmax),
    ("check_attention", attention_sdpa), ("check_attention", attention_in_float64),
    ("check_masked_attention", masked_where), ("check_masked_attention", masked_nan_to_num),
    ("check_masked_attention", masked_finite_fill_then_zero_rows), ("check_masked_attention", masked_additive),
]


# --- generic mistake classes ----------------------------------------------------------------------

def _generic(solution: Callable[..., Any]) -> list[tuple[Any, str, str]]:
    return [*tensor_exercise_mistakes(solution, pair=True),
            (casts_to(solution, torch.float32), "wrong_dtype", "keep the inputs' dtype"),
            (casts_to(solution, torch.float16), "wrong_dtype", "expected torch.float32"),
            (mutates_input(solution, 0), "mutated_input", "changed its inputs in place (`q`"),
            (mutates_input(solution, 2), "mutated_input", "`v`")]


def square_only_attention(q, k, v):  # reshapes the weights with the queries' length twice
    out, w = attention(q, k, v)
    return out, w.reshape(*q.shape[:-1], q.shape[-2])


GENERIC = [(name, *row) for name, (_, solution) in CHECKS.items() for row in _generic(solution)]
GENERIC += [("check_attention", square_only_attention, "square_only", "lengths are equal")]


def swapped(q, k, v):
    output, weights = attention(q, k, v)
    return weights, output


@pytest.mark.parametrize(("wrong", "mistake", "phrase"), [
    (swapped, "swapped_outputs", "returned (attn_weights, output)"),
    (lambda q, k, v: attention(q, k, v)[0], "wrong_type", "return a pair"),
    (lambda q, k, v: (torch.zeros(3), torch.zeros(3)), "wrong_shape", "expected"),
    (lambda q, k, v: (q, k, v), "wrong_type", "should return a pair"),
    (lambda q, k, v: (1, 2), "wrong_type", "should be a torch.Tensor"),
    (lambda q, k, v: "hello", "wrong_type", "got str"),
])
def test_pair_structure_mistakes(wrong: Callable[..., Any], mistake: str, phrase: str) -> None:
    assert_diagnosed(lesson01.check_attention(wrong), mistake, phrase)


# --- the wrong answers of the earlier tests, written by hand (each with its phrase) -------------------

def no_scale(q, k, v):
    w = torch.softmax(scores_with(q, k, 1.0), dim=-1)
    return w @ v, w


def scale_by_d_k(q, k, v):
    w = torch.softmax(scores_with(q, k, 1 / q.shape[-1]), dim=-1)
    return w @ v, w


def softmax_over_queries(q, k, v):
    w = torch.softmax(scores_with(q, k, q.shape[-1] ** -0.5), dim=-2)
    return w @ v, w


def keys_not_transposed(q, k, v):
    w = torch.softmax(q @ k / math.sqrt(q.shape[-1]), dim=-1)
    return w @ v, w


def transpose_1_2(q, k, v):  # fine in 3-D, wrong in 4-D
    w = torch.softmax(q @ k.transpose(1, 2) / math.sqrt(q.shape[-1]), dim=-1)
    return w @ v, w


def keys_dot_T(q, k, v):
    w = torch.softmax(q @ k.T / math.sqrt(q.shape[-1]), dim=-1)
    return w @ v, w


def weighted_keys(q, k, v):
    _, w = attention(q, k, v)
    return w @ k, w


def in_place(q, k, v):
    q /= math.sqrt(q.shape[-1])
    w = torch.softmax(q @ k.transpose(-2, -1), dim=-1)
    return w @ v, w


def casts_to_float32(q, k, v):
    output, weights = attention(q.float(), k.float(), v.float())
    return output, weights


@pytest.mark.parametrize(("wrong", "mistake", "phrase"), [
    (no_scale, "no_scale", "without the scale"),
    (scale_by_d_k, "scale_by_d_k", "divided the scores by d_k"),
    (softmax_over_queries, "softmax_over_queries", "over the queries (dim=-2)"),
    (keys_not_transposed, "keys_not_transposed", "instead of by k transposed"),
    (transpose_1_2, "transpose_1_2", "k.transpose(-2, -1)"),
    (keys_dot_T, "k_dot_T", "k.T reverses"),
    (weighted_keys, "output_from_keys", "a weighted sum of the values"),
    (in_place, "mutated_input", "changed its inputs in place"),
    (casts_to_float32, "wrong_dtype", "keep the inputs' dtype"),
])
def test_hand_written_attention_mistakes(wrong: Callable[..., Any], mistake: str, phrase: str) -> None:
    assert_diagnosed(lesson01.check_attention(wrong), mistake, phrase)


def inverted_mask(q, k, v, mask):
    return masked_attention(q, k, v, ~mask)


def mask_after_softmax(q, k, v, mask):
    w = torch.softmax(scores_with(q, k, q.shape[-1] ** -0.5), dim=-1) * mask
    return w @ v, w


def nan_on_full_rows(q, k, v, mask):
    w = torch.softmax(scores_with(q, k, q.shape[-1] ** -0.5).masked_fill(~mask, float("-inf")), dim=-1)
    return w @ v, w


def finite_fill(q, k, v, mask):
    w = torch.softmax(scores_with(q, k, q.shape[-1] ** -0.5).masked_fill(~mask, -1e9), dim=-1)
    return w @ v, w


def finfo_min_fill(q, k, v, mask):
    w = torch.softmax(scores_with(q, k, q.shape[-1] ** -0.5).masked_fill(~mask, torch.finfo(q.dtype).min), dim=-1)
    return w @ v, w


def masked_no_scale(q, k, v, mask):
    return masked_attention(q * math.sqrt(q.shape[-1]), k, v, mask)


def ignores_mask(q, k, v, mask):
    return attention(q, k, v)


def multiplies_by_mask(q, k, v, mask):
    w = torch.softmax(scores_with(q, k, q.shape[-1] ** -0.5) * mask, dim=-1)
    return w @ v, w


@pytest.mark.parametrize(("wrong", "mistake", "phrase"), [
    (inverted_mask, "inverted_mask", "hides the real tokens instead of the blocked ones"),
    (mask_after_softmax, "mask_after_softmax", "masked after the softmax"),
    (nan_on_full_rows, "nan_on_full_rows", "NaN in the fully masked row"),
    (finite_fill, "finite_fill", "uniform weights 1/T_k"),
    (finfo_min_fill, "finite_fill", "uniform weights 1/T_k"),
    (masked_no_scale, "masked_no_scale", "not scaled"),
    (ignores_mask, "ignores_mask", "the mask has no effect"),
    (multiplies_by_mask, "zero_fill", "exp(0) = 1"),
])
def test_hand_written_masked_mistakes(wrong: Callable[..., Any], mistake: str, phrase: str) -> None:
    assert_diagnosed(lesson01.check_masked_attention(wrong), mistake, phrase)


# --- exercises 3 and 4: predictions -----------------------------------------------------------------

def test_scale_experiment_shows_saturation_without_the_scale() -> None:
    measured = lesson01.max_weight_experiment()
    assert measured["raw"] == sorted(measured["raw"]) and measured["raw"][-1] > 0.9
    assert max(measured["scaled"]) - min(measured["scaled"]) < 0.05 and max(measured["scaled"]) < 0.4


@pytest.mark.parametrize("answer", ["B", "b", " B) "])
def test_scale_prediction_passes(answer: str) -> None:
    result = lesson01.check_scale_prediction(answer)
    assert result.passed and "→" in result.message


@pytest.mark.parametrize("mistake", lesson01.SCALE_MISTAKES, ids=lambda m: m.name)
def test_every_wrong_scale_prediction_gets_its_own_hint(mistake: Any) -> None:
    result = lesson01.check_scale_prediction(mistake.wrong)
    assert_named(result, mistake)
    assert "Measured mean max weight" in result.message


@pytest.mark.parametrize(("answer", "phrase"), [
    ("A", "not their spread"), ("C", "goes the other way"), ("D", "never overflows"), ("E", "one letter"),
    (3, "one letter"),
])
def test_wrong_scale_predictions_are_explained(answer: Any, phrase: str) -> None:
    assert_fail(lesson01.check_scale_prediction(answer), phrase)


def test_duplicate_key_experiment_matches_the_formula() -> None:
    before, after = lesson01.duplicate_key_experiment()
    torch.testing.assert_close(before, torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64))
    torch.testing.assert_close(after, torch.tensor([1 / 3, 0.2, 2 / 15, 1 / 3], dtype=torch.float64))


@pytest.mark.parametrize("answer", [PREDICTED_WEIGHTS, (1 / 3, 1 / 5, 2 / 15, 1 / 3), torch.tensor(PREDICTED_WEIGHTS),
                                    torch.tensor(PREDICTED_WEIGHTS).numpy(), [torch.tensor(1 / 3), 0.2, 0.1333, 1 / 3]])
def test_duplicate_key_prediction_passes(answer: Any) -> None:
    assert lesson01.check_duplicate_key_prediction(answer).passed


@pytest.mark.parametrize("mistake", lesson01.DUPLICATE_MISTAKES, ids=lambda m: m.name)
def test_every_wrong_duplicate_prediction_gets_its_own_hint(mistake: Any) -> None:
    result = lesson01.check_duplicate_key_prediction(mistake.wrong)
    assert_named(result, mistake)
    assert "0.333" in result.message


@pytest.mark.parametrize(("answer", "phrase"), [
    ([0.25, 0.3, 0.2, 0.25], "do not share A's old weight"),
    ([0.5, 0.3, 0.2, 0.5], "sum to 1.5"),
    ([0.5, 0.3, 0.2, 0.0], "same key, so the same score"),
    ([0.4, 0.2, 0.1, 0.3], "same key, so the same score"),
    ([0.3, 0.2, 0.2, 0.3], "not quite"),
    ([0.6, 0.3, 0.2, 0.6], "sum to 1.7"),
    ([0.5, 0.3, 0.2], "give 4 numbers"),
    (["a", "b", "c", "d"], "give 4 numbers"),
    ("0.33, 0.2, 0.13, 0.33", "give 4 numbers"),
    (0.5, "give 4 numbers"),
])
def test_wrong_duplicate_key_predictions_are_explained(answer: Any, phrase: str) -> None:
    result = lesson01.check_duplicate_key_prediction(answer)
    assert_fail(result, phrase)
    if "4 numbers" not in phrase:
        assert "0.333" in result.message


# --- every checker: unfinished, None --------------------------------------------------------------

ALL_CHECKERS = [lesson01.check_attention, lesson01.check_masked_attention, lesson01.check_scale_prediction,
                lesson01.check_duplicate_key_prediction]


@pytest.mark.parametrize("check", ALL_CHECKERS)
def test_none_is_not_done(check: Callable[[Any], CheckResult]) -> None:
    result = check(None)
    assert result.status == "not_done" and str(result).startswith("⏳")


def test_titles_follow_one_pattern() -> None:
    for n, check in enumerate(ALL_CHECKERS, start=1):
        assert check(None).title.startswith(f"Exercise {n} · ")
