"""Small helpers shared by the checker tests (tests/test_checks_lessonNN.py)."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from course_lib.checks import CheckResult


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


def assert_robust(check: Callable[[Any], CheckResult], wrong_shape: Any) -> None:
    """A stub or None is "not done yet"; a crash, a wrong type or ``wrong_shape`` fails without raising."""
    assert check(raise_not_implemented).status == "not_done"
    assert check(None).status == "not_done"
    assert_fail(check(raise_value_error), "raised ValueError: boom")
    assert check(lambda *args, **kwargs: "nonsense").status == "fail"
    assert check(lambda *args, **kwargs: wrong_shape).status == "fail"
    assert check(42).status == "fail"
