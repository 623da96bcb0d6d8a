"""Vocabularies, the padding collate and the batching of course_lib.data."""
from __future__ import annotations

import pytest
import torch

from course_lib import TransformerConfig
from course_lib import toy_language as tl
from course_lib.data import (
    BOS_ID,
    EOS_ID,
    PAD_ID,
    UNK_ID,
    Batch,
    ParallelData,
    Vocabulary,
    build_vocabularies,
    collate,
    length_repeats,
)

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def examples() -> list[tl.Example]:
    return tl.make_splits(seed=0, sizes={"train": 500, "valid": 0, "test": 0, "generalisation": 0})["train"]


@pytest.fixture(scope="module")
def data(examples: list[tl.Example]) -> ParallelData:
    return ParallelData(examples, *build_vocabularies(examples))


def test_special_ids_come_first_and_pad_matches_the_model() -> None:
    vocab = Vocabulary(["b", "a", "a"])
    assert vocab.tokens == ("<pad>", "<bos>", "<eos>", "<unk>", "a", "b")
    assert (vocab.pad_id, vocab.bos_id, vocab.eos_id, vocab.unk_id) == (PAD_ID, BOS_ID, EOS_ID, UNK_ID) == (0, 1, 2, 3)
    assert vocab.pad_id == TransformerConfig(src_vocab_size=6, tgt_vocab_size=6).pad_id


def test_vocabulary_round_trip(examples: list[tl.Example]) -> None:
    src_vocab, tgt_vocab = build_vocabularies(examples)
    for example in examples[:100]:
        assert src_vocab.decode(src_vocab.encode(example.source)) == list(example.source)
        ids = tgt_vocab.encode(example.target, add_bos=True, add_eos=True)
        assert ids[0] == BOS_ID and ids[-1] == EOS_ID
        assert tgt_vocab.decode(ids) == list(example.target)
    assert len(tgt_vocab) == 4 + len({w for e in examples for w in e.target})


def test_encode_splits_a_string_on_whitespace() -> None:
    vocab = Vocabulary(["the", "cat"])
    assert vocab.encode("the cat") == vocab.encode(["the", "cat"]) == [vocab.index["the"], vocab.index["cat"]]


def test_unknown_words_are_named_in_the_error() -> None:
    vocab = Vocabulary(["the", "cat"])
    with pytest.raises(ValueError, match=r"unknown word\(s\) \['zebra', 'saw', 'dog'\]: .*map_unknown=True"):
        vocab.encode("the zebra saw the dog")
    assert vocab.encode("the zebra", map_unknown=True) == [vocab.index["the"], UNK_ID]


def test_decode_stops_at_eos_and_drops_padding_unless_asked() -> None:
    vocab = Vocabulary(["x", "y"])
    x, y = vocab.index["x"], vocab.index["y"]
    ids = torch.tensor([BOS_ID, x, y, EOS_ID, x, PAD_ID])
    assert vocab.decode(ids) == ["x", "y"]
    assert vocab.decode(ids, keep_special=True) == ["<bos>", "x", "y", "<eos>", "x", "<pad>"]
    with pytest.raises(ValueError, match="outside this vocabulary"):
        vocab.decode([len(vocab)])


def test_collate_pads_and_places_bos_and_eos() -> None:
    batch = collate([([5, 6, 7], [8]), ([9], [10, 11, 12])])
    assert batch.src_ids.tolist() == [[5, 6, 7], [9, PAD_ID, PAD_ID]]
    assert batch.tgt_in.tolist() == [[BOS_ID, 8, PAD_ID, PAD_ID], [BOS_ID, 10, 11, 12]]
    assert batch.tgt_out.tolist() == [[8, EOS_ID, PAD_ID, PAD_ID], [10, 11, 12, EOS_ID]]
    assert batch.src_ids.dtype == torch.long and len(batch) == 2 and batch.n_target_tokens() == 6


