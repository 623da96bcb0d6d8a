"""Lesson 13's models and runs: the bias and the wait-k mask reach every decoding path, the wait-k model cannot read
ahead, a model without encoder positions sees a bag of words, and the measurements are what they say.

References: the same model run teacher-forced vs token by token with a K/V cache (every path must agree), the
unmodified ``Seq2SeqTransformer``, brute-force loops over the definitions, ``position.wait_k_mask``.
"""
from __future__ import annotations

import random

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from course_lib.data import ParallelData, build_vocabularies
from course_lib.model import Seq2SeqTransformer, TransformerConfig
from course_lib.order_models import (
    OrderedTransformer,
    OrderSettings,
    RunRecord,
    gold_alignment_matrix,
    guided_alignment_loss,
    required_wait,
    teacher_forced_exact_match,
    train_ordered,
    wait_bottleneck,
)
from course_lib.order_runs import (
    RESPELLING_VARIANTS,
    exact_match_by_wait,
    load_or_train_respeller,
    load_or_tune_translator,
    order_matters,
    respelling_data,
)
from course_lib.position import wait_k_mask
from course_lib.respelling import LETTERS, respell, respelling_splits
from course_lib.toy_language import Example, make_splits

pytestmark = pytest.mark.usefixtures("single_thread")
CONFIG = TransformerConfig(12, 13, d_model=32, n_heads=4, n_encoder_layers=2, n_decoder_layers=2, d_ff=64)


def _model(settings: OrderSettings, seed: int = 0) -> OrderedTransformer:
    torch.manual_seed(seed)
    model = OrderedTransformer(CONFIG, settings).double().eval()
    if model.bucket_bias is not None:
        torch.nn.init.normal_(model.bucket_bias.table)  # a learned table, not all zeros
    return model


