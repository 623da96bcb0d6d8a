"""The lesson 13 checkers: hand-written wrong answers get their hints, the cases hold the edge cases that tell the
mistakes apart, the references agree with independent ones (brute-force loops, T5's own formula with ``torch.log``,
attention over a reordered source), and a check leaves the learner's state alone.
What every function checker must do runs in tests/test_checks_generic.py, over this module's CHECKS, GENERIC,
ALTERNATIVES and BROKEN; the part of it the lesson's exercises depend on most (each named mistake, stubs, crashes,
weird results) is also run here."""
from __future__ import annotations

import math
import random
import time

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from checker_helpers import (
    assert_diagnosed,
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
)

from course_lib.attention import scaled_dot_product_attention
from course_lib.checks import lesson13
from course_lib.position import streaming_mask

pytestmark = pytest.mark.usefixtures("single_thread")


# --- the solutions, as a learner writes them in the exercise notebook of lesson 13 ---------------------------------
def alignment_distance(t_q, t_k):
    i = torch.arange(t_q)[:, None]  # target steps [T_q, 1]
    j = torch.arange(t_k)[None, :]  # source positions [1, T_k]
    return j - i * t_k / t_q  # step i sits at source position i * t_k / t_q


def relative_position_buckets(distance, n_buckets, max_distance):
    n = torch.round(distance).long() if distance.is_floating_point() else distance.long()
    half = n_buckets // 2  # buckets per sign
    exact = half // 2  # magnitudes with a bucket of their own
    offset = (n > 0).long() * half  # ahead of the diagonal: the second half
    n = n.abs()
    if exact == 0:  # n_buckets = 2: one bucket per sign
        return offset
    log_position = torch.log(n.clamp(min=1).float() / exact) / math.log(max_distance / exact) * (half - exact)
    large = (exact + log_position.long()).clamp(max=half - 1)
    return offset + torch.where(n < exact, n, large)


def wait_k_mask(t_q, source_lengths, k, t_k):
    lengths = source_lengths[:, None]  # [B, 1]
    if k is None:  # wait for the whole sentence
        visible = lengths.expand(-1, t_q)
    else:
        visible = torch.minimum(k + torch.arange(t_q)[None, :], lengths)  # [B, T_q]
    return (torch.arange(t_k) < visible[:, :, None])[:, None]  # [B, 1, T_q, T_k]


def permute_source(keys, values, key_mask, order):
    return keys[:, :, order], values[:, :, order], key_mask[..., order]


# every function checker with its solution: tests/test_checks_generic.py runs over CHECKS, GENERIC, ALTERNATIVES
# and BROKEN
CHECKS = {
    "check_alignment_distance": (lesson13.check_alignment_distance, alignment_distance),
    "check_relative_position_buckets": (lesson13.check_relative_position_buckets, relative_position_buckets),
    "check_wait_k_mask": (lesson13.check_wait_k_mask, wait_k_mask),
    "check_permute_source": (lesson13.check_permute_source, permute_source),
}
SINGLE = [name for name in CHECKS if name != "check_permute_source"]  # those that return one tensor

BROKEN = [(name, answer, phrase) for name in SINGLE
          for answer, phrase in broken_answers(torch.zeros(1, 2, 3, 4, 5, dtype=torch.bool))]
