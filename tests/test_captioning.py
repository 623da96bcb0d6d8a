"""Lesson 10's data and training plumbing: scenes as batches for training.train, save and load."""
from __future__ import annotations

import pytest
import torch

from course_lib import captioning as cap
from course_lib.metrics import translate_data
from course_lib.training import TrainConfig, train

SIZES = {"train": 64, "valid": 16, "test": 16, "generalisation": 8}


@pytest.fixture(scope="module")
def data() -> dict[str, cap.CaptionData]:
    return cap.caption_data(0, SIZES)


def test_a_batch_holds_images_and_captions_with_bos_and_eos(data) -> None:
    split = data["valid"]
    batch = split.batch([0, 3])
    assert batch.src_ids.shape == (2, 3, 48, 48) and batch.src_ids.dtype == torch.float32
    t = int(split.tgt_lengths[[0, 3]].max())
    assert batch.tgt_in.shape == batch.tgt_out.shape == (2, t)
    words = split.tgt_vocab.decode(batch.tgt_out[0])  # decode stops at <eos>
    assert tuple(words) == split.scenes[0].caption
    assert batch.tgt_in[0, 0] == split.tgt_vocab.bos_id
    assert batch.n_source_tokens() == 2 * 36  # each image is read as 36 patches


def test_an_epoch_shows_every_image_once(data) -> None:
    seen = torch.cat([b.tgt_out[:, 0] * 0 + i for i, b in enumerate(data["train"].batches(10))])
    assert len(seen) == len(data["train"])
    ids = [id_ for b in data["train"].batches(10, shuffle=False) for id_ in b.src_ids[:, 0, 0, 0].tolist()]
    assert ids == data["train"].images[:, 0, 0, 0].tolist()


def test_training_runs_on_captions_and_decodes_them(data) -> None:
    torch.manual_seed(0)
    model = cap.Captioner(cap.captioner_config(data["train"].tgt_vocab))
    history = train(model, data["train"], data["valid"], TrainConfig(max_steps=6, eval_every=3, batch_size=16,
                                                                      repeat_long_from=None, warmup_steps=2),
                    progress=False)
    assert history.steps == 6 and len(history.eval_exact_match) == 2
    # 36 patches per image plus at most 14 caption tokens: patches are counted, not pixels (6 912 per image)
    assert 6 * 16 * 36 < history.tokens <= 6 * 16 * (36 + 14)
    predictions = translate_data(model, data["test"])
    assert len(predictions) == len(data["test"]) and all(isinstance(p, list) for p in predictions)


def test_a_saved_captioner_loads_with_the_same_outputs(data, tmp_path) -> None:
    torch.manual_seed(0)
    vocab = data["train"].tgt_vocab
    trained = cap.TrainedCaptioner(cap.Captioner(cap.captioner_config(vocab)).eval(), vocab, {"seed": 0})
    path = cap.save_captioner(trained, tmp_path / "c.pt")
    loaded = cap.load_captioner(path)
    images = data["test"].images[:4]
    assert loaded.vocab == vocab and loaded.info == {"seed": 0}
    assert torch.equal(loaded.model.greedy_decode(images), trained.model.greedy_decode(images))
    assert not path.with_suffix(".partial").exists()


def test_grounding_scores_a_head_by_where_its_weight_peaks() -> None:
    """Two images, 2 heads, 3 caption rows, 36 patches: head 0 always looks at the object, head 1 never."""
    boxes = [[None, (18, 2, 30, 14), (18, 2, 30, 14)], [None, (0, 32, 12, 44), None]]  # objects in cells (0,1), (2,0)
    weights = torch.full((2, 2, 3, 36), 0.01)
    on_object = {(0, 1): 1 * 6 + 3, (0, 2): 0 * 6 + 2, (1, 1): 5 * 6 + 1}  # a patch that holds object pixels
    for (b, t), patch in on_object.items():
        weights[b, 0, t, patch] = 1.0
        weights[b, 1, t, 35] = 1.0  # the bottom-right patch: on no object here
    hits, where = cap.grounded_words(weights, boxes, patch_size=8)
    assert where.tolist() == [[0, 1], [0, 2], [1, 1]]
    assert hits.tolist() == [[True, True, True], [False, False, False]]


def test_a_patch_that_only_touches_a_box_corner_counts_and_a_neighbour_does_not() -> None:
    boxes = [[(18, 2, 30, 14)]]  # x 18..29, y 2..13: patches (0,2),(0,3),(1,2),(1,3)
    for patch, expected in ((0 * 6 + 2, True), (1 * 6 + 3, True), (0 * 6 + 4, False), (2 * 6 + 2, False)):
        weights = torch.zeros(1, 1, 1, 36)
        weights[0, 0, 0, patch] = 1.0
        assert cap.grounded_words(weights, boxes, 8)[0].item() is expected, patch


def test_grounding_by_head_is_a_share_per_layer_and_head(data) -> None:
    torch.manual_seed(0)
    model = cap.Captioner(cap.captioner_config(data["train"].tgt_vocab)).eval()
    scores = cap.grounding_by_head(model, data["valid"])
    assert scores.shape == (2, 4) and bool(((scores >= 0) & (scores <= 1)).all())


def test_grounding_refuses_weights_of_the_wrong_shape() -> None:
    with pytest.raises(ValueError, match=r"\[B, H, T, N\]"):
        cap.grounded_words(torch.zeros(2, 3, 36), [[None]] * 2, 8)
