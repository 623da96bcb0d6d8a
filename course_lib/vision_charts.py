"""Lesson 10's figures: where each word of a caption looks in the image (the cross-attention over patches laid
back onto the pixels), and which heads ground their words (a layer x head heatmap)."""
from __future__ import annotations

import textwrap
from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib import patheffects
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from ._checks import shape_str
from .plotting import attention_heatmap

OVERLAY_CMAP = "magma"  # attention laid on an image: the more weight, the brighter (the scenes are dark)
GOLD_BOX_COLOR = "white"  # the object a word names: dashed, so it reads against every shape colour


def weights_to_pixels(weights: torch.Tensor | np.ndarray, image_size: int) -> np.ndarray:
    """One word's weights over ``N`` patches (raster order) -> ``[image_size, image_size]``: each patch's weight
    spread over its pixels (nearest neighbour, so the patch grid stays visible)."""
    weights = np.asarray(torch.as_tensor(weights).detach().cpu(), dtype=float)
    grid = int(round(weights.size**0.5))
    if weights.ndim != 1 or grid * grid != weights.size or image_size % grid:
        raise ValueError(f"weights must be one row [N] over a square grid of patches that divides the image "
                         f"({image_size} pixels); got shape {shape_str(weights.shape)}")
    patch = image_size // grid
    return np.kron(weights.reshape(grid, grid), np.ones((patch, patch)))  # [H, W]


def word_overlays(image: torch.Tensor, words: Sequence[str], weights: torch.Tensor,
                  boxes: Sequence[tuple[int, int, int, int] | None] | None = None, *, title: str | None = None,
                  columns: int = 6) -> Figure:
    """One panel per caption word: the image with the word's cross-attention over the patches laid on it, each
    patch coloured and opaque in proportion to its weight (relative to the word's largest); the gold box of the
    object the word names outlined, if ``boxes`` says.

    ``image [3, H, W]`` (0..1), ``weights [T, N]``: row ``t`` is the word being written at position ``t``.
    """
    weights = torch.as_tensor(weights).detach().cpu()
    if weights.ndim != 2 or weights.shape[0] < len(words):
        raise ValueError(f"weights must be [T >= {len(words)} words, N patches]; got {shape_str(weights.shape)}")
    pixels = image.detach().cpu().permute(1, 2, 0).clamp(0, 1).numpy()  # [H, W, 3]
    rows = -(-len(words) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(1.9 * columns, 2.1 * rows + 0.4), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for t, (ax, word) in enumerate(zip(axes.flat, words)):
        heat = weights_to_pixels(weights[t], pixels.shape[0])
        heat = heat / max(float(heat.max()), 1e-9)  # 1 = this word's most-attended patch
        colours = plt.get_cmap(OVERLAY_CMAP)(0.45 + 0.55 * heat)  # [H, W, 4]: bright on the dark background
        colours[..., 3] = 0.8 * heat  # little attention: see-through, so the scene stays visible
        ax.imshow(pixels)
        ax.imshow(colours)
        if boxes is not None and boxes[t] is not None:
            x0, y0, x1, y1 = boxes[t]
            ax.add_patch(Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, lw=1.6, ls="--",
                                   edgecolor=GOLD_BOX_COLOR))
        ax.set_title(word, fontsize=11)
    if title:
        fig.suptitle(title, fontsize=12)
    fig.tight_layout()
    return fig


def grounding_figure(scores: torch.Tensor, *, chance: float | None = None, title: str | None = None) -> Figure:
    """The grounding score of each cross-attention head, ``scores [layers, heads]`` in 0..1, as a heatmap with
    the percentages written in; ``chance``: the score of a head that looks at random, stated in the title."""
    scores = torch.as_tensor(scores).detach().cpu()
    if scores.ndim != 2:
        raise ValueError(f"scores must be [layers, heads]; got {shape_str(scores.shape)}")
    fig, ax = plt.subplots(figsize=(1.2 * scores.shape[1] + 2.2, 0.8 * scores.shape[0] + 1.4))
    attention_heatmap(scores, query_labels=[f"layer {i}" for i in range(scores.shape[0])],
                      key_labels=[f"head {h}" for h in range(scores.shape[1])], ax=ax, annotate=True, vmax=1.0)
    default = "object words whose top patch is on the object"
    ax.set_title((title or default) + (f"\n(a head looking at random: {chance:.0%})" if chance is not None else ""),
                 fontsize=11)
    ax.set_xlabel("cross-attention head")
    ax.set_ylabel("decoder layer")
    fig.tight_layout()
    return fig


