"""Checkers for the exercises of lesson 02 (multi-head attention).

The references are PyTorch's own ``nn.MultiheadAttention`` and plain tensor ops; each typical wrong
answer (missing transpose, heads interleaved, wrong scale, ...) is computed and named in its hint.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from .._checks import shape_str
from ..attention import MultiHeadAttention
from ._harness import Hint, NotDone, call_learner, checker, compare, expect_int, expect_shape, expect_tensor


# Correct split/merge and the classic wrong ones. x: [B, T, D] or [B, H, T, d_head].
def _split(x: Tensor, h: int) -> Tensor:
    b, t, d = x.shape
    return x.reshape(b, t, h, d // h).transpose(1, 2)  # [B, H, T, d_head]


def _split_no_transpose(x: Tensor, h: int) -> Tensor:  # x.view(B, H, T, d_head): positions mixed
    b, t, d = x.shape
    return x.reshape(b, h, t, d // h)


def _split_interleaved(x: Tensor, h: int) -> Tensor:  # head i gets features i, i+H, i+2H, ...
    b, t, d = x.shape
    return x.reshape(b, t, d // h, h).permute(0, 3, 1, 2)


def _merge(x: Tensor) -> Tensor:
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


def _call(fn: Any, *args: Any, what: str) -> Any:
    """``call_learner``, plus a specific hint for ``.view`` on a transposed (non-contiguous) tensor."""
    try:
        return call_learner(fn, *args, what=what)
    except Hint as hint:
        if "view size is not compatible" in str(hint):
            raise Hint(f"{hint}. After .transpose the tensor is not contiguous in memory, so .view cannot "
                       "regroup it: use .reshape(...) (or .contiguous().view(...))") from None
        raise


def _same_dtype(out: Tensor, x: Tensor, what: str) -> None:
    if out.dtype != x.dtype:
        raise Hint(f"{what} returned dtype {out.dtype} for a {x.dtype} input; keep the input's dtype")


_CASES = [  # name, B, T_q, T_k, d_model, H, dtype
    ("B=2, T=5, d_model=12, H=3", 2, 5, 5, 12, 3, torch.float32),
    ("batch of 1", 1, 7, 7, 8, 2, torch.float32),
    ("T equals H", 2, 4, 4, 16, 4, torch.float32),
    ("float64", 2, 3, 3, 12, 4, torch.float64),
]


@checker("split_heads")
def check_split_heads(split_heads: Callable[[Tensor, int], Tensor]) -> str:
    """``split_heads(x [B, T, D], n_heads) -> [B, H, T, D // H]``."""
    gen = torch.Generator().manual_seed(2)
    for name, b, t, _, d, h, dtype in _CASES:
        x = torch.randn(b, t, d, generator=gen, dtype=dtype)
        out = _call(split_heads, x.clone(), h, what="split_heads(x, n_heads)")
        if isinstance(out, Tensor) and tuple(out.shape) == (b, t, h, d // h) and t != h:
            raise Hint(f"case '{name}': the shape is [B, T, H, d_head] = {shape_str(out.shape)}: you split the "
                       "features into heads but did not move the head axis in front of T: add .transpose(1, 2)")
        out = expect_tensor(out, "split_heads(x, n_heads)", expected_shape=(b, h, t, d // h))
        _same_dtype(out, x, "split_heads")
        compare(out, _split(x, h), what="split_heads(x, n_heads)", case=name, mistakes=[
            (_split_no_transpose(x, h), SPLIT_NO_TRANSPOSE),
            (_split_interleaved(x, h), INTERLEAVED),
            (x.reshape(b, t, h, d // h), "you split the features but did not move the head axis in front of T: "
                                          "add .transpose(1, 2) (here T == H, so the shape looked right)"),
        ])
    return "each head holds its own block of d_head features, for every position (4 cases)"


@checker("merge_heads")
def check_merge_heads(merge_heads: Callable[[Tensor], Tensor]) -> str:
    """``merge_heads(x [B, H, T, d_head]) -> [B, T, H * d_head]``, the inverse of ``split_heads``."""
    gen = torch.Generator().manual_seed(3)
    for name, b, t, _, d, h, dtype in _CASES:
        x = torch.randn(b, h, t, d // h, generator=gen, dtype=dtype)
        out = _call(merge_heads, x.clone(), what="merge_heads(x)")
        if isinstance(out, Tensor) and tuple(out.shape) == (b, t, h, d // h) and t != h:
            raise Hint(f"case '{name}': the shape is [B, T, H, d_head] = {shape_str(out.shape)}: the heads are "
                       "back next to d_head; now flatten them with .reshape(B, T, H * d_head)")
        out = expect_tensor(out, "merge_heads(x)", expected_shape=(b, t, d))
        _same_dtype(out, x, "merge_heads")
        compare(out, _merge(x), what="merge_heads(x)", case=name, mistakes=[
            (_merge_no_transpose(x), MERGE_NO_TRANSPOSE),
            (_merge_interleaved(x), "the features of the heads came out interleaved (x.permute(0, 2, 3, 1)): "
                                    "head 0's d_head features must come first, then head 1's, ...: "
                                    "use .transpose(1, 2), giving [B, T, H, d_head], before the reshape"),
        ])
    return "merge_heads undoes split_heads: heads concatenated in order, one row per position (4 cases)"


def _mha(x: Tensor, source: Tensor, w: list[Tensor], h: int, *, scale_dim: int | None = None, dim: int = -1,
         split: Callable[[Tensor, int], Tensor] = _split, merge: Callable[[Tensor], Tensor] = _merge,
         out_proj: bool = True, transpose_w: bool = True) -> Tensor:
    """Multi-head attention with optional typical mistakes. ``w = [w_q, w_k, w_v, w_o]``, each ``[D, D]``."""
    w_q, w_k, w_v, w_o = (m.T if transpose_w else m for m in w)
    q, k, v = split(x @ w_q, h), split(source @ w_k, h), split(source @ w_v, h)  # [B, H, T, d_head]
    scale_dim = q.shape[-1] if scale_dim is None else scale_dim
    attn_weights = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(scale_dim), dim=dim)  # [B, H, T_q, T_k]
    context = merge(attn_weights @ v)  # [B, T_q, D]
    return context @ w_o if out_proj else context


def _torch_mha(x: Tensor, source: Tensor, w: list[Tensor], h: int) -> Tensor:
    """The reference: ``nn.MultiheadAttention`` (no biases) with the same weights."""
    d = x.shape[-1]
    ref = nn.MultiheadAttention(d, h, bias=False, batch_first=True, dtype=x.dtype)
    with torch.no_grad():
        ref.in_proj_weight.copy_(torch.cat(w[:3]))
        ref.out_proj.weight.copy_(w[3])
        return ref(x, source, source, need_weights=False)[0]


_MHA_CASES = [  # name, B, T_q, T_k, d_model, H, dtype; T_k = None means self-attention
    ("self-attention, B=2, T=6, d_model=16, H=4", 2, 6, None, 16, 4, torch.float32),
    ("cross-attention, T_q=5, T_k=9", 2, 5, 9, 16, 4, torch.float32),
    ("cross-attention, batch of 1", 1, 3, 7, 8, 2, torch.float32),
    ("cross-attention, float64", 2, 4, 6, 12, 3, torch.float64),
]


@checker("multi-head attention forward")
def check_mha_forward(mha_forward: Callable[..., Tensor]) -> str:
    """``mha_forward(x, source, w_q, w_k, w_v, w_o, n_heads) -> [B, T_q, d_model]``, against
    ``nn.MultiheadAttention(bias=False, batch_first=True)`` with the same weights."""
    gen = torch.Generator().manual_seed(4)
    what = "mha_forward(x, source, w_q, w_k, w_v, w_o, n_heads)"
    for name, b, t_q, t_k, d, h, dtype in _MHA_CASES:
        x = torch.randn(b, t_q, d, generator=gen, dtype=dtype)
        source = x if t_k is None else torch.randn(b, t_k, d, generator=gen, dtype=dtype)
        w = [torch.randn(d, d, generator=gen, dtype=dtype) / math.sqrt(d) for _ in range(4)]
        out = _call(mha_forward, x.clone(), source.clone(), *(m.clone() for m in w), h, what=what)
        if isinstance(out, Tensor) and t_k is not None and tuple(out.shape) == (b, t_k, d):
            raise Hint(f"case '{name}': one output row per *source* position {shape_str(out.shape)}: queries come "
                       "from x (the output has T_q rows), keys and values from source")
        if isinstance(out, Tensor) and tuple(out.shape) == (b, h, t_q, d // h):
            raise Hint(f"case '{name}': the output is still per head {shape_str(out.shape)}: merge the heads back to "
                       "[B, T_q, d_model] and apply the output projection W_o")
        out = expect_tensor(out, what, expected_shape=(b, t_q, d))
        mistakes = [
            (_mha(x, source, w, h, out_proj=False), "the output projection W_o is missing: after merging the heads, "
                                                   "multiply by w_o.T"),
            (_mha(x, source, w, h, scale_dim=d), f"scores scaled by 1/sqrt(d_model) = 1/sqrt({d}); each head's dot "
                                                 f"products have d_head = {d // h} terms: divide by sqrt(d_head)"),
            (_mha(x, source, w, h, scale_dim=1), "the scores are not scaled: divide q @ k^T by sqrt(d_head)"),
            (_mha(x, source, w, h, dim=-2), "softmax over the queries (dim=-2): each query's weights over the keys "
                                            "must sum to 1, so use dim=-1"),
            (_mha(x, source, w, h, merge=_merge_no_transpose), "heads merged without transposing back: "
                                                               + MERGE_NO_TRANSPOSE),
            (_mha(x, source, w, h, merge=_merge_interleaved), "heads merged in the wrong order (features "
                                                              "interleaved): transpose(1, 2), then reshape"),
            (_mha(x, source, w, h, split=_split_no_transpose), "heads split wrongly: " + SPLIT_NO_TRANSPOSE),
            (_mha(x, source, w, h, split=_split_interleaved), "heads split wrongly: " + INTERLEAVED),
            (_mha(x, source, w, h, transpose_w=False), "the weights are stored as nn.Linear stores them, "
                                                       "[out_features, in_features]: compute x @ w_q.T, not x @ w_q"),
        ]
        if t_k is not None:
            mistakes.append((_mha(x, x, w, h), "keys and values came from x: in cross-attention they come from "
                                               "source (only the queries come from x)"))
        compare(out, _torch_mha(x, source, w, h), what=what, case=name, mistakes=mistakes)
    return "matches nn.MultiheadAttention (copied weights) for self- and cross-attention, B=1 and float64"


@checker("parameters of multi-head attention")
def check_param_count(predicted_params: Any, depends_on_heads: Any) -> str:
    """Predicted parameter count of MHA with d_model=512, 8 heads, and whether it depends on n_heads."""
    d = 512
    predicted = expect_int(predicted_params, "predicted_params")
    if depends_on_heads is None:
        raise NotDone("not done yet: depends_on_heads is still None")
    if not isinstance(depends_on_heads, bool):
        raise Hint(f"depends_on_heads should be True or False, but got {depends_on_heads!r}")
    counts = {h: sum(p.numel() for p in MultiHeadAttention(d, h).parameters()) for h in (1, 2, 4, 8, 16)}
    theirs = sum(p.numel() for p in nn.MultiheadAttention(d, 8).parameters())
    actual = counts[8]
    wrong = {
        4 * d * d: "that leaves out the biases: each of the 4 projections also has 512 of them",
        3 * (d * d + d): "that counts W_q, W_k and W_v but not the output projection W_o",
        3 * d * d: "that leaves out the output projection W_o and the biases",
        8 * actual: "the heads do not have full-size matrices of their own: each head uses a d_head = 64 slice "
                    "of W_q, W_k, W_v (and of W_o's input), so the 8 heads together share 4 matrices of 512 x 512",
        actual // 8: "that is one head's share (a d_head = 64 slice); the 8 heads together use all of the four "
                     "512 x 512 matrices",
    }
    if predicted != actual:
        hint = wrong.get(predicted, "count the four nn.Linear(512, 512) layers, weights and biases")
        raise Hint(f"{predicted:,} is not it: {hint}")
    if depends_on_heads:
        raise Hint("the count is right, but it does not depend on n_heads: the real module has "
                   + ", ".join(f"{n:,} ({h} heads)" for h, n in counts.items())
                   + ". Heads only regroup the 512 features; the matrices stay 512 x 512")
    return (f"{actual:,} = 4 x (512 x 512 + 512), the same for 1, 2, 4, 8 or 16 heads "
            f"(nn.MultiheadAttention: {theirs:,})")


@checker("shapes in cross-attention")
def check_cross_attention_shapes(predicted_weights_shape: Any, predicted_output_shape: Any) -> str:
    """Predicted shapes of ``cl.MultiHeadAttention(32, 4)(x, source, need_weights=True)`` with
    x ``[2, 5, 32]`` and source ``[2, 9, 32]``."""
    weights_guess = expect_shape(predicted_weights_shape, "predicted_weights_shape")
    output_guess = expect_shape(predicted_output_shape, "predicted_output_shape")
    gen = torch.Generator().manual_seed(5)
    x, source = torch.randn(2, 5, 32, generator=gen), torch.randn(2, 9, 32, generator=gen)
    output, attn_weights = MultiHeadAttention(32, 4)(x, source, need_weights=True)
    weights_shape, output_shape = tuple(attn_weights.shape), tuple(output.shape)
    weight_hints = {
        (2, 4, 9, 5): "rows are queries and columns keys: [B, H, T_q, T_k]",
        (2, 4, 5, 5): "the keys come from source, which has 9 positions: T_k = 9",
        (2, 4, 9, 9): "the queries come from x, which has 5 positions: T_q = 5",
        (2, 5, 9): "that is nn.MultiheadAttention's default, which averages over the heads; "
                   "cl.MultiHeadAttention keeps one matrix per head",
        (2, 4, 5, 8): "that is the per-head context (d_head = 8); the weights have one column per key",
    }
    if weights_guess != weights_shape:
        hint = weight_hints.get(weights_guess, "one matrix per batch element and head, T_q rows by T_k columns")
        raise Hint(f"attention weights: you predicted {shape_str(weights_guess)}, the module gives "
                   f"{shape_str(weights_shape)}: {hint}")
    output_hints = {
        (2, 9, 32): "the output has one row per query (from x), not per source position",
        (2, 4, 5, 8): "the heads are merged and projected back to d_model = 32",
        (2, 5, 8): "the heads are merged back: 4 heads x d_head 8 = d_model 32",
    }
    if output_guess != output_shape:
        hint = output_hints.get(output_guess, "cross-attention gives one d_model vector per query")
        raise Hint(f"output: you predicted {shape_str(output_guess)}, the module gives {shape_str(output_shape)}: "
                   f"{hint}")
    return (f"weights {shape_str(weights_shape)} = [B, H, T_q, T_k] (each row sums to 1 over the 9 source "
            f"positions) and output {shape_str(output_shape)} = [B, T_q, d_model]: the source length does not "
            "appear in the output's shape")
