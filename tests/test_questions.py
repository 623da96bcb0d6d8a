"""Lesson 11's questions about lesson 10's scenes (course_lib.questions): every question names its object uniquely
and its answer is right for the scene, the data is seeded, batches trim padding and keep the features aligned."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from course_lib import questions as qs
from course_lib import scenes as sc
from course_lib.data import PAD_ID, UNK_ID
from course_lib.vision import PatchEncoder

SIZES = {"train": 64, "valid": 16, "test": 16}


@pytest.fixture(scope="module")
def data() -> dict[str, qs.QAData]:
    return qs.qa_data(0, SIZES)


def small_encoder() -> PatchEncoder:
    torch.manual_seed(0)
    return PatchEncoder(image_size=48, patch_size=8, channels=3, d_image=32, n_heads=4, n_layers=1, d_ff=64)


def some_scenes() -> list[sc.Scene]:
    """Random scenes of every size, and scenes that repeat a shape, a colour, or both."""
    rng = np.random.default_rng(7)
    out = [s for n in range(1, 10) for s in sc.random_scenes(rng, 30, n_objects=n)]
    out += [sc.scene_from_objects([("ring", "red", 0, 0), ("ring", "blue", 1, 1), ("cross", "blue", 2, 2)]),
            sc.scene_from_objects([("ring", "red", 0, 0), ("ring", "red", 0, 1)]),
            sc.scene_from_objects([("square", "white", 1, 2)])]
    return out


# --- one scene's questions -------------------------------------------------------------------------------------
def expected_answer(scene: sc.Scene, question: qs.Question) -> tuple[str, ...]:
    """The answer recomputed from ``scene.objects``; asserts that the question names exactly one object."""
    words, objects = question.words, scene.objects
    if question.kind == "count":
        assert words == ("how", "many", "shapes", "?")
        return (("one", "two", "three", "four", "five", "six", "seven", "eight", "nine")[len(objects) - 1],)
    if question.kind == "colour":
        assert words[:4] == ("what", "colour", "is", "the") and words[5:] == ("?",)
        named = [o for o in objects if o.shape == words[4]]
    elif question.kind == "shape":
        assert words[:4] == ("what", "shape", "is", "the") and words[5:] == ("one", "?")
        named = [o for o in objects if o.colour == words[4]]
    else:
        assert question.kind == "where" and words[:3] == ("where", "is", "the") and words[5:] == ("?",)
        named = [o for o in objects if (o.colour, o.shape) == words[3:5]]
    assert len(named) == 1, (question, scene)  # the name identifies one object
    (obj,) = named
    return {"colour": (obj.colour,), "shape": (obj.shape,),
            "where": (("top", "middle", "bottom")[obj.row], ("left", "centre", "right")[obj.col])}[question.kind]


def test_every_question_names_one_object_and_its_answer_is_right() -> None:
    for scene in some_scenes():
        questions = qs.questions_for(scene)
        for question in questions:
            assert question.answer == expected_answer(scene, question), (question, scene)
        # and every object a name identifies is asked about: nothing unique is left out
        shapes, colours = [o.shape for o in scene.objects], [o.colour for o in scene.objects]
        pairs = [(o.colour, o.shape) for o in scene.objects]
        asked = {kind: [q.words for q in questions if q.kind == kind] for kind in qs.KINDS}
        assert sorted(w[4] for w in asked["colour"]) == sorted(s for s in shapes if shapes.count(s) == 1)
        assert sorted(w[4] for w in asked["shape"]) == sorted(c for c in colours if colours.count(c) == 1)
        assert sorted(w[3:5] for w in asked["where"]) == sorted(p for p in pairs if pairs.count(p) == 1)
        assert len(asked["count"]) == 1


def test_a_repeated_name_is_never_asked_about() -> None:
    scene = sc.scene_from_objects([("ring", "red", 0, 0), ("ring", "blue", 1, 1), ("cross", "blue", 2, 2)])
    words = {" ".join(q.words): q.answer for q in qs.questions_for(scene)}
    assert words == {"what colour is the cross ?": ("blue",), "what shape is the red one ?": ("ring",),
                     "where is the red ring ?": ("top", "left"), "where is the blue ring ?": ("middle", "centre"),
                     "where is the blue cross ?": ("bottom", "right"), "how many shapes ?": ("three",)}
    twins = sc.scene_from_objects([("ring", "red", 0, 0), ("ring", "red", 0, 1)])
    assert [q.kind for q in qs.questions_for(twins)] == ["count"]  # no name tells the two red rings apart


def test_questions_for_refuses_what_is_not_a_scene() -> None:
    with pytest.raises(ValueError, match="scenes.Scene; got a str"):
        qs.questions_for("a red ring")


# --- the data ----------------------------------------------------------------------------------------------------
def test_the_data_is_seeded_and_differs_across_seeds(data) -> None:
    assert set(data) == {"train", "valid", "test"}  # no generalisation split unless asked
    again, other = qs.qa_data(0, SIZES), qs.qa_data(1, SIZES)
    for name, split in data.items():
        assert len(split) == SIZES[name]
        assert split.examples == again[name].examples and torch.equal(split.images, again[name].images)
        assert torch.equal(split.question_ids, again[name].question_ids)
        assert split.examples != other[name].examples
    assert "generalisation" in qs.qa_data(0, {**SIZES, "generalisation": 4})


def test_every_kind_appears_and_every_answer_is_right(data) -> None:
    for split in data.values():
        for scene, example in zip(split.scenes, split.examples):
            question = qs.Question(example.kind, example.question, example.target)
            assert question in qs.questions_for(scene)
            assert example.target == expected_answer(scene, question)
    assert set(data["train"].kinds) == set(qs.KINDS)


def test_the_vocabularies_cover_every_word(data) -> None:
    split = data["train"]
    assert split.src_vocab == qs.question_vocabulary() and split.tgt_vocab == qs.answer_vocabulary()
    for scene in some_scenes():  # every question any scene can be asked, not only those drawn
        for q in qs.questions_for(scene):
            assert all(w in split.src_vocab for w in q.words) and all(w in split.tgt_vocab for w in q.answer), q
    assert not bool((split.question_ids == UNK_ID).any()) and not bool((split.tgt_out == UNK_ID).any())
    for i in (0, 5, 17):
        assert split.src_vocab.decode(split.question_ids[i]) == list(split.examples[i].question)
        assert split.tgt_vocab.decode(split.tgt_out[i]) == list(split.examples[i].target)


def hand_made() -> qs.QAData:
    scenes = [sc.scene_from_objects([("ring", "red", 0, 0)]),
              sc.scene_from_objects([("cross", "blue", 1, 1), ("square", "white", 2, 0)]),
              sc.scene_from_objects([("diamond", "green", 0, 2)]),
              sc.scene_from_objects([("triangle", "yellow", 2, 2)])]
    questions = [qs.Question("colour", ("what", "colour", "is", "the", "ring", "?"), ("red",)),
                 qs.Question("colour", ("what", "colour", "is", "the", "cross", "?"), ("blue",)),
                 qs.Question("count", ("how", "many", "shapes", "?"), ("one",)),
                 qs.Question("where", ("where", "is", "the", "yellow", "triangle", "?"), ("bottom", "right"))]
    return qs.QAData(sc.SceneSet(scenes, sc.render(scenes, 0)), questions, qs.question_vocabulary(),
                     qs.answer_vocabulary())


def test_exact_match_by_kind_on_a_hand_made_case() -> None:
    data = hand_made()
    predictions = [["red"], ["blue", "cross"], ["one"], ["bottom", "left"]]  # an extra word is wrong
    assert qs.exact_match_by_kind(predictions, data) == {"colour": 0.5, "where": 0.0, "count": 1.0, "all": 0.5}
    predictions = [["red"], ["blue"], ["one"], ["right", "bottom"]]  # "all" counts answers, not kinds
    assert qs.exact_match_by_kind(predictions, data) == {"colour": 1.0, "where": 0.0, "count": 1.0, "all": 0.75}
    with pytest.raises(ValueError, match="need one prediction per example: 4; got 3"):
        qs.exact_match_by_kind(predictions[:3], data)


def test_a_batch_needs_features_and_trims_padding() -> None:
    data = hand_made()
    with pytest.raises(ValueError, match=r"encode_images\(encoder\)"):
        data.batch([0, 1])
    encoder = small_encoder().train()
    assert data.encode_images(encoder) is data and encoder.training  # the encoder's mode is left as it was
    with torch.no_grad():
        assert torch.equal(data.features, encoder.eval()(data.images)[0])
    assert data.features.shape == (4, 36, 32) and data.patches == 36
    batch = data.batch([2])  # "how many shapes ?": 4 words, answer "one" + <eos>
    assert batch.src_ids.question_ids.shape == (1, 4) and batch.tgt_in.shape == batch.tgt_out.shape == (1, 2)
    batch = data.batch([2, 3])  # 4 and 6 words; answers of 1 and 2 words
    assert batch.src_ids.question_ids.shape == (2, 6) and batch.tgt_in.shape == (2, 3)
    assert batch.src_ids.question_ids[0, 4:].tolist() == [PAD_ID, PAD_ID] and bool((batch.tgt_out[1] != 0).all())
    assert torch.equal(batch.src_ids.image, data.features[[2, 3]]) and batch.src_ids.shape == (2, 6)
    assert len(batch) == 2 and batch.n_source_tokens() == 2 * 36 + 4 + 6
    with pytest.raises(ValueError, match="non-empty 1-D"):
        data.batch([])
    with pytest.raises(ValueError, match="batch_size must be >= 1; got 0"):
        next(data.batches(0))


def test_an_epoch_holds_every_example_once(data) -> None:
    split = data["valid"].subset(range(16)).encode_images(small_encoder())
    seen = [row.tolist() for b in split.batches(5, generator=torch.Generator().manual_seed(0))
            for row in b.src_ids.image[:, 0, :3]]
    assert sorted(seen) == sorted(split.features[:, 0, :3].tolist())


def test_a_subset_keeps_features_and_examples_aligned(data) -> None:
    split = qs.qa_data(0, {"train": 8, "valid": 12, "test": 4})["valid"].encode_images(small_encoder())
    picked = [9, 2, 5, 11]
    sub = split.subset(picked)
    assert len(sub) == 4 and sub.examples == [split.examples[i] for i in picked]
    assert sub.scenes == [split.scenes[i] for i in picked] and torch.equal(sub.images, split.images[picked])
    assert torch.equal(sub.features, split.features[picked])
    whole, part = split.batch(picked), sub.batch(range(4))
    for a, b in ((whole.src_ids.image, part.src_ids.image), (whole.src_ids.question_ids, part.src_ids.question_ids),
                 (whole.tgt_in, part.tgt_in), (whole.tgt_out, part.tgt_out)):
        assert torch.equal(a, b)
    assert split.subset([0]).features.shape == (1, 36, 32)
    assert qs.qa_data(0, {"train": 8, "valid": 4, "test": 4})["valid"].subset([1, 0]).features is None


def test_qadata_refuses_questions_that_do_not_match_the_scenes() -> None:
    scene_set = sc.SceneSet([sc.scene_from_objects([("ring", "red", 0, 0)])], np.zeros((1, 3, 48, 48), np.float32))
    with pytest.raises(ValueError, match="1 scenes and 0 questions"):
        qs.QAData(scene_set, [], qs.question_vocabulary(), qs.answer_vocabulary())
