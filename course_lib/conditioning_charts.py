"""Lesson 09's figures: three ways to give a decoder its source (a data-flow picture), loss by target position,
and the cross-attention hiding inside a decoder-only model's self-attention. Exact match by length is
``translation_charts.exact_match_by_length``; masks are ``plotting.mask_figure``."""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from ._checks import shape_str
from ._drawing import FONT, SMALL, arrow, box, canvas, cells, tint
from .plotting import COLORS, SOURCE_TOKEN_LABEL, WRITTEN_WORD_LABEL, attention_heatmap

SEPARATOR = "#777777"


def three_ways_figure(*, src_len: int = 5, tgt_len: int = 4, d_model: int = 64) -> Figure:
    """Three decoders and their source, side by side: one memory vector (the masked mean of the encoder states),
    cross-attention over all ``src_len`` encoder states, and a decoder-only model that reads ``source <sep> target``
    as one sequence; shapes for a batch of ``B``."""
    if src_len < 2 or tgt_len < 1:
        raise ValueError(f"need src_len >= 2 and tgt_len >= 1; got {src_len}, {tgt_len}")
    fig, ax = canvas(12.6, 4.6)
    enc, dec, size = COLORS["encoder"], COLORS["decoder"], 0.26
    titles = ["1 · one vector", "2 · cross-attention", "3 · decoder-only"]
    notes = ["the decoder gets a fixed-size summary,\nhowever long the source",
             "every decoder layer reads every encoder\nstate, with weights it computes per word",
             "no encoder, no cross-attention: one stack of\nself-attention over source, <sep>, target"]
    for i, (title, note) in enumerate(zip(titles, notes)):
        ax.text(0.3 + 4.2 * i, 4.35, title, fontsize=FONT + 2, fontweight="bold", va="center")
        ax.text(0.3 + 4.2 * i, 0.3, note, fontsize=SMALL, color="0.3", va="center")
    for i, x0 in enumerate((0.5, 4.7)):  # panels 1 and 2: encoder states at the bottom, a decoder on top
        box(ax, x0 + 1.6, 1.15, 3.0, 0.5, "encoder", color=enc, shape_text=f"states [B, S={src_len}, {d_model}]")
        cells(ax, x0 + 1.6 - src_len * size / 2, 1.55, src_len, 1, size, color=enc, fill=0.55)
        box(ax, x0 + 1.6, 3.45, 3.0, 0.62, "decoder layer: cross-attention", color=dec,
            shape_text=f"weights [B, H, T, {1 if i == 0 else 'S'}]")
    # 1: the masked mean squeezes the states into one vector, the only key the cross-attention has
    box(ax, 2.1, 2.35, 1.7, 0.42, "masked mean", color=enc, shape_text=f"[B, 1, {d_model}]", fill=0.9)
    for col in range(src_len):  # every real state goes into the mean (padding would not)
        arrow(ax, (2.1 - src_len * size / 2 + (col + 0.5) * size, 1.55 + size), (1.7 + col * 0.2, 2.14), color=enc,
              lw=1.0)
    arrow(ax, (2.1, 2.56), (2.1, 3.14), color=enc, label="1 key, 1 value", side="right")
    # 2: every state is a key and a value; the decoder chooses per word
    for col in range(src_len):
        start = (4.7 + 1.6 - src_len * size / 2 + (col + 0.5) * size, 1.55 + size)
        arrow(ax, start, (5.4 + col * 0.35, 3.14), color=enc, lw=1.0)
    ax.text(7.55, 2.4, f"S = {src_len} keys\nand values", fontsize=SMALL, color="0.3", va="center")
    # 3: one sequence, one stack
    x0 = 8.75
    row = [enc] * src_len + [SEPARATOR] + [dec] * tgt_len  # source, <sep>, target
    for col, color in enumerate(row):
        ax.add_patch(Rectangle((x0 + col * 0.36, 1.0), 0.34, 0.34, facecolor=tint(color, 0.55), edgecolor=color))
    ax.text(x0, 0.8, f"source ({src_len})", fontsize=SMALL, color=enc, va="center")
    ax.text(x0 + (src_len + 1) * 0.36, 0.8, f"target ({tgt_len})", fontsize=SMALL, color=dec, va="center")
    width = len(row) * 0.36
    box(ax, x0 + width / 2, 2.35, width, 0.62, "self-attention layers × L", color=SEPARATOR,
        shape_text=f"[B, S+1+T, {d_model}]", note="causal, or prefix-LM over the source", fill=0.88)
    arrow(ax, (x0 + width / 2, 1.36), (x0 + width / 2, 2.04), color=SEPARATOR)
    box(ax, x0 + width / 2, 3.45, width, 0.62, "next target word", color=dec, shape_text="logits [B, T, V_tgt]")
    arrow(ax, (x0 + width / 2, 2.66), (x0 + width / 2, 3.14), color=dec,
          label="target rows read\nsource columns", side="right")
    return fig