def _pixels(image: torch.Tensor) -> np.ndarray:
    return image.detach().cpu().permute(1, 2, 0).clamp(0, 1).numpy()  # [H, W, 3]


def scene_gallery(images: torch.Tensor, captions: Sequence[str], *, columns: int = 4) -> Figure:
    """Images ``[N, 3, H, W]`` with their captions above them."""
    if images.ndim != 4 or len(captions) != images.shape[0]:
        raise ValueError(f"need images [N, 3, H, W] and N captions; got {shape_str(images.shape)}, {len(captions)}")
    rows = -(-len(captions) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(2.8 * columns, 3.4 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, image, caption in zip(axes.flat, images, captions):
        ax.imshow(_pixels(image))
        ax.set_title(textwrap.fill(caption, 26), fontsize=9)
    fig.tight_layout(h_pad=1.2)
    return fig


def patch_grid_figure(image: torch.Tensor, patch_size: int, *, shown: int = 8) -> Figure:
    """From image to sequence: the image with its patch grid and each patch's number (raster order), and the
    first ``shown`` patches laid out as the first tokens of the sequence the encoder reads."""
    pixels, p = _pixels(image), patch_size
    grid = pixels.shape[0] // p
    fig = plt.figure(figsize=(11, 3.8))
    left = fig.add_axes([0.02, 0.08, 0.3, 0.84])
    left.imshow(pixels)
    for k in range(1, grid):
        left.axhline(k * p - 0.5, color="white", lw=0.6)
        left.axvline(k * p - 0.5, color="white", lw=0.6)
    for n in range(grid * grid):
        row, col = divmod(n, grid)
        left.text(col * p + p / 2 - 0.5, row * p + p / 2 - 0.5, str(n), color="white", fontsize=7, ha="center",
                  va="center", path_effects=[patheffects.withStroke(linewidth=1.5, foreground="black")])
    left.set_title(f"{pixels.shape[0]}x{pixels.shape[1]} image, {grid}x{grid} patches of {p}x{p}", fontsize=10)
    left.axis("off")
    fig.text(0.345, 0.5, "→", fontsize=28, va="center")
    for i in range(shown):
        ax = fig.add_axes([0.39 + i * 0.066, 0.36, 0.058, 0.3])
        row, col = divmod(i, grid)
        ax.imshow(pixels[row * p:(row + 1) * p, col * p:(col + 1) * p])
        ax.set_title(str(i), fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    c = image.shape[0]
    fig.text(0.39 + shown * 0.066, 0.5, f"… {grid * grid}", fontsize=12, va="center")
    fig.text(0.39, 0.12, f"a sequence of {grid * grid} tokens in raster order: each patch flattened to "
             f"{c}·{p}·{p} = {c * p * p} numbers,\nthen embedded by one linear layer", fontsize=10)
    return fig


def position_similarity_figure(table: torch.Tensor, grid: int, patches: Sequence[int] = (0, 14, 35)) -> Figure:
    """How alike the 2-D position codes are: for each patch in ``patches``, the cosine similarity of its code
    (a row of ``table [grid * grid, d]``) with every patch's, drawn on the patch grid (the patch itself outlined)."""
    table = torch.as_tensor(table).detach().cpu().float()
    if table.ndim != 2 or table.shape[0] != grid * grid:
        raise ValueError(f"table must be [grid * grid = {grid * grid}, d]; got {shape_str(table.shape)}")
    unit = table / table.norm(dim=1, keepdim=True)
    similarity = unit @ unit[list(patches)].T  # [grid * grid, len(patches)]
    fig, axes = plt.subplots(1, len(patches), figsize=(3.1 * len(patches), 3.2), squeeze=False)
    for k, (ax, n) in enumerate(zip(axes[0], patches)):
        image = ax.imshow(similarity[:, k].reshape(grid, grid).numpy(), cmap="viridis",
                          vmin=float(similarity.min()), vmax=1.0)
        row, col = divmod(n, grid)
        ax.add_patch(Rectangle((col - 0.5, row - 0.5), 1, 1, fill=False, lw=2, edgecolor="white"))
        ax.set_title(f"patch {n} (row {row}, column {col})", fontsize=10)
        ax.set_xticks(range(grid))
        ax.set_yticks(range(grid))
    fig.colorbar(image, ax=axes[0].tolist(), shrink=0.8, label="cosine similarity")
    return fig
