"""The standard beam search: exact against exhaustive search when the beam holds every prefix, a beam of one is
greedy, every cache mode agrees, the source is encoded once and its cross-attention K/V are shared by its beams."""
from __future__ import annotations

import copy
import functools
import itertools

import pytest
import torch
from torch import Tensor
from torch.testing import assert_close

import course_lib as cl
from course_lib.generate import IncrementalDecoder, _beam_search, length_normaliser
from course_lib.measure import CallCounter

pytestmark = pytest.mark.usefixtures("single_thread")
PAD, BOS, EOS = 0, 1, 2


@functools.cache
def model_of(vocab: int, dtype: torch.dtype = torch.float64) -> cl.Seq2SeqTransformer:
    """A small random model (seed 3) with a sharpened output layer, so scores are far from ties."""
    with torch.random.fork_rng():
        torch.manual_seed(3)
        config = cl.TransformerConfig(src_vocab_size=9, tgt_vocab_size=vocab, d_model=16, n_heads=2,
                                      n_encoder_layers=1, n_decoder_layers=2, d_ff=32, max_len=16)
        model = cl.Seq2SeqTransformer(config)
        with torch.no_grad():
            model.output.weight.mul_(3.0)
    return copy.deepcopy(model).to(dtype).eval()


SOURCES = torch.tensor([[3, 7, 4, 5], [5, 6, 0, 0], [8, 0, 0, 0]])


@torch.no_grad()
def exhaustive(model: cl.Seq2SeqTransformer, src: Tensor, max_len: int, alpha: float, eos: int | None
               ) -> list[tuple[float, tuple[int, ...]]]:
    """Every possible output of one source, scored as beam search scores it, best first: sequences that end at
    their first ``eos`` (any length up to ``max_len``) and sequences of ``max_len`` tokens without one."""
    vocab = model.config.tgt_vocab_size
    outputs = [seq for n in range(1, max_len + 1) for seq in itertools.product(range(vocab), repeat=n)
               if (eos is not None and seq[-1] == eos and eos not in seq[:-1])
               or (n == max_len and (eos is None or eos not in seq))]
    scored = []
    for start in range(0, len(outputs), 256):
        chunk = outputs[start:start + 256]
        width = max(len(s) for s in chunk)
        tgt_in = torch.tensor([[BOS, *s[:-1]] + [PAD] * (width - len(s)) for s in chunk])
        log_probs = torch.log_softmax(model(src.expand(len(chunk), -1), tgt_in), dim=-1)  # [N, width, V]
        for row, seq in enumerate(chunk):
            total = sum(log_probs[row, j, t].item() for j, t in enumerate(seq))
            scored.append((total / float(length_normaliser(len(seq), alpha)), seq))
    return sorted(scored, key=lambda item: -item[0])


def hypotheses(generation: cl.Generation, row: int, eos: int | None) -> list[tuple[float, tuple[int, ...]]]:
    out = []
    for tokens, score in zip(generation.beams[row].tolist(), generation.beam_scores[row].tolist()):
        if eos is not None and eos in tokens:
            tokens = tokens[: tokens.index(eos) + 1]
        out.append((score, tuple(tokens)))
    return out


@pytest.mark.parametrize("alpha", [0.0, 1.0, 2.0])
@pytest.mark.parametrize("eos", [EOS, None])
def test_a_beam_holding_every_prefix_equals_exhaustive_search(alpha: float, eos: int | None) -> None:
    model, max_len, vocab = model_of(4), 3, 4
    for row in range(len(SOURCES)):
        src = SOURCES[row : row + 1]
        oracle = exhaustive(model, src, max_len, alpha, eos)
        result = cl.beam_search(model, src, bos_id=BOS, eos_id=eos, beam_size=vocab**max_len, n_best=5,
                                max_new_tokens=max_len, length_penalty=alpha)
        found = hypotheses(result, 0, eos)
        assert [seq for _, seq in found] == [seq for _, seq in oracle[:5]], (row, found, oracle[:5])
        assert_close(torch.tensor([s for s, _ in found]), torch.tensor([s for s, _ in oracle[:5]]),
                     rtol=0, atol=1e-9)


