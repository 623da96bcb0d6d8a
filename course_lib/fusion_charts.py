"""Lesson 11's figures: how a model reads two sources (three fusions, Flamingo's gated blocks, Perceiver latents,
drawn as data flow with the shapes on the arrows), a gallery of questions, and charts of what was measured: exact
match with a source left out, each source's share per layer, the gates over training, and the cost of latents.

Colours: the image in ``IMAGE_COLOR`` (the source side's blue), the question in ``QUESTION_COLOR``, the answer
(decoder) in ``plotting.COLORS["decoder"]``, frozen parts in ``FROZEN_COLOR``. Every function returns a Matplotlib
``Figure`` and raises ``ValueError`` for impossible sizes or inputs that do not fit together.
"""
from __future__ import annotations

import textwrap
from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import FancyBboxPatch, Rectangle
from matplotlib.ticker import PercentFormatter

from ._checks import shape_str
from ._drawing import FONT, SMALL, arrow, box, canvas, check_sizes, path, plus, shape, tint
from .plotting import COLORS

IMAGE_COLOR = COLORS["encoder"]  # the image: patch features, latents made from them
QUESTION_COLOR = "#009E73"  # the question: its words and their states (Okabe-Ito bluish green)
DEC, RES, WEIGHTS = COLORS["decoder"], COLORS["residual"], COLORS["weights"]
LATENT_COLOR = "#CC79A7"  # Perceiver's learned latent queries
FROZEN_COLOR = "#8C8C8C"  # parts that training does not change
RIGHT_COLOR, WRONG_COLOR = "#1A7F37", "#C62828"  # a gallery title: the prediction is right / wrong
CONDITION_COLORS = {"both sources": "#444444", "no image": "#E69F00", "no question": "#56B4E9"}
SHARE_NOTES = {"separate": "share of update size, not of attention"}
GREY = "0.3"


# --- drawing helpers -------------------------------------------------------------------------------------------
def _frame(ax: Axes, cx: float, y0: float, w: float, h: float, color: str, *, fill: float = 0.94) -> None:
    ax.add_patch(FancyBboxPatch((cx - w / 2, y0), w, h, boxstyle="round,pad=0,rounding_size=0.08",
                                facecolor=tint(color, fill), edgecolor=color, linewidth=1.2, zorder=1.5))


def _label(ax: Axes, x: float, y: float, text: str, *, color: str = "0.1", bold: bool = True, ha: str = "center",
           size: int = SMALL, **style: object) -> None:
    ax.text(x, y, text, ha=ha, va="center", fontsize=size, color=color, fontweight="bold" if bold else None, **style)


def _panel_heading(ax: Axes, x: float, top: float, title: str, note: str) -> None:
    ax.text(x, top, title, fontsize=FONT + 2, fontweight="bold", va="center")
    ax.text(x, 0.3, note, fontsize=SMALL, color=GREY, va="center")


def _layer_stack(ax: Axes, cx: float, y0: float, w: float, title: str, blocks: Sequence[tuple[str, str]],
                 color: str) -> list[float]:
    """A decoder layer: a frame with its sublayers bottom to top; returns their centre heights."""
    step, h = 0.36, 0.27
    _frame(ax, cx, y0, w, 0.12 + step * len(blocks) + 0.24, color)
    centres = [y0 + 0.24 + step * i for i in range(len(blocks))]
    for y, (name, block_color) in zip(centres, blocks):
        box(ax, cx, y, w - 0.2, h, name, color=block_color, fill=0.8, fontsize=SMALL)
    for lower, upper in zip(centres, centres[1:]):
        arrow(ax, (cx, lower + h / 2), (cx, upper - h / 2), color=RES, lw=1.0)
    _label(ax, cx, y0 + 0.12 + step * len(blocks) + 0.1, title, color=color)
    return centres


def _tokens(ax: Axes, x0: float, y0: float, count: int, width: float, height: float, color: str,
            fill: float = 0.45) -> None:
    """A run of ``count`` tokens, each a ``width x height`` cell, bottom left at ``(x0, y0)``."""
    for i in range(count):
        ax.add_patch(Rectangle((x0 + i * width, y0), width, height, facecolor=tint(color, fill), edgecolor="white",
                               linewidth=0.6, zorder=2))


