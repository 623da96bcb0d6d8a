"""Lesson 13: the score bias on every attention path, relative position biases, time-restricted masks.

References nobody here wrote: ``F.scaled_dot_product_attention`` with an additive float mask, FlexAttention's
``score_mod`` run eagerly, and brute-force loops over the definitions.
"""
from __future__ import annotations

import math
import warnings

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from course_lib.attention import MultiHeadAttention, scaled_dot_product_attention
from course_lib.position import (
    BucketedCrossBias,
    alibi_slopes,
    alignment_distance,
    diagonal_bias,
    flex_biased_attention,
    relative_position_buckets,
    streaming_mask,
    wait_k_mask,
)

pytestmark = pytest.mark.usefixtures("single_thread")
TOL = {torch.float64: 1e-10, torch.float32: 1e-5}
B, H, T_Q, T_K, D = 2, 4, 5, 7, 16


def _additive(bias: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """The reference float mask: the bias where visible, -inf where masked."""
    return bias if mask is None else torch.where(mask, bias, torch.tensor(float("-inf"), dtype=bias.dtype))


def _masks() -> dict[str, torch.Tensor | None]:
    """No mask, a wait-k mask (every row sees a key), a padding mask with a fully masked sentence."""
    g = torch.Generator().manual_seed(3)
    random = torch.rand(B, 1, T_Q, T_K, generator=g) < 0.6
    random[..., 0] = True  # every row keeps a key: the reference SDPA has no zero-row rule
    return {"none": None, "wait_k": wait_k_mask(T_Q, [4, T_K], 2), "random": random}


def _module_reference(mha: MultiHeadAttention, x, src, bias, mask) -> torch.Tensor:
    """MultiHeadAttention computed with torch's SDPA and the additive float mask, from the module's own weights."""
    q, (k, v) = mha.split_heads(mha.q_proj(x)), mha.project_source(src)
    attn_mask = _additive(bias.expand(B, H, T_Q, T_K), mask)
    return mha.out_proj(mha.merge_heads(F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("mask_name", ["none", "wait_k", "random"])
@pytest.mark.parametrize("path", ["hand", "sdpa", "weights"])
def test_module_bias_equals_additive_float_mask(path: str, mask_name: str, dtype: torch.dtype) -> None:
    torch.manual_seed(0)
    mha = MultiHeadAttention(D, H, d_source=12, use_sdpa=path == "sdpa", dtype=dtype).eval()
    x, src = torch.randn(B, T_Q, D, dtype=dtype), torch.randn(B, T_K, 12, dtype=dtype)
    bias = torch.randn(H, T_Q, T_K, dtype=dtype) * 3
    mask = _masks()[mask_name]
    out, weights = mha(x, src, mask=mask, bias=bias, need_weights=path == "weights")
    expected = _module_reference(mha, x, src, bias, mask)
    torch.testing.assert_close(out, expected, rtol=TOL[dtype], atol=TOL[dtype])
    unbiased, _ = mha(x, src, mask=mask)
    assert (out - unbiased).abs().max() > 1e-3  # the bias did something: this test can fail
    if path == "weights":
        scores = mha.split_heads(mha.q_proj(x)) @ mha.project_source(src).k.transpose(-2, -1) / math.sqrt(D // H)
        expected_w = torch.softmax(scores + _additive(bias.expand(B, H, T_Q, T_K), mask), dim=-1)
        torch.testing.assert_close(weights, expected_w, rtol=TOL[dtype], atol=TOL[dtype])


@pytest.mark.parametrize("bias_shape", [(T_Q, T_K), (H, T_Q, T_K), (B, H, T_Q, T_K), (B, 1, 1, T_K)])
def test_function_bias_broadcasts_like_sdpa(bias_shape: tuple[int, ...]) -> None:
    torch.manual_seed(1)
    q, k, v = (torch.randn(B, H, t, 8, dtype=torch.float64) for t in (T_Q, T_K, T_K))
    bias = torch.randn(bias_shape, dtype=torch.float64)
    mask = _masks()["random"]
    out, weights = scaled_dot_product_attention(q, k, v, mask, bias=bias)
    expected = F.scaled_dot_product_attention(q, k, v, attn_mask=_additive(bias.expand(B, H, T_Q, T_K), mask))
    torch.testing.assert_close(out, expected, rtol=1e-10, atol=1e-10)
    assert torch.allclose(weights.sum(-1), torch.ones((), dtype=torch.float64))


def test_bias_equals_flex_attention_score_mod() -> None:
    flex = pytest.importorskip("torch.nn.attention.flex_attention")
    torch.manual_seed(2)
    q, k, v = (torch.randn(B, H, t, 8) for t in (T_Q, T_K, T_K))
    bias = diagonal_bias(T_Q, T_K, alibi_slopes(H)) + torch.randn(H, T_Q, T_K)

    def score_mod(score, b, h, q_idx, kv_idx):
        return score + bias[h, q_idx, kv_idx]

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = flex.flex_attention(q, k, v, score_mod=score_mod)
    out, _ = scaled_dot_product_attention(q, k, v, bias=bias)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("path", ["hand", "sdpa"])
@pytest.mark.parametrize("scale", [1.0, 1e4, 1e30])
def test_no_nan_with_bias_and_fully_masked_rows(path: str, scale: float) -> None:
    torch.manual_seed(4)
    mha = MultiHeadAttention(D, H, use_sdpa=path == "sdpa").eval()
    x, src = torch.randn(B, T_Q, D), torch.randn(B, T_K, D)
    bias = (torch.randn(H, T_Q, T_K) * scale).requires_grad_()
    mask = wait_k_mask(T_Q, [0, 3], 1, t_k=T_K)  # sentence 0 is empty: every row fully masked
    if path == "sdpa" and scale > 1e4:
        pytest.skip("SDPA adds the bias itself; the overflow clamp is the hand-written path's")
    out, weights = mha(x, src, mask=mask, bias=bias, need_weights=path == "hand")
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out[0], mha.out_proj.bias.expand(T_Q, D))  # zero context: only out_proj's bias
    if weights is not None:
        assert torch.isfinite(weights).all() and (weights[0] == 0).all()
    out.sum().backward()
    assert torch.isfinite(bias.grad).all()


def test_bias_with_beams_sharing_source_kv() -> None:
    torch.manual_seed(5)
    beams = 3
    mha = MultiHeadAttention(D, H).eval()
    x, src = torch.randn(B * beams, T_Q, D), torch.randn(B, T_K, D)
    bias = torch.randn(H, T_Q, T_K)
    mask = wait_k_mask(1, [4, T_K], None)  # a padding mask [B, 1, 1, S]
    out, _ = mha(x, source_kv=mha.project_source(src), mask=mask, bias=bias)
    expected, _ = mha(x, src.repeat_interleave(beams, 0), mask=mask.repeat_interleave(beams, 0), bias=bias)
    torch.testing.assert_close(out, expected)


@pytest.mark.parametrize("t_q,t_k", [(1, 1), (3, 7), (7, 3), (4, 4), (5, 12)])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_alignment_distance_and_diagonal_bias_brute_force(t_q: int, t_k: int, dtype: torch.dtype) -> None:
    slopes = torch.tensor([0.5, 0.25, 0.125], dtype=dtype)
    distance, bias = alignment_distance(t_q, t_k, dtype=dtype), diagonal_bias(t_q, t_k, slopes)
    assert distance.shape == (t_q, t_k) and bias.shape == (3, t_q, t_k) and bias.dtype == dtype
    for i in range(t_q):
        for j in range(t_k):
            expected = j - i * t_k / t_q
            assert abs(distance[i, j].item() - expected) <= TOL[dtype] * max(1.0, abs(expected))
            for h in range(3):
                assert abs(bias[h, i, j].item() + slopes[h].item() * abs(expected)) <= TOL[dtype] * max(1.0, t_k)


def test_alibi_slopes() -> None:
    torch.testing.assert_close(alibi_slopes(8), torch.tensor([2.0 ** -h for h in range(1, 9)]))
    torch.testing.assert_close(alibi_slopes(4), torch.tensor([2.0 ** (-2 * h) for h in range(1, 5)]))
    six = alibi_slopes(6)  # the 4-head slopes, then the odd-numbered slopes of 8 heads
    torch.testing.assert_close(six, torch.tensor([1 / 4, 1 / 16, 1 / 64, 1 / 256, 1 / 2, 1 / 8]))
    assert alibi_slopes(1).tolist() == [2.0 ** -8]


def _bucket_brute(d: float, n_buckets: int, max_distance: int, bidirectional: bool) -> int:
    """T5's formula, written directly: exact below n/2, floor of a log scale above (1e-9: boundaries count)."""
    n = round(d)  # halves to even, as torch.round
    offset = 0
    if bidirectional:
        n_buckets //= 2
        offset = n_buckets if n > 0 else 0
    n = abs(n)
    exact = n_buckets // 2
    if n < exact or exact == 0:
        return offset + (n if exact else 0)
    if max_distance <= exact:
        return offset + n_buckets - 1
    log_part = math.floor(math.log(n / exact) / math.log(max_distance / exact) * (n_buckets - exact) + 1e-9)
    return offset + min(n_buckets - 1, exact + log_part)


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 40), st.integers(1, 200), st.booleans(), st.lists(st.floats(-500, 500), min_size=1, max_size=30))
def test_buckets_brute_force(n_buckets: int, max_distance: int, bidirectional: bool, values: list[float]) -> None:
    if bidirectional and n_buckets < 2:
        n_buckets = 2
    distance = torch.tensor(values, dtype=torch.float64)
    got = relative_position_buckets(distance, n_buckets, max_distance, bidirectional=bidirectional)
    assert got.dtype == torch.long
    assert got.tolist() == [_bucket_brute(v, n_buckets, max_distance, bidirectional) for v in values]
    assert int(got.min()) >= 0 and int(got.max()) < n_buckets


@pytest.mark.parametrize("bidirectional", [True, False])
def test_buckets_monotone_in_magnitude(bidirectional: bool) -> None:
    n = torch.arange(0, 400)
    for sign in (1, -1):
        buckets = relative_position_buckets(sign * n, 32, 128, bidirectional=bidirectional)
        assert (buckets.diff() >= 0).all()
    below = relative_position_buckets(-n, 32, 128)
    assert below[:8].tolist() == list(range(8)) and below.max() == 15  # exact, then log, within the lower half
    assert relative_position_buckets(n[1:], 32, 128).min() == 17  # ahead: the upper half


def test_bucketed_bias_starts_at_zero_and_learns() -> None:
    module = BucketedCrossBias(H, n_buckets=16, max_distance=32)
    bias = module(T_Q, T_K)
    assert bias.shape == (H, T_Q, T_K) and (bias == 0).all()
    torch.manual_seed(6)
    mha = MultiHeadAttention(D, H)
    out, _ = mha(torch.randn(B, T_Q, D), torch.randn(B, T_K, D), bias=bias)
    out.square().sum().backward()
    assert module.table.grad is not None and module.table.grad.abs().sum() > 0
    with torch.no_grad():
        module.table.copy_(torch.arange(16 * H, dtype=torch.float32).view(16, H))
    buckets = relative_position_buckets(alignment_distance(T_Q, T_K), 16, 32)
    for h in range(H):
        torch.testing.assert_close(module(T_Q, T_K)[h], module.table[buckets, h])


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 12), min_size=1, max_size=4), st.one_of(st.none(), st.integers(1, 15)),
       st.integers(1, 10), st.integers(0, 3))
