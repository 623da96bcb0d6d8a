"""Pictures of the model's data flow, lessons 05-06, drawn by code so that they stay in step with the library:
every shape written in a figure is computed from the arguments (``encoder_decoder(batch=2, ...)`` writes
``[2, ...]``).

Lesson 05: ``encoder_decoder`` (the whole model, with the shapes of a batch), ``norm_placement`` (pre- vs
post-norm) and ``decoding_work_figure`` (the work of greedy decoding without a cache); lesson 06:
``decoder_cache`` (what the caches hold at each step). Attention's own diagrams (lessons 02-03) are in
``attention_diagrams``.

Colours come from ``plotting.COLORS``: the decoder (target side) in one colour, the encoder (source side:
keys and values, memory) in another, attention weights in a third. Each function returns a Matplotlib
``Figure`` (about 10 inches wide, for notebook width) and raises ``ValueError`` for impossible sizes.

``python -m course_lib.diagrams payoff-data`` remakes the stored data of lesson 00's ``payoff`` (see ``payoff_data``).
"""
from __future__ import annotations

import sys
from collections.abc import Sequence

import matplotlib.pyplot as plt
from matplotlib.figure import Figure
from matplotlib.patches import FancyBboxPatch

from ._drawing import FONT, SMALL, arrow, box, canvas, cells, check_sizes, head_size, path, plus, shape, tint
from .payoff_data import payoff  # noqa: F401  (lesson 00's figure lives with its stored data)
from .plotting import COLORS

DEC, ENC, WEIGHTS, RES, NORM = (COLORS[k] for k in ("decoder", "encoder", "weights", "residual", "norm"))


def _layer(ax, cx: float, y0: float, w: float, title: str, blocks: Sequence[tuple[str, str]], *, color: str,
           side_label: str = "") -> list[float]:
    """An encoder or decoder layer: a frame holding its sublayers bottom to top; returns their centre heights."""
    height = 0.2 + 0.38 * len(blocks) + (0.26 if title else 0.0)
    ax.add_patch(FancyBboxPatch((cx - w / 2, y0), w, height, boxstyle="round,pad=0,rounding_size=0.08",
                                facecolor=tint(color, 0.93), edgecolor=color, linewidth=1.3, zorder=1.5))
    centres = [y0 + 0.24 + 0.38 * i for i in range(len(blocks))]
    inner = w - 0.9
    for y, (name, block_color) in zip(centres, blocks):
        box(ax, cx - 0.25, y, inner, 0.27, name, color=block_color, fill=0.8, fontsize=SMALL)
    for lower, upper in zip(centres, centres[1:]):
        arrow(ax, (cx - 0.25, lower + 0.135), (cx - 0.25, upper - 0.135), color=RES, lw=1.0)
    if title:
        ax.text(cx, y0 + height - 0.16, title, ha="center", va="center", fontsize=SMALL, fontweight="bold")
    if side_label:
        ax.text(cx + w / 2 - 0.3, y0 + height / 2, side_label, ha="center", va="center", rotation=90,
                fontsize=SMALL, color=color, fontweight="bold")
    return centres


