"""Lesson 12's figures: what cross-attention over a long source costs, and what each fix keeps.

Measured charts: ``plot_cost_scaling`` (time and peak memory against each length, from
``measure.cross_attention_cost``), ``plot_chunk_sweep`` (chunk size against time and memory, from
``bench.long_source_benchmark``), ``plot_cost_accuracy`` (the approximations on one cost/accuracy chart) and
``plot_cache_bytes`` (the cross-attention K/V cache against the source length). Pictures of a mechanism:
``draw_chunked_attention`` (the data flow of ``long_attention.chunked_attention`` with its shapes),
``plot_online_softmax_trace`` (one query's running max and sum, chunk by chunk; its numbers come from
``online_softmax_trace``), ``plot_approximation_patterns`` (which weights top-k or a window keeps),
``draw_document_isolation`` (``masks.cross_document_mask`` for packed passages) and ``draw_kv_sharing``
(which K/V head each query head reads in MHA, GQA and MQA).

Colours: the three attention paths in ``METHOD_STYLES`` (the hand-written path and SDPA as in lesson 02),
queries in ``plotting.COLORS["decoder"]``, keys and values in ``COLORS["encoder"]``, scores in
``COLORS["weights"]``. Every function returns a Matplotlib ``Figure`` and raises ``ValueError`` for inputs that
do not fit together.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from matplotlib.patches import Patch, Rectangle
from matplotlib.ticker import FuncFormatter, MaxNLocator, PercentFormatter

from ._checks import shape_str
from ._drawing import FONT, SMALL, arrow, box, canvas, check_sizes, shape, tint
from .cache import cross_kv_cache_bytes
from .long_attention import online_softmax_step
from .masks import cross_document_mask
from .plotting import ATTENTION_CMAP, COLORS, MASK_COLORS, SOURCE_TOKEN_LABEL, WRITTEN_WORD_LABEL

DEC, ENC, WEIGHTS, RES = (COLORS[k] for k in ("decoder", "encoder", "weights", "residual"))
METHOD_STYLES = {  # name in the records: (legend label, marker, colour)
    "hand": ("hand-written (stores the scores)", "o", "C0"),
    "sdpa": ("F.scaled_dot_product_attention", "s", "C1"),
    "chunked": ("chunked (online softmax)", "^", "C2"),
}
SHORT_NAMES = {"hand": "hand-written", "sdpa": "SDPA", "chunked": "chunked"}
SWEEP_TITLES = {"t_src": ("T_src", "T_tgt"), "t_tgt": ("T_tgt", "T_src")}  # (growing length, fixed length)
KIND_STYLES = {  # kind of approximation (lower case, letters only): (marker, colour)
    "exact": ("*", "black"), "topk": ("o", "#0072B2"), "window": ("s", "#E69F00"), "linear": ("D", "#D55E00"),
    "latents": ("P", "#CC79A7"), "latent": ("P", "#CC79A7"),
}
DOCUMENT_COLORS = ("#E69F00", "#56B4E9", "#009E73", "#CC79A7", "#D55E00", "#0072B2", "#F0E442", "#999933")
PAD_COLOR = "0.55"
GREY = "0.3"
MIB = 2**20


# --- shared helpers --------------------------------------------------------------------------------------------
def _finish(ax: Axes, *, grid_which: str = "both") -> None:
    ax.grid(alpha=0.3, which=grid_which)
    ax.spines[["top", "right"]].set_visible(False)


def _length_ticks(ax: Axes, lengths: Sequence[int]) -> None:
    ax.set_xscale("log", base=2)
    ax.set_xticks(list(lengths), [f"{t:,}" if t < 10_000 else f"{t // 1024}k" for t in lengths])
    ax.minorticks_off()


def _bytes_text(n_bytes: float) -> str:
    """``1536`` -> ``"1.5 KiB"``: binary units, three significant digits."""
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n_bytes >= size:
            return f"{n_bytes / size:.3g} {unit}"
    return f"{n_bytes:.0f} B"


def _slope(xs: Sequence[float], ys: Sequence[float]) -> float:
    return float(np.polyfit(np.log(np.asarray(xs, float)), np.log(np.asarray(ys, float)), 1)[0])


def _guides(ax: Axes, xs: np.ndarray, y0: float) -> None:
    """Dashed slope-1 and dotted slope-2 lines from ``(xs[0], y0)``, named in the legend."""
    for power, style, text in ((1, "--", "guide: slope 1 (∝ length)"), (2, ":", "guide: slope 2 (∝ length²)")):
        ax.plot(xs, y0 * (xs / xs[0]) ** power, style, color="0.45", lw=1.1, zorder=1, label=text)


# --- 1. cost: a product of two lengths -------------------------------------------------------------------------
def _cost_rows(records: Mapping | Sequence[Mapping]) -> dict[str, dict[str, list[Mapping]]]:
    """``cross_attention_cost``'s rows by sweep and method, each sorted by the growing length, checked."""
    rows = records["rows"] if isinstance(records, Mapping) else records
    needed = {"sweep", "t_tgt", "t_src", "method", "seconds", "peak_bytes", "score_bytes"}
    grouped: dict[str, dict[str, list[Mapping]]] = {sweep: {m: [] for m in METHOD_STYLES} for sweep in SWEEP_TITLES}
    for row in rows:
        if not isinstance(row, Mapping) or not needed <= set(row):
            got = sorted(row) if isinstance(row, Mapping) else repr(row)
            raise ValueError(f"each row needs the keys {sorted(needed)}; got {got}")
        if row["sweep"] not in SWEEP_TITLES or row["method"] not in METHOD_STYLES:
            raise ValueError(f"sweep must be one of {list(SWEEP_TITLES)} and method one of {list(METHOD_STYLES)}; "
                             f"got sweep={row['sweep']!r}, method={row['method']!r}")
        if min(row["seconds"], row["peak_bytes"], row["score_bytes"]) <= 0:
            raise ValueError(f"seconds, peak_bytes and score_bytes must be > 0 (log axes); got {dict(row)}")
        grouped[row["sweep"]][row["method"]].append(row)
    for sweep, methods in grouped.items():
        for method, picked in methods.items():
            if len(picked) < 2:
                raise ValueError(f"sweep {sweep!r} needs at least 2 lengths for {method!r}; got {len(picked)}")
            picked.sort(key=lambda r: r[sweep])
    return grouped


