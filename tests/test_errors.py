"""Bad input raises ``ValueError`` with a message that names what was expected and what came.

Each ``match`` pattern checks both halves: the expected shape, dtype or range, and the actual one.
"""
from __future__ import annotations

import re

import pytest
import torch

import course_lib as cl
from course_lib.reference import load_torch_encoder_layer, load_torch_mha, load_torch_transformer

pytestmark = pytest.mark.usefixtures("single_thread")


def expect(*parts: str) -> str:
    """A regex matching ``parts`` literally, in this order, anything in between."""
    return ".*".join(re.escape(part) for part in parts)


@pytest.fixture(scope="module")
def model() -> cl.Seq2SeqTransformer:
    with torch.random.fork_rng():
        torch.manual_seed(0)
        config = cl.TransformerConfig(src_vocab_size=10, tgt_vocab_size=8, d_model=8, n_heads=2, n_encoder_layers=1,
                                      n_decoder_layers=1, d_ff=16, max_len=8)
        return cl.Seq2SeqTransformer(config).eval()


def ids(*shape: int, value: int = 1, device: torch.device | str = "cpu") -> torch.Tensor:
    return torch.full(shape, value, dtype=torch.long, device=device)


# --- scaled_dot_product_attention ------------------------------------------------------------------


def test_sdpa_rejects_query_and_key_of_different_feature_sizes(device: torch.device) -> None:
    q, k = torch.randn(2, 3, 4, device=device), torch.randn(2, 5, 6, device=device)
    v = torch.randn(2, 5, 6, device=device)
    with pytest.raises(ValueError, match=expect("same feature size d_k", "q is [2, 3, 4] (d_k=4)",
                                                "k is [2, 5, 6] (d_k=6)")):
        cl.scaled_dot_product_attention(q, k, v)


def test_sdpa_rejects_keys_and_values_of_different_lengths(device: torch.device) -> None:
    q, k = torch.randn(2, 3, 4, device=device), torch.randn(2, 5, 4, device=device)
    v = torch.randn(2, 6, 4, device=device)
    with pytest.raises(ValueError, match=expect("same length T_k", "k is [2, 5, 4] (T_k=5)", "v is [2, 6, 4] (T_k=6)")):
        cl.scaled_dot_product_attention(q, k, v)


def test_sdpa_rejects_batch_dims_that_do_not_broadcast(device: torch.device) -> None:
    q, k, v = (torch.randn(b, 3, 4, device=device) for b in (2, 3, 3))
    with pytest.raises(ValueError, match=expect("broadcastable) batch dims", "q [2, 3, 4]", "k [3, 3, 4]")):
        cl.scaled_dot_product_attention(q, k, v)


def test_sdpa_rejects_a_one_dimensional_input(device: torch.device) -> None:
    q, k = torch.randn(4, device=device), torch.randn(5, 4, device=device)
    with pytest.raises(ValueError, match=expect("q must have shape [..., T, d] (at least 2 dims)", "got [4]")):
        cl.scaled_dot_product_attention(q, k, k)


@pytest.mark.parametrize("empty", ["q", "k"])
def test_sdpa_rejects_an_empty_sequence(device: torch.device, empty: str) -> None:
    shapes = {"q": (2, 3, 4), "k": (2, 5, 4)}
    shapes[empty] = (2, 0, 4)
    q, k = torch.randn(shapes["q"], device=device), torch.randn(shapes["k"], device=device)
    with pytest.raises(ValueError, match=expect(f"{empty} has an empty sequence", "expected length >= 1",
                                                "got shape [2, 0, 4]")):
        cl.scaled_dot_product_attention(q, k, k)


