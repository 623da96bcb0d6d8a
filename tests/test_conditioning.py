"""Lesson 09's translators (course_lib.conditioning): the one-vector memory ignores padding, the decoder-only
model's cached decoding equals uncached, the prefix-LM mask is exactly what it claims, bad input is refused."""
from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import course_lib as cl
from course_lib import conditioning as cd
from course_lib import metrics
from course_lib import toy_language as tl
from course_lib.data import BOS_ID, EOS_ID, ParallelData, build_vocabularies

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def toy() -> tuple[ParallelData, object, object]:
    examples = tl.make_splits(0, {"train": 300, "valid": 10, "test": 10, "generalisation": 10})["train"]
    src_vocab, tgt_vocab = build_vocabularies(examples)
    return ParallelData(examples, src_vocab, tgt_vocab), src_vocab, tgt_vocab


def model_of(kind: str, toy, dtype: torch.dtype = torch.float32) -> torch.nn.Module:
    torch.manual_seed(0)
    return cd.build_conditioner(kind, toy[1], toy[2]).to(dtype).eval()


def pad_more(ids: torch.Tensor, extra: int) -> torch.Tensor:
    """The same batch with ``extra`` more padding columns on the right."""
    return torch.cat([ids, torch.zeros(ids.shape[0], extra, dtype=ids.dtype)], dim=1)


# --- masked mean and the one-vector model --------------------------------------------------------------------
@given(st.lists(st.integers(1, 7), min_size=1, max_size=4), st.integers(0, 5), st.integers(0, 2**16))
def test_masked_mean_is_the_mean_of_the_real_positions_whatever_the_padding(lengths, extra, seed) -> None:
    g = torch.Generator().manual_seed(seed)
    s = max(lengths) + extra
    states = torch.randn(len(lengths), s, 3, generator=g, dtype=torch.float64)
    real = torch.arange(s)[None, :] < torch.tensor(lengths)[:, None]  # [B, S]
    expected = torch.stack([states[b, :n].mean(dim=0) for b, n in enumerate(lengths)])
    torch.testing.assert_close(cd.masked_mean(states, real), expected, rtol=0, atol=1e-12)
    garbage = states.masked_fill(~real[..., None], 1e6)  # whatever the padded states hold
    torch.testing.assert_close(cd.masked_mean(garbage, real), expected, rtol=0, atol=1e-9)


@pytest.mark.parametrize("bad, message", [
    (lambda s, r: (s, r & False), "at least one real token"),
    (lambda s, r: (s, r.float()), "bool mask"),
    (lambda s, r: (s, r[:, :2]), "bool mask"),
    (lambda s, r: (s[0], r), r"\[B, S, D\]"),
])
def test_masked_mean_refuses_bad_input(bad, message) -> None:
    states, real = torch.randn(2, 4, 3), torch.ones(2, 4, dtype=torch.bool)
    with pytest.raises(ValueError, match=message):
        cd.masked_mean(*bad(states, real))


def test_one_vector_model_ignores_padding_and_sees_one_key(toy) -> None:
    model = model_of("one vector", toy)
    batch = toy[0].batch(range(6))
    memory, _ = model.encode(batch.src_ids)
    assert memory.shape == (6, 1, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(pad_more(batch.src_ids, 5), batch.tgt_in), model(batch.src_ids, batch.tgt_in),
                                   rtol=0, atol=1e-6)
        _, maps = model.forward_with_attention(batch.src_ids, batch.tgt_in)
    assert all(torch.equal(w, torch.ones_like(w)) for w in maps.decoder_cross)  # one key: every weight is 1
    alone = model(batch.src_ids[:1, : int(toy[0].src_lengths[0])], batch.tgt_in[:1])  # unpadded, on its own
    torch.testing.assert_close(alone, model(batch.src_ids, batch.tgt_in)[:1], rtol=0, atol=1e-5)