def test_wait_k_mask_brute_force(lengths: list[int], k: int | None, t_q: int, extra: int) -> None:
    t_k = max(max(lengths), 1) + extra
    mask = wait_k_mask(t_q, torch.tensor(lengths), k, t_k=t_k)
    assert mask.shape == (len(lengths), 1, t_q, t_k) and mask.dtype == torch.bool
    for b, length in enumerate(lengths):
        for i in range(t_q):
            for j in range(t_k):
                readable = length if k is None else min(k + i, length)
                assert bool(mask[b, 0, i, j]) == (j < readable), (b, i, j)
        if k is not None:
            assert int(mask[b, 0, 0].sum()) == min(k, length)  # the boundary: step 0 reads exactly k tokens


def test_wait_k_boundary_and_long_k() -> None:
    mask = wait_k_mask(3, [6], 2)[0, 0]
    assert mask.sum(-1).tolist() == [2, 3, 4]
    assert (wait_k_mask(3, [4, 2], 10)[:, 0] == wait_k_mask(3, [4, 2], None)[:, 0]).all()  # k > sentence: all
    assert wait_k_mask(2, [3, 1], None).shape == (2, 1, 2, 3)  # t_k defaults to the longest sentence


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 12), st.data())
def test_streaming_mask_brute_force(t_k: int, data: st.DataObject) -> None:
    visible = data.draw(st.lists(st.lists(st.integers(0, t_k), min_size=3, max_size=3), min_size=1, max_size=3))
    mask = streaming_mask(torch.tensor(visible), t_k)
    assert mask.shape == (len(visible), 3, t_k)
    for b, row in enumerate(visible):
        for i, count in enumerate(row):
            assert mask[b, i].tolist() == [j < count for j in range(t_k)]


