"""Invariants of attention, masks and the encoder-decoder, checked by hypothesis on random shapes,
lengths and masks.

Tensors are drawn from a ``torch.Generator`` seeded by hypothesis (cheap, and reproducible from the
failing example); shapes, lengths, mask densities and token ids are drawn by hypothesis itself. The
model-based properties share one tiny model per device and dtype, built once with a fixed seed.
"""
from __future__ import annotations

import copy
import functools

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import Tensor
from torch.testing import assert_close

import course_lib as cl

pytestmark = pytest.mark.usefixtures("single_thread")

# The ``device`` fixture is function-scoped but immutable, so sharing it across examples is safe.
property_settings = settings(suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

TOL = {torch.float32: {"atol": 1e-4, "rtol": 1e-4}, torch.float64: {"atol": 1e-10, "rtol": 1e-10}}
SRC_VOCAB, TGT_VOCAB, PAD, BOS = 13, 11, 0, 1
seeds = st.integers(min_value=0, max_value=2**31 - 1)


# --- attention on random shapes and masks -------------------------------------------------------------


@st.composite
def attention_case(draw: st.DrawFn) -> dict:
    """Random q, k, v with 0-2 leading batch dims, and a bool mask of one of the accepted shapes."""
    batch = tuple(draw(st.lists(st.integers(1, 3), min_size=0, max_size=2)))
    t_q, t_k, d_k, d_v = (draw(st.integers(1, 5)) for _ in range(4))
    mask_kind = draw(st.sampled_from(["full", "padding", "2d", "broadcast-batch"]))
    if mask_kind == "full":
        mask_shape = (*batch, t_q, t_k)
    elif mask_kind == "padding":
        mask_shape = (*batch, 1, t_k)
    elif mask_kind == "2d":
        mask_shape = (t_q, t_k)
    else:  # leading batch dims of size 1 that broadcast
        mask_shape = (*(1 for _ in batch), t_q, t_k)
    return {
        "shapes": ((*batch, t_q, d_k), (*batch, t_k, d_k), (*batch, t_k, d_v)),
        "mask_shape": mask_shape,
        "keep": draw(st.sampled_from([0.0, 0.2, 0.5, 0.9, 1.0])),  # 0.0: every row fully masked
        "magnitude": draw(st.sampled_from([1.0, 30.0])),  # large scores: softmax saturates
        "seed": draw(seeds),
    }


def make_attention_inputs(case: dict, device: torch.device) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``(q, k, v, mask)`` for an ``attention_case``, drawn on the CPU and moved to ``device``."""
    gen = torch.Generator().manual_seed(case["seed"])
    q, k, v = (case["magnitude"] * torch.randn(shape, generator=gen) for shape in case["shapes"])
    mask = torch.rand(case["mask_shape"], generator=gen) < case["keep"]
    return q.to(device), k.to(device), v.to(device), mask.to(device)


@property_settings
@given(case=attention_case())
def test_weights_sum_to_one_wherever_some_key_is_visible(device: torch.device, case: dict) -> None:
    q, k, v, mask = make_attention_inputs(case, device)
    _, weights = cl.scaled_dot_product_attention(q, k, v, mask)
    visible = mask.any(dim=-1).expand(weights.shape[:-1])  # [..., T_q]
    row_sums = weights.sum(dim=-1)
    assert_close(row_sums[visible], torch.ones_like(row_sums[visible]), atol=1e-5, rtol=0)
    assert bool((weights >= 0).all())


@property_settings
@given(case=attention_case())
def test_masked_keys_get_exactly_zero_weight(device: torch.device, case: dict) -> None:
    q, k, v, mask = make_attention_inputs(case, device)
    _, weights = cl.scaled_dot_product_attention(q, k, v, mask)
    blocked = ~mask.expand(weights.shape)
    assert int((weights[blocked] != 0).sum()) == 0


@property_settings
@given(case=attention_case())
def test_fully_masked_rows_give_zero_output_and_weights_never_nan(device: torch.device, case: dict) -> None:
    q, k, v, mask = make_attention_inputs(case, device)
    output, weights = cl.scaled_dot_product_attention(q, k, v, mask)
    assert bool(torch.isfinite(output).all()) and bool(torch.isfinite(weights).all())
    no_key = ~mask.any(dim=-1)  # [..., T_q]
    assert int((weights[no_key.expand(weights.shape[:-1])] != 0).sum()) == 0
    assert int((output[no_key.expand(output.shape[:-1])] != 0).sum()) == 0


@st.composite
def mha_case(draw: st.DrawFn) -> dict:
    """Inputs for a 2-head, d_model 8 MultiHeadAttention with a mask of one of its accepted shapes."""
    cross = draw(st.booleans())
    batch, t_q = draw(st.integers(1, 3)), draw(st.integers(1, 5))
    t_k = draw(st.integers(1, 5)) if cross else t_q
    mask_shape = draw(st.sampled_from([(t_q, t_k), (batch, t_q, t_k), (batch, 1, 1, t_k), (batch, 1, t_q, t_k),
                                       (batch, 2, t_q, t_k), (1, 2, 1, t_k)]))
    return {"batch": batch, "t_q": t_q, "t_k": t_k, "mask_shape": mask_shape, "cross": cross,
            "keep": draw(st.sampled_from([0.0, 0.2, 0.5, 0.9])), "seed": draw(seeds)}


@functools.cache
def tiny_mha(device: str, bias: bool) -> tuple[cl.MultiHeadAttention, cl.MultiHeadAttention]:
    """The same weights in the SDPA fast path and the hand-written path."""
    with torch.random.fork_rng():
        torch.manual_seed(0)
        fast = cl.MultiHeadAttention(8, 2, bias=bias, use_sdpa=True)
    slow = cl.MultiHeadAttention(8, 2, bias=bias, use_sdpa=False)
    slow.load_state_dict(fast.state_dict())
    return fast.to(device), slow.to(device)


@property_settings
@given(case=mha_case(), bias=st.booleans())
def test_mha_sdpa_fast_path_matches_handwritten_and_zeroes_fully_masked_rows(
    device: torch.device, case: dict, bias: bool
) -> None:
    fast, slow = tiny_mha(device.type, bias)
    gen = torch.Generator().manual_seed(case["seed"])
    x = torch.randn(case["batch"], case["t_q"], 8, generator=gen).to(device).requires_grad_()
    source = torch.randn(case["batch"], case["t_k"], 8, generator=gen).to(device) if case["cross"] else None
    mask = (torch.rand(case["mask_shape"], generator=gen) < case["keep"]).to(device)

    fast_out, fast_w = fast(x, source, mask=mask)
    slow_out, slow_w = slow(x, source, mask=mask, need_weights=True)
    assert fast_w is None and slow_w is not None
    assert bool(torch.isfinite(fast_out).all()) and bool(torch.isfinite(slow_out).all())
    assert_close(fast_out, slow_out, atol=1e-5, rtol=1e-5)

    allowed = (mask if mask.ndim != 3 else mask[:, None]).expand(slow_w.shape)  # [B, H, T_q, T_k]
    assert int((slow_w[~allowed] != 0).sum()) == 0
    # Where no head sees any key, every head's context is 0, so the output is out_proj's bias (or 0).
    all_heads_blind = ~allowed.any(dim=-1).any(dim=1)  # [B, T_q]
    expected_row = fast.out_proj.bias if bias else torch.zeros(8, device=device)
    for out in (fast_out, slow_out):
        assert bool((out[all_heads_blind] == expected_row).all())

    for module, out in ((fast, fast_out), (slow, slow_out)):  # no NaN in the gradients, even of masked rows
        x.grad = None
        out.sum().backward()
        assert bool(torch.isfinite(x.grad).all())
        assert all(bool(torch.isfinite(p.grad).all()) for p in module.parameters() if p.grad is not None)
        module.zero_grad()


# --- the encoder-decoder model ------------------------------------------------------------------------


@functools.cache
def tiny_model(device: str, dtype: torch.dtype) -> cl.Seq2SeqTransformer:
    """One small model per device and dtype, with the same weights everywhere (seed 0)."""
    with torch.random.fork_rng():
        torch.manual_seed(0)
        config = cl.TransformerConfig(src_vocab_size=SRC_VOCAB, tgt_vocab_size=TGT_VOCAB, d_model=16, n_heads=2,
                                      n_encoder_layers=2, n_decoder_layers=2, d_ff=32, max_len=32, pad_id=PAD)
        model = cl.Seq2SeqTransformer(config)
    return copy.deepcopy(model).to(device=device, dtype=dtype).eval()


@st.composite
def padded_sources(draw: st.DrawFn, min_batch: int = 1) -> Tensor:
    """``[B, S]`` source ids: rows of (possibly) different lengths, padded with ``PAD`` (0) to the longest."""
    rows = draw(st.lists(st.lists(st.integers(1, SRC_VOCAB - 1), min_size=1, max_size=6),
                         min_size=min_batch, max_size=3))
    longest = max(len(r) for r in rows)
    return torch.tensor([r + [PAD] * (longest - len(r)) for r in rows])


@st.composite
def targets(draw: st.DrawFn, batch: int, min_length: int = 1, length: int | None = None) -> Tensor:
    """``[B, T]`` target ids (any id, pad included: the decoder must not care)."""
    length = draw(st.integers(min_length, 5)) if length is None else length
    rows = draw(st.lists(st.lists(st.integers(0, TGT_VOCAB - 1), min_size=length, max_size=length),
                         min_size=batch, max_size=batch))
    return torch.tensor(rows)


@property_settings
@given(data=st.data(), extra_pads=st.integers(1, 4))
def test_appending_source_padding_leaves_encoder_and_decoder_outputs_unchanged(
    device: torch.device, data: st.DataObject, extra_pads: int
) -> None:
    model = tiny_model(device.type, torch.float64)
    src = data.draw(padded_sources()).to(device)
    tgt = data.draw(targets(src.shape[0])).to(device)
    longer = torch.cat([src, torch.full((src.shape[0], extra_pads), PAD, device=device)], dim=1)
    with torch.no_grad():
        memory, _ = model.encode(src)  # SDPA path
        memory_longer, encoder_weights = model.encode(longer, need_weights=True)  # hand-written path
        logits = model.decode(tgt, memory, model.source_mask(src)).logits
        logits_longer = model.decode(tgt, memory_longer, model.source_mask(longer)).logits
        hand_logits_longer, _, cross_weights = model.decode(tgt, memory_longer, model.source_mask(longer),
                                                            need_weights=True)
    real = src != PAD  # [B, S]
    assert_close(memory_longer[:, : src.shape[1]][real], memory[real], **TOL[torch.float64])
    assert_close(logits_longer, logits, **TOL[torch.float64])
    assert_close(hand_logits_longer, logits, **TOL[torch.float64])
    for weights in (*encoder_weights, *cross_weights):  # the appended pads get exactly no weight
        assert int((weights[..., src.shape[1]:] != 0).sum()) == 0


@property_settings
@given(data=st.data())
def test_changing_later_target_tokens_leaves_earlier_logits_unchanged(
    device: torch.device, data: st.DataObject
) -> None:
    model = tiny_model(device.type, torch.float64)
    src = data.draw(padded_sources()).to(device)
    tgt = data.draw(targets(src.shape[0], min_length=2)).to(device)
    cut = data.draw(st.integers(1, tgt.shape[1] - 1))
    changed = tgt.clone()
    changed[:, cut:] = data.draw(targets(src.shape[0], length=tgt.shape[1] - cut)).to(device)
    with torch.no_grad():
        logits = model(src, tgt)  # SDPA path
        changed_logits, maps = model.forward_with_attention(src, changed)  # hand-written path
    assert_close(changed_logits[:, :cut], logits[:, :cut], **TOL[torch.float64])
    for weights in maps.decoder_self:  # [B, H, T, T]: no weight on any later position
        assert int((weights.triu(diagonal=1) != 0).sum()) == 0


# Batches of two or three sources of different lengths, padded with PAD.
ragged_sources = padded_sources(min_batch=2).filter(lambda src: len(set((src != PAD).sum(dim=1).tolist())) > 1)


def _check_cached_decoding_matches_uncached(device: torch.device, dtype: torch.dtype, src: Tensor,
                                            eos_id: int | None, max_new_tokens: int) -> None:
    model = tiny_model(device.type, dtype)
    src = src.to(device)
    reference = cl.greedy_decode(model, src, bos_id=BOS, eos_id=eos_id, max_new_tokens=max_new_tokens, cache="none")
    for mode in [m for m in cl.CACHE_MODES if m != "none"]:  # every mode that reuses something
        result = cl.greedy_decode(model, src, bos_id=BOS, eos_id=eos_id, max_new_tokens=max_new_tokens, cache=mode)
        assert torch.equal(result.tokens, reference.tokens), mode
        assert result.logits is not None and reference.logits is not None
        assert_close(result.logits, reference.logits, **TOL[dtype], msg=lambda m, mode=mode: f"{mode}: {m}")


@property_settings
@given(src=ragged_sources, eos_id=st.sampled_from([None, 2, 3, 5]), max_new_tokens=st.integers(1, 4))
def test_cached_greedy_decoding_matches_uncached_float32(
    device: torch.device, src: Tensor, eos_id: int | None, max_new_tokens: int
) -> None:
    _check_cached_decoding_matches_uncached(device, torch.float32, src, eos_id, max_new_tokens)


@property_settings
@given(src=ragged_sources, eos_id=st.sampled_from([None, 2, 3, 5]), max_new_tokens=st.integers(1, 4))
def test_cached_greedy_decoding_matches_uncached_float64(
    device: torch.device, src: Tensor, eos_id: int | None, max_new_tokens: int
) -> None:
    _check_cached_decoding_matches_uncached(device, torch.float64, src, eos_id, max_new_tokens)