def _batch(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    src = torch.randint(3, 12, (3, 7), generator=g)
    src[1, 5:] = 0  # padding at the end
    src[2, 3:] = 0
    tgt = torch.randint(3, 13, (3, 6), generator=g)
    return src, tgt


SETTINGS = {
    "plain": OrderSettings(),
    "diagonal": OrderSettings(cross_bias="diagonal", source_per_target=0.8),
    "buckets": OrderSettings(cross_bias="buckets", source_per_target=1.3, n_buckets=8, max_distance=6),
    "wait-2": OrderSettings(wait_k=2, causal_encoder=True),
    "everything": OrderSettings(cross_bias="diagonal", wait_k=3, causal_encoder=True, encoder_positions=False,
                                decoder_positions=False),
}


@pytest.mark.parametrize("name", list(SETTINGS))
def test_teacher_forced_equals_token_by_token_with_cache(name: str) -> None:
    """The bias rows and the wait-k rows follow the cache's offset: decoding one token at a time gives the
    teacher-forced logits."""
    model = _model(SETTINGS[name])
    src, tgt = _batch()
    full = model(src, tgt)  # [B, T, V]
    memory, _ = model.encode(src)
    src_mask = model.source_mask(src)
    cache = model.new_cache(memory)
    steps = [model.decode(tgt[:, t:t + 1], memory, src_mask, cache=cache).logits for t in range(tgt.shape[1])]
    torch.testing.assert_close(torch.cat(steps, dim=1), full, rtol=0, atol=1e-10)


def test_default_settings_are_the_plain_model() -> None:
    torch.manual_seed(0)
    plain = Seq2SeqTransformer(CONFIG).double().eval()
    ordered = OrderedTransformer(CONFIG).double().eval()
    ordered.load_state_dict(plain.state_dict())
    src, tgt = _batch(1)
    torch.testing.assert_close(ordered(src, tgt), plain(src, tgt), rtol=0, atol=0)


def test_the_bias_changes_the_weights_by_exactly_the_bias() -> None:
    """Cross-attention weights with the diagonal bias are softmax(scores + bias) of the unbiased model's scores:
    log-weights differ from the plain ones by the bias up to a per-row constant."""
    biased = _model(SETTINGS["diagonal"])
    plain = _model(OrderSettings())
    plain.load_state_dict(biased.state_dict())
    src, tgt = _batch(2)
    # one decoder layer's input is the same in both models only for the first layer: compare layer 0
    _, maps_b = biased.forward_with_attention(src[:1, :5], tgt[:1])
    _, maps_p = plain.forward_with_attention(src[:1, :5], tgt[:1])
    bias = biased.cross_bias(tgt.shape[1], 5)  # [H, T, S]
    diff = maps_b.decoder_cross[0][0].log() - maps_p.decoder_cross[0][0].log() - bias  # [H, T, S]
    torch.testing.assert_close(diff - diff.mean(dim=-1, keepdim=True), torch.zeros_like(diff), rtol=0, atol=1e-9)


@pytest.mark.parametrize("k", [1, 2, 4])
def test_wait_k_cross_mask_is_wait_k_mask(k: int) -> None:
    model = _model(OrderSettings(wait_k=k, causal_encoder=True))
    src, _ = _batch()
    lengths = (src != 0).sum(dim=1)
    got = model.cross_mask(model.source_mask(src), 6)
    assert torch.equal(got, wait_k_mask(6, lengths, k, t_k=src.shape[1]))
    assert torch.equal(model.cross_mask(model.source_mask(src), 2, query_offset=3),
                       wait_k_mask(5, lengths, k, t_k=src.shape[1])[:, :, 3:])


@settings(max_examples=15, deadline=None)
@given(k=st.integers(1, 4), seed=st.integers(0, 1000))
def test_wait_k_model_cannot_read_ahead(k: int, seed: int) -> None:
    """Step i's logits do not change when any source token at position >= k + i changes: the policy holds through
    the encoder too (causal), not only in the cross-attention mask."""
    model = _model(OrderSettings(wait_k=k, causal_encoder=True), seed=seed % 3)
    g = torch.Generator().manual_seed(seed)
    src = torch.randint(3, 12, (1, 8), generator=g)
    tgt = torch.randint(3, 13, (1, 6), generator=g)
    logits = model(src, tgt)[0]  # [T, V]
    for position in range(k, 8):
        changed = src.clone()
        changed[0, position] = 3 + (int(src[0, position]) - 2) % 9  # another real token
        other = model(changed, tgt)[0]
        blind = [i for i in range(6) if k + i <= position]  # steps that may not have read `position`
        torch.testing.assert_close(other[blind], logits[blind], rtol=0, atol=1e-12)


def test_without_a_causal_encoder_wait_k_leaks_the_future() -> None:
    """The reason for ``causal_encoder``: with a bidirectional encoder, the states a wait-k decoder may read already
    depend on tokens it may not read."""
    model = _model(OrderSettings(wait_k=1))
    src, tgt = _batch(3)
    changed = src.clone()
    changed[0, 4] = 3 + (int(src[0, 4]) - 2) % 9
    assert not torch.allclose(model(changed, tgt)[0, 0], model(src, tgt)[0, 0])


def test_without_encoder_positions_the_model_sees_a_bag_of_words() -> None:
    """Permuting the real source tokens leaves every logit unchanged (up to float64 round-off); with positions it
    does not."""
    bag = _model(OrderSettings(encoder_positions=False))
    ordered = _model(OrderSettings())
    src, tgt = _batch(4)
    permuted = src.clone()
    permuted[0] = src[0, torch.tensor([6, 2, 0, 5, 1, 3, 4])]
    permuted[1, :5] = src[1, torch.tensor([4, 3, 0, 2, 1])]
    torch.testing.assert_close(bag(permuted, tgt), bag(src, tgt), rtol=0, atol=1e-10)
    assert not torch.allclose(ordered(permuted, tgt), ordered(src, tgt))


@pytest.mark.parametrize("kwargs, words", [
    (dict(cross_bias="alibi"), "cross_bias must be one of"),
    (dict(wait_k=0), "wait_k must be None or an int >= 1"),
    (dict(wait_k=2.0), "wait_k must be None or an int >= 1"),
    (dict(source_per_target=0), "source_per_target must be a finite number > 0"),
])
def test_settings_errors(kwargs: dict, words: str) -> None:
    with pytest.raises(ValueError, match=words):
        OrderSettings(**kwargs)


def test_decode_refuses_a_mask_that_is_not_the_padding_mask() -> None:
    model = _model(SETTINGS["wait-2"])
    src, tgt = _batch()
    memory, _ = model.encode(src)
    with pytest.raises(ValueError, match=r"src_mask must be the padding mask \[B, 1, 1, S\]"):
        model.decode(tgt, memory, torch.ones(3, 1, 6, 7, dtype=torch.bool))


# --- the alignment loss and the measurements -------------------------------------------------------------------------

def test_gold_matrix_and_guided_loss_brute_force() -> None:
    examples = [Example(("a", "b", "c"), ("x", "y"), ((1, 0), (0, 1), (2, 1))), Example(("a",), ("z",), ())]
    gold = gold_alignment_matrix(examples, 3, 3)
    expected = torch.zeros(2, 3, 3, dtype=torch.bool)
    expected[0, 0, 1] = expected[0, 1, 0] = expected[0, 1, 2] = True
    assert torch.equal(gold, expected)
    weights = torch.softmax(torch.randn(2, 3, 3, generator=torch.Generator().manual_seed(0)), dim=-1)
    want = -(torch.log(weights[0, 0, 1]) + torch.log(weights[0, 1, 0] + weights[0, 1, 2])) / 2
    torch.testing.assert_close(guided_alignment_loss(weights, gold), want)
    assert float(guided_alignment_loss(weights, torch.zeros_like(gold))) == 0.0
    with pytest.raises(ValueError, match=r"\[B, T_q, T_k\]"):
        guided_alignment_loss(weights, gold[:, :2])


def test_required_wait_is_the_smallest_k_whose_mask_covers_the_alignment() -> None:
    for example in make_splits(0, {"train": 200, "valid": 1, "test": 1, "generalisation": 1})["train"]:
        t_q, t_k = len(example.target), len(example.source)

        def covers(k: int, example=example, t_q=t_q, t_k=t_k) -> bool:
            mask = wait_k_mask(t_q, [t_k], k)[0, 0]
            return all(bool(mask[t, s]) for s, t in example.alignment)

        need = required_wait(example)
        assert covers(need) and (need == 1 or not covers(need - 1))
        link = wait_bottleneck(example)
        if need > 1:
            s, t = link
            assert (s, t) in example.alignment and s + 1 - t == need
        else:
            assert link is None


def test_exact_match_by_wait_and_order_matters() -> None:
    examples = [Example(("the", "cat", "sleeps"), ("miru", "dura"), ((1, 0), (2, 1))),
                Example(("the", "cat", "sees", "a", "dog"), ("miru", "tavo", "vek"), ((1, 0), (4, 1), (2, 2))),
                Example(("cats", "sleep"), ("miru", "li", "dura"), ((0, 0), (0, 1), (1, 2)))]
    result = exact_match_by_wait([["miru", "dura"], ["miru", "vek"], ["miru", "li", "dura"]], examples)
    assert result == {1: (1, 1.0), 2: (1, 1.0), 4: (1, 0.0)}
    assert [order_matters(e) for e in examples] == [False, True, False]
    with pytest.raises(ValueError, match="one prediction per example"):
        exact_match_by_wait([], examples)


def test_teacher_forced_exact_match_counts_whole_sentences() -> None:
    splits = respelling_splits(0, train_lengths=(3, 5), sizes=dict(train=40, valid=8, test=1, long=1))
    sv, tv = build_vocabularies(splits["train"])
    data = ParallelData(splits["valid"], sv, tv)
    model = OrderedTransformer(TransformerConfig(len(sv), len(tv), d_model=16, n_heads=2, n_encoder_layers=1,
                                                 n_decoder_layers=1, d_ff=32)).eval()
    score = teacher_forced_exact_match(model, data)
    assert 0.0 <= score <= 1.0
    predicted = model(data.src_ids, data.tgt_in).argmax(-1)
    right = ((predicted == data.tgt_out) | (data.tgt_out == 0)).all(dim=1).float().mean()
    assert score == pytest.approx(float(right))


def test_training_is_reproducible_and_restores_threads() -> None:
    splits = respelling_splits(1, train_lengths=(3, 6), sizes=dict(train=200, valid=20, test=1, long=1))
    sv, tv = build_vocabularies(splits["train"])
    train, valid = ParallelData(splits["train"], sv, tv), ParallelData(splits["valid"], sv, tv)
    config = TransformerConfig(len(sv), len(tv), d_model=16, n_heads=2, n_encoder_layers=1, n_decoder_layers=1,
                               d_ff=32)
    threads = torch.get_num_threads()
    records = []
    for _ in range(2):
        torch.manual_seed(0)
        model = OrderedTransformer(config, OrderSettings(cross_bias="buckets"))
        records.append(train_ordered(model, train, steps=6, valid=valid, eval_every=4, batch_size=16,
                                     guided_head=(0, 1), threads=1))
    assert torch.get_num_threads() == threads
    assert records[0].loss == records[1].loss and records[0].eval_steps == [4, 6]
    assert records[0].loss[-1] < records[0].loss[0]


def test_run_record_steps_to() -> None:
    record = RunRecord(eval_steps=[50, 100, 150], eval_exact_match=[0.2, 0.9, 0.95])
    assert record.steps_to(0.9) == 100 and record.steps_to(0.99) is None


# --- the respelling task ----------------------------------------------------------------------------------------------

def test_respelling_rules_and_alignment() -> None:
    example = respell(list("xhcaci"))
    assert example.target == ("k", "s", "k", "a", "s", "i")
    assert example.alignment == ((0, 0), (0, 1), (2, 2), (3, 3), (4, 4), (5, 5))
    rng = random.Random(0)
    for _ in range(200):
        letters = [rng.choice(LETTERS) for _ in range(rng.randint(1, 20))]
        ex = respell(letters)
        sources = [s for s, _ in ex.alignment]
        assert sources == sorted(sources) and [t for _, t in ex.alignment] == list(range(len(ex.target)))
    with pytest.raises(ValueError, match="single lowercase letters"):
        respell(["A"])


def test_respelling_splits_lengths_and_no_overlap() -> None:
    splits = respelling_splits(0, train_lengths=(4, 6), long_lengths=(9, 12),
                               sizes=dict(train=300, valid=30, test=30, long=30))
    assert all(4 <= len(e.source) <= 6 for e in splits["train"] + splits["valid"] + splits["test"])
    assert all(9 <= len(e.source) <= 12 for e in splits["long"])
    sources = [e.source for split in splits.values() for e in split]
    assert len(sources) == len(set(sources))
    assert splits == respelling_splits(0, train_lengths=(4, 6), long_lengths=(9, 12),
                                       sizes=dict(train=300, valid=30, test=30, long=30))
    with pytest.raises(ValueError, match="long_lengths must be"):
        respelling_splits(0, long_lengths=(5, 3))
    with pytest.raises(ValueError, match="sizes must be >= 0"):
        respelling_splits(0, sizes=dict(train=-1))


# --- the cached runs -------------------------------------------------------------------------------------------------

def test_respeller_is_trained_once_then_loaded(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("COURSE_CACHE_DIR", str(tmp_path))
    data = respelling_data()
    model, record = load_or_train_respeller("learned buckets", steps=3, data=data)
    assert model.settings.source_per_target == pytest.approx(data.source_per_target)
    assert len(list((tmp_path / "lesson13").glob("respell-learned-buckets-seed0-steps3.pt"))) == 1
    again, record2 = load_or_train_respeller("learned buckets", steps=3, data=data)
    assert record2.loss == record.loss
    for a, b in zip(model.state_dict().values(), again.state_dict().values()):
        assert torch.equal(a, b)
    with pytest.raises(ValueError, match="label must be one of"):
        load_or_train_respeller("no such thing", data=data)
    assert set(RESPELLING_VARIANTS) >= {"no bias", "diagonal bias", "learned buckets"}


def test_tuned_translator_starts_from_the_base_and_is_cached(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("COURSE_CACHE_DIR", str(tmp_path))
    sv, tv = build_vocabularies(make_splits(0)["train"])
    torch.manual_seed(0)
    base = Seq2SeqTransformer(TransformerConfig(len(sv), len(tv), d_model=16, n_heads=4, n_encoder_layers=1,
                                                n_decoder_layers=2, d_ff=32))
    model, record = load_or_tune_translator("wait-2", steps=2, base=base)
    assert model.settings.wait_k == 2 and len(record.loss) == 2
    again, _ = load_or_tune_translator("wait-2", steps=2, base=base)
    for a, b in zip(model.state_dict().values(), again.state_dict().values()):
        assert torch.equal(a, b)
    with pytest.raises(ValueError, match="label must be one of"):
        load_or_tune_translator("wait-3", base=base)