@pytest.mark.parametrize("call,words", [
    (lambda m, x: m(x, x, bias=torch.zeros(H, T_Q, T_Q + 1)), "must broadcast to [2, 4, 5, 5]"),
    (lambda m, x: m(x, x, bias=torch.ones(T_Q, T_Q, dtype=torch.long)), "float tensor"),
    (lambda m, x: m(x, x, bias=torch.full((T_Q, T_Q), float("-inf"))), "finite"),
    (lambda m, x: m(x, x, bias=torch.full((T_Q, T_Q), float("nan"))), "finite"),
    (lambda m, x: scaled_dot_product_attention(x, x, x, bias=torch.zeros(3, 3)), "got shape [3, 3]"),
])
def test_bias_errors(call, words: str) -> None:
    mha, x = MultiHeadAttention(D, H), torch.randn(B, T_Q, D)
    with pytest.raises(ValueError) as info:
        call(mha, x)
    assert words in str(info.value)


def test_bias_rejected_by_chunked_path_and_core() -> None:
    x, bias = torch.randn(B, T_Q, D), torch.zeros(T_Q, T_Q)
    with pytest.raises(ValueError, match="chunked path"):
        MultiHeadAttention(D, H, chunk_size=2)(x, bias=bias)
    MultiHeadAttention(D, H, chunk_size=2)(x, bias=bias, need_weights=True)  # weights: the hand-written path
    mha = MultiHeadAttention(D, H)
    mha.attention_core = lambda q, k, v, mask, need: (q, None)
    with pytest.raises(ValueError, match="attention_core"):
        mha(x, bias=bias)


