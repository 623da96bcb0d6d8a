"""Checkers for the exercises of lesson 06 (caching).

References: ``F.scaled_dot_product_attention`` over the whole prefix, ``cl.MultiHeadAttention`` projecting
the source again at every step, ``DecoderCache.nbytes()`` of a real cache, and the incremental decoder of
``cl.greedy_decode`` for the timing experiment. Each typical wrong answer is computed and named.
"""
from __future__ import annotations

import functools
import numbers
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from .._checks import shape_str
from ..attention import MultiHeadAttention
from ..generate import IncrementalDecoder
from ..masks import padding_mask
from ..model import Seq2SeqTransformer, TransformerConfig
from ._harness import Hint, NotDone, call_learner, checker, compare, expect_tensor


def _isolated(check: Callable[..., str]) -> Callable[..., str]:
    """Run a checker on one CPU thread, without autograd and with its own random state; the learner's
    settings are left as they were."""
    @functools.wraps(check)
    def run(*args: Any, **kwargs: Any) -> str:
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            with torch.random.fork_rng(devices=[]), torch.no_grad():
                return check(*args, **kwargs)
        finally:
            torch.set_num_threads(threads)
    return run


# --- Exercise 1: one cached self-attention step ------------------------------------------------------
AXIS = "concatenate along the time axis, dim=2 of [B, H, T, d_head]: torch.cat([cache_k, k_new], dim=2)"
_STEP_CASES = [  # name, B, H, t (positions already cached), d_head, dtype
    ("B=2, H=4, 3 cached positions", 2, 4, 3, 8, torch.float32),
    ("batch of 1, 1 cached position", 1, 2, 1, 4, torch.float32),
    ("first step: empty cache (t = 0)", 3, 2, 0, 8, torch.float32),
    ("float64, 6 cached positions", 2, 2, 6, 16, torch.float64),
]


def _attend(q: Tensor, k: Tensor, v: Tensor, **kwargs: Any) -> Tensor:
    return F.scaled_dot_product_attention(q, k, v, **kwargs)


def _check_grown_cache(got: Tensor, old: Tensor, new: Tensor, full: Tensor, label: str, case: str) -> None:
    """The returned cache must be the old one with this step's entry appended at the end of the time axis."""
    if tuple(got.shape) != tuple(full.shape):
        if tuple(got.shape) == tuple(old.shape):
            raise Hint(f"case '{case}': the {label} cache you returned did not grow ({shape_str(got.shape)}): append "
                       f"this step's {label} to it, or the next step will not see this token")
        if got.numel() == full.numel():
            raise Hint(f"case '{case}': the new {label} cache has shape {shape_str(got.shape)}, expected "
                       f"{shape_str(full.shape)}: {AXIS}")
        raise Hint(f"case '{case}': the new {label} cache has shape {shape_str(got.shape)}; expected "
                   f"{shape_str(full.shape)} (one more position than before)")
    compare(got, full, what=f"the new {label} cache", case=case, mistakes=[
        (torch.cat([new, old], dim=2), f"the new {label} went in front of the cache: append it at the end, "
                                       f"torch.cat([cache, new], dim=2), so position i stays at index i"),
    ])


