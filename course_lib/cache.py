"""Caches for autoregressive decoding. Two different things are cached, with one name each:

- the **self-attention K/V cache** (``KVCache``, one per decoder layer): the keys and values of the
  target positions decoded so far; it grows by one position per step.
- the **cross-attention K/V** (``SourceKV``, one per decoder layer): the source's keys and values,
  projected once from the encoder output by ``project_source``, ``[B, H, S, d_head]`` each, fixed
  while decoding one source.

``DecoderCache`` holds both for every layer: ``cross_kv`` and ``self_kv``. With shared K/V heads
(``MultiHeadAttention(n_kv_heads=...)``) both hold ``n_kv_heads`` heads instead of ``H``.

Lesson 12 adds the arithmetic of these caches for long sources: ``cross_kv_cache_bytes``, the sizes of a few real
encoder-decoders (``ENCODER_DECODERS``) and ``kv_cache_table``; and, for contrast, the cache of DeepSeek-V2's
multi-head latent attention (``mla_cache_bytes``), a compression of *self*-attention's K/V.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor

from ._checks import shape_str
from .attention import SourceKV


class KVCache:
    """A self-attention K/V cache: keys and values of the positions decoded so far, each ``[B, H, T, d_head]``."""

    def __init__(self) -> None:
        self.k: Tensor | None = None
        self.v: Tensor | None = None

    @property
    def length(self) -> int:
        """Number of positions cached."""
        return 0 if self.k is None else self.k.shape[2]

    def append(self, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Add this step's keys and values ``[B, H, T_new, d_head]``; return all of them
        ``[B, H, T_cached + T_new, d_head]``."""
        if self.k is None or self.v is None:
            self.k, self.v = k, v
        else:
            if k.shape[:2] != self.k.shape[:2] or k.shape[3] != self.k.shape[3]:
                raise ValueError(
                    f"new keys {shape_str(k.shape)} do not fit the cache {shape_str(self.k.shape)}: "
                    "expected the same [B, H, *, d_head]"
                )
            self.k = torch.cat([self.k, k], dim=2)  # [B, H, T_cached + T_new, d_head]
            self.v = torch.cat([self.v, v], dim=2)
        return self.k, self.v

    def reorder(self, index: Tensor) -> None:
        """Keep batch rows ``index`` (beam search: the beams that survived this step)."""
        if self.k is not None and self.v is not None:
            self.k, self.v = self.k.index_select(0, index), self.v.index_select(0, index)

    def nbytes(self) -> int:
        if self.k is None or self.v is None:
            return 0
        return self.k.numel() * self.k.element_size() + self.v.numel() * self.v.element_size()


