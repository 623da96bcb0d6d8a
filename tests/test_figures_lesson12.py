"""Lesson 12's figures and the cost measurement behind the first: the numbers drawn are the numbers given (or
computed from references nobody here wrote: ``torch.softmax``, ``cross_document_mask``, ``repeat_interleave``,
tensors' own ``nbytes``), the shapes written are the arguments', and bad input is refused with a ValueError."""
from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from course_lib import attention  # noqa: E402
from course_lib import long_charts as lc  # noqa: E402
from course_lib.masks import cross_document_mask  # noqa: E402
from course_lib.measure import cross_attention_cost, loglog_slope  # noqa: E402


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def _texts(fig) -> list[str]:
    return [t.get_text() for ax in fig.axes for t in ax.texts]


def _legend(ax) -> list[str]:
    return [t.get_text() for t in ax.get_legend().get_texts()]


# --- the measurement -------------------------------------------------------------------------------------------
SIZES = dict(fixed_t_tgt=16, fixed_t_src=256, batch=1, heads=2, d_head=8, chunk_size=32, repeats=1)


@pytest.fixture(scope="module")
def cost() -> dict:
    return cross_attention_cost((16, 32, 64), (128, 256, 512), **SIZES)


def test_cross_attention_cost_measures_every_path_at_every_length(cost: dict) -> None:
    rows = cost["rows"]
    assert len(rows) == 2 * 3 * 3  # two sweeps, three lengths, three paths
    assert [(r["t_tgt"], r["t_src"]) for r in rows if r["sweep"] == "t_src" and r["method"] == "hand"] == \
        [(16, 128), (16, 256), (16, 512)]
    assert [(r["t_tgt"], r["t_src"]) for r in rows if r["sweep"] == "t_tgt" and r["method"] == "chunked"] == \
        [(16, 256), (32, 256), (64, 256)]
    for r in rows:
        assert r["seconds"] > 0 and r["peak_bytes"] > 0
        assert r["score_bytes"] == 1 * 2 * r["t_tgt"] * r["t_src"] * 4
        assert r["max_abs_diff"] < 1e-5  # every path computes SDPA's output
        if r["method"] == "hand":
            assert r["peak_bytes"] >= r["score_bytes"]  # it holds the scores


def test_cross_attention_cost_slopes_are_the_fits_of_its_rows(cost: dict) -> None:
    for sweep in ("t_src", "t_tgt"):
        for method in ("hand", "sdpa", "chunked"):
            picked = [r for r in cost["rows"] if r["sweep"] == sweep and r["method"] == method]
            for quantity in ("seconds", "peak_bytes"):
                expected = loglog_slope([r[sweep] for r in picked], [r[quantity] for r in picked])
                assert cost["slopes"][sweep][method][quantity] == pytest.approx(expected)
    memory = cost["slopes"]["t_src"]
    assert memory["hand"]["peak_bytes"] == pytest.approx(1.0, abs=0.15)  # the score matrix grows with T_src
    assert abs(memory["chunked"]["peak_bytes"]) < 0.1  # one [T_q, C] tile, whatever T_src
    assert cost["slopes"]["t_tgt"]["hand"]["peak_bytes"] == pytest.approx(1.0, abs=0.15)
    assert cost["settings"]["chunk_size"] == 32 and cost["settings"]["t_src_values"] == [128, 256, 512]


@pytest.mark.parametrize("change", [dict(t_src_values=(128,)), dict(t_tgt_values=(16, 0)), dict(chunk_size=0),
                                    dict(heads=1.5), dict(repeats=True)])
def test_cross_attention_cost_refuses_bad_sizes(change: dict) -> None:
    arguments = dict(t_tgt_values=(8, 16), t_src_values=(8, 16), **SIZES) | change
    with pytest.raises(ValueError, match="must"):
        cross_attention_cost(**arguments)


