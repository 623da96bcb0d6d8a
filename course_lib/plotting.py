"""Pictures of attention weights and masks: heatmaps with token labels, grids of heads, masks as grids.

Lessons 01-04 draw with ``attention_heatmap``, ``attention_grid``, ``cross_attention_heatmap`` (the course's
convention for cross-attention), ``mask_grid`` and ``mask_figure``; lessons 07-08 reuse them. The colours and axis
labels that every figure of the course shares live here too (``COLORS``, ``WRITTEN_WORD_LABEL``,
``SOURCE_TOKEN_LABEL``). Attention against the gold alignments is drawn by ``alignment_plots``, charts of
measurements by ``charts`` and ``translation_charts``, data-flow pictures by ``attention_diagrams`` and ``diagrams``.

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
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from ._checks import shape_str

ATTENTION_CMAP = "rocket_r"  # light = little attention, dark = much
# One colour per role, in every diagram and heatmap (Okabe-Ito hues, distinguishable with colour blindness).
COLORS = {
    "decoder": "#D55E00",  # the target side: decoder states, queries
    "encoder": "#0072B2",  # the source side: encoder output, memory, keys and values
    "weights": "#A0467C",  # scores and attention weights
    "cache": "#009E73",  # the self-attention K/V cache
    "residual": "#555555",  # the residual stream and its additions
    "norm": "#B8860B",  # LayerNorm
}
WRITTEN_WORD_LABEL = "word being written"  # rows of a cross-attention heatmap: the query at row i writes word i
SOURCE_TOKEN_LABEL = "source token"  # columns: the keys and values, one per source token
MASK_COLORS = ("#e6e6e6", "#3a6fb0")  # blocked (False): light grey; may attend (True): blue


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
    panel_size: float | None = None,
    masked: torch.Tensor | np.ndarray | None = None,
    xlabel: str | None = None,
    ylabel: str | None = None,
    vmin: float = 0.0,
    vmax: float = 1.0,
) -> Figure:
    """One heatmap per head (or per layer): ``weights [N, T_q, T_k]``, any N, in a grid that fits notebook
    width (panels of ``panel_size`` inches, by default up to 4 across in under 10 inches), 8 pt tick labels
    and one colour bar shared by every panel (all panels use the scale ``vmin`` .. ``vmax``).

    ``masked`` (bool ``[T_q, T_k]``, or ``[T_k]`` for padded keys; True = masked or padding) is hatched in
    every panel. ``xlabel``/``ylabel`` are written once on the outer panels (default: keys / queries; for
    cross-attention pass ``SOURCE_TOKEN_LABEL`` and ``WRITTEN_WORD_LABEL``). Raises ``ValueError`` for
    weights that are not 3-D, or titles, labels or a mask that do not fit them.
    """
    array = weights.detach().float().cpu().numpy() if isinstance(weights, torch.Tensor) else np.asarray(weights)
    if array.ndim != 3:
        raise ValueError(f"weights must be 3-D [N, T_q, T_k] (e.g. heads); got shape {shape_str(array.shape)}")
    count, t_q, t_k = array.shape
    if count == 0:
        raise ValueError(f"weights has no panels: shape {shape_str(array.shape)}")
    if titles is not None and len(titles) != count:
        raise ValueError(f"{len(titles)} titles for {count} panels (weights {shape_str(array.shape)})")
    _check_labels(array[0], query_labels, key_labels)
    mask = None
    if masked is not None:
        mask = (masked.detach().cpu().numpy() if isinstance(masked, torch.Tensor) else np.asarray(masked)).astype(bool)
        if mask.shape == (t_k,):
            mask = np.broadcast_to(mask, (t_q, t_k))
        if mask.shape != (t_q, t_k):
            raise ValueError(f"masked must be [T_q, T_k] = {shape_str((t_q, t_k))} or [T_k] = [{t_k}]; "
                             f"got {shape_str(mask.shape)}")
    n_cols = min(count, 4) if n_cols is None else n_cols
    if n_cols < 1:
        raise ValueError(f"n_cols must be >= 1; got {n_cols}")
    n_rows = -(-count // n_cols)
    panel_size = min(2.6, 8.4 / n_cols) if panel_size is None else panel_size
    fig, axes = plt.subplots(n_rows, n_cols, squeeze=False, constrained_layout=True,
                             figsize=(panel_size * n_cols + 1.1, panel_size * n_rows + 0.5 + 0.3 * bool(suptitle)))
    for index, ax in enumerate(axes.flat):
        if index >= count:
            ax.axis("off")
            continue
        attention_heatmap(array[index], query_labels, key_labels, ax=ax, cbar=False, annotate=False, vmin=vmin,
                          vmax=vmax, masked=mask)
        ax.set_title(titles[index] if titles else f"head {index}", fontsize=9)
        ax.tick_params(labelsize=8)
        first_col, bottom = index % n_cols == 0, index + n_cols >= count  # bottom: nothing drawn below it
        ax.set_ylabel((ylabel or ax.get_ylabel()) if first_col else "", fontsize=9)
        ax.set_xlabel((xlabel or ax.get_xlabel()) if bottom else "", fontsize=9)
        ax.tick_params(labelleft=first_col, labelbottom=bottom)
    scale = plt.cm.ScalarMappable(plt.Normalize(vmin, vmax), ATTENTION_CMAP)
    fig.colorbar(scale, ax=axes.ravel().tolist(), shrink=0.8, aspect=30, pad=0.02).set_label("attention weight",
                                                                                              fontsize=9)
    if suptitle:
        fig.suptitle(suptitle, fontsize=11)
    return fig


# --- lessons 03-04: the cross-attention heatmap convention, masks as grids ------------------------------
def cross_attention_heatmap(
    weights: torch.Tensor | np.ndarray,
    written_words: Sequence[str],
    source_tokens: Sequence[str],
    *,
    ax: Axes | None = None,
    title: str | None = None,
    masked: torch.Tensor | np.ndarray | None = None,
    annotate: bool | None = None,
    cbar: bool = True,
) -> Axes:
    """Cross-attention ``[T_tgt, T_src]`` in the course's convention: row ``i`` is labelled by the word the
    decoder *writes* at position ``i`` (its input there is the word before), columns by the source tokens.
    ``masked`` (bool ``[T_tgt, T_src]``, True = masked) hatches cells, as in ``attention_heatmap``."""
    ax = attention_heatmap(weights, written_words, source_tokens, ax=ax, title=title, masked=masked,
                           annotate=annotate, cbar=cbar)
    ax.set_xlabel(SOURCE_TOKEN_LABEL)
    ax.set_ylabel(WRITTEN_WORD_LABEL)
    return ax


def mask_grid(
    mask: torch.Tensor | np.ndarray,
    query_labels: Sequence[str] | None = None,
    key_labels: Sequence[str] | None = None,
    *,
    ax: Axes | None = None,
    title: str | None = None,
    blocks: Sequence[int] = (),
) -> Axes:
    """A bool mask ``[T_q, T_k]`` (True = may attend) as a grid: blue = may attend, grey = blocked.

    ``blocks``: sizes of documents packed end to end (e.g. ``[4, 4, 3]``); each diagonal block is outlined.
    Raises ``ValueError`` for a mask that is not bool and 2-D, or blocks that do not add up to ``T_k``.
    """
    array = mask.detach().cpu().numpy() if isinstance(mask, torch.Tensor) else np.asarray(mask)
    if array.dtype != bool or array.ndim != 2:
        raise ValueError(f"mask must be a bool [T_q, T_k] (True = may attend); got {array.dtype} "
                         f"{shape_str(array.shape)}")
    _check_labels(array, query_labels, key_labels)
    if blocks and sum(blocks) != array.shape[1]:
        raise ValueError(f"blocks {list(blocks)} add up to {sum(blocks)}, but the mask has {array.shape[1]} keys")
    if ax is None:
        _, ax = plt.subplots(figsize=(0.4 * array.shape[1] + 1.6, 0.4 * array.shape[0] + 1.2))
    ax.imshow(array, cmap=ListedColormap(MASK_COLORS), vmin=0, vmax=1)
    for axis, labels, size in ((ax.xaxis, key_labels, array.shape[1]), (ax.yaxis, query_labels, array.shape[0])):
        axis.set_ticks(range(size), labels if labels is not None else range(size))
        axis.set_ticks(np.arange(-0.5, size), minor=True)
    plt.setp(ax.get_xticklabels(), rotation=45, ha="right", rotation_mode="anchor")
    ax.grid(which="minor", color="white", linewidth=1.5)
    ax.tick_params(which="minor", length=0)
    for start, size in zip(np.cumsum([0, *blocks]), blocks):
        ax.add_patch(plt.Rectangle((start - 0.5, start - 0.5), size, size, fill=False, edgecolor="black",
                                   linewidth=2, zorder=3))
    ax.set(xlabel="keys (attended to)", ylabel="queries (attending)")
    if title:
        ax.set_title(title, fontsize=10)
    return ax


def mask_figure(
    masks: Sequence[torch.Tensor | np.ndarray],
    titles: Sequence[str],
    labels: Sequence[str],
    *,
    suptitle: str | None = None,
    blocks: Sequence[int] = (),
    panel_size: float = 2.5,
) -> Figure:
    """Self-attention masks of one sequence side by side, each ``[T, T]`` or ``[1, T]`` (a mask stored with
    one row, broadcast to every query: its row is labelled "every query"), with one shared legend."""
    if len(titles) != len(masks):
        raise ValueError(f"{len(titles)} titles for {len(masks)} masks")
    fig, axes = plt.subplots(1, len(masks), figsize=(panel_size * len(masks) + 0.8, panel_size + 1.1),
                             squeeze=False, constrained_layout=True)
    for index, (ax, mask, title) in enumerate(zip(axes[0], masks, titles)):
        one_row = mask.shape[0] == 1 and len(labels) > 1
        mask_grid(mask, ["every query"] if one_row else labels, labels, ax=ax, title=title, blocks=blocks)
        if index:
            ax.set_ylabel("")
    handles = [Patch(color=MASK_COLORS[1], label="may attend (True)"),
               Patch(color=MASK_COLORS[0], label="blocked (False)")]
    fig.legend(handles=handles, loc="outside lower center", ncol=2, fontsize=8, frameon=False)
    if suptitle:
        fig.suptitle(suptitle)
    return fig