BROKEN += [
    ("check_permute_source", raise_value_error, "raised ValueError: boom"),
    ("check_permute_source", lambda *args: [1, 2, 3], "should be a torch.Tensor, but is int"),
    ("check_permute_source", lambda k, v, m, o: (k[..., o, :], v[..., o, :]), "should return a tuple of 3"),
    ("check_permute_source", lambda k, v, m, o: k[..., o, :], "returned one tensor of shape"),
    ("check_permute_source", lambda k, v, m, o: (k[..., o, :], v[..., o, :], m[..., o].float()),
     "key_mask of permute_source"),
    ("check_permute_source", lambda k, v, m, o: (k[..., o, :], v[..., o, :], None), "should be a torch.Tensor"),
    ("check_permute_source", 42, "should be a function"),
    ("check_alignment_distance", lambda t_q, t_k: alignment_distance(t_q, t_k).tolist(), "returned list"),
    ("check_alignment_distance", lambda t_q, t_k: float("nan") * alignment_distance(t_q, t_k), "contains NaN"),
    ("check_wait_k_mask", lambda t_q, lengths, k, t_k: None, "returned NoneType"),
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

def test_the_registries_agree() -> None:
    assert set(lesson13.MISTAKES) == set(lesson13.CASES) == set(lesson13.REFERENCES) == set(CHECKS)
    for mistakes in lesson13.MISTAKES.values():
        assert len({m.name for m in mistakes}) == len(mistakes) >= 8
        assert len({m.hint for m in mistakes}) == len(mistakes)  # a hint of its own for each
    for cases in lesson13.CASES.values():
        assert len({c.name for c in cases}) == len(cases)


def _noise_like(solution):
    def wrong(*args):
        out = solution(*args)
        if isinstance(out, tuple):  # right shapes and dtypes, values from nowhere
            return tuple(torch.rand(o.shape) < 0.5 if o.dtype == torch.bool else torch.rand(o.shape, dtype=o.dtype)
                         for o in out)
        if out.dtype == torch.bool:
            return torch.rand(out.shape) < 0.5
        if not out.is_floating_point():
            return torch.randint(0, 1000, out.shape)
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
        for answer in (solution, messy, lesson13.MISTAKES[name][0].wrong, raise_value_error, raise_not_implemented):
            check(answer)
            after = learner_state()
            assert torch.equal(before[0], after[0]) and np.array_equal(before[1], after[1]), answer
            assert before[2:] == after[2:], answer
        assert check(messy).passed


def test_building_the_cases_leaves_the_global_rng_alone() -> None:
    torch.manual_seed(99)
    before = torch.get_rng_state()
    lesson13._source_case("x", *lesson13._SOURCES[0][1:])
    lesson13._wait_case(*lesson13._WAITS[0])
    lesson13._distance_case(*lesson13._LENGTHS[0])
    assert torch.equal(before, torch.get_rng_state())
    lesson13._QUERIES.pop("x")


def test_no_case_argument_asks_for_gradients() -> None:
    for cases in lesson13.CASES.values():
        for case in cases:
            assert not any(isinstance(a, torch.Tensor) and a.requires_grad for a in case.args), case.name


# --- correct alternatives (they must pass) ------------------------------------------------------------------------

def distance_by_loops(t_q, t_k):
    return torch.tensor([[j - i * t_k / t_q for j in range(t_k)] for i in range(t_q)], dtype=torch.float32)


def distance_by_outer(t_q, t_k):
    rows = torch.arange(t_q, dtype=torch.float64) * (t_k / t_q)  # the diagonal point of each step
    return torch.subtract(torch.arange(t_k, dtype=torch.float64)[None], rows[:, None]).float()


def buckets_t5_float64(distance, n_buckets, max_distance):  # T5's code (Hugging Face), in float64
    relative = torch.round(distance).long() if distance.is_floating_point() else distance.long()
    num_buckets = n_buckets // 2
    buckets = (relative > 0).long() * num_buckets
    relative = relative.abs()
    max_exact = num_buckets // 2
    if max_exact == 0:
        return buckets
    large = max_exact + (torch.log(relative.double() / max_exact) / math.log(max_distance / max_exact)
                         * (num_buckets - max_exact)).long()
    large = torch.min(large, torch.full_like(large, num_buckets - 1))
    return buckets + torch.where(relative < max_exact, relative, large)


def buckets_by_loops(distance, n_buckets, max_distance):
    half = n_buckets // 2
    exact = half // 2

    def bucket(d: float) -> int:
        n = round(d)  # Python's round: halves to even, like torch.round
        offset = half if n > 0 else 0
        n = abs(n)
        if n < exact:
            return offset + n
        if exact == 0:
            return offset
        position = math.log(n / exact) / math.log(max_distance / exact) * (half - exact)
        return offset + min(exact + int(position + 1e-9), half - 1)

    flat = [bucket(float(d)) for d in distance.flatten().tolist()]
    return torch.tensor(flat, dtype=torch.long).reshape(distance.shape)


def wait_k_by_loops(t_q, source_lengths, k, t_k):
    b = source_lengths.shape[0]
    mask = torch.zeros(b, 1, t_q, t_k, dtype=torch.bool)
    for n in range(b):
        length = int(source_lengths[n])
        for i in range(t_q):
            mask[n, 0, i, : length if k is None else min(k + i, length)] = True
    return mask


def wait_k_with_streaming_mask(t_q, source_lengths, k, t_k):
    k = t_k if k is None else k  # waiting for t_k tokens is waiting for the whole sentence
    visible = torch.clamp(k + torch.arange(t_q), max=t_k).minimum(source_lengths.long()[:, None])
    return streaming_mask(visible, t_k).unsqueeze(1)


def permute_by_index_select(keys, values, key_mask, order):
    return keys.index_select(-2, order), values.index_select(-2, order), key_mask.index_select(-1, order)


def permute_by_gather(keys, values, key_mask, order):
    def along(x, dim):
        shape = [1] * x.ndim
        shape[dim] = -1
        return torch.gather(x, dim, order.view(shape).expand(*x.shape[:dim], -1, *x.shape[dim + 1:]))
    return along(keys, 2), along(values, 2), along(key_mask, 3)


def permute_by_loop(keys, values, key_mask, order):
    picked = [int(p) for p in order]
    return (torch.stack([keys[:, :, p] for p in picked], dim=2), torch.stack([values[:, :, p] for p in picked], dim=2),
            torch.stack([key_mask[..., p] for p in picked], dim=-1))


ALTERNATIVES = [
    ("check_alignment_distance", distance_by_loops), ("check_alignment_distance", distance_by_outer),
    ("check_alignment_distance", lambda t_q, t_k: lesson13.alignment_distance(t_q, t_k)),
    ("check_relative_position_buckets", buckets_t5_float64), ("check_relative_position_buckets", buckets_by_loops),
    ("check_wait_k_mask", wait_k_by_loops), ("check_wait_k_mask", wait_k_with_streaming_mask),
    ("check_permute_source", permute_by_index_select), ("check_permute_source", permute_by_gather),
    ("check_permute_source", permute_by_loop),
    ("check_permute_source", lambda k, v, m, o: (k[..., o, :], v[..., o, :], m[:, :, :, o])),
]


# --- generic mistake classes ----------------------------------------------------------------------------------------

def _distance_square_only(t_q, t_k):  # both axes from t_q: right only when the lengths are equal
    steps = torch.arange(t_q, dtype=torch.float32)
    return steps[None, :] - steps[:, None]


def _buckets_rounding_in_place(distance, n_buckets, max_distance):
    if distance.is_floating_point():
        distance.round_()  # the caller's distances change too
    return relative_position_buckets(distance, n_buckets, max_distance)


def _wait_k_first_row(t_q, source_lengths, k, t_k):
    return wait_k_mask(t_q, source_lengths[:1], k, t_k).expand(source_lengths.shape[0], -1, -1, -1)


def _wait_k_unsqueezing_in_place(t_q, source_lengths, k, t_k):
    lengths = source_lengths.unsqueeze_(-1)  # [B, 1], and the caller's tensor too
    visible = lengths.expand(-1, t_q) if k is None else torch.minimum(k + torch.arange(t_q)[None, :], lengths)
    return (torch.arange(t_k) < visible[:, :, None])[:, None]


def _wait_k_t_q_wide(t_q, source_lengths, k, t_k):
    lengths = source_lengths[:, None]
    visible = lengths.expand(-1, t_q) if k is None else torch.minimum(k + torch.arange(t_q)[None, :], lengths)
    return (torch.arange(t_q) < visible[:, :, None])[:, None]  # columns from t_q: right only when T_q == T_k


def _permute_in_place(keys, values, key_mask, order):
    keys[:] = keys[..., order, :].clone()  # the caller's keys change too
    return keys, values[..., order, :], key_mask[..., order]


GENERIC = [("check_permute_source",) + row for row in tensor_exercise_mistakes(permute_source, pair=True)]
GENERIC += [
    ("check_alignment_distance", returns_numpy(alignment_distance), "wrong_type",
     "numpy.ndarray (its values are right"),
    ("check_alignment_distance", returns_list(alignment_distance), "wrong_type", "returned list"),
    ("check_alignment_distance", casts_to(alignment_distance, torch.float64), "wrong_dtype", "expected torch.float32"),
    ("check_alignment_distance", _distance_square_only, "square_only", "the lengths are equal"),
    ("check_relative_position_buckets", returns_numpy(relative_position_buckets), "wrong_type",
     "numpy.ndarray (its values are right"),
    ("check_relative_position_buckets", casts_to(relative_position_buckets, torch.int32), "wrong_dtype",
     "expected torch.int64"),
    ("check_relative_position_buckets", casts_to(relative_position_buckets, torch.float32), "wrong_dtype",
     "expected torch.int64"),
    ("check_relative_position_buckets", _buckets_rounding_in_place, "mutated_input", "`distance`"),
    ("check_wait_k_mask", returns_numpy(wait_k_mask), "wrong_type", "numpy.ndarray (its values are right"),
    ("check_wait_k_mask", returns_list(wait_k_mask), "wrong_type", "list"),
    ("check_wait_k_mask", _wait_k_first_row, "batch_one_only", "right for a batch of 1"),
    ("check_wait_k_mask", _wait_k_unsqueezing_in_place, "mutated_input", "`source_lengths`"),
    ("check_wait_k_mask", _wait_k_t_q_wide, "square_only", "the lengths are equal"),
    ("check_permute_source", casts_to(permute_source, torch.float32), "wrong_dtype", "expected torch.bool"),
    ("check_permute_source", mutates_input(permute_source, 1), "mutated_input", "`values`"),
    ("check_permute_source", _permute_in_place, "mutated_input", "`keys`"),
]


# --- exercise 1: the alignment distance -----------------------------------------------------------------------------

def _grid(t_q, t_k, dtype=torch.float32):
    return torch.arange(t_q, dtype=dtype)[:, None], torch.arange(t_k, dtype=dtype)[None, :]


@pytest.mark.parametrize("wrong, mistake, phrase", [
    (lambda t_q, t_k: (lambda i, j: j - i * t_q / t_k)(*_grid(t_q, t_k)), "ratio_inverted", "here 10/4 = 2.5"),
    (lambda t_q, t_k: (lambda i, j: j.T - i.T * t_k / t_q)(*_grid(t_q, t_k)), "transposed", "[T_q, T_k] = [4, 10]"),
    (lambda t_q, t_k: (lambda i, j: i * t_k / t_q - j)(*_grid(t_q, t_k)), "sign_flipped", "signs are flipped"),
    (lambda t_q, t_k: torch.arange(t_k) - torch.arange(t_q)[:, None] * t_k // t_q, "floor_division",
     "Use true division"),
    (lambda t_q, t_k: (lambda i, j: j - i * (t_k // t_q))(*_grid(t_q, t_k)), "ratio_floored", "t_k // t_q = 2"),
    (lambda t_q, t_k: alignment_distance(t_q, t_k).abs(), "absolute", "never negative"),
    (lambda t_q, t_k: (lambda i, j: j - i)(*_grid(t_q, t_k)), "ratio_ignored", "you computed j - i"),
    (lambda t_q, t_k: torch.arange(t_k) - torch.linspace(0, t_k - 1, t_q)[:, None], "corner_to_corner",
     "not this lesson's"),
    (lambda t_q, t_k: (lambda i, j: j - i * (t_k - 1) / (t_q - 1))(*_grid(t_q, t_k)), "corner_to_corner",
     "corner to corner"),
    (lambda t_q, t_k: (lambda i, j: j - (i + 1) * t_k / t_q)(*_grid(t_q, t_k)), "step_off_by_one", "one step late"),
    (lambda t_q, t_k: (lambda i, j: j / t_k - i / t_q)(*_grid(t_q, t_k)), "normalised", "divided by the lengths"),
    (lambda t_q, t_k: alignment_distance(t_q, t_k).double(), "wrong_dtype", "expected torch.float32"),
    (lambda t_q, t_k: (lambda i, j: j - i * t_k / t_q)(*_grid(t_q, t_k + 1)), "wrong_shape", "expected [4, 10]"),
    (lambda t_q, t_k: alignment_distance(t_q, t_k) + 0.1, None, "differs from the reference"),
])
def test_hand_written_distance_mistakes(wrong, mistake, phrase) -> None:
    assert_diagnosed(lesson13.check_alignment_distance(wrong), mistake, phrase)


def test_an_endpoint_formula_that_divides_by_zero_at_one_step_gets_the_tip() -> None:
    def corner_to_corner_raising(t_q, t_k):
        if t_q == 1:
            return torch.arange(t_k, dtype=torch.float32)[None] / ((t_k - 1) / (t_q - 1))
        return alignment_distance(t_q, t_k)

    assert_diagnosed(lesson13.check_alignment_distance(corner_to_corner_raising), "raised", "never by t_q - 1")


def test_distance_cases_hold_the_edge_cases() -> None:
    sizes = [c.args for c in lesson13.DISTANCE_CASES]
    assert any(t_k > t_q for t_q, t_k in sizes) and any(t_k < t_q for t_q, t_k in sizes)
    assert any(t_k == t_q for t_q, t_k in sizes)
    assert any(t_q == 1 for t_q, _ in sizes) and any(t_k == 1 for _, t_k in sizes)
    assert sum(t_k % t_q != 0 and t_q % t_k != 0 for t_q, t_k in sizes) >= 2  # ratios that are not whole numbers
    assert lesson13.DISTANCE_CASES[0].args[1] % lesson13.DISTANCE_CASES[0].args[0] != 0


def test_the_distance_reference_is_the_formula() -> None:
    for case in lesson13.DISTANCE_CASES:
        expected = distance_by_loops(*case.args)
        got = lesson13.alignment_distance_reference(*case.args)
        assert got.dtype == torch.float32 and got.shape == expected.shape
        torch.testing.assert_close(got, expected)
        assert torch.equal(got[0], torch.arange(case.args[1], dtype=torch.float32))  # step 0 sits at position 0


def test_distance_first_case_tells_the_mistakes_apart() -> None:
    args = lesson13.DISTANCE_CASES[0].args
    outputs = [lesson13.alignment_distance_reference(*args)] + [m.wrong(*args) for m in lesson13.DISTANCE_MISTAKES]
    assert len({(tuple(o.shape), tuple(o.flatten().tolist())) for o in outputs}) == len(outputs)


# --- exercise 2: relative position buckets --------------------------------------------------------------------------

def _t5(*, rounding=torch.round, ahead=lambda n: n > 0, clamp=True, log=torch.log):
    """T5's bucketing as a learner writes it, with the parts given replaced."""
    def buckets(distance, n_buckets, max_distance):
        n = rounding(distance).long() if distance.is_floating_point() else distance.long()
        half = n_buckets // 2
        exact = half // 2
        offset = ahead(n).long() * half
        n = n.abs()
        if exact == 0:
            return offset
        large = exact + (log(n.clamp(min=1).float() / exact) / math.log(max_distance / exact)
                         * (half - exact)).long()
        if clamp:
            large = large.clamp(max=half - 1)
        return offset + torch.where(n < exact, n, large)
    return buckets


@pytest.mark.parametrize("wrong, mistake, phrase", [
    (_t5(rounding=lambda d: d), "truncated", "cuts toward zero"),
    (lambda d, n, m: relative_position_buckets(d.long(), n, m), "truncated", "torch.round(distance).long()"),
    (lambda d, n, m: relative_position_buckets(d.int(), n, m), "truncated", "round them to the nearest"),
    (_t5(rounding=torch.floor), "floored", "rounded the distances down"),
    (_t5(rounding=lambda d: torch.floor(d + 0.5)), "rounded_half_up", "halves to the even integer"),
    (lambda d, n, m: relative_position_buckets(-d, n, m), "halves_swapped", "the sign is flipped"),
    (_t5(ahead=lambda n: n < 0), "halves_swapped", "ahead of the diagonal (> 0) in the first half"),
    (_t5(ahead=lambda n: n <= 0), "halves_exchanged", "halves are exchanged"),
    (_t5(ahead=lambda n: n >= 0), "zero_ahead", "distance 0 in the second half"),
    (_t5(clamp=False), "not_clamped", "max_distance (here 20)"),
    (lambda d, n, m: lesson13.relative_position_buckets(d, n, m, bidirectional=False), "unidirectional",
     "ignore the sign"),
    (_t5(log=lambda x: torch.log(x).round()), None, "differs from the reference"),
    (lambda d, n, m: relative_position_buckets(d, n, m).int(), "wrong_dtype", "expected torch.int64"),
    (lambda d, n, m: relative_position_buckets(d, n, m).flatten(), "wrong_shape", "has shape"),
])
def test_hand_written_bucket_mistakes(wrong, mistake, phrase) -> None:
    assert_diagnosed(lesson13.check_relative_position_buckets(wrong), mistake, phrase)


def test_t5_written_for_n_buckets_2_without_a_guard_gets_the_tip() -> None:
    def no_guard(distance, n_buckets, max_distance):
        half = n_buckets // 2
        exact = half // 2
        math.log(max_distance / exact)  # ZeroDivisionError when n_buckets = 2
        return relative_position_buckets(distance, n_buckets, max_distance)

    assert_diagnosed(lesson13.check_relative_position_buckets(no_guard), "raised", "no exact part")


def test_bucket_cases_hold_the_edge_cases() -> None:
    cases = lesson13.BUCKET_CASES
    distances = [c.args[0] for c in cases]
    assert any(not d.is_floating_point() for d in distances) and any(d.is_floating_point() for d in distances)
    assert any(bool((d.frac().abs() == 0.5).any()) for d in distances if d.is_floating_point())  # halves
    fractions = [d.frac().abs() for d in distances if d.is_floating_point()]
    assert any(bool(((f > 0.01) & ((f - 0.5).abs() > 0.01)).any()) for f in fractions)  # neither whole nor half
    sizes = {c.args[1] for c in cases}
    assert {2, 4, 32} <= sizes and any(n % 2 for n in sizes)
    assert any(c.args[1:] == (32, 128) for c in cases)
    assert any(bool((c.args[0].abs() > c.args[2]).any()) for c in cases)  # beyond max_distance
    assert any(c.args[0].ndim == 2 for c in cases) and any(c.args[0].ndim == 1 for c in cases)
    for case in cases:
        distance, n_buckets, max_distance = case.args
        assert max_distance > (n_buckets // 2) // 2  # the logarithmic part is well defined
        assert bool((distance <= 0).any() and (distance > 0).any()), case.name  # both halves used


@pytest.mark.parametrize("log_dtype", [torch.float32, torch.float64])
def test_the_bucket_reference_is_t5s_formula(log_dtype) -> None:
    for case in lesson13.BUCKET_CASES:
        expected = lesson13.relative_position_buckets_reference(*case.args)
        t5 = buckets_t5_float64 if log_dtype == torch.float64 else _t5()
        assert torch.equal(t5(*case.args), expected), case.name
        assert torch.equal(buckets_by_loops(*case.args), expected), case.name
        assert expected.dtype == torch.long and expected.shape == case.args[0].shape
        n_buckets = case.args[1]
        assert int(expected.min()) >= 0 and int(expected.max()) <= 2 * (n_buckets // 2) - 1


def test_bucket_mistakes_go_wrong_where_they_should() -> None:
    wide = lesson13.BUCKET_CASES[0]  # whole distances -25..25, n_buckets=16, max_distance=20
    distance, n_buckets, max_distance = wide.args
    expected = lesson13.relative_position_buckets_reference(*wide.args)
    by_name = {m.name: m.wrong(*wide.args) for m in lesson13.BUCKET_MISTAKES}
    beyond = distance.abs() >= max_distance
    assert torch.equal(by_name["not_clamped"] != expected, beyond)
    assert int(by_name["not_clamped"].max()) > n_buckets - 1
    assert torch.equal(by_name["zero_ahead"] != expected, distance == 0)
    assert torch.equal(by_name["halves_swapped"] != expected, distance != 0)
    assert torch.equal(by_name["halves_exchanged"] != expected, torch.ones_like(beyond))
    assert int(by_name["not_halved"].max()) > n_buckets - 1


# --- exercise 3: the wait-k mask ------------------------------------------------------------------------------------

def _wait(*, extra=0, compare=torch.lt, cap=True, none=None, step=None):
    """A learner's wait-k mask written out, with the parts given replaced."""
    def mask(t_q, source_lengths, k, t_k):
        lengths = source_lengths[:, None]
        if k is None and none is not None:
            return none(t_q, source_lengths, t_k)
        steps = torch.arange(t_q)[None, :]
        wanted = lengths.expand(-1, t_q) if k is None else (k + steps if step is None else step(k, steps)) + extra
        visible = torch.minimum(wanted, lengths) if cap else wanted.expand(lengths.shape[0], -1)
        return compare(torch.arange(t_k), visible[:, :, None])[:, None]
    return mask


@pytest.mark.parametrize("wrong, mistake, phrase", [
    (_wait(extra=1), "one_too_many", "k + i + 1 tokens"),
    (_wait(step=lambda k, s: s + k + 1), "one_too_many", "step 0 must see exactly k tokens (here k = 3)"),
    (_wait(extra=-1), "one_too_few", "k + i - 1 tokens"),
    (_wait(step=lambda k, s: (k - 1) + s), "one_too_few", "as if k counted from 0"),
    (_wait(compare=torch.le), "less_or_equal", "compare with <"),
    (_wait(cap=False), "padding_visible", "min(k + i, length)"),
    (lambda t_q, lengths, k, t_k: ~wait_k_mask(t_q, lengths, k, t_k), "inverted", "True must mean 'may attend'"),
    (lambda t_q, lengths, k, t_k: wait_k_mask(t_q, lengths, k, t_k).int(), "numeric_mask", "instead of bools"),
    (lambda t_q, lengths, k, t_k: wait_k_mask(t_q, lengths, k, t_k).float(), "numeric_mask", ".float()"),
    (lambda t_q, lengths, k, t_k: wait_k_mask(t_q, lengths, k, t_k)[:, 0], "no_head_axis", "add the head axis"),
    (lambda t_q, lengths, k, t_k: wait_k_mask(t_q, lengths, k, t_k).mT, "transposed", "T_q = 6, T_k = 8"),
    (lambda t_q, lengths, k, t_k: wait_k_mask(t_q, lengths, k, int(lengths.max())), "longest_not_t_k",
     "7 source positions wide"),
    (_wait(none=lambda t_q, lengths, t_k: torch.ones(len(lengths), 1, t_q, t_k, dtype=torch.bool)),
     "none_shows_padding", "still hides the padding"),
    (_wait(step=lambda k, s: k + 0 * s), "no_advance", "the same k tokens"),
    (_wait(step=lambda k, s: s + 1), "k_ignored", "like a causal mask"),
    (lambda t_q, lengths, k, t_k: wait_k_mask(t_q, lengths, k, t_k) & (torch.arange(t_k) > 0), None,
     "differs from the reference"),
])
def test_hand_written_wait_k_mistakes(wrong, mistake, phrase) -> None:
    assert_diagnosed(lesson13.check_wait_k_mask(wrong), mistake, phrase)


@pytest.mark.parametrize("wrong", [
    lambda t_q, lengths, k, t_k: wait_k_mask(t_q, lengths, k + 0, t_k),  # 'NoneType' and 'int'
    lambda t_q, lengths, k, t_k: (torch.arange(t_k) < torch.minimum(torch.arange(t_q) + k, lengths[:, None])[
        ..., None])[:, None],  # 'Tensor' and 'NoneType'
    lambda t_q, lengths, k, t_k: torch.stack([torch.stack([torch.arange(t_k) < min(k + i, int(n)) for i in range(t_q)])
                                              for n in lengths])[:, None],
])
def test_code_that_does_arithmetic_with_k_none_is_told_so(wrong) -> None:
    result = lesson13.check_wait_k_mask(wrong)
    assert_diagnosed(result, "none_not_handled", "your code fails for k=None")
    assert "(your code raised TypeError here)" in result.message and "k=None" in result.case


def test_other_errors_on_the_k_none_case_stay_errors() -> None:
    def fails_on_none(t_q, lengths, k, t_k):
        if k is None:
            raise ValueError("k must be an int")
        return wait_k_mask(t_q, lengths, k, t_k)

    assert_diagnosed(lesson13.check_wait_k_mask(fails_on_none), "raised", "ValueError: k must be an int")


def test_a_keyword_only_t_k_gets_the_tip() -> None:
    def keyword_only(t_q, source_lengths, k, *, t_k=None):
        return wait_k_mask(t_q, source_lengths, k, t_k)

    assert_diagnosed(lesson13.check_wait_k_mask(keyword_only), "raised", "with t_k the fourth argument")


def test_wait_cases_hold_the_edge_cases() -> None:
    cases = lesson13.WAIT_CASES
    rows = [(c.args[0], c.args[1].tolist(), c.args[2], c.args[3]) for c in cases]
    assert any(k is None for _, _, k, _ in rows) and any(k == 1 for _, _, k, _ in rows)
    assert any(k is not None and k > max(lengths) for _, lengths, k, _ in rows)
    assert any(t_q > t_k for t_q, _, _, t_k in rows)
    assert any(0 in lengths for _, lengths, _, _ in rows)
    assert any(t_k > max(lengths) for _, lengths, _, t_k in rows)
    assert any(len(lengths) == 1 for _, lengths, _, _ in rows) and any(len(lengths) > 2 for _, lengths, _, _ in rows)
    assert any(c.args[1].dtype == torch.int32 for c in cases)
    assert rows[0][2] not in (None, 1, 2)  # k = 2 would make "k ignored" (i + 1) look like "one too few" (k + i - 1)
    assert any(t_q == t_k and len(lengths) > 1 for t_q, lengths, _, t_k in rows)  # square, apart from a batch of 1
    assert all(t_q != t_k for t_q, lengths, _, t_k in rows if len(lengths) == 1)
    for case in cases:
        assert case.batch == len(case.args[1]) and case.is_square == (case.args[0] == case.args[3])
    for t_q, lengths, k, t_k in rows:
        if k is not None and k < t_k and len(lengths) > 1:  # the steps read the first sentence to its end, and
            assert k + t_q - 1 > lengths[0] < t_k  # padding follows it: code that copies the first row over the batch
            #                                        cannot look like code that forgets to cap at the length
        assert t_q != max(lengths) or t_q == t_k  # a mask t_q wide is not taken for one as wide as the longest


def test_the_wait_k_reference_is_the_brute_force_rule() -> None:
    for case in lesson13.WAIT_CASES:
        assert torch.equal(lesson13.wait_k_mask_reference(*case.args), wait_k_by_loops(*case.args)), case.name


# --- exercise 4: the permutation test -------------------------------------------------------------------------------

def _raise(error):
    raise error


@pytest.mark.parametrize("wrong, mistake, phrase", [
    (lambda k, v, m, o: (k, v[:, :, o], m[..., o]), "keys_not_permuted", "keys are still in the old order"),
    (lambda k, v, m, o: (k[:, :, o], v, m[..., o]), "values_not_permuted", "another position's value"),
    (lambda k, v, m, o: (k[:, :, o], v[:, :, o], m), "mask_not_permuted", "hides the wrong keys"),
    (lambda k, v, m, o: (k[:, :, o], v.clone(), m.clone()), "values_not_permuted", "values[..., order, :]"),
    (lambda k, v, m, o: permute_source(k, v, m, o.argsort()), "inverse_permutation", "inverse permutation"),
    (lambda k, v, m, o: tuple(torch.empty_like(x).index_copy_(d, o, x) for x, d in ((k, 2), (v, 2), (m, 3))),
     "inverse_permutation", "a gather"),
    (lambda k, v, m, o: (k[..., o], v[..., o], m[..., o]), "feature_axis", "the feature axis"),
    (lambda k, v, m, o: (k.index_select(1, o), v.index_select(1, o), m[..., o]), "head_axis", "the heads (dim 1)"),
    (lambda k, v, m, o: (k[o], v[o], m[o]), "batch_axis", "the batch (dim 0)"),
    (lambda k, v, m, o: (k[:, :, o], v[:, :, o], m[:, :, o]), "mask_wrong_dim", "an axis of size 1"),
    (lambda k, v, m, o: (k[..., o, :], v[..., o, :], m[:, o]), "mask_wrong_dim", "key_mask[..., order]"),
    (lambda k, v, m, o: (k.clone(), v.clone(), m.clone()), "unchanged", "unchanged"),
    (lambda k, v, m, o: (k[:, :, o], v[:, :, o], m.index_select(2, o)), "raised", "it indexes the source axis only"),
    (lambda k, v, m, o: (k.index_select(-1, o), v[:, :, o], m[..., o]), "feature_axis", "dim -2 of [B, H, T_k, d]"),
    (lambda k, v, m, o: (k[:, :, o + 1], v[:, :, o], m[..., o]), "raised",
     "is out of bounds for dimension 0 with size 5. `order` holds source positions 0 .. T_k - 1"),
    (lambda k, v, m, o: _raise(IndexError("index 2 is out of bounds for dimension 0 with size 1 (in the mask)")),
     "raised", "an axis of size 1 was indexed with `order`"),
])
def test_hand_written_permutation_mistakes(wrong, mistake, phrase) -> None:
    assert_diagnosed(lesson13.check_permute_source(wrong), mistake, phrase)


def _first_and_last_swapped(order):
    other = order.clone()
    other[[0, -1]] = order[[-1, 0]]
    return other


def test_an_unlisted_reordering_is_told_what_attention_sees() -> None:
    for case in lesson13.SOURCE_CASES:  # another order than `order`, its inverse and the identity in every case
        order = case.args[3]
        other = _first_and_last_swapped(order)
        assert not any(torch.equal(other, p) for p in (order, order.argsort(), torch.arange(len(order))))

    def another_order(keys, values, key_mask, order):  # consistent, but not `order`
        return permute_source(keys, values, key_mask, _first_and_last_swapped(order))

    def mask_by_another_order(keys, values, key_mask, order):
        return keys[:, :, order], values[:, :, order], key_mask[..., _first_and_last_swapped(order)]

    consistent = lesson13.check_permute_source(another_order)
    assert_diagnosed(consistent, None, "still gives the original output")
    assert "differs from the reference" in consistent.message
    assert_diagnosed(lesson13.check_permute_source(mask_by_another_order), None, "gives another output")


def test_a_learner_right_only_on_the_first_call_fails() -> None:
    calls = []

    def right_once(keys, values, key_mask, order):
        calls.append(1)
        first = len(calls) <= len(lesson13.SOURCE_CASES)
        return permute_source(keys, values, key_mask, order if first else order.roll(1))

    assert_diagnosed(lesson13.check_permute_source(right_once), None, "on a second call")


def test_source_cases_hold_the_edge_cases() -> None:
    cases = lesson13.SOURCE_CASES
    for case in cases:
        keys, values, key_mask, order = case.args
        t_k = keys.shape[-2]
        assert sorted(order.tolist()) == list(range(t_k)) and order.dtype == torch.long
        assert not torch.equal(order.argsort(), order), case.name  # not its own inverse
        assert not torch.equal(key_mask[..., order], key_mask), case.name  # the mask moves
        assert bool(key_mask.any(-1).all()), case.name  # every row sees a key
        assert key_mask.shape == (keys.shape[0], 1, 1, t_k) and key_mask.dtype == torch.bool
        assert int(order[0]) >= 1  # key_mask[:, :, order] raises the same IndexError whichever way it is written
    shapes = [c.args[0].shape for c in cases]
    assert any(s[1] == s[2] == s[3] for s in shapes)  # a permutation of the heads or features keeps the shapes
    assert any(s[0] == s[2] for s in shapes)  # so does one of the batch
    assert any(s[0] == 1 for s in shapes) and any(c.args[0].dtype == torch.float64 for c in cases)
    assert any(c.args[0].shape[-1] != c.args[1].shape[-1] for c in cases)


def test_the_permutation_reference_leaves_attention_unchanged_and_moves_its_columns() -> None:
    for case in lesson13.SOURCE_CASES:
        keys, values, key_mask, order = case.args
        q = lesson13._QUERIES[case.name]
        new_keys, new_values, new_mask = lesson13.permute_source_reference(*case.args)
        output, weights = scaled_dot_product_attention(q, keys, values, key_mask)
        new_output, new_weights = scaled_dot_product_attention(q, new_keys, new_values, new_mask)
        torch.testing.assert_close(new_output, output)
        torch.testing.assert_close(new_weights, weights[..., order])
        torch.testing.assert_close(F.scaled_dot_product_attention(q, new_keys, new_values, attn_mask=new_mask), output)
        for p, old in enumerate(order.tolist()):  # new position p holds old position order[p]
            assert torch.equal(new_keys[:, :, p], keys[:, :, old]) and torch.equal(new_mask[..., p], key_mask[..., old])


def test_only_the_consistent_permutation_mistakes_keep_attentions_output() -> None:
    consistent = {"inverse_permutation", "unchanged"}  # keys, values and mask moved together, but not by `order`
    ran = set()
    for case in lesson13.SOURCE_CASES:
        for mistake in lesson13.SOURCE_MISTAKES:
            try:
                wrong = mistake.wrong(*case.args)
            except IndexError:  # an axis the case cannot index with `order`
                continue
            ran.add(mistake.name)
            test = lesson13._order_test(case, wrong)
            assert test is not None and not all(test), (mistake.name, case.name)
            assert test[0] == (mistake.name in consistent), (mistake.name, case.name)
    assert ran == {m.name for m in lesson13.SOURCE_MISTAKES} - {"mask_wrong_dim"}
