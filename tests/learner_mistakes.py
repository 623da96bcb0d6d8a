"""A hidden set of realistic learner mistakes for the exercise checkers, written independently of them.

Every exercise of lessons 01-08 gets wrong answers a learner who read the lesson could plausibly write,
each with ``keywords`` (chosen from the nature of the mistake, before looking at any checker output): a
*specific* hint for that mistake contains at least one of them. Every exercise also gets one to three
correct alternative implementations (or equivalent answers) that a checker must accept.

The entries were written from the exercise notebooks only (``solutions/NN_*.ipynb``: the exercise text,
the worked answer and the check call), never from ``course_lib/checks`` or its tests.

``python tests/learner_mistakes.py`` prints a table per lesson and exercise and lists every generic hint
and every wrong pass; ``tests/test_learner_mistakes.py`` turns the same results into assertions.
"""
from __future__ import annotations

import copy
import inspect
import math
import os
import re
import sys
import tempfile
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

# The checkers never need the learner's trained model; keep anything they might cache out of ~/.cache.
os.environ.setdefault("COURSE_CACHE_DIR", tempfile.mkdtemp(prefix="course-cache-learner-mistakes-"))

import course_lib as cl  # noqa: E402
import course_lib.checks  # noqa: E402, F401  (makes cl.checks available)

SPECIFIC_HINT_GOAL = 0.90


@dataclass(frozen=True)
class Entry:
    """One answer a learner might give to one exercise."""

    lesson: str  # "01" ... "08"
    checker: str  # the function of cl.checks.lessonNN that checks the exercise
    name: str  # short and unique within the exercise
    answer: tuple[Any, ...]  # the arguments of the check call
    what: str  # one line: what the learner did
    keywords: tuple[str, ...] = ()  # lower case; any one of them in the message makes a hint specific
    correct: bool = False  # a correct alternative, which must pass

    @property
    def id(self) -> str:
        return f"{self.lesson}-{self.checker.removeprefix('check_')}-{self.name}"


@dataclass
class Outcome:
    """What the checker said about one entry."""

    entry: Entry
    status: str  # "pass", "fail", "not_done", or "error" when the checker itself raised
    message: str
    specific: bool = field(default=False)

    @property
    def wrong_pass(self) -> bool:
        return not self.entry.correct and self.status == "pass"

    @property
    def correct_failed(self) -> bool:
        return self.entry.correct and self.status != "pass"


ENTRIES: list[Entry] = []


def _add(entry: Entry) -> None:
    if any(e.id == entry.id for e in ENTRIES):
        raise ValueError(f"duplicate entry {entry.id}")
    if not entry.correct and not entry.keywords:
        raise ValueError(f"{entry.id}: a wrong entry needs keywords")
    if any(k != k.lower() for k in entry.keywords):
        raise ValueError(f"{entry.id}: keywords must be lower case")
    ENTRIES.append(entry)


def mistake(lesson: str, checker: str, name: str, keywords: Sequence[str], what: str) -> Callable:
    """Decorator: register a wrong implementation (the decorated function is the learner's answer)."""

    def register(fn: Callable) -> Callable:
        _add(Entry(lesson, checker, name, (fn,), what, tuple(keywords)))
        return fn

    return register


def alternative(lesson: str, checker: str, name: str, what: str) -> Callable:
    """Decorator: register a correct alternative implementation."""

    def register(fn: Callable) -> Callable:
        _add(Entry(lesson, checker, name, (fn,), what, correct=True))
        return fn

    return register


def wrong_answer(lesson: str, checker: str, name: str, answer: tuple, keywords: Sequence[str], what: str) -> None:
    """Register a wrong value for a "predict" exercise (``answer`` holds all the check call's arguments)."""
    _add(Entry(lesson, checker, name, answer, what, tuple(keywords)))


def right_answer(lesson: str, checker: str, name: str, answer: tuple, what: str) -> None:
    """Register an accepted equivalent value for a "predict" exercise."""
    _add(Entry(lesson, checker, name, answer, what, correct=True))


# Keyword families used by several exercises.
IN_PLACE = ["in place", "in-place", "modif", "mutat", "changed your", "changes its input", "changed the input",
            "overwr"]
DTYPE = ["dtype", "float64", "float32", "float16", "precision"]
SCALE = ["sqrt", "scale", "√"]
INT_TYPE = ["int", "whole number", "string", "str", "type", "number"]


# =====================================================================================================
# Lesson 01 · self-attention
# =====================================================================================================
L = "01"
C = "check_attention"


@mistake(L, C, "no_scale", SCALE, "forgets to divide the scores by sqrt(d_k)")
def _(q, k, v):
    w = torch.softmax(q @ k.transpose(-2, -1), dim=-1)
    return w @ v, w


@mistake(L, C, "divides_by_d_k", SCALE + ["d_k"], "divides by d_k instead of sqrt(d_k)")
def _(q, k, v):
    w = torch.softmax(q @ k.transpose(-2, -1) / q.shape[-1], dim=-1)
    return w @ v, w


@mistake(L, C, "softmax_over_queries", ["axis", "dim", "over the keys", "queries", "rows", "columns",
                                        "sum to 1"], "takes the softmax over dim=-2 (the queries)")
def _(q, k, v):
    w = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1]), dim=-2)
    return w @ v, w


@mistake(L, C, "k_dot_T", ["transpose", "batch", "leading", ".t", "dims", "mt"],
         "uses k.T, which reverses every axis once there is a batch dim")
def _(q, k, v):
    w = torch.softmax(q @ k.T / math.sqrt(q.shape[-1]), dim=-1)
    return w @ v, w


@mistake(L, C, "returns_output_only", ["pair", "tuple", "two", "attn_weights", "(output"],
         "returns only the output, not the pair (output, attn_weights)")
def _(q, k, v):
    w = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1]), dim=-1)
    return w @ v


@mistake(L, C, "pair_swapped", ["order", "swap", "first", "pair", "(output"],
         "returns (attn_weights, output) in the wrong order")
def _(q, k, v):
    w = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1]), dim=-1)
    return w, w @ v


@mistake(L, C, "scale_with_d_v", ["d_k", "d_v", "v.shape", "sqrt", "scale"],
         "scales by sqrt of v's last dim (d_v) instead of d_k")
def _(q, k, v):
    w = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(v.shape[-1]), dim=-1)
    return w @ v, w


@mistake(L, C, "casts_to_float32", DTYPE, "calls .float() on the inputs 'to be safe', so float64 comes back float32")
def _(q, k, v):
    q, k, v = q.float(), k.float(), v.float()
    w = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1]), dim=-1)
    return w @ v, w


@mistake(L, C, "scales_q_in_place", IN_PLACE, "scales q in place with q /= sqrt(d_k)")
def _(q, k, v):
    q /= math.sqrt(q.shape[-1])
    w = torch.softmax(q @ k.transpose(-2, -1), dim=-1)
    return w @ v, w


@alternative(L, C, "einsum", "einsum and F.softmax, scale as d_k ** -0.5")
def _(q, k, v):
    scores = torch.einsum("...qd,...kd->...qk", q, k) * q.shape[-1] ** -0.5
    w = F.softmax(scores, dim=-1)
    return torch.einsum("...qk,...kd->...qd", w, v), w


@alternative(L, C, "manual_stable_softmax", "softmax written by hand, max subtracted, k.mT")
def _(q, k, v):
    scores = torch.matmul(q, k.mT) / math.sqrt(k.shape[-1])
    e = torch.exp(scores - scores.amax(dim=-1, keepdim=True))
    w = e / e.sum(dim=-1, keepdim=True)
    return torch.matmul(w, v), w


C = "check_masked_attention"


def _scores(q, k):
    return q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])


@mistake(L, C, "inverted_mask", ["invert", "true means", "true =", "~mask", "hides the real", "opposite",
                                 "revers", "convention"], "fills -inf where the mask is True")
def _(q, k, v, mask):
    s = _scores(q, k).masked_fill(mask, float("-inf"))
    w = torch.softmax(s, dim=-1).nan_to_num(0.0)
    return w @ v, w


@mistake(L, C, "nan_on_empty_row", ["nan", "fully masked", "all blocked", "no key", "empty", "all masked"],
         "masks with -inf but does nothing about rows with no visible key")
def _(q, k, v, mask):
    w = torch.softmax(_scores(q, k).masked_fill(~mask, float("-inf")), dim=-1)
    return w @ v, w


@mistake(L, C, "minus_1e9", ["uniform", "fully masked", "all blocked", "no key", "-1e9", "empty", "all masked",
                             "zero"], "fills -1e9 instead of -inf: an empty row becomes uniform, not zeros")
def _(q, k, v, mask):
    w = torch.softmax(_scores(q, k).masked_fill(~mask, -1e9), dim=-1)
    return w @ v, w


@mistake(L, C, "mask_after_softmax", ["sum to 1", "renormal", "after the softmax", "before the softmax",
                                      "sums to"], "multiplies the softmax weights by the mask, no renormalising")
def _(q, k, v, mask):
    w = torch.softmax(_scores(q, k), dim=-1) * mask
    return w @ v, w


@mistake(L, C, "multiplies_scores", ["-inf", "multipl", "score of 0", "zero score", "weight exactly 0",
                                     "masked_fill", "blocked key"],
         "multiplies the scores by the mask (blocked scores become 0)")
def _(q, k, v, mask):
    w = torch.softmax(_scores(q, k) * mask, dim=-1)
    return w @ v, w


@mistake(L, C, "no_scale", SCALE, "masks correctly but forgets the 1/sqrt(d_k)")
def _(q, k, v, mask):
    s = (q @ k.transpose(-2, -1)).masked_fill(~mask, float("-inf"))
    w = torch.softmax(s, dim=-1).masked_fill(~mask.any(-1, keepdim=True), 0.0)
    return w @ v, w


@mistake(L, C, "any_without_keepdim", ["keepdim", "broadcast", "fully masked", "no key", "empty", "all blocked"],
         "zeroes empty rows with mask.any(dim=-1) without keepdim (broadcasts against the keys axis)")
def _(q, k, v, mask):
    w = torch.softmax(_scores(q, k).masked_fill(~mask, float("-inf")), dim=-1)
    w = w.masked_fill(~mask.any(dim=-1), 0.0).nan_to_num(0.0)
    return w @ v, w


@mistake(L, C, "unblocks_mask_in_place", IN_PLACE,
         "sets the learner's own mask to True on empty rows (to avoid NaN), then zeroes those rows")
def _(q, k, v, mask):
    empty = ~mask.any(dim=-1)  # [..., T_q]
    mask[empty] = True
    w = torch.softmax(_scores(q, k).masked_fill(~mask, float("-inf")), dim=-1)
    w = w.masked_fill(empty[..., None], 0.0)
    return w @ v, w


@alternative(L, C, "where_nan_to_num", "torch.where(mask, scores, -inf), then nan_to_num on the weights")
def _(q, k, v, mask):
    s = torch.where(mask, _scores(q, k), torch.tensor(float("-inf"), dtype=q.dtype))
    w = torch.nan_to_num(F.softmax(s, dim=-1), nan=0.0)
    return w @ v, w


@alternative(L, C, "where_on_rows", "-inf fill, softmax, torch.where on rows that have a key")
def _(q, k, v, mask):
    w = torch.softmax(_scores(q, k).masked_fill(mask.logical_not(), float("-inf")), dim=-1)
    w = torch.where(mask.any(dim=-1, keepdim=True), w, torch.zeros_like(w))
    return torch.matmul(w, v), w


C = "check_scale_prediction"
_SPREAD = ["spread", "sharper", "std", "variance", "one-hot", "grows", "sqrt(d_k)", "√d_k", "larger"]
wrong_answer(L, C, "A_nothing_changes", ("A",), _SPREAD, "thinks softmax normalisation undoes any scale")
wrong_answer(L, C, "C_flatter", ("C",), _SPREAD + ["flat", "uniform"], "thinks bigger d_k flattens the weights")
wrong_answer(L, C, "D_nan", ("D",), ["nan", "overflow", "subtract", "stable", "max", "finite"],
             "thinks exp() overflows to NaN")
wrong_answer(L, C, "two_letters", ("B or C",), ["one letter", "one of", "single", "a, b, c", '"a"', "letter"],
             "hedges with two letters")
right_answer(L, C, "lower_case_b", ("b",), "the right letter in lower case")

C = "check_duplicate_key_prediction"
wrong_answer(L, C, "copies_split_A", ([0.25, 0.3, 0.2, 0.25],), ["split", "share", "1.5", "normalis", "copies",
                                                                    "each copy", "full score", "divided", "more"],
             "splits A's weight between the two copies, the others unchanged")
wrong_answer(L, C, "unchanged_sum_1_5", ([0.5, 0.3, 0.2, 0.5],), ["sum to 1", "sums to", "1.5", "normalis"],
             "keeps the old weights and gives A' the same 0.5: the weights sum to 1.5")
wrong_answer(L, C, "three_numbers", ([1 / 3, 0.2, 0.2 / 1.5],), ["four", "4 ", "a′", "a'", "length"],
             "gives the new weights of A, B, C only, forgetting A'")
wrong_answer(L, C, "wrong_order", ([1 / 3, 1 / 3, 0.2, 0.2 / 1.5],), ["order", "a, b, c", "position"],
             "lists A and A' first")
wrong_answer(L, C, "percentages", ([33.3, 20.0, 13.3, 33.3],), ["percent", "fraction", "sum to 1", "sums to",
                                                                  "between 0 and 1", "probabilit"],
             "writes percentages")
right_answer(L, C, "rounded", ([0.333, 0.2, 0.133, 0.333],), "rounded to three decimals")
right_answer(L, C, "tensor", (torch.tensor([0.5, 0.3, 0.2, 0.5]) / 1.5,), "a tensor instead of a list")

# =====================================================================================================
# Lesson 02 · multi-head attention
# =====================================================================================================
L = "02"
C = "check_split_heads"


@mistake(L, C, "view_without_transpose", ["transpose", "move the head", "straight", "mix", "order", "view",
                                          "reshape"], "reshapes straight to [B, H, T, d_head], no transpose")
