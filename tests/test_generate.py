"""Greedy decoding, beam search and the decoding caches; and the mask helpers they rely on."""
from __future__ import annotations

import copy
import functools

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.testing import assert_close

import course_lib as cl
from course_lib.reference import load_torch_mha

pytestmark = pytest.mark.usefixtures("single_thread")

SRC_VOCAB, TGT_VOCAB, PAD, BOS = 13, 11, 0, 1


@functools.cache
def tiny_model(device: str, dtype: torch.dtype = torch.float32) -> cl.Seq2SeqTransformer:
    """A 2+2-layer model with random weights (seed 0); the output layer is sharpened so that greedy
    choices are not near-ties and decoding produces varied tokens."""
    with torch.random.fork_rng():
        torch.manual_seed(0)
        config = cl.TransformerConfig(src_vocab_size=SRC_VOCAB, tgt_vocab_size=TGT_VOCAB, d_model=16, n_heads=2,
                                      n_encoder_layers=2, n_decoder_layers=2, d_ff=32, max_len=32, pad_id=PAD)
        model = cl.Seq2SeqTransformer(config)
        with torch.no_grad():
            model.output.weight.mul_(4.0)
    return copy.deepcopy(model).to(device=device, dtype=dtype).eval()


def sources(device: torch.device) -> Tensor:
    """A fixed batch of four sources of lengths 5, 2, 4 and 1, padded with PAD."""
    rows = [[3, 7, 2, 9, 4], [5, 11, 0, 0, 0], [12, 6, 6, 8, 0], [10, 0, 0, 0, 0]]
    return torch.tensor(rows, device=device)


def first_positions(tokens: Tensor, token: int) -> list[int | None]:
    """Per row, the index of the first ``token`` (None when absent)."""
    found = []
    for row in tokens.tolist():
        found.append(row.index(token) if token in row else None)
    return found


def eos_that_finishes_rows_at_different_steps(tokens: Tensor) -> int:
    """A token that some row produces earlier than another row (or that another never produces), so
    that with it as EOS one row finishes while decoding goes on for the others."""
    for token in range(2, TGT_VOCAB):
        steps = [tokens.shape[1] if s is None else s for s in first_positions(tokens, token)]
        if min(steps) < tokens.shape[1] - 1 and min(steps) < max(steps):
            return token
    raise AssertionError(f"no token finishes the rows at different steps: {tokens.tolist()}")


# --- greedy decoding -----------------------------------------------------------------------------


def test_greedy_tokens_and_logits_have_documented_shapes(device: torch.device) -> None:
    model, src = tiny_model(device.type), sources(device)
    result = cl.greedy_decode(model, src, bos_id=BOS, max_new_tokens=6)
    assert result.tokens.shape == (4, 6) and result.tokens.dtype == torch.long
    assert result.tokens.device.type == device.type
    assert result.logits is not None and result.logits.shape == (4, 6, TGT_VOCAB)
    assert result.scores is None
    assert torch.equal(result.logits.argmax(dim=-1), result.tokens)  # each token is its step's argmax


