"""Small helpers shared by the checker tests (tests/test_checks_lessonNN.py)."""
from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from course_lib.checks import Case, CheckResult, Mistake


def raise_not_implemented(*args: Any, **kwargs: Any) -> None:
    """What an untouched exercise stub does."""
    raise NotImplementedError("exercise not done yet")


def raise_value_error(*args: Any, **kwargs: Any) -> None:
    """A learner's function that crashes."""
    raise ValueError("boom")


def assert_fail(result: CheckResult, phrase: str) -> None:
    """The checker failed the answer, and its hint contains ``phrase``."""
    assert isinstance(result, CheckResult)
    assert result.status == "fail", result
    assert phrase in result.message, result.message


def broken_answers(wrong_shape: torch.Tensor) -> list[tuple[Any, str]]:
    """Answers that crash, return the wrong type or ``wrong_shape``, or are no function, each with the phrase
    the checker's hint must contain."""
    return [
        (raise_value_error, "raised ValueError: boom"),
        (lambda *args: [1, 2, 3], "should return a torch.Tensor"),
        (lambda *args: wrong_shape, f"has shape {list(wrong_shape.shape)}"),
        (lambda *args: (torch.zeros(1), torch.zeros(1)), "tuple of 2 tensors"),
        (42, "should be a function"),
    ]


def assert_diagnosed(result: CheckResult, mistake: str | None, phrase: str) -> None:
    """The checker failed the answer as ``mistake`` (a generic class or a Mistake's name; None: undiagnosed),
    with a hint that contains ``phrase``."""
    assert_fail(result, phrase)
    assert result.mistake == mistake, result.to_dict()


# --- named mistakes as data (course_lib.checks._harness.run_cases) --------------------------------------

def assert_named(result: CheckResult, mistake: Mistake, cases: Sequence[Case] = ()) -> None:
    """The checker failed with exactly this mistake's name and its hint (filled in for the failing case)."""
    assert isinstance(result, CheckResult)
    assert result.status == "fail", result
    assert result.mistake == mistake.name, f"expected {mistake.name!r}, got {result.mistake!r}: {result.message}"
    case = next((c for c in cases if c.name == result.case), None)
    assert mistake.hint_for(case) in result.message, result.message


def _tensor_args(args: Sequence[Any]) -> list[int]:
    return [i for i, a in enumerate(args) if isinstance(a, torch.Tensor)]


def returns_numpy(solution: Callable[..., Any]) -> Callable[..., Any]:
    """The right values, as numpy arrays (a tuple of them for a pair)."""
    def wrong(*args: Any) -> Any:
        out = solution(*args)
        return tuple(o.numpy() for o in out) if isinstance(out, tuple) else out.numpy()
    return wrong


def returns_list(solution: Callable[..., Any]) -> Callable[..., Any]:
    def wrong(*args: Any) -> Any:
        out = solution(*args)
        return tuple(o.tolist() for o in out) if isinstance(out, tuple) else out.tolist()
    return wrong


def casts_to(solution: Callable[..., Any], dtype: torch.dtype) -> Callable[..., Any]:
    """Computes right, but returns ``dtype`` (e.g. a stray .float())."""
    def wrong(*args: Any) -> Any:
        out = solution(*args)
        return tuple(o.to(dtype) for o in out) if isinstance(out, tuple) else out.to(dtype)
    return wrong


def mutates_input(solution: Callable[..., Any], index: int = 0) -> Callable[..., Any]:
    """Right result, but scales argument ``index`` in place afterwards (like `q /= math.sqrt(d_k)` would)."""
    def wrong(*args: Any) -> Any:
        out = solution(*(a.clone() if isinstance(a, torch.Tensor) else a for a in args))
        args[index].mul_(2.0)
        return out
    return wrong


def batch_one_only(solution: Callable[..., Any]) -> Callable[..., Any]:
    """Code that handles only the first batch element and repeats it (right for a batch of 1 only)."""
    def wrong(*args: Any) -> Any:
        batch = next(a.shape[0] for a in args if isinstance(a, torch.Tensor) and a.ndim >= 3)
        firsts = [a[:1] if isinstance(a, torch.Tensor) and a.ndim >= 3 and a.shape[0] == batch else a for a in args]
        out = solution(*firsts)
        expand = (lambda o: o.expand(batch, *o.shape[1:]).clone())
        return tuple(expand(o) for o in out) if isinstance(out, tuple) else expand(out)
    return wrong


def batch_one_only_raising(solution: Callable[..., Any]) -> Callable[..., Any]:
    """Code that hard-codes a batch of 1 (e.g. `x.view(1, T, H, d_head)`), which raises for larger batches."""
    def wrong(*args: Any) -> Any:
        first = next(a for a in args if isinstance(a, torch.Tensor) and a.ndim >= 3)
        first.reshape(1, *first.shape[1:])  # RuntimeError unless B == 1
        return solution(*args)
    return wrong


def tensor_exercise_mistakes(solution: Callable[..., Any], *, pair: bool = False) -> list[tuple[Any, str, str]]:
    """The wrong versions of ``solution`` every tensor exercise must name, each with its generic class and the
    phrase of its hint: numpy or list results, and code right only for a batch of 1 (wrong, or raising, for
    larger batches). ``pair``: the exercise returns a pair of tensors, so the hint speaks of a part."""
    wrong_type = "should be a torch.Tensor, but is" if pair else "should return a torch.Tensor, but returned"
    return [
        (returns_numpy(solution), "wrong_type", f"{wrong_type} numpy.ndarray (its values are right"),
        (returns_list(solution), "wrong_type", f"{wrong_type} list"),
        (batch_one_only(solution), "batch_one_only", "right for a batch of 1"),
        (batch_one_only_raising(solution), "batch_one_only", "right for a batch of 1"),
    ]


class RaisingEq:
    """An object whose comparisons raise."""

    def __eq__(self, other: object) -> bool:
        raise RuntimeError("no comparisons")

    __hash__ = object.__hash__

    def __repr__(self) -> str:
        raise RuntimeError("no repr either")


def weird_answers() -> list[tuple[str, Callable[..., Any]]]:
    """Results no checker may crash on (all wrong)."""
    return [
        ("a generator", lambda *args: (a for a in args)),
        ("None", lambda *args: None),
        ("a string", lambda *args: "hello"),
        ("a dict", lambda *args: {"output": 1}),
        ("a huge tensor", lambda *args: torch.zeros(3000, 3000)),
        ("NaN everywhere", lambda *args: torch.full((2, 3), float("nan"))),
        ("an object whose __eq__ raises", lambda *args: RaisingEq()),
        ("a tuple of 3 tensors", lambda *args: (torch.zeros(1),) * 3),
        ("a 0-d tensor", lambda *args: torch.tensor(1.0)),
        ("a Python float", lambda *args: 1.0),
    ]


def messy_answer(solution: Callable[..., Any], *, grad_enabled: bool = True) -> Callable[..., Any]:
    """The right answer, from code that draws random numbers and changes threads and grad mode on the way."""
    def answer(*args: Any) -> Any:
        torch.rand(3)
        np.random.rand(2)
        random.random()
        torch.set_num_threads(3)
        torch.set_grad_enabled(grad_enabled)
        return solution(*args)
    return answer


def learner_state() -> tuple:
    """What a check must leave as it found it: the three RNGs, torch's threads and grad mode."""
    return (torch.get_rng_state(), np.random.get_state()[1].copy(), random.getstate(), torch.get_num_threads(),
            torch.is_grad_enabled())
