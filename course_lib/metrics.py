"""How good is a translator? Exact match, token accuracy and BLEU of its translations, the
alignment error rate (AER) of its cross-attention against the gold word alignments (lesson 07), and two tools
to tell its heads apart: the entropy of attention rows and silencing heads (lesson 08; ``head_analysis``
applies them to every head on a whole split).

Alignments are sets of ``(source index, target index)`` links; indices count words only (no
``<bos>``/``<eos>``, no padding).
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import Tensor

from ._checks import require_bool_mask, require_broadcastable, require_tensor, shape_str
from .data import Batch, ParallelData, Vocabulary
from .generate import greedy_decode
from .model import Seq2SeqTransformer

Sentence = Sequence[str]
Links = Iterable[tuple[int, int]]


def _check_pairs(predictions: Sequence[Sentence], references: Sequence[Sentence]) -> None:
    if len(predictions) != len(references):
        raise ValueError(f"got {len(predictions)} predictions for {len(references)} references; need one each")
    if len(references) == 0:
        raise ValueError("need at least one sentence to score; got none")
    if any(isinstance(s, str) for s in (*predictions[:1], *references[:1])):
        raise ValueError("pass sentences as lists of words (e.g. 'a b'.split()), not strings")


def exact_match(predictions: Sequence[Sentence], references: Sequence[Sentence]) -> float:
    """Fraction of sentences translated exactly right (every word, nothing missing or extra)."""
    _check_pairs(predictions, references)
    return sum(list(p) == list(r) for p, r in zip(predictions, references)) / len(references)


def token_accuracy(predictions: Sequence[Sentence], references: Sequence[Sentence]) -> float:
    """Fraction of reference positions, the end of the sentence included, that the prediction gets right.

    Position ``i`` of the reference (``+ [<eos>]``) is compared with position ``i`` of the prediction
    (``+ [<eos>]``): a missing word, or an extra one where the sentence should end, counts as wrong.
    """
    _check_pairs(predictions, references)
    correct = total = 0
    for prediction, reference in zip(predictions, references):
        p, r = [*prediction, None], [*reference, None]
        correct += sum(a == b for a, b in zip(p, r))
        total += len(r)
    return correct / total


def bleu(predictions: Sequence[Sentence], references: Sequence[Sentence]) -> float:
    """Corpus BLEU (0-100) from ``sacrebleu``, on the words as they are (``tokenize="none"``)."""
    import sacrebleu

    _check_pairs(predictions, references)
    hypotheses = [" ".join(p) for p in predictions]
    return float(sacrebleu.corpus_bleu(hypotheses, [[" ".join(r) for r in references]], tokenize="none").score)


def alignment_error_rate(predicted: Links, gold: Links) -> float:
    """``AER = 1 - 2 |A ∩ G| / (|A| + |G|)``, every gold link treated as sure. 0 = perfect, 1 = disjoint.

    Args:
        predicted: links ``A`` as ``(source index, target index)`` pairs.
        gold: links ``G``. Pass one sentence's links, or a whole corpus's tagged with the sentence
            number (``(sentence, source, target)``) for a corpus-level score.
    """
    predicted, gold = set(map(tuple, predicted)), set(map(tuple, gold))
    if not predicted and not gold:
        raise ValueError("both alignments are empty: the AER is undefined")
    return 1.0 - 2.0 * len(predicted & gold) / (len(predicted) + len(gold))


def argmax_links(cross_weights: Tensor) -> list[tuple[int, int]]:
    """Predicted links of one sentence: each target word to the source word it attends to most.

    ``cross_weights [T, S]``: row ``j`` is the query that *predicts* target word ``j`` (the decoder reads
    ``<bos>`` + target, so that is the row whose input is the word before it). Pass only the rows of
    target words (not the one that predicts ``<eos>``) and the columns of real source words.
    """
    if not isinstance(cross_weights, Tensor) or cross_weights.ndim != 2:
        raise ValueError(f"cross_weights must be a 2-D tensor [T, S]; got {getattr(cross_weights, 'shape', None)}")
    return [(int(s), j) for j, s in enumerate(cross_weights.argmax(dim=-1).tolist())]


@dataclass
class AlignmentScores:
    """Corpus-level AER of cross-attention against the gold alignments.

    Attributes:
        per_head: ``[layers, heads]`` AER of each head's argmax alignment.
        per_layer: ``[layers]`` AER of the argmax of each layer's attention averaged over its heads.
    """

    per_head: Tensor
    per_layer: Tensor

    def best_head(self) -> tuple[int, int]:
        """``(layer, head)`` with the lowest AER."""
        layer, head = divmod(int(self.per_head.argmin()), self.per_head.shape[1])
        return layer, head


@torch.no_grad()
def alignment_scores(model: Seq2SeqTransformer, data: ParallelData, *, batch_size: int = 256) -> AlignmentScores:
    """AER of every decoder layer's and head's cross-attention on ``data`` (whose examples carry
    ``.alignment``), teacher-forced with the gold targets (``model.forward_with_attention``).

    Target side: the query row that predicts target word ``j`` is aligned to its argmax source word;
    the row that predicts ``<eos>`` and padded rows are left out. Source side: there is no
    ``<bos>``/``<eos>``, and padded columns get zero attention (masked), so they are never chosen.
    In the toy language every target word has exactly one gold link, so the AER equals the fraction
    of target words whose argmax misses it.
    """
    was_training = model.training
    model.eval()
    hits: Tensor | None = None  # [L, H + 1]: per head, then the head mean
    n_predicted = n_gold = 0
    for index in torch.arange(len(data)).split(batch_size):
        batch = data.batch(index).to(next(model.parameters()).device)
        _, maps = model.forward_with_attention(batch.src_ids, batch.tgt_in)
        cross = torch.stack(maps.decoder_cross, dim=1)  # [B, L, H, T, S]
        cross = torch.cat([cross, cross.mean(dim=2, keepdim=True)], dim=2)  # [B, L, H + 1, T, S]
        choice = cross.argmax(dim=-1).cpu()  # [B, L, H + 1, T]: predicted source index per query row
        gold = torch.zeros(choice.shape[0], choice.shape[-1], cross.shape[-1], dtype=torch.bool)  # [B, T, S]
        word_rows = torch.zeros(choice.shape[0], choice.shape[-1], dtype=torch.bool)  # [B, T]
        for row, i in enumerate(index.tolist()):
            word_rows[row, : len(data.examples[i].target)] = True  # not the <eos> row, not padding
            for s, t in data.examples[i].alignment:
                gold[row, t, s] = True
        gold = gold[:, None, None].expand(*choice.shape, -1)  # [B, L, H + 1, T, S]
        hit = gold.gather(-1, choice[..., None])[..., 0] & word_rows[:, None, None, :]  # [B, L, H + 1, T]
        hits = hit.sum(dim=(0, 3)) if hits is None else hits + hit.sum(dim=(0, 3))
        n_predicted += int(word_rows.sum())  # one predicted link per target word
        n_gold += int(gold[:, 0, 0].sum())
    model.train(was_training)
    assert hits is not None
    aer = 1.0 - 2.0 * hits.double() / (n_predicted + n_gold)  # [L, H + 1]
    return AlignmentScores(per_head=aer[:, :-1], per_layer=aer[:, -1])


@torch.no_grad()
def translate_ids(model: Seq2SeqTransformer, batch: Batch | Tensor, tgt_vocab: Vocabulary, *,
                  max_new_tokens: int | None = None) -> list[list[str]]:
    """Greedy translations (K/V cache) of a batch: ``src_ids [B, S]`` -> one list of words per sentence.
    ``model``: a ``Seq2SeqTransformer``, any translator of ``course_lib.conditioning``, or a
    ``vision.Captioner`` (then ``src_ids`` are images ``[B, C, H, W]``), or a model of ``course_lib.fusion`` (then
    they are ``questions.Sources``).

    At most ``max_new_tokens`` words each (default ``2 S + 8``: the toy pair's targets are at most
    about 1.5 times their source).
    """
    src_ids = batch.src_ids if isinstance(batch, Batch) else batch
    if not isinstance(src_ids, Tensor) and hasattr(src_ids, "to") and hasattr(model, "greedy_decode"):
        # several sources (lesson 11's questions.Sources): the model decodes itself, to its own length limit
        tokens = model.greedy_decode(src_ids.to(next(model.parameters()).device), bos_id=tgt_vocab.bos_id,
                                     eos_id=tgt_vocab.eos_id, max_new_tokens=max_new_tokens)
        return [tgt_vocab.decode(row) for row in tokens.cpu()]
    images = isinstance(src_ids, Tensor) and src_ids.ndim == 4 and not isinstance(model, Seq2SeqTransformer)
    if not isinstance(src_ids, Tensor) or (src_ids.ndim != 2 and not images):
        raise ValueError(f"src_ids must be [B, S]; got {shape_str(getattr(src_ids, 'shape', ()))}")
    if max_new_tokens is None and not images:  # a captioner's default is its own (up to its max_len)
        max_new_tokens = min(2 * src_ids.shape[1] + 8, model.config.max_len - 1)
    src_ids = src_ids.to(next(model.parameters()).device)
    ids = dict(bos_id=tgt_vocab.bos_id, eos_id=tgt_vocab.eos_id, max_new_tokens=max_new_tokens)
    if isinstance(model, Seq2SeqTransformer):
        tokens = greedy_decode(model, src_ids, cache="full", **ids).tokens
    else:  # lesson 09's other translators (course_lib.conditioning) and lesson 10's captioner decode themselves
        tokens = model.greedy_decode(src_ids, **ids)
    return [tgt_vocab.decode(row) for row in tokens.cpu()]


@dataclass
class Scores:
    """Translation quality on one split: fractions in 0..1, BLEU in 0..100."""

    exact_match: float
    token_accuracy: float
    bleu: float
    n_sentences: int

    def __str__(self) -> str:
        return (f"exact match {self.exact_match:.1%}, token accuracy {self.token_accuracy:.1%}, "
                f"BLEU {self.bleu:.1f} ({self.n_sentences} sentences)")


def translate_data(model: Seq2SeqTransformer, data: ParallelData, *, batch_size: int = 500,
                   max_new_tokens: int | None = None) -> list[list[str]]:
    """Greedy translations of every example of ``data``, in its order (see ``translate_ids``)."""
    was_training = model.training
    model.eval()
    predictions: list[list[str]] = [[] for _ in range(len(data))]
    for batch_index in _length_sorted_groups(data, batch_size):
        for i, words in zip(batch_index.tolist(), translate_ids(model, data.batch(batch_index), data.tgt_vocab,
                                                                 max_new_tokens=max_new_tokens)):
            predictions[i] = words
    model.train(was_training)
    return predictions


def _length_sorted_groups(data: ParallelData, batch_size: int) -> list[Tensor]:
    order = torch.sort(data.src_lengths, stable=True).indices  # similar lengths together: little padding
    return list(order.split(batch_size))


def evaluate(model: Seq2SeqTransformer, data: ParallelData, *, batch_size: int = 500,
             with_bleu: bool = True) -> Scores:
    """Greedy-decode ``data``'s sources and score them against its targets."""
    predictions = translate_data(model, data, batch_size=batch_size)
    return score(predictions, [list(e.target) for e in data.examples], with_bleu=with_bleu)


