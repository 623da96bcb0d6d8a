"""The lessons keep the promises of the course's writing standard (issue 10).

Each lesson asks the learner to predict at least twice (a ``my_guess...`` variable that a later cell
reads), states a run time that agrees with the README's table, shows no absolute path of the machine that
ran it, and every exercise check line is labelled ``Exercise N · ...``.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LESSONS = sorted((ROOT / "notebooks").glob("*.ipynb"))
SOLVED = sorted((ROOT / "solutions").glob("*.ipynb"))
RUN_TIME = re.compile(r"\*\*Run time:\*\* about (\d+) (s|minutes?)\b")
ABSOLUTE_PATH = re.compile(r"(?<![\w.])/(?:work|root|home|Users|tmp|var/folders|content)/[\w.-]+")


def cells(path: Path) -> list[dict]:
    return json.loads(path.read_text(encoding="utf-8"))["cells"]


def code_sources(path: Path) -> list[str]:
    return ["".join(c["source"]) for c in cells(path) if c["cell_type"] == "code"]


def seconds(number: str, unit: str) -> int:
    return int(number) * (60 if unit.startswith("minute") else 1)


def output_texts(path: Path) -> list[str]:
    texts = []
    for cell in cells(path):
        for output in cell.get("outputs", []):
            texts.append("".join(output.get("text", "")))
            texts += ["".join(v) for k, v in output.get("data", {}).items() if k.startswith("text/")]
    return texts


@pytest.mark.parametrize("path", LESSONS, ids=lambda p: p.stem)
def test_lesson_asks_for_two_predictions_and_reads_them_later(path: Path) -> None:
    sources = code_sources(path)
    guesses = []
    for index, source in enumerate(sources):
        for name in re.findall(r"^(my_guess\w*)\s*=", source, flags=re.M):
            guesses.append(name)
            later = "\n".join(sources[index + 1:])
            assert re.search(rf"\b{name}\b", later), f"{name} is never compared with a measurement"
    assert len(set(guesses)) >= 2, guesses


@pytest.mark.parametrize("path", LESSONS, ids=lambda p: p.stem)
def test_stated_run_time_agrees_with_the_readme(path: Path) -> None:
    stated = RUN_TIME.findall("".join(cells(path)[0]["source"]) + "".join(cells(path)[1]["source"]))
    assert len(stated) == 1, f"{path.name} states its run time once, as '**Run time:** about N s'"
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    row = next(line for line in readme.splitlines() if f"(notebooks/{path.name})" in line)
    in_readme = re.findall(r"\|\s*(\d+) (s|min)\s*\|\s*$", row)
    assert in_readme, row
    assert seconds(*in_readme[0]) == seconds(*stated[0]), (path.name, stated[0], in_readme[0])


@pytest.mark.parametrize("path", LESSONS + SOLVED + sorted((ROOT / "exercises").glob("*.ipynb")),
                         ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_no_stored_output_shows_an_absolute_path(path: Path) -> None:
    found = [m.group(0) for text in output_texts(path) for m in ABSOLUTE_PATH.finditer(text)]
    assert not found, found[:5]


@pytest.mark.parametrize("path", SOLVED, ids=lambda p: p.stem)
def test_every_check_line_is_labelled_exercise_n(path: Path) -> None:
    lines = [line for text in output_texts(path) for line in text.splitlines() if line[:1] and line[:1] in "✅❌⏳"]
    assert lines, "the solutions show their check lines"
    odd = [line for line in lines if not re.match(r"^[✅❌⏳] Exercise \d+ · ", line)]
    assert not odd, odd
