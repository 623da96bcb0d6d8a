"""The exercise checkers against a hidden set of learner mistakes written independently of them.

Each wrong answer must fail (never pass), each correct alternative must pass, and at least 90 % of the wrong
answers must get a *specific* hint (one that names the mistake, by the entry's keywords). The entries live in
``tests/learner_mistakes.py``; ``python tests/learner_mistakes.py`` prints the full table.
"""
from __future__ import annotations

import learner_mistakes as lm
import pytest
import torch

WRONG = [e for e in lm.ENTRIES if not e.correct]
RIGHT = [e for e in lm.ENTRIES if e.correct]


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: one thread is as fast and steadier
    yield
    torch.set_num_threads(previous)


@pytest.mark.parametrize("entry", WRONG, ids=lambda e: e.id)
def test_wrong_answer_fails(entry: lm.Entry) -> None:
    outcome = lm.run(entry)
    assert outcome.status == "fail", (
        f"{entry.id}: the learner {entry.what}; the checker said [{outcome.status}] {outcome.message}")


@pytest.mark.parametrize("entry", RIGHT, ids=lambda e: e.id)
def test_correct_alternative_passes(entry: lm.Entry) -> None:
    outcome = lm.run(entry)
    assert outcome.status == "pass", (
        f"{entry.id}: the learner {entry.what} (correct); the checker said [{outcome.status}] {outcome.message}")


def test_every_exercise_has_mistakes_and_alternatives() -> None:
    exercises = {(e.lesson, e.checker) for e in lm.ENTRIES}
    for lesson, checker in sorted(exercises):
        n_wrong = sum(1 for e in WRONG if (e.lesson, e.checker) == (lesson, checker))
        assert n_wrong >= 4, f"lesson {lesson} {checker}: only {n_wrong} wrong entries"
    assert {e.lesson for e in lm.ENTRIES} == {f"0{n}" for n in range(1, 9)}


def test_specific_hint_rate() -> None:
    outcomes = [lm.run(e) for e in lm.ENTRIES]
    rate = lm.specific_rate(outcomes)
    assert rate >= lm.SPECIFIC_HINT_GOAL, (
        f"{rate:.1%} of the wrong answers got a specific hint (goal {lm.SPECIFIC_HINT_GOAL:.0%})\n\n"
        + lm.table(outcomes))