def score(predictions: Sequence[Sentence], references: Sequence[Sentence], *, with_bleu: bool = True) -> Scores:
    """Exact match, token accuracy and (optionally) BLEU of translations already made."""
    return Scores(exact_match(predictions, references), token_accuracy(predictions, references),
                  bleu(predictions, references) if with_bleu else float("nan"), len(references))


def first_error(prediction: Sentence, reference: Sentence) -> int | None:
    """Index of the first reference word the prediction gets wrong, or None when it is exactly right.

    A prediction that stops early is wrong at its end; one that goes on past the reference is wrong
    at ``len(reference)`` (where ``<eos>`` should have been).
    """
    if isinstance(prediction, str) or isinstance(reference, str):
        raise ValueError("pass sentences as lists of words (e.g. 'a b'.split()), not strings")
    prediction, reference = list(prediction), list(reference)
    if prediction == reference:
        return None
    return next((i for i, (p, r) in enumerate(zip(prediction, reference)) if p != r),
                min(len(prediction), len(reference)))


def first_error_segments(predictions: Sequence[Sentence], references: Sequence[Sentence],
                         markers: Iterable[str]) -> dict[int, int]:
    """Where translations first go wrong: ``{k: number of wrong sentences}``, ``k`` counting the ``markers``
    (words that start a segment, e.g. the conjunctions that start clauses 2, 3, ...) in the reference up to
    and including the first wrong position. With conjunctions, ``k = 1`` means the first error is in the
    second clause, ``k = 2`` in the third (its conjunction missing or wrong included)."""
    _check_pairs(predictions, references)
    markers = set(markers)
    counts: dict[int, int] = {}
    for prediction, reference in zip(predictions, references):
        error = first_error(prediction, reference)
        if error is not None:
            k = sum(word in markers for word in list(reference)[: error + 1])
            counts[k] = counts.get(k, 0) + 1
    return dict(sorted(counts.items()))