@pytest.mark.parametrize("call,words", [
    (lambda: alignment_distance(0, 3), "t_q must be an int >= 1; got 0"),
    (lambda: alignment_distance(3, 0), "t_k must be an int >= 1; got 0"),
    (lambda: alignment_distance(3, 3, dtype=torch.long), "float dtype"),
    (lambda: alibi_slopes(0), "n_heads must be an int >= 1; got 0"),
    (lambda: diagonal_bias(2, 3, torch.ones(2, 2)), "slopes must be a float tensor [H]"),
    (lambda: relative_position_buckets(torch.zeros(3), 0, 8, bidirectional=False), "n_buckets must be an int >= 1"),
    (lambda: relative_position_buckets(torch.zeros(3), 1, 8), "n_buckets must be an int >= 2; got 1"),
    (lambda: relative_position_buckets(torch.zeros(3), 8, 0), "max_distance must be an int >= 1; got 0"),
    (lambda: relative_position_buckets(torch.zeros(3, dtype=torch.bool), 8, 8), "real (int or float)"),
    (lambda: BucketedCrossBias(4, n_buckets=0), "n_buckets must be an int >= 2"),
    (lambda: BucketedCrossBias(0), "n_heads must be an int >= 1"),
    (lambda: wait_k_mask(3, [2, 3], 0), "k must be an int >= 1; got 0"),
    (lambda: wait_k_mask(0, [2, 3], 1), "t_q must be an int >= 1; got 0"),
    (lambda: wait_k_mask(3, [2, 5], 1, t_k=4), "source_lengths must lie in 0..t_k=4; got [2, 5]"),
    (lambda: wait_k_mask(3, [[2, 5]], 1), "1-D ints"),
    (lambda: streaming_mask(torch.tensor([0, 4]), 3), "must lie in 0..t_k=3; got values from 0 to 4"),
    (lambda: streaming_mask(torch.tensor([-1, 2]), 3), "got values from -1 to 2"),
    (lambda: streaming_mask(torch.tensor([1.0]), 3), "int tensor"),
    (lambda: streaming_mask(torch.tensor([1]), 0), "t_k must be an int >= 1"),
])
def test_position_errors(call, words: str) -> None:
    with pytest.raises(ValueError) as info:
        call()
    assert words in str(info.value)


