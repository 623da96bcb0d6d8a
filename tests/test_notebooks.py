"""Every notebook: the canonical setup cell, a working Colab bootstrap, the lesson shape, stored
outputs without errors, and exercises that are exactly what the generator makes from the solutions."""
from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
import types
from pathlib import Path

import nbformat
import pytest

import course_lib
from course_lib import authoring

ROOT = Path(__file__).resolve().parents[1]
LESSONS = sorted((ROOT / "notebooks").glob("*.ipynb"))
SOLUTIONS = sorted((ROOT / "solutions").glob("*.ipynb"))
EXERCISES = sorted((ROOT / "exercises").glob("*.ipynb"))
ALL = LESSONS + SOLUTIONS + EXERCISES


def read(path: Path) -> nbformat.NotebookNode:
    return nbformat.read(path, as_version=4)


def first_code_cell(path: Path) -> str:
    return next(c.source for c in read(path).cells if c.cell_type == "code")


def ids(paths: list[Path]) -> list[str]:
    return [str(p.relative_to(ROOT)) for p in paths]


def test_course_has_lessons_with_exercises() -> None:
    assert [p.name for p in LESSONS][:3] == [
        "00_setup_and_tour.ipynb", "01_self_attention.ipynb", "02_multi_head_attention.ipynb"
    ]
    assert len(SOLUTIONS) >= 2


@pytest.mark.parametrize("path", ALL, ids=ids(ALL))
def test_setup_cell_is_the_canonical_one(path: Path) -> None:
    assert first_code_cell(path) == authoring.setup_cell_source(course_lib.__version__)


@pytest.mark.parametrize("path", ALL, ids=ids(ALL))
def test_colab_badge_opens_this_notebook(path: Path) -> None:
    title = read(path).cells[0].source
    repository = authoring.REPOSITORY.split("github.com/")[1]
    relative = path.relative_to(ROOT).as_posix()
    assert f"colab.research.google.com/github/{repository}/blob/main/{relative}" in title


@pytest.mark.parametrize("path", LESSONS + SOLUTIONS, ids=ids(LESSONS + SOLUTIONS))
def test_stored_with_outputs_and_no_errors(path: Path) -> None:
    code = [c for c in read(path).cells if c.cell_type == "code" and c.source.strip()]
    assert all(c.execution_count is not None for c in code), "every code cell has been run"
    errors = [o for c in code for o in c.outputs if o.output_type == "error"]
    assert errors == []
    assert read(path).metadata["kernelspec"]["name"] == "python3"


@pytest.mark.parametrize("path", LESSONS, ids=ids(LESSONS))
def test_lesson_has_the_course_shape(path: Path) -> None:
    markdown = "\n".join(c.source for c in read(path).cells if c.cell_type == "markdown")
    assert re.search(r"^(#+ |\*\*).*what you will learn", markdown, re.I | re.M)
    assert re.search(r"run time", markdown, re.I)
    assert re.search(r"^#+ .*summary", markdown, re.I | re.M)
    questions = re.split(r"^#+ .*check your understanding", markdown, flags=re.I | re.M)
    assert len(questions) == 2, "one 'Check your understanding' section"
    assert questions[1].count("<details>") >= 3, "three questions, each with a hidden answer"
    if (ROOT / "solutions" / path.name).exists():
        assert f"../exercises/{path.name}" in markdown


@pytest.mark.parametrize("path", LESSONS + SOLUTIONS, ids=ids(LESSONS + SOLUTIONS))
def test_notebook_asserts_agreement_or_runs_checks(path: Path) -> None:
    code = "\n".join(c.source for c in read(path).cells if c.cell_type == "code")
    if path.parent.name == "notebooks" and not path.name.startswith("00"):
        assert "assert_close" in code, "lessons assert agreement with PyTorch's reference"
    if path.parent.name == "solutions":
        assert code.count("cl.checks.") >= 3, "every exercise ends with a check cell"


def test_every_solution_has_its_exercise_and_lesson() -> None:
    assert {p.name for p in SOLUTIONS} == {p.name for p in EXERCISES}
    assert {p.name for p in SOLUTIONS} <= {p.name for p in LESSONS}


@pytest.mark.parametrize("path", SOLUTIONS, ids=ids(SOLUTIONS))
def test_exercises_are_generated_from_solutions(path: Path) -> None:
    """Fails when exercises/ is not what `python -m course_lib.authoring exercises` would write."""
    expected = authoring.make_exercise(read(path), path.name)
    actual = read(ROOT / "exercises" / path.name)
    assert [(c.cell_type, c.source) for c in actual.cells] == [(c.cell_type, c.source) for c in expected.cells]
    stripped = "\n".join(c.source for c in actual.cells)
    assert "### BEGIN SOLUTION" not in stripped and "<!-- BEGIN SOLUTION -->" not in stripped


