"""Approximate attention (``course_lib.long_attention``: top-k, windows, linear attention, the cores, swapping them
into a model, the cost model) against PyTorch's SDPA, the course's hand-written attention and brute-force loops;
``long_runs.retrofit_scores`` on a small random model."""
from __future__ import annotations

import math
from fractions import Fraction

import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn
from torch.testing import assert_close

import course_lib as cl
from course_lib import head_analysis, metrics
from course_lib import toy_language as tl
from course_lib.attention import MultiHeadAttention, scaled_dot_product_attention
from course_lib.data import ParallelData, build_vocabularies
from course_lib.long_attention import (
    attention_multiply_adds,
    exact_core,
    linear_attention,
    linear_attention_weights,
    linear_core,
    topk_core,
    topk_mask,
    use_attention_core,
    window_core,
    window_mask,
)
from course_lib.long_runs import retrofit_scores

pytestmark = pytest.mark.usefixtures("single_thread")
F64 = {"atol": 1e-10, "rtol": 1e-10}
fast = settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def padding_mask(lengths: list[int], t_k: int) -> torch.Tensor:
    """``[B, 1, 1, T_k]``, True at the first ``lengths[b]`` keys."""
    return (torch.arange(t_k)[None, :] < torch.tensor(lengths)[:, None])[:, None, None, :]


def qkv(b: int, h: int, t_q: int, t_k: int, d: int, seed: int, dtype: torch.dtype = torch.float64):
    gen = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(b, h, t, d, generator=gen, dtype=dtype) for t in (t_q, t_k, t_k))


# --- top-k -------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_topk_with_every_key_equals_torch_sdpa(dtype: torch.dtype) -> None:
    q, k, v = qkv(2, 3, 5, 9, 4, seed=1, dtype=dtype)
    mask = padding_mask([9, 4], 9)  # every row has a key: SDPA is defined everywhere
    got, _ = topk_core(9)(q, k, v, mask, False)
    expected = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    tol = F64 if dtype == torch.float64 else {"atol": 1e-5, "rtol": 1e-5}
    assert_close(got, expected, **tol)
    assert_close(topk_core(20)(q, k, v, None, False)[0], F.scaled_dot_product_attention(q, k, v), **tol)  # k > T_k
    assert not torch.equal(topk_core(2)(q, k, v, mask, False)[0], got)  # fewer keys: a different result


@fast
@given(t_q=st.integers(1, 6), t_k=st.integers(1, 12), data=st.data(), seed=st.integers(0, 2**31 - 1),
       kind=st.sampled_from(["none", "padding", "full"]))
def test_topk_mask_equals_a_sort_of_each_row_and_never_picks_a_masked_key(t_q: int, t_k: int, data: st.DataObject,
                                                                          seed: int, kind: str) -> None:
    k = data.draw(st.integers(1, t_k))
    gen = torch.Generator().manual_seed(seed)
    scores = torch.randn(2, 3, t_q, t_k, generator=gen, dtype=torch.float64)  # distinct scores: no ties
    mask = None
    if kind == "padding":
        mask = padding_mask(torch.randint(0, t_k + 1, (2,), generator=gen).tolist(), t_k)
    elif kind == "full":
        mask = torch.rand(2, 3, t_q, t_k, generator=gen) < 0.6
    got = topk_mask(scores, k, mask)
    assert got.shape == scores.shape and got.dtype == torch.bool
    visible = torch.ones_like(got) if mask is None else mask.expand_as(got)
    expected = torch.zeros_like(got)
    for index in torch.cartesian_prod(*(torch.arange(n) for n in scores.shape[:-1])).tolist():
        row = tuple(index)
        candidates = [j for j in range(t_k) if visible[row][j]]
        for j in sorted(candidates, key=lambda j: -float(scores[row][j]))[:k]:
            expected[row][j] = True
    assert torch.equal(got, expected)
    assert not (got & ~visible).any()


# --- windows -----------------------------------------------------------------------------------------------------
@fast
@given(t_q=st.integers(1, 25), t_k=st.integers(1, 25), half_width=st.integers(0, 8))
def test_window_mask_equals_a_loop_over_every_query_and_key(t_q: int, t_k: int, half_width: int) -> None:
    expected = torch.zeros(t_q, t_k, dtype=torch.bool)
    for i in range(t_q):
        centre = Fraction(i * t_k, t_q)  # where step i sits if source and target advance together
        for j in range(t_k):
            expected[i, j] = abs(j - centre) <= half_width
        if not expected[i].any():  # the documented fallback: the key nearest the centre, halves rounded up
            expected[i, min(math.floor(centre + Fraction(1, 2)), t_k - 1)] = True
    got = window_mask(t_q, t_k, half_width)
    assert torch.equal(got, expected)
    assert got.any(dim=-1).all()  # every row keeps a key


