"""Scaled dot-product attention and multi-head attention, written out by hand.

Conventions (the same everywhere in the course):
- batch-first tensors: ``[B, T, D]``; per head ``[B, H, T, d_head]``;
  attention weights ``[B, H, T_q, T_k]``.
- masks are bool, **True = may attend** (the convention of ``F.scaled_dot_product_attention``).
- a query row with no key to attend to gets zero weights and a zero output, never NaN.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._checks import (
    require_bool_mask,
    require_broadcastable,
    require_ndim,
    require_nonempty,
    require_tensor,
    shape_str,
)


def _check_qkv(q: Tensor, k: Tensor, v: Tensor) -> torch.Size:
    """Validate q, k, v and return the shape of the scores, ``[..., T_q, T_k]``."""
    for name, x in (("q", q), ("k", k), ("v", v)):
        require_tensor(name, x)
        if x.ndim < 2:
            raise ValueError(f"{name} must have shape [..., T, d] (at least 2 dims); got {shape_str(x.shape)}")
        require_nonempty(name, x, -2, "sequence")
    if q.shape[-1] != k.shape[-1]:
        raise ValueError(
            f"q and k must have the same feature size d_k: q is {shape_str(q.shape)} (d_k={q.shape[-1]}), "
            f"k is {shape_str(k.shape)} (d_k={k.shape[-1]})"
        )
    if k.shape[-2] != v.shape[-2]:
        raise ValueError(
            f"k and v must have the same length T_k: k is {shape_str(k.shape)} (T_k={k.shape[-2]}), "
            f"v is {shape_str(v.shape)} (T_k={v.shape[-2]})"
        )
    try:
        batch = torch.broadcast_shapes(q.shape[:-2], k.shape[:-2], v.shape[:-2])
    except RuntimeError:
        raise ValueError(
            "q, k and v must have matching (or broadcastable) batch dims before [T, d]: "
            f"got q {shape_str(q.shape)}, k {shape_str(k.shape)}, v {shape_str(v.shape)}"
        ) from None
    return torch.Size((*batch, q.shape[-2], k.shape[-2]))


def _check_bias(bias: Tensor, target: torch.Size, layout: str) -> None:
    """Raise unless ``bias`` is a finite float tensor that broadcasts to ``target``."""
    require_tensor("bias", bias)
    if not bias.is_floating_point():
        raise ValueError(f"bias must be a float tensor (added to the scores); got dtype {bias.dtype}. "
                         "To exclude keys pass a bool mask (True = may attend) instead")
    require_broadcastable("bias", bias, target, layout)
    if not bool(torch.isfinite(bias).all()):
        raise ValueError("bias must be finite (expected no inf or NaN); got a bias with non-finite entries. "
                         "To exclude keys use the bool mask (False = may not attend), not a -inf bias")


def scaled_dot_product_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    mask: Tensor | None = None,
    *,
    scale: float | None = None,
    dropout_p: float = 0.0,
    bias: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Attention written out: ``softmax(q @ k^T * scale + bias, masked) @ v``.

    Args:
        q: queries ``[..., T_q, d_k]``.
        k: keys ``[..., T_k, d_k]``.
        v: values ``[..., T_k, d_v]``.
        mask: optional bool mask broadcastable to ``[..., T_q, T_k]``; True = may attend.
        scale: factor applied to the scores; default ``1 / sqrt(d_k)``.
        dropout_p: dropout on the attention weights (only pass > 0 while training).
        bias: optional finite float score bias broadcastable to ``[..., T_q, T_k]`` (e.g. a relative position
            bias ``[H, T_q, T_k]``), added to the scaled scores before the softmax. It only reweights keys;
            excluding a key is the mask's job, so a non-finite bias is rejected. The sum is clamped to the
            dtype's finite range, so even a huge bias gives no NaN.

    Returns:
        ``(output [..., T_q, d_v], attn_weights [..., T_q, T_k])``. A query row whose keys are all
        masked gets weights 0 and output 0, whatever the bias.

    Raises:
        ValueError: on mismatched feature sizes or lengths, empty sequences, a mask that is not
        bool or does not broadcast to the scores, or a bias that is not float, not finite, or does not broadcast.
    """
    scores_shape = _check_qkv(q, k, v)
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    attn_scores = q @ k.transpose(-2, -1) * scale  # [..., T_q, T_k]
    if bias is not None:
        _check_bias(bias, scores_shape, "(the scores' shape [..., T_q, T_k])")
        finite = torch.finfo(attn_scores.dtype).max
        attn_scores = (attn_scores + bias.to(attn_scores.dtype)).clamp(-finite, finite)
    if mask is None:
        attn_weights = torch.softmax(attn_scores, dim=-1)
    else:
        require_tensor("mask", mask)
        require_bool_mask("mask", mask)
        require_broadcastable("mask", mask, scores_shape, "(the scores' shape [..., T_q, T_k])")
        row_has_key = mask.any(dim=-1, keepdim=True)  # [..., T_q, 1]
        attn_scores = attn_scores.masked_fill(~mask, float("-inf"))
        # A row with every key masked would be softmax(-inf, ..., -inf) = NaN: give it zeros instead.
        attn_scores = attn_scores.masked_fill(~row_has_key, 0.0)
        attn_weights = torch.softmax(attn_scores, dim=-1).masked_fill(~mask, 0.0)
    if dropout_p > 0.0:
        attn_weights = F.dropout(attn_weights, p=dropout_p)
    context = attn_weights @ v  # [..., T_q, d_v]
    return context, attn_weights


