"""Boxes, arrows and labels for the course's diagrams (``attention_diagrams``, ``diagrams``), drawn in inches.

A canvas is one Axes covering the whole figure with data units equal to inches, so a box of width 1.5 is
1.5 inches wide on the page at any size, and text sizes (in points) can be planned against it.
"""
from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes
from matplotlib.colors import to_rgb
from matplotlib.figure import Figure
from matplotlib.patches import Circle, FancyBboxPatch, Rectangle

FONT, SMALL = 9, 8  # points: box titles and shapes; notes and arrow labels (never below 8)
LINE = 0.17  # inches between lines of 9 pt text


def check_sizes(**sizes: object) -> None:
    """Raise ``ValueError`` unless every value is a positive int (bools are not sizes)."""
    for name, value in sizes.items():
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{name} must be a positive int; got {value!r}")


def head_size(d_model: int, n_heads: int) -> int:
    """``d_head = d_model // n_heads``; raises ``ValueError`` when ``n_heads`` does not divide ``d_model``."""
    if d_model % n_heads:
        raise ValueError(f"d_model must be divisible by n_heads; got d_model={d_model}, n_heads={n_heads}")
    return d_model // n_heads


def check_tokens(name: str, tokens: Sequence[str] | None, length: int, length_name: str) -> None:
    if tokens is not None and len(tokens) != length:
        raise ValueError(f"{name} must have {length_name} = {length} tokens; got {len(tokens)}: {list(tokens)}")


def shape(*dims: object) -> str:
    """``shape(2, 5, 24)`` -> ``"[2, 5, 24]"``, as the notebooks print shapes."""
    return "[" + ", ".join(str(d) for d in dims) + "]"


def tint(color: str, amount: float = 0.82) -> tuple[float, float, float]:
    """``color`` mixed with white (``amount`` of white): the fill behind a box's text."""
    return tuple(c + (1.0 - c) * amount for c in to_rgb(color))


def canvas(width: float, height: float) -> tuple[Figure, Axes]:
    """A blank figure ``width x height`` inches whose Axes measures in inches, origin bottom left."""
    fig = plt.figure(figsize=(width, height))
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(0, width)
    ax.set_ylim(0, height)
    ax.axis("off")
    return fig, ax


def box(ax: Axes, cx: float, cy: float, w: float, h: float, title: str, *, color: str, shape_text: str = "",
        note: str = "", fill: float = 0.82, fontsize: int = FONT) -> None:
    """A rounded box centred at ``(cx, cy)``: a bold title, then a shape (monospace), then a grey note."""
    ax.add_patch(FancyBboxPatch((cx - w / 2, cy - h / 2), w, h, boxstyle="round,pad=0,rounding_size=0.06",
                                facecolor=tint(color, fill), edgecolor=color, linewidth=1.3, zorder=2))
    lines = [(title, dict(fontweight="bold", fontsize=fontsize))]
    if shape_text:
        lines.append((shape_text, dict(family="monospace", fontsize=fontsize)))
    if note:
        lines.append((note, dict(fontsize=SMALL, color="0.3")))
    top = cy + (len(lines) - 1) * LINE / 2
    for i, (text, style) in enumerate(lines):
        ax.text(cx, top - i * LINE, text, ha="center", va="center", zorder=3, **style)


def arrow(ax: Axes, start: tuple[float, float], end: tuple[float, float], *, color: str, label: str = "",
          side: str = "above", lw: float = 1.4, head: bool = True, label_color: str = "0.15",
          monospace: bool = False, zorder: float = 1) -> None:
    """An arrow from ``start`` to ``end``; ``label`` is written at its middle on ``side``
    (``"above"``, ``"below"``, ``"left"`` or ``"right"``) in 8 pt."""
    ax.annotate("", xy=end, xytext=start, zorder=zorder, arrowprops=dict(
        arrowstyle="-|>" if head else "-", color=color, lw=lw, shrinkA=0, shrinkB=0, mutation_scale=11))
    if label:
        mx, my = (start[0] + end[0]) / 2, (start[1] + end[1]) / 2
        offset = {"above": (0, 0.07, "center", "bottom"), "below": (0, -0.07, "center", "top"),
                  "left": (-0.08, 0, "right", "center"), "right": (0.08, 0, "left", "center")}[side]
        ax.text(mx + offset[0], my + offset[1], label, ha=offset[2], va=offset[3], fontsize=SMALL,
                color=label_color, family="monospace" if monospace else None, zorder=3)


def path(ax: Axes, points: Sequence[tuple[float, float]], *, color: str, lw: float = 1.4) -> None:
    """A polyline ending in an arrow head (a route around other boxes)."""
    xs, ys = zip(*points[:-1])
    ax.plot(xs, ys, color=color, lw=lw, solid_capstyle="butt", zorder=1)
    arrow(ax, points[-2], points[-1], color=color, lw=lw)


def plus(ax: Axes, cx: float, cy: float, *, color: str, r: float = 0.13) -> None:
    """The ⊕ of a residual connection."""
    ax.add_patch(Circle((cx, cy), r, facecolor="white", edgecolor=color, linewidth=1.4, zorder=2))
    ax.plot([cx - r * 0.6, cx + r * 0.6], [cy, cy], color=color, lw=1.4, zorder=3)
    ax.plot([cx, cx], [cy - r * 0.6, cy + r * 0.6], color=color, lw=1.4, zorder=3)


def cells(ax: Axes, x0: float, y0: float, n_cols: int, n_rows: int, size: float, *, color: str,
          fill: float = 0.8, strong: Sequence[tuple[int, int]] = ()) -> None:
    """A grid of ``n_rows x n_cols`` square cells, bottom left at ``(x0, y0)``; row 0 is the top row.
    Cells ``(row, col)`` in ``strong`` are filled with ``color`` itself."""
    for row in range(n_rows):
        for col in range(n_cols):
            is_strong = (row, col) in strong
            ax.add_patch(Rectangle((x0 + col * size, y0 + (n_rows - 1 - row) * size), size, size,
                                   facecolor=color if is_strong else tint(color, fill),
                                   edgecolor=color if is_strong else "white", linewidth=0.8, zorder=2))
