"""Lesson 12: retrieval-style cross-attention with document isolation, with PyTorch's own tools.

The setting is RETRO's (Borgeaud et al. 2022): a target is cut into segments (RETRO's chunks), and each segment
comes with a few passages retrieved for it. To attend to all of them in one call, the target segments are packed
into the queries and all the retrieved passages into one source; every position carries the id of the segment it
belongs to (``-1`` for padding). Segment ``s`` may read only the passages retrieved for ``s``: the cross-attention
mask is ``query id == key id`` (``course_lib.masks.cross_document_mask``), a block pattern in the
``T_q x T_k`` rectangle.

Four ways to compute the same thing (``document_attention``'s ``backend``):

- ``"mask"``: the course's hand-written attention with the dense bool mask (stores every score);
- ``"sdpa"``: ``F.scaled_dot_product_attention`` with that mask (a fused kernel, still given a dense mask);
- ``"flex"``: ``flex_attention`` with a ``BlockMask``: the mask is described by a function (``mask_mod``) and
  summarised per 128 x 128 tile, so whole tiles with no visible key can be skipped. Run eagerly it computes every
  score anyway (unfused);
- ``"flex_compiled"``: ``torch.compile(flex_attention)``, a fused kernel generated for this mask that really
  skips the empty tiles; compiled once per process (first call: seconds), then reused.

On a CPU (torch 2.13) FlexAttention has no backward, and the compiled kernel takes float32 but not float64.

Sources of different lengths can also be batched without padding: ``nested_cross_attention`` (nested jagged
tensors through SDPA) against ``padded_cross_attention``; on a CPU the nested path pads internally (see
``time_nested_vs_padded``). Timing helpers measure all of it: ``time_document_attention``, ``time_nested_vs_padded``.
"""
from __future__ import annotations

import functools
import os
import subprocess
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from functools import partial
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.nn.attention.flex_attention import BlockMask, create_block_mask, flex_attention

from ._checks import require_ndim, require_nonempty, require_tensor, shape_str
from .attention import scaled_dot_product_attention
from .masks import cross_document_mask

BACKENDS = ("mask", "sdpa", "flex", "flex_compiled")
_EAGER_FLEX_WARNING = "flex_attention called without torch.compile"
_NESTED_WARNING = "The PyTorch API of nested tensors is in prototype stage"


class PackedRetrieval(NamedTuple):
    """Packed queries, keys and values ``[B, H, T, d_head]`` with each position's segment id ``[B, T]`` (-1: pad)."""

    q: Tensor
    k: Tensor
    v: Tensor
    query_segments: Tensor
    key_segments: Tensor


def retrieval_layout(*, batch: int, segments: tuple[int, int], passages: tuple[int, int],
                     segment_length: tuple[int, int], passage_length: tuple[int, int],
                     seed: int = 0) -> tuple[list[list[int]], list[list[list[int]]]]:
    """Random lengths for ``packed_retrieval_batch``: per row, a number of segments in ``segments`` (inclusive
    range), each of ``segment_length`` queries with a number of passages in ``passages``, each of
    ``passage_length`` keys. Returns ``(segment_lengths, passage_lengths)``."""
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise ValueError(f"batch must be an int >= 1; got {batch!r}")
    for name, (low, high) in (("segments", segments), ("passages", passages), ("segment_length", segment_length),
                              ("passage_length", passage_length)):
        if not 0 <= low <= high or (low == 0 and name != "passages"):
            raise ValueError(f"{name} must be a range (low, high) with 1 <= low <= high (passages: 0 <= low); "
                             f"got {(low, high)}")
    gen = torch.Generator().manual_seed(seed)
    draw = lambda low, high: int(torch.randint(low, high + 1, (1,), generator=gen))  # noqa: E731
    segment_lengths, passage_lengths = [], []
    for _ in range(batch):
        n_segments = draw(*segments)
        segment_lengths.append([draw(*segment_length) for _ in range(n_segments)])
        passage_lengths.append([[draw(*passage_length) for _ in range(draw(*passages))] for _ in range(n_segments)])
    return segment_lengths, passage_lengths


