"""Synthetic scenes: deterministic, boxes that match the drawn pixels, captions that read back, honest splits."""
from __future__ import annotations

import itertools

import numpy as np
import pytest

from course_lib import scenes as sc

SIZES = {"train": 2000, "valid": 100, "test": 300, "generalisation": 200}


@pytest.fixture(scope="module")
def splits() -> dict[str, sc.SceneSet]:
    return sc.make_splits(seed=0, sizes=SIZES)


def every_scene(splits: dict[str, sc.SceneSet]) -> list[sc.Scene]:
    return [scene for split in splits.values() for scene in split.scenes]


def test_splits_have_the_asked_sizes_and_images_of_the_promised_layout(splits: dict[str, sc.SceneSet]) -> None:
    assert {name: len(split) for name, split in splits.items()} == SIZES
    for name, split in splits.items():
        assert split.images.shape == (SIZES[name], 3, sc.IMAGE_SIZE, sc.IMAGE_SIZE)
        assert split.images.dtype == np.float32
        assert split.images.min() >= 0.0 and split.images.max() <= 1.0
    counts = [len(scene.objects) for scene in splits["train"].scenes]
    assert set(counts) == {1, 2, 3}


def test_same_seed_gives_identical_data_and_another_seed_differs(splits: dict[str, sc.SceneSet]) -> None:
    again = sc.make_splits(seed=0, sizes=SIZES)
    for name in SIZES:
        assert again[name].scenes == splits[name].scenes
        assert [s.caption for s in again[name].scenes] == [s.caption for s in splits[name].scenes]
        np.testing.assert_array_equal(again[name].images, splits[name].images)
    other = sc.make_splits(seed=1, sizes=SIZES)
    assert other["test"].scenes != splits["test"].scenes
    assert not np.array_equal(other["test"].images, splits["test"].images)


def test_rendering_a_scene_alone_matches_rendering_it_first_in_a_batch(splits: dict[str, sc.SceneSet]) -> None:
    first, second = splits["test"].scenes[:2]
    batch = sc.render([first, second], seed=7)
    np.testing.assert_array_equal(sc.render([first], seed=7)[0], batch[0])
    np.testing.assert_array_equal(sc.render(first, seed=7), batch[:1])
    assert not np.array_equal(sc.render([first], seed=8)[0], batch[0])


def edge_case_scenes() -> list[sc.Scene]:
    """Every shape in all nine cells, pushed to each corner of its cell, in every colour."""
    colours = list(sc.COLOURS)
    return [sc.scene_from_objects([(shape, colours[(r + c) % len(colours)], r, c, jitter)
                                   for r in range(sc.GRID) for c in range(sc.GRID)])
            for shape in sc.SHAPES for jitter in [(0, 0), (4, 4), (0, 4), (4, 0), 2]]


def test_every_box_is_the_tight_box_of_the_pixels_drawn_in_its_colour(splits: dict[str, sc.SceneSet]) -> None:
    scenes = splits["test"].scenes + splits["generalisation"].scenes[:50] + edge_case_scenes()
    images = sc.render(scenes, seed=3)
    for image, scene in zip(images, scenes):
        for obj in scene.objects:
            cell = (slice(None), slice(obj.row * sc.CELL, (obj.row + 1) * sc.CELL),
                    slice(obj.col * sc.CELL, (obj.col + 1) * sc.CELL))
            rgb = np.array(sc.COLOURS[obj.colour], np.float32)[:, None, None]
            painted = np.all(np.abs(image[cell] - rgb) < 0.3, axis=0)  # (16, 16): pixels in the object's colour
            ys, xs = np.nonzero(painted)
            ys, xs = ys + obj.row * sc.CELL, xs + obj.col * sc.CELL
            assert painted.sum() == sc.shape_stencil(obj.shape).sum()
            assert obj.box == (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1), (str(scene), obj)
            x0, y0, x1, y1 = obj.box
            assert 0 <= x0 < x1 <= sc.IMAGE_SIZE and 0 <= y0 < y1 <= sc.IMAGE_SIZE
    background = np.ones((len(scenes), sc.IMAGE_SIZE, sc.IMAGE_SIZE), bool)
    for i, scene in enumerate(scenes):
        for x0, y0, x1, y1 in (obj.box for obj in scene.objects):
            background[i, y0:y1, x0:x1] = False
    assert np.abs(images.transpose(1, 0, 2, 3)[:, background] - sc.BACKGROUND).max() < 0.3