def _(x, n_heads):
    b, t, d = x.shape
    return x.reshape(b, n_heads, t, d // n_heads)


@mistake(L, C, "interleaved_heads", ["interleav", "every h-th", "block", "contiguous", "stride", "[h, d_head]",
                                     "d_head, h", "h * d_head"],
         "cuts the last axis as [d_head, H], so head h gets every H-th feature")
def _(x, n_heads):
    b, t, d = x.shape
    return x.view(b, t, d // n_heads, n_heads).permute(0, 3, 1, 2)


@mistake(L, C, "forgets_transpose", ["shape", "transpose", "head axis", "[b, h", "in front"],
         "cuts into heads but leaves [B, T, H, d_head]")
def _(x, n_heads):
    b, t, d = x.shape
    return x.view(b, t, n_heads, d // n_heads)


@mistake(L, C, "true_division", ["//", "integer", "float", "int", "division"],
         "computes d_head with / so view gets a float")
def _(x, n_heads):
    b, t, d = x.shape
    return x.view(b, t, n_heads, d / n_heads).transpose(1, 2)


@mistake(L, C, "batch_one_only", ["batch", "b > 1", "b=1", "b = 1", "first sentence", "several"],
         "written and tested on one sentence: drops the batch axis and adds it back")
def _(x, n_heads):
    t, d = x.shape[1], x.shape[2]
    return x[0].view(t, n_heads, d // n_heads).transpose(0, 1).unsqueeze(0)


@mistake(L, C, "casts_to_float32", DTYPE, "calls x.float() first")
def _(x, n_heads):
    x = x.float()
    b, t, d = x.shape
    return x.view(b, t, n_heads, d // n_heads).transpose(1, 2)


@alternative(L, C, "stack_of_splits", "torch.stack of x.split(d_head, dim=-1) along dim 1")
def _(x, n_heads):
    return torch.stack(x.split(x.shape[-1] // n_heads, dim=-1), dim=1)


@alternative(L, C, "unflatten_permute", "unflatten(-1, (H, -1)) then permute")
def _(x, n_heads):
    return x.unflatten(-1, (n_heads, -1)).permute(0, 2, 1, 3)


C = "check_merge_heads"


@mistake(L, C, "reshape_without_transpose", ["transpose", "positions", "mix", "order", "reshape", "view"],
         "reshapes [B, H, T, d_head] straight to [B, T, H * d_head]")
def _(x):
    b, h, t, d = x.shape
    return x.reshape(b, t, h * d)


@mistake(L, C, "view_after_transpose", ["contiguous", "reshape", "view"],
         "x.transpose(1, 2).view(...) on a non-contiguous tensor")
def _(x):
    b, h, t, d = x.shape
    return x.transpose(1, 2).view(b, t, h * d)


@mistake(L, C, "interleaved", ["interleav", "head 0", "order", "block", "concatenat", "side by side"],
         "permutes to [B, T, d_head, H] before flattening, interleaving the heads")
def _(x):
    b, h, t, d = x.shape
    return x.permute(0, 2, 3, 1).reshape(b, t, h * d)


@mistake(L, C, "averages_heads", ["sum", "mean", "average", "concatenat", "side by side", "shape", "h * d_head"],
         "averages the heads instead of concatenating them")
def _(x):
    return x.mean(dim=1)


@mistake(L, C, "batch_one_only", ["batch", "b > 1", "b=1", "b = 1", "first sentence", "several"],
         "merges x[0] and adds the batch axis back")
def _(x):
    h, t, d = x.shape[1:]
    return x[0].transpose(0, 1).reshape(t, h * d).unsqueeze(0)


@alternative(L, C, "cat_unbind", "torch.cat(x.unbind(1), dim=-1)")
def _(x):
    return torch.cat(x.unbind(dim=1), dim=-1)


@alternative(L, C, "transpose_flatten", "transpose(1, 2).flatten(2)")
def _(x):
    return x.transpose(1, 2).flatten(start_dim=2)


C = "check_mha_forward"


def _split(x, h):
    b, t, d = x.shape
    return x.view(b, t, h, d // h).transpose(1, 2)


def _merge(x):
    b, h, t, d = x.shape
    return x.transpose(1, 2).reshape(b, t, h * d)


def _mha(q, k, v, w_o, scale_dim=None, dim=-1):
    scores = q @ k.transpose(-2, -1) / math.sqrt(scale_dim or q.shape[-1])
    return _merge(torch.softmax(scores, dim=dim) @ v) @ w_o.T


@mistake(L, C, "weights_not_transposed", ["transpose", ".t", "w_q.t", "out_features", "in_features",
                                          "nn.linear", "[out, in]"], "projects with x @ w_q instead of x @ w_q.T")
def _(x, source, w_q, w_k, w_v, w_o, n_heads):
    q, k, v = _split(x @ w_q, n_heads), _split(source @ w_k, n_heads), _split(source @ w_v, n_heads)
    return _merge(torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1]), -1) @ v) @ w_o


@mistake(L, C, "keys_from_x", ["source", "keys and values", "cross", "from x"],
         "computes the keys and values from x, so cross-attention ignores the source")
def _(x, source, w_q, w_k, w_v, w_o, n_heads):
    q, k, v = _split(x @ w_q.T, n_heads), _split(x @ w_k.T, n_heads), _split(x @ w_v.T, n_heads)
    return _mha(q, k, v, w_o)


@mistake(L, C, "scale_d_model", ["d_head", "sqrt", "scale", "d_model"],
         "scales by sqrt(d_model) instead of sqrt(d_head)")
def _(x, source, w_q, w_k, w_v, w_o, n_heads):
    q, k, v = _split(x @ w_q.T, n_heads), _split(source @ w_k.T, n_heads), _split(source @ w_v.T, n_heads)
    return _mha(q, k, v, w_o, scale_dim=x.shape[-1])


@mistake(L, C, "no_output_projection", ["w_o", "output projection", "out_proj", "out projection"],
         "forgets the final @ w_o.T")
def _(x, source, w_q, w_k, w_v, w_o, n_heads):
    q, k, v = _split(x @ w_q.T, n_heads), _split(source @ w_k.T, n_heads), _split(source @ w_v.T, n_heads)
    return _merge(torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1]), -1) @ v)


@mistake(L, C, "one_big_head", ["head", "split", "n_heads"], "never splits into heads: one head of width d_model")
def _(x, source, w_q, w_k, w_v, w_o, n_heads):
    q, k, v = x @ w_q.T, source @ w_k.T, source @ w_v.T
    w = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1] // n_heads), dim=-1)
    return (w @ v) @ w_o.T


@mistake(L, C, "softmax_over_queries", ["axis", "dim", "over the keys", "queries", "rows", "sum to 1"],
         "softmax over dim=-2")
def _(x, source, w_q, w_k, w_v, w_o, n_heads):
    q, k, v = _split(x @ w_q.T, n_heads), _split(source @ w_k.T, n_heads), _split(source @ w_v.T, n_heads)
    return _mha(q, k, v, w_o, dim=-2)


@mistake(L, C, "split_by_view_only", ["transpose", "split", "head", "mix", "reshape"],
         "splits the heads with a plain view to [B, H, T, d_head]")
def _(x, source, w_q, w_k, w_v, w_o, n_heads):
    def split(t):
        return t.reshape(t.shape[0], n_heads, t.shape[1], -1)

    q, k, v = split(x @ w_q.T), split(source @ w_k.T), split(source @ w_v.T)
    return _mha(q, k, v, w_o)


@mistake(L, C, "reuses_query_length", ["t_k", "t_q", "length", "source length", "different length", "cross"],
         "unpacks B, T from x once and reuses T to split the source's keys and values")
def _(x, source, w_q, w_k, w_v, w_o, n_heads):
    b, t, d = x.shape
    q = (x @ w_q.T).view(b, t, n_heads, d // n_heads).transpose(1, 2)
    k = (source @ w_k.T)[:, :t].reshape(b, t, n_heads, d // n_heads).transpose(1, 2)
    v = (source @ w_v.T)[:, :t].reshape(b, t, n_heads, d // n_heads).transpose(1, 2)
    return _mha(q, k, v, w_o)


@mistake(L, C, "returns_pair", ["tuple", "pair", "only the output", "not the weights", "tensor"],
         "returns (output, attn_weights) as in lesson 01")
def _(x, source, w_q, w_k, w_v, w_o, n_heads):
    q, k, v = _split(x @ w_q.T, n_heads), _split(source @ w_k.T, n_heads), _split(source @ w_v.T, n_heads)
    w = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1]), -1)
    return _merge(w @ v) @ w_o.T, w


@alternative(L, C, "sdpa_and_linear", "F.linear projections and F.scaled_dot_product_attention")
def _(x, source, w_q, w_k, w_v, w_o, n_heads):
    q, k, v = (_split(F.linear(t, w), n_heads) for t, w in ((x, w_q), (source, w_k), (source, w_v)))
    return F.linear(_merge(F.scaled_dot_product_attention(q, k, v)), w_o)


@alternative(L, C, "einsum", "einsum over heads without split/merge helpers")
def _(x, source, w_q, w_k, w_v, w_o, n_heads):
    d_head = x.shape[-1] // n_heads
    q = torch.einsum("btd,ed->bte", x, w_q).unflatten(-1, (n_heads, d_head))
    k = torch.einsum("bsd,ed->bse", source, w_k).unflatten(-1, (n_heads, d_head))
    v = torch.einsum("bsd,ed->bse", source, w_v).unflatten(-1, (n_heads, d_head))
    w = torch.softmax(torch.einsum("bthe,bshe->bhts", q, k) / d_head**0.5, dim=-1)
    context = torch.einsum("bhts,bshe->bthe", w, v).flatten(2)
    return context @ w_o.T


C = "check_param_count"
wrong_answer(L, C, "no_biases", (4 * 512 * 512, False), ["bias"], "forgets the four bias vectors")
wrong_answer(L, C, "no_w_o", (3 * (512 * 512 + 512), False), ["w_o", "output projection", "out_proj", "four",
                                                                 "4 x", "4 ×"], "counts W_q, W_k, W_v only")
wrong_answer(L, C, "depends_on_heads", (4 * (512 * 512 + 512), True), ["head", "regroup", "slice", "same for",
                                                                         "does not change"],
             "right count, but thinks more heads add parameters")
wrong_answer(L, C, "per_head_matrices", (8 * 4 * (64 * 64 + 64), True), ["d_head", "per head", "slice",
                                                                           "512 x 512", "512 × 512", "head"],
             "counts separate 64 x 64 matrices per head")
wrong_answer(L, C, "bool_as_string", (4 * (512 * 512 + 512), "no"), ["bool", "true or false", "false"],
             "answers the second question with the string 'no'")
wrong_answer(L, C, "count_as_string", ("1,050,624", False), INT_TYPE, "writes the count as a formatted string")
right_answer(L, C, "float_count", (1050624.0, False), "the right count as a float")

C = "check_cross_attention_shapes"
_W, _O = (2, 4, 5, 9), (2, 5, 32)
wrong_answer(L, C, "weights_transposed", ((2, 4, 9, 5), _O), ["t_q", "t_k", "rows", "columns", "swap", "order"],
             "weights as [B, H, T_k, T_q]")
wrong_answer(L, C, "weights_no_heads", ((2, 5, 9), _O), ["head", "[b, h"], "weights without the head axis")
wrong_answer(L, C, "output_source_length", (_W, (2, 9, 32)), ["source length", "t_q", "target", "queries",
                                                               "does not appear", "t_k"],
             "the output takes the source's length")
wrong_answer(L, C, "output_per_head", (_W, (2, 4, 5, 8)), ["merge", "d_model", "out_proj", "heads are merged", "32",
                                                            "concatenat"], "the output still split into heads")
wrong_answer(L, C, "weights_d_head", ((2, 4, 5, 8), _O), ["t_k", "source", "keys", "9", "d_head"],
             "weights' last axis is d_head instead of T_k")
right_answer(L, C, "torch_size", (torch.Size(_W), torch.Size(_O)), "torch.Size objects, as .shape prints them")

# =====================================================================================================
# Lesson 03 · cross-attention
# =====================================================================================================
L = "03"
C = "check_cross_attention"


def _xattn(q, k, v, scale=None, dim=-1):
    w = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(scale or q.shape[-1]), dim=dim)
    return w @ v, w


@mistake(L, C, "roles_swapped", ["swap", "queries from", "decoder", "roles", "encoder", "the other way"],
         "queries from the encoder, keys and values from the decoder")
def _(decoder_states, encoder_out, w_q, w_k, w_v):
    return _xattn(encoder_out @ w_q.T, decoder_states @ w_k.T, decoder_states @ w_v.T)


@mistake(L, C, "self_attention", ["source", "encoder_out", "self-attention", "ignor", "depend", "encoder"],
         "takes keys and values from the decoder states too")
def _(decoder_states, encoder_out, w_q, w_k, w_v):
    return _xattn(decoder_states @ w_q.T, decoder_states @ w_k.T, decoder_states @ w_v.T)


@mistake(L, C, "weights_not_transposed", ["transpose", ".t", "out_features", "in_features", "nn.linear",
                                          "[d_k, d_model]", "[out, in]"], "projects with x @ w instead of x @ w.T")
def _(decoder_states, encoder_out, w_q, w_k, w_v):
    return _xattn(decoder_states @ w_q, encoder_out @ w_k, encoder_out @ w_v)


@mistake(L, C, "scale_d_model", ["d_k", "sqrt", "scale", "d_model"], "scales by sqrt(d_model)")
def _(decoder_states, encoder_out, w_q, w_k, w_v):
    return _xattn(decoder_states @ w_q.T, encoder_out @ w_k.T, encoder_out @ w_v.T, scale=decoder_states.shape[-1])


@mistake(L, C, "softmax_over_targets", ["axis", "dim", "source positions", "over the keys", "queries", "target",
                                        "rows", "sum to 1"], "softmax over dim=1 (the target positions)")
def _(decoder_states, encoder_out, w_q, w_k, w_v):
    return _xattn(decoder_states @ w_q.T, encoder_out @ w_k.T, encoder_out @ w_v.T, dim=1)


@mistake(L, C, "values_from_decoder", ["values", "v from", "encoder_out", "w_v", "value"],
         "keys from the encoder but values from the decoder")
def _(decoder_states, encoder_out, w_q, w_k, w_v):
    return _xattn(decoder_states @ w_q.T, encoder_out @ w_k.T, decoder_states @ w_v.T)


_KV_MEMO: dict = {}


@mistake(L, C, "memoised_keys", ["second", "different source", "cache", "stale", "previous", "reuse", "first call",
                                 "another source", "new source"],
         "computes the keys and values on the first call and reuses them (keyed by shape)")
