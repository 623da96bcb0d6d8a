"""course_lib against PyTorch's own implementations, with the same weights copied across.

Each test builds the PyTorch module (eval mode, dropout 0), copies its weights into ours with a
``course_lib.reference`` loader, runs both on the same inputs and asserts the outputs agree to
float32 (1e-5) or float64 (1e-10) precision. PyTorch's bool masks in ``nn.MultiheadAttention`` /
``nn.Transformer*`` mean True = *not* allowed; ours mean True = may attend, so the tests convert.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.testing import assert_close

import course_lib as cl
from course_lib.reference import (
    load_torch_decoder_layer,
    load_torch_encoder_layer,
    load_torch_mha,
    load_torch_transformer,
)

DTYPES = [torch.float32, torch.float64]
TOL = {torch.float32: {"atol": 1e-5, "rtol": 1e-5}, torch.float64: {"atol": 1e-10, "rtol": 1e-10}}

# (use_sdpa, need_weights): the SDPA fast path, the hand-written path, and the weights-returning path.
MHA_PATHS = pytest.mark.parametrize(
    ("use_sdpa", "need_weights"),
    [(True, False), (False, False), (True, True), (False, True)],
    ids=["sdpa", "handwritten", "sdpa-module-with-weights", "handwritten-with-weights"],
)
DTYPE = pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
NORM_FIRST = pytest.mark.parametrize("norm_first", [False, True], ids=["post-norm", "pre-norm"])

pytestmark = pytest.mark.usefixtures("single_thread")


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def randn(*shape: int, seed: int, device: torch.device, dtype: torch.dtype) -> Tensor:
    """Reproducible normal tensor, drawn on the CPU and moved (so every device sees the same values)."""
    return torch.randn(*shape, generator=_gen(seed), dtype=torch.float64).to(device=device, dtype=dtype)


def key_padding(lengths: list[int], max_len: int, device: torch.device) -> Tensor:
    """PyTorch ``key_padding_mask`` ``[B, S]``: True at padded positions (>= length)."""
    return torch.arange(max_len, device=device)[None, :] >= torch.tensor(lengths, device=device)[:, None]


def random_mask(*shape: int, seed: int, device: torch.device) -> Tensor:
    """Random bool mask (True = may attend) in which every query row keeps at least one key."""
    mask = torch.rand(*shape, generator=_gen(seed)) < 0.6
    mask[..., 0] = True  # never a fully masked row: PyTorch returns NaN there and we return 0
    return mask.to(device)


def torch_mha(embed_dim: int, heads: int, device: torch.device, dtype: torch.dtype, seed: int,
              kdim: int | None = None) -> nn.MultiheadAttention:
    torch.manual_seed(seed)
    module = nn.MultiheadAttention(embed_dim, heads, dropout=0.0, batch_first=True, kdim=kdim, vdim=kdim)
    with torch.no_grad():  # non-zero biases, so a bias copied to the wrong projection shows
        module.in_proj_bias.normal_()
        module.out_proj.bias.normal_()
    return module.to(device=device, dtype=dtype).eval()


def our_mha(theirs: nn.MultiheadAttention, use_sdpa: bool, d_source: int | None = None) -> cl.MultiHeadAttention:
    ours = cl.MultiHeadAttention(theirs.embed_dim, theirs.num_heads, d_source=d_source, use_sdpa=use_sdpa)
    ours = ours.to(device=theirs.out_proj.weight.device, dtype=theirs.out_proj.weight.dtype)
    return load_torch_mha(ours, theirs).eval()


# --- scaled_dot_product_attention vs F.scaled_dot_product_attention ---------------------------------


@DTYPE
def test_sdpa_matches_torch_without_mask(device: torch.device, dtype: torch.dtype) -> None:
    q, k, v = (randn(2, 3, 5, 8, seed=s, device=device, dtype=dtype) for s in (1, 2, 3))
    output, weights = cl.scaled_dot_product_attention(q, k, v)
    assert_close(output, F.scaled_dot_product_attention(q, k, v), **TOL[dtype])
    assert weights.shape == (2, 3, 5, 5)
    assert_close(weights @ v, output, **TOL[dtype])


@DTYPE
@pytest.mark.parametrize("mask_shape", [(2, 1, 1, 7), (2, 1, 5, 7), (2, 3, 5, 7), (5, 7)],
                         ids=["padding-B11S", "B1TS", "BHTS", "TS"])
def test_sdpa_matches_torch_with_bool_mask(device: torch.device, dtype: torch.dtype,
                                           mask_shape: tuple[int, ...]) -> None:
    q = randn(2, 3, 5, 8, seed=1, device=device, dtype=dtype)
    k = randn(2, 3, 7, 8, seed=2, device=device, dtype=dtype)
    v = randn(2, 3, 7, 4, seed=3, device=device, dtype=dtype)
    mask = random_mask(*mask_shape, seed=4, device=device)
    output, weights = cl.scaled_dot_product_attention(q, k, v, mask)
    assert_close(output, F.scaled_dot_product_attention(q, k, v, attn_mask=mask), **TOL[dtype])
    assert weights.shape == (2, 3, 5, 7)
    assert bool((weights.masked_select(~mask.expand(2, 3, 5, 7)) == 0).all())


@DTYPE
def test_sdpa_padding_mask_matches_torch_on_sequences_of_different_lengths(
    device: torch.device, dtype: torch.dtype
) -> None:
    q, k, v = (randn(3, 2, 6, 4, seed=s, device=device, dtype=dtype) for s in (5, 6, 7))
    mask = cl.padding_mask(torch.tensor([6, 2, 4], device=device))  # [B, 1, 1, S]
    output, _ = cl.scaled_dot_product_attention(q, k, v, mask)
    assert_close(output, F.scaled_dot_product_attention(q, k, v, attn_mask=mask), **TOL[dtype])


@DTYPE
def test_causal_mask_matches_torch_is_causal(device: torch.device, dtype: torch.dtype) -> None:
    q, k, v = (randn(2, 2, 6, 8, seed=s, device=device, dtype=dtype) for s in (8, 9, 10))
    output, weights = cl.scaled_dot_product_attention(q, k, v, cl.causal_mask(6, device=device))
    assert_close(output, F.scaled_dot_product_attention(q, k, v, is_causal=True), **TOL[dtype])
    assert bool((weights.triu(diagonal=1) == 0).all())


@DTYPE
def test_sdpa_matches_torch_when_query_and_key_lengths_differ(device: torch.device, dtype: torch.dtype) -> None:
    q = randn(2, 4, 3, 8, seed=11, device=device, dtype=dtype)
    k = randn(2, 4, 9, 8, seed=12, device=device, dtype=dtype)
    v = randn(2, 4, 9, 5, seed=13, device=device, dtype=dtype)
    output, weights = cl.scaled_dot_product_attention(q, k, v)
    assert output.shape == (2, 4, 3, 5) and weights.shape == (2, 4, 3, 9)
    assert_close(output, F.scaled_dot_product_attention(q, k, v), **TOL[dtype])


@DTYPE
def test_sdpa_matches_torch_with_extra_leading_batch_dims(device: torch.device, dtype: torch.dtype) -> None:
    q = randn(2, 3, 2, 4, 6, seed=14, device=device, dtype=dtype)
    k = randn(2, 3, 2, 5, 6, seed=15, device=device, dtype=dtype)
    v = randn(2, 3, 2, 5, 7, seed=16, device=device, dtype=dtype)
    mask = random_mask(3, 1, 4, 5, seed=17, device=device)
    output, _ = cl.scaled_dot_product_attention(q, k, v, mask)
    assert output.shape == (2, 3, 2, 4, 7)
    assert_close(output, F.scaled_dot_product_attention(q, k, v, attn_mask=mask), **TOL[dtype])


@DTYPE
def test_sdpa_custom_scale_matches_torch(device: torch.device, dtype: torch.dtype) -> None:
    q, k, v = (randn(2, 5, 8, seed=s, device=device, dtype=dtype) for s in (18, 19, 20))
    output, _ = cl.scaled_dot_product_attention(q, k, v, scale=0.9)
    assert_close(output, F.scaled_dot_product_attention(q, k, v, scale=0.9), **TOL[dtype])


# --- MultiHeadAttention vs nn.MultiheadAttention -------------------------------------------------------


def _compare_mha(ours: cl.MultiHeadAttention, theirs: nn.MultiheadAttention, x: Tensor, source: Tensor | None,
                 need_weights: bool, dtype: torch.dtype, *, our_mask: Tensor | None = None,
                 key_padding_mask: Tensor | None = None, attn_mask: Tensor | None = None) -> None:
    kv = x if source is None else source
    with torch.no_grad():
        expected, expected_weights = theirs(x, kv, kv, key_padding_mask=key_padding_mask, attn_mask=attn_mask,
                                            need_weights=True, average_attn_weights=False)
        output, weights = ours(x, source, mask=our_mask, need_weights=need_weights)
    assert_close(output, expected, **TOL[dtype])
    if need_weights:
        assert weights is not None and weights.shape == expected_weights.shape
        assert_close(weights, expected_weights, **TOL[dtype])
    else:
        assert weights is None


@DTYPE
@MHA_PATHS
def test_mha_self_attention_matches_torch(device: torch.device, dtype: torch.dtype, use_sdpa: bool,
                                          need_weights: bool) -> None:
    theirs = torch_mha(16, 4, device, dtype, seed=0)
    x = randn(3, 6, 16, seed=21, device=device, dtype=dtype)
    _compare_mha(our_mha(theirs, use_sdpa), theirs, x, None, need_weights, dtype)


@DTYPE
@MHA_PATHS
def test_mha_cross_attention_with_different_lengths_matches_torch(
    device: torch.device, dtype: torch.dtype, use_sdpa: bool, need_weights: bool
) -> None:
    theirs = torch_mha(16, 2, device, dtype, seed=1)
    x = randn(2, 3, 16, seed=22, device=device, dtype=dtype)
    source = randn(2, 8, 16, seed=23, device=device, dtype=dtype)
    _compare_mha(our_mha(theirs, use_sdpa), theirs, x, source, need_weights, dtype)


@DTYPE
@MHA_PATHS
def test_mha_key_padding_mask_matches_torch(device: torch.device, dtype: torch.dtype, use_sdpa: bool,
                                            need_weights: bool) -> None:
    theirs = torch_mha(16, 4, device, dtype, seed=2)
    x = randn(3, 4, 16, seed=24, device=device, dtype=dtype)
    source = randn(3, 7, 16, seed=25, device=device, dtype=dtype)
    kpm = key_padding(lengths=[7, 3, 1], max_len=7, device=device)  # True = ignore
    _compare_mha(our_mha(theirs, use_sdpa), theirs, x, source, need_weights, dtype,
                 our_mask=cl.mask_from_key_padding_mask(kpm), key_padding_mask=kpm)


@DTYPE
@MHA_PATHS
def test_mha_attn_mask_matches_torch_with_inverted_convention(
    device: torch.device, dtype: torch.dtype, use_sdpa: bool, need_weights: bool
) -> None:
    theirs = torch_mha(16, 4, device, dtype, seed=3)
    x = randn(2, 5, 16, seed=26, device=device, dtype=dtype)
    allowed = random_mask(5, 5, seed=27, device=device)  # ours: True = may attend
    _compare_mha(our_mha(theirs, use_sdpa), theirs, x, None, need_weights, dtype,
                 our_mask=allowed, attn_mask=~allowed)  # theirs: True = not allowed


@DTYPE
@MHA_PATHS
def test_mha_per_head_mask_matches_torch_3d_attn_mask(
    device: torch.device, dtype: torch.dtype, use_sdpa: bool, need_weights: bool
) -> None:
    theirs = torch_mha(16, 4, device, dtype, seed=4)
    x = randn(2, 5, 16, seed=28, device=device, dtype=dtype)
    source = randn(2, 6, 16, seed=29, device=device, dtype=dtype)
    allowed = random_mask(2, 4, 5, 6, seed=30, device=device)  # [B, H, T_q, T_k]
    _compare_mha(our_mha(theirs, use_sdpa), theirs, x, source, need_weights, dtype,
                 our_mask=allowed, attn_mask=~allowed.reshape(8, 5, 6))  # theirs: [B * H, T_q, T_k]


@DTYPE
@MHA_PATHS
def test_mha_combined_padding_and_causal_masks_match_torch(
    device: torch.device, dtype: torch.dtype, use_sdpa: bool, need_weights: bool
) -> None:
    theirs = torch_mha(16, 2, device, dtype, seed=5)
    x = randn(3, 6, 16, seed=31, device=device, dtype=dtype)
    kpm = key_padding(lengths=[6, 4, 2], max_len=6, device=device)
    causal = cl.causal_mask(6, device=device)
    ours_mask = cl.combine_masks(cl.mask_from_key_padding_mask(kpm), causal)  # [B, 1, T, T]
    _compare_mha(our_mha(theirs, use_sdpa), theirs, x, None, need_weights, dtype,
                 our_mask=ours_mask, key_padding_mask=kpm, attn_mask=~causal)


@DTYPE
@MHA_PATHS
def test_mha_with_source_size_different_from_d_model_matches_torch_kdim_vdim(
    device: torch.device, dtype: torch.dtype, use_sdpa: bool, need_weights: bool
) -> None:
    theirs = torch_mha(16, 4, device, dtype, seed=6, kdim=10)
    assert theirs.in_proj_weight is None  # PyTorch keeps separate q/k/v weights: the other loader branch
    x = randn(2, 3, 16, seed=32, device=device, dtype=dtype)
    source = randn(2, 5, 10, seed=33, device=device, dtype=dtype)
    kpm = key_padding(lengths=[5, 2], max_len=5, device=device)
    _compare_mha(our_mha(theirs, use_sdpa, d_source=10), theirs, x, source, need_weights, dtype,
                 our_mask=cl.mask_from_key_padding_mask(kpm), key_padding_mask=kpm)


# --- EncoderLayer, DecoderLayer, Encoder + Decoder vs nn.Transformer* -------------------------------

D_MODEL, HEADS, D_FF = 16, 4, 32


def _randomise_norms(module: nn.Module, seed: int) -> None:
    """Give every LayerNorm a non-trivial affine part, so a norm loaded into the wrong slot shows."""
    gen = _gen(seed)
    with torch.no_grad():
        for sub in module.modules():
            if isinstance(sub, nn.LayerNorm):
                sub.weight.copy_(1 + 0.3 * torch.randn(sub.weight.shape, generator=gen))
                sub.bias.copy_(0.3 * torch.randn(sub.bias.shape, generator=gen))


@DTYPE
@NORM_FIRST
@pytest.mark.parametrize("need_weights", [False, True], ids=["sdpa", "handwritten"])
def test_encoder_layer_matches_torch_with_padding_and_causal_masks(
    device: torch.device, dtype: torch.dtype, norm_first: bool, need_weights: bool
) -> None:
    torch.manual_seed(7)
    theirs = nn.TransformerEncoderLayer(D_MODEL, HEADS, D_FF, dropout=0.0, batch_first=True, norm_first=norm_first)
    _randomise_norms(theirs, seed=7)
    theirs = theirs.to(device=device, dtype=dtype).eval()
    ours = cl.EncoderLayer(D_MODEL, HEADS, D_FF, norm_first=norm_first).to(device=device, dtype=dtype)
    ours = load_torch_encoder_layer(ours, theirs).eval()
    x = randn(3, 6, D_MODEL, seed=34, device=device, dtype=dtype)
    kpm = key_padding(lengths=[6, 3, 1], max_len=6, device=device)
    causal = cl.causal_mask(6, device=device)
    with torch.no_grad():
        expected_pad = theirs(x, src_key_padding_mask=kpm)
        expected_causal = theirs(x, src_mask=~causal, src_key_padding_mask=kpm)
        output_pad, _ = ours(x, cl.mask_from_key_padding_mask(kpm), need_weights=need_weights)
        output_causal, weights = ours(x, cl.combine_masks(cl.mask_from_key_padding_mask(kpm), causal),
                                      need_weights=need_weights)
    assert_close(output_pad, expected_pad, **TOL[dtype])
    assert_close(output_causal, expected_causal, **TOL[dtype])
    assert (weights is not None) == need_weights


@DTYPE
@NORM_FIRST
@pytest.mark.parametrize("need_weights", [False, True], ids=["sdpa", "handwritten"])
def test_decoder_layer_matches_torch_with_causal_and_padding_masks(
    device: torch.device, dtype: torch.dtype, norm_first: bool, need_weights: bool
) -> None:
    torch.manual_seed(8)
    theirs = nn.TransformerDecoderLayer(D_MODEL, HEADS, D_FF, dropout=0.0, batch_first=True, norm_first=norm_first)
    _randomise_norms(theirs, seed=8)
    theirs = theirs.to(device=device, dtype=dtype).eval()
    ours = cl.DecoderLayer(D_MODEL, HEADS, D_FF, norm_first=norm_first).to(device=device, dtype=dtype)
    ours = load_torch_decoder_layer(ours, theirs).eval()
    y = randn(3, 5, D_MODEL, seed=35, device=device, dtype=dtype)
    memory = randn(3, 7, D_MODEL, seed=36, device=device, dtype=dtype)
    tgt_kpm = key_padding(lengths=[5, 2, 4], max_len=5, device=device)
    mem_kpm = key_padding(lengths=[7, 1, 4], max_len=7, device=device)
    causal = cl.causal_mask(5, device=device)
    with torch.no_grad():
        expected = theirs(y, memory, tgt_mask=~causal, tgt_key_padding_mask=tgt_kpm,
                          memory_key_padding_mask=mem_kpm)
        output, self_w, cross_w = ours(
            y, memory, self_mask=cl.combine_masks(causal, cl.mask_from_key_padding_mask(tgt_kpm)),
            memory_mask=cl.mask_from_key_padding_mask(mem_kpm), need_weights=need_weights,
        )
    assert_close(output, expected, **TOL[dtype])
    if need_weights:
        assert self_w is not None and self_w.shape == (3, HEADS, 5, 5)
        assert cross_w is not None and cross_w.shape == (3, HEADS, 5, 7)
    else:
        assert self_w is None and cross_w is None


@DTYPE
@NORM_FIRST
@pytest.mark.parametrize("need_weights", [False, True], ids=["sdpa", "handwritten"])
def test_encoder_and_decoder_match_torch_transformer(
    device: torch.device, dtype: torch.dtype, norm_first: bool, need_weights: bool
) -> None:
    torch.manual_seed(9)
    theirs = nn.Transformer(D_MODEL, HEADS, num_encoder_layers=2, num_decoder_layers=2, dim_feedforward=D_FF,
                            dropout=0.0, batch_first=True, norm_first=norm_first)
    _randomise_norms(theirs, seed=9)
    theirs = theirs.to(device=device, dtype=dtype).eval()
    encoder = cl.Encoder(D_MODEL, HEADS, D_FF, 2, norm_first=norm_first).to(device=device, dtype=dtype)
    decoder = cl.Decoder(D_MODEL, HEADS, D_FF, 2, norm_first=norm_first).to(device=device, dtype=dtype)
    encoder, decoder = load_torch_transformer(encoder, decoder, theirs)
    encoder.eval()
    decoder.eval()

    src_lengths, tgt_lengths = [7, 3, 5], [6, 6, 2]
    src = randn(3, 7, D_MODEL, seed=37, device=device, dtype=dtype)
    tgt = randn(3, 6, D_MODEL, seed=38, device=device, dtype=dtype)
    src_kpm, tgt_kpm = key_padding(src_lengths, 7, device), key_padding(tgt_lengths, 6, device)
    causal = cl.causal_mask(6, device=device)
    src_mask = cl.mask_from_key_padding_mask(src_kpm)
    with torch.no_grad():
        expected = theirs(src, tgt, tgt_mask=~causal, src_key_padding_mask=src_kpm, tgt_key_padding_mask=tgt_kpm,
                          memory_key_padding_mask=src_kpm)
        # In eval, nn.TransformerEncoder may take its nested-tensor fast path, which returns 0 at padded
        # positions: compare the encoder output at real positions only.
        expected_memory = theirs.encoder(src, src_key_padding_mask=src_kpm)
        memory, enc_w = encoder(src, src_mask, need_weights=need_weights)
        output, self_w, cross_w = decoder(
            tgt, memory, self_mask=cl.combine_masks(causal, cl.mask_from_key_padding_mask(tgt_kpm)),
            memory_mask=src_mask, need_weights=need_weights,
        )
    real = ~src_kpm  # [B, S]
    assert_close(memory[real], expected_memory[real], **TOL[dtype])
    assert_close(output, expected, **TOL[dtype])
    assert len(enc_w) == len(self_w) == len(cross_w) == (2 if need_weights else 0)