def test_jitter_is_dx_then_dy_and_boxes_put_x_first() -> None:
    scene = sc.scene_from_objects([("square", "red", 0, 0, (4, 0)), ("diamond", "green", 1, 2, (1, 3))])
    square, diamond = scene.objects
    assert square.box == (4, 0, 16, 12)
    assert diamond.box == (2 * sc.CELL + 1 + 1, sc.CELL + 3 + 1, 2 * sc.CELL + 1 + 11, sc.CELL + 3 + 11)  # 1-px margin
    image = sc.render([sc.scene_from_objects([("square", "white", 0, 0, (4, 0))])], seed=0)[0]  # (3, H, W)
    assert image[:, 0:12, 4:16].min() > 0.7 and image[:, 0:12, 0:4].max() < 0.4


def test_captions_parse_back_to_the_objects_and_their_relations(splits: dict[str, sc.SceneSet]) -> None:
    for scene in every_scene(splits):
        objects, relations = sc.parse_caption(scene.caption)
        assert objects == [(o.colour, o.shape) for o in scene.objects]
        assert len(relations) == len(scene.objects) - 1
        for a, b, relation in zip(scene.objects, scene.objects[1:], relations):
            assert (a.row, a.col) < (b.row, b.col)  # reading order
            assert relation == ("left of" if a.row == b.row else "above")
            assert (relation == "left of") == (a.row == b.row and a.col < b.col)
        assert sc.caption_of(scene.objects[::-1]) == scene.caption
        assert set(scene.caption) <= set(sc.CAPTION_WORDS)


def test_a_hand_made_scene_gets_the_documented_caption() -> None:
    scene = sc.scene_from_objects([("square", "blue", 2, 1), ("cross", "red", 0, 0), ("ring", "white", 0, 2)])
    assert " ".join(scene.caption) == "a red cross left of a white ring above a blue square"
    assert sc.parse_caption("a red cross left of a white ring above a blue square") == (
        [("red", "cross"), ("white", "ring"), ("blue", "square")], ["left of", "above"])


def test_caption_words_are_sorted_and_all_used_in_training(splits: dict[str, sc.SceneSet]) -> None:
    assert list(sc.CAPTION_WORDS) == sorted(set(sc.CAPTION_WORDS))
    assert {w for s in splits["train"].scenes for w in s.caption} == set(sc.CAPTION_WORDS)


@pytest.mark.parametrize("caption", ["", "a red", "a red cross left a blue ring", "red cross", "a cross red",
                                     "a red cross above", "a red cross below a blue ring", "a purple ring"])
def test_ungrammatical_captions_raise_saying_what_was_expected(caption: str) -> None:
    with pytest.raises(ValueError, match=r"ungrammatical caption .*expected .*; got"):
        sc.parse_caption(caption.split())


def test_word_objects_and_word_boxes_point_at_the_named_object(splits: dict[str, sc.SceneSet]) -> None:
    for scene in every_scene(splits):
        assert len(scene.word_objects) == len(scene.word_boxes) == len(scene.caption)
        named = []
        for word, index, box in zip(scene.caption, scene.word_objects, scene.word_boxes):
            if word in sc.COLOURS or word in sc.SHAPES:
                obj = scene.objects[index]
                assert word in (obj.colour, obj.shape)
                assert box == obj.box
                named.append(index)
            else:
                assert index is None and box is None
        # each object is named by exactly its colour word then its shape word, in order
        assert named == [i for i in range(len(scene.objects)) for _ in range(2)]


def test_held_out_pairs_appear_only_in_the_generalisation_split(splits: dict[str, sc.SceneSet]) -> None:
    def pairs(scene: sc.Scene) -> set[tuple[str, str]]:
        return {(o.colour, o.shape) for o in scene.objects}

    assert len(sc.HELD_OUT_PAIRS) == 3
    for name in ("train", "valid", "test"):
        assert all(not pairs(s) & sc.HELD_OUT_PAIRS for s in splits[name].scenes)
    assert all(pairs(s) & sc.HELD_OUT_PAIRS for s in splits["generalisation"].scenes)
    assert {p for s in splits["generalisation"].scenes for p in pairs(s)} >= sc.HELD_OUT_PAIRS
    seen = {p for s in splits["train"].scenes for p in pairs(s)}  # every other pair is trained on
    assert seen == {(c, s) for c in sc.COLOURS for s in sc.SHAPES} - sc.HELD_OUT_PAIRS


def test_no_evaluation_scene_is_repeated_or_appears_in_train(splits: dict[str, sc.SceneSet]) -> None:
    evaluation = [s for name in ("valid", "test", "generalisation") for s in splits[name].scenes]
    assert len(set(evaluation)) == len(evaluation)
    assert not set(evaluation) & set(splits["train"].scenes)