def _(decoder_states, encoder_out, w_q, w_k, w_v):
    key = (tuple(encoder_out.shape), encoder_out.dtype, tuple(w_k.shape))
    if key not in _KV_MEMO:
        _KV_MEMO[key] = (encoder_out @ w_k.T, encoder_out @ w_v.T)
    k, v = _KV_MEMO[key]
    return _xattn(decoder_states @ w_q.T, k, v)


@mistake(L, C, "first_sentence_only", ["batch", "b > 1", "b=1", "b = 1", "first sentence", "several"],
         "computes sentence 0 and adds the batch axis back")
def _(decoder_states, encoder_out, w_q, w_k, w_v):
    out, w = _xattn(decoder_states[0] @ w_q.T, encoder_out[0] @ w_k.T, encoder_out[0] @ w_v.T)
    return out.unsqueeze(0), w.unsqueeze(0)


@alternative(L, C, "einsum_linear", "F.linear projections, einsum scores")
def _(decoder_states, encoder_out, w_q, w_k, w_v):
    q, k, v = F.linear(decoder_states, w_q), F.linear(encoder_out, w_k), F.linear(encoder_out, w_v)
    w = torch.einsum("btd,bsd->bts", q, k).div(q.shape[-1] ** 0.5).softmax(dim=-1)
    return torch.einsum("bts,bsd->btd", w, v), w


@alternative(L, C, "sdpa_output", "F.scaled_dot_product_attention for the output, the weights computed separately")
def _(decoder_states, encoder_out, w_q, w_k, w_v):
    q, k, v = decoder_states @ w_q.T, encoder_out @ w_k.T, encoder_out @ w_v.T
    w = torch.softmax(torch.bmm(q, k.transpose(1, 2)) / math.sqrt(w_q.shape[0]), dim=2)
    return F.scaled_dot_product_attention(q, k, v), w


C = "check_shapes"
_Q, _KV, _WS, _OS = (3, 4, 6, 16), (3, 4, 11, 16), (3, 4, 6, 11), (3, 6, 64)
wrong_answer(L, C, "q_before_split", ((3, 6, 64), _KV, _WS, _OS), ["head", "split", "d_head", "16"],
             "gives the queries before splitting into heads")
wrong_answer(L, C, "kv_target_length", (_Q, (3, 4, 6, 16), _WS, _OS), ["t_src", "source", "11", "encoder"],
             "gives the keys the target's length")
wrong_answer(L, C, "weights_transposed", (_Q, _KV, (3, 4, 11, 6), _OS), ["t_tgt", "t_src", "rows", "columns",
                                                                          "order", "swap"],
             "weights as [B, H, T_src, T_tgt]")
wrong_answer(L, C, "output_source_length", (_Q, _KV, _WS, (3, 11, 64)), ["target", "t_tgt", "length",
                                                                          "output has", "t_src"],
             "thinks the output has the source's length")
wrong_answer(L, C, "d_head_is_d_model", ((3, 4, 6, 64), (3, 4, 11, 64), _WS, _OS),
             ["d_head", "64 / 4", "16", "d_model / h", "divid", "split"],
             "each head keeps all 64 features")
wrong_answer(L, C, "heads_after_time", ((3, 6, 4, 16), (3, 11, 4, 16), _WS, _OS),
             ["order", "transpose", "axis", "[b, h", "in front"], "forgets to move the head axis in front of time")
right_answer(L, C, "torch_size", tuple(torch.Size(s) for s in (_Q, _KV, _WS, _OS)), "torch.Size objects")

C = "check_read_alignment"


@mistake(L, C, "argmax_over_targets", ["row", "dim", "axis", "column", "per target", "one per target",
                                       "target token"], "takes the argmax over dim=0 (down each column)")
def _(attn_weights, source_tokens):
    return [source_tokens[j] for j in attn_weights.argmax(dim=0).tolist()]


@mistake(L, C, "returns_indices", ["token", "index", "indices", "string", "str", "word"],
         "returns the column indices instead of the tokens")
def _(attn_weights, source_tokens):
    return attn_weights.argmax(dim=-1).tolist()


@mistake(L, C, "argmin", ["largest", "most", "argmin", "smallest", "max", "least"], "uses argmin")
def _(attn_weights, source_tokens):
    return [source_tokens[j] for j in attn_weights.argmin(dim=-1).tolist()]


@mistake(L, C, "joined_string", ["list", "str", "string", "join", "type"],
         "returns the tokens joined into one string")
def _(attn_weights, source_tokens):
    return " ".join(source_tokens[j] for j in attn_weights.argmax(dim=-1).tolist())


@mistake(L, C, "loops_over_source_length", ["t_tgt", "target", "length", "rows", "one per target", "longer",
                                            "shorter", "square"], "loops over range(len(source_tokens)) rows")
def _(attn_weights, source_tokens):
    return [source_tokens[int(attn_weights[i].argmax())] for i in range(len(source_tokens))]


@mistake(L, C, "max_values_as_index", ["values", "indices", "argmax", "max", "index"],
         "indexes with .max(dim=-1)[0], the values, instead of the indices")
def _(attn_weights, source_tokens):
    return [source_tokens[int(j)] for j in attn_weights.max(dim=-1)[0]]


@alternative(L, C, "python_max", "plain Python: max over range with a key")
def _(attn_weights, source_tokens):
    rows = attn_weights.tolist()
    return [source_tokens[max(range(len(row)), key=row.__getitem__)] for row in rows]


@alternative(L, C, "torch_argmax_dim1", "torch.argmax(attn_weights, dim=1), items one by one")
def _(attn_weights, source_tokens):
    return [source_tokens[i.item()] for i in torch.argmax(attn_weights, dim=1)]


C = "check_depends_on_source"


@mistake(L, C, "compares_flipped_source", ["flip", "order", "permut", "revers", "shuffl", "content"],
         "compares with encoder_out.flip(1), the lesson's trap")
def _(layer, decoder_states, encoder_out):
    with torch.no_grad():
        return not torch.allclose(layer(decoder_states, encoder_out), layer(decoder_states, encoder_out.flip(1)))


@mistake(L, C, "compares_shapes", ["shape"], "compares the output shapes for two sources")
def _(layer, decoder_states, encoder_out):
    other = torch.randn(encoder_out.shape[0], encoder_out.shape[1] + 2, encoder_out.shape[2])
    with torch.no_grad():
        return layer(decoder_states, encoder_out).shape != layer(decoder_states, other).shape


@mistake(L, C, "loose_threshold", ["small", "tolerance", "threshold", "little", "atol", "tiny"],
         "counts a change only when it exceeds 0.1")
def _(layer, decoder_states, encoder_out):
    with torch.no_grad():
        change = (layer(decoder_states, encoder_out) - layer(decoder_states, torch.randn_like(encoder_out))).abs()
    return bool(change.max() > 0.1)


@mistake(L, C, "compares_with_clone", ["same", "clone", "identical", "different source", "copy", "other source"],
         "compares with encoder_out.clone(), the same content")
def _(layer, decoder_states, encoder_out):
    with torch.no_grad():
        return not torch.equal(layer(decoder_states, encoder_out), layer(decoder_states, encoder_out.clone()))


@mistake(L, C, "returns_float", ["bool", "true or false", "float", "number", "type"],
         "returns the size of the change (a float) instead of True/False")
def _(layer, decoder_states, encoder_out):
    with torch.no_grad():
        change = layer(decoder_states, encoder_out) - layer(decoder_states, torch.randn_like(encoder_out))
    return change.abs().max().item()


@mistake(L, C, "perturbs_source_in_place", IN_PLACE, "adds noise to encoder_out in place between the two calls")
def _(layer, decoder_states, encoder_out):
    with torch.no_grad():
        before = layer(decoder_states, encoder_out)
        encoder_out.add_(torch.randn_like(encoder_out))
        return not torch.allclose(before, layer(decoder_states, encoder_out))


@mistake(L, C, "changes_decoder_states", ["decoder_states", "source", "encoder_out", "wrong input", "queries",
                                          "target"], "changes decoder_states instead of the source")
def _(layer, decoder_states, encoder_out):
    with torch.no_grad():
        return not torch.allclose(layer(decoder_states, encoder_out),
                                  layer(torch.randn_like(decoder_states), encoder_out))


@alternative(L, C, "exact_equal", "a fresh random source and torch.equal")
def _(layer, decoder_states, encoder_out):
    with torch.no_grad():
        return not torch.equal(layer(decoder_states, encoder_out), layer(decoder_states, torch.randn_like(encoder_out)))


@alternative(L, C, "two_random_sources", "two fresh random sources, a small threshold")
def _(layer, decoder_states, encoder_out):
    with torch.no_grad():
        a = layer(decoder_states, torch.randn_like(encoder_out))
        b = layer(decoder_states, torch.randn_like(encoder_out) * 3)
    return bool((a - b).abs().max() > 1e-6)


C = "check_suspect"
_NAME = ["name", "string", "letter", '"a"', "'a'", "str", "one of"]
wrong_answer(L, C, "a", ("a",), ["changes", "reads", "depends", "real", "source"], "picks layer a")
wrong_answer(L, C, "b", ("b",), ["changes", "reads", "depends", "real", "source"], "picks layer b")
wrong_answer(L, C, "layer_object", (cl.checks.lesson03.suspect_layers(torch.device("cpu"))["c"],), _NAME,
             "gives the layer object instead of its name")
wrong_answer(L, C, "bool_result", (False,), _NAME, "gives depends_on_source's result, False")
wrong_answer(L, C, "list", (["c"],), _NAME + ["list"], "a list holding the name")

# =====================================================================================================
# Lesson 04 · masks
# =====================================================================================================
L = "04"
C = "check_padding_mask"
_INVERT = ["invert", "true at real", "true =", "true means", "opposite", "~", "revers", "convention", "swapped"]
_PAD_ID = ["pad_id", "hard-coded", "hardcoded", "other than 0", "given pad", "pad id"]


@mistake(L, C, "inverted", _INVERT, "True at padding")
def _(token_ids, pad_id):
    return (token_ids == pad_id)[:, None, None, :]


@mistake(L, C, "hard_coded_zero", _PAD_ID, "compares with 0 instead of pad_id")
def _(token_ids, pad_id):
    return (token_ids != 0)[:, None, None, :]


@mistake(L, C, "shape_b1s", ["shape", "[b, 1, 1, s]", "broadcast", "unsqueeze", "dims", "axes"],
         "returns [B, 1, S]")
def _(token_ids, pad_id):
    return (token_ids != pad_id).unsqueeze(1)


@mistake(L, C, "masks_queries", ["shape", "[b, 1, 1, s]", "keys", "last axis", "queries", "rows"],
         "returns [B, 1, S, 1], which masks queries rather than keys")
def _(token_ids, pad_id):
    return (token_ids != pad_id)[:, None, :, None]


@mistake(L, C, "float_mask", ["bool", "dtype", "float"], "returns a float mask of 1.0/0.0")
def _(token_ids, pad_id):
    return (token_ids != pad_id).float()[:, None, None, :]


@mistake(L, C, "greater_than_pad", _PAD_ID + [">", "greater", "!=", "larger", "real word"],
         "uses token_ids > pad_id (fine for pad 0, wrong for pad_id=3)")
def _(token_ids, pad_id):
    return (token_ids > pad_id)[:, None, None, :]


@alternative(L, C, "ne_unsqueeze", "token_ids.ne(pad_id) with two unsqueezes")
def _(token_ids, pad_id):
    return token_ids.ne(pad_id).unsqueeze(1).unsqueeze(2)


@alternative(L, C, "not_eq_view", "~(ids == pad_id) viewed as [B, 1, 1, S]")
def _(token_ids, pad_id):
    return (~(token_ids == pad_id)).view(token_ids.shape[0], 1, 1, -1)


C = "check_decoder_mask"


def _pad(ids, pad_id):
    return (ids != pad_id)[:, None, None, :]


def _tril(n):
    return torch.ones(n, n, dtype=torch.bool).tril()


@mistake(L, C, "triu", ["triu", "tril", "future", "upper", "lower", "causal", "j <= i"], "uses triu: sees the future")
def _(tgt_ids, pad_id):
    n = tgt_ids.shape[1]
    return _pad(tgt_ids, pad_id) & torch.ones(n, n, dtype=torch.bool).triu()


@mistake(L, C, "strict_tril", ["diagonal", "itself", "strict", "j <= i", "j < i", "own position"],
         "tril(-1): a token may not see itself")
def _(tgt_ids, pad_id):
    n = tgt_ids.shape[1]
    return _pad(tgt_ids, pad_id) & torch.ones(n, n, dtype=torch.bool).tril(-1)


@mistake(L, C, "pads_queries", ["keys", "queries", "rows", "columns", "key padding", "key j"],
         "applies the padding to the queries (rows) instead of the keys")
def _(tgt_ids, pad_id):
    return (tgt_ids != pad_id)[:, None, :, None] & _tril(tgt_ids.shape[1])


@mistake(L, C, "or_instead_of_and", ["both", "&", "union", "| ", "or instead", "logical and", "intersect"],
         "combines with | instead of &")
def _(tgt_ids, pad_id):
    return _pad(tgt_ids, pad_id) | _tril(tgt_ids.shape[1])


@mistake(L, C, "causal_only", ["padding", "pad"], "forgets the padding")
def _(tgt_ids, pad_id):
    n = tgt_ids.shape[1]
    return _tril(n).expand(tgt_ids.shape[0], 1, n, n)


@mistake(L, C, "padding_only", ["causal", "future", "tril"], "forgets the causal part")
def _(tgt_ids, pad_id):
    n = tgt_ids.shape[1]
    return _pad(tgt_ids, pad_id).expand(-1, 1, n, n)


@mistake(L, C, "no_head_axis", ["shape", "[b, 1, t, t]", "head axis", "dims", "axes"], "returns [B, T, T]")
def _(tgt_ids, pad_id):
    return (tgt_ids != pad_id)[:, None, :] & _tril(tgt_ids.shape[1])


@mistake(L, C, "float_ones_times", ["bool", "dtype", "float"],
         "torch.ones(T, T).tril() without dtype=bool, combined with *: a float mask")
def _(tgt_ids, pad_id):
    n = tgt_ids.shape[1]
    return _pad(tgt_ids, pad_id) * torch.ones(n, n).tril()


@alternative(L, C, "arange_compare", "causal part from arange comparisons")
def _(tgt_ids, pad_id):
    pos = torch.arange(tgt_ids.shape[1])
    causal = pos[None, :] <= pos[:, None]  # [T, T]: key j <= query i
    return causal[None, None] & (tgt_ids != pad_id)[:, None, None, :]


