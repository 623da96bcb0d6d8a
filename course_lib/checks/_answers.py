"""Checking a predicted value ("predict, then verify" exercises): an int, a float or a shape.

Equivalent types are accepted alike (``3``, ``3.0`` and a numpy scalar are the same count; a tuple, a list and a
``torch.Size`` the same shape); a tensor is not a count (its hint says ".item()"). ``check_answer`` names the
``Mistake`` whose wrong value the learner wrote.
"""
from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .._checks import shape_str
from ._cases import Mistake
from ._compare import same
from ._results import Hint, NotDone, short_repr


def as_int(value: Any) -> int | None:
    """``value`` as an int if it is a whole number of a plain numeric type (3, 3.0, a numpy scalar), else None.

    A tensor is not a count, even a 0-d one: code that uses the answer as a number (``range(n)``, a dict
    key, a format string) breaks on it, so ``expect_int`` names it as a wrong type (".item()").
    """
    try:
        if isinstance(value, (bool, Tensor)) or value is None:
            return None
        if isinstance(value, np.ndarray):
            if value.ndim != 0 or value.dtype == bool:
                return None
            value = value.item()
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
            return None
        if not math.isfinite(float(value)) or float(value) != int(value):
            return None
        return int(value)
    except Exception:  # noqa: BLE001
        return None


def as_float(value: Any) -> float | None:
    """``value`` as a float if it is a real number of any usual type, else None."""
    try:
        if isinstance(value, bool) or value is None:
            return None
        if isinstance(value, Tensor):
            if value.ndim != 0 or value.dtype == torch.bool or value.is_complex():
                return None
            value = value.item()
        elif isinstance(value, np.ndarray):
            if value.ndim != 0 or value.dtype == bool or np.iscomplexobj(value):
                return None
            value = value.item()
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
            return None
        return float(value)
    except Exception:  # noqa: BLE001
        return None


def as_shape(value: Any) -> tuple[int, ...] | None:
    """``value`` as a shape if it is a tuple, list or ``torch.Size`` of ints (numpy ints too), else None."""
    if not isinstance(value, (tuple, list, torch.Size)):
        return None
    out = []
    for n in value:
        if isinstance(n, (bool, np.bool_)) or not isinstance(n, (numbers.Integral, np.integer)):
            return None
        out.append(int(n))
    return tuple(out)


def expect_int(value: Any, what: str) -> int:
    """Check that a predicted count is a whole number (12, 12.0, a numpy int; not a tensor) and return it."""
    if value is None:
        raise NotDone(f"not done yet: {what} is still None")
    number = as_int(value)
    if number is None and isinstance(value, Tensor) and value.numel() == 1:
        raise Hint(f"{what} should be a whole number as a Python int, but got a tensor ({short_repr(value, 40)}): "
                   "take the number out with .item()", mistake="wrong_type")
    if number is None:
        raise Hint(f"{what} should be a whole number, but got {short_repr(value, 60)}", mistake="wrong_type")
    return number


def expect_shape(value: Any, what: str) -> tuple[int, ...]:
    """Check that a predicted shape is a tuple (or list, or torch.Size) of ints and return it as a tuple."""
    if value is None:
        raise NotDone(f"not done yet: {what} is still None")
    shape = as_shape(value)
    if shape is None:
        raise Hint(f"{what} should be a tuple of ints such as (2, 3), but got {short_repr(value, 60)}",
                   mistake="wrong_type")
    return shape


def check_answer(
    answer: Any,
    expected: Any,
    *,
    what: str,
    mistakes: Sequence[Mistake] = (),
    template: str = "{what}: you predicted {got}; {hint}",
    otherwise: str = "that is not it",
    atol: float = 1e-9,
) -> Any:
    """Check a predicted value (an int, a float, a shape) against ``expected`` and return it normalised.

    None is "not done"; a value of the wrong kind fails with ``wrong_type``; a wrong value matching a
    ``Mistake.wrong`` (a value or a function returning one) gets that mistake's hint, any other gets
    ``otherwise``. ``template`` may use ``{what}``, ``{got}``, ``{expected}`` and ``{hint}``."""
    if isinstance(expected, tuple):
        got = expect_shape(answer, what)
    elif isinstance(expected, numbers.Integral):
        got = expect_int(answer, what)
    else:
        if answer is None:
            raise NotDone(f"not done yet: {what} is still None")
        got = as_float(answer)
        if got is None:
            raise Hint(f"{what} should be a number, but got {short_repr(answer, 60)}", mistake="wrong_type")
    if same(got, expected, atol=atol, rtol=0):
        return got
    shown = shape_str(got) if isinstance(expected, tuple) else got
    wanted = shape_str(expected) if isinstance(expected, tuple) else expected
    for mistake in mistakes:
        wrong = mistake.wrong() if callable(mistake.wrong) else mistake.wrong
        if isinstance(expected, tuple):
            wrong = as_shape(wrong)
        if same(got, wrong, atol=atol, rtol=0):
            raise Hint(template.format(what=what, got=shown, expected=wanted, hint=mistake.hint),
                       mistake=mistake.name)
    raise Hint(template.format(what=what, got=shown, expected=wanted, hint=otherwise))
