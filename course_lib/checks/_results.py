"""What a checker returns and how it runs.

Inside a check, ``raise Hint(...)`` stops with a specific message and ``raise NotDone(...)`` says the exercise is
not attempted yet; ``@checker`` turns either, a pass message, or any crash into a ``CheckResult`` (one line in a
notebook, data for a grader), with the learner's global state (RNGs, threads, grad mode, default dtype) restored.
Also here: how a value is quoted in a message (``short_str``, ``short_repr``, ``type_name``).
"""
from __future__ import annotations

import functools
import random
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
import torch

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
            f"the check itself hit {type(error).__name__}: {short_str(error)} (line {where.lineno} of "
            f"{where.filename.rsplit('/', 1)[-1]}). Look at your answer's type and shape first.",
        )
    return CheckResult(title, "pass", str(message))



# --- quoting a value in a message ---------------------------------------------------------------

def short_str(value: Any, limit: int = 160) -> str:
    """``str(value)`` on one line, cut to ``limit`` characters; never raises."""
    try:
        text = str(value)
    except Exception:  # noqa: BLE001
        text = f"<{type(value).__name__}>"
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def short_repr(value: Any, limit: int = 160) -> str:
    """``repr(value)`` on one line, cut to ``limit`` characters; never raises."""
    try:
        return short_str(repr(value), limit)
    except Exception:  # noqa: BLE001
        return f"<{type_name(value)}>"


def type_name(value: Any) -> str:
    """``list`` for a builtin, ``numpy.ndarray`` (package.class) for anything else."""
    kind = type(value)
    return kind.__name__ if kind.__module__ == "builtins" else f"{kind.__module__.split('.')[0]}.{kind.__name__}"
