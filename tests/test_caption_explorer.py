"""Lesson 10's caption explorer, headless: every control redraws, a scene can be built, bad scenes get a message."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from course_lib import captioning as cap  # noqa: E402
from course_lib import scenes  # noqa: E402
from course_lib.vision import Captioner, CaptionerConfig  # noqa: E402
from course_lib.vision_widgets import MEAN, NONE, CaptionExplorer  # noqa: E402


@pytest.fixture(scope="module")
def explorer() -> CaptionExplorer:
    torch.manual_seed(0)
    vocab = cap.caption_vocabulary()
    model = Captioner(CaptionerConfig(vocab_size=len(vocab), d_image=32, d_model=24, n_heads=2, n_encoder_layers=1,
                                      n_decoder_layers=2, d_ff=48, max_len=16))
    return CaptionExplorer(model, vocab, scenes.random_scenes(np.random.default_rng(0), 4))


def png_shown(explorer: CaptionExplorer) -> bytes:
    (output,) = explorer.output.outputs
    return output["data"]["image/png"]


def test_it_starts_with_a_caption_and_a_figure(explorer: CaptionExplorer) -> None:
    assert explorer.weights.shape[:2] == (2, 2) and explorer.weights.shape[-1] == 36
    assert explorer.word.max == len(explorer.caption)  # one row per word, and one that writes <eos>
    assert explorer.weights.shape[2] == len(explorer.caption) + 1
    assert png_shown(explorer)


@pytest.mark.parametrize("control, value, title", [("layer", 1, "layer 1"), ("head", 1, "head 1"),
                                                   ("head", MEAN, "mean over heads")])
def test_changing_a_control_redraws(explorer: CaptionExplorer, control: str, value: object, title: str) -> None:
    other = explorer.head.options[-1][1] if control == "head" and value == MEAN else MEAN  # a value to change from
    getattr(explorer, control).value = other if control == "head" else 0
    explorer.output.outputs = ()
    getattr(explorer, control).value = value
    assert title in explorer.figure.axes[0].get_title()
    assert png_shown(explorer)  # a new figure is on screen


def test_the_selected_row_is_the_chosen_layer_head_and_word(explorer: CaptionExplorer) -> None:
    explorer.layer.value, explorer.head.value = 1, 0
    explorer.word.value = explorer.word.max
    assert torch.equal(explorer.selected(), explorer.weights[1, 0, explorer.word.max])
    explorer.head.value = MEAN
    assert torch.allclose(explorer.selected(), explorer.weights[1, :, explorer.word.max].mean(0))
    assert explorer.selected().sum().item() == pytest.approx(1.0, abs=1e-5)


def test_picking_another_image_captions_it(explorer: CaptionExplorer) -> None:
    explorer.picker.value = 2
    assert explorer.scene == explorer.scenes[2]
    expected = torch.from_numpy(scenes.render([explorer.scenes[2]], 0))[0]
    assert torch.equal(explorer.image, expected)


def test_a_built_scene_is_captioned_and_an_overlapping_one_gets_a_message(explorer: CaptionExplorer) -> None:
    (s1, c1, cell1), (s2, c2, cell2), (s3, _, _) = explorer.slots
    s1.value, c1.value, cell1.value = "cross", "blue", 4
    s2.value, c2.value, cell2.value = "square", "red", 8
    s3.value = NONE
    scene = explorer.build_scene()
    assert scene is not None and [(o.shape, o.colour, o.row, o.col) for o in scene.objects] == \
        [("cross", "blue", 1, 1), ("square", "red", 2, 2)]
    assert explorer.scene == scene
    cell2.value = 4
    assert explorer.build_scene() is None
    assert "used twice" in explorer.message.value and explorer.scene == scene  # the last good scene stays


def test_save_png_writes_the_figure(explorer: CaptionExplorer, tmp_path: Path) -> None:
    path = explorer.save_png(tmp_path / "view")
    assert path.suffix == ".png" and path.stat().st_size > 1000 and "saved" in explorer.status.value


def test_an_empty_scene_list_is_refused() -> None:
    vocab = cap.caption_vocabulary()
    with pytest.raises(ValueError, match="at least one scene"):
        CaptionExplorer(Captioner(CaptionerConfig(vocab_size=len(vocab))), vocab, [])