# --- lesson 08: how sharp is a head, and does it matter? ---------------------------------------------------
def attention_entropy(attn_weights: Tensor, key_mask: Tensor | None = None, *, normalise: bool = False) -> Tensor:
    """Entropy of each attention row, in nats: ``attn_weights [..., T_q, S]`` -> ``[..., T_q]``.

    ``H = -sum_s p_s ln p_s`` with ``0 ln 0 = 0``: 0 for a row on one key, ``ln n`` for a row spread
    evenly over ``n`` keys.

    Args:
        key_mask: bool, broadcastable to ``attn_weights``, True at real keys (e.g.
            ``model.source_mask(src_ids)`` ``[B, 1, 1, S]``). Padded keys have weight 0 and add nothing
            to ``H``; the mask says how many keys *count* when normalising.
        normalise: divide by ``ln n`` (``n`` real keys): 0 = on one key, 1 = even over all of them,
            comparable between sentences of different lengths. Rows with fewer than 2 keys get 0.
    """
    require_tensor("attn_weights", attn_weights)
    if attn_weights.ndim < 2 or not attn_weights.dtype.is_floating_point:
        raise ValueError(f"attn_weights must be a float tensor [..., T_q, S]; got {attn_weights.dtype} "
                         f"{shape_str(attn_weights.shape)}")
    entropy = -torch.special.xlogy(attn_weights, attn_weights).sum(dim=-1)  # [..., T_q]; xlogy(0, 0) = 0
    if not normalise:
        return entropy
    if key_mask is None:
        n_keys = torch.full_like(entropy, attn_weights.shape[-1])
    else:
        require_tensor("key_mask", key_mask)
        require_bool_mask("key_mask", key_mask)
        require_broadcastable("key_mask", key_mask, attn_weights.shape, "(the weights' shape [..., T_q, S])")
        n_keys = key_mask.expand(attn_weights.shape).sum(dim=-1).to(entropy.dtype)  # [..., T_q]
    return torch.where(n_keys > 1, entropy / n_keys.clamp(min=2).log(), torch.zeros_like(entropy))


