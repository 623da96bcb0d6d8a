"""Greedy decoding and beam search, with four levels of caching.

``cache`` says how much work is reused between decoding steps:

==============  ========================================================================
``"none"``      recompute everything each step: encoder, and decoder over the whole prefix
``"encoder"``   run the encoder once; decoder over the whole prefix each step
``"cross_kv"``  also project each layer's cross-attention K/V once (``DecoderCache.cross_kv``)
``"full"``      also keep a self-attention K/V cache (``DecoderCache.self_kv``): the decoder
                sees one new token a step
==============  ========================================================================

All four produce the same tokens; only the amount of computation differs.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from ._checks import require_ndim, require_tensor
from .cache import DecoderCache
from .model import Seq2SeqTransformer

CacheMode = Literal["none", "encoder", "cross_kv", "full"]
CACHE_MODES: tuple[CacheMode, ...] = ("none", "encoder", "cross_kv", "full")


@dataclass
class Generation:
    """Output of a decoder.

    Attributes:
        tokens: ``[B, T_new]`` generated ids (no BOS); after EOS, the pad id.
        logits: ``[B, T_new, V]`` greedy: the logits each token was chosen from; beam search:
            None.
        scores: ``[B]`` beam search: length-normalised log-probability of the chosen beam;
            greedy: None.
    """

    tokens: Tensor
    logits: Tensor | None = None
    scores: Tensor | None = None


class IncrementalDecoder:
    """Next-token logits for a batch of sources, reusing what ``cache`` allows between steps."""

    def __init__(self, model: Seq2SeqTransformer, src_ids: Tensor, cache: CacheMode) -> None:
        if cache not in CACHE_MODES:
            raise ValueError(f"cache must be one of {CACHE_MODES}; got {cache!r}")
        self.model, self.src_ids, self.mode = model, src_ids, cache
        self.src_mask = model.source_mask(src_ids)  # [B, 1, 1, S]
        self.memory: Tensor | None = None
        self.cache: DecoderCache | None = None
        if cache != "none":
            self.memory, _ = model.encode(src_ids)  # [B, S, d_model]
        if cache in ("cross_kv", "full"):
            self.cache = model.new_cache(self.memory, self_kv=cache == "full")

    def next_logits(self, prefix: Tensor) -> Tensor:
        """``prefix [B, t]`` (BOS and the tokens so far) -> logits for token ``t + 1``, ``[B, V]``."""
        memory = self.memory
        if self.mode == "none":
            memory, _ = self.model.encode(self.src_ids)
        if self.mode == "full":
            prefix = prefix[:, -1:]  # earlier positions are in the self-attention K/V cache
        logits = self.model.decode(prefix, memory, self.src_mask, cache=self.cache).logits  # [B, t or 1, V]
        return logits[:, -1]  # [B, V]

    def reorder(self, index: Tensor) -> None:
        """Keep batch rows ``index`` (beam search)."""
        if self.cache is not None:
            self.cache.reorder(index)


def _check_generation_args(model: Seq2SeqTransformer, src_ids: Tensor, max_new_tokens: int) -> None:
    require_tensor("src_ids", src_ids)
    require_ndim("src_ids", src_ids, 2, "[B, S]")
    if src_ids.shape[0] == 0 or src_ids.shape[1] == 0:
        raise ValueError(f"src_ids must be a non-empty batch [B, S]; got shape {list(src_ids.shape)}")
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1; got {max_new_tokens}")
    if max_new_tokens + 1 > model.config.max_len:
        raise ValueError(
            f"max_new_tokens + 1 (BOS) must be <= the model's max_len={model.config.max_len}; got {max_new_tokens}"
        )


@torch.no_grad()
def greedy_decode(
    model: Seq2SeqTransformer,
    src_ids: Tensor,
    *,
    bos_id: int,
    eos_id: int | None = None,
    max_new_tokens: int = 64,
    cache: CacheMode = "full",
) -> Generation:
    """Pick the most likely token at every step.

    Args:
        src_ids: ``[B, S]`` padded source ids.
        bos_id: id that starts every target.
        eos_id: id that ends a target; a finished row is padded with the model's ``pad_id``, and
            decoding stops when every row has finished. None: always ``max_new_tokens`` steps.
        cache: how much to reuse between steps (see the module docstring).

    Returns:
        ``Generation(tokens [B, T_new], logits [B, T_new, V])``.
    """
    _check_generation_args(model, src_ids, max_new_tokens)
    decoder = IncrementalDecoder(model, src_ids, cache)
    pad_id = model.config.pad_id
    prefix = torch.full((src_ids.shape[0], 1), bos_id, dtype=torch.long, device=src_ids.device)  # [B, 1]
    finished = torch.zeros(src_ids.shape[0], dtype=torch.bool, device=src_ids.device)
    step_logits = []
    for _ in range(max_new_tokens):
        logits = decoder.next_logits(prefix)  # [B, V]
        next_token = logits.argmax(dim=-1)  # [B]
        if eos_id is not None:
            next_token = next_token.masked_fill(finished, pad_id)
            finished = finished | (next_token == eos_id)
        step_logits.append(logits)
        prefix = torch.cat([prefix, next_token[:, None]], dim=1)  # [B, t + 1]
        if eos_id is not None and bool(finished.all()):
            break
    return Generation(tokens=prefix[:, 1:], logits=torch.stack(step_logits, dim=1))


@torch.no_grad()
def beam_search(
    model: Seq2SeqTransformer,
    src_ids: Tensor,
    *,
    bos_id: int,
    eos_id: int,
    beam_size: int = 4,
    max_new_tokens: int = 64,
    length_penalty: float = 1.0,
    cache: CacheMode = "full",
) -> Generation:
    """Keep the ``beam_size`` most likely prefixes at every step; return the best finished one.

    A finished beam stays in the beam with its score frozen (it can only continue with padding).
    Beams are ranked at the end by ``sum of log-probabilities / length ** length_penalty``.

    Returns:
        ``Generation(tokens [B, T_new], scores [B])``; with ``beam_size=1`` the tokens equal
        ``greedy_decode``'s.
    """
    if beam_size < 1:
        raise ValueError(f"beam_size must be >= 1; got {beam_size}")
    _check_generation_args(model, src_ids, max_new_tokens)
    batch, device, pad_id = src_ids.shape[0], src_ids.device, model.config.pad_id
    k = beam_size
    decoder = IncrementalDecoder(model, src_ids.repeat_interleave(k, dim=0), cache)  # rows [B * K]
    prefix = torch.full((batch * k, 1), bos_id, dtype=torch.long, device=device)  # [B*K, 1]
    beam_scores = torch.zeros(batch, k, device=device)  # [B, K]
    beam_scores[:, 1:] = float("-inf")  # all beams start identical: expand only the first
    finished = torch.zeros(batch * k, dtype=torch.bool, device=device)
    lengths = torch.zeros(batch * k, device=device)
    for _ in range(max_new_tokens):
        log_probs = torch.log_softmax(decoder.next_logits(prefix).float(), dim=-1)  # [B*K, V]
        vocab = log_probs.shape[-1]
        log_probs[finished] = float("-inf")
        log_probs[finished, pad_id] = 0.0  # a finished beam continues with padding, score unchanged
        candidates = (beam_scores.view(-1, 1) + log_probs).view(batch, k * vocab)  # [B, K*V]
        beam_scores, flat_index = candidates.topk(k, dim=-1)  # [B, K]
        origin = (torch.arange(batch, device=device)[:, None] * k + flat_index // vocab).view(-1)  # [B*K]
        next_token = (flat_index % vocab).view(-1)  # [B*K]
        prefix = torch.cat([prefix.index_select(0, origin), next_token[:, None]], dim=1)
        finished, lengths = finished.index_select(0, origin), lengths.index_select(0, origin)
        lengths = lengths + (~finished).float()
        finished = finished | (next_token == eos_id)
        decoder.reorder(origin)
        if bool(finished.all()):
            break
    normalised = beam_scores / lengths.view(batch, k).clamp(min=1) ** length_penalty  # [B, K]
    best = normalised.argmax(dim=-1)  # [B]
    rows = torch.arange(batch, device=device) * k + best
    return Generation(tokens=prefix.index_select(0, rows)[:, 1:], scores=normalised.gather(1, best[:, None])[:, 0])
