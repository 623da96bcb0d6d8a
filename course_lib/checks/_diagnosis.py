"""What is wrong with one result: the verdict on one case.

``judge`` looks at what the learner's code did on a case, in order: raised, changed an input in place, (for an
in-place exercise) left its argument unchanged, returned the wrong type, structure, shape or dtype, or the wrong
values; ``Diagnoser`` runs each listed ``Mistake``'s wrong version on the same case and says which one the
learner's result matches, the evidence for naming it.
"""
from __future__ import annotations

import math
import numbers
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .._checks import shape_str
from ._answers import as_float, as_int
from ._cases import Case, Mistake, Run, invoke, unchanged
from ._compare import describe_difference, has_nan, same, shapes_of, tensor_close
from ._results import short_repr, short_str, type_name


@dataclass
class Verdict:
    """The verdict on one case: right (``ok``), or what is wrong and, with evidence, which ``Mistake`` it is."""

    case: Case
    ok: bool
    kind: str | None = None  # generic class of the problem
    message: str = ""
    mistake: Mistake | None = None
    run: Run | None = None


def _parts(value: Any, n: int) -> list[Any] | None:
    return list(value) if isinstance(value, (tuple, list)) and len(value) == n else None


def _structure_problem(got: Any, expected: Any, what: str, outputs: Sequence[str] | None, case: str,
                       atol: float, rtol: float, input_dtypes: Sequence[Any] = ()) -> tuple[str, str] | None:
    """(kind, message) if ``got`` has the wrong type, structure, shape or dtype; None if its form is right."""
    if outputs and len(outputs) > 1:
        pair = "a pair" if len(outputs) == 2 else f"a tuple of {len(outputs)}"
        form = f"({', '.join(outputs)})"
        if isinstance(got, Tensor):
            return "wrong_type", (f"case '{case}': {what} returned one tensor of shape {shape_str(got.shape)}; "
                                  f"return {pair} {form}")
        parts = _parts(got, len(outputs))
        if parts is None:
            size = f" of {len(got)} items" if isinstance(got, (tuple, list)) else ""
            return "wrong_type", f"{what} should return {pair} {form}; got {type_name(got)}{size}"
        shapes = [shapes_of(p) for p in parts]
        wanted = [shapes_of(e) for e in expected]
        if shapes != wanted and sorted(map(str, shapes)) == sorted(map(str, wanted)) and \
                all(isinstance(p, Tensor) for p in parts):
            yours = ("(" + ", ".join(outputs[wanted.index(sh)] for sh in shapes) + ")"
                     if len(set(map(str, wanted))) == len(wanted) else "the parts in another order")
            return "swapped_outputs", f"case '{case}': you returned {yours}; the order is {form}"
        if shapes == wanted and not all(same(p, e, atol, rtol) for p, e in zip(parts, expected)) and \
                len(outputs) == 2 and same(parts[::-1], list(expected), atol, rtol):
            return "swapped_outputs", f"case '{case}': you returned ({outputs[1]}, {outputs[0]}); the order is {form}"
        for name, part, exp in zip(outputs, parts, expected):
            problem = _single_problem(part, exp, f"{name} of {what}", case, input_dtypes, part=True)
            if problem:
                return problem
        return None
    return _single_problem(got, expected, what, case, input_dtypes)


