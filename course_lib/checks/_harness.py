"""The machinery behind every exercise checker: named mistakes as data.

A checker runs the learner's code on a few cases, compares with a reference, and returns a
``CheckResult`` that Jupyter shows as one line (``✅/❌/⏳ Exercise N · what: message``) and that a
grader reads as data (``status``, ``message``, ``mistake``, ``case``; ``to_dict()``). It never raises
because of the learner's code, never passes a wrong answer, and names a mistake only with evidence:
the learner's output equals that mistake's output on a case where it differs from the reference.

Where things are: this module has ``run_cases`` (the loop over an exercise's cases, and the diagnoses that need
all of them: code right only for a batch of 1 or only for square shapes) and two helpers for checkers that look
again at a failure (``second_look``) or accept an equivalent result (``map_result``). ``_cases.py``: ``Case``,
``Mistake``, and calling code on a case safely. ``_diagnosis.py``: the verdict on one case (which ``Mistake`` a
result matches, or what is wrong with its type, structure, shape, dtype or values). ``_compare.py``: ``same``,
tolerances, ``describe_difference``. ``_answers.py``: ``check_answer`` for predicted values. ``_results.py``:
``Hint``, ``NotDone``, ``CheckResult``, ``@checker`` and the isolation of the learner's state. The package
(``course_lib/checks/__init__.py``) re-exports the public names.

Writing a checker (worked examples: ``lesson01.py``, ``lesson02.py``)
---------------------------------------------------------------------
For a "write a function" exercise, write four things next to each other::

    def attention_reference(q, k, v):               # 1. the reference, with the exercise's own signature
        w = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1]), dim=-1)
        return w @ v, w

    def _qkv(*shapes, seed, dtype=torch.float32):    # inputs built once, from their own seeded generator
        gen = torch.Generator().manual_seed(seed)
        return tuple(torch.randn(*s, generator=gen, dtype=dtype) for s in shapes)

    ATTENTION_CASES = [                             # 2. cases: a name the hint quotes, the arguments
        Case("T_q != T_k", _qkv((2, 3, 5), (2, 5, 5), (2, 5, 4), seed=2)),
        Case("batch of 1", _qkv((1, 4, 8), (1, 6, 8), (1, 6, 8), seed=1)),
        Case("float64", _qkv((2, 5, 16), (2, 5, 16), (2, 5, 3), seed=3, dtype=torch.float64),
             info={"d_k": 16}),                     # info: numbers a hint may quote as {d_k}
    ]

    ATTENTION_MISTAKES = [                          # 3. each typical mistake: a name, its hint, a wrong version
        Mistake("no_scale", "divide the scores by sqrt(d_k) before the softmax",
                lambda q, k, v: attention_reference(q * math.sqrt(q.shape[-1]), k, v)),
        Mistake("transpose_1_2", "use k.transpose(-2, -1)", lambda q, k, v: ...,
                applies_when=lambda case: case.args[0].ndim >= 4),   # default: every case
    ]

    @checker("Exercise 1 · attention(q, k, v)")     # 4. a few lines; the title is "Exercise N · <what>"
    def check_attention(attention):
        return run_cases(attention, reference=attention_reference, cases=ATTENTION_CASES,
                         mistakes=ATTENTION_MISTAKES, what="attention(q, k, v)", outputs=("output", "attn_weights"),
                         passed="matches F.scaled_dot_product_attention on ...")

    # at the end of the module, for the tests (tests/test_checks_generic.py runs every exercise's mistakes):
    MISTAKES = {"check_attention": ATTENTION_MISTAKES}
    CASES = {"check_attention": ATTENTION_CASES}
    REFERENCES = {"check_attention": attention_reference}

Each typical wrong answer gets a named ``Mistake`` whose ``wrong`` produces it; keep the cases' seeds when you
edit a checker, so stored notebook outputs do not move. A hint that depends only on a wrong *shape* (e.g.
"[B, T, H, d_head]: add .transpose(1, 2)") is a ``Mistake`` whose wrong version has that shape; the harness's own
messages cover wrong types, dtypes and in-place changes, so a lesson does not check those.


``run_cases`` calls the learner on clones of each case's arguments and, on its own, reports: None or a
``raise NotImplementedError`` stub ("not done"), a non-function, an exception (with the exercise's
``error_tips``), an input changed in place, a result of the wrong type (list, numpy, a tuple where one
tensor is asked, the parts of a pair swapped), shape or dtype, NaN, code that works only for a batch
of 1 or only for square shapes (T_q == T_k), and, for ``in_place=`` exercises, a modified copy
returned while the argument is left unchanged. The tolerance follows the reference's dtype (float16
and bfloat16 get a loose one; ``Case(atol=..., rtol=...)`` overrides). A mistake whose output equals the
reference's on a case is skipped there automatically, so ``applies_when`` is only needed where the
wrong version cannot run or would mislead. ``Mistake(..., match="shape")`` names a mistake by the
shape of its result alone (e.g. heads left unmerged). A wrong version that raises is matched when the
learner's code raises the same error.

For a "predict a value" exercise, use ``check_answer``: ints accept ``3``, ``3.0`` or a numpy scalar alike
(a tensor gets the hint ".item()"); shapes accept tuples, lists and ``torch.Size``; each ``Mistake.wrong`` is the wrong
value (or a function returning it)::

    check_answer(predicted_params, 1_050_624, what="predicted_params", mistakes=PARAM_MISTAKES,
                 template="{got:,} is not it: {hint}", otherwise="count the four nn.Linear layers")

Outside the cases, ``raise Hint(...)`` works in any checker (``Hint(message, mistake="name", case="case name")``
adds the structured fields), and two older helpers remain for one extra call: ``call_learner`` (the learner's
exception becomes a ``Hint``) and ``compare`` (one tensor against the reference). Where an exercise promises
"any float dtype", add a float16 ``Case``; where it edits an argument in place, pass ``in_place=<index>``.

Tests: tests/test_checks_generic.py runs what every function checker must do over a registry in each lesson's
test module (``CHECKS``: name -> (checker, solution); ``GENERIC``, ``ALTERNATIVES``, ``BROKEN``: rows of wrong
and right answers; its docstring lists them): each ``Mistake`` in ``MISTAKES`` is named by its own hint
(``assert_named``), the solution and the reference pass, stubs, None, crashes, non-functions and weird results
fail without raising, the generic classes are diagnosed and correct alternatives pass. A new function checker
needs only its line in ``CHECKS`` and its rows. tests/test_checks_lessonNN.py also holds what is specific to the
lesson: hand-written wrong answers with the phrase each hint must contain (``assert_diagnosed``), predictions,
titles. Wrong versions of the generic classes come from tests/checker_helpers.py (``tensor_exercise_mistakes``,
``casts_to``, ``mutates_input``, ``batch_one_only``, ``weird_answers``, ...).
"""
from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from torch import Tensor

