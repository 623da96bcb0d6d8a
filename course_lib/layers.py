"""The building blocks of a transformer layer: positional encoding, feed-forward, encoder and
decoder layers. Each layer has a ``norm_first`` switch: pre-norm (``x + f(norm(x))``) or the
original post-norm (``norm(x + f(x))``)."""
from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._checks import require_ndim, require_tensor, shape_str
from .attention import KVCacheLike, MultiHeadAttention, SourceKV


def sinusoidal_positions(max_len: int, d_model: int) -> Tensor:
    """The sinusoidal table of "Attention Is All You Need": ``[max_len, d_model]``.

    Even features are ``sin(pos / 10000^(2i/d))``, odd features the matching ``cos``.
    """
    if max_len < 1 or d_model < 2 or d_model % 2:
        raise ValueError(f"need max_len >= 1 and an even d_model >= 2; got max_len={max_len}, d_model={d_model}")
    position = torch.arange(max_len, dtype=torch.float64)[:, None]  # [max_len, 1]
    frequency = torch.exp(torch.arange(0, d_model, 2, dtype=torch.float64) * (-math.log(10000.0) / d_model))
    table = torch.zeros(max_len, d_model, dtype=torch.float64)
    table[:, 0::2] = torch.sin(position * frequency)
    table[:, 1::2] = torch.cos(position * frequency)
    return table.float()


class PositionalEncoding(nn.Module):
    """Adds sinusoidal positions to embeddings ``[B, T, d_model]``, starting at position ``offset``."""

    def __init__(self, d_model: int, max_len: int = 512, dropout: float = 0.0) -> None:
        super().__init__()
        self.register_buffer("table", sinusoidal_positions(max_len, d_model), persistent=False)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, offset: int = 0) -> Tensor:
        require_tensor("x", x)
        require_ndim("x", x, 3, "[B, T, d_model]")
        max_len, d_model = self.table.shape
        if x.shape[-1] != d_model:
            raise ValueError(f"x must have feature size {d_model}; got shape {shape_str(x.shape)}")
        if offset < 0 or offset + x.shape[1] > max_len:
            raise ValueError(
                f"positions {offset}..{offset + x.shape[1] - 1} exceed max_len={max_len}; "
                "build the model with a larger max_len"
            )
        positions = self.table[offset : offset + x.shape[1]].to(x.dtype)  # [T, d_model]
        return self.dropout(x + positions)


class FeedForward(nn.Module):
    """Position-wise feed-forward block: ``linear2(dropout(activation(linear1(x))))``."""

    def __init__(self, d_model: int, d_ff: int, dropout: float = 0.0, activation: str = "relu") -> None:
        super().__init__()
        if activation not in ("relu", "gelu"):
            raise ValueError(f"activation must be 'relu' or 'gelu'; got {activation!r}")
        self.linear1 = nn.Linear(d_model, d_ff)
        self.linear2 = nn.Linear(d_ff, d_model)
        self.dropout = nn.Dropout(dropout)
        self.activation = F.relu if activation == "relu" else F.gelu

    def forward(self, x: Tensor) -> Tensor:
        return self.linear2(self.dropout(self.activation(self.linear1(x))))  # [B, T, d_model]


class EncoderLayer(nn.Module):
    """Self-attention then feed-forward, each wrapped in a residual connection and a LayerNorm.

    With a causal mask (and, when generating, a ``kv_cache``) the same layer is the block of a
    decoder-only model (lesson 09): nothing but the mask makes a layer an encoder's or a GPT's.
    """

    def __init__(
        self, d_model: int, n_heads: int, d_ff: int, dropout: float = 0.0, *,
        norm_first: bool = True, activation: str = "relu",
    ) -> None:
        super().__init__()
        self.norm_first = norm_first
        self.self_attn = MultiHeadAttention(d_model, n_heads, dropout=dropout)
        self.ffn = FeedForward(d_model, d_ff, dropout, activation)
        self.norm1, self.norm2 = nn.LayerNorm(d_model), nn.LayerNorm(d_model)
        self.dropout1, self.dropout2 = nn.Dropout(dropout), nn.Dropout(dropout)

    def forward(
        self, x: Tensor, mask: Tensor | None = None, *, need_weights: bool = False,
        kv_cache: KVCacheLike | None = None,
    ) -> tuple[Tensor, Tensor | None]:
        """``x [B, S, d_model]``, ``mask`` bool (True = may attend), e.g. padding ``[B, 1, 1, S]``.

        ``kv_cache``: a self-attention K/V cache (decoder-only generation): this call's keys and values
        are appended and ``x`` attends to everything cached; ``mask`` then covers ``[.., S, cached + S]``.

        Returns ``(x [B, S, d_model], self-attention weights [B, H, S, S_k] or None)``.
        """
        if self.norm_first:
            attended, weights = self.self_attn(self.norm1(x), mask=mask, need_weights=need_weights, kv_cache=kv_cache)
            x = x + self.dropout1(attended)
            x = x + self.dropout2(self.ffn(self.norm2(x)))
        else:
            attended, weights = self.self_attn(x, mask=mask, need_weights=need_weights, kv_cache=kv_cache)
            x = self.norm1(x + self.dropout1(attended))
            x = self.norm2(x + self.dropout2(self.ffn(x)))
        return x, weights


