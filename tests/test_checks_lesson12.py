"""The lesson 12 checkers: hand-written wrong answers get their hints, the cases hold the edge cases that tell the
mistakes apart, the references agree with independent ones (a softmax over all the keys, brute-force loops,
``torch.repeat_interleave`` and SDPA's own grouped-query attention), and a check leaves the learner's state alone.
What every function checker must do runs in tests/test_checks_generic.py, over this module's CHECKS, GENERIC,
ALTERNATIVES and BROKEN; the part of it the lesson's exercises depend on most (each named mistake, stubs, crashes,
weird results) is also run here."""
from __future__ import annotations

import random
import time

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from checker_helpers import (
    assert_diagnosed,
    assert_fail,
    assert_named,
    batch_one_only,
    batch_one_only_raising,
    broken_answers,
    casts_to,
    learner_state,
    messy_answer,
    mutates_input,
    raise_not_implemented,
    raise_value_error,
    returns_list,
    returns_numpy,
    tensor_exercise_mistakes,
    weird_answers,
)

import course_lib.long_attention as long_attention
from course_lib.checks import CheckResult, lesson12
from course_lib.masks import document_mask

pytestmark = pytest.mark.usefixtures("single_thread")
NEG_INF = float("-inf")


# --- the solutions, as a learner writes them in the exercise notebook of lesson 12 ---------------------------------
def online_softmax_step(running_max, running_sum, acc, scores, values):
    new_max = torch.maximum(running_max, scores.amax(dim=-1, keepdim=True))  # [..., T_q, 1]
    shift = torch.where(new_max == NEG_INF, torch.zeros_like(new_max), new_max)  # nothing seen yet: subtract 0
    weights = torch.exp(scores - shift)  # [..., T_q, C]
    rescale = torch.exp(running_max - shift)  # <= 1: the old sums were relative to the old maximum
    return new_max, running_sum * rescale + weights.sum(dim=-1, keepdim=True), acc * rescale + weights @ values


def cross_document_mask(query_segments, key_segments):
    same = query_segments[:, :, None] == key_segments[:, None, :]  # [B, T_q, T_k]
    real = key_segments[:, None, :] >= 0  # padding keys are read by nobody
    return (same & real)[:, None]  # [B, 1, T_q, T_k]


def topk_mask(scores, k, mask=None):
    if mask is not None:
        scores = scores.masked_fill(~mask, NEG_INF)
    top = scores.topk(k, dim=-1).indices  # [..., T_q, k]
    kept = torch.zeros_like(scores, dtype=torch.bool).scatter(-1, top, True)
    return kept if mask is None else kept & mask  # a row with fewer than k visible keys keeps only those


def repeat_kv_heads(x, n_heads):
    group = n_heads // x.shape[1]  # query heads per K/V head
    return torch.repeat_interleave(x, group, dim=1)  # [B, n_heads, T, d]


# every function checker with its solution: tests/test_checks_generic.py runs over CHECKS, GENERIC, ALTERNATIVES
# and BROKEN
CHECKS = {
    "check_online_softmax_step": (lesson12.check_online_softmax_step, online_softmax_step),
    "check_cross_document_mask": (lesson12.check_cross_document_mask, cross_document_mask),
    "check_topk_mask": (lesson12.check_topk_mask, topk_mask),
    "check_repeat_kv_heads": (lesson12.check_repeat_kv_heads, repeat_kv_heads),
}
SINGLE = [name for name in CHECKS if name != "check_online_softmax_step"]  # those that return one tensor

BROKEN = [(name, answer, phrase) for name in SINGLE
          for answer, phrase in broken_answers(torch.zeros(1, 2, 3, 4, 5, dtype=torch.bool))]
BROKEN += [
    ("check_online_softmax_step", raise_value_error, "raised ValueError: boom"),
    ("check_online_softmax_step", lambda *args: [1, 2, 3], "should be a torch.Tensor, but is int"),
    ("check_online_softmax_step", lambda m, total, acc, s, v: (m, total), "should return a tuple of 3"),
    ("check_online_softmax_step", lambda m, total, acc, s, v: acc, "returned one tensor of shape"),
    ("check_online_softmax_step", lambda m, total, acc, s, v: (m, total, s), "acc of online_softmax_step"),
    ("check_online_softmax_step", 42, "should be a function"),
]


def test_titles_follow_one_pattern() -> None:
    for n, (check, _) in enumerate(CHECKS.values(), start=1):
        assert check(None).title.startswith(f"Exercise {n} · ")


def test_every_checker_is_fast() -> None:
    for check, solution in CHECKS.values():
        check(solution)  # warm up
        start = time.perf_counter()
        assert check(solution).passed
        assert time.perf_counter() - start < 0.2, check.__name__


# --- what each checker must do: the solution and the reference pass, every mistake is named ------------------------

@pytest.mark.parametrize("name", CHECKS)
def test_the_solution_and_the_reference_pass(name) -> None:
    check, solution = CHECKS[name]
    for answer in (solution, lesson12.REFERENCES[name]):
        result = check(answer)
        assert result.passed and result.mistake is None, result


@pytest.mark.parametrize(("name", "mistake"), [(name, m) for name in CHECKS for m in lesson12.MISTAKES[name]],
                         ids=lambda x: getattr(x, "name", x))
def test_every_named_mistake_gets_its_own_hint(name, mistake) -> None:
    assert_named(CHECKS[name][0](mistake.wrong), mistake, lesson12.CASES[name])


