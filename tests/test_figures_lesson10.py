"""Lesson 10's figures: word overlays on the image and the grounding heatmap."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from course_lib import scenes  # noqa: E402
from course_lib.vision_charts import grounding_figure, weights_to_pixels, word_overlays  # noqa: E402


def test_each_patch_weight_covers_exactly_its_pixels() -> None:
    weights = torch.zeros(36)
    weights[1 * 6 + 4] = 0.7  # row 1, column 4
    pixels = weights_to_pixels(weights, 48)
    assert pixels.shape == (48, 48)
    assert np.allclose(pixels[8:16, 32:40], 0.7) and pixels.sum() == pytest.approx(0.7 * 64)


def test_weights_that_are_not_a_square_grid_are_refused() -> None:
    with pytest.raises(ValueError, match="square grid"):
        weights_to_pixels(torch.ones(35), 48)


def test_one_panel_per_word_with_the_gold_box_outlined() -> None:
    scene = scenes.scene_from_objects([("square", "red", 0, 0), ("ring", "blue", 0, 1)])
    image = torch.from_numpy(scenes.render(scene, 0)[0])
    words = list(scene.caption)
    fig = word_overlays(image, words, torch.rand(len(words), 36), scene.word_boxes, columns=4)
    titled = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert titled == words
    n_boxes = sum(len(ax.patches) for ax in fig.axes)
    assert n_boxes == sum(box is not None for box in scene.word_boxes) == 4
    plt.close(fig)
    with pytest.raises(ValueError, match="weights must be"):
        word_overlays(image, words, torch.rand(2, 36))


def test_the_grounding_heatmap_writes_every_score_and_the_chance_level() -> None:
    fig = grounding_figure(torch.tensor([[0.5, 1.0], [0.25, 0.0]]), chance=4 / 36)
    texts = {t.get_text() for t in fig.axes[0].texts}
    assert {"0.50", "1.00", "0.25", "0.00"} <= texts
    assert "11%" in fig.axes[0].get_title()
    plt.close(fig)


def test_the_gallery_titles_each_image_with_its_caption() -> None:
    from course_lib.vision_charts import scene_gallery

    scene_list = scenes.random_scenes(np.random.default_rng(0), 5)
    fig = scene_gallery(torch.from_numpy(scenes.render(scene_list, 0)), [str(s) for s in scene_list], columns=3)
    titles = [ax.get_title().replace("\n", " ") for ax in fig.axes if ax.get_title()]
    assert titles == [str(s) for s in scene_list]
    plt.close(fig)


def test_the_patch_grid_numbers_every_patch_and_shows_the_first_tokens() -> None:
    from course_lib.vision_charts import patch_grid_figure

    image = torch.from_numpy(scenes.render(scenes.random_scene(np.random.default_rng(1)), 0)[0])
    fig = patch_grid_figure(image, 8, shown=5)
    numbers = {t.get_text() for t in fig.axes[0].texts}
    assert numbers == {str(n) for n in range(36)}
    assert [ax.get_title() for ax in fig.axes[1:]] == ["0", "1", "2", "3", "4"]
    plt.close(fig)


def test_position_similarity_is_one_on_the_chosen_patch() -> None:
    from course_lib.vision import patch_positions_2d
    from course_lib.vision_charts import position_similarity_figure

    fig = position_similarity_figure(patch_positions_2d(6, 6, 32), 6, patches=(14,))
    shown = fig.axes[0].images[0].get_array()
    assert shown.shape == (6, 6) and shown[2, 2] == pytest.approx(1.0) and float(shown.max()) == pytest.approx(1.0)
    plt.close(fig)
    with pytest.raises(ValueError, match="grid"):
        position_similarity_figure(torch.zeros(30, 8), 6)