@pytest.mark.parametrize("mask_shape", [(4, 5), (2, 3, 4), (3, 2, 3, 5)], ids=["wrong-T_q", "wrong-T_k", "extra-dim"])
def test_sdpa_rejects_a_mask_that_does_not_broadcast_to_the_scores(device: torch.device,
                                                                   mask_shape: tuple[int, ...]) -> None:
    q, k = torch.randn(2, 3, 4, device=device), torch.randn(2, 5, 4, device=device)
    mask = torch.ones(mask_shape, dtype=torch.bool, device=device)
    with pytest.raises(ValueError, match=expect("mask must broadcast to [2, 3, 5]", f"got shape {list(mask_shape)}")):
        cl.scaled_dot_product_attention(q, k, k, mask)


@pytest.mark.parametrize("dtype", [torch.float32, torch.int64], ids=["float", "int"])
def test_sdpa_rejects_a_mask_that_is_not_bool(device: torch.device, dtype: torch.dtype) -> None:
    q = torch.randn(2, 3, 4, device=device)
    mask = torch.zeros(3, 3, dtype=dtype, device=device)
    with pytest.raises(ValueError, match=expect("mask must be a bool tensor", f"got dtype {dtype}")):
        cl.scaled_dot_product_attention(q, q, q, mask)


# --- MultiHeadAttention --------------------------------------------------------------------------


def test_mha_rejects_d_model_not_divisible_by_n_heads() -> None:
    with pytest.raises(ValueError, match=expect("n_heads must divide d_model", "d_model=10, n_heads=3",
                                                "expected a whole number")):
        cl.MultiHeadAttention(10, 3)


@pytest.mark.parametrize(("d_model", "n_heads"), [(0, 2), (8, 0)])
def test_mha_rejects_non_positive_sizes(d_model: int, n_heads: int) -> None:
    with pytest.raises(ValueError, match=expect("must be positive", f"d_model={d_model}, n_heads={n_heads}")):
        cl.MultiHeadAttention(d_model, n_heads)


@pytest.mark.parametrize("shape", [(3, 8), (1, 2, 3, 8)], ids=["2d", "4d"])
def test_mha_rejects_x_of_the_wrong_rank(device: torch.device, shape: tuple[int, ...]) -> None:
    mha = cl.MultiHeadAttention(8, 2).to(device)
    with pytest.raises(ValueError, match=expect("x must have shape [B, T, d] (3 dims)",
                                                f"got shape {list(shape)} ({len(shape)} dims)")):
        mha(torch.randn(shape, device=device))


def test_mha_rejects_x_of_the_wrong_feature_size(device: torch.device) -> None:
    mha = cl.MultiHeadAttention(8, 2).to(device)
    with pytest.raises(ValueError, match=expect("x must have feature size 8", "got shape [2, 3, 6]")):
        mha(torch.randn(2, 3, 6, device=device))


def test_mha_rejects_a_source_of_the_wrong_feature_size(device: torch.device) -> None:
    mha = cl.MultiHeadAttention(8, 2, d_source=5).to(device)
    with pytest.raises(ValueError, match=expect("source must have feature size 5", "got shape [2, 4, 8]")):
        mha(torch.randn(2, 3, 8, device=device), torch.randn(2, 4, 8, device=device))


def test_mha_rejects_x_and_source_of_different_batch_sizes(device: torch.device) -> None:
    mha = cl.MultiHeadAttention(8, 2).to(device)
    with pytest.raises(ValueError, match=expect("same batch size", "x is [2, 3, 8]", "source is [3, 4, 8]")):
        mha(torch.randn(2, 3, 8, device=device), torch.randn(3, 4, 8, device=device))


def test_mha_rejects_source_kv_of_a_different_batch_size(device: torch.device) -> None:
    mha = cl.MultiHeadAttention(8, 2).to(device)
    source_kv = mha.project_source(torch.randn(3, 4, 8, device=device))
    with pytest.raises(ValueError, match=expect("source_kv has batch size 3", "x has 2", "[2, 3, 8]")):
        mha(torch.randn(2, 3, 8, device=device), source_kv=source_kv)


