"""Lesson 10's pieces against PyTorch's own modules: patches, 2-D positions, the cross-attention block, the
captioner's cached decoding."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from torch.testing import assert_close

from course_lib import scenes
from course_lib.vision import (
    Captioner,
    CaptionerConfig,
    CrossAttentionBlock,
    PatchEncoder,
    patch_positions_2d,
    patchify,
)

TOLERANCE = {torch.float32: dict(atol=1e-5, rtol=1e-5), torch.float64: dict(atol=1e-10, rtol=1e-10)}


def images_of(n: int = 4, seed: int = 0, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.from_numpy(scenes.render(scenes.random_scenes(np.random.default_rng(seed), n), seed)).to(dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_a_linear_layer_on_patches_is_a_strided_convolution(dtype: torch.dtype) -> None:
    torch.manual_seed(0)
    images, p, d = images_of(dtype=dtype), 8, 24
    linear = nn.Linear(3 * p * p, d, dtype=dtype)
    conv = nn.Conv2d(3, d, kernel_size=p, stride=p, dtype=dtype)
    with torch.no_grad():
        conv.weight.copy_(linear.weight.view(d, 3, p, p))
        conv.bias.copy_(linear.bias)
    reference = conv(images).flatten(2).transpose(1, 2)  # [B, N, d], raster order
    assert_close(linear(patchify(images, p)), reference, **TOLERANCE[dtype])


def test_patches_come_in_raster_order_channel_first() -> None:
    images = torch.arange(2 * 3 * 8 * 12, dtype=torch.float32).reshape(2, 3, 8, 12)
    patches = patchify(images, 4)  # [2, 6, 48]: 2 rows of 3 patches
    assert patches.shape == (2, 6, 48)
    for n in range(6):
        row, col = divmod(n, 3)
        assert torch.equal(patches[:, n], images[:, :, 4 * row:4 * row + 4, 4 * col:4 * col + 4].reshape(2, 48))


@pytest.mark.parametrize("bad, message", [
    (torch.zeros(2, 3, 48, 48), "patch_size must divide"),
    (torch.zeros(2, 3, 48, 48, dtype=torch.uint8), "floating point"),
    (torch.zeros(3, 48, 48), r"\[B, C, H, W\]"),
])
def test_patchify_names_what_it_expected(bad: torch.Tensor, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        patchify(bad, 5 if "divide" in message else 8)


def test_2d_positions_code_the_row_in_one_half_and_the_column_in_the_other() -> None:
    table = patch_positions_2d(3, 4, 16).reshape(3, 4, 16)
    assert torch.equal(table[0, 0, :8], table[0, 3, :8]) and not torch.equal(table[0, 0, :8], table[1, 0, :8])
    assert torch.equal(table[0, 2, 8:], table[2, 2, 8:]) and not torch.equal(table[0, 2, 8:], table[0, 1, 8:])
    assert len({tuple(v.tolist()) for v in table.reshape(12, 16)}) == 12  # every patch has its own code
    with pytest.raises(ValueError, match="divisible by 4"):
        patch_positions_2d(3, 3, 18)


def torch_block(block: CrossAttentionBlock, dtype: torch.dtype) -> dict[str, nn.Module]:
    """The same block from PyTorch's modules, with ``block``'s weights copied in."""
    attn, d_model = block.attn, block.attn.d_model
    mha = nn.MultiheadAttention(d_model, attn.n_heads, kdim=attn.d_source, vdim=attn.d_source, batch_first=True,
                                dtype=dtype)
    ffn = nn.Sequential(nn.Linear(d_model, block.ffn.linear1.out_features), nn.GELU(),
                        nn.Linear(block.ffn.linear1.out_features, d_model)).to(dtype)
    norms = [nn.LayerNorm(n.normalized_shape, dtype=dtype) for n in (block.norm_query, block.norm_source,
                                                                       block.norm_ffn)]
    with torch.no_grad():
        mha.q_proj_weight.copy_(attn.q_proj.weight)
        mha.k_proj_weight.copy_(attn.k_proj.weight)
        mha.v_proj_weight.copy_(attn.v_proj.weight)
        mha.in_proj_bias.copy_(torch.cat([attn.q_proj.bias, attn.k_proj.bias, attn.v_proj.bias]))
        mha.out_proj.load_state_dict(attn.out_proj.state_dict())
        ffn[0].load_state_dict(block.ffn.linear1.state_dict())
        ffn[2].load_state_dict(block.ffn.linear2.state_dict())
        for ours, theirs in zip((block.norm_query, block.norm_source, block.norm_ffn), norms):
            theirs.load_state_dict(ours.state_dict())
    return {"mha": mha, "ffn": ffn, "norm_query": norms[0], "norm_source": norms[1], "norm_ffn": norms[2]}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_the_cross_attention_block_equals_its_pytorch_composition(dtype: torch.dtype) -> None:
    torch.manual_seed(0)
    block = CrossAttentionBlock(d_model=32, d_source=48, n_heads=4, d_ff=64).to(dtype)
    with torch.no_grad():  # LayerNorms that are not the identity, so that copying them is checked
        for norm in (block.norm_query, block.norm_source, block.norm_ffn):
            norm.weight.uniform_(0.5, 1.5)
            norm.bias.uniform_(-0.5, 0.5)
    x, source = torch.randn(3, 5, 32, dtype=dtype), 4 * torch.randn(3, 7, 48, dtype=dtype) + 2
    keep = torch.ones(3, 7, dtype=torch.bool)
    keep[1, 5:] = False  # the second source has 5 real positions
    ours, weights = block(x, source, mask=keep[:, None, None, :], need_weights=True)
    ref = torch_block(block, dtype)
    attended, ref_weights = ref["mha"](ref["norm_query"](x), ref["norm_source"](source), ref["norm_source"](source),
                                       key_padding_mask=~keep, average_attn_weights=False)
    h = x + attended
    assert_close(ours, h + ref["ffn"](ref["norm_ffn"](h)), **TOLERANCE[dtype])
    assert_close(weights, ref_weights, **TOLERANCE[dtype])


def test_the_source_norm_makes_the_block_blind_to_the_sources_scale() -> None:
    """Features 100 times larger (a frozen encoder of another scale) give the same output; without the source's
    LayerNorm they would not."""
    torch.manual_seed(0)
    block = CrossAttentionBlock(d_model=32, d_source=48, n_heads=4, d_ff=64).double()
    x, source = torch.randn(2, 4, 32, dtype=torch.float64), torch.randn(2, 6, 48, dtype=torch.float64)
    assert_close(block(x, 100 * source)[0], block(x, source)[0], atol=1e-4, rtol=1e-4)  # up to LayerNorm's eps
    block.norm_source = nn.Identity()
    assert not torch.allclose(block(x, 100 * source)[0], block(x, source)[0], atol=1e-3)


def test_the_block_wants_exactly_one_source() -> None:
    block = CrossAttentionBlock(d_model=16, d_source=8, n_heads=2, d_ff=32)
    with pytest.raises(ValueError, match="exactly one of source"):
        block(torch.randn(1, 2, 16))


def small_captioner(vocab: int = 20, dtype: torch.dtype = torch.float32) -> Captioner:
    torch.manual_seed(0)
    config = CaptionerConfig(vocab_size=vocab, d_image=32, d_model=24, n_heads=2, n_encoder_layers=1,
                             n_decoder_layers=2, d_ff=48, max_len=12)
    return Captioner(config).to(dtype).eval()


def test_cached_decoding_gives_the_uncached_tokens_and_logits() -> None:
    model, images = small_captioner(dtype=torch.float64), images_of(5, dtype=torch.float64)
    cached = model.greedy_decode(images, eos_id=2, max_new_tokens=10)
    uncached = model.greedy_decode(images, eos_id=2, max_new_tokens=10, use_cache=False)
    assert torch.equal(cached, uncached)
    prefix = torch.cat([torch.ones(5, 1, dtype=torch.long), cached], dim=1)  # [5, 11]: <bos> + the caption
    features, _ = model.encode(images)
    cache, stepwise = model.new_cache(features), []
    for t in range(prefix.shape[1]):
        stepwise.append(model.decode(prefix[:, t:t + 1], cache=cache)[0])
    assert_close(torch.cat(stepwise, dim=1), model(images, prefix), atol=1e-10, rtol=1e-10)


def test_the_cross_attention_maps_have_a_row_per_word_and_a_column_per_patch() -> None:
    model, images = small_captioner(), images_of(3)
    ids = torch.randint(4, 20, (3, 6))
    logits, maps = model.forward_with_attention(images, ids)
    assert_close(logits, model(images, ids), atol=1e-5, rtol=1e-5)
    assert len(maps.decoder_cross) == 2 and maps.decoder_cross[0].shape == (3, 2, 6, model.n_patches)
    assert_close(maps.decoder_cross[1].sum(-1), torch.ones(3, 2, 6))
    assert maps.encoder_self[0].shape == (3, 2, 36, 36)


@pytest.mark.parametrize("bad, message", [
    (torch.zeros(2, 3, 40, 40), "48x48"),
    (torch.zeros(2, 1, 48, 48), "3 channels"),
    (torch.zeros(2, 3, 48, 48, dtype=torch.long), "floating point"),
])
def test_the_captioner_names_a_wrong_image(bad: torch.Tensor, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        small_captioner().greedy_decode(bad)


def test_the_patch_encoder_refuses_a_patch_size_that_does_not_divide_the_image() -> None:
    with pytest.raises(ValueError, match="must divide image_size"):
        PatchEncoder(image_size=48, patch_size=7, channels=3, d_image=16, n_heads=2, n_layers=1, d_ff=32)


def test_the_reference_block_from_pytorch_modules_loads_into_ours() -> None:
    from course_lib.reference import TorchCrossAttentionBlock, load_torch_cross_attention_block

    torch.manual_seed(3)
    theirs = TorchCrossAttentionBlock(d_model=16, d_source=24, n_heads=2, d_ff=32).eval()
    ours = load_torch_cross_attention_block(CrossAttentionBlock(16, 24, 2, 32), theirs).eval()
    x, source = torch.randn(2, 3, 16), torch.randn(2, 5, 24)
    keep = torch.tensor([[True] * 5, [True, True, True, False, False]])
    with torch.no_grad():
        expected, expected_w = theirs(x, source, key_padding_mask=~keep)
        got, got_w = ours(x, source, mask=keep[:, None, None, :], need_weights=True)
    assert_close(got, expected, **TOLERANCE[torch.float32])
    assert_close(got_w, expected_w, **TOLERANCE[torch.float32])
