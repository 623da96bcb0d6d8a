"""Checkers for the exercises of lesson 09 (why cross-attention).

Each exercise is its reference, its cases and its list of named mistakes (``MISTAKES``), run by
``_harness.run_cases``; the last exercise compares a prediction with the notebook's own measurement.
References: ``course_lib.conditioning.masked_mean``, ``course_lib.masks.prefix_lm_mask`` and
``course_lib.metrics`` (``argmax_links``, ``alignment_error_rate``).

The decoder-only model reads ``source (n_source tokens), <sep>, target words`` and the query at position ``i``
writes (predicts) the token at ``i + 1``: ``<sep>`` writes target word 1, and the last position writes <eos>.
"""
from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from ..conditioning import CONDITIONERS, masked_mean
from ..masks import prefix_lm_mask
from ..metrics import alignment_error_rate, argmax_links
from ._answers import as_int, expect_int
from ._cases import Case, Mistake
from ._harness import run_cases
from ._results import Hint, NotDone, checker, short_repr

# --- Exercise 1 · masked_mean_pool(states, real) ---------------------------------------------------------------

def masked_mean_reference(states: Tensor, real: Tensor) -> Tensor:
    """``[B, D]``: the mean of ``states [B, S, D]`` over the positions where ``real [B, S]`` is True."""
    return masked_mean(states, real)


def _pool_case(name: str, lengths: list[int], s: int, d: int, seed: int, *, left: bool = False,
               dtype: torch.dtype = torch.float32) -> Case:
    """States with non-zero values at the padding too (as an encoder gives), and the mask of real tokens."""
    gen = torch.Generator().manual_seed(seed)
    states = torch.randn(len(lengths), s, d, generator=gen, dtype=dtype)  # [B, S, D]
    positions = torch.arange(s)
    n = torch.tensor(lengths)[:, None]  # [B, 1]
    real = positions >= s - n if left else positions < n  # [B, S]
    return Case(name, (states, real), batch=len(lengths))


# S != D everywhere, and B != D, so a mean over the wrong axis or a count that does not broadcast shows by shape
POOL_CASES = [
    _pool_case("B=3, varied padding, one row unpadded", [4, 6, 2], 6, 5, 90),
    _pool_case("batch of 1, padded", [3], 5, 4, 91),
    _pool_case("float64, B=2, padding on the left", [7, 3], 7, 3, 92, left=True, dtype=torch.float64),
]


def _masked_sum(states: Tensor, real: Tensor) -> Tensor:
    return (states * real[..., None].to(states.dtype)).sum(dim=1)  # [B, D]


def _count(real: Tensor, dtype: torch.dtype) -> Tensor:
    return real.sum(dim=1, keepdim=True).to(dtype)  # [B, 1]


_COUNT = "real.sum(dim=1, keepdim=True)"
POOL_MISTAKES = [
    Mistake("padding_included", f"you averaged over the padding too: states.mean(dim=1) counts the <pad> positions. "
            f"Zero them (states * real[..., None]) and divide by the number of real tokens per row, {_COUNT}",
            lambda states, real: states.mean(dim=1)),
    Mistake("divided_by_length", "you zeroed the padding, then divided by S, the padded length (as .mean(dim=1) "
            f"does): divide the sum by the number of real tokens in each row, {_COUNT}",
            lambda states, real: _masked_sum(states, real) / states.shape[1]),
    Mistake("sum_not_mean", f"that is the sum over the real tokens, not their mean: divide by the count, {_COUNT} "
            "(a 0/1 mask used as weights sums to the count, not to 1)", _masked_sum),
    Mistake("divided_by_total_count", "you divided by the number of real tokens in the whole batch (real.sum()): "
            f"divide each row by its own count, {_COUNT}",
            lambda states, real: _masked_sum(states, real) / real.sum().to(states.dtype)),
    Mistake("inverted_mask", "your mask is inverted: you averaged over the padding. `real` is True at the real "
            "source tokens: keep those, zero the others",
            lambda states, real: _masked_sum(states, ~real) / _count(~real, states.dtype)),
    Mistake("softmax_of_mask", "softmax of a 0/1 mask still gives every <pad> a weight (e^0 against e^1): use the "
            f"mask itself as weights and divide by their sum, {_COUNT}",
            lambda states, real: (torch.softmax(real.to(states.dtype), dim=1)[..., None] * states).sum(dim=1)),
    Mistake("whole_batch_pooled", "states[real] flattens the batch into [N, D], every real token of every "
            "sentence: its mean pools all the sentences together. Pool each row on its own: mask, sum over dim=1, "
            "divide by each row's count", lambda states, real: states[real].mean(dim=0)),
    Mistake("count_not_broadcast", f"the count has shape [B] and the sum [B, D]: keep the count's axis, {_COUNT} "
            "([B, 1] broadcasts against [B, D])",
            lambda states, real: _masked_sum(states, real) / real.sum(dim=1).to(states.dtype)),
    Mistake("mean_over_features", "mean over the wrong axis: [B, S] is one number per position, a mean over the "
            "features. Average over the positions (dim=1) to get one vector per sentence, [B, D]",
            lambda states, real: (states * real[..., None]).mean(dim=-1), match="shape"),
    Mistake("kept_dim", "your result is [B, 1, D]: the mean over the positions should drop that axis (no "
            "keepdim=True on the sum, or .squeeze(1))",
            lambda states, real: masked_mean(states, real)[:, None, :], match="shape"),
]


