"""The exercise notebooks as an nbgrader course: ``python -m course_lib.authoring nbgrader OUTDIR``.

nbgrader (the tool most teaching JupyterHubs use to release, collect and grade notebook assignments) reads
*source* notebooks whose cells carry its metadata, and uses the same ``### BEGIN SOLUTION`` / ``### END SOLUTION``
markers as this course's ``solutions/``. ``write_course`` turns each solution notebook into one assignment:

- a cell with a solution region: an **autograded answer** cell (nbgrader replaces the region with
  ``raise NotImplementedError()`` when it releases the assignment);
- a check cell (one that calls ``cl.checks.lessonNN.check_...``): an **autograded test** worth
  ``POINTS_PER_CHECK`` points, which asserts that the check passed, so a learner's ❌ becomes a failed test whose
  message is the checker's hint; its hidden part (``### BEGIN HIDDEN TESTS``) runs the same checker on more cases
  (``checks.hidden_cases``: every batch also reversed);
- a written answer (a markdown solution region): a **manually graded answer** cell worth 0 points, which the
  instructor reads; the question stays above it, read-only;
- every other cell: **read-only**.
"""
from __future__ import annotations

import ast
import copy
import re
from pathlib import Path
from typing import Any

__all__ = ["COURSE_ID", "POINTS_PER_CHECK", "assignment_notebook", "is_check_cell", "write_course"]

COURSE_ID = "cross-attention-from-scratch"
POINTS_PER_CHECK = 2
WRITTEN_ANSWER_POINTS = 0
CHECK_CALL = re.compile(r"^cl\.checks\.lesson\d\d\.check_\w+$")
NBVAL_MARKER = "# NBVAL_CHECK_OUTPUT"
CONFIG = f'''"""nbgrader configuration of the exercises (written by python -m course_lib.authoring nbgrader)."""
c = get_config()  # noqa: F821 (nbgrader provides it)
c.CourseDirectory.course_id = "{COURSE_ID}"
c.CourseDirectory.db_url = "sqlite:///gradebook.db"
# Some exercise notebooks load or train a small model: give each cell time (nbgrader's default is 30 s).
c.ExecutePreprocessor.timeout = 900
'''


def _check_call(node: ast.stmt) -> ast.Call | None:
    """The ``cl.checks.lessonNN.check_...(...)`` call that is this statement's whole expression, if it is one."""
    if isinstance(node, ast.Expr) and isinstance(node.value, ast.Call) and \
            CHECK_CALL.match(ast.unparse(node.value.func)):
        return node.value
    return None


def is_check_cell(source: str) -> bool:
    """True for a code cell whose last statement is a call of a lesson's checker."""
    try:
        body = ast.parse(source).body
    except SyntaxError:
        return False
    return bool(body) and _check_call(body[-1]) is not None


def _graded_source(source: str) -> str:
    """The check cell as an nbgrader test: the checker's result shown, asserted, then the hidden cases."""
    lines = [line for line in source.splitlines() if line.strip() != NBVAL_MARKER]
    body = ast.parse("\n".join(lines)).body
    call = _check_call(body[-1])
    assert call is not None
    before = "\n".join(lines[: body[-1].lineno - 1]).rstrip()
    call_text = ast.get_source_segment("\n".join(lines), call)
    test = [f"result = {call_text}",
            "print(result)",
            "assert result.passed, result.message  # the checker's hint is the test's message",
            "### BEGIN HIDDEN TESTS",
            "with cl.checks.hidden_cases():  # the same checks on more cases",
            f"    hidden = {call_text}",
            'assert hidden.passed, "hidden cases: " + hidden.message',
            "### END HIDDEN TESTS"]
    return (before + "\n" if before else "") + "\n".join(test)