def packed_retrieval_batch(segment_lengths: Sequence[Sequence[int]],
                           passage_lengths: Sequence[Sequence[Sequence[int]]], *, heads: int = 4, d_head: int = 64,
                           seed: int = 0, shuffle_passages: bool = False, t_q: int | None = None,
                           t_k: int | None = None, dtype: torch.dtype = torch.float32,
                           device: torch.device | str | None = None) -> PackedRetrieval:
    """Random queries, keys and values for packed target segments and their retrieved passages.

    Args:
        segment_lengths: per batch row, the query count of each target segment (segment ids 0, 1, ...).
        passage_lengths: per row, per segment, the key count of each passage retrieved for it (may be empty).
        shuffle_passages: put each row's passages in a random order (still contiguous) instead of segment order.
        t_q, t_k: pad the queries / keys to this length (default: the longest row).

    Returns:
        ``PackedRetrieval``: ``q [B, H, T_q, d_head]``, ``k, v [B, H, T_k, d_head]``, ``query_segments [B, T_q]``
        and ``key_segments [B, T_k]`` (int64, -1 at padding).
    """
    if len(segment_lengths) == 0 or len(passage_lengths) != len(segment_lengths):
        raise ValueError(f"expected one list of passage lengths per batch row: {len(segment_lengths)} rows of "
                         f"segments, {len(passage_lengths)} of passages (and at least one row)")
    gen = torch.Generator().manual_seed(seed)
    query_rows, key_rows = [], []
    for row, (segments, passages) in enumerate(zip(segment_lengths, passage_lengths)):
        if len(passages) != len(segments) or any(n < 1 for n in segments) or \
                any(n < 1 for lengths in passages for n in lengths):
            raise ValueError(f"row {row}: expected one passage list per segment and lengths >= 1; got segments "
                             f"{list(segments)}, passages {[list(p) for p in passages]}")
        query_rows.append(torch.cat([torch.full((n,), s) for s, n in enumerate(segments)]))
        pieces = [torch.full((n,), s) for s, lengths in enumerate(passages) for n in lengths]
        if shuffle_passages:
            pieces = [pieces[i] for i in torch.randperm(len(pieces), generator=gen).tolist()]
        key_rows.append(torch.cat(pieces) if pieces else torch.empty(0, dtype=torch.long))
    t_q = max(len(r) for r in query_rows) if t_q is None else t_q
    t_k = max(1, max(len(r) for r in key_rows)) if t_k is None else t_k
    if t_q < max(len(r) for r in query_rows) or t_k < max(len(r) for r in key_rows):
        raise ValueError(f"t_q, t_k must be at least the longest row: got {t_q}, {t_k}; rows need "
                         f"{max(len(r) for r in query_rows)}, {max(len(r) for r in key_rows)}")
    pad = lambda rows, t: torch.stack([torch.cat([r, r.new_full((t - len(r),), -1)]) for r in rows])  # noqa: E731
    batch = len(query_rows)
    q, k, v = (torch.randn(batch, heads, t, d_head, generator=gen, dtype=dtype) for t in (t_q, t_k, t_k))
    return PackedRetrieval(*(x.to(device) for x in (q, k, v, pad(query_rows, t_q), pad(key_rows, t_k))))


# --- one attention, four backends --------------------------------------------------------------------------------