@contextmanager
def ablated_heads(model: Seq2SeqTransformer, heads: Iterable[tuple[int, int]]) -> Iterator[Seq2SeqTransformer]:
    """Silence decoder cross-attention heads inside a ``with`` block.

    Each ``(layer, head)`` has its columns ``head * d_head : (head + 1) * d_head`` of that layer's
    ``cross_attn.out_proj.weight`` set to zero: the output projection then ignores the head's context,
    exactly as if the head wrote zeros. The weights are restored on leaving the block.

    Raises:
        ValueError: for a layer or head the model does not have.
    """
    heads = sorted(set(heads))
    n_layers, n_heads = len(model.decoder.layers), model.config.n_heads
    if any(not (0 <= layer < n_layers and 0 <= head < n_heads) for layer, head in heads):
        raise ValueError(f"heads must be (layer, head) pairs with layer < {n_layers} and head < {n_heads}; "
                         f"got {heads}")
    d_head = model.config.d_model // n_heads
    saved = []
    try:
        with torch.no_grad():
            for layer, head in heads:
                weight = model.decoder.layers[layer].cross_attn.out_proj.weight  # [d_model, d_model]: (out, in)
                columns = slice(head * d_head, (head + 1) * d_head)
                saved.append((weight, columns, weight[:, columns].clone()))
                weight[:, columns] = 0.0
        yield model
    finally:
        with torch.no_grad():
            for weight, columns, values in reversed(saved):
                weight[:, columns] = values
