"""Exercise checkers: ``course_lib.checks.lessonNN.check_...(your_answer)`` shows a pass, a specific
hint, or "not done yet", and never raises because of your code. One module per lesson, loaded on
first use. How a checker is built (named mistakes as data): see ``course_lib/checks/_harness.py``."""
import importlib
import re

from ._answers import as_float, as_int, as_shape, check_answer, expect_int, expect_shape
from ._cases import Case, Mistake, call_learner
from ._compare import compare, same
from ._harness import hidden_cases, run_cases
from ._results import GENERIC_MISTAKES, CheckResult, Hint, NotDone, checker, isolated_state

__all__ = ["GENERIC_MISTAKES", "Case", "CheckResult", "Hint", "Mistake", "NotDone", "as_float", "as_int", "as_shape",
    "call_learner", "check_answer", "checker", "compare", "expect_int", "expect_shape", "hidden_cases",
    "isolated_state", "run_cases", "same",
]


def __getattr__(name: str):  # PEP 562: `checks.lesson03` imports checks/lesson03.py
    if re.fullmatch(r"lesson\d\d", name):
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
