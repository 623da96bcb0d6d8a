"""Attention masks. Course convention: bool, **True = may attend**, shaped to broadcast over
``[B, H, T_q, T_k]``: a padding mask is ``[B, 1, 1, S]``, a causal mask ``[T, T]``, a combined one
``[B, 1, T, S]``.

PyTorch uses two other conventions, and the converters here say in their names which way they go:
- ``nn.MultiheadAttention``'s ``key_padding_mask`` ``[B, S]``: bool, True = *ignore*;
- additive float masks: 0 where attending is allowed, ``-inf`` where it is not.
"""
from __future__ import annotations

import torch
from torch import Tensor

from ._checks import require_bool_mask, require_ndim, require_nonempty, require_tensor, shape_str


def padding_mask(lengths: Tensor, max_len: int | None = None) -> Tensor:
    """Mask of real tokens from sequence lengths.

    Args:
        lengths: ``[B]`` integer lengths, each in ``1..max_len``.
        max_len: padded length S; default ``lengths.max()``.

    Returns:
        bool ``[B, 1, 1, S]``, True at real tokens (positions ``< length``).
    """
    require_tensor("lengths", lengths)
    require_ndim("lengths", lengths, 1, "[B]")
    if lengths.dtype.is_floating_point or lengths.dtype == torch.bool:
        raise ValueError(f"lengths must be an integer tensor; got dtype {lengths.dtype}")
    if lengths.numel() == 0:
        raise ValueError(
            f"lengths is empty: expected one length per sequence, shape [B] with B >= 1; got {shape_str(lengths.shape)}"
        )
    max_len = int(lengths.max()) if max_len is None else max_len
    if int(lengths.min()) < 1 or int(lengths.max()) > max_len:
        raise ValueError(
            f"every length must be in 1..{max_len} (max_len); got lengths {lengths.tolist()}"
        )
    positions = torch.arange(max_len, device=lengths.device)  # [S]
    return (positions < lengths[:, None])[:, None, None, :]  # [B, 1, 1, S]


def padding_mask_from_ids(token_ids: Tensor, pad_id: int) -> Tensor:
    """Mask of real tokens from padded token ids ``[B, S]``: bool ``[B, 1, 1, S]``, True where
    ``token_ids != pad_id``."""
    require_tensor("token_ids", token_ids)
    require_ndim("token_ids", token_ids, 2, "[B, S]")
    require_nonempty("token_ids", token_ids, 1, "sequence")
    return (token_ids != pad_id)[:, None, None, :]


def causal_mask(t_q: int, t_k: int | None = None, *, device: torch.device | str | None = None) -> Tensor:
    """Mask that lets each query see only keys at its own position or earlier.

    With ``t_k > t_q`` the queries are the *last* ``t_q`` positions of ``t_k`` (as when new tokens
    attend to a cache): query ``i`` sees keys ``j <= i + (t_k - t_q)``.

    Returns:
        bool ``[t_q, t_k]``, lower-triangular.
    """
    t_k = t_q if t_k is None else t_k
    if t_q < 1 or t_k < t_q:
        raise ValueError(f"causal_mask needs 1 <= t_q <= t_k; got t_q={t_q}, t_k={t_k}")
    return torch.ones(t_q, t_k, dtype=torch.bool, device=device).tril(diagonal=t_k - t_q)


def prefix_lm_mask(prefix_lengths: Tensor | int, length: int, *, device: torch.device | str | None = None) -> Tensor:
    """The prefix-LM mask of a decoder-only model (lesson 09): causal, except that the first ``P``
    positions (the prefix: source and separator) see each other in both directions.

    Query ``i`` may attend to key ``j`` when ``j <= i`` (causal), or when both ``i < P`` and ``j < P``.
    Positions from ``P`` on (the target) stay causal: they see the whole prefix and never the future.

    Args:
        prefix_lengths: ``P``, one int for every row, or an integer tensor ``[B]`` (one per row), each
            in ``0..length`` (0 or 1: plain causal).
        length: sequence length ``L``.

    Returns:
        bool ``[L, L]`` for an int ``P``, ``[B, 1, L, L]`` for a tensor.
    """
    if length < 1:
        raise ValueError(f"length must be >= 1; got {length}")
    if isinstance(prefix_lengths, Tensor):
        require_ndim("prefix_lengths", prefix_lengths, 1, "[B]")
        if prefix_lengths.dtype.is_floating_point or prefix_lengths.dtype == torch.bool:
            raise ValueError(f"prefix_lengths must hold integer lengths; got dtype {prefix_lengths.dtype}")
        device = prefix_lengths.device if device is None else device
        prefix = prefix_lengths.to(device)[:, None, None, None]  # [B, 1, 1, 1]
    elif isinstance(prefix_lengths, int) and not isinstance(prefix_lengths, bool):
        prefix = torch.tensor(prefix_lengths, device=device)
    else:
        raise ValueError(f"prefix_lengths must be an int or an integer tensor [B]; got {type(prefix_lengths).__name__}")
    if bool(((prefix < 0) | (prefix > length)).any()):
        raise ValueError(f"prefix lengths must be in 0..{length} (the sequence length); "
                         f"got {prefix.flatten().tolist()}")
    position = torch.arange(length, device=device)
    in_prefix = position < prefix  # [L] or [B, 1, 1, L]: True at prefix positions
    both_in_prefix = in_prefix[..., :, None] & in_prefix[..., None, :] if prefix.ndim == 0 else \
        in_prefix.transpose(-1, -2) & in_prefix  # [L, L] or [B, 1, L, L]
    return causal_mask(length, device=device) | both_in_prefix