def test_window_of_the_square_is_the_band_around_the_diagonal() -> None:
    i, j = torch.arange(6)[:, None], torch.arange(6)[None, :]
    assert torch.equal(window_mask(6, 6, 2), (i - j).abs() <= 2)
    assert window_mask(3, 12, 0).nonzero().tolist() == [[0, 0], [1, 4], [2, 8]]  # 4 source keys per target step


# --- linear attention --------------------------------------------------------------------------------------------
def linear_attention_by_loops(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, visible: torch.Tensor,
                              eps: float) -> torch.Tensor:
    """The same formula, one query and one key at a time: ``sum_j s_ij v_j / (sum_j s_ij + eps)``,
    ``s_ij = phi(q_i) . phi(k_j)`` over the visible keys ``j``, ``visible [B, T_k]``."""
    phi = lambda x: torch.where(x > 0, x + 1, torch.exp(x))  # elu(x) + 1, written out
    out = torch.zeros(*q.shape[:-1], v.shape[-1], dtype=q.dtype)
    for b in range(q.shape[0]):
        for h in range(q.shape[1]):
            for i in range(q.shape[2]):
                numerator, denominator = torch.zeros(v.shape[-1], dtype=q.dtype), 0.0
                for j in range(k.shape[2]):
                    if visible[b, j]:
                        similarity = torch.dot(phi(q[b, h, i]), phi(k[b, h, j]))
                        numerator = numerator + similarity * v[b, h, j]
                        denominator = denominator + similarity
                out[b, h, i] = numerator / (denominator + eps)
    return out


@pytest.mark.parametrize("lengths", [None, [6, 3, 0]])
def test_linear_attention_equals_the_formula_evaluated_pair_by_pair(lengths: list[int] | None) -> None:
    q, k, v = qkv(3, 2, 4, 6, 3, seed=2)
    v = torch.randn(3, 2, 6, 5, dtype=torch.float64)  # d_v != d_k
    mask = None if lengths is None else padding_mask(lengths, 6)
    visible = torch.ones(3, 6, dtype=torch.bool) if mask is None else mask[:, 0, 0]
    got = linear_attention(q, k, v, mask)
    assert_close(got, linear_attention_by_loops(q, k, v, visible, 1e-6), **F64)
    assert_close(linear_attention_weights(q, k, mask) @ v, got, **F64)  # the weights it implies
    if lengths is not None:
        assert torch.equal(got[2], torch.zeros_like(got[2]))  # a source with no visible key: zeros, no NaN


@fast
@given(seed=st.integers(0, 2**31 - 1), t_k=st.integers(1, 10))
def test_linear_attention_does_not_depend_on_the_order_of_the_keys(seed: int, t_k: int) -> None:
    q, k, v = qkv(2, 2, 3, t_k, 4, seed=seed)
    gen = torch.Generator().manual_seed(seed)
    mask = padding_mask(torch.randint(0, t_k + 1, (2,), generator=gen).tolist(), t_k)
    order = torch.randperm(t_k, generator=gen)
    shuffled = linear_attention(q, k[:, :, order], v[:, :, order], mask[..., order])
    assert_close(shuffled, linear_attention(q, k, v, mask), atol=1e-12, rtol=1e-12)


