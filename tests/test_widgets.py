"""The attention explorer, headless: every control redraws, bad input gets a clear error."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from course_lib.widgets import MEAN, AttentionExplorer

Q_LABELS, K_LABELS = ["le", "chat", "noir", "dort", "<eos>"], ["the", "black", "cat", "sleeps", ".", "<pad>", "<pad>"]


@pytest.fixture
def explorer() -> AttentionExplorer:
    generator = torch.Generator().manual_seed(0)
    scores = torch.randn(2, 3, 5, 7, generator=generator)  # [L, H, T_q, T_k]
    mask = torch.tensor([True] * 5 + [False] * 2)  # the last two keys are padding
    weights = torch.softmax(scores.masked_fill(~mask, float("-inf")), dim=-1)
    return AttentionExplorer(weights, Q_LABELS, K_LABELS, scores=scores, mask=mask, title="test")


def shown_png(explorer: AttentionExplorer) -> bytes:
    (output,) = explorer.output.outputs
    return output["data"]["image/png"]


@pytest.mark.parametrize(
    "control, value", [("layer", 0), ("head", 1), ("query", 3), ("view", "scores"), ("view", "scores after mask")]
)
def test_changing_a_control_redraws_the_figure(explorer: AttentionExplorer, control: str, value: object) -> None:
    before = shown_png(explorer)
    getattr(explorer, control).value = value
    assert len(explorer.output.outputs) == 1, "the old figure is replaced, not appended to"
    assert shown_png(explorer) != before


def test_head_selector_shows_one_head_or_the_mean(explorer: AttentionExplorer) -> None:
    explorer.layer.value = 1
    np.testing.assert_allclose(explorer.selected(), explorer.weights[1].mean(axis=0))
    explorer.head.value = 2
    np.testing.assert_allclose(explorer.selected(), explorer.weights[1, 2])
    assert explorer.head.options[0] == ("mean over heads", MEAN)


def test_save_button_writes_the_current_figure(explorer: AttentionExplorer, tmp_path: Path) -> None:
    explorer.filename.value = str(tmp_path / "heads")
    explorer.save_button.click()
    saved = tmp_path / "heads.png"
    assert saved.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert str(saved) in explorer.status.value


def test_accepts_a_single_matrix_and_hides_the_layer_selector() -> None:
    explorer = AttentionExplorer(torch.full((2, 3), 1 / 3), ["a", "b"], ["x", "y", "z"])
    assert explorer.weights.shape == (1, 1, 2, 3)
    assert explorer.layer.layout.display == "none" and explorer.view.layout.display == "none"
    assert explorer.query.max == 1


def test_labels_of_the_wrong_length_are_refused() -> None:
    with pytest.raises(ValueError, match=r"T_q=5, T_k=7\]: got 4 query labels and 7 key labels"):
        AttentionExplorer(torch.rand(3, 5, 7), Q_LABELS[:4], K_LABELS)


def test_weights_of_the_wrong_rank_are_refused() -> None:
    with pytest.raises(ValueError, match=r"\[layers, heads, T_q, T_k\]; got \[1, 2, 3, 5, 7\]"):
        AttentionExplorer(torch.rand(1, 2, 3, 5, 7), Q_LABELS, K_LABELS)


def test_scores_of_another_shape_and_non_bool_masks_are_refused() -> None:
    with pytest.raises(ValueError, match=r"scores must have the weights' shape \[1, 3, 5, 7\]; got \[1, 3, 5, 6\]"):
        AttentionExplorer(torch.rand(3, 5, 7), Q_LABELS, K_LABELS, scores=torch.rand(3, 5, 6))
    with pytest.raises(ValueError, match="mask must be bool .* got dtype float32"):
        AttentionExplorer(torch.rand(3, 5, 7), Q_LABELS, K_LABELS, mask=np.ones(7, dtype=np.float32))
