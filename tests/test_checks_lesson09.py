"""The lesson 09 checkers: hand-written wrong answers get their hints, the cases tell the mistakes apart, and the
prediction is checked against a measurement. What every function checker must do runs in
tests/test_checks_generic.py, over this module's CHECKS, GENERIC, ALTERNATIVES and BROKEN."""
from __future__ import annotations

import time

import numpy as np
import pytest
import torch
from checker_helpers import (
    assert_diagnosed,
    batch_one_only_raising,
    broken_answers,
    casts_to,
    mutates_input,
    raise_value_error,
    returns_list,
    returns_numpy,
)

import course_lib as cl
from course_lib.checks import lesson09

pytestmark = pytest.mark.usefixtures("single_thread")


# --- the solutions, identical in behaviour to solutions/09_why_cross_attention.ipynb ----------------------
def masked_mean_pool(states, real):
    weights = real[..., None].to(states.dtype)  # [B, S, 1]
    return (states * weights).sum(dim=1) / weights.sum(dim=1)  # [B, D]


def prefix_lm_mask_for(n_source, length):
    position = torch.arange(length)
    causal = position[None, :] <= position[:, None]  # [L, L]: key j <= query i
    prefix = position < n_source + 1  # source and <sep>
    return causal | (prefix[:, None] & prefix[None, :])  # [L, L]


def target_source_block(weights, n_source, n_target):
    return weights[:, n_source:n_source + n_target, :n_source]  # [H, n_target, n_source]


def hidden_alignment_aer(weights, n_source, n_target, gold):
    block = target_source_block(weights, n_source, n_target).mean(dim=0)  # [n_target, n_source]
    predicted = {(int(s), j) for j, s in enumerate(block.argmax(dim=-1))}
    gold = set(gold)
    return 1 - 2 * len(predicted & gold) / (len(predicted) + len(gold))


# every function checker with its solution: tests/test_checks_generic.py runs over CHECKS, GENERIC, ALTERNATIVES
# and BROKEN
CHECKS = {
    "check_masked_mean": (lesson09.check_masked_mean, masked_mean_pool),
    "check_prefix_lm_mask": (lesson09.check_prefix_lm_mask, prefix_lm_mask_for),
    "check_target_source_block": (lesson09.check_target_source_block, target_source_block),
    "check_hidden_alignment": (lesson09.check_hidden_alignment, hidden_alignment_aer),
}
BROKEN = [(name, answer, phrase) for name in list(CHECKS)[:3]
          for answer, phrase in broken_answers(torch.zeros(1, 2, 3, 4, 5, dtype=torch.bool))] + [
    ("check_hidden_alignment", raise_value_error, "raised ValueError: boom"),
    ("check_hidden_alignment", lambda *args: [0.5], "should be a number"),
    ("check_hidden_alignment", lambda *args: torch.tensor([0.5, 0.5]), "should be a number"),
    ("check_hidden_alignment", 42, "should be a function"),
]
MEASURED = {"one vector": 9, "cross-attention": None, "GRU": 13, "decoder-only": None, "prefix-LM": None}
NOBODY_FAILS = dict.fromkeys(lesson09.MODELS)


def test_titles_follow_one_pattern() -> None:
    checks = [check for check, _ in CHECKS.values()]
    for n, check in enumerate(checks, start=1):
        assert check(None).title.startswith(f"Exercise {n} · ")
    assert lesson09.check_first_failure(None, None, MEASURED).title.startswith("Exercise 5 · ")


def test_every_checker_is_fast() -> None:
    for check, solution in CHECKS.values():
        check(solution)  # warm up
        start = time.perf_counter()
        assert check(solution).passed
        assert time.perf_counter() - start < 0.2, check.__name__


# --- correct alternatives (they must pass) ----------------------------------------------------------------

def pool_where(states, real):
    kept = torch.where(real[..., None], states, torch.zeros_like(states))
    return kept.sum(dim=1) / real.sum(dim=1, keepdim=True)


def pool_einsum(states, real):
    weights = real.to(states.dtype)
    weights = weights / weights.sum(dim=-1, keepdim=True)  # [B, S], each row sums to 1
    return torch.einsum("bs,bsd->bd", weights, states)


def pool_nanmean(states, real):
    return states.masked_fill(~real[..., None], float("nan")).nanmean(dim=1)