@pytest.mark.parametrize("alpha", [0.0, 1.0])
def test_smaller_beams_never_beat_the_exhaustive_best_and_are_real_hypotheses(alpha: float) -> None:
    model = model_of(4)
    for row in range(len(SOURCES)):
        src = SOURCES[row : row + 1]
        oracle = exhaustive(model, src, 4, alpha, EOS)
        for k in (2, 3, 5):
            result = cl.beam_search(model, src, bos_id=BOS, eos_id=EOS, beam_size=k, n_best=2, max_new_tokens=4,
                                    length_penalty=alpha)
            scores = dict((seq, s) for s, seq in oracle)
            for score, seq in hypotheses(result, 0, EOS):
                assert_close(torch.tensor(score), torch.tensor(scores[seq]), rtol=0, atol=1e-9)  # a true score
                assert score <= oracle[0][0] + 1e-12


def test_a_beam_of_one_is_greedy_decoding_even_without_the_shortcut() -> None:
    model, src = model_of(7), SOURCES
    greedy = cl.greedy_decode(model, src, bos_id=BOS, eos_id=EOS, max_new_tokens=8)
    general = _beam_search(model, src, bos_id=BOS, eos_id=EOS, beam_size=1, max_new_tokens=8, length_penalty=0.0,
                           n_best=1, cache="full")
    width = greedy.tokens.shape[1]
    assert torch.equal(general.tokens[:, :width], greedy.tokens)
    shortcut = cl.beam_search(model, src, bos_id=BOS, eos_id=EOS, beam_size=1, max_new_tokens=8, length_penalty=0.0)
    assert torch.equal(shortcut.tokens, greedy.tokens)
    assert_close(shortcut.scores, general.scores, rtol=0, atol=1e-9)


@pytest.mark.parametrize("alpha", [0.0, 1.0])
def test_beam_search_scores_at_least_greedy_here(alpha: float) -> None:
    """Not a theorem (a beam can prune the greedy path and then find only worse endings), but on these inputs the
    standard algorithm with its pool finds at least greedy's score, as it usually does."""
    model = model_of(7)
    greedy = cl.beam_search(model, SOURCES, bos_id=BOS, eos_id=EOS, beam_size=1, max_new_tokens=8,
                            length_penalty=alpha)
    for k in (2, 4, 8):
        beam = cl.beam_search(model, SOURCES, bos_id=BOS, eos_id=EOS, beam_size=k, max_new_tokens=8,
                              length_penalty=alpha)
        assert bool((beam.scores >= greedy.scores - 1e-12).all()), (k, beam.scores, greedy.scores)


@pytest.mark.parametrize("eos", [EOS, None])
def test_every_cache_mode_gives_the_same_n_best(eos: int | None) -> None:
    model = model_of(7)
    results = {cache: cl.beam_search(model, SOURCES, bos_id=BOS, eos_id=eos, beam_size=4, n_best=3,
                                     max_new_tokens=7, cache=cache) for cache in cl.CACHE_MODES}
    for cache, result in results.items():
        assert torch.equal(result.beams, results["none"].beams), cache
        assert_close(result.beam_scores, results["none"].beam_scores, rtol=0, atol=1e-9)
        assert bool((result.beam_scores[:, :-1] >= result.beam_scores[:, 1:]).all()), "best first"


def test_without_eos_every_beam_runs_to_the_end() -> None:
    result = cl.beam_search(model_of(7), SOURCES, bos_id=BOS, eos_id=None, beam_size=3, n_best=3, max_new_tokens=6)
    assert result.beams.shape == (3, 3, 6) and result.tokens.shape == (3, 6)


@pytest.mark.parametrize("cache", ["encoder", "cross_kv", "full"])
def test_the_source_is_encoded_once_whatever_the_beam(cache: str) -> None:
    model = model_of(7)
    with CallCounter(encoder=model.encoder) as calls:
        cl.beam_search(model, SOURCES, bos_id=BOS, eos_id=None, beam_size=5, max_new_tokens=4, cache=cache)
    assert calls.counts["encoder calls"] == 1
    assert calls.counts["encoder positions"] == SOURCES.shape[1]  # one [B, S] batch, not [B * K, S]


