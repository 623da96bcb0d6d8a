"""The lesson 08 checkers: hand-written wrong answers get their hints, and the prediction is checked. What every
function checker must do runs in tests/test_checks_generic.py, over this module's CHECKS, GENERIC and
ALTERNATIVES."""
from __future__ import annotations

import copy
import math

import pytest
import torch
from checker_helpers import (
    assert_diagnosed,
    assert_named,
    batch_one_only,
    casts_to,
    mutates_input,
    returns_numpy,
)

from course_lib.checks import lesson08

pytestmark = pytest.mark.usefixtures("single_thread")


# Reference solutions, identical in behaviour to solutions/08_attention_explorer.ipynb.
def attention_entropy(attn_weights):
    return -torch.special.xlogy(attn_weights, attn_weights).sum(dim=-1)  # [..., T_q]


def normalised_entropy(attn_weights, key_mask):
    entropy = attention_entropy(attn_weights)  # [B, H, T_q]
    n_keys = key_mask.sum(dim=-1).to(entropy.dtype)  # [B, 1, 1]: real source words
    return torch.where(n_keys > 1, entropy / n_keys.clamp(min=2).log(), torch.zeros_like(entropy))


def silence_head(attn, head):
    d_head = attn.d_head
    with torch.no_grad():
        attn.out_proj.weight[:, head * d_head:(head + 1) * d_head] = 0.0


# every function checker with its solution: tests/test_checks_generic.py runs over CHECKS, GENERIC, ALTERNATIVES
CHECKS = {"check_attention_entropy": (lesson08.check_attention_entropy, attention_entropy),
          "check_normalised_entropy": (lesson08.check_normalised_entropy, normalised_entropy),
          "check_silence_head": (lesson08.check_silence_head, silence_head)}
ALL_CHECKERS = [lesson08.check_attention_entropy, lesson08.check_normalised_entropy, lesson08.check_silence_head,
                lesson08.check_zero_query_prediction]


def test_titles_follow_one_pattern() -> None:
    for n, check in enumerate(ALL_CHECKERS, start=1):
        assert check(None).title.startswith(f"Exercise {n} · ")


# --- correct alternatives (they must pass) ----------------------------------------------------

def entropy_where(w):
    return -torch.where(w > 0, w * w.log(), torch.zeros_like(w)).sum(dim=-1)


def entropy_nan_to_num_per_term(w):
    return -(w * torch.log(w)).nan_to_num(0.0).sum(dim=-1)


def entropy_clamped(w):
    return -(w * w.clamp_min(1e-30).log()).sum(-1)


def normalised_with_the_library(w, m):
    from course_lib.metrics import attention_entropy as library_entropy
    return library_entropy(w, m, normalise=True)


def normalised_nan_to_num(w, m):
    n = m.sum(dim=-1, keepdim=False).to(w.dtype)  # [B, 1, 1]
    ratio = entropy_where(w) / torch.log(n)  # 0/0 = NaN for one word, 0/-inf = 0 for none
    return torch.where(n > 1, ratio, 0.0).nan_to_num(0.0)


def normalised_loop(w, m):
    out = torch.zeros(w.shape[:-1], dtype=w.dtype)
    for b in range(w.shape[0]):
        n = int(m[b].sum())
        if n > 1:
            out[b] = attention_entropy(w[b]) / math.log(n)
    return out


def silence_by_values_and_their_bias(attn, head):
    """Zero values (weights and bias) make the head's context zero: that silences it too."""
    rows = slice(head * attn.d_head, (head + 1) * attn.d_head)
    with torch.no_grad():
        attn.v_proj.weight[rows] = 0.0
        attn.v_proj.bias[rows] = 0.0


def silence_with_data(attn, head):
    attn.out_proj.weight.data[:, head * attn.d_head:(head + 1) * attn.d_head] = 0.0
    return attn


def silence_by_mask(attn, head):
    keep = torch.ones(attn.n_heads, attn.d_head)
    keep[head] = 0.0
    with torch.no_grad():
        attn.out_proj.weight.mul_(keep.flatten())  # [d_model] broadcasts over the columns


def silence_with_a_new_parameter(attn, head):
    weight = attn.out_proj.weight.detach().clone()
    weight[:, head * attn.d_head:(head + 1) * attn.d_head] = 0.0
    attn.out_proj.weight = torch.nn.Parameter(weight)