@alternative(L, C, "torch_tril_logical_and", "torch.tril of a bool ones, torch.logical_and")
def _(tgt_ids, pad_id):
    n = tgt_ids.shape[1]
    return torch.logical_and(torch.tril(torch.ones((n, n), dtype=torch.bool)),
                             tgt_ids.ne(pad_id).view(-1, 1, 1, n))


C = "check_key_padding_mask"


@mistake(L, C, "not_inverted", ["invert", "true = ignore", "true means ignore", "~", "opposite", "ignore",
                                "revers", "convention"], "squeezes the course mask without inverting it")
def _(mask):
    return mask[:, 0, 0, :]


@mistake(L, C, "squeeze_all", ["batch", "squeeze", "b = 1", "b=1", "shape", "[b, s]"],
         "uses ~mask.squeeze(), which also drops the batch axis when B = 1")
def _(mask):
    return ~mask.squeeze()


@mistake(L, C, "shape_b1s", ["shape", "[b, s]", "dims", "axes"], "returns [B, 1, S]")
def _(mask):
    return ~mask[:, 0]


@mistake(L, C, "float_mask", ["bool", "dtype", "float", "additive"],
         "returns a float 1.0/0.0 tensor (which nn.MultiheadAttention adds to the scores)")
def _(mask):
    return (~mask[:, 0, 0, :]).float()


@mistake(L, C, "one_minus_int", ["bool", "dtype", "int", "~"], "computes 1 - mask.int()")
def _(mask):
    return 1 - mask[:, 0, 0, :].int()


@mistake(L, C, "logical_not_in_place", IN_PLACE, "mask.logical_not_() flips the caller's mask in place")
def _(mask):
    return mask.logical_not_()[:, 0, 0, :]


@alternative(L, C, "eq_false_reshape", "mask.reshape(B, -1) == False")
def _(mask):
    return mask.reshape(mask.shape[0], -1) == False  # noqa: E712


@alternative(L, C, "squeeze_dims_logical_not", "squeeze(2).squeeze(1).logical_not()")
def _(mask):
    return mask.squeeze(2).squeeze(1).logical_not()


C = "check_additive_mask"


@mistake(L, C, "inverted", ["invert", "opposite", "true =", "true means", "swap", "revers", "-inf where true"],
         "puts -inf where the mask is True")
def _(mask):
    return torch.zeros(mask.shape).masked_fill(mask, float("-inf"))


@mistake(L, C, "minus_1e9", ["-inf", "inf", "-1e9", "finite", "large negative"], "uses -1e9 for blocked positions")
def _(mask):
    return torch.zeros(mask.shape).masked_fill(~mask, -1e9)


@mistake(L, C, "bool_to_float", ["0.0", "-inf", "additive", "1.0", "multipl"], "returns mask.float()")
def _(mask):
    return mask.float()


@mistake(L, C, "numpy_where", ["tensor", "numpy", "ndarray", "type"], "uses np.where and returns a numpy array")
def _(mask):
    return np.where(mask.numpy(), 0.0, -np.inf)


@mistake(L, C, "one_where_true", ["0.0", "1.0", "zero where", "where true", "0 where"],
         "mask.float().masked_fill(~mask, -inf): 1.0 where True")
def _(mask):
    return mask.float().masked_fill(~mask, float("-inf"))


@mistake(L, C, "times_minus_inf", ["nan", "0 * -inf", "0 * inf", "multipl", "0 × -inf"],
         "(~mask).float() * -inf, which gives NaN where the mask is True")
def _(mask):
    return (~mask).float() * float("-inf")


@mistake(L, C, "float64", ["float32", "dtype", "float64"], "builds it in float64")
def _(mask):
    return torch.zeros(mask.shape, dtype=torch.float64).masked_fill(~mask, float("-inf"))


@alternative(L, C, "torch_where", "torch.where(mask, 0.0, -inf)")
def _(mask):
    return torch.where(mask, 0.0, float("-inf")).to(torch.float32)


@alternative(L, C, "log_of_float", "torch.log(mask.float()): log 1 = 0, log 0 = -inf")
def _(mask):
    return torch.log(mask.to(torch.float32))


C = "check_masked_softmax"


@mistake(L, C, "nan_rows", ["nan", "no visible key", "empty", "fully masked", "all masked", "no key"],
         "plain -inf fill and softmax")
def _(attn_scores, mask):
    return torch.softmax(attn_scores.masked_fill(~mask, float("-inf")), dim=-1)


@mistake(L, C, "minus_1e9", ["uniform", "empty", "-1e9", "no visible", "zero", "no key", "fully masked"],
         "fills -1e9: rows with no key come out uniform")
def _(attn_scores, mask):
    return torch.softmax(attn_scores.masked_fill(~mask, -1e9), dim=-1)


@mistake(L, C, "inverted", ["invert", "opposite", "true =", "true means", "~mask", "revers", "convention"],
         "masks where the mask is True")
def _(attn_scores, mask):
    w = torch.softmax(attn_scores.masked_fill(mask, float("-inf")), dim=-1)
    return w.nan_to_num(0.0)


@mistake(L, C, "float32_softmax", DTYPE + ["same dtype"], "softmax on attn_scores.float()")
def _(attn_scores, mask):
    w = torch.softmax(attn_scores.float().masked_fill(~mask, float("-inf")), dim=-1)
    return w.nan_to_num(0.0)


@mistake(L, C, "fills_scores_in_place", IN_PLACE, "uses masked_fill_ on the caller's scores")
def _(attn_scores, mask):
    attn_scores.masked_fill_(~mask, float("-inf"))
    return torch.softmax(attn_scores, dim=-1).nan_to_num(0.0)


@mistake(L, C, "softmax_dim_1", ["dim", "axis", "last", "-1", "keys", "over the keys", "sum to 1"],
         "softmax over dim=1, as on a 2-D [T_q, T_k] example")
def _(attn_scores, mask):
    return torch.softmax(attn_scores.masked_fill(~mask, float("-inf")), dim=1).nan_to_num(0.0)


@mistake(L, C, "times_mask_after", ["sum to 1", "renormal", "before the softmax", "sums to", "after the softmax"],
         "softmax of the raw scores, then multiplied by the mask")
def _(attn_scores, mask):
    return torch.softmax(attn_scores, dim=-1) * mask


@mistake(L, C, "boolean_index_assign", ["broadcast", "shape", "in place", "modif", "mutat", "same shape"],
         "attn_scores[~mask] = -inf: needs a full-shape mask and changes the caller's scores")
def _(attn_scores, mask):
    attn_scores[~mask] = float("-inf")
    return torch.softmax(attn_scores, dim=-1).nan_to_num(0.0)


@mistake(L, C, "breaks_on_float16", ["float16", "half", "overflow", "dtype", "-1e30", "any float"],
         "fills -1e30 ('very negative') and zeroes empty rows: right in float32/64, but float16 cannot hold -1e30")
def _(attn_scores, mask):
    w = torch.softmax(attn_scores.masked_fill(~mask, -1e30), dim=-1)
    return w.masked_fill(~mask.any(dim=-1, keepdim=True), 0.0)


@alternative(L, C, "nan_to_num", "softmax of the -inf-filled scores, NaN turned into 0")
def _(attn_scores, mask):
    return torch.nan_to_num(torch.softmax(attn_scores.masked_fill(~mask, float("-inf")), dim=-1), nan=0.0)


@alternative(L, C, "manual_exp", "exp of max-shifted scores times the mask, divided by a clamped sum")
def _(attn_scores, mask):
    s = attn_scores.masked_fill(~mask, float("-inf"))
    m = s.amax(dim=-1, keepdim=True)
    m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
    e = torch.exp(s - m)
    return e / e.sum(dim=-1, keepdim=True).clamp_min(torch.finfo(attn_scores.dtype).tiny)


C = "check_packed_causal_mask"


@mistake(L, C, "same_document_only", ["causal", "future", "j <= i", "tril"], "forgets the causal part")
def _(segment_ids):
    return segment_ids[:, None, :, None] == segment_ids[:, None, None, :]


@mistake(L, C, "causal_only", ["document", "segment", "same", "block"], "forgets the documents")
def _(segment_ids):
    b, n = segment_ids.shape
    return _tril(n).expand(b, 1, n, n)


@mistake(L, C, "or_instead_of_and", ["both", "&", "union", "| ", "or instead", "logical and", "intersect"],
         "same document | causal")
def _(segment_ids):
    same = segment_ids[:, None, :, None] == segment_ids[:, None, None, :]
    return same | _tril(segment_ids.shape[1])


@mistake(L, C, "no_head_axis", ["shape", "[b, 1, t, t]", "head", "dims", "axes"], "returns [B, T, T]")
def _(segment_ids):
    return (segment_ids[:, :, None] == segment_ids[:, None, :]) & _tril(segment_ids.shape[1])


@mistake(L, C, "first_row_only", ["batch", "every sentence", "each row", "first row", "b > 1", "several"],
         "builds the mask of row 0 and adds the batch axis")
def _(segment_ids):
    s = segment_ids[0]
    return ((s[:, None] == s[None, :]) & _tril(s.shape[0]))[None, None]


@mistake(L, C, "triu", ["triu", "future", "upper", "j <= i", "causal", "tril"], "uses triu for the causal part")
def _(segment_ids):
    n = segment_ids.shape[1]
    same = segment_ids[:, None, :, None] == segment_ids[:, None, None, :]
    return same & torch.ones(n, n, dtype=torch.bool).triu()


@mistake(L, C, "int_mask", ["bool", "dtype", "int"], "multiplies int tensors: an int mask")
def _(segment_ids):
    n = segment_ids.shape[1]
    same = (segment_ids[:, None, :, None] == segment_ids[:, None, None, :]).int()
    return same * torch.ones(n, n, dtype=torch.int).tril()


@alternative(L, C, "tril_of_same", "torch.tril applied to the batched same-document mask")
def _(segment_ids):
    return torch.tril(segment_ids.unsqueeze(-1).eq(segment_ids.unsqueeze(-2))).unsqueeze(1)


@alternative(L, C, "python_loops", "plain loops over rows, queries and keys")
def _(segment_ids):
    b, n = segment_ids.shape
    out = torch.zeros(b, 1, n, n, dtype=torch.bool)
    for r in range(b):
        for i in range(n):
            for j in range(i + 1):
                out[r, 0, i, j] = bool(segment_ids[r, i] == segment_ids[r, j])
    return out


C = "check_empty_rows_prediction"
_LEFT = ["left", "pad", "before it", "at or before", "itself", "only keys", "sees only"]
wrong_answer(L, C, "zero", (0,), _LEFT, "thinks a token always sees itself, so no row is empty")
wrong_answer(L, C, "one", (1,), _LEFT, "counts only the first query of the second sentence")
wrong_answer(L, C, "two", (2,), _LEFT, "counts queries 1 and 2, not query 0")
wrong_answer(L, C, "string", ("3",), INT_TYPE, "the right count as a string")
wrong_answer(L, C, "list", ([3],), INT_TYPE + ["list"], "the right count inside a list")
right_answer(L, C, "float", (3.0,), "3.0")

# =====================================================================================================
# Lesson 05 · the encoder-decoder
# =====================================================================================================
L = "05"
C = "check_sinusoidal_positions"


def _freq(d_model):
    return 1.0 / 10000.0 ** (torch.arange(0, d_model, 2, dtype=torch.float32) / d_model)


@mistake(L, C, "sin_cos_swapped", ["sin", "cos", "swap", "even", "odd"], "cosines in even features, sines in odd")
def _(max_len, d_model):
    pos = torch.arange(max_len, dtype=torch.float32)[:, None]
    table = torch.zeros(max_len, d_model)
    table[:, 0::2] = torch.cos(pos * _freq(d_model))
    table[:, 1::2] = torch.sin(pos * _freq(d_model))
    return table


@mistake(L, C, "halves_concatenated", ["interleav", "concatenat", "halves", "even", "odd", "0::2"],
         "[sin | cos] halves instead of interleaving")
def _(max_len, d_model):
    pos = torch.arange(max_len, dtype=torch.float32)[:, None]
    return torch.cat([torch.sin(pos * _freq(d_model)), torch.cos(pos * _freq(d_model))], dim=-1)