def plot_cost_scaling(records: Mapping | Sequence[Mapping]) -> Figure:
    """Time (top) and peak memory (bottom) of the three attention paths on log-log axes, against ``T_src`` with
    ``T_tgt`` fixed (left) and against ``T_tgt`` with ``T_src`` fixed (right), from
    ``measure.cross_attention_cost`` (its dict, or its ``"rows"``). Each legend entry carries its fitted
    slope; slope-1 and slope-2 guides start at the hand-written path's first point; a thick grey line is one
    score matrix (``score_bytes``). Raises ``ValueError`` for rows with missing keys, unknown methods or sweeps,
    values <= 0 or fewer than 2 lengths per path."""
    grouped = _cost_rows(records)
    fig, axes = plt.subplots(2, 2, figsize=(10.5, 7.4), constrained_layout=True)
    for col, (sweep, methods) in enumerate(grouped.items()):
        growing, fixed = SWEEP_TITLES[sweep]
        first = methods["hand"]
        fixed_value = first[0][fixed.lower()]
        lengths = np.array([r[sweep] for r in first], dtype=float)
        ax_time, ax_mem = axes[0, col], axes[1, col]
        score_bytes = [r["score_bytes"] for r in first]
        ax_mem.plot(lengths, np.array(score_bytes) / MIB, "-", color="0.8", lw=6, zorder=0,
                    label=f"one score matrix B·H·T_tgt·T_src·4 bytes (slope {_slope(lengths, score_bytes):.2f})")
        for method, picked in methods.items():
            label, marker, color = METHOD_STYLES[method]
            xs = [r[sweep] for r in picked]
            ms, mib = [1e3 * r["seconds"] for r in picked], [r["peak_bytes"] / MIB for r in picked]
            ax_time.plot(xs, ms, marker + "-", color=color, label=f"{label}: slope {_slope(xs, ms):.2f}")
            ratio = picked[-1]["peak_bytes"] / picked[-1]["score_bytes"]
            ax_mem.plot(xs, mib, marker + "-", color=color,
                        label=f"{SHORT_NAMES[method]}: slope {_slope(xs, mib):.2f}, "
                              f"peak = {ratio:.2g} × the score matrix")
        _guides(ax_time, lengths, 1e3 * first[0]["seconds"])
        _guides(ax_mem, lengths, first[0]["peak_bytes"] / MIB)
        for ax, what, unit in ((ax_time, "forward time", "ms"), (ax_mem, "peak memory of a call", "MiB")):
            ax.set_yscale("log")
            _length_ticks(ax, [int(t) for t in lengths])
            ax.set(xlabel=f"{growing} (keys)" if growing == "T_src" else f"{growing} (queries)",
                   ylabel=f"{what} ({unit})", title=f"{growing} grows ({fixed} = {fixed_value:,})")
            ax.legend(fontsize=7.5, frameon=False, loc="upper left")
            _finish(ax)
    settings = records.get("settings", {}) if isinstance(records, Mapping) else {}
    detail = (f" (B = {settings['batch']}, H = {settings['heads']}, d_head = {settings['d_head']}, chunks of "
              f"{settings['chunk_size']} keys)") if {"batch", "heads", "d_head", "chunk_size"} <= set(settings) else ""
    fig.suptitle("Cross-attention costs T_tgt × T_src: each length alone gives slope 1, not 2" + detail, fontsize=11)
    return fig


