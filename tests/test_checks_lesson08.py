"""The lesson 08 checkers pass the solutions, name each typical mistake, and never raise."""
from __future__ import annotations

import math

import pytest
import torch
from checker_helpers import assert_fail, assert_robust

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


CHECKS = [(lesson08.check_attention_entropy, attention_entropy),
          (lesson08.check_normalised_entropy, normalised_entropy),
          (lesson08.check_silence_head, silence_head)]


@pytest.mark.parametrize("check, solution", CHECKS)
def test_solutions_pass(check, solution) -> None:
    result = check(solution)
    assert result.passed, result


@pytest.mark.parametrize("check", [c for c, _ in CHECKS])
def test_stubs_errors_and_wrong_types_never_raise(check) -> None:
    assert_robust(check, wrong_shape=torch.zeros(2, 2, 2, 2, 2))


# --- exercise 1: entropy -------------------------------------------------------------------------------
@pytest.mark.parametrize("wrong, phrase", [
    (lambda w: -(w * w.log()).sum(dim=-1), "0 · ln 0"),
    (lambda w: -(w * torch.log2(w.clamp(min=1e-30))).sum(dim=-1), "bits (log2)"),
    (lambda w: -torch.special.xlogy(w, w).sum(dim=-2), "summed over the query axis"),
    (lambda w: torch.special.xlogy(w, w).sum(dim=-1), "never negative"),
    (lambda w: -torch.special.xlogy(w, w).mean(dim=-1), "mean over the keys"),
    (lambda w: -torch.special.xlogy(w, w).sum(dim=-1, keepdim=True), "keepdim"),
    (lambda w: -torch.special.xlogy(w, w).sum(), "one number"),
    (lambda w: attention_entropy(w) / math.log(w.shape[-1]), "normalised entropy of exercise 2"),
    (lambda w: attention_entropy(w) + 0.1, "differs from the reference"),
])
def test_entropy_mistakes_get_their_hint(wrong, phrase) -> None:
    assert_fail(lesson08.check_attention_entropy(wrong), phrase)


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
@pytest.mark.parametrize("wrong, phrase", [
    (lambda w, m: attention_entropy(w) / math.log(w.shape[-1]), "padded keys do not count"),
    (lambda w, m: attention_entropy(w) / m.sum(dim=-1).log(), "ln 1 = 0"),
    (lambda w, m: normalised_entropy(w, ~m), "True at real words"),
    (lambda w, m: normalised_entropy(w, m) * math.log(2), "log2 in the denominator"),
    (lambda w, m: normalised_entropy(w, m) / math.log(2), "log2 in the entropy"),
    (lambda w, m: attention_entropy(w), "that is the entropy itself"),
    (lambda w, m: normalised_entropy(w, m)[..., None], "has shape"),
    (lambda w, m: -(w * w.log()).sum(dim=-1) / 2.0, "0 · ln 0"),
])
def test_normalised_entropy_mistakes_get_their_hint(wrong, phrase) -> None:
    assert_fail(lesson08.check_normalised_entropy(wrong), phrase)


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


@pytest.mark.parametrize("wrong, phrase", [
    (_edit(lambda a, h, c: a.out_proj.weight[c].zero_()), "*rows* of out_proj.weight"),
    (_edit(lambda a, h, c: a.out_proj.weight[:, h::a.n_heads].zero_()), "not interleaved"),
    (_edit(lambda a, h, c: (a.q_proj.weight[c].zero_(), a.q_proj.bias[c].zero_())), "uniform"),
    (_edit(lambda a, h, c: a.q_proj.weight[c].zero_()), "zeroing the query weights"),
    (_edit(lambda a, h, c: a.v_proj.weight[c].zero_()), "its bias v_proj.bias"),
    (_edit(lambda a, h, c: (a.out_proj.weight[:, c].zero_(), a.out_proj.bias.zero_())), "bias is shared"),
    (_edit(lambda a, h, c: a.out_proj.weight.zero_()), "silencing every head"),
    (_edit(lambda a, h, c: a.out_proj.weight[:, (h + 1) % a.n_heads * a.d_head:][:, :a.d_head].zero_()),
     "you silenced head"),
    (lambda a, h: a.out_proj.weight[:, h * a.d_head:(h + 1) * a.d_head].clone().zero_(), "did not change"),
    (lambda a, h: a.out_proj.weight.__setitem__((slice(None), slice(h * a.d_head, (h + 1) * a.d_head)), 0.0),
     "torch.no_grad()"),
])
def test_silence_head_mistakes_get_their_hint(wrong, phrase) -> None:
    assert_fail(lesson08.check_silence_head(wrong), phrase)


def test_silencing_by_values_and_their_bias_is_accepted() -> None:
    """Zero values (weights and bias) make the head's context zero: that silences it too."""
    def by_values(attn, head):
        rows = slice(head * attn.d_head, (head + 1) * attn.d_head)
        with torch.no_grad():
            attn.v_proj.weight[rows] = 0.0
            attn.v_proj.bias[rows] = 0.0

    assert lesson08.check_silence_head(by_values).passed


def test_silence_head_accepts_a_returned_module() -> None:
    import copy

    def returns_copy(attn, head):
        other = copy.deepcopy(attn)
        silence_head(other, head)
        return other

    assert lesson08.check_silence_head(returns_copy).passed


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


@pytest.mark.parametrize("prediction, phrase", [
    (0, "you predicted 0"), (0.5, "you predicted 0.5"), (math.log(6), "you predicted 1.79"),
])
def test_zero_query_wrong_predictions_get_the_explanation(prediction, phrase) -> None:
    result = lesson08.check_zero_query_prediction(prediction)
    assert_fail(result, phrase)
    assert "average of its values" in result.message


@pytest.mark.parametrize("prediction", ["one", True, [1.0]])
def test_zero_query_prediction_must_be_a_number(prediction) -> None:
    assert_fail(lesson08.check_zero_query_prediction(prediction), "should be a number")


def test_zero_query_prediction_not_done() -> None:
    assert lesson08.check_zero_query_prediction(None).status == "not_done"