@checker("Exercise 1 · masked_mean_pool(states, real)")
def check_masked_mean(masked_mean_pool: Callable[[Tensor, Tensor], Tensor]) -> str:
    """``masked_mean_pool(states [B, S, D], real [B, S] bool) -> [B, D]``, the mean over the real tokens only."""
    return run_cases(masked_mean_pool, reference=masked_mean_reference, cases=POOL_CASES, mistakes=POOL_MISTAKES,
                     what="masked_mean_pool(states, real)",
                     error_tips=[("must match the size of tensor", f"divide by {_COUNT}: a count of shape [B, 1] "
                                  "broadcasts against the sum [B, D]")],
                     passed=f"the mean over the real tokens only, [B, D], whatever the padding ({len(POOL_CASES)} "
                            "cases, float32 and float64)")


# --- Exercise 2 · prefix_lm_mask_for(n_source, length) ---------------------------------------------------------

def prefix_lm_reference(n_source: int, length: int) -> Tensor:
    """bool ``[length, length]``, True = may attend: the source and <sep> (P = n_source + 1) see each other both
    ways, everything else is causal."""
    return prefix_lm_mask(n_source + 1, length)


def _prefix(prefix: int, length: int) -> Tensor:
    """The prefix-LM mask for any prefix length (clamped to the sequence)."""
    return prefix_lm_mask(max(0, min(prefix, length)), length)


_MASK_SIZES = [  # name, n_source, length
    ("3 source words, <sep>, 4 target positions", 3, 8),
    ("6 source words, 2 target positions", 6, 9),
    ("1 source word, a long target", 1, 12),
    ("4 source words, 1 target position", 4, 6),
]
MASK_CASES = [Case(name, (n_source, length),
                   info={"n_source": n_source, "P": n_source + 1, "sep": n_source, "length": length})
              for name, n_source, length in _MASK_SIZES]


def _in_prefix(n_source: int, length: int) -> Tensor:
    return torch.arange(length) < n_source + 1  # [L]


def _tril(n: int, diagonal: int = 0) -> Tensor:
    return torch.ones(n, n, dtype=torch.bool).tril(diagonal)