# --- 1. the cost chart -----------------------------------------------------------------------------------------
def _synthetic_rows() -> list[dict]:
    """Time ∝ T_tgt·T_src for every path; the hand-written path's memory is 2 score matrices, SDPA's and the
    chunked path's do not grow with T_src."""
    rows = []
    for sweep, lengths in (("t_src", (256, 512, 1024, 2048)), ("t_tgt", (64, 128, 256, 512))):
        for length in lengths:
            t_tgt, t_src = (128, length) if sweep == "t_src" else (length, 1024)
            score = 4 * t_tgt * t_src * 4
            peaks = {"hand": 2 * score, "sdpa": 1000 * t_tgt, "chunked": 5000 * t_tgt}
            for factor, method in ((3e-9, "hand"), (1e-9, "sdpa"), (2e-9, "chunked")):
                rows.append(dict(sweep=sweep, t_tgt=t_tgt, t_src=t_src, method=method,
                                 seconds=factor * t_tgt * t_src, peak_bytes=peaks[method], score_bytes=score))
    return rows


def test_cost_scaling_draws_four_log_log_panels_with_fitted_slopes_and_guides() -> None:
    fig = lc.plot_cost_scaling({"rows": _synthetic_rows(), "settings": dict(batch=1, heads=4, d_head=32,
                                                                             chunk_size=128)})
    assert len(fig.axes) == 4
    assert all(ax.get_xscale() == ax.get_yscale() == "log" for ax in fig.axes)
    time_src, time_tgt, mem_src, mem_tgt = fig.axes
    assert time_src.get_title() == "T_src grows (T_tgt = 128)" and time_tgt.get_title() == "T_tgt grows (T_src = 1,024)"
    assert all(entry.endswith("slope 1.00") for entry in _legend(time_src)[:3])
    assert "hand-written: slope 1.00, peak = 2 × the score matrix" in _legend(mem_src)
    assert "chunked: slope 0.00, peak = 0.15 × the score matrix" in _legend(mem_src)  # 5000·128 / (16·128·2048)
    assert "chunked: slope 1.00, peak = 0.31 × the score matrix" in _legend(mem_tgt)  # 5000·512 / (16·512·1024)
    guide2 = next(line for line in time_src.lines if line.get_label().startswith("guide: slope 2"))
    hand_ms = 1e3 * 3e-9 * 128 * 256
    assert list(guide2.get_ydata()) == pytest.approx([hand_ms * f**2 for f in (1, 2, 4, 8)])
    scores = next(line for line in mem_src.lines if line.get_label().startswith("one score matrix"))
    assert list(scores.get_ydata()) == pytest.approx([16 * 128 * t / 2**20 for t in (256, 512, 1024, 2048)])
    assert "chunks of 128 keys" in fig.get_suptitle()


def test_cost_scaling_draws_the_measured_records(cost: dict) -> None:
    fig = lc.plot_cost_scaling(cost)
    hand = next(line for line in fig.axes[2].lines if line.get_label().startswith("hand-written"))
    measured = [r["peak_bytes"] / 2**20 for r in cost["rows"] if r["sweep"] == "t_src" and r["method"] == "hand"]
    assert list(hand.get_ydata()) == pytest.approx(measured)


def test_cost_scaling_refuses_incomplete_or_impossible_rows() -> None:
    rows = _synthetic_rows()
    with pytest.raises(ValueError, match="needs the keys"):
        lc.plot_cost_scaling([{k: v for k, v in r.items() if k != "peak_bytes"} for r in rows])
    with pytest.raises(ValueError, match="method one of"):
        lc.plot_cost_scaling(rows + [dict(rows[0], method="flash")])
    with pytest.raises(ValueError, match="at least 2 lengths"):
        lc.plot_cost_scaling([r for r in rows if not (r["sweep"] == "t_tgt" and r["t_tgt"] > 64)])
    with pytest.raises(ValueError, match="> 0"):
        lc.plot_cost_scaling([dict(r, seconds=0.0) for r in rows])


