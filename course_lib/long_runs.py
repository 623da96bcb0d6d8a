"""Lesson 12's experiments: approximate attention swapped into lesson 07's trained translator, no retraining.

``retrofit_scores`` puts each ``AttentionCore`` (``long_attention.topk_core``, ``window_core``, ``linear_core``, ...)
into every decoder cross-attention layer in turn (``use_attention_core``) and measures

- **exact match**: the share of sentences translated entirely right by greedy decoding;
- **token accuracy**: the share of target positions (``<eos>`` included) right;
- **attention error**: how far the core's attention weights are from exact softmax attention on the *same*
  queries and keys, as the total-variation distance ``0.5 * sum_j |w_j - exact_j|`` averaged over every query row
  of every layer and head (0: identical, 1: disjoint). For top-k and windows it equals the share of the exact
  attention mass that falls on the keys they drop.

Two ways to decode (``decoding``):

- ``"teacher_forced"`` (default): one pass over ``<bos>`` + the gold target, in groups of sentences that share
  their source and target lengths, so that no batch has padding. A greedy translation is entirely right exactly
  when every next-word prediction given the right words before it is right, so this exact match is greedy's
  (up to near-ties, as lesson 08 checked); token accuracy is then next-word accuracy given the right prefix. Each
  query row is one target position and the rectangle is the sentence's own, which windows need
  (``window_core``): the window then knows the target's length, which a real decoder would have to guess, so
  its score is if anything optimistic.
- ``"greedy"``: real greedy decoding with the K/V cache (``metrics.translate_data``), token accuracy as
  ``metrics.token_accuracy``. The cross-attention then sees one query at a time, so it suits top-k and linear
  attention but not windows (every step would sit at position 0).
"""
from __future__ import annotations

from collections.abc import Mapping
from contextlib import nullcontext
from typing import NamedTuple

import torch
from torch import Tensor, nn

from .attention import AttentionCore, scaled_dot_product_attention
from .data import ParallelData
from .long_attention import use_attention_core
from .metrics import exact_match, token_accuracy, translate_data
from .model import Seq2SeqTransformer
from .translator import Translator


class RetrofitScore(NamedTuple):
    """One core's scores on one split (fractions in 0..1)."""

    exact_match: float  # sentences entirely right
    token_accuracy: float  # target positions right, <eos> included
    attention_error: float  # mean total-variation distance to exact attention (0 = exact); NaN if no weights
    n_sentences: int

    def __str__(self) -> str:
        return (f"exact match {self.exact_match:.1%}, token accuracy {self.token_accuracy:.1%}, "
                f"attention error {self.attention_error:.3f} ({self.n_sentences} sentences)")


class _AttentionErrorMeter:
    """An ``AttentionCore`` that runs ``core`` (or exact attention, for None) and adds up how far its weights are
    from exact softmax attention on the same queries, keys and mask."""

    def __init__(self, core: AttentionCore) -> None:
        self.core, self.total, self.rows = core, 0.0, 0

    def __call__(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None,
                 need_weights: bool) -> tuple[Tensor, Tensor | None]:
        _, exact_weights = scaled_dot_product_attention(q, k, v, mask)  # [B, H, T_q, T_k]
        context, attn_weights = self.core(q, k, v, mask, True)
        if attn_weights is None:  # a core that gives no weights: no error to measure
            self.total = float("nan")
        else:
            distance = 0.5 * (attn_weights - exact_weights).abs().sum(dim=-1)  # [B, H, T_q]
            rows = exact_weights.sum(dim=-1) > 0  # rows with a visible key
            self.total += float(distance[rows].sum())
            self.rows += int(rows.sum())
        return context, attn_weights if need_weights else None

    @property
    def error(self) -> float:
        return self.total / self.rows if self.rows else float("nan")


def _same_length_groups(data: ParallelData, batch_size: int) -> list[Tensor]:
    """Example indices grouped by (source length, target length), at most ``batch_size`` per group."""
    groups: dict[tuple[int, int], list[int]] = {}
    for i, key in enumerate(zip(data.src_lengths.tolist(), data.tgt_lengths.tolist())):
        groups.setdefault(key, []).append(i)
    return [part for key in sorted(groups) for part in torch.tensor(groups[key]).split(batch_size)]


@torch.no_grad()
def _teacher_forced(model: Seq2SeqTransformer, data: ParallelData, batch_size: int) -> tuple[float, float]:
    device = next(model.parameters()).device
    sentences_right = positions_right = positions = 0
    for index in _same_length_groups(data, batch_size):
        batch = data.batch(index).to(device)  # no padding: every sentence of the group has the same lengths
        right = model(batch.src_ids, batch.tgt_in).argmax(dim=-1) == batch.tgt_out  # [B, T + 1]
        sentences_right += int(right.all(dim=-1).sum())
        positions_right += int(right.sum())
        positions += right.numel()
    return sentences_right / len(data), positions_right / positions


def retrofit_scores(translator: Translator | Seq2SeqTransformer, data: ParallelData,
                    cores: Mapping[str, AttentionCore | None], *, batch_size: int = 500,
                    decoding: str = "teacher_forced") -> dict[str, RetrofitScore]:
    """Score a trained translator with each core swapped into every decoder cross-attention layer (no retraining).

    Args:
        translator: a ``Translator`` (lesson 07's, ``training.load_or_train_translator()``) or its
            ``Seq2SeqTransformer``.
        data: the sentences to translate, e.g. the test split (``training.toy_data()[0]["test"]``).
        cores: ``{name: core}``; None means the model as it is (no core swapped in, its own attention path;
            attention error 0).
        batch_size: sentences per forward pass.
        decoding: ``"teacher_forced"`` (greedy's exact match in one pass; windows need it) or ``"greedy"``
            (see the module docstring).

    Returns:
        ``{name: RetrofitScore(exact_match, token_accuracy, attention_error, n_sentences)}``, in the order of
        ``cores``. The model is left as it was (its cores restored, its train/eval mode too).

    Raises:
        ValueError: for ``data`` that is not a ``ParallelData``, an empty ``cores``, an unknown ``decoding``,
            a ``batch_size < 1``, or a model without cross-attention.
    """
    model = getattr(translator, "model", translator)
    if not isinstance(model, nn.Module):
        raise ValueError(f"translator must be a Translator or a Seq2SeqTransformer; got {type(translator).__name__}")
    if not isinstance(data, ParallelData):
        raise ValueError(f"data must be a ParallelData (such as training.toy_data()[0]['test']); "
                         f"got {type(data).__name__}")
    if not cores:
        raise ValueError("cores must hold at least one {name: core}; got none")
    if decoding not in ("teacher_forced", "greedy"):
        raise ValueError(f"decoding must be 'teacher_forced' or 'greedy'; got {decoding!r}")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an int >= 1; got {batch_size!r}")
    was_training = model.training
    model.eval()
    references = [list(e.target) for e in data.examples]
    results: dict[str, RetrofitScore] = {}
    try:
        for name, core in cores.items():
            meter = None if core is None else _AttentionErrorMeter(core)
            with use_attention_core(model, meter) if meter is not None else nullcontext():
                if decoding == "greedy":
                    predictions = translate_data(model, data, batch_size=batch_size)
                    sentences, tokens = exact_match(predictions, references), token_accuracy(predictions, references)
                else:
                    sentences, tokens = _teacher_forced(model, data, batch_size)
            results[name] = RetrofitScore(sentences, tokens, 0.0 if meter is None else meter.error, len(data))
    finally:
        model.train(was_training)
    return results


__all__ = ["RetrofitScore", "retrofit_scores"]
