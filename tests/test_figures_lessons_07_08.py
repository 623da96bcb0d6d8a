"""The figures of lessons 07 and 08: gold boxes on every head, exact match by length beyond training, and
the head-role, where-heads-look and silencing figures. Each is checked for what it must show."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402

from course_lib import alignment_plots, plotting, translation_charts  # noqa: E402

SOURCE = ["the", "farmers", "laughed", "behind", "this", "market"]
TARGET = ["dorva", "li", "merka", "nu", "pos", "riso", "ta"]
ALIGNMENT = [(1, 0), (1, 1), (5, 2), (4, 3), (3, 4), (2, 5), (2, 6)]


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def _boxes(ax) -> set[tuple[int, int]]:
    return {(int(p.get_x()), int(p.get_y())) for p in ax.patches
            if isinstance(p, Rectangle) and not p.get_fill() and p.get_edgecolor()[:3] == pytest.approx(
                matplotlib.colors.to_rgb("C2"))}


def test_alignment_grid_outlines_every_gold_link_in_every_panel_with_the_course_labels() -> None:
    weights = torch.softmax(torch.randn(8, 7, 6), dim=-1)  # [L * H, T, S]
    fig = alignment_plots.alignment_grid(weights, SOURCE, TARGET, ALIGNMENT, titles=[f"panel {i}" for i in range(8)])
    panels = fig.axes[:8]
    assert all(_boxes(ax) == set(ALIGNMENT) for ax in panels)
    assert panels[0].get_ylabel() == plotting.WRITTEN_WORD_LABEL
    assert panels[-1].get_xlabel() == plotting.SOURCE_TOKEN_LABEL
    assert [t.get_text() for t in panels[0].get_yticklabels()] == TARGET
    assert min(t.get_fontsize() for ax in panels for t in ax.get_xticklabels() + ax.get_yticklabels()) >= 8
    assert len(fig.axes) == 9  # one shared colour bar


def test_alignment_grid_refuses_links_outside_the_sentence() -> None:
    with pytest.raises(ValueError, match="alignment links must index 6 source and 7 target words"):
        alignment_plots.alignment_grid(torch.rand(2, 7, 6), SOURCE, TARGET, [(6, 0)])


def test_exact_match_by_length_draws_one_line_per_group_without_rare_lengths() -> None:
    lengths = torch.tensor([3] * 10 + [4] * 10 + [30] * 2)
    correct = torch.tensor([True] * 10 + [True] * 5 + [False] * 5 + [False] * 2)
    ax = translation_charts.exact_match_by_length({"a": (lengths, correct), "b": (lengths, ~correct)},
                                                  longest_trained=23)
    a, b = ax.get_lines()
    assert list(a.get_xdata()) == [3, 4] and list(a.get_ydata()) == [100.0, 50.0]  # length 30: only 2 sentences
    assert list(b.get_ydata()) == [0.0, 50.0]
    assert "a (22 sentences)" in [t.get_text() for t in ax.get_legend().get_texts()]
    assert any("longer than any" in t.get_text() for t in ax.texts)
    single = translation_charts.exact_match_by_length({"a": (lengths, correct)}, min_count=1, ax=plt.subplots()[1])
    assert [t.get_text() for t in single.texts] == ["10", "10", "2"]  # sentences per length, under the points


def test_exact_match_by_length_refuses_mismatched_inputs() -> None:
    with pytest.raises(ValueError, match="one size"):
        translation_charts.exact_match_by_length({"a": ([3, 4], [True])})


def test_entropy_examples_show_the_sharpest_median_and_most_spread_rows() -> None:
    weights = torch.softmax(torch.randn(2, 4, 7, 6) * 3, dim=-1)  # [L, H, T, S]
    normalised = torch.rand(2, 4, 7)
    normalised[1, 2, 3], normalised[0, 1, 5] = -1.0, 2.0  # the sharpest, the most spread
    fig = translation_charts.entropy_examples(weights, normalised, TARGET, SOURCE)
    titles = [ax.get_title() for ax in fig.axes]
    assert titles[0].startswith("sharpest: layer 1, head 2, writing 'nu'")
    assert titles[2].startswith("most spread: layer 0, head 1, writing 'riso'")
    heights = [bar.get_height() for bar in fig.axes[0].patches]
    torch.testing.assert_close(torch.tensor(heights), weights[1, 2, 3], check_dtype=False)


def test_entropy_examples_refuse_mismatched_shapes() -> None:
    with pytest.raises(ValueError, match=r"need weights \[L, H, T, S\]"):
        translation_charts.entropy_examples(torch.rand(2, 4, 7, 6), torch.rand(2, 4, 6), TARGET, SOURCE)


def test_head_roles_figure_puts_one_numbered_point_per_head() -> None:
    entropy, aer = torch.rand(2, 4), torch.rand(2, 4)
    ax = translation_charts.head_roles_figure(entropy, aer)
    points = torch.cat([torch.tensor(c.get_offsets()) for c in ax.collections])
    torch.testing.assert_close(points, torch.stack([entropy.flatten(), aer.flatten()], dim=1).double())
    assert sorted(t.get_text() for t in ax.texts) == sorted("01230123")
    with pytest.raises(ValueError, match="both be"):
        translation_charts.head_roles_figure(entropy, aer[:1])


def test_where_heads_look_figure_stacks_each_heads_shares_to_100() -> None:
    shares = torch.softmax(torch.randn(2, 4, 6), dim=-1)
    ax = translation_charts.where_heads_look_figure(shares, [f"bin {i}" for i in range(6)])
    widths = torch.tensor([bar.get_width() for bar in ax.patches]).view(6, 8)  # [bins, L * H]
    torch.testing.assert_close(widths.sum(dim=0), torch.full((8,), 100.0), atol=1e-4, rtol=0, check_dtype=False)
    torch.testing.assert_close(widths[0], 100 * shares[..., 0].flatten(), atol=1e-4, rtol=0, check_dtype=False)
    assert [t.get_text() for t in ax.get_yticklabels()][:2] == ["layer 0, head 0", "layer 0, head 1"]
    with pytest.raises(ValueError, match="6 bins"):
        translation_charts.where_heads_look_figure(shares[..., :5], [f"bin {i}" for i in range(6)])


def test_silencing_figure_has_a_bar_per_head_and_per_layer_and_the_baseline() -> None:
    per_head, per_layer, aer = torch.rand(2, 4), torch.tensor([0.2, 0.01]), torch.rand(2, 4)
    ax = translation_charts.silencing_figure(per_head, per_layer, 0.99, aer)
    heights = [bar.get_height() for bar in ax.patches]
    torch.testing.assert_close(torch.tensor(heights), 100 * torch.cat([per_head.flatten(), per_layer]),
                               check_dtype=False)
    assert ax.get_lines()[0].get_ydata()[0] == pytest.approx(99.0)
    assert f"AER {aer[1, 3]:.2f}" in ax.get_xticklabels()[7].get_text()
    with pytest.raises(ValueError, match="per_layer"):
        translation_charts.silencing_figure(per_head, per_layer[:1], 0.99, aer)