# --- 2. the chunked data flow ----------------------------------------------------------------------------------
def test_chunked_diagram_writes_the_shapes_of_its_arguments() -> None:
    texts = _texts(lc.draw_chunked_attention(256, 4096, 256, 64))
    joined = "\n".join(texts)
    assert {"[256, 64]", "[256, 256]", "[256, 1]", "K_j [256, 64]", "V_j [256, 64]", "output = acc / l"} <= set(texts)
    assert "16 chunks of C = 256 keys" in joined and "(the last holds" not in joined
    assert "instead of all the scores [256, 4096] = 1,048,576 (16× fewer)" in joined
    assert {"m_new = max(m, rowmax S)", "r = exp(m − m_new)", "acc ← r · acc + P V_j"} <= set(texts)
    small = "\n".join(_texts(lc.draw_chunked_attention(6, 20, 8, 4)))
    assert "3 chunks of C = 8 keys (the last holds 4)" in small and "[6, 8]" in small and "after chunk 3" in small


@pytest.mark.parametrize("sizes", [(0, 16, 4, 8), (4, 16, 0, 8), (4, 16.0, 4, 8), (4, 16, True, 8)])
def test_chunked_diagram_refuses_impossible_sizes(sizes) -> None:
    with pytest.raises(ValueError, match="positive int"):
        lc.draw_chunked_attention(*sizes)


# --- 3. the online-softmax trace -------------------------------------------------------------------------------
@settings(max_examples=30, deadline=None)
@given(st.lists(st.floats(-20, 20, allow_nan=False) | st.just(-math.inf), min_size=1, max_size=40),
       st.integers(1, 12))
def test_trace_ends_with_the_one_shot_softmax_and_stores_l_relative_to_the_max(scores, chunk_size) -> None:
    row = torch.tensor(scores, dtype=torch.float64)
    trace = lc.online_softmax_trace(row, chunk_size)
    if torch.isfinite(row).any():
        torch.testing.assert_close(trace["weights"], torch.softmax(row, 0), rtol=0, atol=1e-12)
    else:  # every key masked: zeros, never NaN
        assert torch.equal(trace["weights"], torch.zeros_like(row))
    for c, end in enumerate(trace["ends"]):
        seen = row[:end]
        m = float(seen.max())
        assert trace["running_max"][c] == m
        expected = float(torch.exp(seen - m).sum()) if math.isfinite(m) else 0.0
        assert trace["running_sum"][c] == pytest.approx(expected, rel=1e-12)
        if trace["rescaled"][c]:
            assert trace["rescale"][c] == pytest.approx(math.exp(trace["running_max"][c - 1] - m), rel=1e-12)
            assert trace["rescale"][c] <= 1  # shrinks (or, for a tiny rise, rounds to 1)


def test_trace_figure_draws_the_softmax_and_marks_each_rescale() -> None:
    scores = torch.tensor([0.5, 1.0, -1.0, 3.0, 0.0, 2.0, 5.0, -math.inf, 1.0, 0.2])
    fig = lc.plot_online_softmax_trace(scores, 3)
    ax_s, ax_l, ax_w = fig.axes
    bars = [bar.get_height() for bar in ax_w.containers[0]]  # one bar per key: acc / l
    assert bars == pytest.approx(torch.softmax(scores.double(), 0).tolist(), abs=1e-12)
    trace = lc.online_softmax_trace(scores, 3)
    assert trace["rescaled"] == [False, True, True, False]  # the max rises in chunks 2 (3.0) and 3 (5.0)
    notes = [t.get_text() for t in ax_s.texts]
    assert notes == [f"max rises: rescale\n× exp(m_old − m_new) = {math.exp(1.0 - 3.0):.2g}",
                     f"max rises: rescale\n× exp(m_old − m_new) = {math.exp(3.0 - 5.0):.2g}"]
    assert [t.get_text() for t in ax_l.texts if t.get_text()] == [f"× {math.exp(-2.0):.2g}"] * 2
    stored = next(line for line in ax_l.lines if line.get_label().startswith("l after each chunk"))
    assert list(stored.get_ydata()) == pytest.approx(trace["running_sum"])
    assert "largest difference" in ax_w.get_title() and len(fig.axes) == 3


@pytest.mark.parametrize("scores, chunk, match", [(torch.zeros(2, 3), 2, "1-D"), (torch.tensor([]), 2, "1-D"),
                                                  (torch.tensor([0.0, math.nan]), 1, "NaN"),
                                                  (torch.tensor([0.0, math.inf]), 1, r"\+inf"),
                                                  (torch.zeros(4), 0, "chunk_size")])