# --- 1. three fusions ------------------------------------------------------------------------------------------
def _concatenation_panel(ax: Axes, x0: float, n: int, q: int, t: int, d_image: int, d: int) -> None:
    xi, xq, xm = x0 + 0.85, x0 + 3.3, x0 + 2.1
    _label(ax, xi, 0.72, "image features")
    _label(ax, xq, 0.72, "question ids")
    arrow(ax, (xi, 0.85), (xi, 1.2), color=IMAGE_COLOR, label=shape("B", n, d_image), side="right", monospace=True)
    box(ax, xi, 1.36, 1.35, 0.32, f"Linear {d_image} → {d}", color=IMAGE_COLOR, fontsize=SMALL)
    arrow(ax, (xq, 0.85), (xq, 1.2), color=QUESTION_COLOR, label=shape("B", q), side="right", monospace=True)
    box(ax, xq, 1.36, 1.35, 0.32, "question encoder", color=QUESTION_COLOR, fontsize=SMALL)
    for x, color, dims, kind in ((xi, IMAGE_COLOR, shape("B", n, d), 0), (xq, QUESTION_COLOR, shape("B", q, d), 1)):
        arrow(ax, (x, 1.52), (x, 2.0), color=color, label=dims, side="right", monospace=True)
        plus(ax, x, 2.13, color=color)
        ax.text(x - 0.18, 2.13, f"type {kind}", ha="right", va="center", fontsize=SMALL, color=color)
        arrow(ax, (x, 2.26), (xm + (x - xm) * 0.45, 2.62), color=color)
    box(ax, xm, 2.93, 2.5, 0.62, "concatenate: one memory", color=IMAGE_COLOR, fill=0.9,
        shape_text=shape("B", f"{n}+{q}", d), note=f"one padding mask {shape('B', 1, 1, n + q)}")
    ax.add_patch(Rectangle((xm - 1.25, 2.62), 2.5 * n / (n + q), 0.05, color=IMAGE_COLOR, zorder=3))
    ax.add_patch(Rectangle((xm - 1.25 + 2.5 * n / (n + q), 2.62), 2.5 * q / (n + q), 0.05, color=QUESTION_COLOR,
                           zorder=3))
    arrow(ax, (xm, 3.24), (xm, 3.62), color=IMAGE_COLOR, label="K, V in every layer", side="right")
    box(ax, xm, 3.93, 2.5, 0.62, "decoder layer × L", color=DEC, note="self-attn → cross-attn → FFN")
    arrow(ax, (x0 + 0.1, 3.93), (xm - 1.25, 3.93), color=DEC, label=shape("B", t), monospace=True)
    ax.text(x0 + 0.1, 3.86, "answer", fontsize=SMALL, color=DEC, va="top", fontweight="bold")
    arrow(ax, (xm, 4.24), (xm, 4.62), color=DEC, label=f"logits {shape('B', t, 'V')}", side="right", monospace=True)


def _separate_panel(ax: Axes, x0: float, n: int, q: int, t: int, d_image: int, d: int) -> None:
    xi, xq, xd = x0 + 0.42, x0 + 3.72, x0 + 2.05
    names = [("masked self-attention", DEC), ("cross-attn: image", IMAGE_COLOR),
             ("cross-attn: question", QUESTION_COLOR), ("feed-forward", RES)]
    y0 = 1.8
    centres = _layer_stack(ax, xd, y0, 1.75, "decoder layer × L", names, DEC)
    _label(ax, xi + 0.15, 0.72, "image features")
    path(ax, [(xi, 0.85), (xi, centres[1]), (xd - 0.78, centres[1])], color=IMAGE_COLOR)
    ax.text((xi + xd - 0.78) / 2, centres[1] + 0.07, shape("B", n, d_image), ha="center", va="bottom",
            fontsize=SMALL, family="monospace")
    _label(ax, xq - 0.1, 0.72, "question ids")
    arrow(ax, (xq, 0.85), (xq, 1.2), color=QUESTION_COLOR, label=shape("B", q), side="left", monospace=True)
    box(ax, xq, 1.55, 1.0, 0.62, "question", color=QUESTION_COLOR, note="encoder", fontsize=SMALL)
    path(ax, [(xq, 1.86), (xq, centres[2]), (xd + 0.78, centres[2])], color=QUESTION_COLOR)
    ax.text((xq + xd + 0.78) / 2, centres[2] + 0.07, shape("B", q, d), ha="center", va="bottom", fontsize=SMALL,
            family="monospace")
    _label(ax, xd, 0.72, "answer", color=DEC)
    arrow(ax, (xd, 0.85), (xd, y0), color=DEC, label=shape("B", t), side="right", monospace=True)
    top = y0 + 0.12 + 0.36 * len(names) + 0.24
    arrow(ax, (xd, top), (xd, 4.62), color=DEC, label=f"logits {shape('B', t, 'V')}", side="right", monospace=True)