def loss_by_position_figure(curves: Mapping[str, tuple[torch.Tensor, torch.Tensor]], *, min_count: int = 20,
                            ax: Axes | None = None, title: str = "Where in the sentence the loss goes up") -> Axes:
    """Mean teacher-forced loss at each target position, one line per model: ``{name: (loss [T], count [T])}``
    (``conditioning.loss_by_position``); positions reached by fewer than ``min_count`` sentences are left out."""
    if ax is None:
        _, ax = plt.subplots(figsize=(8.5, 3.4), constrained_layout=True)
    for index, (name, (loss, count)) in enumerate(curves.items()):
        loss, count = torch.as_tensor(loss), torch.as_tensor(count)
        if loss.shape != count.shape or loss.ndim != 1:
            raise ValueError(f"{name}: loss and count must be 1-D and of one size; got {shape_str(loss.shape)} "
                             f"and {shape_str(count.shape)}")
        shown = (count >= min_count).nonzero().flatten()
        ax.plot((shown + 1).tolist(), loss[shown].tolist(), "o-", ms=3, color=f"C{index}", label=name)
    ax.set(xlabel="target position (1 = first word written)", ylabel="mean loss, -log p(correct word)",
           title=title, yscale="symlog", ylim=(0, None))
    ax.set_yscale("symlog", linthresh=0.01)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, frameon=False)
    return ax


def hidden_cross_attention_figure(full: torch.Tensor, n_source: int, source: Sequence[str], target: Sequence[str],
                                  block: torch.Tensor, encoder_decoder: torch.Tensor,
                                  alignment: Sequence[tuple[int, int]], *,
                                  titles: Sequence[str] = ("decoder-only: all of its self-attention",
                                                           "its target × source block",
                                                           "encoder-decoder: cross-attention")) -> Figure:
    """Three panels: a decoder-only model's self-attention over ``source <sep> target`` ``full [L, L]`` with the
    block where target rows read source columns outlined; that block ``[T, S]``; and an encoder-decoder's
    cross-attention ``[T, S]`` of the same sentence. Gold links ``(source index, target index)`` are boxed."""
    full, block, encoder_decoder = (torch.as_tensor(w).detach().float().cpu() for w in (full, block, encoder_decoder))
    n_target = len(target)
    if full.ndim != 2 or full.shape[0] != full.shape[1] or full.shape[0] < n_source + n_target:
        raise ValueError(f"full must be [L, L] with L >= {n_source + n_target}; got {shape_str(full.shape)}")
    for name, w in (("block", block), ("encoder_decoder", encoder_decoder)):
        if w.shape != (n_target, n_source):
            raise ValueError(f"{name} must be [T, S] = [{n_target}, {n_source}]; got {shape_str(w.shape)}")
    fig, axes = plt.subplots(1, 3, figsize=(15.5, 5.4), width_ratios=[1.45, 1, 1], constrained_layout=True)
    length = full.shape[0]
    labels = [*source, "<sep>", *target][:length]
    attention_heatmap(full, labels, labels, ax=axes[0], title=titles[0], annotate=False, cbar=False)
    for edge in (n_source, n_source + 1):
        axes[0].axhline(edge, color="white", lw=1.2)
        axes[0].axvline(edge, color="white", lw=1.2)
    axes[0].add_patch(Rectangle((0, n_source), n_source, n_target, fill=False, edgecolor="C2", lw=2.5))
    axes[0].set(xlabel="key position (attended to)", ylabel="query position: the token it reads")
    for ax, weights, title in ((axes[1], block, titles[1]), (axes[2], encoder_decoder, titles[2])):
        attention_heatmap(weights, target, source, ax=ax, title=title, annotate=False, cbar=False)
        for s, t in alignment:
            ax.add_patch(Rectangle((s, t), 1, 1, fill=False, edgecolor="C2", linewidth=1.8))
        ax.set(xlabel=SOURCE_TOKEN_LABEL, ylabel=WRITTEN_WORD_LABEL)
    axes[1].text(0.0, -0.16, "green: gold links; the block's rows need not sum to 1\n(the rest goes to <sep> and "
                 "earlier target words)", transform=axes[1].transAxes, fontsize=8, color="0.3", va="top")
    return fig