def encoder_decoder(*, batch: int, src_len: int, tgt_len: int, d_model: int, n_heads: int, n_encoder_layers: int,
                    n_decoder_layers: int, src_vocab: int | None = None, tgt_vocab: int | None = None) -> Figure:
    """Lesson 05: the whole encoder-decoder with the shapes of a batch on the arrows, and ``memory`` (the
    encoder's output) entering the cross-attention of every decoder layer.

    Up to 3 decoder layers are drawn one by one; from 4 on, the first and last are drawn and the middle
    ones as one block. ``src_vocab``/``tgt_vocab`` (sizes) only label the embeddings and the logits.
    Raises ``ValueError`` for non-positive sizes or ``d_model`` not divisible by ``n_heads``.
    """
    check_sizes(batch=batch, src_len=src_len, tgt_len=tgt_len, d_model=d_model, n_heads=n_heads,
                n_encoder_layers=n_encoder_layers, n_decoder_layers=n_decoder_layers)
    for name, vocab in (("src_vocab", src_vocab), ("tgt_vocab", tgt_vocab)):
        if vocab is not None:
            check_sizes(**{name: vocab})
    d_head = head_size(d_model, n_heads)
    n_drawn = n_decoder_layers if n_decoder_layers <= 3 else 3
    height = 4.25 + 1.62 * n_drawn + (0.0 if n_decoder_layers <= 3 else -0.9)
    fig, ax = canvas(9.6, height)
    xe, xd, x_bus = 1.75, 6.55, 3.75
    hidden = f"{shape(batch, src_len, d_model)}"
    # encoder column
    ax.text(xe, 0.3, "source ids", ha="center", va="center", fontsize=FONT, fontweight="bold")
    arrow(ax, (xe, 0.42), (xe, 0.8), color=ENC, label=shape(batch, src_len), side="right", monospace=True)
    box(ax, xe, 0.97, 2.4, 0.34, "embedding + positions", color=ENC, fontsize=SMALL)
    arrow(ax, (xe, 1.14), (xe, 1.55), color=ENC, label=hidden, side="right", monospace=True)
    for shadow in range(min(n_encoder_layers, 3) - 1, 0, -1):  # a stack of N cards
        ax.add_patch(FancyBboxPatch((xe - 1.3 + 0.07 * shadow, 1.55 + 0.07 * shadow), 2.6, 1.22,
                                    boxstyle="round,pad=0,rounding_size=0.08", facecolor=tint(ENC, 0.93),
                                    edgecolor=ENC, linewidth=0.8, zorder=1.4 - 0.01 * shadow))
    _layer(ax, xe, 1.55, 2.6, f"encoder layer × {n_encoder_layers}", [("self-attention", ENC),
                                                                          ("feed-forward", RES)], color=ENC)
    top = 1.55 + 1.22 + 0.07 * (min(n_encoder_layers, 3) - 1)
    arrow(ax, (xe, top), (xe, top + 0.3), color=ENC)
    box(ax, xe, top + 0.45, 1.6, 0.3, "LayerNorm", color=NORM, fontsize=SMALL)
    arrow(ax, (xe, top + 0.6), (xe, top + 1.0), color=ENC)
    y_memory = top + 1.35
    box(ax, xe, y_memory, 2.4, 0.7, "memory", color=ENC, shape_text=hidden, note="read by every decoder layer",
        fill=0.7)
    # decoder column
    ax.text(xd, 0.3, "target ids, shifted right (<bos> first)", ha="center", va="center", fontsize=FONT,
            fontweight="bold")
    arrow(ax, (xd, 0.42), (xd, 0.8), color=DEC, label=shape(batch, tgt_len), side="right", monospace=True)
    box(ax, xd, 0.97, 2.4, 0.34, "embedding + positions", color=DEC, fontsize=SMALL)
    stream = shape(batch, tgt_len, d_model)
    y, cross_heights = 1.14, []
    layers = list(range(1, n_decoder_layers + 1))
    if n_decoder_layers > 3:
        layers = [1, None, n_decoder_layers]  # None: the middle layers as one block
    for number in layers:
        arrow(ax, (xd, y), (xd, y + 0.42), color=DEC, label=stream, side="right", monospace=True)
        y += 0.42
        if number is None:
            box(ax, xd, y + 0.3, 3.2, 0.6, f"layers 2 to {n_decoder_layers - 1}, the same", color=DEC,
                note="memory enters each one's cross-attention", fill=0.93)
            cross_heights.append(y + 0.3)
            y += 0.6
            continue
        centres = _layer(ax, xd, y, 3.2, "", [("masked self-attention", DEC), ("cross-attention", WEIGHTS),
                                                ("feed-forward", RES)], color=DEC, side_label=f"layer {number}")
        cross_heights.append(centres[1])
        y += 0.2 + 0.38 * 3
    arrow(ax, (xd, y), (xd, y + 0.35), color=DEC, label=stream, side="right", monospace=True)
    box(ax, xd, y + 0.5, 1.6, 0.3, "LayerNorm", color=NORM, fontsize=SMALL)
    arrow(ax, (xd, y + 0.65), (xd, y + 0.95), color=DEC)
    box(ax, xd, y + 1.1, 1.6, 0.3, f"linear → {tgt_vocab or 'V'}", color=DEC, fontsize=SMALL)
    vocab = tgt_vocab if tgt_vocab is not None else "V"
    arrow(ax, (xd, y + 1.25), (xd, y + 1.65), color=DEC, label=shape(batch, tgt_len, vocab), side="right",
          monospace=True)
    ax.text(xd, y + 1.77, "logits: a score for every target word", ha="center", va="center", fontsize=FONT,
            fontweight="bold")
    # memory -> every decoder layer's cross-attention
    ax.plot([xe + 1.2, x_bus], [y_memory, y_memory], color=ENC, lw=1.6, zorder=1)
    ax.plot([x_bus, x_bus], [min(cross_heights), max(y_memory, *cross_heights)], color=ENC, lw=1.6, zorder=1)
    for number, y_cross in zip(layers, cross_heights):
        label = "memory: K, V" if number else f"memory × {n_decoder_layers - 2}"
        arrow(ax, (x_bus, y_cross), (xd - 1.4 if number else xd - 1.6, y_cross), color=ENC, lw=1.6, label=label,
              zorder=1.8)
    notes = [f"B = {batch}, S = {src_len}, T = {tgt_len}, d_model = {d_model}, H = {n_heads} heads, d_head = {d_head}",
             "each sublayer: LayerNorm → sublayer → + (pre-norm)"]
    if src_vocab is not None:
        notes.insert(1, f"source vocabulary {src_vocab}, target vocabulary {tgt_vocab or '?'}")
    ax.text(0.2, height - 0.25, "The encoder-decoder transformer", ha="left", va="center", fontsize=FONT + 2,
            fontweight="bold")
    for i, note in enumerate(notes):
        ax.text(0.2, height - 0.55 - 0.2 * i, note, ha="left", va="center", fontsize=SMALL, color="0.3")
    return fig


