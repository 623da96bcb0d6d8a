"""What every "write a function" checker of every lesson must do, run over the registry each lesson's test
module (tests/test_checks_lessonNN.py) keeps:

- ``CHECKS``: {checker name: (checker, the solution)}, every function checker of the lesson;
- ``GENERIC``: [(checker name, wrong answer, generic class, phrase)], the generic mistake classes (wrong type or
  dtype, input changed in place, batch-of-1 or square-only code, ...) as they show in the lesson;
- ``ALTERNATIVES``: [(checker name, a correct answer written another way)];
- ``BROKEN`` (optional): [(checker name, broken answer, phrase)], crashes and wrong types with their phrases;
- ``learner_version(name, mistake)`` (optional): the answer a learner would write for a listed mistake, where the
  checker module stores it in another form;
- ``weird_versions(name, weird)`` (optional): the answers that return a weird result, where the lesson calls the
  learner's answer differently (with keyword arguments; a function that returns the step function).

The named mistakes, cases and references come from the checker module itself (``course_lib/checks/lessonNN.py``:
``MISTAKES``, ``CASES``, ``REFERENCES``). Each test id starts with the lesson, e.g. ``lesson01-check_attention``.
"""
from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from checker_helpers import (
    assert_diagnosed,
    assert_fail,
    assert_named,
    raise_not_implemented,
    raise_value_error,
    weird_answers,
)

from course_lib.checks import CheckResult

pytestmark = pytest.mark.usefixtures("single_thread")


def _lessons() -> dict[str, tuple[ModuleType, ModuleType]]:
    """lesson name -> (its test module, which keeps the registry; its checker module)."""
    lessons = {}
    for path in sorted(Path(__file__).parent.glob("test_checks_lesson*.py")):
        lesson = path.stem.removeprefix("test_checks_")
        lessons[lesson] = (importlib.import_module(path.stem), importlib.import_module(f"course_lib.checks.{lesson}"))
    return lessons


LESSONS = _lessons()
FUNCTION_CHECKERS = [pytest.param(lesson, name, id=f"{lesson}-{name}")
                     for lesson, (tests, _) in LESSONS.items() for name in tests.CHECKS]


def _rows(table: str) -> list[Any]:
    """The rows of one registry table, every lesson's, each as (lesson, *row)."""
    def label(row: tuple[Any, ...]) -> str:
        return next((x for x in row[2:] if isinstance(x, str)), getattr(row[1], "__name__", ""))

    return [pytest.param(lesson, *row, id=f"{lesson}-{row[0]}-{i}-{label(row)}")
            for lesson, (tests, _) in LESSONS.items() for i, row in enumerate(getattr(tests, table, []))]


def _check(lesson: str, name: str) -> Callable[..., CheckResult]:
    return LESSONS[lesson][0].CHECKS[name][0]


# --- the registries agree with the checker modules --------------------------------------------------------

def test_every_lesson_is_registered() -> None:
    assert list(LESSONS) == [f"lesson{n:02d}" for n in range(1, 14)]


@pytest.mark.parametrize("lesson", LESSONS)
def test_every_function_checker_exports_its_mistakes_cases_and_reference(lesson: str) -> None:
    tests, checks = LESSONS[lesson]
    assert set(checks.CASES) == set(checks.REFERENCES) == set(tests.CHECKS)
    assert all(checks.MISTAKES[name] for name in tests.CHECKS)
    assert all(len({m.name for m in ms}) == len(ms) for ms in checks.MISTAKES.values())
    rows = (*tests.GENERIC, *tests.ALTERNATIVES, *getattr(tests, "BROKEN", []))
    assert {name for name, *_ in rows} <= set(tests.CHECKS)


# --- every named mistake gets its own hint; the solution and the reference pass ---------------------------

@pytest.mark.parametrize(("lesson", "name", "mistake"), [
    pytest.param(lesson, name, mistake, id=f"{lesson}-{name}-{mistake.name}")
    for lesson, (tests, checks) in LESSONS.items() for name in tests.CHECKS for mistake in checks.MISTAKES[name]])
def test_every_named_mistake_gets_its_own_hint(lesson: str, name: str, mistake: Any) -> None:
    tests, checks = LESSONS[lesson]
    learner_version = getattr(tests, "learner_version", lambda name, mistake: mistake.wrong)
    result = _check(lesson, name)(learner_version(name, mistake))
    assert_named(result, mistake, checks.CASES[name])
    assert result.to_dict() == {"title": result.title, "status": "fail", "message": result.message,
                                "mistake": mistake.name, "case": result.case, "passed": False}  # for graders
    assert str(result).startswith(f"❌ {result.title}: ")


@pytest.mark.parametrize(("lesson", "name"), FUNCTION_CHECKERS)
def test_the_solution_and_the_reference_pass(lesson: str, name: str) -> None:
    tests, checks = LESSONS[lesson]
    check, solution = tests.CHECKS[name]
    for answer in (solution, checks.REFERENCES[name]):
        result = check(answer)
        assert result.passed and result.mistake is None, result
        assert str(result).startswith("✅") and result.to_dict()["passed"]


@pytest.mark.parametrize(("lesson", "name", "alternative"), _rows("ALTERNATIVES"))
def test_correct_alternatives_pass(lesson: str, name: str, alternative: Callable[..., Any]) -> None:
    result = _check(lesson, name)(alternative)
    assert result.passed, result


# --- generic mistake classes ----------------------------------------------------------------------------

@pytest.mark.parametrize(("lesson", "name", "wrong", "mistake", "phrase"), _rows("GENERIC"))
def test_generic_mistakes_are_diagnosed(lesson: str, name: str, wrong: Callable[..., Any], mistake: str,
                                        phrase: str) -> None:
    assert_diagnosed(_check(lesson, name)(wrong), mistake, phrase)


# --- robustness: unfinished, None, crashes, non-functions, broken and weird results ------------------------

@pytest.mark.parametrize(("lesson", "name"), FUNCTION_CHECKERS)
def test_robustness(lesson: str, name: str) -> None:
    check = _check(lesson, name)
    assert check(raise_not_implemented).status == "not_done"
    none = check(None)
    assert none.status == "not_done" and str(none).startswith("⏳")
    crash = check(raise_value_error)
    assert_fail(crash, "raised ValueError: boom")
    assert crash.mistake == "raised" and crash.case is not None
    assert_fail(check(lambda *args, **kwargs: [1, 2, 3]), "")
    assert_diagnosed(check(42), "not_a_function", "should be a function")


@pytest.mark.parametrize(("lesson", "name", "answer", "phrase"), _rows("BROKEN"))
def test_broken_answer_fails_without_raising(lesson: str, name: str, answer: Any, phrase: str) -> None:
    assert_fail(_check(lesson, name)(answer), phrase)


@pytest.mark.parametrize(("label", "weird"), weird_answers(), ids=[w[0] for w in weird_answers()])
@pytest.mark.parametrize(("lesson", "name"), FUNCTION_CHECKERS)
def test_weird_results_fail_without_raising(lesson: str, name: str, label: str, weird: Callable[..., Any]) -> None:
    weird_versions = getattr(LESSONS[lesson][0], "weird_versions", lambda name, weird: [weird])
    for answer in weird_versions(name, weird):
        result = _check(lesson, name)(answer)
        assert isinstance(result, CheckResult) and result.status == "fail", result
        assert "the check itself hit" not in result.message, result.message
