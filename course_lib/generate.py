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

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from ._checks import require_ndim, require_tensor
from .cache import DecoderCache
from .env import num_threads, small_model_threads
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
        scores: ``[B]`` beam search: the chosen hypothesis' score, its summed log-probability divided
            by ``length ** length_penalty``; greedy: None.
        beams: ``[B, n_best, T_new]`` beam search: the ``n_best`` best hypotheses, best first; else None.
        beam_scores: ``[B, n_best]`` beam search: their scores; else None.
    """

    tokens: Tensor
    logits: Tensor | None = None
    scores: Tensor | None = None
    beams: Tensor | None = None
    beam_scores: Tensor | None = None


class IncrementalDecoder:
    """Next-token logits for a batch of sources, reusing what ``cache`` allows between steps.

    ``static_cache_len``: with ``"full"``, preallocate the self-attention caches for that many positions
    (``StaticKVCache``, written in place) instead of growing them (``KVCache``).

    ``beams``: decode ``K`` rows per source (beam search), rows ``b * K .. b * K + K - 1`` for source ``b``. The
    source is encoded once, not ``K`` times; with ``"cross_kv"`` and ``"full"`` its cross-attention K/V are
    projected once and **shared** by its beams (``MultiHeadAttention`` folds the beams into its queries), so
    nothing of the source is copied ``K`` times. The two cheaper modes repeat the encoder output per beam.
    """

    def __init__(self, model: Seq2SeqTransformer, src_ids: Tensor, cache: CacheMode, beams: int = 1,
                 static_cache_len: int | None = None) -> None:
        if cache not in CACHE_MODES:
            raise ValueError(f"cache must be one of {CACHE_MODES}; got {cache!r}")
        self.model, self.src_ids, self.mode, self.beams = model, src_ids, cache, beams
        self.src_mask = model.source_mask(src_ids)  # [B, 1, 1, S]
        self.memory: Tensor | None = None
        self.cache: DecoderCache | None = None
        if cache != "none":
            self.memory, _ = model.encode(src_ids)  # [B, S, d_model], once
        if cache in ("cross_kv", "full"):
            self.cache = model.new_cache(self.memory, self_kv=cache == "full",  # cross K/V [B, H, S, d_head]
                                         max_len=static_cache_len)  # a preallocated self-attention cache, if given
        elif beams > 1:  # the K beams of a source each get a copy of its encoder output and mask
            self.src_mask = self.src_mask.repeat_interleave(beams, dim=0)  # [B * K, 1, 1, S]
            if self.memory is not None:
                self.memory = self.memory.repeat_interleave(beams, dim=0)  # [B * K, S, d_model]

    def next_logits(self, prefix: Tensor) -> Tensor:
        """``prefix [B, t]`` (BOS and the tokens so far) -> logits for token ``t + 1``, ``[B, V]``."""
        memory = self.memory
        if self.mode == "none":
            memory, _ = self.model.encode(self.src_ids)
            if self.beams > 1:
                memory = memory.repeat_interleave(self.beams, dim=0)  # [B * K, S, d_model]
        if self.mode == "full":
            prefix = prefix[:, -1:]  # earlier positions are in the self-attention K/V cache
        logits = self.model.decode(prefix, memory, self.src_mask, cache=self.cache).logits  # [B, t or 1, V]
        return logits[:, -1]  # [B, V]

    def reorder(self, index: Tensor) -> None:
        """Keep batch rows ``index`` (beam search; each row stays with its own source)."""
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
    static_cache: bool = False,
    threads: int | None = None,
) -> Generation:
    """Pick the most likely token at every step.

    Args:
        src_ids: ``[B, S]`` padded source ids.
        bos_id: id that starts every target.
        eos_id: id that ends a target; a finished row is padded with the model's ``pad_id``, and
            decoding stops when every row has finished. None: always ``max_new_tokens`` steps.
        cache: how much to reuse between steps (see the module docstring).
        static_cache: with ``cache="full"``, a preallocated self-attention cache written in place
            (``StaticKVCache``) instead of one that grows by concatenation: same tokens, less copying.
        threads: CPU threads while decoding (``decoding_threads``); the count in force comes back after.

    Returns:
        ``Generation(tokens [B, T_new], logits [B, T_new, V])``.
    """
    _check_generation_args(model, src_ids, max_new_tokens)
    with num_threads(decoding_threads(src_ids, threads)):
        return _greedy_decode(model, src_ids, bos_id, eos_id, max_new_tokens, cache, static_cache)


def decoding_threads(src_ids: Tensor, threads: int | None = None) -> int | None:
    """The CPU threads ``greedy_decode`` and ``beam_search`` use: ``threads`` if given, else
    ``env.small_model_threads()`` (one less than the cores: one step's operations are small, and on 2 cores one
    thread decoded twice as fast as two); None (leave the count alone) for tensors on a GPU."""
    if src_ids.device.type != "cpu":
        return None
    return small_model_threads() if threads is None else threads


def _greedy_decode(model: Seq2SeqTransformer, src_ids: Tensor, bos_id: int, eos_id: int | None,
                   max_new_tokens: int, cache: CacheMode, static_cache: bool) -> Generation:
    decoder = IncrementalDecoder(model, src_ids, cache, static_cache_len=max_new_tokens + 1 if static_cache else None)
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


def length_normaliser(length: Tensor | int, length_penalty: float, dtype: torch.dtype = torch.float32) -> Tensor:
    """``length ** length_penalty``: a hypothesis' score is its sum of log-probabilities divided by this
    (``length`` counts the generated tokens, ``<eos>`` included). 0: raw log-probability; 1: its mean per token;
    larger values favour longer outputs."""
    return torch.as_tensor(length, dtype=dtype).clamp(min=1) ** length_penalty


@torch.no_grad()
def beam_search(
    model: Seq2SeqTransformer,
    src_ids: Tensor,
    *,
    bos_id: int,
    eos_id: int | None,
    beam_size: int = 4,
    max_new_tokens: int = 64,
    length_penalty: float = 1.0,
    n_best: int = 1,
    cache: CacheMode = "full",
    static_cache: bool = False,
    threads: int | None = None,
) -> Generation:
    """Beam search, the standard way (as in the common libraries): ``beam_size`` live beams per source and a pool
    of finished hypotheses.

    At every step each live beam's continuations are scored by their summed log-probability, and the best
    ``2 K`` are taken in order: one ending in ``eos_id`` among the first ``K`` enters the pool (scored
    ``sum / length ** length_penalty``, see ``length_normaliser``), the first ``K`` others become the new live
    beams. A source is done when its pool holds ``max(K, n_best)`` hypotheses and no live beam can beat the worst
    of them whatever it does next (its sum can only fall; its normaliser is at most that of ``max_new_tokens``
    tokens): an exact stopping rule, not a heuristic. After ``max_new_tokens`` steps, live beams join the pool
    unfinished. With ``eos_id=None`` nothing finishes: the K beams run ``max_new_tokens`` steps.

    The source is encoded once, and with ``"cross_kv"``/``"full"`` its cross-attention K/V are shared by its beams
    (``IncrementalDecoder``); ``static_cache`` preallocates the self-attention caches (reordered in place);
    ``threads``: CPU threads while decoding (``decoding_threads``). A beam
    of one is greedy decoding (``greedy_decode`` runs).

    Returns:
        ``Generation(tokens [B, T_new], scores [B], beams [B, n_best, T_new], beam_scores [B, n_best])``: the best
        hypothesis of each source, padded with the pad id after its ``<eos>``, and the ``n_best`` best, best first.
    """
    if beam_size < 1:
        raise ValueError(f"beam_size must be >= 1; got {beam_size}")
    if n_best < 1:
        raise ValueError(f"n_best must be >= 1; got {n_best}")
    _check_generation_args(model, src_ids, max_new_tokens)
    if beam_size == 1 and n_best == 1:
        greedy = greedy_decode(model, src_ids, bos_id=bos_id, eos_id=eos_id, max_new_tokens=max_new_tokens,
                               cache=cache, static_cache=static_cache, threads=threads)
        dtype = torch.promote_types(greedy.logits.dtype, torch.float32)
        log_probs = torch.log_softmax(greedy.logits.to(dtype), dim=-1).gather(-1, greedy.tokens[..., None])[..., 0]
        real = _generated_mask(greedy.tokens, eos_id)  # [B, T]: up to and including <eos>
        score = (log_probs * real).sum(dim=-1) / length_normaliser(real.sum(dim=-1), length_penalty, dtype)
        return Generation(greedy.tokens, scores=score, beams=greedy.tokens[:, None], beam_scores=score[:, None])
    with num_threads(decoding_threads(src_ids, threads)):
        return _beam_search(model, src_ids, bos_id=bos_id, eos_id=eos_id, beam_size=beam_size,
                            max_new_tokens=max_new_tokens, length_penalty=length_penalty, n_best=n_best, cache=cache,
                            static_cache=static_cache)


def _generated_mask(tokens: Tensor, eos_id: int | None) -> Tensor:
    """``[B, T]`` True at the generated tokens up to and including the first ``eos_id``."""
    if eos_id is None:
        return torch.ones_like(tokens, dtype=torch.bool)
    after = (tokens == eos_id).int().cumsum(dim=-1) - (tokens == eos_id).int()  # eos seen before this position
    return after == 0


def _beam_search(model: Seq2SeqTransformer, src_ids: Tensor, *, bos_id: int, eos_id: int | None, beam_size: int,
                 max_new_tokens: int, length_penalty: float, n_best: int, cache: CacheMode,
                 static_cache: bool = False) -> Generation:
    """The algorithm of ``beam_search`` for any beam size (a beam of one included)."""
    batch, device, pad_id = src_ids.shape[0], src_ids.device, model.config.pad_id
    k, pool_size, arange = beam_size, max(beam_size, n_best), torch.arange(batch, device=device)
    dtype = torch.promote_types(next(model.parameters()).dtype, torch.float32)  # scores: float32 or float64
    norm = lambda length: length_normaliser(length, length_penalty, dtype).to(device)
    decoder = IncrementalDecoder(model, src_ids, cache, beams=k,
                                 static_cache_len=max_new_tokens + 1 if static_cache else None)
    prefix = torch.full((batch * k, 1), bos_id, dtype=torch.long, device=device)  # [B*K, 1]
    live = torch.zeros(batch, k, device=device, dtype=dtype)  # [B, K]: summed log-probabilities of the live beams
    live[:, 1:] = float("-inf")  # all beams start identical: expand only the first
    pool_scores = torch.full((batch, pool_size), float("-inf"), device=device, dtype=dtype)  # [B, P], best first
    pool_tokens = torch.full((batch, pool_size, max_new_tokens), pad_id, dtype=torch.long, device=device)
    done = torch.zeros(batch, dtype=torch.bool, device=device)
    best_normaliser = torch.maximum(norm(1), norm(max_new_tokens))
    steps = 0
    for step in range(max_new_tokens):
        steps = step + 1
        log_probs = torch.log_softmax(decoder.next_logits(prefix).to(dtype), dim=-1)  # [B*K, V]
        vocab = log_probs.shape[-1]
        candidates = (live[..., None] + log_probs.view(batch, k, vocab)).view(batch, k * vocab)  # [B, K*V]
        top_scores, top_index = candidates.topk(min(2 * k, k * vocab), dim=-1)  # [B, 2K], best first
        origin, token = top_index // vocab, top_index % vocab  # [B, 2K]: beam of origin, next token
        is_eos = token == eos_id if eos_id is not None else torch.zeros_like(token, dtype=torch.bool)
        if eos_id is not None:  # finished hypotheses among the first K candidates enter the pool
            enters = is_eos & (torch.arange(top_scores.shape[1], device=device) < k) & ~done[:, None]
            enters &= top_scores > float("-inf")
            normalised = torch.where(enters, top_scores / norm(steps), float("-inf"))  # [B, 2K]
            rows = prefix.view(batch, k, -1)[arange[:, None], origin][..., 1:]  # [B, 2K, step]: tokens so far
            finished = torch.full((batch, rows.shape[1], max_new_tokens), pad_id, dtype=torch.long, device=device)
            finished[..., :step] = rows
            finished[..., step] = eos_id
            pool_scores, pool_tokens = _merge_pool(pool_scores, pool_tokens, normalised, finished)
        # the first K candidates that do not end in <eos> are the new live beams
        rank = torch.where(is_eos, float("inf"), torch.arange(top_scores.shape[1], device=device).float())
        keep = rank.argsort(dim=-1, stable=True)[:, :k]  # [B, K]
        live = top_scores.gather(1, keep)  # [B, K]
        origin, token = origin.gather(1, keep), token.gather(1, keep)
        rows = (arange[:, None] * k + origin).view(-1)  # [B*K]
        prefix = torch.cat([prefix.index_select(0, rows), token.view(-1, 1)], dim=1)  # [B*K, step + 2]
        decoder.reorder(rows)
        if eos_id is not None:  # exact stopping: no live beam can reach the pool's worst any more
            full = pool_scores[:, -1] > float("-inf")
            cannot_win = live.max(dim=-1).values / best_normaliser <= pool_scores[:, -1]
            done |= full & cannot_win
            if bool(done.all()):
                break
    if not bool(done.all()):  # unfinished live beams compete with the finished ones
        normalised = torch.where(done[:, None], float("-inf"), live / norm(steps))  # [B, K]
        unfinished = torch.full((batch, k, max_new_tokens), pad_id, dtype=torch.long, device=device)
        unfinished[..., :steps] = prefix.view(batch, k, -1)[..., 1:]
        pool_scores, pool_tokens = _merge_pool(pool_scores, pool_tokens, normalised, unfinished)
    width = int(_generated_mask(pool_tokens[:, 0], eos_id).sum(dim=-1).max()) if eos_id is not None else steps
    beams, beam_scores = pool_tokens[:, :n_best, :width], pool_scores[:, :n_best]
    return Generation(tokens=beams[:, 0], scores=beam_scores[:, 0], beams=beams, beam_scores=beam_scores)


def _merge_pool(pool_scores: Tensor, pool_tokens: Tensor, scores: Tensor, tokens: Tensor) -> tuple[Tensor, Tensor]:
    """Keep the best ``P`` of the pool ``[B, P]`` and the new hypotheses ``[B, N]`` (``-inf`` = none), best first."""
    all_scores = torch.cat([pool_scores, scores], dim=1)  # [B, P + N]
    best, index = all_scores.topk(pool_scores.shape[1], dim=-1)  # a stable order: the pool's earlier entries first
    all_tokens = torch.cat([pool_tokens, tokens], dim=1)  # [B, P + N, T_max]
    return best, all_tokens.gather(1, index[..., None].expand(-1, -1, all_tokens.shape[-1]))


def greedy_tokens(next_logits: Callable[[Tensor, int], Tensor], batch: int, *, bos_id: int, eos_id: int | None,
                  pad_id: int, max_new_tokens: int, device: torch.device) -> Tensor:
    """Greedy decoding around ``next_logits(last_tokens [B, 1], step) -> [B, V]``, as ``greedy_decode`` does
    it: a finished row continues with ``pad_id``; stop when every row has produced ``eos_id``.

    Returns the new tokens ``[B, T_new]`` (no BOS). The steps run on ``decoding_threads`` CPU threads. Used by the
    models that decode themselves: lesson 09's GRU and decoder-only translators, lesson 10's captioner."""
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1; got {max_new_tokens}")
    last = torch.full((batch, 1), bos_id, dtype=torch.long, device=device)  # [B, 1]
    finished = torch.zeros(batch, dtype=torch.bool, device=device)
    tokens = []
    with num_threads(decoding_threads(last)):
        for step in range(max_new_tokens):
            token = next_logits(last, step).argmax(dim=-1)  # [B]
            if eos_id is not None:
                token = token.masked_fill(finished, pad_id)
                finished = finished | (token == eos_id)
            tokens.append(token)
            last = token[:, None]
            if eos_id is not None and bool(finished.all()):
                break
    return torch.stack(tokens, dim=1)  # [B, T_new]