ALTERNATIVES = [
    ("check_attention_entropy", entropy_where), ("check_attention_entropy", entropy_nan_to_num_per_term),
    ("check_attention_entropy", entropy_clamped),
    ("check_normalised_entropy", normalised_with_the_library), ("check_normalised_entropy", normalised_nan_to_num),
    ("check_normalised_entropy", normalised_loop),
    ("check_silence_head", silence_by_values_and_their_bias), ("check_silence_head", silence_with_data),
    ("check_silence_head", silence_by_mask), ("check_silence_head", silence_with_a_new_parameter),
]


# --- generic mistake classes ----------------------------------------------------------------------

def _returns_a_silenced_copy(attn, head):
    other = copy.deepcopy(attn)
    silence_head(other, head)
    return other


def _entropy_clamping_in_place(w):
    return -(w * w.clamp_(min=1e-30).log()).sum(dim=-1)


GENERIC = [
    ("check_attention_entropy", returns_numpy(attention_entropy), "wrong_type", "numpy.ndarray"),
    ("check_attention_entropy", casts_to(attention_entropy, torch.float32), "wrong_dtype", "keep the input"),
    ("check_attention_entropy", _entropy_clamping_in_place, "mutated_input", "`attn_weights`"),
    ("check_normalised_entropy", returns_numpy(normalised_entropy), "wrong_type", "numpy.ndarray"),
    ("check_normalised_entropy", casts_to(normalised_entropy, torch.float32), "wrong_dtype", "keep the input"),
    ("check_normalised_entropy", mutates_input(normalised_entropy, 0), "mutated_input", "`attn_weights`"),
    ("check_normalised_entropy", batch_one_only(normalised_entropy), "batch_one_only", "right for a batch of 1"),
    ("check_silence_head", _returns_a_silenced_copy, "modified_copy", "returned a modified copy"),
]


# --- the wrong answers of the earlier tests, written by hand (each with its phrase) -------------------

# --- exercise 1: entropy -------------------------------------------------------------------------------
@pytest.mark.parametrize("wrong, mistake, phrase", [
    (lambda w: -(w * w.log()).sum(dim=-1), "zero_log_zero", "0 · ln 0"),
    (lambda w: -(w * w.log()).sum(dim=-1).nan_to_num(0.0), "nan_to_num_after_sum", "before the sum"),
    (lambda w: -(w * torch.log2(w.clamp(min=1e-30))).sum(dim=-1), "bits", "bits (log2)"),
    (lambda w: -torch.special.xlogy(w, w).sum(dim=-2), "sum_over_queries", "summed over the query axis"),
    (lambda w: -(w * w.log()).sum(dim=-2), "sum_over_queries", "summed over the query axis"),
    (lambda w: torch.special.xlogy(w, w).sum(dim=-1), "no_minus_sign", "never negative"),
    (lambda w: -torch.special.xlogy(w, w).mean(dim=-1), "mean_over_keys", "mean over the keys"),
    (lambda w: -torch.special.xlogy(w, w).sum(dim=-1, keepdim=True), "keepdim", "keepdim"),
    (lambda w: -torch.special.xlogy(w, w).sum(), "one_number", "one number"),
    (lambda w: attention_entropy(w) / math.log(w.shape[-1]), "normalised_by_ln_S", "normalised entropy of exercise 2"),
    (lambda w: attention_entropy(w) + 0.1, None, "differs from the reference"),
    (lambda w: -(w * w.log()).sum(dim=-1) + 0.1, "nan", "0 · ln 0"),
])
def test_entropy_mistakes_get_their_hint(wrong, mistake, phrase) -> None:
    assert_diagnosed(lesson08.check_attention_entropy(wrong), mistake, phrase)


def test_entropy_reference_is_pytorchs_categorical() -> None:
    weights = torch.softmax(torch.randn(3, 5), dim=-1)
    torch.testing.assert_close(lesson08._categorical_entropy(weights),
                               torch.distributions.Categorical(probs=weights).entropy())
    empty = torch.zeros(1, 4)
    assert lesson08._categorical_entropy(empty).tolist() == [0.0]