def _check_document_inputs(q: Tensor, k: Tensor, v: Tensor, query_segments: Tensor, key_segments: Tensor) -> None:
    for name, x in (("q", q), ("k", k), ("v", v)):
        require_tensor(name, x)
        require_ndim(name, x, 4, "[B, H, T, d_head]")
    if not (q.shape[:2] == k.shape[:2] == v.shape[:2]) or k.shape[2] != v.shape[2] or q.shape[3] != k.shape[3]:
        raise ValueError(f"q [B, H, T_q, d], k [B, H, T_k, d] and v [B, H, T_k, d_v] must share B, H, T_k and d: "
                         f"got q {shape_str(q.shape)}, k {shape_str(k.shape)}, v {shape_str(v.shape)}")
    for name, ids, x_name, x, t in (("query_segments", query_segments, "q", q, "T_q"),
                                    ("key_segments", key_segments, "k", k, "T_k")):
        require_nonempty(x_name, x, 2, "sequence")
        require_tensor(name, ids)
        expected = (x.shape[0], x.shape[2])
        if tuple(ids.shape) != expected:
            raise ValueError(f"{name} must have shape [B, {t}] = {shape_str(expected)} to match "
                             f"{x_name} {shape_str(x.shape)}; got {shape_str(ids.shape)}")
        if ids.dtype.is_floating_point or ids.dtype == torch.bool:
            raise ValueError(f"{name} must hold integer segment ids; got dtype {ids.dtype}")
        if ids.device != x.device:
            raise ValueError(f"{name} must be on {x.device}, like the tensors; got {ids.device}")


def _check_segment_ids(query_segments: Tensor, key_segments: Tensor) -> None:
    for name, ids in (("query_segments", query_segments), ("key_segments", key_segments)):
        require_tensor(name, ids)
        require_ndim(name, ids, 2, "[B, T]")
        require_nonempty(name, ids, 1, "sequence")
        if ids.dtype.is_floating_point or ids.dtype == torch.bool:
            raise ValueError(f"{name} must hold integer segment ids; got dtype {ids.dtype}")
    if query_segments.shape[0] != key_segments.shape[0] or query_segments.device != key_segments.device:
        raise ValueError(f"query_segments and key_segments must share batch size and device: got "
                         f"{shape_str(query_segments.shape)} on {query_segments.device} and "
                         f"{shape_str(key_segments.shape)} on {key_segments.device}")


def document_block_mask(query_segments: Tensor, key_segments: Tensor, *, block_size: int = 128) -> BlockMask:
    """FlexAttention's ``BlockMask`` for ``query id == key id >= 0``, shared by all heads.

    ``create_block_mask`` evaluates the ``mask_mod`` below on every (query, key) pair once and keeps, per
    ``block_size x block_size`` tile, whether the tile is empty, full or partial; only the partial tiles consult
    ``mask_mod`` again during attention."""
    def same_segment(b: Tensor, h: Tensor, q_idx: Tensor, kv_idx: Tensor) -> Tensor:
        key_id = key_segments[b, kv_idx]
        return (query_segments[b, q_idx] == key_id) & (key_id >= 0)

    _check_segment_ids(query_segments, key_segments)
    if isinstance(block_size, bool) or not isinstance(block_size, int) or block_size < 1:
        raise ValueError(f"block_size must be an int >= 1; got {block_size!r}")
    batch, t_q = query_segments.shape
    return create_block_mask(same_segment, batch, None, t_q, key_segments.shape[1], device=query_segments.device,
                             BLOCK_SIZE=block_size)


def blocks_skipped(block_mask: BlockMask) -> float:
    """Fraction of the ``BlockMask``'s tiles (over batch, heads, query and key tiles) that are never computed.

    Counted from the tiles themselves: ``BlockMask.sparsity()`` divides computed tile *areas* by ``T_q x T_k``
    and is wrong when a length is not a multiple of the block size (e.g. -46711 % for 7 queries and 5 keys)."""
    computed = block_mask.to_dense()  # [B, H, query tiles, key tiles], 1 = computed
    return 1.0 - float(computed.sum()) / computed.numel()


@functools.cache
def compiled_flex_attention() -> Callable[..., object]:
    """``torch.compile(flex_attention)``, made once per process; the kernels are generated at the first call (and
    again for new shapes or dtypes), and cached on disk under ``TORCHINDUCTOR_CACHE_DIR``."""
    return torch.compile(flex_attention)


