"""An encoder-decoder transformer assembled from ``course_lib.layers``.

The encoder runs once per source; the decoder runs once per generated token, attending to the
encoder output ("memory") through cross-attention.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

import torch
from torch import Tensor, nn

from ._checks import require_ndim, require_nonempty, require_tensor, shape_str
from .attention import SourceKV
from .cache import DecoderCache, KVCache, StaticKVCache
from .layers import DecoderLayer, EncoderLayer, PositionalEncoding
from .masks import causal_mask, padding_mask_from_ids


@dataclass
class TransformerConfig:
    """Sizes of a ``Seq2SeqTransformer``. The defaults train the course's toy pair on a CPU."""

    src_vocab_size: int
    tgt_vocab_size: int
    d_model: int = 64
    n_heads: int = 4
    n_encoder_layers: int = 2
    n_decoder_layers: int = 2
    d_ff: int = 256
    dropout: float = 0.0
    norm_first: bool = True
    activation: str = "relu"
    max_len: int = 256
    pad_id: int = 0


@dataclass
class AttentionMaps:
    """Every layer's attention weights, each ``[B, H, T_q, T_k]``."""

    encoder_self: list[Tensor] = field(default_factory=list)  # [B, H, S, S] per layer
    decoder_self: list[Tensor] = field(default_factory=list)  # [B, H, T, T] per layer
    decoder_cross: list[Tensor] = field(default_factory=list)  # [B, H, T, S] per layer


class DecoderStates(NamedTuple):
    """What ``Decoder`` returns: the final states and every layer's attention weights."""

    y: Tensor  # [B, T, d_model], after the final LayerNorm
    self_weights: list[Tensor]  # [B, H, T, T_k] per layer (empty unless need_weights)
    cross_weights: list[Tensor]  # [B, H, T, S] per layer (empty unless need_weights)


class DecoderOutput(NamedTuple):
    """What ``Seq2SeqTransformer.decode`` returns: write ``model.decode(...).logits``."""

    logits: Tensor  # [B, T, tgt_vocab]
    self_weights: list[Tensor]  # [B, H, T, T_k] per layer (empty unless need_weights)
    cross_weights: list[Tensor]  # [B, H, T, S] per layer (empty unless need_weights)


class Encoder(nn.Module):
    """A stack of encoder layers and a final LayerNorm (as ``nn.TransformerEncoder`` with a norm)."""

    def __init__(self, d_model: int, n_heads: int, d_ff: int, n_layers: int, dropout: float = 0.0, *,
                 norm_first: bool = True, activation: str = "relu") -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            EncoderLayer(d_model, n_heads, d_ff, dropout, norm_first=norm_first, activation=activation)
            for _ in range(n_layers)
        )
        self.norm = nn.LayerNorm(d_model)

    def forward(
        self, x: Tensor, mask: Tensor | None = None, *, need_weights: bool = False
    ) -> tuple[Tensor, list[Tensor]]:
        """``x [B, S, d_model]`` -> ``(memory [B, S, d_model], weights per layer [B, H, S, S])``."""
        weights = []
        for layer in self.layers:
            x, w = layer(x, mask, need_weights=need_weights)
            if w is not None:
                weights.append(w)
        return self.norm(x), weights


class Decoder(nn.Module):
    """A stack of decoder layers and a final LayerNorm (as ``nn.TransformerDecoder`` with a norm)."""

    def __init__(self, d_model: int, n_heads: int, d_ff: int, n_layers: int, dropout: float = 0.0, *,
                 norm_first: bool = True, activation: str = "relu") -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            DecoderLayer(d_model, n_heads, d_ff, dropout, norm_first=norm_first, activation=activation)
            for _ in range(n_layers)
        )
        self.norm = nn.LayerNorm(d_model)

    def project_source(self, memory: Tensor) -> list[SourceKV]:
        """Each layer's cross-attention K/V for the encoder output ``memory`` ``[B, S, d_model]``:
        ``SourceKV(k, v)`` per layer, each ``[B, H, S, d_head]``."""
        return [layer.cross_attn.project_source(memory) for layer in self.layers]

    def forward(
        self,
        y: Tensor,
        memory: Tensor | None,
        *,
        self_mask: Tensor | None = None,
        memory_mask: Tensor | None = None,
        need_weights: bool = False,
        cache: DecoderCache | None = None,
        memory_bias: Tensor | None = None,
    ) -> DecoderStates:
        """``y [B, T, d_model]`` -> ``DecoderStates(y, self_weights per layer, cross_weights per layer)``.

        With ``cache``, each layer appends to its self-attention K/V cache (``cache.self_kv``) and
        reads its cross-attention K/V (``cache.cross_kv``) instead of projecting ``memory``. ``memory_bias``: a
        float score bias for every layer's cross-attention (``DecoderLayer.forward``).
        """
        self_weights, cross_weights = [], []
        for i, layer in enumerate(self.layers):
            y, sw, cw = layer(
                y, memory, self_mask=self_mask, memory_mask=memory_mask, need_weights=need_weights,
                kv_cache=cache.self_kv[i] if cache is not None and cache.self_kv is not None else None,
                cross_kv=cache.cross_kv[i] if cache is not None and cache.cross_kv is not None else None,
                memory_bias=memory_bias,
            )
            if sw is not None and cw is not None:
                self_weights.append(sw)
                cross_weights.append(cw)
        return DecoderStates(self.norm(y), self_weights, cross_weights)


