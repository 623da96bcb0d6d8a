"""Checkers for the exercises of lesson 02 (multi-head attention).

Each exercise is its reference, its cases and its list of named mistakes (``MISTAKES``), run by
``_harness.run_cases`` (or ``check_answer`` for predictions). The references are plain tensor ops and
PyTorch's own ``nn.MultiheadAttention``.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ..attention import MultiHeadAttention
from ._answers import check_answer
from ._cases import Case, Mistake
from ._harness import run_cases
from ._results import Hint, NotDone, checker, short_repr

_VIEW_TIP = ("After .transpose the tensor is not contiguous in memory, so .view cannot regroup it: use .reshape(...) "
             "(or .contiguous().view(...))")
_ERROR_TIPS = [("view size is not compatible", _VIEW_TIP)]


# Correct split/merge and the classic wrong ones. x: [B, T, D] or [B, H, T, d_head].
def split_heads_reference(x: Tensor, n_heads: int) -> Tensor:
    b, t, d = x.shape
    return x.reshape(b, t, n_heads, d // n_heads).transpose(1, 2)  # [B, H, T, d_head]


def _split_no_transpose(x: Tensor, h: int) -> Tensor:  # x.view(B, H, T, d_head): positions mixed
    b, t, d = x.shape
    return x.reshape(b, h, t, d // h)


def _split_interleaved(x: Tensor, h: int) -> Tensor:  # head i gets features i, i+H, i+2H, ...
    b, t, d = x.shape
    return x.reshape(b, t, d // h, h).permute(0, 3, 1, 2)


def merge_heads_reference(x: Tensor) -> Tensor:
    b, h, t, dh = x.shape
    return x.transpose(1, 2).reshape(b, t, h * dh)  # [B, T, D]


def _merge_no_transpose(x: Tensor) -> Tensor:
    b, h, t, dh = x.shape
    return x.reshape(b, t, h * dh)


def _merge_interleaved(x: Tensor) -> Tensor:
    b, h, t, dh = x.shape
    return x.permute(0, 2, 3, 1).reshape(b, t, h * dh)


SPLIT_NO_TRANSPOSE = ("reshaping straight to [B, H, T, d_head] (x.view(B, H, T, d_head)) regroups the flat memory, "
                      "so one head's rows mix features of different positions. View as [B, T, H, d_head] first, "
                      "then .transpose(1, 2)")
INTERLEAVED = ("head i got features i, i+H, i+2H, ... (interleaved) instead of the contiguous block "
               "i*d_head ... (i+1)*d_head - 1: the H axis must come before d_head, as in [B, T, H, d_head]")
MERGE_NO_TRANSPOSE = ("you reshaped [B, H, T, d_head] to [B, T, d_model] without moving the heads back next to "
                      "d_head: rows now mix positions. Do .transpose(1, 2) first, then .reshape(B, T, d_model)")

_SHAPES = [  # name, B, T, d_model, H, dtype
    ("B=2, T=5, d_model=12, H=3", 2, 5, 12, 3, torch.float32),
    ("batch of 1", 1, 7, 8, 2, torch.float32),
    ("T equals H", 2, 4, 16, 4, torch.float32),
    ("float64", 2, 3, 12, 4, torch.float64),
]


def _split_cases() -> list[Case]:
    gen = torch.Generator().manual_seed(2)
    return [Case(name, (torch.randn(b, t, d, generator=gen, dtype=dtype), h), batch=b)
            for name, b, t, d, h, dtype in _SHAPES]


def _merge_cases() -> list[Case]:
    gen = torch.Generator().manual_seed(3)
    return [Case(name, (torch.randn(b, h, t, d // h, generator=gen, dtype=dtype),), batch=b)
            for name, b, t, d, h, dtype in _SHAPES]


# --- Exercise 1 · split_heads(x, n_heads) -------------------------------------------------------------

SPLIT_CASES = _split_cases()
SPLIT_MISTAKES = [
    Mistake("split_no_transpose", SPLIT_NO_TRANSPOSE, _split_no_transpose),
    Mistake("split_interleaved", INTERLEAVED, _split_interleaved),
    Mistake("head_axis_not_moved", "you split the features into heads but did not move the head axis in front of T "
            "(the result is [B, T, H, d_head]): add .transpose(1, 2)",
            lambda x, h: x.reshape(x.shape[0], x.shape[1], h, x.shape[2] // h)),
    Mistake("heads_and_d_head_swapped", "you cut the last axis into [d_head, H] instead of [H, d_head]: view it "
            "as (B, T, n_heads, d_model // n_heads), then .transpose(1, 2)",
            lambda x, h: x.reshape(x.shape[0], x.shape[1], x.shape[2] // h, h).transpose(1, 2)),
]


@checker("Exercise 1 · split_heads(x, n_heads)")
def check_split_heads(split_heads: Callable[[Tensor, int], Tensor]) -> str:
    """``split_heads(x [B, T, D], n_heads) -> [B, H, T, D // H]``."""
    return run_cases(split_heads, reference=split_heads_reference, cases=SPLIT_CASES, mistakes=SPLIT_MISTAKES,
                     what="split_heads(x, n_heads)", error_tips=_ERROR_TIPS,
                     passed="each head holds its own block of d_head features, for every position (4 cases)")


# --- Exercise 2 · merge_heads(x) ------------------------------------------------------------------

MERGE_CASES = _merge_cases()
MERGE_MISTAKES = [
    Mistake("merge_no_transpose", MERGE_NO_TRANSPOSE, _merge_no_transpose),
    Mistake("merge_interleaved", "the features of the heads came out interleaved (x.permute(0, 2, 3, 1)): head 0's "
            "d_head features must come first, then head 1's, ...: use .transpose(1, 2), giving [B, T, H, d_head], "
            "before the reshape", _merge_interleaved),
    Mistake("not_flattened", "the heads are back next to d_head ([B, T, H, d_head]); now flatten them with "
            ".reshape(B, T, H * d_head)", lambda x: x.transpose(1, 2)),
    Mistake("view_after_transpose", "the tensor is not contiguous in memory after .transpose, so .view cannot "
            "regroup it: use .reshape(...) (or .contiguous().view(...))",
            lambda x: x.transpose(1, 2).view(x.shape[0], x.shape[2], -1)),
]


@checker("Exercise 2 · merge_heads(x)")
def check_merge_heads(merge_heads: Callable[[Tensor], Tensor]) -> str:
    """``merge_heads(x [B, H, T, d_head]) -> [B, T, H * d_head]``, the inverse of ``split_heads``."""
    return run_cases(merge_heads, reference=merge_heads_reference, cases=MERGE_CASES, mistakes=MERGE_MISTAKES,
                     what="merge_heads(x)", error_tips=_ERROR_TIPS,
                     passed="merge_heads undoes split_heads: heads concatenated in order, one row per position "
                            "(4 cases)")


# --- Exercise 3 · mha_forward(x, source, w_q, w_k, w_v, w_o, n_heads) ----------------------------------

def _mha(x: Tensor, source: Tensor, w_q: Tensor, w_k: Tensor, w_v: Tensor, w_o: Tensor, h: int, *,
         scale_dim: int | None = None, dim: int = -1, split: Callable[[Tensor, int], Tensor] = split_heads_reference,
         merge: Callable[[Tensor], Tensor] = merge_heads_reference, out_proj: bool = True,
         transpose_w: bool = True, transpose_w_o: bool | None = None) -> Tensor:
    """Multi-head attention with one knob per typical mistake. Weights are ``[D, D]`` as nn.Linear stores them."""
    w_q, w_k, w_v = (m.T if transpose_w else m for m in (w_q, w_k, w_v))
    w_o = w_o.T if (transpose_w if transpose_w_o is None else transpose_w_o) else w_o
    q, k, v = split(x @ w_q, h), split(source @ w_k, h), split(source @ w_v, h)  # [B, H, T, d_head]
    scale_dim = q.shape[-1] if scale_dim is None else scale_dim
    attn_weights = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(scale_dim), dim=dim)  # [B, H, T_q, T_k]
    context = merge(attn_weights @ v)  # [B, T_q, D]
    return context @ w_o if out_proj else context