@mistake(L, C, "exponent_i", ["2i", "exponent", "frequen", "wavelength"], "uses 10000^(i/d_model) instead of 2i")
def _(max_len, d_model):
    pos = torch.arange(max_len, dtype=torch.float32)[:, None]
    freq = 1.0 / 10000.0 ** (torch.arange(d_model // 2, dtype=torch.float32) / d_model)
    table = torch.zeros(max_len, d_model)
    table[:, 0::2], table[:, 1::2] = torch.sin(pos * freq), torch.cos(pos * freq)
    return table


@mistake(L, C, "frequency_per_feature", ["share", "frequen", "2i", "pair", "exponent"],
         "one frequency per feature: 2i and 2i+1 do not share")
def _(max_len, d_model):
    pos = torch.arange(max_len, dtype=torch.float32)[:, None]
    angle = pos / 10000.0 ** (torch.arange(d_model, dtype=torch.float32) / d_model)
    table = torch.sin(angle)
    table[:, 1::2] = torch.cos(angle[:, 1::2])
    return table


@mistake(L, C, "positions_from_1", ["start at 0", "position 0", "off by one", "shift", "from 0", "row 0", "start"],
         "positions 1..max_len")
def _(max_len, d_model):
    pos = torch.arange(1, max_len + 1, dtype=torch.float32)[:, None]
    table = torch.zeros(max_len, d_model)
    table[:, 0::2], table[:, 1::2] = torch.sin(pos * _freq(d_model)), torch.cos(pos * _freq(d_model))
    return table


@mistake(L, C, "numpy_table", ["tensor", "numpy", "ndarray", "type"], "builds it with numpy and returns an ndarray")
def _(max_len, d_model):
    pos = np.arange(max_len)[:, None]
    freq = 1.0 / 10000.0 ** (np.arange(0, d_model, 2) / d_model)
    table = np.zeros((max_len, d_model), dtype=np.float32)
    table[:, 0::2], table[:, 1::2] = np.sin(pos * freq), np.cos(pos * freq)
    return table


@mistake(L, C, "transposed", ["shape", "transpose", "[max_len, d_model]", "rows"], "returns [d_model, max_len]")
def _(max_len, d_model):
    pos = torch.arange(max_len, dtype=torch.float32)[:, None]
    table = torch.zeros(max_len, d_model)
    table[:, 0::2], table[:, 1::2] = torch.sin(pos * _freq(d_model)), torch.cos(pos * _freq(d_model))
    return table.T


@alternative(L, C, "exp_log", "frequencies via exp(-ln(10000) * 2i / d_model), stack and flatten")
def _(max_len, d_model):
    pos = torch.arange(max_len).float().unsqueeze(1)
    freq = torch.exp(torch.arange(0, d_model, 2).float() * (-math.log(10000.0) / d_model))
    return torch.stack([torch.sin(pos * freq), torch.cos(pos * freq)], dim=-1).flatten(1)


@alternative(L, C, "python_loops", "two Python loops with math.sin / math.cos")
def _(max_len, d_model):
    table = torch.zeros(max_len, d_model)
    for p in range(max_len):
        for i in range(0, d_model, 2):
            angle = p / 10000 ** (i / d_model)
            table[p, i], table[p, i + 1] = math.sin(angle), math.cos(angle)
    return table


C = "check_decoder_layer_forward"


@mistake(L, C, "post_norm", ["pre-norm", "post-norm", "norm first", "before", "norm_first", "after"],
         "normalises after each residual addition")
def _(layer, y, memory, self_mask, memory_mask):
    y = layer.norm1(y + layer.self_attn(y, mask=self_mask)[0])
    y = layer.norm2(y + layer.cross_attn(y, memory, mask=memory_mask)[0])
    return layer.norm3(y + layer.ffn(y))


@mistake(L, C, "cross_roles_swapped", ["queries", "memory", "swap", "source", "roles", "from y"],
         "calls cross_attn(memory, norm2(y)): queries from the memory")
def _(layer, y, memory, self_mask, memory_mask):
    y = y + layer.self_attn(layer.norm1(y), mask=self_mask)[0]
    y = y + layer.cross_attn(memory, layer.norm2(y))[0]
    return y + layer.ffn(layer.norm3(y))


@mistake(L, C, "no_causal_mask", ["causal", "self_mask", "leak", "future", "later"], "forgets self_mask")
def _(layer, y, memory, self_mask, memory_mask):
    y = y + layer.self_attn(layer.norm1(y))[0]
    y = y + layer.cross_attn(layer.norm2(y), memory, mask=memory_mask)[0]
    return y + layer.ffn(layer.norm3(y))


@mistake(L, C, "no_memory_mask", ["memory_mask", "padding", "pad", "source mask"], "forgets memory_mask")
def _(layer, y, memory, self_mask, memory_mask):
    y = y + layer.self_attn(layer.norm1(y), mask=self_mask)[0]
    y = y + layer.cross_attn(layer.norm2(y), memory)[0]
    return y + layer.ffn(layer.norm3(y))


@mistake(L, C, "no_cross_residual", ["residual", "add", "y +", "skip"], "y = cross-attention output, no residual")
def _(layer, y, memory, self_mask, memory_mask):
    y = y + layer.self_attn(layer.norm1(y), mask=self_mask)[0]
    y = layer.cross_attn(layer.norm2(y), memory, mask=memory_mask)[0]
    return y + layer.ffn(layer.norm3(y))


@mistake(L, C, "normalises_memory", ["memory", "norm", "normalis", "encoder output"],
         "also applies norm2 to the memory")
def _(layer, y, memory, self_mask, memory_mask):
    y = y + layer.self_attn(layer.norm1(y), mask=self_mask)[0]
    y = y + layer.cross_attn(layer.norm2(y), layer.norm2(memory), mask=memory_mask)[0]
    return y + layer.ffn(layer.norm3(y))


@mistake(L, C, "norms_swapped", ["norm1", "norm2", "norm3", "order", "swap", "which norm"],
         "uses norm2 for self-attention and norm1 for cross-attention")
def _(layer, y, memory, self_mask, memory_mask):
    y = y + layer.self_attn(layer.norm2(y), mask=self_mask)[0]
    y = y + layer.cross_attn(layer.norm1(y), memory, mask=memory_mask)[0]
    return y + layer.ffn(layer.norm3(y))


@mistake(L, C, "forgets_unpacking", ["pair", "tuple", "unpack", "attn_weights", "(output"],
         "adds the (output, attn_weights) pair to y without unpacking")
def _(layer, y, memory, self_mask, memory_mask):
    y = y + layer.self_attn(layer.norm1(y), mask=self_mask)
    y = y + layer.cross_attn(layer.norm2(y), memory, mask=memory_mask)
    return y + layer.ffn(layer.norm3(y))


@mistake(L, C, "cross_before_self", ["order", "self-attention first", "before", "then", "first"],
         "cross-attention first, then self-attention")
def _(layer, y, memory, self_mask, memory_mask):
    y = y + layer.cross_attn(layer.norm1(y), memory, mask=memory_mask)[0]
    y = y + layer.self_attn(layer.norm2(y), mask=self_mask)[0]
    return y + layer.ffn(layer.norm3(y))


@alternative(L, C, "explicit_self_source", "self-attention called as self_attn(h, h, mask=...), named steps")
def _(layer, y, memory, self_mask, memory_mask):
    h = layer.norm1(y)
    after_self = y + layer.self_attn(h, h, mask=self_mask)[0]
    after_cross = after_self + layer.cross_attn(layer.norm2(after_self), memory, mask=memory_mask)[0]
    return after_cross + layer.ffn(layer.norm3(after_cross))


C = "check_post_norm_encoder_layer"


@mistake(L, C, "pre_norm", ["post-norm", "pre-norm", "after", "norm(x + f(x))", "norm_first", "before"],
         "writes the pre-norm layer x + f(norm(x))")
def _(layer, x, mask):
    x = x + layer.self_attn(layer.norm1(x), mask=mask)[0]
    return x + layer.ffn(layer.norm2(x))


@mistake(L, C, "no_residual", ["residual", "x +", "add", "skip"], "norm(f(x)) without the residual")
def _(layer, x, mask):
    x = layer.norm1(layer.self_attn(x, mask=mask)[0])
    return layer.norm2(layer.ffn(x))


@mistake(L, C, "ignores_mask", ["mask", "padding", "pad"], "forgets the mask")
def _(layer, x, mask):
    x = layer.norm1(x + layer.self_attn(x)[0])
    return layer.norm2(x + layer.ffn(x))


@mistake(L, C, "residual_from_input", ["residual", "wrong", "input of", "second sublayer", "original x",
                                       "sublayer's input"], "second residual adds the layer's original input")
def _(layer, x, mask):
    h = layer.norm1(x + layer.self_attn(x, mask=mask)[0])
    return layer.norm2(x + layer.ffn(h))


@mistake(L, C, "norms_swapped", ["norm1", "norm2", "order", "swap", "which norm"], "norm2 first, then norm1")
def _(layer, x, mask):
    x = layer.norm2(x + layer.self_attn(x, mask=mask)[0])
    return layer.norm1(x + layer.ffn(x))


@mistake(L, C, "norms_at_end", ["each sublayer", "after each", "norm1", "twice", "both norms", "residual"],
         "adds both residuals first and applies norm2(norm1(.)) at the end")
def _(layer, x, mask):
    x = x + layer.self_attn(x, mask=mask)[0]
    x = x + layer.ffn(x)
    return layer.norm2(layer.norm1(x))


@alternative(L, C, "explicit_source", "self_attn(x, x, mask=mask)[0], named steps")
def _(layer, x, mask):
    attended = layer.self_attn(x, x, mask=mask)[0]
    after_attention = layer.norm1(attended + x)
    return layer.norm2(layer.ffn(after_attention) + after_attention)


C = "check_param_counts"


def _counts(norms=True, biases=True, cross=True, final_norms=True, output_layer=True, embeddings=True,
            ffn_one=False):
    b = 1 if biases else 0
    attention = 4 * (64 * 64 + 64 * b)
    ffn = (64 * 256 + 256 * b) if ffn_one else (64 * 256 + 256 * b) + (256 * 64 + 64 * b)
    norm = 2 * 64 if norms else 0
    enc = attention + ffn + 2 * norm
    dec = (2 if cross else 1) * attention + ffn + (3 if cross else 2) * norm
    total = 2 * enc + 2 * dec
    total += (1000 * 64 + 800 * 64) if embeddings else 0
    total += 2 * norm if final_norms else 0
    total += (64 * 800 + 800 * b) if output_layer else 0
    return enc, dec, total


wrong_answer(L, C, "no_layernorms", _counts(norms=False), ["norm", "layernorm", "scale and shift"],
             "forgets the LayerNorms")
wrong_answer(L, C, "no_cross_attention", _counts(cross=False), ["cross", "two attention", "self- and cross",
                                                                "second attention", "attention"],
             "gives the decoder layer one attention, like the encoder's")
wrong_answer(L, C, "no_biases", _counts(biases=False), ["bias"], "forgets every bias")
wrong_answer(L, C, "no_final_norms", _counts(final_norms=False), ["final norm", "final", "norm", "stack"],
             "forgets the two stacks' final norms")
wrong_answer(L, C, "no_output_layer", _counts(output_layer=False), ["output layer", "output projection",
                                                                      "generator", "head", "64 x 800", "vocab"],
             "forgets the output layer")
wrong_answer(L, C, "no_embeddings", _counts(embeddings=False), ["embedding"], "forgets the embedding tables")
wrong_answer(L, C, "ffn_one_matrix", _counts(ffn_one=True), ["feed-forward", "ffn", "two linear", "256",
                                                             "feed forward"], "counts one matrix in the FFN")
wrong_answer(L, C, "strings", ("49,984", "66,752", "400,928"), INT_TYPE, "copies formatted strings")
right_answer(L, C, "floats", tuple(float(n) for n in _counts()), "the right counts as floats")

C = "check_what_changes"
_ALL = {0, 1, 2, 3, 4}
wrong_answer(L, C, "source_only_its_position", ({2}, {3, 4}), ["every target", "whole source", "all",
                                                               "cross-attention", "every position"],
             "thinks a source edit reaches only target position 2")
wrong_answer(L, C, "target_only_itself", (_ALL, {3}), ["later", "after", "causal", "next layer", "following"],
             "thinks a target edit changes only position 3")
wrong_answer(L, C, "target_reaches_all", (_ALL, _ALL), ["causal", "earlier", "future", "before", "mask"],
             "thinks a target edit reaches every position")
wrong_answer(L, C, "target_only_later", (_ALL, {4}), ["itself", "own", "position 3", "includ"],
             "thinks position 3 does not see its own token")
wrong_answer(L, C, "causal_source", ({2, 3, 4}, {3, 4}), ["causal", "whole source", "every target", "all",
                                                          "not causal", "no causal"],
             "applies a causal rule to the source")
wrong_answer(L, C, "one_based", ({1, 2, 3, 4, 5}, {4, 5}), ["0 to 4", "positions 0", "start at 0", "0-based",
                                                            "zero-based", "1-based", "from 0"],
             "numbers the positions from 1")
right_answer(L, C, "lists", ([0, 1, 2, 3, 4], [3, 4]), "lists instead of sets")
right_answer(L, C, "set_range", (set(range(5)), set(range(3, 5))), "set(range(...))")

# =====================================================================================================
# Lesson 06 · caching
# =====================================================================================================
L = "06"
C = "check_cached_attention_step"


def _attend(q, k, v):
    return torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1]), dim=-1) @ v


@mistake(L, C, "cat_on_features", ["dim", "axis", "time", "position", "dim=2", "-2"],
         "concatenates along the last axis (features)")
def _(q_new, k_new, v_new, cache_k, cache_v):
    cache_k, cache_v = torch.cat([cache_k, k_new], dim=-1), torch.cat([cache_v, v_new], dim=-1)
    return _attend(q_new, cache_k[..., -q_new.shape[-1]:], cache_v[..., -q_new.shape[-1]:]), cache_k, cache_v


@mistake(L, C, "ignores_cache", ["cache", "earlier", "prefix", "past", "only the new", "previous"],
         "attends to the new key only, though it grows the cache")
def _(q_new, k_new, v_new, cache_k, cache_v):
    return _attend(q_new, k_new, v_new), torch.cat([cache_k, k_new], 2), torch.cat([cache_v, v_new], 2)


@mistake(L, C, "returns_old_cache", ["grow", "grown", "t + 1", "append", "return", "new key"],
         "attends correctly but returns the caches it was given")
def _(q_new, k_new, v_new, cache_k, cache_v):
    k, v = torch.cat([cache_k, k_new], 2), torch.cat([cache_v, v_new], 2)
    return _attend(q_new, k, v), cache_k, cache_v


@mistake(L, C, "prepends", ["order", "append", "end", "prepend", "last", "front"],
         "puts the new key in front of the cache")
def _(q_new, k_new, v_new, cache_k, cache_v):
    k, v = torch.cat([k_new, cache_k], 2), torch.cat([v_new, cache_v], 2)
    return _attend(q_new, k, v), k, v


@mistake(L, C, "no_scale", SCALE, "forgets 1/sqrt(d_head)")
def _(q_new, k_new, v_new, cache_k, cache_v):
    k, v = torch.cat([cache_k, k_new], 2), torch.cat([cache_v, v_new], 2)
    return torch.softmax(q_new @ k.transpose(-2, -1), -1) @ v, k, v


@mistake(L, C, "square_causal_mask", ["mask", "causal", "every cached key", "past", "no mask", "first"],
         "adds a causal mask ones(1, t + 1).tril(), which hides all but the first key")
def _(q_new, k_new, v_new, cache_k, cache_v):
    k, v = torch.cat([cache_k, k_new], 2), torch.cat([cache_v, v_new], 2)
    mask = torch.ones(1, k.shape[2], dtype=torch.bool).tril()
    s = (q_new @ k.transpose(-2, -1) / math.sqrt(q_new.shape[-1])).masked_fill(~mask, float("-inf"))
    return torch.softmax(s, -1) @ v, k, v


@mistake(L, C, "values_from_keys", ["v_new", "values", "value", "k_new", "cache_v"],
         "copy-paste: grows the value cache with k_new")
def _(q_new, k_new, v_new, cache_k, cache_v):
    k, v = torch.cat([cache_k, k_new], 2), torch.cat([cache_v, k_new], 2)
    return _attend(q_new, k, v), k, v