def norm_placement() -> Figure:
    """Lesson 05: where the LayerNorm sits in one sublayer, two diagrams side by side. Post-norm (the 2017
    paper) normalises the sum, ``LayerNorm(x + sublayer(x))``; pre-norm (this course) normalises the
    sublayer's input, ``x + sublayer(LayerNorm(x))``, and leaves the residual stream itself untouched."""
    fig, ax = canvas(9.0, 3.85)
    panels = [(2.25, "post-norm (the 2017 paper)", "LayerNorm(x + sublayer(x))", ["sublayer", "+", "LayerNorm"],
               "the residual stream is normalised after every sublayer"),
              (6.75, "pre-norm (this course)", "x + sublayer(LayerNorm(x))", ["LayerNorm", "sublayer", "+"],
               "the stream passes untouched: one final LayerNorm after the last layer")]
    for cx, title, formula, order, caption in panels:
        ax.text(cx, 3.62, title, ha="center", va="center", fontsize=FONT + 1, fontweight="bold")
        ax.text(cx, 3.36, formula, ha="center", va="center", fontsize=FONT, family="monospace")
        ax.text(cx, 0.45, "x", ha="center", va="center", fontsize=FONT + 1, fontweight="bold")
        ax.text(cx, 0.15, caption, ha="center", va="center", fontsize=SMALL, color="0.3")
        y, heights = 0.58, {"sublayer": 0.45, "LayerNorm": 0.32, "+": 0.26}
        for step in order:
            arrow(ax, (cx, y), (cx, y + 0.32), color=RES)
            y += 0.32 + heights[step] / 2
            if step == "+":
                plus(ax, cx, y, color=RES)
                path(ax, [(cx, 0.72), (cx + 1.3, 0.72), (cx + 1.3, y), (cx + 0.13, y)], color=RES)
                ax.text(cx + 1.38, (0.72 + y) / 2, "residual", ha="left", va="center", fontsize=SMALL, color=RES,
                        rotation=90)
            elif step == "sublayer":
                box(ax, cx, y, 1.9, 0.45, "sublayer", color=RES, note="attention or feed-forward", fontsize=SMALL)
            else:
                box(ax, cx, y, 1.5, 0.32, "LayerNorm", color=NORM, fontsize=SMALL)
            y += heights[step] / 2
        arrow(ax, (cx, y), (cx, y + 0.35), color=RES)
        ax.text(cx, y + 0.4, "to the next sublayer", ha="center", va="bottom", fontsize=SMALL)
    ax.plot([4.5, 4.5], [0.4, 3.7], color="0.85", lw=1.0)
    return fig


