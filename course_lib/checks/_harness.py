"""The machinery behind every exercise checker: named mistakes as data.

A checker runs the learner's code on a few cases, compares with a reference, and returns a
``CheckResult`` that Jupyter shows as one line (``✅/❌/⏳ Exercise N · what: message``) and that a
grader reads as data (``status``, ``message``, ``mistake``, ``case``; ``to_dict()``). It never raises
because of the learner's code, never passes a wrong answer, and names a mistake only with evidence:
the learner's output equals that mistake's output on a case where it differs from the reference.

Converting a lesson (worked examples: ``lesson01.py``, ``lesson02.py``)
--------------------------------------------------------------------------
For a "write a function" exercise, write four things next to each other::

    def attention_reference(q, k, v):               # 1. the reference, with the exercise's own signature
        w = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1]), dim=-1)
        return w @ v, w

    def _qkv(*shapes, seed, dtype=torch.float32):    # inputs built once, from their own seeded generator
        gen = torch.Generator().manual_seed(seed)
        return tuple(torch.randn(*s, generator=gen, dtype=dtype) for s in shapes)

    ATTENTION_CASES = [                             # 2. cases: a name the hint quotes, the arguments
        Case("T_q != T_k", _qkv((2, 3, 5), (2, 5, 5), (2, 5, 4), seed=2)),
        Case("batch of 1", _qkv((1, 4, 8), (1, 6, 8), (1, 6, 8), seed=1)),
        Case("float64", _qkv((2, 5, 16), (2, 5, 16), (2, 5, 3), seed=3, dtype=torch.float64),
             info={"d_k": 16}),                     # info: numbers a hint may quote as {d_k}
    ]

    ATTENTION_MISTAKES = [                          # 3. each typical mistake: a name, its hint, a wrong version
        Mistake("no_scale", "divide the scores by sqrt(d_k) before the softmax",
                lambda q, k, v: attention_reference(q * math.sqrt(q.shape[-1]), k, v)),
        Mistake("transpose_1_2", "use k.transpose(-2, -1)", lambda q, k, v: ...,
                applies_when=lambda case: case.args[0].ndim >= 4),   # default: every case
    ]

    @checker("Exercise 1 · attention(q, k, v)")     # 4. a few lines; the title is "Exercise N · <what>"
    def check_attention(attention):
        return run_cases(attention, reference=attention_reference, cases=ATTENTION_CASES,
                         mistakes=ATTENTION_MISTAKES, what="attention(q, k, v)", outputs=("output", "attn_weights"),
                         passed="matches F.scaled_dot_product_attention on ...")

    # at the end of the module, for the tests (one parametrised test per exercise):
    MISTAKES = {"check_attention": ATTENTION_MISTAKES}
    CASES = {"check_attention": ATTENTION_CASES}
    REFERENCES = {"check_attention": attention_reference}

Every hint the old checker gave becomes a named ``Mistake`` whose ``wrong`` produces that wrong answer;
keep every old case (same seeds, so stored notebook outputs do not move). Hints that only depended on a
wrong *shape* (e.g. "[B, T, H, d_head]: add .transpose(1, 2)") become ``Mistake``s whose wrong version
has that shape; the harness's own messages cover wrong types, dtypes and in-place changes, so drop
those checks from the lesson.

``run_cases`` calls the learner on clones of each case's arguments and, on its own, reports: None or a
``raise NotImplementedError`` stub ("not done"), a non-function, an exception (with the exercise's
``error_tips``), an input changed in place, a result of the wrong type (list, numpy, a tuple where one
tensor is asked, the parts of a pair swapped), shape or dtype, NaN, code that works only for a batch
of 1 or only for square shapes (T_q == T_k), and, for ``in_place=`` exercises, a modified copy
returned while the argument is left unchanged. The tolerance follows the reference's dtype (float16
and bfloat16 get a loose one; ``Case(atol=..., rtol=...)`` overrides). A mistake whose output equals the
reference's on a case is skipped there automatically, so ``applies_when`` is only needed where the
wrong version cannot run or would mislead. ``Mistake(..., match="shape")`` names a mistake by the
shape of its result alone (e.g. heads left unmerged). A wrong version that raises is matched when the
learner's code raises the same error.

For a "predict a value" exercise, use ``check_answer``: ints accept ``3``, ``3.0`` or a numpy scalar alike
(a tensor gets the hint ".item()"); shapes accept tuples, lists and ``torch.Size``; each ``Mistake.wrong`` is the wrong
value (or a function returning it)::

    check_answer(predicted_params, 1_050_624, what="predicted_params", mistakes=PARAM_MISTAKES,
                 template="{got:,} is not it: {hint}", otherwise="count the four nn.Linear layers")

Checkers written the old way (``call_learner``, ``expect_tensor``, ``compare``, ``raise Hint(...)``)
keep working; ``Hint(message, mistake="name", case="case name")`` adds the structured fields.
Where an exercise promises "any float dtype", add a float16 ``Case``; where it edits an argument in
place, pass ``in_place=<index>``.

Tests (tests/test_checks_lesson01.py is the model): one parametrised test over ``MISTAKES`` (running the
checker on ``mistake.wrong`` must fail with ``result.mistake == mistake.name``: ``assert_named``), the
solution and correct alternatives pass, and the generic classes via tests/checker_helpers.py
(``returns_numpy``, ``casts_to``, ``mutates_input``, ``batch_one_only``, ``weird_answers``, ...).
"""
from __future__ import annotations