def test_entropy_cases_hold_one_hot_even_and_empty_rows() -> None:
    cases = dict((name, w) for name, w in lesson08._entropy_cases())
    entropies = torch.cat([lesson08._categorical_entropy(w).flatten().double() for w in cases.values()])
    zero = torch.tensor(0.0, dtype=torch.float64)
    assert torch.isclose(entropies, zero, atol=1e-6).sum() >= 2  # a one-hot row and an empty row
    assert torch.isclose(entropies, torch.tensor(math.log(6), dtype=torch.float64)).any()
    assert any(w.dtype == torch.float64 for w in cases.values())
    assert any(w.shape[-2] != w.shape[-1] for w in cases.values())


# --- exercise 2: normalised entropy ------------------------------------------------------------------------
def _count_squeezed(w, m):
    n = m.sum(dim=-1).squeeze().float()  # [B]
    return torch.where(n > 1, attention_entropy(w) / n.clamp(min=2).log(), 0.0)


@pytest.mark.parametrize("wrong, mistake, phrase", [
    (lambda w, m: attention_entropy(w) / math.log(w.shape[-1]), "divided_by_ln_S", "padded keys do not count"),
    (lambda w, m: attention_entropy(w) / m.sum(dim=-1).log(), "division_by_ln_1", "ln 1 = 0"),
    (lambda w, m: normalised_entropy(w, ~m), "counted_padding", "True at real words"),
    (lambda w, m: normalised_entropy(w, m) * math.log(2), "log2_denominator", "log2 in the denominator"),
    (lambda w, m: normalised_entropy(w, m) / math.log(2), "log2_entropy", "log2 in the entropy"),
    (lambda w, m: attention_entropy(w), "not_normalised", "that is the entropy itself"),
    (lambda w, m: normalised_entropy(w, m)[..., None], "wrong_shape", "has shape"),
    (lambda w, m: -(w * w.log()).sum(dim=-1) / 2.0, "nan", "0 · ln 0"),
    (lambda w, m: normalised_entropy(w, m) + 0.05, None, "differs from the reference"),
    (lambda w, m: torch.where(m.sum() > 1, attention_entropy(w) / m.sum().float().log(), 0.0), "count_over_batch",
     "whole batch"),
    (lambda w, m: torch.where(m.sum(-1) > 1, attention_entropy(w) / m.sum(-1).clamp(min=2), 0.0), "divided_by_n",
     "divide by ln n"),
    (_count_squeezed, "count_squeezed", ".squeeze()"),
])
def test_normalised_entropy_mistakes_get_their_hint(wrong, mistake, phrase) -> None:
    assert_diagnosed(lesson08.check_normalised_entropy(wrong), mistake, phrase)


def test_normalised_cases_tell_the_mistakes_apart() -> None:
    """In the padded cases, dividing by ln S (padding counted) gives a different answer from ln n."""
    for _, weights, key_mask in lesson08._normalised_cases()[:2]:
        entropy = attention_entropy(weights)
        by_all_keys = entropy / math.log(weights.shape[-1])
        assert not torch.allclose(by_all_keys, normalised_entropy(weights, key_mask))


# --- exercise 3: silence a head ----------------------------------------------------------------------------
def _edit(edit):
    def wrong(attn, head):
        d = attn.d_head
        with torch.no_grad():
            edit(attn, head, slice(head * d, (head + 1) * d))
    return wrong


@pytest.mark.parametrize("wrong, mistake, phrase", [
    (_edit(lambda a, h, c: a.out_proj.weight[c].zero_()), "zeroed_rows", "*rows* of out_proj.weight"),
    (_edit(lambda a, h, c: a.out_proj.weight[:, h::a.n_heads].zero_()), "interleaved_columns", "not interleaved"),
    (_edit(lambda a, h, c: (a.q_proj.weight[c].zero_(), a.q_proj.bias[c].zero_())), "zero_queries", "uniform"),
    (_edit(lambda a, h, c: a.q_proj.weight[c].zero_()), "zero_query_weights", "zeroing the query weights"),
    (_edit(lambda a, h, c: a.v_proj.weight[c].zero_()), "value_bias_left", "its bias v_proj.bias"),
    (_edit(lambda a, h, c: (a.out_proj.weight[:, c].zero_(), a.out_proj.bias.zero_())), "zeroed_shared_bias",
     "bias is shared"),
    (_edit(lambda a, h, c: a.out_proj.weight.zero_()), "zeroed_every_head", "silencing every head"),
    (_edit(lambda a, h, c: a.out_proj.weight[:, (h + 1) % a.n_heads * a.d_head:][:, :a.d_head].zero_()),
     "next_head", "you silenced head"),
    (_edit(lambda a, h, c: a.out_proj.weight[:, (h - 1) * a.d_head:h * a.d_head].zero_()), "counted_from_1",
     "heads count from 0"),
    (lambda a, h: a.out_proj.weight[:, h * a.d_head:(h + 1) * a.d_head].clone().zero_(), "module_unchanged",
     "did not change"),
    (lambda a, h: a.out_proj.weight.__setitem__((slice(None), slice(h * a.d_head, (h + 1) * a.d_head)), 0.0),
     "needs_no_grad", "torch.no_grad()"),
    (lambda a, h: a.out_proj.weight.mul_(0.5), "needs_no_grad_whole_tensor", "torch.no_grad()"),
    (lambda a, h: a.out_proj.bias.add_(1.0), "needs_no_grad_whole_tensor", "torch.no_grad()"),
    (lambda a, h: a.out_proj.weight.t()[h * a.d_head:(h + 1) * a.d_head].zero_(), "needs_no_grad", "torch.no_grad()"),
    (_edit(lambda a, h, c: a.out_proj.weight[:, c].mul_(0.5)), None, "largest difference"),
])
def test_silence_head_mistakes_get_their_hint(wrong, mistake, phrase) -> None:
    assert_diagnosed(lesson08.check_silence_head(wrong), mistake, phrase)