class Seq2SeqTransformer(nn.Module):
    """Token ids in, next-token logits out: embeddings + sinusoidal positions, ``Encoder``,
    ``Decoder`` and a linear output layer.

    Embeddings are not multiplied by sqrt(d_model): with the default N(0, 1) initialisation that
    would drown the positional signal.
    """

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        c = self.config = config
        self.src_embed = nn.Embedding(c.src_vocab_size, c.d_model)
        self.tgt_embed = nn.Embedding(c.tgt_vocab_size, c.d_model)
        self.positions = PositionalEncoding(c.d_model, c.max_len, c.dropout)
        layer_args = dict(norm_first=c.norm_first, activation=c.activation)
        self.encoder = Encoder(c.d_model, c.n_heads, c.d_ff, c.n_encoder_layers, c.dropout, **layer_args)
        self.decoder = Decoder(c.d_model, c.n_heads, c.d_ff, c.n_decoder_layers, c.dropout, **layer_args)
        self.output = nn.Linear(c.d_model, c.tgt_vocab_size)

    def _check_ids(self, name: str, ids: Tensor, vocab_size: int) -> None:
        require_tensor(name, ids)
        require_ndim(name, ids, 2, "[B, T]")
        require_nonempty(name, ids, 1, "sequence")
        if ids.dtype.is_floating_point or ids.dtype == torch.bool:
            raise ValueError(f"{name} must hold integer token ids; got dtype {ids.dtype}")
        if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= vocab_size):
            raise ValueError(
                f"{name} holds ids outside 0..{vocab_size - 1} (vocabulary size {vocab_size}): "
                f"min {int(ids.min())}, max {int(ids.max())}"
            )

    def _check_same_batch(self, src_ids: Tensor, tgt_ids: Tensor) -> None:
        require_tensor("tgt_ids", tgt_ids)
        if tgt_ids.ndim >= 1 and src_ids.shape[0] != tgt_ids.shape[0]:
            raise ValueError(f"src_ids and tgt_ids must have the same batch size; got {shape_str(src_ids.shape)} "
                             f"and {shape_str(tgt_ids.shape)}")

    def source_mask(self, src_ids: Tensor) -> Tensor:
        """Padding mask of the source, bool ``[B, 1, 1, S]``, True at real tokens."""
        return padding_mask_from_ids(src_ids, self.config.pad_id)

    def encode(self, src_ids: Tensor, *, need_weights: bool = False) -> tuple[Tensor, list[Tensor]]:
        """``src_ids [B, S]`` -> ``(memory [B, S, d_model], encoder self-attention weights per layer)``."""
        self._check_ids("src_ids", src_ids, self.config.src_vocab_size)
        x = self.positions(self.src_embed(src_ids))  # [B, S, d_model]
        return self.encoder(x, self.source_mask(src_ids), need_weights=need_weights)

    def decode(
        self,
        tgt_ids: Tensor,
        memory: Tensor | None,
        src_mask: Tensor,
        *,
        cache: DecoderCache | None = None,
        need_weights: bool = False,
    ) -> DecoderOutput:
        """Run the decoder over target ids.

        Args:
            tgt_ids: ``[B, T]`` target prefix; with a self-attention K/V cache, only the new tokens.
            memory: encoder output ``[B, S, d_model]``; ignored (may be None) when ``cache.cross_kv``
                is set: the cache's cross-attention K/V are used, whichever source they came from.
            src_mask: source padding mask ``[B, 1, 1, S]``.
            cache: reused keys and values (``new_cache``); its self-attention K/V cache grows by ``T``.

        Returns:
            ``DecoderOutput(logits [B, T, tgt_vocab], self_weights, cross_weights)``, the weights one
            tensor per layer when ``need_weights`` (else empty lists).
        """
        self._check_ids("tgt_ids", tgt_ids, self.config.tgt_vocab_size)
        offset = cache.length if cache is not None else 0
        t_new = tgt_ids.shape[1]
        y = self.positions(self.tgt_embed(tgt_ids), offset=offset)  # [B, T, d_model]
        self_mask = None if t_new == 1 else causal_mask(t_new, offset + t_new, device=tgt_ids.device)
        states = self.decoder(
            y, memory, self_mask=self_mask, memory_mask=src_mask, need_weights=need_weights, cache=cache
        )
        return DecoderOutput(self.output(states.y), states.self_weights, states.cross_weights)  # [B, T, tgt_vocab]

    def new_cache(self, memory: Tensor, *, cross_kv: bool = True, self_kv: bool = True,
                  max_len: int | None = None) -> DecoderCache:
        """A decoding cache for ``memory`` ``[B, S, d_model]``: the cross-attention K/V projected now
        (if ``cross_kv``) and empty self-attention K/V caches (if ``self_kv``): growing ``KVCache``s, or, with
        ``max_len``, ``StaticKVCache``s preallocated for ``max_len`` positions and written in place."""
        make = (lambda: StaticKVCache(max_len)) if max_len is not None else KVCache
        return DecoderCache(
            cross_kv=self.decoder.project_source(memory) if cross_kv else None,
            self_kv=[make() for _ in self.decoder.layers] if self_kv else None,
        )

    def forward(self, src_ids: Tensor, tgt_ids: Tensor) -> Tensor:
        """Teacher-forced logits: ``src_ids [B, S]``, ``tgt_ids [B, T]`` -> ``[B, T, tgt_vocab]``."""
        memory, _ = self.encode(src_ids)
        self._check_same_batch(src_ids, tgt_ids)
        return self.decode(tgt_ids, memory, self.source_mask(src_ids)).logits

    def forward_with_attention(self, src_ids: Tensor, tgt_ids: Tensor) -> tuple[Tensor, AttentionMaps]:
        """As ``forward``, and every layer's attention weights (hand-written attention path)."""
        memory, enc_w = self.encode(src_ids, need_weights=True)
        self._check_same_batch(src_ids, tgt_ids)
        out = self.decode(tgt_ids, memory, self.source_mask(src_ids), need_weights=True)
        return out.logits, AttentionMaps(enc_w, out.self_weights, out.cross_weights)
