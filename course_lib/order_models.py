"""Lesson 13's models and runs: a translator whose cross-attention is told about order and time.

``OrderedTransformer`` is ``Seq2SeqTransformer`` with four switches (``OrderSettings``): the encoder's positional
encoding on or off (the permutation test), a cross-attention score bias (none, the fixed diagonal of
``position.diagonal_bias`` or learned buckets, ``position.BucketedCrossBias``), a wait-k mask (step ``i`` reads the
first ``k + i`` source tokens) and a causal encoder (needed with wait-k: otherwise the encoder states the decoder
may read already summarise the source words it may not). ``train_ordered`` trains any of them, optionally with an
alignment-shaped loss on one head (``guided_alignment_loss``); it records the teacher-forced exact match on a
validation set as it goes, so runs can be compared by the steps they need to reach a target.
"""
from __future__ import annotations

import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor

from ._checks import shape_str
from .cache import DecoderCache
from .data import Batch, ParallelData
from .env import small_model_threads
from .masks import causal_mask
from .model import DecoderOutput, Seq2SeqTransformer, TransformerConfig
from .position import BucketedCrossBias, alibi_slopes, diagonal_bias, streaming_mask

__all__ = ["OrderSettings", "OrderedTransformer", "RunRecord", "gold_alignment_matrix", "guided_alignment_loss",
           "required_wait", "teacher_forced_exact_match", "train_ordered", "wait_bottleneck"]

CROSS_BIASES = (None, "diagonal", "buckets")


@dataclass(frozen=True)
class OrderSettings:
    """What ``OrderedTransformer`` changes. Defaults: an ordinary ``Seq2SeqTransformer``.

    Attributes:
        encoder_positions: add the sinusoidal positional encoding to the source embeddings.
        decoder_positions: add it to the target embeddings (without it, the causal mask is the decoder's only clue).
        cross_bias: None, ``"diagonal"`` (fixed ALiBi-style slopes per head) or ``"buckets"`` (learned, T5-style).
        source_per_target: source positions per target step on average (the bias' diagonal is ``j = i * rate``).
        n_buckets, max_distance: of the learned buckets.
        wait_k: target step ``i`` reads the first ``min(wait_k + i, length)`` source tokens; None: all of them.
        causal_encoder: source position ``j`` attends only to positions ``<= j`` in the encoder.
    """

    encoder_positions: bool = True
    decoder_positions: bool = True
    cross_bias: str | None = None
    source_per_target: float = 1.0
    n_buckets: int = 16
    max_distance: int = 32
    wait_k: int | None = None
    causal_encoder: bool = False

    def __post_init__(self) -> None:
        if self.cross_bias not in CROSS_BIASES:
            raise ValueError(f"cross_bias must be one of {CROSS_BIASES}; got {self.cross_bias!r}")
        if not (isinstance(self.source_per_target, (int, float)) and math.isfinite(self.source_per_target)
                and self.source_per_target > 0):
            raise ValueError(f"source_per_target must be a finite number > 0; got {self.source_per_target!r}")
        if self.wait_k is not None and (not isinstance(self.wait_k, int) or isinstance(self.wait_k, bool)
                                        or self.wait_k < 1):
            raise ValueError(f"wait_k must be None or an int >= 1; got {self.wait_k!r}")