def repeat_kv_heads(x: Tensor, n_heads: int) -> Tensor:
    """Let ``n_heads`` query heads share ``H_kv`` key/value heads: ``[B, H_kv, T, d]`` -> ``[B, n_heads, T, d]``.

    Query head ``h`` reads K/V head ``h // (n_heads // H_kv)``: each K/V head serves a group of consecutive query
    heads (multi-query attention when ``H_kv = 1``, grouped-query attention in between). This is the grouping of
    ``F.scaled_dot_product_attention(..., enable_gqa=True)`` and of ``torch.repeat_interleave(x, n_heads // H_kv,
    dim=1)``.

    Returns:
        ``x`` itself when ``H_kv == n_heads`` (nothing is shared); otherwise a new ``[B, n_heads, T, d]`` tensor.

    Raises:
        ValueError: if ``x`` is not 4-dimensional, or ``H_kv`` does not divide ``n_heads``.
    """
    require_tensor("x", x)
    require_ndim("x", x, 4, "[B, H_kv, T, d]")
    n_kv_heads = x.shape[1]
    if (not isinstance(n_heads, int) or isinstance(n_heads, bool) or n_heads < 1 or n_kv_heads == 0
            or n_heads % n_kv_heads != 0):
        raise ValueError(f"the K/V heads must divide the query heads: x has H_kv={n_kv_heads} heads "
                         f"({shape_str(x.shape)}), n_heads={n_heads!r} (expected a positive multiple of {n_kv_heads})")
    if n_kv_heads == n_heads:
        return x
    batch, _, length, width = x.shape
    group = n_heads // n_kv_heads  # query heads per K/V head
    x = x[:, :, None].expand(batch, n_kv_heads, group, length, width)  # [B, H_kv, group, T, d], no copy yet
    return x.reshape(batch, n_heads, length, width)  # [B, H, T, d]: K/V head j becomes heads j*group .. j*group+group-1


def _describe(value: object) -> str:
    """``a Tensor [2, 3, 8]``, ``SourceKV(k [2, 4, 5, 2], v [2, 4, 5, 2])``, ``a KVCache``: for error messages."""
    if isinstance(value, Tensor):
        return f"a Tensor {shape_str(value.shape)}"
    if isinstance(value, tuple) and value and all(isinstance(t, Tensor) for t in value):
        if hasattr(value, "_fields"):  # a NamedTuple such as SourceKV
            inner = ", ".join(f"{n} {shape_str(t.shape)}" for n, t in zip(value._fields, value))
            return f"{type(value).__name__}({inner})"
        return f"a tuple of {len(value)} tensors " + ", ".join(shape_str(t.shape) for t in value)
    return f"a {type(value).__name__}"


class KVCacheLike(Protocol):
    """A self-attention K/V cache: anything with ``append(k, v) -> (k_all, v_all)``, such as
    ``course_lib.cache.KVCache``."""

    def append(self, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]: ...


class SourceKV(NamedTuple):
    """The cross-attention K/V: keys and values projected from a source sequence, each ``[B, H_kv, S, d_head]``.

    ``MultiHeadAttention.project_source`` makes them once per source; they stay fixed while decoding. ``H_kv`` is
    the module's ``n_kv_heads`` (its ``n_heads`` unless K/V heads are shared).
    """

    k: Tensor
    v: Tensor


