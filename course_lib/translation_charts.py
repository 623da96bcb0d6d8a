"""Charts of the toy translator, lessons 07-08: how its training went, and what its heads do.

Lesson 07: ``training_curves`` (training loss and validation exact match against seconds; ``LiveTrainingPlot``
redraws it while ``training.train`` runs), ``loss_curve``, and ``exact_match_by_length``. Lesson 08 draws the
measurements of ``head_analysis``: ``entropy_examples``, ``head_roles_figure``, ``where_heads_look_figure`` and
``silencing_figure``.

Every function draws into a Matplotlib ``Axes`` (made if not given) and returns it, or returns the
``Figure`` for multi-panel plots.
"""
from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import FormatStrFormatter, MaxNLocator, NullFormatter

from ._checks import shape_str
from .plotting import COLORS, _check_labels


# --- lesson 07: training curves, exact match by sentence length ----------------------------------------------
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


def exact_match_by_length(
    groups: dict[str, tuple[Sequence[int] | torch.Tensor, Sequence[bool] | torch.Tensor]],
    *,
    longest_trained: int | None = None,
    min_count: int = 5,
    ax: Axes | None = None,
    title: str = "Exact match by source length",
) -> Axes:
    """Exact match (%) against source length, one line per group: ``{name: (lengths [N], correct [N])}``.

    Lengths with fewer than ``min_count`` sentences in a group are left out (too noisy to read); with a
    single group, each point is labelled with its number of sentences. ``longest_trained`` shades the
    lengths no training sentence had.
    """
    if ax is None:
        _, ax = plt.subplots(figsize=(8.5 if len(groups) > 1 else 8, 3.4), constrained_layout=True)
    right = 0
    for index, (name, (lengths, correct)) in enumerate(groups.items()):
        lengths, correct = np.asarray(lengths, dtype=int), np.asarray(correct, dtype=bool)
        if lengths.shape != correct.shape or lengths.ndim != 1:
            raise ValueError(f"{name}: lengths and correct must be 1-D and of one size; got "
                             f"{shape_str(lengths.shape)} and {shape_str(correct.shape)}")
        shown = [n for n in np.unique(lengths) if (lengths == n).sum() >= min_count]
        values = [100 * correct[lengths == n].mean() for n in shown]
        ax.plot(shown, values, "o-", ms=4, color=f"C{index}", label=f"{name} ({len(lengths)} sentences)")
        for n, value in zip(shown, values) if len(groups) == 1 else ():
            ax.annotate(str((lengths == n).sum()), (n, value), xytext=(0, -11), textcoords="offset points",
                        ha="center", fontsize=8, color="0.35")
        right = max([right, *shown])
    if longest_trained is not None:
        ax.axvspan(longest_trained + 0.5, max(right, longest_trained) + 1, color="0.9", zorder=0)
        ax.text(longest_trained + 1, 50, "longer than any\ntraining sentence", fontsize=8, color="0.3")
    ax.set(xlabel="source sentence length (words)" + ("; under each point: sentences" if len(groups) == 1 else ""),
           ylabel="exact match (%)", ylim=(-8, 105), title=title)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    if len(groups) > 1:
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    return ax


# --- lesson 08: head roles: entropy, where the heads look, silencing ------------------------------------------
def entropy_examples(
    weights: torch.Tensor,
    normalised: torch.Tensor,
    written_words: Sequence[str],
    source_tokens: Sequence[str],
) -> Figure:
    """Three attention rows of one sentence as bar charts: the sharpest, the median and the most spread
    by normalised entropy. ``weights [L, H, T, S]``, ``normalised [L, H, T]``; a dotted line marks the
    height of an even row, ``1 / S``."""
    if weights.ndim != 4 or tuple(normalised.shape) != tuple(weights.shape[:3]):
        raise ValueError(f"need weights [L, H, T, S] and normalised [L, H, T]; got {shape_str(weights.shape)} "
                         f"and {shape_str(normalised.shape)}")
    _check_labels(weights[0, 0].detach().cpu().numpy(), written_words, source_tokens)
    n_words, order = weights.shape[-1], normalised.flatten().argsort()
    picks = {"sharpest": order[0], "median": order[len(order) // 2], "most spread": order[-1]}
    fig, axes = plt.subplots(1, 3, figsize=(10, 2.9), constrained_layout=True, sharey=True)
    for ax, (name, index) in zip(axes, picks.items()):
        layer, head, row = (int(i) for i in torch.unravel_index(index, normalised.shape))
        ax.bar(range(n_words), weights[layer, head, row].detach().cpu().double().numpy(), color=COLORS["weights"])
        ax.axhline(1 / n_words, color="0.4", linestyle=":", linewidth=1)  # an even row
        ax.set_xticks(range(n_words), source_tokens, rotation=60, ha="right", fontsize=8)
        ax.set_title(f"{name}: layer {layer}, head {head}, writing '{written_words[row]}'\n"
                     f"H / ln {n_words} = {normalised[layer, head, row]:.2f}", fontsize=9)
    axes[0].set_ylabel("attention weight")
    return fig


def head_roles_figure(entropy: torch.Tensor, aer: torch.Tensor, *, ax: Axes | None = None) -> Axes:
    """One point per head: mean normalised entropy ``[L, H]`` (x) against AER ``[L, H]`` (y), coloured by
    layer, with the head's number inside its marker."""
    if entropy.shape != aer.shape or entropy.ndim != 2:
        raise ValueError(f"entropy and aer must both be [L, H]; got {shape_str(entropy.shape)} and "
                         f"{shape_str(aer.shape)}")
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 4.2), constrained_layout=True)
    for layer in range(entropy.shape[0]):
        ax.scatter(entropy[layer].tolist(), aer[layer].tolist(), s=220, color=f"C{layer}", alpha=0.85,
                   label=f"layer {layer}")
        for head in range(entropy.shape[1]):
            ax.text(float(entropy[layer, head]), float(aer[layer, head]), str(head), ha="center", va="center",
                    color="white", fontsize=8, fontweight="bold")
    ax.set(xlabel="mean normalised entropy (0 = one word, 1 = even)", ylabel="AER (0 = always the gold word)",
           xlim=(0, max(0.6, float(entropy.max()) + 0.1)), ylim=(0, 1),
           title="Head roles: how spread vs how aligned")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper right", title="number = head", title_fontsize=8)
    return ax


