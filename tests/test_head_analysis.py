"""head_analysis (lesson 08): the split-wide head measures (cross-attention of a whole split, entropy per head,
where heads look, teacher-forced exact match, silencing) against one-sentence-at-a-time definitions, on a small
random model."""
from __future__ import annotations

import pytest
import torch

import course_lib as cl
from course_lib import head_analysis, metrics
from course_lib import toy_language as tl
from course_lib.data import ParallelData, Vocabulary, build_vocabularies

pytestmark = pytest.mark.usefixtures("single_thread")


# --- every head on a whole split: corpus_cross_attention, head_entropy, where_heads_look ----------------------
# "the farmers laughed behind this market -> dorva li merka nu pos riso ta" and a short one, on a random model
EXAMPLES = [tl.Example(("the", "farmers", "laughed", "behind", "this", "market"),
                       ("dorva", "li", "merka", "nu", "pos", "riso", "ta"),
                       ((1, 0), (1, 1), (5, 2), (4, 3), (3, 4), (2, 5), (2, 6))),
            tl.Example(("a", "cat", "runs"), ("miru", "kosa"), ((1, 0), (2, 1)))]


@pytest.fixture(scope="module")
def toy() -> tuple[cl.Seq2SeqTransformer, ParallelData]:
    splits = tl.make_splits(seed=0, sizes={"train": 300, "valid": 0, "test": 0, "generalisation": 0})
    src_vocab, tgt_vocab = build_vocabularies(splits["train"] + EXAMPLES)
    data = ParallelData(splits["train"][:37] + EXAMPLES, src_vocab, tgt_vocab)
    torch.manual_seed(0)
    model = cl.Seq2SeqTransformer(cl.TransformerConfig(len(src_vocab), len(tgt_vocab), d_model=16, n_heads=4,
                                                       n_encoder_layers=1, n_decoder_layers=2, d_ff=32)).eval()
    return model, data


def test_corpus_cross_attention_covers_every_example_once_and_matches_one_at_a_time(toy) -> None:
    model, data = toy
    attention = head_analysis.corpus_cross_attention(model, data, batch_size=8)
    indices = torch.cat([index for index, _ in attention])
    assert sorted(indices.tolist()) == list(range(len(data)))
    for index, cross in attention:
        for row, i in enumerate(index.tolist()):
            one = data.batch([i])
            with torch.no_grad():
                _, maps = model.forward_with_attention(one.src_ids, one.tgt_in)
            alone = torch.stack(maps.decoder_cross, dim=1)[0]  # [L, H, T_i, S_i]
            t, s = alone.shape[-2:]
            torch.testing.assert_close(cross[row, :, :, :t, :s], alone)
            assert not cross[row, :, :, :t, s:].any()  # padded source columns get nothing


def test_head_entropy_averages_word_rows_and_eos_rows_apart(toy) -> None:
    model, data = toy
    result = head_analysis.head_entropy(head_analysis.corpus_cross_attention(model, data, batch_size=8), data)
    words, eos = [], []  # one sentence at a time, no padding anywhere: the plain definition
    for i in range(len(data)):
        one = data.batch([i])
        with torch.no_grad():
            _, maps = model.forward_with_attention(one.src_ids, one.tgt_in)
        rows = metrics.attention_entropy(torch.stack(maps.decoder_cross)[:, 0], normalise=True)  # [L, H, T_i]
        words.append(rows[..., :-1])
        eos.append(rows[..., -1])
    torch.testing.assert_close(result.words, torch.cat(words, dim=-1).mean(dim=-1))
    torch.testing.assert_close(result.eos, torch.stack(eos, dim=-1).mean(dim=-1))