class DecoderLayerOutput(NamedTuple):
    """What a ``DecoderLayer`` returns."""

    y: Tensor  # [B, T, d_model]
    self_weights: Tensor | None  # [B, H, T, T_k], T_k = cached + new positions
    cross_weights: Tensor | None  # [B, H, T, S]


class DecoderLayer(nn.Module):
    """Masked self-attention -> cross-attention to the encoder output -> feed-forward.

    The order is fixed: each target position first gathers what it needs from the target prefix
    (causally), then uses that to ask the source, then transforms the result.
    """

    def __init__(
        self, d_model: int, n_heads: int, d_ff: int, dropout: float = 0.0, *,
        norm_first: bool = True, activation: str = "relu",
    ) -> None:
        super().__init__()
        self.norm_first = norm_first
        self.self_attn = MultiHeadAttention(d_model, n_heads, dropout=dropout)
        self.cross_attn = MultiHeadAttention(d_model, n_heads, dropout=dropout)
        self.ffn = FeedForward(d_model, d_ff, dropout, activation)
        self.norm1, self.norm2, self.norm3 = (nn.LayerNorm(d_model) for _ in range(3))
        self.dropout1, self.dropout2, self.dropout3 = (nn.Dropout(dropout) for _ in range(3))

    def forward(
        self,
        y: Tensor,
        memory: Tensor | None,
        *,
        self_mask: Tensor | None = None,
        memory_mask: Tensor | None = None,
        need_weights: bool = False,
        kv_cache: KVCacheLike | None = None,
        cross_kv: SourceKV | None = None,
        memory_bias: Tensor | None = None,
    ) -> DecoderLayerOutput:
        """One decoder layer.

        Args:
            y: target states ``[B, T, d_model]`` (only the new positions when ``kv_cache`` is used).
            memory: encoder output ``[B, S, d_model]``; ignored (may be None) when ``cross_kv`` is given.
            self_mask: bool mask for self-attention, usually causal ``[T, T]``.
            memory_mask: bool mask over the source, usually padding ``[B, 1, 1, S]``.
            kv_cache: this layer's self-attention K/V cache; this step's keys and values are appended.
            cross_kv: this layer's cross-attention K/V, projected once from ``memory`` by
                ``self.cross_attn.project_source(memory)``.
            memory_bias: optional float score bias of the cross-attention, broadcastable to ``[B, H, T, S]``
                (a 3-D bias reads as ``[H, T, S]``): lesson 13's relative position biases. The mask still decides
                which keys count.

        Returns:
            ``DecoderLayerOutput(y [B, T, d_model], self_weights [B, H, T, T_k] | None,
            cross_weights [B, H, T, S] | None)``.

        Raises:
            ValueError: when neither ``memory`` nor ``cross_kv`` is given (the cross-attention would
                have no source, and ``MultiHeadAttention`` would silently attend to ``y`` instead).
        """
        if memory is None and cross_kv is None:
            raise ValueError("the cross-attention needs a source: pass memory (the encoder output [B, S, d_model]) "
                             "or cross_kv (its keys and values from cross_attn.project_source(memory)); got neither")

        def self_block(h: Tensor) -> tuple[Tensor, Tensor | None]:
            out, w = self.self_attn(h, mask=self_mask, need_weights=need_weights, kv_cache=kv_cache)
            return self.dropout1(out), w

        def cross_block(h: Tensor) -> tuple[Tensor, Tensor | None]:
            if cross_kv is not None:  # keys and values projected once per source
                out, w = self.cross_attn(h, mask=memory_mask, need_weights=need_weights, source_kv=cross_kv,
                                         bias=memory_bias)
            else:
                out, w = self.cross_attn(h, memory, mask=memory_mask, need_weights=need_weights, bias=memory_bias)
            return self.dropout2(out), w

        if self.norm_first:
            attended, self_weights = self_block(self.norm1(y))
            y = y + attended
            attended, cross_weights = cross_block(self.norm2(y))
            y = y + attended
            y = y + self.dropout3(self.ffn(self.norm3(y)))
        else:
            attended, self_weights = self_block(y)
            y = self.norm1(y + attended)
            attended, cross_weights = cross_block(y)
            y = self.norm2(y + attended)
            y = self.norm3(y + self.dropout3(self.ffn(y)))
        return DecoderLayerOutput(y, self_weights, cross_weights)
