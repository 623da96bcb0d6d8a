"""The figures and measurements that lessons 00-02 call instead of long plotting or timing cells."""
from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from matplotlib.collections import PathCollection  # noqa: E402

from course_lib import attention_diagrams, charts, measure, tour  # noqa: E402

TOKENS = ["the", "cat", "chased", "a", "mouse"]


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def pentagon() -> torch.Tensor:
    angles = torch.deg2rad(90.0 + 72.0 * torch.arange(5.0))
    return torch.stack([angles.cos(), angles.sin()], dim=-1)  # [5, 2]


# --- lesson 00 -------------------------------------------------------------------------------------------
def test_weights_bar_chart_draws_one_bar_per_key_at_its_weight() -> None:
    weights = torch.softmax(torch.tensor([0.1, 1.2, 0.6]), dim=-1)
    ax = tour.weights_bar_chart(weights, ["a", "b", "c"], title="t")
    heights = [bar.get_height() for bar in ax.patches]
    np.testing.assert_allclose(heights, weights.numpy(), rtol=1e-6)
    assert [label.get_text() for label in ax.get_xticklabels()] == ["a", "b", "c"]
    assert ax.get_ylim() == (0.0, 1.0)


def test_weights_bar_chart_rejects_a_label_count_that_does_not_match() -> None:
    with pytest.raises(ValueError, match="one label per key"):
        tour.weights_bar_chart(torch.ones(3) / 3, ["a", "b"])
    with pytest.raises(ValueError, match=r"weights \[T_k\]"):
        tour.weights_bar_chart(torch.ones(2, 3) / 3, ["a", "b", "c"])


# --- lesson 01 -------------------------------------------------------------------------------------------
def test_context_points_draws_values_and_contexts_where_they_are() -> None:
    values = pentagon()
    weights = torch.eye(5)[[1, 2, 1, 4, 2]] * 0.8 + 0.04  # rows sum to 1; queries 1 and 4 coincide
    context = weights @ values
    ax = charts.context_points(values, context, TOKENS)
    points = [c for c in ax.collections if isinstance(c, PathCollection)]
    np.testing.assert_allclose(points[0].get_offsets(), values.numpy(), atol=1e-6)
    np.testing.assert_allclose(points[1].get_offsets(), context.numpy(), atol=1e-6)
    labels = {text.get_text() for text in ax.texts}
    assert set(TOKENS) <= labels
    assert "cat / mouse" in labels  # the two queries with the same context share one label


def test_context_points_checks_shapes() -> None:
    with pytest.raises(ValueError, match=r"\[T, 2\]"):
        charts.context_points(torch.zeros(5, 3), torch.zeros(5, 3), TOKENS)
    with pytest.raises(ValueError, match="4 key labels for 5 values"):
        charts.context_points(pentagon(), pentagon(), TOKENS[:4], TOKENS)


def scale_results(d_ks: list[int]) -> dict[str, dict[str, list]]:
    return {"no scale": {"std": [math.sqrt(d) for d in d_ks], "max_weight": [0.5] * len(d_ks),
                         "jacobian": [(0.1, 0.2, 0.3)] * len(d_ks)},
            "scaled": {"std": [1.0] * len(d_ks), "max_weight": [0.25] * len(d_ks),
                       "jacobian": [(0.2, 0.3, 0.4)] * len(d_ks)}}


def test_scale_experiment_figure_has_three_log_panels_with_one_line_per_variant() -> None:
    d_ks = [4, 16, 64, 256]
    fig = charts.scale_experiment_figure(d_ks, scale_results(d_ks), n_keys=16)
    assert len(fig.axes) == 3
    assert all(ax.get_xscale() == "log" for ax in fig.axes)
    std_lines = {line.get_label(): line.get_ydata() for line in fig.axes[0].get_lines()}
    np.testing.assert_allclose(std_lines["√d_k"], np.sqrt(d_ks))
    np.testing.assert_allclose(std_lines["scaled"], 1.0)
    medians = {line.get_label(): list(line.get_ydata()) for line in fig.axes[2].get_lines()}
    assert medians["no scale: median"] == [0.2] * 4
    assert any("uniform (1/16)" in text.get_text() for text in fig.axes[1].texts)
    assert min(t.get_fontsize() for ax in fig.axes for t in ax.texts) >= 8


def test_scale_experiment_figure_wants_one_entry_per_d_k() -> None:
    results = scale_results([4, 16])
    with pytest.raises(ValueError, match="one std, max_weight and jacobian entry per d_k"):
        charts.scale_experiment_figure([4, 16, 64], results, n_keys=16)


# --- lesson 02 -------------------------------------------------------------------------------------------
def split_right(m: torch.Tensor) -> torch.Tensor:
    return m.view(6, 4, 4).transpose(0, 1)  # [T, d_model] -> [H, T, d_head]


def split_wrong(m: torch.Tensor) -> torch.Tensor:
    return m.view(4, 6, 4)  # same shape, positions mixed


def cell_numbers(ax: plt.Axes) -> list[int]:
    return [int(text.get_text()) for text in ax.texts]


def test_head_split_figure_numbers_each_cell_with_its_token() -> None:
    fig = attention_diagrams.head_split_figure({"right": split_right, "wrong": split_wrong})
    assert len(fig.axes) == 1 + 2 * 4  # q, then 4 heads per split
    q_axis, right_head0, wrong_head0 = fig.axes[0], fig.axes[1], fig.axes[5]  # q, right heads 0-3, wrong heads
    assert cell_numbers(q_axis) == [t for t in range(6) for _ in range(16)]
    assert cell_numbers(right_head0)[::4] == [0, 1, 2, 3, 4, 5]  # first column: positions in order
    assert cell_numbers(wrong_head0)[::4] == [0, 0, 0, 0, 1, 1]  # positions mixed
    assert right_head0.get_ylabel() == "right" and wrong_head0.get_ylabel() == "wrong"
    right_colours = right_head0.get_images()[0].get_array()
    assert np.unique(right_colours).tolist() == [0]  # head 0 holds only head 0's block
    assert len(np.unique(wrong_head0.get_images()[0].get_array())) == 4