def mha_reference(x: Tensor, source: Tensor, w_q: Tensor, w_k: Tensor, w_v: Tensor, w_o: Tensor,
                  n_heads: int) -> Tensor:
    """``nn.MultiheadAttention`` (no biases) with the same weights."""
    d = x.shape[-1]
    ref = nn.MultiheadAttention(d, n_heads, bias=False, batch_first=True, dtype=x.dtype)
    with torch.no_grad():
        ref.in_proj_weight.copy_(torch.cat([w_q, w_k, w_v]))
        ref.out_proj.weight.copy_(w_o)
        return ref(x, source, source, need_weights=False)[0]


_MHA_SHAPES = [  # name, B, T_q, T_k, d_model, H, dtype; T_k = None means self-attention
    ("self-attention, B=2, T=6, d_model=16, H=4", 2, 6, None, 16, 4, torch.float32),
    ("cross-attention, T_q=5, T_k=9", 2, 5, 9, 16, 4, torch.float32),
    ("cross-attention, batch of 1", 1, 3, 7, 8, 2, torch.float32),
    ("cross-attention, float64", 2, 4, 6, 12, 3, torch.float64),
]


def _mha_cases() -> list[Case]:
    gen = torch.Generator().manual_seed(4)
    cases = []
    for name, b, t_q, t_k, d, h, dtype in _MHA_SHAPES:
        x = torch.randn(b, t_q, d, generator=gen, dtype=dtype)
        source = x if t_k is None else torch.randn(b, t_k, d, generator=gen, dtype=dtype)
        w = [torch.randn(d, d, generator=gen, dtype=dtype) / math.sqrt(d) for _ in range(4)]
        cases.append(Case(name, (x, source, *w, h), info={"d_model": d, "d_head": d // h}))
    return cases


def _single_head(x: Tensor, source: Tensor, w_q: Tensor, w_k: Tensor, w_v: Tensor, w_o: Tensor, h: int) -> Tensor:
    return _mha(x, source, w_q, w_k, w_v, w_o, 1)


def _heads_not_merged(x: Tensor, source: Tensor, w_q: Tensor, w_k: Tensor, w_v: Tensor, w_o: Tensor,
                      h: int) -> Tensor:
    return _mha(x, source, w_q, w_k, w_v, w_o, h, merge=lambda c: c, out_proj=False)  # [B, H, T_q, d_head]


MHA_CASES = _mha_cases()
MHA_MISTAKES = [
    Mistake("no_output_projection", "the output projection W_o is missing: after merging the heads, multiply by "
            "w_o.T", lambda *a: _mha(*a, out_proj=False)),
    Mistake("scale_by_d_model", "scores scaled by 1/sqrt(d_model) = 1/sqrt({d_model}); each head's dot products "
            "have d_head = {d_head} terms: divide by sqrt(d_head)", lambda *a: _mha(*a, scale_dim=a[0].shape[-1])),
    Mistake("no_scale", "the scores are not scaled: divide q @ k^T by sqrt(d_head)", lambda *a: _mha(*a, scale_dim=1)),
    Mistake("softmax_over_queries", "softmax over the queries (dim=-2): each query's weights over the keys must sum "
            "to 1, so use dim=-1", lambda *a: _mha(*a, dim=-2)),
    Mistake("merge_no_transpose", "heads merged without transposing back: " + MERGE_NO_TRANSPOSE,
            lambda *a: _mha(*a, merge=_merge_no_transpose)),
    Mistake("merge_interleaved", "heads merged in the wrong order (features interleaved): transpose(1, 2), then "
            "reshape", lambda *a: _mha(*a, merge=_merge_interleaved)),
    Mistake("split_no_transpose", "heads split wrongly: " + SPLIT_NO_TRANSPOSE,
            lambda *a: _mha(*a, split=_split_no_transpose)),
    Mistake("split_interleaved", "heads split wrongly: " + INTERLEAVED, lambda *a: _mha(*a, split=_split_interleaved)),
    Mistake("weights_not_transposed", "the weights are stored as nn.Linear stores them, [out_features, "
            "in_features]: compute x @ w_q.T, not x @ w_q", lambda *a: _mha(*a, transpose_w=False)),
    Mistake("w_o_not_transposed", "W_q, W_k and W_v are applied right, but W_o is not transposed: the output "
            "projection is merged @ w_o.T", lambda *a: _mha(*a, transpose_w_o=False)),
    Mistake("values_with_w_k", "the values were projected with w_k: v = source @ w_v.T",
            lambda x, s, w_q, w_k, w_v, w_o, h: _mha(x, s, w_q, w_k, w_k, w_o, h)),
    Mistake("single_head", "this is one attention over all d_model features: split q, k and v into n_heads heads of "
            "d_head features, attend within each head, then merge", _single_head),
    Mistake("kv_from_x", "keys and values came from x: in cross-attention they come from source (only the "
            "queries come from x)", lambda x, s, *rest: _mha(x, x, *rest)),
    Mistake("queries_from_source", "queries and keys/values are swapped (one output row per *source* position): "
            "queries come from x (the output has T_q rows), keys and values from source",
            lambda x, s, *rest: _mha(s, x, *rest)),
    Mistake("heads_not_merged", "the output is still per head, [B, H, T_q, d_head]: merge the heads back to "
            "[B, T_q, d_model] and apply the output projection W_o", _heads_not_merged, match="shape"),
]


@checker("Exercise 3 · mha_forward(x, source, w_q, w_k, w_v, w_o, n_heads)")
def check_mha_forward(mha_forward: Callable[..., Tensor]) -> str:
    """``mha_forward(x, source, w_q, w_k, w_v, w_o, n_heads) -> [B, T_q, d_model]``, against
    ``nn.MultiheadAttention(bias=False, batch_first=True)`` with the same weights."""
    return run_cases(mha_forward, reference=mha_reference, cases=MHA_CASES, mistakes=MHA_MISTAKES,
                     what="mha_forward(x, source, w_q, w_k, w_v, w_o, n_heads)", error_tips=_ERROR_TIPS,
                     passed="matches nn.MultiheadAttention (copied weights) for self- and cross-attention, B=1 and "
                            "float64")


# --- Exercise 4 · predict, then verify: the parameter count --------------------------------------------

D_MODEL, N_HEADS = 512, 8
PARAMS = 4 * (D_MODEL * D_MODEL + D_MODEL)  # checked against the real modules in the checker
_D_HEAD = D_MODEL // N_HEADS
_ONE_HEAD = ("a head's slice of W_q, W_k, W_v is 512 x 64 (all 512 features in, d_head = 64 out), not 64 x 64, "
             "and the 8 slices together make up the four 512 x 512 matrices")
PARAM_MISTAKES = [
    Mistake("no_biases", "that leaves out the biases: each of the 4 projections also has 512 of them",
            4 * D_MODEL * D_MODEL),
    Mistake("no_output_projection", "that counts W_q, W_k and W_v but not the output projection W_o",
            3 * (D_MODEL * D_MODEL + D_MODEL)),
    Mistake("no_w_o_no_biases", "that leaves out the output projection W_o and the biases", 3 * D_MODEL * D_MODEL),
    Mistake("matrices_per_head", "the heads do not have full-size matrices of their own: each head uses a "
            "d_head = 64 slice of W_q, W_k, W_v (and of W_o's input), so the 8 heads together share 4 matrices of "
            "512 x 512", N_HEADS * PARAMS),
    Mistake("one_head", "that is one head's share (a d_head = 64 slice); the 8 heads together use all of the "
            "four 512 x 512 matrices", PARAMS // N_HEADS),
    Mistake("head_square_matrices", _ONE_HEAD, N_HEADS * 4 * (_D_HEAD * _D_HEAD + _D_HEAD)),
    Mistake("head_square_matrices_no_biases", _ONE_HEAD, N_HEADS * 4 * _D_HEAD * _D_HEAD),
]
DEPENDS_MISTAKES = [
    Mistake("count_depends_on_heads", "the count is right, but it does not depend on n_heads: heads only regroup "
            "the 512 features; the matrices stay 512 x 512", True),
]


def _as_bool(value: Any) -> bool | None:
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, Tensor) and value.ndim == 0 and value.dtype == torch.bool:
        return bool(value.item())
    return None


@checker("Exercise 4 · predict: parameters of multi-head attention")
def check_param_count(predicted_params: Any, depends_on_heads: Any) -> str:
    """Predicted parameter count of MHA with d_model=512, 8 heads, and whether it depends on n_heads."""
    counts = {h: sum(p.numel() for p in MultiHeadAttention(D_MODEL, h).parameters()) for h in (1, 2, 4, 8, 16)}
    theirs = sum(p.numel() for p in nn.MultiheadAttention(D_MODEL, N_HEADS).parameters())
    assert counts[N_HEADS] == PARAMS == theirs, "the reference count is out of date"
    if predicted_params is not None and depends_on_heads is None:
        raise NotDone("not done yet: depends_on_heads is still None")
    check_answer(predicted_params, PARAMS, what="predicted_params", mistakes=PARAM_MISTAKES,
                 template="{got:,} is not it: {hint}",
                 otherwise="count the four nn.Linear(512, 512) layers, weights and biases")
    depends = _as_bool(depends_on_heads)
    if depends_on_heads is None:
        raise NotDone("not done yet: depends_on_heads is still None")
    if depends is None:
        raise Hint(f"depends_on_heads should be True or False, but got {short_repr(depends_on_heads)}",
                   mistake="wrong_type")
    if depends:
        mistake = DEPENDS_MISTAKES[0]
        raise Hint(mistake.hint + ". The real module has " + ", ".join(f"{n:,} ({h} heads)" for h, n in counts.items()),
                   mistake=mistake.name)
    return (f"{PARAMS:,} = 4 x (512 x 512 + 512), the same for 1, 2, 4, 8 or 16 heads "
            f"(nn.MultiheadAttention: {theirs:,})")


# --- Exercise 5 · predict, then verify: shapes in cross-attention ----------------------------------------

WEIGHTS_SHAPE, OUTPUT_SHAPE = (2, 4, 5, 9), (2, 5, 32)  # checked against the real module in the checker
WEIGHTS_SHAPE_MISTAKES = [
    Mistake("rows_are_keys", "rows are queries and columns keys: [B, H, T_q, T_k]", (2, 4, 9, 5)),
    Mistake("keys_from_x", "the keys come from source, which has 9 positions: T_k = 9", (2, 4, 5, 5)),
    Mistake("queries_from_source", "the queries come from x, which has 5 positions: T_q = 5", (2, 4, 9, 9)),
    Mistake("averaged_over_heads", "that is nn.MultiheadAttention's default, which averages over the heads; "
            "cl.MultiHeadAttention keeps one matrix per head", (2, 5, 9)),
    Mistake("per_head_context", "that is the per-head context (d_head = 8); the weights have one column per key",
            (2, 4, 5, 8)),
]
OUTPUT_SHAPE_MISTAKES = [
    Mistake("output_per_source_position", "the output has one row per query (from x), not per source position",
            (2, 9, 32)),
    Mistake("output_per_head", "the heads are merged and projected back to d_model = 32", (2, 4, 5, 8)),
    Mistake("output_d_head", "the heads are merged back: 4 heads x d_head 8 = d_model 32", (2, 5, 8)),
]


@checker("Exercise 5 · predict: shapes in cross-attention")
def check_cross_attention_shapes(predicted_weights_shape: Any, predicted_output_shape: Any) -> str:
    """Predicted shapes of ``cl.MultiHeadAttention(32, 4)(x, source, need_weights=True)`` with
    x ``[2, 5, 32]`` and source ``[2, 9, 32]``."""
    gen = torch.Generator().manual_seed(5)
    x, source = torch.randn(2, 5, 32, generator=gen), torch.randn(2, 9, 32, generator=gen)
    output, attn_weights = MultiHeadAttention(32, 4)(x, source, need_weights=True)
    assert (tuple(attn_weights.shape), tuple(output.shape)) == (WEIGHTS_SHAPE, OUTPUT_SHAPE)
    for answer, what in ((predicted_weights_shape, "predicted_weights_shape"),
                         (predicted_output_shape, "predicted_output_shape")):
        if answer is None:
            raise NotDone(f"not done yet: {what} is still None")
    check_answer(predicted_weights_shape, WEIGHTS_SHAPE, what="predicted_weights_shape",
                 mistakes=WEIGHTS_SHAPE_MISTAKES,
                 template="attention weights: you predicted {got}, the module gives {expected}: {hint}",
                 otherwise="one matrix per batch element and head, T_q rows by T_k columns")
    check_answer(predicted_output_shape, OUTPUT_SHAPE, what="predicted_output_shape", mistakes=OUTPUT_SHAPE_MISTAKES,
                 template="output: you predicted {got}, the module gives {expected}: {hint}",
                 otherwise="cross-attention gives one d_model vector per query")
    return ("weights [2, 4, 5, 9] = [B, H, T_q, T_k] (each row sums to 1 over the 9 source positions) and output "
            "[2, 5, 32] = [B, T_q, d_model]: the source length does not appear in the output's shape")


MISTAKES = {
    "check_split_heads": SPLIT_MISTAKES,
    "check_merge_heads": MERGE_MISTAKES,
    "check_mha_forward": MHA_MISTAKES,
    "check_param_count": PARAM_MISTAKES,
    "check_param_count:depends_on_heads": DEPENDS_MISTAKES,
    "check_cross_attention_shapes:weights": WEIGHTS_SHAPE_MISTAKES,
    "check_cross_attention_shapes:output": OUTPUT_SHAPE_MISTAKES,
}
CASES = {"check_split_heads": SPLIT_CASES, "check_merge_heads": MERGE_CASES, "check_mha_forward": MHA_CASES}
REFERENCES = {"check_split_heads": split_heads_reference, "check_merge_heads": merge_heads_reference,
              "check_mha_forward": mha_reference}