def has_visible_key(query_segments: Tensor, key_segments: Tensor) -> Tensor:
    """``[B, T_q]`` bool: True where the query's segment id is >= 0 and occurs among its row's keys. Needs
    ``O(B x (T_q + T_k + largest id))`` memory, not the ``T_q x T_k`` of the dense mask."""
    _check_segment_ids(query_segments, key_segments)
    n_ids = int(max(query_segments.max(), key_segments.max(), 0)) + 2  # slot 0 collects every negative id
    present = torch.zeros(key_segments.shape[0], n_ids, dtype=torch.bool, device=key_segments.device)
    present.scatter_(1, key_segments.clamp(min=-1) + 1, True)  # [B, n_ids]: ids seen among the keys
    return present.gather(1, query_segments.clamp(min=-1) + 1) & (query_segments >= 0)


def _flex(q: Tensor, k: Tensor, v: Tensor, block_mask: BlockMask, compiled: bool) -> Tensor:
    attend = compiled_flex_attention() if compiled else flex_attention
    if not torch.is_grad_enabled():  # torch's flex refuses CPU inputs that require grad, even under no_grad
        q, k, v = q.detach(), k.detach(), v.detach()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_EAGER_FLEX_WARNING)  # eager: "materializes the full scores"
        return attend(q, k, v, block_mask=block_mask)


def _prepare(backend: str, query_segments: Tensor, key_segments: Tensor, block_size: int = 128) -> object:
    """What each backend needs besides q, k, v: the dense mask, or the BlockMask and the rows with a key."""
    if backend.startswith("flex"):
        return document_block_mask(query_segments, key_segments, block_size=block_size), \
            has_visible_key(query_segments, key_segments)
    return cross_document_mask(query_segments, key_segments)  # [B, 1, T_q, T_k]


def _attend(q: Tensor, k: Tensor, v: Tensor, backend: str, prepared: object) -> Tensor:
    if backend == "mask":
        return scaled_dot_product_attention(q, k, v, prepared)[0]
    if backend == "sdpa":
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=prepared)
        return torch.where(prepared.any(dim=-1, keepdim=True), out, 0.0)  # SDPA's math fallback gives NaN there
    block_mask, has_key = prepared
    out = _flex(q, k, v, block_mask, compiled=backend == "flex_compiled")
    # flex gives 0 where a query sees no key (its log-sum-exp is -inf); this keeps the course's contract
    return torch.where(has_key[:, None, :, None], out, 0.0)


def document_attention(q: Tensor, k: Tensor, v: Tensor, query_segments: Tensor, key_segments: Tensor, *,
                       backend: str = "mask", block_mask: BlockMask | None = None) -> Tensor:
    """Cross-attention in which each query reads only the keys of its own segment (``query id == key id >= 0``).

    Args:
        q: ``[B, H, T_q, d]``; k: ``[B, H, T_k, d]``; v: ``[B, H, T_k, d_v]``.
        query_segments: ``[B, T_q]`` integer segment ids; key_segments: ``[B, T_k]``; ids below 0 are padding.
        backend: one of ``BACKENDS`` (module docstring). On a CPU both flex backends are inference only (no
            backward), and ``"flex_compiled"`` takes float32 (or 16-bit floats), not float64.
        block_mask: for the flex backends, a ``document_block_mask`` built earlier (a model builds it once per batch
            and reuses it in every layer); default: built here.

    Returns:
        ``[B, H, T_q, d_v]``; a query with no key of its segment (padding, or a segment with no passage) gets 0.
    """
    _check_document_inputs(q, k, v, query_segments, key_segments)
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}; got {backend!r}")
    if backend.startswith("flex") and q.device.type == "cpu":
        if backend == "flex_compiled" and q.dtype == torch.float64:
            raise ValueError("backend 'flex_compiled' on a CPU takes float32, float16 or bfloat16; got float64")
        if torch.is_grad_enabled() and any(x.requires_grad for x in (q, k, v)):
            raise ValueError(f"backend {backend!r} on a CPU is inference only (FlexAttention has no CPU backward): "
                             "expected inputs without gradient, or torch.no_grad(); got inputs that require grad")
    if block_mask is None:
        prepared = _prepare(backend, query_segments, key_segments)
    elif not backend.startswith("flex"):
        raise ValueError(f"block_mask is used by the flex backends only; got one with backend {backend!r}")
    else:
        expected = (q.shape[0], q.shape[2], k.shape[2])
        if (block_mask.shape[0], *block_mask.shape[2:]) != expected:
            raise ValueError(f"block_mask must cover [B, T_q, T_k] = {shape_str(expected)}; got "
                             f"{shape_str(block_mask.shape)} ([B, H, T_q, T_k])")
        prepared = block_mask, has_visible_key(query_segments, key_segments)
    return _attend(q, k, v, backend, prepared)