class StaticKVCache:
    """A self-attention K/V cache **written in place**: buffers ``[B, H, max_len, d_head]`` allocated at the first
    ``append``, each step's keys and values copied into the next free positions, the length tracked.

    ``KVCache`` grows by ``torch.cat``, which copies the whole cache at every step (clearest to read); this one
    copies only the new positions. Same keys and values, so the same tokens and logits.
    """

    def __init__(self, max_len: int) -> None:
        if max_len < 1:
            raise ValueError(f"max_len must be >= 1; got {max_len}")
        self.max_len = max_len
        self.k_buffer: Tensor | None = None
        self.v_buffer: Tensor | None = None
        self._length = 0

    @property
    def length(self) -> int:
        """Number of positions cached."""
        return self._length

    @property
    def k(self) -> Tensor | None:
        """The cached keys ``[B, H, length, d_head]`` (a view of the buffer)."""
        return None if self.k_buffer is None else self.k_buffer[:, :, : self._length]

    @property
    def v(self) -> Tensor | None:
        return None if self.v_buffer is None else self.v_buffer[:, :, : self._length]

    def append(self, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Write this step's keys and values ``[B, H, T_new, d_head]`` at positions ``length .. length + T_new - 1``;
        return all of them so far (views, no copy)."""
        if self.k_buffer is None or self.v_buffer is None:
            b, h, _, d = k.shape
            self.k_buffer = k.new_empty(b, h, self.max_len, d)
            self.v_buffer = v.new_empty(b, h, self.max_len, d)
        elif k.shape[:2] != self.k_buffer.shape[:2] or k.shape[3] != self.k_buffer.shape[3]:
            raise ValueError(f"new keys {shape_str(k.shape)} do not fit the cache {shape_str(self.k_buffer.shape)}: "
                             "expected the same [B, H, *, d_head]")
        end = self._length + k.shape[2]
        if end > self.max_len:
            raise ValueError(f"the cache holds at most max_len={self.max_len} positions; {self._length} cached + "
                             f"{k.shape[2]} new")
        self.k_buffer[:, :, self._length : end] = k
        self.v_buffer[:, :, self._length : end] = v
        self._length = end
        return self.k_buffer[:, :, :end], self.v_buffer[:, :, :end]

    def reorder(self, index: Tensor) -> None:
        """Keep batch rows ``index`` (beam search), in place in the buffers."""
        if self.k_buffer is not None and self.v_buffer is not None and self._length:
            filled = slice(0, self._length)
            self.k_buffer[:, :, filled] = self.k_buffer[:, :, filled].index_select(0, index)
            self.v_buffer[:, :, filled] = self.v_buffer[:, :, filled].index_select(0, index)

    def nbytes(self) -> int:
        """Bytes held by the buffers (allocated, not only filled)."""
        if self.k_buffer is None or self.v_buffer is None:
            return 0
        return 2 * self.k_buffer.numel() * self.k_buffer.element_size()


@dataclass
class DecoderCache:
    """Everything a decoder can reuse between decoding steps, one entry per layer.

    Attributes:
        cross_kv: the cross-attention K/V per layer (``SourceKV``, ``[B, H_kv, S, d_head]`` each), or
            None to project them from the encoder output at every step.
        self_kv: the self-attention K/V cache per layer (``KVCache``, ``[B, H_kv, T, d_head]`` each,
            growing), or None to recompute the whole target prefix at every step.
    """

    cross_kv: list[SourceKV] | None = None
    self_kv: list[KVCache] | list[StaticKVCache] | None = None

    @property
    def length(self) -> int:
        """Number of target positions already in the self-attention cache (0 without one)."""
        return 0 if not self.self_kv else self.self_kv[0].length

    def reorder(self, index: Tensor) -> None:
        """Keep batch rows ``index`` of the self-attention K/V caches.

        The cross-attention K/V need no reordering in beam search: every beam of one
        source shares the same source, so its rows are identical.
        """
        for layer_cache in self.self_kv or []:
            layer_cache.reorder(index)

    def nbytes(self) -> int:
        """Bytes held by the cached tensors."""
        total = sum(c.nbytes() for c in self.self_kv or [])
        for k, v in self.cross_kv or []:
            total += k.numel() * k.element_size() + v.numel() * v.element_size()
        return total


# ---- Lesson 12: the arithmetic of K/V caches for long sources ----

def _require_positive_ints(**sizes: object) -> None:
    for name, value in sizes.items():
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name} must be an int >= 1; got {name}={value!r}")


def cross_kv_cache_bytes(t_src: int, *, n_layers: int, n_kv_heads: int, d_head: int, batch: int = 1,
                         bytes_per_value: int = 2) -> int:
    """Bytes of a decoder's cross-attention K/V for one batch of sources: every layer's ``SourceKV``, keys and
    values ``[batch, n_kv_heads, t_src, d_head]`` each, projected once and held for the whole generation.

    ``2 * n_layers * n_kv_heads * d_head * t_src * batch * bytes_per_value`` (2: keys and values;
    ``bytes_per_value`` is 2 for float16/bfloat16, 4 for float32). Linear in the source length and independent of
    the target length; sharing K/V heads divides it by ``n_heads / n_kv_heads``.

    Raises:
        ValueError: if a size is not an int >= 1.
    """
    _require_positive_ints(t_src=t_src, n_layers=n_layers, n_kv_heads=n_kv_heads, d_head=d_head, batch=batch,
                           bytes_per_value=bytes_per_value)
    return 2 * n_layers * n_kv_heads * d_head * t_src * batch * bytes_per_value


def mla_cache_bytes(t: int, *, n_layers: int, d_latent: int, d_rope: int, batch: int = 1,
                    bytes_per_value: int = 2) -> int:
    """Bytes of the K/V cache of multi-head latent attention (MLA, DeepSeek-V2, 2024) after ``t`` tokens.

    MLA is **not** a cross-attention: it is a low-rank compression of the keys and values of **self**-attention in
    a decoder-only model. Per token and layer it caches one latent vector of ``d_latent`` values (a down-projection
    of the token's hidden state; every head's keys and values are up-projections of it) plus one key of ``d_rope``
    values carrying the rotary position, shared by all heads: ``n_layers * (d_latent + d_rope) * t * batch *
    bytes_per_value``, whatever the number of heads. Multi-head attention caches ``2 * n_heads * d_head`` values per
    token and layer instead (``mla_cache_ratio``).

    Raises:
        ValueError: if a size is not an int >= 1.
    """
    _require_positive_ints(t=t, n_layers=n_layers, d_latent=d_latent, d_rope=d_rope, batch=batch,
                           bytes_per_value=bytes_per_value)
    return n_layers * (d_latent + d_rope) * t * batch * bytes_per_value


def mla_cache_ratio(*, n_heads: int, d_head: int, d_latent: int, d_rope: int) -> float:
    """MLA's cache over multi-head attention's, per token and layer: ``(d_latent + d_rope) / (2 * n_heads * d_head)``.

    DeepSeek-V2 (``DEEPSEEK_V2_MLA``): ``(512 + 64) / (2 * 128 * 128) = 576 / 32768``, about 1.8 % (57x smaller);
    as many values as grouped-query attention with ``576 / (2 * 128) = 2.25`` K/V heads.

    Raises:
        ValueError: if a size is not an int >= 1.
    """
    _require_positive_ints(n_heads=n_heads, d_head=d_head, d_latent=d_latent, d_rope=d_rope)
    return (d_latent + d_rope) / (2 * n_heads * d_head)


class MLASizes(NamedTuple):
    """The sizes that fix the K/V cache of a model with multi-head latent attention."""

    name: str
    n_layers: int
    n_heads: int
    d_head: int  # per-head size of the keys and values MLA recovers from the latent (d_h)
    d_latent: int  # the cached latent, d_c (kv_lora_rank in the config)
    d_rope: int  # the cached rotary key shared by all heads, d_h^R (qk_rope_head_dim)


# DeepSeek-V2 (arXiv 2405.04434, section 2.1 and 3.1.2): 60 layers, 128 heads of 128, d_c = 512, d_h^R = 64. The same
# numbers are in the released config (num_hidden_layers 60, num_attention_heads 128, qk_nope_head_dim 128,
# kv_lora_rank 512, qk_rope_head_dim 64), e.g. as copied into
# https://huggingface.co/ModelCloud/DeepSeek-V2-Chat-0628-gptq-4bit/blob/refs%2Fpr%2F2/config.json
DEEPSEEK_V2_MLA = MLASizes("DeepSeek-V2", n_layers=60, n_heads=128, d_head=128, d_latent=512, d_rope=64)


class EncoderDecoderSizes(NamedTuple):
    """What a real encoder-decoder's cross-attention K/V cache depends on, and a typical source for it."""

    name: str
    n_decoder_layers: int
    n_heads: int  # query heads of each decoder layer's cross-attention
    n_kv_heads: int  # its key/value heads (as released, all these models have one per query head)
    d_head: int
    t_src: int  # a typical source length, in encoder positions
    source: str  # what those positions are

    def cross_kv_bytes(self, t_src: int | None = None, *, n_kv_heads: int | None = None, batch: int = 1,
                       bytes_per_value: int = 2) -> int:
        """``cross_kv_cache_bytes`` for this model (default: its own source length and K/V heads)."""
        return cross_kv_cache_bytes(self.t_src if t_src is None else t_src, n_layers=self.n_decoder_layers,
                                    n_kv_heads=self.n_kv_heads if n_kv_heads is None else n_kv_heads,
                                    d_head=self.d_head, batch=batch, bytes_per_value=bytes_per_value)


ENCODER_DECODERS: tuple[EncoderDecoderSizes, ...] = (
    # https://huggingface.co/openai/whisper-large-v3 config.json: decoder_layers 32, decoder_attention_heads 20,
    # d_model 1280 (20 heads of 64), max_source_positions 1500 (the encoder's frames for 30 s of audio). Read here
    # in copies of that config (_name_or_path "openai/whisper-large-v3"), e.g.
    # https://huggingface.co/FL33TW00D-HF/whisper-large-v3/blame/main/config.json
    EncoderDecoderSizes("Whisper large-v3", 32, 20, 20, 64, 1500, "encoder frames for 30 s of audio"),
    # https://huggingface.co/google-t5/t5-base/blob/666f4ee1ab305b1835b95ee83c183c4d0948bf2e/config.json:
    # num_layers 12 (the decoder has as many), num_heads 12, d_kv 64, n_positions 512.
    EncoderDecoderSizes("T5-base", 12, 12, 12, 64, 512, "input tokens (n_positions)"),
    # https://huggingface.co/google-t5/t5-large/blob/9311dac9200f4add0bb656acf81f68eee93b58e7/config.json:
    # num_layers 24, num_heads 16, d_kv 64, n_positions 512.
    EncoderDecoderSizes("T5-large", 24, 16, 16, 64, 512, "input tokens (n_positions)"),
    # facebook/bart-large config.json: decoder_layers 12, decoder_attention_heads 16, d_model 1024 (16 heads of 64),
    # max_position_embeddings 1024; read in https://huggingface.co/miguelvictor/python-bart-large/blame/main/config.json
    # and fine-tunes of facebook/bart-large (e.g. https://huggingface.co/yuchenlin/BART0pp).
    EncoderDecoderSizes("BART-large", 12, 16, 16, 64, 1024, "input tokens (max_position_embeddings)"),
    # https://huggingface.co/allenai/led-base-16384/blob/228e30787eae77d4e4bdf99621bbce4eeb1f4870/config.json:
    # decoder_layers 6, decoder_attention_heads 12, d_model 768 (12 heads of 64), max_encoder_position_embeddings 16384.
    EncoderDecoderSizes("LED-base-16384", 6, 12, 12, 64, 16384, "tokens of a long document"),
)


def kv_cache_table(t_src_values: Sequence[int] = (4096, 16384, 65536), *, gqa_kv_heads: int = 4, batch: int = 1,
                   bytes_per_value: int = 2,
                   models: Sequence[EncoderDecoderSizes] = ENCODER_DECODERS) -> list[dict[str, object]]:
    """The cross-attention K/V cache of each model, in MiB, at its own source length and at every longer one in
    ``t_src_values``: with one K/V head per query head (MHA, as released), ``gqa_kv_heads`` K/V heads (GQA;
    None where that does not divide the model's heads) and one (MQA).

    One dict per (model, source length), so ``pandas.DataFrame(kv_cache_table())`` prints the table.

    Raises:
        ValueError: on an empty ``t_src_values`` or a size that is not an int >= 1.
    """
    if len(t_src_values) == 0:
        raise ValueError("t_src_values must hold at least one source length; got an empty sequence")
    _require_positive_ints(gqa_kv_heads=gqa_kv_heads, batch=batch, bytes_per_value=bytes_per_value,
                           **{f"t_src_values[{i}]": t for i, t in enumerate(t_src_values)})
    mib = 2**20
    gqa_key = f"GQA, {gqa_kv_heads} K/V heads (MiB)"
    rows: list[dict[str, object]] = []
    for model in models:
        lengths = [model.t_src] + sorted(t for t in set(t_src_values) if t > model.t_src)
        for t_src in lengths:
            mebibytes = {n_kv: round(model.cross_kv_bytes(t_src, n_kv_heads=n_kv, batch=batch,
                                                          bytes_per_value=bytes_per_value) / mib, 2)
                         for n_kv in (model.n_heads, gqa_kv_heads, 1)}
            rows.append({
                "model": model.name,
                "decoder layers x heads x d_head": f"{model.n_decoder_layers} x {model.n_heads} x {model.d_head}",
                "T_src": t_src,
                "source": model.source if t_src == model.t_src else "longer source",
                "MHA (MiB)": mebibytes[model.n_heads],
                gqa_key: mebibytes[gqa_kv_heads] if model.n_heads % gqa_kv_heads == 0 else None,
                "MQA (MiB)": mebibytes[1],
            })
    return rows