from ._cases import Case, Mistake, arg_names, batch_reversed, clone, invoke, require_function
from ._compare import tolerance
from ._diagnosis import Diagnoser, Verdict, judge
from ._results import Hint, short_str

_HIDDEN: ContextVar[bool] = ContextVar("hidden_cases", default=False)


@contextmanager
def hidden_cases() -> Iterator[None]:
    """Inside, every checker built on ``run_cases`` runs more cases than a learner's check cell does: each case,
    and each case with a batch of two or more once more with its batch reversed. For the hidden tests of nbgrader
    assignments (``course_lib.grading``): a function right only on the examples in the order it was shown fails."""
    token = _HIDDEN.set(True)
    try:
        yield
    finally:
        _HIDDEN.reset(token)


def run_cases(
    learner_fn: Any,
    *,
    reference: Callable[..., Any],
    cases: Sequence[Case],
    mistakes: Sequence[Mistake] = (),
    what: str,
    outputs: Sequence[str] | None = None,
    in_place: int | None = None,
    error_tips: Sequence[tuple[str, str]] = (),
    passed: str | None = None,
) -> str:
    """Run ``learner_fn`` and ``reference`` on every case and return ``passed`` if all agree; otherwise raise
    ``Hint`` (with ``mistake`` and ``case``) for the most specific problem found, ``NotDone`` for a stub.

    ``outputs`` names the parts of a tuple result, e.g. ``("output", "attn_weights")``; ``in_place`` is the
    index of the argument the exercise edits in place (its state after the call is the result);
    ``error_tips`` pairs a substring of ``"ErrorType: message"`` with a tip added when the learner's code
    raises it."""
    require_function(learner_fn, what)
    if _HIDDEN.get():
        cases = [*cases, *(v for v in map(batch_reversed, cases) if v is not None)]
    names = arg_names(reference, max((len(c.args) for c in cases), default=0))
    diagnoser = Diagnoser(mistakes, in_place, names)
    verdicts: list[Verdict] = []
    for case in cases:
        ref = invoke(reference, case, in_place, names, learner=False)
        if ref.error is not None:
            raise ref.error  # a bug in the checker, reported as such by @checker
        expected = ref.result
        atol, rtol = tolerance(_first_dtype(expected))
        atol, rtol = case.atol if case.atol is not None else atol, case.rtol if case.rtol is not None else rtol
        run = invoke(learner_fn, case, in_place, names, learner=True)
        verdicts.append(judge(run, case, expected, what, outputs, in_place, names, diagnoser, error_tips,
                              atol, rtol))
    failures = [v for v in verdicts if not v.ok]
    if not failures:
        return passed or f"matches the reference on all {len(cases)} cases"
    named = next((v for v in failures if v.mistake is not None), None)
    if named is not None:
        return _raise_named(named, failures)
    pattern = _pattern(verdicts, "batch", "batch_one_only") or _pattern(verdicts, "square", "square_only")
    if pattern is not None:
        raise pattern
    first = failures[0]
    raise Hint(first.message, mistake=first.kind, case=first.case.name)


