"""Tools for the course's authors and instructors (not needed by learners).

    python -m course_lib.authoring exercises [NAME...] # regenerate exercises/ from solutions/, then run them
    python -m course_lib.authoring run NOTEBOOK...     # execute notebooks in place, store outputs, print times
    python -m course_lib.authoring setup-cells         # rewrite every notebook's setup cell from SETUP_CELL

Solutions are the single source of truth. In a solution notebook, answers sit between marker lines:

- code: ``### BEGIN SOLUTION`` ... ``### END SOLUTION``. The exercise gets the region's ``### STUB: <code>``
  lines (marker removed) or, when there are none, ``raise NotImplementedError(...)`` at the region's
  indentation. A region at the top level of a cell must give STUB lines (a bare ``raise`` there
  would stop "Run All").
- markdown: ``<!-- BEGIN SOLUTION -->`` ... ``<!-- END SOLUTION -->``; the exercise gets the region's
  ``<!-- STUB: text -->`` lines, or "*Write your answer here.*".
"""
from __future__ import annotations

import argparse
import copy
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPOSITORY = "https://github.com/cross-attention-from-scratch/cross-attention-from-scratch"
SETUP_MARKER = "# Setup (the same in every notebook)"


def setup_cell_source(version: str) -> str:
    """The first code cell of every notebook: Colab install, device, seed."""
    return f'''{SETUP_MARKER}: installs course_lib on Colab only, keeps Colab's own torch.
import importlib.util
import os
import subprocess
import sys

if "google.colab" in sys.modules and importlib.util.find_spec("course_lib") is None:
    pip = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet",
         "course_lib @ git+{REPOSITORY}@v{version}"],
        capture_output=True, text=True,
    )
    if pip.returncode != 0:  # no network, or the repository not reachable: say what to do instead
        reason = " ".join(pip.stderr.split())[-150:]
        print(f"Could not install course_lib from GitHub ({{reason}}).\\n"
              "Instead: download the repository as a zip where you can, upload it with Colab's Files panel, run\\n"
              "!pip install --quiet /content/<the zip's name>.zip in a new cell, then run this cell again.")
        raise SystemExit("course_lib is not installed: the rest of this notebook needs it (see the lines above).")

# Waiting CPU threads sleep instead of spinning: training stays fast while other programs use the CPU.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # read once, when torch is imported
import torch

import course_lib as cl

device = cl.pick_device()  # cuda when a GPU is available, else cpu
cl.seed_everything(0)'''


def _version() -> str:
    from . import __version__

    return __version__


CODE_BEGIN, CODE_END, CODE_STUB = "### BEGIN SOLUTION", "### END SOLUTION", "### STUB:"
MD_BEGIN, MD_END = "<!-- BEGIN SOLUTION -->", "<!-- END SOLUTION -->"
MD_STUB = re.compile(r"^\s*<!-- STUB: (.*) -->\s*$")
DEFAULT_MD_STUB = "*Write your answer here.*"


class AuthoringError(ValueError):
    """A solution notebook breaks the marker rules."""


def _stub_lines(region: list[str], indent: str, where: str) -> list[str]:
    """What the exercise version shows instead of a solution region: its ``### STUB:`` lines, or (inside a
    function) a ``raise NotImplementedError``."""
    stubs = [indent + s.strip()[len(CODE_STUB):].strip() for s in region if s.strip().startswith(CODE_STUB)]
    if not stubs:
        if not indent:
            raise AuthoringError(f"{where}: a top-level solution region needs '{CODE_STUB} ...' lines")
        stubs = [f"{indent}# YOUR CODE HERE", f'{indent}raise NotImplementedError("exercise not done yet")']
    return stubs


def strip_code_solutions(source: str, where: str = "cell", *,
                         replace: Callable[[list[str], str, str], list[str]] = _stub_lines) -> str:
    """Replace every ``### BEGIN/END SOLUTION`` region of a code cell with its stub (or with what
    ``replace(region lines, indent, where)`` returns)."""
    out: list[str] = []
    region: list[str] | None = None
    indent = ""
    for line in source.splitlines():
        stripped = line.strip()
        if stripped == CODE_BEGIN:
            if region is not None:
                raise AuthoringError(f"{where}: nested {CODE_BEGIN}")
            region, indent = [], line[: len(line) - len(line.lstrip())]
        elif stripped == CODE_END:
            if region is None:
                raise AuthoringError(f"{where}: {CODE_END} without {CODE_BEGIN}")
            out.extend(replace(region, indent, where))
            region = None
        elif region is not None:
            region.append(line)
        else:
            out.append(line)
    if region is not None:
        raise AuthoringError(f"{where}: {CODE_BEGIN} without {CODE_END}")
    return "\n".join(out)


def strip_markdown_solutions(source: str, where: str = "cell") -> str:
    """Replace every ``<!-- BEGIN/END SOLUTION -->`` region of a markdown cell with its stub."""
    out: list[str] = []
    region: list[str] | None = None
    for line in source.splitlines():
        if line.strip() == MD_BEGIN:
            region = []
        elif line.strip() == MD_END:
            if region is None:
                raise AuthoringError(f"{where}: {MD_END} without {MD_BEGIN}")
            stubs = [m.group(1) for m in map(MD_STUB.match, region) if m]
            out.extend(stubs or [DEFAULT_MD_STUB])
            region = None
        elif region is not None:
            region.append(line)
        else:
            out.append(line)
    if region is not None:
        raise AuthoringError(f"{where}: {MD_BEGIN} without {MD_END}")
    return "\n".join(out)