def test_one_vector_memory_is_the_masked_mean_of_the_encoder_states(toy) -> None:
    model = model_of("one vector", toy)
    batch = toy[0].batch(range(4))
    x = model.positions(model.src_embed(batch.src_ids))
    states, _ = model.encoder(x, cl.padding_mask_from_ids(batch.src_ids, 0))  # every encoder state
    memory, _ = model.encode(batch.src_ids)
    lengths = (batch.src_ids != 0).sum(dim=1)
    expected = torch.stack([states[b, :n].mean(dim=0) for b, n in enumerate(lengths.tolist())])
    torch.testing.assert_close(memory[:, 0], expected)


# --- the prefix-LM mask --------------------------------------------------------------------------------------
@given(st.lists(st.integers(0, 9), min_size=1, max_size=4), st.integers(0, 4))
def test_prefix_lm_mask_is_causal_except_inside_the_prefix(prefixes, extra) -> None:
    length = max(prefixes) + extra + 1
    mask = cl.prefix_lm_mask(torch.tensor(prefixes), length)
    assert mask.shape == (len(prefixes), 1, length, length) and mask.dtype == torch.bool
    for b, p in enumerate(prefixes):
        for i in range(length):
            for j in range(length):
                assert bool(mask[b, 0, i, j]) == (j <= i or (i < p and j < p)), (p, i, j)
        assert torch.equal(mask[b, 0], cl.prefix_lm_mask(p, length))
    assert torch.equal(cl.prefix_lm_mask(0, length), cl.causal_mask(length))
    assert torch.equal(cl.prefix_lm_mask(length, length), torch.ones(length, length, dtype=torch.bool))


@pytest.mark.parametrize("prefix, length, message", [
    (6, 5, r"0\.\.5"), (-1, 5, r"0\.\.5"), (torch.tensor([1.0]), 3, "integer"), (torch.tensor([[1]]), 3, r"\[B\]"),
    (2, 0, "length"), ("2", 3, "int or an integer tensor"),
])
def test_prefix_lm_mask_refuses_bad_input(prefix, length, message) -> None:
    with pytest.raises(ValueError, match=message):
        cl.prefix_lm_mask(prefix, length)


# --- the decoder-only model ----------------------------------------------------------------------------------
def test_join_puts_the_source_on_the_left_and_sep_in_one_column(toy) -> None:
    model = model_of("decoder-only", toy)
    src = torch.tensor([[5, 6, 7], [8, 0, 0]])
    tgt = torch.tensor([[BOS_ID, 4, 5], [BOS_ID, 6, 0]])
    v = model.config.src_vocab_size
    assert model.join(src, tgt).tolist() == [[5, 6, 7, BOS_ID + v, 4 + v, 5 + v], [0, 0, 8, BOS_ID + v, 6 + v, 0]]
    assert model.sep_id == v + BOS_ID


@pytest.mark.parametrize("kind", ["decoder-only", "prefix-LM"])
def test_decoder_only_ignores_padding(kind, toy) -> None:
    model = model_of(kind, toy)
    batch = toy[0].batch(range(6))
    with torch.no_grad():
        torch.testing.assert_close(model(pad_more(batch.src_ids, 4), batch.tgt_in), model(batch.src_ids, batch.tgt_in),
                                   rtol=0, atol=1e-5)
        torch.testing.assert_close(model(pad_more(batch.src_ids, 4), pad_more(batch.tgt_in, 3))[:, :-3],
                                   model(batch.src_ids, batch.tgt_in), rtol=0, atol=1e-5)


@pytest.mark.parametrize("kind", ["decoder-only", "prefix-LM"])
def test_decoder_only_target_never_sees_its_future(kind, toy) -> None:
    model = model_of(kind, toy)
    batch = toy[0].batch(range(4))
    changed = batch.tgt_in.clone()
    changed[:, 3:] = 5  # every target word from position 3 on
    with torch.no_grad():
        torch.testing.assert_close(model(batch.src_ids, changed)[:, :3], model(batch.src_ids, batch.tgt_in)[:, :3],
                                   rtol=0, atol=1e-6)