def test_beams_share_their_source_s_cross_attention_kv() -> None:
    model = model_of(7)
    decoder = IncrementalDecoder(model, SOURCES, "full", beams=4)
    assert all(kv.k.shape[0] == len(SOURCES) for kv in decoder.cache.cross_kv)  # [B, H, S, d_head], not B * K


def test_attention_with_shared_source_kv_equals_attention_with_copies() -> None:
    torch.manual_seed(0)
    mha = cl.MultiHeadAttention(16, 2).double().eval()
    source = torch.randn(3, 5, 16, dtype=torch.float64)
    mask = torch.tensor([[True] * 5, [True] * 3 + [False] * 2, [True] + [False] * 4])[:, None, None, :]  # [B,1,1,S]
    x = torch.randn(3 * 4, 2, 16, dtype=torch.float64)  # 4 beams per source, 2 query positions each
    shared, shared_w = mha(x, mask=mask, need_weights=True, source_kv=mha.project_source(source))
    copied_kv = cl.SourceKV(*(t.repeat_interleave(4, dim=0) for t in mha.project_source(source)))
    copied, copied_w = mha(x, mask=mask.repeat_interleave(4, dim=0), need_weights=True, source_kv=copied_kv)
    assert_close(shared, copied, rtol=0, atol=1e-12)
    assert_close(shared_w, copied_w, rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="padding mask"):
        mha(x, mask=torch.ones(3, 1, 2, 5, dtype=torch.bool), source_kv=mha.project_source(source))


def test_beam_search_refuses_bad_arguments() -> None:
    with pytest.raises(ValueError, match="n_best must be >= 1"):
        cl.beam_search(model_of(7), SOURCES, bos_id=BOS, eos_id=EOS, n_best=0)


# --- the preallocated self-attention cache ------------------------------------------------------------------
def test_static_cache_holds_what_the_growing_cache_holds() -> None:
    torch.manual_seed(0)
    growing, static = cl.KVCache(), cl.StaticKVCache(max_len=6)
    for t_new in (2, 1, 3):
        k, v = torch.randn(2, 3, t_new, 4), torch.randn(2, 3, t_new, 4)
        expected, got = growing.append(k, v), static.append(k, v)
        assert all(torch.equal(a, b) for a, b in zip(expected, got))
    assert static.length == growing.length == 6 and static.k.shape == (2, 3, 6, 4)
    buffer = static.k_buffer.data_ptr()
    static.reorder(torch.tensor([1, 1]))
    growing.reorder(torch.tensor([1, 1]))
    assert static.k_buffer.data_ptr() == buffer, "reordered in place"
    assert torch.equal(static.k, growing.k) and torch.equal(static.v, growing.v)
    assert static.nbytes() == 2 * 2 * 3 * 6 * 4 * 4
    with pytest.raises(ValueError, match="max_len=6"):
        static.append(torch.randn(2, 3, 1, 4), torch.randn(2, 3, 1, 4))
    other = cl.StaticKVCache(4)
    other.append(torch.randn(2, 3, 1, 4), torch.randn(2, 3, 1, 4))
    with pytest.raises(ValueError, match="do not fit"):
        other.append(torch.randn(2, 2, 1, 4), torch.randn(2, 2, 1, 4))  # another number of heads


@pytest.mark.parametrize("eos", [EOS, None])
def test_static_cache_gives_the_same_tokens_and_logits(eos: int | None) -> None:
    model = model_of(7, torch.float32)
    growing = cl.greedy_decode(model, SOURCES, bos_id=BOS, eos_id=eos, max_new_tokens=9)
    static = cl.greedy_decode(model, SOURCES, bos_id=BOS, eos_id=eos, max_new_tokens=9, static_cache=True)
    assert torch.equal(static.tokens, growing.tokens)
    assert_close(static.logits, growing.logits, rtol=0, atol=1e-6)
    beams = cl.beam_search(model, SOURCES, bos_id=BOS, eos_id=eos, beam_size=4, n_best=3, max_new_tokens=9)
    static_beams = cl.beam_search(model, SOURCES, bos_id=BOS, eos_id=eos, beam_size=4, n_best=3, max_new_tokens=9,
                                  static_cache=True)
    assert torch.equal(static_beams.beams, beams.beams)
    assert_close(static_beams.beam_scores, beams.beam_scores, rtol=0, atol=1e-5)