def decoding_work_figure(src_len: int, new_tokens: int) -> Figure:
    """Greedy decoding of ``new_tokens`` tokens from a ``src_len``-token source, drawn as work done: the encoder
    once over the source, then the decoder at step t over all t prefix positions (no cache), against one new
    position per step with the caches of lesson 06 (hatched)."""
    if src_len < 1 or new_tokens < 1:
        raise ValueError(f"src_len and new_tokens must be >= 1; got {src_len}, {new_tokens}")
    fig, ax = plt.subplots(figsize=(10, 3.6), constrained_layout=True)
    enc_row, dec_row, cached_row, height = 2.0, 1.0, 0.0, 0.6
    ax.add_patch(plt.Rectangle((0, enc_row), src_len, height, facecolor=COLORS["encoder"], alpha=0.7))
    ax.text(src_len / 2, enc_row + height / 2, f"{src_len} source\npositions", ha="center", va="center", fontsize=8)
    ax.text(src_len + 0.4, enc_row + height / 2, "memory [B, S, d_model]: every decoder step reads it again "
            "through cross-attention (grey arrows)", va="center", fontsize=8, color="0.3")
    left = src_len
    for step in range(1, new_tokens + 1):  # step t runs the decoder over the t positions of the prefix
        ax.add_patch(plt.Rectangle((left, dec_row), step, height, facecolor=COLORS["decoder"],
                                   alpha=min(0.9, 0.3 + 0.6 * step / new_tokens), edgecolor="white"))
        ax.text(left + step / 2, dec_row + height / 2, f"t={step}", ha="center", va="center", fontsize=8)
        ax.annotate("", xy=(left + step / 2, dec_row + height + 0.02), xytext=(src_len, enc_row),
                    arrowprops=dict(arrowstyle="->", color="0.6", lw=0.7))
        ax.add_patch(plt.Rectangle((src_len + step - 1, cached_row), 1, height, facecolor="none",
                                   edgecolor=COLORS["decoder"], hatch="///", lw=0.8))
        left += step
    ax.text(src_len + new_tokens + 0.4, cached_row + height / 2, "with the caches of lesson 06: one new position "
            "per step", va="center", fontsize=8, color="0.3")
    ax.set(xlim=(-0.5, left + 0.5), ylim=(-0.2, enc_row + height + 0.2),
           xlabel="target and source positions processed, cumulative (a proxy for work)",
           title=f"Greedy decoding of {new_tokens} tokens: the encoder runs once, the decoder once per token")
    ax.set_yticks([r + height / 2 for r in (enc_row, dec_row, cached_row)],
                  ["encoder (once)", "decoder, no cache", "decoder, cached"])
    for side in ("top", "right", "left"):
        ax.spines[side].set_visible(False)
    return fig


