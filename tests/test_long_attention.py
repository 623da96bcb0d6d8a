"""Exact chunked attention (online softmax, ``course_lib.long_attention``) against PyTorch's SDPA and the course's
hand-written attention: outputs, gradients, masks, fully masked rows, any chunk size."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch.testing import assert_close

from course_lib.attention import MultiHeadAttention, scaled_dot_product_attention
from course_lib.long_attention import chunked_attention, online_softmax_step

TOL = {torch.float32: {"atol": 1e-5, "rtol": 1e-5}, torch.float64: {"atol": 1e-10, "rtol": 1e-10}}
fast = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def case(draw: st.DrawFn) -> dict:
    """q, k, v ``[B, H, T, d]`` with a random padding or full mask (some rows fully masked) and a chunk size that
    need not divide T_k."""
    b, h, t_q, t_k = draw(st.integers(1, 3)), draw(st.integers(1, 3)), draw(st.integers(1, 6)), draw(st.integers(1, 40))
    d_k, d_v = draw(st.integers(1, 8)), draw(st.integers(1, 8))
    dtype = draw(st.sampled_from([torch.float32, torch.float64]))
    gen = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    q, k = (torch.randn(b, h, t, d_k, generator=gen, dtype=dtype) for t in (t_q, t_k))
    v = torch.randn(b, h, t_k, d_v, generator=gen, dtype=dtype)
    scale_up = draw(st.sampled_from([1.0, 30.0]))  # large scores: the running maximum must prevent overflow
    kind = draw(st.sampled_from(["none", "padding", "full", "one column"]))
    mask = None
    if kind == "padding":
        lengths = torch.randint(0, t_k + 1, (b,), generator=gen)  # length 0: every row of that source masked
        mask = (torch.arange(t_k)[None, :] < lengths[:, None])[:, None, None, :]  # [B, 1, 1, T_k]
    elif kind == "full":
        mask = torch.rand(b, h, t_q, t_k, generator=gen) < draw(st.sampled_from([0.2, 0.6, 1.0]))
    elif kind == "one column":
        mask = torch.rand(b, 1, t_q, 1, generator=gen) < 0.7  # broadcast over the keys
    return dict(q=q * scale_up, k=k, v=v, mask=mask, chunk=draw(st.integers(1, 45)), dtype=dtype)


@fast
@given(case())
def test_equals_the_hand_written_attention(c: dict) -> None:
    expected, _ = scaled_dot_product_attention(c["q"], c["k"], c["v"], c["mask"])
    got = chunked_attention(c["q"], c["k"], c["v"], c["mask"], chunk_size=c["chunk"])
    assert not torch.isnan(got).any()
    assert_close(got, expected, **TOL[c["dtype"]])


@fast
@given(case())
def test_equals_torch_sdpa_where_a_row_has_a_key(c: dict) -> None:
    """SDPA gives NaN (or garbage) on fully masked rows, so compare the rows that have a key; those rows are 0
    here (checked against the hand-written path above)."""
    mask = c["mask"]
    got = chunked_attention(c["q"], c["k"], c["v"], mask, chunk_size=c["chunk"])
    expected = F.scaled_dot_product_attention(c["q"], c["k"], c["v"], attn_mask=mask)
    if mask is None:
        assert_close(got, expected, **TOL[c["dtype"]])
        return
    has_key = mask.expand(*got.shape[:-1], c["k"].shape[-2]).any(dim=-1)  # [B, H, T_q]
    assert_close(got[has_key], expected[has_key], **TOL[c["dtype"]])
    assert torch.equal(got[~has_key], torch.zeros_like(got[~has_key]))


@settings(max_examples=25, deadline=None)
@given(case())
def test_gradients_equal_the_hand_written_paths(c: dict) -> None:
    if c["dtype"] != torch.float64:
        return  # gradients compared in float64 only, to 1e-10
    grads = []
    for fn in (lambda q, k, v: scaled_dot_product_attention(q, k, v, c["mask"])[0],
               lambda q, k, v: chunked_attention(q, k, v, c["mask"], chunk_size=c["chunk"])):
        q, k, v = (t.clone().requires_grad_(True) for t in (c["q"], c["k"], c["v"]))
        out = fn(q, k, v)
        (out * torch.linspace(-1, 1, out.numel(), dtype=out.dtype).reshape(out.shape)).sum().backward()
        grads.append((q.grad, k.grad, v.grad))
    for ours, reference in zip(*grads):
        assert not torch.isnan(ours).any()
        assert_close(ours, reference, **TOL[torch.float64])


def test_a_chunk_of_one_key_and_a_chunk_of_all_keys_agree() -> None:
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 4, t, 16, generator=gen, dtype=torch.float64) for t in (3, 257, 257))
    assert_close(chunked_attention(q, k, v, chunk_size=1), chunked_attention(q, k, v, chunk_size=257),
                 **TOL[torch.float64])


def test_huge_scores_do_not_overflow() -> None:
    q = torch.full((1, 1, 2, 4), 1e3)
    k = torch.randn(1, 1, 50, 4, generator=torch.Generator().manual_seed(1)) * 100
    v = torch.randn(1, 1, 50, 3, generator=torch.Generator().manual_seed(2))
    got = chunked_attention(q, k, v, chunk_size=7)
    assert torch.isfinite(got).all()
    assert_close(got, scaled_dot_product_attention(q, k, v)[0])


@pytest.mark.parametrize("chunk", [0, -3, 2.5, True, "8"])
def test_bad_chunk_size_is_a_value_error(chunk) -> None:
    q = torch.zeros(1, 2, 4)
    with pytest.raises(ValueError, match="chunk_size must be an int >= 1"):
        chunked_attention(q, q, q, chunk_size=chunk)


def test_bad_inputs_name_the_expected_shapes() -> None:
    q, k = torch.zeros(1, 2, 4), torch.zeros(1, 5, 3)
    with pytest.raises(ValueError, match="same feature size d_k"):
        chunked_attention(q, k, k)
    with pytest.raises(ValueError, match="bool"):
        chunked_attention(q, q, q, torch.ones(1, 2, 2))
    with pytest.raises(ValueError, match="broadcast"):
        chunked_attention(q, q, q, torch.ones(1, 3, 2, dtype=torch.bool))


# --- the third path of MultiHeadAttention ----------------------------------------------------------------------

@pytest.mark.parametrize("cross", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_multi_head_attention_gives_one_result_on_three_paths(cross: bool, dtype: torch.dtype) -> None:
    from course_lib import MultiHeadAttention

    torch.manual_seed(0)
    d_source = 12 if cross else None
    paths = {"hand": dict(use_sdpa=False), "sdpa": dict(use_sdpa=True), "chunked": dict(chunk_size=5)}
    modules = {name: MultiHeadAttention(16, 4, d_source=d_source, dtype=dtype, **kw) for name, kw in paths.items()}
    for module in list(modules.values())[1:]:
        module.load_state_dict(modules["hand"].state_dict())
    x = torch.randn(3, 4, 16, dtype=dtype)
    source = torch.randn(3, 23, 12, dtype=dtype) if cross else None
    t_k = 23 if cross else 4
    mask = (torch.arange(t_k)[None, :] < torch.tensor([t_k, 7, 1])[:, None])[:, None, None, :]  # padding
    outputs = {}
    for name, module in modules.items():
        inputs = x.clone().requires_grad_(True)
        out, weights = module(inputs, source, mask=mask)
        assert weights is None
        out.square().sum().backward()
        outputs[name] = (out, inputs.grad, module.k_proj.weight.grad)
    for name in ("sdpa", "chunked"):
        for ours, reference in zip(outputs[name], outputs["hand"]):
            assert_close(ours, reference, **TOL[dtype])


def test_multi_head_attention_chunked_path_returns_weights_from_the_hand_written_path() -> None:
    from course_lib import MultiHeadAttention

    module = MultiHeadAttention(8, 2, chunk_size=3)
    x = torch.randn(2, 5, 8)
    out, weights = module(x, need_weights=True)
    assert weights.shape == (2, 2, 5, 5)
    assert_close(out, module(x)[0], atol=1e-6, rtol=1e-6)


def test_multi_head_attention_rejects_a_bad_chunk_size_and_dropout_on_the_chunked_path() -> None:
    from course_lib import MultiHeadAttention

    with pytest.raises(ValueError, match="chunk_size must be None or an int >= 1"):
        MultiHeadAttention(8, 2, chunk_size=0)
    module = MultiHeadAttention(8, 2, dropout=0.1, chunk_size=4).train()
    with pytest.raises(ValueError, match="no dropout"):
        module(torch.randn(1, 3, 8))
    module.eval()(torch.randn(1, 3, 8))  # no dropout in eval mode: fine


# --- retrieval: a cross-attention mask that keeps documents apart -----------------------------------------------

def _packed_segments(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Query and key document ids [B, T]: runs of ids 0, 1, 2 ..., then -1 padding (a different split per row)."""
    gen = torch.Generator().manual_seed(seed)
    rows_q, rows_k = [], []
    for _ in range(3):
        n_docs = int(torch.randint(1, 4, (1,), generator=gen))
        q = torch.cat([torch.full((int(torch.randint(1, 5, (1,), generator=gen)),), d) for d in range(n_docs)])
        k = torch.cat([torch.full((int(torch.randint(1, 9, (1,), generator=gen)),), d) for d in range(n_docs)])
        rows_q.append(torch.cat([q, torch.full((12 - len(q),), -1)]))
        rows_k.append(torch.cat([k, torch.full((27 - len(k),), -1)]))
    return torch.stack(rows_q), torch.stack(rows_k)  # [3, 12], [3, 27]