# --- sources of different lengths: nested jagged tensors vs padding --------------------------------------------

def _check_sources(queries: Sequence[Tensor], keys: Sequence[Tensor], values: Sequence[Tensor]) -> None:
    if not (len(queries) == len(keys) == len(values) >= 1):
        raise ValueError(f"expected as many queries, keys and values (at least 1): got {len(queries)}, "
                         f"{len(keys)}, {len(values)}")
    for i, (q, k, v) in enumerate(zip(queries, keys, values)):
        for name, x in (("queries", q), ("keys", k), ("values", v)):
            require_tensor(f"{name}[{i}]", x)
            require_ndim(f"{name}[{i}]", x, 3, "[H, T, d]")
            if x.shape[1] == 0:
                raise ValueError(f"{name}[{i}] is empty: expected T >= 1, got shape {shape_str(x.shape)}")
        first_q, first_v = queries[0], values[0]
        if q.shape[0] != first_q.shape[0] or k.shape[0] != q.shape[0] or v.shape[0] != q.shape[0] or \
                q.shape[2] != first_q.shape[2] or k.shape[2] != q.shape[2] or v.shape[2] != first_v.shape[2] or \
                k.shape[1] != v.shape[1]:
            raise ValueError(f"item {i}: queries [H, T_q, d], keys [H, T_k, d], values [H, T_k, d_v] with H, d and "
                             f"d_v shared by all items; got {shape_str(q.shape)}, {shape_str(k.shape)}, "
                             f"{shape_str(v.shape)} (item 0: {shape_str(first_q.shape)}, {shape_str(first_v.shape)})")


def as_jagged(items: Sequence[Tensor]) -> Tensor:
    """Items ``[H, T_i, d]`` -> one nested jagged tensor ``[N, H, j, d]`` (``j``: the ragged length), no padding."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_NESTED_WARNING)
        nested = torch.nested.nested_tensor([x.transpose(0, 1) for x in items], layout=torch.jagged)  # [N, j, H, d]
    return nested.transpose(1, 2)  # [N, H, j, d]


def as_padded(items: Sequence[Tensor]) -> tuple[Tensor, Tensor]:
    """Items ``[H, T_i, d]`` -> zero-padded ``[N, H, T_max, d]`` and the padding mask ``[N, 1, 1, T_max]``."""
    longest = max(x.shape[1] for x in items)
    padded = torch.stack([F.pad(x, (0, 0, 0, longest - x.shape[1])) for x in items])  # [N, H, T_max, d]
    lengths = torch.tensor([x.shape[1] for x in items], device=padded.device)
    return padded, (torch.arange(longest, device=padded.device) < lengths[:, None])[:, None, None, :]


def _jagged_sdpa(q: Tensor, k: Tensor, v: Tensor) -> list[Tensor]:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_NESTED_WARNING)  # the CPU math path makes strided nested tensors
        return list(F.scaled_dot_product_attention(q, k, v).unbind())  # each [H, T_q_i, d_v]


def nested_cross_attention(queries: Sequence[Tensor], keys: Sequence[Tensor], values: Sequence[Tensor]) -> list[Tensor]:
    """Cross-attention for a batch of items of different lengths, with no padding: item ``i``'s queries
    ``[H, T_q_i, d]`` read its own keys ``[H, T_k_i, d]`` and values ``[H, T_k_i, d_v]``, all items in one
    ``F.scaled_dot_product_attention`` call on nested jagged tensors. Returns each item's output
    ``[H, T_q_i, d_v]``. (On a CPU, PyTorch 2.13 runs this on SDPA's math path, whose matmuls pad internally.)"""
    _check_sources(queries, keys, values)
    return _jagged_sdpa(as_jagged(queries), as_jagged(keys), as_jagged(values))


def padded_cross_attention(queries: Sequence[Tensor], keys: Sequence[Tensor], values: Sequence[Tensor]) -> list[Tensor]:
    """``nested_cross_attention``'s result the usual way: pad every item to the longest, mask the padded keys, one
    SDPA call, then cut each output back to its item's query count."""
    _check_sources(queries, keys, values)
    (q, _), (k, key_mask), (v, _) = as_padded(queries), as_padded(keys), as_padded(values)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=key_mask)  # [N, H, T_q_max, d_v]
    return [out[i, :, :x.shape[1]] for i, x in enumerate(queries)]


