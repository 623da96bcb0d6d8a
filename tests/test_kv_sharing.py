"""Sharing K/V heads across query heads (multi-query / grouped-query attention) in ``MultiHeadAttention``, checked
against an ordinary module whose key/value projections are the shared heads repeated, against brute-force loops,
``torch.repeat_interleave`` and ``F.scaled_dot_product_attention(..., enable_gqa=True)``; and the cache arithmetic of
``course_lib.cache``."""
from __future__ import annotations

import re

import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch.testing import assert_close

from course_lib.attention import MultiHeadAttention, SourceKV, repeat_kv_heads, scaled_dot_product_attention
from course_lib.cache import (
    DEEPSEEK_V2_MLA,
    ENCODER_DECODERS,
    DecoderCache,
    KVCache,
    cross_kv_cache_bytes,
    kv_cache_table,
    mla_cache_bytes,
    mla_cache_ratio,
)
from course_lib.long_attention import chunked_attention

F64 = {"atol": 1e-10, "rtol": 1e-10}
D_MODEL, N_HEADS, D_SOURCE = 16, 4, 12  # 4 heads of 4
D_HEAD = D_MODEL // N_HEADS
PATHS = ["hand", "sdpa", "chunked", "core"]
few = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def expect(*parts: str) -> str:
    """A regex matching ``parts`` literally, in this order, anything in between."""
    return ".*".join(re.escape(part) for part in parts)


# ---- repeat_kv_heads ----

@few
@given(st.integers(1, 3), st.sampled_from([(1, 1), (1, 4), (2, 4), (4, 4), (2, 6), (3, 6), (4, 8)]),
       st.integers(1, 5), st.integers(1, 4))