@pytest.mark.parametrize("seed", range(5))
def test_cross_document_mask_equals_a_brute_force_oracle(seed: int) -> None:
    from course_lib.masks import cross_document_mask

    query_ids, key_ids = _packed_segments(seed)
    mask = cross_document_mask(query_ids, key_ids)
    assert mask.shape == (3, 1, 12, 27) and mask.dtype == torch.bool
    for b in range(3):
        for i in range(12):
            for j in range(27):
                expected = bool(query_ids[b, i] == key_ids[b, j] and key_ids[b, j] >= 0)
                assert bool(mask[b, 0, i, j]) == expected


@pytest.mark.parametrize("seed", range(3))
def test_cross_document_attention_equals_flex_attention_with_a_block_mask(seed: int) -> None:
    import warnings

    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    from course_lib.masks import cross_document_mask

    query_ids, key_ids = _packed_segments(seed)
    gen = torch.Generator().manual_seed(100 + seed)
    q, k, v = (torch.randn(3, 2, t, 8, generator=gen) for t in (12, 27, 27))

    def same_document(b, h, q_idx, kv_idx):
        return (query_ids[b, q_idx] == key_ids[b, kv_idx]) & (key_ids[b, kv_idx] >= 0)

    block_mask = create_block_mask(same_document, 3, None, 12, 27, device="cpu")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # eager flex_attention warns that it materialises the scores
        theirs = flex_attention(q, k, v, block_mask=block_mask)
    mask = cross_document_mask(query_ids, key_ids)
    ours = chunked_attention(q, k, v, mask, chunk_size=5)
    has_key = mask.expand(3, 2, 12, 27).any(dim=-1)  # padding queries read nothing
    assert_close(ours[has_key], theirs[has_key], atol=1e-5, rtol=1e-5)
    assert torch.equal(ours[~has_key], torch.zeros_like(ours[~has_key]))