# Contradictory combinations of source, source_kv (cross-attention K/V) and kv_cache (self-attention K/V cache).
# Each message names what was passed and what to pass instead; nothing reaches the cache.


def _mha_inputs(device: torch.device) -> tuple[cl.MultiHeadAttention, torch.Tensor, torch.Tensor, cl.SourceKV]:
    mha = cl.MultiHeadAttention(8, 2).to(device)
    x, source = torch.randn(2, 3, 8, device=device), torch.randn(2, 4, 8, device=device)  # [B, T, d], [B, S, d]
    return mha, x, source, mha.project_source(source)  # source_kv: k, v [2, 2, 4, 4]


def test_mha_rejects_source_together_with_source_kv(device: torch.device) -> None:
    mha, x, source, source_kv = _mha_inputs(device)
    with pytest.raises(ValueError, match=expect("got both source and source_kv", "pass the source",
                                                "or source_kv = project_source(source)", "not both",
                                                "source is a Tensor [2, 4, 8]",
                                                "source_kv is SourceKV(k [2, 2, 4, 4], v [2, 2, 4, 4])")):
        mha(x, source, source_kv=source_kv)


def test_mha_rejects_a_self_attention_cache_with_source_kv(device: torch.device) -> None:
    mha, x, _, source_kv = _mha_inputs(device)
    cache = cl.KVCache()
    with pytest.raises(ValueError, match=expect("got both kv_cache and source_kv",
                                                "kv_cache is a self-attention K/V cache",
                                                "source_kv is the cross-attention K/V",
                                                "use kv_cache for self-attention", "or source_kv for cross-attention",
                                                "kv_cache is a KVCache",
                                                "source_kv is SourceKV(k [2, 2, 4, 4]")):
        mha(x, kv_cache=cache, source_kv=source_kv)
    assert cache.length == 0  # the source's keys never reached the self-attention cache


def test_mha_rejects_a_self_attention_cache_with_a_source(device: torch.device) -> None:
    mha, x, source, _ = _mha_inputs(device)
    cache = cl.KVCache()
    with pytest.raises(ValueError, match=expect("got kv_cache together with a source",
                                                "kv_cache is a self-attention K/V cache",
                                                "the source's keys would be appended to it",
                                                "project_source(source) and pass source_kv=",
                                                "forward(x, kv_cache=...) without a source",
                                                "source is a Tensor [2, 4, 8]", "kv_cache is a KVCache")):
        mha(x, source, kv_cache=cache)
    assert cache.length == 0


def test_mha_rejects_source_source_kv_and_kv_cache_all_together(device: torch.device) -> None:
    mha, x, source, source_kv = _mha_inputs(device)
    cache = cl.KVCache()
    with pytest.raises(ValueError, match=expect("got both source and source_kv", "source is a Tensor [2, 4, 8]",
                                                "source_kv is SourceKV(k [2, 2, 4, 4]")):
        mha(x, source, kv_cache=cache, source_kv=source_kv)
    assert cache.length == 0


def test_mha_rejects_a_kv_cache_without_append(device: torch.device) -> None:
    mha, x, _, source_kv = _mha_inputs(device)
    with pytest.raises(ValueError, match=expect("kv_cache must be a self-attention K/V cache with append(k, v)",
                                                "course_lib.KVCache()",
                                                "got a tuple of 2 tensors [2, 2, 4, 4], [2, 2, 4, 4]")):
        mha(x, kv_cache=tuple(source_kv))  # the cross-attention K/V passed where the cache goes


