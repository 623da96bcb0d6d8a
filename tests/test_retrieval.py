"""Retrieval-style cross-attention with document isolation (``course_lib.retrieval``): every backend (SDPA with the
dense mask, FlexAttention eager and compiled with a BlockMask) against the course's hand-written masked attention
and a per-segment loop over PyTorch's SDPA; nested jagged tensors against padding; block sparsity against a
brute-force count; bad inputs.

The one test that compiles FlexAttention (about 20-40 s with a cold inductor cache on 2 cores) is
``test_compiled_flex_attention_equals_the_hand_written_attention``: ``-k "not compiled"`` skips it."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch.testing import assert_close

from course_lib.masks import cross_document_mask
from course_lib.retrieval import (
    BACKENDS,
    PackedRetrieval,
    as_jagged,
    as_padded,
    blocks_skipped,
    document_attention,
    document_block_mask,
    has_visible_key,
    nested_cross_attention,
    packed_retrieval_batch,
    padded_cross_attention,
    retrieval_layout,
    time_document_attention,
    time_nested_vs_padded,
)

TOL = {torch.float32: {"atol": 1e-5, "rtol": 1e-5}, torch.float64: {"atol": 1e-10, "rtol": 1e-10}}
EAGER = ("sdpa", "flex")  # backends compared with "mask" in both dtypes (compiled flex: float32, one test below)
fast = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def packed(draw: st.DrawFn) -> PackedRetrieval:
    """A random packed batch: 1-3 rows of 1-4 segments with 0-3 passages each (a segment without passage has
    queries that see nothing), passages in segment order or shuffled, extra padding on both sides sometimes."""
    segment_lengths, passage_lengths = retrieval_layout(
        batch=draw(st.integers(1, 3)), segments=(1, draw(st.integers(1, 4))), passages=(0, draw(st.integers(1, 3))),
        segment_length=(1, draw(st.integers(1, 40))), passage_length=(1, draw(st.integers(1, 90))),
        seed=draw(st.integers(0, 2**31 - 1)))
    longest_q = max(map(sum, segment_lengths))
    longest_k = max(1, max(sum(map(sum, row)) for row in passage_lengths))
    return packed_retrieval_batch(
        segment_lengths, passage_lengths, heads=draw(st.integers(1, 3)), d_head=draw(st.sampled_from([4, 16])),
        seed=draw(st.integers(0, 1000)), shuffle_passages=draw(st.booleans()),
        t_q=longest_q + draw(st.sampled_from([0, 5])), t_k=longest_k + draw(st.sampled_from([0, 7])),
        dtype=draw(st.sampled_from([torch.float32, torch.float64])))


def per_segment_oracle(batch: PackedRetrieval) -> torch.Tensor:
    """For each row and segment: PyTorch's SDPA on that segment's queries and only its keys (no mask at all);
    zeros where a segment has no key."""
    q, k, v, query_ids, key_ids = batch
    out = torch.zeros(*q.shape[:3], v.shape[-1], dtype=q.dtype)
    for b in range(q.shape[0]):
        for segment in query_ids[b].unique().tolist():
            rows, cols = query_ids[b] == segment, key_ids[b] == segment
            if segment >= 0 and cols.any():
                out[b, :, rows] = F.scaled_dot_product_attention(q[b][:, rows], k[b][:, cols], v[b][:, cols])
    return out


# --- every backend computes the same attention ----------------------------------------------------------------

@fast
@given(packed())
def test_hand_written_masked_attention_equals_sdpa_segment_by_segment(batch: PackedRetrieval) -> None:
    assert_close(document_attention(*batch, backend="mask"), per_segment_oracle(batch), **TOL[batch.q.dtype])


@fast
@given(packed(), st.sampled_from(EAGER))
def test_every_backend_equals_the_hand_written_masked_attention(batch: PackedRetrieval, backend: str) -> None:
    expected = document_attention(*batch, backend="mask")
    got = document_attention(*batch, backend=backend)
    assert got.shape == expected.shape and got.dtype == expected.dtype
    assert not torch.isnan(got).any()
    assert_close(got, expected, **TOL[batch.q.dtype])


@settings(max_examples=15, deadline=None)
@given(packed())
def test_queries_that_see_no_key_get_zeros_on_every_eager_backend(batch: PackedRetrieval) -> None:
    sees_nothing = ~cross_document_mask(batch.query_segments, batch.key_segments)[:, 0].any(dim=-1)  # [B, T_q]
    assert torch.equal(has_visible_key(batch.query_segments, batch.key_segments), ~sees_nothing)
    for backend in ("mask", *EAGER):
        out = document_attention(*batch, backend=backend).transpose(1, 2)  # [B, T_q, H, d]
        assert torch.equal(out[sees_nothing], torch.zeros_like(out[sees_nothing])), backend


def test_padding_queries_and_a_segment_without_passages_give_zeros() -> None:
    """Row 0: segment 1 retrieved nothing; row 1 is shorter, so its last queries and keys are padding."""
    batch = packed_retrieval_batch([[3, 2], [2]], [[[4], []], [[5, 2]]], heads=2, d_head=4, seed=1,
                                   dtype=torch.float64)
    assert batch.query_segments.tolist() == [[0, 0, 0, 1, 1], [0, 0, -1, -1, -1]]
    assert batch.key_segments.tolist() == [[0, 0, 0, 0, -1, -1, -1], [0, 0, 0, 0, 0, 0, 0]]
    for backend in ("mask", *EAGER):
        out = document_attention(*batch, backend=backend)
        assert torch.equal(out[0, :, 3:], torch.zeros(2, 2, 4, dtype=torch.float64))
        assert torch.equal(out[1, :, 2:], torch.zeros(2, 3, 4, dtype=torch.float64))
        assert out[0, :, :3].abs().sum() > 0 and out[1, :, :2].abs().sum() > 0


def test_gradients_through_sdpa_equal_the_hand_written_paths() -> None:
    """FlexAttention has no backward on a CPU (both flex backends refuse inputs that need a gradient, below)."""
    segment_lengths, passage_lengths = retrieval_layout(batch=2, segments=(1, 3), passages=(0, 2),
                                                        segment_length=(1, 9), passage_length=(1, 20), seed=4)
    batch = packed_retrieval_batch(segment_lengths, passage_lengths, heads=2, d_head=8, dtype=torch.float64)
    grads = []
    for name in ("mask", "sdpa"):
        q, k, v = (x.clone().requires_grad_(True) for x in batch[:3])
        out = document_attention(q, k, v, *batch[3:], backend=name)
        (out * torch.linspace(-1, 1, out.numel(), dtype=out.dtype).reshape(out.shape)).sum().backward()
        grads.append((q.grad, k.grad, v.grad))
    for ours, reference in zip(*grads):
        assert_close(ours, reference, **TOL[torch.float64])


def test_a_block_mask_built_once_is_reused() -> None:
    batch = packed_retrieval_batch([[20, 30]], [[[50, 10], [70]]], heads=2, d_head=8, seed=2)
    block_mask = document_block_mask(batch.query_segments, batch.key_segments)
    assert_close(document_attention(*batch, backend="flex", block_mask=block_mask),
                 document_attention(*batch, backend="mask"), **TOL[torch.float32])


# COMPILED: the only test that compiles FlexAttention (tens of seconds with a cold TORCHINDUCTOR_CACHE_DIR).
def test_compiled_flex_attention_equals_the_hand_written_attention() -> None:
    batch = packed_retrieval_batch([[40, 90, 30], [100, 20]], [[[200, 60], [], [130]], [[80, 150, 40], [90]]],
                                   heads=2, d_head=16, seed=5, shuffle_passages=True, t_q=180)
    with torch.no_grad():
        got = document_attention(*batch, backend="flex_compiled")
    assert_close(got, document_attention(*batch, backend="mask"), **TOL[torch.float32])
    sees_nothing = ~has_visible_key(batch.query_segments, batch.key_segments)  # [B, T_q]
    assert sees_nothing.sum(dim=1).tolist() == [90 + 20, 60]  # row 0: segment 1 (no passage), padding; row 1: padding
    assert torch.equal(got.transpose(1, 2)[sees_nothing], torch.zeros(170, 2, 16))


def test_flex_refuses_gradients_and_compiled_flex_float64_on_the_cpu() -> None:
    batch = packed_retrieval_batch([[3]], [[[4]]], heads=1, d_head=4)
    with pytest.raises(ValueError, match="float32.*got float64"):
        document_attention(*(x.double() for x in batch[:3]), *batch[3:], backend="flex_compiled")
    q = batch.q.clone().requires_grad_(True)
    for backend in ("flex", "flex_compiled"):
        with pytest.raises(ValueError, match=f"'{backend}' on a CPU is inference only"):
            document_attention(q, *batch[1:], backend=backend)
    with torch.no_grad():
        document_attention(q, *batch[1:], backend="flex")  # no gradient wanted: fine


# --- block sparsity -----------------------------------------------------------------------------------------

def brute_force_blocks_skipped(batch: PackedRetrieval, block_size: int) -> float:
    mask = cross_document_mask(batch.query_segments, batch.key_segments)[:, 0]  # [B, T_q, T_k]
    t_q, t_k = mask.shape[1:]
    skipped = total = 0
    for b in range(mask.shape[0]):
        for i in range(0, t_q, block_size):
            for j in range(0, t_k, block_size):
                total += 1
                skipped += not mask[b, i:i + block_size, j:j + block_size].any()
    return skipped / total


@settings(max_examples=20, deadline=None)
@given(packed(), st.sampled_from([16, 32, 128]))
def test_blocks_skipped_equals_a_count_over_the_blocks(batch: PackedRetrieval, block_size: int) -> None:
    block_mask = document_block_mask(batch.query_segments, batch.key_segments, block_size=block_size)
    assert blocks_skipped(block_mask) == pytest.approx(brute_force_blocks_skipped(batch, block_size), abs=1e-12)


def test_blocks_skipped_of_a_retro_layout() -> None:
    """16 chunks of 64 queries, each with 2 neighbours of 128 keys: a 128-query tile holds 2 chunks, whose 512 keys
    fill 4 of the 32 key tiles, so 28 / 32 = 87.5 % of the tiles are skipped (torch's own ``sparsity()`` agrees
    here, where the lengths are multiples of the tile)."""
    batch = packed_retrieval_batch([[64] * 16], [[[128, 128]] * 16], heads=1, d_head=4)
    block_mask = document_block_mask(batch.query_segments, batch.key_segments)
    assert blocks_skipped(block_mask) == 0.875 == brute_force_blocks_skipped(batch, 128)
    assert block_mask.sparsity() == pytest.approx(87.5)


# --- sources of different lengths: nested jagged tensors vs padding --------------------------------------------

@st.composite
def ragged_items(draw: st.DrawFn) -> tuple[list[torch.Tensor], list[torch.Tensor], list[torch.Tensor]]:
    n, heads = draw(st.integers(1, 5)), draw(st.integers(1, 3))
    d, d_v = draw(st.integers(1, 8)), draw(st.integers(1, 8))
    dtype = draw(st.sampled_from([torch.float32, torch.float64]))
    gen = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    q_lengths, k_lengths = (draw(st.lists(st.integers(1, 30), min_size=n, max_size=n)) for _ in range(2))
    queries = [torch.randn(heads, t, d, generator=gen, dtype=dtype) for t in q_lengths]
    keys = [torch.randn(heads, t, d, generator=gen, dtype=dtype) for t in k_lengths]
    values = [torch.randn(heads, t, d_v, generator=gen, dtype=dtype) for t in k_lengths]
    return queries, keys, values


@fast
@given(ragged_items())
def test_nested_jagged_attention_equals_padding_with_a_mask_item_by_item(items) -> None:
    queries, keys, values = items
    nested, padded = nested_cross_attention(queries, keys, values), padded_cross_attention(queries, keys, values)
    assert len(nested) == len(padded) == len(queries)
    for q, k, v, ours, theirs in zip(queries, keys, values, nested, padded):
        alone = F.scaled_dot_product_attention(q, k, v)  # this item by itself: nothing to pad
        assert ours.shape == theirs.shape == (q.shape[0], q.shape[1], v.shape[2])
        assert_close(ours, alone, **TOL[q.dtype])
        assert_close(theirs, alone, **TOL[q.dtype])


def test_as_padded_and_as_jagged_keep_the_items() -> None:
    items = [torch.randn(2, t, 3) for t in (4, 1, 6)]
    padded, mask = as_padded(items)
    assert padded.shape == (3, 2, 6, 3) and mask.shape == (3, 1, 1, 6)
    assert mask[:, 0, 0].sum(dim=-1).tolist() == [4, 1, 6]
    assert torch.equal(padded[1, :, 1:], torch.zeros(2, 5, 3))
    for item, back in zip(items, as_jagged(items).unbind()):
        assert torch.equal(item, back)


def test_items_packed_into_one_row_with_a_document_mask_equal_nested_attention() -> None:
    """The way around padding that a CPU rewards: every item in one row, each position labelled with its item."""
    from course_lib.retrieval import as_packed

    gen = torch.Generator().manual_seed(7)
    queries = [torch.randn(2, t, 8, generator=gen) for t in (3, 1, 5)]
    keys, values = ([torch.randn(2, t, 8, generator=gen) for t in (4, 9, 2)] for _ in range(2))
    (q, query_ids), (k, key_ids), (v, _) = as_packed(queries), as_packed(keys), as_packed(values)
    assert q.shape == (1, 2, 9, 8) and query_ids.tolist() == [[0, 0, 0, 1, 2, 2, 2, 2, 2]]
    packed = document_attention(q, k, v, query_ids, key_ids, backend="flex")[0].split([3, 1, 5], dim=1)
    for ours, theirs in zip(packed, nested_cross_attention(queries, keys, values)):
        assert_close(ours, theirs, **TOL[torch.float32])


# --- the generator and the timing helpers (structure only: speed is measured, never asserted) ------------------

def test_packed_retrieval_batch_lays_out_segments_and_passages() -> None:
    batch = packed_retrieval_batch([[2, 1]], [[[3, 1], [2]]], heads=3, d_head=5, seed=0, shuffle_passages=True)
    assert batch.q.shape == (1, 3, 3, 5) and batch.k.shape == batch.v.shape == (1, 3, 6, 5)
    assert batch.query_segments.tolist() == [[0, 0, 1]]
    runs = torch.unique_consecutive(batch.key_segments[0], return_counts=True)
    passages = sorted(zip(runs[0].tolist(), runs[1].tolist()))
    assert passages in ([(0, 1), (0, 3), (1, 2)], [(0, 4), (1, 2)])  # two passages of 0 may end up side by side
    again = packed_retrieval_batch([[2, 1]], [[[3, 1], [2]]], heads=3, d_head=5, seed=0, shuffle_passages=True)
    assert all(torch.equal(a, b) for a, b in zip(batch, again))


def test_time_document_attention_reports_every_backend() -> None:
    batch = packed_retrieval_batch([[30, 20]], [[[40], [60, 10]]], heads=2, d_head=8)
    rows = time_document_attention(batch, backends=("mask", "sdpa", "flex"), repeats=1)
    assert [r["backend"] for r in rows] == ["mask", "sdpa", "flex"]
    for r in rows:
        assert r["seconds"] > 0 and r["first_call_s"] > 0 and r["peak_bytes"] > 0 and r["max_abs_diff"] < 1e-5
    assert rows[0]["mask_bytes"] == 50 * 110 and rows[0]["blocks_skipped"] is None
    assert rows[2]["blocks_skipped"] == 0.0  # one 128 x 128 tile, and it is not empty


def test_time_nested_vs_padded_reports_every_method() -> None:
    cases = [dict(name="small", query_lengths=[2, 3], source_lengths=[4, 1])]
    (row,) = time_nested_vs_padded(cases, heads=2, d_head=4, repeats=1)
    assert row["name"] == "small" and row["items"] == 2 and row["total_keys"] == 5 and row["longest"] == 4
    assert row["padding"] == pytest.approx(3 / 8)
    assert set(row["seconds"]) == set(row["peak_bytes"]) == {"nested", "padded", "padded_math", "loop"}
    assert set(row["build_seconds"]) == {"nested", "padded"} and row["max_abs_diff"] < 1e-5


# --- bad inputs ---------------------------------------------------------------------------------------------------

def test_segment_ids_must_match_the_queries_and_the_keys() -> None:
    q, k, v, query_ids, key_ids = packed_retrieval_batch([[3, 2], [4]], [[[2], [3]], [[6]]], heads=2, d_head=4)
    with pytest.raises(ValueError, match=r"query_segments must have shape \[B, T_q\] = \[2, 5\].*got \[2, 4\]"):
        document_attention(q, k, v, query_ids[:, :4], key_ids)
    with pytest.raises(ValueError, match=r"key_segments must have shape \[B, T_k\] = \[2, 6\].*got \[1, 6\]"):
        document_attention(q, k, v, query_ids, key_ids[:1])
    with pytest.raises(ValueError, match="integer segment ids; got dtype torch.float32"):
        document_attention(q, k, v, query_ids.float(), key_ids)
    with pytest.raises(ValueError, match=r"must share B, H, T_k and d: got q \[1, 2, 5, 4\], k \[2, 2, 6, 4\]"):
        document_attention(q[:1], k, v, query_ids[:1], key_ids)
    with pytest.raises(ValueError, match=r"\[B, H, T, d_head\]"):
        document_attention(q[0], k, v, query_ids, key_ids)


def test_unknown_backend_and_misplaced_block_masks_are_value_errors() -> None:
    batch = packed_retrieval_batch([[3, 2]], [[[2], [3]]], heads=2, d_head=4)
    with pytest.raises(ValueError, match=r"backend must be one of \('mask', 'sdpa', 'flex', 'flex_compiled'\); "
                                         r"got 'flash'"):
        document_attention(*batch, backend="flash")
    block_mask = document_block_mask(batch.query_segments, batch.key_segments)
    with pytest.raises(ValueError, match="flex backends only; got one with backend 'sdpa'"):
        document_attention(*batch, backend="sdpa", block_mask=block_mask)
    other = packed_retrieval_batch([[3, 3]], [[[2], [3]]], heads=2, d_head=4)
    with pytest.raises(ValueError, match=r"block_mask must cover \[B, T_q, T_k\] = \[1, 6, 5\]; got \[1, 1, 5, 5\]"):
        document_attention(*other, backend="flex", block_mask=block_mask)
    with pytest.raises(ValueError, match="non-empty selection"):
        time_document_attention(batch, backends=("mask", "fast"))
    assert set(BACKENDS) == {"mask", "sdpa", "flex", "flex_compiled"}


def test_nested_inputs_must_pair_up() -> None:
    q, k = [torch.randn(2, 3, 4)], [torch.randn(2, 5, 4)]
    with pytest.raises(ValueError, match="as many queries, keys and values .*: got 1, 1, 2"):
        nested_cross_attention(q, k, k + k)
    with pytest.raises(ValueError, match=r"item 0: .*got \[2, 3, 4\], \[3, 5, 4\]"):
        nested_cross_attention(q, [torch.randn(3, 5, 4)], [torch.randn(3, 5, 4)])
    with pytest.raises(ValueError, match=r"keys\[0\] is empty"):
        padded_cross_attention(q, [torch.randn(2, 0, 4)], [torch.randn(2, 0, 4)])
    with pytest.raises(ValueError, match=r"queries\[0\] must have shape \[H, T, d\]"):
        nested_cross_attention([torch.randn(3, 4)], k, k)


def test_layouts_and_batches_reject_bad_lengths() -> None:
    with pytest.raises(ValueError, match="one list of passage lengths per batch row: 2 rows of segments, 1"):
        packed_retrieval_batch([[3], [2]], [[[4]]])
    with pytest.raises(ValueError, match="row 0: expected one passage list per segment"):
        packed_retrieval_batch([[3, 2]], [[[4]]])
    with pytest.raises(ValueError, match="t_q, t_k must be at least the longest row: got 2, 4"):
        packed_retrieval_batch([[3]], [[[4]]], t_q=2)
    with pytest.raises(ValueError, match=r"segment_length must be a range .* got \(0, 3\)"):
        retrieval_layout(batch=1, segments=(1, 2), passages=(0, 1), segment_length=(0, 3), passage_length=(1, 2))


def test_segment_id_helpers_check_their_inputs() -> None:
    ids = torch.zeros(2, 3, dtype=torch.long)
    with pytest.raises(ValueError, match=r"share batch size and device: got \[2, 3\] on cpu and \[1, 3\] on cpu"):
        has_visible_key(ids, ids[:1])
    with pytest.raises(ValueError, match=r"key_segments must have shape \[B, T\] \(2 dims\); got shape \[3\]"):
        document_block_mask(ids, ids[0])
    with pytest.raises(ValueError, match="block_size must be an int >= 1; got 0"):
        document_block_mask(ids, ids, block_size=0)
    with pytest.raises(ValueError, match="query_segments has an empty sequence"):
        has_visible_key(ids[:, :0], ids)