def _answer_source(source: str) -> str:
    """A solution cell for nbgrader: each region's ``### STUB:`` lines (what the exercise version shows instead of
    the answer) become ``# Your answer, in place of: ...`` comments above the region, since nbgrader writes its own
    stub."""
    from .authoring import CODE_BEGIN, CODE_END, CODE_STUB, strip_code_solutions

    def keep(region: list[str], indent: str, where: str) -> list[str]:
        stubs = [s.strip()[len(CODE_STUB):].strip() for s in region if s.strip().startswith(CODE_STUB)]
        return [*(f"{indent}# Your answer, in place of: {stub}" for stub in stubs), indent + CODE_BEGIN,
                *(s for s in region if not s.strip().startswith(CODE_STUB)), indent + CODE_END]

    return strip_code_solutions(source, replace=keep)


def _nbgrader(grade_id: str, *, solution: bool = False, grade: bool = False, locked: bool = False,
              points: int | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"grade": grade, "grade_id": grade_id, "locked": locked, "schema_version": 3,
                            "solution": solution}
    if points is not None:
        meta["points"] = points
    return meta


def _split_written_answer(source: str) -> tuple[str, str] | None:
    """A markdown cell with one solution region -> (the question, the model answer), or None."""
    from .authoring import MD_BEGIN, MD_END, MD_STUB

    if MD_BEGIN not in source:
        return None
    before, rest = source.split(MD_BEGIN, 1)
    answer, after = rest.split(MD_END, 1)
    answer = "\n".join(line for line in answer.splitlines() if not MD_STUB.match(line)).strip()
    return (before + after).strip(), answer


def assignment_notebook(solution: Any, name: str) -> Any:
    """The nbgrader source notebook for one solution notebook (an ``nbformat`` notebook, not modified)."""
    import nbformat

    from .authoring import CODE_BEGIN, strip_markdown_solutions

    notebook = copy.deepcopy(solution)
    cells = []
    for index, cell in enumerate(notebook.cells):
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
        if index == 0 and cell.cell_type == "markdown":  # the title: the exercise version, read-only
            cell.source = strip_markdown_solutions(cell.source, f"{name} cell 0")
            cell.metadata["nbgrader"] = _nbgrader("title", locked=True)
        elif cell.cell_type == "code" and CODE_BEGIN in cell.source:
            cell.source = _answer_source(cell.source)
            cell.metadata["nbgrader"] = _nbgrader(f"answer-{index}", solution=True)
        elif cell.cell_type == "code" and is_check_cell(cell.source):
            cell.source = _graded_source(cell.source)
            cell.metadata["nbgrader"] = _nbgrader(f"check-{index}", grade=True, locked=True, points=POINTS_PER_CHECK)
        elif cell.cell_type == "markdown" and (parts := _split_written_answer(cell.source)) is not None:
            question, answer = parts
            cell.source = question
            cell.metadata["nbgrader"] = _nbgrader(f"question-{index}", locked=True)
            cells.append(cell)
            written = nbformat.v4.new_markdown_cell(answer)
            written.metadata["nbgrader"] = _nbgrader(f"written-{index}", solution=True, grade=True,
                                                     points=WRITTEN_ANSWER_POINTS)
            cells.append(written)
            continue
        else:
            cell.metadata["nbgrader"] = _nbgrader(f"cell-{index}", locked=True)
        cells.append(cell)
    notebook.cells = cells
    return notebook


def write_course(root: Path, outdir: Path, *, lessons: list[str] | None = None) -> list[Path]:
    """Write ``outdir/nbgrader_config.py`` and ``outdir/source/<lesson>/<lesson>.ipynb`` for each of
    ``root/solutions/*.ipynb`` (or only the ``lessons`` named, by file stem); return the notebooks written."""
    import nbformat

    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    (outdir / "nbgrader_config.py").write_text(CONFIG, encoding="utf-8")
    written = []
    for path in sorted((Path(root) / "solutions").glob("*.ipynb")):
        if lessons is not None and path.stem not in lessons:
            continue
        target = outdir / "source" / path.stem / path.name
        target.parent.mkdir(parents=True, exist_ok=True)
        nbformat.write(assignment_notebook(nbformat.read(path, as_version=4), path.name), target)
        written.append(target)
    return written
