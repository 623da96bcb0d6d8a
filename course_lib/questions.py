"""Lesson 11's task: questions about lesson 10's scenes, answered from two sources at once (the image and the text).

Every scene gets one question, drawn from the kinds it can answer, with a gold answer computed from the scene:

======== ====================================== ==============================
kind     question                               answer
======== ====================================== ==============================
colour   what colour is the ring ?              red
shape    what shape is the blue one ?           cross
where    where is the white square ?            top left
count    how many shapes ?                      two
======== ====================================== ==============================

A question names its object only when the name is unique in the scene (one ring, one blue object). No answer
can be read from the image without the question, nor from the question without the image (lesson 11 measures
both).
"""
from __future__ import annotations

import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

from .data import PAD_ID, Batch, Vocabulary, collate, epoch_batches
from .scenes import COLOURS, SHAPES, Scene, SceneSet, make_splits

KINDS = ("colour", "shape", "where", "count")
ROW_WORDS, COLUMN_WORDS = ("top", "middle", "bottom"), ("left", "centre", "right")
COUNT_WORDS = ("one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
QUESTION_WORDS = tuple(sorted({"what", "colour", "is", "the", "shape", "one", "where", "how", "many", "shapes", "?",
                               *COLOURS, *SHAPES}))
ANSWER_WORDS = tuple(sorted({*COLOURS, *SHAPES, *ROW_WORDS, *COLUMN_WORDS, *COUNT_WORDS}))
DEFAULT_SIZES = {"train": 20_000, "valid": 500, "test": 1_000}


class Question(NamedTuple):
    """One question about a scene: its ``kind``, its ``words`` and the gold ``answer`` words."""

    kind: str
    words: tuple[str, ...]
    answer: tuple[str, ...]


def _unique(values: Sequence[str]) -> list[str]:
    return [v for v in dict.fromkeys(values) if values.count(v) == 1]


def questions_for(scene: Scene) -> list[Question]:
    """Every question ``scene`` can answer, in a fixed order (kind by kind)."""
    if not isinstance(scene, Scene):
        raise ValueError(f"questions_for needs a scenes.Scene; got a {type(scene).__name__}")
    objects = scene.objects
    shapes, colours = [o.shape for o in objects], [o.colour for o in objects]
    pairs = [(o.colour, o.shape) for o in objects]
    out = [Question("colour", ("what", "colour", "is", "the", s, "?"), (colours[shapes.index(s)],))
           for s in _unique(shapes)]
    out += [Question("shape", ("what", "shape", "is", "the", c, "one", "?"), (shapes[colours.index(c)],))
            for c in _unique(colours)]
    unique_pairs = [i for i, p in enumerate(pairs) if pairs.count(p) == 1]
    out += [Question("where", ("where", "is", "the", *pairs[i], "?"),
                     (ROW_WORDS[objects[i].row], COLUMN_WORDS[objects[i].col])) for i in unique_pairs]
    out.append(Question("count", ("how", "many", "shapes", "?"), (COUNT_WORDS[len(objects) - 1],)))
    return out


def ask(scenes: Sequence[Scene], rng: np.random.Generator) -> list[Question]:
    """One question per scene: a kind drawn uniformly among those the scene can answer, then a question of that
    kind drawn uniformly."""
    chosen = []
    for scene in scenes:
        by_kind: dict[str, list[Question]] = {}
        for q in questions_for(scene):
            by_kind.setdefault(q.kind, []).append(q)
        options = list(by_kind.values())[rng.integers(len(by_kind))]
        chosen.append(options[rng.integers(len(options))])
    return chosen


def question_vocabulary() -> Vocabulary:
    """Every word a question can use (``QUESTION_WORDS``) after ``<pad> <bos> <eos> <unk>``."""
    return Vocabulary(QUESTION_WORDS)


def answer_vocabulary() -> Vocabulary:
    """Every word an answer can use (``ANSWER_WORDS``) after ``<pad> <bos> <eos> <unk>``."""
    return Vocabulary(ANSWER_WORDS)


class Sources(NamedTuple):
    """A batch's two sources: the ``image`` as patch features ``[B, N, d_image]`` (from a frozen image encoder) and
    the ``question_ids [B, Q]`` (right-padded)."""

    image: Tensor
    question_ids: Tensor

    def to(self, device: torch.device | str) -> Sources:
        return Sources(self.image.to(device), self.question_ids.to(device))

    @property
    def shape(self) -> tuple[int, ...]:  # the batch size first, as a tensor's (metrics and messages read it)
        return (self.image.shape[0], self.question_ids.shape[1])


@dataclass
class QABatch(Batch):
    """A ``Batch`` whose ``src_ids`` are ``Sources`` (image and question); ``tgt_in``/``tgt_out`` the answer."""

    patches: int = 36

    def to(self, device: torch.device | str) -> QABatch:
        return QABatch(self.src_ids.to(device), self.tgt_in.to(device), self.tgt_out.to(device), self.patches)

    def __len__(self) -> int:
        return self.tgt_in.shape[0]

    def n_source_tokens(self, pad_id: int = PAD_ID) -> int:
        """Patches plus real question words."""
        return len(self) * self.patches + int((self.src_ids.question_ids != pad_id).sum())


class QAExample(NamedTuple):
    """One example: the ``question`` (its words and kind) and the ``target`` answer words."""

    question: tuple[str, ...]
    kind: str
    target: tuple[str, ...]


class QAData:
    """Images, questions and answers, encoded once: ``images [N, 3, 48, 48]``, ``question_ids [N, Q_max]``,
    ``tgt_in``/``tgt_out [N, T_max]``. Offers what ``training.train`` and ``metrics.translate_data`` use."""

    def __init__(self, scene_set: SceneSet, questions: Sequence[Question], question_vocab: Vocabulary,
                 answer_vocab: Vocabulary, *, patches: int = 36) -> None:
        if len(scene_set) == 0 or len(questions) != len(scene_set):
            raise ValueError(f"QAData needs one question per scene and at least one scene; got {len(scene_set)} "
                             f"scenes and {len(questions)} questions")
        self.scenes, self.src_vocab, self.tgt_vocab, self.patches = scene_set.scenes, question_vocab, answer_vocab, \
            patches
        self.images = torch.from_numpy(scene_set.images)  # [N, 3, 48, 48]
        self.features: Tensor | None = None  # [N, P, d_image] once ``encode_images`` has run
        self.examples = [QAExample(q.words, q.kind, q.answer) for q in questions]
        full = collate([(question_vocab.encode(q.words), answer_vocab.encode(q.answer)) for q in questions])
        self.question_ids, self.tgt_in, self.tgt_out = full.src_ids, full.tgt_in, full.tgt_out
        self.src_lengths = torch.tensor([len(q.words) for q in questions])  # [N]
        self.tgt_lengths = torch.tensor([len(q.answer) + 1 for q in questions])  # [N]
        self.kinds = [q.kind for q in questions]

    def __len__(self) -> int:
        return len(self.examples)

    def batch(self, indices: Sequence[int] | Tensor) -> QABatch:
        """The examples at ``indices``, questions and answers trimmed to the longest of them."""
        index = torch.as_tensor(indices, dtype=torch.long)
        if index.ndim != 1 or index.numel() == 0:
            raise ValueError(f"indices must be a non-empty 1-D list of example numbers; got {list(index.shape)}")
        if self.features is None:
            raise ValueError("QAData.batch needs the images' patch features: call encode_images(encoder) first")
        q, t = int(self.src_lengths[index].max()), int(self.tgt_lengths[index].max())
        return QABatch(Sources(self.features[index], self.question_ids[index, :q]), self.tgt_in[index, :t],
                       self.tgt_out[index, :t], self.patches)

    def batches(self, batch_size: int, *, shuffle: bool = True, generator: torch.Generator | None = None,
                repeats: Tensor | None = None) -> Iterator[QABatch]:
        """One epoch in batches of at most ``batch_size`` (shuffled with ``generator``)."""
        return epoch_batches(self, batch_size, shuffle=shuffle, generator=generator, repeats=repeats)

    @torch.no_grad()
    def encode_images(self, encoder: torch.nn.Module, *, batch_size: int = 500) -> QAData:
        """Run every image once through ``encoder`` (images ``[B, 3, H, W]`` -> ``(features [B, P, d], ...)``,
        e.g. a trained captioner's ``PatchEncoder``), keep the features ``[N, P, d]`` and return ``self``."""
        was_training = encoder.training
        encoder.eval()
        device = next(encoder.parameters()).device
        parts = [encoder(chunk.to(device))[0].cpu() for chunk in self.images.split(batch_size)]
        encoder.train(was_training)
        self.features = torch.cat(parts)  # [N, P, d_image]
        self.patches = self.features.shape[1]
        return self

    def subset(self, indices: Sequence[int] | Tensor) -> QAData:
        """The examples at ``indices`` as a new ``QAData`` (same vocabularies)."""
        index = torch.as_tensor(indices, dtype=torch.long).tolist()
        scene_set = SceneSet([self.scenes[i] for i in index], self.images[index].numpy())
        questions = [Question(self.examples[i].kind, self.examples[i].question, self.examples[i].target)
                     for i in index]
        subset = QAData(scene_set, questions, self.src_vocab, self.tgt_vocab, patches=self.patches)
        subset.features = None if self.features is None else self.features[index]
        return subset


def qa_data(seed: int = 0, sizes: dict[str, int] | None = None) -> dict[str, QAData]:
    """Lesson 10's scene splits (``scenes.make_splits``, without the generalisation split unless asked) with one
    question each, drawn from a stream per split: train 20 000, valid 500, test 1 000 by default."""
    sizes = {**DEFAULT_SIZES, **(sizes or {})}
    splits = make_splits(seed, {"generalisation": 0, **sizes})  # scenes' own defaults would add 500 of them
    q_vocab, a_vocab = question_vocabulary(), answer_vocabulary()
    out = {}
    for name, split in splits.items():
        if name == "generalisation" and len(split) == 0:  # not asked for
            continue
        rng = np.random.default_rng([seed, zlib.crc32(f"questions-{name}".encode())])
        out[name] = QAData(split, ask(split.scenes, rng), q_vocab, a_vocab)
    return out


def exact_match_by_kind(predictions: Sequence[Sequence[str]], data: QAData) -> dict[str, float]:
    """Share of exactly right answers per question kind (and "all")."""
    if len(predictions) != len(data):
        raise ValueError(f"need one prediction per example: {len(data)}; got {len(predictions)}")
    right = np.array([list(p) == list(e.target) for p, e in zip(predictions, data.examples)])
    kinds = np.array(data.kinds)
    out = {kind: float(right[kinds == kind].mean()) for kind in KINDS if (kinds == kind).any()}
    out["all"] = float(right.mean())
    return out


__all__ = ["ANSWER_WORDS", "COUNT_WORDS", "DEFAULT_SIZES", "KINDS", "QABatch", "QAData", "QAExample",
           "QUESTION_WORDS", "Question", "Sources", "answer_vocabulary", "ask", "exact_match_by_kind", "qa_data",
           "question_vocabulary", "questions_for"]