@mistake(L, C, "float32", DTYPE, "allocates the grown cache as float32")
def _(q_new, k_new, v_new, cache_k, cache_v):
    b, h, t, d = cache_k.shape
    k, v = torch.empty(b, h, t + 1, d), torch.empty(b, h, t + 1, d)
    k[:, :, :t], k[:, :, t:] = cache_k, k_new
    v[:, :, :t], v[:, :, t:] = cache_v, v_new
    return _attend(q_new.float(), k, v), k, v


@alternative(L, C, "sdpa", "F.scaled_dot_product_attention over the grown cache")
def _(q_new, k_new, v_new, cache_k, cache_v):
    k, v = torch.cat((cache_k, k_new), dim=-2), torch.cat((cache_v, v_new), dim=-2)
    return F.scaled_dot_product_attention(q_new, k, v), k, v


@alternative(L, C, "einsum", "einsum over the grown cache")
def _(q_new, k_new, v_new, cache_k, cache_v):
    k, v = torch.cat([cache_k, k_new], 2), torch.cat([cache_v, v_new], 2)
    w = torch.einsum("bhqd,bhkd->bhqk", q_new, k).mul(q_new.shape[-1] ** -0.5).softmax(-1)
    return torch.einsum("bhqk,bhkd->bhqd", w, v), k, v


C = "check_cross_attention_step"
_ONCE = ["once", "every step", "each step", "k_proj", "project_source", "per step", "calls", "projected"]


@mistake(L, C, "projects_every_step", _ONCE, "step(x) calls cross_attn(x, memory, mask=...) at every step")
def _(cross_attn, memory, memory_mask):
    def step(x):
        return cross_attn(x, memory, mask=memory_mask)[0]

    return step


@mistake(L, C, "project_source_in_step", _ONCE, "calls project_source inside step")
def _(cross_attn, memory, memory_mask):
    def step(x):
        return cross_attn(x, source_kv=cross_attn.project_source(memory), mask=memory_mask)[0]

    return step


@mistake(L, C, "lazy_projection", ["before returning", "after", "changed memory", "lazily", "first step",
                                   "once per source", "when make", "memory changes", "right away"],
         "projects the memory lazily, at the first step")
def _(cross_attn, memory, memory_mask):
    kv = []

    def step(x):
        if not kv:
            kv.append(cross_attn.project_source(memory))
        return cross_attn(x, source_kv=kv[0], mask=memory_mask)[0]

    return step


@mistake(L, C, "forgets_mask", ["mask", "padding", "memory_mask", "pad"], "forgets memory_mask")
def _(cross_attn, memory, memory_mask):
    kv = cross_attn.project_source(memory)
    return lambda x: cross_attn(x, source_kv=kv)[0]


@mistake(L, C, "step_returns_pair", ["pair", "tuple", "only the output", "attn_weights", "(output"],
         "step returns the (output, attn_weights) pair")
def _(cross_attn, memory, memory_mask):
    kv = cross_attn.project_source(memory)
    return lambda x: cross_attn(x, source_kv=kv, mask=memory_mask)


@mistake(L, C, "drops_time_axis", ["shape", "[b, 1, d_model]", "time axis", "squeeze", "position axis"],
         "step returns output[:, -1], [B, d_model]")
def _(cross_attn, memory, memory_mask):
    kv = cross_attn.project_source(memory)
    return lambda x: cross_attn(x, source_kv=kv, mask=memory_mask)[0][:, -1]


@mistake(L, C, "returns_kv", ["function", "callable", "step", "return a"], "returns the keys and values, not a step")
def _(cross_attn, memory, memory_mask):
    return cross_attn.project_source(memory)


@mistake(L, C, "memory_and_source_kv", ["source_kv", "both", "memory", "contradict", "either", "not both"],
         "passes memory and source_kv together to cross_attn")
def _(cross_attn, memory, memory_mask):
    kv = cross_attn.project_source(memory)
    return lambda x: cross_attn(x, memory, source_kv=kv, mask=memory_mask)[0]


@alternative(L, C, "lambda", "a lambda over the projected keys and values")
def _(cross_attn, memory, memory_mask):
    kv = cross_attn.project_source(memory)
    return lambda x: cross_attn(x, source_kv=kv, mask=memory_mask)[0]


class _Step:
    def __init__(self, cross_attn, memory, memory_mask):
        self.cross_attn, self.mask = cross_attn, memory_mask
        self.kv = cross_attn.project_source(memory)

    def __call__(self, x):
        output, _ = self.cross_attn(x, source_kv=self.kv, mask=self.mask)
        return output


_add(Entry(L, C, "callable_class", (_Step,), "a class whose __init__ projects and whose __call__ attends",
           correct=True))

C = "check_kv_cache_bytes"


def _bytes(dtype):
    return torch.finfo(dtype).bits // 8


@mistake(L, C, "no_factor_two", ["key and", "keys and values", "k and v", "factor 2", "2 x", "twice", "2 ×",
                                 "value"], "counts the keys only")
def _(n_layers, n_heads, d_head, batch, tgt_len, src_len, dtype):
    return n_layers * batch * n_heads * d_head * (tgt_len + src_len) * _bytes(dtype)


@mistake(L, C, "self_attention_only", ["cross", "src_len", "source"], "forgets the cross-attention part")
def _(n_layers, n_heads, d_head, batch, tgt_len, src_len, dtype):
    return 2 * n_layers * batch * n_heads * d_head * tgt_len * _bytes(dtype)


@mistake(L, C, "bits_not_bytes", ["bits", "bytes", "byte", "/ 8", "// 8"], "multiplies by finfo(dtype).bits")
def _(n_layers, n_heads, d_head, batch, tgt_len, src_len, dtype):
    return 2 * n_layers * batch * n_heads * d_head * (tgt_len + src_len) * torch.finfo(dtype).bits


@mistake(L, C, "always_four_bytes", ["dtype", "float16", "bytes per", "element_size", "itemsize", "2 bytes"],
         "assumes 4 bytes per number whatever the dtype")
def _(n_layers, n_heads, d_head, batch, tgt_len, src_len, dtype):
    return 2 * n_layers * batch * n_heads * d_head * (tgt_len + src_len) * 4


@mistake(L, C, "zero_dim_tensor", ["int", "tensor", "type", ".item", "python"],
         "computes it with torch and returns a 0-d tensor")
def _(n_layers, n_heads, d_head, batch, tgt_len, src_len, dtype):
    return torch.tensor([2, n_layers, batch, n_heads, d_head, tgt_len + src_len, _bytes(dtype)]).prod()


@mistake(L, C, "forgets_layers", ["layer", "n_layers"], "counts one decoder layer")
def _(n_layers, n_heads, d_head, batch, tgt_len, src_len, dtype):
    return 2 * batch * n_heads * d_head * (tgt_len + src_len) * _bytes(dtype)


@mistake(L, C, "forgets_batch", ["batch"], "counts one sentence")
def _(n_layers, n_heads, d_head, batch, tgt_len, src_len, dtype):
    return 2 * n_layers * n_heads * d_head * (tgt_len + src_len) * _bytes(dtype)


@alternative(L, C, "element_size", "torch.empty(0, dtype=dtype).element_size()")
def _(n_layers, n_heads, d_head, batch, tgt_len, src_len, dtype):
    per_tensor = batch * n_heads * d_head * torch.empty(0, dtype=dtype).element_size()
    return n_layers * (2 * tgt_len * per_tensor + 2 * src_len * per_tensor)


@alternative(L, C, "float_result", "bits / 8 with true division: a float equal to the count")
def _(n_layers, n_heads, d_head, batch, tgt_len, src_len, dtype):
    return 2 * n_layers * batch * n_heads * d_head * (tgt_len + src_len) * torch.finfo(dtype).bits / 8


C = "check_step_work_prediction"
# Step t = 10 starts from a prefix of 10 tokens (<bos> and the 9 written so far). Way 3 (no self-attention
# K/V cache) runs all 10 positions and a 10 x 10 score grid; way 4 runs the newest position against 10 keys.
wrong_answer(L, C, "prefix_without_bos", (9, 1, 81, 9), ["bos", "off by one", "t - 1", "9 tokens",
                                                         "counts itself", "prefix of t"],
             "leaves <bos> out of the prefix: 9 positions, 9 x 9 scores, 9 keys")
wrong_answer(L, C, "cache_still_all_positions", (10, 10, 100, 10), ["only the new", "newest", "new token",
                                                                     "in the cache", "already", "recomput"],
             "thinks the cached step still pushes the whole prefix through the projections")
wrong_answer(L, C, "cached_keys_forgotten", (10, 1, 100, 1), ["cached keys", "every key", "earlier", "9 cached",
                                                              "attends to", "in the cache", "all keys",
                                                              "whole prefix"],
             "with the cache, counts one score: the new query against its own key only")
wrong_answer(L, C, "one_query_without_cache", (10, 1, 10, 10), ["every query", "each of the", "queries", "grid",
                                                                "t x t", "square", "every position"],
             "without the cache, counts only the new query's row of scores")
wrong_answer(L, C, "swapped", (1, 10, 10, 100), ["swap", "the other way", "reversed", "backwards", "mixed up",
                                                 "exchanged"], "swaps the with- and without-cache answers")
wrong_answer(L, C, "totals_over_steps", (55, 10, 385, 55), ["total", "one step", "sum", "all steps",
                                                            "over the steps", "per step", "single step",
                                                            "cumulative"],
             "adds up the work of steps 1 to 10 instead of counting step 10 alone")
right_answer(L, C, "full_grid", (10, 1, 100, 10), "10, 1, 100 (the whole grid q @ k^T), 10")
right_answer(L, C, "causal_half_numpy", tuple(np.int64(n) for n in (10, 1, 55, 10)),
             "counts only the 55 scores the causal mask keeps, as numpy integers from a small computation")

# =====================================================================================================
# Lesson 07 · toy translation
# =====================================================================================================
L = "07"
C = "check_pad_batch"


def _full(rows, cols, value):
    return torch.full((rows, cols), value, dtype=torch.long)


@mistake(L, C, "pads_with_zero", _PAD_ID + ["pad_id=3"], "starts from torch.zeros: pads with 0 whatever pad_id is")
def _(pairs, pad_id, bos_id, eos_id):
    s, t = max(len(p[0]) for p in pairs), max(len(p[1]) for p in pairs) + 1
    src, ti, to = (torch.zeros(len(pairs), n, dtype=torch.long) for n in (s, t, t))
    for r, (a, b) in enumerate(pairs):
        src[r, :len(a)], ti[r, :len(b) + 1], to[r, :len(b) + 1] = (torch.tensor(a), torch.tensor([bos_id, *b]),
                                                                   torch.tensor([*b, eos_id]))
    return src, ti, to


@mistake(L, C, "in_out_swapped", ["swap", "bos", "eos", "tgt_in", "tgt_out", "order", "<bos>", "<eos>"],
         "tgt_in = target + <eos>, tgt_out = <bos> + target")
def _(pairs, pad_id, bos_id, eos_id):
    s, t = max(len(p[0]) for p in pairs), max(len(p[1]) for p in pairs) + 1
    src, ti, to = _full(len(pairs), s, pad_id), _full(len(pairs), t, pad_id), _full(len(pairs), t, pad_id)
    for r, (a, b) in enumerate(pairs):
        src[r, :len(a)], ti[r, :len(b) + 1], to[r, :len(b) + 1] = (torch.tensor(a), torch.tensor([*b, eos_id]),
                                                                   torch.tensor([bos_id, *b]))
    return src, ti, to


@mistake(L, C, "target_length_no_plus_one", ["+ 1", "longest target + 1", "length", "t =", "one longer",
                                             "room", "width"], "T = the longest target: the special token is cut off")
def _(pairs, pad_id, bos_id, eos_id):
    s, t = max(len(p[0]) for p in pairs), max(len(p[1]) for p in pairs)
    src, ti, to = _full(len(pairs), s, pad_id), _full(len(pairs), t, pad_id), _full(len(pairs), t, pad_id)
    for r, (a, b) in enumerate(pairs):
        src[r, :len(a)] = torch.tensor(a)
        ti[r, :len(b)] = torch.tensor([bos_id, *b])[:t]
        to[r, :len(b)] = torch.tensor([*b, eos_id])[:t]
    return src, ti, to


@mistake(L, C, "left_padding", ["left", "right", "beginning", "end of the row"], "pads on the left")
def _(pairs, pad_id, bos_id, eos_id):
    s, t = max(len(p[0]) for p in pairs), max(len(p[1]) for p in pairs) + 1
    src, ti, to = _full(len(pairs), s, pad_id), _full(len(pairs), t, pad_id), _full(len(pairs), t, pad_id)
    for r, (a, b) in enumerate(pairs):
        src[r, s - len(a):] = torch.tensor(a)
        ti[r, t - len(b) - 1:], to[r, t - len(b) - 1:] = torch.tensor([bos_id, *b]), torch.tensor([*b, eos_id])
    return src, ti, to


@mistake(L, C, "int32", ["long", "int64", "dtype", "int32"], "uses dtype=torch.int32")
def _(pairs, pad_id, bos_id, eos_id):
    s, t = max(len(p[0]) for p in pairs), max(len(p[1]) for p in pairs) + 1
    src, ti, to = (torch.full((len(pairs), n), pad_id, dtype=torch.int32) for n in (s, t, t))
    for r, (a, b) in enumerate(pairs):
        src[r, :len(a)], ti[r, :len(b) + 1], to[r, :len(b) + 1] = (torch.tensor(a), torch.tensor([bos_id, *b]),
                                                                   torch.tensor([*b, eos_id]))
    return src, ti, to


@mistake(L, C, "python_lists", ["tensor", "list", "type"], "returns padded Python lists")
def _(pairs, pad_id, bos_id, eos_id):
    s, t = max(len(p[0]) for p in pairs), max(len(p[1]) for p in pairs) + 1
    src = [a + [pad_id] * (s - len(a)) for a, _ in pairs]
    ti = [[bos_id, *b] + [pad_id] * (t - len(b) - 1) for _, b in pairs]
    to = [[*b, eos_id] + [pad_id] * (t - len(b) - 1) for _, b in pairs]
    return src, ti, to


@mistake(L, C, "eos_at_row_end", ["eos", "right after", "end of the target", "after the target", "position",
                                  "<eos>"], "puts <eos> in the last column of every row, after the padding")
def _(pairs, pad_id, bos_id, eos_id):
    s, t = max(len(p[0]) for p in pairs), max(len(p[1]) for p in pairs) + 1
    src, ti, to = _full(len(pairs), s, pad_id), _full(len(pairs), t, pad_id), _full(len(pairs), t, pad_id)
    for r, (a, b) in enumerate(pairs):
        src[r, :len(a)], ti[r, :len(b) + 1] = torch.tensor(a), torch.tensor([bos_id, *b])
        to[r, :len(b)] = torch.tensor(b, dtype=torch.long)
        to[r, -1] = eos_id
    return src, ti, to