def pool_row_by_row(states, real):
    return torch.stack([row[keep].mean(dim=0) for row, keep in zip(states, real)])


def pool_bmm(states, real):
    weights = real.to(states.dtype)[:, None, :]  # [B, 1, S]
    return (weights @ states)[:, 0] / real.sum(-1, keepdim=True).to(states.dtype)


def mask_tril(n_source, length):
    mask = torch.ones(length, length, dtype=torch.bool).tril()
    mask[:n_source + 1, :n_source + 1] = True
    return mask


def mask_logical(n_source, length):
    i = torch.arange(length)[:, None]
    j = torch.arange(length)[None, :]
    return torch.logical_or(j <= i, torch.logical_and(i <= n_source, j <= n_source))


def mask_prefix_columns(n_source, length):
    """Every query sees the prefix keys: for a target query that is already causal, so this is the same mask."""
    return torch.tril(torch.ones(length, length)).bool() | (torch.arange(length) <= n_source)[None, :]


def mask_numpy(n_source, length):
    mask = np.tril(np.ones((length, length), dtype=bool))
    mask[: n_source + 1, : n_source + 1] = True
    return torch.from_numpy(mask)


def mask_loops(n_source, length):
    return torch.tensor([[j <= i or (i <= n_source and j <= n_source) for j in range(length)]
                         for i in range(length)])


ALTERNATIVES = [
    ("check_masked_mean", pool_where), ("check_masked_mean", pool_einsum), ("check_masked_mean", pool_nanmean),
    ("check_masked_mean", pool_row_by_row), ("check_masked_mean", pool_bmm),
    ("check_masked_mean", lambda states, real: cl.conditioning.masked_mean(states, real)),
    ("check_prefix_lm_mask", mask_tril), ("check_prefix_lm_mask", mask_logical),
    ("check_prefix_lm_mask", mask_prefix_columns), ("check_prefix_lm_mask", mask_numpy),
    ("check_prefix_lm_mask", mask_loops),
    ("check_prefix_lm_mask", lambda n_source, length: cl.masks.prefix_lm_mask(n_source + 1, length)),
    ("check_target_source_block", lambda w, s, t: w.index_select(1, torch.arange(s, s + t))
     .index_select(2, torch.arange(s))),
    ("check_target_source_block", lambda w, s, t: w.narrow(1, s, t).narrow(2, 0, s).contiguous()),
    ("check_target_source_block", lambda w, s, t: torch.stack([w[:, s + k, :s] for k in range(t)], dim=1)),
    ("check_target_source_block", lambda w, s, t: w[:, s:-1, :s].clone()),
    ("check_hidden_alignment", lambda w, s, t, g: cl.metrics.alignment_error_rate(
        cl.metrics.argmax_links(w[:, s:s + t, :s].mean(0)), g)),
    ("check_hidden_alignment", lambda w, s, t, g: cl.metrics.alignment_error_rate(
        cl.metrics.argmax_links(w[:, s:s + t, :s].sum(0)), g)),  # the sum has the same argmax as the mean
    ("check_hidden_alignment", lambda w, s, t, g: torch.tensor(hidden_alignment_aer(w, s, t, g))),  # a 0-d tensor
    ("check_hidden_alignment", lambda w, s, t, g: np.float64(hidden_alignment_aer(w, s, t, g))),
]


# --- generic mistake classes ----------------------------------------------------------------------------

def _pool_first_row_only(states, real):
    return masked_mean_pool(states[:1], real[:1]).expand(states.shape[0], -1)


def _aer_mutating_gold(weights, n_source, n_target, gold):
    out = hidden_alignment_aer(weights, n_source, n_target, gold)
    gold.append((0, 0))
    return out


def _block_normalising_in_place(weights, n_source, n_target):
    weights /= weights.sum(dim=-1, keepdim=True)
    return target_source_block(weights, n_source, n_target).clone()


