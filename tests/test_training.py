"""The training loop, the translation metrics, the alignment error rate, and saving/loading a translator."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from course_lib import AttentionMaps, Seq2SeqTransformer, TransformerConfig, training
from course_lib import toy_language as tl
from course_lib.data import ParallelData, build_vocabularies
from course_lib.metrics import (
    alignment_error_rate,
    alignment_scores,
    argmax_links,
    bleu,
    evaluate,
    exact_match,
    token_accuracy,
    translate_data,
)
from course_lib.training import History, TrainConfig, Translator, learning_rate, load_translator, save_translator

pytestmark = pytest.mark.usefixtures("single_thread")  # tiny ops: threads only add waiting on a busy machine
SIZES = {"train": 400, "valid": 40, "test": 40, "generalisation": 10}


@pytest.fixture(scope="module")
def data() -> dict[str, ParallelData]:
    return training.toy_data(seed=0, sizes=SIZES)[0]


def tiny_model(data: ParallelData, seed: int = 0) -> Seq2SeqTransformer:
    torch.manual_seed(seed)
    config = TransformerConfig(len(data.src_vocab), len(data.tgt_vocab), d_model=32, n_heads=2, n_encoder_layers=1,
                               n_decoder_layers=2, d_ff=64)
    return Seq2SeqTransformer(config)


# --- translation metrics on hand-made predictions -------------------------------------------------
REFERENCES = [["a", "b", "c"], ["d", "e"], ["f"], ["g", "h"]]


def test_exact_match_counts_whole_sentences() -> None:
    predictions = [["a", "b", "c"], ["d"], ["f", "x"], ["g", "h"]]
    assert exact_match(predictions, REFERENCES) == 0.5
    assert exact_match(REFERENCES, REFERENCES) == 1.0


def test_token_accuracy_compares_positions_and_the_end() -> None:
    # 3 + 1 + 1 + 2 positions, each reference + <eos>: 4 + 3 + 2 + 3 = 12
    predictions = [["a", "x", "c"], ["d"], ["f", "x"], ["h", "g"]]
    # a,c,<eos> | d | f | nothing  -> 3 + 1 + 1 + 1 (the <eos> of the last one) = 6
    assert token_accuracy(predictions, REFERENCES) == pytest.approx(6 / 12)
    assert token_accuracy(REFERENCES, REFERENCES) == 1.0


def test_bleu_is_100_for_perfect_translations_and_lower_otherwise() -> None:
    references = [["the", "cat", "saw", "a", "dog", "today"]] * 3
    assert bleu(references, references) == pytest.approx(100.0)
    assert 0 < bleu([["the", "cat", "saw", "a", "bird", "today"]] * 3, references) < 100


def test_metrics_refuse_mismatched_or_string_input() -> None:
    with pytest.raises(ValueError, match="2 predictions for 4 references"):
        exact_match(REFERENCES[:2], REFERENCES)
    with pytest.raises(ValueError, match="lists of words"):
        token_accuracy(["a b c"], ["a b c"])


# --- alignment error rate ---------------------------------------------------------------------------
def test_aer_of_perfect_disjoint_and_partial_alignments() -> None:
    gold = [(0, 0), (2, 1), (1, 2)]
    assert alignment_error_rate(gold, gold) == 0.0
    assert alignment_error_rate([(1, 0), (0, 1)], gold) == 1.0
    assert alignment_error_rate([(0, 0), (1, 1)], gold) == pytest.approx(1 - 2 * 1 / 5)  # 0.6
    with pytest.raises(ValueError, match="undefined"):
        alignment_error_rate([], [])


def test_argmax_links_pick_the_most_attended_source_word() -> None:
    weights = torch.tensor([[0.1, 0.7, 0.2], [0.6, 0.3, 0.1]])  # [T=2, S=3]
    assert argmax_links(weights) == [(1, 0), (0, 1)]


class FixedAttention(nn.Module):
    """Stands in for a model; its cross-attention is built from the gold alignment of each source.

    Layer 0: head 0 attends to the gold source word, head 1 to the next source word (always wrong).
    Layer 1: head 0 is gold at even target positions and wrong at odd ones, head 1 is uniform.
    The row that predicts <eos> attends to the last source word; padded rows attend to nothing.
    """

    def __init__(self, data: ParallelData) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))
        self.examples = {tuple(e.source): e for e in data.examples}
        self.src_vocab = data.src_vocab

    def forward_with_attention(self, src_ids: torch.Tensor, tgt_ids: torch.Tensor) -> tuple[None, AttentionMaps]:
        b, s, t = src_ids.shape[0], src_ids.shape[1], tgt_ids.shape[1]
        gold, wrong, uniform = torch.zeros(b, t, s), torch.zeros(b, t, s), torch.zeros(b, t, s)
        for row in range(b):
            example = self.examples[tuple(self.src_vocab.decode(src_ids[row]))]
            n_src, n_tgt = len(example.source), len(example.target)
            for si, ti in example.alignment:
                gold[row, ti, si] = 1.0
                wrong[row, ti, (si + 1) % n_src] = 1.0
            gold[row, n_tgt, n_src - 1] = wrong[row, n_tgt, n_src - 1] = 1.0  # the <eos> row
            uniform[row, : n_tgt + 1, :n_src] = 1.0 / n_src
        mixed = torch.where((torch.arange(t) % 2 == 0)[None, :, None], gold, wrong)
        return None, AttentionMaps(decoder_cross=[torch.stack([gold, wrong], 1), torch.stack([mixed, uniform], 1)])


def test_alignment_scores_per_head_on_made_up_attention(data: dict[str, ParallelData]) -> None:
    valid = data["valid"]
    scores = alignment_scores(FixedAttention(valid), valid, batch_size=7)
    n_words = sum(len(e.target) for e in valid.examples)
    even_words = sum((len(e.target) + 1) // 2 for e in valid.examples)
    first_word = sum(s == 0 for e in valid.examples for s, _ in e.alignment)  # uniform: argmax is index 0
    expected = torch.tensor([[0.0, 1.0], [1 - even_words / n_words, 1 - first_word / n_words]], dtype=torch.float64)
    torch.testing.assert_close(scores.per_head, expected)
    assert scores.best_head() == (0, 0) and scores.per_layer.shape == (2,)


def test_alignment_scores_match_the_aer_definition(data: dict[str, ParallelData]) -> None:
    """The vectorised corpus AER equals AER of the argmax links of every sentence, pooled."""
    valid, model = data["valid"], tiny_model(data["train"], seed=1).eval()
    scores = alignment_scores(model, valid, batch_size=16)
    with torch.no_grad():
        _, maps = model.forward_with_attention(valid.src_ids, valid.tgt_in)
    for layer, cross in enumerate(maps.decoder_cross):  # [N, H, T, S]
        for head in range(cross.shape[1]):
            predicted, gold = [], []
            for i, example in enumerate(valid.examples):
                weights = cross[i, head, : len(example.target), : len(example.source)]
                predicted += [(i, s, t) for s, t in argmax_links(weights)]
                gold += [(i, s, t) for s, t in example.alignment]
            assert scores.per_head[layer, head].item() == pytest.approx(alignment_error_rate(predicted, gold))


# --- the training loop ---------------------------------------------------------------------------------
def test_learning_rate_warms_up_then_decays_to_zero() -> None:
    config = TrainConfig(lr=1e-3, warmup_steps=10)
    assert learning_rate(config, 0, 0.0) == pytest.approx(1e-4)
    assert learning_rate(config, 9, 0.0) == pytest.approx(1e-3)
    assert learning_rate(config, 50, 0.5) == pytest.approx(5e-4)
    assert learning_rate(config, 99, 1.0) == pytest.approx(0.0)


def test_train_config_checks_its_values() -> None:
    with pytest.raises(ValueError, match="batch_size"):
        TrainConfig(batch_size=0)
    with pytest.raises(ValueError, match="time_budget_s"):
        TrainConfig(time_budget_s=-1)


def test_a_short_training_run_lowers_the_loss(data: dict[str, ParallelData]) -> None:
    model = tiny_model(data["train"])
    calls: list[int] = []
    config = TrainConfig(batch_size=32, lr=1e-2, warmup_steps=10, max_steps=80, time_budget_s=None,
                         eval_every=40, target_exact_match=None)
    history = training.train(model, data["train"], data["valid"], config, progress=False,
                             callback=lambda h: calls.append(h.steps), callback_every=20)
    assert history.steps == 80 and history.stop_reason == "max_steps"
    first, last = sum(history.loss[:10]) / 10, sum(history.loss[-10:]) / 10
    assert last < 0.75 * first, (first, last)  # from ln(75) = 4.3 (uniform) to about 2.5
    assert history.eval_steps == [40, 80] and len(history.eval_exact_match) == 2
    assert calls == [20, 40, 60, 80, 80]
    assert history.tokens > 0 and history.tokens_per_second > 0
    assert max(history.lr) == pytest.approx(1e-2, rel=0.05) and history.lr[-1] < 1e-4
    assert not model.training


def test_training_stops_at_the_time_budget(data: dict[str, ParallelData]) -> None:
    config = TrainConfig(batch_size=16, time_budget_s=0.5, budget_by="time", max_steps=10**6, target_exact_match=None)
    history = training.train(tiny_model(data["train"]), data["train"], None, config, progress=False)
    assert history.stop_reason == "time budget"
    assert 0.5 <= history.elapsed[-1] + 0.2 and history.elapsed[-1] < 2.0
    assert history.lr[-1] < 0.05 * config.lr  # the schedule followed the clock and decayed with it


def test_by_steps_the_time_budget_is_a_cap_that_says_it_fired(data: dict[str, ParallelData]) -> None:
    config = TrainConfig(batch_size=16, time_budget_s=0.5, max_steps=10**6, target_exact_match=None)
    history = training.train(tiny_model(data["train"]), data["train"], None, config, progress=False)
    assert history.stop_reason.startswith("time cap") and "not finished" in history.stop_reason
    last = history.steps - 1  # the schedule read the step count only, never the clock
    assert history.lr[-1] == pytest.approx(learning_rate(config, last, last / config.max_steps))
    with pytest.raises(ValueError, match="budget_by"):
        TrainConfig(budget_by="time", time_budget_s=None)


def test_the_same_seed_gives_the_same_model(data: dict[str, ParallelData]) -> None:
    """Reproducible training: the schedule and the stopping rule read steps and validation, never the clock."""
    runs = []
    for _ in range(2):
        config = TrainConfig(batch_size=16, max_steps=25, eval_every=10, target_exact_match=0.99, seed=3,
                             time_budget_s=600)
        model = tiny_model(data["train"], seed=3)
        history = training.train(model, data["train"], data["valid"], config, progress=False)
        runs.append((model.state_dict(), history))
    (first, h1), (second, h2) = runs
    assert h1.steps == h2.steps == 25 and h1.loss == h2.loss and h1.eval_exact_match == h2.eval_exact_match
    assert all(torch.equal(first[name], second[name]) for name in first)


def test_training_stops_when_the_target_is_reached(data: dict[str, ParallelData]) -> None:
    config = TrainConfig(batch_size=16, eval_every=3, target_exact_match=0.0, time_budget_s=None)
    history = training.train(tiny_model(data["train"]), data["train"], data["valid"], config, progress=False)
    assert history.stop_reason == "target reached" and history.steps == 3
    assert history.time_to(0.0) == history.eval_elapsed[0] and history.time_to(1.01) is None


def test_batched_translations_keep_their_order_and_match_one_by_one(data: dict[str, ParallelData]) -> None:
    test, model = data["test"], tiny_model(data["train"], seed=2).eval()
    predictions = translate_data(model, test, batch_size=16, max_new_tokens=12)  # sorted by length inside, padded
    translator = Translator(model, test.src_vocab, test.tgt_vocab)
    for i in range(0, len(test), 4):
        assert predictions[i] == translator.translate(test.examples[i].source, max_new_tokens=12), i
    scores = evaluate(model, test)
    predictions, references = translate_data(model, test), [list(e.target) for e in test.examples]
    assert scores.exact_match == exact_match(predictions, references)
    assert scores.token_accuracy == token_accuracy(predictions, references)
    assert scores.n_sentences == SIZES["test"] and "exact match" in str(scores)


# --- saving and loading ----------------------------------------------------------------------------------
def test_save_load_round_trip_gives_identical_logits(tmp_path, data: dict[str, ParallelData]) -> None:
    model = tiny_model(data["train"], seed=3).eval()
    translator = Translator(model, data["train"].src_vocab, data["train"].tgt_vocab, {"note": "test"})
    path = save_translator(translator, tmp_path / "sub" / "model.pt")
    loaded = load_translator(path)
    batch = data["test"].batch(range(8))
    with torch.no_grad():
        assert torch.equal(model(batch.src_ids, batch.tgt_in), loaded.model(batch.src_ids, batch.tgt_in))
    assert loaded.src_vocab == translator.src_vocab and loaded.tgt_vocab == translator.tgt_vocab
    assert loaded.model.config == model.config and loaded.info == {"note": "test"}
    assert not loaded.model.training


def test_default_path_follows_course_cache_dir(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COURSE_CACHE_DIR", str(tmp_path))
    assert training.default_model_path() == tmp_path / "toy_translator.pt"
    with pytest.raises(FileNotFoundError, match="run lesson 07"):
        load_translator()
    monkeypatch.delenv("COURSE_CACHE_DIR")
    assert training.default_model_path().parts[-2:] == ("cross-attention-from-scratch", "toy_translator.pt")


def test_translate_names_unknown_words(data: dict[str, ParallelData]) -> None:
    translator = Translator(tiny_model(data["train"]), data["train"].src_vocab, data["train"].tgt_vocab)
    words = translator.translate("the cat sees a dog")
    assert isinstance(words, list) and all(w in translator.tgt_vocab for w in words)
    assert translator.translate("the cat sees a dog", beam_size=1) == words
    with pytest.raises(ValueError, match="blorp"):
        translator.translate("the blorp sees a dog")


def test_toy_model_config_uses_the_vocabulary_sizes(data: dict[str, ParallelData]) -> None:
    config = training.toy_model_config(data["train"].src_vocab, data["train"].tgt_vocab)
    train = data["train"]
    assert (config.src_vocab_size, config.tgt_vocab_size) == (len(train.src_vocab), len(train.tgt_vocab))
    assert config.pad_id == 0 and math.isclose(config.dropout, 0.0)


def test_history_time_to_reads_the_first_crossing() -> None:
    history = History(elapsed=[0.5, 2.5], eval_elapsed=[1.0, 2.0, 3.0], eval_exact_match=[0.5, 0.96, 0.99])
    assert history.time_to(0.95) == 2.0 and history.time_to(0.99) == 3.0 and history.time_to(0.999) is None
    assert history.seconds == 3.0 and History(elapsed=[4.0]).seconds == 4.0 and History().seconds == 0.0


def test_examples_carry_alignments_for_the_aer() -> None:
    example = tl.make_splits(seed=0, sizes={"train": 1, "valid": 0, "test": 0, "generalisation": 0})["train"][0]
    assert {t for _, t in example.alignment} == set(range(len(example.target)))
    assert build_vocabularies([example])[0].encode(example.source)


def test_training_benchmark_rows_and_table() -> None:
    from course_lib import bench

    rows = bench.training_benchmark(seeds=[0], time_budget_s=1.0, eval_every=5, sizes=SIZES)
    assert len(rows) == 1 and rows[0]["seed"] == 0 and rows[0]["steps"] > 0
    assert rows[0]["stop_reason"] in ("time cap (schedule not finished)", "target reached")
    assert 0 <= rows[0]["exact_match"] <= 1 and 0 <= rows[0]["best_head_aer"] <= 1
    table = bench.format_training_table(rows).splitlines()
    assert len(table) == 3 and table[0].startswith("| seed | to 95 % (s) | to 99 % (s) |")
    assert table[2].startswith("| 0 | not reached | not reached |") or rows[0]["t95_s"] is not None


def test_load_or_train_trains_once_then_loads(tmp_path, monkeypatch: pytest.MonkeyPatch,
                                              data: dict[str, ParallelData]) -> None:
    calls = []

    def fake_train(**kwargs):
        calls.append(kwargs)
        translator = Translator(tiny_model(data["train"]), data["train"].src_vocab, data["train"].tgt_vocab)
        return training.TrainingRun(translator, training.History(), {})

    monkeypatch.setattr(training, "train_toy_translator", fake_train)
    path = tmp_path / "model.pt"
    first = training.load_or_train_translator(path, progress=False)
    assert len(calls) == 1 and path.exists()
    second = training.load_or_train_translator(path, progress=False)
    assert len(calls) == 1 and second.src_vocab == first.src_vocab