@mistake(L, C, "mutates_pairs", IN_PLACE + ["pairs"], "inserts <bos> and appends <eos> into the caller's lists")
def _(pairs, pad_id, bos_id, eos_id):
    s = max(len(p[0]) for p in pairs)
    for _, b in pairs:
        b.insert(0, bos_id)
        b.append(eos_id)
    t = max(len(p[1]) for p in pairs) - 1
    src, ti, to = _full(len(pairs), s, pad_id), _full(len(pairs), t, pad_id), _full(len(pairs), t, pad_id)
    for r, (a, b) in enumerate(pairs):
        src[r, :len(a)] = torch.tensor(a)
        ti[r, :len(b) - 1], to[r, :len(b) - 1] = torch.tensor(b[:-1]), torch.tensor(b[1:])
    return src, ti, to


@mistake(L, C, "one_width", ["longest source", "s =", "length", "width", "shape"],
         "pads sources and targets to one common width")
def _(pairs, pad_id, bos_id, eos_id):
    w = max(max(len(a), len(b) + 1) for a, b in pairs)
    src, ti, to = _full(len(pairs), w, pad_id), _full(len(pairs), w, pad_id), _full(len(pairs), w, pad_id)
    for r, (a, b) in enumerate(pairs):
        src[r, :len(a)], ti[r, :len(b) + 1], to[r, :len(b) + 1] = (torch.tensor(a), torch.tensor([bos_id, *b]),
                                                                   torch.tensor([*b, eos_id]))
    return src, ti, to


@alternative(L, C, "pad_sequence", "torch.nn.utils.rnn.pad_sequence(batch_first=True, padding_value=pad_id)")
def _(pairs, pad_id, bos_id, eos_id):
    from torch.nn.utils.rnn import pad_sequence

    def pad(seqs):
        return pad_sequence([torch.tensor(x, dtype=torch.long) for x in seqs], batch_first=True, padding_value=pad_id)

    return (pad([a for a, _ in pairs]), pad([[bos_id, *b] for _, b in pairs]), pad([[*b, eos_id] for _, b in pairs]))


@alternative(L, C, "lists_then_tensor", "pads Python lists, then torch.tensor(..., dtype=torch.long)")
def _(pairs, pad_id, bos_id, eos_id):
    s, t = max(len(a) for a, _ in pairs), max(len(b) for _, b in pairs) + 1
    src = [list(a) + [pad_id] * (s - len(a)) for a, _ in pairs]
    ti = [[bos_id] + list(b) + [pad_id] * (t - 1 - len(b)) for _, b in pairs]
    to = [list(b) + [eos_id] + [pad_id] * (t - 1 - len(b)) for _, b in pairs]
    return tuple(torch.tensor(x, dtype=torch.long) for x in (src, ti, to))


C = "check_greedy_translate"


def _logits(out):
    """decode()'s logits, whether it returns a named result or the older (logits, self, cross) triple."""
    return out.logits if hasattr(out, "logits") else out[0]


def _greedy(model, src_ids, bos_id, eos_id, max_new_tokens, *, feed="last", new_cache_each_step=False,
            pad_finished=True, stop="all", argmax_dim=-1, mask="source", keep_bos=False, use_cache=True,
            replace_eos=False):
    """One parametrised greedy loop, so that each mistake below changes one thing."""
    with torch.no_grad():
        memory, _ = model.encode(src_ids)
        src_mask = model.source_mask(src_ids) if mask == "source" else torch.ones_like(model.source_mask(src_ids))
        cache = model.new_cache(memory) if use_cache else None
        prefix = torch.full((src_ids.shape[0], 1), bos_id, dtype=torch.long)
        finished = torch.zeros(src_ids.shape[0], dtype=torch.bool)
        for _ in range(max_new_tokens):
            if new_cache_each_step:
                cache = model.new_cache(memory)
            inputs = prefix[:, -1:] if feed == "last" else prefix
            logits = _logits(model.decode(inputs, memory, src_mask, cache=cache))
            next_token = logits[:, -1].argmax(dim=argmax_dim)
            if pad_finished:
                next_token = next_token.masked_fill(finished, model.config.pad_id)
            is_eos = next_token == eos_id
            if replace_eos:
                next_token = next_token.masked_fill(is_eos, model.config.pad_id)
            finished = finished | is_eos
            prefix = torch.cat([prefix, next_token[:, None]], dim=1)
            if stop == "all" and bool(finished.all()):
                break
            if stop == "any" and bool(is_eos.any()):
                break
            if stop == "item" and next_token.item() == eos_id:
                break
    return prefix if keep_bos else prefix[:, 1:]


_NEWEST = ["newest", "only the new", "whole prefix", "last token", "one new token", "one token", "prefix",
           "cache", "already"]


@mistake(L, C, "feeds_whole_prefix", _NEWEST, "feeds the whole prefix every step while also using the cache")
def _(model, src_ids, bos_id, eos_id, max_new_tokens):
    return _greedy(model, src_ids, bos_id, eos_id, max_new_tokens, feed="all")


@mistake(L, C, "no_cache", _NEWEST + ["new_cache", "recompute"], "no cache: recomputes the whole prefix each step")
def _(model, src_ids, bos_id, eos_id, max_new_tokens):
    return _greedy(model, src_ids, bos_id, eos_id, max_new_tokens, feed="all", use_cache=False)


@mistake(L, C, "no_padding_after_eos", ["finished", "pad", "after <eos>", "eos", "after eos"],
         "keeps generating for rows that produced <eos>")
def _(model, src_ids, bos_id, eos_id, max_new_tokens):
    return _greedy(model, src_ids, bos_id, eos_id, max_new_tokens, pad_finished=False)


@mistake(L, C, "keeps_bos", ["bos", "without <bos>", "first column", "drop", "<bos>"], "returns the prefix with <bos>")
def _(model, src_ids, bos_id, eos_id, max_new_tokens):
    return _greedy(model, src_ids, bos_id, eos_id, max_new_tokens, keep_bos=True)


@mistake(L, C, "stops_at_any_eos", ["every row", "all rows", "any", "finished", "stop", "each row", "all of"],
         "stops as soon as one row produces <eos>")
def _(model, src_ids, bos_id, eos_id, max_new_tokens):
    return _greedy(model, src_ids, bos_id, eos_id, max_new_tokens, stop="any")


@mistake(L, C, "argmax_over_batch", ["vocab", "axis", "dim", "argmax"], "argmax over dim=0 of the [B, V] logits")
def _(model, src_ids, bos_id, eos_id, max_new_tokens):
    return _greedy(model, src_ids, bos_id, eos_id, max_new_tokens, argmax_dim=0)


@mistake(L, C, "ignores_source_mask", ["mask", "padding", "source_mask", "src_mask", "pad"],
         "passes an all-True source mask: attends to <pad>")
def _(model, src_ids, bos_id, eos_id, max_new_tokens):
    return _greedy(model, src_ids, bos_id, eos_id, max_new_tokens, mask="ones")


@mistake(L, C, "new_cache_each_step", ["new_cache", "once", "every step", "each step", "cache", "forgets",
                                       "empty"], "calls model.new_cache inside the loop")
def _(model, src_ids, bos_id, eos_id, max_new_tokens):
    return _greedy(model, src_ids, bos_id, eos_id, max_new_tokens, new_cache_each_step=True)


@mistake(L, C, "item_stop", ["batch", "every row", "item", "each row", "one element"],
         "tests next_token.item() == eos_id (one sentence only)")
def _(model, src_ids, bos_id, eos_id, max_new_tokens):
    return _greedy(model, src_ids, bos_id, eos_id, max_new_tokens, stop="item")


@mistake(L, C, "drops_eos", ["eos", "keep", "includ", "<eos>"], "writes <pad> instead of the <eos> itself")
def _(model, src_ids, bos_id, eos_id, max_new_tokens):
    return _greedy(model, src_ids, bos_id, eos_id, max_new_tokens, replace_eos=True)


@alternative(L, C, "inference_mode_where", "torch.inference_mode, torch.where, a list of tokens")
def _(model, src_ids, bos_id, eos_id, max_new_tokens):
    pad = model.config.pad_id
    with torch.inference_mode():
        memory = model.encode(src_ids)[0]
        src_mask = model.source_mask(src_ids)
        cache = model.new_cache(memory)
        last = torch.full((src_ids.shape[0],), bos_id, dtype=torch.long)
        done = torch.zeros_like(last, dtype=torch.bool)
        tokens = []
        for _ in range(max_new_tokens):
            logits = _logits(model.decode(last[:, None], memory, src_mask, cache=cache))
            last = torch.where(done, torch.full_like(last, pad), logits[:, 0].argmax(-1))
            tokens.append(last)
            done |= last == eos_id
            if done.all():
                break
    return torch.stack(tokens, dim=1)


C = "check_aer"


def _aer(pred, gold):
    pred, gold = set(pred), set(gold)
    return 1.0 - 2.0 * len(pred & gold) / (len(pred) + len(gold))


@mistake(L, C, "includes_eos_row", ["last row", "<eos>", "eos", "[:-1]", "no target word"],
         "links every row, the <eos> row too")
def _(cross_weights, gold_links):
    return _aer({(int(s), j) for j, s in enumerate(cross_weights.argmax(-1))}, gold_links)


@mistake(L, C, "argmax_over_rows", ["axis", "dim", "row", "column", "source word"], "argmax over dim=0")
def _(cross_weights, gold_links):
    return _aer({(int(s), j) for j, s in enumerate(cross_weights[:-1].argmax(0))}, gold_links)


@mistake(L, C, "pairs_swapped", ["order", "(source", "swap", "source index, target", "target index"],
         "builds (target, source) pairs")
def _(cross_weights, gold_links):
    return _aer({(j, int(s)) for j, s in enumerate(cross_weights[:-1].argmax(-1))}, gold_links)


@mistake(L, C, "drops_first_row", ["first row", "row 0", "shift", "off by one", "[1:]", "<bos>", "bos"],
         "drops row 0, thinking it is <bos>'s, and keeps the <eos> row")
def _(cross_weights, gold_links):
    return _aer({(int(s), j) for j, s in enumerate(cross_weights[1:].argmax(-1))}, gold_links)


@mistake(L, C, "recall_not_aer", ["aer", "1 -", "formula", "2 |a", "|a| + |g|", "2|a", "error rate"],
         "returns 1 - |A ∩ G| / |G|")
def _(cross_weights, gold_links):
    pred = {(int(s), j) for j, s in enumerate(cross_weights[:-1].argmax(-1))}
    return 1.0 - len(pred & set(gold_links)) / len(set(gold_links))


@mistake(L, C, "tensor_elements_in_set", ["int(", "tensor", "hash", "int", "type", "python int"],
         "puts 0-d tensors in the set (no int()), so no predicted link ever equals a gold one")
def _(cross_weights, gold_links):
    return _aer({(s, j) for j, s in enumerate(cross_weights[:-1].argmax(-1))}, gold_links)


@alternative(L, C, "loops", "plain loops, the intersection counted by hand")
def _(cross_weights, gold_links):
    predicted = []
    for j in range(cross_weights.shape[0] - 1):
        predicted.append((int(torch.argmax(cross_weights[j])), j))
    gold = set(map(tuple, gold_links))
    hits = sum(1 for link in set(predicted) if link in gold)
    return 1 - 2 * hits / (len(set(predicted)) + len(gold))


@alternative(L, C, "tolist", "argmax(dim=1).tolist() and zip")
def _(cross_weights, gold_links):
    sources = torch.argmax(cross_weights[:-1], dim=1).tolist()
    return _aer(zip(sources, range(len(sources))), gold_links)


C = "check_best_head"


@mistake(L, C, "argmax", ["lowest", "error", "argmin", "smaller", "better", "highest", "minim"],
         "takes the highest AER")
def _(per_head_aer):
    return divmod(int(per_head_aer.argmax()), per_head_aer.shape[1])


@mistake(L, C, "divmod_by_layers", ["shape[1]", "number of heads", "columns", "square", "heads", "divmod",
                                    "row length"], "divides the flat index by the number of layers")
def _(per_head_aer):
    return divmod(int(per_head_aer.argmin()), per_head_aer.shape[0])


@mistake(L, C, "flat_index", ["pair", "tuple", "flat", "(layer, head)", "flatten", "two"],
         "returns the flat index")
def _(per_head_aer):
    return int(per_head_aer.argmin())


@mistake(L, C, "head_layer_swapped", ["order", "swap", "(layer, head)", "the other way"], "returns (head, layer)")
def _(per_head_aer):
    layer, head = divmod(int(per_head_aer.argmin()), per_head_aer.shape[1])
    return head, layer


@mistake(L, C, "tensor_pair", ["int", "tensor", "type", ".item", "python"],
         "returns a pair of 0-d tensors (idx // n, idx % n)")
def _(per_head_aer):
    idx = per_head_aer.argmin()
    return idx // per_head_aer.shape[1], idx % per_head_aer.shape[1]


@mistake(L, C, "best_layer_first", ["mean", "average", "best layer", "lowest aer", "single head", "one head",
                                    "whole table", "any layer", "over all"],
         "picks the layer with the lowest mean AER, then the best head inside it")
def _(per_head_aer):
    layer = int(per_head_aer.mean(dim=1).argmin())
    return layer, int(per_head_aer[layer].argmin())


@mistake(L, C, "one_based", ["0-based", "zero-based", "1-based", "counted from 0", "from 0", "off by one",
                             "start at 0"], "numbers layers and heads from 1")
def _(per_head_aer):
    layer, head = divmod(int(per_head_aer.argmin()), per_head_aer.shape[1])
    return layer + 1, head + 1


@alternative(L, C, "nonzero", "(table == table.min()).nonzero()[0] as a tuple of ints")
def _(per_head_aer):
    layer, head = (per_head_aer == per_head_aer.min()).nonzero()[0].tolist()
    return layer, head


@alternative(L, C, "python_loops", "two Python loops keeping the best")
def _(per_head_aer):
    best, where = float("inf"), (0, 0)
    for layer, row in enumerate(per_head_aer.tolist()):
        for head, value in enumerate(row):
            if value < best:
                best, where = value, (layer, head)
    return where