AttentionCore = Callable[[Tensor, Tensor, Tensor, Tensor | None, bool], tuple[Tensor, Tensor | None]]
"""``core(q, k, v, mask, need_weights) -> (context, weights or None)``, on per-head tensors ``[B, H, T, d_head]``:
what replaces exact attention in ``MultiHeadAttention.attention_core`` (lesson 12's approximations)."""


class MultiHeadAttention(nn.Module):
    """Multi-head attention for self-attention (one input) and cross-attention (a separate source).

    ``forward(x)`` attends from ``x`` to itself; ``forward(x, source)`` takes queries from ``x``
    ``[B, T_q, d_model]`` and keys/values from ``source`` ``[B, T_k, d_source]``.

    Args:
        d_model: size of the queries and of the output.
        n_heads: number of heads; must divide ``d_model``.
        dropout: dropout on the attention weights while training.
        d_source: feature size of a cross-attention source, if it differs from ``d_model``.
        bias: whether the four projections have biases.
        use_sdpa: compute with ``F.scaled_dot_product_attention`` when weights are not requested
            (same result, faster); False always uses the hand-written path.
        chunk_size: if given, compute with ``long_attention.chunked_attention`` (exact attention over
            ``chunk_size`` keys at a time, memory flat in the source length) when weights are not requested;
            it takes precedence over ``use_sdpa`` and has no dropout. Three paths, one result.
        n_kv_heads: number of key/value heads, shared by the query heads: None means ``n_heads`` (every query
            head has its own keys and values), 1 is multi-query attention, a divisor in between grouped-query
            attention. ``k_proj`` and ``v_proj`` then output ``n_kv_heads * d_head`` features, and what is kept
            between decoding steps (``project_source``'s ``SourceKV``, the ``KVCache``) holds ``n_kv_heads`` heads:
            ``n_heads / n_kv_heads`` times fewer bytes. Query head ``h`` reads K/V head
            ``h // (n_heads // n_kv_heads)``; the shared heads are repeated (``repeat_kv_heads``) only for the
            attention itself.

    Attributes:
        attention_core: None (exact attention, by one of the three paths), or an ``AttentionCore``
            ``core(q, k, v, mask, need_weights) -> (context, weights or None)`` used instead, on the
            per-head tensors (lesson 12 swaps approximations into a trained model this way). The core
            gets the mask as given (bool, broadcastable to ``[B, H, T_q, T_k]``), keys and values with ``n_heads``
            heads (shared ones already repeated) and no dropout.
    """

    def __init__(
        self,
        d_model: int,
        n_heads: int,
        *,
        dropout: float = 0.0,
        d_source: int | None = None,
        bias: bool = True,
        use_sdpa: bool = True,
        chunk_size: int | None = None,
        n_kv_heads: int | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        if d_model <= 0 or n_heads <= 0:
            raise ValueError(f"d_model and n_heads must be positive; got d_model={d_model}, n_heads={n_heads}")
        if d_model % n_heads != 0:
            raise ValueError(
                f"n_heads must divide d_model: got d_model={d_model}, n_heads={n_heads} "
                f"({d_model} / {n_heads} = {d_model / n_heads:g}, expected a whole number)"
            )
        if n_kv_heads is not None and (not isinstance(n_kv_heads, int) or isinstance(n_kv_heads, bool)
                                       or n_kv_heads < 1 or n_heads % n_kv_heads != 0):
            divisors = ", ".join(str(h) for h in range(1, n_heads + 1) if n_heads % h == 0)
            raise ValueError(f"n_kv_heads must be None or a divisor of n_heads={n_heads} (one of {divisors}); "
                             f"got n_kv_heads={n_kv_heads!r}")
        factory = {"device": device, "dtype": dtype}
        self.d_model, self.n_heads, self.d_head = d_model, n_heads, d_model // n_heads
        self.n_kv_heads = n_heads if n_kv_heads is None else n_kv_heads
        d_kv = self.n_kv_heads * self.d_head  # width of the keys and values: d_model unless heads are shared
        self.d_source = d_model if d_source is None else d_source
        if chunk_size is not None and (not isinstance(chunk_size, int) or isinstance(chunk_size, bool)
                                       or chunk_size < 1):
            raise ValueError(f"chunk_size must be None or an int >= 1; got {chunk_size!r}")
        self.dropout, self.use_sdpa, self.chunk_size = dropout, use_sdpa, chunk_size
        self.attention_core: AttentionCore | None = None  # set to swap in another attention (lesson 12)
        self.q_proj = nn.Linear(d_model, d_model, bias=bias, **factory)
        self.k_proj = nn.Linear(self.d_source, d_kv, bias=bias, **factory)
        self.v_proj = nn.Linear(self.d_source, d_kv, bias=bias, **factory)
        self.out_proj = nn.Linear(d_model, d_model, bias=bias, **factory)

    def split_heads(self, x: Tensor, n_heads: int | None = None) -> Tensor:
        """``[B, T, n_heads * d_head]`` -> ``[B, n_heads, T, d_head]``; ``n_heads`` defaults to the query heads."""
        batch, length, _ = x.shape
        n_heads = self.n_heads if n_heads is None else n_heads
        return x.view(batch, length, n_heads, self.d_head).transpose(1, 2)

    def merge_heads(self, x: Tensor) -> Tensor:
        """``[B, H, T, d_head]`` -> ``[B, T, d_model]``."""
        batch, _, length, _ = x.shape
        return x.transpose(1, 2).reshape(batch, length, self.d_model)

    def project_source(self, source: Tensor) -> SourceKV:
        """Project a source ``[B, S, d_source]`` to per-head keys and values ``[B, n_kv_heads, S, d_head]``.

        Cross-attention calls this once per source and reuses the result at every decoding step.
        """
        self._check_input("source", source, self.d_source)
        return SourceKV(self.split_heads(self.k_proj(source), self.n_kv_heads),
                        self.split_heads(self.v_proj(source), self.n_kv_heads))

    def _check_source_args(
        self, x: Tensor, source: Tensor | None, kv_cache: KVCacheLike | None, source_kv: SourceKV | None
    ) -> None:
        """Reject the combinations of ``source``, ``kv_cache`` and ``source_kv`` that contradict each other."""
        source_given = source is not None and source is not x  # forward(x, x) is self-attention
        if source_given and source_kv is not None:
            raise ValueError(
                "got both source and source_kv: pass the source (its keys and values are projected now) or "
                "source_kv = project_source(source) (projected once before), not both; "
                f"source is {_describe(source)}, source_kv is {_describe(source_kv)}"
            )
        if kv_cache is not None and source_kv is not None:
            raise ValueError(
                "got both kv_cache and source_kv: kv_cache is a self-attention K/V cache (it grows with x's keys), "
                "source_kv is the cross-attention K/V (fixed while decoding); use kv_cache for self-attention "
                f"(forward(x, kv_cache=...)) or source_kv for cross-attention (forward(x, source_kv=...)); "
                f"kv_cache is {_describe(kv_cache)}, source_kv is {_describe(source_kv)}"
            )
        if kv_cache is not None and source_given:
            raise ValueError(
                "got kv_cache together with a source: kv_cache is a self-attention K/V cache, and the source's "
                "keys would be appended to it. For cross-attention project the source once with "
                "project_source(source) and pass source_kv=...; for self-attention call forward(x, kv_cache=...) "
                f"without a source; source is {_describe(source)}, kv_cache is {_describe(kv_cache)}"
            )
        if kv_cache is not None and not callable(getattr(kv_cache, "append", None)):
            raise ValueError(
                "kv_cache must be a self-attention K/V cache with append(k, v) -> (k_all, v_all), such as "
                f"course_lib.KVCache(); got {_describe(kv_cache)}"
            )
        if source_kv is not None:
            heads = (f"H={self.n_heads}" if self.n_kv_heads == self.n_heads
                     else f"n_kv_heads={self.n_kv_heads} (shared by n_heads={self.n_heads} query heads)")
            expected = f"SourceKV(k, v) from project_source, each [B, {heads}, S, d_head={self.d_head}]"
            if not (isinstance(source_kv, tuple) and len(source_kv) == 2
                    and all(isinstance(t, Tensor) for t in source_kv)):
                raise ValueError(f"source_kv must be {expected}; got {_describe(source_kv)}")
            k, v = source_kv
            if (k.ndim != 4 or k.shape != v.shape or k.shape[1] != self.n_kv_heads or k.shape[3] != self.d_head
                    or k.shape[2] == 0):
                raise ValueError(f"source_kv must be {expected}; got k {shape_str(k.shape)}, v {shape_str(v.shape)}")

    def _check_input(self, name: str, x: Tensor, width: int) -> None:
        require_tensor(name, x)
        require_ndim(name, x, 3, "[B, T, d]")
        require_nonempty(name, x, 1, "sequence")
        if x.shape[-1] != width:
            raise ValueError(f"{name} must have feature size {width}; got shape {shape_str(x.shape)}")

    def forward(
        self,
        x: Tensor,
        source: Tensor | None = None,
        *,
        mask: Tensor | None = None,
        need_weights: bool = False,
        kv_cache: KVCacheLike | None = None,
        source_kv: SourceKV | None = None,
        bias: Tensor | None = None,
    ) -> tuple[Tensor, Tensor | None]:
        """Attend from ``x`` to ``source`` (or to ``x`` itself when no source is given).

        Args:
            x: queries' input ``[B, T_q, d_model]``.
            source: keys' and values' input ``[B, T_k, d_source]``; None means self-attention.
            mask: bool, True = may attend; ``[T_q, T_k]``, ``[B, T_q, T_k]`` or
                ``[B, 1 or H, 1 or T_q, T_k]`` (e.g. a padding mask ``[B, 1, 1, T_k]``).
            need_weights: also return the attention weights ``[B, H, T_q, T_k]``.
            kv_cache: a **self-attention K/V cache** (``course_lib.cache.KVCache``): this step's keys
                and values (from ``x``) are appended to it and the queries attend to everything
                cached so far. Self-attention only.
            source_kv: the **cross-attention K/V**, already projected by ``project_source``
                (``SourceKV(k, v)``, each ``[B, n_kv_heads, S, d_head]``); replaces ``source``. **Beams share it**:
                when ``x`` has ``B * K`` rows, ``K`` consecutive rows per source (beam search), the ``K``
                beams of source ``b`` read its K/V as ``K * T_q`` queries of one row, with no copy of the
                keys and values; ``mask`` must then be ``[B or 1, 1, 1, S]``.
            bias: optional finite float score bias added to the scaled scores before the softmax (lesson 13's
                relative position biases), broadcastable to ``[B, H, T_q, T_k]`` by plain broadcasting: unlike
                ``mask``, a 3-D bias is read as ``[H, T_q, T_k]`` (what ``course_lib.position.diagonal_bias``
                returns). The mask keeps its meaning (masked keys excluded, a row with no visible key gives
                zeros); a non-finite bias is rejected: exclude keys with the mask. The hand-written path's
                weights include the bias; the SDPA path passes bias and mask as one additive float mask. Not
                supported by the chunked path (``chunk_size`` without ``need_weights``) or an ``attention_core``.

        Returns:
            ``(output [B, T_q, d_model], attn_weights [B, H, T_q, T_k] or None)``.

        Raises:
            ValueError: on inputs of the wrong shape, and on every contradictory combination:
                ``source`` and ``source_kv`` both given (which keys: project ``source`` now, or use
                the ones projected before?); ``kv_cache`` with a ``source`` other than ``x``
                (the source's keys would be appended to a self-attention cache); ``kv_cache`` with
                ``source_kv`` (a self-attention cache used for cross-attention); a ``source_kv``
                that is not ``SourceKV(k, v)`` with ``[B, n_kv_heads, S, d_head]`` tensors of this module's
                ``n_kv_heads`` and ``d_head``; a ``bias`` that is not float, not finite or does not broadcast, or
                is given with ``attention_core`` or on the chunked path.
        """
        self._check_input("x", x, self.d_model)
        self._check_source_args(x, source, kv_cache, source_kv)
        q = self.split_heads(self.q_proj(x))  # [B, H, T_q, d_head]
        if source_kv is not None:
            k, v = source_kv  # cross-attention K/V, [B, H_kv, S, d_head]
        else:
            if source is None:
                source = x
            elif source.ndim == 3 and source.shape[0] != x.shape[0]:
                raise ValueError(
                    f"x and source must have the same batch size: x is {shape_str(x.shape)}, "
                    f"source is {shape_str(source.shape)}"
                )
            k, v = self.project_source(source)  # [B, H_kv, T_k, d_head]
        if kv_cache is not None:  # self-attention K/V cache: x's keys join those of earlier steps
            k, v = kv_cache.append(k, v)  # [B, H_kv, T_cached + T_q, d_head]
        if bias is not None:
            _check_bias(bias, torch.Size((q.shape[0], self.n_heads, q.shape[2], k.shape[2])), "[B, H, T_q, T_k]")
            if self.attention_core is not None:
                raise ValueError("a bias cannot be passed to an attention_core (its signature has no bias); "
                                 f"got bias {shape_str(bias.shape)} with attention_core={self.attention_core!r}")
            if self.chunk_size is not None and not need_weights:
                raise ValueError(f"the chunked path (chunk_size={self.chunk_size}) does not take a bias yet; got bias "
                                 f"{shape_str(bias.shape)}: use chunk_size=None or need_weights=True")
            bias = bias.to(q.dtype)
        beams = 1
        if source_kv is not None and k.shape[0] != q.shape[0] and q.shape[0] % k.shape[0] == 0:
            beams = q.shape[0] // k.shape[0]  # K beams per source share its K/V: fold them into the queries
            if mask is not None and (mask.ndim != 4 or mask.shape[0] not in (1, k.shape[0]) or mask.shape[2] != 1):
                raise ValueError(f"with {beams} beams sharing each source's K/V, mask must be a padding mask "
                                 f"[B={k.shape[0]} or 1, 1, 1, S]; got {shape_str(mask.shape)}")
            t_q = q.shape[2]
            q = q.reshape(k.shape[0], beams, self.n_heads, t_q, self.d_head).transpose(1, 2)
            q = q.reshape(k.shape[0], self.n_heads, beams * t_q, self.d_head)  # [B, H, K * T_q, d_head]
            if bias is not None:  # fold the bias like the queries: [B * K, H, T_q, S] -> [B, H, K * T_q, S]
                bias = bias.expand(k.shape[0] * beams, self.n_heads, t_q, k.shape[2])
                bias = bias.reshape(k.shape[0], beams, self.n_heads, t_q, k.shape[2]).transpose(1, 2)
                bias = bias.reshape(k.shape[0], self.n_heads, beams * t_q, k.shape[2])
        if k.shape[0] != q.shape[0]:
            raise ValueError(f"source_kv has batch size {k.shape[0]}, but x has {q.shape[0]}: {shape_str(x.shape)}")
        if mask is not None:
            require_tensor("mask", mask)
            require_bool_mask("mask", mask)
            if mask.ndim == 3:
                mask = mask.unsqueeze(1)  # [B, 1, T_q, T_k]
            require_broadcastable(
                "mask", mask, torch.Size((q.shape[0], self.n_heads, q.shape[2], k.shape[2])), "[B, H, T_q, T_k]"
            )
        # Shared K/V heads are repeated only here, for the attention itself; the cache above keeps H_kv heads.
        k, v = repeat_kv_heads(k, self.n_heads), repeat_kv_heads(v, self.n_heads)  # [B, H, T_k, d_head]
        dropout_p = self.dropout if self.training else 0.0
        if self.attention_core is not None:  # an approximation (or any other attention) swapped in
            context, attn_weights = self.attention_core(q, k, v, mask, need_weights)
        elif self.chunk_size is not None and not need_weights:
            if dropout_p > 0.0:
                raise ValueError(f"the chunked path has no dropout; got dropout={self.dropout} while training "
                                 "(use chunk_size=None, or dropout=0, or eval mode)")
            from .long_attention import chunked_attention

            context = chunked_attention(q, k, v, mask, chunk_size=self.chunk_size)
            attn_weights = None
        elif self.use_sdpa and not need_weights:
            attn_mask = mask
            if bias is not None:  # one additive float mask: the bias where visible, -inf where masked
                attn_mask = bias
                if mask is not None:
                    attn_mask = torch.where(mask, bias, float("-inf"))
                    # rows with no visible key: a finite row (no NaN, even in the gradients); zeroed below
                    attn_mask = attn_mask.masked_fill(~mask.any(dim=-1, keepdim=True), 0.0)
            context = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=dropout_p)
            if mask is not None:  # rows with no visible key: zeros, as in the hand-written path
                context = context.masked_fill(~mask.any(dim=-1, keepdim=True), 0.0)
            attn_weights = None
        else:
            context, attn_weights = scaled_dot_product_attention(q, k, v, mask, dropout_p=dropout_p, bias=bias)
        if beams > 1:  # back to one row per beam: [B, H, K * T_q, .] -> [B * K, H, T_q, .]
            unfold = lambda t: t.reshape(t.shape[0], self.n_heads, beams, -1, t.shape[-1]).transpose(1, 2).reshape(
                t.shape[0] * beams, self.n_heads, -1, t.shape[-1])
            context = unfold(context)
            attn_weights = None if attn_weights is None else unfold(attn_weights)
        output = self.out_proj(self.merge_heads(context))  # [B, T_q, d_model]
        return output, attn_weights if need_weights else None