_P = "the prefix is the source *and* <sep>: P = n_source + 1 = {P} positions"
MASK_MISTAKES = [
    Mistake("causal_only", "that is the plain causal mask: the source is causal too. In a prefix-LM the source may "
            "see itself in both directions: the first n_source + 1 = {P} positions (source and <sep>) see each "
            "other both ways", lambda n, length: _tril(length)),
    Mistake("all_true", "every position sees every other, so the target sees its own future (the words it must "
            "predict). Only the prefix (source and <sep>, {P} positions) is bidirectional; after it, causal",
            lambda n, length: torch.ones(length, length, dtype=torch.bool)),
    Mistake("first_target_word_in_prefix", "the serious one: your prefix reaches one position too far, so the "
            "source and <sep> see the first target word, the word the model must predict from <sep>: a leak of the "
            "answer. The prefix is the source and <sep>, P = n_source + 1 = {P} positions, no more",
            lambda n, length: _prefix(n + 2, length)),
    Mistake("sep_outside_prefix", f"<sep> is left out of the bidirectional block, so the source cannot see it: {_P}",
            lambda n, length: _prefix(n, length)),
    Mistake("prefix_sees_target", "your prefix queries see the whole sequence, the target included: the "
            "bidirectional block is prefix x prefix only. A query in the prefix sees keys 0..{sep} (source and "
            "<sep>) and nothing after", lambda n, length: _tril(length) | _in_prefix(n, length)[:, None]),
    Mistake("transposed", "transposed: rows are queries and columns keys. Query i sees key j when j <= i (the lower "
            "triangle), or when both are in the prefix", lambda n, length: prefix_lm_reference(n, length).T),
    Mistake("inverted", "inverted: True must mean 'may attend' (the convention of F.scaled_dot_product_attention "
            "and of the course); yours is True where attention is blocked, like nn.MultiheadAttention's attn_mask. "
            "Flip it with ~", lambda n, length: ~prefix_lm_reference(n, length)),
    Mistake("no_diagonal", "the diagonal is missing after the prefix, so a target position cannot see itself: the "
            "causal part is torch.tril(..., diagonal=0)",
            lambda n, length: _tril(length, -1) | (_in_prefix(n, length)[:, None] & _in_prefix(n, length)[None, :])),
    Mistake("not_bool", "make it bool (.bool(), or build it from comparisons such as j <= i): "
            "F.scaled_dot_product_attention *adds* a float mask to the scores instead of blocking them, and refuses "
            "an int one", lambda n, length: prefix_lm_reference(n, length).long()),  # float too
    Mistake("batched_shape", "return [length, length]: no batch or head axes (a [L, L] mask broadcasts over both)",
            lambda n, length: prefix_lm_reference(n, length)[None, None], match="shape"),
    Mistake("one_extra_axis", "return [length, length], without the extra axis",
            lambda n, length: prefix_lm_reference(n, length)[None], match="shape"),
]


@checker("Exercise 2 · prefix_lm_mask_for(n_source, length)")
def check_prefix_lm_mask(prefix_lm_mask_for: Callable[[int, int], Tensor]) -> str:
    """``prefix_lm_mask_for(n_source, length) -> bool [length, length]``, True = may attend: the source and
    <sep> see each other both ways, the target is causal."""
    return run_cases(prefix_lm_mask_for, reference=prefix_lm_reference, cases=MASK_CASES, mistakes=MASK_MISTAKES,
                     what="prefix_lm_mask_for(n_source, length)",
                     passed="source and <sep> see each other both ways, the target is causal and never sees its "
                            f"future ({len(MASK_CASES)} cases)")


# --- Exercise 3 · target_source_block(weights, n_source, n_target) ---------------------------------------------

def target_source_block_reference(weights: Tensor, n_source: int, n_target: int) -> Tensor:
    """``[H, n_target, n_source]``: the rows that write target words 1..n_target (positions n_source, the <sep>,
    to n_source + n_target - 1), the columns of the source."""
    return weights[:, n_source:n_source + n_target, :n_source]


def _causal_weights(heads: int, n_source: int, n_target: int, seed: int,
                    dtype: torch.dtype = torch.float32) -> Tensor:
    """Random self-attention weights ``[H, L, L]`` of a causal model: each row sums to 1 over keys 0..i."""
    length = n_source + 1 + n_target
    gen = torch.Generator().manual_seed(seed)
    scores = 2.0 * torch.randn(heads, length, length, generator=gen, dtype=torch.float64)
    return torch.softmax(scores.masked_fill(~_tril(length), float("-inf")), dim=-1).to(dtype)


_BLOCK_SIZES = [  # name, heads, n_source, n_target, seed, dtype (n_source != n_target, n_target + 1 != n_source)
    ("2 heads, 4 source words, 3 target words", 2, 4, 3, 93, torch.float32),
    ("3 heads, 3 source words, 5 target words", 3, 3, 5, 94, torch.float32),
    ("float64, 4 heads, 6 source words, 2 target words", 4, 6, 2, 95, torch.float64),
]
BLOCK_CASES = [Case(name, (_causal_weights(h, s, t, seed, dtype), s, t),
                    info={"n_source": s, "n_target": t, "first": s, "last": s + t - 1})
               for name, h, s, t, seed, dtype in _BLOCK_SIZES]