class OrderedTransformer(Seq2SeqTransformer):
    """A ``Seq2SeqTransformer`` with ``OrderSettings``: every path (training, greedy decoding with a K/V cache,
    ``forward_with_attention``) applies the same bias and masks, row by row from the cache's offset."""

    def __init__(self, config: TransformerConfig, settings: OrderSettings | None = None) -> None:
        super().__init__(config)
        self.settings = settings = settings or OrderSettings()
        self.bucket_bias = BucketedCrossBias(config.n_heads, settings.n_buckets, settings.max_distance) \
            if settings.cross_bias == "buckets" else None
        self.register_buffer("slopes", alibi_slopes(config.n_heads), persistent=False)  # [H]

    def encode(self, src_ids: Tensor, *, need_weights: bool = False) -> tuple[Tensor, list[Tensor]]:
        """As ``Seq2SeqTransformer.encode``, with or without positions, causal or not."""
        self._check_ids("src_ids", src_ids, self.config.src_vocab_size)
        x = self.src_embed(src_ids)  # [B, S, d_model]
        if self.settings.encoder_positions:
            x = self.positions(x)
        mask = self.source_mask(src_ids)  # [B, 1, 1, S]
        if self.settings.causal_encoder:
            mask = mask & causal_mask(src_ids.shape[1], device=src_ids.device)  # [B, 1, S, S]
        return self.encoder(x, mask, need_weights=need_weights)

    def cross_bias(self, t_q: int, t_k: int, query_offset: int = 0) -> Tensor | None:
        """The cross-attention score bias ``[H, T_q, T_k]`` for target steps ``query_offset ..``, or None."""
        rate = self.settings.source_per_target
        if self.settings.cross_bias == "diagonal":
            return diagonal_bias(t_q, t_k, self.slopes, source_per_target=rate, query_offset=query_offset)
        if self.bucket_bias is not None:
            return self.bucket_bias(t_q, t_k, source_per_target=rate, query_offset=query_offset)
        return None

    def cross_mask(self, src_mask: Tensor, t_q: int, query_offset: int = 0) -> Tensor:
        """The padding mask ``[B, 1, 1, S]``, or with wait-k the mask ``[B, 1, T_q, S]`` of steps ``query_offset ..``
        (source lengths read from the padding mask: padding comes last)."""
        k = self.settings.wait_k
        if k is None:
            return src_mask
        lengths = src_mask.reshape(src_mask.shape[0], -1).sum(dim=-1)  # [B]
        steps = torch.arange(query_offset, query_offset + t_q, device=src_mask.device)  # [T_q]
        visible = torch.minimum(k + steps[None, :], lengths[:, None])  # [B, T_q]
        return streaming_mask(visible[:, None, :], src_mask.shape[-1])  # [B, 1, T_q, S]

    def decode(self, tgt_ids: Tensor, memory: Tensor | None, src_mask: Tensor, *, cache: DecoderCache | None = None,
               need_weights: bool = False) -> DecoderOutput:
        """As ``Seq2SeqTransformer.decode``, with this model's cross-attention bias and mask."""
        self._check_ids("tgt_ids", tgt_ids, self.config.tgt_vocab_size)
        if src_mask.ndim != 4 or src_mask.shape[1:3] != (1, 1):
            raise ValueError(f"src_mask must be the padding mask [B, 1, 1, S]; got {shape_str(src_mask.shape)}")
        offset = cache.length if cache is not None else 0
        t_new, t_k = tgt_ids.shape[1], src_mask.shape[-1]
        y = self.tgt_embed(tgt_ids)  # [B, T, d_model]
        if self.settings.decoder_positions:
            y = self.positions(y, offset=offset)
        self_mask = None if t_new == 1 else causal_mask(t_new, offset + t_new, device=tgt_ids.device)
        states = self.decoder(y, memory, self_mask=self_mask, memory_mask=self.cross_mask(src_mask, t_new, offset),
                              need_weights=need_weights, cache=cache,
                              memory_bias=self.cross_bias(t_new, t_k, offset))
        return DecoderOutput(self.output(states.y), states.self_weights, states.cross_weights)


# --- measurements ---------------------------------------------------------------------------------------------------

@torch.no_grad()
def teacher_forced_exact_match(model: Seq2SeqTransformer, data: ParallelData, *, batch_size: int = 500) -> float:
    """Fraction of examples whose every target token (and ``<eos>``) is the argmax under teacher forcing: a cheap
    stand-in for greedy exact match while training (greedy decoding can only be worse: an error feeds back)."""
    was_training = model.training
    model.eval()
    device, pad_id = next(model.parameters()).device, model.config.pad_id
    right = 0
    for index in torch.arange(len(data)).split(batch_size):
        batch = data.batch(index).to(device)
        predicted = model(batch.src_ids, batch.tgt_in).argmax(dim=-1)  # [B, T]
        ok = (predicted == batch.tgt_out) | (batch.tgt_out == pad_id)
        right += int(ok.all(dim=1).sum())
    model.train(was_training)
    return right / len(data)


def gold_alignment_matrix(examples: Sequence, t_q: int, t_k: int) -> Tensor:
    """Bool ``[B, T_q, T_k]``: row ``t`` (the decoder position that predicts target word ``t``) is True at the source
    words that word is aligned to (``example.alignment``: (source, target) pairs). The ``<eos>`` row and padding
    stay False."""
    gold = torch.zeros(len(examples), t_q, t_k, dtype=torch.bool)
    for row, example in enumerate(examples):
        for s, t in example.alignment:
            if t < t_q and s < t_k:
                gold[row, t, s] = True
    return gold


def guided_alignment_loss(cross_weights: Tensor, gold: Tensor) -> Tensor:
    """Mean over aligned target words of ``-log(sum of the head's weight on the gold source words)``.

    Args:
        cross_weights: one head's cross-attention weights ``[B, T_q, T_k]``.
        gold: bool ``[B, T_q, T_k]`` from ``gold_alignment_matrix``; rows without a link do not count.

    Raises:
        ValueError: if the shapes differ.
    """
    if cross_weights.shape != gold.shape or cross_weights.ndim != 3:
        raise ValueError(f"cross_weights and gold must both be [B, T_q, T_k]; got {shape_str(cross_weights.shape)} "
                         f"and {shape_str(gold.shape)}")
    rows = gold.any(dim=-1)  # [B, T_q]
    if not bool(rows.any()):
        return cross_weights.sum() * 0.0
    mass = (cross_weights * gold).sum(dim=-1)  # [B, T_q]
    return -torch.log(mass[rows].clamp_min(1e-9)).mean()


