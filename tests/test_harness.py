"""The checker harness itself: isolation from the learner's state, structured results, diagnosis only with
evidence, the generic mistake classes, type acceptance, and no crash whatever the learner's code returns."""
from __future__ import annotations

import random
from typing import Any

import numpy as np
import pytest
import torch
from checker_helpers import RaisingEq, raise_not_implemented, raise_value_error, weird_answers

from course_lib.checks import (
    GENERIC_MISTAKES,
    Case,
    CheckResult,
    Hint,
    Mistake,
    NotDone,
    as_float,
    as_int,
    as_shape,
    check_answer,
    checker,
    run_cases,
    same,
)

# --- a toy exercise: scale each row of x [B, T, D] to sum 1, "any float dtype" ------------------------

def normalise(x: torch.Tensor) -> torch.Tensor:
    return x / x.sum(dim=-1, keepdim=True)


def _x(*shape: int, seed: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype) + 0.5


CASES = [
    Case("B=2", (_x(2, 3, 4, seed=0),)),
    Case("batch of 1", (_x(1, 3, 4, seed=1),)),
    Case("float16", (_x(2, 2, 5, seed=2, dtype=torch.float16),)),
    Case("float64", (_x(3, 2, 5, seed=3, dtype=torch.float64),)),
]
MISTAKES = [
    Mistake("sum_over_rows", "you summed over dim=-2; sum over the last dim", lambda x: x / x.sum(-2, keepdim=True)),
    Mistake("max_not_sum", "you divided by the max; divide by the sum", lambda x: x / x.amax(-1, keepdim=True)),
    Mistake("never_distinguishable", "this one equals the reference", lambda x: normalise(x)),
    Mistake("raises_on_keepdim", "you forgot keepdim=True", lambda x: x / x.sum(-1)),
    Mistake("flattened", "keep the shape", lambda x: normalise(x).flatten(), match="shape"),
]


@checker("Exercise 1 · normalise(x)")
def check_normalise(fn: Any) -> str:
    return run_cases(fn, reference=normalise, cases=CASES, mistakes=MISTAKES, what="normalise(x)",
                     passed="all rows sum to 1")


def test_pass_and_structured_result() -> None:
    result = check_normalise(normalise)
    assert result.passed and str(result) == "✅ Exercise 1 · normalise(x): all rows sum to 1"
    assert result.to_dict() == {"title": "Exercise 1 · normalise(x)", "status": "pass", "message": "all rows sum to 1",
                                "mistake": None, "case": None, "passed": True}


@pytest.mark.parametrize("mistake", [m for m in MISTAKES if m.name != "never_distinguishable"], ids=lambda m: m.name)
def test_each_mistake_is_named_with_its_case(mistake: Mistake) -> None:
    result = check_normalise(mistake.wrong)
    assert result.status == "fail" and result.mistake == mistake.name and mistake.hint in result.message
    assert result.case in {c.name for c in CASES} and f"case '{result.case}'" in result.message
    assert str(result).startswith("❌ Exercise 1 · normalise(x): ")
    assert result.to_dict()["mistake"] == mistake.name


def test_no_mistake_is_named_without_evidence() -> None:
    result = check_normalise(lambda x: normalise(x) * 1.01)  # wrong, but like no listed mistake
    assert result.status == "fail" and result.mistake is None
    assert "differs from the reference in case 'B=2'" in result.message and "largest difference" in result.message
    assert "at index [" in result.message and "yours" in result.message


def test_a_mistake_equal_to_the_reference_is_never_named() -> None:
    assert check_normalise(normalise).passed  # "never_distinguishable" matches it, yet it passes


def test_float16_case_gets_a_float16_tolerance() -> None:
    via_float32 = lambda x: normalise(x.float()).to(x.dtype)  # noqa: E731 - rounds differently, still right
    assert check_normalise(via_float32).passed


def test_float16_only_failure_is_reported() -> None:
    def breaks_in_half(x: torch.Tensor) -> torch.Tensor:
        if x.dtype == torch.float16:
            return x.float() / x.float().sum(-1, keepdim=True)
        return normalise(x)

    result = check_normalise(breaks_in_half)
    assert result.mistake == "wrong_dtype" and result.case == "float16" and "expected torch.float16" in result.message


def test_nan_is_located() -> None:
    def nan_in_one_place(x: torch.Tensor) -> torch.Tensor:
        out = normalise(x)
        out[0, 1, 2] = float("nan")
        return out

    result = check_normalise(nan_in_one_place)
    assert result.mistake == "nan" and "contains NaN" in result.message and "[0, 1, 2]" in result.message