_ROWS = ("row i writes the token at i + 1, so target word 1 is written by the <sep> query (position "
         "n_source = {first}): take rows {first}..{last}, weights[:, n_source:n_source + n_target]")
BLOCK_MISTAKES = [
    Mistake("rows_shifted", f"your rows are one position late: you labelled each row by the word it reads, not the "
            f"word it writes. {_ROWS}", lambda w, s, t: w[:, s + 1:s + 1 + t, :s]),
    Mistake("source_rows", f"those are the first rows, the queries of the source: {_ROWS}",
            lambda w, s, t: w[:, :t, :s]),
    Mistake("sep_column_included", "you kept the <sep> column: the columns are the source words, positions "
            "0..n_source - 1 (weights[..., :n_source]); <sep> is no source word",
            lambda w, s, t: w[:, s:s + t, :s + 1]),
    Mistake("eos_row_kept", "one row too many: rows n_source: (to the end) include the last position, which writes "
            "<eos>, not a target word. Keep n_target rows: weights[:, n_source:n_source + n_target]",
            lambda w, s, t: w[:, s:, :s]),
    Mistake("transposed", "transposed: the block is [H, n_target, n_source], one row per target word (query) and "
            "one column per source word (key)", lambda w, s, t: w[:, s:s + t, :s].transpose(-2, -1)),
    Mistake("heads_averaged", "you averaged the heads away: return one block per head, [H, n_target, n_source] "
            "(exercise 4 averages them)", lambda w, s, t: w[:, s:s + t, :s].mean(dim=0)),
    Mistake("one_column_too_many", "one column too many: the columns are the n_source source positions, "
            "0..n_source - 1; <sep> and the target are not source words", lambda w, s, t: w[:, s + 1:s + 1 + t, :s + 1],
            match="shape"),
    Mistake("one_row_too_many", f"one row too many: there are n_target = {{n_target}} target words. {_ROWS}",
            lambda w, s, t: w[:, s - 1:s + t, :s], match="shape"),
    Mistake("head_axis_dropped", "keep the head axis: the block is [H, n_target, n_source], one per head",
            lambda w, s, t: w[0, s:s + t, :s], match="shape"),
]


@checker("Exercise 3 · target_source_block(weights, n_source, n_target)")
def check_target_source_block(target_source_block: Callable[[Tensor, int, int], Tensor]) -> str:
    """``target_source_block(weights [H, L, L], n_source, n_target) -> [H, n_target, n_source]``: the rows that
    write the target words, the columns of the source."""
    return run_cases(target_source_block, reference=target_source_block_reference, cases=BLOCK_CASES,
                     mistakes=BLOCK_MISTAKES, what="target_source_block(weights, n_source, n_target)",
                     passed="the rows that write target words 1..n_target (from <sep> on) by the source columns: "
                            f"the cross-attention inside self-attention ({len(BLOCK_CASES)} cases)")


# --- Exercise 4 · hidden_alignment_aer(weights, n_source, n_target, gold) --------------------------------------

Links = Sequence[tuple[int, int]]


def hidden_alignment_reference(weights: Tensor, n_source: int, n_target: int, gold: Links) -> float:
    """AER of the argmax links of the target-source block averaged over the heads."""
    block = target_source_block_reference(weights, n_source, n_target).mean(dim=0)  # [n_target, n_source]
    return alignment_error_rate(argmax_links(block), gold)


def _hidden_weights(n_source: int, n_target: int, mean_peaks: list[int], head0_peaks: list[int], sep_row: int,
                    heads: int, seed: int, dtype: torch.dtype = torch.float32) -> Tensor:
    """Causal self-attention weights ``[H, L, L]`` whose rows n_source..L-1 (the n_target target words, then
    <eos>) peak on a chosen source word: head 0 on ``head0_peaks``, the other heads on ``mean_peaks`` (so the head
    mean follows ``mean_peaks``); in row ``sep_row`` of the block every head also looks hard at <sep>."""
    length = n_source + 1 + n_target
    gen = torch.Generator().manual_seed(seed)
    scores = 0.5 * torch.randn(heads, length, length, generator=gen, dtype=torch.float64)
    for j in range(n_target + 1):
        row = n_source + j
        scores[1:, row, mean_peaks[j]] += 4.0
        scores[0, row, head0_peaks[j]] += 3.0  # weaker: the mean follows the other heads, even with 2 heads
    scores[:, n_source + sep_row, n_source] += 6.0
    return torch.softmax(scores.masked_fill(~_tril(length), float("-inf")), dim=-1).to(dtype)


