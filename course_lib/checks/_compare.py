"""Comparing any two results, safely: ``same`` (tensors, sequences, numbers; never raises, whatever the learner
returned), the tolerance that suits a dtype, and where two tensors differ (``describe_difference``). ``compare`` is
the older one-tensor helper that raises the ``Hint`` itself."""
from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from .._checks import shape_str
from ._results import Hint


def tolerance(dtype: Any) -> tuple[float, float]:
    """(atol, rtol) suited to a result of ``dtype``."""
    if dtype == torch.float16:
        return 1e-2, 1e-2
    if dtype == torch.bfloat16:
        return 3e-2, 3e-2
    return 1e-5, 1e-4


def _float64(x: Tensor) -> Tensor:
    x = x.detach().to("cpu")
    return x.to(torch.complex128) if x.is_complex() else x.to(torch.float64)


def tensor_close(a: Tensor, b: Tensor, atol: float, rtol: float) -> bool:
    """Same shape and values within tolerance (NaN equals NaN; bool tensors must be bool on both sides)."""
    if tuple(a.shape) != tuple(b.shape):
        return False
    try:
        if a.dtype == torch.bool or b.dtype == torch.bool:
            return bool(torch.equal(a.detach().cpu().bool(), b.detach().cpu().bool())) and a.dtype == b.dtype
        return bool(torch.allclose(_float64(a), _float64(b), atol=atol, rtol=rtol, equal_nan=True))
    except Exception:  # noqa: BLE001
        return False


def same(a: Any, b: Any, atol: float = 1e-5, rtol: float = 1e-4) -> bool:
    """Whether two results agree: tensors by shape and values (NaN equals NaN; dtype aside), sequences item
    by item, numbers within tolerance. Never raises, whatever ``a`` is."""
    try:
        if isinstance(a, Tensor) and isinstance(b, Tensor):
            return tensor_close(a, b, atol, rtol)
        if isinstance(a, Tensor) or isinstance(b, Tensor):
            return False
        if isinstance(a, (tuple, list)) and isinstance(b, (tuple, list)):
            return len(a) == len(b) and all(same(x, y, atol, rtol) for x, y in zip(a, b))
        if isinstance(a, bool) or isinstance(b, bool):
            return type(a) is type(b) and a == b
        if isinstance(a, numbers.Number) and isinstance(b, numbers.Number):
            return bool(a == b) or math.isclose(complex(a).real, complex(b).real, rel_tol=rtol, abs_tol=atol)
        if type(a) is not type(b):
            return False
        return bool(a == b)
    except Exception:  # noqa: BLE001 - e.g. an object whose __eq__ raises
        return False


def shapes_of(value: Any) -> Any:
    """The shape signature of a result: a tensor's shape, a tuple of them, or the type's name."""
    if isinstance(value, Tensor):
        return tuple(value.shape)
    if isinstance(value, (tuple, list)) and 0 < len(value) <= 8:
        return tuple(shapes_of(v) for v in value)
    return type(value).__name__


def has_nan(x: Tensor) -> bool:
    """Whether a float tensor holds a NaN."""
    return bool(x.is_floating_point() and torch.isnan(x).any())


def describe_difference(actual: Tensor, expected: Tensor, label: str, case: str) -> str:
    """Where and by how much two same-shape tensors differ (NaN first)."""
    a, e = _float64(actual), _float64(expected)
    nan_a, nan_e = torch.isnan(a), torch.isnan(e)
    if (nan_a & ~nan_e).any():
        index = [int(i) for i in torch.unravel_index(torch.nonzero((nan_a & ~nan_e).flatten())[0, 0], a.shape)]
        where = f" (first at index {index})" if index else ""
        return f"{label} contains NaN in case '{case}'{where}; the reference has a number there"
    gap = (a - e).abs().nan_to_num(float("inf"))
    gap = gap.masked_fill((nan_a & nan_e) | (a == e), 0.0)  # equal infinities do not differ
    flat = int(gap.flatten().argmax())
    index = [int(i) for i in torch.unravel_index(torch.tensor(flat), a.shape)] if a.ndim else []
    return (f"{label} differs from the reference in case '{case}': largest difference "
            f"{gap.flatten()[flat].item():.3g} at index {index} (yours {a.flatten()[flat].item():.4g}, "
            f"expected {e.flatten()[flat].item():.4g})")



# --- the older helper: one tensor against the reference, raising the Hint itself ----------------------

def _is_close(a: Tensor, b: Tensor, atol: float = 1e-5, rtol: float = 1e-4) -> bool:
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
        raise Hint(f"{what} has shape {shape_str(actual.shape)} in case '{case}'; expected {shape_str(expected.shape)}",
                   mistake="wrong_shape", case=case)
    if torch.isnan(actual).any() and not torch.isnan(expected).any():
        raise Hint(f"{what} contains NaN in case '{case}'; the reference has none", mistake="nan", case=case)
    if _is_close(actual, expected, atol, rtol):
        return
    for wrong_output, hint in mistakes:
        if _is_close(actual, wrong_output, atol, rtol):
            raise Hint(f"case '{case}': {hint}", case=case)
    gap = (actual.detach().double().cpu() - expected.detach().double().cpu()).abs().nan_to_num(float("inf"))
    worst = [int(i) for i in torch.unravel_index(gap.argmax(), gap.shape)]
    raise Hint(
        f"{what} differs from the reference in case '{case}': largest difference {gap.max().item():.3g} "
        f"at index {worst} (yours {actual.flatten()[gap.argmax()].item():.4g}, "
        f"expected {expected.flatten()[gap.argmax()].item():.4g})", case=case,
    )
