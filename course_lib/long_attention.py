"""Lesson 12: attention over long sources. Exact attention computed a chunk of keys at a time.

``chunked_attention`` never holds the ``[T_q, T_k]`` score matrix: it walks over the keys and values in chunks of
``chunk_size`` and keeps, for every query, three running quantities (the online softmax of Milakov & Gimelshein
2018, used by Rabe & Staats 2021, "Self-attention does not need O(n^2) memory", and by FlashAttention):

- ``m``: the largest score seen so far (so no ``exp`` overflows);
- ``l``: the sum of ``exp(score - m)`` over the keys seen so far;
- ``acc``: the sum of ``exp(score - m) * value`` over the keys seen so far.

When a new chunk raises the maximum from ``m`` to ``m_new``, everything accumulated so far was computed relative to
the old maximum and is rescaled by ``exp(m - m_new)``. At the end ``acc / l`` is the softmax-weighted sum of all the
values, exactly (up to round-off) what the full score matrix gives. Memory: ``[T_q, chunk_size]`` scores at a time
instead of ``[T_q, T_k]``. A query with no visible key gets zeros, as everywhere in the course.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from ._checks import require_bool_mask, require_broadcastable, require_tensor
from .attention import _check_qkv


def online_softmax_step(running_max: Tensor, running_sum: Tensor, acc: Tensor, scores: Tensor,
                        values: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Fold one chunk of keys into the running softmax: the update at the heart of ``chunked_attention``.

    Args:
        running_max: ``m``, the largest score seen so far per query ``[..., T_q, 1]`` (``-inf`` before any key).
        running_sum: ``l``, the sum of ``exp(score - m)`` so far ``[..., T_q, 1]``.
        acc: the sum of ``exp(score - m) * value`` so far ``[..., T_q, d_v]``.
        scores: this chunk's scores ``[..., T_q, C]``, masked keys already ``-inf``.
        values: this chunk's values ``[..., C, d_v]``.

    Returns:
        The new ``(m, l, acc)``. When the maximum grows, ``l`` and ``acc`` are rescaled by ``exp(m_old - m_new)``;
        a chunk in which every key is masked changes nothing (``-inf - (-inf)`` is never computed).
    """
    new_max = torch.maximum(running_max, scores.amax(dim=-1, keepdim=True))  # [..., T_q, 1]
    shift = torch.where(torch.isinf(new_max), torch.zeros_like(new_max), new_max)  # -inf: nothing seen yet
    weights = torch.exp(scores - shift)  # masked keys: exp(-inf) = 0
    correction = torch.exp(running_max - shift)  # rescales what was summed relative to the old maximum
    return new_max, running_sum * correction + weights.sum(dim=-1, keepdim=True), acc * correction + weights @ values


def chunked_attention(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None = None, *, chunk_size: int = 256,
                      scale: float | None = None) -> Tensor:
    """``softmax(q @ k^T * scale, masked) @ v``, computed over ``chunk_size`` keys at a time (online softmax).

    Args:
        q: queries ``[..., T_q, d_k]``; k: keys ``[..., T_k, d_k]``; v: values ``[..., T_k, d_v]``.
        mask: optional bool mask broadcastable to ``[..., T_q, T_k]``; True = may attend.
        chunk_size: keys per chunk, any positive number (the last chunk may be shorter).
        scale: factor on the scores; default ``1 / sqrt(d_k)``.

    Returns:
        ``output [..., T_q, d_v]``; rows with no visible key are 0. No weights: they are never formed.

    Raises:
        ValueError: as ``scaled_dot_product_attention``, and for ``chunk_size < 1``.
    """
    scores_shape = _check_qkv(q, k, v)
    if not isinstance(chunk_size, int) or isinstance(chunk_size, bool) or chunk_size < 1:
        raise ValueError(f"chunk_size must be an int >= 1; got {chunk_size!r}")
    if mask is not None:
        require_tensor("mask", mask)
        require_bool_mask("mask", mask)
        require_broadcastable("mask", mask, scores_shape, "(the scores' shape [..., T_q, T_k])")
        if mask.shape[-1] == 1 and scores_shape[-1] != 1:  # one column for every key: give each chunk its slice
            mask = mask.expand(*mask.shape[:-1], scores_shape[-1])
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    t_k = k.shape[-2]
    out_shape = (*scores_shape[:-1], v.shape[-1])  # [..., T_q, d_v]
    dtype = torch.promote_types(q.dtype, v.dtype)
    running_max = torch.full((*scores_shape[:-1], 1), float("-inf"), dtype=dtype, device=q.device)  # m
    running_sum = torch.zeros((*scores_shape[:-1], 1), dtype=dtype, device=q.device)  # l
    acc = torch.zeros(out_shape, dtype=dtype, device=q.device)
    for start in range(0, t_k, chunk_size):
        end = min(start + chunk_size, t_k)
        scores = q @ k[..., start:end, :].transpose(-2, -1) * scale  # [..., T_q, C]
        if mask is not None:
            scores = scores.masked_fill(~mask[..., start:end], float("-inf"))
        running_max, running_sum, acc = online_softmax_step(running_max, running_sum, acc, scores,
                                                             v[..., start:end, :])
    seen = running_sum > 0  # [..., T_q, 1]: False where every key was masked
    return torch.where(seen, acc / torch.where(seen, running_sum, torch.ones_like(running_sum)), 0.0)


__all__ = ["chunked_attention", "online_softmax_step"]
