"""Attention against the gold word alignments, lessons 07-08: does a head look at the word it translates?

``alignment_figure`` draws a sentence pair with its links; ``attention_with_alignment`` (one head) and
``alignment_grid`` (every head) outline each gold link on a cross-attention heatmap drawn in the course's
convention (``plotting.cross_attention_heatmap``); ``aer_heatmap`` shows each head's alignment error rate
(``metrics.alignment_scores``). Alignment links are ``(source index, target index)`` pairs.

Every function draws into a Matplotlib ``Axes`` (made if not given) and returns it, or returns the
``Figure`` for a grid.
"""
from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import seaborn as sns
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from .plotting import SOURCE_TOKEN_LABEL, WRITTEN_WORD_LABEL, _as_2d_array, attention_grid, attention_heatmap


def alignment_figure(
    source: Sequence[str],
    target: Sequence[str],
    alignment: Sequence[tuple[int, int]],
    *,
    ax: Axes | None = None,
    title: str | None = None,
) -> Axes:
    """A sentence pair as two rows of words, source above target, with a line for each alignment link
    ``(source index, target index)``. Source words with no link are drawn in grey."""
    if any(not (0 <= s < len(source) and 0 <= t < len(target)) for s, t in alignment):
        raise ValueError(f"alignment links must index {len(source)} source and {len(target)} target words; "
                         f"got {list(alignment)}")
    width = max(len(source), len(target))
    if ax is None:
        _, ax = plt.subplots(figsize=(min(10.0, 0.7 * width + 1.0), 1.6))
    x_src = np.linspace(0, width - 1, len(source)) if len(source) > 1 else np.array([(width - 1) / 2])
    x_tgt = np.linspace(0, width - 1, len(target)) if len(target) > 1 else np.array([(width - 1) / 2])
    linked = {s for s, _ in alignment}
    for s, t in alignment:
        ax.plot([x_src[s], x_tgt[t]], [0.82, 0.18], color="C0", alpha=0.7, linewidth=1.4)
    for i, word in enumerate(source):
        ax.text(x_src[i], 0.9, word, ha="center", va="bottom", fontsize=9,
                color="black" if i in linked else "0.6")
    for j, word in enumerate(target):
        ax.text(x_tgt[j], 0.1, word, ha="center", va="top", fontsize=9, color="C3")
    ax.set_xlim(-0.8, width - 0.2)
    ax.set_ylim(-0.15, 1.15)
    ax.axis("off")
    if title:
        ax.set_title(title, fontsize=10)
    return ax


def attention_with_alignment(
    weights: torch.Tensor | np.ndarray,
    source: Sequence[str],
    target: Sequence[str],
    alignment: Sequence[tuple[int, int]] = (),
    *,
    ax: Axes | None = None,
    title: str | None = None,
    cbar: bool = False,
) -> Axes:
    """Cross-attention ``[T, S]`` as a heatmap in the course's convention (rows: the target word being
    written, columns: source tokens), with each gold link ``(source index, target index)`` outlined by a box."""
    ax = attention_heatmap(weights, target, source, ax=ax, title=title, annotate=False, cbar=cbar)
    for s, t in alignment:
        ax.add_patch(plt.Rectangle((s, t), 1, 1, fill=False, edgecolor="C2", linewidth=1.8))
    ax.set_xlabel(SOURCE_TOKEN_LABEL)
    ax.set_ylabel(WRITTEN_WORD_LABEL)
    return ax


def alignment_grid(
    weights: torch.Tensor | np.ndarray,
    source: Sequence[str],
    target: Sequence[str],
    alignment: Sequence[tuple[int, int]],
    *,
    titles: Sequence[str] | None = None,
    n_cols: int | None = None,
    suptitle: str | None = None,
) -> Figure:
    """``attention_grid`` of cross-attention ``[N, T, S]`` (rows: the target word being written, columns:
    source tokens) with each gold link ``(source index, target index)`` outlined in every panel."""
    if any(not (0 <= s < len(source) and 0 <= t < len(target)) for s, t in alignment):
        raise ValueError(f"alignment links must index {len(source)} source and {len(target)} target words; "
                         f"got {list(alignment)}")
    fig = attention_grid(weights, target, source, titles=titles, n_cols=n_cols, suptitle=suptitle,
                         xlabel=SOURCE_TOKEN_LABEL, ylabel=WRITTEN_WORD_LABEL)
    for ax in fig.axes[: len(weights)]:  # the panels come first, the colour bar last
        for s, t in alignment:
            ax.add_patch(plt.Rectangle((s, t), 1, 1, fill=False, edgecolor="C2", linewidth=1.6))
    return fig


def aer_heatmap(per_head: torch.Tensor | np.ndarray, *, ax: Axes | None = None,
                title: str = "alignment error rate of each head", xlabel: str = "decoder cross-attention head") -> Axes:
    """AER ``[layers, heads]`` as an annotated heatmap (lower is better; the best head is outlined)."""
    array = _as_2d_array(per_head, "per_head")
    if ax is None:
        _, ax = plt.subplots(figsize=(1.1 * array.shape[1] + 2.0, 0.8 * array.shape[0] + 1.2))
    sns.heatmap(array, ax=ax, cmap="mako", vmin=0.0, vmax=1.0, annot=True, fmt=".2f", linewidths=0.5,
                linecolor="white", cbar_kws={"label": "AER"},
                xticklabels=[f"head {h}" for h in range(array.shape[1])],
                yticklabels=[f"layer {layer}" for layer in range(array.shape[0])])
    best = np.unravel_index(np.argmin(array), array.shape)
    ax.add_patch(plt.Rectangle((best[1], best[0]), 1, 1, fill=False, edgecolor="C1", linewidth=2.5))
    ax.tick_params(axis="y", rotation=0)
    ax.set_xlabel(xlabel)
    ax.set_title(title)
    return ax
