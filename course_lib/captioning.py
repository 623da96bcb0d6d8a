"""Lesson 10's data and training: scenes (``course_lib.scenes``) as batches for ``training.train``, and a captioner
(``course_lib.vision``) trained with lesson 07's recipe, saved in the cache folder for the lessons that reuse it.

``CaptionData`` offers what ``training.train`` and ``metrics.translate_data`` use of a ``ParallelData``
(``batch``, ``batches``, ``examples`` with their ``target``, ``src_lengths``, ``tgt_vocab``), with images where
a translator's batch has source ids.
"""
from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import NamedTuple

import torch
from torch import Tensor

from .data import BOS_ID, EOS_ID, PAD_ID, Batch, Vocabulary, collate, epoch_batches
from .scenes import CAPTION_WORDS, SceneSet, make_splits
from .training import History, TrainConfig, train
from .vision import Captioner, CaptionerConfig


@dataclass
class ImageBatch(Batch):
    """A ``Batch`` whose sources are images ``src_ids [B, C, H, W]`` (float), each read as ``patches`` tokens."""

    patches: int = 36

    def to(self, device: torch.device | str) -> ImageBatch:
        return ImageBatch(self.src_ids.to(device), self.tgt_in.to(device), self.tgt_out.to(device), self.patches)

    def n_source_tokens(self, pad_id: int = PAD_ID) -> int:
        return self.src_ids.shape[0] * self.patches


class CaptionExample(NamedTuple):
    """One image's caption: ``target`` is its words (what exact match compares with)."""

    target: tuple[str, ...]


def caption_vocabulary() -> Vocabulary:
    """Every word the scene grammar can produce (``scenes.CAPTION_WORDS``), after ``<pad> <bos> <eos> <unk>``."""
    return Vocabulary(CAPTION_WORDS)


class CaptionData:
    """Images and their captions, encoded once: ``images [N, C, H, W]``, ``tgt_in``/``tgt_out [N, T_max]``."""

    def __init__(self, scene_set: SceneSet, vocab: Vocabulary, *, patches: int = 36) -> None:
        if len(scene_set) == 0:
            raise ValueError("CaptionData needs at least one scene; got none")
        self.scenes, self.tgt_vocab, self.patches = scene_set.scenes, vocab, patches
        self.images = torch.from_numpy(scene_set.images)  # [N, 3, 48, 48]
        self.examples = [CaptionExample(scene.caption) for scene in self.scenes]
        full = collate([([0], vocab.encode(e.target)) for e in self.examples], pad_id=PAD_ID, bos_id=BOS_ID,
                       eos_id=EOS_ID)
        self.tgt_in, self.tgt_out = full.tgt_in, full.tgt_out  # [N, T_max]
        self.tgt_lengths = torch.tensor([len(e.target) + 1 for e in self.examples])  # [N]
        self.src_lengths = torch.full((len(self.examples),), patches)  # every image is read as `patches` tokens

    def __len__(self) -> int:
        return len(self.examples)

    def batch(self, indices: Sequence[int] | Tensor) -> ImageBatch:
        """The images at ``indices`` and their captions, trimmed to the longest of them."""
        index = torch.as_tensor(indices, dtype=torch.long)
        if index.ndim != 1 or index.numel() == 0:
            raise ValueError(f"indices must be a non-empty 1-D list of example numbers; got {list(index.shape)}")
        t = int(self.tgt_lengths[index].max())
        return ImageBatch(self.images[index], self.tgt_in[index, :t], self.tgt_out[index, :t], self.patches)

    def batches(self, batch_size: int, *, shuffle: bool = True, generator: torch.Generator | None = None,
                repeats: Tensor | None = None) -> Iterator[ImageBatch]:
        """One epoch in batches of at most ``batch_size`` (shuffled with ``generator``)."""
        return epoch_batches(self, batch_size, shuffle=shuffle, generator=generator, repeats=repeats)


def caption_data(seed: int = 0, sizes: dict[str, int] | None = None) -> dict[str, CaptionData]:
    """``scenes.make_splits(seed, sizes)`` as ``CaptionData`` (train, valid, test, generalisation)."""
    vocab = caption_vocabulary()
    return {name: CaptionData(split, vocab) for name, split in make_splits(seed, sizes).items()}


def captioner_config(vocab: Vocabulary) -> CaptionerConfig:
    """Lesson 10's captioner: 48x48 images in 8x8 patches (36), d_image 96, d_model 64, 2 + 2 layers."""
    return CaptionerConfig(vocab_size=len(vocab))


class TrainedCaptioner(NamedTuple):
    model: Captioner
    vocab: Vocabulary
    info: dict


def train_captioner(data: dict[str, CaptionData], *, seed: int = 0, config: TrainConfig | None = None,
                    device: torch.device | str = "cpu", progress: bool = True) -> tuple[TrainedCaptioner, History]:
    """A fresh ``Captioner`` trained on ``data["train"]`` with ``training.train`` (validation on
    ``data["valid"]``); returns ``(TrainedCaptioner, History)``."""
    config = config or TrainConfig(max_steps=1500, eval_every=250, time_budget_s=240.0, target_exact_match=0.99,
                                   repeat_long_from=None, seed=seed)
    torch.manual_seed(seed)
    vocab = data["train"].tgt_vocab
    model = Captioner(captioner_config(vocab)).to(device)
    history = train(model, data["train"], data["valid"], config, progress=progress)
    info = {"seed": seed, "steps": history.steps, "seconds": history.seconds, "stop_reason": history.stop_reason,
            "valid_exact_match": history.eval_exact_match[-1] if history.eval_exact_match else None}
    return TrainedCaptioner(model.eval(), vocab, info), history