_HIDDEN = [  # name, n_source, n_target, mean_peaks (n_target + 1), head0_peaks, sep_row, heads, seed, gold
    ("3 heads, 4 source words, 5 target words", 4, 5, [1, 0, 3, 3, 2, 0], [2, 1, 3, 0, 2, 1], 1, 3, 96,
     [(1, 0), (0, 1), (3, 2), (3, 3), (1, 4), (2, 4)]),
    ("2 heads, 5 source words, 3 target words", 5, 3, [4, 2, 0, 1], [4, 1, 3, 2], 2, 2, 97,
     [(4, 0), (0, 1), (2, 1), (0, 2)]),
    ("float64, 4 heads, 3 source words, 4 target words", 3, 4, [2, 2, 0, 1, 0], [0, 2, 1, 1, 2], 0, 4, 98,
     [(0, 0), (2, 0), (2, 1), (0, 2), (1, 3)]),
]
HIDDEN_CASES = [Case(name, (_hidden_weights(s, t, mean, head0, sep, h, seed,
                                            torch.float64 if name.startswith("float64") else torch.float32), s, t,
                            gold), info={"n_source": s})
                for name, s, t, mean, head0, sep, h, seed, gold in _HIDDEN]


def _aer_of(block: Tensor, gold: Links) -> float:
    return alignment_error_rate(argmax_links(block), gold)


def _block(w: Tensor, s: int, t: int, *, rows: int = 0, extra_rows: int = 0, extra_columns: int = 0) -> Tensor:
    """The target-source block, shifted by ``rows``, with extra rows or columns: ``[H, rows, columns]``."""
    return w[:, s + rows:s + rows + t + extra_rows, :s + extra_columns]


_FORMULA = "AER = 1 - 2|A∩G| / (|A| + |G|)"
HIDDEN_MISTAKES = [
    Mistake("one_head", "you used one head: average the block over the heads first (.mean(dim=0)), then take the "
            "argmax of each row", lambda w, s, t, g: _aer_of(_block(w, s, t)[0], g)),
    Mistake("rows_shifted", "your rows are one position late: row i writes the token at i + 1, so target word j "
            "(counting from 0) is written by position n_source + j; the first is the <sep> query",
            lambda w, s, t, g: _aer_of(_block(w, s, t, rows=1).mean(0), g)),
    Mistake("sep_column_included", "the <sep> column is in your block, and some rows look at it most: keep the "
            "source columns only, 0..n_source - 1", lambda w, s, t, g: _aer_of(_block(w, s, t, extra_columns=1)
                                                                              .mean(0), g)),
    Mistake("eos_row_kept", "you kept the last row: it writes <eos>, which is no target word and has no gold "
            "link. Keep n_target rows", lambda w, s, t, g: _aer_of(_block(w, s, t, extra_rows=1).mean(0), g)),
    Mistake("argmax_wrong_axis", "argmax over the wrong axis: that gives one link per source word. For each target "
            "word (row) take the source word (column) with the most attention, argmax(dim=-1)",
            lambda w, s, t, g: alignment_error_rate(
                [(i, int(j)) for i, j in enumerate(_block(w, s, t).mean(0).argmax(dim=0).tolist())], g)),
    Mistake("links_target_source", "your links are (target, source); the gold links are (source index, target "
            "index)", lambda w, s, t, g: alignment_error_rate(
                [(j, i) for i, j in argmax_links(_block(w, s, t).mean(0))], g)),
    Mistake("accuracy_not_error", f"that is 2|A∩G| / (|A| + |G|), the agreement; the error rate is 1 minus it: "
            f"{_FORMULA} (0 = perfect)", lambda w, s, t, g: 1 - hidden_alignment_reference(w, s, t, g)),
    Mistake("percentage", "you returned a percentage; return the fraction (0 = perfect, 1 = disjoint)",
            lambda w, s, t, g: 100 * hidden_alignment_reference(w, s, t, g)),
    Mistake("no_link_matched", "AER 1.0: none of your links matched a gold link. If your links hold tensors (from "
            "iterating over argmax(...)), turn them into ints with int(...) or .tolist(): a tensor is hashed by "
            "identity, so it never meets the gold links' ints in a set", lambda w, s, t, g: 1.0),
]