def test_greedy_decoding_matches_teacher_forced_argmax(device: torch.device) -> None:
    model, src = tiny_model(device.type), sources(device)
    result = cl.greedy_decode(model, src, bos_id=BOS, max_new_tokens=5)
    prefix = torch.cat([torch.full((4, 1), BOS, device=device), result.tokens[:, :-1]], dim=1)  # [B, 5]
    with torch.no_grad():
        logits = model(src, prefix)
    assert_close(result.logits, logits, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("cache", cl.CACHE_MODES)
def test_greedy_pads_every_token_after_eos(device: torch.device, cache: str) -> None:
    model, src = tiny_model(device.type), sources(device)
    free = cl.greedy_decode(model, src, bos_id=BOS, max_new_tokens=8, cache=cache).tokens
    eos = eos_that_finishes_rows_at_different_steps(free)
    result = cl.greedy_decode(model, src, bos_id=BOS, eos_id=eos, max_new_tokens=8, cache=cache)
    padded_somewhere = False
    for row, (tokens, free_row, first) in enumerate(zip(result.tokens, free, first_positions(free, eos))):
        if first is None:
            assert torch.equal(tokens, free_row[: tokens.shape[0]]), row
            continue
        assert torch.equal(tokens[: first + 1], free_row[: first + 1]), row  # same tokens up to EOS
        assert bool((tokens[first + 1 :] == PAD).all()), row  # then only padding
        padded_somewhere |= tokens.shape[0] > first + 1
    assert padded_somewhere  # the test saw at least one finished row padded while others went on


def test_greedy_stops_when_every_row_has_finished(device: torch.device) -> None:
    model, src = tiny_model(device.type), sources(device)
    free = cl.greedy_decode(model, src, bos_id=BOS, max_new_tokens=8).tokens
    eos = int(free[0, 0])  # the first row finishes at once; the others whenever they produce it
    steps = [s for s in first_positions(free, eos)]
    result = cl.greedy_decode(model, src, bos_id=BOS, eos_id=eos, max_new_tokens=8)
    expected_length = 8 if None in steps else max(steps) + 1
    assert result.tokens.shape == (4, expected_length)


# --- beam search ---------------------------------------------------------------------------------


@pytest.mark.parametrize("cache", cl.CACHE_MODES)
def test_beam_size_one_gives_greedy_tokens(device: torch.device, cache: str) -> None:
    model, src = tiny_model(device.type), sources(device)
    free = cl.greedy_decode(model, src, bos_id=BOS, max_new_tokens=8).tokens
    eos = eos_that_finishes_rows_at_different_steps(free)
    greedy = cl.greedy_decode(model, src, bos_id=BOS, eos_id=eos, max_new_tokens=8, cache=cache)
    beam = cl.beam_search(model, src, bos_id=BOS, eos_id=eos, beam_size=1, max_new_tokens=8, cache=cache)
    assert torch.equal(beam.tokens, greedy.tokens)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("cache", [c for c in cl.CACHE_MODES if c != "none"])
def test_beam_search_gives_the_same_tokens_with_every_cache_mode(device: torch.device, dtype: torch.dtype,
                                                                 cache: str) -> None:
    model, src = tiny_model(device.type, dtype), sources(device)
    free = cl.greedy_decode(model, src, bos_id=BOS, max_new_tokens=8).tokens
    eos = eos_that_finishes_rows_at_different_steps(free)
    reference = cl.beam_search(model, src, bos_id=BOS, eos_id=eos, beam_size=3, max_new_tokens=8, cache="none")
    result = cl.beam_search(model, src, bos_id=BOS, eos_id=eos, beam_size=3, max_new_tokens=8, cache=cache)
    assert torch.equal(result.tokens, reference.tokens)
    assert_close(result.scores, reference.scores, atol=1e-5, rtol=1e-5)


def test_beam_search_output_has_documented_shapes(device: torch.device) -> None:
    model, src = tiny_model(device.type), sources(device)
    result = cl.beam_search(model, src, bos_id=BOS, eos_id=TGT_VOCAB + 5, beam_size=3, max_new_tokens=6)
    assert result.tokens.shape == (4, 6) and result.tokens.dtype == torch.long  # no EOS: every step runs
    assert result.scores is not None and result.scores.shape == (4,)
    assert bool((result.scores <= 0).all())  # mean log-probabilities
    assert result.logits is None


def test_beam_search_pads_every_token_after_eos(device: torch.device) -> None:
    model, src = tiny_model(device.type), sources(device)
    free = cl.greedy_decode(model, src, bos_id=BOS, max_new_tokens=8).tokens
    padded_somewhere = False
    for eos in range(2, TGT_VOCAB):
        result = cl.beam_search(model, src, bos_id=BOS, eos_id=eos, beam_size=3, max_new_tokens=8)
        for tokens, first in zip(result.tokens, first_positions(result.tokens, eos)):
            if first is not None:
                assert bool((tokens[first + 1 :] == PAD).all()), (eos, tokens.tolist())
                padded_somewhere |= tokens.shape[0] > first + 1
    assert padded_somewhere, free.tolist()


def test_beam_search_score_is_the_length_normalised_log_probability(device: torch.device) -> None:
    model, src = tiny_model(device.type, torch.float64), sources(device)
    beam = cl.beam_search(model, src, bos_id=BOS, eos_id=TGT_VOCAB + 5, beam_size=4, max_new_tokens=5)
    prefix = torch.cat([torch.full((4, 1), BOS, device=device), beam.tokens[:, :-1]], dim=1)  # teacher forcing
    with torch.no_grad():
        log_probs = torch.log_softmax(model(src, prefix), dim=-1)  # [B, 5, V]
    log_prob = log_probs.gather(-1, beam.tokens[..., None])[..., 0].sum(dim=-1)  # [B]
    assert_close(beam.scores.double(), log_prob / 5, atol=1e-5, rtol=1e-5)


# --- caches --------------------------------------------------------------------------------------


def test_kv_cache_grows_by_one_step_per_call(device: torch.device) -> None:
    cache = cl.KVCache()
    assert cache.length == 0 and cache.nbytes() == 0
    steps_k = [torch.randn(2, 3, 1, 4, device=device) for _ in range(4)]
    steps_v = [torch.randn(2, 3, 1, 4, device=device) for _ in range(4)]
    for t, (k, v) in enumerate(zip(steps_k, steps_v), start=1):
        all_k, all_v = cache.append(k, v)
        assert cache.length == t and all_k.shape == (2, 3, t, 4)
        assert torch.equal(all_k, torch.cat(steps_k[:t], dim=2)) and torch.equal(all_v, torch.cat(steps_v[:t], dim=2))
    assert cache.nbytes() == 2 * (2 * 3 * 4 * 4) * 4  # k and v, [2, 3, 4, 4] float32


def test_decoder_cache_grows_by_one_position_per_decoding_step(device: torch.device) -> None:
    model, src = tiny_model(device.type), sources(device)
    with torch.no_grad():
        memory, _ = model.encode(src)
        cache = model.new_cache(memory)
        tokens = torch.full((4, 1), BOS, device=device)
        for step in range(1, 4):
            model.decode(tokens, memory, model.source_mask(src), cache=cache)
            assert cache.length == step
            assert all(layer.k.shape == (4, 2, step, 8) for layer in cache.self_kv)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
def test_decoder_cache_nbytes_is_the_sum_of_its_tensors(device: torch.device, dtype: torch.dtype) -> None:
    model, src = tiny_model(device.type, dtype), sources(device)  # B=4, S=5, 2 layers, H=2, d_head=8
    with torch.no_grad():
        memory, _ = model.encode(src)
        cache = model.new_cache(memory)
        for _ in range(3):
            model.decode(torch.full((4, 1), BOS, device=device), memory, model.source_mask(src), cache=cache)
    tensors = [t for kv in cache.cross_kv for t in kv] + [t for c in cache.self_kv for t in (c.k, c.v)]
    assert cache.nbytes() == sum(t.numel() * t.element_size() for t in tensors)
    item = torch.finfo(dtype).bits // 8
    assert cache.nbytes() == 2 * 2 * 4 * 2 * (5 + 3) * 8 * item  # layers * (k, v) * B * H * (S + T) * d_head
    cross_kv_only = model.new_cache(memory, self_kv=False)
    assert cross_kv_only.nbytes() == 2 * 2 * 4 * 2 * 5 * 8 * item


def test_decoding_in_chunks_with_a_cache_matches_decoding_at_once(device: torch.device) -> None:
    model, src = tiny_model(device.type, torch.float64), sources(device)
    tgt = torch.tensor([[1, 4, 2, 7, 3, 9]] * 4, device=device)
    with torch.no_grad():
        memory, _ = model.encode(src)
        expected = model.decode(tgt, memory, model.source_mask(src)).logits
        cache = model.new_cache(memory)
        chunks = [model.decode(tgt[:, a:b], memory, model.source_mask(src), cache=cache)[0]
                  for a, b in ((0, 2), (2, 3), (3, 6))]  # the last chunk uses causal_mask(3, 6)
    assert_close(torch.cat(chunks, dim=1), expected, atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize("self_kv", [True, False], ids=["full-cache", "cross-kv-only"])
def test_a_stale_cache_from_another_source_changes_the_logits(device: torch.device, self_kv: bool) -> None:
    """A cache holds the cross-attention keys and values of the source it was built for: reusing it
    for another source must not go unnoticed (this is what a cache-invalidation bug looks like)."""
    model = tiny_model(device.type, torch.float64)
    src_a = sources(device)
    src_b = torch.tensor([[4, 4, 9, 1, 2], [8, 3, 3, 0, 0], [2, 0, 0, 0, 0], [6, 5, 7, 12, 0]], device=device)
    bos = torch.full((4, 1), BOS, device=device)
    with torch.no_grad():
        memory_a, _ = model.encode(src_a)
        memory_b, _ = model.encode(src_b)
        mask_b = model.source_mask(src_b)
        uncached = model.decode(bos, memory_b, mask_b).logits
        fresh = model.decode(bos, memory_b, mask_b, cache=model.new_cache(memory_b, self_kv=self_kv)).logits
        stale = model.decode(bos, memory_b, mask_b, cache=model.new_cache(memory_a, self_kv=self_kv)).logits
    assert_close(fresh, uncached, atol=1e-10, rtol=1e-10)
    assert float((stale - fresh).abs().amax(dim=-1).min()) > 1e-3  # every row is affected


def test_decode_returns_named_logits_and_per_layer_weights(device: torch.device) -> None:
    model, src = tiny_model(device.type), sources(device)
    tgt = torch.tensor([[1, 4, 2]] * 4, device=device)
    with torch.no_grad():
        memory, _ = model.encode(src)
        out = model.decode(tgt, memory, model.source_mask(src), need_weights=True)
        plain = model.decode(tgt, memory, model.source_mask(src))
    assert isinstance(out, cl.DecoderOutput) and out.logits.shape == (4, 3, TGT_VOCAB)
    assert [w.shape for w in out.self_weights] == [(4, 2, 3, 3)] * 2  # [B, H, T, T] per decoder layer
    assert [w.shape for w in out.cross_weights] == [(4, 2, 3, 5)] * 2  # [B, H, T, S] per decoder layer
    assert plain.self_weights == [] and plain.cross_weights == []
    assert_close(plain.logits, out.logits)


def test_cross_kv_gives_the_same_layer_output_as_memory(device: torch.device) -> None:
    model, src = tiny_model(device.type, torch.float64), sources(device)
    layer = model.decoder.layers[0]
    y = torch.randn(4, 3, 16, device=device, dtype=torch.float64)  # [B, T, d_model]
    with torch.no_grad():
        memory, _ = model.encode(src)
        from_memory = layer(y, memory, memory_mask=model.source_mask(src))
        cross_kv = layer.cross_attn.project_source(memory)
        from_cross_kv = layer(y, None, memory_mask=model.source_mask(src), cross_kv=cross_kv)
    assert_close(from_cross_kv.y, from_memory.y, atol=1e-12, rtol=1e-12)
    assert [t.shape for t in cross_kv] == [(4, 2, 5, 8)] * 2  # the cross-attention K/V: [B, H, S, d_head]


def test_self_attention_cache_accepts_x_passed_as_its_own_source(device: torch.device) -> None:
    """``forward(x, x, kv_cache=...)`` is self-attention written out: allowed, and the same as ``forward(x, ...)``."""
    mha = cl.MultiHeadAttention(8, 2).to(device)
    steps = torch.randn(3, 2, 1, 8, device=device)  # 3 steps of x [B=2, 1, d_model]
    plain, explicit = cl.KVCache(), cl.KVCache()
    for x in steps:
        assert_close(mha(x, x, kv_cache=explicit)[0], mha(x, kv_cache=plain)[0])
    assert explicit.length == plain.length == 3


def test_generating_twice_does_not_leak_state_between_calls(device: torch.device) -> None:
    model = tiny_model(device.type)
    src_a, src_b = sources(device), sources(device).flip(0)
    alone = cl.greedy_decode(model, src_b, bos_id=BOS, max_new_tokens=6)
    cl.greedy_decode(model, src_a, bos_id=BOS, max_new_tokens=6)
    again = cl.greedy_decode(model, src_b, bos_id=BOS, max_new_tokens=6)
    assert torch.equal(again.tokens, alone.tokens)
    assert torch.equal(again.logits, alone.logits)


# --- mask helpers --------------------------------------------------------------------------------


def test_padding_mask_marks_real_tokens(device: torch.device) -> None:
    mask = cl.padding_mask(torch.tensor([3, 1, 4], device=device), max_len=5)
    expected = torch.tensor([[1, 1, 1, 0, 0], [1, 0, 0, 0, 0], [1, 1, 1, 1, 0]], dtype=torch.bool, device=device)
    assert mask.shape == (3, 1, 1, 5) and mask.dtype == torch.bool
    assert torch.equal(mask[:, 0, 0], expected)
    assert cl.padding_mask(torch.tensor([3, 1, 4], device=device)).shape == (3, 1, 1, 4)  # max_len = longest


def test_padding_mask_from_ids_marks_non_pad_tokens(device: torch.device) -> None:
    token_ids = torch.tensor([[5, 6, 0, 0], [7, 0, 8, 0]], device=device)
    mask = cl.padding_mask_from_ids(token_ids, pad_id=0)
    assert mask.shape == (2, 1, 1, 4)
    assert torch.equal(mask[:, 0, 0], torch.tensor([[1, 1, 0, 0], [1, 0, 1, 0]], dtype=torch.bool, device=device))


def test_causal_mask_is_lower_triangular(device: torch.device) -> None:
    expected = torch.tensor([[1, 0, 0], [1, 1, 0], [1, 1, 1]], dtype=torch.bool, device=device)
    assert torch.equal(cl.causal_mask(3, device=device), expected)


def test_causal_mask_with_more_keys_aligns_queries_to_the_last_positions(device: torch.device) -> None:
    expected = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]], dtype=torch.bool, device=device)
    assert torch.equal(cl.causal_mask(2, 4, device=device), expected)
    assert torch.equal(cl.causal_mask(3, 5, device=device), cl.causal_mask(5, device=device)[2:])


