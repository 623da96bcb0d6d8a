"""Charts of the experiments of lessons 01-06: what a measurement does as a size grows.

Lesson 01: ``context_points`` (each context is a weighted average of the values) and ``scale_experiment_figure``
(why the scores are divided by √d_k); lesson 02: ``attention_cost_figure`` (time and memory against the length,
from ``measure.attention_cost``); lesson 05: ``positional_encoding_figure`` and ``training_runs_figure`` (runs of
``reverser.train_reverser``); lesson 06: ``step_times_figure`` (the time of each generated token, per cache mode).
The trained translator's charts (lessons 07-08) are in ``translation_charts``.

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

from ._checks import shape_str
from .plotting import _as_2d_array


# --- lesson 01: the context as a weighted average, and the √d_k scaling --------------------------------------
def context_points(
    values: torch.Tensor | np.ndarray,
    context: torch.Tensor | np.ndarray,
    key_labels: Sequence[str],
    query_labels: Sequence[str] | None = None,
    *,
    ax: Axes | None = None,
    title: str = "Each context is a weighted average of the values",
) -> Axes:
    """Lesson 01's step 3 as a picture: 2-D ``values [T_k, 2]`` as grey corners (joined in order, labelled with
    ``key_labels``) and each query's ``context [T_q, 2]`` as a red cross (labelled with ``query_labels``, default
    ``key_labels``; queries whose contexts coincide share one label)."""
    values_xy, context_xy = _as_2d_array(values, "values"), _as_2d_array(context, "context")
    query_labels = key_labels if query_labels is None else query_labels
    if values_xy.shape[1] != 2 or context_xy.shape[1] != 2:
        raise ValueError(f"values and context must be [T, 2]; got {shape_str(values_xy.shape)} and "
                         f"{shape_str(context_xy.shape)}")
    if len(key_labels) != len(values_xy) or len(query_labels) != len(context_xy):
        raise ValueError(f"{len(key_labels)} key labels for {len(values_xy)} values, {len(query_labels)} query "
                         f"labels for {len(context_xy)} contexts")
    if ax is None:
        _, ax = plt.subplots(figsize=(5, 5), constrained_layout=True)
    outline = np.concatenate([values_xy, values_xy[:1]])
    ax.plot(outline[:, 0], outline[:, 1], color="0.8", zorder=1)
    ax.scatter(values_xy[:, 0], values_xy[:, 1], s=60, color="0.3", zorder=2, label="value of each key")
    for label, (x, y) in zip(key_labels, values_xy):
        ax.annotate(label, (x * 1.16, y * 1.16), ha="center", va="center", color="0.3")
    ax.scatter(context_xy[:, 0], context_xy[:, 1], marker="X", s=90, color="C3", zorder=3,
               label="context of each query")
    shared: dict[tuple[float, float], list[str]] = {}
    for label, (x, y) in zip(query_labels, context_xy):
        shared.setdefault((round(float(x), 3), round(float(y), 3)), []).append(label)
    for (x, y), names in shared.items():
        ax.annotate(" / ".join(names), (x, y), xytext=(7, -4), textcoords="offset points", color="C3")
    reach = 1.3 * float(np.abs(values_xy).max())
    ax.set(aspect="equal", xlim=(-reach, reach), ylim=(-reach, reach), xlabel="value dim 0", ylabel="value dim 1",
           title=title)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=2, fontsize=9, frameon=False)
    return ax


def scale_experiment_figure(d_ks: Sequence[int], results: dict[str, dict[str, list]], *, n_keys: int) -> Figure:
    """Lesson 01's experiment, three panels against ``d_k`` (log axis): (1) the scores' std with a √d_k guide,
    (2) the mean largest weight per query between "uniform" (1/``n_keys``) and "one-hot", (3) the softmax Jacobian's
    norm per query (median line, 25-75 % band).

    ``results`` maps a variant name (e.g. ``"no scale"``) to ``{"std": [...], "max_weight": [...],
    "jacobian": [(q25, median, q75), ...]}``, one entry per ``d_k``; variants are drawn in red, blue, then the
    default cycle.
    """
    for name, r in results.items():
        if any(len(r[key]) != len(d_ks) for key in ("std", "max_weight", "jacobian")):
            raise ValueError(f"results[{name!r}] needs one std, max_weight and jacobian entry per d_k ({len(d_ks)})")
    colors = ["C3", "C0", *[f"C{i}" for i in range(4, 10)]]
    fig, axes = plt.subplots(1, 3, figsize=(10, 3.6), constrained_layout=True)
    axes[0].plot(d_ks, np.sqrt(d_ks), color="0.75", lw=5, label="√d_k", zorder=0)
    for color, (name, r) in zip(colors, results.items()):
        low, median, high = zip(*r["jacobian"])
        axes[0].plot(d_ks, r["std"], "o-", color=color, label=name)
        axes[1].plot(d_ks, r["max_weight"], "o-", color=color, label=name)
        axes[2].plot(d_ks, median, "o-", color=color, label=f"{name}: median")
        axes[2].fill_between(d_ks, low, high, color=color, alpha=0.2, lw=0)
    for level, text in ((1.0, "one-hot"), (1 / n_keys, f"uniform (1/{n_keys})")):
        axes[1].axhline(level, color="0.5", ls="--", lw=1)
        axes[1].text(min(d_ks) * 1.07, level + (0.02 if level < 1 else -0.03), text, va="top" if level == 1 else
                     "bottom", fontsize=8, color="0.35")
    axes[0].set(yscale="log", title="(1) spread of the scores", ylabel="std of the scores")
    axes[1].set(ylim=(0, 1.05), title="(2) saturation of the softmax", ylabel="mean largest weight per query")
    axes[2].set(yscale="log", title="(3) gradient through the softmax", ylabel="‖∂ weights / ∂ scores‖ per query")
    ticks = list(d_ks)[::2]
    for ax in axes:
        ax.set_xscale("log", base=2)
        ax.set_xticks(ticks, [str(d) for d in ticks])
        ax.minorticks_off()
        ax.set_xlabel("d_k (feature size of q and k)")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    axes[2].legend(fontsize=8, loc="lower left", title="band: middle 50 % of queries", title_fontsize=8)
    return fig


# --- lesson 02: how attention's cost grows with the length ------------------------------------------------
def attention_cost_figure(rows: Sequence[dict], *, title: str = "") -> Figure:
    """Lesson 02's cost plot from ``course_lib.measure.attention_cost`` rows, two log-log panels against ``T``:
    forward time of the hand-written path and of ``F.scaled_dot_product_attention`` with a slope-2 guide, and
    memory: the score tensor's size (computed) next to each path's measured peak (``*_peak_bytes``, when present)."""
    if not rows:
        raise ValueError("need at least one row (one sequence length)")
    lengths = [row["T"] for row in rows]
    fig, (ax_time, ax_mem) = plt.subplots(1, 2, figsize=(9.5, 3.8), constrained_layout=True)
    hand_ms, fused_ms = [1e3 * row["hand_s"] for row in rows], [1e3 * row["sdpa_s"] for row in rows]
    ax_time.loglog(lengths, hand_ms, "o-", color="C0", label="hand-written")
    ax_time.loglog(lengths, fused_ms, "s-", color="C1", label="F.scaled_dot_product_attention")
    ax_time.loglog(lengths, [hand_ms[-1] * (t / lengths[-1]) ** 2 for t in lengths], "k--", lw=1,
                   label="∝ T² (slope 2)")
    ax_time.set(ylabel="forward time (ms)", title="time")
    mib = 2**20
    ax_mem.loglog(lengths, [row["score_bytes"] / mib for row in rows], "-", color="0.75", lw=5,
                  label="score tensor B·H·T·T·4 bytes")
    for key, style, color, label in (("hand_peak_bytes", "o-", "C0", "hand-written (peak)"),
                                     ("math_peak_bytes", "^-", "C2", "SDPA, math fallback (peak)"),
                                     ("sdpa_peak_bytes", "s-", "C1", "SDPA, default kernel (peak)")):
        if all(row.get(key) for row in rows):
            ax_mem.loglog(lengths, [row[key] / mib for row in rows], style, color=color, label=label)
    ax_mem.set(ylabel="memory (MiB)", title="memory of one call")
    for ax in (ax_time, ax_mem):
        ax.set_xticks(lengths, [str(t) for t in lengths])
        ax.minorticks_off()
        ax.set_xlabel("sequence length T (= T_q = T_k)")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


# --- lesson 05: the sinusoidal table, two training runs side by side --------------------------------------
def positional_encoding_figure(table: torch.Tensor | np.ndarray, features: Sequence[int] = (4, 12, 24, 40)) -> Figure:
    """The sinusoidal table ``[max_len, d_model]`` as a heatmap (rows: positions) next to the curves of a few
    even (sine) ``features`` along the sequence, each labelled with its wavelength ``2π·10000^(feature/d_model)``."""
    array = _as_2d_array(table, "table")
    max_len, d_model = array.shape
    if any(f % 2 or not 0 <= f < d_model for f in features):
        raise ValueError(f"features must be even (sine) indices below d_model={d_model}; got {list(features)}")
    fig, (ax_map, ax_curves) = plt.subplots(1, 2, figsize=(10, 4), gridspec_kw={"width_ratios": [1.15, 1]},
                                            constrained_layout=True)
    image = ax_map.imshow(array, cmap="RdBu_r", vmin=-1, vmax=1, aspect="auto", interpolation="nearest")
    ax_map.set(xlabel="feature (even: sin, odd: cos)", ylabel="position p",
               title=f"sinusoidal positions [{max_len}, {d_model}]")
    fig.colorbar(image, ax=ax_map, fraction=0.05)
    for feature in features:
        wavelength = 2 * np.pi * 10000 ** (feature / d_model)
        ax_curves.plot(array[:, feature], label=f"feature {feature}: wavelength {wavelength:,.0f}")
    ax_curves.set(xlabel="position p", ylabel="value", ylim=(-1.1, 1.9), yticks=[-1, -0.5, 0, 0.5, 1],
                  title="sine features along the sequence")
    ax_curves.legend(fontsize=8, loc="upper center", ncol=2)
    ax_curves.grid(alpha=0.3)
    return fig


def training_runs_figure(runs: dict[str, object], *, chance: float | None = None, grad_steps: int = 50,
                         title: str = "training loss") -> Figure:
    """Runs side by side: the loss at every step (left) and each layer's gradient norm averaged over the first
    ``grad_steps`` steps (right). ``runs`` maps a name to an object with ``losses`` ``[steps]`` and ``grad_norms``
    ``[steps, n_layers]`` (a ``course_lib.reverser.ReverserRun``); ``chance`` draws the loss of a uniform guess."""
    if not runs:
        raise ValueError("runs is empty: pass at least one {name: run}")
    fig, (ax_loss, ax_grad) = plt.subplots(1, 2, figsize=(10, 3.8), constrained_layout=True)
    for index, (name, run) in enumerate(runs.items()):
        grad_norms = torch.as_tensor(run.grad_norms, dtype=torch.float32)
        if grad_norms.ndim != 2 or grad_norms.shape[0] != len(run.losses):
            raise ValueError(f"{name}: grad_norms must be [steps={len(run.losses)}, n_layers]; "
                             f"got {shape_str(grad_norms.shape)}")
        ax_loss.plot(run.losses, label=name, color=f"C{index}")
        ax_grad.plot(grad_norms[:grad_steps].mean(dim=0).numpy(), "o-", label=name, color=f"C{index}")
    if chance is not None:
        ax_loss.axhline(chance, color="0.5", linestyle=":", label=f"chance ({chance:.2f})")
    ax_loss.set(xlabel="training step", ylabel="cross-entropy loss", title=title)
    ax_grad.set(xlabel="layer (0 = nearest the input)", ylabel="gradient norm of the layer's parameters",
                title=f"per-layer gradients, mean of steps 0-{grad_steps - 1}")
    ax_grad.set_ylim(bottom=0)
    for ax in (ax_loss, ax_grad):
        ax.legend()
        ax.grid(alpha=0.3)
    return fig


# --- lesson 06: the time of each decoding step ---------------------------------------------------------------
def step_times_figure(seconds: dict[str, torch.Tensor], labels: dict[str, str], *, title: str = "") -> Figure:
    """Lesson 06: left, the time of every decoding step (from step 2: step 1 also holds the once-per-source
    work); right, the running total. ``seconds``: ``{mode: Tensor [N]}`` seconds per step; ``labels``: a legend
    entry per mode."""
    if not seconds or set(labels) != set(seconds):
        raise ValueError(f"labels must name every mode of seconds: got {sorted(labels)} for {sorted(seconds)}")
    n_steps = len(next(iter(seconds.values())))
    steps = np.arange(1, n_steps + 1)
    colours = ["tab:red", "tab:orange", "tab:purple", "tab:blue", "tab:green", "tab:brown"]
    fig, (ax_step, ax_total) = plt.subplots(1, 2, figsize=(10, 4))
    for colour, (mode, s) in zip(colours, seconds.items()):
        s = s.detach().cpu().double().numpy()
        ax_step.plot(steps[1:], s[1:] * 1e3, color=colour, lw=1, label=labels[mode])
        ax_total.plot(steps, s.cumsum(), color=colour, lw=1.5, label=labels[mode])
    ax_step.set(xlabel="step t (without a self-attention K/V cache the decoder reads t positions)",
                ylabel="time for this step (ms)", title=title or "Time per generated token")
    ax_total.set(xlabel="tokens generated", ylabel="total time (s)", title="Running total")
    for ax in (ax_step, ax_total):
        ax.set_xlim(0, n_steps)
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
    ax_step.legend(fontsize=8)
    fig.tight_layout()
    return fig
