"""Lesson 13's figures: how cross-attention learns about order (a score bias) and time (a mask).

Pictures of a mechanism: ``draw_biased_cross_attention`` (the data flow of cross-attention with a float bias
``[H, T_q, T_k]`` added to the scores and a bool mask applied as -inf, with the shapes of its arguments),
``plot_permutation_test`` (the weights before and after the source was reordered: the columns move with their
tokens), ``plot_alignment_distance`` (``position.alignment_distance`` and ``position.diagonal_bias`` per head),
``plot_buckets`` (``position.relative_position_buckets`` against the distance) and ``draw_time_masks`` (streaming,
wait-k, Flamingo's "only the latest image" and RETRO's chunk causality as bool masks, built by
``time_mask_examples``; the last two come from ``flamingo_media_mask`` and ``retro_chunk_mask`` here).

Measured charts: ``plot_learning_curves`` (teacher-forced exact match against the training step, from
``order_models.RunRecord``), ``plot_first_errors`` (where the first wrong token falls on inputs longer than any
seen in training), ``plot_wait_k`` (exact match against the lookahead a sentence needs, one line per policy) and
``plot_guided_alignment`` (AER per head with and without an alignment loss on one head).

Colours: queries in ``plotting.COLORS["decoder"]``, keys and values in ``COLORS["encoder"]``, scores and weights in
``COLORS["weights"]``, the bias in green (``BIAS``) and the mask in the blue of ``MASK_COLORS``. Heatmap axes follow
the course's convention (rows: ``WRITTEN_WORD_LABEL``, columns: ``SOURCE_TOKEN_LABEL``). Every function returns a
Matplotlib ``Figure`` and raises ``ValueError`` for inputs that do not fit together.
"""
from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from matplotlib.patches import Patch, Rectangle
from matplotlib.ticker import MaxNLocator, PercentFormatter
from torch import Tensor

from ._checks import shape_str
from ._drawing import FONT, SMALL, arrow, box, canvas, check_sizes, path, plus, shape
from .order_models import RunRecord
from .plotting import ATTENTION_CMAP, COLORS, MASK_COLORS, SOURCE_TOKEN_LABEL, WRITTEN_WORD_LABEL
from .position import (
    alibi_slopes,
    alignment_distance,
    diagonal_bias,
    relative_position_buckets,
    streaming_mask,
    wait_k_mask,
)

__all__ = ["draw_biased_cross_attention", "draw_time_masks", "flamingo_media_mask", "plot_alignment_distance",
           "plot_buckets", "plot_first_errors", "plot_guided_alignment", "plot_learning_curves",
           "plot_permutation_test", "plot_wait_k", "retro_chunk_mask", "time_mask_examples"]

DEC, ENC, WEIGHTS, RES = (COLORS[k] for k in ("decoder", "encoder", "weights", "residual"))
BIAS = "#009E73"  # the score bias (no K/V cache appears in these figures, whose colour this is elsewhere)
MASK = MASK_COLORS[1]
GREY = "0.3"
DISTANCE_CMAP = "vlag"  # diverging, centred at 0: source behind the diagonal (blue) or ahead of it (red)
BIAS_CMAP = "viridis"  # 0 on the diagonal (bright) down to the most negative bias (dark)
WAIT_K_LABEL = re.compile(r"^wait-(\d+)$")


# --- shared helpers --------------------------------------------------------------------------------------------
def _finish(ax: Axes) -> None:
    ax.grid(alpha=0.3)
    ax.spines[["top", "right"]].set_visible(False)


def _matrix(name: str, value: Tensor | np.ndarray) -> np.ndarray:
    """A finite 2-D float array ``[T_q, T_k]`` with both sizes >= 1, or a ValueError naming what came."""
    array = torch.as_tensor(value).detach().cpu().double().numpy()
    if array.ndim != 2 or 0 in array.shape:
        raise ValueError(f"{name} must be one attention matrix [T_q, T_k] with T_q, T_k >= 1; got "
                         f"{shape_str(array.shape)}")
    if not np.isfinite(array).all():
        raise ValueError(f"{name} must hold finite numbers; got NaN or inf")
    return array