# --- measured, not assumed ---------------------------------------------------------------------------------------

def _nbytes(prepared: object) -> int:
    if isinstance(prepared, Tensor):
        return prepared.numel() * prepared.element_size()
    block_mask, has_key = prepared
    return sum(t.numel() * t.element_size() for t in block_mask.as_tuple() if isinstance(t, Tensor)) + has_key.numel()


def inductor_cache_state() -> str:
    """Where ``torch.compile`` keeps its kernels (``TORCHINDUCTOR_CACHE_DIR``, else a default under the temp dir)
    and whether anything is there yet: "empty" means the next first compile is cold."""
    try:
        from torch._inductor.runtime.cache_dir_utils import cache_dir  # private: may move between torch versions

        folder = cache_dir()
    except (ImportError, AttributeError):
        folder = os.environ.get("TORCHINDUCTOR_CACHE_DIR", "the default inductor cache folder")
    files = sum(len(names) for _, _, names in os.walk(folder)) if os.path.isdir(folder) else 0
    return f"{folder} ({'empty' if files == 0 else f'{files} files'})"


@torch.no_grad()
def time_document_attention(batch: PackedRetrieval, *, backends: Sequence[str] = BACKENDS, repeats: int = 3,
                            block_size: int = 128) -> list[dict]:
    """Time and memory of ``document_attention``'s backends on one packed batch (forward, no grad).

    Each backend's mask is built first (timed: ``mask_build_s``; its size: ``mask_bytes``) and reused, as a model
    reuses it in every layer. The first call (``first_call_s``) is timed alone: for ``"flex_compiled"`` it is the
    compile, if this process has not compiled flex for these shapes yet (cold or warm: see ``inductor_cache``, read
    before the call). Then ``seconds`` (median of ``repeats`` rounds, backends alternating) and ``peak_bytes``
    (``measure.peak_memory_bytes``, output included). Also ``blocks_skipped`` (flex backends, else None) and
    ``max_abs_diff`` against the ``"mask"`` backend's output. One dict per backend, in order.
    """
    from .measure import median_seconds, peak_memory_bytes

    q, k, v, query_segments, key_segments = batch
    _check_document_inputs(q, k, v, query_segments, key_segments)
    unknown = [b for b in backends if b not in BACKENDS]
    if unknown or not backends:
        raise ValueError(f"backends must be a non-empty selection of {BACKENDS}; got {list(backends)}")
    device = q.device
    reference = document_attention(*batch, backend="mask")
    rows, calls = [], {}
    for backend in backends:
        build = partial(_prepare, backend, query_segments, key_segments, block_size)
        prepared = build()
        row = dict(backend=backend, mask_build_s=median_seconds({"b": build}, repeats, device)["b"],
                   mask_bytes=_nbytes(prepared),
                   blocks_skipped=blocks_skipped(prepared[0]) if backend.startswith("flex") else None,
                   inductor_cache=inductor_cache_state() if backend == "flex_compiled" else None)
        calls[backend] = partial(_attend, q, k, v, backend, prepared)
        start = time.perf_counter()
        out = calls[backend]()
        row["first_call_s"] = time.perf_counter() - start
        row["max_abs_diff"] = float((out - reference).abs().max())
        rows.append(row)
    seconds = median_seconds(calls, repeats, device)
    for row in rows:
        row["seconds"] = seconds[row["backend"]]
        row["peak_bytes"] = peak_memory_bytes(calls[row["backend"]], device)
    return rows