def cost_table_rows(costs: Mapping[str, Sequence[tuple[int, object, object]]]) -> list[str]:
    """Lines of a plain-text table: ``{model: [(t, predicted StepCost, measured StepCost), ...]}``."""
    lines = [f"{'model':<16}{'t':>4}{'cache bytes':>14}{'measured':>11}{'attention FLOPs':>18}{'measured':>11}"]
    for name, rows in costs.items():
        for t, predicted, measured in rows:
            lines.append(f"{name:<16}{t:>4}{predicted.cache_bytes:>14,}{measured.cache_bytes:>11,}"
                         f"{predicted.attention_flops:>18,}{measured.attention_flops:>11,}")
    return lines



def sentence_view_figure(cross: torch.Tensor, source: Sequence[str], target: Sequence[str],
                         alignment: Sequence[tuple[int, int]], probabilities: Mapping[str, torch.Tensor], *,
                         title: str = "") -> Figure:
    """One sentence, two views side by side, row for row: a cross-attention model's attention ``[T, S]`` with the
    gold links boxed, and each model's probability of the correct word at every target position
    (``{name: [T]}``): where the one-vector model loses the sentence, and what cross-attention looks at there."""
    cross = torch.as_tensor(cross).detach().float().cpu()
    n_target = len(target)
    if cross.shape != (n_target, len(source)):
        raise ValueError(f"cross must be [T, S] = [{n_target}, {len(source)}]; got {shape_str(cross.shape)}")
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 0.36 * n_target + 2.2), width_ratios=[1.5, 1],
                                      constrained_layout=True)
    attention_heatmap(cross, target, source, ax=left, annotate=False, cbar=False,
                      title="cross-attention model: where each word looks")
    for s, t in alignment:
        left.add_patch(Rectangle((s, t), 1, 1, fill=False, edgecolor="C2", linewidth=1.8))
    left.set(xlabel=SOURCE_TOKEN_LABEL, ylabel=WRITTEN_WORD_LABEL)
    height = 0.8 / max(1, len(probabilities))
    for index, (name, p) in enumerate(probabilities.items()):
        p = torch.as_tensor(p).detach().float().cpu()
        if p.shape != (n_target,):
            raise ValueError(f"{name}: probabilities must be [T] = [{n_target}]; got {shape_str(p.shape)}")
        right.barh([row + 0.1 + index * height for row in range(n_target)], p.tolist(), height=height,
                   color=f"C{index}", label=name, align="edge")
    right.set(ylim=(n_target, 0), xlim=(0, 1), yticks=[row + 0.5 for row in range(n_target)], yticklabels=list(target),
              xlabel="probability of the correct word (teacher-forced)")
    right.set_title("how sure each model is", pad=22)
    right.legend(fontsize=8, loc="lower center", bbox_to_anchor=(0.5, 1.06), ncol=len(probabilities), frameon=False)
    right.grid(axis="x", alpha=0.3)
    if title:
        fig.suptitle(title)
    return fig