def _prefix_panel(ax: Axes, x0: float, n: int, q: int, t: int, d_image: int, d: int) -> None:
    length = n + q + t  # the answer's first token is <sep>, which writes the first answer word
    size, y_cells = min(0.2, 3.9 / length), 1.5
    left = x0 + 0.2 + (3.9 - length * size) / 2
    start = left
    for count, color in ((n, IMAGE_COLOR), (q, QUESTION_COLOR), (1, RES), (t - 1, DEC)):
        _tokens(ax, start, y_cells, count, size, 0.24, color)
        start += count * size
    xi, xq, xa = left + n * size / 2, left + (n + q / 2) * size, left + (n + q + t / 2) * size
    _label(ax, xi, 0.72, f"image features {shape('B', n, d_image)}", bold=False, family="monospace")
    arrow(ax, (xi, 0.85), (xi, y_cells - 0.05), color=IMAGE_COLOR, label=f"Linear → {shape('B', n, d)}",
          side="right")
    ax.text(start, 0.72, f"question <sep> answer\nids {shape('B', f'{q}+{t}')}", ha="right", va="center",
            fontsize=SMALL, family="monospace")
    arrow(ax, (xq, 0.95), (xq, y_cells - 0.05), color=QUESTION_COLOR)
    arrow(ax, (xa, 0.95), (xa, y_cells - 0.05), color=DEC)
    above = y_cells + 0.29
    ax.text(xi, above, f"{n} image tokens", ha="center", va="bottom", fontsize=SMALL, color=IMAGE_COLOR)
    ax.text(xq, above, f"{q} words", ha="right", va="bottom", fontsize=SMALL, color=QUESTION_COLOR)
    ax.text(start, above + 0.2, "<sep> + answer", ha="right", va="bottom", fontsize=SMALL, color=DEC)
    cx = x0 + 2.15
    arrow(ax, (cx, 2.05), (cx, 2.6), color=RES, label=shape("B", f"{n}+{q}+{t}", d), side="right", monospace=True)
    box(ax, cx, 2.93, 3.3, 0.62, "causal self-attention layers × L", color=RES, fill=0.88,
        note="no cross-attention: the answer reads earlier tokens")
    arrow(ax, (cx, 3.24), (cx, 3.76), color=DEC, label=f"answer rows {shape('B', t, d)}", side="right",
          monospace=True)
    box(ax, cx, 3.93, 1.6, 0.34, "linear → V", color=DEC, fontsize=SMALL)
    arrow(ax, (cx, 4.1), (cx, 4.62), color=DEC, label=f"logits {shape('B', t, 'V')}", side="right", monospace=True)


def fusion_diagrams(*, n_patches: int = 36, question_len: int = 7, answer_len: int = 3, d_image: int = 96,
                    d_model: int = 64) -> Figure:
    """Three ways to fuse the image (``n_patches`` features of width ``d_image``) and the question
    (``question_len`` words) for an answer of ``answer_len`` tokens, side by side with the shapes of a batch ``B``:
    (a) one concatenated memory with source-type embeddings, (b) one cross-attention sublayer per source,
    (c) a decoder-only prefix ``[image | question | <sep> | answer]``. About 13 x 5 inches.
    Raises ``ValueError`` for sizes that are not positive ints or ``answer_len < 2``."""
    check_sizes(n_patches=n_patches, question_len=question_len, answer_len=answer_len, d_image=d_image,
                d_model=d_model)
    if answer_len < 2:
        raise ValueError(f"answer_len must be >= 2 (<bos>/<sep> and one word); got {answer_len}")
    fig, ax = canvas(13.0, 5.3)
    panels = [("a · concatenation", _concatenation_panel,
               "both sources in one memory, tagged by a type embedding:\none softmax shares attention between them"),
              ("b · one cross-attention per source", _separate_panel,
               "each source keeps its own mask, LayerNorm, softmax;\nthe image keeps its width (no projection)"),
              ("c · prefix (decoder-only)", _prefix_panel,
               "LLaVA's recipe: projected patches are the first\n'words' of one sequence, causal over all of it")]
    for i, (title, draw, note) in enumerate(panels):
        _panel_heading(ax, 4.35 * i + 0.15, 5.05, title, note)
        draw(ax, 4.35 * i, n_patches, question_len, answer_len, d_image, d_model)
        if i:
            ax.plot([4.35 * i - 0.05] * 2, [0.15, 5.2], color="0.85", lw=1.0)
    return fig