def combine_masks(*masks: Tensor | None) -> Tensor | None:
    """AND of bool masks (True = may attend), broadcast together; ``None`` entries are skipped.

    E.g. a padding mask ``[B, 1, 1, T]`` and a causal mask ``[T, T]`` give ``[B, 1, T, T]``.
    """
    present = [m for m in masks if m is not None]
    combined: Tensor | None = None
    for i, mask in enumerate(present):
        require_tensor(f"masks[{i}]", mask)
        require_bool_mask(f"masks[{i}]", mask)
        if combined is None:
            combined = mask
            continue
        try:
            torch.broadcast_shapes(combined.shape, mask.shape)
        except RuntimeError:
            raise ValueError(
                f"masks do not broadcast together: {shape_str(combined.shape)} and {shape_str(mask.shape)}"
            ) from None
        combined = combined & mask
    return combined


def document_mask(segment_ids: Tensor) -> Tensor:
    """Block-diagonal mask for several sequences packed into one row.

    Args:
        segment_ids: ``[B, T]`` integer id of the document each position belongs to.

    Returns:
        bool ``[B, 1, T, T]``: True where query and key belong to the same document.
    """
    require_tensor("segment_ids", segment_ids)
    require_ndim("segment_ids", segment_ids, 2, "[B, T]")
    return (segment_ids[:, :, None] == segment_ids[:, None, :])[:, None]  # [B, 1, T, T]


def cross_document_mask(query_segments: Tensor, key_segments: Tensor) -> Tensor:
    """Cross-attention mask for packed documents: a query may read a key only of its own document.

    The cross-attention version of ``document_mask``: target segments packed into the queries, retrieved passages
    (or sources) packed into the keys, each labelled with the id of the example it belongs to (RETRO's chunks and
    their neighbours, or several translation pairs in one row). Ids below 0 mark padding, which nothing reads.

    Args:
        query_segments: ``[B, T_q]`` integer document id of each query position.
        key_segments: ``[B, T_k]`` integer document id of each key position.

    Returns:
        bool ``[B, 1, T_q, T_k]``: True where the two ids are equal and not negative.
    """
    for name, ids in (("query_segments", query_segments), ("key_segments", key_segments)):
        require_tensor(name, ids)
        require_ndim(name, ids, 2, "[B, T]")
        if ids.dtype.is_floating_point or ids.dtype == torch.bool:
            raise ValueError(f"{name} must hold integer document ids; got dtype {ids.dtype}")
    if query_segments.shape[0] != key_segments.shape[0]:
        raise ValueError(f"query_segments and key_segments must have the same batch size: got "
                         f"{shape_str(query_segments.shape)} and {shape_str(key_segments.shape)}")
    same = query_segments[:, :, None] == key_segments[:, None, :]  # [B, T_q, T_k]
    return (same & (key_segments[:, None, :] >= 0))[:, None]  # [B, 1, T_q, T_k]


def key_padding_mask_from_mask(mask: Tensor) -> Tensor:
    """Course padding mask ``[B, 1, 1, S]`` (True = attend) -> PyTorch ``key_padding_mask`` ``[B, S]``
    (True = ignore), as ``nn.MultiheadAttention`` and ``nn.Transformer`` expect."""
    require_tensor("mask", mask)
    require_bool_mask("mask", mask)
    if mask.ndim != 4 or mask.shape[1] != 1 or mask.shape[2] != 1:
        raise ValueError(f"mask must be a padding mask of shape [B, 1, 1, S]; got {shape_str(mask.shape)}")
    return ~mask[:, 0, 0, :]


def mask_from_key_padding_mask(key_padding_mask: Tensor) -> Tensor:
    """PyTorch ``key_padding_mask`` ``[B, S]`` (True = ignore) -> course mask ``[B, 1, 1, S]``
    (True = attend)."""
    require_tensor("key_padding_mask", key_padding_mask)
    if key_padding_mask.dtype != torch.bool:
        raise ValueError(f"key_padding_mask must be bool (True = ignore); got dtype {key_padding_mask.dtype}")
    require_ndim("key_padding_mask", key_padding_mask, 2, "[B, S]")
    return ~key_padding_mask[:, None, None, :]


def additive_mask_from_mask(mask: Tensor, dtype: torch.dtype = torch.float32) -> Tensor:
    """Bool mask (True = attend) -> additive float mask: 0 where True, ``-inf`` where False."""
    require_tensor("mask", mask)
    require_bool_mask("mask", mask)
    if not dtype.is_floating_point:
        raise ValueError(f"dtype must be a floating dtype; got {dtype}")
    additive = torch.zeros(mask.shape, dtype=dtype, device=mask.device)
    return additive.masked_fill(~mask, float("-inf"))


def mask_from_additive_mask(additive_mask: Tensor) -> Tensor:
    """Additive float mask -> bool mask: True (attend) where the value is finite, False at ``-inf``.

    Large finite negative values (e.g. ``-1e9``) count as blocked too: anything ``<= -1e4``.
    """
    require_tensor("additive_mask", additive_mask)
    if not additive_mask.dtype.is_floating_point:
        raise ValueError(f"additive_mask must be a float tensor (0 / -inf); got dtype {additive_mask.dtype}")
    return additive_mask > -1e4
