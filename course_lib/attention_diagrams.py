"""Pictures of attention's data flow, lessons 02-03, drawn by code so that they stay in step with the library:
every shape written in a figure is computed from the arguments (``cross_attention_flow(batch=2, ...)`` writes
``[2, ...]``).

Lesson 02: ``multi_head_flow`` (projections, heads, weights, merge, with every shape) and ``head_split_figure``
(which features go to which head); lesson 03: ``cross_attention_flow`` (one cross-attention sublayer). The whole
model's diagrams (lessons 05-06) are in ``diagrams``.

Colours come from ``plotting.COLORS``: the decoder (target side, queries) in one colour, the encoder (source side:
keys and values, memory) in another, attention weights in a third. Each function returns a Matplotlib ``Figure``
(about 10 inches wide, for notebook width) and raises ``ValueError`` for impossible sizes.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import matplotlib.pyplot as plt
import numpy as np
import seaborn as sns
import torch
from matplotlib.axes import Axes
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure

from ._checks import shape_str
from ._drawing import FONT, SMALL, arrow, box, canvas, cells, check_sizes, check_tokens, head_size, path, plus, shape
from .plotting import COLORS

DEC, ENC, WEIGHTS, RES = (COLORS[k] for k in ("decoder", "encoder", "weights", "residual"))


# --- lesson 02: multi-head attention ------------------------------------------------------------------------
def multi_head_flow(*, batch: int, t_q: int, t_k: int, d_model: int, n_heads: int) -> Figure:
    """Lesson 02's data flow of multi-head attention with every shape: ``x`` -> W_q -> split into heads;
    ``source`` -> W_k, W_v -> split; the weights ``[B, H, T_q, T_k]``; ``@ V``; merge; W_o. Queries in
    ``COLORS["decoder"]``, the source side in ``COLORS["encoder"]``, the weights in ``COLORS["weights"]``.
    Raises ``ValueError`` for sizes that are not positive ints or a ``d_model`` that ``n_heads`` does not divide."""
    check_sizes(batch=batch, t_q=t_q, t_k=t_k, d_model=d_model, n_heads=n_heads)
    d_head = head_size(d_model, n_heads)
    query, source, weights = COLORS["decoder"], COLORS["encoder"], COLORS["weights"]
    fig, ax = canvas(9.9, 3.3)
    xs, w, h, top, bottom = [0.75, 2.85, 4.95, 7.05, 9.15], 1.3, 0.72, 2.25, 0.65
    top_boxes = [("x", shape(batch, t_q, d_model), "B, T_q, d_model", query),
                 ("Q per head", shape(batch, n_heads, t_q, d_head), "B, H, T_q, d_head", query),
                 ("weights", shape(batch, n_heads, t_q, t_k), "B, H, T_q, T_k", weights),
                 ("context", shape(batch, n_heads, t_q, d_head), "B, H, T_q, d_head", query),
                 ("output", shape(batch, t_q, d_model), "B, T_q, d_model", query)]
    for x, (title, text, note, color) in zip(xs, top_boxes):
        box(ax, x, top, w, h, title, color=color, shape_text=text, note=note)
    box(ax, xs[0], bottom, w, h, "source", color=source, shape_text=shape(batch, t_k, d_model), note="B, T_k, d_model")
    box(ax, xs[1], bottom, w, h, "K and V per head", color=source, shape_text=shape(batch, n_heads, t_k, d_head),
        note="B, H, T_k, d_head")
    for x0, x1, label in zip(xs, xs[1:], ["W_q, split", "", "@ V", "merge, W_o"]):
        arrow(ax, (x0 + w / 2, top), (x1 - w / 2, top), color=weights if x0 == xs[1] else query, label=label)
    ax.text(xs[2], top + h / 2 + 0.07, "softmax(Q Kᵀ / √d_head), each row", ha="center", va="bottom", fontsize=8,
            color=weights)
    arrow(ax, (xs[0] + w / 2, bottom), (xs[1] - w / 2, bottom), color=source, label="W_k, W_v,\nsplit")
    arrow(ax, (xs[1] + 0.35, bottom + h / 2), (xs[2] - 0.3, top - h / 2), color=source, label="K", side="left")
    path(ax, [(xs[1] + w / 2, bottom), (xs[3], bottom), (xs[3], top - h / 2)], color=source)
    ax.text(xs[3] + 0.08, (bottom + top) / 2, "V", ha="left", va="center", fontsize=8)
    ax.text(0.1, 3.1, f"Multi-head attention: B = {batch}, T_q = {t_q}, T_k = {t_k}, d_model = {d_model}, "
            f"H = {n_heads}, d_head = {d_head}", ha="left", va="center", fontsize=10)
    return fig


HEAD_COLORS = ("#8dd3c7", "#fdb462", "#bebada", "#fb8072")  # head 0, 1, 2, 3 in the head-split figure


def _draw_cells(ax: Axes, heads: np.ndarray, tokens: np.ndarray, cmap: ListedColormap, title: str,
                ylabel: str) -> None:
    ax.imshow(heads, cmap=cmap, vmin=-0.5, vmax=cmap.N - 0.5)
    for (row, col), token in np.ndenumerate(tokens):
        ax.text(col, row, str(int(token)), ha="center", va="center", fontsize=8)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title, fontsize=9)
    ax.set_ylabel(ylabel, fontsize=9)


def head_split_figure(
    splits: dict[str, Callable[[torch.Tensor], torch.Tensor]], *, seq_len: int = 6, n_heads: int = 4,
    d_head: int = 4,
) -> Figure:
    """Lesson 02's picture of splitting ``d_model = n_heads · d_head`` features into heads.

    The top row is ``q`` of one sequence, ``[seq_len, d_model]``: each cell is coloured by the head whose feature
    block it is in and numbered with its token position. Below, one row of ``n_heads`` panels per entry of
    ``splits`` (label -> a function ``[T, d_model] -> [H, T, d_head]``, applied to those colours and numbers):
    a correct split gives each head one colour and the positions in order.
    """
    d_model = n_heads * d_head
    token_of = torch.arange(seq_len)[:, None].repeat(1, d_model)  # [T, d_model]: the token a feature belongs to
    head_of = (torch.arange(d_model) // d_head)[None, :].repeat(seq_len, 1)  # [T, d_model]: its head block
    palette = HEAD_COLORS if n_heads <= len(HEAD_COLORS) else sns.color_palette("Set3", n_heads)
    cmap = ListedColormap(list(palette)[:n_heads])
    fig = plt.figure(figsize=(9, 3.0 + 1.9 * len(splits)), constrained_layout=True)
    grid = fig.add_gridspec(1 + len(splits), n_heads, height_ratios=[1.5] + [1] * len(splits))
    ax_q = fig.add_subplot(grid[0, :])
    _draw_cells(ax_q, head_of.numpy(), token_of.numpy(), cmap, f"q for one sequence: [T, d_model] = [{seq_len}, "
                f"{d_model}]", "q")
    ax_q.set_xticks([h * d_head + (d_head - 1) / 2 for h in range(n_heads)],
                    [f"features {h * d_head}-{(h + 1) * d_head - 1}\n(head {h}'s block)" for h in range(n_heads)],
                    fontsize=8)
    for row, (label, split) in enumerate(splits.items(), start=1):
        heads, tokens = split(head_of), split(token_of)  # each [H, T, d_head]
        if tuple(heads.shape) != (n_heads, seq_len, d_head):
            raise ValueError(f"split {label!r} must return [H, T, d_head] = [{n_heads}, {seq_len}, {d_head}]; "
                             f"got {shape_str(tuple(heads.shape))}")
        for h in range(n_heads):
            _draw_cells(fig.add_subplot(grid[row, h]), heads[h].numpy(), tokens[h].numpy(), cmap, f"head {h}",
                        label if h == 0 else "")
    fig.suptitle(f"Splitting d_model = {d_model} features into {n_heads} heads of d_head = {d_head}\n"
                 "(colour: which head's block a feature is in; number: which token it comes from)", fontsize=10)
    return fig


# --- lesson 03: one cross-attention sublayer ------------------------------------------------------------------
def _char_width(tokens: Sequence[str] | None) -> float:
    """Rough width in inches of the longest token at 8 pt."""
    return 0.068 * max((len(t) for t in tokens), default=0) if tokens else 0.0


def cross_attention_flow(*, batch: int, t_tgt: int, t_src: int, d_model: int, n_heads: int,
                         d_source: int | None = None, tgt_tokens: Sequence[str] | None = None,
                         src_tokens: Sequence[str] | None = None) -> Figure:
    """Lesson 03: one cross-attention sublayer, from the decoder states and the encoder output to the
    output added back to the decoder's residual stream, with every tensor's shape.

    ``tgt_tokens`` (``t_tgt`` of them) label the score grid's rows (the word being written at each
    position), ``src_tokens`` (``t_src``) its columns. Raises ``ValueError`` for non-positive sizes,
    ``d_model`` not divisible by ``n_heads`` or token lists of the wrong length.
    """
    d_source = d_model if d_source is None else d_source
    check_sizes(batch=batch, t_tgt=t_tgt, t_src=t_src, d_model=d_model, n_heads=n_heads, d_source=d_source)
    d_head = head_size(d_model, n_heads)
    check_tokens("tgt_tokens", tgt_tokens, t_tgt, "t_tgt")
    check_tokens("src_tokens", src_tokens, t_src, "t_src")
    fig, ax = canvas(10.0, 6.3)
    y_mid, y_enc, y_res = 3.3, 1.15, 5.75  # decoder lane (and the grid's centre), encoder lane, residual stream
    # the score grid: rows = target positions, columns = source positions
    cell = min(0.3, 2.1 / t_src, 1.7 / t_tgt)
    gx0 = 4.45 + _char_width(tgt_tokens) if tgt_tokens else 4.7
    gx1, gy0, gy1 = gx0 + t_src * cell, y_mid - t_tgt * cell / 2, y_mid + t_tgt * cell / 2
    highlight = min(2, t_tgt - 1)
    cells(ax, gx0, gy0, t_src, t_tgt, cell, color=WEIGHTS, fill=0.85,
          strong=[(highlight, j) for j in range(t_src)])
    row_names = tgt_tokens or [""] * t_tgt
    for i, word in enumerate(row_names):
        ax.text(gx0 - 0.06, gy1 - (i + 0.5) * cell, word, ha="right", va="center", fontsize=SMALL)
    for j, word in enumerate(src_tokens or []):
        ax.text(gx0 + (j + 0.5) * cell, gy0 - 0.06, word, ha="right", va="top", rotation=45,
                rotation_mode="anchor", fontsize=SMALL)
    gcx = (gx0 + gx1) / 2
    ax.text(gcx, gy1 + 0.12 + 2 * 0.17, "attention weights", ha="center", va="bottom", fontsize=FONT,
            fontweight="bold")
    ax.text(gcx, gy1 + 0.12 + 0.17, shape(batch, n_heads, t_tgt, t_src), ha="center", va="bottom",
            fontsize=FONT, family="monospace")
    ax.text(gcx, gy1 + 0.1, rf"softmax$(QK^\top/\sqrt{{{d_head}}})$ over each row", ha="center", va="bottom",
            fontsize=SMALL, color="0.3")
    if cell >= 0.2 and t_src * cell >= 1.2:
        ax.text(gcx, gy1 - (highlight + 0.5) * cell, "a row sums to 1", ha="center", va="center", fontsize=SMALL,
                color="white", fontweight="bold", zorder=3)
    # decoder lane: states -> Q -> grid rows
    box(ax, 0.95, y_mid, 1.6, 0.95, "decoder states", color=DEC, shape_text=shape(batch, t_tgt, d_model),
        note="B, T_tgt, d_model")
    box(ax, 3.2, y_mid, 1.45, 0.95, "Q", color=DEC, shape_text=shape(batch, n_heads, t_tgt, d_head),
        note="B, H, T_tgt, d_head")
    arrow(ax, (1.75, y_mid), (2.47, y_mid), color=DEC, label=r"$W_q$, split")
    arrow(ax, (3.93, y_mid), (gx0 - 0.12 - _char_width(tgt_tokens), y_mid), color=DEC, label=f"{t_tgt} rows")
    # encoder lane: output -> K (below the grid: its columns), V (below the context)
    box(ax, 0.95, y_enc, 1.6, 0.95, "encoder output", color=ENC, shape_text=shape(batch, t_src, d_source),
        note="B, T_src, d_source")
    k_top = y_enc + 0.475
    box(ax, gcx, y_enc, 1.45, 0.95, "K", color=ENC, shape_text=shape(batch, n_heads, t_src, d_head),
        note="B, H, T_src, d_head")
    arrow(ax, (1.75, y_enc), (gcx - 0.73, y_enc), color=ENC, label=r"$W_k$, split")
    label_depth = 0.72 * _char_width(src_tokens) + 0.12 if src_tokens else 0.3
    arrow(ax, (gcx, k_top), (gcx, gy0 - label_depth), color=ENC, label=f"{t_src} columns", side="right")
    cx_out = max(8.55, gx1 + 1.55)
    box(ax, cx_out, y_enc, 1.45, 0.95, "V", color=ENC, shape_text=shape(batch, n_heads, t_src, d_head),
        note="B, H, T_src, d_head")
    path(ax, [(0.95, y_enc - 0.475), (0.95, 0.3), (cx_out, 0.3), (cx_out, y_enc - 0.475)], color=ENC)
    ax.text(3.0, 0.37, r"$W_v$, split", ha="center", va="bottom", fontsize=SMALL)
    # weights @ V -> context -> merge heads, W_o -> output -> + residual
    box(ax, cx_out, y_mid, 1.45, 0.95, "context", color=DEC, shape_text=shape(batch, n_heads, t_tgt, d_head),
        note="B, H, T_tgt, d_head")
    arrow(ax, (gx1 + 0.05, y_mid), (cx_out - 0.73, y_mid), color=WEIGHTS, label="weights @ V", side="below")
    arrow(ax, (cx_out, y_enc + 0.475), (cx_out, y_mid - 0.475), color=ENC)
    y_out = 4.72
    box(ax, cx_out, y_out, 1.45, 0.95, "output", color=DEC, shape_text=shape(batch, t_tgt, d_model),
        note="B, T_tgt, d_model")
    arrow(ax, (cx_out, y_mid + 0.475), (cx_out, y_out - 0.475), color=DEC, label=r"merge heads, $W_o$",
          side="right")
    arrow(ax, (cx_out, y_out + 0.475), (cx_out, y_res - 0.13), color=DEC)
    plus(ax, cx_out, y_res, color=RES)
    path(ax, [(0.95, y_mid + 0.475), (0.95, y_res), (cx_out - 0.13, y_res)], color=RES)
    ax.text(3.0, y_res + 0.07, f"residual stream: the decoder states {shape(batch, t_tgt, d_model)}",
            ha="center", va="bottom", fontsize=SMALL, color=RES)
    arrow(ax, (cx_out + 0.13, y_res), (9.9, y_res), color=RES)
    ax.text(9.9, y_res + 0.08, "to the FFN", ha="right", va="bottom", fontsize=SMALL, color=RES)
    ax.text(5.0, 6.12, f"Cross-attention, one sublayer: B = {batch}, H = {n_heads}, T_tgt = {t_tgt}, "
            f"T_src = {t_src}, d_model = {d_model}, d_head = {d_head}", ha="center", va="center", fontsize=FONT + 1)
    return fig