def test_a_returned_modified_copy_fails_in_this_in_place_exercise() -> None:
    """The exercise edits the module in place: a silenced copy, returned while attn is unchanged, is named."""
    result = lesson08.check_silence_head(_returns_a_silenced_copy)
    assert result.mistake == "modified_copy" and "`attn` itself must change" in result.message, result


def test_silence_cases_quote_head_0_last() -> None:
    """Counting heads from 1 edits nothing for head 0 (slice(-d_head, 0)): that case comes last, so the hint
    about counting from 1 is found first."""
    assert [c.args[1] for c in lesson08.SILENCE_CASES][-1] == 0
    assert all(c.args[1] > 0 for c in lesson08.SILENCE_CASES[:-1])


def test_by_hand_reference_matches_the_library_module() -> None:
    """With no head silenced (silent=-1), the head-by-head reference equals cl.MultiHeadAttention."""
    attn = lesson08._module(12, 3, 0)
    x, source = torch.randn(2, 4, 12), torch.randn(2, 5, 12)
    mask = torch.ones(2, 1, 5, dtype=torch.bool)
    mask[1, 0, 3:] = False
    with torch.no_grad():
        torch.testing.assert_close(lesson08._by_hand(attn, x, source, mask, -1), attn(x, source, mask=mask[:, None])[0])


# --- exercise 4: predict, then verify ----------------------------------------------------------------------
@pytest.mark.parametrize("prediction", [1, 1.0, 0.99, torch.tensor(1.0)])
def test_zero_query_prediction_passes_at_one(prediction) -> None:
    result = lesson08.check_zero_query_prediction(prediction)
    assert result.passed, result
    assert "uniform" in result.message


@pytest.mark.parametrize("prediction, mistake, phrase", [
    (0, "silent_or_one_word", "you predicted 0"), (0.5, None, "you predicted 0.5"),
    (math.log(6), "raw_entropy_6_words", "you predicted ln 6 = 1.79"),
    (round(math.log(4), 2), "raw_entropy_4_words", "you predicted ln 4"),
    (2.0, "outside_0_1", "between 0"), (-0.5, "outside_0_1", "between 0"),
])
def test_zero_query_wrong_predictions_get_the_explanation(prediction, mistake, phrase) -> None:
    result = lesson08.check_zero_query_prediction(prediction)
    assert_diagnosed(result, mistake, phrase)
    assert "average of its values" in result.message


@pytest.mark.parametrize("mistake", lesson08.MISTAKES["check_zero_query_prediction"][:-1], ids=lambda m: m.name)
def test_every_wrong_prediction_gets_its_own_hint(mistake) -> None:
    assert_named(lesson08.check_zero_query_prediction(mistake.wrong), mistake)


@pytest.mark.parametrize("prediction", ["one", True, [1.0], float("nan")])
def test_zero_query_prediction_must_be_a_number(prediction) -> None:
    assert_diagnosed(lesson08.check_zero_query_prediction(prediction), "wrong_type", "should be a number")


def test_zero_query_prediction_not_done() -> None:
    assert lesson08.check_zero_query_prediction(None).status == "not_done"