# --- the diagonal while generating: a rate instead of T_tgt, rows from an offset -------------------------------------

@settings(max_examples=40, deadline=None)
@given(t_q=st.integers(1, 9), t_k=st.integers(1, 11), offset=st.integers(0, 6),
       rate=st.floats(0.25, 3.0, allow_nan=False))
def test_alignment_distance_rate_and_offset_brute_force(t_q: int, t_k: int, offset: int, rate: float) -> None:
    got = alignment_distance(t_q, t_k, source_per_target=rate, query_offset=offset, dtype=torch.float64)
    expected = torch.tensor([[j - (offset + i) * rate for j in range(t_k)] for i in range(t_q)], dtype=torch.float64)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-12)
    whole = diagonal_bias(offset + t_q, t_k, alibi_slopes(3), source_per_target=rate)
    rows = diagonal_bias(t_q, t_k, alibi_slopes(3), source_per_target=rate, query_offset=offset)
    torch.testing.assert_close(rows, whole[:, offset:], rtol=0, atol=1e-5)
    table = BucketedCrossBias(3, 8, 16)
    torch.nn.init.normal_(table.table)
    torch.testing.assert_close(table(t_q, t_k, source_per_target=rate, query_offset=offset),
                               table(offset + t_q, t_k, source_per_target=rate)[:, offset:])


def test_rate_equal_to_ratio_is_the_default() -> None:
    torch.testing.assert_close(alignment_distance(4, 10, source_per_target=2.5), alignment_distance(4, 10))


@pytest.mark.parametrize("kwargs, words", [
    (dict(query_offset=2), "needs source_per_target"),
    (dict(query_offset=-1), "query_offset must be an int >= 0"),
    (dict(source_per_target=0.0), "source_per_target must be a finite number > 0"),
    (dict(source_per_target=float("inf")), "source_per_target must be a finite number > 0"),
    (dict(source_per_target=True), "source_per_target must be a finite number > 0"),
])
def test_rate_and_offset_errors(kwargs: dict, words: str) -> None:
    with pytest.raises(ValueError, match=words):
        alignment_distance(3, 4, **kwargs)


def test_flex_biased_attention_is_the_bias_path_and_checks_the_shape() -> None:
    torch.manual_seed(5)
    q, k, v = (torch.randn(B, H, t, 8) for t in (T_Q, T_K, T_K))
    bias = diagonal_bias(T_Q, T_K, alibi_slopes(H), source_per_target=0.7)
    expected, _ = scaled_dot_product_attention(q, k, v, bias=bias)
    torch.testing.assert_close(flex_biased_attention(q, k, v, bias), expected, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match=r"bias must be \[H, T_q, T_k\]"):
        flex_biased_attention(q, k, v, bias[:, :2])