def test_only_the_prefix_lm_lets_a_source_word_see_later_source_words(toy) -> None:
    src = torch.tensor([[5, 6, 7, 8]])
    tgt = torch.tensor([[BOS_ID, 4]])
    later = src.clone()
    later[0, 3] = 9  # the last source word
    for kind, changes in (("decoder-only", False), ("prefix-LM", True)):
        model = model_of(kind, toy)
        with torch.no_grad():
            first = model.forward_sequence(model.join(src, tgt))[0][0, 0]  # at the first source word
            second = model.forward_sequence(model.join(later, tgt))[0][0, 0]
        assert (not torch.allclose(first, second)) == changes, kind


@pytest.mark.parametrize("kind", ["decoder-only", "prefix-LM"])
def test_decoder_only_cached_decoding_equals_uncached(kind, toy) -> None:
    model = model_of(kind, toy, torch.float64)  # float64: no near-tie can flip an argmax between the two
    batch = toy[0].batch(range(12))
    cached = model.greedy_decode(batch.src_ids, eos_id=EOS_ID, max_new_tokens=25, use_cache=True)
    uncached = model.greedy_decode(batch.src_ids, eos_id=EOS_ID, max_new_tokens=25, use_cache=False)
    assert cached.shape == (12, 25) and torch.equal(cached, uncached)


def test_decoder_only_greedy_tokens_are_the_argmax_of_the_teacher_forced_logits(toy) -> None:
    model = model_of("decoder-only", toy, torch.float64)
    src = toy[0].batch(range(3)).src_ids
    tokens = model.greedy_decode(src, eos_id=None, max_new_tokens=6)
    logits = model(src, torch.cat([torch.full((3, 1), BOS_ID), tokens[:, :-1]], dim=1))  # [B, 6, V]
    assert torch.equal(logits.argmax(dim=-1), tokens)


def test_hidden_cross_attention_is_the_target_by_source_block(toy) -> None:
    model = model_of("prefix-LM", toy)
    src = torch.tensor([[5, 6, 7], [8, 9, 0]])
    tgt = torch.tensor([[BOS_ID, 4, 5, 6], [BOS_ID, 6, 7, 0]])
    _, maps = model.forward_with_attention(src, tgt)
    for full, cross in zip(maps.decoder_self, maps.decoder_cross):
        assert cross.shape == (2, 4, 4, 3)
        torch.testing.assert_close(cross[0], full[0, :, 3:, 0:3])  # no padding: the block itself
        torch.testing.assert_close(cross[1, :, :, :2], full[1, :, 3:, 1:3])  # one left pad: shifted to source order
        assert torch.equal(cross[1, :, :, 2], torch.zeros(4, 4))  # the padded source column


def test_decoder_only_alignment_scores_run_through_the_shared_metric(toy) -> None:
    scores = metrics.alignment_scores(model_of("decoder-only", toy), ParallelData(toy[0].examples[:20], toy[1], toy[2]))
    assert scores.per_head.shape == (4, 4) and bool(((scores.per_head >= 0) & (scores.per_head <= 1)).all())


@pytest.mark.parametrize("bad, message", [
    (lambda m, s, t: m.join(s, t[:1]), "same batch size"),
    (lambda m, s, t: m.join(torch.zeros_like(s), t), "at least one real token"),
    (lambda m, s, t: m.join(s, t[:, 1:]), "start with <bos>"),
    (lambda m, s, t: m.join(s.float(), t), "integer token ids"),
    (lambda m, s, t: m.forward_sequence(s), "exactly one <sep>"),
    (lambda m, s, t: m.forward_sequence(torch.cat([m.join(s, t), m.join(s, t)], dim=1)), "exactly one <sep>"),
    (lambda m, s, t: m.greedy_decode(s, max_new_tokens=300), "max_len"),
    (lambda m, s, t: m(s, t[:1]), "same batch size"),
])
def test_decoder_only_refuses_bad_input(bad, message, toy) -> None:
    model = model_of("prefix-LM", toy)
    src, tgt = torch.tensor([[5, 6, 7], [8, 9, 0]]), torch.tensor([[BOS_ID, 4], [BOS_ID, 6]])
    with pytest.raises(ValueError, match=message):
        bad(model, src, tgt)


