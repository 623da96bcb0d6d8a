"""Lesson 10: cross-attention over image patches. A captioner whose decoder reads an image instead of a sentence.

The image becomes a sequence: ``patchify`` cuts it into ``p x p`` patches in raster order (row by row), a linear
layer embeds each patch (the same map as a ``Conv2d`` with kernel and stride ``p``), ``patch_positions_2d`` adds
where the patch sits (half the features encode its row, half its column), and a few encoder layers let the
patches exchange information. The decoder is the course's, with one change: its cross-attention is a
``CrossAttentionBlock`` whose source has its **own width** (``d_source = d_image``, not ``d_model``) and its
**own LayerNorm**, so features from any image encoder, of any scale, can be read.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ._checks import require_ndim, require_tensor, shape_str
from .attention import MultiHeadAttention, SourceKV
from .cache import DecoderCache, KVCache
from .data import BOS_ID, PAD_ID
from .generate import greedy_tokens
from .layers import EncoderLayer, FeedForward, sinusoidal_positions
from .masks import causal_mask
from .model import AttentionMaps


def _check_images(images: Tensor, channels: int | None = None, size: int | None = None) -> None:
    require_tensor("images", images)
    require_ndim("images", images, 4, "[B, C, H, W]")
    if not images.dtype.is_floating_point:
        raise ValueError(f"images must be floating point (pixel values 0..1); got dtype {images.dtype}")
    if channels is not None and images.shape[1] != channels:
        raise ValueError(f"images must have {channels} channels [B, {channels}, H, W]; got {shape_str(images.shape)}")
    if size is not None and tuple(images.shape[2:]) != (size, size):
        raise ValueError(f"images must be {size}x{size} pixels [B, C, {size}, {size}]; got {shape_str(images.shape)}")


def patchify(images: Tensor, patch_size: int) -> Tensor:
    """Cut images ``[B, C, H, W]`` into patches ``[B, N, C * p * p]``, ``N = (H / p) * (W / p)``.

    Patches come in raster order (patch ``n`` is at row ``n // (W / p)``, column ``n % (W / p)``); each is
    flattened channel first, then pixel rows, then pixel columns: the layout of a ``Conv2d`` weight
    ``[D, C, p, p]``. Raises ValueError if ``p`` does not divide H and W.
    """
    _check_images(images)
    b, c, h, w = images.shape
    if patch_size < 1 or h % patch_size or w % patch_size:
        raise ValueError(f"patch_size must divide the image's height and width: got patch_size={patch_size} "
                         f"for images {shape_str(images.shape)}")
    p = patch_size
    patches = images.unfold(2, p, p).unfold(3, p, p)  # [B, C, H/p, W/p, p, p]
    return patches.permute(0, 2, 3, 1, 4, 5).reshape(b, (h // p) * (w // p), c * p * p)  # [B, N, C*p*p]


def patch_positions_2d(rows: int, cols: int, d_model: int) -> Tensor:
    """Fixed 2-D positions ``[rows * cols, d_model]`` in raster order: the first half of the features is the
    sinusoidal table of the patch's row, the second half that of its column (``d_model`` divisible by 4)."""
    if d_model % 4 or rows < 1 or cols < 1:
        raise ValueError(f"need rows, cols >= 1 and d_model divisible by 4; got rows={rows}, cols={cols}, "
                         f"d_model={d_model}")
    row_table, col_table = sinusoidal_positions(rows, d_model // 2), sinusoidal_positions(cols, d_model // 2)
    grid = torch.cat([row_table[:, None, :].expand(rows, cols, -1),  # [rows, cols, d/2]: the row's code
                      col_table[None, :, :].expand(rows, cols, -1)], dim=-1)  # the column's code
    return grid.reshape(rows * cols, d_model)


class PatchEncoder(nn.Module):
    """Images ``[B, C, H, W]`` -> patch features ``[B, N, d_image]``: ``patchify``, a linear patch embedding,
    2-D positions, ``n_layers`` pre-norm ``EncoderLayer``s (no mask: every patch sees every patch), a LayerNorm."""

    def __init__(self, *, image_size: int, patch_size: int, channels: int, d_image: int, n_heads: int,
                 n_layers: int, d_ff: int) -> None:
        super().__init__()
        if image_size % patch_size:
            raise ValueError(f"patch_size must divide image_size; got {patch_size} and {image_size}")
        self.image_size, self.patch_size, self.channels = image_size, patch_size, channels
        self.grid = image_size // patch_size  # patches per row and per column
        self.patch_embed = nn.Linear(channels * patch_size**2, d_image)
        self.register_buffer("positions", patch_positions_2d(self.grid, self.grid, d_image), persistent=False)
        self.layers = nn.ModuleList(EncoderLayer(d_image, n_heads, d_ff, activation="gelu") for _ in range(n_layers))
        self.norm = nn.LayerNorm(d_image)

    def forward(self, images: Tensor, *, need_weights: bool = False) -> tuple[Tensor, list[Tensor]]:
        """``(features [B, N, d_image], self-attention weights per layer [B, H, N, N] if need_weights)``."""
        _check_images(images, self.channels, self.image_size)
        x = self.patch_embed(patchify(images, self.patch_size)) + self.positions  # [B, N, d_image]
        weights = []
        for layer in self.layers:
            x, w = layer(x, need_weights=need_weights)
            if w is not None:
                weights.append(w)
        return self.norm(x), weights


class CrossAttentionBlock(nn.Module):
    """Pre-norm cross-attention and feed-forward, each in a residual connection:

    ``x = x + attn(norm_query(x), norm_source(source))``, then ``x = x + ffn(norm_ffn(x))`` (GELU).

    The source has its own width ``d_source`` and its **own LayerNorm**: whatever the scale of the features it
    reads (a frozen encoder's, say), the keys and values are computed from normalised ones.
    """

    def __init__(self, d_model: int, d_source: int, n_heads: int, d_ff: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.norm_query, self.norm_source, self.norm_ffn = nn.LayerNorm(d_model), nn.LayerNorm(d_source), \
            nn.LayerNorm(d_model)
        self.attn = MultiHeadAttention(d_model, n_heads, dropout=dropout, d_source=d_source)
        self.ffn = FeedForward(d_model, d_ff, dropout, activation="gelu")
        self.dropout = nn.Dropout(dropout)

    def project_source(self, source: Tensor) -> SourceKV:
        """The normalised source's keys and values ``[B, H, S, d_head]``: once per source when decoding."""
        return self.attn.project_source(self.norm_source(source))

    def forward(self, x: Tensor, source: Tensor | None = None, *, source_kv: SourceKV | None = None,
                mask: Tensor | None = None, need_weights: bool = False) -> tuple[Tensor, Tensor | None]:
        """``x [B, T, d_model]`` reads ``source [B, S, d_source]`` (or its ``source_kv``); ``mask`` bool, True =
        may attend, e.g. ``[B, 1, 1, S]``. Returns ``(x [B, T, d_model], weights [B, H, T, S] or None)``."""
        if (source is None) == (source_kv is None):
            raise ValueError("pass exactly one of source (the encoder states [B, S, d_source]) and source_kv (from "
                             f"project_source); got source={source is not None}, source_kv={source_kv is not None}")
        if source_kv is None:
            source_kv = self.project_source(source)
        attended, weights = self.attn(self.norm_query(x), source_kv=source_kv, mask=mask, need_weights=need_weights)
        x = x + self.dropout(attended)  # [B, T, d_model]
        return x + self.dropout(self.ffn(self.norm_ffn(x))), weights


class CaptionDecoderLayer(nn.Module):
    """Causal self-attention over the caption so far (pre-norm, residual), then a ``CrossAttentionBlock`` over
    the image's patch features."""

    def __init__(self, d_model: int, d_image: int, n_heads: int, d_ff: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.norm_self = nn.LayerNorm(d_model)
        self.self_attn = MultiHeadAttention(d_model, n_heads, dropout=dropout)
        self.cross = CrossAttentionBlock(d_model, d_image, n_heads, d_ff, dropout)

    def forward(self, y: Tensor, image_kv: SourceKV, *, self_mask: Tensor | None = None,
                kv_cache: KVCache | None = None, need_weights: bool = False
                ) -> tuple[Tensor, Tensor | None, Tensor | None]:
        """``(y [B, T, d_model], self weights [B, H, T, T_k], cross weights [B, H, T, N])`` (weights if asked)."""
        attended, self_w = self.self_attn(self.norm_self(y), mask=self_mask, need_weights=need_weights,
                                          kv_cache=kv_cache)
        y, cross_w = self.cross(y + attended, source_kv=image_kv, need_weights=need_weights)
        return y, self_w, cross_w


@dataclass
class CaptionerConfig:
    """Sizes of a ``Captioner``. The image features' width ``d_image`` differs from the decoder's ``d_model``."""

    vocab_size: int
    image_size: int = 48
    patch_size: int = 8
    channels: int = 3
    d_image: int = 96
    d_model: int = 64
    n_heads: int = 4
    n_encoder_layers: int = 2
    n_decoder_layers: int = 2
    d_ff: int = 192
    max_len: int = 24
    pad_id: int = PAD_ID


class Captioner(nn.Module):
    """Images in, caption logits out: ``PatchEncoder`` -> patch features ``[B, N, d_image]``; word embeddings +
    positions -> ``CaptionDecoderLayer``s (each cross-attending over the patches) -> LayerNorm -> logits."""

    def __init__(self, config: CaptionerConfig) -> None:
        super().__init__()
        c = self.config = config
        self.encoder = PatchEncoder(image_size=c.image_size, patch_size=c.patch_size, channels=c.channels,
                                    d_image=c.d_image, n_heads=c.n_heads, n_layers=c.n_encoder_layers, d_ff=c.d_ff)
        self.embed = nn.Embedding(c.vocab_size, c.d_model, padding_idx=c.pad_id)
        self.register_buffer("positions", sinusoidal_positions(c.max_len, c.d_model), persistent=False)
        self.layers = nn.ModuleList(CaptionDecoderLayer(c.d_model, c.d_image, c.n_heads, c.d_ff)
                                    for _ in range(c.n_decoder_layers))
        self.norm = nn.LayerNorm(c.d_model)
        self.output = nn.Linear(c.d_model, c.vocab_size)

    @property
    def n_patches(self) -> int:
        return self.encoder.grid**2

    def encode(self, images: Tensor, *, need_weights: bool = False) -> tuple[Tensor, list[Tensor]]:
        """``images [B, C, H, W]`` -> ``(patch features [B, N, d_image], encoder weights per layer)``."""
        return self.encoder(images, need_weights=need_weights)

    def new_cache(self, features: Tensor) -> DecoderCache:
        """Each layer's cross-attention K/V of ``features`` (projected once) and empty self-attention caches."""
        return DecoderCache(cross_kv=[layer.cross.project_source(features) for layer in self.layers],
                            self_kv=[KVCache() for _ in self.layers])

    def decode(self, tgt_ids: Tensor, features: Tensor | None = None, *, cache: DecoderCache | None = None,
               need_weights: bool = False) -> tuple[Tensor, list[Tensor], list[Tensor]]:
        """Caption ids ``[B, T]`` (with a ``cache``: only the new ones) over ``features`` (or the cache's K/V) ->
        ``(logits [B, T, vocab], self weights per layer, cross weights per layer [B, H, T, N])``."""
        require_tensor("tgt_ids", tgt_ids)
        require_ndim("tgt_ids", tgt_ids, 2, "[B, T]")
        offset, t_new = (cache.length if cache is not None else 0), tgt_ids.shape[1]
        if offset + t_new > self.config.max_len:
            raise ValueError(f"captions hold at most max_len={self.config.max_len} tokens; got {offset + t_new}")
        if cache is None:
            if features is None:
                raise ValueError("decode needs the image features [B, N, d_image] or a cache holding their K/V")
            cache = DecoderCache(cross_kv=[layer.cross.project_source(features) for layer in self.layers])
        y = self.embed(tgt_ids) + self.positions[offset:offset + t_new]  # [B, T, d_model]
        self_mask = None if t_new == 1 else causal_mask(t_new, offset + t_new, device=tgt_ids.device)
        self_weights, cross_weights = [], []
        for i, layer in enumerate(self.layers):
            y, sw, cw = layer(y, cache.cross_kv[i], self_mask=self_mask, need_weights=need_weights,
                              kv_cache=cache.self_kv[i] if cache.self_kv is not None else None)
            if need_weights:
                self_weights.append(sw)
                cross_weights.append(cw)
        return self.output(self.norm(y)), self_weights, cross_weights

    def forward(self, images: Tensor, tgt_ids: Tensor) -> Tensor:
        """Teacher-forced logits ``[B, T, vocab]`` for captions ``tgt_ids [B, T]`` (``<bos>`` + words)."""
        features, _ = self.encode(images)
        if tgt_ids.ndim != 2 or tgt_ids.shape[0] != images.shape[0]:
            raise ValueError(f"tgt_ids must be [B={images.shape[0]}, T]; got {shape_str(tgt_ids.shape)}")
        return self.decode(tgt_ids, features)[0]

    def forward_with_attention(self, images: Tensor, tgt_ids: Tensor) -> tuple[Tensor, AttentionMaps]:
        """As ``forward``, and every layer's weights: ``AttentionMaps(encoder [B, H, N, N], decoder_self,
        decoder_cross [B, H, T, N])`` (hand-written attention path)."""
        features, encoder_w = self.encode(images, need_weights=True)
        logits, self_w, cross_w = self.decode(tgt_ids, features, need_weights=True)
        return logits, AttentionMaps(encoder_w, self_w, cross_w)

    @torch.no_grad()
    def greedy_decode(self, images: Tensor, *, bos_id: int = BOS_ID, eos_id: int | None = None,
                      max_new_tokens: int | None = None, use_cache: bool = True) -> Tensor:
        """Greedy captions ``[B, T_new]`` (no ``<bos>``; after ``eos_id``, the pad id). With ``use_cache`` each
        step feeds one token (self-attention K/V cache; the image's K/V projected once); without, every step
        reruns the whole prefix. Same tokens either way."""
        max_new_tokens = self.config.max_len - 1 if max_new_tokens is None else max_new_tokens
        if not 1 <= max_new_tokens < self.config.max_len:
            raise ValueError(f"max_new_tokens must be in 1..{self.config.max_len - 1}; got {max_new_tokens}")
        features, _ = self.encode(images)  # [B, N, d_image], once
        cache = self.new_cache(features) if use_cache else None
        prefix = torch.full((images.shape[0], 1), bos_id, dtype=torch.long, device=images.device)  # [B, 1]

        def next_logits(last: Tensor, step: int) -> Tensor:
            nonlocal prefix
            if step:
                prefix = torch.cat([prefix, last], dim=1)  # [B, step + 1]
            if cache is not None:
                return self.decode(last, cache=cache)[0][:, -1]
            return self.decode(prefix, features)[0][:, -1]

        return greedy_tokens(next_logits, images.shape[0], bos_id=bos_id, eos_id=eos_id, pad_id=self.config.pad_id,
                             max_new_tokens=max_new_tokens, device=images.device)