import copy
import functools
import inspect
import math
import numbers
import random
import traceback
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from .._checks import shape_str

Status = Literal["pass", "fail", "not_done"]
_ICONS = {"pass": "✅", "fail": "❌", "not_done": "⏳"}

# Names of the generic mistake classes the harness diagnoses for every exercise.
GENERIC_MISTAKES = (
    "not_a_function", "raised", "mutated_input", "wrong_type", "swapped_outputs", "wrong_shape", "wrong_dtype",
    "nan", "batch_one_only", "square_only", "modified_copy", "not_in_place",
)


class Hint(Exception):
    """Raised inside a checker to stop with a specific, friendly message (``mistake``: its name, if known)."""

    def __init__(self, message: str = "", *, mistake: str | None = None, case: str | None = None) -> None:
        super().__init__(message)
        self.mistake, self.case = mistake, case


class NotDone(Exception):
    """Raised inside a checker when the exercise has not been attempted yet."""


@dataclass(frozen=True)
class CheckResult:
    """Outcome of one check: one line in a notebook, data for tests and graders."""

    title: str
    status: Status
    message: str
    mistake: str | None = None  # a Mistake's name or a generic class (GENERIC_MISTAKES); None if undiagnosed
    case: str | None = None  # the case the verdict is about

    @property
    def passed(self) -> bool:
        return self.status == "pass"

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "passed": self.passed}

    def __str__(self) -> str:
        return f"{_ICONS[self.status]} {self.title}: {self.message}"

    __repr__ = __str__


# --- isolation --------------------------------------------------------------------------------------

@contextmanager
def isolated_state(seed: int = 0) -> Iterator[None]:
    """Run a block with fixed RNG seeds, then restore what the learner had: the global RNGs of torch (CPU,
    and CUDA when already initialised), numpy and ``random``, the thread count, grad mode, default dtype."""
    torch_state = torch.get_rng_state()
    cuda_states = torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else None
    np_state, py_state = np.random.get_state(), random.getstate()
    threads, grad, dtype = torch.get_num_threads(), torch.is_grad_enabled(), torch.get_default_dtype()
    try:
        torch.default_generator.manual_seed(seed)  # CPU only: torch.manual_seed would also queue a CUDA seed
        np.random.seed(seed)
        random.seed(seed)
        yield
    finally:
        torch.set_rng_state(torch_state)
        if cuda_states is not None:
            torch.cuda.set_rng_state_all(cuda_states)
        np.random.set_state(np_state)
        random.setstate(py_state)
        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)
        torch.set_grad_enabled(grad)
        torch.set_default_dtype(dtype)