def test_mutation_is_detected_even_when_the_result_is_right() -> None:
    def in_place(x: torch.Tensor) -> torch.Tensor:
        return x.div_(x.sum(-1, keepdim=True))

    result = check_normalise(in_place)
    assert result.mistake == "mutated_input" and "`x`" in result.message


def test_batch_one_only_needs_the_pattern() -> None:
    only_first = lambda x: normalise(x[:1]).expand_as(x).clone()  # noqa: E731
    result = check_normalise(only_first)
    assert result.mistake == "batch_one_only" and "right for a batch of 1 (case 'batch of 1')" in result.message
    # right on the batch of 1 but wrong dtype elsewhere: not blamed on the batch
    assert check_normalise(lambda x: normalise(x).float()).mistake == "wrong_dtype"


def test_square_only() -> None:
    cases = [Case("square", (torch.ones(2, 3, 4), torch.ones(2, 3, 4))),
             Case("T_q != T_k", (torch.ones(2, 3, 4), torch.ones(2, 5, 4)))]
    assert cases[0].is_square and not cases[1].is_square and cases[0].batch_size == 2

    def ref(q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        return q @ k.transpose(-2, -1)

    def square_only(q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        return (q @ k.transpose(-2, -1)).reshape(q.shape[0], q.shape[1], q.shape[1])

    with pytest.raises(Hint) as info:
        run_cases(square_only, reference=ref, cases=cases, what="scores(q, k)")
    assert info.value.mistake == "square_only" and info.value.case == "T_q != T_k"


def test_error_of_a_wrong_version_is_evidence() -> None:
    result = check_normalise(lambda x: x / x.sum(-1))
    assert result.mistake == "raises_on_keepdim" and "your code raised RuntimeError" in result.message


def test_tips_for_errors_and_plain_errors() -> None:
    with pytest.raises(Hint) as info:
        run_cases(lambda x: x.view(-1, 7), reference=normalise, cases=CASES[:1], what="normalise(x)",
                  error_tips=[("invalid for input", "count the elements")])
    assert info.value.mistake == "raised" and "raised RuntimeError" in str(info.value)
    assert str(info.value).endswith("count the elements")


# --- in-place exercises -----------------------------------------------------------------------------

def zero_diagonal(x: torch.Tensor) -> None:
    x.diagonal(dim1=-2, dim2=-1).zero_()


IN_PLACE_CASES = [Case("3 x 3", (torch.ones(2, 3, 3),)), Case("batch of 1", (torch.ones(1, 4, 4),))]


@checker("Exercise 2 · zero_diagonal(x)")
def check_zero_diagonal(fn: Any) -> str:
    return run_cases(fn, reference=zero_diagonal, cases=IN_PLACE_CASES, what="zero_diagonal(x)", in_place=0,
                     passed="zeroed in place")


def test_in_place_exercise() -> None:
    assert check_zero_diagonal(zero_diagonal).passed
    assert check_zero_diagonal(lambda x: x.mul_(torch.ones_like(x).tril(-1) + torch.ones_like(x).triu(1))).passed
    copy = check_zero_diagonal(lambda x: x * (1 - torch.eye(x.shape[-1])))
    assert copy.mistake == "modified_copy" and "returned a modified copy" in copy.message
    untouched = check_zero_diagonal(lambda x: None)
    assert untouched.mistake == "not_in_place" and "unchanged" in untouched.message
    wrong_edit = check_zero_diagonal(lambda x: x.zero_())
    assert wrong_edit.status == "fail" and "differs from the reference" in wrong_edit.message


# --- robustness -------------------------------------------------------------------------------------

def test_not_done_and_not_a_function() -> None:
    assert check_normalise(None).to_dict()["status"] == "not_done"
    stub = check_normalise(raise_not_implemented)
    assert stub.status == "not_done" and str(stub).startswith("⏳ Exercise 1 · normalise(x): not done yet")
    crash = check_normalise(raise_value_error)
    assert crash.mistake == "raised" and "raised ValueError: boom" in crash.message and crash.case == "B=2"
    for thing in (42, "normalise", [normalise]):
        result = check_normalise(thing)
        assert result.mistake == "not_a_function" and "should be a function" in result.message


@pytest.mark.parametrize(("label", "weird"), weird_answers(), ids=[w[0] for w in weird_answers()])
def test_weird_results_never_crash_the_checker(label: str, weird: Any) -> None:
    result = check_normalise(weird)
    assert isinstance(result, CheckResult) and result.status == "fail"
    assert result.mistake in GENERIC_MISTAKES and "the check itself hit" not in result.message


def test_system_exit_and_recursion_are_caught() -> None:
    def exits(x: torch.Tensor) -> None:
        raise SystemExit(1)

    def recurses(x: torch.Tensor) -> torch.Tensor:
        return recurses(x)

    assert check_normalise(exits).mistake == "raised"
    assert "RecursionError" in check_normalise(recurses).message


def test_same_never_raises() -> None:
    assert not same(RaisingEq(), RaisingEq())
    assert not same(torch.zeros(2), [0.0, 0.0]) and same([torch.zeros(2)], (torch.zeros(2),))
    assert same(torch.tensor([float("nan")]), torch.tensor([float("nan")]))
    assert not same(torch.zeros(3000, 3000), torch.zeros(2))
    assert not same(True, 1) and same(3, 3.0)


def test_old_style_checkers_keep_working() -> None:
    @checker("Exercise 9 · old style")
    def old(answer: Any) -> str:
        if answer is None:
            raise NotDone("not done yet: answer is still None")
        if answer != 3:
            raise Hint("not 3")
        return "right"

    assert old(3).passed and old(None).status == "not_done"
    failed = old(4)
    assert str(failed) == "❌ Exercise 9 · old style: not 3" and failed.mistake is None and failed.case is None

    @checker("broken checker")
    def broken(answer: Any) -> str:
        return {}["missing"]

    assert "the check itself hit KeyError" in broken(1).message


# --- values: equivalent types are accepted consistently ----------------------------------------------

@pytest.mark.parametrize("value", [3, 3.0, np.int64(3), np.float32(3.0), np.array(3)])
def test_int_answers_of_equivalent_types(value: Any) -> None:
    assert as_int(value) == 3 and check_answer(value, 3, what="n") == 3


@pytest.mark.parametrize("value", [torch.tensor(3), torch.tensor(3.0), torch.tensor([3])])
def test_a_tensor_is_not_a_count(value: Any) -> None:
    """One rule in every checker: a count is a plain number; a tensor gets the .item() hint."""
    assert as_int(value) is None
    with pytest.raises(Hint) as info:
        check_answer(value, 3, what="n")
    assert info.value.mistake == "wrong_type" and ".item()" in str(info.value)


@pytest.mark.parametrize("value", [3.5, True, "3", [3], torch.tensor([3, 4]), float("nan"), float("inf"), RaisingEq(),
                                   torch.tensor([[3.5]])])
def test_not_int_answers(value: Any) -> None:
    assert as_int(value) is None
    with pytest.raises(Hint) as info:
        check_answer(value, 3, what="n")
    assert info.value.mistake == "wrong_type" and "whole number" in str(info.value)


def test_float_and_shape_answers() -> None:
    assert as_float(torch.tensor(0.5)) == 0.5 and as_float(np.float64(0.5)) == 0.5 and as_float(False) is None
    assert as_shape(torch.Size([2, 3])) == (2, 3) and as_shape([np.int64(2), 3]) == (2, 3)
    assert as_shape((2, 3.0)) is None and as_shape((True, 3)) is None and as_shape("2, 3") is None
    assert check_answer(0.25, 0.25, what="p") == 0.25 and check_answer([2, 3], (2, 3), what="s") == (2, 3)


def test_check_answer_names_mistakes_and_fills_the_template() -> None:
    mistakes = [Mistake("off_by_one", "count the last one too", 2), Mistake("doubled", "only once", lambda: 6)]
    for mistake in mistakes:
        with pytest.raises(Hint) as info:
            check_answer(float(mistake.wrong() if callable(mistake.wrong) else mistake.wrong), 3, what="n",
                         mistakes=mistakes, template="{what}={got}: {hint}")
        assert info.value.mistake == mistake.name and str(info.value) == f"n={int(info.value.args[0][2])}: " \
            f"{mistake.hint}"
    with pytest.raises(Hint) as info:
        check_answer(7, 3, what="n", mistakes=mistakes, otherwise="think again")
    assert info.value.mistake is None and "think again" in str(info.value)
    with pytest.raises(NotDone):
        check_answer(None, 3, what="n")


# --- isolation: the learner's global state survives every checker ------------------------------------

def _state() -> tuple[Any, ...]:
    return (torch.get_rng_state(), np.random.get_state()[1].copy(), random.getstate(), torch.get_num_threads(),
            torch.is_grad_enabled(), torch.get_default_dtype())


def _assert_same_state(before: tuple[Any, ...], after: tuple[Any, ...]) -> None:
    assert torch.equal(before[0], after[0]) and np.array_equal(before[1], after[1])
    assert before[2:] == after[2:]


def messy_learner(x: torch.Tensor) -> torch.Tensor:
    torch.manual_seed(123)
    torch.rand(5)
    np.random.rand(3)
    random.random()
    torch.set_num_threads(1)
    torch.set_grad_enabled(False)
    torch.set_default_dtype(torch.float64)
    return normalise(x)


@checker("Exercise 3 · a checker that draws random numbers")
def check_with_randomness(fn: Any) -> str:
    x = torch.rand(2, 3, 4) + 0.5  # global RNG: seeded inside, restored after
    np.random.rand(2)
    random.random()
    return run_cases(fn, reference=normalise, cases=[Case("random", (x,))], what="normalise(x)")


@pytest.mark.parametrize("check", [check_normalise, check_with_randomness])
def test_checkers_leave_the_learners_state_as_they_found_it(check: Any) -> None:
    torch.manual_seed(7)
    np.random.seed(7)
    random.seed(7)
    threads = torch.get_num_threads()
    before = _state()
    try:
        assert check(messy_learner).passed
        _assert_same_state(before, _state())
        check(normalise)
        _assert_same_state(before, _state())
        assert torch.get_num_threads() == threads and torch.is_grad_enabled()
    finally:
        torch.set_num_threads(threads)
        torch.set_grad_enabled(True)
        torch.set_default_dtype(torch.float32)


def test_checkers_are_reproducible_whatever_the_learners_seed() -> None:
    def noisy(x: torch.Tensor) -> torch.Tensor:
        return normalise(x) + torch.rand(()) * 1e-3  # uses the global RNG: same inside every check

    torch.manual_seed(1)
    first = check_with_randomness(noisy).message
    torch.manual_seed(2)
    assert check_with_randomness(noisy).message == first


def test_isolation_holds_when_the_checker_itself_fails() -> None:
    @checker("Exercise 4 · crashes")
    def crashes(fn: Any) -> str:
        torch.set_grad_enabled(False)
        torch.rand(3)
        raise KeyError("oops")

    before = _state()
    assert crashes(None).status == "fail"
    _assert_same_state(before, _state())


def test_hints_quote_the_case_numbers() -> None:
    mistake = Mistake("scale", "divide by sqrt({d_k})", None)
    assert mistake.hint_for(Case("c", (), info={"d_k": 16})) == "divide by sqrt(16)"
    assert mistake.hint_for(Case("c", ())) == mistake.hint_for() == "divide by sqrt(d_k)"


def test_a_list_argument_edited_in_place_is_detected() -> None:
    """Sorting, reversing or overwriting an item of a list argument keeps its length: still a mutation."""
    def first_tokens(x: torch.Tensor, tokens: list[str]) -> list[str]:
        return [tokens[0] for _ in range(x.shape[0])]

    cases = [Case("three tokens", (torch.ones(2, 3), ["b", "a", "c"]))]
    assert run_cases(first_tokens, reference=first_tokens, cases=cases, what="f(x, tokens)") is not None
    for edit in (lambda t: t.sort(), lambda t: t.reverse(), lambda t: t.__setitem__(1, "z")):
        def edits(x: torch.Tensor, tokens: list[str], edit: Any = edit) -> list[str]:
            out = first_tokens(x, tokens)
            edit(tokens)
            return out

        with pytest.raises(Hint) as info:
            run_cases(edits, reference=first_tokens, cases=cases, what="f(x, tokens)")
        assert info.value.mistake == "mutated_input" and "`tokens`" in str(info.value)


def test_equal_infinities_do_not_count_as_a_difference() -> None:
    """An additive mask with 1.0 where 0.0 belongs: the message points at the 1.0, not at a -inf both share."""
    expected = torch.tensor([0.0, float("-inf"), 0.0])
    with pytest.raises(Hint) as info:
        run_cases(lambda x: x + torch.tensor([1.0, float("-inf"), 1.0]), reference=lambda x: x + expected,
                  cases=[Case("mask", (torch.zeros(3),))], what="mask(x)")
    assert "largest difference 1 at index [0] (yours 1, expected 0)" in str(info.value)