def _single_problem(got: Any, expected: Any, label: str, case: str, input_dtypes: Sequence[Any] = (),
                    part: bool = False) -> tuple[str, str] | None:
    whose = "input's" if len(input_dtypes) == 1 else "inputs'"
    if isinstance(expected, Tensor):
        if isinstance(got, (tuple, list)) and got and all(isinstance(g, Tensor) for g in got):
            return "wrong_type", f"{label} returned a tuple of {len(got)} tensors; expected a single tensor"
        if not isinstance(got, Tensor):
            extra = ""
            if isinstance(got, np.ndarray):
                try:
                    right = same(torch.from_numpy(np.asarray(got)), expected)
                except Exception:  # noqa: BLE001
                    right = False
                extra = (" (its values are right: stay in torch, or convert with torch.from_numpy)" if right
                         else ": compute with torch operations")
            verb = "be a torch.Tensor, but is" if part else "return a torch.Tensor, but returned"
            return "wrong_type", f"{label} should {verb} {type_name(got)}{extra}"
        if tuple(got.shape) != tuple(expected.shape):
            return "wrong_shape", (f"case '{case}': {label} has shape {shape_str(got.shape)}; expected "
                                   f"{shape_str(expected.shape)}")
        if got.dtype != expected.dtype:
            return "wrong_dtype", (f"case '{case}': {label} has dtype {got.dtype}; expected {expected.dtype}"
                                   + (f", the {whose} dtype: keep the {whose} dtype (no .float(), .double() or "
                                      "new tensors of a fixed dtype)" if expected.dtype in input_dtypes else ""))
        return None
    if isinstance(expected, numbers.Integral) and not isinstance(expected, bool):
        if as_int(got) is None:
            return "wrong_type", f"{label} should be a whole number, but got {short_repr(got, 60)}"
        return None
    if isinstance(expected, numbers.Real) and not isinstance(expected, bool):
        if as_float(got) is None:
            return "wrong_type", f"{label} should be a number, but got {short_repr(got, 60)}"
        return None
    if type(got) is not type(expected) and not (isinstance(got, (tuple, list)) and isinstance(expected, (tuple, list))):
        return "wrong_type", f"{label} should return a {type_name(expected)}, but returned {type_name(got)}"
    return None


def _values_problem(got: Any, expected: Any, what: str, outputs: Sequence[str] | None, case: str,
                    atol: float, rtol: float) -> tuple[str | None, str] | None:
    pairs = (list(zip(outputs, got, expected)) if outputs and len(outputs) > 1 else [(None, got, expected)])
    for name, part, exp in pairs:
        label = name or what
        if isinstance(exp, Tensor) and isinstance(part, Tensor):
            if not tensor_close(part, exp, atol, rtol):
                kind = "nan" if has_nan(part) and not has_nan(exp) else None
                return kind, describe_difference(part, exp, label, case)
        elif isinstance(exp, numbers.Integral) and not isinstance(exp, bool):
            if as_int(part) != exp:
                return None, f"{label} is {short_str(part, 40)} in case '{case}'; expected {exp}"
        elif isinstance(exp, numbers.Real) and not isinstance(exp, bool):
            value = as_float(part)
            if value is None or not math.isclose(value, float(exp), rel_tol=rtol, abs_tol=atol):
                return None, f"{label} is {short_str(part, 40)} in case '{case}'; expected {exp:.4g}"
        elif not same(part, exp, atol, rtol):
            return None, f"{label} differs from the reference in case '{case}': yours {short_str(part, 80)}"
    return None


def _same_error(a: BaseException | None, b: BaseException | None) -> bool:
    return a is not None and b is not None and type(a) is type(b) and short_str(a, 10_000) == short_str(b, 10_000)