def test_head_split_figure_works_for_other_sizes_and_rejects_a_wrong_shape() -> None:
    fig = attention_diagrams.head_split_figure({"right": lambda m: m.view(3, 8, 2).transpose(0, 1)}, seq_len=3,
                                               n_heads=8, d_head=2)
    assert len(fig.axes) == 1 + 8
    with pytest.raises(ValueError, match=r"must return \[H, T, d_head\] = \[4, 6, 4\]"):
        attention_diagrams.head_split_figure({"bad": lambda m: m.view(6, 4, 4)})


@pytest.fixture(scope="module")
def cost_rows() -> list[dict]:
    return measure.attention_cost(lengths=(32, 64, 128), batch=1, heads=2, d_head=8, repeats=1)


def test_attention_cost_adds_the_score_size_and_the_math_fallback_peak(cost_rows: list[dict]) -> None:
    assert [row["T"] for row in cost_rows] == [32, 64, 128]
    for row in cost_rows:
        assert row["score_bytes"] == 1 * 2 * row["T"] ** 2 * 4
        assert row["hand_s"] > 0 and row["sdpa_s"] > 0
        assert row["math_peak_bytes"] >= row["score_bytes"]  # the math fallback stores every score
    assert cost_rows[-1]["sdpa_peak_bytes"] < cost_rows[-1]["score_bytes"]  # a fused kernel does not


def test_attention_cost_restores_the_thread_count() -> None:
    before = torch.get_num_threads()
    measure.attention_cost(lengths=(16,), heads=1, d_head=4, repeats=1, threads=1)
    assert torch.get_num_threads() == before


def test_num_threads_sets_and_restores() -> None:
    before = torch.get_num_threads()
    with measure.num_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    with measure.num_threads(None):
        assert torch.get_num_threads() == before
    with pytest.raises(ValueError, match="threads must be >= 1"):
        measure.num_threads(0)


def test_loglog_slope_recovers_the_exponent() -> None:
    xs = [64, 128, 256, 512]
    assert measure.loglog_slope(xs, [3e-6 * x**2 for x in xs]) == pytest.approx(2.0)
    assert measure.loglog_slope(xs, [5.0 * x**1.5 for x in xs]) == pytest.approx(1.5)
    with pytest.raises(ValueError, match=">= 2 points"):
        measure.loglog_slope([1], [1])
    with pytest.raises(ValueError, match="positive"):
        measure.loglog_slope([1, 2], [0, 1])


def test_sdpa_kernels_names_the_kernel_that_ran() -> None:
    q = torch.randn(1, 2, 16, 8)
    fused = measure.sdpa_kernels(q, q, q)
    assert fused and all("attention" in name for name in fused)
    math_path = measure.sdpa_kernels(q[0], q[0], q[0])  # 3-D input: no fused kernel on the CPU
    if q.device.type == "cpu":
        assert math_path == ["_scaled_dot_product_attention_math"]
        assert "_scaled_dot_product_attention_math" not in fused


def test_attention_cost_figure_plots_time_and_every_measured_memory(cost_rows: list[dict]) -> None:
    fig = charts.attention_cost_figure(cost_rows, title="t")
    ax_time, ax_mem = fig.axes
    assert ax_time.get_xscale() == ax_time.get_yscale() == "log"
    time_lines = {line.get_label(): list(line.get_ydata()) for line in ax_time.get_lines()}
    assert time_lines["hand-written"] == [1e3 * row["hand_s"] for row in cost_rows]
    guide = time_lines["∝ T² (slope 2)"]
    assert guide[-1] == pytest.approx(time_lines["hand-written"][-1]) and guide[0] == pytest.approx(guide[-1] / 16)
    memory_labels = [line.get_label() for line in ax_mem.get_lines()]
    assert memory_labels == ["score tensor B·H·T·T·4 bytes", "hand-written (peak)", "SDPA, math fallback (peak)",
                             "SDPA, default kernel (peak)"]
    with pytest.raises(ValueError, match="at least one row"):
        charts.attention_cost_figure([])


def test_multi_head_flow_writes_every_shape_from_its_arguments() -> None:
    fig = attention_diagrams.multi_head_flow(batch=2, t_q=6, t_k=9, d_model=16, n_heads=4)
    texts = [text.get_text() for text in fig.axes[0].texts]
    for expected in ("[2, 6, 16]", "[2, 4, 6, 4]", "[2, 4, 6, 9]", "[2, 9, 16]", "[2, 4, 9, 4]", "W_q, split",
                     "merge, W_o"):
        assert expected in texts
    assert fig.get_size_inches()[0] <= 10
    assert min(text.get_fontsize() for text in fig.axes[0].texts) >= 8
    other_fig = attention_diagrams.multi_head_flow(batch=1, t_q=3, t_k=5, d_model=24, n_heads=8)
    other = [t.get_text() for t in other_fig.axes[0].texts]
    assert "[1, 8, 3, 5]" in other and "[1, 8, 5, 3]" in other


@pytest.mark.parametrize(("sizes", "message"), [
    (dict(batch=1, t_q=3, t_k=5, d_model=10, n_heads=4), "divisible by n_heads"),
    (dict(batch=0, t_q=3, t_k=5, d_model=8, n_heads=4), "batch must be a positive int"),
])
def test_multi_head_flow_rejects_impossible_sizes(sizes: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        attention_diagrams.multi_head_flow(**sizes)