def checker(title: str) -> Callable[[Callable[..., str]], Callable[..., CheckResult]]:
    """Turn a function that returns a pass message (or raises ``Hint``/``NotDone``) into a checker that
    always returns a ``CheckResult`` and leaves the learner's global state as it found it."""

    def wrap(check: Callable[..., str]) -> Callable[..., CheckResult]:
        @functools.wraps(check)
        def run(*args: Any, **kwargs: Any) -> CheckResult:
            with isolated_state():
                return _run_check(title, check, args, kwargs)

        return run

    return wrap


def _run_check(title: str, check: Callable[..., str], args: tuple, kwargs: dict) -> CheckResult:
    try:
        message = check(*args, **kwargs)
    except NotDone as not_done:
        return CheckResult(title, "not_done", str(not_done) or "not done yet")
    except NotImplementedError:
        return CheckResult(title, "not_done", "not done yet: replace `raise NotImplementedError` with your code")
    except Hint as hint:
        return CheckResult(title, "fail", str(hint), hint.mistake, hint.case)
    except Exception as error:  # noqa: BLE001 - a checker must never crash a learner's notebook
        where = traceback.extract_tb(error.__traceback__)[-1]
        return CheckResult(
            title, "fail",
            f"the check itself hit {type(error).__name__}: {_short(error)} (line {where.lineno} of "
            f"{where.filename.rsplit('/', 1)[-1]}). Look at your answer's type and shape first.",
        )
    return CheckResult(title, "pass", str(message))


# --- cases and mistakes -------------------------------------------------------------------------------

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


# --- comparing anything, safely ---------------------------------------------------------------------

def tolerance(dtype: Any) -> tuple[float, float]:
    """(atol, rtol) suited to a result of ``dtype``."""
    if dtype == torch.float16:
        return 1e-2, 1e-2
    if dtype == torch.bfloat16:
        return 3e-2, 3e-2
    return 1e-5, 1e-4


def _short(value: Any, limit: int = 160) -> str:
    try:
        text = str(value)
    except Exception:  # noqa: BLE001
        text = f"<{type(value).__name__}>"
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def short_repr(value: Any, limit: int = 160) -> str:
    try:
        return _short(repr(value), limit)
    except Exception:  # noqa: BLE001
        return f"<{_type_name(value)}>"


def _type_name(value: Any) -> str:
    kind = type(value)
    return kind.__name__ if kind.__module__ == "builtins" else f"{kind.__module__.split('.')[0]}.{kind.__name__}"


def _float64(x: Tensor) -> Tensor:
    x = x.detach().to("cpu")
    return x.to(torch.complex128) if x.is_complex() else x.to(torch.float64)


def _tensor_close(a: Tensor, b: Tensor, atol: float, rtol: float) -> bool:
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
            return _tensor_close(a, b, atol, rtol)
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


def _shapes(value: Any) -> Any:
    """The shape signature of a result: a tensor's shape, a tuple of them, or the type's name."""
    if isinstance(value, Tensor):
        return tuple(value.shape)
    if isinstance(value, (tuple, list)) and 0 < len(value) <= 8:
        return tuple(_shapes(v) for v in value)
    return type(value).__name__


def _has_nan(x: Tensor) -> bool:
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


# --- calling the learner ------------------------------------------------------------------------------

def _clone(value: Any) -> Any:
    if isinstance(value, Tensor):
        return value.detach().clone().requires_grad_(value.requires_grad)
    if isinstance(value, tuple):
        return tuple(_clone(v) for v in value)
    if isinstance(value, list):
        return [_clone(v) for v in value]
    if isinstance(value, dict):
        return {k: _clone(v) for k, v in value.items()}
    if isinstance(value, (numbers.Number, str, bytes, type(None))):
        return value
    try:
        return copy.deepcopy(value)
    except Exception:  # noqa: BLE001
        return value


