"""Checkers for the exercises of lesson 13 (order and time in cross-attention: the alignment distance, T5-style
buckets, the wait-k mask, and the permutation test).

Each exercise is its reference, its cases and its list of named mistakes (``MISTAKES``), run by
``_harness.run_cases``. References: ``course_lib.position.alignment_distance`` (exercise 1),
``course_lib.position.relative_position_buckets`` with ``bidirectional=True`` (exercise 2),
``course_lib.position.wait_k_mask`` (exercise 3) and a gather along the source axis (exercise 4).

Conventions the hints rely on: target step ``i`` (0-based, ``T_q = t_q`` steps) and source position ``j``
(``T_k = t_k`` positions); step ``i``'s diagonal point in the source is ``i * t_k / t_q``, and
``alignment_distance[i, j] = j - i * t_k / t_q`` (float32 ``[T_q, T_k]``; negative = behind the diagonal point,
positive = ahead of it). Buckets: a distance is rounded with ``torch.round`` (halves to even), then distances
``<= 0`` use buckets ``0 .. n_buckets // 2 - 1`` and distances ``> 0`` the next ``n_buckets // 2``; within a half of
``h = n_buckets // 2`` buckets, magnitudes ``0 .. h // 2 - 1`` have a bucket each ("exact"), larger ones share
``h - h // 2`` logarithmic buckets up to ``max_distance`` (T5's ``exact + floor(log(n / exact) / log(max_distance /
exact) * (h - exact))``), and every magnitude beyond shares the half's last bucket; the result is long, the shape of
``distance``. Masks are bool, True = may attend, ``[B, 1, T_q, T_k]``: in wait-k, step ``i`` reads the first
``min(k + i, length)`` source tokens of its sentence, and ``k=None`` waits for the whole sentence (padding hidden
only). ``permute_source`` returns ``(keys, values, key_mask)`` reordered by ``order``: new position ``p`` holds old
position ``order[p]`` (a gather: ``keys[..., order, :]``, ``key_mask[..., order]``).

Exercise 4's check also runs attention (``course_lib.attention.scaled_dot_product_attention``) with the learner's
reordered source: its output must equal the original one, and its weights' columns must be reordered by ``order``.
"""
from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from ..attention import scaled_dot_product_attention
from ..position import alignment_distance, relative_position_buckets, wait_k_mask
from ._cases import Case, Mistake, clone
from ._compare import same
from ._harness import run_cases, second_look
from ._results import Hint, checker


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _g(x: float) -> str:
    return f"{x:.3g}"


# --- Exercise 1 · alignment_distance(t_q, t_k) -----------------------------------------------------------------------

def alignment_distance_reference(t_q: int, t_k: int) -> Tensor:
    """float32 ``[T_q, T_k]``: ``j - i * t_k / t_q`` (``course_lib.position.alignment_distance``)."""
    return alignment_distance(t_q, t_k)


_LENGTHS = [  # name, t_q, t_k
    ("more source than target: 4 target steps, 10 source positions (2.5 per step)", 4, 10),
    ("less source than target: 6 target steps, 4 source positions", 6, 4),
    ("equal lengths: 5 target steps, 5 source positions", 5, 5),
    ("one target step (t_q = 1), 7 source positions", 1, 7),
    ("one source position (t_k = 1), 5 target steps", 5, 1),
    ("7 target steps, 3 source positions (3/7 per step)", 7, 3),
]