def test_trace_refuses_bad_scores_and_chunk_sizes(scores, chunk, match) -> None:
    with pytest.raises(ValueError, match=match):
        lc.plot_online_softmax_trace(scores, chunk)


# --- 4. the chunk sweep ----------------------------------------------------------------------------------------
SWEEP = [dict(chunk=c, seconds=t, sdpa_seconds=0.02, peak_bytes=p)
         for c, t, p in [(64, 0.04, 3e6), (32, 0.06, 2.5e6), (256, 0.028, 9e6), (1024, 0.027, 33e6)]]


def test_chunk_sweep_draws_time_and_memory_against_the_chunk_with_sdpa_references() -> None:
    fig = lc.plot_chunk_sweep(SWEEP, sdpa_peak_bytes=0.65 * 2**20, hand_peak_bytes=256 * 2**20, t_src=16384)
    ax_t, ax_m = fig.axes
    chunked = ax_t.lines[0]
    assert list(chunked.get_xdata()) == [32, 64, 256, 1024]  # sorted by chunk size
    assert list(chunked.get_ydata()) == pytest.approx([60, 40, 28, 27])
    assert [t.get_text() for t in ax_t.texts] == ["3.0× SDPA", "2.0× SDPA", "1.4× SDPA", "1.4× SDPA"]
    assert list(ax_m.lines[0].get_ydata()) == pytest.approx([2.5e6 / 2**20, 3e6 / 2**20, 9e6 / 2**20, 33e6 / 2**20])
    assert _legend(ax_m)[1:] == ["hand-written (256 MiB)", "SDPA (666 KiB)"]
    assert ax_t.get_xscale() == "log" and ax_m.get_yscale() == "log" and "16,384" in fig.get_suptitle()
    plain = lc.plot_chunk_sweep(SWEEP)
    assert len(plain.axes[1].lines) == 1  # no reference peaks given, none drawn


def test_chunk_sweep_refuses_rows_without_the_needed_keys() -> None:
    with pytest.raises(ValueError, match="peak_bytes"):
        lc.plot_chunk_sweep([dict(chunk=32, seconds=0.1, sdpa_seconds=0.1)])
    with pytest.raises(ValueError, match="> 0"):
        lc.plot_chunk_sweep([dict(SWEEP[0], seconds=0.0)])


# --- 5. the approximation patterns -----------------------------------------------------------------------------
def _weights_and_patterns() -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    scores = torch.randn(8, 20, generator=torch.Generator().manual_seed(0))
    weights = torch.softmax(scores, -1)
    top = torch.zeros_like(weights, dtype=torch.bool).scatter_(1, weights.topk(3, dim=-1).indices, True)
    i, j = torch.arange(8)[:, None], torch.arange(20)[None]
    return weights, {"top-3": top, "window ±2": (j - i * 20 / 8).abs() <= 2}


def test_approximation_panels_show_only_the_kept_weights_and_the_mass_they_hold() -> None:
    weights, patterns = _weights_and_patterns()
    fig = lc.plot_approximation_patterns(weights, patterns)
    panels = [ax for ax in fig.axes if ax.images and ax.get_title()]
    assert len(panels) == 3
    np.testing.assert_allclose(panels[0].images[0].get_array(), weights.numpy(), atol=1e-7)
    for ax, (name, keep) in zip(panels[1:], patterns.items()):
        shown = ax.images[0].get_array()
        assert np.array_equal(np.ma.getmaskarray(shown), ~keep.numpy())
        mass = float((weights * keep).sum(-1).mean())
        assert lc.kept_mass(weights, keep) == pytest.approx(mass)
        assert ax.get_title() == f"{name}\nkeeps {keep.float().mean():.0%} of entries,\n{mass:.0%} of the mass"
    assert lc.kept_mass(weights, torch.ones(8, 20, dtype=torch.bool)) == pytest.approx(1.0)