def test_repeat_kv_heads_gives_query_head_h_the_kv_head_h_over_group(batch: int, heads: tuple[int, int], length: int,
                                                                       width: int) -> None:
    n_kv_heads, n_heads = heads
    x = torch.randn(batch, n_kv_heads, length, width, dtype=torch.float64)
    got = repeat_kv_heads(x, n_heads)
    assert got.shape == (batch, n_heads, length, width)
    group = n_heads // n_kv_heads
    for h in range(n_heads):  # brute force, one query head at a time
        assert torch.equal(got[:, h], x[:, h // group])
    assert torch.equal(got, torch.repeat_interleave(x, group, dim=1))


def test_repeat_kv_heads_returns_the_input_when_nothing_is_shared() -> None:
    x = torch.randn(2, 4, 3, 5)
    assert repeat_kv_heads(x, 4) is x


def test_repeat_kv_heads_groups_consecutive_query_heads_not_alternating_ones() -> None:
    x = torch.arange(2.0).view(1, 2, 1, 1)  # K/V head 0 holds 0, head 1 holds 1
    assert repeat_kv_heads(x, 4).flatten().tolist() == [0.0, 0.0, 1.0, 1.0]  # not [0, 1, 0, 1]


@pytest.mark.parametrize(("shape", "n_heads", "parts"), [
    ((2, 3, 5, 4), 4, ("the K/V heads must divide the query heads", "H_kv=3", "[2, 3, 5, 4]", "n_heads=4",
                       "expected a positive multiple of 3")),
    ((2, 2, 5, 4), 0, ("H_kv=2", "n_heads=0")),
    ((2, 5, 4), 4, ("x must have shape [B, H_kv, T, d]", "got shape [2, 5, 4]")),
])
def test_repeat_kv_heads_rejects_heads_that_do_not_divide(shape: tuple[int, ...], n_heads: int,
                                                          parts: tuple[str, ...]) -> None:
    with pytest.raises(ValueError, match=expect(*parts)):
        repeat_kv_heads(torch.randn(*shape), n_heads)


# ---- MultiHeadAttention(n_kv_heads=...) against an ordinary module with the shared heads repeated ----

def _repeat_rows(param: torch.Tensor, n_kv_heads: int) -> torch.Tensor:
    """A k/v projection's weight ``[n_kv_heads * d_head, d_in]`` (or bias) -> the one of ``N_HEADS`` heads, each K/V
    head's rows copied for its group of query heads."""
    per_head = param.reshape(n_kv_heads, D_HEAD, *param.shape[1:])
    return per_head.repeat_interleave(N_HEADS // n_kv_heads, dim=0).reshape(N_HEADS * D_HEAD, *param.shape[1:])


def _pair(n_kv_heads: int, *, cross: bool, device: torch.device | str = "cpu",
          seed: int = 0) -> tuple[MultiHeadAttention, MultiHeadAttention]:
    """``(shared, ordinary)``: a module with ``n_kv_heads`` K/V heads, and an ordinary one computing the same thing."""
    torch.manual_seed(seed)
    d_source = D_SOURCE if cross else None
    shared = MultiHeadAttention(D_MODEL, N_HEADS, d_source=d_source, n_kv_heads=n_kv_heads).double().to(device)
    ordinary = MultiHeadAttention(D_MODEL, N_HEADS, d_source=d_source).double().to(device)
    with torch.no_grad():
        for name in ("q_proj", "out_proj"):
            getattr(ordinary, name).load_state_dict(getattr(shared, name).state_dict())
        for name in ("k_proj", "v_proj"):
            ours, theirs = getattr(shared, name), getattr(ordinary, name)
            theirs.weight.copy_(_repeat_rows(ours.weight, n_kv_heads))
            theirs.bias.copy_(_repeat_rows(ours.bias, n_kv_heads))
    return shared, ordinary


def _chunked_core(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None,
                  need_weights: bool) -> tuple[torch.Tensor, None]:
    assert k.shape[1] == v.shape[1] == q.shape[1], "the core gets the shared heads repeated"
    return chunked_attention(q, k, v, mask, chunk_size=2), None


def _use_path(module: MultiHeadAttention, path: str) -> bool:
    """Switch ``module`` to one of the four ways of computing; return whether to ask for weights."""
    module.use_sdpa = path == "sdpa"
    module.chunk_size = 3 if path == "chunked" else None
    module.attention_core = _chunked_core if path == "core" else None
    return path == "hand"


def _inputs(device: torch.device, *, cross: bool) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """x ``[3, 5, d_model]``, a source ``[3, 7, d_source]`` (or None) and a mask in which batch row 1 sees no key."""
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(3, 5, D_MODEL, generator=gen, dtype=torch.float64).to(device)
    t_k = 7 if cross else 5
    key_lengths = torch.tensor([t_k, 0, 3])  # row 1: every key padded, so every query row of it is fully masked
    padding = (torch.arange(t_k)[None, :] < key_lengths[:, None])[:, None, None, :]  # [B, 1, 1, T_k]
    if not cross:
        return x, None, (padding & torch.ones(5, 5, dtype=torch.bool).tril()).to(device)  # [B, 1, T, T] causal
    source = torch.randn(3, t_k, D_SOURCE, generator=gen, dtype=torch.float64).to(device)
    return x, source, padding.to(device)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("n_kv_heads", [1, 2, 4])
@pytest.mark.parametrize("cross", [True, False], ids=["cross", "self"])
def test_shared_heads_equal_an_ordinary_module_with_them_repeated(device: torch.device, path: str, n_kv_heads: int,
                                                                  cross: bool) -> None:
    shared, ordinary = _pair(n_kv_heads, cross=cross, device=device)
    x, source, mask = _inputs(device, cross=cross)
    need_weights = _use_path(shared, path)
    _use_path(ordinary, path)
    got, got_weights = shared(x, source, mask=mask, need_weights=need_weights)
    expected, expected_weights = ordinary(x, source, mask=mask, need_weights=need_weights)
    assert_close(got, expected, **F64)
    assert not torch.isnan(got).any()
    # batch row 1 has no visible key: its context is zero, so its output is out_proj's bias alone
    assert_close(got[1], shared.out_proj.bias.expand(5, D_MODEL), **F64)
    if need_weights:
        assert got_weights is not None and got_weights.shape == (3, N_HEADS, 5, mask.shape[-1])
        assert_close(got_weights, expected_weights, **F64)
        assert torch.equal(got_weights[1], torch.zeros_like(got_weights[1]))


@few
@given(st.sampled_from([(1, 1), (1, 2), (2, 2), (1, 4), (2, 4), (2, 6), (3, 6)]), st.integers(1, 3),
       st.integers(1, 5), st.integers(1, 9), st.sampled_from(PATHS), st.integers(0, 2**31 - 1))
def test_shared_heads_equal_repeated_weights_for_any_sizes(heads: tuple[int, int], batch: int, t_q: int, t_k: int,
                                                           path: str, seed: int) -> None:
    n_kv_heads, n_heads = heads
    d_model = 2 * n_heads  # d_head = 2
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    shared = MultiHeadAttention(d_model, n_heads, d_source=5, n_kv_heads=n_kv_heads).double()
    ordinary = MultiHeadAttention(d_model, n_heads, d_source=5).double()
    group = n_heads // n_kv_heads
    with torch.no_grad():
        for name in ("q_proj", "out_proj"):
            getattr(ordinary, name).load_state_dict(getattr(shared, name).state_dict())
        for name in ("k_proj", "v_proj"):
            ours, theirs = getattr(shared, name), getattr(ordinary, name)
            theirs.weight.copy_(ours.weight.view(n_kv_heads, 2, 5).repeat_interleave(group, 0).reshape(d_model, 5))
            theirs.bias.copy_(ours.bias.view(n_kv_heads, 2).repeat_interleave(group, 0).reshape(d_model))
    x = torch.randn(batch, t_q, d_model, generator=gen, dtype=torch.float64)
    source = torch.randn(batch, t_k, 5, generator=gen, dtype=torch.float64)
    mask = torch.rand(batch, 1, t_q, t_k, generator=gen) < 0.6  # some rows fully masked
    need_weights = _use_path(shared, path)
    _use_path(ordinary, path)
    got, _ = shared(x, source, mask=mask, need_weights=need_weights)
    expected, _ = ordinary(x, source, mask=mask, need_weights=need_weights)
    assert_close(got, expected, **F64)


@pytest.mark.parametrize("n_kv_heads", [1, 2])
@pytest.mark.parametrize("cross", [True, False], ids=["cross", "self"])
def test_shared_heads_equal_torch_sdpa_with_enable_gqa(n_kv_heads: int, cross: bool) -> None:
    shared, _ = _pair(n_kv_heads, cross=cross)
    x, source, mask = _inputs(torch.device("cpu"), cross=cross)
    mask = mask.clone()
    mask[1, ..., 0] = True  # every row sees a key: SDPA itself gives NaN on fully masked rows
    q = shared.split_heads(shared.q_proj(x))  # [B, H, T_q, d_head]
    k, v = shared.project_source(x if source is None else source)  # [B, H_kv, T_k, d_head]
    context = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=True)  # [B, H, T_q, d_head]
    expected = shared.out_proj(shared.merge_heads(context))
    for path in PATHS:
        need_weights = _use_path(shared, path)
        got, _ = shared(x, source, mask=mask, need_weights=need_weights)
        assert_close(got, expected, **F64)


@pytest.mark.parametrize("path", ["hand", "sdpa", "chunked"])
@pytest.mark.parametrize("n_kv_heads", [1, 2])
def test_gradients_of_shared_heads_are_the_repeated_copies_summed(path: str, n_kv_heads: int) -> None:
    shared, ordinary = _pair(n_kv_heads, cross=True)
    x, source, mask = _inputs(torch.device("cpu"), cross=True)
    direction = torch.randn(3, 5, D_MODEL, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    sources = []
    for module in (shared, ordinary):
        _use_path(module, path)
        src = source.clone().requires_grad_(True)
        out, _ = module(x, src, mask=mask)
        (out * direction).sum().backward()
        sources.append(src)
    group = N_HEADS // n_kv_heads
    for name in ("k_proj", "v_proj"):
        ours, theirs = getattr(shared, name), getattr(ordinary, name)
        assert ours.weight.grad is not None and ours.weight.grad.abs().sum() > 0
        summed = theirs.weight.grad.view(n_kv_heads, group, D_HEAD, D_SOURCE).sum(dim=1).reshape(-1, D_SOURCE)
        assert_close(ours.weight.grad, summed, **F64)
        assert_close(ours.bias.grad, theirs.bias.grad.view(n_kv_heads, group, D_HEAD).sum(dim=1).reshape(-1), **F64)
    for name in ("q_proj", "out_proj"):
        assert_close(getattr(shared, name).weight.grad, getattr(ordinary, name).weight.grad, **F64)
    assert_close(sources[0].grad, sources[1].grad, **F64)


# ---- what is cached: project_source, KVCache, beams ----

@pytest.mark.parametrize("n_kv_heads", [1, 2, 4])
def test_project_source_keeps_n_kv_heads_and_its_bytes_match_the_arithmetic(n_kv_heads: int) -> None:
    shared, _ = _pair(n_kv_heads, cross=True)
    source = torch.randn(3, 7, D_SOURCE, dtype=torch.float64)
    source_kv = shared.project_source(source)
    assert isinstance(source_kv, SourceKV)
    assert source_kv.k.shape == source_kv.v.shape == (3, n_kv_heads, 7, D_HEAD)
    one_layer = cross_kv_cache_bytes(7, n_layers=1, n_kv_heads=n_kv_heads, d_head=D_HEAD, batch=3,
                                     bytes_per_value=source_kv.k.element_size())
    assert source_kv.k.nbytes + source_kv.v.nbytes == one_layer
    assert source_kv.k.nbytes == one_layer // 2
    assert one_layer * (N_HEADS // n_kv_heads) == cross_kv_cache_bytes(7, n_layers=1, n_kv_heads=N_HEADS,
                                                                       d_head=D_HEAD, batch=3, bytes_per_value=8)


def test_a_decoder_cache_of_shared_heads_holds_the_bytes_the_arithmetic_says() -> None:
    layers = [_pair(2, cross=True, seed=seed)[0] for seed in range(3)]  # 3 decoder layers' cross-attention
    source = torch.randn(4, 9, D_SOURCE, dtype=torch.float64)
    cache = DecoderCache(cross_kv=[layer.project_source(source) for layer in layers])
    assert cache.nbytes() == cross_kv_cache_bytes(9, n_layers=3, n_kv_heads=2, d_head=D_HEAD, batch=4,
                                                  bytes_per_value=8)


@pytest.mark.parametrize("path", ["hand", "sdpa", "chunked"])
@pytest.mark.parametrize("n_kv_heads", [1, 2])
def test_incremental_decoding_with_a_kv_cache_equals_the_full_causal_forward(path: str, n_kv_heads: int) -> None:
    shared, _ = _pair(n_kv_heads, cross=False)
    need_weights = _use_path(shared, path)
    x = torch.randn(2, 6, D_MODEL, dtype=torch.float64)
    full, _ = shared(x, mask=torch.ones(6, 6, dtype=torch.bool).tril(), need_weights=need_weights)
    cache = KVCache()
    steps = [shared(x[:, t : t + 1], kv_cache=cache, need_weights=need_weights)[0] for t in range(6)]
    assert_close(torch.cat(steps, dim=1), full, **F64)
    assert cache.k is not None and cache.k.shape == (2, n_kv_heads, 6, D_HEAD)  # the cache holds the shared heads
    assert cache.nbytes() == 2 * 2 * n_kv_heads * 6 * D_HEAD * 8


@pytest.mark.parametrize("path", ["hand", "sdpa", "chunked"])
@pytest.mark.parametrize("n_kv_heads", [1, 2])
def test_beams_sharing_a_source_kv_equal_one_copy_of_the_source_per_beam(path: str, n_kv_heads: int) -> None:
    shared, ordinary = _pair(n_kv_heads, cross=True)
    need_weights = _use_path(shared, path)
    _use_path(ordinary, path)
    beams = 3
    _, source, padding = _inputs(torch.device("cpu"), cross=True)  # 3 sources, row 1 fully padded
    x = torch.randn(3 * beams, 2, D_MODEL, dtype=torch.float64)  # beams of one source are consecutive rows
    got, got_weights = shared(x, source_kv=shared.project_source(source), mask=padding, need_weights=need_weights)
    expected, expected_weights = ordinary(x, source.repeat_interleave(beams, 0),
                                          mask=padding.repeat_interleave(beams, 0), need_weights=need_weights)
    assert_close(got, expected, **F64)
    if need_weights:
        assert got_weights is not None and got_weights.shape == (3 * beams, N_HEADS, 2, 7)
        assert_close(got_weights, expected_weights, **F64)


# ---- parameters, defaults, errors ----

@pytest.mark.parametrize("n_kv_heads", [1, 2, 4])
def test_key_and_value_projections_shrink_by_n_heads_over_n_kv_heads(n_kv_heads: int) -> None:
    shared = MultiHeadAttention(D_MODEL, N_HEADS, d_source=D_SOURCE, n_kv_heads=n_kv_heads)
    ordinary = MultiHeadAttention(D_MODEL, N_HEADS, d_source=D_SOURCE)
    shrink = N_HEADS // n_kv_heads
    for name in ("k_proj", "v_proj"):
        ours, theirs = getattr(shared, name), getattr(ordinary, name)
        assert ours.weight.shape == (n_kv_heads * D_HEAD, D_SOURCE)
        assert ours.weight.numel() * shrink == theirs.weight.numel()
        assert ours.bias.numel() * shrink == theirs.bias.numel()
    n_params = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    kv_params = 2 * (D_SOURCE + 1) * D_MODEL
    assert n_params(ordinary) - n_params(shared) == kv_params - kv_params // shrink


def test_n_kv_heads_none_or_n_heads_changes_nothing() -> None:
    modules = []
    for n_kv_heads in (None, N_HEADS):
        torch.manual_seed(3)
        modules.append(MultiHeadAttention(D_MODEL, N_HEADS, n_kv_heads=n_kv_heads).double())
    plain, explicit = (m.state_dict() for m in modules)
    assert list(plain) == ["q_proj.weight", "q_proj.bias", "k_proj.weight", "k_proj.bias", "v_proj.weight",
                           "v_proj.bias", "out_proj.weight", "out_proj.bias"]
    assert all(torch.equal(plain[name], explicit[name]) for name in plain)
    assert all(plain[name].shape == (D_MODEL, D_MODEL) for name in plain if name.endswith("weight"))
    x = torch.randn(2, 3, D_MODEL, dtype=torch.float64)
    assert torch.equal(modules[0](x)[0], modules[1](x)[0])
    assert modules[0].n_kv_heads == N_HEADS


@pytest.mark.parametrize("n_kv_heads", [0, 3, -2, 8])
def test_rejects_n_kv_heads_that_do_not_divide_n_heads(n_kv_heads: int) -> None:
    with pytest.raises(ValueError, match=expect("n_kv_heads must be None or a divisor of n_heads=4", "one of 1, 2, 4",
                                                f"got n_kv_heads={n_kv_heads}")):
        MultiHeadAttention(D_MODEL, N_HEADS, n_kv_heads=n_kv_heads)


def test_rejects_a_source_kv_with_the_wrong_number_of_heads() -> None:
    shared, ordinary = _pair(2, cross=True)
    source = torch.randn(2, 5, D_SOURCE, dtype=torch.float64)
    x = torch.randn(2, 3, D_MODEL, dtype=torch.float64)
    with pytest.raises(ValueError, match=expect("source_kv must be SourceKV(k, v) from project_source",
                                                "[B, n_kv_heads=2 (shared by n_heads=4 query heads), S, d_head=4]",
                                                "got k [2, 4, 5, 4], v [2, 4, 5, 4]")):
        shared(x, source_kv=ordinary.project_source(source))  # 4 heads where 2 are expected
    with pytest.raises(ValueError, match=expect("[B, H=4, S, d_head=4]", "got k [2, 2, 5, 4], v [2, 2, 5, 4]")):
        ordinary(x, source_kv=shared.project_source(source))  # 2 heads where 4 are expected


# ---- cache arithmetic ----

def test_cross_kv_cache_bytes_of_whisper_large_v3() -> None:
    whisper = next(m for m in ENCODER_DECODERS if m.name == "Whisper large-v3")
    assert (whisper.n_decoder_layers, whisper.n_heads, whisper.d_head, whisper.t_src) == (32, 20, 64, 1500)
    expected = 2 * 32 * 20 * 64 * 1500 * 2  # keys and values, 32 layers, 20 heads of 64, 1500 frames, float16
    assert cross_kv_cache_bytes(1500, n_layers=32, n_kv_heads=20, d_head=64) == expected == whisper.cross_kv_bytes()
    assert whisper.cross_kv_bytes(n_kv_heads=1) * 20 == expected
    assert cross_kv_cache_bytes(1500, n_layers=32, n_kv_heads=20, d_head=64, batch=4, bytes_per_value=4) == 8 * expected


def test_mla_cache_of_deepseek_v2_is_2_25_groups_of_gqa() -> None:
    d = DEEPSEEK_V2_MLA
    assert (d.n_layers, d.n_heads, d.d_head, d.d_latent, d.d_rope) == (60, 128, 128, 512, 64)
    per_token_layer = mla_cache_bytes(1, n_layers=1, d_latent=d.d_latent, d_rope=d.d_rope, bytes_per_value=1)
    assert per_token_layer == 576
    assert per_token_layer == 2.25 * 2 * d.d_head  # the paper's "GQA with 2.25 groups"
    ratio = mla_cache_ratio(n_heads=d.n_heads, d_head=d.d_head, d_latent=d.d_latent, d_rope=d.d_rope)
    assert ratio == pytest.approx(576 / 32768)
    mha = cross_kv_cache_bytes(1000, n_layers=60, n_kv_heads=128, d_head=128)  # same formula as a self-attention cache
    assert mla_cache_bytes(1000, n_layers=60, d_latent=512, d_rope=64) == pytest.approx(ratio * mha)


def test_kv_cache_table_rows() -> None:
    rows = kv_cache_table((4096, 65536), gqa_kv_heads=4)
    led = [r for r in rows if r["model"] == "LED-base-16384"]
    assert [r["T_src"] for r in led] == [16384, 65536]  # its own length, then only the longer ones
    whisper = [r for r in rows if r["model"] == "Whisper large-v3"]
    assert [r["T_src"] for r in whisper] == [1500, 4096, 65536]
    first = whisper[0]
    assert first["MHA (MiB)"] == pytest.approx(2 * 32 * 20 * 64 * 1500 * 2 / 2**20, abs=0.01)
    assert first["GQA, 4 K/V heads (MiB)"] == pytest.approx(first["MHA (MiB)"] / 5, abs=0.01)
    assert first["MQA (MiB)"] == pytest.approx(first["MHA (MiB)"] / 20, abs=0.01)
    assert kv_cache_table((4096,), gqa_kv_heads=5)[0]["GQA, 5 K/V heads (MiB)"] is not None  # 5 divides 20
    assert kv_cache_table((4096,), gqa_kv_heads=5)[4]["GQA, 5 K/V heads (MiB)"] is None  # T5-base: 12 heads


@pytest.mark.parametrize(("call", "parts"), [
    (lambda: cross_kv_cache_bytes(0, n_layers=1, n_kv_heads=1, d_head=1), ("t_src must be an int >= 1", "t_src=0")),
    (lambda: cross_kv_cache_bytes(8, n_layers=2, n_kv_heads=1.5, d_head=4), ("n_kv_heads=1.5",)),
    (lambda: mla_cache_bytes(8, n_layers=1, d_latent=-1, d_rope=4), ("d_latent must be an int >= 1", "d_latent=-1")),
    (lambda: mla_cache_ratio(n_heads=0, d_head=1, d_latent=1, d_rope=1), ("n_heads=0",)),
    (lambda: kv_cache_table(()), ("t_src_values must hold at least one source length",)),
    (lambda: kv_cache_table((4096, 0)), ("t_src_values[1]=0",)),
])
def test_cache_arithmetic_rejects_bad_sizes(call, parts: tuple[str, ...]) -> None:
    with pytest.raises(ValueError, match=expect(*parts)):
        call()


def test_the_reference_attention_is_what_the_hand_path_uses() -> None:
    """Guard for the tests above: the hand path's weights are those of ``scaled_dot_product_attention`` on the
    repeated heads (so a wrong grouping inside the module could not hide behind a wrong reference)."""
    shared, _ = _pair(2, cross=True)
    x, source, mask = _inputs(torch.device("cpu"), cross=True)
    _, weights = shared(x, source, mask=mask, need_weights=True)
    q = shared.split_heads(shared.q_proj(x))
    k, v = shared.project_source(source)
    k_loop = torch.stack([k[:, h // 2] for h in range(N_HEADS)], dim=1)  # query head h reads K/V head h // 2
    v_loop = torch.stack([v[:, h // 2] for h in range(N_HEADS)], dim=1)
    _, expected = scaled_dot_product_attention(q, k_loop, v_loop, mask)
    assert_close(weights, expected, **F64)
