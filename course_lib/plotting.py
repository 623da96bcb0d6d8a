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