@checker("one cached self-attention step")
@_isolated
def check_cached_attention_step(fn: Callable[..., Any]) -> str:
    """``fn(q_new, k_new, v_new, cache_k, cache_v) -> (output, cache_k, cache_v)``: per-head tensors
    ``[B, H, 1, d_head]`` for the new token and ``[B, H, t, d_head]`` cached; the output must equal the last row
    of causal attention over the whole prefix."""
    what = "cached_attention_step(q_new, k_new, v_new, cache_k, cache_v)"
    gen = torch.Generator().manual_seed(6)
    for case, b, h, t, d, dtype in _STEP_CASES:
        q_all, k_all, v_all = (torch.randn(b, h, t + 1, d, generator=gen, dtype=dtype) for _ in range(3))
        q_new, k_new, v_new = q_all[:, :, t:], k_all[:, :, t:], v_all[:, :, t:]  # [B, H, 1, d_head]
        cache_k, cache_v = k_all[:, :, :t], v_all[:, :, :t]  # [B, H, t, d_head]
        try:
            result = call_learner(fn, *(x.clone() for x in (q_new, k_new, v_new, cache_k, cache_v)), what=what)
        except Hint as hint:
            if "must match" in str(hint) and "ize" in str(hint):
                raise Hint(f"case '{case}': torch.cat failed ({hint}). {AXIS}") from None
            raise
        if isinstance(result, Tensor) or not isinstance(result, (tuple, list)) or len(result) != 3:
            raise Hint(f"{what} should return three tensors, (output, new cache_k, new cache_v): the next step "
                       f"needs the grown cache. Got {type(result).__name__}"
                       + (f" of length {len(result)}" if isinstance(result, (tuple, list)) else ""))
        out, new_k, new_v = (expect_tensor(x, f"item {i} of what {what} returned") for i, x in enumerate(result))
        _check_grown_cache(new_k, cache_k, k_new, k_all, "key", case)
        _check_grown_cache(new_v, cache_v, v_new, v_all, "value", case)
        out = expect_tensor(out, "the output (item 0)", expected_shape=(b, h, 1, d))
        if out.dtype != dtype:
            raise Hint(f"case '{case}': the output is {out.dtype} for {dtype} inputs: keep the inputs' dtype")
        expected = _attend(q_new, k_all, v_all)  # one query sees every key: all of them are in its past
        torch.testing.assert_close(expected, _attend(q_all, k_all, v_all, is_causal=True)[:, :, t:])  # the reference
        mistakes = [
            (v_new, "your output uses only the new token's key and value: the cached keys and values are ignored, "
                    "so the cache is not reused. Attend to torch.cat([cache_k, k_new], dim=2) (and the same for v)"),
            (_attend(q_new, k_all, v_all, is_causal=True),
             "a causal mask hides the cached keys: with one query and t + 1 keys, tril / is_causal=True align to the "
             "top-left and let the query see only key 0. The new token is the last position, so it may see every "
             "cached key: a one-token step needs no mask"),
            (_attend(q_new, k_all, v_all, scale=1.0), "the scores are not scaled: divide q @ k^T by sqrt(d_head)"),
        ]
        if t > 0:
            mistakes.append((_attend(q_new, cache_k, cache_v), "you attend to the cached keys only: the new token "
                                                               "must also see its own key and value (append first, "
                                                               "then attend)"))
        compare(out, expected, what="the output", case=case, mistakes=mistakes)
    return (f"equals the last row of causal attention over the whole prefix, and the cache grows by one position "
            f"({len(_STEP_CASES)} cases, empty cache and float64 included)")


# --- Exercise 2: cross-attention keys and values computed once ---------------------------------------
PROJECTED_X = ("k_proj/v_proj were applied to the decoder state x [B, 1, d_model]: cross-attention keys and "
               "values come from the encoder output, memory [B, S, d_model]")


