"""Lesson 08's head analysis: every decoder cross-attention head measured on a whole split.

``corpus_cross_attention`` collects the teacher-forced cross-attention of a split once; from it, ``head_entropy``
(how spread each head's attention is) and ``where_heads_look`` (which source word each head attends to most,
sorted into ``LOOK_BINS``). ``silencing_scores`` silences each head in turn (``metrics.ablated_heads``) and
scores the split with ``teacher_forced_exact_match``. The tools for one attention row or one head
(``attention_entropy``, ``ablated_heads``) are in ``metrics``; ``translation_charts`` draws the results.
"""
from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from .data import ParallelData
from .metrics import _length_sorted_groups, ablated_heads, attention_entropy
from .model import Seq2SeqTransformer

CorpusAttention = list[tuple[Tensor, Tensor]]  # (example indices [B], cross-attention [B, L, H, T, S]) per batch


@torch.no_grad()
def corpus_cross_attention(model: Seq2SeqTransformer, data: ParallelData, *,
                           batch_size: int = 500) -> CorpusAttention:
    """Teacher-forced cross-attention of every example of ``data``, on the CPU, in length-sorted batches
    (little padding): ``(example indices [B], weights [B, L, H, T, S])`` per batch. Row ``j`` of ``T``
    writes target word ``j``; row ``len(target)`` writes ``<eos>``; padded rows and columns are zero."""
    was_training = model.training
    model.eval()
    batches = []
    for index in _length_sorted_groups(data, batch_size):
        batch = data.batch(index).to(next(model.parameters()).device)
        _, maps = model.forward_with_attention(batch.src_ids, batch.tgt_in)
        batches.append((index, torch.stack(maps.decoder_cross, dim=1).cpu()))  # [B, L, H, T, S]
    model.train(was_training)
    return batches


class HeadEntropy(NamedTuple):
    """Mean normalised entropy (0 = one source word, 1 = even) of each head, ``[L, H]`` each."""

    words: Tensor  # over the rows that write target words
    eos: Tensor  # over the rows that write <eos> (one per sentence)


def head_entropy(attention: CorpusAttention, data: ParallelData) -> HeadEntropy:
    """Mean normalised entropy per head of ``corpus_cross_attention(model, data)``: padded source words
    do not count (``attention_entropy`` with a key mask), padded rows are left out, and the ``<eos>``
    rows are averaged apart from the rows that write words."""
    word_sum = eos_sum = 0.0
    for index, cross in attention:
        key_mask = torch.arange(cross.shape[-1]) < data.src_lengths[index][:, None]  # [B, S]: real words
        rows = attention_entropy(cross, key_mask[:, None, None, None, :], normalise=True)  # [B, L, H, T]
        n_words = data.tgt_lengths[index][:, None] - 1  # [B, 1]: target words; row n_words writes <eos>
        position = torch.arange(cross.shape[3])  # [T]
        is_word = (position < n_words)[:, None, None]  # [B, 1, 1, T]
        is_eos = (position == n_words)[:, None, None]  # [B, 1, 1, T]
        word_sum = word_sum + (rows * is_word).sum(dim=(0, 3))  # [L, H]
        eos_sum = eos_sum + (rows * is_eos).sum(dim=(0, 3))  # [L, H]
    return HeadEntropy(word_sum / int((data.tgt_lengths - 1).sum()), eos_sum / len(data))


LOOK_BINS = ("the gold word", "the word just written", "the next word to write", "a word with no translation",
             "the last source word", "elsewhere")


def _gold_sources(data: ParallelData) -> tuple[Tensor, Tensor]:
    """Source index of every target word ``[N, T]`` (-1 past the end), and the source words with no link
    ``[N, S]``. In the toy pair, each target word has exactly one link."""
    gold = torch.full(data.tgt_in.shape, -1)
    no_link = torch.zeros(data.src_ids.shape, dtype=torch.bool)
    for i, example in enumerate(data.examples):
        no_link[i, : len(example.source)] = True
        for s, t in example.alignment:
            gold[i, t], no_link[i, s] = s, False
    return gold, no_link