def _first_dtype(value: Any) -> Any:
    if isinstance(value, Tensor):
        return value.dtype
    if isinstance(value, (tuple, list)):
        return next((v.dtype for v in value if isinstance(v, Tensor)), None)
    return None


def _raise_named(verdict: Verdict, failures: list[Verdict]) -> str:
    assert verdict.mistake is not None
    case = verdict.case
    error = verdict.run.error if verdict.run is not None else None
    raised = f" (your code raised {type(error).__name__} here)" if error is not None else ""
    raise Hint(f"case '{case.name}': {verdict.mistake.hint_for(case)}{raised}", mistake=verdict.mistake.name,
               case=case.name)


_PATTERN_KINDS = {None, "raised", "wrong_shape", "nan"}


def _inner(verdict: Verdict) -> str:
    """A verdict's message without its trailing period (and without a tip after a raised error)."""
    message = verdict.message
    if verdict.kind == "raised" and verdict.run is not None and verdict.run.error is not None:
        message = f"case '{verdict.case.name}': {type(verdict.run.error).__name__}: {short_str(verdict.run.error, 200)}"
    return message.rstrip(".")


def _pattern(verdicts: list[Verdict], trait: str, name: str) -> Hint | None:
    """Right on every batch-of-1 (square) case, wrong on every other one, for reasons of shape or value."""
    def key(v: Verdict) -> Any:
        return v.case.batch_size == 1 if trait == "batch" else v.case.is_square

    if any(key(v) is None for v in verdicts):
        return None
    good, bad = [v for v in verdicts if key(v)], [v for v in verdicts if not key(v)]
    if not good or not bad or not all(v.ok for v in good) or not all(not v.ok and v.kind in _PATTERN_KINDS
                                                                       for v in bad):
        return None
    first = bad[0]
    if trait == "batch":
        text = (f"your code is right for a batch of 1 (case '{good[0].case.name}') but not for a batch of "
                f"{first.case.batch_size}: {_inner(first)}. Keep the batch axis: no [0], .squeeze() or a fixed "
                "batch size; use x.shape, -1 in reshape, and ops that batch over leading dims (@, .transpose(-2, -1))")
    else:
        text = (f"your code is right when the lengths are equal (case '{good[0].case.name}') but not when they "
                f"differ: {_inner(first)}. Somewhere a query length and a key length (or a length and a width) are "
                "used interchangeably: check each shape and transpose")
    return Hint(text, mistake=name, case=first.case.name)


# --- for checkers that refine the harness's verdict ---------------------------------------------------

def second_look(hint: Hint, learner_fn: Callable[..., Any], cases: Sequence[Case],
                explain: Callable[[Any, Case], Hint | None], on: tuple[str | None, ...] = (None,)) -> Hint:
    """For a failure of a generic class in ``on`` (by default none: no listed mistake explained it), a clearer
    hint from a property of the learner's result on the failing case (``explain`` returns None when it sees
    nothing better); otherwise, or if that raises, ``hint`` itself."""
    case = next((c for c in cases if c.name == hint.case), None)
    if hint.mistake not in on or case is None:
        return hint
    try:
        better = explain(learner_fn(*clone(case.args)), case)
    except Exception:  # noqa: BLE001 - the harness's message stands
        better = None
    return hint if better is None else better


def map_result(learner_fn: Any, convert: Callable[[Any], Any]) -> Any:
    """The learner's function with its result passed through ``convert`` (to accept a result equal in meaning,
    e.g. numpy's ``str_`` for ``str``); anything not callable is returned as it is, for ``run_cases`` to report."""
    if not callable(learner_fn):
        return learner_fn

    @functools.wraps(learner_fn)
    def call(*args: Any, **kwargs: Any) -> Any:
        return convert(learner_fn(*args, **kwargs))

    return call