def where_heads_look_figure(shares: torch.Tensor, bins: Sequence[str], *, ax: Axes | None = None) -> Axes:
    """Stacked bars, one per head: the share of rows ``[L, H, len(bins)]`` whose strongest attention falls in
    each bin (``head_analysis.where_heads_look``); the first bin (the gold word) in green, the last in grey."""
    if shares.ndim != 3 or shares.shape[-1] != len(bins):
        raise ValueError(f"shares must be [L, H, {len(bins)} bins]; got {shape_str(shares.shape)}")
    if ax is None:
        _, ax = plt.subplots(figsize=(8, 3.8), constrained_layout=True)
    n_layers, n_heads = shares.shape[:2]
    labels = [f"layer {layer}, head {head}" for layer in range(n_layers) for head in range(n_heads)]
    flat = 100 * shares.flatten(0, 1).detach().cpu().double().numpy()  # [L * H, bins]
    left = np.zeros(n_layers * n_heads)
    colors = ["C2", "C0", "C1", "C8", "C4", "C5", "C6", "C9"][: len(bins) - 1] + ["0.75"]  # last bin: grey
    for b, name in enumerate(bins):
        ax.barh(labels, flat[:, b], left=left, color=colors[b], label=name)
        left += flat[:, b]
    ax.invert_yaxis()
    ax.tick_params(labelsize=8)
    ax.set(xlabel="share of target words (%)", xlim=(0, 100), title="Where each head's strongest attention goes")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=3, fontsize=8, frameon=False)
    return ax


def silencing_figure(per_head: torch.Tensor, per_layer: torch.Tensor, nothing: float, aer: torch.Tensor, *,
                     ax: Axes | None = None) -> Axes:
    """Exact match with one head silenced (``per_head [L, H]``, coloured by layer, its AER under the bar) and
    with a whole layer silenced (``per_layer [L]``, grey), against the dashed line of ``nothing`` silenced."""
    if per_head.shape != aer.shape or per_head.ndim != 2 or per_layer.shape != per_head.shape[:1]:
        raise ValueError(f"need per_head [L, H], per_layer [L] and aer [L, H]; got {shape_str(per_head.shape)}, "
                         f"{shape_str(per_layer.shape)} and {shape_str(aer.shape)}")
    if ax is None:
        _, ax = plt.subplots(figsize=(9, 3.4), constrained_layout=True)
    n_layers, n_heads = per_head.shape
    names = [f"L{layer}H{head}\nAER {aer[layer, head]:.2f}" for layer in range(n_layers) for head in range(n_heads)]
    names += [f"all of\nlayer {layer}" for layer in range(n_layers)]
    values = [100 * v for v in per_head.flatten().tolist() + per_layer.tolist()]
    colors = [f"C{layer}" for layer in range(n_layers) for _ in range(n_heads)] + ["0.45"] * n_layers
    ax.bar(range(len(values)), values, color=colors)
    for x in range(n_layers * n_heads, len(values)):  # a whole layer: often too low to see, so say it
        ax.text(x, values[x] + 1.5, f"{values[x]:.1f} %", ha="center", va="bottom", fontsize=8)
    ax.axhline(100 * nothing, color="black", linestyle="--", linewidth=1)
    ax.text(len(values) - 0.5, 100 * nothing + 2, f"nothing silenced: {nothing:.1%}", ha="right", va="bottom",
            fontsize=8)
    ax.set_xticks(range(len(values)), names, fontsize=8)
    ax.set(ylabel="exact match (%)", ylim=(0, 112), title="Exact match with one head (or a whole layer) silenced")
    return ax