def where_heads_look(attention: CorpusAttention, data: ParallelData) -> Tensor:
    """Share of the rows that write a word whose most attended source word falls in each of
    ``LOOK_BINS``, the first that fits, in that order: ``[L, H, len(LOOK_BINS)]``, rows summing to 1."""
    gold_all, no_link_all = _gold_sources(data)
    counts: Tensor | None = None
    for index, cross in attention:
        choice = cross.argmax(dim=-1)  # [B, L, H, T]: the most attended source word of each row
        gold = gold_all[index, : choice.shape[-1]]  # [B, T]: the source word of target word j
        none = torch.full_like(gold[:, :1], -1)
        just_written = torch.cat([none, gold[:, :-1]], dim=1)  # [B, T]: the source word of word j - 1
        next_to_write = torch.cat([gold[:, 1:], none], dim=1)  # [B, T]: the source word of word j + 1
        last = (data.src_lengths[index] - 1)[:, None].expand_as(gold)  # [B, T]
        no_link = no_link_all[index].gather(1, choice.flatten(1)).view_as(choice)  # [B, L, H, T]
        fits = [choice == where[:, None, None, :] for where in (gold, just_written, next_to_write)]
        fits += [no_link, choice == last[:, None, None, :], torch.ones_like(no_link)]
        first = torch.stack(fits, dim=-1).float().argmax(dim=-1)  # [B, L, H, T]: the first bin that fits
        is_word = (gold >= 0)[:, None, None, :, None]  # [B, 1, 1, T, 1]: rows that write a word
        batch_counts = (F.one_hot(first, len(LOOK_BINS)) * is_word).sum(dim=(0, 3))  # [L, H, bins]
        counts = batch_counts if counts is None else counts + batch_counts
    if counts is None:
        raise ValueError("attention is empty: pass corpus_cross_attention(model, data) of a non-empty split")
    return counts / counts.sum(dim=-1, keepdim=True)


@torch.no_grad()
def teacher_forced_exact_match(model: Seq2SeqTransformer, data: ParallelData, *, batch_size: int = 500) -> float:
    """Share of sentences whose every next-word prediction, given the gold words before it, is right
    (``<eos>`` included): greedy decoding's exact match, in one teacher-forced pass per batch."""
    was_training = model.training
    model.eval()
    right = 0
    for index in _length_sorted_groups(data, batch_size):
        batch = data.batch(index).to(next(model.parameters()).device)
        predicted = model(batch.src_ids, batch.tgt_in).argmax(dim=-1)  # [B, T]
        real = batch.tgt_out != model.config.pad_id  # [B, T]
        right += int(((predicted == batch.tgt_out) | ~real).all(dim=-1).sum())
    model.train(was_training)
    return right / len(data)


class Silencing(NamedTuple):
    """Teacher-forced exact match (``teacher_forced_exact_match``) with heads silenced."""

    nothing: float  # nothing silenced
    per_head: Tensor  # [L, H]: one head silenced
    per_layer: Tensor  # [L]: every cross-attention head of one layer silenced


def silencing_scores(model: Seq2SeqTransformer, data: ParallelData) -> Silencing:
    """Silence (``ablated_heads``) each decoder cross-attention head in turn, then each whole layer,
    and score ``data`` each time. The model is left as it was."""
    n_layers, n_heads = len(model.decoder.layers), model.config.n_heads
    per_head = torch.zeros(n_layers, n_heads)
    per_layer = torch.zeros(n_layers)
    for layer in range(n_layers):
        for head in range(n_heads):
            with ablated_heads(model, [(layer, head)]):
                per_head[layer, head] = teacher_forced_exact_match(model, data)
        with ablated_heads(model, [(layer, head) for head in range(n_heads)]):
            per_layer[layer] = teacher_forced_exact_match(model, data)
    return Silencing(teacher_forced_exact_match(model, data), per_head, per_layer)