# --- cores inside MultiHeadAttention ------------------------------------------------------------------------------
def by_hand(name: str, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
            mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each approximation written with the public pieces: a mask for the hand-written attention, or the
    linear-attention functions."""
    if name == "exact":
        return scaled_dot_product_attention(q, k, v, mask)
    if name == "top-3":
        return scaled_dot_product_attention(q, k, v, topk_mask(q @ k.transpose(-2, -1), 3, mask))
    if name == "window 1":
        return scaled_dot_product_attention(q, k, v, window_mask(q.shape[2], k.shape[2], 1) & mask)
    return linear_attention(q, k, v, mask), linear_attention_weights(q, k, mask)


@pytest.mark.parametrize("name, core", [("exact", exact_core()), ("top-3", topk_core(3)),
                                        ("window 1", window_core(1)), ("linear", linear_core())])
def test_a_core_inside_multi_head_attention_equals_the_function_applied_by_hand(name: str, core) -> None:
    torch.manual_seed(3)
    attention = MultiHeadAttention(16, 4, dtype=torch.float64).eval()
    x, source = torch.randn(2, 5, 16, dtype=torch.float64), torch.randn(2, 7, 16, dtype=torch.float64)
    mask = padding_mask([7, 4], 7)
    plain, _ = attention(x, source, mask=mask)  # no core: SDPA
    q = attention.split_heads(attention.q_proj(x))  # [B, H, T_q, d_head]
    k, v = attention.project_source(source)  # [B, H, T_k, d_head]
    context, weights = by_hand(name, q, k, v, mask)
    attention.attention_core = core
    out, got_weights = attention(x, source, mask=mask, need_weights=True)
    assert_close(out, attention.out_proj(attention.merge_heads(context)), **F64)
    assert_close(got_weights, weights, **F64)
    assert attention(x, source, mask=mask)[1] is None  # weights only when asked
    if name == "exact":
        assert_close(out, plain, **F64)
    else:
        assert (out - plain).abs().max() > 1e-4  # an approximation: not exact attention


@pytest.mark.parametrize("core", [exact_core(), topk_core(3), window_core(1), linear_core()])
def test_cores_follow_the_device_and_dtype_of_their_inputs(core, device: torch.device) -> None:
    q, k, v = qkv(2, 2, 5, 7, 4, seed=6)
    mask = padding_mask([7, 3], 7)
    expected, expected_weights = core(q, k, v, mask, True)
    for dtype in (torch.float64, torch.float32):
        got, weights = core(*(x.to(device, dtype) for x in (q, k, v)), mask.to(device), True)
        assert got.device.type == weights.device.type == device.type and got.dtype == weights.dtype == dtype
        tol = F64 if dtype == torch.float64 else {"atol": 1e-5, "rtol": 1e-5}
        assert_close(got.cpu().double(), expected, **tol)
        assert_close(weights.cpu().double(), expected_weights, **tol)


# --- a small random translator, for swapping cores in and for retrofit_scores --------------------------------------
@pytest.fixture(scope="module")
def self_translated() -> tuple[cl.Seq2SeqTransformer, ParallelData]:
    """A random float64 model, and sentences whose targets are its own greedy translations (its ``<eos>`` logit
    raised so that most translations end, ``<pad>`` and ``<bos>`` never chosen): exact match with exact attention is
    then 100 %."""
    examples = tl.make_splits(seed=0, sizes={"train": 300, "valid": 0, "test": 0, "generalisation": 0})["train"]
    src_vocab, tgt_vocab = build_vocabularies(examples)
    torch.manual_seed(0)
    model = cl.Seq2SeqTransformer(cl.TransformerConfig(len(src_vocab), len(tgt_vocab), d_model=16, n_heads=4,
                                                       n_encoder_layers=1, n_decoder_layers=2, d_ff=32)).double()
    with torch.no_grad():
        model.output.bias[tgt_vocab.eos_id] = 0.8
        model.output.bias[[tgt_vocab.pad_id, tgt_vocab.bos_id]] = -100.0  # never written (decode would drop them)
    sources = ParallelData(examples[:60], src_vocab, tgt_vocab)
    translations = metrics.translate_data(model.eval(), sources)
    pairs = [tl.Example(e.source, tuple(t), ()) for e, t in zip(sources.examples, translations)
             if len(t) < 2 * len(e.source) + 8]  # translations that ended with <eos>
    assert len(pairs) >= 40
    return model, ParallelData(pairs, src_vocab, tgt_vocab)


def test_use_attention_core_sets_every_cross_attention_and_restores_them(self_translated) -> None:
    model, data = self_translated
    batch = data.batch(range(8))
    with torch.no_grad():
        baseline = model(batch.src_ids, batch.tgt_in)
    cross = [layer.cross_attn for layer in model.decoder.layers]
    selfs = [layer.self_attn for layer in model.decoder.layers] + [layer.self_attn for layer in model.encoder.layers]
    before = exact_core()
    cross[0].attention_core = before  # a core set before the block comes back after it
    core = topk_core(1)
    with torch.no_grad(), use_attention_core(model, core) as same:
        assert same is model
        assert all(m.attention_core is core for m in cross) and all(m.attention_core is None for m in selfs)
        assert (model(batch.src_ids, batch.tgt_in) - baseline).abs().max() > 1e-3
    assert cross[0].attention_core is before and cross[1].attention_core is None
    with pytest.raises(RuntimeError, match="inside"), use_attention_core(model, core, which="self"):
        assert all(m.attention_core is core for m in selfs) and cross[1].attention_core is None
        raise RuntimeError("inside")
    assert all(m.attention_core is None for m in selfs) and cross[0].attention_core is before
    cross[0].attention_core = None
    with torch.no_grad():
        assert torch.equal(model(batch.src_ids, batch.tgt_in), baseline)


def test_retrofit_with_the_exact_core_scores_as_the_model_without_a_core(self_translated) -> None:
    model, data = self_translated
    cores = {"none": None, "exact": exact_core(), "top-1": topk_core(1)}
    forced = retrofit_scores(model, data, cores, batch_size=16)
    greedy = retrofit_scores(model, data, cores, decoding="greedy")
    assert forced["none"].exact_match == head_analysis.teacher_forced_exact_match(model, data) == 1.0
    assert greedy["none"].exact_match == metrics.evaluate(model, data, with_bleu=False).exact_match == 1.0
    for scores in (forced, greedy):
        assert scores["exact"].exact_match == scores["none"].exact_match
        assert scores["exact"].token_accuracy == scores["none"].token_accuracy == 1.0
        assert scores["exact"].attention_error < 1e-12 and scores["none"].attention_error == 0.0
        assert scores["top-1"].token_accuracy < 1.0 and scores["top-1"].attention_error > 0.01
        assert scores["top-1"].n_sentences == len(data)
    with torch.no_grad(), use_attention_core(model, topk_core(1)):  # top-1, scored another way: padded batches
        batch = data.batch(range(len(data)))
        real = batch.tgt_out != model.config.pad_id  # [N, T]
        right = (model(batch.src_ids, batch.tgt_in).argmax(dim=-1) == batch.tgt_out) & real
        assert forced["top-1"].token_accuracy == int(right.sum()) / int(real.sum())
        assert forced["top-1"].exact_match == head_analysis.teacher_forced_exact_match(model, data) < 1.0
    assert all(m.attention_core is None for m in (layer.cross_attn for layer in model.decoder.layers))


# --- the cost model, counted ----------------------------------------------------------------------------------------
class Counter:
    """Multiply-adds, counted while a loop computes attention for real."""

    def __init__(self) -> None:
        self.n = 0

    def dot(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        self.n += a.numel()
        return torch.dot(a, b)

    def scaled(self, weight: torch.Tensor, vector: torch.Tensor) -> torch.Tensor:
        self.n += vector.numel()
        return weight * vector


def softmax_rows_by_loops(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, counter: Counter,
                          keys_per_row: list[list[int]] | None = None, choose=None) -> torch.Tensor:
    """For each query ``i``: the scores of the keys ``keys_per_row[i]`` (default: all), a softmax over those that
    ``choose(i, scores)`` keeps (default: all), the weighted sum of their values."""
    out = torch.zeros(q.shape[0], v.shape[-1], dtype=q.dtype)
    for i in range(q.shape[0]):
        keys = list(range(k.shape[0])) if keys_per_row is None else keys_per_row[i]
        scores = {j: counter.dot(q[i], k[j]) / math.sqrt(q.shape[-1]) for j in keys}
        chosen = keys if choose is None else choose(i, scores)
        weights = torch.softmax(torch.stack([scores[j] for j in chosen]), dim=0)
        for w, j in zip(weights, chosen):
            out[i] += counter.scaled(w, v[j])
    return out


@pytest.mark.parametrize("t_q, t_k, d", [(3, 5, 2), (4, 2, 3), (1, 7, 1)])
def test_cost_formulas_equal_the_multiply_adds_counted_while_computing(t_q: int, t_k: int, d: int) -> None:
    q, k, v = (x[0, 0] for x in qkv(1, 1, t_q, t_k, d, seed=4))
    counter = Counter()
    out = softmax_rows_by_loops(q, k, v, counter)
    assert_close(out, F.scaled_dot_product_attention(q, k, v), **F64)
    assert counter.n == attention_multiply_adds("exact", t_q, t_k, d)

    for top in range(1, t_k + 1):
        counter = Counter()
        best = lambda i, scores, top=top: sorted(scores, key=lambda j: -float(scores[j]))[:top]
        out = softmax_rows_by_loops(q, k, v, counter, choose=best)
        assert_close(out, topk_core(top)(q, k, v, None, False)[0], **F64)
        assert counter.n == attention_multiply_adds("topk", t_q, t_k, d, k=top)

    for w in range(4):  # a band kernel: one block of min(2w + 1, T_k) keys per query, holding the whole window
        window, width = window_mask(t_q, t_k, w), min(2 * w + 1, t_k)
        starts = [min(int(row.nonzero()[0]), t_k - width) for row in window]  # the window's first key, kept inside
        blocks = [list(range(start, start + width)) for start in starts]
        assert all(set(window[i].nonzero()[:, 0].tolist()) <= set(blocks[i]) for i in range(t_q))
        counter = Counter()
        in_window = lambda i, scores, window=window: [j for j in scores if window[i, j]]
        out = softmax_rows_by_loops(q, k, v, counter, blocks, in_window)
        assert_close(out, window_core(w)(q, k, v, None, False)[0], **F64)
        counter.n += sum(width - int(window[i].sum()) for i in range(t_q)) * d  # the block's masked keys, weight 0
        assert counter.n == attention_multiply_adds("window", t_q, t_k, d, half_width=w)

    counter = Counter()  # linear: sum_j phi(k_j) [v_j, 1]^T once, then one product per query
    phi_q, phi_k = F.elu(q) + 1, F.elu(k) + 1
    v_and_one = torch.cat([v, torch.ones(t_k, 1, dtype=v.dtype)], dim=-1)  # [T_k, d + 1]
    state = torch.zeros(d, d + 1, dtype=q.dtype)
    for j in range(t_k):
        for a in range(d):
            state[a] += counter.scaled(phi_k[j, a], v_and_one[j])
    out = torch.stack([torch.stack([counter.dot(phi_q[i], state[:, c]) for c in range(d + 1)]) for i in range(t_q)])
    assert_close(out[:, :d] / (out[:, d:] + 1e-6), linear_attention(q, k, v), **F64)
    assert counter.n == attention_multiply_adds("linear", t_q, t_k, d)

    for m in (1, 3):  # latents: M latent queries read the source, then the queries read the M latents
        latents = torch.randn(m, d, dtype=q.dtype)
        counter = Counter()
        summary = softmax_rows_by_loops(latents, k, v, counter)  # [M, d]
        out = softmax_rows_by_loops(q, summary, summary, counter)
        expected = F.scaled_dot_product_attention(q, *(2 * [F.scaled_dot_product_attention(latents, k, v)]))
        assert_close(out, expected, **F64)
        assert counter.n == attention_multiply_adds("latents", t_q, t_k, d, n_latents=m)


def test_cost_of_the_approximations_at_a_long_source() -> None:
    exact = attention_multiply_adds("exact", 128, 16384, 64)
    assert exact == 2 * 128 * 16384 * 64
    assert attention_multiply_adds("window", 128, 16384, 64, half_width=3) * 16384 == exact * 7  # 7 keys of 16384
    linear = attention_multiply_adds("linear", 128, 16384, 64)
    assert 3.5 < exact / linear < 2 * 128 / 64  # it saves about 2 T_q / d: little, for a short target
    assert exact / 2 < attention_multiply_adds("topk", 128, 16384, 64, k=4) < exact  # still every score


# --- bad input: expected vs actual -----------------------------------------------------------------------------------
def raises(match: str):
    return pytest.raises(ValueError, match=match)


def test_every_bad_input_names_what_was_expected_and_what_came() -> None:
    scores = torch.randn(2, 3, 5)
    with raises(r">= 1.*k=0"):
        topk_mask(scores, 0)
    with raises(r"k > T_src.*k=7.*T_src=5"):
        topk_mask(scores, 7)
    with raises(r">= 1.*k=0"):
        topk_core(0)
    with raises(r"half_width must be an int >= 0.*half_width=-1"):
        window_mask(3, 4, -1)
    with raises(r"half_width must be an int >= 0.*half_width=-2"):
        window_core(-2)
    q, k, v = qkv(2, 1, 3, 4, 2, seed=5)
    with raises(r"\[\.\.\., 1, T_k\].*got \[2, 1, 3, 4\]"):
        linear_attention(q, k, v, torch.ones(2, 1, 3, 4, dtype=torch.bool))
    with raises(r"\[\.\.\., 1, T_k\].*got \[3, 4\]"):
        linear_core()(q, k, v, torch.ones(3, 4, dtype=torch.bool), False)
    with raises(r"expected at least one cross-attention module.*found 0 in a Linear"):
        with use_attention_core(nn.Linear(2, 2), exact_core()):
            pass
    with raises(r"found 0 in a MultiHeadAttention"):
        with use_attention_core(MultiHeadAttention(8, 2), exact_core(), which="self"):
            pass
    with raises(r"k > T_src: k=9.*T_src=5"):
        attention_multiply_adds("topk", 3, 5, 4, k=9)
    with raises(r"kind 'window' needs half_width"):
        attention_multiply_adds("window", 3, 5, 4)
    with raises(r"half_width does not apply to kind 'exact'"):
        attention_multiply_adds("exact", 3, 5, 4, half_width=2)
    with raises(r"kind must be one of"):
        attention_multiply_adds("sparse", 3, 5, 4)