def test_random_scene_obeys_its_arguments() -> None:
    rng = np.random.default_rng(5)
    assert len(sc.random_scene(rng, n_objects=9).objects) == 9
    required = sc.random_scenes(rng, 200, held_out="require")
    assert all({(o.colour, o.shape) for o in s.objects} & sc.HELD_OUT_PAIRS for s in required)
    allowed = sc.random_scenes(rng, 400, n_objects=2, held_out="allow")
    assert {len(s.objects) for s in allowed} == {2}
    assert any({(o.colour, o.shape) for o in s.objects} & sc.HELD_OUT_PAIRS for s in allowed)
    with pytest.raises(ValueError, match="held_out must be .*; got 'never'"):
        sc.random_scene(rng, held_out="never")
    with pytest.raises(ValueError, match=r"n_objects must be .*1\.\.9; got 10"):
        sc.random_scene(rng, n_objects=10)


def pooled(stencil: np.ndarray, dx: int, dy: int) -> np.ndarray:
    """The stencil at jitter (dx, dy) in a 16x16 cell, averaged over its four 8x8 patches: (2, 2)."""
    canvas = np.zeros((sc.CELL, sc.CELL))
    canvas[dy:dy + sc.OBJECT_SIZE, dx:dx + sc.OBJECT_SIZE] = stencil
    return canvas.reshape(2, 8, 2, 8).mean(axis=(1, 3))


def test_shapes_differ_even_averaged_over_8x8_patches_at_every_jitter() -> None:
    jitters = range(sc.MAX_JITTER + 1)
    for a, b in itertools.combinations(sc.SHAPES, 2):
        gap = min(np.abs(pooled(sc.shape_stencil(a), dx, dy) - pooled(sc.shape_stencil(b), dx, dy)).max()
                  for dx in jitters for dy in jitters)
        assert gap >= 3 / 64, f"{a} and {b} differ by only {gap * 64:.0f} pixels in some 8x8 patch"


def test_stencils_are_12x12_bool_and_the_ring_is_hollow() -> None:
    for shape in sc.SHAPES:
        stencil = sc.shape_stencil(shape)
        assert stencil.shape == (sc.OBJECT_SIZE, sc.OBJECT_SIZE) and stencil.dtype == bool
    ring = sc.shape_stencil("ring")
    assert not ring[4:8, 4:8].any()  # the hole
    assert ring[:4, 4:8].all() and ring[8:, 4:8].all() and ring[4:8, :4].all() and ring[4:8, 8:].all()
    assert sc.shape_stencil("square").all()
    with pytest.raises(ValueError, match="unknown shape 'circle': expected one of square, ring"):
        sc.shape_stencil("circle")


@pytest.mark.parametrize("specs, message", [
    ([("ring", "purple", 0, 0)], r"unknown colour 'purple': expected one of red, green, blue, yellow, white"),
    ([("circle", "red", 0, 0)], r"unknown shape 'circle': expected one of square, ring, cross, triangle, diamond"),
    ([("ring", "red", 1, 1), ("cross", "blue", 1, 1)], r"objects would overlap: cell \(1, 1\) is used twice"),
    ([("ring", "red", 3, 0)], r"cell \(row, col\) must have both in 0\.\.2; got \(3, 0\)"),
    ([("ring", "red", 0, -1)], r"cell \(row, col\) must have both in 0\.\.2; got \(0, -1\)"),
    ([("ring", "red", 0, 0, (5, 0))], r"jitter must be \(dx, dy\) with each in 0\.\.4 pixels; got \(5, 0\)"),
    ([], r"a scene holds 1 to 9 objects \(one per cell\); got 0"),
    ([("ring", "red", i % 3, i // 3) for i in range(9)] + [("ring", "red", 0, 0)], r"1 to 9 objects.*; got 10"),
    ([("ring", "red", 0)], r"each object must be \(shape, colour, row, col\[, jitter\]\); got \('ring', 'red', 0\)"),
])
def test_bad_objects_raise_naming_expected_and_actual(specs: list[tuple], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        sc.scene_from_objects(specs)


def test_bad_render_and_split_arguments_raise() -> None:
    with pytest.raises(ValueError, match="render needs Scene objects .*; got a tuple"):
        sc.render([("ring", "red", 0, 0)], seed=0)
    with pytest.raises(ValueError, match="split sizes must be ints >= 0; got 'test': -1"):
        sc.make_splits(sizes={"test": -1})
