"""From sentence pairs to padded tensors: vocabularies, the padding collate and fast batching.

A batch holds three id tensors, all right-padded with ``pad_id`` (the model derives its masks from it):

- ``src_ids [B, S]``: the source words;
- ``tgt_in [B, T]``: ``<bos>`` + the target words (what the decoder reads);
- ``tgt_out [B, T]``: the target words + ``<eos>`` (what it must predict at each position).

``ParallelData`` encodes every example once into padded tensors and cuts batches of similar length
from them, so an epoch costs a few tensor slices rather than thousands of Python lists.
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

PAD, BOS, EOS, UNK = "<pad>", "<bos>", "<eos>", "<unk>"
SPECIALS = (PAD, BOS, EOS, UNK)  # ids 0, 1, 2, 3 in every vocabulary; PAD_ID equals TransformerConfig.pad_id
PAD_ID, BOS_ID, EOS_ID, UNK_ID = range(4)


class Vocabulary:
    """Words <-> ids. Ids 0-3 are ``<pad>``, ``<bos>``, ``<eos>``, ``<unk>``; words follow in sorted order."""

    def __init__(self, words: Iterable[str]) -> None:
        words = sorted(set(words) - set(SPECIALS))
        if any(not isinstance(w, str) or not w or w.split() != [w] for w in words):
            raise ValueError("vocabulary words must be non-empty strings without whitespace")
        self.tokens: tuple[str, ...] = SPECIALS + tuple(words)
        self.index = {token: i for i, token in enumerate(self.tokens)}
        self.pad_id, self.bos_id, self.eos_id, self.unk_id = PAD_ID, BOS_ID, EOS_ID, UNK_ID

    @classmethod
    def build(cls, sentences: Iterable[Sequence[str]]) -> Vocabulary:
        """Every word of ``sentences`` (each a sequence of words), plus the four special tokens."""
        return cls(word for sentence in sentences for word in sentence)

    def __len__(self) -> int:
        return len(self.tokens)

    def __contains__(self, word: object) -> bool:
        return word in self.index

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Vocabulary) and self.tokens == other.tokens

    def __repr__(self) -> str:
        return f"Vocabulary({len(self)} tokens: {', '.join(self.tokens[:8])}, ...)"

    def encode(self, words: str | Sequence[str], *, add_bos: bool = False, add_eos: bool = False,
               map_unknown: bool = False) -> list[int]:
        """Ids of ``words`` (a list of words, or one string split on whitespace).

        Raises:
            ValueError: naming every word not in the vocabulary, unless ``map_unknown`` maps them to ``<unk>``.
        """
        if isinstance(words, str):
            words = words.split()
        unknown = [w for w in words if w not in self.index]
        if unknown and not map_unknown:
            known = ", ".join(self.tokens[4:12])
            raise ValueError(f"unknown word(s) {list(dict.fromkeys(unknown))!r}: not in this vocabulary of {len(self)} "
                             f"tokens ({known}, ...); pass map_unknown=True to map them to {UNK}")
        ids = [self.index.get(w, self.unk_id) for w in words]
        return [self.bos_id] * add_bos + ids + [self.eos_id] * add_eos

    def decode(self, ids: Iterable[int] | Tensor, *, keep_special: bool = False) -> list[str]:
        """Words of ``ids``. Unless ``keep_special``: stop at the first ``<eos>``, drop ``<pad>`` and ``<bos>``."""
        if isinstance(ids, Tensor):
            if ids.ndim != 1:
                raise ValueError(f"decode takes one sentence, a 1-D tensor; got {ids.ndim} dims")
            ids = ids.tolist()
        words = []
        for i in ids:
            if not 0 <= int(i) < len(self):
                raise ValueError(f"id {int(i)} is outside this vocabulary (0..{len(self) - 1})")
            if not keep_special and i == self.eos_id:
                break
            if keep_special or i not in (self.pad_id, self.bos_id):
                words.append(self.tokens[i])
        return words


def build_vocabularies(examples: Sequence) -> tuple[Vocabulary, Vocabulary]:
    """Source and target vocabularies of ``examples`` (anything with ``.source`` and ``.target``)."""
    return Vocabulary.build(e.source for e in examples), Vocabulary.build(e.target for e in examples)


@dataclass
class Batch:
    """A padded batch: ``src_ids [B, S]``, ``tgt_in [B, T]`` (``<bos>`` + target), ``tgt_out [B, T]``
    (target + ``<eos>``), all padded on the right with the pad id."""

    src_ids: Tensor
    tgt_in: Tensor
    tgt_out: Tensor

    def to(self, device: torch.device | str) -> Batch:
        return Batch(self.src_ids.to(device), self.tgt_in.to(device), self.tgt_out.to(device))

    def __len__(self) -> int:
        return self.src_ids.shape[0]

    def n_target_tokens(self, pad_id: int = PAD_ID) -> int:
        """Number of positions that count in the loss (target words and ``<eos>``)."""
        return int((self.tgt_out != pad_id).sum())

    def n_source_tokens(self, pad_id: int = PAD_ID) -> int:
        """Number of real (not padding) source tokens."""
        return int((self.src_ids != pad_id).sum())


def collate(pairs: Sequence[tuple[Sequence[int], Sequence[int]]], *, pad_id: int = PAD_ID,
            bos_id: int = BOS_ID, eos_id: int = EOS_ID) -> Batch:
    """Pad a list of ``(source ids, target ids)`` (no special tokens) into a ``Batch``.

    ``S`` is the longest source, ``T`` the longest target + 1 (for ``<bos>``/``<eos>``).
    """
    if len(pairs) == 0:
        raise ValueError("collate needs at least one (source ids, target ids) pair; got none")
    if any(len(src) == 0 for src, _ in pairs):
        raise ValueError("every source needs at least one token; got an empty source")
    s, t = max(len(src) for src, _ in pairs), max(len(tgt) for _, tgt in pairs) + 1
    src_rows = [[*src] + [pad_id] * (s - len(src)) for src, _ in pairs]
    in_rows = [[bos_id, *tgt] + [pad_id] * (t - 1 - len(tgt)) for _, tgt in pairs]
    out_rows = [[*tgt, eos_id] + [pad_id] * (t - 1 - len(tgt)) for _, tgt in pairs]
    as_ids = lambda rows: torch.from_numpy(np.array(rows, dtype=np.int64))  # much faster than torch.tensor(rows)
    src_ids, tgt_in, tgt_out = as_ids(src_rows), as_ids(in_rows), as_ids(out_rows)  # [B, S], [B, T], [B, T]
    return Batch(src_ids, tgt_in, tgt_out)


class ParallelData:
    """Sentence pairs encoded once into padded tensors, ready to be cut into batches.

    Args:
        examples: objects with ``.source`` and ``.target`` word sequences (``toy_language.Example``).
        src_vocab, tgt_vocab: vocabularies; a word missing from them raises ValueError (or maps to
            ``<unk>`` with ``map_unknown``).

    Attributes: ``src_ids [N, S_max]``, ``tgt_in [N, T_max]``, ``tgt_out [N, T_max]``,
    ``src_lengths [N]`` and ``tgt_lengths [N]`` (target words + 1).
    """

    def __init__(self, examples: Sequence, src_vocab: Vocabulary, tgt_vocab: Vocabulary, *,
                 map_unknown: bool = False) -> None:
        if len(examples) == 0:
            raise ValueError("ParallelData needs at least one example; got none")
        self.examples, self.src_vocab, self.tgt_vocab = list(examples), src_vocab, tgt_vocab
        pairs = [(src_vocab.encode(e.source, map_unknown=map_unknown),
                  tgt_vocab.encode(e.target, map_unknown=map_unknown)) for e in self.examples]
        full = collate(pairs, pad_id=PAD_ID, bos_id=tgt_vocab.bos_id, eos_id=tgt_vocab.eos_id)
        self.src_ids, self.tgt_in, self.tgt_out = full.src_ids, full.tgt_in, full.tgt_out
        self.src_lengths = torch.tensor([len(s) for s, _ in pairs])  # [N]
        self.tgt_lengths = torch.tensor([len(t) + 1 for _, t in pairs])  # [N]

    def __len__(self) -> int:
        return self.src_ids.shape[0]

    def batch(self, indices: Sequence[int] | Tensor) -> Batch:
        """The examples at ``indices``, trimmed to their own longest source and target."""
        index = torch.as_tensor(indices, dtype=torch.long)
        if index.ndim != 1 or index.numel() == 0:
            raise ValueError(f"indices must be a non-empty 1-D list of example numbers; got {list(index.shape)}")
        s, t = int(self.src_lengths[index].max()), int(self.tgt_lengths[index].max())
        return Batch(self.src_ids[index, :s], self.tgt_in[index, :t], self.tgt_out[index, :t])

    def batches(self, batch_size: int, *, shuffle: bool = True, bucket: bool = True,
                generator: torch.Generator | None = None, pool_batches: int = 64,
                repeats: Tensor | None = None) -> Iterator[Batch]:
        """One epoch: every example exactly once (or ``repeats[i]`` times), in batches of at most ``batch_size``.

        ``bucket`` sorts pools of ``pool_batches * batch_size`` shuffled examples by length before
        cutting batches, so examples of similar length share a batch (little padding); the batches
        are then shuffled. Without ``shuffle``, examples keep their order (or are sorted by length
        when bucketing: handy for evaluation).
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1; got {batch_size}")
        order = torch.arange(len(self))
        if repeats is not None:
            if repeats.shape != (len(self),) or repeats.dtype.is_floating_point or bool((repeats < 0).any()):
                raise ValueError(f"repeats must hold one count >= 0 per example, shape [{len(self)}]; "
                                 f"got shape {list(repeats.shape)}, dtype {repeats.dtype}")
            order = order.repeat_interleave(repeats)
        if shuffle:
            order = order[torch.randperm(len(order), generator=generator)]
        if bucket:
            # Sort by source length, then target length (a stable sort keeps the random order within ties).
            key = self.src_lengths[order] * 1000 + self.tgt_lengths[order]
            pool = batch_size * pool_batches if shuffle else len(order)
            order = torch.cat([order[i:i + pool][torch.sort(key[i:i + pool], stable=True).indices]
                               for i in range(0, len(order), pool)])
        groups = list(order.split(batch_size))
        if shuffle:
            groups = [groups[i] for i in torch.randperm(len(groups), generator=generator).tolist()]
        for group in groups:
            yield self.batch(group)


def epoch_batches(data, batch_size: int, *, shuffle: bool = True, generator: torch.Generator | None = None,
                  repeats: Tensor | None = None) -> Iterator:
    """One epoch of ``data.batch(indices)`` in groups of at most ``batch_size`` examples, each example ``repeats[i]``
    times (default once), in a random order drawn from ``generator`` when ``shuffle``. For data sets without
    lengths to bucket by (lessons 10-11's images)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1; got {batch_size}")
    order = torch.arange(len(data))
    if repeats is not None:
        order = order.repeat_interleave(repeats)
    if shuffle:
        order = order[torch.randperm(len(order), generator=generator)]
    for group in order.split(batch_size):
        yield data.batch(group)


def length_repeats(src_lengths: Tensor, reference: int, power: float = 2.0) -> Tensor:
    """How often to show each example per epoch, so rare long sentences are seen often enough:
    ``ceil((S / reference) ** power)`` for a source of ``S`` words (once up to ``reference`` words)."""
    if reference < 1 or power < 0:
        raise ValueError(f"need reference >= 1 and power >= 0; got reference={reference}, power={power}")
    return torch.ceil((src_lengths.double() / reference) ** power).clamp(min=1).long()  # [N]
