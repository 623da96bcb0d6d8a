"""Caches for autoregressive decoding. Two different things are cached, with one name each:

- the **self-attention K/V cache** (``KVCache``, one per decoder layer): the keys and values of the
  target positions decoded so far; it grows by one position per step.
- the **cross-attention K/V** (``SourceKV``, one per decoder layer): the source's keys and values,
  projected once from the encoder output by ``project_source``, ``[B, H, S, d_head]`` each, fixed
  while decoding one source.

``DecoderCache`` holds both for every layer: ``cross_kv`` and ``self_kv``.
"""
from __future__ import annotations

from dataclasses import dataclass

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
        cross_kv: the cross-attention K/V per layer (``SourceKV``, ``[B, H, S, d_head]`` each), or
            None to project them from the encoder output at every step.
        self_kv: the self-attention K/V cache per layer (``KVCache``, ``[B, H, T, d_head]`` each,
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