def captioner_path(seed: int = 0) -> Path:
    """``$COURSE_CACHE_DIR/lesson10/captioner-seed<seed>.pt`` (without the variable: under
    ``~/.cache/cross-attention-from-scratch``)."""
    folder = os.environ.get("COURSE_CACHE_DIR") or Path.home() / ".cache" / "cross-attention-from-scratch"
    return Path(folder) / "lesson10" / f"captioner-seed{seed}.pt"


def save_captioner(trained: TrainedCaptioner, path: str | Path) -> Path:
    """Write config, weights, vocabulary and ``info`` to ``path`` (written to a temporary file, then renamed, so a
    reader never sees half a file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    torch.save({"format": 1, "config": asdict(trained.model.config), "words": list(trained.vocab.tokens[4:]),
                "state_dict": {k: v.detach().cpu() for k, v in trained.model.state_dict().items()},
                "info": trained.info}, partial)
    partial.replace(path)
    return path


def load_captioner(path: str | Path, *, device: torch.device | str = "cpu") -> TrainedCaptioner:
    """Read what ``save_captioner`` wrote (the model in eval mode on ``device``)."""
    saved = torch.load(Path(path), map_location="cpu", weights_only=True)
    model = Captioner(CaptionerConfig(**saved["config"]))
    model.load_state_dict(saved["state_dict"])
    return TrainedCaptioner(model.to(device).eval(), Vocabulary(saved["words"]), saved["info"])


def load_or_train_captioner(seed: int = 0, *, data: dict[str, CaptionData] | None = None,
                            device: torch.device | str = "cpu", progress: bool = True) -> TrainedCaptioner:
    """The captioner saved in the cache folder (``captioner_path``), or a new one trained with ``train_captioner``
    (about two minutes on a laptop CPU) and saved there for next time."""
    path = captioner_path(seed)
    if path.exists():
        return load_captioner(path, device=device)
    trained, _ = train_captioner(data if data is not None else caption_data(seed), seed=seed, device=device,
                                 progress=progress)
    save_captioner(trained, path)
    return trained


# --- grounding: does the word look at its object? -------------------------------------------------------------------
def patch_boxes(grid: int, patch_size: int) -> Tensor:
    """Each patch's pixel box ``[N, 4]`` as ``(x0, y0, x1, y1)``, end exclusive, in raster order."""
    rows, cols = torch.meshgrid(torch.arange(grid), torch.arange(grid), indexing="ij")
    x0, y0 = cols.flatten() * patch_size, rows.flatten() * patch_size
    return torch.stack([x0, y0, x0 + patch_size, y0 + patch_size], dim=1)


def grounded_words(cross_weights: Tensor, word_boxes: Sequence[Sequence[tuple[int, int, int, int] | None]],
                   patch_size: int) -> tuple[Tensor, Tensor]:
    """For every word that names an object: is its most-attended patch on the object?

    ``cross_weights [B, H, T, N]``: row ``t`` is the word being written at position ``t`` (teacher forcing on the
    caption); ``word_boxes[b][t]``: the gold box of caption ``b``'s word ``t``, or None. A patch is on the object
    when it holds at least one pixel of the object's box: each object covers 2 x 2 of the 36 patches, so a head
    that looks anywhere at random scores 4/36 = 11 %.

    Returns ``(hits [H, W] bool, word_index [W, 2])``: one column per object word, and its (b, t).
    """
    if cross_weights.ndim != 4:
        raise ValueError(f"cross_weights must be [B, H, T, N]; got {list(cross_weights.shape)}")
    b, _, t, n = cross_weights.shape
    grid = int(round(n**0.5))
    if grid * grid != n or len(word_boxes) != b:
        raise ValueError(f"need a square number of patches and one list of word boxes per image; got N={n} and "
                         f"{len(word_boxes)} lists for B={b}")
    patches = patch_boxes(grid, patch_size)  # [N, 4]
    index = [(i, k) for i, boxes in enumerate(word_boxes) for k, box in enumerate(boxes[:t]) if box is not None]
    if not index:
        raise ValueError("no word names an object: nothing to score")
    where = torch.tensor(index)  # [W, 2]
    looked_at = cross_weights[where[:, 0], :, where[:, 1]].argmax(dim=-1)  # [W, H]: each head's top patch
    boxes = torch.tensor([word_boxes[i][k] for i, k in index])  # [W, 4]
    chosen = patches[looked_at]  # [W, H, 4]
    overlaps = (chosen[..., 0] < boxes[:, None, 2]) & (boxes[:, None, 0] < chosen[..., 2]) & \
        (chosen[..., 1] < boxes[:, None, 3]) & (boxes[:, None, 1] < chosen[..., 3])  # [W, H]
    return overlaps.T, where


@torch.no_grad()
def grounding_by_head(model: Captioner, data: CaptionData, *, max_images: int = 500, batch_size: int = 250) -> Tensor:
    """The grounding score of every cross-attention head, ``[layers, heads]``: the share of object words (colour
    and shape words, teacher-forced on the gold caption) whose most-attended patch is on the object
    (``grounded_words``)."""
    model.eval()
    device = next(model.parameters()).device
    hits_per_layer: list[list[Tensor]] = [[] for _ in model.layers]
    for start in range(0, min(max_images, len(data)), batch_size):
        index = torch.arange(start, min(start + batch_size, max_images, len(data)))
        batch = data.batch(index).to(device)
        _, maps = model.forward_with_attention(batch.src_ids, batch.tgt_in)
        boxes = [data.scenes[i].word_boxes for i in index.tolist()]
        for layer, weights in enumerate(maps.decoder_cross):
            hits_per_layer[layer].append(grounded_words(weights.cpu(), boxes, model.config.patch_size)[0])
    return torch.stack([torch.cat(hits, dim=1).float().mean(dim=1) for hits in hits_per_layer])  # [L, H]