GENERIC = [
    ("check_masked_mean", returns_numpy(masked_mean_pool), "wrong_type", "numpy.ndarray (its values are right"),
    ("check_masked_mean", returns_list(masked_mean_pool), "wrong_type", "list"),
    ("check_masked_mean", _pool_first_row_only, "batch_one_only", "right for a batch of 1"),
    ("check_masked_mean", batch_one_only_raising(masked_mean_pool), "batch_one_only", "right for a batch of 1"),
    ("check_masked_mean", casts_to(masked_mean_pool, torch.float32), "wrong_dtype", "torch.float32"),
    ("check_masked_mean", mutates_input(masked_mean_pool, 0), "mutated_input", "`states`"),
    ("check_prefix_lm_mask", returns_numpy(prefix_lm_mask_for), "wrong_type", "numpy.ndarray (its values are right"),
    ("check_prefix_lm_mask", returns_list(prefix_lm_mask_for), "wrong_type", "list"),
    ("check_target_source_block", returns_numpy(target_source_block), "wrong_type", "numpy.ndarray"),
    ("check_target_source_block", casts_to(target_source_block, torch.float32), "wrong_dtype", "torch.float32"),
    ("check_target_source_block", mutates_input(target_source_block, 0), "mutated_input", "`weights`"),
    ("check_target_source_block", _block_normalising_in_place, "mutated_input", "`weights`"),
    ("check_hidden_alignment", lambda *a: str(hidden_alignment_aer(*a)), "wrong_type", "should be a number"),
    ("check_hidden_alignment", _aer_mutating_gold, "mutated_input", "`gold`"),
    ("check_hidden_alignment", mutates_input(hidden_alignment_aer, 0), "mutated_input", "`weights`"),
]


# --- exercise 1: masked mean, the wrong answers a learner writes ---------------------------------------------

@pytest.mark.parametrize("wrong, mistake, phrase", [
    (lambda x, real: x.mean(dim=1), "padding_included", "averaged over the padding too"),
    (lambda x, real: (x * real[..., None]).mean(dim=1), "divided_by_length", "divided by S"),
    (lambda x, real: (x * real.unsqueeze(-1).float()).sum(1), "sum_not_mean", "not their mean"),
    (lambda x, real: torch.einsum("bs,bsd->bd", real.to(x.dtype), x), "sum_not_mean", "not their mean"),
    (lambda x, real: (x * real[..., None]).sum(1) / real.sum(), "divided_by_total_count", "whole batch"),
    (lambda x, real: masked_mean_pool(x, ~real), "inverted_mask", "inverted"),
    (lambda x, real: (x * real.to(x.dtype).softmax(-1)[..., None]).sum(1), "softmax_of_mask", "softmax"),
    (lambda x, real: x[real].mean(0), "whole_batch_pooled", "flattens the batch"),
    (lambda x, real: (x * real[..., None]).sum(1) / real.sum(1), "count_not_broadcast", "keepdim=True"),
    (lambda x, real: (x * real[..., None]).sum(-1) / real.sum(-1, keepdim=True), "mean_over_features",
     "over the features"),
    (lambda x, real: (x * real[..., None]).sum(1, keepdim=True) / real.sum(1)[:, None, None], "kept_dim",
     "[B, 1, D]"),
    (lambda x, real: masked_mean_pool(x, real) + 0.01, None, "differs from the reference"),
])
def test_hand_written_pool_mistakes(wrong, mistake, phrase) -> None:
    assert_diagnosed(lesson09.check_masked_mean(wrong), mistake, phrase)


def test_pool_cases_pad_with_real_numbers_and_keep_a_real_token_per_row() -> None:
    for case in lesson09.POOL_CASES:
        states, real = case.args
        assert real.dtype == torch.bool and bool(real.any(dim=1).all())
        assert states.shape[1] != states.shape[2] and states.shape[0] != states.shape[2]
    states, real = lesson09.POOL_CASES[0].args
    assert bool(real.all(dim=1).any()) and bool((~real).any())  # one unpadded row, some padding
    assert bool((states[~real] != 0).all())  # the encoder's padding states are not zero
    assert {c.args[0].dtype for c in lesson09.POOL_CASES} == {torch.float32, torch.float64}


def test_pool_first_case_tells_the_mistakes_apart() -> None:
    case = lesson09.POOL_CASES[0]
    outputs = [lesson09.masked_mean_reference(*case.args)]
    for mistake in lesson09.POOL_MISTAKES:
        if mistake.match == "values" and mistake.name != "count_not_broadcast":
            outputs.append(mistake.wrong(*case.args))
    for i, a in enumerate(outputs):
        for b in outputs[i + 1:]:
            assert a.shape != b.shape or not torch.allclose(a.double(), b.double(), equal_nan=True)


