"""Figures for attention: heatmaps with token labels, grids of heads, and loss curves.

Every function draws into a Matplotlib ``Axes`` (made if not given) and returns it, or returns the
``Figure`` for multi-panel plots, so notebooks and widgets can place figures where they like.
"""
from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import seaborn as sns
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import FormatStrFormatter, NullFormatter

from ._checks import shape_str

ATTENTION_CMAP = "rocket_r"  # light = little attention, dark = much


def _as_2d_array(weights: torch.Tensor | np.ndarray, name: str = "weights") -> np.ndarray:
    array = weights.detach().float().cpu().numpy() if isinstance(weights, torch.Tensor) else np.asarray(weights)
    if array.ndim != 2:
        raise ValueError(f"{name} must be 2-D [T_q, T_k]; got shape {shape_str(array.shape)}")
    return array


def _check_labels(array: np.ndarray, query_labels: Sequence[str] | None, key_labels: Sequence[str] | None) -> None:
    if query_labels is not None and len(query_labels) != array.shape[0]:
        raise ValueError(f"{len(query_labels)} query labels for {array.shape[0]} query rows (weights {array.shape})")
    if key_labels is not None and len(key_labels) != array.shape[1]:
        raise ValueError(f"{len(key_labels)} key labels for {array.shape[1]} key columns (weights {array.shape})")


def attention_heatmap(
    weights: torch.Tensor | np.ndarray,
    query_labels: Sequence[str] | None = None,
    key_labels: Sequence[str] | None = None,
    *,
    ax: Axes | None = None,
    title: str | None = None,
    annotate: bool | None = None,
    vmin: float | None = 0.0,
    vmax: float | None = 1.0,
    cmap: str = ATTENTION_CMAP,
    cbar: bool = True,
    masked: torch.Tensor | np.ndarray | None = None,
) -> Axes:
    """Heatmap of one attention matrix ``[T_q, T_k]``: rows are queries, columns keys.

    ``annotate`` writes the values in the cells (default: only for small matrices); ``masked`` (bool
    ``[T_q, T_k]``, True = masked) hatches the cells a mask removed. For raw scores rather than
    weights, pass ``vmin=None, vmax=None`` and a diverging ``cmap`` such as ``"vlag"``.
    """
    array = _as_2d_array(weights)
    _check_labels(array, query_labels, key_labels)
    if ax is None:
        height = max(2.2, 0.38 * array.shape[0] + 1.0)
        width = max(3.0, 0.45 * array.shape[1] + 1.6)
        _, ax = plt.subplots(figsize=(width, height))
    annotate = array.size <= 64 if annotate is None else annotate
    sns.heatmap(
        array, ax=ax, cmap=cmap, vmin=vmin, vmax=vmax, square=False, cbar=cbar,
        annot=annotate, fmt=".2f", annot_kws={"fontsize": 8}, linewidths=0.5, linecolor="white",
        xticklabels=list(key_labels) if key_labels is not None else "auto",
        yticklabels=list(query_labels) if query_labels is not None else "auto",
    )
    if masked is not None:
        masked_array = _as_2d_array(masked, "masked").astype(bool)
        for row, col in zip(*np.nonzero(masked_array)):
            ax.add_patch(plt.Rectangle((col, row), 1, 1, fill=False, hatch="///", edgecolor="0.6", linewidth=0))
    ax.set_xlabel("keys (attended to)")
    ax.set_ylabel("queries (attending)")
    ax.tick_params(axis="x", rotation=45)
    ax.tick_params(axis="y", rotation=0)
    if title:
        ax.set_title(title)
    return ax


def attention_grid(
    weights: torch.Tensor | np.ndarray,
    query_labels: Sequence[str] | None = None,
    key_labels: Sequence[str] | None = None,
    *,
    titles: Sequence[str] | None = None,
    n_cols: int | None = None,
    suptitle: str | None = None,
    panel_size: float = 2.6,
) -> Figure:
    """One heatmap per head (or per layer): ``weights [N, T_q, T_k]``, any N, laid out in a grid."""
    array = weights.detach().float().cpu().numpy() if isinstance(weights, torch.Tensor) else np.asarray(weights)
    if array.ndim != 3:
        raise ValueError(f"weights must be 3-D [N, T_q, T_k] (e.g. heads); got shape {shape_str(array.shape)}")
    count = array.shape[0]
    n_cols = min(count, 4) if n_cols is None else n_cols
    n_rows = -(-count // n_cols)
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(panel_size * n_cols + 0.6, panel_size * n_rows + 0.4),
                             squeeze=False, constrained_layout=True)
    for index, ax in enumerate(axes.flat):
        if index >= count:
            ax.axis("off")
            continue
        attention_heatmap(array[index], query_labels, key_labels, ax=ax, cbar=False, annotate=False,
                          title=titles[index] if titles else f"head {index}")
        if index % n_cols:
            ax.set_ylabel("")
        if index < count - n_cols:
            ax.set_xlabel("")
    if suptitle:
        fig.suptitle(suptitle)
    return fig