# --- 2. Flamingo -----------------------------------------------------------------------------------------------
def _flamingo_stack(ax: Axes, n_layers: int, n: int, d_image: int, d: int) -> float:
    """The frozen LM with a gated block before each layer (left); returns the first block's height."""
    cx, w, xi = 3.5, 2.7, 0.75
    _label(ax, cx, 0.32, "question <sep> answer ids", size=FONT)
    arrow(ax, (cx, 0.45), (cx, 0.72), color=FROZEN_COLOR, label=shape("B", "L"), side="right", monospace=True)
    box(ax, cx, 0.9, w, 0.36, "embedding + positions (frozen)", color=FROZEN_COLOR, fontsize=SMALL)
    box(ax, xi, 0.9, 1.3, 0.62, "image encoder", color=FROZEN_COLOR, note="frozen (lesson 10)", fontsize=SMALL)
    y, blocks = 1.08, []
    for i in range(1, n_layers + 1):
        arrow(ax, (cx, y), (cx, y + 0.24), color=RES, label=shape("B", "L", d), side="right", monospace=True)
        box(ax, cx, y + 0.5, w, 0.52, "gated cross-attention", color=IMAGE_COLOR, fill=0.8, fontsize=SMALL,
            note="trained · tanh gates start at 0")
        blocks.append(y + 0.5)
        arrow(ax, (cx, y + 0.76), (cx, y + 0.96), color=RES)
        box(ax, cx, y + 1.15, w, 0.38, f"LM layer {i} (frozen)", color=FROZEN_COLOR, fill=0.75, fontsize=SMALL)
        y += 1.34
    arrow(ax, (cx, y), (cx, y + 0.22), color=RES)
    box(ax, cx, y + 0.4, w, 0.36, "LayerNorm, linear → V (frozen)", color=FROZEN_COLOR, fontsize=SMALL)
    arrow(ax, (cx, y + 0.58), (cx, y + 0.9), color=DEC, label=f"logits {shape('B', 'T', 'V')}", side="right",
          monospace=True)
    ax.plot([xi, xi], [1.21, blocks[-1]], color=IMAGE_COLOR, lw=1.6, zorder=1)
    y_label = (blocks[0] + blocks[1]) / 2 if len(blocks) > 1 else (1.21 + blocks[0]) / 2
    ax.text(xi - 0.08, y_label, shape("B", n, d_image), rotation=90, ha="right", va="center", fontsize=SMALL,
            family="monospace", color=IMAGE_COLOR)
    for y_block in blocks:
        arrow(ax, (xi, y_block), (cx - w / 2, y_block), color=IMAGE_COLOR, label="K, V", zorder=1.8)
    return blocks[0]


def _gated_block(ax: Axes, d_image: int, n: int, d: int) -> None:
    """One gated block, zoomed in (right)."""
    xr, xb, xg = 6.75, 8.55, 8.55
    ax.text(xr - 0.1, 0.62, f"x {shape('B', 'L', d)}", ha="center", va="center", fontsize=SMALL, family="monospace")
    for y_branch, y_box, y_plus, name, alpha in ((1.05, 1.6, 2.45, "LayerNorm → cross-attention", "α_attn"),
                                                (2.85, 3.4, 4.25, "LayerNorm → feed-forward", "α_ffn")):
        path(ax, [(xr, y_branch), (xb, y_branch), (xb, y_box - 0.25)], color=RES)
        box(ax, xb, y_box, 2.3, 0.5, name, color=IMAGE_COLOR if "cross" in name else RES, fontsize=SMALL)
        arrow(ax, (xg, y_box + 0.25), (xg, y_plus - 0.17), color=RES)
        box(ax, xg, y_plus, 1.35, 0.34, f"× tanh({alpha})", color=WEIGHTS, fontsize=SMALL)
        arrow(ax, (xg - 0.675, y_plus), (xr + 0.13, y_plus), color=RES)
        plus(ax, xr, y_plus, color=RES)
    ax.plot([xr, xr], [0.75, 2.32], color=RES, lw=1.4, zorder=1)
    ax.plot([xr, xr], [2.58, 4.12], color=RES, lw=1.4, zorder=1)
    arrow(ax, (11.1, 1.6), (xb + 1.15, 1.6), color=IMAGE_COLOR, label="K, V")
    ax.text(11.15, 1.6, f"image\n{shape('B', n, d_image)}", ha="left", va="center", fontsize=SMALL,
            family="monospace", color=IMAGE_COLOR)
    arrow(ax, (xr, 4.38), (xr, 4.75), color=RES)
    box(ax, xr, 4.93, 1.9, 0.36, "next LM layer (frozen)", color=FROZEN_COLOR, fill=0.75, fontsize=SMALL)
    formulas = ["x ← x + tanh(α_attn) · attn(norm(x), image)", "x ← x + tanh(α_ffn) · ffn(norm(x))"]
    for i, formula in enumerate(formulas):
        ax.text(11.8, 5.35 - 0.22 * i, formula, ha="right", va="center", fontsize=SMALL, family="monospace")
    ax.text(8.5, 0.2, "α_attn = α_ffn = 0 at the start, and tanh(0) = 0: every block adds exactly 0,\n"
            "so the untrained model is the frozen LM, to the last bit; training opens the gates", ha="center",
            va="bottom", fontsize=SMALL, color=GREY)