# --- exercise 2: prefix-LM mask -------------------------------------------------------------------------------

def _mask(prefix, length):
    i = torch.arange(length)
    return (i[None, :] <= i[:, None]) | ((i < prefix)[:, None] & (i < prefix)[None, :])


@pytest.mark.parametrize("wrong, mistake, phrase", [
    (lambda n, length: torch.tril(torch.ones(length, length, dtype=torch.bool)), "causal_only",
     "the source may see itself in both directions"),
    (lambda n, length: torch.ones(length, length).bool(), "all_true", "sees its own future"),
    (lambda n, length: _mask(n, length), "sep_outside_prefix", "<sep> is left out"),
    (lambda n, length: _mask(n + 2, length), "first_target_word_in_prefix", "the serious one"),
    (lambda n, length: _mask(n + 1, length).T, "transposed", "rows are queries and columns keys"),
    (lambda n, length: ~_mask(n + 1, length), "inverted", "nn.MultiheadAttention"),
    (lambda n, length: _mask(n + 1, length).float(), "not_bool", ".bool()"),
    (lambda n, length: _mask(n + 1, length).int(), "not_bool", ".bool()"),
    (lambda n, length: _mask(n + 1, length)[None, None], "batched_shape", "no batch or head axes"),
    (lambda n, length: _mask(n + 1, length).unsqueeze(0), "one_extra_axis", "without the extra axis"),
    (lambda n, length: torch.tril(torch.ones(length, length)).bool() | (torch.arange(length) <= n)[:, None],
     "prefix_sees_target", "prefix x prefix only"),
    (lambda n, length: _mask(n + 1, length).index_fill(1, torch.tensor([0]), False), None,
     "differs from the reference"),
])
def test_hand_written_mask_mistakes(wrong, mistake, phrase) -> None:
    assert_diagnosed(lesson09.check_prefix_lm_mask(wrong), mistake, phrase)


def test_mask_hints_quote_the_prefix_length() -> None:
    result = lesson09.check_prefix_lm_mask(lambda n, length: _mask(n, length))
    assert "P = n_source + 1 = 4" in result.message, result.message


def test_mask_first_case_tells_the_mistakes_apart() -> None:
    n, length = lesson09.MASK_CASES[0].args
    assert n + 2 < length  # the leak of the first target word shows
    masks = [lesson09.prefix_lm_reference(n, length)] + [m.wrong(n, length) for m in lesson09.MASK_MISTAKES
                                                           if m.match == "values" and m.name != "not_bool"]
    assert len({tuple(m.flatten().tolist()) for m in masks}) == len(masks)


def test_mask_cases_include_one_source_word_and_a_long_target() -> None:
    sizes = [c.args for c in lesson09.MASK_CASES]
    assert any(n == 1 for n, _ in sizes) and any(length - n - 1 >= 10 for n, length in sizes)


# --- exercise 3: the target-source block ---------------------------------------------------------------------

@pytest.mark.parametrize("wrong, mistake, phrase", [
    (lambda w, s, t: w[:, s + 1:s + t + 1, :s], "rows_shifted", "the word it reads, not the word it writes"),
    (lambda w, s, t: w[:, s:s + t, :s + 1], "sep_column_included", "<sep> column"),
    (lambda w, s, t: w[:, s:, :s], "eos_row_kept", "writes <eos>"),
    (lambda w, s, t: w[:, s:s + t, :s].transpose(1, 2), "transposed", "transposed"),
    (lambda w, s, t: w[:, s:s + t, :s].mean(0), "heads_averaged", "averaged the heads away"),
    (lambda w, s, t: w[:, :t, :s], "source_rows", "queries of the source"),
    (lambda w, s, t: w[:, s + 1:, :s + 1], "one_column_too_many", "one column too many"),
    (lambda w, s, t: w[:, s - 1:s + t, :s], "one_row_too_many", "one row too many"),
    (lambda w, s, t: w[-1, s:s + t, :s], "head_axis_dropped", "keep the head axis"),
    (lambda w, s, t: w[:, s:s + t, 1:s + 1], None, "differs from the reference"),
])
def test_hand_written_block_mistakes(wrong, mistake, phrase) -> None:
    assert_diagnosed(lesson09.check_target_source_block(wrong), mistake, phrase)