def _unchanged(before: Any, after: Any) -> bool:
    if isinstance(before, Tensor):
        if not isinstance(after, Tensor) or before.shape != after.shape or before.dtype != after.dtype:
            return False
        if before.is_floating_point():
            return bool(((before == after) | (before.isnan() & after.isnan())).all())
        return bool(torch.equal(before, after))
    if isinstance(before, (tuple, list)):
        return len(before) == len(after) and all(_unchanged(b, a) for b, a in zip(before, after))
    if isinstance(before, dict):
        return before.keys() == after.keys() and all(_unchanged(before[k], after[k]) for k in before)
    if isinstance(before, torch.nn.Module):
        return _unchanged(before.state_dict(), after.state_dict())
    if isinstance(before, (numbers.Number, str, bytes)):  # items of a list the learner may have edited
        return type(before) is type(after) and (before == after or before != before and after != after)
    return True


def require_function(fn: Any, what: str) -> None:
    """``NotDone`` for None, a ``Hint`` for something that is not a function."""
    if fn is None:
        raise NotDone(f"not done yet: {what} is still None")
    if not callable(fn):
        raise Hint(f"{what} should be a function, but got a {_type_name(fn)}", mistake="not_a_function")


def call_learner(fn: Any, *args: Any, what: str = "your function", **kwargs: Any) -> Any:
    """Call the learner's ``fn``; turn its exceptions into hints (``NotImplementedError`` into "not done")."""
    require_function(fn, what)
    try:
        return fn(*args, **kwargs)
    except NotImplementedError:
        raise
    except Exception as error:  # noqa: BLE001
        raise Hint(f"{what} raised {type(error).__name__}: {_short(error, 300)}", mistake="raised") from None


@dataclass
class _Run:
    """What one call produced: a result, or an error."""

    result: Any = None
    error: BaseException | None = None
    mutated: tuple[str, ...] = ()
    returned: Any = None  # for in-place exercises: what the function returned