def flamingo_diagram(*, n_layers: int = 3, n_patches: int = 36, d_image: int = 96, d_model: int = 64) -> Figure:
    """Flamingo's recipe (Alayrac et al. 2022): a frozen text-only LM of ``n_layers`` layers (grey) with a trained
    gated cross-attention block before each one, every block reading the frozen image features
    ``[B, n_patches, d_image]`` (left); one block zoomed in, ``x + tanh(α_attn)·attn(x, image)`` then
    ``x + tanh(α_ffn)·ffn(x)`` with both α starting at 0 (right). About 12 x 6 inches.
    Raises ``ValueError`` for sizes that are not positive ints or more than 4 layers."""
    check_sizes(n_layers=n_layers, n_patches=n_patches, d_image=d_image, d_model=d_model)
    if n_layers > 4:
        raise ValueError(f"n_layers must be at most 4 to stay readable; got {n_layers}")
    height = 2.4 + 1.34 * n_layers
    fig, ax = canvas(12.0, max(height, 5.75))
    first = _flamingo_stack(ax, n_layers, n_patches, d_image, d_model)
    _gated_block(ax, d_image, n_patches, d_model)
    ax.add_patch(Rectangle((5.6, 0.5), 6.3, 5.1, fill=False, edgecolor=IMAGE_COLOR, ls="--", lw=1.0))
    for y in (first - 0.26, first + 0.26):
        ax.plot([3.5 + 1.35, 5.6], [y, 0.5 if y < first else 5.6], color=IMAGE_COLOR, ls="--", lw=0.8)
    ax.text(5.75, 5.35, "one gated block, zoomed in", fontsize=FONT + 1, fontweight="bold", va="center")
    ax.text(0.15, ax.get_ylim()[1] - 0.25, "Flamingo: a frozen language model learns to look", fontsize=FONT + 2,
            fontweight="bold", va="center")
    return fig


# --- 3. Perceiver latents --------------------------------------------------------------------------------------
def latent_diagram(n_latents: int = 16, n_patches: int = 36, *, question_len: int = 7, d_image: int = 96,
                   d_model: int = 64) -> Figure:
    """Perceiver-style resampling: ``n_latents`` (M) learned queries cross-attend to the ``n_patches`` (N) patch
    features, an M x N grid of scores drawn small; the decoder then reads M latents + the question instead of
    N patches + the question. The cost ``M·N`` instead of ``N·N`` is written under it. About 12 x 4.6 inches.
    Raises ``ValueError`` for sizes that are not positive ints or grids too large to draw (M > 64, N > 144)."""
    check_sizes(n_latents=n_latents, n_patches=n_patches, question_len=question_len, d_image=d_image,
                d_model=d_model)
    m, n, q = n_latents, n_patches, question_len
    if m > 64 or n > 144:
        raise ValueError(f"need n_latents <= 64 and n_patches <= 144 to draw the grid; got {m} and {n}")
    fig, ax = canvas(12.0, 4.0)
    c = min(0.2, 3.4 / n, 1.6 / m)
    gx0, gy0 = 1.75, 1.35
    gx1, gy1 = gx0 + n * c, gy0 + m * c
    scores = np.random.default_rng(0).dirichlet(np.full(n, 0.3), size=m)  # [M, N]: made-up weights, rows sum to 1
    ax.imshow(scores, cmap="Purples", extent=(gx0, gx1, gy0, gy1), aspect="auto", zorder=2, interpolation="nearest")
    ax.set(xlim=(0, 12.0), ylim=(0, 4.0))
    ax.add_patch(Rectangle((gx0, gy0), gx1 - gx0, gy1 - gy0, fill=False, edgecolor=WEIGHTS, lw=1.0, zorder=3))
    for i in range(m):
        ax.add_patch(Rectangle((gx0 - 0.4, gy0 + i * c), 0.3, c, facecolor=tint(LATENT_COLOR, 0.45),
                               edgecolor="white", lw=0.6, zorder=2))
    _tokens(ax, gx0, gy0 - 0.4, n, c, 0.3, IMAGE_COLOR)
    ax.text(gx0 - 0.5, (gy0 + gy1) / 2, f"M = {m} learned\nlatent queries\n{shape(m, d_image)}", ha="right",
            va="center", fontsize=SMALL, color=LATENT_COLOR, fontweight="bold")
    ax.text((gx0 + gx1) / 2, gy0 - 0.48, f"N = {n} patch features {shape('B', n, d_image)}: keys and values",
            ha="center", va="top", fontsize=SMALL, color=IMAGE_COLOR, fontweight="bold")
    ax.text((gx0 + gx1) / 2, gy1 + 0.08, f"weights {shape('B', 'H', m, n)}: M·N = {m}·{n} = {m * n:,} scores",
            ha="center", va="bottom", fontsize=FONT, family="monospace")
    _latent_reader(ax, gx1, (gy0 + gy1) / 2, m, n, q, d_image, d_model)
    ax.text(0.2, 0.3, f"cost per head: M·N = {m * n:,} scores instead of N·N = {n * n:,} (self-attention over the "
            f"patches); the decoder then reads M = {m} image tokens instead of N = {n}", fontsize=FONT, va="center")
    ax.text(0.2, 3.75, "Perceiver latents: M queries summarise N patches", fontsize=FONT + 2, fontweight="bold",
            va="center")
    return fig


