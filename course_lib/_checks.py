"""Input validation shared by the public functions: messages name what was expected and what came."""
from __future__ import annotations

import torch
from torch import Tensor


def shape_str(shape: torch.Size | tuple[int, ...] | list[int]) -> str:
    """Format a shape as ``[2, 4, 5]`` for error messages."""
    return "[" + ", ".join(str(int(s)) for s in shape) + "]"


def require_tensor(name: str, value: object) -> Tensor:
    if not isinstance(value, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor; got {type(value).__name__}")
    return value


def require_ndim(name: str, x: Tensor, ndim: int | tuple[int, ...], layout: str) -> None:
    """Raise unless ``x.ndim`` is ``ndim`` (or one of them); ``layout`` describes the expected axes."""
    allowed = (ndim,) if isinstance(ndim, int) else ndim
    if x.ndim not in allowed:
        raise ValueError(
            f"{name} must have shape {layout} ({' or '.join(map(str, allowed))} dims); "
            f"got shape {shape_str(x.shape)} ({x.ndim} dims)"
        )


def require_nonempty(name: str, x: Tensor, dim: int, what: str) -> None:
    if x.shape[dim] == 0:
        raise ValueError(
            f"{name} has an empty {what}: expected length >= 1 along dim {dim}, got shape {shape_str(x.shape)}"
        )


def require_bool_mask(name: str, mask: Tensor) -> None:
    if mask.dtype != torch.bool:
        raise ValueError(
            f"{name} must be a bool tensor (True = may attend); got dtype {mask.dtype}. "
            "Convert an additive float mask with mask_from_additive_mask(), or a key_padding_mask "
            "(True = ignore) with mask_from_key_padding_mask()"
        )


def require_broadcastable(name: str, mask: Tensor, target: torch.Size, layout: str) -> None:
    """Raise unless ``mask`` broadcasts to exactly ``target`` (it may not add dims or grow the target)."""
    ok = mask.ndim <= len(target)
    if ok:
        try:
            ok = torch.broadcast_shapes(mask.shape, target) == target
        except RuntimeError:
            ok = False
    if not ok:
        raise ValueError(
            f"{name} must broadcast to {shape_str(target)} {layout}; got shape {shape_str(mask.shape)}"
        )