def test_where_heads_look_sorts_each_row_into_the_first_bin_that_fits() -> None:
    data = ParallelData(EXAMPLES[:1], Vocabulary(EXAMPLES[0].source), Vocabulary(EXAMPLES[0].target))
    gold = [1, 1, 5, 4, 3, 2, 2]  # the source word of each target word
    looks = {  # head -> the source word each of the 7 word rows (and the <eos> row) looks at
        0: gold + [0],  # always the gold word
        1: [0, 1, 1, 5, 4, 3, 2, 0],  # the word just written, except rows 1 and 6 (also gold) and row 0 ('the')
        2: [5] * 8,  # 'market', the last word: gold at row 2, just written at row 3, next at row 1
        3: [2] * 8,  # 'laughed': next to write at row 4, gold at rows 5 and 6, elsewhere before
    }
    cross = torch.zeros(1, 1, 4, 8, 6)  # [B, L, H, T, S]
    for head, columns in looks.items():
        cross[0, 0, head, torch.arange(8), torch.tensor(columns)] = 1.0
    shares = head_analysis.where_heads_look([(torch.tensor([0]), cross)], data)  # [L, H, bins]
    assert head_analysis.LOOK_BINS[:2] == ("the gold word", "the word just written")
    expected = torch.tensor([[7, 0, 0, 0, 0, 0], [2, 4, 0, 1, 0, 0], [1, 1, 1, 0, 4, 0], [2, 0, 1, 0, 0, 4]]) / 7
    torch.testing.assert_close(shares[0], expected)


def test_where_heads_look_refuses_an_empty_split() -> None:
    data = ParallelData(EXAMPLES, Vocabulary(EXAMPLES[0].source + EXAMPLES[1].source),
                        Vocabulary(EXAMPLES[0].target + EXAMPLES[1].target))
    with pytest.raises(ValueError, match="attention is empty"):
        head_analysis.where_heads_look([], data)


# --- teacher_forced_exact_match, silencing_scores -----------------------------------------------------------
def test_teacher_forced_exact_match_counts_sentences_whose_every_prediction_is_right(toy) -> None:
    model, data = toy
    expected = 0
    for i in range(len(data)):  # one sentence at a time: no padding to get wrong
        one = data.batch([i])
        with torch.no_grad():
            expected += bool((model(one.src_ids, one.tgt_in).argmax(-1) == one.tgt_out).all())
    assert head_analysis.teacher_forced_exact_match(model, data, batch_size=8) == expected / len(data)


def test_teacher_forced_exact_match_equals_greedy_exact_match_on_a_model_that_knows_its_targets(toy) -> None:
    """Make the targets the model's own greedy translations (those that end): the shortcut must score 1."""
    model, data = toy
    saved = model.output.bias.clone()
    with torch.no_grad():
        model.output.bias[data.tgt_vocab.eos_id] += 1.0  # most translations end, after a few words
        model.output.bias[[data.tgt_vocab.pad_id, data.tgt_vocab.bos_id]] = -100.0  # which decode() would drop
    try:
        predictions = metrics.translate_data(model, data, max_new_tokens=60)
        ended = [0 < len(p) < 60 for p in predictions]  # <eos> written before the limit
        own = [tl.Example(e.source, tuple(p), ()) for e, p, end in zip(data.examples, predictions, ended) if end]
        own_data = ParallelData(own, data.src_vocab, data.tgt_vocab)
        assert len(own) > 20
        assert head_analysis.teacher_forced_exact_match(model, own_data) == 1.0
        assert head_analysis.teacher_forced_exact_match(model, data) == metrics.exact_match(
            predictions, [list(e.target) for e in data.examples]) == 0.0
    finally:
        with torch.no_grad():
            model.output.bias.copy_(saved)


def test_silencing_scores_silence_each_head_and_each_layer_and_restore_the_model(toy) -> None:
    model, data = toy
    state = {k: v.clone() for k, v in model.state_dict().items()}
    result = head_analysis.silencing_scores(model, data)
    assert result.per_head.shape == (2, 4) and result.per_layer.shape == (2,)
    assert result.nothing == head_analysis.teacher_forced_exact_match(model, data)
    with metrics.ablated_heads(model, [(1, 2)]):
        assert result.per_head[1, 2].item() == pytest.approx(head_analysis.teacher_forced_exact_match(model, data))
    with metrics.ablated_heads(model, [(0, h) for h in range(4)]):
        assert result.per_layer[0].item() == pytest.approx(head_analysis.teacher_forced_exact_match(model, data))
    for name, value in model.state_dict().items():
        assert torch.equal(value, state[name]), name