def test_approximation_patterns_refuse_bad_weights_and_masks() -> None:
    weights, patterns = _weights_and_patterns()
    with pytest.raises(ValueError, match="sum"):
        lc.plot_approximation_patterns(weights * 2, patterns)
    with pytest.raises(ValueError, match="bool mask"):
        lc.plot_approximation_patterns(weights, {"top-3": patterns["top-3"][:, :10]})
    with pytest.raises(ValueError, match="bool mask"):
        lc.plot_approximation_patterns(weights, {"top-3": patterns["top-3"].float()})
    with pytest.raises(ValueError, match="at least one"):
        lc.plot_approximation_patterns(weights, {})
    with pytest.raises(ValueError, match=r"\[T_q, T_k\]"):
        lc.plot_approximation_patterns(weights[None], patterns)


# --- 6. cost against accuracy ----------------------------------------------------------------------------------
RECORDS = [dict(name="exact", kind="exact", parameter=None, accuracy=0.98, multiply_adds=2_000_000),
           *[dict(name=f"top-{k}", kind="top-k", parameter=k, accuracy=a, multiply_adds=2_000_000 + 1000 * k)
             for k, a in ((1, 0.8), (4, 0.97))],
           *[dict(name=f"window ±{h}", kind="window", parameter=h, accuracy=a, multiply_adds=10_000 * (2 * h + 1))
             for h, a in ((3, 0.57), (1, 0.2))],
           dict(name="linear", kind="linear", parameter=None, accuracy=0.06, multiply_adds=300_000)]


def test_cost_accuracy_draws_one_series_per_kind_and_the_exact_reference() -> None:
    ax = lc.plot_cost_accuracy(RECORDS).axes[0]
    assert ax.get_xscale() == "log"
    assert _legend(ax) == ["exact", "top-k", "window", "linear"]
    window = next(line for line in ax.lines if line.get_label() == "window")
    assert list(window.get_xdata()) == [30_000, 70_000] and list(window.get_ydata()) == [0.2, 0.57]  # by cost
    assert window.get_marker() != next(line for line in ax.lines if line.get_label() == "top-k").get_marker()
    assert any(list(line.get_ydata()) == [0.98, 0.98] for line in ax.lines)  # the exact model's accuracy, dashed
    assert sorted(t.get_text() for t in ax.texts) == sorted(r["name"] for r in RECORDS)


def test_cost_accuracy_refuses_missing_keys_and_impossible_values() -> None:
    with pytest.raises(ValueError, match="multiply_adds"):
        lc.plot_cost_accuracy([{k: v for k, v in RECORDS[0].items() if k != "multiply_adds"}])
    with pytest.raises(ValueError, match="0..1"):
        lc.plot_cost_accuracy([dict(RECORDS[0], accuracy=98.0)])
    with pytest.raises(ValueError, match="> 0"):
        lc.plot_cost_accuracy([dict(RECORDS[0], multiply_adds=0)])


# --- 7. document isolation -------------------------------------------------------------------------------------
QUERIES = [0, 0, 0, 1, 1, 2, 2, 2, -1]
KEYS = [0, 0, 0, 0, 1, 1, 1, 2, 2, 0, 0, -1, -1]


def test_document_isolation_draws_cross_document_mask_with_its_blocks() -> None:
    fig = lc.draw_document_isolation(torch.tensor([QUERIES]), KEYS)
    ax = fig.axes[0]
    expected = cross_document_mask(torch.tensor([QUERIES]), torch.tensor([KEYS]))[0, 0].numpy()
    assert np.array_equal(ax.images[0].get_array(), expected)
    outlines = [p for p in ax.patches if not p.get_fill()]
    assert len(outlines) == 4  # doc 0 reads two passages, docs 1 and 2 one each, padding none
    assert sorted((p.get_x(), p.get_y(), p.get_width(), p.get_height()) for p in outlines) == \
        [(-0.5, -0.5, 4, 3), (3.5, 2.5, 3, 2), (6.5, 4.5, 2, 3), (8.5, -0.5, 2, 3)]
    labels = [t.get_text() for t in ax.texts]
    assert labels.count("pad") == 2 and labels.count("0") == 3  # strips: keys 0, 1, 2, 0, pad; queries 0, 1, 2, pad
    assert "T_q = 9" in ax.get_ylabel() and "T_k = 13" in ax.get_xlabel()