@checker("cross-attention keys and values computed once")
@_isolated
def check_cross_attention_step(make_step: Callable[..., Any]) -> str:
    """``make_step(cross_attn, memory, memory_mask) -> step``; ``step(x [B, 1, d_model]) -> [B, 1, d_model]``
    must equal ``cross_attn(x, memory, mask=memory_mask)[0]`` without projecting ``memory`` again."""
    what, d_model, n_steps = "make_cross_attention_step(cross_attn, memory, memory_mask)", 16, 3
    for case, lengths, s, dtype in [("B=2, the second source padded", [5, 3], 5, torch.float32),
                                    ("batch of 1, no padding", [4], 4, torch.float32),
                                    ("float64", [6, 2], 6, torch.float64)]:
        torch.manual_seed(len(case))
        b = len(lengths)
        cross_attn = MultiHeadAttention(d_model, 4).to(dtype).eval()
        memory, other = torch.randn(2, b, s, d_model, dtype=dtype)  # [B, S, d_model] each
        memory_mask = padding_mask(torch.tensor(lengths), s)  # [B, 1, 1, S]
        xs = torch.randn(n_steps, b, 1, d_model, dtype=dtype)  # one decoder state per step
        phase, calls = ["make"], []  # (phase, input shape) of every k_proj / v_proj call
        hooks = [getattr(cross_attn, name).register_forward_hook(
            lambda module, inputs, output, calls=calls, phase=phase: calls.append((phase[0], tuple(inputs[0].shape))))
            for name in ("k_proj", "v_proj")]
        try:
            memory_arg = memory.clone()
            step = call_learner(make_step, cross_attn, memory_arg, memory_mask.clone(), what=what)
            if isinstance(step, (Tensor, tuple, list)) or not callable(step):
                raise Hint(f"{what} should return a function step(x), but returned a {type(step).__name__}: "
                           "project memory once, then define and return step")
            memory_arg.copy_(other)  # a step must use the projections made once, never read memory again
            phase[0], outputs = "step", []
            for x in xs:
                try:
                    out = call_learner(step, x.clone(), what="step(x)")
                except Hint:
                    if any(shape[1] == 1 and s != 1 for _, shape in calls):
                        raise Hint(f"case '{case}': {PROJECTED_X}") from None
                    raise
                if isinstance(out, tuple) and len(out) == 2 and isinstance(out[0], Tensor):
                    raise Hint("step(x) returned a pair: MultiHeadAttention returns (output, attn_weights); "
                               "return only the output [B, 1, d_model]")
                outputs.append(expect_tensor(out, "step(x)", expected_shape=(b, 1, d_model)))
        finally:
            for hook in hooks:
                hook.remove()
        if any(shape[1] == 1 and s != 1 for _, shape in calls):
            raise Hint(f"case '{case}': {PROJECTED_X}")
        step_calls = sum(p == "step" for p, _ in calls) // 2
        if step_calls:
            raise Hint(f"case '{case}': memory was projected again during the steps ({step_calls} times in "
                       f"{n_steps} steps): compute the keys and values once in {what.split('(')[0]} "
                       "(cross_attn.project_source(memory)) and pass them with source_kv=... at every step")
        for i, (out, x) in enumerate(zip(outputs, xs)):
            compare(out, cross_attn(x, memory, mask=memory_mask)[0], what="step(x)", case=f"{case}, step {i + 1}",
                    mistakes=[
                        (cross_attn(x, memory)[0], "the padding mask is not applied: pass mask=memory_mask, or "
                                                   "padded source positions get attention"),
                        (cross_attn(x, other, mask=memory_mask)[0],
                         "step(x) reads memory again at every step (it changed after make_cross_attention_step "
                         "returned, and your output followed): use the keys and values projected once"),
                        (cross_attn(x)[0], PROJECTED_X),
                    ])
    return f"same output as cross_attn(x, memory), with memory projected once per source (3 cases, {n_steps} steps)"


# --- Exercise 3: cache size in bytes -------------------------------------------------------------------
_SIZE_CASES = [  # name, n_layers, n_heads, d_head, batch, tgt_len, src_len, dtype
    ("small odd sizes", 3, 5, 7, 11, 13, 17, torch.float32),
    ("T5-base, B=8, T=128, S=512, float16", 12, 12, 64, 8, 128, 512, torch.float16),
    ("Whisper-small, B=1, T=448, S=1500, float32", 12, 12, 64, 1, 448, 1500, torch.float32),
    ("float64", 2, 4, 16, 64, 128, 28, torch.float64),
]


def _cache_bytes(n_layers: int, n_heads: int, d_head: int, batch: int, tgt_len: int, src_len: int,
                 nbytes: float, kv_self: int = 2, kv_cross: int = 2, cross_len: int | None = None) -> float:
    per_position = n_layers * batch * n_heads * d_head * nbytes  # one key (or value) per position, all layers
    return kv_self * per_position * tgt_len + kv_cross * per_position * (src_len if cross_len is None else cross_len)


