"""The exercises as nbgrader assignments (course_lib.grading), and the hidden cases their tests add.

The last tests run the real tool (nbgrader, installed from the registry; CI sets COURSE_REQUIRE_NBGRADER=1 so it
cannot be skipped there): generate every assignment, then autograde one lesson for three submissions of one
student (the solutions, the untouched release, one typical mistake) and render the feedback.
"""
from __future__ import annotations

import importlib
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
import torch

import course_lib.checks  # noqa: F401
from course_lib import grading
from course_lib.checks import hidden_cases, lesson01

ROOT = Path(__file__).resolve().parents[1]
SOLUTIONS = sorted((ROOT / "solutions").glob("*.ipynb"))
LESSON_TESTS = sorted(Path(__file__).parent.glob("test_checks_lesson*.py"))


def _meta(cell) -> dict:
    return cell.metadata.get("nbgrader", {})


# --- the source notebooks -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("path", SOLUTIONS, ids=lambda p: p.stem)
def test_every_exercise_becomes_an_answer_cell_and_a_graded_test(path: Path) -> None:
    solution = nbformat.read(path, as_version=4)
    source = grading.assignment_notebook(solution, path.name)
    metas = [_meta(c) for c in source.cells]
    assert all(metas) and len({m["grade_id"] for m in metas}) == len(metas)  # every cell typed, ids unique
    answers = [c for c in source.cells if c.cell_type == "code" and _meta(c)["solution"]]
    tests = [c for c in source.cells if _meta(c)["grade"] and not _meta(c)["solution"]]
    assert len(answers) == sum("### BEGIN SOLUTION" in c.source for c in solution.cells if c.cell_type == "code")
    assert len(tests) == sum(grading.is_check_cell(c.source) for c in solution.cells if c.cell_type == "code") >= 3
    for test in tests:
        assert test.cell_type == "code" and _meta(test)["locked"] and _meta(test)["points"] == grading.POINTS_PER_CHECK
        assert "assert result.passed, result.message" in test.source
        assert "### BEGIN HIDDEN TESTS" in test.source and "with cl.checks.hidden_cases():" in test.source
    others = [c for c in source.cells if not _meta(c)["solution"] and not _meta(c)["grade"]]
    assert all(_meta(c)["locked"] for c in others)  # instructions, setup and demonstrations are read-only
    written = [c for c in source.cells if c.cell_type == "markdown" and _meta(c)["solution"]]
    assert all(_meta(c)["grade"] and _meta(c)["points"] == 0 for c in written)
    assert "<!-- BEGIN SOLUTION -->" not in "\n".join(c.source for c in source.cells)
    assert solution == nbformat.read(path, as_version=4)  # the solution notebook itself is left alone


def test_a_check_cell_becomes_a_test_with_the_code_before_it_kept() -> None:
    cell = "# NBVAL_CHECK_OUTPUT\nx = 3\ncl.checks.lesson06.check_step_work_prediction(a,\n    b)"
    assert grading.is_check_cell(cell) and not grading.is_check_cell("print(1)") and not grading.is_check_cell("(")
    graded = grading._graded_source(cell)
    assert graded.startswith("x = 3\nresult = cl.checks.lesson06.check_step_work_prediction(a,\n    b)\n")
    assert "NBVAL" not in graded
    compile(graded, "graded", "exec")


def test_stub_lines_become_a_hint_above_the_region() -> None:
    source = "### BEGIN SOLUTION\nguess = 3\n### STUB: guess = None  # a number\n### END SOLUTION"
    assert grading._answer_source(source).splitlines() == [
        "# Your answer, in place of: guess = None  # a number", "### BEGIN SOLUTION", "guess = 3",
        "### END SOLUTION"]


# --- hidden cases -------------------------------------------------------------------------------------------------

def _lesson01_solution(name: str):
    tests = importlib.import_module("test_checks_lesson01")
    return tests.CHECKS[name][1]


@pytest.mark.parametrize("stem", [p.stem for p in LESSON_TESTS])
def test_hidden_cases_pass_every_right_answer_and_no_named_mistake(stem: str) -> None:
    tests = importlib.import_module(stem)
    checks = importlib.import_module(f"course_lib.checks.{stem.removeprefix('test_checks_')}")
    for name, (check, solution) in tests.CHECKS.items():
        with hidden_cases():
            assert check(solution).passed, (name, check(solution))
            for row in getattr(tests, "ALTERNATIVES", []):
                if row[0] == name:
                    assert check(row[1]).passed, (name, row[1])
            for mistake in getattr(checks, "MISTAKES", {}).get(name, []):
                if callable(mistake.wrong):
                    assert not check(mistake.wrong).passed, (name, mistake.name)


def test_hidden_cases_catch_an_answer_that_only_knows_the_visible_ones() -> None:
    """A function that remembers the right outputs for the inputs it was shown passes the visible check and fails
    the hidden one (the same examples, batches reversed)."""
    solution, seen, sealed = _lesson01_solution("check_attention"), {}, []

    def remembers(q, k, v):
        key = tuple(tuple(t.shape) + tuple(t.detach().double().flatten().tolist()) for t in (q, k, v))
        if key not in seen:
            seen[key] = solution(q, k, v) if not sealed else \
                (torch.zeros(*q.shape[:-1], v.shape[-1], dtype=q.dtype), torch.zeros(*q.shape[:-1], k.shape[-2]))
        return seen[key]

    assert lesson01.check_attention(remembers).passed
    sealed.append(True)  # from now on it answers right only what it has already seen
    with hidden_cases():
        result = lesson01.check_attention(remembers)
    assert not result.passed and "batch reversed" in (result.case or ""), result
    assert lesson01.check_attention(remembers).passed  # outside the block, the visible cases again