@pytest.mark.parametrize("what", ["tensor", "wrong-heads", "k-v-differ"])
def test_mha_rejects_a_source_kv_that_is_not_per_head_keys_and_values(device: torch.device, what: str) -> None:
    mha, x, source, source_kv = _mha_inputs(device)
    bad, actual = {
        "tensor": (source, "got a Tensor [2, 4, 8]"),  # the unprojected source passed as source_kv
        "wrong-heads": (cl.SourceKV(source_kv.k.reshape(2, 1, 4, 8), source_kv.v.reshape(2, 1, 4, 8)),
                        "got k [2, 1, 4, 8], v [2, 1, 4, 8]"),
        "k-v-differ": (cl.SourceKV(source_kv.k, source_kv.v[:, :, :3]), "got k [2, 2, 4, 4], v [2, 2, 3, 4]"),
    }[what]
    with pytest.raises(ValueError, match=expect("source_kv must be SourceKV(k, v) from project_source",
                                                "[B, H=2, S, d_head=4]", actual)):
        mha(x, source_kv=bad)


def test_decoder_layer_rejects_neither_memory_nor_cross_kv(device: torch.device) -> None:
    layer = cl.DecoderLayer(8, 2, 16).to(device)
    with pytest.raises(ValueError, match=expect("the cross-attention needs a source", "pass memory",
                                                "or cross_kv", "got neither")):
        layer(torch.randn(2, 3, 8, device=device), None)


@pytest.mark.parametrize("empty", ["x", "source"])
def test_mha_rejects_an_empty_sequence(device: torch.device, empty: str) -> None:
    mha = cl.MultiHeadAttention(8, 2).to(device)
    x = torch.randn(2, 0 if empty == "x" else 3, 8, device=device)
    source = torch.randn(2, 0 if empty == "source" else 4, 8, device=device)
    actual = list(x.shape if empty == "x" else source.shape)
    with pytest.raises(ValueError, match=expect(f"{empty} has an empty sequence", "expected length >= 1",
                                                f"got shape {actual}")):
        mha(x, source)


@pytest.mark.parametrize("mask_shape", [(2, 1, 3, 4), (3, 1, 1, 3), (2, 3, 3, 3), (3, 4)],
                         ids=["wrong-T_k", "wrong-B", "wrong-H", "wrong-2d"])
def test_mha_rejects_a_mask_of_the_wrong_shape(device: torch.device, mask_shape: tuple[int, ...]) -> None:
    mha = cl.MultiHeadAttention(8, 2).to(device)
    mask = torch.ones(mask_shape, dtype=torch.bool, device=device)
    with pytest.raises(ValueError, match=expect("mask must broadcast to [2, 2, 3, 3]", "[B, H, T_q, T_k]",
                                                f"got shape {list(mask_shape)}")):
        mha(torch.randn(2, 3, 8, device=device), mask=mask)


@pytest.mark.parametrize("use_sdpa", [True, False], ids=["sdpa", "handwritten"])
def test_mha_rejects_a_float_mask(device: torch.device, use_sdpa: bool) -> None:
    mha = cl.MultiHeadAttention(8, 2, use_sdpa=use_sdpa).to(device)
    additive = cl.additive_mask_from_mask(cl.causal_mask(3, device=device))
    with pytest.raises(ValueError, match=expect("mask must be a bool tensor (True = may attend)",
                                                "got dtype torch.float32", "mask_from_additive_mask")):
        mha(torch.randn(2, 3, 8, device=device), mask=additive)


# --- masks ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(("lengths", "max_len", "shown"), [([2, 7], 5, "1..5"), ([0, 3], None, "1..3"),
                                                           ([-1, 2], 4, "1..4")])
def test_padding_mask_rejects_lengths_out_of_range(device: torch.device, lengths: list[int], max_len: int | None,
                                                   shown: str) -> None:
    with pytest.raises(ValueError, match=expect(f"every length must be in {shown}", f"got lengths {lengths}")):
        cl.padding_mask(torch.tensor(lengths, device=device), max_len)


def test_padding_mask_rejects_float_lengths(device: torch.device) -> None:
    with pytest.raises(ValueError, match=expect("integer tensor", "got dtype torch.float32")):
        cl.padding_mask(torch.tensor([2.0, 3.0], device=device))