def test_cross_document_mask_rejects_mismatched_or_float_ids() -> None:
    from course_lib.masks import cross_document_mask

    with pytest.raises(ValueError, match="same batch size"):
        cross_document_mask(torch.zeros(2, 3, dtype=torch.long), torch.zeros(3, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="integer document ids"):
        cross_document_mask(torch.zeros(2, 3), torch.zeros(2, 4, dtype=torch.long))
    with pytest.raises(ValueError, match=r"\[B, T\]"):
        cross_document_mask(torch.zeros(3, dtype=torch.long), torch.zeros(2, 4, dtype=torch.long))


def test_sources_of_different_lengths_as_nested_jagged_tensors_equal_padding_and_a_mask() -> None:
    """No padding at all: each source keeps its own length inside one nested tensor, and PyTorch's SDPA attends
    within each; the course pads to the longest and masks. Same outputs."""
    import warnings

    gen = torch.Generator().manual_seed(3)
    heads, d, t_q, lengths = 2, 8, 4, [5, 11, 3, 1]
    qs = [torch.randn(t_q, heads, d, generator=gen) for _ in lengths]
    ks, vs = ([torch.randn(s, heads, d, generator=gen) for s in lengths] for _ in range(2))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "nested tensors are a prototype"
        jagged = [torch.nested.nested_tensor(xs, layout=torch.jagged).transpose(1, 2) for xs in (qs, ks, vs)]
        theirs = F.scaled_dot_product_attention(*jagged).unbind()  # each [H, T_q, d]
    longest = max(lengths)
    padded = lambda xs: torch.stack([torch.cat([x, x.new_zeros(longest - len(x), heads, d)]) for x in xs])  # noqa: E731
    q, k, v = torch.stack(qs).transpose(1, 2), padded(ks).transpose(1, 2), padded(vs).transpose(1, 2)
    mask = (torch.arange(longest)[None, :] < torch.tensor(lengths)[:, None])[:, None, None, :]  # [B, 1, 1, S]
    ours = chunked_attention(q, k, v, mask, chunk_size=4)  # [B, H, T_q, d]
    for b, out in enumerate(theirs):
        assert_close(ours[b], out, atol=1e-5, rtol=1e-5)


def test_online_softmax_step_all_masked_chunk_changes_nothing():
    m = torch.tensor([[0.5]], dtype=torch.float64)
    total, acc = torch.tensor([[2.0]], dtype=torch.float64), torch.tensor([[1.0, -1.0]], dtype=torch.float64)
    scores = torch.full((1, 3), float("-inf"), dtype=torch.float64)
    new = online_softmax_step(m, total, acc, scores, torch.randn(3, 2, dtype=torch.float64))
    for got, before in zip(new, (m, total, acc)):
        assert torch.equal(got, before)
    first = online_softmax_step(torch.full((1, 1), float("-inf")), torch.zeros(1, 1), torch.zeros(1, 2),
                                torch.full((1, 3), float("-inf")), torch.randn(3, 2))
    assert not any(torch.isnan(t).any() for t in first)


def test_attention_core_replaces_exact_attention():
    torch.manual_seed(0)
    mha = MultiHeadAttention(16, 4).eval()
    x, source = torch.randn(2, 5, 16), torch.randn(2, 7, 16)
    mask = torch.rand(2, 1, 1, 7) > 0.3
    expected, expected_weights = mha(x, source, mask=mask, need_weights=True)
    calls = []

    def core(q, k, v, core_mask, need_weights):
        calls.append((q.shape, k.shape, need_weights))
        return scaled_dot_product_attention(q, k, v, core_mask)

    mha.attention_core = core
    got, weights = mha(x, source, mask=mask, need_weights=True)
    assert calls == [(torch.Size([2, 4, 5, 4]), torch.Size([2, 4, 7, 4]), True)]
    torch.testing.assert_close(got, expected)
    torch.testing.assert_close(weights, expected_weights)
    mha.attention_core = lambda q, k, v, m, w: (torch.zeros_like(q), None)
    assert torch.equal(mha(x, source)[0], mha.out_proj.bias.expand(2, 5, 16))