def test_collate_decoder_input_is_output_shifted_right() -> None:
    batch = collate([([4], [7, 8, 9]), ([4, 5], [6])], pad_id=0, bos_id=1, eos_id=2)
    words = batch.tgt_in[:, 1:] != 0  # the target words in the decoder input
    assert torch.equal(batch.tgt_in[:, 1:][words], batch.tgt_out[:, :-1][words]) and int(words.sum()) == 4
    assert torch.equal(batch.tgt_in != 0, batch.tgt_out != 0)  # same length: <bos> + words vs words + <eos>


def test_collate_rejects_empty_input() -> None:
    with pytest.raises(ValueError, match="at least one"):
        collate([])
    with pytest.raises(ValueError, match="empty source"):
        collate([([], [5])])


def test_parallel_data_matches_collate(data: ParallelData) -> None:
    src_vocab, tgt_vocab = data.src_vocab, data.tgt_vocab
    batch = data.batch([3, 1, 4])
    pairs = [(src_vocab.encode(data.examples[i].source), tgt_vocab.encode(data.examples[i].target)) for i in (3, 1, 4)]
    expected = collate(pairs)
    for name in ("src_ids", "tgt_in", "tgt_out"):
        assert torch.equal(getattr(batch, name), getattr(expected, name)), name


def test_parallel_data_refuses_unknown_words(examples: list[tl.Example]) -> None:
    src_vocab, tgt_vocab = build_vocabularies(examples[:5])
    with pytest.raises(ValueError, match="unknown word"):
        ParallelData(examples, src_vocab, tgt_vocab)


@pytest.mark.parametrize("batch_size, shuffle, bucket", [(64, True, True), (7, True, False), (50, False, True),
                                                         (1000, True, True)])
def test_an_epoch_covers_every_example_once(data: ParallelData, batch_size: int, shuffle: bool, bucket: bool) -> None:
    seen = []
    for batch in data.batches(batch_size, shuffle=shuffle, bucket=bucket, generator=torch.Generator().manual_seed(1)):
        assert 1 <= len(batch) <= batch_size
        for row in range(len(batch)):
            source, target = data.src_vocab.decode(batch.src_ids[row]), data.tgt_vocab.decode(batch.tgt_out[row])
            seen.append((tuple(source), tuple(target)))
    assert sorted(seen) == sorted((e.source, e.target) for e in data.examples)


def test_repeats_show_examples_that_many_times(data: ParallelData) -> None:
    repeats = torch.zeros(len(data), dtype=torch.long)
    repeats[:3] = torch.tensor([1, 2, 3])
    rows = [data.src_vocab.decode(r) for b in data.batches(4, repeats=repeats) for r in b.src_ids]
    assert sorted(map(tuple, rows)) == sorted([data.examples[0].source] + [data.examples[1].source] * 2
                                              + [data.examples[2].source] * 3)
    with pytest.raises(ValueError, match="one count >= 0 per example"):
        next(data.batches(4, repeats=torch.ones(3, dtype=torch.long)))


def test_length_repeats_grow_with_the_square_of_the_length() -> None:
    assert length_repeats(torch.tensor([3, 7, 8, 14, 21]), reference=7).tolist() == [1, 1, 2, 4, 9]
    assert length_repeats(torch.tensor([3, 30]), reference=7, power=0).tolist() == [1, 1]


def test_bucketing_cuts_padding(data: ParallelData) -> None:
    def padding(bucket: bool) -> float:
        batches = list(data.batches(32, bucket=bucket, generator=torch.Generator().manual_seed(0)))
        return sum(int((b.src_ids == PAD_ID).sum()) for b in batches) / sum(b.src_ids.numel() for b in batches)

    assert padding(bucket=True) < 0.1 < padding(bucket=False)


def test_batch_to_moves_every_tensor() -> None:
    batch = collate([([5], [6])]).to("cpu")
    assert isinstance(batch, Batch) and {t.device.type for t in (batch.src_ids, batch.tgt_in, batch.tgt_out)} == {"cpu"}