def _real_cache_case() -> tuple[str, tuple, int]:
    """A ``DecoderCache`` filled by a small model: 2 decoder layers, 3 heads of 8, B=3, T=4, S=5."""
    torch.manual_seed(0)
    model = Seq2SeqTransformer(TransformerConfig(10, 10, d_model=24, n_heads=3, d_ff=32, max_len=8)).eval()
    src_ids = torch.randint(1, 10, (3, 5))
    cache = model.new_cache(model.encode(src_ids)[0])
    model.decode(torch.randint(1, 10, (3, 4)), None, model.source_mask(src_ids), cache=cache)
    name = "a real cl.DecoderCache (2 layers, 3 heads, B=3, T=4, S=5)"
    return name, (2, 3, 8, 3, 4, 5, torch.float32), cache.nbytes()


@checker("cache size in bytes")
@_isolated
def check_kv_cache_bytes(fn: Callable[..., Any]) -> str:
    """``fn(n_layers, n_heads, d_head, batch, tgt_len, src_len, dtype) -> int``: self- plus cross-attention."""
    what = "kv_cache_bytes(n_layers, n_heads, d_head, batch, tgt_len, src_len, dtype)"
    names = ("n_layers", "n_heads", "d_head", "batch", "tgt_len", "src_len", "dtype")
    real_name, real_args, real_bytes = _real_cache_case()
    cases = [(name, args, None) for name, *args in _SIZE_CASES] + [(real_name, real_args, real_bytes)]
    for case, args, measured in cases:
        answer = call_learner(fn, **dict(zip(names, args)), what=what)
        if isinstance(answer, Tensor) and answer.numel() == 1:
            answer = answer.item()
        if answer is None:
            raise NotDone(f"not done yet: {what} returned None")
        if isinstance(answer, bool) or not isinstance(answer, numbers.Real):
            raise Hint(f"{what} should return a number of bytes (an int), but returned {type(answer).__name__}")
        n_layers, n_heads, d_head, batch, tgt_len, src_len, dtype = args
        size = torch.finfo(dtype).bits // 8
        sizes = (n_layers, n_heads, d_head, batch, tgt_len, src_len)
        expected = _cache_bytes(*sizes, size)
        if measured is not None and measured != expected:  # pragma: no cover - the library and formula disagree
            raise Hint(f"the checker's formula disagrees with DecoderCache.nbytes() ({expected} vs {measured})")
        if answer == expected:
            continue
        L, H, dh, B, T, S = sizes
        mistakes = [
            (_cache_bytes(*sizes, size, kv_self=1, kv_cross=1), "the factor 2 is missing: every position stores a "
                                                                "key *and* a value"),
            (_cache_bytes(*sizes, size, kv_self=1), "the factor 2 is missing in the self-attention part: keys and "
                                                    "values"),
            (_cache_bytes(*sizes, size, kv_cross=1), "the factor 2 is missing in the cross-attention part: keys and "
                                                     "values"),
            (_cache_bytes(1, H, dh, B, T, S, size), "the layers are missing: every decoder layer keeps its own keys "
                                                    "and values"),
            (_cache_bytes(*sizes, 4), "the dtype is ignored: use its size (2 bytes for float16, 4 for float32, 8 for "
                                      "float64)"),
            (_cache_bytes(2 * L, H, dh, B, T, S, size), "only decoder layers have a cache: n_layers counts the "
                                                        "decoder's layers, do not add the encoder's"),
            (_cache_bytes(L, H, H * dh, B, T, S, size), "you used d_model = n_heads * d_head per head: each head "
                                                        "stores d_head numbers per position"),
            (_cache_bytes(L, H, dh, 1, T, S, size), "the batch is missing: every sequence in the batch has its own "
                                                    "cache"),
            (_cache_bytes(*sizes, 8 * size), "that is bits, not bytes: a float16 number takes 2 bytes "
                                             "(torch.finfo(dtype).bits // 8, or torch.empty(0, dtype=dtype)"
                                             ".element_size())"),
            (_cache_bytes(*sizes, size, kv_cross=0), "only the self-attention part: add the cross-attention keys and "
                                                     "values, [B, H, S, d_head] each per layer"),
            (_cache_bytes(*sizes, size, kv_self=0), "only the cross-attention part: add the self-attention keys and "
                                                    "values, [B, H, T, d_head] each per layer"),
            (_cache_bytes(*sizes, size, cross_len=T), "the cross-attention keys and values have one row per *source* "
                                                      "position: use src_len there, not tgt_len"),
        ]
        hint = next((h for value, h in mistakes if answer == value), None)
        if hint is None and abs(answer - expected) < 1e-6 * expected:
            continue
        raise Hint(f"case '{case}': {answer:,} bytes, expected {expected:,}. "
                   + (hint or "Count 2 (K and V) x layers x batch x heads x length x d_head x bytes, once with "
                              "tgt_len (self-attention) and once with src_len (cross-attention)"))
    return f"2 x L x B x H x (T + S) x d_head x bytes, and it matches DecoderCache.nbytes() ({len(cases)} cases)"