def first_compiled_call_seconds(spec: dict) -> float:
    """Seconds of the first ``"flex_compiled"`` call on ``packed_retrieval_batch(**spec)`` in this process (the
    block mask built beforehand): the compile plus one run."""
    batch = packed_retrieval_batch(**spec)
    prepared = _prepare("flex_compiled", batch.query_segments, batch.key_segments)
    with torch.no_grad():
        start = time.perf_counter()
        _attend(batch.q, batch.k, batch.v, "flex_compiled", prepared)
        return time.perf_counter() - start


def compile_seconds_in_fresh_process(spec: dict, cache_dir: str) -> float:
    """``first_compiled_call_seconds(spec)`` in a new Python process whose inductor cache is ``cache_dir``: an empty
    folder measures a cold compile, the same folder again a warm one (kernels read back from disk)."""
    code = ("import json, sys; from course_lib.retrieval import first_compiled_call_seconds as f; "
            "print(f(json.loads(sys.argv[1])))")
    import json

    env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": cache_dir}
    done = subprocess.run([sys.executable, "-c", code, json.dumps(spec)], env=env, capture_output=True, text=True,
                          check=True)
    return float(done.stdout.strip().splitlines()[-1])


NESTED_SWEEP = (
    dict(name="tiny, ragged", query_lengths=[4] * 4, source_lengths=[5, 11, 3, 1]),
    dict(name="equal lengths", query_lengths=[32] * 8, source_lengths=[256] * 8),
    dict(name="one long, many short", query_lengths=[32] * 16, source_lengths=[32] * 15 + [2048]),
    dict(name="many short, one long", query_lengths=[16] * 256, source_lengths=[16] * 255 + [2048]),
)


def _sdpa_math(q: Tensor, k: Tensor, v: Tensor, mask: Tensor) -> Tensor:
    from torch.nn.attention import SDPBackend, sdpa_kernel

    with sdpa_kernel(SDPBackend.MATH):
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)


def as_packed(items: Sequence[Tensor]) -> tuple[Tensor, Tensor]:
    """Items ``[H, T_i, d]`` -> one row ``[1, H, sum T_i, d]`` and each position's item index ``[1, sum T_i]``:
    the layout ``document_attention`` reads, no padding."""
    ids = torch.cat([torch.full((x.shape[1],), i, device=x.device) for i, x in enumerate(items)])
    return torch.cat(list(items), dim=1)[None], ids[None]