def test_padding_mask_rejects_lengths_of_the_wrong_rank(device: torch.device) -> None:
    with pytest.raises(ValueError, match=expect("lengths must have shape [B] (1 dims)", "got shape [2, 1] (2 dims)")):
        cl.padding_mask(torch.tensor([[2], [3]], device=device))


def test_padding_mask_rejects_empty_lengths(device: torch.device) -> None:
    with pytest.raises(ValueError, match=expect("B >= 1", "got [0]")):
        cl.padding_mask(torch.zeros(0, dtype=torch.long, device=device))


def test_padding_mask_from_ids_rejects_an_empty_sequence(device: torch.device) -> None:
    with pytest.raises(ValueError, match=expect("token_ids has an empty sequence", "expected length >= 1",
                                                "got shape [2, 0]")):
        cl.padding_mask_from_ids(ids(2, 0, device=device), pad_id=0)


def test_causal_mask_rejects_fewer_keys_than_queries() -> None:
    with pytest.raises(ValueError, match=expect("1 <= t_q <= t_k", "t_q=3, t_k=2")):
        cl.causal_mask(3, 2)


def test_causal_mask_rejects_zero_queries() -> None:
    with pytest.raises(ValueError, match=expect("1 <= t_q <= t_k", "t_q=0")):
        cl.causal_mask(0)


def test_combine_masks_rejects_masks_that_do_not_broadcast(device: torch.device) -> None:
    a, b = torch.ones(2, 1, 1, 4, dtype=torch.bool, device=device), torch.ones(3, 3, dtype=torch.bool, device=device)
    with pytest.raises(ValueError, match=expect("do not broadcast together", "[2, 1, 1, 4] and [3, 3]")):
        cl.combine_masks(a, b)


def test_combine_masks_rejects_a_float_mask(device: torch.device) -> None:
    with pytest.raises(ValueError, match=expect("masks[1] must be a bool tensor", "got dtype torch.float32")):
        cl.combine_masks(cl.causal_mask(3, device=device), torch.zeros(3, 3, device=device))


@pytest.mark.parametrize("dtype", [torch.float32, torch.uint8], ids=["float", "uint8"])
def test_mask_from_key_padding_mask_rejects_a_non_bool_mask(device: torch.device, dtype: torch.dtype) -> None:
    with pytest.raises(ValueError, match=expect("key_padding_mask must be bool (True = ignore)", f"got dtype {dtype}")):
        cl.mask_from_key_padding_mask(torch.zeros(2, 3, dtype=dtype, device=device))


def test_mask_from_key_padding_mask_rejects_the_wrong_rank(device: torch.device) -> None:
    with pytest.raises(ValueError, match=expect("[B, S] (2 dims)", "got shape [2, 1, 1, 3] (4 dims)")):
        cl.mask_from_key_padding_mask(torch.zeros(2, 1, 1, 3, dtype=torch.bool, device=device))


def test_key_padding_mask_from_mask_rejects_a_mask_that_is_not_a_padding_mask(device: torch.device) -> None:
    with pytest.raises(ValueError, match=expect("padding mask of shape [B, 1, 1, S]", "got [2, 1, 3, 3]")):
        cl.key_padding_mask_from_mask(torch.ones(2, 1, 3, 3, dtype=torch.bool, device=device))


def test_additive_mask_from_mask_rejects_a_non_float_dtype(device: torch.device) -> None:
    with pytest.raises(ValueError, match=expect("floating dtype", "got torch.int64")):
        cl.additive_mask_from_mask(cl.causal_mask(2, device=device), dtype=torch.int64)


def test_mask_from_additive_mask_rejects_a_bool_mask(device: torch.device) -> None:
    with pytest.raises(ValueError, match=expect("additive_mask must be a float tensor", "got dtype torch.bool")):
        cl.mask_from_additive_mask(cl.causal_mask(2, device=device))