def loss_curve(history: Sequence[float], *, ax: Axes | None = None, label: str = "training loss",
               smoothing: int = 1) -> Axes:
    """Plot a loss history (optionally smoothed with a moving average of ``smoothing`` steps)."""
    values = np.asarray(history, dtype=float)
    if ax is None:
        _, ax = plt.subplots(figsize=(5, 3))
    if smoothing > 1 and len(values) >= smoothing:
        kernel = np.ones(smoothing) / smoothing
        ax.plot(np.arange(smoothing - 1, len(values)), np.convolve(values, kernel, mode="valid"), label=label)
    else:
        ax.plot(values, label=label)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.grid(alpha=0.3)
    ax.legend()
    return ax


# --- lesson 07: alignments, training curves, AER ------------------------------------------------------
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
    """Cross-attention ``[T, S]`` (rows: target words, columns: source words) as a heatmap, with each
    gold link ``(source index, target index)`` outlined by a box."""
    ax = attention_heatmap(weights, target, source, ax=ax, title=title, annotate=False, cbar=cbar)
    for s, t in alignment:
        ax.add_patch(plt.Rectangle((s, t), 1, 1, fill=False, edgecolor="C2", linewidth=1.8))
    ax.set_xlabel("source (keys)")
    ax.set_ylabel("target (queries)")
    return ax


def training_curves(history: object, *, smoothing: int = 20) -> Figure:
    """Training loss (smoothed) against seconds and validation exact match, side by side, from a
    ``course_lib.training.History``."""
    fig, (ax_loss, ax_em) = plt.subplots(1, 2, figsize=(9, 3), constrained_layout=True)
    elapsed, loss = np.asarray(history.elapsed, float), np.asarray(history.loss, float)
    if len(loss):
        ax_loss.plot(elapsed, loss, color="C0", alpha=0.25, linewidth=0.8)
        if len(loss) >= smoothing:
            smooth = np.convolve(loss, np.ones(smoothing) / smoothing, mode="valid")
            ax_loss.plot(elapsed[smoothing - 1:], smooth, color="C0", label=f"mean of {smoothing} steps")
            ax_loss.legend(loc="upper right")
        ax_loss.set_yscale("log")
        ax_loss.yaxis.set_major_formatter(FormatStrFormatter("%g"))  # 0.01, not 10^-2
        ax_loss.yaxis.set_minor_formatter(NullFormatter())
    ax_loss.set(xlabel="seconds", ylabel="cross-entropy (log scale)", title="training loss")
    ax_em.plot(history.eval_elapsed, 100 * np.asarray(history.eval_exact_match, float), "o-", color="C1")
    ax_em.set(xlabel="seconds", ylabel="exact match (%)", ylim=(0, 101), title="validation exact match")
    right = max([*history.elapsed[-1:], *history.eval_elapsed[-1:], 1.0])
    for ax in (ax_loss, ax_em):
        ax.set_xlim(0, right * 1.02)
        ax.grid(alpha=0.3)
    return fig


class LiveTrainingPlot:
    """``training_curves`` redrawn in place in a notebook; pass it as ``train(..., callback=...)``."""

    def __init__(self, smoothing: int = 20) -> None:
        self.smoothing, self.handle = smoothing, None

    def __call__(self, history: object) -> None:
        from IPython.display import display

        fig = training_curves(history, smoothing=self.smoothing)
        if self.handle is None:
            self.handle = display(fig, display_id=True)
        else:
            self.handle.update(fig)
        plt.close(fig)


def aer_heatmap(per_head: torch.Tensor | np.ndarray, *, ax: Axes | None = None,
                title: str = "alignment error rate of each head") -> Axes:
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
    ax.set_xlabel("decoder cross-attention head")
    ax.set_title(title)
    return ax