def test_the_registries_agree() -> None:
    assert set(lesson12.MISTAKES) == set(lesson12.CASES) == set(lesson12.REFERENCES) == set(CHECKS)
    for mistakes in lesson12.MISTAKES.values():
        assert len({m.name for m in mistakes}) == len(mistakes) >= 6
        assert len({m.hint for m in mistakes}) == len(mistakes)  # a hint of its own for each


def _noise_like(solution):
    def wrong(*args):
        out = solution(*args)
        if isinstance(out, tuple):  # right shapes and dtypes, values from nowhere
            return tuple(torch.rand(o.shape, dtype=o.dtype) for o in out)
        if out.dtype == torch.bool:
            return torch.rand(out.shape) < 0.5
        return torch.rand(out.shape, dtype=out.dtype)
    return wrong


@pytest.mark.parametrize("name", CHECKS)
def test_a_random_answer_fails_without_a_named_hint(name) -> None:
    check, solution = CHECKS[name]
    assert_diagnosed(check(_noise_like(solution)), None, "differs from the reference")


@pytest.mark.parametrize("name", CHECKS)
def test_stubs_none_crashes_and_non_functions_do_not_raise(name) -> None:
    check = CHECKS[name][0]
    stub = check(raise_not_implemented)
    assert stub.status == "not_done" and "not done yet" in stub.message and str(stub).startswith("⏳")
    assert check(None).status == "not_done" and check(None).to_dict()["passed"] is False
    assert check(lambda *args: None).status == "fail"  # a function with its body left empty: it returns None
    crash = check(raise_value_error)
    assert_diagnosed(crash, "raised", "raised ValueError: boom")
    assert crash.case is not None
    assert_diagnosed(check(42), "not_a_function", "should be a function")


@pytest.mark.parametrize(("name", "answer", "phrase"), BROKEN)
def test_broken_answers_fail_without_raising(name, answer, phrase) -> None:
    assert_fail(CHECKS[name][0](answer), phrase)


@pytest.mark.parametrize(("label", "weird"), weird_answers(), ids=[w[0] for w in weird_answers()])
@pytest.mark.parametrize("name", CHECKS)
def test_weird_results_fail_without_raising(name, label, weird) -> None:
    result = CHECKS[name][0](weird)
    assert isinstance(result, CheckResult) and result.status == "fail", result
    assert "the check itself hit" not in result.message, result.message






@pytest.mark.parametrize("grad", [True, False])
@pytest.mark.parametrize("name", CHECKS)
def test_a_check_leaves_the_learners_rng_threads_and_grad_mode_alone(name, grad) -> None:
    check, solution = CHECKS[name]
    messy = messy_answer(solution)
    torch.manual_seed(1234)
    np.random.seed(1234)
    random.seed(1234)
    with torch.set_grad_enabled(grad):
        before = learner_state()
        for answer in (solution, messy, lesson12.MISTAKES[name][0].wrong, raise_value_error):
            check(answer)
            after = learner_state()
            assert torch.equal(before[0], after[0]) and np.array_equal(before[1], after[1]), answer
            assert before[2:] == after[2:], answer
        assert check(messy).passed


def test_building_the_cases_leaves_the_global_rng_alone() -> None:
    torch.manual_seed(99)
    before = torch.get_rng_state()
    lesson12._softmax_case("x", (2,), 3, 4, 5, 1, torch.float32, first=False)
    lesson12._topk_case("x", (2, 2), 3, 4, 2, 1, torch.float32, mask=[[1, 1, 0, 1], [1, 1, 1, 1]])
    lesson12._heads_case(*lesson12._HEADS[0])
    assert torch.equal(before, torch.get_rng_state())


def test_no_case_argument_asks_for_gradients() -> None:
    for cases in lesson12.CASES.values():
        for case in cases:
            assert not any(isinstance(a, torch.Tensor) and a.requires_grad for a in case.args), case.name


# --- correct alternatives (they must pass) ------------------------------------------------------------------------

def step_nan_to_num(running_max, running_sum, acc, scores, values):
    m = torch.max(running_max, scores.max(dim=-1, keepdim=True).values)
    weights = torch.exp(scores - m).nan_to_num(0.0)  # -inf - (-inf) = NaN -> 0
    rescale = torch.exp(running_max - m).nan_to_num(0.0)
    return m, running_sum * rescale + weights.sum(-1, keepdim=True), acc * rescale + torch.matmul(weights, values)


def step_masked_fill(running_max, running_sum, acc, scores, values):
    m = torch.maximum(running_max, scores.amax(-1, keepdim=True))
    safe = m.masked_fill(torch.isinf(m), 0.0)
    p = (scores - safe).exp()
    alpha = (running_max - safe).exp()
    return m, alpha * running_sum + p.sum(-1, keepdim=True), alpha * acc + torch.einsum("...qc,...cd->...qd", p, values)


def mask_via_eq(query_segments, key_segments):
    q, k = query_segments.unsqueeze(-1), key_segments.unsqueeze(-2)
    return torch.eq(q, k).logical_and(q >= 0).unsqueeze(1)  # a padding query matches only padding keys


def mask_from_document_mask(query_segments, key_segments):
    t_q = query_segments.shape[1]
    both = document_mask(torch.cat([query_segments, key_segments], dim=1))  # [B, 1, T_q + T_k, T_q + T_k]
    return both[..., :t_q, t_q:] & (key_segments >= 0)[:, None, None, :]