def decoder_cache(*, batch: int, n_heads: int, src_len: int, d_head: int, steps: int = 4) -> Figure:
    """Lesson 06: what a ``DecoderCache`` holds for one decoder layer at steps ``t = 1 .. steps``: the
    self-attention K/V cache, one column per position written so far (the new one highlighted), the
    cross-attention K/V of the source, fixed at ``[B, H, S, d_head]``, and the step's single query row,
    which attends to both. Raises ``ValueError`` for non-positive sizes or ``steps`` above 6.
    """
    check_sizes(batch=batch, n_heads=n_heads, src_len=src_len, d_head=d_head, steps=steps)
    if steps > 6:
        raise ValueError(f"steps must be at most 6 to stay readable; got {steps}")
    fig, ax = canvas(10.0, 3.6)
    margin = 2.3
    width = (10.0 - margin - 0.1) / steps
    cell = min(0.2, (width - 0.3) / max(src_len, steps))
    y_self, y_query, y_cross = 2.65, 1.7, 0.6  # bottom of each row of drawings
    rows = [(y_self + cell, "self-attention K/V cache", "one new column (dark) per step", COLORS["cache"]),
            (y_query + cell / 2, "query of step t", f"one row: {shape(batch, n_heads, 1, d_head)}", DEC),
            (y_cross + cell, "cross-attention K/V", "projected once from memory", ENC)]
    for y, name, note, color in rows:
        ax.text(margin - 0.25, y + 0.1, name, ha="right", va="center", fontsize=FONT, fontweight="bold", color=color)
        ax.text(margin - 0.25, y - 0.12, note, ha="right", va="center", fontsize=SMALL, color="0.3")
    ax.text(0.1, 3.37, "DecoderCache, one layer", ha="left", va="center", fontsize=FONT + 1, fontweight="bold")
    for y in (y_self, y_cross):
        ax.text(margin - 0.08, y + 1.5 * cell, "K", ha="center", va="center", fontsize=SMALL)
        ax.text(margin - 0.08, y + 0.5 * cell, "V", ha="center", va="center", fontsize=SMALL)
    for t in range(1, steps + 1):
        x0 = margin + (t - 1) * width + 0.05
        ax.text(x0, 3.37, f"step t = {t}", ha="left", va="center", fontsize=FONT + 1, fontweight="bold")
        cells(ax, x0, y_self, t, 2, cell, color=COLORS["cache"], fill=0.75, strong=[(0, t - 1), (1, t - 1)])
        ax.text(x0, y_self + 2 * cell + 0.06, shape(batch, n_heads, t, d_head), ha="left", va="bottom",
                fontsize=SMALL, family="monospace")
        cells(ax, x0, y_query, 1, 1, cell, color=DEC, strong=[(0, 0)])
        cells(ax, x0, y_cross, src_len, 2, cell, color=ENC, fill=0.75)
        ax.text(x0, y_cross - 0.06, shape(batch, n_heads, src_len, d_head), ha="left", va="top", fontsize=SMALL,
                family="monospace")
        ax.text(x0, y_cross - 0.26, "same at every step", ha="left", va="top", fontsize=SMALL, color="0.3")
        q = (x0 + cell / 2, y_query + cell / 2)
        arrow(ax, (q[0] + cell / 2, q[1] + 0.05), (x0 + t * cell / 2 + 0.05, y_self - 0.05), color=WEIGHTS, lw=1.1)
        arrow(ax, (q[0] + cell / 2, q[1] - 0.05), (x0 + src_len * cell / 2, y_cross + 2 * cell + 0.05),
              color=WEIGHTS, lw=1.1)
        if t == 1:
            ax.text(x0 + cell + 0.3, q[1], "attends to both", ha="left", va="center", fontsize=SMALL, color=WEIGHTS)
    return fig


def main(argv: list[str] | None = None) -> None:
    """``python -m course_lib.diagrams payoff-data``: remake the stored data of ``payoff``."""
    args = sys.argv[1:] if argv is None else argv
    if args != ["payoff-data"]:
        raise SystemExit("usage: python -m course_lib.diagrams payoff-data")
    from .payoff_data import write_payoff_data

    print("wrote", write_payoff_data())


if __name__ == "__main__":
    main()