def required_wait(example) -> int:
    """The smallest ``k`` for which wait-k lets every target word see all the source words it is aligned to:
    ``max over target words t of (last aligned source index + 1 - t)``, at least 1. (A word that is aligned to
    nothing needs nothing.)"""
    return max([1] + [s + 1 - t for s, t in example.alignment])


def wait_bottleneck(example) -> tuple[int, int] | None:
    """The ``(source index, target index)`` link that sets ``required_wait`` (the first such target word), or None
    when no link needs more than one source word."""
    need = required_wait(example)
    links = sorted(((t, s) for s, t in example.alignment if s + 1 - t == need))
    return (links[0][1], links[0][0]) if need > 1 and links else None


# --- training -------------------------------------------------------------------------------------------------------

@dataclass
class RunRecord:
    """What ``train_ordered`` measured: the loss per step, and the teacher-forced exact match on the validation set
    at ``eval_steps``; ``seconds`` of training (evaluation excluded)."""

    loss: list[float] = field(default_factory=list)
    eval_steps: list[int] = field(default_factory=list)
    eval_exact_match: list[float] = field(default_factory=list)
    seconds: float = 0.0

    def steps_to(self, target: float) -> int | None:
        """The first evaluated step whose exact match reached ``target``, or None if none did."""
        return next((s for s, e in zip(self.eval_steps, self.eval_exact_match) if e >= target), None)

    def as_dict(self) -> dict:
        return asdict(self)


def _index_batches(data: ParallelData, batch_size: int, generator: torch.Generator) -> Iterator[Tensor]:
    """Endless shuffled batches of example indices, similar source lengths together (pools of 64 batches)."""
    while True:
        order = torch.randperm(len(data), generator=generator)
        pool = 64 * batch_size
        order = torch.cat([order[i:i + pool][torch.sort(data.src_lengths[order[i:i + pool]], stable=True).indices]
                           for i in range(0, len(order), pool)])
        groups = list(order.split(batch_size))
        for g in torch.randperm(len(groups), generator=generator).tolist():
            yield groups[g]


def train_ordered(model: OrderedTransformer | Seq2SeqTransformer, data: ParallelData, *, steps: int,
                  valid: ParallelData | None = None, eval_every: int = 50, batch_size: int = 64, lr: float = 5e-3,
                  warmup_steps: int = 100, seed: int = 0, guided_head: tuple[int, int] | None = None,
                  guided_weight: float = 1.0, threads: int | None = None) -> RunRecord:
    """Adam with warm-up and cosine decay over ``steps`` (lesson 07's recipe), gradient clipping at 1.

    ``guided_head=(layer, head)`` adds ``guided_weight * guided_alignment_loss`` of that decoder layer's head
    (the examples of ``data`` must carry alignments). ``valid``: teacher-forced exact match every ``eval_every``
    steps and at the end. Reproducible for a seed on one machine; ``threads``: default one less than the cores.
    """
    if steps < 1 or eval_every < 1 or batch_size < 1:
        raise ValueError(f"steps, eval_every and batch_size must be >= 1; got {steps}, {eval_every}, {batch_size}")
    device, pad_id = next(model.parameters()).device, model.config.pad_id
    optimizer = torch.optim.Adam(model.parameters(), lr=lr, betas=(0.9, 0.98), eps=1e-9)
    generator = torch.Generator().manual_seed(seed)
    record = RunRecord()
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads or small_model_threads())
    try:
        batches = _index_batches(data, batch_size, generator)
        model.train()
        for step in range(steps):
            start = time.perf_counter()
            index = next(batches)
            batch: Batch = data.batch(index).to(device)
            warm = min(1.0, (step + 1) / warmup_steps) if warmup_steps else 1.0
            for group in optimizer.param_groups:
                group["lr"] = lr * warm * 0.5 * (1.0 + math.cos(math.pi * step / steps))
            if guided_head is None:
                logits = model(batch.src_ids, batch.tgt_in)  # [B, T, V]
                extra = None
            else:
                logits, maps = model.forward_with_attention(batch.src_ids, batch.tgt_in)
                layer, head = guided_head
                weights = maps.decoder_cross[layer][:, head]  # [B, T, S]
                gold = gold_alignment_matrix([data.examples[i] for i in index.tolist()], *weights.shape[1:])
                extra = guided_weight * guided_alignment_loss(weights, gold.to(device))
            loss = F.cross_entropy(logits.flatten(0, 1), batch.tgt_out.flatten(), ignore_index=pad_id)
            total = loss if extra is None else loss + extra
            optimizer.zero_grad(set_to_none=True)
            total.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            record.loss.append(loss.item())
            record.seconds += time.perf_counter() - start
            if valid is not None and ((step + 1) % eval_every == 0 or step + 1 == steps):
                record.eval_steps.append(step + 1)
                record.eval_exact_match.append(teacher_forced_exact_match(model, valid))
    finally:
        torch.set_num_threads(previous_threads)
        model.eval()
    return record