def mask_by_loops(query_segments, key_segments):
    b, t_q, t_k = query_segments.shape[0], query_segments.shape[1], key_segments.shape[1]
    mask = torch.zeros(b, 1, t_q, t_k, dtype=torch.bool)
    for n in range(b):
        for i in range(t_q):
            for j in range(t_k):
                mask[n, 0, i, j] = bool(query_segments[n, i] == key_segments[n, j] and key_segments[n, j] >= 0)
    return mask


def topk_by_threshold(scores, k, mask=None):
    if mask is not None:
        scores = scores.masked_fill(~mask, NEG_INF)
    kth = scores.topk(k, dim=-1).values[..., -1:]  # the k-th highest score of each row
    kept = scores >= kth
    return kept if mask is None else kept & mask


def topk_by_rank(scores, k, mask=None):
    ranked = scores if mask is None else torch.where(mask, scores, NEG_INF)
    rank = ranked.argsort(dim=-1, descending=True).argsort(dim=-1)  # 0 for the highest score of a row
    kept = rank < k
    return kept if mask is None else kept & mask.expand_as(kept)


def heads_by_index(x, n_heads):
    group = n_heads // x.size(1)
    return x.index_select(1, torch.arange(n_heads) // group)


def heads_by_expand(x, n_heads):
    b, h_kv, t, d = x.shape
    return x[:, :, None].expand(b, h_kv, n_heads // h_kv, t, d).reshape(b, n_heads, t, d)


def heads_by_loop(x, n_heads):
    group = n_heads // x.shape[1]
    return torch.stack([x[:, h // group] for h in range(n_heads)], dim=1)


ALTERNATIVES = [
    ("check_online_softmax_step", step_nan_to_num), ("check_online_softmax_step", step_masked_fill),
    ("check_cross_document_mask", mask_via_eq), ("check_cross_document_mask", mask_from_document_mask),
    ("check_cross_document_mask", mask_by_loops),
    ("check_topk_mask", topk_by_threshold), ("check_topk_mask", topk_by_rank),
    ("check_repeat_kv_heads", heads_by_index), ("check_repeat_kv_heads", heads_by_expand),
    ("check_repeat_kv_heads", heads_by_loop),
    ("check_repeat_kv_heads", lambda x, n_heads: x.repeat_interleave(n_heads // x.shape[1], 1)),
]


@pytest.mark.parametrize(("name", "alternative"), ALTERNATIVES)
def test_correct_alternatives_pass(name, alternative) -> None:
    result = CHECKS[name][0](alternative)
    assert result.passed, result


# --- generic mistake classes ----------------------------------------------------------------------------------------

def _step_in_place(running_max, running_sum, acc, scores, values):
    new_max = torch.maximum(running_max, scores.amax(dim=-1, keepdim=True))
    shift = torch.where(new_max == NEG_INF, 0.0, new_max)
    weights = torch.exp(scores - shift)
    rescale = torch.exp(running_max - shift)
    acc.mul_(rescale).add_(weights @ values)  # the caller's acc changes too
    return new_max, running_sum * rescale + weights.sum(dim=-1, keepdim=True), acc


def _step_float32_state(running_max, running_sum, acc, scores, values):
    m, total, out = online_softmax_step(running_max, running_sum, acc, scores, values)
    return m, total.float(), out.float()  # new tensors of a fixed dtype


def _mask_first_row(query_segments, key_segments):
    return cross_document_mask(query_segments[:1], key_segments[:1]).expand(query_segments.shape[0], -1, -1, -1)


def _mask_unsqueezing_in_place(query_segments, key_segments):
    q = query_segments.unsqueeze_(-1)  # changes the caller's tensor to [B, T_q, 1]
    return ((q == key_segments[:, None, :]) & (key_segments[:, None, :] >= 0))[:, None]


def _topk_filling_in_place(scores, k, mask=None):
    if mask is not None:
        scores.masked_fill_(~mask, NEG_INF)
    return topk_mask(scores, k, mask)


GENERIC = [(name, wrong, mistake, phrase) for name in ("check_topk_mask", "check_repeat_kv_heads")
           for wrong, mistake, phrase in tensor_exercise_mistakes(CHECKS[name][1])]
GENERIC += [(("check_online_softmax_step",) + row) for row in tensor_exercise_mistakes(online_softmax_step, pair=True)]
GENERIC += [
    ("check_online_softmax_step", casts_to(online_softmax_step, torch.float32), "wrong_dtype",
     "expected torch.float64"),
    ("check_online_softmax_step", _step_float32_state, "wrong_dtype", "running_sum of"),
    ("check_online_softmax_step", mutates_input(online_softmax_step, 0), "mutated_input", "`running_max`"),
    ("check_online_softmax_step", _step_in_place, "mutated_input", "`acc`"),
    ("check_cross_document_mask", returns_numpy(cross_document_mask), "wrong_type",
     "numpy.ndarray (its values are right"),
    ("check_cross_document_mask", returns_list(cross_document_mask), "wrong_type", "list"),
    ("check_cross_document_mask", _mask_first_row, "batch_one_only", "right for a batch of 1"),
    ("check_cross_document_mask", _mask_unsqueezing_in_place, "mutated_input", "`query_segments`"),
    ("check_topk_mask", mutates_input(topk_mask, 0), "mutated_input", "`scores`"),
    ("check_topk_mask", _topk_filling_in_place, "mutated_input", "`scores`"),
    ("check_topk_mask", casts_to(topk_mask, torch.float32), "wrong_dtype", "expected torch.bool"),
    ("check_repeat_kv_heads", casts_to(repeat_kv_heads, torch.float32), "wrong_dtype", "torch.float32"),
    ("check_repeat_kv_heads", mutates_input(repeat_kv_heads, 0), "mutated_input", "`x`"),
    ("check_repeat_kv_heads", batch_one_only_raising(repeat_kv_heads), "batch_one_only", "right for a batch of 1"),
    ("check_repeat_kv_heads", batch_one_only(repeat_kv_heads), "batch_one_only", "right for a batch of 1"),
]


@pytest.mark.parametrize(("name", "wrong", "mistake", "phrase"), GENERIC)
def test_generic_mistakes_are_diagnosed(name, wrong, mistake, phrase) -> None:
    assert_diagnosed(CHECKS[name][0](wrong), mistake, phrase)


# --- exercise 1: one step of the online softmax ---------------------------------------------------------------------

def _step(*, guard=True, rescale_sum=True, rescale_acc=True, weights=None, rescale=None, new_max=None, out=None):
    """A learner's step written out, with the parts given replaced."""
    def step(running_max, running_sum, acc, scores, values):
        m = torch.maximum(running_max, scores.amax(dim=-1, keepdim=True)) if new_max is None else new_max(
            running_max, scores)
        shift = torch.where(m == NEG_INF, torch.zeros_like(m), m) if guard else m
        w = torch.exp(scores - shift) if weights is None else weights(scores, shift)
        r = torch.exp(running_max - shift) if rescale is None else rescale(running_max, shift)
        l_new = (running_sum * r if rescale_sum else running_sum) + w.sum(dim=-1, keepdim=True)
        acc_new = (acc * r if rescale_acc else acc) + w @ values
        return (m, l_new, acc_new) if out is None else out(m, l_new, acc_new)
    return step


def _step_nan_only_in_rescale(running_max, running_sum, acc, scores, values):
    m = torch.maximum(running_max, scores.amax(dim=-1, keepdim=True))
    weights = torch.exp(scores - m).nan_to_num(0.0)  # guarded here...
    rescale = torch.exp(running_max - m)  # ...but not here
    return m, running_sum * rescale + weights.sum(dim=-1, keepdim=True), acc * rescale + weights @ values


def _step_chunk_alone(running_max, running_sum, acc, scores, values):
    m = scores.amax(dim=-1, keepdim=True)
    w = torch.exp(scores - torch.where(m == NEG_INF, torch.zeros_like(m), m))
    return m, w.sum(dim=-1, keepdim=True), w @ values


@pytest.mark.parametrize("wrong, mistake, phrase", [
    (_step(rescale_sum=False), "sum_not_rescaled", "running_sum is not rescaled"),
    (_step(rescale_acc=False), "acc_not_rescaled", "acc is not rescaled"),
    (_step(rescale_sum=False, rescale_acc=False), "nothing_rescaled", "neither running_sum nor acc"),
    (_step(rescale=lambda m_old, m_new: torch.exp(m_new - m_old)), "rescale_inverted", "exp(m_old - m_new)"),
    (_step(guard=False, rescale=lambda m_old, m_new: torch.exp(m_new - m_old)), "rescale_inverted", "inverted"),
    (_step(new_max=lambda m_old, s: s.amax(dim=-1, keepdim=True)), "chunk_max_only", "forgets a larger score"),
    (_step(new_max=lambda m_old, s: s.max(-1, keepdim=True).values), "chunk_max_only", "torch.maximum(running_max"),
    # two mistakes at once: the NaN shows in the first case, before the maximum's
    (_step(new_max=lambda m_old, s: s.max(-1, keepdim=True).values, guard=False), "nan_when_nothing_seen", "NaN"),
    (_step(guard=False), "nan_when_nothing_seen", "-inf - (-inf) is NaN"),
    (_step_nan_only_in_rescale, "nan_when_nothing_seen", "both exponentials"),
    (_step(weights=lambda s, shift: torch.exp(s), rescale=lambda m_old, m_new: torch.ones_like(m_old)),
     "max_not_subtracted", "exp(1000)"),
    (_step(weights=lambda s, shift: s.softmax(dim=-1)), "chunk_softmax", "normalised this chunk's weights"),
    (_step(weights=lambda s, shift: torch.softmax(s, -1), guard=False), "chunk_softmax", "unnormalised"),
    (_step_chunk_alone, "past_forgotten", "this chunk's own state"),
    (_step(out=lambda m, total, acc: (m, total, acc / total)), "acc_normalised", "divided by running_sum"),
    (_step(out=lambda m, total, acc: (total, m, acc)), "max_and_sum_swapped", "the order is (running_max"),
    (lambda m, total, acc, s, v: online_softmax_step(m, total, acc, s.amax(-1), v), "raised", "keepdim=True"),
    (_step(out=lambda m, total, acc: (m, total, acc * 1.01)), None, "differs from the reference"),
])
def test_hand_written_online_softmax_mistakes(wrong, mistake, phrase) -> None:
    assert_diagnosed(lesson12.check_online_softmax_step(wrong), mistake, phrase)


def test_a_step_that_forgets_keepdim_gets_the_shape_tip() -> None:
    def no_keepdim(running_max, running_sum, acc, scores, values):
        m = torch.maximum(running_max, scores.amax(dim=-1))  # [..., T_q] against [..., T_q, 1]
        w = torch.exp(scores - m)
        return m, running_sum + w.sum(-1), acc + w @ values

    assert_diagnosed(lesson12.check_online_softmax_step(no_keepdim), "raised", "scores.amax(dim=-1, keepdim=True)")


def test_softmax_cases_hold_the_edge_cases() -> None:
    cases = lesson12.SOFTMAX_CASES
    maxima = [c.args[0] for c in cases]
    new = [lesson12.online_softmax_step_reference(*c.args)[0] for c in cases]
    assert any(bool((m == NEG_INF).all()) for m in maxima)  # a first step: nothing seen yet
    assert any(bool(torch.isfinite(m).all()) for m in maxima)
    masked_rows = [(c.args[3] == NEG_INF).all(dim=-1) for c in cases]
    assert any(bool((r & (m[..., 0] == NEG_INF)).any()) for r, m in zip(masked_rows, maxima))  # -inf - (-inf)
    assert any(bool((r & torch.isfinite(m[..., 0])).any()) for r, m in zip(masked_rows, maxima))  # masked later
    grows = [(n > m) & torch.isfinite(m) for m, n in zip(maxima, new)]
    assert any(bool(g.any()) and not bool(g.all()) for g in grows)  # some maxima grow, others do not
    assert any(bool((c.args[3] > 900).any()) for c in cases)  # scores around 1000: exp would overflow
    assert any(bool(((c.args[0] - c.args[3].amax(-1, keepdim=True)) > 500).any()) for c in cases)
    assert {c.args[3].dtype for c in cases} == {torch.float32, torch.float64}
    assert {c.args[3].ndim for c in cases} == {3, 4}
    assert any(c.args[3].shape[0] == 1 for c in cases) and any(c.args[3].shape[0] > 2 for c in cases)
    assert all(c.args[3].shape[-1] != c.args[3].shape[-2] != c.args[4].shape[-1] for c in cases)
    for c in cases:  # the state is a real one: l > 0 exactly where a key was seen, and acc / l is finite
        seen = torch.isfinite(c.args[0])
        assert torch.equal(c.args[1] > 0, seen) and bool(torch.isfinite(c.args[2]).all())


def test_every_softmax_mistake_differs_from_the_reference_without_nan_in_the_reference() -> None:
    for case in lesson12.SOFTMAX_CASES:
        expected = lesson12.online_softmax_step_reference(*case.args)
        assert not any(bool(torch.isnan(part).any()) for part in expected), case.name
        assert torch.isfinite(expected[1]).all() and torch.isfinite(expected[2]).all(), case.name


# --- the reference step, folded over every chunk, is the softmax over all the keys ------------------------------------

def _fold(scores, values, chunk):
    m = torch.full((*scores.shape[:-1], 1), NEG_INF, dtype=scores.dtype)
    total = torch.zeros_like(m)
    acc = torch.zeros(*scores.shape[:-1], values.shape[-1], dtype=scores.dtype)
    for start in range(0, scores.shape[-1], chunk):
        m, total, acc = lesson12.online_softmax_step_reference(m, total, acc, scores[..., start:start + chunk],
                                                               values[..., start:start + chunk, :])
    return m, total, acc


@pytest.mark.parametrize("chunk", [1, 3, 4, 16])
def test_folding_the_reference_step_gives_the_softmax_over_all_keys(chunk) -> None:
    gen = torch.Generator().manual_seed(5)
    scores = 4.0 * torch.randn(2, 3, 5, 11, generator=gen, dtype=torch.float64)
    values = torch.randn(2, 3, 11, 4, generator=gen, dtype=torch.float64)
    scores[0, 0, 1] = NEG_INF  # a query that sees no key at all
    scores[1, 2, :, :4] = NEG_INF  # the first chunks masked: nothing seen yet when later keys arrive
    scores[1, 1, 2, 5:] += 1000.0  # scores that would overflow exp
    m, total, acc = _fold(scores, values, chunk)
    visible = torch.isfinite(scores).any(dim=-1, keepdim=True)
    expected = torch.where(visible, torch.softmax(scores, dim=-1).nan_to_num(0.0) @ values, 0.0)
    output = torch.where(total > 0, acc / total.clamp_min(1e-300), 0.0)
    torch.testing.assert_close(output, expected, atol=1e-10, rtol=1e-10)
    torch.testing.assert_close(m, scores.amax(dim=-1, keepdim=True), atol=0.0, rtol=0.0)
    log_sum = torch.logsumexp(scores, dim=-1, keepdim=True)  # l = exp(logsumexp - m) where a key was seen
    torch.testing.assert_close(torch.where(visible, total, 1.0), torch.where(visible, torch.exp(log_sum - m), 1.0),
                               atol=1e-10, rtol=1e-10)
    assert not torch.isnan(total).any() and not torch.isnan(acc).any()


def test_the_chunked_attention_of_course_lib_uses_the_reference_step() -> None:
    gen = torch.Generator().manual_seed(6)
    q, k, v = (torch.randn(2, 2, 3, 4, generator=gen, dtype=torch.float64) for _ in range(3))
    expected = F.scaled_dot_product_attention(q, k, v)
    scores = q @ k.transpose(-2, -1) / 2.0  # d_k = 4
    _, total, acc = _fold(scores, v, 2)
    torch.testing.assert_close(acc / total, expected, atol=1e-10, rtol=1e-10)
    torch.testing.assert_close(long_attention.chunked_attention(q, k, v, chunk_size=2), expected, atol=1e-10,
                               rtol=1e-10)


# --- exercise 2: the cross-attention document mask -----------------------------------------------------------------

@pytest.mark.parametrize("wrong, mistake, phrase", [
    (lambda qs, ks: (qs.unsqueeze(2) != ks.unsqueeze(1)).unsqueeze(1), "inverted", "True must mean 'may attend'"),
    (lambda qs, ks: ~cross_document_mask(qs, ks), "inverted", "True where the two ids are equal"),
    (lambda qs, ks: document_mask(qs), "query_ids_only", "self-attention document mask over the queries"),
    (lambda qs, ks: (qs[:, :, None] == qs[:, None, :])[:, None], "query_ids_only", "T_q = 5, T_k = 7"),
    (lambda qs, ks: document_mask(ks), "key_ids_only", "[B, 1, T_k, T_k]"),
    (lambda qs, ks: (qs[:, :, None] == ks[:, None, :])[:, None], "padding_reads_padding", "-1 == -1"),
    (lambda qs, ks: ((qs[:, :, None] == ks[:, None, :]) & (ks != -1)[:, None, :])[:, None],
     "only_minus_one_is_padding", "here -2 too"),
    (lambda qs, ks: cross_document_mask(ks, qs), "transposed", "[B, 1, T_k, T_q]"),
    (lambda qs, ks: cross_document_mask(qs, ks).transpose(2, 3), "transposed", "keys as rows"),
    (lambda qs, ks: (qs[:, :, None] == ks[:, None, :]) & (ks[:, None, :] >= 0), "no_head_axis", "add the head axis"),
    (lambda qs, ks: ((qs[0][:, None] == ks[0][None, :]) & (ks[0] >= 0))[None, None], "first_row_only",
     "for a batch of 2, as if built from the first row"),
    (lambda qs, ks: cross_document_mask(qs, ks).int(), "numeric_mask", "bool"),
    (lambda qs, ks: cross_document_mask(qs, ks).float(), "numeric_mask", ".float()"),
    (lambda qs, ks: torch.where(cross_document_mask(qs, ks), 0.0, NEG_INF), "additive_mask", "additive mask"),
    (lambda qs, ks: cross_document_mask(qs, ks)[:, 0, :, :, None], "wrong_shape", "expected [2, 1, 5, 7]"),
    (lambda qs, ks: cross_document_mask(qs, ks) & (qs >= 1)[:, None, :, None], None, "differs from the reference"),
])
def test_hand_written_document_mask_mistakes(wrong, mistake, phrase) -> None:
    assert_diagnosed(lesson12.check_cross_document_mask(wrong), mistake, phrase)


def test_a_mask_right_only_when_the_lengths_are_equal_is_told_so() -> None:
    def square_only(qs, ks):  # both views use T_q: right only when T_q == T_k (raises otherwise)
        b, t = qs.shape
        return ((qs.view(b, t, 1) == ks.view(b, 1, t)) & (ks.view(b, 1, t) >= 0)).view(b, 1, t, t)

    assert_diagnosed(lesson12.check_cross_document_mask(square_only), "square_only", "the lengths are equal")


def test_document_cases_hold_the_edge_cases() -> None:
    cases = lesson12.DOCUMENT_CASES
    assert any(c.args[0].shape[0] == 1 for c in cases) and any(c.args[0].shape[0] > 2 for c in cases)
    assert any(c.args[0].shape[1] > c.args[1].shape[1] for c in cases)
    assert any(c.args[0].shape[1] < c.args[1].shape[1] for c in cases)
    assert any(c.args[0].shape[1] == c.args[1].shape[1] for c in cases)
    assert any(bool((c.args[0] == -1).any() and (c.args[1] == -1).any()) for c in cases)  # -1 == -1 would be True
    assert any(bool((c.args[0] == -2).any() and (c.args[1] == -2).any()) for c in cases)
    assert any(not bool((c.args[0] < 0).any() or (c.args[1] < 0).any()) for c in cases)  # no padding
    assert any(c.args[0].dtype == torch.int32 for c in cases)
    # a query of a real document with no passage of its own: its row is all False
    assert any(bool((~lesson12.cross_document_mask_reference(*c.args)[:, 0].any(-1) & (c.args[0] >= 0)).any())
               for c in cases)
    assert all(bool(lesson12.cross_document_mask_reference(*c.args).any()) for c in cases)


def _mask_by_loops_reference(query_segments, key_segments):
    q, k = query_segments.tolist(), key_segments.tolist()
    return torch.tensor([[[[qi == kj and kj >= 0 for kj in kr] for qi in qr]] for qr, kr in zip(q, k)],
                        dtype=torch.bool)


def test_the_document_mask_reference_is_the_brute_force_rule() -> None:
    for case in lesson12.DOCUMENT_CASES:
        assert torch.equal(lesson12.cross_document_mask_reference(*case.args), _mask_by_loops_reference(*case.args))


def test_document_first_case_tells_the_mistakes_apart() -> None:
    args = lesson12.DOCUMENT_CASES[0].args
    outputs = [lesson12.cross_document_mask_reference(*args)] + [m.wrong(*args) for m in lesson12.DOCUMENT_MISTAKES]
    keys = {(tuple(o.shape), o.dtype, tuple(o.flatten().tolist())) for o in outputs}
    assert len(keys) == len(outputs) - 1  # only_minus_one_is_padding shows in its own case (padding -2)


# --- exercise 3: top-k keys -----------------------------------------------------------------------------------------

def _kept(scores, index):
    return torch.zeros_like(scores, dtype=torch.bool).scatter(-1, index, True)


def _topk_learner(*, largest=True, k_shift=0, dim=-1, fill=True, keep_visible=True):
    def topk(scores, k, mask=None):
        ranked = scores.masked_fill(~mask, NEG_INF) if mask is not None and fill else scores
        index = ranked.topk(k + k_shift, dim=dim, largest=largest).indices
        kept = torch.zeros_like(scores, dtype=torch.bool).scatter(dim, index, True)
        return kept & mask if mask is not None and keep_visible else kept
    return topk


@pytest.mark.parametrize("wrong, mistake, phrase", [
    (_topk_learner(largest=False), "lowest", "the k lowest scores"),
    (lambda s, k, mask=None: _kept(s, (-s).topk(k).indices), "lowest", "keep the k highest"),
    (_topk_learner(dim=-2), "query_axis", "over the queries (dim=-2)"),
    (_topk_learner(k_shift=-1), "k_minus_one", "k - 1 keys per query (here k = 2)"),
    (_topk_learner(k_shift=1), "k_plus_one", "k + 1 keys"),
    (_topk_learner(fill=False, keep_visible=False), "mask_ignored", "ignores the padding mask"),
    (lambda s, k, mask=None: _kept(s, s.topk(k).indices), "mask_ignored", "masked_fill(~mask"),
    (_topk_learner(fill=False), "mask_after_topk", "keeps fewer than k"),
    (_topk_learner(keep_visible=False), "hidden_keys_fill_short_rows", "fewer than k visible keys"),
    (lambda s, k, mask=None: _kept(s, s.mean(-2, keepdim=True).topk(k).indices.expand(*s.shape[:-1], k)),
     "shared_keys", "the same k keys for every query"),
    (lambda s, k, mask=None: s.topk(k, dim=-1).indices, "returns_indices", "[..., T_q, k]"),
    (lambda s, k, mask=None: s.topk(k, dim=-1).values, "returns_indices", "return a bool mask"),
    (lambda s, k, mask=None: torch.where(topk_mask(s, k, mask), s, NEG_INF), "returns_scores",
     "return the bool mask itself"),
    (lambda s, k, mask=None: ~topk_mask(s, k, mask), "inverted", "True must mean 'kept'"),
    (lambda s, k, mask: topk_mask(s, k, mask), "raised", "give mask a default"),
    (lambda s, k, mask=None: topk_mask(s, k, mask if mask else None), "raised", "if mask is not None"),
    (lambda s, k, mask=None: topk_mask(s, k, ~mask), "raised", "mask may be None"),
    (lambda s, k, mask=None: topk_mask(s, k, mask) & (s > -1.0), None, "differs from the reference"),
])
def test_hand_written_topk_mistakes(wrong, mistake, phrase) -> None:
    assert_diagnosed(lesson12.check_topk_mask(wrong), mistake, phrase)


def test_topk_cases_hold_the_edge_cases() -> None:
    cases = lesson12.TOPK_CASES
    assert any(len(c.args) == 2 for c in cases) and any(len(c.args) == 3 for c in cases)
    assert any(c.args[1] == 1 for c in cases) and all(c.args[1] < c.args[0].shape[-1] for c in cases)
    assert all(c.args[1] < c.args[0].shape[-2] for c in cases)  # so a top-k over the queries runs
    assert {c.args[0].dtype for c in cases} == {torch.float32, torch.float64}
    assert {c.args[0].ndim for c in cases} == {3, 4}
    assert any(c.args[0].shape[0] == 1 for c in cases) and any(c.args[0].shape[0] > 2 for c in cases)
    masked = [c for c in cases if len(c.args) == 3]
    visible = [c.args[2].expand_as(c.args[0]).sum(dim=-1) for c in masked]
    assert any(bool(((v > 0) & (v < c.args[1])).any()) for v, c in zip(visible, masked))  # fewer than k visible
    assert any(bool((v == 0).any()) for v in visible)  # a query that sees no key
    assert any(c.args[2].shape[-2] == 1 for c in masked) and any(c.args[2].shape[-2] > 1 for c in masked)
    for case in cases:  # no ties: the top k is one set of keys
        scores = case.args[0]
        assert len(set(scores.flatten().tolist())) == scores.numel()
    for case in masked:  # a top-k that ignores the padding mask picks hidden keys
        scores, k, mask = case.args
        assert bool((_kept(scores, scores.topk(k).indices) & ~mask).any())


def _topk_by_loops(scores, k, mask=None):
    flat = scores.reshape(-1, scores.shape[-1])
    visible = (torch.ones_like(scores, dtype=torch.bool) if mask is None else mask.expand_as(scores))
    visible = visible.reshape(-1, scores.shape[-1])
    kept = torch.zeros_like(flat, dtype=torch.bool)
    for row in range(flat.shape[0]):
        keys = sorted((j for j in range(flat.shape[1]) if visible[row, j]), key=lambda j: -float(flat[row, j]))
        for j in keys[:k]:
            kept[row, j] = True
    return kept.reshape(scores.shape)


def test_the_topk_reference_is_the_brute_force_rule() -> None:
    for case in lesson12.TOPK_CASES:
        assert torch.equal(lesson12.topk_mask_reference(*case.args), _topk_by_loops(*case.args)), case.name


def test_the_topk_reference_keeps_exactly_k_visible_keys_where_it_can() -> None:
    for case in lesson12.TOPK_CASES:
        scores, k = case.args[:2]
        mask = case.args[2].expand_as(scores) if len(case.args) > 2 else torch.ones_like(scores, dtype=torch.bool)
        kept = lesson12.topk_mask_reference(*case.args)
        assert not bool((kept & ~mask).any())
        assert torch.equal(kept.sum(-1), mask.sum(-1).clamp(max=k))


# --- exercise 4: shared K/V heads -----------------------------------------------------------------------------------

@pytest.mark.parametrize("wrong, mistake, phrase", [
    (lambda x, n: x.repeat(1, n // x.shape[1], 1, 1), "tiled", "h % H_kv"),
    (lambda x, n: torch.cat([x] * (n // x.shape[1]), dim=1), "tiled", "consecutive query heads (0, 0, 0, 1, 1, 1"),
    (lambda x, n: x[:, None].expand(-1, n // x.shape[1], -1, -1, -1).flatten(1, 2), "tiled", "x.repeat tiles"),
    (lambda x, n: torch.stack([x[:, h % x.shape[1]] for h in range(n)], 1), "tiled", "n_heads // H_kv = 3"),
    (lambda x, n: x.repeat_interleave(n // x.shape[1], dim=2), "time_axis", "the time axis (dim=2)"),
    (lambda x, n: x.repeat(1, 1, n // x.shape[1], 1), "time_axis", "dim=1 of [B, H_kv, T, d]"),
    (lambda x, n: x.repeat_interleave(n // x.shape[1], dim=0), "batch_axis", "the batch axis (dim=0)"),
    (lambda x, n: x.clone(), "unchanged", "keeps the H_kv = 2 heads of x"),
    (lambda x, n: x.expand(x.shape[0], n, x.shape[2], x.shape[3]), "mqa_only", "single K/V head"),
    (lambda x, n: x.expand(-1, n, -1, -1), "mqa_only", "multi-query attention"),
    (lambda x, n: x[:, [0]].repeat(1, n, 1, 1), "first_kv_head_only", "every query head reads K/V head 0"),
    (lambda x, n: x.repeat_interleave(n, dim=1), "n_heads_as_count", "H_kv * n_heads = 12 heads"),
    (lambda x, n: x.repeat(1, n, 1, 1), "n_heads_as_count", "the group size"),
    (lambda x, n: x.reshape(x.shape[0], n, x.shape[2], -1), "raised", "each K/V head serves"),
    (lambda x, n: x.expand(-1, -1, n, -1), "raised", "expand works on an axis of size 1 only"),
    (lambda x, n: repeat_kv_heads(x, n).flip(1), None, "differs from the reference"),
])
def test_hand_written_head_mistakes(wrong, mistake, phrase) -> None:
    assert_diagnosed(lesson12.check_repeat_kv_heads(wrong), mistake, phrase)


def test_heads_cases_hold_the_edge_cases() -> None:
    sizes = [(c.args[0].shape[1], c.args[1]) for c in lesson12.HEADS_CASES]
    assert any(h_kv == 1 for h_kv, _ in sizes)  # multi-query
    assert any(1 < h_kv < n for h_kv, n in sizes) and any(h_kv == n for h_kv, n in sizes)
    assert any(n // h_kv > 2 for h_kv, n in sizes)  # groups of 3 or more: tiling and grouping differ
    assert any(c.args[0].shape[0] == 1 for c in lesson12.HEADS_CASES)
    assert {c.args[0].dtype for c in lesson12.HEADS_CASES} == {torch.float32, torch.float64}
    for case in lesson12.HEADS_CASES:  # a repeat on a wrong axis shows in the shape, and each one differently
        expected = tuple(lesson12.repeat_kv_heads_reference(*case.args).shape)
        shapes = [tuple(m.wrong(*case.args).shape) for m in lesson12.HEADS_MISTAKES if m.match == "shape"]
        differing = [s for s in shapes if s != expected]
        assert len(set(differing)) == len(differing), case.name
        assert len(differing) >= (3 if case.args[0].shape[1] == 1 else 4 if case.info["group"] > 1 else 1), case.name


def test_the_heads_reference_is_repeat_interleave_and_what_sdpa_does_with_enable_gqa() -> None:
    gen = torch.Generator().manual_seed(7)
    for case in lesson12.HEADS_CASES:
        x, n_heads = case.args
        group = n_heads // x.shape[1]
        repeated = lesson12.repeat_kv_heads_reference(x, n_heads)
        assert torch.equal(repeated, torch.repeat_interleave(x, group, dim=1))
        for h in range(n_heads):
            assert torch.equal(repeated[:, h], x[:, h // group])
        q = torch.randn(x.shape[0], n_heads, 3, x.shape[-1], generator=gen, dtype=x.dtype)
        shared = F.scaled_dot_product_attention(q, x, x, enable_gqa=True)
        torch.testing.assert_close(F.scaled_dot_product_attention(q, repeated, repeated), shared,
                                   atol=1e-12 if x.dtype == torch.float64 else 1e-6, rtol=1e-6)


def test_heads_first_case_tells_the_mistakes_apart() -> None:
    args = lesson12.HEADS_CASES[0].args
    outputs = [lesson12.repeat_kv_heads_reference(*args)]
    for mistake in lesson12.HEADS_MISTAKES:
        if mistake.name != "mqa_only":  # it raises with two K/V heads
            outputs.append(mistake.wrong(*args))
    assert len({(tuple(o.shape), tuple(o.flatten().tolist())) for o in outputs}) == len(outputs)