def test_document_mask_rejects_the_wrong_rank(device: torch.device) -> None:
    with pytest.raises(ValueError, match=expect("segment_ids must have shape [B, T] (2 dims)",
                                                "got shape [4] (1 dims)")):
        cl.document_mask(torch.zeros(4, dtype=torch.long, device=device))


# --- layers --------------------------------------------------------------------------------------


@pytest.mark.parametrize(("length", "offset", "positions"), [(5, 0, "0..4"), (3, 2, "2..4"), (2, -1, "-1..0")])
def test_positional_encoding_rejects_positions_beyond_max_len(device: torch.device, length: int, offset: int,
                                                              positions: str) -> None:
    encoding = cl.PositionalEncoding(8, max_len=4).to(device)
    with pytest.raises(ValueError, match=expect(f"positions {positions}", "max_len=4")):
        encoding(torch.randn(1, length, 8, device=device), offset=offset)


def test_positional_encoding_rejects_the_wrong_feature_size(device: torch.device) -> None:
    with pytest.raises(ValueError, match=expect("feature size 8", "got shape [1, 3, 6]")):
        cl.PositionalEncoding(8)(torch.randn(1, 3, 6, device=device))


def test_sinusoidal_positions_rejects_an_odd_d_model() -> None:
    with pytest.raises(ValueError, match=expect("even d_model >= 2", "d_model=5")):
        cl.sinusoidal_positions(10, 5)


def test_feed_forward_rejects_an_unknown_activation() -> None:
    with pytest.raises(ValueError, match=expect("'relu' or 'gelu'", "got 'tanh'")):
        cl.FeedForward(8, 16, activation="tanh")


# --- the model and generation ----------------------------------------------------------------------


@pytest.mark.parametrize(("which", "bad"), [("src_ids", 10), ("src_ids", -1), ("tgt_ids", 8)])
def test_model_rejects_token_ids_outside_the_vocabulary(model: cl.Seq2SeqTransformer, device: torch.device,
                                                        which: str, bad: int) -> None:
    model = model.to(device)
    src, tgt = ids(2, 3, device=device), ids(2, 4, device=device)
    (src if which == "src_ids" else tgt)[1, 2] = bad
    vocab = 10 if which == "src_ids" else 8
    with pytest.raises(ValueError, match=expect(f"{which} holds ids outside 0..{vocab - 1}", f"vocabulary size {vocab}",
                                                str(bad))):
        model(src, tgt)


def test_model_rejects_float_token_ids(model: cl.Seq2SeqTransformer) -> None:
    with pytest.raises(ValueError, match=expect("src_ids must hold integer token ids", "got dtype torch.float32")):
        model.encode(torch.ones(2, 3))


@pytest.mark.parametrize("which", ["src_ids", "tgt_ids"])
def test_model_rejects_an_empty_sequence(model: cl.Seq2SeqTransformer, device: torch.device, which: str) -> None:
    model = model.to(device)
    src = ids(2, 0 if which == "src_ids" else 3, device=device)
    tgt = ids(2, 0 if which == "tgt_ids" else 3, device=device)
    with pytest.raises(ValueError, match=expect(f"{which} has an empty sequence", "expected length >= 1",
                                                "got shape [2, 0]")):
        model(src, tgt)


@pytest.mark.parametrize("with_attention", [False, True], ids=["forward", "forward_with_attention"])
def test_model_rejects_source_and_target_batches_of_different_sizes(
    model: cl.Seq2SeqTransformer, device: torch.device, with_attention: bool
) -> None:
    model = model.to(device)
    run = model.forward_with_attention if with_attention else model
    with pytest.raises(ValueError, match=expect("same batch size", "got [2, 3] and [3, 4]")):
        run(ids(2, 3, device=device), ids(3, 4, device=device))


def test_model_rejects_a_source_longer_than_max_len(model: cl.Seq2SeqTransformer, device: torch.device) -> None:
    model = model.to(device)
    with pytest.raises(ValueError, match=expect("positions 0..8", "max_len=8")):
        model.encode(ids(1, 9, device=device))