def test_block_hints_quote_the_rows() -> None:
    result = lesson09.check_target_source_block(lambda w, s, t: w[:, s + 1:s + t + 1, :s])
    assert "take rows 4..6" in result.message, result.message


def test_block_cases_are_causal_rows_and_shapes_tell_the_mistakes_apart() -> None:
    for case in lesson09.BLOCK_CASES:
        weights, s, t = case.args
        length = s + 1 + t
        assert weights.shape[1:] == (length, length)
        assert torch.allclose(weights.sum(-1).double(), torch.ones(weights.shape[:2], dtype=torch.float64))
        assert bool((weights.triu(1) == 0).all())
    weights, s, t = lesson09.BLOCK_CASES[0].args
    shapes = [tuple(lesson09.target_source_block_reference(weights, s, t).shape)]
    shapes += [tuple(m.wrong(weights, s, t).shape) for m in lesson09.BLOCK_MISTAKES
               if m.match == "shape" or m.name == "transposed"]
    assert len(set(shapes)) == len(shapes), shapes


# --- exercise 4: AER of the hidden cross-attention ---------------------------------------------------------

def _links(block):
    return {(int(s), j) for j, s in enumerate(block.argmax(dim=-1))}


def _aer(predicted, gold):
    a, g = set(predicted), set(gold)
    return 1 - 2 * len(a & g) / (len(a) + len(g))


def _aer_tensor_links(w, s, t, g):
    predicted = {(i, j) for j, i in enumerate(w[:, s:s + t, :s].mean(0).argmax(dim=-1))}  # 0-d tensors
    return _aer(predicted, g)


@pytest.mark.parametrize("wrong, mistake, phrase", [
    (lambda w, s, t, g: _aer(_links(w[0, s:s + t, :s]), g), "one_head", "you used one head"),
    (lambda w, s, t, g: _aer(_links(w[:, s + 1:s + t + 1, :s].mean(0)), g), "rows_shifted", "one position late"),
    (lambda w, s, t, g: _aer(_links(w[:, s:s + t, :s + 1].mean(0)), g), "sep_column_included", "<sep> column"),
    (lambda w, s, t, g: _aer(_links(w[:, s:, :s].mean(0)), g), "eos_row_kept", "writes <eos>"),
    (lambda w, s, t, g: _aer({(s_, int(j)) for s_, j in enumerate(w[:, s:s + t, :s].mean(0).argmax(0))}, g),
     "argmax_wrong_axis", "one link per source word"),
    (lambda w, s, t, g: _aer({(j, i) for i, j in _links(w[:, s:s + t, :s].mean(0))}, g), "links_target_source",
     "(target, source)"),
    (lambda w, s, t, g: 1 - hidden_alignment_aer(w, s, t, g), "accuracy_not_error", "the agreement"),
    (lambda w, s, t, g: 100 * hidden_alignment_aer(w, s, t, g), "percentage", "percentage"),
    (_aer_tensor_links, "no_link_matched", "int(...) or .tolist()"),
    (lambda w, s, t, g: hidden_alignment_aer(w, s, t, g) + 0.01, None, "expected"),
])
def test_hand_written_aer_mistakes(wrong, mistake, phrase) -> None:
    assert_diagnosed(lesson09.check_hidden_alignment(wrong), mistake, phrase)


def test_aer_first_case_tells_the_mistakes_apart() -> None:
    """In the first case each typical mistake gives its own value, and the right AER is neither 0 nor 1."""
    args = lesson09.HIDDEN_CASES[0].args
    values = [lesson09.hidden_alignment_reference(*args)] + [m.wrong(*args) for m in lesson09.HIDDEN_MISTAKES]
    assert len({round(float(v), 6) for v in values}) == len(values), values
    assert 0 < values[0] < 1


def test_aer_cases_separate_the_head_mean_from_head_0_and_tempt_with_sep() -> None:
    for case in lesson09.HIDDEN_CASES:
        weights, s, t, _ = case.args
        block = weights[:, s:s + t, :s]
        assert block.mean(0).argmax(-1).tolist() != block[0].argmax(-1).tolist()
        assert (weights[:, s:s + t, :s + 1].mean(0).argmax(-1) == s).any()
        assert 0 < lesson09.hidden_alignment_reference(*case.args) < 1


# --- exercise 5: which model fails first ------------------------------------------------------------------