def _arg_names(reference: Callable[..., Any], n: int) -> list[str]:
    try:
        params = [p.name for p in inspect.signature(reference).parameters.values()
                  if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    except (TypeError, ValueError):
        params = []
    return (params + [f"argument {i + 1}" for i in range(len(params), n)])[:n]


def _invoke(fn: Callable[..., Any], case: Case, in_place: int | None, names: list[str], *, learner: bool) -> _Run:
    args, kwargs = _clone(case.args), _clone(dict(case.kwargs))
    try:
        result = fn(*args, **kwargs)
    except NotImplementedError:
        if learner:
            raise
        return _Run(error=NotImplementedError())
    except (Exception, SystemExit) as error:  # noqa: BLE001 - whatever the learner's code does
        return _Run(error=error)
    mutated = tuple(names[i] for i, (before, after) in enumerate(zip(case.args, args))
                    if i != in_place and not _unchanged(before, after))
    mutated += tuple(k for k in case.kwargs if not _unchanged(case.kwargs[k], kwargs[k]))
    if in_place is not None:
        return _Run(result=args[in_place], mutated=mutated, returned=result)
    return _Run(result=result, mutated=mutated)


# --- one case: what is wrong with the learner's result ------------------------------------------------

@dataclass
class _Verdict:
    case: Case
    ok: bool
    kind: str | None = None  # generic class of the problem
    message: str = ""
    mistake: Mistake | None = None
    run: _Run | None = None


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
            return "wrong_type", f"{what} should return {pair} {form}; got {_type_name(got)}{size}"
        shapes = [_shapes(p) for p in parts]
        wanted = [_shapes(e) for e in expected]
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
            return "wrong_type", f"{label} should {verb} {_type_name(got)}{extra}"
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
        return "wrong_type", f"{label} should return a {_type_name(expected)}, but returned {_type_name(got)}"
    return None


def _values_problem(got: Any, expected: Any, what: str, outputs: Sequence[str] | None, case: str,
                    atol: float, rtol: float) -> tuple[str | None, str] | None:
    pairs = (list(zip(outputs, got, expected)) if outputs and len(outputs) > 1 else [(None, got, expected)])
    for name, part, exp in pairs:
        label = name or what
        if isinstance(exp, Tensor) and isinstance(part, Tensor):
            if not _tensor_close(part, exp, atol, rtol):
                kind = "nan" if _has_nan(part) and not _has_nan(exp) else None
                return kind, describe_difference(part, exp, label, case)
        elif isinstance(exp, numbers.Integral) and not isinstance(exp, bool):
            if as_int(part) != exp:
                return None, f"{label} is {_short(part, 40)} in case '{case}'; expected {exp}"
        elif isinstance(exp, numbers.Real) and not isinstance(exp, bool):
            value = as_float(part)
            if value is None or not math.isclose(value, float(exp), rel_tol=rtol, abs_tol=atol):
                return None, f"{label} is {_short(part, 40)} in case '{case}'; expected {exp:.4g}"
        elif not same(part, exp, atol, rtol):
            return None, f"{label} differs from the reference in case '{case}': yours {_short(part, 80)}"
    return None


def _same_error(a: BaseException | None, b: BaseException | None) -> bool:
    return a is not None and b is not None and type(a) is type(b) and _short(a, 10_000) == _short(b, 10_000)


class _Diagnoser:
    """Runs each mistake's wrong version on a case (once) and says which one the learner's result matches."""

    def __init__(self, mistakes: Sequence[Mistake], in_place: int | None, names: list[str]) -> None:
        self.mistakes, self.in_place, self.names = list(mistakes), in_place, names
        self._runs: dict[tuple[int, str], _Run] = {}

    def wrong_run(self, mistake: Mistake, case: Case) -> _Run:
        key = (id(case), mistake.name)
        if key not in self._runs:
            self._runs[key] = _invoke(mistake.wrong, case, self.in_place, self.names, learner=False)
        return self._runs[key]

    def candidates(self, case: Case) -> Iterator[tuple[Mistake, _Run]]:
        for mistake in self.mistakes:
            try:
                applies = bool(mistake.applies_when(case))
            except Exception:  # noqa: BLE001
                applies = False
            if applies:
                yield mistake, self.wrong_run(mistake, case)

    def full_match(self, case: Case, learner: _Run, expected: Any, atol: float, rtol: float) -> Mistake | None:
        for mistake, wrong in self.candidates(case):
            if wrong.error is not None:
                if _same_error(learner.error, wrong.error):
                    return mistake
                continue
            if learner.error is not None:
                continue
            if mistake.match == "shape":
                if _shapes(wrong.result) != _shapes(expected) and _shapes(learner.result) == _shapes(wrong.result):
                    return mistake
            elif not same(wrong.result, expected, atol, rtol) and same(learner.result, wrong.result, atol, rtol):
                return mistake
        return None

    def part_match(self, case: Case, learner: _Run, expected: Any, n: int, atol: float,
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
    text = f"{type(error).__name__}: {_short(error, 300)}"
    tip = next((t for needle, t in tips if needle in text), "")
    return f"case '{case}': {what} raised {text.rstrip('.')}.{' ' + tip if tip else ''}"


def run_cases(
    learner_fn: Any,
    *,
    reference: Callable[..., Any],
    cases: Sequence[Case],
    mistakes: Sequence[Mistake] = (),
    what: str,
    outputs: Sequence[str] | None = None,
    in_place: int | None = None,
    error_tips: Sequence[tuple[str, str]] = (),
    passed: str | None = None,
) -> str:
    """Run ``learner_fn`` and ``reference`` on every case and return ``passed`` if all agree; otherwise raise
    ``Hint`` (with ``mistake`` and ``case``) for the most specific problem found, ``NotDone`` for a stub.

    ``outputs`` names the parts of a tuple result, e.g. ``("output", "attn_weights")``; ``in_place`` is the
    index of the argument the exercise edits in place (its state after the call is the result);
    ``error_tips`` pairs a substring of ``"ErrorType: message"`` with a tip added when the learner's code
    raises it."""
    require_function(learner_fn, what)
    names = _arg_names(reference, max((len(c.args) for c in cases), default=0))
    diagnoser = _Diagnoser(mistakes, in_place, names)
    verdicts: list[_Verdict] = []
    for case in cases:
        ref = _invoke(reference, case, in_place, names, learner=False)
        if ref.error is not None:
            raise ref.error  # a bug in the checker, reported as such by @checker
        expected = ref.result
        atol, rtol = tolerance(_first_dtype(expected))
        atol, rtol = case.atol if case.atol is not None else atol, case.rtol if case.rtol is not None else rtol
        run = _invoke(learner_fn, case, in_place, names, learner=True)
        verdicts.append(_judge(run, case, expected, what, outputs, in_place, names, diagnoser, error_tips,
                               atol, rtol))
    failures = [v for v in verdicts if not v.ok]
    if not failures:
        return passed or f"matches the reference on all {len(cases)} cases"
    named = next((v for v in failures if v.mistake is not None), None)
    if named is not None:
        return _raise_named(named, failures)
    pattern = _pattern(verdicts, "batch", "batch_one_only") or _pattern(verdicts, "square", "square_only")
    if pattern is not None:
        raise pattern
    first = failures[0]
    raise Hint(first.message, mistake=first.kind, case=first.case.name)


def _first_dtype(value: Any) -> Any:
    if isinstance(value, Tensor):
        return value.dtype
    if isinstance(value, (tuple, list)):
        return next((v.dtype for v in value if isinstance(v, Tensor)), None)
    return None


def _raise_named(verdict: _Verdict, failures: list[_Verdict]) -> str:
    assert verdict.mistake is not None
    case = verdict.case
    error = verdict.run.error if verdict.run is not None else None
    raised = f" (your code raised {type(error).__name__} here)" if error is not None else ""
    raise Hint(f"case '{case.name}': {verdict.mistake.hint_for(case)}{raised}", mistake=verdict.mistake.name,
               case=case.name)


_PATTERN_KINDS = {None, "raised", "wrong_shape", "nan"}


def _inner(verdict: _Verdict) -> str:
    """A verdict's message without its trailing period (and without a tip after a raised error)."""
    message = verdict.message
    if verdict.kind == "raised" and verdict.run is not None and verdict.run.error is not None:
        message = f"case '{verdict.case.name}': {type(verdict.run.error).__name__}: {_short(verdict.run.error, 200)}"
    return message.rstrip(".")


def _pattern(verdicts: list[_Verdict], trait: str, name: str) -> Hint | None:
    """Right on every batch-of-1 (square) case, wrong on every other one, for reasons of shape or value."""
    def key(v: _Verdict) -> Any:
        return v.case.batch_size == 1 if trait == "batch" else v.case.is_square

    if any(key(v) is None for v in verdicts):
        return None
    good, bad = [v for v in verdicts if key(v)], [v for v in verdicts if not key(v)]
    if not good or not bad or not all(v.ok for v in good) or not all(not v.ok and v.kind in _PATTERN_KINDS
                                                                       for v in bad):
        return None
    first = bad[0]
    if trait == "batch":
        text = (f"your code is right for a batch of 1 (case '{good[0].case.name}') but not for a batch of "
                f"{first.case.batch_size}: {_inner(first)}. Keep the batch axis: no [0], .squeeze() or a fixed "
                "batch size; use x.shape, -1 in reshape, and ops that batch over leading dims (@, .transpose(-2, -1))")
    else:
        text = (f"your code is right when the lengths are equal (case '{good[0].case.name}') but not when they "
                f"differ: {_inner(first)}. Somewhere a query length and a key length (or a length and a width) are "
                "used interchangeably: check each shape and transpose")
    return Hint(text, mistake=name, case=first.case.name)


def _judge(run: _Run, case: Case, expected: Any, what: str, outputs: Sequence[str] | None, in_place: int | None,
           names: list[str], diagnoser: _Diagnoser, tips: Sequence[tuple[str, str]], atol: float,
           rtol: float) -> _Verdict:
    def fail(kind: str | None, message: str) -> _Verdict:
        mistake = diagnoser.full_match(case, run, expected, atol, rtol)
        if mistake is None and outputs and len(outputs) > 1:
            mistake = diagnoser.part_match(case, run, expected, len(outputs), atol, rtol)
        return _Verdict(case, False, kind, message, mistake, run)

    if run.error is not None:
        return fail("raised", _error_message(run.error, what, case.name, tips))
    if run.mutated:
        listed = ", ".join(f"`{n}`" for n in run.mutated)
        return _Verdict(case, False, "mutated_input",
                        f"case '{case.name}': {what} changed its inputs in place ({listed}; e.g. `q /= ...` or "
                        "`x.transpose_(...)`): compute new tensors and leave the inputs as they are")
    if in_place is not None:
        arg = names[in_place]
        if _unchanged(case.args[in_place], run.result) and not same(run.result, expected, atol, rtol):
            if run.returned is not None and same(run.returned, expected, atol, rtol):
                return _Verdict(case, False, "modified_copy",
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
    return _Verdict(case, True, run=run)


# --- predictions: a value, not a function ---------------------------------------------------------

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


# --- the helpers of checkers written the old way (lessons not yet converted) ------------------------

def expect_tensor(value: Any, what: str, expected_shape: Sequence[int] | torch.Size | None = None) -> Tensor:
    """Check that ``value`` is a tensor (of ``expected_shape``, if given) and return it."""
    if isinstance(value, tuple) and len(value) > 0 and all(isinstance(v, Tensor) for v in value):
        raise Hint(f"{what} returned a tuple of {len(value)} tensors; expected a single tensor", mistake="wrong_type")
    if not isinstance(value, Tensor):
        raise Hint(f"{what} should return a torch.Tensor, but returned {type(value).__name__}", mistake="wrong_type")
    if expected_shape is not None and tuple(value.shape) != tuple(expected_shape):
        raise Hint(f"{what} has shape {shape_str(value.shape)}; expected {shape_str(expected_shape)}",
                   mistake="wrong_shape")
    return value


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
        raise Hint(f"{what} has shape {shape_str(actual.shape)} in case '{case}'; expected {shape_str(expected.shape)}",
                   mistake="wrong_shape", case=case)
    if torch.isnan(actual).any() and not torch.isnan(expected).any():
        raise Hint(f"{what} contains NaN in case '{case}'; the reference has none", mistake="nan", case=case)
    if is_close(actual, expected, atol, rtol):
        return
    for wrong_output, hint in mistakes:
        if is_close(actual, wrong_output, atol, rtol):
            raise Hint(f"case '{case}': {hint}", case=case)
    gap = (actual.detach().double().cpu() - expected.detach().double().cpu()).abs().nan_to_num(float("inf"))
    worst = [int(i) for i in torch.unravel_index(gap.argmax(), gap.shape)]
    raise Hint(
        f"{what} differs from the reference in case '{case}': largest difference {gap.max().item():.3g} "
        f"at index {worst} (yours {actual.flatten()[gap.argmax()].item():.4g}, "
        f"expected {expected.flatten()[gap.argmax()].item():.4g})", case=case,
    )
