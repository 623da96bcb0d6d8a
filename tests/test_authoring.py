"""The exercise generator: answers become stubs, and bad markers are reported."""
from __future__ import annotations

import nbformat
import pytest

from course_lib.authoring import AuthoringError, make_exercise, strip_code_solutions, strip_markdown_solutions


def test_solution_in_a_function_becomes_a_raising_stub() -> None:
    source = "def f(x):\n    ### BEGIN SOLUTION\n    return x + 1\n    ### END SOLUTION\n\nprint('after')"
    assert strip_code_solutions(source) == (
        'def f(x):\n    # YOUR CODE HERE\n    raise NotImplementedError("exercise not done yet")\n\nprint(\'after\')'
    )


def test_top_level_solution_uses_its_stub_lines() -> None:
    source = "### BEGIN SOLUTION\n### STUB: answer = None  # your prediction\nanswer = 3\n### END SOLUTION"
    assert strip_code_solutions(source) == "answer = None  # your prediction"


def test_top_level_solution_without_stub_is_refused() -> None:
    with pytest.raises(AuthoringError, match="top-level solution region needs"):
        strip_code_solutions("### BEGIN SOLUTION\nanswer = 3\n### END SOLUTION", "nb, cell 2")


@pytest.mark.parametrize("source", ["### BEGIN SOLUTION\nx = 1", "x = 1\n### END SOLUTION"])
def test_unbalanced_markers_are_refused(source: str) -> None:
    with pytest.raises(AuthoringError, match="without"):
        strip_code_solutions(source)


def test_markdown_answers_become_stub_text() -> None:
    source = "Why?\n<!-- BEGIN SOLUTION -->\nBecause.\n<!-- END SOLUTION -->\nNext."
    assert strip_markdown_solutions(source) == "Why?\n*Write your answer here.*\nNext."
    custom = "<!-- BEGIN SOLUTION -->\n<!-- STUB: Solutions are elsewhere. -->\nHere.\n<!-- END SOLUTION -->"
    assert strip_markdown_solutions(custom) == "Solutions are elsewhere."


def test_make_exercise_clears_outputs_and_keeps_the_solution_intact() -> None:
    cell = nbformat.v4.new_code_cell("def f():\n    ### BEGIN SOLUTION\n    return 1\n    ### END SOLUTION")
    cell.outputs = [nbformat.v4.new_output("stream", text="1")]
    cell.execution_count = 4
    solution = nbformat.v4.new_notebook(cells=[cell])
    exercise = make_exercise(solution, "x.ipynb")
    assert exercise.cells[0].outputs == [] and exercise.cells[0].execution_count is None
    assert "raise NotImplementedError" in exercise.cells[0].source
    assert "return 1" in solution.cells[0].source, "the solution notebook is not modified"
    assert exercise.metadata["course"]["generated_from"] == "solutions/x.ipynb"