def _latent_reader(ax: Axes, x0: float, y: float, m: int, n: int, q: int, d_image: int, d: int) -> None:
    """From the score grid's right edge: latents -> one memory with the question -> decoder."""
    xl, xm, xd = x0 + 1.55, x0 + 3.85, x0 + 6.0
    arrow(ax, (x0 + 0.08, y), (xl - 0.625, y), color=WEIGHTS, label="weights @ V")
    box(ax, xl, y, 1.25, 0.62, "latents", color=LATENT_COLOR, shape_text=shape("B", m, d_image), fontsize=SMALL)
    arrow(ax, (xl + 0.625, y), (xm - 0.85, y), color=LATENT_COLOR, label=f"Linear → {d}\n+ type 0")
    box(ax, xm, y, 1.7, 0.62, "memory", color=IMAGE_COLOR, shape_text=shape("B", f"{m}+{q}", d), fill=0.9,
        fontsize=SMALL)
    box(ax, xm, y - 1.2, 1.7, 0.36, "question encoder", color=QUESTION_COLOR, fontsize=SMALL)
    arrow(ax, (xm, y - 1.02), (xm, y - 0.31), color=QUESTION_COLOR, label=f"{shape('B', q, d)}\n+ type 1",
          side="right")
    arrow(ax, (xm + 0.85, y), (xd - 0.7, y), color=IMAGE_COLOR, label="K, V")
    box(ax, xd, y, 1.4, 0.62, "decoder", color=DEC, note=f"reads {m}+{q}, not {n}+{q}", fontsize=SMALL)
    arrow(ax, (xd, y + 0.31), (xd, y + 0.9), color=DEC, label=f"logits {shape('B', 'T', 'V')}", side="left",
          monospace=True)


# --- 4. the task -----------------------------------------------------------------------------------------------
def qa_gallery(images: torch.Tensor | np.ndarray, questions: Sequence[str], answers: Sequence[str],
               predictions: Sequence[str] | None = None, *, columns: int = 4) -> Figure:
    """Scenes ``[K, 3, H, W]`` (0..1), each titled with its question and gold answer; with ``predictions`` the
    title also gives the model's answer, green (✓) when it equals the gold answer and red (✗) when not."""
    images = torch.as_tensor(images).detach().cpu()
    k = images.shape[0] if images.ndim == 4 else -1
    if images.ndim != 4 or images.shape[1] != 3 or len(questions) != k or len(answers) != k:
        raise ValueError(f"need images [K, 3, H, W] with K questions and K answers; got {shape_str(images.shape)}, "
                         f"{len(questions)} questions, {len(answers)} answers")
    if predictions is not None and len(predictions) != k:
        raise ValueError(f"need one prediction per image: {k}; got {len(predictions)}")
    check_sizes(columns=columns)
    rows = -(-k // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(2.7 * columns, 3.3 * rows), squeeze=False,
                             constrained_layout=True)
    for ax in axes.flat:
        ax.axis("off")
    for i, ax in enumerate(axes.flat[:k]):
        ax.imshow(images[i].permute(1, 2, 0).clamp(0, 1).numpy())
        title, color = f"{textwrap.fill(questions[i], 30)}\ngold: {answers[i]}", "black"
        if predictions is not None:
            right = predictions[i].strip() == answers[i].strip()
            title += f"\nmodel: {predictions[i]} {'✓' if right else '✗'}"
            color = RIGHT_COLOR if right else WRONG_COLOR
        ax.set_title(title, fontsize=9, color=color)
    return fig


# --- 5-9. measurements -----------------------------------------------------------------------------------------
def _unit(name: str, value: float) -> float:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be a fraction in 0..1; got {value}")
    return float(value)


def missing_source_figure(results: Mapping[str, Mapping[str, float]], *, chance: float | None = None,
                          title: str = "Exact match with a source left out") -> Figure:
    """Grouped bars: for each model (outer key) its exact match (0..1, drawn in percent) under each condition
    (inner key: "both sources", "no image", "no question"); every model must have the same conditions.
    ``chance``: a dashed line (the exact match of guessing)."""
    if not results:
        raise ValueError("results must hold at least one model; got none")
    conditions = list(next(iter(results.values())))
    for model, row in results.items():
        if list(row) != conditions:
            raise ValueError(f"every model needs the conditions {conditions}; {model!r} has {list(row)}")
    width = 0.8 / len(conditions)
    fig, ax = plt.subplots(figsize=(1.6 * len(results) * max(1, len(conditions) / 3) + 2.4, 3.8),
                           constrained_layout=True)
    for j, condition in enumerate(conditions):
        values = [_unit(f"{model}/{condition}", row[condition]) for model, row in results.items()]
        xs = np.arange(len(results)) + (j - (len(conditions) - 1) / 2) * width
        bars = ax.bar(xs, values, width * 0.92, label=condition, color=CONDITION_COLORS.get(condition, f"C{j}"))
        ax.bar_label(bars, [f"{v:.0%}" for v in values], fontsize=8, padding=2)
    if chance is not None:
        ax.axhline(_unit("chance", chance), color="0.3", ls="--", lw=1.2, label=f"chance ({chance:.0%})")
    ax.set_xticks(range(len(results)), list(results))
    ax.set(ylim=(0, 1.1), ylabel="exact match", title=title, xlim=(-0.5, len(results) - 0.5))
    ax.yaxis.set_major_formatter(PercentFormatter(1.0))
    ax.legend(fontsize=8, frameon=False, ncol=len(conditions) + 1, loc="upper center", bbox_to_anchor=(0.5, -0.09))
    ax.grid(axis="y", alpha=0.3)
    ax.spines[["top", "right"]].set_visible(False)
    return fig