def test_combine_masks_is_the_and_of_its_masks_broadcast(device: torch.device) -> None:
    padding = cl.padding_mask(torch.tensor([3, 2], device=device), max_len=3)  # [2, 1, 1, 3]
    causal = cl.causal_mask(3, device=device)  # [3, 3]
    combined = cl.combine_masks(padding, None, causal)
    assert combined.shape == (2, 1, 3, 3)
    expected_second = torch.tensor([[1, 0, 0], [1, 1, 0], [1, 1, 0]], dtype=torch.bool, device=device)
    assert torch.equal(combined[0, 0], causal) and torch.equal(combined[1, 0], expected_second)
    assert cl.combine_masks(None, None) is None
    assert cl.combine_masks(causal) is causal


def test_document_mask_is_block_diagonal(device: torch.device) -> None:
    mask = cl.document_mask(torch.tensor([[0, 0, 1, 1, 1], [4, 4, 4, 4, 4]], device=device))
    assert mask.shape == (2, 1, 5, 5)
    expected = torch.zeros(5, 5, dtype=torch.bool, device=device)
    expected[:2, :2] = expected[2:, 2:] = True
    assert torch.equal(mask[0, 0], expected) and bool(mask[1].all())


def test_document_mask_makes_packed_documents_attend_as_if_alone(device: torch.device) -> None:
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 2, 5, 4, generator=gen).to(device) for _ in range(3))
    mask = cl.combine_masks(cl.document_mask(torch.tensor([[0, 0, 1, 1, 1]], device=device)),
                            cl.causal_mask(5, device=device))
    packed, _ = cl.scaled_dot_product_attention(q, k, v, mask)
    for part in (slice(0, 2), slice(2, 5)):
        alone, _ = cl.scaled_dot_product_attention(q[..., part, :], k[..., part, :], v[..., part, :],
                                                   cl.causal_mask(part.stop - part.start, device=device))
        assert_close(packed[..., part, :], alone, atol=1e-6, rtol=1e-6)