class Diagnoser:
    """Runs each mistake's wrong version on a case (once) and says which one the learner's result matches."""

    def __init__(self, mistakes: Sequence[Mistake], in_place: int | None, names: list[str]) -> None:
        self.mistakes, self.in_place, self.names = list(mistakes), in_place, names
        self._runs: dict[tuple[int, str], Run] = {}

    def wrong_run(self, mistake: Mistake, case: Case) -> Run:
        key = (id(case), mistake.name)
        if key not in self._runs:
            self._runs[key] = invoke(mistake.wrong, case, self.in_place, self.names, learner=False)
        return self._runs[key]

    def candidates(self, case: Case) -> Iterator[tuple[Mistake, Run]]:
        for mistake in self.mistakes:
            try:
                applies = bool(mistake.applies_when(case))
            except Exception:  # noqa: BLE001
                applies = False
            if applies:
                yield mistake, self.wrong_run(mistake, case)

    def full_match(self, case: Case, learner: Run, expected: Any, atol: float, rtol: float) -> Mistake | None:
        for mistake, wrong in self.candidates(case):
            if wrong.error is not None:
                if _same_error(learner.error, wrong.error):
                    return mistake
                continue
            if learner.error is not None:
                continue
            if mistake.match == "shape":
                wrong_shapes = shapes_of(wrong.result)
                if wrong_shapes != shapes_of(expected) and shapes_of(learner.result) == wrong_shapes:
                    return mistake
            elif not same(wrong.result, expected, atol, rtol) and same(learner.result, wrong.result, atol, rtol):
                return mistake
        return None

    def part_match(self, case: Case, learner: Run, expected: Any, n: int, atol: float,
                   rtol: float) -> Mistake | None:
        """A mistake that explains the first part of a tuple result that differs from the reference."""
        got = _parts(learner.result, n)
        if learner.error is not None or got is None:
            return None
        for i in range(n):
            if same(got[i], expected[i], atol, rtol):
                continue
            for mistake, wrong in self.candidates(case):
                parts = _parts(wrong.result, n)
                if mistake.match == "values" and parts is not None and not same(parts[i], expected[i], atol, rtol) \
                        and same(got[i], parts[i], atol, rtol):
                    return mistake
            return None
        return None


def _error_message(error: BaseException, what: str, case: str, tips: Sequence[tuple[str, str]]) -> str:
    text = f"{type(error).__name__}: {short_str(error, 300)}"
    tip = next((t for needle, t in tips if needle in text), "")
    return f"case '{case}': {what} raised {text.rstrip('.')}.{' ' + tip if tip else ''}"


def judge(run: Run, case: Case, expected: Any, what: str, outputs: Sequence[str] | None, in_place: int | None,
          names: list[str], diagnoser: Diagnoser, tips: Sequence[tuple[str, str]], atol: float,
          rtol: float) -> Verdict:
    """The verdict on one case, from the first problem found in the order of the module docstring; a failure
    names the listed mistake the learner's result matches, if any (the whole result, else its first wrong part)."""

    def fail(kind: str | None, message: str) -> Verdict:
        mistake = diagnoser.full_match(case, run, expected, atol, rtol)
        if mistake is None and outputs and len(outputs) > 1:
            mistake = diagnoser.part_match(case, run, expected, len(outputs), atol, rtol)
        return Verdict(case, False, kind, message, mistake, run)

    if run.error is not None:
        return fail("raised", _error_message(run.error, what, case.name, tips))
    if run.mutated:
        listed = ", ".join(f"`{n}`" for n in run.mutated)
        return Verdict(case, False, "mutated_input",
                       f"case '{case.name}': {what} changed its inputs in place ({listed}; e.g. `q /= ...` or "
                       "`x.transpose_(...)`): compute new tensors and leave the inputs as they are")
    if in_place is not None:
        arg = names[in_place]
        if unchanged(case.args[in_place], run.result) and not same(run.result, expected, atol, rtol):
            if run.returned is not None and same(run.returned, expected, atol, rtol):
                return Verdict(case, False, "modified_copy",
                               f"case '{case.name}': you returned a modified copy, but `{arg}` itself must change "
                               "(in place): write into it with indexing (`x[...] = ...`), `.copy_(...)` or an "
                               "in-place method ending in `_`, such as `.masked_fill_`")
            return fail("not_in_place", f"case '{case.name}': `{arg}` is unchanged after {what}; the exercise "
                                        "edits it in place")
    input_dtypes = [a.dtype for a in (*case.args, *case.kwargs.values()) if isinstance(a, Tensor)]
    problem = _structure_problem(run.result, expected, what, outputs, case.name, atol, rtol, input_dtypes)
    if problem is not None:
        return fail(*problem)
    value = _values_problem(run.result, expected, what, outputs, case.name, atol, rtol)
    if value is not None:
        return fail(*value)
    return Verdict(case, True, run=run)