def _shares(name: str, value: torch.Tensor) -> np.ndarray:
    array = torch.as_tensor(value).detach().float().cpu().numpy()
    if array.ndim != 2 or array.shape[1] != 2 or array.shape[0] < 1:
        raise ValueError(f"{name}: shares must be [layers, 2] (image, question); got {shape_str(array.shape)}")
    if (array < -1e-6).any() or not np.allclose(array.sum(axis=1), 1.0, atol=1e-3):
        raise ValueError(f"{name}: each layer's shares must be >= 0 and sum to 1; got row sums "
                         f"{np.round(array.sum(axis=1), 4).tolist()}")
    return array


def source_share_figure(shares: Mapping[str, torch.Tensor], *, notes: Mapping[str, str] | None = None,
                        title: str = "Which source the answer reads, layer by layer") -> Figure:
    """One panel per model: for each decoder layer a bar split into the image's share and the question's
    (``shares[model]`` is ``[layers, 2]``, rows summing to 1, as ``fusion_runs.source_shares`` returns).
    ``notes[model]`` is written under the panel's title (default: ``SHARE_NOTES``, which says that for "separate"
    the share is of update size, not attention); a caption under the figure says so too."""
    if not shares:
        raise ValueError("shares must hold at least one model; got none")
    arrays = {name: _shares(name, value) for name, value in shares.items()}
    notes = {**SHARE_NOTES, **(notes or {})}
    most = max(a.shape[0] for a in arrays.values())
    fig, axes = plt.subplots(1, len(arrays), figsize=(3.3 * len(arrays) + 0.4, 0.42 * most + 2.0), sharey=True,
                             squeeze=False, constrained_layout=True)
    for ax, (name, array) in zip(axes[0], arrays.items()):
        layers = np.arange(array.shape[0])
        for col, (source, color) in enumerate((("image", IMAGE_COLOR), ("question", QUESTION_COLOR))):
            bars = ax.barh(layers, array[:, col], left=array[:, 0] * col, color=color, height=0.7, label=source)
            ax.bar_label(bars, [f"{v:.0%}" if v >= 0.12 else "" for v in array[:, col]], label_type="center",
                         fontsize=8, color="white")
        ax.set_title(name, fontsize=10, pad=16 if notes.keys() & arrays.keys() else 6)
        if name in notes:
            ax.text(0.5, 1.02, notes[name], transform=ax.transAxes, ha="center", va="bottom", fontsize=8, color=GREY)
        ax.set(xlim=(0, 1), ylim=(most - 0.5, -0.5), yticks=range(most),
               yticklabels=[f"layer {i + 1}" for i in range(most)], xticks=[0, 0.5, 1], xlabel="share")
        ax.xaxis.set_major_formatter(PercentFormatter(1.0))
        ax.spines[["top", "right"]].set_visible(False)
    axes[0, 0].legend(fontsize=8, frameon=False, ncol=2, loc="lower left", bbox_to_anchor=(0.0, 1.0 + 0.5 / most))
    caption = "image + question = 100% per layer: the attention weight on each source's keys (mean over heads and " \
              "answer tokens)"
    if "separate" in arrays:
        caption += ';\nfor "separate" (two softmaxes) it is the share of update size |update|, not of attention'
    fig.suptitle(title, fontsize=11)
    fig.supxlabel(caption, fontsize=8, color=GREY)
    return fig


def gate_curves(steps: Sequence[int], gates: Sequence[Sequence[tuple[float, float]]], *,
                title: str = "Flamingo's gates while training") -> Figure:
    """``gates[i][block] = (tanh α_attn, tanh α_ffn)`` at ``steps[i]`` (``FlamingoQA.gates()``): one line per block
    and gate, solid for attention, dashed for the feed-forward, one colour per block; a line at 0 (closed)."""
    try:
        values = np.asarray(gates, dtype=float)  # [steps, blocks, 2]
        got = shape_str(values.shape)
    except ValueError:  # ragged: not the same number of blocks at every step
        values, got = np.zeros(0), "rows of different lengths"
    if values.ndim != 3 or values.shape[2] != 2 or values.shape[0] != len(steps) or values.shape[0] < 1:
        raise ValueError(f"gates must be [len(steps) = {len(steps)}, blocks, 2] (tanh α_attn, tanh α_ffn); got {got}")
    if (np.abs(values) > 1).any():
        raise ValueError("gates are tanh values: they must lie in -1..1")
    fig, ax = plt.subplots(figsize=(7.5, 3.6), constrained_layout=True)
    ax.axhline(0, color="0.5", lw=0.8)
    for block in range(values.shape[1]):
        for kind, style in ((0, "-"), (1, "--")):
            ax.plot(list(steps), values[:, block, kind], style, color=f"C{block}", lw=1.6,
                    label=f"block {block + 1}: tanh α_{'attn' if kind == 0 else 'ffn'}")
    ax.set(xlabel="training step", ylabel="tanh(α)   (0: closed, adds nothing)", ylim=(-1.05, 1.05), title=title)
    ax.legend(fontsize=8, frameon=False, loc="center left", bbox_to_anchor=(1.0, 0.5))
    ax.grid(alpha=0.3)
    return fig