def _fraction(name: str, value: object) -> float:
    """A number in 0..1 (a share, drawn in percent), or a ValueError."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) \
            or not 0.0 <= float(value) <= 1.0:
        raise ValueError(f"{name} must be a fraction in 0..1 (drawn in percent); got {value!r}")
    return float(value)


def _is_int(value: object) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _mask_panel(ax: Axes, mask: Tensor, title: str, *, xlabel: str, ylabel: str,
                row_labels: Sequence[str] | None = None) -> None:
    """A bool mask ``[T_q, T_k]`` as a grid in ``MASK_COLORS`` (blue = may attend), white lines between cells."""
    array = mask.numpy()
    t_q, t_k = array.shape
    ax.imshow(array, cmap=ListedColormap(MASK_COLORS), vmin=0, vmax=1, interpolation="nearest", aspect="equal")
    every_k, every_q = -(-t_k // 12), -(-t_q // 12)  # at most about 12 numbers along an axis
    ax.set_xticks(range(0, t_k, every_k))
    rows = range(0, t_q, every_q)
    ax.set_yticks(rows, [row_labels[i] for i in rows] if row_labels is not None else rows)
    ax.set_xticks(np.arange(-0.5, t_k), minor=True)
    ax.set_yticks(np.arange(-0.5, t_q), minor=True)
    ax.grid(which="minor", color="white", linewidth=1.2)
    ax.tick_params(which="minor", length=0)
    ax.tick_params(labelsize=7)
    ax.set_xlabel(xlabel, fontsize=8)
    ax.set_ylabel(ylabel, fontsize=8)
    ax.set_title(title, fontsize=9, loc="left")


def _groups(ax: Axes, starts: Sequence[int], size: int, names: Sequence[str], *, along: str, color: str) -> None:
    """Name groups of ``size`` columns (``along="x"``: the names replace the column numbers) or rows (``"y"``:
    names right of the grid), with a dark line between neighbouring groups."""
    t_q, t_k = ax.images[0].get_array().shape
    if along == "x":
        ax.set_xticks([start + size / 2 - 0.5 for start in starts], names, fontsize=7, color=color,
                      fontweight="bold")
        ax.tick_params(axis="x", length=0)
        ax.xaxis.remove_overlapping_locs = False  # keep the white line at a minor tick under a name
    for start, name in zip(starts, names):
        if along == "y":
            ax.text(t_k - 0.3, start + size / 2 - 0.5, name, ha="left", va="center", fontsize=7, color=color,
                    fontweight="bold")
        if start:
            xs, ys = ([start - 0.5] * 2, [-0.5, t_q - 0.5]) if along == "x" else ([-0.5, t_k - 0.5], [start - 0.5] * 2)
            ax.plot(xs, ys, color="0.15", lw=1.4)


# --- 1. the data flow: a bias shifts scores, a mask removes keys ---------------------------------------------
def _mini_grid(ax: Axes, x0: float, y0: float, values: np.ndarray, cmap: str | ListedColormap, *,
               size: float, vmin: float, vmax: float) -> tuple[float, float]:
    """``values [rows, cols]`` as a small image with its bottom left at ``(x0, y0)`` inches; returns its size."""
    rows, cols = values.shape
    width, height = cols * size, rows * size
    ax.imshow(values, cmap=cmap, vmin=vmin, vmax=vmax, extent=(x0, x0 + width, y0, y0 + height), aspect="auto",
              interpolation="nearest", zorder=2)
    ax.add_patch(Rectangle((x0, y0), width, height, fill=False, edgecolor="0.4", linewidth=0.8, zorder=3))
    return width, height


def draw_biased_cross_attention(t_q: int = 5, t_k: int = 8, d_head: int = 16, n_heads: int = 4) -> Figure:
    """The data flow of one cross-attention layer with a score bias and a time mask, with the shapes of the
    arguments: queries ``[B, H, T_q, d_head]`` from the decoder, keys and values ``[B, H, T_k, d_head]`` from the
    encoder, scores ``Q Kᵀ / √d`` ``[B, H, T_q, T_k]``, ``+ bias [H, T_q, T_k]`` (float, from the alignment
    distance: fixed slopes or learned buckets), the bool mask ``[B, 1, T_q, T_k]`` (True = may attend: padding,
    wait-k) applied as -inf, softmax, ``× V`` and the output ``[B, H, T_q, d_head]``. Two small pictures, computed
    with ``diagonal_bias`` (head 0 of ``alibi_slopes(n_heads)``) and ``wait_k_mask`` (k = 3), show that the bias
    shifts every score while the mask removes keys (pictured for T_q = 5, T_k = 8 when T_q > 16 or T_k > 24).
    Raises ``ValueError`` for sizes that are not positive ints."""
    check_sizes(t_q=t_q, t_k=t_k, d_head=d_head, n_heads=n_heads)
    fig, ax = canvas(10.0, 4.75)
    ax.text(0.15, 4.5, "Cross-attention with a score bias (order) and a mask (time)", fontsize=FONT + 2,
            fontweight="bold", va="center")
    ax.text(0.15, 4.22, f"B sentences, H = {n_heads} heads, T_q = {t_q} target steps, T_k = {t_k} source positions, "
            f"d = d_head = {d_head}", fontsize=SMALL, color=GREY, va="center")
    y = 2.55  # the main line
    xq, xs, xp, xm, xw, xv = 0.85, 2.75, 4.05, 5.45, 6.95, 8.4
    box(ax, xq, 3.5, 1.45, 0.62, "queries Q", color=DEC, shape_text=shape("B", n_heads, t_q, d_head),
        note="from the decoder", fontsize=SMALL)
    box(ax, xq, 2.15, 1.45, 0.62, "keys K", color=ENC, shape_text=shape("B", n_heads, t_k, d_head),
        note="from the encoder", fontsize=SMALL)
    box(ax, xq, 0.85, 1.45, 0.62, "values V", color=ENC, shape_text=shape("B", n_heads, t_k, d_head),
        note="from the encoder", fontsize=SMALL)
    box(ax, xs, y, 1.5, 0.62, "scores", color=WEIGHTS, shape_text=shape("B", n_heads, t_q, t_k),
        note="Q Kᵀ / √d", fontsize=SMALL)
    arrow(ax, (xq + 0.73, 3.5), (xs - 0.75, y + 0.15), color=DEC)
    arrow(ax, (xq + 0.73, 2.15), (xs - 0.75, y - 0.15), color=ENC)
    # + bias: float, added to every score
    plus(ax, xp, y, color=BIAS)
    arrow(ax, (xs + 0.75, y), (xp - 0.13, y), color=WEIGHTS)
    bias_y, bias_h = 3.7, 0.8
    box(ax, xp, bias_y, 2.0, bias_h, "", color=BIAS)
    for i, (text, style) in enumerate((("+ bias (float)", dict(fontweight="bold")),
                                       (shape(n_heads, t_q, t_k), dict(family="monospace")),
                                       ("from the alignment distance:", dict(color=GREY)),
                                       ("fixed slopes or learned buckets", dict(color=GREY)))):
        ax.text(xp, bias_y + 1.5 * 0.16 - i * 0.16, text, ha="center", va="center", fontsize=SMALL, zorder=3, **style)
    arrow(ax, (xp, bias_y - bias_h / 2), (xp, y + 0.13), color=BIAS, label="broadcast over B", side="left")
    # the mask: bool, applied as -inf
    box(ax, xm, y, 1.55, 0.62, "masked_fill", color=MASK, shape_text="~mask → −inf", note="(removes keys)",
        fontsize=SMALL)
    arrow(ax, (xp + 0.13, y), (xm - 0.78, y), color=WEIGHTS)
    box(ax, xm, 1.15, 2.1, 0.62, "mask (bool, True = may attend)", color=MASK, shape_text=shape("B", 1, t_q, t_k),
        note="padding, wait-k", fontsize=SMALL)
    arrow(ax, (xm, 1.46), (xm, y - 0.31), color=MASK, label="broadcast over H", side="right")
    box(ax, xw, y, 1.3, 0.62, "softmax over T_k", color=WEIGHTS, shape_text=shape("B", n_heads, t_q, t_k),
        note="weights", fontsize=SMALL)
    arrow(ax, (xm + 0.78, y), (xw - 0.65, y), color=WEIGHTS)
    box(ax, xv, y, 0.9, 0.5, "× V", color=WEIGHTS, fontsize=FONT)
    arrow(ax, (xw + 0.65, y), (xv - 0.45, y), color=WEIGHTS)
    path(ax, [(xq + 0.73, 0.85), (1.85, 0.85), (1.85, 0.25), (9.6, 0.25), (9.6, y), (xv + 0.45, y)], color=ENC)
    ax.text(6.9, 0.31, f"V {shape('B', n_heads, t_k, d_head)}", ha="center", va="bottom", fontsize=SMALL,
            family="monospace", color=ENC)
    box(ax, xv, 1.3, 1.45, 0.62, "output", color=DEC, shape_text=shape("B", n_heads, t_q, d_head),
        note="heads joined next", fontsize=SMALL)
    arrow(ax, (xv, y - 0.25), (xv, 1.61), color=DEC)
    # what each one does to the scores: computed, not drawn by hand (for a small example when the sizes are large)
    pic_q, pic_k = (t_q, t_k) if t_q <= 16 and t_k <= 24 else (5, 8)
    example = "" if (pic_q, pic_k) == (t_q, t_k) else f"\n(pictured for T_q = {pic_q}, T_k = {pic_k})"
    size = min(0.12, 1.1 / pic_k, 0.6 / pic_q)
    bias = diagonal_bias(pic_q, pic_k, alibi_slopes(n_heads))[0].numpy()
    w, h = _mini_grid(ax, 5.3, bias_y - 0.3, bias, BIAS_CMAP, size=size, vmin=float(bias.min()) - 1e-9, vmax=0.0)
    ax.text(5.3 + w + 0.1, bias_y - 0.3 + h, "the bias of head 0 shifts every score,\nleast near the diagonal "
            "(bright = 0);\nfar keys keep a weight > 0" + example, ha="left", va="top", fontsize=SMALL, color=BIAS)
    k = min(3, pic_k)
    mask = wait_k_mask(pic_q, [pic_k], k)[0, 0].numpy().astype(float)
    w, h = _mini_grid(ax, 2.55, 1.25, mask, ListedColormap(MASK_COLORS), size=size, vmin=0.0, vmax=1.0)
    ax.text(2.45, 1.25 + h / 2, f"wait-{k}:", ha="right", va="center", fontsize=SMALL, color=MASK)
    ax.text(2.55 + w / 2, 1.15, "grey keys are removed:\nweight exactly 0", ha="center", va="top", fontsize=SMALL,
            color=MASK)
    ax.set_xlim(0, 10.0)
    ax.set_ylim(0, 4.75)
    return fig


# --- 2. the permutation test -----------------------------------------------------------------------------------
def _permutation(order: Sequence[int] | Tensor, t_k: int) -> list[int]:
    values = torch.as_tensor(order)
    if values.ndim != 1 or values.dtype == torch.bool or values.is_floating_point():
        raise ValueError(f"order must be a 1-D sequence of ints (a permutation of 0..T_k-1); got {values.dtype} "
                         f"{shape_str(values.shape)}")
    listed = [int(v) for v in values.tolist()]
    if sorted(listed) != list(range(t_k)):
        raise ValueError(f"order must be a permutation of 0..{t_k - 1} (T_k = {t_k}); got {listed}")
    return listed


def plot_permutation_test(weights: Tensor, permuted_weights: Tensor, order: Sequence[int] | Tensor,
                          source_tokens: Sequence[str], target_tokens: Sequence[str],
                          max_abs_output_diff: float) -> Figure:
    """The cross-attention weights ``[T_q, T_k]`` of one head before (left) and after (right) the source was
    reordered: new position ``p`` holds old position ``order[p]``. Each column is labelled with its token below and
    with its position (left) or the position it came from (right) above, in a colour that follows the original
    position; a line under the panels gives the measured ``max_abs_output_diff`` of the outputs. Raises
    ``ValueError`` for matrices that differ in shape, an ``order`` that is not a permutation, token lists of the
    wrong length, a difference that is not a finite number >= 0, or ``permuted_weights`` that is not
    ``weights[:, order]`` (to 1e-5): the figure would claim what was not measured."""
    before, after = _matrix("weights", weights), _matrix("permuted_weights", permuted_weights)
    if before.shape != after.shape:
        raise ValueError(f"weights and permuted_weights must have the same shape [T_q, T_k]; got "
                         f"{shape_str(before.shape)} and {shape_str(after.shape)}")
    t_q, t_k = before.shape
    moved = _permutation(order, t_k)
    if len(source_tokens) != t_k or len(target_tokens) != t_q:
        raise ValueError(f"need T_k = {t_k} source tokens and T_q = {t_q} target tokens; got {len(source_tokens)} "
                         f"and {len(target_tokens)}")
    if isinstance(max_abs_output_diff, bool) or not isinstance(max_abs_output_diff, (int, float, np.floating)) \
            or not math.isfinite(max_abs_output_diff) or max_abs_output_diff < 0:
        raise ValueError(f"max_abs_output_diff must be a finite number >= 0; got {max_abs_output_diff!r}")
    largest = float(np.abs(after - before[:, moved]).max())
    if largest > 1e-5:
        raise ValueError(f"permuted_weights must equal weights[:, order] (to 1e-5), the columns moved with their "
                         f"tokens; got a largest difference of {largest:.3g}")
    panel_w = min(4.4, max(2.2, 0.42 * t_k))
    panel_h = min(4.2, max(1.8, 0.36 * t_q))
    fig, axes = plt.subplots(1, 2, figsize=(2 * panel_w + 2.2, panel_h + 2.2), sharey=True, constrained_layout=True)
    palette = plt.get_cmap("viridis")
    colour = [palette(0.75 * p / max(t_k - 1, 1)) for p in range(t_k)]  # by original position
    vmax = float(max(before.max(), after.max())) or 1.0
    image = None
    panels = ((before, list(range(t_k)), "original order", "position"),
              (after, moved, "source reordered: position p holds old position order[p]", "came from position"))
    for ax, (array, origin, title, top_label) in zip(axes, panels):
        image = ax.imshow(array, cmap=ATTENTION_CMAP, vmin=0, vmax=vmax, aspect="auto", interpolation="nearest")
        ax.set_xticks(range(t_k), [source_tokens[o] for o in origin], rotation=45 if t_k <= 16 else 90,
                      ha="right", rotation_mode="anchor", fontsize=8 if t_k <= 16 else 7)
        for label, o in zip(ax.get_xticklabels(), origin):
            label.set_color(colour[o])
            label.set_fontweight("bold")
        top = ax.secondary_xaxis("top")
        top.set_xticks(range(t_k), [str(o) for o in origin], fontsize=8 if t_k <= 16 else 7,
                       rotation=0 if t_k <= 16 else 90)
        for label, o in zip(top.get_xticklabels(), origin):
            label.set_color(colour[o])
        top.set_xlabel(top_label, fontsize=8)
        ax.set_yticks(range(t_q), list(target_tokens), fontsize=8)
        ax.set_xlabel(SOURCE_TOKEN_LABEL, fontsize=9)
        ax.set_title(title, fontsize=9)
    axes[0].set_ylabel(WRITTEN_WORD_LABEL, fontsize=9)
    fig.colorbar(image, ax=axes.tolist(), shrink=0.85, aspect=25, pad=0.01).set_label("attention weight", fontsize=9)
    fig.suptitle("Reorder the source (keys and values together): each column moves with its token", fontsize=10)
    fig.supxlabel(f"outputs differ by at most {max_abs_output_diff:.1e} (largest |difference| over every output "
                  "number): cross-attention reads the source as a set", fontsize=9)
    return fig


# --- 3. where target step i "should" read: the alignment distance and the fixed bias ------------------------
def _slopes(slopes: Tensor | None) -> Tensor:
    if slopes is None:
        return alibi_slopes(4)
    if not isinstance(slopes, Tensor) or slopes.ndim != 1 or not slopes.is_floating_point() or \
            not 1 <= slopes.numel() <= 16:
        got = f"{slopes.dtype} {shape_str(slopes.shape)}" if isinstance(slopes, Tensor) else type(slopes).__name__
        raise ValueError(f"slopes must be a float tensor [H] with 1 <= H <= 16; got {got}")
    if not torch.isfinite(slopes).all() or bool((slopes <= 0).any()):
        raise ValueError(f"slopes must be finite and > 0 (a penalty that grows with the distance); got "
                         f"{slopes.tolist()}")
    return slopes.detach().cpu()


def plot_alignment_distance(t_q: int, t_k: int, slopes: Tensor | None = None) -> Figure:
    """Left: ``position.alignment_distance(t_q, t_k)`` ``[T_q, T_k]`` as a heatmap (diverging, centred at 0,
    values written when ``t_q * t_k <= 80``) with the diagonal ``j = i · T_k / T_q`` drawn over it. Right: one
    panel per head of ``position.diagonal_bias(t_q, t_k, slopes)`` (default ``alibi_slopes(4)``), titled with its
    slope, on one shared colour scale. Raises ``ValueError`` for sizes that are not positive ints (or above 64), or
    slopes that are not a float ``[H]`` (1 <= H <= 16) of finite numbers > 0."""
    check_sizes(t_q=t_q, t_k=t_k)
    if max(t_q, t_k) > 64:
        raise ValueError(f"t_q and t_k must be at most 64 to stay readable; got t_q={t_q}, t_k={t_k}")
    slopes = _slopes(slopes)
    distance = alignment_distance(t_q, t_k).numpy()
    bias = diagonal_bias(t_q, t_k, slopes.float()).numpy()  # [H, T_q, T_k]
    n_heads = bias.shape[0]
    n_cols = min(n_heads, 2 if n_heads <= 4 else 4)
    n_rows = -(-n_heads // n_cols)
    fig = plt.figure(figsize=(11.0, max(3.6, 1.7 * n_rows + 1.3)), layout="constrained")
    left, right = fig.subfigures(1, 2, width_ratios=[1.0, 1.15], wspace=0.04)
    ax = left.subplots()
    reach = float(np.abs(distance).max()) or 1.0
    image = ax.imshow(distance, cmap=DISTANCE_CMAP, vmin=-reach, vmax=reach, aspect="auto", interpolation="nearest")
    if t_q * t_k <= 80:
        for (i, j), value in np.ndenumerate(distance):
            ax.text(j, i, f"{value:.1f}".replace("-", "−"), ha="center", va="center", fontsize=7,
                    color="white" if abs(value) > 0.6 * reach else "black")
    rate = t_k / t_q
    ax.plot([-0.5 * rate, (t_q - 0.5) * rate], [-0.5, t_q - 0.5], color="black", lw=1.3, ls="--", alpha=0.7,
            label=f"j = i · {t_k}/{t_q} (distance 0)")
    ax.set_xlim(-0.5, t_k - 0.5)
    ax.set_ylim(t_q - 0.5, -0.5)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set(xlabel=SOURCE_TOKEN_LABEL, ylabel=WRITTEN_WORD_LABEL)
    relation = "≠" if t_q != t_k else "="
    ax.set_title(f"alignment distance j − i · S / T\nS = {t_k} source positions {relation} T = {t_q} target steps",
                 fontsize=9)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.16), fontsize=8, frameon=False)
    left.colorbar(image, ax=ax, shrink=0.9, aspect=25).set_label("j − i · S / T  (< 0: behind, > 0: ahead)",
                                                                  fontsize=8)
    axes = np.atleast_1d(right.subplots(n_rows, n_cols, sharex=True, sharey=True, squeeze=False)).ravel()
    low = float(bias.min()) if bias.min() < 0 else -1.0
    for h, panel in enumerate(axes):
        if h >= n_heads:
            panel.axis("off")
            continue
        shown = panel.imshow(bias[h], cmap=BIAS_CMAP, vmin=low, vmax=0.0, aspect="auto", interpolation="nearest")
        panel.set_title(f"head {h}: slope {float(slopes[h]):.3g}" if n_heads <= 4 else
                        f"head {h}: {float(slopes[h]):.3g}", fontsize=8 if n_heads <= 4 else 7)
        panel.tick_params(labelsize=7)
        panel.xaxis.set_major_locator(MaxNLocator(integer=True))
        panel.yaxis.set_major_locator(MaxNLocator(integer=True))
    right.colorbar(shown, ax=axes.tolist(), shrink=0.85, aspect=30).set_label("bias = −slope · |distance|",
                                                                              fontsize=8)
    right.supxlabel(SOURCE_TOKEN_LABEL, fontsize=8)
    right.supylabel(WRITTEN_WORD_LABEL, fontsize=8)
    right.suptitle("diagonal_bias per head" + ("" if n_heads <= 4 else " (title: head: slope)") +
                   ": steep heads stay near the diagonal", fontsize=9)
    return fig


# --- 4. T5-style buckets of the distance ---------------------------------------------------------------------
def plot_buckets(n_buckets: int = 16, max_distance: int = 32, span: int = 48) -> Figure:
    """The bucket of every integer distance ``-span .. span`` under
    ``position.relative_position_buckets(..., bidirectional=True)`` as a step plot, with the exact region (one
    bucket per distance), the logarithmic region and ``±max_distance`` (beyond it every distance shares the last
    bucket of its side) marked. Raises ``ValueError`` for sizes that are not positive ints, ``n_buckets < 2`` or
    ``span > 4096``."""
    check_sizes(n_buckets=n_buckets, max_distance=max_distance, span=span)
    if n_buckets < 2 or span > 4096:
        raise ValueError(f"n_buckets must be >= 2 (half for each side) and span at most 4096; got "
                         f"n_buckets={n_buckets}, span={span}")
    distance = torch.arange(-span, span + 1)
    buckets = relative_position_buckets(distance, n_buckets, max_distance, bidirectional=True)
    half = n_buckets // 2
    exact = half // 2  # magnitudes below this get a bucket each
    fig, ax = plt.subplots(figsize=(9.5, 4.3), constrained_layout=True)
    ceiling = 1.3 * n_buckets  # room above the steps for the names of the regions
    top = ceiling - 0.1 * n_buckets
    label_box = dict(boxstyle="square,pad=0.15", facecolor="white", edgecolor="none", alpha=0.85)
    if exact > 0:
        ax.axvspan(-(exact - 0.5), exact - 0.5, color=BIAS, alpha=0.12, lw=0)
        ax.text(0, top, f"exact:\none bucket\nper |d| < {exact}", ha="center", va="top", fontsize=8, color=BIAS)
    log_end = min(max_distance, span + 1)
    if max_distance > exact and log_end > exact:
        for sign in (-1, 1):
            ends = sorted((sign * (exact - 0.5), sign * (log_end - 0.5)))
            ax.axvspan(*ends, color=DEC, alpha=0.08, lw=0)
            ax.text(sum(ends) / 2, top, f"logarithmic:\n{exact} ≤ |d| < {max_distance}", ha="center", va="top",
                    fontsize=8, color=DEC)
    ax.step(distance.numpy(), buckets.numpy(), where="mid", color=ENC, lw=1.6, marker="o", ms=2.5)
    if max_distance <= span:
        for sign in (-1, 1):
            ax.axvline(sign * max_distance, color=GREY, ls="--", lw=1.1)
            mark = "−" if sign < 0 else "+"
            ax.text(sign * (max_distance - 0.8), 0.2, f"{mark}max_distance = {mark}{max_distance}\nbeyond: all share\n"
                    "the side's last bucket", ha="left" if sign < 0 else "right", va="bottom", fontsize=8, color=GREY)
    else:
        ax.text(0.01, 0.02, f"max_distance = {max_distance} lies beyond the span shown", transform=ax.transAxes,
                fontsize=8, color=GREY)
    ax.text(-span, half - 0.3, f"d ≤ 0 (source behind the diagonal): buckets 0 … {half - 1}", fontsize=8,
            color=ENC, va="bottom", bbox=label_box)
    ax.text(span, half - 0.3, f"d > 0 (source ahead of it): buckets {half} … {2 * half - 1}", fontsize=8,
            color=ENC, va="bottom", ha="right", bbox=label_box)
    ax.axhline(half - 0.5, color="0.75", lw=0.8)
    ax.set(xlabel="alignment distance d = j − i · S / T (rounded)", ylabel="bucket index",
           xlim=(-span - 0.5, span + 0.5), ylim=(-0.7, ceiling),
           title=f"relative_position_buckets: n_buckets = {n_buckets}, max_distance = {max_distance}, bidirectional")
    ax.set_yticks(range(0, n_buckets, max(1, n_buckets // 8)))
    _finish(ax)
    return fig


# --- 5. learning curves ----------------------------------------------------------------------------------------
def _record(label: str, record: object) -> tuple[list[int], list[float]]:
    steps, values = getattr(record, "eval_steps", None), getattr(record, "eval_exact_match", None)
    if not isinstance(record, RunRecord) and (steps is None or values is None):
        raise ValueError(f"records[{label!r}] must be a RunRecord (eval_steps, eval_exact_match); got "
                         f"{type(record).__name__}")
    steps, values = list(steps), list(values)
    if not steps or len(steps) != len(values):
        raise ValueError(f"records[{label!r}] needs as many eval_steps as eval_exact_match values, at least one; got "
                         f"{len(steps)} and {len(values)}")
    if any(not _is_int(s) or s < 0 for s in steps) or any(b <= a for a, b in zip(steps, steps[1:])):
        raise ValueError(f"records[{label!r}].eval_steps must be increasing ints >= 0; got {steps}")
    return steps, [_fraction(f"records[{label!r}].eval_exact_match", v) for v in values]


def plot_learning_curves(records: Mapping[str, RunRecord], *, target: float | None = None,
                         title: str = "Teacher-forced validation exact match while training") -> Figure:
    """Teacher-forced validation exact match (0..1, drawn in percent) against the training step, one line per
    ``records[label]`` (``RunRecord.eval_steps``, ``eval_exact_match``). With ``target``: a dashed line at it and,
    per run, a ring where it first reached it (``RunRecord.steps_to``), the step written in its legend entry.
    Raises ``ValueError`` for no records, records without evaluations, values outside 0..1 or a target outside
    0..1."""
    if not isinstance(records, Mapping) or not records:
        raise ValueError(f"records must map at least one label to a RunRecord; got {records!r}")
    if target is not None:
        target = _fraction("target", target)
    fig, ax = plt.subplots(figsize=(8.0, 4.3), constrained_layout=True)
    for index, (label, record) in enumerate(records.items()):
        steps, values = _record(label, record)
        color = f"C{index % 10}"
        text = str(label)
        if target is not None:
            reached = RunRecord(eval_steps=steps, eval_exact_match=values).steps_to(target)
            text += f": {target:.0%} at step {reached:,}" if reached is not None else f": never {target:.0%}"
        ax.plot(steps, values, "-", marker="o", ms=3, color=color, label=text)
        if target is not None and reached is not None:
            ax.plot([reached], [values[steps.index(reached)]], "o", ms=11, mfc="none", mec=color, mew=1.8)
    if target is not None:
        ax.plot([], [], "o", ms=11, mfc="none", mec=GREY, mew=1.8, label="first evaluation at or above the target")
        ax.axhline(target, color=GREY, ls="--", lw=1, zorder=0)
        ax.annotate(f"target {target:.0%}", (0, target), xycoords=("axes fraction", "data"), xytext=(3, 3),
                    textcoords="offset points", fontsize=8, color=GREY, va="bottom")
    ax.set(xlabel="training step", ylabel="validation exact match (teacher-forced)", ylim=(-0.03, 1.05),
           title=title)
    ax.set_xlim(left=0)
    ax.yaxis.set_major_formatter(PercentFormatter(1.0))
    ax.legend(fontsize=8, frameon=True, framealpha=0.9, edgecolor="none", loc="center right")
    _finish(ax)
    return fig


# --- 6. where the first error falls on longer inputs ---------------------------------------------------------
def plot_first_errors(first_errors: Mapping[str, Sequence[int | None]], *, trained_up_to: int,
                      title: str = "Where the first wrong token falls on inputs longer than in training") -> Figure:
    """Per variant, the number of test outputs whose first wrong token sits at each target position (0-based,
    ``metrics.first_error``), as overlaid step outlines (``first_errors[label]``: one position per output, None
    when it is all right; those are counted in the legend as "all right: n"). A dashed line between positions
    ``trained_up_to - 1`` and ``trained_up_to`` marks the end of what training showed (``trained_up_to``: the
    longest training target in tokens, ``<eos>`` included). Raises ``ValueError`` for no variants, an empty list,
    positions that are not ints >= 0 (or None), or ``trained_up_to`` that is not a positive int."""
    check_sizes(trained_up_to=trained_up_to)
    if not isinstance(first_errors, Mapping) or not first_errors:
        raise ValueError(f"first_errors must map at least one label to a list of positions; got {first_errors!r}")
    for label, positions in first_errors.items():
        if isinstance(positions, (str, bytes)) or not isinstance(positions, Sequence) or len(positions) == 0:
            raise ValueError(f"first_errors[{label!r}] must be a non-empty list of positions (int >= 0 or None); got "
                             f"{positions!r}")
        bad = [p for p in positions if p is not None and (not _is_int(p) or p < 0)]
        if bad:
            raise ValueError(f"first_errors[{label!r}] must hold ints >= 0 or None; got {bad[:5]}")
    last = max([p for positions in first_errors.values() for p in positions if p is not None] + [trained_up_to])
    edges = np.arange(-0.5, last + 1.5)
    fig, ax = plt.subplots(figsize=(8.5, 4.2), constrained_layout=True)
    styles = ("-", "--", "-.", ":")
    for index, (label, positions) in enumerate(first_errors.items()):
        wrong = [int(p) for p in positions if p is not None]
        counts = np.bincount(wrong, minlength=last + 1) if wrong else np.zeros(last + 1, dtype=int)
        color = f"C{index % 10}"
        ax.stairs(counts, edges, color=color, lw=1.8, ls=styles[index % len(styles)], fill=False,
                  label=f"{label}: wrong {len(wrong)}, all right: {len(positions) - len(wrong)}")
        ax.stairs(counts, edges, color=color, alpha=0.12, fill=True)
    ax.axvline(trained_up_to - 0.5, color="black", ls="--", lw=1.2)
    ax.annotate(f"longest target in training: {trained_up_to} tokens\n(positions 0–{trained_up_to - 1}); "
                "right of this line: never trained", (trained_up_to - 0.5, 1.0), xycoords=("data", "axes fraction"),
                xytext=(4, -3) if trained_up_to < 0.6 * (last + 1) else (-4, -3), textcoords="offset points",
                ha="left" if trained_up_to < 0.6 * (last + 1) else "right", va="top", fontsize=8)
    ax.set(xlabel="target position of the first wrong token (0-based)", ylabel="outputs", title=title)
    ax.set_xlim(-0.5, last + 0.5)
    ax.set_ylim(0, 1.3 * max(1.0, ax.get_ylim()[1]))
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    fig.legend(fontsize=8, frameon=False, loc="outside lower center", ncol=min(3, len(first_errors)))
    _finish(ax)
    return fig


# --- 7. masks that restrict time: streaming, wait-k, Flamingo, RETRO ----------------------------------------
def flamingo_media_mask(image_of_token: Sequence[int] | Tensor, patches_per_image: int, n_images: int) -> Tensor:
    """Flamingo's cross-attention mask: each text token sees only the patches of the most recent image before it.

    Args:
        image_of_token: ``[T_q]`` ints: the index of the most recent image before token ``i``, or -1 for none yet
            (that token sees nothing). It cannot decrease: a later token's latest image is the same or a later one.
        patches_per_image: patches (keys) per image; image ``m`` holds keys ``m · P .. (m + 1) · P - 1``.
        n_images: images in the interleaved sequence.

    Returns:
        bool ``[T_q, n_images · patches_per_image]``, True = may attend.

    Raises:
        ValueError: for sizes that are not positive ints, or ``image_of_token`` that is not a non-empty 1-D int
        sequence in ``-1 .. n_images - 1`` that never decreases.
    """
    check_sizes(patches_per_image=patches_per_image, n_images=n_images)
    images = torch.as_tensor(image_of_token)
    if images.ndim != 1 or images.numel() == 0 or images.dtype == torch.bool or images.is_floating_point():
        raise ValueError(f"image_of_token must be a non-empty 1-D int sequence [T_q]; got {images.dtype} "
                         f"{shape_str(images.shape)}")
    images = images.long().cpu()
    if int(images.min()) < -1 or int(images.max()) >= n_images:
        raise ValueError(f"image_of_token must lie in -1 .. n_images - 1 = {n_images - 1}; got {images.tolist()}")
    if bool((images[1:] < images[:-1]).any()):
        raise ValueError(f"image_of_token must never decrease (the most recent image can only be a later one); got "
                         f"{images.tolist()}")
    image_of_key = torch.arange(n_images * patches_per_image) // patches_per_image  # [T_k]
    return image_of_key[None, :] == images[:, None]  # -1 matches no key


def retro_chunk_mask(t_q: int, chunk_size: int, neighbours_per_chunk: int) -> Tensor:
    """RETRO-style chunked cross-attention: the target is cut into chunks of ``chunk_size`` steps, and the rows of
    chunk ``c`` may read only the retrieved neighbours of chunk ``c - 1`` (what was retrieved with the text written
    so far); the first chunk reads nothing. Keys: ``neighbours_per_chunk`` tokens per chunk, chunk by chunk,
    ``T_k = ceil(t_q / chunk_size) · neighbours_per_chunk``. (RETRO itself shifts this by one step, so the last
    token of chunk ``c - 1`` already reads them; left out here.)

    Returns:
        bool ``[T_q, T_k]``, True = may attend.

    Raises:
        ValueError: for sizes that are not positive ints.
    """
    check_sizes(t_q=t_q, chunk_size=chunk_size, neighbours_per_chunk=neighbours_per_chunk)
    n_chunks = -(-t_q // chunk_size)
    chunk_of_row = torch.arange(t_q) // chunk_size  # [T_q]
    chunk_of_key = torch.arange(n_chunks * neighbours_per_chunk) // neighbours_per_chunk  # [T_k]
    return chunk_of_key[None, :] == chunk_of_row[:, None] - 1


def time_mask_examples(t_q: int = 8, t_k: int = 10) -> dict[str, Tensor]:
    """The four bool masks ``[T_q, T_k']`` that ``draw_time_masks`` draws, by name: ``"streaming"`` (step ``i``
    has received ``min(2 + i · t_k // t_q, t_k)`` source tokens), ``"wait-3"`` (one sentence of ``t_k`` tokens),
    ``"flamingo"`` (3 images of ``t_k // 3`` patches; the target's steps split into three near-equal runs, each
    after one image) and ``"retro"`` (chunks of ``max(1, t_q // 4)`` steps, ``max(1, t_k // n_chunks)``
    neighbour tokens per chunk). Raises ``ValueError`` for ``t_q < 1`` or ``t_k < 3``."""
    check_sizes(t_q=t_q, t_k=t_k)
    if t_k < 3:
        raise ValueError(f"t_k must be at least 3 (three images of t_k // 3 patches); got {t_k}")
    visible = torch.tensor([min(2 + i * t_k // t_q, t_k) for i in range(t_q)])
    chunk = max(1, t_q // 4)
    n_chunks = -(-t_q // chunk)
    return {"streaming": streaming_mask(visible, t_k),
            "wait-3": wait_k_mask(t_q, [t_k], 3)[0, 0],
            "flamingo": flamingo_media_mask([min(i * 3 // t_q, 2) for i in range(t_q)], t_k // 3, 3),
            "retro": retro_chunk_mask(t_q, chunk, max(1, t_k // n_chunks))}


def draw_time_masks(t_q: int = 8, t_k: int = 10) -> Figure:
    """Four cross-attention masks that restrict what a target step may read (blue = may attend, target steps as
    rows), from ``time_mask_examples``: (a) streaming, step ``i`` reads the ``g(i)`` source tokens received so far
    (``position.streaming_mask``); (b) wait-3 on one sentence of ``t_k`` tokens (``position.wait_k_mask``);
    (c) Flamingo, each text token sees only the most recent image's patches (``flamingo_media_mask``); (d) RETRO,
    each chunk reads only the neighbours retrieved for the chunk before it (``retro_chunk_mask``). Raises
    ``ValueError`` for ``t_q < 1``, ``t_k < 3`` or sizes above 24."""
    check_sizes(t_q=t_q, t_k=t_k)
    if max(t_q, t_k) > 24:
        raise ValueError(f"t_q and t_k must be at most 24 to stay readable; got t_q={t_q}, t_k={t_k}")
    masks = time_mask_examples(t_q, t_k)
    visible = masks["streaming"].sum(dim=1).tolist()
    widths = [m.shape[1] for m in masks.values()]
    cell = 9.0 / sum(widths)  # inches per cell, about
    fig, axes = plt.subplots(1, 4, figsize=(12.0, cell * t_q + 1.8), constrained_layout=True,
                             gridspec_kw={"width_ratios": widths})
    ax_s, ax_w, ax_f, ax_r = axes
    _mask_panel(ax_s, masks["streaming"], "(a) streaming: g(i) tokens received\nstep i reads only what has arrived",
                xlabel=SOURCE_TOKEN_LABEL, ylabel=f"{WRITTEN_WORD_LABEL} i (g(i))",
                row_labels=[f"{i} ({g})" for i, g in enumerate(visible)])
    _mask_panel(ax_w, masks["wait-3"], f"(b) wait-3, one sentence of {t_k}\nwait for 3 tokens, then one per word",
                xlabel=SOURCE_TOKEN_LABEL, ylabel=WRITTEN_WORD_LABEL)
    patches = t_k // 3
    image_of_token = [min(i * 3 // t_q, 2) for i in range(t_q)]
    _mask_panel(ax_f, masks["flamingo"], "(c) Flamingo: image, text, image, …\na token sees only the latest image",
                xlabel=f"image patches ({patches} per image)", ylabel="text token")
    _groups(ax_f, [m * patches for m in range(3)], patches, [f"image {m + 1}" for m in range(3)], along="x",
            color=ENC)
    starts = [image_of_token.index(m) for m in range(3) if m in image_of_token]
    for start, m in zip(starts, sorted(set(image_of_token))):
        size = image_of_token.count(m)
        ax_f.text(masks["flamingo"].shape[1] - 0.3, start + size / 2 - 0.5, f"after\nimage {m + 1}", ha="left",
                  va="center", fontsize=7, color=DEC)
        if start:
            ax_f.plot([-0.5, masks["flamingo"].shape[1] - 0.5], [start - 0.5] * 2, color="0.15", lw=1.4)
    chunk = max(1, t_q // 4)
    n_chunks = -(-t_q // chunk)
    per_chunk = masks["retro"].shape[1] // n_chunks
    _mask_panel(ax_r, masks["retro"], f"(d) RETRO: chunks of {chunk} steps\nchunk c reads neighbours of chunk c − 1",
                xlabel=f"retrieved neighbours ({per_chunk} tokens per chunk)", ylabel="target step (by chunk)")
    _groups(ax_r, [c * per_chunk for c in range(n_chunks)], per_chunk, [f"N({c + 1})" for c in range(n_chunks)],
            along="x", color=ENC)
    _groups(ax_r, [c * chunk for c in range(n_chunks)], chunk, [f"chunk {c + 1}" for c in range(n_chunks)],
            along="y", color=DEC)
    handles = [Patch(color=MASK_COLORS[1], label="may attend (True)"),
               Patch(color=MASK_COLORS[0], label="blocked (False)")]
    fig.legend(handles=handles, loc="outside lower center", ncol=2, fontsize=8, frameon=False)
    fig.suptitle("Masks that restrict time: a target step reads only the source that exists when it is written "
                 "(N(c): neighbours retrieved for chunk c)", fontsize=10)
    return fig


# --- 8. wait-k against the lookahead a sentence needs --------------------------------------------------------
def _wait_results(results: Mapping[str, Mapping[int, tuple[int, float]]]) -> dict[int, int]:
    """Check ``results`` and return the number of sentences per needed wait (the same for every policy)."""
    if not isinstance(results, Mapping) or not results:
        raise ValueError(f"results must map at least one policy label to {{needed wait: (sentences, exact match)}}; "
                         f"got {results!r}")
    counts: dict[int, int] = {}
    for label, by_wait in results.items():
        if not isinstance(by_wait, Mapping) or not by_wait:
            raise ValueError(f"results[{label!r}] must map needed waits to (sentences, exact match); got {by_wait!r}")
        for wait, pair in by_wait.items():
            if not _is_int(wait) or wait < 1:
                raise ValueError(f"results[{label!r}]: a needed wait must be an int >= 1; got {wait!r}")
            if not isinstance(pair, (tuple, list)) or len(pair) != 2 or not _is_int(pair[0]) or pair[0] < 1:
                raise ValueError(f"results[{label!r}][{wait}] must be (sentences >= 1, exact match in 0..1); got "
                                 f"{pair!r}")
            _fraction(f"results[{label!r}][{wait}] exact match", pair[1])
            if counts.setdefault(int(wait), int(pair[0])) != pair[0]:
                raise ValueError(f"every policy must be measured on the same sentences: {counts[int(wait)]} and "
                                 f"{pair[0]} sentences need wait {wait} (results[{label!r}])")
    return dict(sorted(counts.items()))


def plot_wait_k(results: Mapping[str, Mapping[int, tuple[int, float]]]) -> Figure:
    """Exact match (drawn in percent) against the lookahead a sentence needs (``order_models.required_wait``: the
    smallest k that lets every target word see the source words aligned to it), one line per policy:
    ``results[label][needed_wait] = (sentences, exact match)`` (``order_runs.exact_match_by_wait``). The number of
    sentences per needed wait is written under the axis; for a label ``"wait-K"``, a light vertical line at
    ``x = K`` in the line's colour: sentences at or left of it are translatable in principle. Raises ``ValueError``
    for no policies, waits that are not ints >= 1, counts < 1, exact match outside 0..1, or policies that disagree
    on how many sentences need a wait."""
    counts = _wait_results(results)
    waits = list(counts)
    fig, ax = plt.subplots(figsize=(8.0, 4.4), constrained_layout=True)
    for index, (label, by_wait) in enumerate(results.items()):
        color = f"C{index % 10}"
        xs = sorted(by_wait)
        ax.plot(xs, [by_wait[x][1] for x in xs], "-", marker="os^Dv<>"[index % 7], color=color, label=str(label),
                ms=6, lw=1.6)
        match = WAIT_K_LABEL.match(str(label))
        if match:
            k = int(match.group(1))
            ax.axvline(k, color=color, alpha=0.35, lw=4, zorder=0)
            ax.annotate(f"k = {k}", (k, 1.0), xycoords=("data", "axes fraction"), xytext=(0, 2),
                        textcoords="offset points", ha="center", va="bottom", fontsize=8, color=color)
    ax.set_xticks(waits, [f"{w}\n{counts[w]:,} sent." for w in waits])
    low = min(waits + [int(m.group(1)) for m in map(WAIT_K_LABEL.match, map(str, results)) if m])
    high = max(waits + [int(m.group(1)) for m in map(WAIT_K_LABEL.match, map(str, results)) if m])
    ax.set_xlim(low - 0.5, high + 0.5)
    ax.set(xlabel="lookahead the sentence needs (required_wait), with the sentences that need it",
           ylabel="exact match", ylim=(-0.03, 1.05))
    ax.set_title("wait-K translates the sentences that need at most K tokens of lookahead (shaded line: x = K)",
                 fontsize=10, pad=14)
    ax.yaxis.set_major_formatter(PercentFormatter(1.0))
    ax.legend(fontsize=8, frameon=True, framealpha=0.9, edgecolor="none", loc="center left", bbox_to_anchor=(1.01, 0.5),
              title="policy", title_fontsize=8)
    _finish(ax)
    return fig


# --- 9. an alignment loss on one head --------------------------------------------------------------------------
def plot_guided_alignment(aer_control: Tensor, aer_guided: Tensor, exact_control: float, exact_guided: float,
                          guided_head: tuple[int, int]) -> Figure:
    """AER per (decoder layer, head) of two models as grouped bars: the control and the model trained with an
    alignment loss on ``guided_head = (layer, head)`` (``[L, H]`` each, 0..1, lower = closer to the gold
    alignment); the guided head's group is shaded and named, and both models' exact match is written in a box.
    Raises ``ValueError`` for AER tensors that are not the same ``[L, H]`` of values in 0..1, exact match outside
    0..1, or a ``guided_head`` outside ``[L, H]``."""
    control, guided = (torch.as_tensor(a).detach().cpu().double() for a in (aer_control, aer_guided))
    if control.ndim != 2 or control.shape != guided.shape or control.numel() == 0:
        raise ValueError(f"aer_control and aer_guided must both be [L, H]; got {shape_str(control.shape)} and "
                         f"{shape_str(guided.shape)}")
    for name, values in (("aer_control", control), ("aer_guided", guided)):
        if not torch.isfinite(values).all() or bool((values < 0).any() | (values > 1).any()):
            raise ValueError(f"{name} must hold AER values in 0..1; got {values.tolist()}")
    exact_control, exact_guided = _fraction("exact_control", exact_control), _fraction("exact_guided", exact_guided)
    n_layers, n_heads = control.shape
    if not isinstance(guided_head, (tuple, list)) or len(guided_head) != 2 or not all(map(_is_int, guided_head)) \
            or not (0 <= guided_head[0] < n_layers and 0 <= guided_head[1] < n_heads):
        raise ValueError(f"guided_head must be (layer, head) with 0 <= layer < {n_layers} and 0 <= head < {n_heads}; "
                         f"got {guided_head!r}")
    layer, head = guided_head
    count = n_layers * n_heads
    x = np.arange(count)
    chosen = layer * n_heads + head
    fig, ax = plt.subplots(figsize=(min(12.0, max(6.5, 0.55 * count + 2.5)), 4.3), constrained_layout=True)
    ax.axvspan(chosen - 0.5, chosen + 0.5, color=BIAS, alpha=0.15, lw=0)
    ax.bar(x - 0.19, control.flatten().numpy(), width=0.38, color="0.6", label="control (no alignment loss)")
    ax.bar(x + 0.19, guided.flatten().numpy(), width=0.38, color=BIAS, label=f"alignment loss on layer {layer}, "
           f"head {head}")
    labels = [f"L{lay}\nH{h}" for lay in range(n_layers) for h in range(n_heads)]
    ax.set_xticks(x, labels, fontsize=8 if count <= 24 else 6)
    ax.get_xticklabels()[chosen].set_fontweight("bold")
    ax.annotate("guided head", (chosen, 1.0), xycoords=("data", "axes fraction"), xytext=(0, 2),
                textcoords="offset points", ha="center", va="bottom", fontsize=8, color=BIAS, fontweight="bold")
    for layer_start in range(n_heads, count, n_heads):
        ax.axvline(layer_start - 0.5, color="0.7", lw=0.8)
    ax.set(xlabel="decoder layer L, head H", ylabel="AER (0 = the gold alignment)", ylim=(0, 1.02),
           xlim=(-0.6, count - 0.4))
    ax.set_title(f"Alignment error rate per cross-attention head, with and without an alignment loss on one head\n"
                 f"exact match: control {exact_control:.1%}, guided {exact_guided:.1%}", fontsize=10, pad=14)
    fig.legend(fontsize=8, frameon=False, loc="outside lower center", ncol=2)
    ax.grid(alpha=0.3, axis="y")
    ax.spines[["top", "right"]].set_visible(False)
    return fig
