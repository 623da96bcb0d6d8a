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

The approximations (``topk_core``, ``window_core``, ``linear_core``) change what is computed: each query reads only
its ``k`` best keys, only a window of keys around where it would sit on the diagonal, or a kernelised similarity
whose sums over the keys are made once (linear attention). ``use_attention_core`` swaps one into a trained model's
cross-attention without retraining; ``attention_multiply_adds`` is their cost model.
"""
from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._checks import require_bool_mask, require_broadcastable, require_tensor
from .attention import AttentionCore, MultiHeadAttention, _check_qkv, scaled_dot_product_attention


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


# --- approximations: fewer keys per query, or no [T_q, T_k] matrix at all (lesson 12, step 3) ----------------
def _require_int(name: str, value: object, minimum: int, meaning: str) -> int:
    """``value`` as an int >= ``minimum``; ValueError naming what was expected and what came."""
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum} ({meaning}); got {name}={value!r}")
    return value


def topk_mask(scores: Tensor, k: int, mask: Tensor | None = None) -> Tensor:
    """Which keys each query keeps under top-k attention: its ``k`` highest-scoring visible keys.

    Args:
        scores: attention scores ``[..., T_q, T_k]`` (any scale: only their order matters).
        k: keys kept per query row, ``1 <= k <= T_k``.
        mask: optional bool mask broadcastable with ``scores``; True = may attend. Masked keys are never chosen;
            a row with fewer than ``k`` visible keys keeps all of them (and nothing else).

    Returns:
        bool ``[..., T_q, T_k]`` (the broadcast shape of ``scores`` and ``mask``), True at the kept keys. Equal
        scores are ordered by ``torch.topk``: exactly ``k`` keys are kept in a row with ``k`` or more visible keys.

    Raises:
        ValueError: for ``k < 1``, ``k > T_k`` (written ``T_src`` for cross-attention), or a mask that is not
            bool or does not broadcast with the scores.
    """
    require_tensor("scores", scores)
    if scores.ndim < 2:
        raise ValueError(f"scores must have shape [..., T_q, T_k] (at least 2 dims); got {list(scores.shape)}")
    _require_int("k", k, 1, "keys kept per query")
    t_k = scores.shape[-1]
    if k > t_k:
        raise ValueError(f"k > T_src: asked for k={k} keys per query, but the source has only T_src={t_k} keys "
                         f"(expected 1 <= k <= {t_k})")
    shape = scores.shape
    if mask is not None:
        require_tensor("mask", mask)
        require_bool_mask("mask", mask)
        try:
            shape = torch.broadcast_shapes(scores.shape, mask.shape)
        except RuntimeError:
            raise ValueError(f"mask must broadcast with the scores {list(scores.shape)} [..., T_q, T_k]; "
                             f"got shape {list(mask.shape)}") from None
        if shape[-1] != t_k:
            raise ValueError(f"mask must have T_k={t_k} columns (or 1); got shape {list(mask.shape)}")
        scores = scores.masked_fill(~mask, float("-inf"))  # masked keys sort last
    chosen = scores.expand(shape).topk(k, dim=-1).indices  # [..., T_q, k]
    keep = torch.zeros(shape, dtype=torch.bool, device=scores.device).scatter_(-1, chosen, True)
    return keep if mask is None else keep & mask  # a row with fewer than k visible keys: only those


def window_mask(t_q: int, t_k: int, half_width: int, *, device: torch.device | str | None = None) -> Tensor:
    """A band around the diagonal of the ``T_q x T_k`` rectangle: query ``i`` sees key ``j`` when
    ``|j - i * T_k / T_q| <= half_width``.

    ``i * T_k / T_q`` is where target step ``i`` would sit in the source if source and target advanced together
    (both from their first to their last position at the same pace); the window is the ``half_width`` keys on
    either side of it. The test is done in integers (``|j * T_q - i * T_k| <= half_width * T_q``), so it is exact.

    Every row keeps at least one key: a row whose band holds no key (possible only for ``half_width = 0`` when
    the centre falls between two keys) keeps the key nearest its centre (``round(i * T_k / T_q)``, halves up).
    For ``half_width >= 1`` that key is always inside the band already.

    Returns:
        bool ``[T_q, T_k]`` on ``device``; True = may attend.

    Raises:
        ValueError: for ``t_q < 1``, ``t_k < 1`` or ``half_width < 0``.
    """
    _require_int("t_q", t_q, 1, "query rows")
    _require_int("t_k", t_k, 1, "keys")
    _require_int("half_width", half_width, 0, "keys on each side of the centre")
    i = torch.arange(t_q, device=device)[:, None]  # [T_q, 1]
    j = torch.arange(t_k, device=device)[None, :]  # [1, T_k]
    band = (j * t_q - i * t_k).abs() <= half_width * t_q  # [T_q, T_k]
    nearest = ((2 * i * t_k + t_q) // (2 * t_q)).clamp(max=t_k - 1)  # [T_q, 1]: round(i * T_k / T_q)
    return band | (j == nearest)


def _feature_map(x: Tensor) -> Tensor:
    """``phi(x) = elu(x) + 1``: positive everywhere, so the implied attention weights are positive."""
    return F.elu(x) + 1.0


def _linear_check(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None) -> Tensor | None:
    """Validate; return the mask as ``[..., T_k, 1]`` (one factor per key) or None."""
    scores_shape = _check_qkv(q, k, v)
    if mask is None:
        return None
    require_tensor("mask", mask)
    require_bool_mask("mask", mask)
    require_broadcastable("mask", mask, scores_shape, "(the scores' shape [..., T_q, T_k])")
    if mask.ndim >= 2 and mask.shape[-2] != 1:
        raise ValueError(
            "linear attention sums over the keys once, for all queries together, so it can only drop keys that "
            "every query drops: expected a mask that is the same for every query, shape [..., 1, T_k] (a padding "
            f"mask such as [B, 1, 1, T_k]); got {list(mask.shape)}, one row per query. A different mask per query "
            "needs the [T_q, T_k] matrix that linear attention never forms")
    return mask[..., None] if mask.ndim == 1 else mask.transpose(-2, -1)  # [..., T_k, 1]


def linear_attention(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None = None, *, eps: float = 1e-6) -> Tensor:
    """Kernelised linear attention (Katharopoulos et al. 2020, "Transformers are RNNs"), ``phi(x) = elu(x) + 1``.

    ``output_i = phi(q_i) . (sum_j phi(k_j) v_j^T) / (phi(q_i) . sum_j phi(k_j) + eps)``: softmax's
    ``exp(q . k)`` is replaced by ``phi(q) . phi(k)``, so the sums over the keys can be made once, before any
    query is seen. Cost ``O((T_q + T_k) d_k d_v)``; the ``[T_q, T_k]`` matrix is never formed. No ``1/sqrt(d)``
    scale (as in the paper).

    Args:
        q: ``[..., T_q, d_k]``; k: ``[..., T_k, d_k]``; v: ``[..., T_k, d_v]``.
        mask: optional bool mask that is the same for every query, broadcastable to ``[..., 1, T_k]``
            (a padding mask ``[B, 1, 1, T_k]``): masked keys are dropped from the sums.
        eps: added to the denominator, as in the paper's code.

    Returns:
        ``[..., T_q, d_v]``; a row with no visible key is 0 (both sums are empty).

    Raises:
        ValueError: as ``scaled_dot_product_attention``, and for a mask with a different row per query.
    """
    key_factor = _linear_check(q, k, v, mask)
    phi_q, phi_k = _feature_map(q), _feature_map(k)  # [..., T_q, d_k], [..., T_k, d_k]
    if key_factor is not None:
        phi_k = phi_k * key_factor.to(phi_k.dtype)  # masked keys contribute nothing to either sum
    kv = phi_k.transpose(-2, -1) @ v  # [..., d_k, d_v]: sum_j phi(k_j) v_j^T
    key_sum = phi_k.sum(dim=-2, keepdim=True)  # [..., 1, d_k]: sum_j phi(k_j)
    numerator = phi_q @ kv  # [..., T_q, d_v]
    denominator = (phi_q * key_sum).sum(dim=-1, keepdim=True)  # [..., T_q, 1]
    return numerator / (denominator + eps)


def linear_attention_weights(q: Tensor, k: Tensor, mask: Tensor | None = None, *, eps: float = 1e-6) -> Tensor:
    """The weights linear attention implies, ``phi(q_i) . phi(k_j) / (sum_j' phi(q_i) . phi(k_j') + eps)``,
    ``[..., T_q, T_k]``: ``linear_attention(q, k, v) == linear_attention_weights(q, k) @ v``. This forms the
    matrix linear attention avoids: for plots and error measurements only."""
    key_factor = _linear_check(q, k, k, mask)
    similarity = _feature_map(q) @ _feature_map(k).transpose(-2, -1)  # [..., T_q, T_k]
    if key_factor is not None:
        similarity = similarity * key_factor.transpose(-2, -1).to(similarity.dtype)
    return similarity / (similarity.sum(dim=-1, keepdim=True) + eps)


def _softmax_over(scores: Tensor, keep: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
    """Softmax of ``scores`` over the kept keys only, then the weighted values; rows that keep nothing: zeros."""
    row_has_key = keep.any(dim=-1, keepdim=True)  # [..., T_q, 1]
    scores = scores.masked_fill(~keep, float("-inf")).masked_fill(~row_has_key, 0.0)
    attn_weights = torch.softmax(scores, dim=-1).masked_fill(~keep, 0.0)  # [..., T_q, T_k]
    return attn_weights @ v, attn_weights


def exact_core() -> AttentionCore:
    """Exact softmax attention as an ``AttentionCore`` (the course's hand-written path): the baseline the
    approximations are measured against."""

    def core(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, need_weights: bool) -> tuple[Tensor, Tensor | None]:
        context, attn_weights = scaled_dot_product_attention(q, k, v, mask)
        return context, attn_weights if need_weights else None

    return core


def topk_core(k: int) -> AttentionCore:
    """Top-k attention as an ``AttentionCore``: each query attends (softmax) to its ``k`` highest-scoring visible
    keys only (``topk_mask``). A source with fewer than ``k`` keys keeps them all, which is exact attention.

    The full scores are computed and then masked: this shows the *error* of the approximation, and on a CPU it
    saves no time at all (it even adds the selection). The saving needs a kernel that computes the scores cheaply
    (or reuses them), then reads only the chosen keys' values; see ``attention_multiply_adds("topk", ...)``.
    """
    _require_int("k", k, 1, "keys kept per query")

    def core(q: Tensor, keys: Tensor, values: Tensor, mask: Tensor | None,
             need_weights: bool) -> tuple[Tensor, Tensor | None]:
        scores = q @ keys.transpose(-2, -1) / math.sqrt(q.shape[-1])  # [B, H, T_q, T_k]
        keep = topk_mask(scores, min(k, scores.shape[-1]), mask)
        context, attn_weights = _softmax_over(scores, keep, values)
        return context, attn_weights if need_weights else None

    return core


def window_core(half_width: int) -> AttentionCore:
    """Windowed attention as an ``AttentionCore``: query row ``i`` of ``T_q`` attends to the keys within
    ``half_width`` of ``i * T_k / T_q`` (``window_mask``), intersected with the given mask.

    The window is placed on the rectangle of the tensors the core receives: give it whole sentences (one query
    row per target position, ``T_k`` the real source length, i.e. batches without padding). One query at a time
    (decoding with a K/V cache) or padded rectangles put the window elsewhere. The full scores are computed and
    then masked: on a CPU this saves no time, it shows the error; the saving needs a kernel that skips the
    blocks outside the band (``attention_multiply_adds("window", ...)``).
    """
    _require_int("half_width", half_width, 0, "keys on each side of the centre")

    def core(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, need_weights: bool) -> tuple[Tensor, Tensor | None]:
        scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])  # [B, H, T_q, T_k]
        keep = window_mask(scores.shape[-2], scores.shape[-1], half_width, device=q.device)  # [T_q, T_k]
        if mask is not None:
            keep = keep & mask  # [B, 1 or H, T_q, T_k]
        context, attn_weights = _softmax_over(scores, keep.expand(scores.shape), v)
        return context, attn_weights if need_weights else None

    return core


def linear_core(*, eps: float = 1e-6) -> AttentionCore:
    """Linear attention (``linear_attention``) as an ``AttentionCore``: never forms ``[T_q, T_k]``, except for the
    weights it implies (``linear_attention_weights``), formed only when asked for. Takes padding masks only."""

    def core(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, need_weights: bool) -> tuple[Tensor, Tensor | None]:
        context = linear_attention(q, k, v, mask, eps=eps)
        return context, linear_attention_weights(q, k, mask, eps=eps) if need_weights else None

    return core


def attention_modules(model: nn.Module, which: str = "cross") -> list[MultiHeadAttention]:
    """Every ``MultiHeadAttention`` held as ``cross_attn`` (``which="cross"``: ``DecoderLayer.cross_attn`` and any
    other module that exposes one) or as ``self_attn`` (``which="self"``: encoder and decoder self-attention)."""
    if which not in ("cross", "self"):
        raise ValueError(f"which must be 'cross' or 'self'; got {which!r}")
    name = f"{which}_attn"
    found: dict[int, MultiHeadAttention] = {}
    for module in model.modules():
        attention = getattr(module, name, None)
        if isinstance(attention, MultiHeadAttention):
            found.setdefault(id(attention), attention)
    return list(found.values())


@contextmanager
def use_attention_core(model: nn.Module, core: AttentionCore | None, *, which: str = "cross") -> Iterator[nn.Module]:
    """Inside the ``with`` block every cross-attention module of ``model`` (``which="self"``: every self-attention
    module) computes with ``core`` (``MultiHeadAttention.attention_core``); None means exact attention. The
    previous cores are put back on leaving, also after an exception. No weight changes: nothing is retrained.

    Raises:
        ValueError: for a ``which`` other than "cross"/"self", a core that is not callable, or a model without
            such a module.
    """
    if not isinstance(model, nn.Module):
        raise ValueError(f"model must be a torch.nn.Module; got {type(model).__name__}")
    if core is not None and not callable(core):
        raise ValueError(f"core must be None or an AttentionCore core(q, k, v, mask, need_weights); "
                         f"got {type(core).__name__}")
    modules = attention_modules(model, which)
    if not modules:
        raise ValueError(f"expected at least one {which}-attention module (a MultiHeadAttention held as "
                         f"`{which}_attn`, such as DecoderLayer.{which}_attn); found 0 in a {type(model).__name__}")
    saved = [(module, module.attention_core) for module in modules]
    try:
        for module in modules:
            module.attention_core = core
        yield model
    finally:
        for module, previous in saved:
            module.attention_core = previous


ATTENTION_KINDS = ("exact", "topk", "window", "linear", "latents")
_KIND_PARAMETERS = {"exact": (), "topk": ("k",), "window": ("half_width",), "linear": (), "latents": ("n_latents",)}


def attention_multiply_adds(kind: str, t_q: int, t_k: int, d_head: int, *, k: int | None = None,
                            half_width: int | None = None, n_latents: int | None = None) -> int:
    """Multiply-adds per head of one attention of ``t_q`` queries over ``t_k`` keys, ``d_head`` features
    (``d_v = d_head``). Projections, softmax and the feature map are left out: they are the same for every kind
    or linear in the lengths.

    - ``"exact"``: ``2 t_q t_k d`` (the scores, then the weighted sum of the values).
    - ``"topk"``: what a kernel that chooses keys would need: every score (to choose), then ``k`` weighted
      values per query, ``t_q t_k d + t_q k d``; choosing costs comparisons, not counted.
    - ``"window"``: a kernel that reads a block of ``2 w + 1`` keys per query (``w = half_width``), clipped at
      ``t_k``: ``2 t_q min(2 w + 1, t_k) d``.
    - ``"linear"``: ``sum_j phi(k_j) [v_j, 1]^T`` (the values with a column of ones, which gives the denominator's
      sum too) costs ``d (d + 1)`` per key, and each query's product with it ``d (d + 1)``:
      ``(t_q + t_k) d (d + 1)``.
    - ``"latents"`` (Perceiver, lesson 11): ``M = n_latents`` latent queries read the source once per source,
      ``2 M t_k d``, then the ``t_q`` queries read the ``M`` latents, ``2 t_q M d``.

    Raises:
        ValueError: for an unknown kind, lengths < 1, a missing or out-of-range parameter of the kind
            (``1 <= k <= t_k``, ``half_width >= 0``, ``n_latents >= 1``), or a parameter of another kind.
    """
    if kind not in _KIND_PARAMETERS:
        raise ValueError(f"kind must be one of {ATTENTION_KINDS}; got {kind!r}")
    for name, value in (("t_q", t_q), ("t_k", t_k), ("d_head", d_head)):
        _require_int(name, value, 1, "a length or size")
    given = {"k": k, "half_width": half_width, "n_latents": n_latents}
    for name, value in given.items():
        if name in _KIND_PARAMETERS[kind] and value is None:
            raise ValueError(f"kind {kind!r} needs {name}; got {name}=None")
        if name not in _KIND_PARAMETERS[kind] and value is not None:
            raise ValueError(f"{name} does not apply to kind {kind!r} (only to "
                             f"{[kd for kd, names in _KIND_PARAMETERS.items() if name in names][0]!r}); "
                             f"got {name}={value!r}")
    d = d_head
    if kind == "exact":
        return 2 * t_q * t_k * d
    if kind == "topk":
        _require_int("k", k, 1, "keys kept per query")
        if k > t_k:
            raise ValueError(f"k > T_src: k={k} keys per query, but the source has only T_src={t_k} keys")
        return t_q * t_k * d + t_q * k * d
    if kind == "window":
        _require_int("half_width", half_width, 0, "keys on each side of the centre")
        return 2 * t_q * min(2 * half_width + 1, t_k) * d
    if kind == "linear":
        return (t_q + t_k) * d * (d + 1)
    _require_int("n_latents", n_latents, 1, "latent queries")
    return 2 * n_latents * t_k * d + 2 * t_q * n_latents * d


__all__ = ["ATTENTION_KINDS", "attention_modules", "attention_multiply_adds", "chunked_attention", "exact_core",
           "linear_attention", "linear_attention_weights", "linear_core", "online_softmax_step", "topk_core",
           "topk_mask", "use_attention_core", "window_core", "window_mask"]