def _nested_vs_padded_calls(queries: list[Tensor], keys: list[Tensor], values: list[Tensor],
                            packed_flex: bool) -> tuple[dict[str, Callable], dict[str, Callable]]:
    """The packing functions and, on tensors packed once, the attention calls (``time_nested_vs_padded``)."""
    builds = {"nested": lambda: [as_jagged(xs) for xs in (queries, keys, values)],
              "padded": lambda: (as_padded(queries)[0], *as_padded(keys), as_padded(values)[0])}
    nested, (q, k, key_mask, v) = builds["nested"](), builds["padded"]()
    cut = lambda out: [o[:, :x.shape[1]] for o, x in zip(out, queries)]  # noqa: E731  [N, H, T_max, d] -> items
    calls = {"nested": lambda: _jagged_sdpa(*nested),
             "padded": lambda: cut(F.scaled_dot_product_attention(q, k, v, attn_mask=key_mask)),
             "padded_math": lambda: cut(_sdpa_math(q, k, v, key_mask)),
             "loop": lambda: [F.scaled_dot_product_attention(a[None], b[None], c[None])[0]
                              for a, b, c in zip(queries, keys, values)]}
    if packed_flex:
        def build_packed() -> tuple[Tensor, Tensor, Tensor, object]:
            (q_row, query_ids), (k_row, key_ids) = as_packed(queries), as_packed(keys)
            return q_row, k_row, as_packed(values)[0], _prepare("flex_compiled", query_ids, key_ids)

        builds["packed_flex"] = build_packed
        q_row, k_row, v_row, prepared = build_packed()
        split = [x.shape[1] for x in queries]
        calls["packed_flex"] = lambda: list(_attend(q_row, k_row, v_row, "flex_compiled", prepared)[0]
                                            .split(split, dim=1))
    return builds, calls


@torch.no_grad()
def time_nested_vs_padded(cases: Sequence[dict] = NESTED_SWEEP, *, heads: int = 4, d_head: int = 64,
                          repeats: int = 3, seed: int = 0, packed_flex: bool = False) -> list[dict]:
    """Sources of different lengths, four (or five) ways, for each case ``dict(name, query_lengths,
    source_lengths)``:

    - ``"nested"``: nested jagged tensors through SDPA (``nested_cross_attention``, no padding);
    - ``"padded"``: padded to the longest source, key padding mask, SDPA's default (fused) kernel;
    - ``"padded_math"``: the same, forced onto SDPA's math kernel (the kernel the nested path runs on a CPU);
    - ``"loop"``: one SDPA call per item (no padding, no nested tensor: Python pays per item);
    - ``"packed_flex"`` (if ``packed_flex``): all items packed into one row, each position labelled with its item,
      through ``document_attention``'s compiled flex (no padding; tiles between different items skipped). Its
      first call compiles (not timed here; see ``time_document_attention``).

    Tensors are packed once (``build_seconds``: time to pack the lists, by method) and reused. Returns one dict per
    case: ``name``, ``items``, ``total_keys``, ``longest``, ``padding`` (fraction of the padded key slots that are
    padding), ``seconds`` and ``peak_bytes`` (dicts by method; outputs cut back to the items included),
    ``build_seconds``, and ``max_abs_diff`` (largest difference of any method from ``"nested"``).
    """
    from .measure import median_seconds, peak_memory_bytes

    cpu = torch.device("cpu")
    gen = torch.Generator().manual_seed(seed)
    rows = []
    for case in cases:
        queries = [torch.randn(heads, t, d_head, generator=gen) for t in case["query_lengths"]]
        keys, values = ([torch.randn(heads, t, d_head, generator=gen) for t in case["source_lengths"]]
                        for _ in range(2))
        _check_sources(queries, keys, values)
        builds, calls = _nested_vs_padded_calls(queries, keys, values, packed_flex)
        outputs = {name: fn() for name, fn in calls.items()}  # also the warm-up (and packed_flex's compile)
        diff = max(float((a - b).abs().max()) for name in calls if name != "nested"
                   for a, b in zip(outputs[name], outputs["nested"]))
        lengths = case["source_lengths"]
        rows.append(dict(name=case["name"], items=len(lengths), total_keys=sum(lengths), longest=max(lengths),
                         padding=1 - sum(lengths) / (len(lengths) * max(lengths)),
                         seconds=median_seconds(calls, repeats, cpu),
                         peak_bytes={name: peak_memory_bytes(fn, cpu) for name, fn in calls.items()},
                         build_seconds=median_seconds(builds, repeats, cpu), max_abs_diff=diff))
    return rows