@checker("Exercise 4 · hidden_alignment_aer(weights, n_source, n_target, gold)")
def check_hidden_alignment(hidden_alignment_aer: Callable[..., Any]) -> str:
    """``hidden_alignment_aer(weights [H, L, L], n_source, n_target, gold) -> float``: the AER of the argmax links
    of the target-source block averaged over the heads."""
    return run_cases(hidden_alignment_aer, reference=hidden_alignment_reference, cases=HIDDEN_CASES,
                     mistakes=HIDDEN_MISTAKES, what="hidden_alignment_aer(weights, n_source, n_target, gold)",
                     passed=f"argmax links of the head-averaged target-source block, {_FORMULA} "
                            f"({len(HIDDEN_CASES)} cases)")


# --- Exercise 5 · predict, then verify: which model fails first as the source grows ----------------------------

MODELS = tuple(CONDITIONERS)  # "one vector", "cross-attention", "GRU", "decoder-only", "prefix-LM"
NONE = "none"
_WHY = {
    "one vector": "its decoder sees the whole source as one vector, the mean of the encoder states: a fixed-size "
                  "bottleneck",
    "GRU": "it squeezes the whole source into the encoder's final state, one fixed-size vector",
    "cross-attention": "its decoder reads every encoder state through cross-attention: no bottleneck",
    "decoder-only": "it reads every source token through self-attention: it has no bottleneck",
    "prefix-LM": "it reads every source token through self-attention (the source even sees itself both ways): it "
                 "has no bottleneck",
}
# The hints' forms; the checker fills them in from the measurement (``wrong``: the guess each one answers, for a
# measurement ``{model: first failing length or None}``, used by the tests).
FIRST_FAILURE_MISTAKES = [
    Mistake("another_model", "the {guess} model is not the first to fall below 50 %", lambda m: _another(m)),
    Mistake("too_early", "the right model, but you expected it to fail too early", lambda m: (_first(m)[0],
                                                                                           _first(m)[1] - 3)),
    Mistake("too_late", "the right model, but you expected it to hold out too long",
            lambda m: (_first(m)[0], _first(m)[1] + 3)),
    Mistake("none_but_one_fails", "you predicted that no model falls below 50 %, but one does",
            lambda m: (NONE, None)),
    Mistake("none_fails", "no model falls below 50 % in the measured range", lambda m: (MODELS[0], 10)),
]
TOLERANCE = 2  # words


def _first(measured: dict[str, int | None]) -> tuple[str, int]:
    failing = {m: n for m, n in measured.items() if n is not None}
    model = min(failing, key=lambda m: failing[m])
    return model, failing[model]


def _another(measured: dict[str, int | None]) -> tuple[str, int]:
    model, length = _first(measured)
    return next(m for m in measured if measured[m] != length), length


def _normalise(name: str) -> str:
    return re.sub(r"[\s_\-]+", " ", name.strip().lower())


_BY_KEY = {_normalise(m): m for m in MODELS}


def _model_name(answer: Any, what: str, allow_none: bool) -> str:
    names = ", ".join(repr(m) for m in MODELS)
    extra = f", or {NONE!r} if you predict that no model falls below 50 %" if allow_none else ""
    if isinstance(answer, str):
        key = _normalise(answer)
        if key in _BY_KEY:
            return _BY_KEY[key]
        if allow_none and key in ("none", "no model", "nothing", "no one"):
            return NONE
    raise Hint(f"{what} should be one of the model names, {names}{extra}; got {short_repr(answer, 60)}",
               mistake="wrong_type")


def _measurement(measured: Any) -> dict[str, int | None]:
    if measured is None:
        raise NotDone("not done yet: measured is still None: run the cell that measures the trained models first")
    if not isinstance(measured, dict) or not measured:
        raise Hint("measured should be the notebook's dict {model name: first source length below 50 % exact "
                   f"match, or None}}; got {short_repr(measured, 80)}", mistake="wrong_type")
    out: dict[str, int | None] = {}
    for key, value in measured.items():
        model = _model_name(key, "each key of measured", allow_none=False)
        length = None if value is None else as_int(value)
        if value is not None and (length is None or length < 1):
            raise Hint(f"measured[{key!r}] should be a source length in words (or None: never below 50 %); got "
                       f"{short_repr(value, 60)}", mistake="wrong_type")
        out[model] = length
    return out