@pytest.mark.parametrize("queries, keys", [([0.0, 1.0], [0, 1]), ([[0, 1], [0, 1]], [0, 1]), ([], [0])])
def test_document_isolation_refuses_ids_that_are_not_one_row_of_integers(queries, keys) -> None:
    with pytest.raises(ValueError, match="integer document ids"):
        lc.draw_document_isolation(torch.tensor(queries), torch.tensor(keys))


# --- 8. K/V sharing and the cache ------------------------------------------------------------------------------
def _mapping(fig, n_heads: int) -> list[list[int]]:
    """Per panel, the K/V head that each query head's line goes to (read from the lines' gids)."""
    gids = [line.get_gid() for line in fig.axes[0].lines if line.get_gid()]
    pairs = [tuple(int(part) for part in gid.replace("q", "").split("->kv")) for gid in gids]
    return [[g for _, g in pairs[i:i + n_heads]] for i in range(0, len(pairs), n_heads)]


def test_kv_sharing_joins_each_query_head_to_its_group_s_kv_head() -> None:
    fig = lc.draw_kv_sharing(8)
    drawn = _mapping(fig, 8)
    assert len(drawn) == 3  # default: MHA, GQA with 2 K/V heads, MQA
    for panel, n_kv in zip(drawn, (8, 2, 1)):
        assert panel == torch.arange(n_kv).repeat_interleave(8 // n_kv).tolist()
    texts = _texts(fig)
    assert {"multi-head (MHA): H_kv = 8", "grouped-query (GQA): H_kv = 2", "multi-query (MQA): H_kv = 1"} <= set(texts)
    assert "cache ∝ 2·H_kv·T_src·d_head: 1 head = 1/8 of MHA's" in texts
    assert _mapping(lc.draw_kv_sharing(6, (3,)), 6) == [[0, 0, 1, 1, 2, 2]]


def test_kv_sharing_matches_repeat_kv_heads_when_it_exists() -> None:
    repeat = getattr(attention, "repeat_kv_heads", None)
    if repeat is None:
        pytest.skip("course_lib.attention.repeat_kv_heads is not written yet")
    for panel, n_kv in zip(_mapping(lc.draw_kv_sharing(8, (8, 4, 2, 1)), 8), (8, 4, 2, 1)):
        ids = torch.arange(n_kv, dtype=torch.float32).view(1, n_kv, 1, 1)  # K/V head g holds the number g
        assert repeat(ids, 8).view(8).long().tolist() == panel


@pytest.mark.parametrize("n_heads, options, match", [(8, (3,), "divide"), (8, (0,), "positive int"),
                                                     (40, None, "at most 32"), (8, (), "at least one")])
def test_kv_sharing_refuses_options_that_do_not_divide_the_heads(n_heads, options, match) -> None:
    with pytest.raises(ValueError, match=match):
        lc.draw_kv_sharing(n_heads, options)


def test_cache_bytes_chart_draws_one_line_per_option_in_proportion_to_h_kv() -> None:
    ax = lc.plot_cache_bytes((1024, 4096), n_layers=6, n_heads=8, d_head=64, model_name="toy").axes[0]
    lines = {line.get_label(): line.get_ydata() for line in ax.lines}
    assert list(lines) == ["MHA: H_kv = 8", "GQA: H_kv = 2", "MQA: H_kv = 1"]
    mha = [sum(2 * torch.zeros(1, 8, t, 64, dtype=torch.float16).nbytes for _ in range(6)) for t in (1024, 4096)]
    assert list(lines["MHA: H_kv = 8"]) == mha  # K and V [1, 8, T_src, 64] in float16, in each of 6 layers
    assert list(lines["MQA: H_kv = 1"]) == [b // 8 for b in mha]
    assert [t.get_text() for t in ax.texts] == ["48 MiB", "12 MiB", "6 MiB"]
    assert ax.get_xscale() == ax.get_yscale() == "log" and ax.get_title().startswith("toy: 6 layers")
    with pytest.raises(ValueError, match="divide"):
        lc.plot_cache_bytes(n_heads=12, n_kv_heads_options=(12, 5))
    with pytest.raises(ValueError, match="at least 2"):
        lc.plot_cache_bytes((1024,))