# --- 2. the chunked path as data flow --------------------------------------------------------------------------
def _chunk_strip(ax: Axes, x0: float, y0: float, width: float, t_k: int, chunk_size: int, color: str,
                 name: str) -> tuple[float, float]:
    """Keys (or values) as a strip of chunks, chunk 2 (or 1) dark; returns the dark chunk's bottom centre."""
    n_chunks = -(-t_k // chunk_size)
    shown = list(range(n_chunks)) if n_chunks <= 10 else [0, 1, 2, 3, None, n_chunks - 2, n_chunks - 1]
    sizes = [min(chunk_size, t_k - c * chunk_size) if c is not None else chunk_size for c in shown]
    unit = width / sum(sizes)
    current = min(1, n_chunks - 1)
    x, centre = x0, (x0, y0)
    for c, size in zip(shown, sizes):
        w = size * unit
        if c is None:
            ax.text(x + w / 2, y0 + 0.11, "…", ha="center", va="center", fontsize=FONT)
        else:
            dark = c == current
            ax.add_patch(Rectangle((x, y0), w, 0.22, facecolor=color if dark else tint(color, 0.7), edgecolor="white",
                                   linewidth=1.2, zorder=2))
            if dark:
                centre = (x + w / 2, y0)
                ax.text(x + w / 2, y0 + 0.11, "j", ha="center", va="center", fontsize=SMALL, color="white",
                        fontweight="bold", zorder=3)
        x += w
    ax.text(x0 - 0.1, y0 + 0.11, f"{name} {shape('T_k', 'd')}", ha="right", va="center", fontsize=SMALL,
            fontweight="bold", color=color)
    return centre


def draw_chunked_attention(t_q: int = 256, t_k: int = 4096, chunk_size: int = 256, d_head: int = 64) -> Figure:
    """The data flow of ``long_attention.chunked_attention`` for one head, with the shapes of the arguments: the
    queries ``[T_q, d]`` against one key/value chunk ``[C, d]`` at a time, the ``[T_q, C]`` score tile, the
    online-softmax update of the running max ``m``, sum ``l`` and accumulator ``acc`` (rescaled by
    ``exp(m - m_new)``), and ``acc / l`` after the last chunk. Raises ``ValueError`` for sizes that are not
    positive ints."""
    check_sizes(t_q=t_q, t_k=t_k, chunk_size=chunk_size, d_head=d_head)
    c = min(chunk_size, t_k)
    n_chunks = -(-t_k // c)
    last = t_k - (n_chunks - 1) * c
    fig, ax = canvas(10.0, 4.9)
    ax.text(0.15, 4.65, "Exact attention, one chunk of keys at a time (online softmax)", fontsize=FONT + 2,
            fontweight="bold", va="center")
    chunks_text = f"{n_chunks} chunks of C = {c} keys" + (f" (the last holds {last})" if last != c else "")
    ax.text(0.15, 4.36, f"one batch row and head: T_q = {t_q:,} queries, T_k = {t_k:,} keys, d = {d_head}: "
            f"{chunks_text}; loop j = 1 … {n_chunks}", fontsize=SMALL, color=GREY, va="center")
    k_centre = _chunk_strip(ax, 1.0, 3.62, 2.9, t_k, c, ENC, "K")
    v_centre = _chunk_strip(ax, 5.0, 3.62, 2.9, t_k, c, ENC, "V")
    xq, xs, xu, xm = 0.8, 2.65, 5.25, 8.95
    y = 2.05
    box(ax, xq, y, 1.2, 0.62, "queries Q", color=DEC, shape_text=shape(t_q, d_head), fontsize=SMALL)
    box(ax, xs, y, 1.5, 0.82, "score tile S", color=WEIGHTS, shape_text=shape(t_q, c), note="Q K_jᵀ / √d",
        fontsize=SMALL)
    arrow(ax, (xq + 0.6, y), (xs - 0.75, y), color=DEC)
    arrow(ax, k_centre, (xs, y + 0.41), color=ENC, label=f"K_j {shape(c, d_head)}", side="right", monospace=True)
    # the update, written out
    ux0, uw, uh = xu - 1.7, 3.4, 1.62
    box(ax, xu, y, uw, uh, "", color=WEIGHTS, fill=0.92)
    ax.text(xu, y + uh / 2 - 0.16, "online-softmax step (chunk j)", ha="center", va="center", fontsize=SMALL,
            fontweight="bold")
    lines = [("m_new = max(m, rowmax S)", shape(t_q, 1)), ("P = exp(S − m_new)", shape(t_q, c)),
             ("r = exp(m − m_new)", "≤ 1"), ("l ← r · l + rowsum P", shape(t_q, 1)),
             ("acc ← r · acc + P V_j", shape(t_q, d_head))]
    for i, (formula, dims) in enumerate(lines):
        yy = y + uh / 2 - 0.42 - i * 0.24
        ax.text(ux0 + 0.12, yy, formula, ha="left", va="center", fontsize=SMALL, family="monospace",
                color=RES if i != 2 else WEIGHTS, fontweight="bold" if i == 2 else None)
        ax.text(ux0 + uw - 0.1, yy, dims, ha="right", va="center", fontsize=SMALL, family="monospace", color=GREY)
    arrow(ax, (xs + 0.75, y), (ux0, y), color=WEIGHTS)
    arrow(ax, v_centre, (v_centre[0], y + uh / 2), color=ENC, label=f"V_j {shape(c, d_head)}", side="right",
          monospace=True)
    # the running state, carried from chunk to chunk
    states = [("running max m", shape(t_q, 1), "starts at −inf"), ("running sum l", shape(t_q, 1), "starts at 0"),
              ("accumulator acc", shape(t_q, d_head), "starts at 0")]
    ax.add_patch(Rectangle((xm - 1.0, y - 1.12), 2.0, 2.3, facecolor=tint(RES, 0.96), edgecolor=RES, linewidth=0.8,
                           linestyle="--", zorder=1.5))
    ax.text(xm, y + 1.28, "state per query row", ha="center", va="center", fontsize=SMALL, fontweight="bold",
            color=RES)
    for i, (title, dims, note) in enumerate(states):
        box(ax, xm, y + 0.72 - i * 0.72, 1.75, 0.64, title, color=RES, shape_text=dims, note=note, fill=0.9,
            fontsize=SMALL)
    arrow(ax, (xu + uw / 2, y + 0.36), (xm - 1.0, y + 0.36), color=RES, label="new m, l, acc")
    arrow(ax, (xm - 1.0, y - 0.36), (xu + uw / 2, y - 0.36), color=RES, label="m, l, acc\nso far", side="below")
    # after the last chunk
    box(ax, xm, 0.42, 1.8, 0.52, "output = acc / l", color=DEC, shape_text=shape(t_q, d_head), fontsize=SMALL)
    arrow(ax, (xm, y - 1.12), (xm, 0.68), color=DEC, label=f"after chunk {n_chunks}", side="left")
    ax.text(0.15, 0.62, f"Held at once: S and P, {shape(t_q, c)} = {t_q * c:,} numbers, instead of all the scores "
            f"{shape(t_q, t_k)} = {t_q * t_k:,}" + (f" ({t_k // c if t_k % c == 0 else t_k / c:.3g}× fewer)"
                                                     if t_k > c else ""), fontsize=SMALL, va="center")
    ax.text(0.15, 0.36, "r rescales what was summed relative to the old max; rows with l = 0 (every key masked) "
            "give 0, not NaN.", fontsize=SMALL, va="center", color=GREY)
    return fig


# --- 3. one query's online softmax, chunk by chunk -------------------------------------------------------------
def _scores_row(scores_row: torch.Tensor | np.ndarray | Sequence[float]) -> torch.Tensor:
    row = torch.as_tensor(scores_row).detach().cpu().to(torch.float64)
    if row.ndim != 1 or row.numel() == 0:
        raise ValueError(f"scores_row must be one query's scores, 1-D [T_k] with T_k >= 1; got {shape_str(row.shape)}")
    if torch.isnan(row).any() or (row == float("inf")).any():
        raise ValueError("scores_row must not hold NaN or +inf (a masked key is -inf)")
    return row


def online_softmax_trace(scores_row: torch.Tensor | np.ndarray | Sequence[float], chunk_size: int) -> dict:
    """One query's scores ``[T_k]`` folded in chunk by chunk with ``long_attention.online_softmax_step``; the
    values are the identity ``[T_k, T_k]``, so ``acc`` is the vector of unnormalised weights ``exp(s - m)``.

    Returns per chunk (lists of length ``n_chunks``): ``starts``, ``ends`` (key index ranges), ``running_max``
    (``m`` after the chunk), ``sum_before`` (``l`` before it), ``sum_rescaled`` (``l · exp(m_old - m_new)``),
    ``running_sum`` (``l`` after it, stored relative to the current max), ``rescale`` (``exp(m_old - m_new)``,
    1.0 where nothing was summed yet), ``rescaled`` (True where an earlier sum was shrunk); and ``weights``
    (``acc / l``, float64 ``[T_k]``; zeros when every key is ``-inf``). Raises ``ValueError`` for scores that
    are not 1-D or hold NaN or +inf, or ``chunk_size < 1``."""
    row = _scores_row(scores_row)
    check_sizes(chunk_size=chunk_size)
    t_k = row.numel()
    m = torch.full((1, 1), float("-inf"), dtype=torch.float64)  # running max
    total = torch.zeros((1, 1), dtype=torch.float64)  # running sum l
    acc, identity = torch.zeros((1, t_k), dtype=torch.float64), torch.eye(t_k, dtype=torch.float64)
    trace: dict[str, list] = {key: [] for key in ("starts", "ends", "running_max", "sum_before", "sum_rescaled",
                                                  "running_sum", "rescale", "rescaled")}
    for start in range(0, t_k, chunk_size):
        end = min(start + chunk_size, t_k)
        old_m, old_l = float(m), float(total)
        m, total, acc = online_softmax_step(m, total, acc, row[None, start:end], identity[start:end])
        new_m = float(m)
        factor = math.exp(old_m - new_m) if old_l > 0 else 1.0
        for key, value in (("starts", start), ("ends", end), ("running_max", new_m), ("sum_before", old_l),
                           ("sum_rescaled", old_l * factor), ("running_sum", float(total)), ("rescale", factor),
                           ("rescaled", old_l > 0 and new_m > old_m)):
            trace[key].append(value)
    trace["weights"] = (acc[0] / total[0]) if float(total) > 0 else torch.zeros(t_k, dtype=torch.float64)
    return trace


def plot_online_softmax_trace(scores_row: torch.Tensor | np.ndarray | Sequence[float], chunk_size: int) -> Figure:
    """Three panels over the keys of one query, chunk by chunk (``online_softmax_trace``): (1) the scores with the
    running max ``m`` after each chunk and the rescaling events; (2) the running sum ``l`` as it is stored
    (relative to the current max): at a rescale it drops by ``exp(m_old - m_new)`` before the chunk's own terms
    are added; (3) the final ``acc / l`` as bars, with ``torch.softmax`` of the whole row as dots (the largest
    difference in the title). Raises ``ValueError`` as ``online_softmax_trace``."""
    row = _scores_row(scores_row)
    trace = online_softmax_trace(row, chunk_size)
    t_k, n_chunks = row.numel(), len(trace["starts"])
    keys = np.arange(t_k)
    finite = torch.isfinite(row)
    fig, (ax_s, ax_l, ax_w) = plt.subplots(3, 1, figsize=(9.5, 7.6), sharex=True, constrained_layout=True,
                                           gridspec_kw={"height_ratios": [1.2, 1.0, 1.0]})
    for ax in (ax_s, ax_l, ax_w):
        for c in range(n_chunks):
            if c % 2:
                ax.axvspan(trace["starts"][c] - 0.5, trace["ends"][c] - 0.5, color="0.93", zorder=0, lw=0)
    low = float(row[finite].min()) if finite.any() else 0.0
    ax_s.bar(keys[finite.numpy()], (row[finite] - low + 0.5).numpy(), bottom=low - 0.5, color=WEIGHTS, alpha=0.45,
             width=0.7, label="score of each key")
    if not finite.all():
        ax_s.plot(keys[~finite.numpy()], np.full(int((~finite).sum()), low - 0.4), "x", color="0.4",
                  label="masked key (−inf)")
    for c in range(n_chunks):
        span = (trace["starts"][c] - 0.5, trace["ends"][c] - 0.5)
        if math.isfinite(trace["running_max"][c]):
            ax_s.plot(span, [trace["running_max"][c]] * 2, color=RES, lw=2.2, label="running max m" if c == 0 else None)
        if trace["rescaled"][c]:
            ax_s.annotate(f"max rises: rescale\n× exp(m_old − m_new) = {trace['rescale'][c]:.2g}",
                          (span[0], trace["running_max"][c]), xytext=(3, 4), textcoords="offset points", fontsize=8,
                          color=DEC, va="bottom", ha="left")
            ax_s.plot([span[0]], [trace["running_max"][c]], "v", color=DEC, ms=7)
    ax_s.set(ylabel="score s", title=f"(1) one query's {t_k} scores in {n_chunks} chunks of {chunk_size} keys: the "
             "running max after each chunk")
    ax_s.margins(y=0.25)
    ends = np.array(trace["ends"]) - 0.5
    ax_l.plot(ends, trace["running_sum"], "o", color=RES, label="l after each chunk (relative to the current m)",
              zorder=3)
    for c in range(n_chunks):  # the stored l from one chunk end to the next: first shrunk, then grown
        x0, x1 = ends[c - 1] if c else -0.5, ends[c]
        if trace["rescaled"][c]:
            ax_l.annotate("", xy=(x0, trace["sum_rescaled"][c]), xytext=(x0, trace["sum_before"][c]),
                          arrowprops=dict(arrowstyle="-|>", color=DEC, lw=1.6, shrinkA=4, shrinkB=0))
            ax_l.text(x0 + 0.15, (trace["sum_before"][c] + trace["sum_rescaled"][c]) / 2,
                      f"× {trace['rescale'][c]:.2g}", color=DEC, fontsize=8, va="center")
        ax_l.plot([x0, x1], [trace["sum_rescaled"][c], trace["running_sum"][c]], "-", color=RES, lw=1.2)
    ax_l.plot([], [], "-", color=DEC, label="× exp(m_old − m_new): rescaled when the max rises")
    ax_l.plot([], [], "-", color=RES, lw=1.2, label="+ Σ exp(s − m) over the chunk's keys")
    top = max(max(trace["sum_before"]), max(trace["running_sum"]))
    ax_l.set(ylabel="running sum l", title="(2) the running sum l = Σ exp(s − m), as stored", ylim=(0, 1.6 * top))
    weights = trace["weights"].numpy()
    reference = torch.softmax(row, dim=0) if finite.any() else torch.zeros(t_k, dtype=torch.float64)
    difference = float((trace["weights"] - reference).abs().max())
    ax_w.bar(keys, weights, color=WEIGHTS, width=0.7, label="acc / l after the last chunk")
    ax_w.plot(keys, reference.numpy(), "o", color="black", ms=3.5, label="torch.softmax of the whole row")
    ax_w.set(ylabel="attention weight", xlabel="key index (grey bands: alternate chunks)",
             title=f"(3) the final weights equal the one-shot softmax (largest difference {difference:.1e})")
    for ax, where in ((ax_s, "upper left"), (ax_l, "upper right"), (ax_w, "upper left")):
        ax.legend(fontsize=8, frameon=False, loc=where)
        ax.spines[["top", "right"]].set_visible(False)
    ax_w.set_xlim(-0.6, t_k - 0.4)
    return fig


# --- 4. the chunk-size sweep -----------------------------------------------------------------------------------
def plot_chunk_sweep(rows: Sequence[Mapping], *, sdpa_peak_bytes: float | None = None,
                     hand_peak_bytes: float | None = None, t_src: int | None = None) -> Figure:
    """Chunk size (keys, log2 axis) against the chunked path's time (left, each point labelled with its ratio to
    SDPA's) and peak memory (right, log), from ``bench.long_source_benchmark(...)["chunks"]`` (keys ``chunk``,
    ``seconds``, ``sdpa_seconds``, ``peak_bytes``). SDPA's time is a dashed line; its peak and the hand-written
    path's (``sdpa_peak_bytes``/``hand_peak_bytes``, or those keys in the rows) are dashed lines when given.
    ``t_src`` names the source length in the title. Raises ``ValueError`` for missing keys or values <= 0."""
    needed = {"chunk", "seconds", "sdpa_seconds", "peak_bytes"}
    if len(rows) < 1 or any(not needed <= set(row) for row in rows):
        raise ValueError(f"need at least one row with the keys {sorted(needed)}; got "
                         f"{[sorted(row) for row in rows]}")
    rows = sorted(rows, key=lambda r: r["chunk"])
    chunks = [r["chunk"] for r in rows]
    ms, mib = np.array([1e3 * r["seconds"] for r in rows]), np.array([r["peak_bytes"] / MIB for r in rows])
    sdpa_ms = 1e3 * float(np.median([r["sdpa_seconds"] for r in rows]))
    if min(chunks) < 1 or (ms <= 0).any() or (mib <= 0).any() or sdpa_ms <= 0:
        raise ValueError("chunk sizes, seconds and peak bytes must all be > 0")
    sdpa_peak_bytes = sdpa_peak_bytes or rows[0].get("sdpa_peak_bytes")
    hand_peak_bytes = hand_peak_bytes or rows[0].get("hand_peak_bytes")
    fig, (ax_t, ax_m) = plt.subplots(1, 2, figsize=(10.5, 3.9), constrained_layout=True)
    color = METHOD_STYLES["chunked"][2]
    ax_t.plot(chunks, ms, "^-", color=color, label="chunked (online softmax)")
    for x, y in zip(chunks, ms):
        ax_t.annotate(f"{y / sdpa_ms:.1f}× SDPA", (x, y), xytext=(0, 7), textcoords="offset points", ha="center",
                      fontsize=8, color=color)
    ax_t.axhline(sdpa_ms, color=METHOD_STYLES["sdpa"][2], ls="--", label=f"SDPA ({sdpa_ms:.3g} ms)")
    ax_t.set(ylabel="forward time (ms)", title="time of one call (labels: ratio to SDPA's)",
             ylim=(0, 1.2 * max(ms.max(), sdpa_ms)))
    ax_m.plot(chunks, mib, "^-", color=color, label="chunked (online softmax)")
    for value, name in ((hand_peak_bytes, "hand"), (sdpa_peak_bytes, "sdpa")):
        if value:
            ax_m.axhline(value / MIB, color=METHOD_STYLES[name][2], ls="--",
                         label=f"{SHORT_NAMES[name]} ({_bytes_text(value)})")
    levels = [v / MIB for v in (hand_peak_bytes, sdpa_peak_bytes) if v] + list(mib)
    ax_m.set(yscale="log", ylabel="peak memory of a call (MiB)", title="memory: the [T_q, C] score tile grows with C",
             ylim=(min(levels) / 2, max(levels) * 10))
    for ax in (ax_t, ax_m):
        _length_ticks(ax, chunks)
        ax.set_xlim(chunks[0] / 1.6, chunks[-1] * 1.6)
        ax.set_xlabel("chunk size C (keys per chunk)")
        ax.legend(fontsize=8, frameon=False, loc="upper right")
        _finish(ax)
    fig.suptitle("The chunk size trades time for memory" + (f" (T_src = {t_src:,})" if t_src else ""), fontsize=11)
    return fig


# --- 5. what the approximations keep ---------------------------------------------------------------------------
def _weights_matrix(weights: torch.Tensor | np.ndarray) -> np.ndarray:
    array = torch.as_tensor(weights).detach().cpu().double().numpy()
    if array.ndim != 2 or 0 in array.shape:
        raise ValueError(f"weights must be one attention matrix [T_q, T_k]; got {shape_str(array.shape)}")
    sums = array.sum(axis=1)
    if (array < -1e-9).any() or not np.all(np.isclose(sums, 1.0, atol=1e-4) | np.isclose(sums, 0.0, atol=1e-9)):
        raise ValueError("weights must be >= 0 with each row summing to 1 (or 0 for a fully masked row); got row "
                         f"sums {np.round(sums[:6], 4).tolist()}")
    return array


def kept_mass(weights: torch.Tensor | np.ndarray, keep: torch.Tensor | np.ndarray) -> float:
    """Mean over the query rows of the exact attention weight that the kept entries hold (``weights [T_q, T_k]``,
    ``keep`` bool ``[T_q, T_k]``): 1.0 when nothing is dropped. Raises ``ValueError`` for shapes that differ."""
    array = _weights_matrix(weights)
    mask = torch.as_tensor(keep).detach().cpu().numpy()
    if mask.dtype != bool or mask.shape != array.shape:
        raise ValueError(f"keep must be a bool mask of the weights' shape {shape_str(array.shape)}; got "
                         f"{mask.dtype} {shape_str(mask.shape)}")
    return float((array * mask).sum(axis=1).mean())


def plot_approximation_patterns(weights: torch.Tensor | np.ndarray,
                                patterns: Mapping[str, torch.Tensor | np.ndarray]) -> Figure:
    """The exact cross-attention weights ``[T_q, T_k]`` of one head, then one panel per approximation
    (``patterns[name]``: bool ``[T_q, T_k]``, True = kept, e.g. ``topk_mask`` or ``window_mask``) with the kept
    weights in colour and the dropped entries grey; each title gives the share of entries kept and the attention
    mass they hold (``kept_mass``). Raises ``ValueError`` for weights whose rows do not sum to 1, no patterns, or a
    pattern that is not bool of the weights' shape."""
    array = _weights_matrix(weights)
    if not patterns:
        raise ValueError("patterns must name at least one bool mask; got none")
    masses = {name: kept_mass(array, keep) for name, keep in patterns.items()}  # also checks each mask
    t_q, t_k = array.shape
    n = 1 + len(patterns)
    panel_w = min(3.4, 10.0 / n) if t_k >= t_q else min(2.6, 10.0 / n)
    panel_h = max(1.6, min(4.0, panel_w * t_q / t_k + 0.2))
    fig, axes = plt.subplots(1, n, figsize=(panel_w * n + 0.9, panel_h + 1.3), squeeze=False, sharey=True,
                             constrained_layout=True)
    cmap = plt.get_cmap(ATTENTION_CMAP).with_extremes(bad="#dcdcdc")
    vmax = float(array.max()) or 1.0
    image = None
    for i, ax in enumerate(axes[0]):
        if i == 0:
            shown, title = array, "exact weights\nevery entry,\n100 % of the mass"
        else:
            name = list(patterns)[i - 1]
            keep = torch.as_tensor(patterns[name]).cpu().numpy()
            shown = np.ma.masked_array(array, mask=~keep)
            title = f"{name}\nkeeps {keep.mean():.0%} of entries,\n{masses[name]:.0%} of the mass"
        image = ax.imshow(shown, cmap=cmap, vmin=0, vmax=vmax, aspect="auto", interpolation="nearest")
        ax.set_title(title, fontsize=9)
        ax.set_xlabel(SOURCE_TOKEN_LABEL, fontsize=9)
        ax.tick_params(labelsize=8)
    axes[0, 0].set_ylabel(WRITTEN_WORD_LABEL, fontsize=9)
    for ax in axes[0]:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    fig.colorbar(image, ax=axes[0].tolist(), shrink=0.85, aspect=25, pad=0.01).set_label("attention weight",
                                                                                         fontsize=9)
    fig.legend(handles=[Patch(color="#dcdcdc", label="dropped by the approximation")], loc="outside lower center",
               fontsize=8, frameon=False)
    return fig


# --- 6. cost against accuracy ----------------------------------------------------------------------------------
def _kind_style(kind: str, index: int) -> tuple[str, str]:
    key = "".join(ch for ch in str(kind).lower() if ch.isalpha())
    return KIND_STYLES.get(key, ("o", f"C{index % 10}"))


def plot_cost_accuracy(records: Sequence[Mapping], *, title: str = "Accuracy against cost",
                       accuracy_label: str = "accuracy") -> Figure:
    """Accuracy (0..1, in percent) against counted multiply-adds (log axis) of each attention variant: one
    marker and colour per ``kind`` (points of a kind joined in order of cost), each point labelled with its
    ``name``; a record of kind ``"exact"`` is also drawn as a dashed reference line. Records need the keys
    ``name``, ``kind``, ``parameter``, ``accuracy``, ``multiply_adds``. Raises ``ValueError`` for missing keys,
    accuracy outside 0..1 or multiply-adds <= 0."""
    needed = {"name", "kind", "parameter", "accuracy", "multiply_adds"}
    if not records or any(not needed <= set(r) for r in records):
        raise ValueError(f"need at least one record with the keys {sorted(needed)}; got "
                         f"{[sorted(r) for r in records]}")
    for r in records:
        if not 0.0 <= float(r["accuracy"]) <= 1.0 or float(r["multiply_adds"]) <= 0:
            raise ValueError(f"accuracy must lie in 0..1 and multiply_adds be > 0; got {r['name']!r}: "
                             f"accuracy {r['accuracy']}, multiply_adds {r['multiply_adds']}")
    kinds = list(dict.fromkeys(r["kind"] for r in records))
    fig, ax = plt.subplots(figsize=(8.5, 4.6), constrained_layout=True)
    labels: list[tuple[str, float, float, str]] = []
    for index, kind in enumerate(kinds):
        picked = sorted((r for r in records if r["kind"] == kind), key=lambda r: r["multiply_adds"])
        marker, color = _kind_style(kind, index)
        xs, ys = [float(r["multiply_adds"]) for r in picked], [float(r["accuracy"]) for r in picked]
        ax.plot(xs, ys, "-" if len(picked) > 1 else "", marker=marker, color=color, ms=11 if marker == "*" else 7,
                label=str(kind), lw=1.2)
        labels += [(text, x, y, color) for text, x, y in _cluster_labels(picked)]
        if _kind_style(kind, index)[0] == "*":
            ax.axhline(ys[0], color=color, ls="--", lw=0.9, zorder=0)
            ax.axvline(xs[0], color=color, ls=":", lw=0.9, zorder=0)
    ax.set(xscale="log", xlabel="multiply-adds of the cross-attention (counted, log scale)",
           ylabel=accuracy_label, ylim=(-0.03, 1.08), title=title)
    ax.margins(x=0.12)
    ax.yaxis.set_major_formatter(PercentFormatter(1.0))
    ax.legend(fontsize=8, frameon=False, loc="center left", bbox_to_anchor=(1.0, 0.5), title="kind",
              title_fontsize=8)
    _finish(ax)
    _place_labels(fig, ax, labels)
    return fig


def _cluster_labels(picked: Sequence[Mapping]) -> list[tuple[str, float, float]]:
    """One label per run of points (sorted by cost) that sit within 15 % in cost and 3 points of accuracy of the
    run's first: "top-1 … top-32" at the run's middle point, instead of labels piled on each other."""
    runs: list[list[Mapping]] = []
    for r in picked:
        first = runs[-1][0] if runs else None
        if first is not None and float(r["multiply_adds"]) <= 1.15 * float(first["multiply_adds"]) and abs(
                float(r["accuracy"]) - float(first["accuracy"])) <= 0.03:
            runs[-1].append(r)
        else:
            runs.append([r])
    out = []
    for run in runs:
        middle = run[len(run) // 2]
        text = str(run[0]["name"]) if len(run) == 1 else f"{run[0]['name']} … {run[-1]['name']}"
        out.append((text, float(middle["multiply_adds"]), float(middle["accuracy"])))
    return out


def _place_labels(fig: Figure, ax: Axes, labels: Sequence[tuple[str, float, float, str]]) -> None:
    """Write each ``(text, x, y, colour)`` next to its point, at the first of a few offsets where it overlaps
    neither an earlier label nor a point (a small greedy placement; points in a cluster get labels around it)."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    points = [ax.transData.transform((x, y)) for _, x, y, _ in labels]
    placed: list = []
    offsets = [(5, 4, "left", "bottom"), (5, -4, "left", "top"), (-5, 4, "right", "bottom"), (-5, -4, "right", "top"),
               (0, 9, "center", "bottom"), (0, -9, "center", "top")]
    for text, x, y, color in labels:
        for dx, dy, ha, va in offsets:
            note = ax.annotate(text, (x, y), xytext=(dx, dy), textcoords="offset points", ha=ha, va=va, fontsize=8,
                               color=color)
            extent = note.get_window_extent(renderer).expanded(1.05, 1.1)
            if not any(extent.overlaps(other) for other in placed) and not any(
                    extent.contains(px, py) for px, py in points):
                break
            note.remove()
        else:  # nowhere free: keep the first place
            note = ax.annotate(text, (x, y), xytext=offsets[0][:2], textcoords="offset points", fontsize=8,
                               color=color, va="bottom")
        placed.append(note.get_window_extent(renderer))


# --- 7. retrieval: a cross-attention document mask -------------------------------------------------------------
def _segment_ids(name: str, ids: torch.Tensor | np.ndarray | Sequence[int]) -> torch.Tensor:
    tensor = torch.as_tensor(ids)
    if tensor.ndim == 2 and tensor.shape[0] == 1:
        tensor = tensor[0]
    if tensor.ndim != 1 or tensor.numel() == 0 or tensor.dtype.is_floating_point or tensor.dtype == torch.bool:
        raise ValueError(f"{name} must be one packed row of integer document ids, [T] or [1, T] (negative = "
                         f"padding); got {tensor.dtype} {shape_str(tensor.shape)}")
    return tensor.long().cpu()


def _runs(ids: torch.Tensor) -> list[tuple[int, int, int]]:
    """``[0, 0, 1, -1]`` -> ``[(0, 2, 0), (2, 3, 1), (3, 4, -1)]``: (start, end, id) of each run of equal ids."""
    runs, start = [], 0
    for i in range(1, ids.numel() + 1):
        if i == ids.numel() or ids[i] != ids[start]:
            runs.append((start, i, int(ids[start])))
            start = i
    return runs


def _document_color(doc: int) -> str:
    return PAD_COLOR if doc < 0 else DOCUMENT_COLORS[doc % len(DOCUMENT_COLORS)]


def draw_document_isolation(query_segments: torch.Tensor | np.ndarray | Sequence[int],
                            key_segments: torch.Tensor | np.ndarray | Sequence[int]) -> Figure:
    """The cross-attention document mask of one packed row: target segments (queries, rows) against retrieved
    passages packed into one source (keys, columns), from ``masks.cross_document_mask``; blue = may attend. A strip
    beside each axis colours the positions by document id (grey, "pad": negative ids, padding) and each allowed
    block is outlined in its document's colour. Raises ``ValueError`` for ids that are not one row of integers."""
    q_ids, k_ids = _segment_ids("query_segments", query_segments), _segment_ids("key_segments", key_segments)
    mask = cross_document_mask(q_ids[None], k_ids[None])[0, 0].numpy()  # [T_q, T_k]
    t_q, t_k = mask.shape
    cell_k, cell_q = min(0.3, 7.6 / t_k), min(0.3, 5.0 / t_q)  # inches per key, per query
    fig, ax = plt.subplots(figsize=(cell_k * t_k + 2.4, cell_q * t_q + 2.0), constrained_layout=True)
    ax.imshow(mask, cmap=ListedColormap(MASK_COLORS), vmin=0, vmax=1, interpolation="nearest", aspect="auto",
              extent=(-0.5, t_k - 0.5, t_q - 0.5, -0.5))
    if min(cell_k, cell_q) > 0.1:  # white lines between the cells while they are large enough to see
        ax.set_xticks(np.arange(-0.5, t_k), minor=True)
        ax.set_yticks(np.arange(-0.5, t_q), minor=True)
        ax.grid(which="minor", color="white", linewidth=0.8)
        ax.tick_params(which="minor", length=0)
    band_k, band_q = 0.35 / cell_q, 0.35 / cell_k  # the strips, a third of an inch deep, in data units
    for runs, along_keys in ((_runs(k_ids), True), (_runs(q_ids), False)):
        for start, end, doc in runs:
            color = _document_color(doc)
            xy, w, h = ((start - 0.5, -0.5 - 0.1 / cell_q - band_k), end - start, band_k) if along_keys else \
                ((-0.5 - 0.1 / cell_k - band_q, start - 0.5), band_q, end - start)
            ax.add_patch(Rectangle(xy, w, h, facecolor=tint(color, 0.35), edgecolor="white", hatch="///" if doc < 0
                                   else None, linewidth=1.0, clip_on=False))
            narrow = (end - start) * (cell_k if along_keys else cell_q) < 0.25
            ax.text(xy[0] + w / 2, xy[1] + h / 2, "pad" if doc < 0 else str(doc), ha="center", va="center",
                    fontsize=8, fontweight="bold", clip_on=False, rotation=90 if along_keys and narrow else 0)
    for q_start, q_end, q_doc in _runs(q_ids):
        for k_start, k_end, k_doc in _runs(k_ids):
            if q_doc >= 0 and q_doc == k_doc:
                ax.add_patch(Rectangle((k_start - 0.5, q_start - 0.5), k_end - k_start, q_end - q_start, fill=False,
                                       edgecolor=_document_color(q_doc), linewidth=2.2, zorder=3))
    ax.set_xlim(-0.5 - 0.1 / cell_k - band_q, t_k - 0.5)
    ax.set_ylim(t_q - 0.5, -0.5 - 0.1 / cell_q - band_k)
    ax.set_xlabel(f"keys: retrieved passages packed into one source (T_k = {t_k})")
    ax.set_ylabel(f"queries: target segments (T_q = {t_q})")
    ax.set_title("Cross-attention document mask: each target segment reads only its own passages\n"
                 "(strips: the document id of each position)", fontsize=10)
    for spine in ax.spines.values():
        spine.set_visible(False)
    ax.set_xticks([])
    ax.set_yticks([])
    handles = [Patch(color=MASK_COLORS[1], label="may attend (True)"),
               Patch(color=MASK_COLORS[0], label="blocked (False)"),
               Patch(facecolor=tint(PAD_COLOR, 0.35), hatch="///", edgecolor="white", label="padding (id < 0)")]
    fig.legend(handles=handles, loc="outside lower center", ncol=3, fontsize=8, frameon=False)
    return fig


# --- 8. sharing K/V heads, and the cache of a long source ------------------------------------------------------
def _kv_options(n_heads: int, options: Sequence[int] | None) -> list[int]:
    check_sizes(n_heads=n_heads)
    if options is None:
        options = [n_heads, *([2] if n_heads > 2 and n_heads % 2 == 0 else []), *([1] if n_heads > 1 else [])]
    options = list(options)
    if not options:
        raise ValueError("n_kv_heads_options must name at least one number of K/V heads; got none")
    for n_kv in options:
        check_sizes(n_kv_heads=n_kv)
        if n_heads % n_kv:
            raise ValueError(f"n_kv_heads must divide n_heads = {n_heads} (each K/V head serves a whole group of "
                             f"query heads); got n_kv_heads = {n_kv}")
    return options


def kv_sharing_name(n_heads: int, n_kv_heads: int) -> str:
    """``"MHA"`` (one K/V head per query head), ``"MQA"`` (one K/V head for all) or ``"GQA"`` (groups)."""
    return "MHA" if n_kv_heads == n_heads else "MQA" if n_kv_heads == 1 else "GQA"


def draw_kv_sharing(n_heads: int = 8, n_kv_heads_options: Sequence[int] | None = None) -> Figure:
    """Which K/V head each query head reads when ``n_kv_heads`` K/V heads are shared by ``n_heads`` query heads:
    one panel per option (default ``(n_heads, 2, 1)``: MHA, GQA, MQA), query head ``h`` joined to K/V head
    ``h // (n_heads // n_kv_heads)`` (each line's ``gid`` is ``"q{h}->kv{g}"``), coloured by group, with the
    cache each option keeps relative to MHA's. Raises ``ValueError`` for ``n_heads`` above 32 or an option that
    does not divide ``n_heads``."""
    options = _kv_options(n_heads, n_kv_heads_options)
    if n_heads > 32:
        raise ValueError(f"n_heads must be at most 32 to stay readable; got {n_heads}")
    panel = 10.0 / len(options)
    fig, ax = canvas(10.0, 3.5)
    ax.text(0.15, 3.28, f"Sharing K/V heads: query head h reads K/V head h // (H / H_kv), H = {n_heads} query heads",
            fontsize=FONT + 1, fontweight="bold", va="center")
    y_q, y_kv, h = 2.35, 0.95, 0.3
    for p, n_kv in enumerate(options):
        left, inner = p * panel + 0.25, panel - 0.5
        step = inner / n_heads
        w = min(0.42, step * 0.82)
        group = n_heads // n_kv
        name = {"MHA": "multi-head (MHA)", "GQA": "grouped-query (GQA)", "MQA": "multi-query (MQA)"}[
            kv_sharing_name(n_heads, n_kv)]
        ax.text(left + inner / 2, 2.95, f"{name}: H_kv = {n_kv}", ha="center", va="center", fontsize=FONT,
                fontweight="bold")
        q_x = [left + step * (i + 0.5) for i in range(n_heads)]
        kv_x = [float(np.mean(q_x[g * group:(g + 1) * group])) for g in range(n_kv)]
        kv_w = min(w * group + (group - 1) * (step - w), 0.9 if n_kv > 1 else inner * 0.5)
        for g, x in enumerate(kv_x):
            ax.add_patch(Rectangle((x - kv_w / 2, y_kv - h / 2), kv_w, h, facecolor=tint(ENC, 0.55),
                                   edgecolor=ENC, linewidth=1.2, zorder=2))
            if kv_w > 0.25:
                ax.text(x, y_kv, f"kv{g}", ha="center", va="center", fontsize=SMALL, zorder=3)
        for i, x in enumerate(q_x):
            g = i // group  # the K/V head that query head i reads
            ax.add_patch(Rectangle((x - w / 2, y_q - h / 2), w, h, facecolor=tint(DEC, 0.6), edgecolor=DEC,
                                   linewidth=1.0, zorder=2))
            if w > 0.25:
                ax.text(x, y_q, f"q{i}", ha="center", va="center", fontsize=SMALL, zorder=3)
            ax.plot([x, kv_x[g]], [y_q - h / 2, y_kv + h / 2], lw=1.2, zorder=1, gid=f"q{i}->kv{g}",
                    color=DOCUMENT_COLORS[g % len(DOCUMENT_COLORS)] if n_kv > 1 else ENC)
        ax.text(left - 0.05, y_q + h / 2 + 0.12, "query heads", fontsize=SMALL, color=DEC, va="center")
        ax.text(left - 0.05, y_kv - h / 2 - 0.14, "K/V heads (cached)", fontsize=SMALL, color=ENC, va="center")
        share = "" if n_kv == n_heads else f" = 1/{n_heads // n_kv} of MHA's"
        ax.text(left + inner / 2, 0.32, f"cache ∝ 2·H_kv·T_src·d_head: {n_kv} head{'s' * (n_kv > 1)}{share}",
                ha="center", va="center", fontsize=SMALL)
        if p:
            ax.plot([p * panel, p * panel], [0.15, 3.05], color="0.85", lw=1)
    return fig


def plot_cache_bytes(t_src_values: Sequence[int] = (1024, 4096, 16384, 65536, 262144), *, n_layers: int = 12,
                     n_heads: int = 12, d_head: int = 64, n_kv_heads_options: Sequence[int] | None = None,
                     batch: int = 1, bytes_per_value: int = 2, model_name: str = "") -> Figure:
    """Cross-attention K/V cache bytes against the source length (log-log) for MHA, GQA and MQA of one decoder
    (``n_layers`` layers, ``n_heads`` query heads of ``d_head``; ``n_kv_heads_options`` as in ``draw_kv_sharing``),
    ``batch`` sources, ``bytes_per_value`` bytes per number (2: float16/bfloat16), from
    ``cache.cross_kv_cache_bytes``; the last point of each line is labelled. Raises ``ValueError`` for sizes
    that are not positive ints or an option that does not divide ``n_heads``."""
    options = _kv_options(n_heads, n_kv_heads_options)
    lengths = [int(t) for t in t_src_values]
    if len(lengths) < 2:
        raise ValueError(f"t_src_values must hold at least 2 lengths; got {list(t_src_values)}")
    fig, ax = plt.subplots(figsize=(8.0, 4.2), constrained_layout=True)
    for index, n_kv in enumerate(options):
        values = [cross_kv_cache_bytes(t, n_layers=n_layers, n_kv_heads=n_kv, d_head=d_head, batch=batch,
                                 bytes_per_value=bytes_per_value) for t in lengths]
        ax.plot(lengths, values, "o-", color=f"C{index}", label=f"{kv_sharing_name(n_heads, n_kv)}: H_kv = {n_kv}")
        ax.annotate(_bytes_text(values[-1]), (lengths[-1], values[-1]), xytext=(6, 0), textcoords="offset points",
                    va="center", fontsize=8, color=f"C{index}")
    _length_ticks(ax, lengths)
    ax.set_xlim(lengths[0] / 1.5, lengths[-1] * 3.5)
    ax.set_yscale("log", base=2)
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: _bytes_text(v)))
    ax.set(xlabel="source length T_src (tokens)", ylabel="cross-attention K/V cache")
    name = f"{model_name}: " if model_name else ""
    ax.set_title(f"{name}{n_layers} layers × 2 (K, V) × H_kv × T_src × {d_head} × {bytes_per_value} bytes"
                 f"{f' × batch {batch}' if batch > 1 else ''}", fontsize=10)
    ax.legend(fontsize=8, frameon=False, loc="upper left")
    _finish(ax)
    return fig