@pytest.mark.parametrize("path", EXERCISES, ids=ids(EXERCISES))
def test_untouched_exercises_run_and_say_not_done(path: Path) -> None:
    outputs = [o for c in read(path).cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    shown = "\n".join(str(o.get("data", {}).get("text/plain", "")) + o.get("text", "") for o in outputs)
    assert shown.count("⏳") >= 3 and "✅" not in shown


# --- the Colab bootstrap in the setup cell ---------------------------------------------------------

def run_setup_cell(monkeypatch: pytest.MonkeyPatch, *, on_colab: bool, installed: bool) -> list[list[str]]:
    """Execute the setup cell with subprocess.run recorded (the install succeeds); return the commands it would
    run."""
    calls: list[list[str]] = []

    def record(cmd: list[str], **kwargs: object) -> subprocess.CompletedProcess:
        calls.append(list(cmd))
        return subprocess.CompletedProcess(cmd, 0, "", "")

    monkeypatch.setattr(subprocess, "run", record)
    if on_colab:
        monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
    else:
        monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "course_lib" and not installed else real_find_spec(name, *a))
    namespace: dict = {}
    exec(compile(authoring.setup_cell_source(course_lib.__version__), "setup-cell", "exec"), namespace)
    assert str(namespace["device"]) in ("cpu", "cuda")
    return calls


def test_setup_cell_installs_course_lib_at_the_tag_on_colab(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = run_setup_cell(monkeypatch, on_colab=True, installed=False)
    assert len(calls) == 1
    command = calls[0]
    assert command[1:4] == ["-m", "pip", "install"]
    assert command[-1] == f"course_lib @ git+{authoring.REPOSITORY}@v{course_lib.__version__}"
    arguments = command[1:]  # command[0] is the interpreter, whose path may contain "torch" (/opt/torch/...)
    assert not any(re.search(r"\btorch\b", part) for part in arguments), "never reinstalls Colab's torch"
    assert "--upgrade" not in command and "-U" not in command


def test_setup_cell_installs_nothing_when_course_lib_is_there(monkeypatch: pytest.MonkeyPatch) -> None:
    assert run_setup_cell(monkeypatch, on_colab=True, installed=True) == []


def test_setup_cell_installs_nothing_outside_colab(monkeypatch: pytest.MonkeyPatch) -> None:
    assert run_setup_cell(monkeypatch, on_colab=False, installed=False) == []


def test_setup_cell_seeds_so_runs_repeat(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    run_setup_cell(monkeypatch, on_colab=False, installed=True)
    first = torch.rand(3)
    run_setup_cell(monkeypatch, on_colab=False, installed=True)
    assert torch.equal(first, torch.rand(3))


def test_package_requires_no_exact_or_upper_pins() -> None:
    text = (ROOT / "pyproject.toml").read_text()
    deps = re.search(r"dependencies = \[(.*?)\]", text, re.S).group(1)
    assert "torch>=" in deps and "ipywidgets>=7.7" in deps
    assert not re.search(r"==|<|~=", deps)


def test_wheel_ships_every_subpackage(tmp_path: Path) -> None:
    """Colab installs course_lib from git as a wheel: the checkers must be inside it."""
    import zipfile

    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(tmp_path), str(ROOT)], check=True)
    (wheel,) = tmp_path.glob("course_lib-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for module in (ROOT / "course_lib").rglob("*.py"):
        assert module.relative_to(ROOT).as_posix() in names
    stored = list((ROOT / "course_lib" / "assets").glob("*.json"))  # lesson 00's payoff data
    assert stored and all(path.relative_to(ROOT).as_posix() in names for path in stored)


PIP_FAILS = "ERROR: Error [Errno -3] Temporary failure in name resolution while executing command git clone"


def test_a_failed_install_says_what_to_do_and_stops(monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """No network on Colab: two or three lines of instructions, no pip traceback, and one SystemExit."""
    monkeypatch.setattr(subprocess, "run", lambda cmd, **kw: subprocess.CompletedProcess(cmd, 1, "", PIP_FAILS))
    monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "course_lib" else real_find_spec(name, *a))
    with pytest.raises(SystemExit, match="course_lib is not installed"):
        exec(compile(authoring.setup_cell_source(course_lib.__version__), "setup-cell", "exec"), {})
    printed = capsys.readouterr().out.strip().splitlines()
    assert 2 <= len(printed) <= 3 and "Traceback" not in "\n".join(printed)
    assert "name resolution" in printed[0] and ".zip" in printed[2] and "pip install" in printed[2]


def test_run_all_stops_at_the_setup_cell_when_the_install_fails() -> None:
    """In a real kernel (as Run all does): the setup cell ends in SystemExit, and no later cell runs, so there is
    no cascade of NameErrors."""
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    simulate_colab = f"""import importlib.util, subprocess, sys, types
sys.modules["google.colab"] = types.ModuleType("google.colab")
_find_spec = importlib.util.find_spec
importlib.util.find_spec = lambda name, *a: None if name == "course_lib" else _find_spec(name, *a)
subprocess.run = lambda cmd, **kw: subprocess.CompletedProcess(cmd, 1, "", {PIP_FAILS!r})"""
    notebook = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell(simulate_colab),
        nbformat.v4.new_code_cell(authoring.setup_cell_source(course_lib.__version__)),
        nbformat.v4.new_code_cell("print(cl.pick_device())"),
    ])
    client = NotebookClient(notebook, timeout=120, kernel_name="python3")
    with pytest.raises(CellExecutionError) as error:
        client.execute()
    assert error.value.ename == "SystemExit"
    outputs = notebook.cells[1].outputs
    assert any("Could not install course_lib" in o.get("text", "") for o in outputs)
    assert notebook.cells[2].execution_count is None and not notebook.cells[2].outputs  # never ran