def test_key_padding_mask_round_trip(device: torch.device) -> None:
    mask = cl.padding_mask(torch.tensor([3, 1, 4], device=device), max_len=4)
    key_padding = cl.key_padding_mask_from_mask(mask)
    assert key_padding.shape == (3, 4)
    assert torch.equal(key_padding, torch.tensor([[0, 0, 0, 1], [0, 1, 1, 1], [0, 0, 0, 0]], dtype=torch.bool,
                                                 device=device))  # True = ignore
    assert torch.equal(cl.mask_from_key_padding_mask(key_padding), mask)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16], ids=["f32", "f64", "f16"])
def test_additive_mask_round_trip(device: torch.device, dtype: torch.dtype) -> None:
    mask = cl.combine_masks(cl.padding_mask(torch.tensor([3, 2], device=device), max_len=3),
                            cl.causal_mask(3, device=device))
    additive = cl.additive_mask_from_mask(mask, dtype=dtype)
    assert additive.dtype == dtype and additive.shape == mask.shape
    assert bool((additive[mask] == 0).all()) and bool((additive[~mask] == float("-inf")).all())
    assert torch.equal(cl.mask_from_additive_mask(additive), mask)


def test_mask_from_additive_mask_treats_large_negative_values_as_blocked(device: torch.device) -> None:
    additive = torch.tensor([0.0, -1e9, -float("inf"), -1.0, -1e4], device=device)
    assert cl.mask_from_additive_mask(additive).tolist() == [True, False, False, True, False]