# --- the real tool --------------------------------------------------------------------------------------------------

def _nbgrader_available() -> bool:
    return shutil.which("nbgrader", path=str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", "")) \
        is not None


needs_nbgrader = pytest.mark.skipif(not _nbgrader_available() and not os.environ.get("COURSE_REQUIRE_NBGRADER"),
                                    reason="nbgrader is not installed (pip install nbgrader)")


def _run(course: Path, *args: str) -> str:
    """``nbgrader ARGS`` in the course folder; its output (it must succeed)."""
    bin_dir = str(Path(sys.executable).parent)  # nbgrader calls alembic as a subprocess: it must be on PATH
    env = {**os.environ, "PATH": bin_dir + os.pathsep + os.environ.get("PATH", "")}
    done = subprocess.run([str(Path(bin_dir) / "nbgrader"), *args], cwd=course, env=env, capture_output=True,
                          text=True, timeout=900)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout + done.stderr


def _solution_lines(cell_source: str) -> list[str]:
    """The non-trivial lines inside a cell's solution regions."""
    lines, inside = [], False
    for line in cell_source.splitlines():
        if line.strip() in ("### BEGIN SOLUTION", "### END SOLUTION"):
            inside = line.strip() == "### BEGIN SOLUTION"
        elif inside and len(line.strip()) > 12 and not line.strip().startswith("###"):
            lines.append(line.strip())
    return lines


def _outside_solutions(cell_source: str) -> str:
    """The cell without its solution regions (and hidden tests)."""
    return re.sub(r"### BEGIN (SOLUTION|HIDDEN TESTS).*?### END (SOLUTION|HIDDEN TESTS)", "", cell_source, flags=re.S)


@needs_nbgrader
def test_every_lesson_generates_and_the_release_holds_no_solution(tmp_path: Path) -> None:
    written = grading.write_course(ROOT, tmp_path)
    assert len(written) == len(SOLUTIONS)
    for path in written:
        log = _run(tmp_path, "generate_assignment", path.parent.name)
        assert "WARNING" not in log and "ERROR" not in log, log
        release = nbformat.read(tmp_path / "release" / path.parent.name / path.name, as_version=4)
        shown = "\n".join(c.source for c in release.cells)
        assert "BEGIN HIDDEN TESTS" not in shown and "hidden_cases" not in shown
        source = nbformat.read(path, as_version=4)
        given = "\n".join(_outside_solutions(c.source) for c in source.cells)  # what the tasks themselves show
        for cell in source.cells:
            if cell.cell_type == "code":  # a solution line may appear in the release only where the task shows it
                leaked = [line for line in _solution_lines(cell.source) if line in shown and line not in given]
                assert not leaked, (path.name, leaked)
            elif _meta(cell).get("solution"):  # a written answer
                assert cell.source not in shown


def _scores(course: Path, assignment: str, student: str) -> tuple[float, float]:
    from nbgrader.api import Gradebook

    with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gradebook:
        submission = gradebook.find_submission(assignment, student)
        return submission.score, submission.max_score


def _submit(course: Path, assignment: str, student: str, notebook) -> None:
    folder = course / "submitted" / student / assignment
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    nbformat.write(notebook, folder / f"{assignment}.ipynb")


NO_SCALE = '''def attention(q, k, v):
    weights = torch.softmax(q @ k.transpose(-2, -1), dim=-1)  # the scale forgotten
    return weights @ v, weights'''


@needs_nbgrader
def test_autograde_full_marks_zero_and_a_named_mistake_with_its_hint(tmp_path: Path) -> None:
    assignment = "01_self_attention"
    grading.write_course(ROOT, tmp_path, lessons=[assignment])
    _run(tmp_path, "generate_assignment", assignment)
    source = nbformat.read(tmp_path / "source" / assignment / f"{assignment}.ipynb", as_version=4)
    release = nbformat.read(tmp_path / "release" / assignment / f"{assignment}.ipynb", as_version=4)
    n_tests = sum(1 for c in source.cells if _meta(c).get("grade") and not _meta(c).get("solution"))
    full = float(n_tests * grading.POINTS_PER_CHECK)

    _submit(tmp_path, assignment, "learner", source)  # every answer right
    _run(tmp_path, "autograde", assignment, "--student", "learner", "--create")
    assert _scores(tmp_path, assignment, "learner") == (full, full)

    _submit(tmp_path, assignment, "learner", release)  # nothing done: zero, and no crash
    _run(tmp_path, "autograde", assignment, "--student", "learner", "--force")
    assert _scores(tmp_path, assignment, "learner") == (0.0, full)

    mistaken = nbformat.read(tmp_path / "source" / assignment / f"{assignment}.ipynb", as_version=4)
    first_answer = next(c for c in mistaken.cells if _meta(c).get("solution") and c.cell_type == "code")
    first_answer.source = NO_SCALE
    _submit(tmp_path, assignment, "learner", mistaken)
    _run(tmp_path, "autograde", assignment, "--student", "learner", "--force")
    assert _scores(tmp_path, assignment, "learner") == (full - grading.POINTS_PER_CHECK, full)

    _run(tmp_path, "generate_feedback", assignment, "--student", "learner")
    feedback = (tmp_path / "feedback" / "learner" / assignment / f"{assignment}.html").read_text(encoding="utf-8")
    hint = next(m.hint for m in lesson01.MISTAKES["check_attention"] if m.name == "no_scale")
    assert re.sub(r"\s+", " ", hint.split(":")[0]) in re.sub(r"\s+", " ", feedback.replace("&quot;", '"'))
