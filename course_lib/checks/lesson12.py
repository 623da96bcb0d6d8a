"""Checkers for the exercises of lesson 12 (long sources: exact attention in chunks, document isolation, top-k keys,
shared K/V heads).

Each exercise is its reference, its cases and its list of named mistakes (``MISTAKES``), run by
``_harness.run_cases``. References: ``course_lib.long_attention.online_softmax_step`` (exercise 1),
``course_lib.masks.cross_document_mask`` (exercise 2), ``course_lib.long_attention.topk_mask`` (exercise 3) and
``course_lib.attention.repeat_kv_heads`` (exercise 4).

Conventions the hints rely on: the running state of the online softmax is ``m`` (``running_max [..., T_q, 1]``, the
largest score seen so far, ``-inf`` before any key), ``l`` (``running_sum [..., T_q, 1]``, the sum of
``exp(score - m)``) and ``acc`` (``[..., T_q, d_v]``, the sum of ``exp(score - m) * value``); masked keys come as
``-inf`` scores. Masks are bool, True = may attend; a document id below 0 is padding, which nothing reads. Query head
``h`` reads K/V head ``h // (n_heads // H_kv)`` (consecutive query heads share a K/V head).
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from ..attention import repeat_kv_heads
from ..long_attention import online_softmax_step, topk_mask
from ..masks import cross_document_mask
from ._cases import Case, Mistake
from ._harness import run_cases
from ._results import Hint, checker

INF = float("inf")


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# --- Exercise 1 · online_softmax_step(running_max, running_sum, acc, scores, values) ----------------------------------

def online_softmax_step_reference(running_max: Tensor, running_sum: Tensor, acc: Tensor, scores: Tensor,
                                  values: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """The new ``(m, l, acc)`` after one chunk of keys (``course_lib.long_attention.online_softmax_step``)."""
    return online_softmax_step(running_max, running_sum, acc, scores, values)


def _nothing_seen(scores: Tensor, d_v: int) -> tuple[Tensor, Tensor, Tensor]:
    """The state before any key: ``m = -inf``, ``l = 0``, ``acc = 0``."""
    rows = (*scores.shape[:-1], 1)
    return (torch.full(rows, -INF, dtype=scores.dtype), torch.zeros(rows, dtype=scores.dtype),
            torch.zeros(*scores.shape[:-1], d_v, dtype=scores.dtype))


def _softmax_case(name: str, batch: tuple[int, ...], t_q: int, c: int, d_v: int, seed: int, dtype: torch.dtype, *,
                  first: bool, base: float = 0.0, offsets: tuple[float, ...] = (0.0,),
                  masked_before: tuple[tuple[Any, ...], ...] = (), masked_now: tuple[tuple[Any, ...], ...] = ()
                  ) -> Case:
    """One step. ``first``: nothing seen yet; otherwise the state after one earlier chunk of ``c + 1`` keys.
    ``base``: added to every score; ``offsets[i % len]``: added to query row ``i`` of this chunk (rows whose maximum
    grows, rows whose maximum does not); ``masked_before`` / ``masked_now``: index prefixes (batch dims, then the
    query row) whose keys are all masked in the earlier chunk / in this one."""
    gen = _generator(seed)
    shift = torch.tensor([offsets[i % len(offsets)] for i in range(t_q)], dtype=dtype)[:, None]  # [T_q, 1]
    scores = base + shift + 2.0 * torch.randn(*batch, t_q, c, generator=gen, dtype=dtype)
    values = torch.randn(*batch, c, d_v, generator=gen, dtype=dtype)
    for index in masked_now:
        scores[index] = -INF
    if first:
        state = _nothing_seen(scores, d_v)
    else:
        earlier = base + 2.0 * torch.randn(*batch, t_q, c + 1, generator=gen, dtype=dtype)
        for index in masked_before:
            earlier[index] = -INF
        earlier_values = torch.randn(*batch, c + 1, d_v, generator=gen, dtype=dtype)
        state = online_softmax_step(*_nothing_seen(earlier, d_v), earlier, earlier_values)
    return Case(name, (*state, scores, values), batch=batch[0], square=False)


SOFTMAX_CASES = [
    _softmax_case("first chunk (running_max = -inf: no key seen yet), B=2, H=2, 3 queries, 4 keys; every key of "
                  "query 1 masked in [0, 0]", (2, 2), 3, 4, 5, 1200, torch.float32, first=True,
                  masked_now=((0, 0, 1),)),
    _softmax_case("a later chunk raises the maximum of queries 0 and 2 (not of 1 and 3), B=3, 4 queries, 6 keys",
                  (3,), 4, 6, 2, 1201, torch.float32, first=False, offsets=(5.0, -5.0)),
    _softmax_case("float64, B=2, H=3: every key of this chunk masked for query 0 after keys were seen, and query 3 "
                  "of [0, *] has seen no key at all", (2, 3), 4, 3, 5, 1202, torch.float64, first=False,
                  offsets=(0.0, 4.0, -4.0, 3.0), masked_before=((slice(None), slice(None), 3),),
                  masked_now=((slice(None), slice(None), 0), (0, slice(None), 3))),
    _softmax_case("batch of 1, H=2, scores around 1000 (exp(1000) overflows): query 0's maximum grows, query 1's "
                  "chunk is 1000 below the past maximum", (1, 2), 3, 5, 4, 1203, torch.float32, first=False,
                  base=1000.0, offsets=(4.0, -1000.0, 0.0)),
    _softmax_case("float64, first chunk with scores around 1000, B=2, 2 queries, 5 keys", (2,), 2, 5, 3, 1204,
                  torch.float64, first=True, base=1000.0),
]


def _step_variant(*, rescale_sum: bool = True, rescale_acc: bool = True, inverted: bool = False,
                  chunk_max_only: bool = False, guard: bool = True, subtract_max: bool = True,
                  chunk_softmax: bool = False, past_forgotten: bool = False, normalised: bool = False,
                  swap_m_l: bool = False) -> Callable[..., tuple[Tensor, Tensor, Tensor]]:
    """``online_softmax_step`` with one thing wrong (the flag's name says which)."""
    def step(running_max: Tensor, running_sum: Tensor, acc: Tensor, scores: Tensor,
             values: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        chunk_max = scores.amax(dim=-1, keepdim=True)
        if past_forgotten:  # the chunk's own state, as if no key had come before
            running_max, running_sum, acc = torch.full_like(chunk_max, -INF), running_sum * 0, acc * 0
        new_max = chunk_max if chunk_max_only else torch.maximum(running_max, chunk_max)
        shift = torch.where(torch.isinf(new_max), torch.zeros_like(new_max), new_max) if guard else new_max
        if chunk_softmax:
            weights = torch.softmax(scores, dim=-1)
        else:
            weights = torch.exp(scores - shift) if subtract_max else torch.exp(scores)
        correction = torch.exp(shift - running_max) if inverted else torch.exp(running_max - shift)
        if not subtract_max:
            correction = torch.ones_like(correction)
        new_sum = (running_sum * correction if rescale_sum else running_sum) + weights.sum(dim=-1, keepdim=True)
        new_acc = (acc * correction if rescale_acc else acc) + weights @ values
        if normalised:
            new_acc = new_acc / new_sum
        return (new_sum, new_max, new_acc) if swap_m_l else (new_max, new_sum, new_acc)
    return step


_RESCALE = "multiply it by exp(m_old - m_new) before adding the chunk's part"
_GUARD = "torch.where(torch.isinf(m_new), 0, m_new)"
SOFTMAX_MISTAKES = [
    Mistake("sum_not_rescaled", "your running_sum is not rescaled when the maximum grows: it was summed relative to "
            f"the old maximum, so {_RESCALE} (acc is right)", _step_variant(rescale_sum=False)),
    Mistake("acc_not_rescaled", "your acc is not rescaled when the maximum grows: it was summed relative to the old "
            f"maximum, so {_RESCALE} (running_sum is right)", _step_variant(rescale_acc=False)),
    Mistake("nothing_rescaled", "neither running_sum nor acc is rescaled when the maximum grows: both were summed "
            "relative to the old maximum, so multiply both by exp(m_old - m_new) before adding the chunk's part",
            _step_variant(rescale_sum=False, rescale_acc=False)),
    Mistake("rescale_inverted", "your rescaling factor is inverted: exp(m_new - m_old) grows the old sums when it "
            "should shrink them; multiply running_sum and acc by exp(m_old - m_new), which is at most 1",
            _step_variant(inverted=True)),
    Mistake("chunk_max_only", "your new running_max is this chunk's maximum, which forgets a larger score seen "
            "earlier (and exp(m_old - m_new) then overflows): m_new = torch.maximum(running_max, "
            "scores.amax(dim=-1, keepdim=True))", _step_variant(chunk_max_only=True)),
    Mistake("nan_when_nothing_seen", "NaN where no key has been seen yet and this chunk's keys are all masked: "
            "m_new is -inf there and -inf - (-inf) is NaN. Subtract 0 instead of m_new on those rows, e.g. shift = "
            f"{_GUARD}, and use it in both exponentials", _step_variant(guard=False)),
    Mistake("max_not_subtracted", "you added exp(scores) without subtracting the maximum, which overflows (exp(1000) "
            "is inf in any float dtype): use exp(scores - m_new), and rescale the old running_sum and acc by "
            "exp(m_old - m_new)", _step_variant(subtract_max=False)),
    Mistake("chunk_softmax", "you normalised this chunk's weights with a softmax: the chunk holds only some of the "
            "keys, so its weights must stay unnormalised, exp(scores - m_new), added to running_sum and acc "
            "(acc / running_sum is divided once, after the last chunk)", _step_variant(chunk_softmax=True)),
    Mistake("past_forgotten", "your step returns this chunk's own state and drops what running_max, running_sum and "
            "acc held from earlier chunks: fold the chunk into them (rescale them by exp(m_old - m_new), then add "
            "the chunk's part)", _step_variant(past_forgotten=True)),
    Mistake("acc_normalised", "you returned acc divided by running_sum: keep acc unnormalised (the sum of "
            "exp(score - m) * value); the division happens once, after the last chunk",
            _step_variant(normalised=True)),
    Mistake("max_and_sum_swapped", "you returned (running_sum, running_max, acc): the order is (running_max, "
            "running_sum, acc)", _step_variant(swap_m_l=True)),
]


@checker("Exercise 1 · online_softmax_step(running_max, running_sum, acc, scores, values)")
def check_online_softmax_step(online_softmax_step_fn: Callable[..., tuple[Tensor, Tensor, Tensor]]) -> str:
    """``online_softmax_step(running_max [..., T_q, 1], running_sum [..., T_q, 1], acc [..., T_q, d_v], scores
    [..., T_q, C], values [..., C, d_v]) -> (m, l, acc)``: one chunk of keys folded into the running softmax."""
    return run_cases(online_softmax_step_fn, reference=online_softmax_step_reference, cases=SOFTMAX_CASES,
                     mistakes=SOFTMAX_MISTAKES,
                     what="online_softmax_step(running_max, running_sum, acc, scores, values)",
                     outputs=("running_max", "running_sum", "acc"),
                     error_tips=[("must match the size of tensor", "check each shape: running_max and the chunk's "
                                  "maximum are [..., T_q, 1] (scores.amax(dim=-1, keepdim=True)), scores [..., T_q, C] "
                                  "and values [..., C, d_v], so the chunk's part of acc is weights @ values")],
                     passed="the running max, sum and output after one chunk, rescaled when the maximum grows, no "
                            f"NaN for fully masked chunks, no overflow at scores of 1000 ({len(SOFTMAX_CASES)} "
                            "cases: first chunk, batch and head axes, float64)")


# --- Exercise 2 · cross_document_mask(query_segments, key_segments) ---------------------------------------------------

def cross_document_mask_reference(query_segments: Tensor, key_segments: Tensor) -> Tensor:
    """bool ``[B, 1, T_q, T_k]``: True where the query's and the key's document ids are equal and not negative
    (``course_lib.masks.cross_document_mask``)."""
    return cross_document_mask(query_segments, key_segments)


_DOCUMENTS = [  # name, query ids (rows), key ids (rows), dtype
    ("B=2, 5 queries, 7 keys, padding (-1) at the end of both", [[0, 0, 1, 1, 2], [0, 1, 1, -1, -1]],
     [[0, 0, 0, 1, 1, 2, 2], [0, 0, 1, 1, 1, -1, -1]], torch.long),
    ("batch of 1, 3 queries, 6 keys, no padding", [[0, 1, 2]], [[0, 0, 1, 1, 2, 2]], torch.long),
    ("B=3, 4 queries, 4 keys with other ids than the queries", [[0, 0, 1, 1], [2, 2, 2, 2], [0, 1, 1, -1]],
     [[0, 1, 1, 1], [2, 2, -1, -1], [1, 1, 0, 0]], torch.long),
    ("B=2, 6 queries, 3 keys, ids 5, 7, 3 (not 0, 1, 2), int32, a query document with no passage",
     [[5, 5, 7, 7, 3, 3], [7, 7, 7, 5, 5, 5]], [[5, 7, 7], [5, -1, -1]], torch.int32),
    ("B=2, 4 queries, 5 keys, padding -2 as well as -1", [[0, 0, -2, -2], [1, 1, 0, -1]],
     [[0, -2, -2, 0, -1], [0, 1, 1, -2, -1]], torch.long),
]


def _document_case(name: str, queries: list[list[int]], keys: list[list[int]], dtype: torch.dtype) -> Case:
    query_segments, key_segments = torch.tensor(queries, dtype=dtype), torch.tensor(keys, dtype=dtype)
    t_q, t_k = query_segments.shape[1], key_segments.shape[1]
    return Case(name, (query_segments, key_segments), batch=len(queries), square=t_q == t_k,
                info={"B": len(queries), "T_q": t_q, "T_k": t_k})


DOCUMENT_CASES = [_document_case(*row) for row in _DOCUMENTS]


def _same_id(a: Tensor, b: Tensor) -> Tensor:
    return a[:, :, None] == b[:, None, :]  # [B, T_a, T_b]


def _additive(query_segments: Tensor, key_segments: Tensor) -> Tensor:
    mask = cross_document_mask(query_segments, key_segments)
    return torch.zeros(mask.shape).masked_fill(~mask, -INF)


_FORMULA = "(query_segments[:, :, None] == key_segments[:, None, :]) & (key_segments[:, None, :] >= 0), then [:, None]"
DOCUMENT_MISTAKES = [
    Mistake("inverted", "your mask is True between different documents: True must mean 'may attend', so it is True "
            f"where the two ids are equal (and not padding): {_FORMULA}",
            lambda qs, ks: ~cross_document_mask(qs, ks)),
    Mistake("query_ids_only", "your mask is [B, 1, T_q, T_q], the shape of lesson 04's self-attention document "
            "mask over the queries: compare each query's id with each key's id, [B, 1, T_q, T_k] with T_q = {T_q}, "
            "T_k = {T_k}", lambda qs, ks: (_same_id(qs, qs) & (qs[:, None, :] >= 0))[:, None],
            match="shape"),
    Mistake("key_ids_only", "your mask is [B, 1, T_k, T_k], the shape of a self-attention document mask over the "
            "keys: compare each query's id with each key's id, [B, 1, T_q, T_k] with T_q = {T_q}, T_k = {T_k}",
            lambda qs, ks: (_same_id(ks, ks) & (ks[:, None, :] >= 0))[:, None], match="shape"),
    Mistake("padding_reads_padding", "in your mask a padding query reads the padding keys (-1 == -1 is True): ids "
            f"below 0 are padding, which nothing reads, so also require key_segments >= 0: {_FORMULA}",
            lambda qs, ks: _same_id(qs, ks)[:, None]),
    Mistake("only_minus_one_is_padding", "your mask treats only -1 as padding; any id below 0 is padding (here -2 "
            "too): require key_segments >= 0 rather than != -1",
            lambda qs, ks: (_same_id(qs, ks) & (ks[:, None, :] != -1))[:, None]),
    Mistake("transposed", "your mask is [B, 1, T_k, T_q] (keys as rows): the rows are the queries, [B, 1, T_q, T_k] "
            "with T_q = {T_q}, T_k = {T_k}: query_segments[:, :, None] == key_segments[:, None, :]",
            lambda qs, ks: cross_document_mask(qs, ks).transpose(-2, -1), match="shape"),
    Mistake("no_head_axis", "your mask is [B, T_q, T_k]: add the head axis, [B, 1, T_q, T_k] ([:, None]), so that it "
            "broadcasts over the heads of the scores [B, H, T_q, T_k]",
            lambda qs, ks: cross_document_mask(qs, ks)[:, 0], match="shape"),
    Mistake("first_row_only", "your mask is [1, 1, T_q, T_k] for a batch of {B}, as if built from the first row "
            "only: each row packs its own documents, so compare row by row over the whole batch (no [0])",
            lambda qs, ks: cross_document_mask(qs[:1], ks[:1]), match="shape"),
    Mistake("numeric_mask", "your mask holds numbers (1 and 0) instead of bools: the course's masks are bool, "
            "True = may attend (no .float(), .long() or .int(): the comparisons already give bools)",
            lambda qs, ks: cross_document_mask(qs, ks).float()),
    Mistake("additive_mask", "that is an additive mask (0 where allowed, -inf where hidden); the course's masks are "
            f"bool, True = may attend: {_FORMULA}", _additive),
]


@checker("Exercise 2 · cross_document_mask(query_segments, key_segments)")
def check_cross_document_mask(cross_document_mask_fn: Callable[[Tensor, Tensor], Tensor]) -> str:
    """``cross_document_mask(query_segments [B, T_q], key_segments [B, T_k]) -> bool [B, 1, T_q, T_k]``: a query
    reads a key only of its own document; negative ids are padding."""
    return run_cases(cross_document_mask_fn, reference=cross_document_mask_reference, cases=DOCUMENT_CASES,
                     mistakes=DOCUMENT_MISTAKES, what="cross_document_mask(query_segments, key_segments)",
                     error_tips=[("must match the size of tensor", "add an axis to each side so they broadcast "
                                  "to [B, T_q, T_k]: query_segments[:, :, None] == key_segments[:, None, :]")],
                     passed="True where a query and a key belong to the same document, never for padding, "
                            f"[B, 1, T_q, T_k] ({len(DOCUMENT_CASES)} cases: T_q != T_k, padding -1 and -2, ids "
                            "that are not 0, 1, 2, a batch of 1)")


# --- Exercise 3 · topk_mask(scores, k, mask=None) ------------------------------------------------------------------

def topk_mask_reference(scores: Tensor, k: int, mask: Tensor | None = None) -> Tensor:
    """bool, the shape of ``scores [..., T_q, T_k]``: True at the ``k`` highest-scoring visible keys of each query
    row (every visible key of a row that has fewer than ``k``) (``course_lib.long_attention.topk_mask``)."""
    return topk_mask(scores, k, mask)


def _topk_case(name: str, batch: tuple[int, ...], t_q: int, t_k: int, k: int, seed: int, dtype: torch.dtype,
               mask: list[list[int]] | None = None, per_query: list[list[list[int]]] | None = None) -> Case:
    """``mask``: per batch row, the visible keys (1/0), a padding mask ``[B, 1, 1, T_k]`` whose hidden keys get
    the highest scores (so a top-k that ignores the mask picks them); ``per_query``: a mask ``[B, 1, T_q, T_k]``."""
    gen = _generator(seed)
    scores = torch.randn(*batch, t_q, t_k, generator=gen, dtype=dtype)
    args: tuple[Any, ...] = (scores, k)
    if mask is not None:
        visible = torch.tensor(mask, dtype=torch.bool)[:, None, None, :]  # [B, 1, 1, T_k]
        scores += (~visible).to(dtype) * 4.0  # the hidden keys score highest
        args = (scores, k, visible)
    elif per_query is not None:
        args = (scores, k, torch.tensor(per_query, dtype=torch.bool)[:, None])  # [B, 1, T_q, T_k]
    return Case(name, args, batch=batch[0], square=t_q == t_k, info={"k": k, "T_q": t_q, "T_k": t_k})


TOPK_CASES = [
    _topk_case("no mask, k=2 of 6 keys, B=2, H=2, 3 queries", (2, 2), 3, 6, 2, 1220, torch.float32),
    _topk_case("k=3 of 7 keys, a padding mask hides the keys that score highest", (2, 2), 4, 7, 3, 1221,
               torch.float32, mask=[[1, 1, 1, 1, 1, 0, 0], [1, 1, 0, 1, 1, 1, 0]]),
    _topk_case("float64, k=3 of 5 keys, a per-query mask: query 1 sees 2 keys (fewer than k), query 2 none",
               (2, 2), 4, 5, 3, 1222, torch.float64,
               per_query=[[[1, 1, 1, 1, 1], [0, 1, 0, 0, 1], [0, 0, 0, 0, 0], [1, 0, 1, 1, 1]],
                          [[1, 1, 1, 1, 0], [1, 1, 1, 1, 1], [0, 1, 1, 1, 1], [1, 1, 0, 1, 1]]]),
    _topk_case("batch of 1, no head axis, k=1 of 5 keys, 4 queries", (1,), 4, 5, 1, 1223, torch.float32),
    _topk_case("B=3, k=4 of 6 keys, 6 queries", (3, 1), 6, 6, 4, 1224, torch.float32),
]


def _kept(scores: Tensor, k: int, *, dim: int = -1, largest: bool = True) -> Tensor:
    return torch.zeros_like(scores, dtype=torch.bool).scatter(dim, scores.topk(k, dim=dim, largest=largest).indices,
                                                              True)


def _topk_variant(*, k_shift: int = 0, dim: int = -1, largest: bool = True, mask_first: bool = True,
                  mask_after: bool = True, shared: bool = False) -> Callable[..., Tensor]:
    """``topk_mask`` with one thing wrong: ``mask_first`` hides masked keys before the top-k (-inf, or +inf for
    the lowest), ``mask_after`` drops masked keys from the result, ``shared`` ranks keys by their mean score."""
    def wrong(scores: Tensor, k: int, mask: Tensor | None = None) -> Tensor:
        ranked = scores
        if mask is not None and mask_first:
            ranked = scores.masked_fill(~mask, -INF if largest else INF)
        if shared:
            kept = _kept(ranked.mean(dim=-2, keepdim=True), k + k_shift).expand(scores.shape)
        else:
            kept = _kept(ranked, k + k_shift, dim=dim, largest=largest)
        return kept & mask if mask is not None and mask_after else kept
    return wrong


_SCATTER = "torch.zeros_like(scores, dtype=torch.bool).scatter(-1, scores.topk(k, dim=-1).indices, True)"
TOPK_MISTAKES = [
    Mistake("lowest", "your mask keeps the k lowest scores: keep the k highest, scores.topk(k, dim=-1) (largest=True, "
            "the default)", _topk_variant(largest=False)),
    Mistake("query_axis", "your mask keeps the top k over the queries (dim=-2): each query chooses its own k keys, "
            f"so take the top k along the key axis, dim=-1: {_SCATTER}", _topk_variant(dim=-2)),
    Mistake("k_minus_one", "your mask keeps k - 1 keys per query (here k = {k}): keep exactly k, scores.topk(k, "
            "dim=-1)", _topk_variant(k_shift=-1)),
    Mistake("k_plus_one", "your mask keeps k + 1 keys per query (here k = {k}): keep exactly k, scores.topk(k, "
            "dim=-1)", _topk_variant(k_shift=1)),
    Mistake("mask_ignored", "your mask ignores the padding mask and keeps hidden keys: hide them first, "
            "scores.masked_fill(~mask, float('-inf')), take the top k, then keep only visible keys (& mask)",
            _topk_variant(mask_first=False, mask_after=False)),
    Mistake("mask_after_topk", "you chose the top k among all keys and removed the hidden ones afterwards, so a query "
            "whose top k included hidden keys keeps fewer than k: hide them before the top-k, "
            "scores.masked_fill(~mask, float('-inf')), then & mask", _topk_variant(mask_first=False)),
    Mistake("hidden_keys_fill_short_rows", "a query with fewer than k visible keys also keeps hidden ones (their "
            "score is -inf, but top-k still returns k indices): keep only visible keys, & mask at the end",
            _topk_variant(mask_after=False)),
    Mistake("shared_keys", "your mask keeps the same k keys for every query (the top k of a score averaged over the "
            f"queries): each query row chooses its own k keys, top-k along dim=-1 of scores itself: {_SCATTER}",
            _topk_variant(shared=True)),
    Mistake("returns_indices", "you returned the top-k indices (or values), [..., T_q, k]: return a bool mask the "
            f"shape of scores, True at those indices: {_SCATTER}",
            lambda scores, k, mask=None: scores.topk(k, dim=-1).indices, match="shape"),
    Mistake("returns_scores", "you returned the scores with -inf outside the top k: return the bool mask itself "
            "(True = kept); attention fills the other scores with -inf",
            lambda scores, k, mask=None: scores.masked_fill(~topk_mask_reference(scores, k, mask), -INF)),
    Mistake("inverted", "your mask is True at the keys that are dropped: True must mean 'kept' (may attend), at the "
            "k highest-scoring visible keys", lambda scores, k, mask=None: ~topk_mask_reference(scores, k, mask)),
]


@checker("Exercise 3 · topk_mask(scores, k, mask)")
def check_topk_mask(topk_mask_fn: Callable[..., Tensor]) -> str:
    """``topk_mask(scores [..., T_q, T_k], k, mask=None) -> bool [..., T_q, T_k]``: True at the ``k``
    highest-scoring visible keys of each query row (all visible keys of a row with fewer than ``k``)."""
    return run_cases(topk_mask_fn, reference=topk_mask_reference, cases=TOPK_CASES, mistakes=TOPK_MISTAKES,
                     what="topk_mask(scores, k, mask)",
                     error_tips=[("missing 1 required positional argument: 'mask'", "give mask a default, "
                                  "def topk_mask(scores, k, mask=None): the check calls it without a mask too"),
                                 ("Boolean value of Tensor with more than one value is ambiguous", "test whether a "
                                  "mask was given with `if mask is not None:`"),
                                 ("bad operand type for unary ~", "mask may be None: hide masked keys only when "
                                  "a mask is given")],
                     passed="the k highest-scoring visible keys of each query, all of them where fewer than k are "
                            f"visible ({len(TOPK_CASES)} cases: no mask, padding, a per-query mask, k = 1, float64)")


# --- Exercise 4 · repeat_kv_heads(x, n_heads) ------------------------------------------------------------------------

def repeat_kv_heads_reference(x: Tensor, n_heads: int) -> Tensor:
    """``[B, n_heads, T, d]``: query head ``h`` reads K/V head ``h // (n_heads // H_kv)``
    (``course_lib.attention.repeat_kv_heads``)."""
    return repeat_kv_heads(x, n_heads)


_HEADS = [  # name, B, H_kv, n_heads, T, d, seed, dtype
    ("B=2, H_kv=2 K/V heads for n_heads=6 (groups of 3), T=4, d=5", 2, 2, 6, 4, 5, 1240, torch.float32),
    ("multi-query: one K/V head for n_heads=4, B=3, T=2, d=3", 3, 1, 4, 2, 3, 1241, torch.float32),
    ("float64, H_kv=4 for n_heads=8 (pairs), B=2, T=3, d=2", 2, 4, 8, 3, 2, 1242, torch.float64),
    ("batch of 1, H_kv=3 for n_heads=6, T=5, d=4", 1, 3, 6, 5, 4, 1243, torch.float32),
    ("nothing shared: H_kv = n_heads = 3, B=2, T=2, d=4", 2, 3, 3, 2, 4, 1244, torch.float32),
]


def _heads_case(name: str, b: int, h_kv: int, n_heads: int, t: int, d: int, seed: int, dtype: torch.dtype) -> Case:
    x = torch.randn(b, h_kv, t, d, generator=_generator(seed), dtype=dtype)
    return Case(name, (x, n_heads), info={"H_kv": h_kv, "n_heads": n_heads, "group": n_heads // h_kv,
                                          "too_many": h_kv * n_heads})


HEADS_CASES = [_heads_case(*row) for row in _HEADS]

_INTERLEAVE = "torch.repeat_interleave(x, n_heads // H_kv, dim=1)"


def _group(x: Tensor, n_heads: int) -> int:
    return n_heads // x.shape[1]


HEADS_MISTAKES = [
    Mistake("tiled", "your query head h reads K/V head h % H_kv (x.repeat tiles the heads: 0, 1, 0, 1, ...): each K/V "
            "head serves a group of n_heads // H_kv = {group} consecutive query heads (0, 0, 0, 1, 1, 1, ...): "
            f"{_INTERLEAVE}", lambda x, n_heads: x.repeat(1, _group(x, n_heads), 1, 1)),
    Mistake("time_axis", "you repeated along the time axis (dim=2): the heads are dim=1 of [B, H_kv, T, d]: "
            f"{_INTERLEAVE}", lambda x, n_heads: torch.repeat_interleave(x, _group(x, n_heads), dim=2),
            match="shape"),
    Mistake("batch_axis", "you repeated along the batch axis (dim=0): the heads are dim=1 of [B, H_kv, T, d]: "
            f"{_INTERLEAVE}", lambda x, n_heads: torch.repeat_interleave(x, _group(x, n_heads), dim=0),
            match="shape"),
    Mistake("unchanged", "your result keeps the H_kv = {H_kv} heads of x, [B, H_kv, T, d]: repeat each K/V head for "
            f"its group of n_heads // H_kv = {{group}} query heads, [B, n_heads, T, d]: {_INTERLEAVE}",
            lambda x, n_heads: x, match="shape"),
    Mistake("mqa_only", "x.expand(..., n_heads, ...) works only with a single K/V head (multi-query attention); here "
            "H_kv = {H_kv}, and each K/V head serves n_heads // H_kv = {group} consecutive query heads: "
            f"{_INTERLEAVE}", lambda x, n_heads: x.expand(-1, n_heads, -1, -1)),
    Mistake("first_kv_head_only", "every query head reads K/V head 0, which is right only with a single K/V head "
            "(multi-query attention); here H_kv = {H_kv}, and query head h reads K/V head h // {group}: "
            f"{_INTERLEAVE}", lambda x, n_heads: x[:, :1].expand(-1, n_heads, -1, -1)),
    Mistake("n_heads_as_count", "your result has H_kv * n_heads = {too_many} heads: each K/V head was repeated "
            f"n_heads times, but the count is the group size, n_heads // H_kv = {{group}}: {_INTERLEAVE}",
            lambda x, n_heads: torch.repeat_interleave(x, n_heads, dim=1), match="shape"),
]


@checker("Exercise 4 · repeat_kv_heads(x, n_heads)")
def check_repeat_kv_heads(repeat_kv_heads_fn: Callable[[Tensor, int], Tensor]) -> str:
    """``repeat_kv_heads(x [B, H_kv, T, d], n_heads) -> [B, n_heads, T, d]``: query head ``h`` reads K/V head
    ``h // (n_heads // H_kv)``."""
    try:
        return run_cases(repeat_kv_heads_fn, reference=repeat_kv_heads_reference, cases=HEADS_CASES,
                         mistakes=HEADS_MISTAKES, what="repeat_kv_heads(x, n_heads)",
                         error_tips=[("must match the existing size", "expand works on an axis of size 1 only: with "
                                      f"several K/V heads, {_INTERLEAVE}"),
                                     ("shape '[", "each K/V head serves n_heads // H_kv query heads: "
                                      f"{_INTERLEAVE}")],
                         passed="each K/V head shared by its group of consecutive query heads, [B, n_heads, T, d] "
                                f"({len(HEADS_CASES)} cases: multi-query, grouped, nothing shared, float64)")
    except Hint as hint:
        raise _expanded_heads(hint) from None


def _expanded_heads(hint: Hint) -> Hint:
    """``mqa_only`` for any spelling of ``x.expand(..., n_heads, ...)`` (its error quotes the sizes as written):
    the learner's code raised while expanding the head axis (dim 1) of a case with several K/V heads."""
    case = next((c for c in HEADS_CASES if c.name == hint.case), None)
    text = str(hint)
    if hint.mistake != "raised" or case is None or "must match the existing size" not in text \
            or "non-singleton dimension 1." not in text:
        return hint
    mistake = next(m for m in HEADS_MISTAKES if m.name == "mqa_only")
    return Hint(f"case '{case.name}': {mistake.hint_for(case)} (your code raised RuntimeError here)",
                mistake=mistake.name, case=case.name)


MISTAKES = {
    "check_online_softmax_step": SOFTMAX_MISTAKES,
    "check_cross_document_mask": DOCUMENT_MISTAKES,
    "check_topk_mask": TOPK_MISTAKES,
    "check_repeat_kv_heads": HEADS_MISTAKES,
}
CASES = {"check_online_softmax_step": SOFTMAX_CASES, "check_cross_document_mask": DOCUMENT_CASES,
         "check_topk_mask": TOPK_CASES, "check_repeat_kv_heads": HEADS_CASES}
REFERENCES = {"check_online_softmax_step": online_softmax_step_reference,
              "check_cross_document_mask": cross_document_mask_reference,
              "check_topk_mask": topk_mask_reference, "check_repeat_kv_heads": repeat_kv_heads_reference}