@pytest.mark.parametrize("guess_model, guess_length", [
    ("one vector", 9), ("One-Vector", 8.0), ("one_vector", np.int64(11)), ("  one vector ", 7)])
def test_first_failure_passes_within_two_words(guess_model, guess_length) -> None:
    result = lesson09.check_first_failure(guess_model, guess_length, MEASURED)
    assert result.passed, result
    assert "bottleneck" in result.message and "GRU at 13 words" in result.message


def test_first_failure_ties_accept_either_model() -> None:
    measured = {**MEASURED, "GRU": 9}
    assert lesson09.check_first_failure("GRU", 10, measured).passed
    assert lesson09.check_first_failure("one vector", 9, measured).passed


def test_first_failure_when_no_model_fails() -> None:
    assert lesson09.check_first_failure("none", None, NOBODY_FAILS).passed
    assert lesson09.check_first_failure("None", 12, NOBODY_FAILS).passed
    assert_diagnosed(lesson09.check_first_failure("GRU", 12, NOBODY_FAILS), "none_fails", "no model falls below")


@pytest.mark.parametrize("guess_model, guess_length, mistake, phrase", [
    ("one vector", 5, "too_early", "too early by 4 words"),
    ("one vector", 14, "too_late", "too late by 5 words"),
    ("cross-attention", 9, "another_model", "the cross-attention model never falls below 50 % in this range"),
    ("decoder-only", 10, "another_model", "reads every source token through self-attention: it has no bottleneck"),
    ("prefix-LM", 10, "another_model", "no bottleneck"),
    ("GRU", 13, "another_model", "falls below 50 % only at 13 words"),
    ("none", None, "none_but_one_fails", "does fall below 50 %"),
])
def test_first_failure_wrong_guesses_say_what_was_off(guess_model, guess_length, mistake, phrase) -> None:
    result = lesson09.check_first_failure(guess_model, guess_length, MEASURED)
    assert_diagnosed(result, mistake, phrase)
    assert "one vector at 9 words" in result.message


@pytest.mark.parametrize("mistake", lesson09.FIRST_FAILURE_MISTAKES, ids=lambda m: m.name)
def test_every_first_failure_mistake_is_named(mistake) -> None:
    measured = NOBODY_FAILS if mistake.name == "none_fails" else MEASURED
    result = lesson09.check_first_failure(*mistake.wrong(measured), measured)
    assert result.status == "fail" and result.mistake == mistake.name, result


@pytest.mark.parametrize("guess_model, guess_length, measured", [
    (None, 9, MEASURED), ("one vector", None, MEASURED), ("one vector", 9, None)])
def test_first_failure_not_done(guess_model, guess_length, measured) -> None:
    assert lesson09.check_first_failure(guess_model, guess_length, measured).status == "not_done"


@pytest.mark.parametrize("guess_model, guess_length, measured, phrase", [
    ("transformer", 9, MEASURED, "'one vector', 'cross-attention', 'GRU', 'decoder-only', 'prefix-LM'"),
    (3, 9, MEASURED, "should be one of the model names"),
    (["one vector"], 9, MEASURED, "should be one of the model names"),
    ("one vector", 8.5, MEASURED, "whole number"),
    ("one vector", "nine", MEASURED, "whole number"),
    ("one vector", True, MEASURED, "whole number"),
    ("one vector", torch.tensor(9), MEASURED, ".item()"),
    ("one vector", 0, MEASURED, "1 or more"),
    ("one vector", 9, [9, None], "measured should be the notebook's dict"),
    ("one vector", 9, {"LSTM": 9}, "each key of measured"),
    ("one vector", 9, {"one vector": "nine"}, "should be a source length"),
])
def test_first_failure_malformed_answers_get_a_hint(guess_model, guess_length, measured, phrase) -> None:
    assert_diagnosed(lesson09.check_first_failure(guess_model, guess_length, measured), "wrong_type", phrase)


def test_first_failure_guess_not_measured() -> None:
    result = lesson09.check_first_failure("GRU", 9, {"one vector": 9, "cross-attention": None})
    assert_diagnosed(result, "not_measured", "no entry for the GRU model")


def test_first_failure_model_names_are_the_conditioners() -> None:
    assert lesson09.MODELS == tuple(cl.conditioning.CONDITIONERS)