def test_additive_and_bool_masks_mean_the_same_to_torch_sdpa(device: torch.device) -> None:
    gen = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(2, 2, 4, 8, generator=gen).to(device) for _ in range(3))
    mask = cl.combine_masks(cl.padding_mask(torch.tensor([4, 2], device=device)), cl.causal_mask(4, device=device))
    with_bool = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    with_additive = F.scaled_dot_product_attention(q, k, v, attn_mask=cl.additive_mask_from_mask(mask))
    ours, _ = cl.scaled_dot_product_attention(q, k, v, mask)
    assert_close(with_additive, with_bool, atol=1e-6, rtol=1e-6)
    assert_close(ours, with_bool, atol=1e-6, rtol=1e-6)
    unmasked = F.scaled_dot_product_attention(q, k, v)
    assert float((unmasked - with_bool).abs().max()) > 1e-3  # the mask matters for these inputs


def test_key_padding_mask_means_the_same_to_torch_mha_as_our_mask(device: torch.device) -> None:
    with torch.random.fork_rng():
        torch.manual_seed(2)
        theirs = torch.nn.MultiheadAttention(8, 2, batch_first=True).to(device).eval()
    gen = torch.Generator().manual_seed(2)
    x, source = torch.randn(2, 3, 8, generator=gen).to(device), torch.randn(2, 5, 8, generator=gen).to(device)
    mask = cl.padding_mask(torch.tensor([5, 2], device=device))
    with torch.no_grad():
        expected, _ = theirs(x, source, source, key_padding_mask=cl.key_padding_mask_from_mask(mask))
        as_attn_mask, _ = theirs(x, source, source, attn_mask=~mask[:, 0, 0, None, :].repeat_interleave(2, dim=0)
                                 .expand(4, 3, 5))
    assert_close(as_attn_mask, expected, atol=1e-6, rtol=1e-6)
    ours = load_torch_mha(cl.MultiHeadAttention(8, 2).to(device), theirs)
    with torch.no_grad():
        output, _ = ours(x, source, mask=mask)
    assert_close(output, expected, atol=1e-6, rtol=1e-6)