# --- the GRU baseline ----------------------------------------------------------------------------------------
def test_gru_ignores_padding_and_decodes_greedily(toy) -> None:
    model = model_of("GRU", toy, torch.float64)
    batch = toy[0].batch(range(5))
    torch.testing.assert_close(model(pad_more(batch.src_ids, 4), batch.tgt_in), model(batch.src_ids, batch.tgt_in))
    tokens = model.greedy_decode(batch.src_ids, bos_id=BOS_ID, eos_id=None, max_new_tokens=6)
    logits = model(batch.src_ids, torch.cat([torch.full((5, 1), BOS_ID), tokens[:, :-1]], dim=1))
    assert torch.equal(logits.argmax(dim=-1), tokens)
    with pytest.raises(ValueError, match="at least one real token"):
        model(torch.zeros_like(batch.src_ids), batch.tgt_in)
    with pytest.raises(ValueError, match="same batch size"):
        model(batch.src_ids, batch.tgt_in[:2])


# --- every kind: the shared interface, saving and loading ---------------------------------------------------
@pytest.mark.parametrize("kind", list(cd.CONDITIONERS))
def test_every_kind_translates_and_round_trips_through_a_file(kind, toy, tmp_path) -> None:
    model = model_of(kind, toy)
    batch = toy[0].batch(range(4))
    assert model(batch.src_ids, batch.tgt_in).shape == (*batch.tgt_in.shape, len(toy[2]))
    words = metrics.translate_ids(model, batch, toy[2], max_new_tokens=5)
    assert len(words) == 4 and all(len(w) <= 5 for w in words)
    path = cd.save_conditioner(cd.TrainedConditioner(kind, model, {"steps": 0}), tmp_path / "m.pt")
    loaded = cd.load_conditioner(path)
    assert loaded.kind == kind and loaded.info == {"steps": 0} and type(loaded.model) is type(model)
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(batch.src_ids, batch.tgt_in), model(batch.src_ids, batch.tgt_in))


def test_load_or_train_trains_once_then_loads(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("COURSE_CACHE_DIR", str(tmp_path))
    from course_lib import training

    data = training.toy_data(0, {"train": 200, "valid": 20, "test": 10, "generalisation": 10})[0]
    first = cd.load_or_train("one vector", time_budget_s=1.0, data=data, progress=False)
    path = cd.conditioner_path("one vector", 0, 1.0)
    assert path.exists() and path.is_relative_to(tmp_path)
    assert first.info["steps"] >= 1 and 0 <= first.info["valid_exact_match"] <= 1
    again = cd.load_or_train("one vector", time_budget_s=1.0, data=data, progress=False)
    assert again.info == first.info
    with pytest.raises(ValueError, match="kind must be one of"):
        cd.load_or_train("bag of words", data=data)


def test_long_sentences_are_long_new_and_repeatable() -> None:
    splits = tl.make_splits(0, {"train": 2000, "valid": 10, "test": 10, "generalisation": 10})
    exclude = {e.source for e in splits["train"]}
    long = tl.long_sentences(0, 50, 17, exclude=exclude)
    assert len(long) == 50 and all(len(e.source) >= 17 and e.source not in exclude for e in long)
    assert long == tl.long_sentences(0, 50, 17, exclude=exclude)
    held_out = tl.held_out_pairs(0)
    noun = {form: name for name, (singular, plural, _) in tl.NOUNS.items() for form in (singular, plural)}
    pairs = {(a, noun[n]) for e in long for a, n in zip(e.source, e.source[1:]) if a in tl.ADJECTIVES and n in noun}
    assert pairs and not pairs & held_out