def _words(n: int) -> str:
    return f"{n} word{'s' if n != 1 else ''}"


def _summary(measured: dict[str, int | None]) -> str:
    parts = [f"{m} {'never' if n is None else f'at {_words(n)}'}" for m, n in measured.items()]
    return "Measured first source length below 50 % exact match: " + ", ".join(parts) + "."


@checker("Exercise 5 · predict, then verify: which model fails first")
def check_first_failure(guess_model: Any, guess_length: Any, measured: Any) -> str:
    """``guess_model``: the model (a key of ``cl.conditioning.CONDITIONERS``) whose exact match falls below 50 %
    at the shortest source length, or ``"none"`` if you predict that none does in the measured range;
    ``guess_length``: that length in words (within 2 words passes; ignored for ``"none"``). ``measured``: the
    notebook's ``{model: first source length below 50 %, or None}``."""
    if guess_model is None:
        raise NotDone("not done yet: guess_model is still None")
    guess = _model_name(guess_model, "guess_model", allow_none=True)
    length = None if guess == NONE else expect_int(guess_length, "guess_length")
    if length is not None and length < 1:
        raise Hint(f"guess_length is a source length in words (1 or more); got {length}", mistake="wrong_type")
    data = _measurement(measured)
    if guess != NONE and guess not in data:
        raise Hint(f"measured has no entry for the {guess} model (it has {', '.join(data)}): measure it, or guess "
                   "among those", mistake="not_measured")
    summary = _summary(data)
    failing = {m: n for m, n in data.items() if n is not None}
    if not failing:
        if guess == NONE:
            return f"right: no model falls below 50 % in the measured range. {summary}"
        raise Hint(f"no model falls below 50 % in the measured range: the sources here are too short to break any "
                   f"of them, so the answer is {NONE!r}. {summary}", mistake="none_fails")
    first = min(failing.values())
    leaders = [m for m, n in failing.items() if n == first]
    answer = " and ".join(f"the {m} model" for m in leaders)
    measured_answer = f"The measurement says {answer}, at {_words(first)}"
    if guess == NONE:
        raise Hint(f"not 'none': {answer} does fall below 50 %, at {_words(first)}. {summary}",
                   mistake="none_but_one_fails")
    assert length is not None
    if guess in leaders:
        why = _WHY.get(guess, "")
        if abs(length - first) <= TOLERANCE:
            return (f"right: the {guess} model falls below 50 % first, at {_words(first)} (you said {length}): "
                    f"{why}. {summary}")
        off = abs(length - first)
        if length < first:
            raise Hint(f"the right model, but too early by {_words(off)}: the {guess} model first falls below 50 % "
                       f"at {_words(first)}, so it holds out longer than you expected. {summary}", mistake="too_early")
        raise Hint(f"the right model, but too late by {_words(off)}: the {guess} model already falls below 50 % at "
                   f"{_words(first)}. {summary}", mistake="too_late")
    theirs = data[guess]
    fact = ("never falls below 50 % in this range" if theirs is None
            else f"falls below 50 % only at {_words(theirs)}, later")
    why = _WHY.get(guess, "")
    raise Hint(f"the {guess} model {fact}: {why}. {measured_answer}. {summary}", mistake="another_model")


MISTAKES = {
    "check_masked_mean": POOL_MISTAKES,
    "check_prefix_lm_mask": MASK_MISTAKES,
    "check_target_source_block": BLOCK_MISTAKES,
    "check_hidden_alignment": HIDDEN_MISTAKES,
    "check_first_failure": FIRST_FAILURE_MISTAKES,
}
CASES = {"check_masked_mean": POOL_CASES, "check_prefix_lm_mask": MASK_CASES,
         "check_target_source_block": BLOCK_CASES, "check_hidden_alignment": HIDDEN_CASES}
REFERENCES = {"check_masked_mean": masked_mean_reference, "check_prefix_lm_mask": prefix_lm_reference,
              "check_target_source_block": target_source_block_reference,
              "check_hidden_alignment": hidden_alignment_reference}
