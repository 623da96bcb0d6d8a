"""The machinery behind every exercise checker.

A checker runs the learner's code on a few cases, compares with a reference, and returns a
``CheckResult`` that Jupyter shows as one line: a pass, a specific hint, or "not done yet". It never
raises because of the learner's code: anything their code raises becomes a hint.

Writing a checker::

    @checker("Scaled dot-product attention")
    def check_attention(attention_fn):
        for case in cases:
            out = call_learner(attention_fn, case.q, case.k, case.v, what="attention(q, k, v)")
            out = expect_tensor(out, "attention(q, k, v)", expected_shape=case.expected.shape)
            compare(out, case.expected, case=case.name, mistakes=[(wrong_no_scale, "You forgot ...")])
        return "matches the reference on all cases"
"""
from __future__ import annotations

import functools
import numbers
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor

from .._checks import shape_str

Status = Literal["pass", "fail", "not_done"]
_ICONS = {"pass": "✅", "fail": "❌", "not_done": "⏳"}


class Hint(Exception):
    """Raised inside a checker to stop with a specific, friendly message."""


class NotDone(Exception):
    """Raised inside a checker when the exercise has not been attempted yet."""


@dataclass(frozen=True)
class CheckResult:
    """Outcome of one check. Displays as one line in a notebook; ``passed`` for tests."""

    title: str
    status: Status
    message: str

    @property
    def passed(self) -> bool:
        return self.status == "pass"

    def __str__(self) -> str:
        return f"{_ICONS[self.status]} {self.title}: {self.message}"

    __repr__ = __str__


def checker(title: str) -> Callable[[Callable[..., str]], Callable[..., CheckResult]]:
    """Turn a function that returns a pass message (or raises ``Hint``/``NotDone``) into a checker
    that always returns a ``CheckResult``."""

    def wrap(check: Callable[..., str]) -> Callable[..., CheckResult]:
        @functools.wraps(check)
        def run(*args: Any, **kwargs: Any) -> CheckResult:
            try:
                message = check(*args, **kwargs)
            except NotDone as not_done:
                return CheckResult(title, "not_done", str(not_done) or "not done yet")
            except NotImplementedError:
                return CheckResult(
                    title, "not_done", "not done yet: replace `raise NotImplementedError` with your code"
                )
            except Hint as hint:
                return CheckResult(title, "fail", str(hint))
            except Exception as error:  # noqa: BLE001 - a checker must never crash a learner's notebook
                where = traceback.extract_tb(error.__traceback__)[-1]
                return CheckResult(
                    title, "fail",
                    f"the check itself hit {type(error).__name__}: {error} (line {where.lineno} of "
                    f"{where.filename.rsplit('/', 1)[-1]}). Look at your answer's type and shape first.",
                )
            return CheckResult(title, "pass", message)

        return run

    return wrap


def call_learner(fn: Any, *args: Any, what: str = "your function", **kwargs: Any) -> Any:
    """Call the learner's ``fn``; turn its exceptions into hints (``NotImplementedError`` into "not done")."""
    if fn is None:
        raise NotDone(f"not done yet: {what} is still None")
    if not callable(fn):
        raise Hint(f"{what} should be a function, but got a {type(fn).__name__}")
    try:
        return fn(*args, **kwargs)
    except NotImplementedError:
        raise
    except Exception as error:  # noqa: BLE001
        raise Hint(f"{what} raised {type(error).__name__}: {error}") from None


def expect_tensor(value: Any, what: str, expected_shape: Sequence[int] | torch.Size | None = None) -> Tensor:
    """Check that ``value`` is a tensor (of ``expected_shape``, if given) and return it."""
    if isinstance(value, tuple) and len(value) > 0 and all(isinstance(v, Tensor) for v in value):
        raise Hint(f"{what} returned a tuple of {len(value)} tensors; expected a single tensor")
    if not isinstance(value, Tensor):
        raise Hint(f"{what} should return a torch.Tensor, but returned {type(value).__name__}")
    if expected_shape is not None and tuple(value.shape) != tuple(expected_shape):
        raise Hint(f"{what} has shape {shape_str(value.shape)}; expected {shape_str(expected_shape)}")
    return value


def expect_int(value: Any, what: str) -> int:
    """Check that a predicted count is a whole number (an int, or a float such as 12.0) and return it."""
    if value is None:
        raise NotDone(f"not done yet: {what} is still None")
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or value != int(value):
        raise Hint(f"{what} should be a whole number, but got {value!r}")
    return int(value)


def expect_shape(value: Any, what: str) -> tuple[int, ...]:
    """Check that a predicted shape is a tuple (or list) of ints and return it as a tuple."""
    if value is None:
        raise NotDone(f"not done yet: {what} is still None")
    if not isinstance(value, (tuple, list, torch.Size)) or not all(
            isinstance(n, int) and not isinstance(n, bool) for n in value):
        raise Hint(f"{what} should be a tuple of ints such as (2, 3), but got {value!r}")
    return tuple(value)


def is_close(a: Tensor, b: Tensor, atol: float = 1e-5, rtol: float = 1e-4) -> bool:
    """Same shape and all values close (NaN counts as different)."""
    if a.shape != b.shape:
        return False
    a, b = a.detach().to("cpu", torch.float64), b.detach().to("cpu", torch.float64)
    return bool(torch.allclose(a, b, atol=atol, rtol=rtol))


def compare(
    actual: Tensor,
    expected: Tensor,
    *,
    what: str,
    case: str,
    mistakes: Sequence[tuple[Tensor, str]] = (),
    atol: float = 1e-5,
    rtol: float = 1e-4,
) -> None:
    """Raise a ``Hint`` unless ``actual`` matches ``expected``.

    ``mistakes`` pairs the output of a typical wrong answer with the hint that explains it: when the
    learner's output matches one of them, that hint is given instead of a generic "values differ".
    """
    if actual.shape != expected.shape:
        raise Hint(f"{what} has shape {shape_str(actual.shape)} in case '{case}'; expected {shape_str(expected.shape)}")
    if torch.isnan(actual).any() and not torch.isnan(expected).any():
        raise Hint(f"{what} contains NaN in case '{case}'; the reference has none")
    if is_close(actual, expected, atol, rtol):
        return
    for wrong_output, hint in mistakes:
        if is_close(actual, wrong_output, atol, rtol):
            raise Hint(f"case '{case}': {hint}")
    gap = (actual.detach().double().cpu() - expected.detach().double().cpu()).abs().nan_to_num(float("inf"))
    worst = [int(i) for i in torch.unravel_index(gap.argmax(), gap.shape)]
    raise Hint(
        f"{what} differs from the reference in case '{case}': largest difference {gap.max().item():.3g} "
        f"at index {worst} (yours {actual.flatten()[gap.argmax()].item():.4g}, "
        f"expected {expected.flatten()[gap.argmax()].item():.4g})"
    )