def _positive(name: str, values: Sequence[float], length: int) -> np.ndarray:
    array = np.asarray(values, dtype=float)
    if array.shape != (length,) or (array <= 0).any():
        raise ValueError(f"{name} must be {length} positive numbers; got shape {shape_str(array.shape)}"
                         f"{'' if array.shape != (length,) else ' with values <= 0'}")
    return array


def latent_sweep_figure(n_latents: Sequence[int], exact_match: Sequence[float], flops: Sequence[int], *,
                        n_patches: int = 36, reference_exact_match: float | None = None,
                        reference_label: str = "all 36 patches") -> Figure:
    """Two panels against the number of latents M: exact match (log2 axis; ``reference_exact_match`` of the model
    that reads all ``n_patches`` patches as a dashed line), and the latent cross-attention's counted FLOPs
    (log-log) with a slope-1 line through the first point (cost ∝ M·N)."""
    m = _positive("n_latents", n_latents, len(n_latents))
    cost = _positive("flops", flops, len(m))
    scores = np.array([_unit("exact_match", v) for v in exact_match])
    if scores.shape != m.shape or m.size < 2:
        raise ValueError(f"need at least 2 values of M and one exact match per M; got {m.size} and {scores.size}")
    fig, (left, right) = plt.subplots(1, 2, figsize=(10.5, 3.8), constrained_layout=True)
    left.plot(m, scores, "o-", color=LATENT_COLOR, label="reading M latents")
    if reference_exact_match is not None:
        left.axhline(_unit("reference_exact_match", reference_exact_match), color=IMAGE_COLOR, ls="--",
                     label=reference_label)
    left.set(xscale="log", ylim=(0, 1.05), xlabel="latents M", ylabel="exact match", title="Exact match")
    left.yaxis.set_major_formatter(PercentFormatter(1.0))
    right.plot(m, cost, "o-", color=WEIGHTS, label="latent cross-attention (counted)")
    right.plot(m, cost[0] * m / m[0], ":", color="0.4", label="∝ M·N (slope 1)")
    right.set(xscale="log", yscale="log", xlabel="latents M", ylabel="FLOPs per image",
              title=f"Cost of the latents (N = {n_patches} patches)")
    for ax in (left, right):
        ax.set_xscale("log", base=2)
        ax.set_xticks(m, [str(int(v)) for v in m])
        ax.axvline(n_patches, color="0.7", lw=0.8)
        ax.text(n_patches, 0.02, " M = N", transform=ax.get_xaxis_transform(), fontsize=8, color=GREY)
        ax.legend(fontsize=8, frameon=False)
        ax.grid(alpha=0.3, which="both")
    return fig


def _slope(x: np.ndarray, y: np.ndarray) -> float:
    return float(np.polyfit(np.log(x), np.log(y), 1)[0])


def cost_scaling_figure(mn: Sequence[int], seconds: Sequence[float], flops: Sequence[int]) -> Figure:
    """Measured seconds and counted FLOPs of the latent cross-attention against ``M·N`` (log-log, one panel
    each), each with its slope fitted on the logs (``np.polyfit``) in the legend and a slope-1 guide through the
    first point: a slope near 1 says the cost grows in proportion to M·N."""
    x = _positive("mn", mn, len(mn))
    if x.size < 2:
        raise ValueError(f"need at least 2 sizes M·N to fit a slope; got {x.size}")
    series = [("measured time", "seconds per forward", _positive("seconds", seconds, x.size), DEC),
              ("counted FLOPs", "FLOPs", _positive("flops", flops, x.size), WEIGHTS)]
    fig, axes = plt.subplots(1, 2, figsize=(10.5, 3.8), constrained_layout=True)
    for ax, (name, ylabel, y, color) in zip(axes, series):
        ax.plot(x, y, "o-", color=color, label=f"{name}: fitted slope {_slope(x, y):.2f}")
        ax.plot(x, y[0] * x / x[0], ":", color="0.4", label="slope 1 (∝ M·N)")
        ax.set(xscale="log", yscale="log", xlabel="M·N (latents × patches)", ylabel=ylabel, title=name)
        ax.legend(fontsize=8, frameon=False)
        ax.grid(alpha=0.3, which="both")
    return fig