# --- Exercise 4: predict how the time per step grows -----------------------------------------------------
_SHAPES = {"flat": "flat", "constant": "flat", "linear": "linear", "linearly": "linear", "quadratic": "quadratic"}


def _step_time_experiment(n_steps: int = 64) -> dict[str, tuple[list[int], float]]:
    """Per cache mode: decoder positions processed at each step, and the median time of the last 8 steps over
    the median of steps 2-9 (an untrained model, B=16, one CPU thread)."""
    torch.manual_seed(0)
    model = Seq2SeqTransformer(TransformerConfig(50, 50, max_len=n_steps + 8)).eval()
    src_ids = torch.randint(3, 50, (16, 12))
    results = {}
    for mode in ("memory_kv", "full"):
        positions: list[int] = []
        hook = model.decoder.register_forward_pre_hook(lambda m, args, seen=positions: seen.append(args[0].shape[1]))
        decoder, prefix, seconds = IncrementalDecoder(model, src_ids, mode), torch.ones(16, 1, dtype=torch.long), []
        for _ in range(n_steps):
            start = time.perf_counter()
            next_token = decoder.next_logits(prefix).argmax(dim=-1)  # [B]
            seconds.append(time.perf_counter() - start)
            prefix = torch.cat([prefix, next_token[:, None]], dim=1)
        hook.remove()
        results[mode] = (positions, statistics.median(seconds[-8:]) / statistics.median(seconds[1:9]))
    return results


@checker("predict: time per step, with and without the self-attention cache")
@_isolated
def check_step_time_prediction(without_self_cache: Any, with_self_cache: Any) -> str:
    """Each prediction is "flat", "linear" or "quadratic"; the checker runs the experiment and explains it."""
    predictions = {}
    for name, value in (("prediction_without_cache", without_self_cache), ("prediction_with_cache", with_self_cache)):
        if value is None:
            raise NotDone(f"not done yet: {name} is still None")
        if not isinstance(value, str) or value.strip().lower() not in _SHAPES:
            raise Hint(f'{name} should be one of "flat", "linear" or "quadratic"; got {value!r}')
        predictions[name] = _SHAPES[value.strip().lower()]
    results = _step_time_experiment()
    (pos_without, ratio_without), (pos_with, ratio_with) = results["memory_kv"], results["full"]
    evidence = (f"measured: without the cache step t processes t positions ({pos_without[0]} -> {pos_without[-1]}) "
                f"and the last steps took {ratio_without:.1f}x as long as the early ones; with it every step "
                f"processes {pos_with[-1]} position and the ratio is {ratio_with:.1f}x")
    without, with_ = predictions["prediction_without_cache"], predictions["prediction_with_cache"]
    if without == "flat":
        raise Hint("without the self-attention cache the decoder runs over the whole prefix again, so step t does "
                   f"work for t positions: the time grows with t. {evidence}")
    if without == "quadratic":
        raise Hint("per step, the t prefix positions go through the projections and the feed-forward block: work "
                   "proportional to t, so linear (the t x t attention scores are a small share at these sizes). It "
                   f"is the *total* over N tokens, 1 + 2 + ... + N, that grows quadratically. {evidence}")
    if with_ != "flat":
        raise Hint("with the cache every step feeds the decoder one new position; only the attention over the t "
                   "cached keys grows, and it is a small part of a step here, so the time stays flat in practice. "
                   f"{evidence}")
    return f"linear without the self-attention cache, flat with it; {evidence}"