def _distance_case(name: str, t_q: int, t_k: int) -> Case:
    return Case(name, (t_q, t_k), square=t_q == t_k,
                info={"t_q": t_q, "t_k": t_k, "ratio": _g(t_k / t_q), "ratio_floor": t_k // t_q})


DISTANCE_CASES = [_distance_case(*row) for row in _LENGTHS]


def _distance(t_q: int, t_k: int, rows: Callable[[Tensor], Tensor]) -> Tensor:
    """``j - rows(i)`` as float32 ``[T_q, T_k]``."""
    i = torch.arange(t_q, dtype=torch.float32)
    j = torch.arange(t_k, dtype=torch.float32)
    return j[None, :] - rows(i)[:, None]


def _corner_to_corner(t_q: int, t_k: int) -> Tensor:
    stretch = (t_k - 1) / (t_q - 1) if t_q > 1 else 0.0
    return _distance(t_q, t_k, lambda i: i * stretch)


_FORMULA = "d[i, j] = j - i * t_k / t_q"
DISTANCE_MISTAKES = [
    Mistake("ratio_inverted", "your diagonal moves t_q / t_k source positions per target step; it moves t_k / t_q "
            "(here {t_k}/{t_q} = {ratio}), so step i sits at source position i * t_k / t_q: " + _FORMULA,
            lambda t_q, t_k: _distance(t_q, t_k, lambda i: i * t_q / t_k)),
    Mistake("transposed", "your result is [T_k, T_q], source positions as rows: rows are target steps and columns "
            "source positions, [T_q, T_k] = [{t_q}, {t_k}] (cols[None, :] - rows[:, None])",
            lambda t_q, t_k: alignment_distance(t_q, t_k).T, match="shape"),
    Mistake("sign_flipped", "your signs are flipped: you computed i * t_k / t_q - j. The distance is "
            "j - i * t_k / t_q, negative for source positions behind step i's diagonal point and positive for "
            "those ahead of it",
            lambda t_q, t_k: -alignment_distance(t_q, t_k)),
    Mistake("floor_division", "your diagonal points are rounded down to whole positions (i * t_k // t_q): with "
            "t_k / t_q = {ratio} per step they fall between source positions. Use true division, i * t_k / t_q",
            lambda t_q, t_k: _distance(t_q, t_k, lambda i: torch.div(i * t_k, t_q, rounding_mode="floor"))),
    Mistake("ratio_floored", "you rounded the ratio down before multiplying (t_k // t_q = {ratio_floor}, but "
            "t_k / t_q = {ratio}): keep the fraction, i * t_k / t_q",
            lambda t_q, t_k: _distance(t_q, t_k, lambda i: i * (t_k // t_q))),
    Mistake("absolute", "your distances are never negative: the absolute value loses which side of the diagonal a "
            "source position lies on. Keep the sign, " + _FORMULA + " (a bias takes .abs() itself where it "
            "needs to)", lambda t_q, t_k: alignment_distance(t_q, t_k).abs()),
    Mistake("ratio_ignored", "you computed j - i, which is right only when both sequences have the same length; here "
            "each target step advances t_k / t_q = {ratio} source positions: " + _FORMULA,
            lambda t_q, t_k: _distance(t_q, t_k, lambda i: i)),
    Mistake("corner_to_corner", "you stretched the diagonal from corner to corner, i * (t_k - 1) / (t_q - 1), so the "
            "last step lands on the last source token. That is a real convention, but not this lesson's: here step i "
            "sits at i * t_k / t_q ({ratio} positions per step), " + _FORMULA, _corner_to_corner),
    Mistake("step_off_by_one", "your diagonal starts one step late, (i + 1) * t_k / t_q: step 0 sits at source "
            "position 0, so row 0 is just j (0, 1, 2, ...): " + _FORMULA,
            lambda t_q, t_k: _distance(t_q, t_k, lambda i: (i + 1) * t_k / t_q)),
    Mistake("normalised", "you divided by the lengths (j / t_k - i / t_q, fractions of each sequence): measure in "
            "source positions instead, " + _FORMULA + ", so that a distance of 3 means '3 tokens away'",
            lambda t_q, t_k: alignment_distance(t_q, t_k) / t_k),
]


@checker("Exercise 1 · alignment_distance(t_q, t_k)")
def check_alignment_distance(alignment_distance_fn: Callable[[int, int], Tensor]) -> str:
    """``alignment_distance(t_q, t_k) -> float [T_q, T_k]``: ``j - i * t_k / t_q``."""
    return run_cases(alignment_distance_fn, reference=alignment_distance_reference, cases=DISTANCE_CASES,
                     mistakes=DISTANCE_MISTAKES, what="alignment_distance(t_q, t_k)",
                     error_tips=[("division by zero", "with t_q = 1 there is a single target step, at source position "
                                  "0; the lesson's formula divides by t_q, never by t_q - 1: " + _FORMULA)],
                     passed="j - i * t_k / t_q for every target step i and source position j, [T_q, T_k] "
                            f"({len(DISTANCE_CASES)} cases: longer and shorter sources, equal lengths, t_q = 1, "
                            "t_k = 1, ratios that are not whole numbers)")


# --- Exercise 2 · relative_position_buckets(distance, n_buckets, max_distance) ---------------------------------------

def relative_position_buckets_reference(distance: Tensor, n_buckets: int, max_distance: int) -> Tensor:
    """long, the shape of ``distance``: bidirectional T5-style buckets
    (``course_lib.position.relative_position_buckets``)."""
    return relative_position_buckets(distance, n_buckets, max_distance)


def _bucket_case(name: str, distance: Tensor, n_buckets: int, max_distance: int) -> Case:
    half = n_buckets // 2
    exact = half // 2
    return Case(name, (distance, n_buckets, max_distance),
                info={"n_buckets": n_buckets, "max_distance": max_distance, "half": half, "exact": exact,
                      "exact_last": max(exact - 1, 0)})


_HALVES = torch.arange(-9, 10, dtype=torch.float32) / 2  # -4.5, -4, ..., 4.5: every half and whole number
BUCKET_CASES = [
    _bucket_case("whole distances -25..25 (long), n_buckets=16, max_distance=20", torch.arange(-25, 26), 16, 20),
    _bucket_case("alignment distances of 5 target steps and 12 source positions (float), n_buckets=16, "
                 "max_distance=8", alignment_distance(5, 12), 16, 8),
    _bucket_case("halves: -4.5, -4, ..., 4.5, n_buckets=12, max_distance=10", _HALVES, 12, 10),
    _bucket_case("T5's sizes: n_buckets=32, max_distance=128, whole distances -299..300 as floats, [20, 30]",
                 torch.arange(-299.0, 301.0).reshape(20, 30), 32, 128),
    _bucket_case("n_buckets=2 (one bucket per sign), max_distance=4, distances -3..3 in steps of 0.3",
                 torch.arange(-10, 11, dtype=torch.float32) * 0.3, 2, 4),
    _bucket_case("n_buckets=4, max_distance=3, alignment distances of 3 target steps and 8 source positions",
                 alignment_distance(3, 8), 4, 3),
    _bucket_case("odd n_buckets=9 (bucket 8 unused), max_distance=10, alignment distances of 4 steps and 15 "
                 "positions", alignment_distance(4, 15), 9, 10),
]


def _magnitude(n: Tensor, n_buckets: int, max_distance: int, *, exact: int | None = None, log_shift: float = 0.0,
               offset: bool = True, clamp: bool = True) -> Tensor:
    """Buckets of magnitudes ``n >= 0`` over ``n_buckets``, as ``course_lib.position`` does (thresholds), with one
    thing changed: ``exact`` (the size of the exact part), ``log_shift`` (0.5: the log position rounded, not
    floored), ``offset`` (False: the log buckets start at 0), ``clamp`` (False: buckets go on past the last one)."""
    exact = n_buckets // 2 if exact is None else exact
    if exact == 0:
        return torch.zeros_like(n)
    n_log = n_buckets - exact
    ratio = max_distance / exact
    count = n_log - 1 if clamp else 4 * n_log
    if max_distance > exact:
        starts = [math.ceil(exact * ratio ** ((m - log_shift - 1e-9) / n_log)) for m in range(1, count + 1)]
    else:
        starts = [exact] * count
    log_bucket = torch.full_like(n, exact if offset else 0)
    for start in starts:
        log_bucket = log_bucket + (n >= start).long()
    if clamp:
        log_bucket = log_bucket.clamp(max=n_buckets - 1)
    return torch.where(n < exact, n, log_bucket)


def _buckets_variant(*, rounding: str = "round", ahead: str = ">", halves: bool = True, per_half: bool = True,
                     **magnitude: Any) -> Callable[[Tensor, int, int], Tensor]:
    """``relative_position_buckets`` with one thing wrong: ``rounding`` (round, trunc, floor, half_up), ``ahead``
    (the test that picks the second half), ``halves`` (False: |distance| over all buckets), ``per_half`` (False:
    magnitude buckets over all n_buckets, then the second half's offset), ``magnitude`` (see ``_magnitude``)."""
    def buckets(distance: Tensor, n_buckets: int, max_distance: int) -> Tensor:
        if distance.is_floating_point():
            rounded = {"round": torch.round(distance), "trunc": distance.trunc(), "floor": distance.floor(),
                       "half_up": torch.floor(distance + 0.5)}[rounding].long()
        else:
            rounded = distance.long()
        if not halves:
            return _magnitude(rounded.abs(), n_buckets, max_distance, **magnitude)
        half = n_buckets // 2
        second = {">": rounded > 0, ">=": rounded >= 0, "<": rounded < 0, "<=": rounded <= 0}[ahead]
        size = half if per_half else n_buckets
        return _magnitude(rounded.abs(), size, max_distance, **magnitude) + second.long() * half
    return buckets


_ROUND = "torch.round(distance).long()"
BUCKET_MISTAKES = [
    Mistake("truncated", f"you converted the distances with .long(), which cuts toward zero (-1.6 becomes -1, 2.7 "
            f"becomes 2): round them to the nearest integer first, {_ROUND}", _buckets_variant(rounding="trunc")),
    Mistake("floored", f"you rounded the distances down (2.7 became 2, -0.4 became -1): round them to the nearest "
            f"integer, {_ROUND}", _buckets_variant(rounding="floor")),
    Mistake("rounded_half_up", "your halves round up (0.5 to 1, 2.5 to 3), as floor(d + 0.5) does: the convention is "
            f"torch.round, which rounds halves to the even integer (0.5 to 0, 1.5 to 2, 2.5 to 2): {_ROUND}",
            _buckets_variant(rounding="half_up")),
    Mistake("halves_swapped", "your buckets put distances ahead of the diagonal (> 0) in the first half and those "
            "behind it in the second: the sign is flipped (j - i * t_k / t_q, not the other way round). Add "
            "n_buckets // 2 where the rounded distance is > 0", _buckets_variant(ahead="<")),
    Mistake("halves_exchanged", "your two halves are exchanged: distances <= 0 (0 included) use the second half and "
            "distances > 0 the first. Distances <= 0 take buckets 0 .. n_buckets // 2 - 1: add n_buckets // 2 only "
            "where the rounded distance is > 0", _buckets_variant(ahead="<=")),
    Mistake("zero_ahead", "you put distance 0 in the second half (>= 0): a source position on the diagonal point "
            "belongs with those behind it, in the first half; the second half is for rounded distances > 0 only",
            _buckets_variant(ahead=">=")),
    Mistake("not_clamped", "magnitudes of max_distance (here {max_distance}) and beyond run past their half's last "
            "bucket, into the other half or past n_buckets - 1: they all share the half's last bucket, so clamp "
            "with min(bucket, n_buckets // 2 - 1) before adding the second half's offset",
            _buckets_variant(clamp=False)),
    Mistake("all_logarithmic", "your small distances are not exact: of a half's n_buckets // 2 = {half} buckets, "
            "the first {exact} hold the magnitudes 0 .. {exact_last}, one each, and only larger magnitudes share "
            "the logarithmic buckets", _buckets_variant(exact=1)),
    Mistake("log_not_offset", "your logarithmic buckets start at 0 instead of after the {exact} exact ones, so large "
            "distances share buckets with small ones: add exact, exact + floor(log(n / exact) / log(max_distance / "
            "exact) * (half - exact))", _buckets_variant(offset=False)),
    Mistake("log_position_rounded", "some logarithmic buckets are one too high: you rounded the position on the "
            "log scale; take its floor instead (.floor(), or .long() of the non-negative value): exact + "
            "floor(log(n / exact) / log(max_distance / exact) * (half - exact))", _buckets_variant(log_shift=0.5)),
    Mistake("unidirectional", "your buckets ignore the sign: |distance| over all n_buckets is the unidirectional "
            "(symmetric) version. Here distances <= 0 use the first n_buckets // 2 buckets and distances > 0 the "
            "next n_buckets // 2, each half split into exact and logarithmic buckets",
            _buckets_variant(halves=False)),
    Mistake("not_halved", "you split all n_buckets into exact and logarithmic buckets and then added n_buckets // 2 "
            "for distances > 0, so buckets run past n_buckets - 1: each sign has n_buckets // 2 = {half} buckets, so "
            "build the magnitude buckets over n_buckets // 2 (exact part n_buckets // 4)",
            _buckets_variant(per_half=False)),
]


@checker("Exercise 2 · relative_position_buckets(distance, n_buckets, max_distance)")
def check_relative_position_buckets(relative_position_buckets_fn: Callable[[Tensor, int, int], Tensor]) -> str:
    """``relative_position_buckets(distance [...], n_buckets, max_distance) -> long [...]``: bidirectional T5-style
    buckets of the rounded distances."""
    return run_cases(relative_position_buckets_fn, reference=relative_position_buckets_reference, cases=BUCKET_CASES,
                     mistakes=BUCKET_MISTAKES, what="relative_position_buckets(distance, n_buckets, max_distance)",
                     error_tips=[("division by zero", "with n_buckets = 2 each sign has a single bucket and no exact "
                                  "part (n_buckets // 4 = 0): every magnitude goes to its half's only bucket, so "
                                  "skip the logarithm when the exact part is empty")],
                     passed="distances rounded, <= 0 in the first half and > 0 in the second, exact then "
                            "logarithmic buckets, everything beyond max_distance in the last bucket "
                            f"({len(BUCKET_CASES)} cases: whole, fractional and half distances, n_buckets = 2, 4, "
                            "9, 12, 16 and T5's 32 with max_distance 128)")


# --- Exercise 3 · wait_k_mask(t_q, source_lengths, k, t_k) -----------------------------------------------------------

def wait_k_mask_reference(t_q: int, source_lengths: Tensor, k: int | None, t_k: int) -> Tensor:
    """bool ``[B, 1, T_q, T_k]``: step ``i`` may read source positions ``j < min(k + i, length)``
    (``course_lib.position.wait_k_mask``)."""
    return wait_k_mask(t_q, source_lengths, k, t_k=t_k)


_WAITS = [  # name, t_q, lengths, k, t_k, dtype
    ("B=3, 6 target steps, sentences of 5, 3 and 7 tokens padded to t_k=8, k=3", 6, [5, 3, 7], 3, 8, torch.long),
    ("k=1 (read one token, then one more per step), B=2, lengths 4 and 6, t_k=6, 6 steps", 6, [4, 6], 1, 6,
     torch.long),
    ("k=None (wait for the whole sentence: padding hidden only), B=3, lengths 2, 5 and 4, t_k=6, 3 steps", 3,
     [2, 5, 4], None, 6, torch.long),
    ("k=9, more than every length (3 and 7), B=2, t_k=7, 4 steps", 4, [3, 7], 9, 7, torch.long),
    ("more target steps (9) than source positions (t_k=5), k=2, B=2, lengths 4 and 2", 9, [4, 2], 2, 5, torch.long),
    ("batch of 1, k=3, a sentence of 6 tokens, t_k=6, 4 steps", 4, [6], 3, 6, torch.long),
    ("an empty sentence (length 0) in a batch of 3, int32 lengths 3, 0, 2, k=2, t_k=5, 4 steps", 4, [3, 0, 2], 2, 5,
     torch.int32),
]


def _wait_case(name: str, t_q: int, lengths: list[int], k: int | None, t_k: int, dtype: torch.dtype) -> Case:
    return Case(name, (t_q, torch.tensor(lengths, dtype=dtype), k, t_k), batch=len(lengths), square=t_q == t_k,
                info={"t_q": t_q, "t_k": t_k, "k": k, "longest": max(lengths), "B": len(lengths)})


WAIT_CASES = [_wait_case(*row) for row in _WAITS]
_NONE_CASES = {case.name for case in WAIT_CASES if case.args[2] is None}


def _wait_variant(*, extra: int = 0, le: bool = False, cap: bool = True, none_all: bool = False,
                  none_raises: bool = False, advance: bool = True, use_k: bool = True) -> Callable[..., Tensor]:
    """``wait_k_mask`` with one thing wrong: step ``i`` sees ``k + i + extra`` tokens, compared with ``<=`` (``le``),
    not capped at the length (``cap``), all positions for k=None (``none_all``) or an error (``none_raises``), the
    same ``k`` at every step (``advance``), ``i + 1`` tokens (``use_k``)."""
    def mask(t_q: int, source_lengths: Tensor, k: int | None, t_k: int) -> Tensor:
        lengths = source_lengths.long()[:, None]  # [B, 1]
        steps = torch.arange(t_q)[None, :]  # [1, T_q]
        if k is None:
            if none_raises:
                return k + steps  # type: ignore[operator]  # TypeError, as a learner's code would raise
            visible = torch.full_like(lengths, t_k).expand(-1, t_q) if none_all else lengths.expand(-1, t_q)
        else:
            wanted = (k + steps if advance else k + 0 * steps) if use_k else steps + 1
            wanted = wanted + extra
            visible = torch.minimum(wanted, lengths) if cap else wanted.clamp(max=t_k).expand(lengths.shape[0], -1)
        positions = torch.arange(t_k)
        seen = positions <= visible[..., None] if le else positions < visible[..., None]
        return seen[:, None]  # [B, 1, T_q, T_k]
    return mask


_RULE = "j < min(k + i, length)"
WAIT_MISTAKES = [
    Mistake("one_too_many", "your mask lets step i read k + i + 1 tokens, one too many: step 0 must see exactly k "
            f"tokens (here k = {{k}}), then one more per step, {_RULE}", _wait_variant(extra=1)),
    Mistake("one_too_few", "your mask lets step i read k + i - 1 tokens, one too few (as if k counted from 0): step 0 "
            f"must see exactly k tokens (here k = {{k}}), {_RULE}",
            _wait_variant(extra=-1)),
    Mistake("less_or_equal", "with <= your mask shows one position too many: position k + i as well, and the first "
            "padding position of a sentence that is fully read. The first n positions are j < n: compare with <",
            _wait_variant(le=True)),
    Mistake("padding_visible", "your mask shows padding: once k + i passes a sentence's length, step i reads "
            "positions beyond it. Cap what each step sees at its sentence's length, min(k + i, length)",
            _wait_variant(cap=False)),
    Mistake("inverted", "your mask is True where the decoder may not read: True must mean 'may attend', the source "
            f"positions already received, {_RULE}",
            lambda t_q, lengths, k, t_k: ~wait_k_mask(t_q, lengths, k, t_k=t_k)),
    Mistake("numeric_mask", "your mask holds numbers (1 and 0) instead of bools: the course's masks are bool, True = "
            "may attend (a comparison such as positions < visible already gives bools: drop the .float() or .int())",
            lambda t_q, lengths, k, t_k: wait_k_mask(t_q, lengths, k, t_k=t_k).float()),
    Mistake("no_head_axis", "your mask is [B, T_q, T_k]: add the head axis, [B, 1, T_q, T_k] (mask[:, None]), so "
            "that it broadcasts over the heads of the scores",
            lambda t_q, lengths, k, t_k: wait_k_mask(t_q, lengths, k, t_k=t_k)[:, 0], match="shape"),
    Mistake("transposed", "your mask is [B, 1, T_k, T_q], source positions as rows: rows are target steps and "
            "columns source positions, [B, 1, T_q, T_k] with T_q = {t_q}, T_k = {t_k}",
            lambda t_q, lengths, k, t_k: wait_k_mask(t_q, lengths, k, t_k=t_k).transpose(-2, -1), match="shape"),
    Mistake("longest_not_t_k", "your mask is {longest} source positions wide, the longest sentence, but the padded "
            "source has t_k = {t_k} positions: build the columns with torch.arange(t_k)",
            lambda t_q, lengths, k, t_k: wait_k_mask(t_q, lengths, k), match="shape"),
    Mistake("none_not_handled", "your code fails for k=None: None means 'wait for the whole sentence', so handle it "
            "before any arithmetic with k (every step then sees its sentence's length: a padding mask)",
            _wait_variant(none_raises=True)),
    Mistake("none_shows_padding", "with k=None your mask shows every position, padding included: waiting for the "
            "whole sentence still hides the padding, j < length", _wait_variant(none_all=True)),
    Mistake("no_advance", "every step of your mask sees the same k tokens: wait-k reads one more source token per "
            f"target step written, so step i sees {_RULE}", _wait_variant(advance=False)),
    Mistake("k_ignored", "your mask ignores k: step i sees i + 1 tokens, like a causal mask. The decoder first waits "
            f"for k tokens (here k = {{k}}), then reads one per step: {_RULE}", _wait_variant(use_k=False)),
]


@checker("Exercise 3 · wait_k_mask(t_q, source_lengths, k, t_k)")
def check_wait_k_mask(wait_k_mask_fn: Callable[..., Tensor]) -> str:
    """``wait_k_mask(t_q, source_lengths [B], k, t_k) -> bool [B, 1, T_q, T_k]``: step ``i`` reads the first
    ``min(k + i, length)`` source tokens; ``k=None`` hides padding only."""
    try:
        return run_cases(wait_k_mask_fn, reference=wait_k_mask_reference, cases=WAIT_CASES, mistakes=WAIT_MISTAKES,
                         what="wait_k_mask(t_q, source_lengths, k, t_k)",
                         error_tips=[("positional argument", "the check calls wait_k_mask(t_q, source_lengths, k, "
                                      "t_k), with t_k the fourth argument"),
                                     ("must match the size of tensor", "give each side its own axis so they "
                                      "broadcast: positions [T_k] against visible[:, :, None] ([B, T_q, 1])")],
                         passed=f"step i reads min(k + i, length) source tokens, never padding, [B, 1, T_q, T_k] "
                                f"({len(WAIT_CASES)} cases: k = 1, k beyond every length, k=None, more steps than "
                                "source, an empty sentence, t_k wider than the longest sentence)")
    except Hint as hint:
        raise _none_not_handled(hint) from None


def _none_not_handled(hint: Hint) -> Hint:
    """``none_not_handled`` for any TypeError about None on a k=None case (the learner's code did arithmetic with
    k=None; its message depends on how it was written)."""
    text = str(hint)
    if hint.mistake != "raised" or hint.case not in _NONE_CASES or "TypeError" not in text or "None" not in text:
        return hint
    case = next(c for c in WAIT_CASES if c.name == hint.case)
    mistake = next(m for m in WAIT_MISTAKES if m.name == "none_not_handled")
    return Hint(f"case '{case.name}': {mistake.hint_for(case)} (your code raised TypeError here)",
                mistake=mistake.name, case=case.name)


# --- Exercise 4 · permute_source(keys, values, key_mask, order) ------------------------------------------------------

def permute_source_reference(keys: Tensor, values: Tensor, key_mask: Tensor,
                             order: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """``(keys, values, key_mask)`` with new source position ``p`` holding old position ``order[p]``."""
    return keys[..., order, :], values[..., order, :], key_mask[..., order]


_SOURCES = [  # name, B, H, T_q, T_k, d, d_v, order, visible keys per row, seed, dtype
    ("B=2, H=3, 3 queries, 5 source positions, d=4, d_v=6, padding in row 1", 2, 3, 3, 5, 4, 6, [2, 0, 4, 1, 3],
     [[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]], 1300, torch.float32),
    ("T_k = H = d = 4 (a permutation of the wrong axis keeps the shapes), B=2, 2 queries", 2, 4, 2, 4, 4, 4,
     [1, 3, 0, 2], [[1, 1, 1, 0], [1, 1, 1, 1]], 1301, torch.float32),
    ("batch of 1, H=2, 4 queries, 6 source positions, d=3, d_v=5", 1, 2, 4, 6, 3, 5, [3, 5, 0, 4, 1, 2],
     [[1, 1, 1, 1, 0, 0]], 1302, torch.float32),
    ("float64, B = T_k = 3, H=2, 5 queries, d=5, d_v=2, a 3-cycle", 3, 2, 5, 3, 5, 2, [1, 2, 0],
     [[1, 1, 0], [1, 1, 1], [1, 0, 0]], 1303, torch.float64),
    ("B=2, H=2, 3 queries, 9 source positions, d=8, d_v=3", 2, 2, 3, 9, 8, 3, [4, 7, 1, 8, 0, 3, 6, 2, 5],
     [[1, 1, 1, 1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1, 1, 1, 1]], 1304, torch.float32),
]
_QUERIES: dict[str, Tensor] = {}  # case name -> queries [B, H, T_q, d] for the attention run


def _source_case(name: str, b: int, h: int, t_q: int, t_k: int, d: int, d_v: int, order: list[int],
                 visible: list[list[int]], seed: int, dtype: torch.dtype) -> Case:
    gen = _generator(seed)
    keys = torch.randn(b, h, t_k, d, generator=gen, dtype=dtype)
    values = torch.randn(b, h, t_k, d_v, generator=gen, dtype=dtype)
    _QUERIES[name] = torch.randn(b, h, t_q, d, generator=gen, dtype=dtype)
    key_mask = torch.tensor(visible, dtype=torch.bool)[:, None, None, :]  # [B, 1, 1, T_k]
    return Case(name, (keys, values, key_mask, torch.tensor(order)), batch=b)


SOURCE_CASES = [_source_case(*row) for row in _SOURCES]


def _inverse(keys: Tensor, values: Tensor, key_mask: Tensor, order: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    return permute_source_reference(keys, values, key_mask, torch.argsort(order))


def _several_heads_and_rows(case: Case) -> bool:
    """An axis of size 1 is then only one of key_mask's: an IndexError about one is evidence of ``mask_wrong_dim``."""
    return case.args[0].shape[0] > 1 and case.args[0].shape[1] > 1


_GATHER = "keys[..., order, :], values[..., order, :], key_mask[..., order]"
SOURCE_MISTAKES = [
    Mistake("keys_not_permuted", "your keys are still in the old order while the values and the mask moved: each key "
            "must move with its value and its mask entry, keys[..., order, :]",
            lambda k, v, m, o: (k, v[..., o, :], m[..., o])),
    Mistake("values_not_permuted", "your values are still in the old order, so each key now points at another "
            "position's value: move the values the same way, values[..., order, :]",
            lambda k, v, m, o: (k[..., o, :], v, m[..., o])),
    Mistake("mask_not_permuted", "your key_mask is still in the old order, so it now hides the wrong keys: reorder "
            "its last axis too, key_mask[..., order]", lambda k, v, m, o: (k[..., o, :], v[..., o, :], m)),
    Mistake("inverse_permutation", "you applied the inverse permutation (old position p written to new position "
            "order[p], as a scatter or argsort(order) does): new position p must hold old position order[p], a "
            f"gather: {_GATHER}", _inverse),
    Mistake("feature_axis", "you reordered the feature axis (the last one of keys and values): the source positions "
            f"are dim -2 of [B, H, T_k, d]: {_GATHER}", lambda k, v, m, o: (k[..., o], v[..., o], m[..., o])),
    Mistake("head_axis", "you reordered the heads (dim 1): the source positions are dim -2 of [B, H, T_k, d]: "
            f"{_GATHER}", lambda k, v, m, o: (k[:, o], v[:, o], m[..., o])),
    Mistake("batch_axis", "you reordered the batch (dim 0): `order` reorders source positions, dim -2 of keys and "
            f"values and the last dim of key_mask: {_GATHER}", lambda k, v, m, o: (k[o], v[o], m[o])),
    Mistake("mask_wrong_dim", "you indexed key_mask on an axis of size 1: key_mask is [B, 1, 1, T_k], so its source "
            "positions are the last axis, key_mask[..., order]",
            lambda k, v, m, o: (k[..., o, :], v[..., o, :], m[:, :, o]), applies_when=_several_heads_and_rows),
    Mistake("unchanged", "you returned keys, values and key_mask unchanged: reorder their source positions so that "
            f"new position p holds old position order[p]: {_GATHER}", lambda k, v, m, o: (k, v, m)),
]


def _attend(case: Case, keys: Tensor, values: Tensor, key_mask: Tensor) -> tuple[Tensor, Tensor]:
    return scaled_dot_product_attention(_QUERIES[case.name], keys, values, key_mask)


def _order_test(case: Case, result: Any) -> tuple[bool, bool] | None:
    """With the learner's result as the source: (attention's output unchanged, its weights' columns reordered by
    ``order``), or None if the result cannot be attended over."""
    keys, values, key_mask, order = case.args
    try:
        new_keys, new_values, new_mask = result
        if not all(isinstance(x, Tensor) for x in (new_keys, new_values, new_mask)) or new_mask.dtype != torch.bool:
            return None
        output, weights = _attend(case, keys, values, key_mask)
        new_output, new_weights = _attend(case, new_keys, new_values, new_mask)
    except Exception:  # noqa: BLE001 - a result of the wrong form: the harness's message stands
        return None
    if new_output.shape != output.shape or new_weights.shape != weights.shape:
        return None
    return (same(new_output, output, 1e-5, 1e-4), same(new_weights, weights[..., order], 1e-5, 1e-4))


def _explain_order(hint: Hint, result: Any, case: Case) -> Hint | None:
    """An unnamed failure, with what attention over the learner's reordered source shows added to its message."""
    test = _order_test(case, result)
    if test is None or all(test):
        return None
    if test[0]:
        extra = ("Attention over your reordered source still gives the original output, so keys, values and mask "
                 "moved together, but not by `order`: new position p must hold old position order[p]")
    else:
        extra = ("Attention over your reordered source gives another output: cross-attention cannot see order, so "
                 f"moving keys, values and mask together along the source axis never changes it: {_GATHER}")
    return Hint(f"{str(hint).rstrip('.')}. {extra}", mistake=hint.mistake, case=hint.case)


@checker("Exercise 4 · permute_source(keys, values, key_mask, order)")
def check_permute_source(permute_source_fn: Callable[..., tuple[Tensor, Tensor, Tensor]]) -> str:
    """``permute_source(keys [B, H, T_k, d], values [B, H, T_k, d_v], key_mask [B, 1, 1, T_k], order [T_k]) ->
    (keys, values, key_mask)`` with new source position ``p`` holding old position ``order[p]``."""
    try:
        run_cases(permute_source_fn, reference=permute_source_reference, cases=SOURCE_CASES,
                  mistakes=SOURCE_MISTAKES, what="permute_source(keys, values, key_mask, order)",
                  outputs=("keys", "values", "key_mask"),
                  error_tips=[("with size 1", "an axis of size 1 was indexed with `order`: the source positions are "
                               f"dim -2 of keys and values ([B, H, T_k, d]) and the last dim of key_mask ([B, 1, 1, "
                               f"T_k]): {_GATHER}"),
                              ("index out of range", "`order` holds source positions 0 .. T_k - 1, so it indexes the "
                               f"source axis only: dim -2 of keys and values, the last dim of key_mask: {_GATHER}"),
                              ("is out of bounds for dimension", "`order` holds source positions 0 .. T_k - 1, so it "
                               "indexes the source axis only: dim -2 of keys and values, the last dim of key_mask: "
                               f"{_GATHER}")])
    except Hint as hint:
        raise second_look(hint, permute_source_fn, SOURCE_CASES, functools.partial(_explain_order, hint)) from None
    _confirm_order_test(permute_source_fn, SOURCE_CASES)
    return ("keys, values and mask reordered together by `order`: attention over them gives the same output, and "
            f"its weights' columns follow `order` ({len(SOURCE_CASES)} cases: T_k = H = d, a batch of 1, float64, "
            "padding, cycles of 3 to 9 positions)")


def _confirm_order_test(permute_source_fn: Callable[..., Any], cases: Sequence[Case]) -> None:
    """The property the exercise is about, on the learner's own (passing) result."""
    for case in cases:
        try:
            result = permute_source_fn(*clone(case.args))
        except Exception:  # noqa: BLE001 - it passed a moment ago: judged below as a result that fails the test
            result = None
        test = _order_test(case, result)
        if test is None or not all(test):
            raise Hint(f"case '{case.name}': your result matches the reference, but attention over it does not give "
                       "the original output on a second call: does your function draw random numbers or keep state?",
                       case=case.name)


MISTAKES = {
    "check_alignment_distance": DISTANCE_MISTAKES,
    "check_relative_position_buckets": BUCKET_MISTAKES,
    "check_wait_k_mask": WAIT_MISTAKES,
    "check_permute_source": SOURCE_MISTAKES,
}
CASES = {"check_alignment_distance": DISTANCE_CASES, "check_relative_position_buckets": BUCKET_CASES,
         "check_wait_k_mask": WAIT_CASES, "check_permute_source": SOURCE_CASES}
REFERENCES = {"check_alignment_distance": alignment_distance_reference,
              "check_relative_position_buckets": relative_position_buckets_reference,
              "check_wait_k_mask": wait_k_mask_reference, "check_permute_source": permute_source_reference}
