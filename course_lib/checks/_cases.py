"""An exercise's data, and calling code on it safely.

A ``Case`` is one input of an exercise; a ``Mistake`` is a typical wrong answer (a wrong version of the function,
or a wrong value) with the hint that explains it. ``invoke`` calls a function on clones of a case's arguments and
records its result, its error, and which arguments it changed in place; ``call_learner`` is the older one-call
helper that turns the learner's exception into a ``Hint``.
"""
from __future__ import annotations

import copy
import inspect
import numbers
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import torch
from torch import Tensor

from ._results import Hint, NotDone, short_str, type_name


def always(case: Case) -> bool:
    """The default ``applies_when``: the mistake is worth trying on every case."""
    return True


@dataclass(frozen=True)
class Case:
    """One input of an exercise. ``batch``/``square`` are inferred (the first tensor argument with >= 3
    dims gives the batch size; the dim -2 of all such tensors gives T_q == T_k) unless given.
    ``info`` holds numbers a hint may quote as ``{name}``."""

    name: str
    args: tuple[Any, ...]
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    batch: int | None = None
    square: bool | None = None
    atol: float | None = None
    rtol: float | None = None
    info: Mapping[str, Any] = field(default_factory=dict)

    @property
    def batch_size(self) -> int | None:
        if self.batch is not None:
            return self.batch
        big = [a for a in self.args if isinstance(a, Tensor) and a.ndim >= 3]
        return int(big[0].shape[0]) if big else None

    @property
    def is_square(self) -> bool | None:
        if self.square is not None:
            return self.square
        big = [a for a in self.args if isinstance(a, Tensor) and a.ndim >= 3]
        return len({int(a.shape[-2]) for a in big}) == 1 if len(big) >= 2 else None


@dataclass(frozen=True)
class Mistake:
    """A typical wrong answer: ``wrong`` has the exercise's signature (for a prediction: the wrong value,
    or a function returning it); ``hint`` says what to fix (``{name}`` is filled from ``case.info``);
    ``match="shape"`` names it by its result's shape alone."""

    name: str
    hint: str
    wrong: Any
    applies_when: Callable[[Case], bool] = always
    match: Literal["values", "shape"] = "values"

    def hint_for(self, case: Case | None = None) -> str:
        """The hint with ``{name}`` filled from ``case.info`` (a name the case lacks stays as the bare name)."""
        if "{" not in self.hint:
            return self.hint
        try:
            return self.hint.format_map(_Placeholders(case.info if case is not None else {}))
        except (KeyError, ValueError, IndexError, AttributeError):
            return self.hint


class _Placeholders(dict):
    def __missing__(self, key: str) -> str:
        return key



# --- calling code on a case ---------------------------------------------------------------------------

def clone(value: Any) -> Any:
    """A copy the called code may change freely: tensors, lists, tuples and dicts cloned all the way down."""
    if isinstance(value, Tensor):
        return value.detach().clone().requires_grad_(value.requires_grad)
    if isinstance(value, tuple):
        return tuple(clone(v) for v in value)
    if isinstance(value, list):
        return [clone(v) for v in value]
    if isinstance(value, dict):
        return {k: clone(v) for k, v in value.items()}
    if isinstance(value, (numbers.Number, str, bytes, type(None))):
        return value
    try:
        return copy.deepcopy(value)
    except Exception:  # noqa: BLE001
        return value


def unchanged(before: Any, after: Any) -> bool:
    """Whether ``after`` (an argument after the call) still equals ``before`` (NaN equals NaN)."""
    if isinstance(before, Tensor):
        if not isinstance(after, Tensor) or before.shape != after.shape or before.dtype != after.dtype:
            return False
        if before.is_floating_point():
            return bool(((before == after) | (before.isnan() & after.isnan())).all())
        return bool(torch.equal(before, after))
    if isinstance(before, (tuple, list)):
        return len(before) == len(after) and all(unchanged(b, a) for b, a in zip(before, after))
    if isinstance(before, dict):
        return before.keys() == after.keys() and all(unchanged(before[k], after[k]) for k in before)
    if isinstance(before, torch.nn.Module):
        return unchanged(before.state_dict(), after.state_dict())
    if isinstance(before, (numbers.Number, str, bytes)):  # items of a list the learner may have edited
        return type(before) is type(after) and (before == after or before != before and after != after)
    return True


def require_function(fn: Any, what: str) -> None:
    """``NotDone`` for None, a ``Hint`` for something that is not a function."""
    if fn is None:
        raise NotDone(f"not done yet: {what} is still None")
    if not callable(fn):
        raise Hint(f"{what} should be a function, but got a {type_name(fn)}", mistake="not_a_function")


def call_learner(fn: Any, *args: Any, what: str = "your function", **kwargs: Any) -> Any:
    """Call the learner's ``fn``; turn its exceptions into hints (``NotImplementedError`` into "not done")."""
    require_function(fn, what)
    try:
        return fn(*args, **kwargs)
    except NotImplementedError:
        raise
    except Exception as error:  # noqa: BLE001
        raise Hint(f"{what} raised {type(error).__name__}: {short_str(error, 300)}", mistake="raised") from None


@dataclass
class Run:
    """What one call produced: a result, or an error."""

    result: Any = None
    error: BaseException | None = None
    mutated: tuple[str, ...] = ()
    returned: Any = None  # for in-place exercises: what the function returned


def arg_names(reference: Callable[..., Any], n: int) -> list[str]:
    """The names of the first ``n`` parameters of ``reference``, for messages (``argument 3`` if unnamed)."""
    try:
        params = [p.name for p in inspect.signature(reference).parameters.values()
                  if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    except (TypeError, ValueError):
        params = []
    return (params + [f"argument {i + 1}" for i in range(len(params), n)])[:n]


def invoke(fn: Callable[..., Any], case: Case, in_place: int | None, names: list[str], *, learner: bool) -> Run:
    """Call ``fn`` on clones of the case's arguments; a learner's ``NotImplementedError`` propagates (a stub).
    For ``in_place=i`` the result is argument ``i`` after the call (what ``fn`` returned goes to ``returned``)."""
    args, kwargs = clone(case.args), clone(dict(case.kwargs))
    try:
        result = fn(*args, **kwargs)
    except NotImplementedError:
        if learner:
            raise
        return Run(error=NotImplementedError())
    except (Exception, SystemExit) as error:  # noqa: BLE001 - whatever the learner's code does
        return Run(error=error)
    mutated = tuple(names[i] for i, (before, after) in enumerate(zip(case.args, args))
                    if i != in_place and not unchanged(before, after))
    mutated += tuple(k for k in case.kwargs if not unchanged(case.kwargs[k], kwargs[k]))
    if in_place is not None:
        return Run(result=args[in_place], mutated=mutated, returned=result)
    return Run(result=result, mutated=mutated)



def batch_reversed(case: Case) -> Case | None:
    """The same case with the order of its batch reversed (every tensor argument whose first dim is the batch),
    for the hidden tests of graded assignments: examples the learner's function has not been run on in that order.
    None when the case has no batch of two or more."""
    batch = case.batch_size
    if batch is None or batch < 2:
        return None

    def flip(value: Any) -> Any:
        return value.flip(0) if isinstance(value, Tensor) and value.ndim >= 1 and value.shape[0] == batch else value

    return replace(case, name=f"{case.name} (batch reversed)", args=tuple(flip(a) for a in case.args),
                   kwargs={k: flip(v) for k, v in case.kwargs.items()})
