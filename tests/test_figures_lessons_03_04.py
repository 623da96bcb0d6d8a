"""The figures of lessons 03 and 04: the cross-attention heatmap convention and masks drawn as grids."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from matplotlib.colors import to_rgba  # noqa: E402

from course_lib.masks import causal_mask, document_mask  # noqa: E402
from course_lib.plotting import (  # noqa: E402
    MASK_COLORS,
    SOURCE_TOKEN_LABEL,
    WRITTEN_WORD_LABEL,
    cross_attention_heatmap,
    mask_figure,
    mask_grid,
)

WRITTEN = ["le", "chat", "noir", "dort", "<eos>"]
SOURCE = ["the", "black", "cat", "is", "sleeping", "<eos>", "<pad>"]


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def test_cross_attention_heatmap_labels_rows_by_the_word_being_written() -> None:
    weights = torch.softmax(torch.randn(5, 7), dim=-1)
    ax = cross_attention_heatmap(weights, WRITTEN, SOURCE)
    assert ax.get_ylabel() == WRITTEN_WORD_LABEL == "word being written"
    assert ax.get_xlabel() == SOURCE_TOKEN_LABEL == "source token"
    assert [t.get_text() for t in ax.get_yticklabels()] == WRITTEN
    assert [t.get_text() for t in ax.get_xticklabels()] == SOURCE


def test_cross_attention_heatmap_hatches_exactly_the_masked_cells() -> None:
    masked = torch.zeros(5, 7, dtype=torch.bool)
    masked[:, 6] = True  # the <pad> column
    ax = cross_attention_heatmap(torch.full((5, 7), 1 / 7), WRITTEN, SOURCE, masked=masked)
    hatched = sorted((p.get_x(), p.get_y()) for p in ax.patches if p.get_hatch())
    assert hatched == [(6, row) for row in range(5)]


def test_cross_attention_heatmap_refuses_labels_of_the_wrong_length() -> None:
    with pytest.raises(ValueError, match="4 query labels for 5 query rows"):
        cross_attention_heatmap(torch.rand(5, 7), WRITTEN[:4], SOURCE)


def test_mask_grid_draws_true_blue_and_false_grey() -> None:
    mask = causal_mask(3)
    ax = mask_grid(mask, ["a", "b", "c"], ["a", "b", "c"])
    image = ax.images[0]
    rgba = image.cmap(image.norm(image.get_array()))  # [3, 3, 4]
    blue, grey = np.array(to_rgba(MASK_COLORS[1])), np.array(to_rgba(MASK_COLORS[0]))
    np.testing.assert_allclose(rgba[mask.numpy()], np.tile(blue, (6, 1)))
    np.testing.assert_allclose(rgba[~mask.numpy()], np.tile(grey, (3, 1)))
    assert [t.get_text() for t in ax.get_yticklabels()] == ["a", "b", "c"]


def test_mask_grid_outlines_each_document_block() -> None:
    segments = torch.tensor([[0, 0, 0, 1, 1, 2]])
    ax = mask_grid(document_mask(segments)[0, 0], blocks=[3, 2, 1])
    boxes = [(p.get_x(), p.get_y(), p.get_width()) for p in ax.patches]
    assert boxes == [(-0.5, -0.5, 3), (2.5, 2.5, 2), (4.5, 4.5, 1)]


@pytest.mark.parametrize("mask, message", [
    (torch.ones(3, 3), "must be a bool"),
    (torch.ones(1, 3, 3, dtype=torch.bool), r"must be a bool \[T_q, T_k\].*\[1, 3, 3\]"),
])
def test_mask_grid_refuses_what_is_not_a_2d_bool_mask(mask: torch.Tensor, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        mask_grid(mask)


def test_mask_grid_refuses_blocks_that_do_not_cover_the_keys() -> None:
    with pytest.raises(ValueError, match=r"blocks \[3, 2\] add up to 5, but the mask has 6 keys"):
        mask_grid(torch.ones(6, 6, dtype=torch.bool), blocks=[3, 2])


def test_mask_figure_draws_one_panel_per_mask_and_labels_a_stored_row_as_every_query() -> None:
    labels = ["<bos>", "le", "chat", "<pad>"]
    padding = torch.tensor([True, True, True, False])
    fig = mask_figure([padding[None], causal_mask(4)], ["stored", "causal"], labels)
    first, second = fig.axes
    assert [t.get_text() for t in first.get_yticklabels()] == ["every query"]
    assert [t.get_text() for t in second.get_yticklabels()] == labels
    assert [first.get_title(), second.get_title()] == ["stored", "causal"]
    assert second.get_ylabel() == ""  # the y label once, on the first panel
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["may attend (True)", "blocked (False)"]


def test_mask_figure_refuses_a_title_count_that_does_not_match() -> None:
    with pytest.raises(ValueError, match="1 titles for 2 masks"):
        mask_figure([causal_mask(2), causal_mask(2)], ["only one"], ["a", "b"])