def make_exercise(solution: Any, name: str = "notebook") -> Any:
    """The exercise twin of a solution notebook (an ``nbformat`` node): answers replaced by stubs,
    outputs cleared, STUB marker lines removed."""
    exercise = copy.deepcopy(solution)
    for index, cell in enumerate(exercise.cells):
        where = f"{name}, cell {index}"
        if cell.cell_type == "code":
            cell.source = strip_code_solutions(cell.source, where)
            cell.outputs, cell.execution_count = [], None
        elif cell.cell_type == "markdown":
            cell.source = strip_markdown_solutions(cell.source, where)
        cell.metadata.pop("execution", None)
    exercise.metadata["course"] = {"generated_from": f"solutions/{name}", "edit": "edit the solution, then regenerate"}
    return exercise


def execute(path: Path, timeout: int = 900) -> float:
    """Run a notebook top to bottom in its own folder and store its outputs; return seconds taken."""
    import nbformat
    from nbclient import NotebookClient

    notebook = nbformat.read(path, as_version=4)
    for cell in notebook.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
            cell.metadata.pop("execution", None)
    notebook.metadata["kernelspec"] = {"display_name": "Python 3", "language": "python", "name": "python3"}
    client = NotebookClient(notebook, timeout=timeout, kernel_name="python3", record_timing=False,
                            resources={"metadata": {"path": str(path.parent)}})
    start = time.perf_counter()
    client.execute()
    seconds = time.perf_counter() - start
    nbformat.write(notebook, path)
    return seconds


def sync_setup_cells(paths: list[Path]) -> list[Path]:
    """Rewrite the setup cell (the first code cell starting with SETUP_MARKER) of each notebook."""
    import nbformat

    changed = []
    wanted = setup_cell_source(_version())
    for path in paths:
        notebook = nbformat.read(path, as_version=4)
        cell = next((c for c in notebook.cells if c.cell_type == "code"), None)
        if cell is None or not cell.source.startswith(SETUP_MARKER):
            raise AuthoringError(f"{path}: the first code cell is not the setup cell")
        if cell.source != wanted:
            cell.source = wanted
            nbformat.write(notebook, path)
            changed.append(path)
    return changed


def build_exercises(root: Path, run: bool = True, names: list[str] | None = None) -> list[Path]:
    """Write ``exercises/NAME`` for every ``solutions/NAME`` (or only ``names``); execute them if ``run``."""
    import nbformat

    written = []
    (root / "exercises").mkdir(exist_ok=True)
    solutions = sorted((root / "solutions").glob("*.ipynb"))
    if names:
        missing = set(names) - {p.name for p in solutions}
        if missing:
            raise AuthoringError(f"no such solution notebook(s): {sorted(missing)}")
        solutions = [p for p in solutions if p.name in names]
    for solution_path in solutions:
        exercise = make_exercise(nbformat.read(solution_path, as_version=4), solution_path.name)
        target = root / "exercises" / solution_path.name
        nbformat.write(exercise, target)
        written.append(target)
        if run:
            print(f"{target.relative_to(root)}: {execute(target):.1f} s", flush=True)
    return written


def all_notebooks(root: Path) -> list[Path]:
    return sorted(p for folder in ("notebooks", "solutions", "exercises") for p in (root / folder).glob("*.ipynb"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m course_lib.authoring", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    ex = sub.add_parser("exercises", help="regenerate exercises/ from solutions/")
    ex.add_argument("names", nargs="*", help="solution notebook file names (default: all)")
    ex.add_argument("--no-run", action="store_true", help="do not execute the generated notebooks")
    runner = sub.add_parser("run", help="execute notebooks in place and store their outputs")
    runner.add_argument("notebooks", nargs="+", type=Path)
    sub.add_parser("setup-cells", help="rewrite every notebook's setup cell")
    grader = sub.add_parser("nbgrader", help="write an nbgrader course folder (one assignment per lesson)")
    grader.add_argument("outdir", type=Path, help="the course folder to write (nbgrader_config.py, source/...)")
    grader.add_argument("--lessons", nargs="*", help="solution notebook stems (default: all)")
    parser.add_argument("--root", type=Path, default=Path.cwd(), help="the course's root folder")
    args = parser.parse_args(argv)
    if args.command == "exercises":
        build_exercises(args.root, run=not args.no_run, names=args.names)
    elif args.command == "run":
        for path in args.notebooks:
            print(f"{path}: {execute(path):.1f} s", flush=True)
    elif args.command == "nbgrader":
        from .grading import write_course

        written = write_course(args.root, args.outdir, lessons=args.lessons)
        print(f"{len(written)} assignments in {args.outdir / 'source'}; next: cd {args.outdir} && "
              f"nbgrader generate_assignment <name>")
    else:
        for path in sync_setup_cells(all_notebooks(args.root)):
            print(f"updated {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