def test_beam_search_rejects_beam_size_below_one(model: cl.Seq2SeqTransformer, device: torch.device) -> None:
    model = model.to(device)
    with pytest.raises(ValueError, match=expect("beam_size must be >= 1", "got 0")):
        cl.beam_search(model, ids(2, 3, device=device), bos_id=1, eos_id=2, beam_size=0, max_new_tokens=3)


@pytest.mark.parametrize("search", ["greedy", "beam"])
def test_generation_rejects_an_unknown_cache_mode(model: cl.Seq2SeqTransformer, device: torch.device,
                                                  search: str) -> None:
    model = model.to(device)
    src = ids(2, 3, device=device)
    with pytest.raises(ValueError, match=expect("cache must be one of ('none', 'encoder', 'cross_kv', 'full')",
                                                "got 'kv'")):
        if search == "greedy":
            cl.greedy_decode(model, src, bos_id=1, max_new_tokens=3, cache="kv")  # type: ignore[arg-type]
        else:
            cl.beam_search(model, src, bos_id=1, eos_id=2, max_new_tokens=3, cache="kv")  # type: ignore[arg-type]


def test_generation_rejects_an_empty_source(model: cl.Seq2SeqTransformer, device: torch.device) -> None:
    model = model.to(device)
    with pytest.raises(ValueError, match=expect("non-empty batch [B, S]", "got shape [2, 0]")):
        cl.greedy_decode(model, ids(2, 0, device=device), bos_id=1, max_new_tokens=3)


@pytest.mark.parametrize(("max_new_tokens", "expected"), [(0, ">= 1"), (8, "<= the model's max_len=8")])
def test_generation_rejects_max_new_tokens_out_of_range(model: cl.Seq2SeqTransformer, max_new_tokens: int,
                                                        expected: str) -> None:
    with pytest.raises(ValueError, match=expect(expected, str(max_new_tokens))):
        cl.greedy_decode(model, ids(2, 3), bos_id=1, max_new_tokens=max_new_tokens)


def test_kv_cache_rejects_keys_that_do_not_fit(device: torch.device) -> None:
    cache = cl.KVCache()
    cache.append(torch.randn(2, 2, 1, 4, device=device), torch.randn(2, 2, 1, 4, device=device))
    with pytest.raises(ValueError, match=expect("new keys [3, 2, 1, 4]", "the cache [2, 2, 1, 4]",
                                                "[B, H, *, d_head]")):
        cache.append(torch.randn(3, 2, 1, 4, device=device), torch.randn(3, 2, 1, 4, device=device))


# --- reference loaders ---------------------------------------------------------------------------


def test_load_torch_mha_rejects_different_sizes() -> None:
    theirs = torch.nn.MultiheadAttention(8, 4, batch_first=True)
    with pytest.raises(ValueError, match=expect("ours d_model=8, n_heads=2", "theirs embed_dim=8, num_heads=4")):
        load_torch_mha(cl.MultiHeadAttention(8, 2), theirs)


def test_load_torch_encoder_layer_rejects_a_different_norm_placement() -> None:
    theirs = torch.nn.TransformerEncoderLayer(8, 2, 16, batch_first=True, norm_first=False)
    with pytest.raises(ValueError, match=expect("norm_first differs", "ours True, theirs False")):
        load_torch_encoder_layer(cl.EncoderLayer(8, 2, 16, norm_first=True), theirs)


def test_load_torch_transformer_rejects_different_layer_counts() -> None:
    theirs = torch.nn.Transformer(8, 2, num_encoder_layers=2, num_decoder_layers=1, dim_feedforward=16,
                                  batch_first=True)
    with pytest.raises(ValueError, match=expect("layer counts differ", "ours 1, theirs 2")):
        load_torch_transformer(cl.Encoder(8, 2, 16, 1), cl.Decoder(8, 2, 16, 1), theirs)