# =====================================================================================================
# Lesson 08 · attention explorer
# =====================================================================================================
L = "08"
C = "check_attention_entropy"
_ZERO_LOG = ["nan", "0 * ln 0", "0 · ln 0", "0 ln 0", "xlogy", "zero weight", "0 * log", "0·ln 0", "log(0)",
             "ln 0"]


@mistake(L, C, "nan_at_zeros", _ZERO_LOG, "-(p * p.log()).sum(-1): NaN where a weight is 0")
def _(attn_weights):
    return -(attn_weights * attn_weights.log()).sum(dim=-1)


@mistake(L, C, "log2", ["bits", "log2", "nats", "natural"], "uses log2: bits instead of nats")
def _(attn_weights):
    p = attn_weights
    return -torch.where(p > 0, p * torch.log2(p), torch.zeros_like(p)).sum(dim=-1)


@mistake(L, C, "sum_over_queries", ["dim", "axis", "row", "queries", "keys", "dim=-1"], "sums over dim=-2")
def _(attn_weights):
    return -torch.special.xlogy(attn_weights, attn_weights).sum(dim=-2)


@mistake(L, C, "no_minus", ["sign", "minus", "negative", "-sum", "−"], "forgets the minus sign")
def _(attn_weights):
    return torch.special.xlogy(attn_weights, attn_weights).sum(dim=-1)


@mistake(L, C, "nan_to_num_after_sum", _ZERO_LOG + ["padded", "whole row"],
         "turns the NaN of whole rows into 0 after the sum")
def _(attn_weights):
    return torch.nan_to_num(-(attn_weights * attn_weights.log()).sum(dim=-1), nan=0.0)


@mistake(L, C, "mean_not_sum", ["sum", "mean"], "averages p ln p over the keys")
def _(attn_weights):
    return -torch.special.xlogy(attn_weights, attn_weights).mean(dim=-1)


@mistake(L, C, "rows_of_2d_only", ["leading", "batch", "any number", "shape", "dims", "axes", "heads"],
         "loops over the rows of a 2-D input")
def _(attn_weights):
    return torch.stack([-(row[row > 0] * row[row > 0].log()).sum() for row in attn_weights])


@mistake(L, C, "categorical", ["no key", "all weights 0", "all zero", "nan", "empty", "normalis", "all 0"],
         "uses Categorical(probs=...).entropy() directly, which fails on a row of zeros")
def _(attn_weights):
    return torch.distributions.Categorical(probs=attn_weights).entropy()


@alternative(L, C, "where", "torch.where(p > 0, p * log p, 0)")
def _(attn_weights):
    p = attn_weights
    return -torch.where(p > 0, p * torch.log(p), torch.zeros_like(p)).sum(-1)


@alternative(L, C, "clamped_log", "p * log(p.clamp_min(tiny)): 0 times a finite number")
def _(attn_weights):
    p = attn_weights
    return -(p * p.clamp_min(torch.finfo(p.dtype).tiny).log()).sum(dim=-1)


C = "check_normalised_entropy"


def _entropy(p):
    return -torch.special.xlogy(p, p).sum(dim=-1)


@mistake(L, C, "padded_length", ["padded", "padding", "real", "ln s", "log of the padded", "key_mask", "pad"],
         "divides by ln S, the padded length")
def _(attn_weights, key_mask):
    return _entropy(attn_weights) / math.log(attn_weights.shape[-1])


@mistake(L, C, "nan_for_one_word", ["one word", "one-word", "nan", "ln 1", "division by zero", "single", "n = 1"],
         "H / ln n with no special case for one-word sentences")
def _(attn_weights, key_mask):
    return _entropy(attn_weights) / key_mask.sum(dim=-1).to(attn_weights.dtype).log()


@mistake(L, C, "counts_whole_batch", ["per sentence", "each sentence", "dim=-1", "whole batch", "count",
                                      "real words"], "key_mask.sum() counts the real words of the whole batch")
def _(attn_weights, key_mask):
    n = key_mask.sum().to(attn_weights.dtype)
    return _entropy(attn_weights) / n.log() if n > 1 else torch.zeros_like(_entropy(attn_weights))


@mistake(L, C, "log2_of_n", ["log2", "bits", "nats", "same base", "ln n", "base"], "nats divided by log2(n)")
def _(attn_weights, key_mask):
    n = key_mask.sum(dim=-1).to(attn_weights.dtype)
    h = _entropy(attn_weights)
    return torch.where(n > 1, h / n.clamp(min=2).log2(), torch.zeros_like(h))


@mistake(L, C, "squeezed_count", ["broadcast", "shape", "[b, 1, 1]", "squeeze", "per sentence"],
         "squeezes the count to [B], which broadcasts against T_q instead of B")
def _(attn_weights, key_mask):
    n = key_mask.sum(dim=-1).squeeze().to(attn_weights.dtype)
    h = _entropy(attn_weights)
    return torch.where(n > 1, h / n.clamp(min=2).log(), torch.zeros_like(h))


@mistake(L, C, "divides_by_n", ["ln n", "log", "ln", "logarithm"], "divides by n instead of ln n")
def _(attn_weights, key_mask):
    n = key_mask.sum(dim=-1).to(attn_weights.dtype)
    h = _entropy(attn_weights)
    return torch.where(n > 1, h / n, torch.zeros_like(h))


@alternative(L, C, "where_without_clamp", "torch.where without the clamp (the unused branch's NaN is discarded)")
def _(attn_weights, key_mask):
    n = key_mask.sum(dim=-1).to(attn_weights.dtype)
    h = _entropy(attn_weights)
    return torch.where(n > 1, h / torch.log(n), torch.zeros_like(h))


@alternative(L, C, "per_sentence_loop", "a loop over the sentences of the batch")
def _(attn_weights, key_mask):
    h = -torch.where(attn_weights > 0, attn_weights * attn_weights.log(), torch.zeros_like(attn_weights)).sum(-1)
    out = torch.zeros_like(h)
    for b in range(h.shape[0]):
        n = int(key_mask[b].sum())
        if n > 1:
            out[b] = h[b] / math.log(n)
    return out


C = "check_silence_head"


@mistake(L, C, "zeroes_rows", ["rows", "columns", "in_features", "input features", "[out, in]", "column"],
         "zeroes the head's rows of out_proj.weight")
def _(attn, head):
    d = attn.d_head
    with torch.no_grad():
        attn.out_proj.weight[head * d:(head + 1) * d, :] = 0.0


@mistake(L, C, "zeroes_queries", ["q_proj", "queries", "uniform", "query", "not silent", "average"],
         "zeroes the head's rows of q_proj.weight and q_proj.bias")
def _(attn, head):
    d = attn.d_head
    with torch.no_grad():
        attn.q_proj.weight[head * d:(head + 1) * d] = 0.0
        attn.q_proj.bias[head * d:(head + 1) * d] = 0.0


@mistake(L, C, "interleaved_columns", ["interleav", "head::", "every head", "one feature of every", "block",
                                       "contiguous", "stride"], "zeroes columns head::n_heads")
def _(attn, head):
    with torch.no_grad():
        attn.out_proj.weight[:, head::attn.n_heads] = 0.0


@mistake(L, C, "zeroes_bias_too", ["bias", "shared"], "also zeroes out_proj.bias")
def _(attn, head):
    d = attn.d_head
    with torch.no_grad():
        attn.out_proj.weight[:, head * d:(head + 1) * d] = 0.0
        attn.out_proj.bias.zero_()


@mistake(L, C, "returns_copy", ["in place", "copy", "return", "unchanged", "original", "in-place"],
         "edits a deepcopy and returns it")
def _(attn, head):
    attn = copy.deepcopy(attn)
    d = attn.d_head
    with torch.no_grad():
        attn.out_proj.weight[:, head * d:(head + 1) * d] = 0.0
    return attn


@mistake(L, C, "values_without_bias", ["v_proj", "bias", "values", "value"],
         "zeroes the head's rows of v_proj.weight but not of v_proj.bias")
def _(attn, head):
    d = attn.d_head
    with torch.no_grad():
        attn.v_proj.weight[head * d:(head + 1) * d] = 0.0


@mistake(L, C, "no_no_grad", ["no_grad", "requires grad", "requires_grad", "leaf", "gradient"],
         "assigns into the weight without torch.no_grad()")
def _(attn, head):
    d = attn.d_head
    attn.out_proj.weight[:, head * d:(head + 1) * d] = 0.0


@alternative(L, C, "values_and_bias", "zeroes the head's rows of v_proj.weight and v_proj.bias: its values are 0")
def _(attn, head):
    sl = slice(head * attn.d_head, (head + 1) * attn.d_head)
    with torch.no_grad():
        attn.v_proj.weight[sl] = 0.0
        attn.v_proj.bias[sl] = 0.0


@alternative(L, C, "data_zero_", "out_proj.weight.data[:, block].zero_()")
def _(attn, head):
    attn.out_proj.weight.data[:, head * attn.d_head:(head + 1) * attn.d_head].zero_()


@alternative(L, C, "multiply_by_keep", "multiplies the weight by a 0/1 column mask")
def _(attn, head):
    keep = torch.ones(attn.n_heads, attn.d_head)
    keep[head] = 0.0
    with torch.no_grad():
        attn.out_proj.weight.mul_(keep.flatten())


C = "check_zero_query_prediction"
_UNIFORM = ["uniform", "equal scores", "spread", "q = 0", "not silent", "even", "average", "1/n", "q·k"]
wrong_answer(L, C, "zero", (0.0,), _UNIFORM, "thinks zero queries silence the head")
wrong_answer(L, C, "half", (0.5,), _UNIFORM, "hedges at 0.5")
wrong_answer(L, C, "raw_entropy", (math.log(6),), ["normalised", "ln n", "raw", "nats", "between 0 and 1",
                                                   "0 and 1"], "gives the raw entropy ln 6 of a 6-word row")
wrong_answer(L, C, "out_of_range", (2.0,), ["between 0 and 1", "0 and 1", "range"], "a number above 1")
wrong_answer(L, C, "string", ("1",), ["number", "float", "string", "type", "str"], "the right value as a string")
right_answer(L, C, "int_one", (1,), "the int 1")
right_answer(L, C, "float_one", (1.0,), "1.0")


# =====================================================================================================
# Running the checkers
# =====================================================================================================
_OUTCOMES: dict[str, Outcome] = {}


def _hint_text(entry: Entry, message: str) -> str:
    """The message without what merely echoes the case or the call: case labels in quotes ("case 'B=2, ...'")
    and the learner function's own signature ("f(q, k, v)"), so that a keyword found only there (a case named
    'cross-attention', a parameter named eos_id) does not count as a specific hint."""
    text = re.sub(r"\b(case|layer) '[^']*'", " ", message)
    for answer in entry.answer:
        if callable(answer):
            try:
                params = ", ".join(inspect.signature(answer).parameters)
            except (TypeError, ValueError):
                continue
            text = re.sub(r"\w+\(" + re.escape(params) + r"\)", " ", text)
    return text.lower()


def run(entry: Entry) -> Outcome:
    """Run the entry's checker once (results are cached per process) and classify the answer."""
    if entry.id in _OUTCOMES:
        return _OUTCOMES[entry.id]
    checker = getattr(getattr(cl.checks, f"lesson{entry.lesson}"), entry.checker)
    answer = tuple(copy.deepcopy(a) if isinstance(a, (list, set, dict)) else a for a in entry.answer)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. torch's deprecation warning for k.T on a 3-D tensor
            result = checker(*answer)
        status, message = str(result.status), str(result.message)
    except Exception as error:  # a checker must never raise; record it as its own status
        status, message = "error", f"the checker raised {type(error).__name__}: {error}"
    hint = _hint_text(entry, message)
    specific = status == "fail" and any(k in hint for k in entry.keywords)
    _OUTCOMES[entry.id] = Outcome(entry, status, message, specific)
    return _OUTCOMES[entry.id]


def run_all() -> list[Outcome]:
    return [run(e) for e in ENTRIES]


def specific_rate(outcomes: Sequence[Outcome]) -> float:
    wrong = [o for o in outcomes if not o.entry.correct]
    return sum(o.specific for o in wrong) / len(wrong)


def table(outcomes: Sequence[Outcome]) -> str:
    """A table per lesson and exercise, then every generic hint, wrong pass and failed alternative."""
    rows = ["lesson  exercise                        wrong  passed  specific  generic | right  failed"]
    keys = list(dict.fromkeys((o.entry.lesson, o.entry.checker) for o in outcomes))
    for lesson, checker in keys:
        group = [o for o in outcomes if (o.entry.lesson, o.entry.checker) == (lesson, checker)]
        wrong = [o for o in group if not o.entry.correct]
        right = [o for o in group if o.entry.correct]
        n_pass = sum(o.wrong_pass for o in wrong)
        n_spec = sum(o.specific for o in wrong)
        rows.append(f"{lesson:6}  {checker.removeprefix('check_'):30}  {len(wrong):5}  {n_pass:6}  {n_spec:8}  "
                    f"{len(wrong) - n_spec - n_pass:7} | {len(right):5}  {sum(o.correct_failed for o in right):6}")
    wrong_all = [o for o in outcomes if not o.entry.correct]
    right_all = [o for o in outcomes if o.entry.correct]
    rows.append(f"total: {len(wrong_all)} wrong entries, {sum(o.wrong_pass for o in wrong_all)} passed wrongly, "
                f"{sum(o.specific for o in wrong_all)} specific hints ({specific_rate(outcomes):.1%}, goal "
                f"{SPECIFIC_HINT_GOAL:.0%}); {len(right_all)} correct alternatives, "
                f"{sum(o.correct_failed for o in right_all)} failed")
    sections = (
        ("WRONG PASSES", [o for o in wrong_all if o.wrong_pass]),
        ("GENERIC HINTS (failed, but no keyword in the message)",
         [o for o in wrong_all if not o.wrong_pass and not o.specific]),
        ("CORRECT ALTERNATIVES NOT PASSED", [o for o in right_all if o.correct_failed]),
    )
    for title, items in sections:
        if items:
            rows.append(f"\n{title}:")
            for o in items:
                kw = "" if o.entry.correct else f"\n      keywords: {list(o.entry.keywords)}"
                rows.append(f"  {o.entry.id} [{o.status}] learner: {o.entry.what}\n      checker: {o.message}{kw}")
    return "\n".join(rows)


if __name__ == "__main__":
    torch.set_num_threads(1)
    print(table(run_all()))
    sys.exit(0)
