"""The lesson 06 checkers pass the solutions, name each typical mistake, and never raise."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from checker_helpers import assert_fail, raise_not_implemented, raise_value_error

from course_lib.checks import lesson06


# Reference solutions, identical in behaviour to solutions/06_caching.ipynb.
def cached_attention_step(q_new, k_new, v_new, cache_k, cache_v):
    cache_k = torch.cat([cache_k, k_new], dim=2)  # [B, H, t + 1, d_head]
    cache_v = torch.cat([cache_v, v_new], dim=2)
    attn_scores = q_new @ cache_k.transpose(-2, -1) / math.sqrt(q_new.shape[-1])  # [B, H, 1, t + 1]
    attn_weights = torch.softmax(attn_scores, dim=-1)  # no mask: every cached key is in the past
    return attn_weights @ cache_v, cache_k, cache_v  # [B, H, 1, d_head]


def make_cross_attention_step(cross_attn, memory, memory_mask):
    memory_kv = cross_attn.project_source(memory)  # keys and values [B, H, S, d_head], once per source

    def step(x):
        output, _ = cross_attn(x, source_kv=memory_kv, mask=memory_mask)  # [B, 1, d_model]
        return output

    return step


def kv_cache_bytes(n_layers, n_heads, d_head, batch, tgt_len, src_len, dtype):
    bytes_per_value = torch.finfo(dtype).bits // 8
    per_position = 2 * n_layers * batch * n_heads * d_head * bytes_per_value  # a key and a value, every layer
    return per_position * tgt_len + per_position * src_len  # self-attention + cross-attention


prediction_without_cache, prediction_with_cache = "linear", "flat"


# --- exercise 1: one cached self-attention step ----------------------------------------------------
def test_cached_attention_step_solution_passes():
    result = lesson06.check_cached_attention_step(cached_attention_step)
    assert result.passed, result


def _step_variant(*, axis=2, attend="all", new_first=False, return_old=False, scale=None, is_causal=False):
    def step(q_new, k_new, v_new, cache_k, cache_v):
        pairs = ((k_new, cache_k), (v_new, cache_v))
        grown_k, grown_v = (torch.cat([new, old] if new_first else [old, new], dim=axis) for new, old in pairs)
        k, v = {"all": (grown_k, grown_v), "new": (k_new, v_new), "cache": (cache_k, cache_v)}[attend]
        out = F.scaled_dot_product_attention(q_new, k, v, scale=scale, is_causal=is_causal)
        return (out, cache_k, cache_v) if return_old else (out, grown_k, grown_v)
    return step


@pytest.mark.parametrize("wrong, phrase", [
    (_step_variant(attend="new"), "the cache is not reused"),
    (_step_variant(axis=1), "dim=2 of [B, H, T, d_head]"),
    (_step_variant(axis=-1), "dim=2 of [B, H, T, d_head]"),
    (_step_variant(attend="cache"), "its own key and value"),
    (_step_variant(is_causal=True), "a causal mask hides the cached keys"),
    (_step_variant(return_old=True), "did not grow"),
    (_step_variant(new_first=True), "went in front of the cache"),
    (_step_variant(scale=1.0), "not scaled"),
    (lambda *args: cached_attention_step(*args)[0], "should return three tensors"),
    (lambda *args: cached_attention_step(*args)[:2], "of length 2"),
    (lambda *args: (cached_attention_step(*args)[0].float(),) + cached_attention_step(*args)[1:], "keep the"),
])
def test_cached_attention_step_mistakes_get_their_hint(wrong, phrase):
    assert_fail(lesson06.check_cached_attention_step(wrong), phrase)


# --- exercise 2: cross-attention keys and values computed once -------------------------------------
def test_cross_attention_step_solution_passes():
    result = lesson06.check_cross_attention_step(make_cross_attention_step)
    assert result.passed, result


def _recomputes(cross_attn, memory, memory_mask):
    return lambda x: cross_attn(x, memory, mask=memory_mask)[0]


def _projects_decoder_state(cross_attn, memory, memory_mask):
    return lambda x: cross_attn(x, source_kv=cross_attn.project_source(x), mask=memory_mask)[0]


def _self_attention(cross_attn, memory, memory_mask):
    return lambda x: cross_attn(x)[0]


def _no_mask(cross_attn, memory, memory_mask):
    memory_kv = cross_attn.project_source(memory)
    return lambda x: cross_attn(x, source_kv=memory_kv)[0]


def _reads_memory_by_hand(cross_attn, memory, memory_mask):
    """Projects memory at every step with F.linear, which no hook on k_proj sees."""
    def step(x):
        k, v = (cross_attn.split_heads(F.linear(memory, p.weight, p.bias)) for p in (cross_attn.k_proj,
                                                                                      cross_attn.v_proj))
        return cross_attn(x, source_kv=(k, v), mask=memory_mask)[0]
    return step


def _returns_pair(cross_attn, memory, memory_mask):
    memory_kv = cross_attn.project_source(memory)
    return lambda x: cross_attn(x, source_kv=memory_kv, mask=memory_mask)


@pytest.mark.parametrize("wrong, phrase", [
    (_recomputes, "memory was projected again during the steps (3 times in 3 steps)"),
    (_projects_decoder_state, "applied to the decoder state x"),
    (_self_attention, "applied to the decoder state x"),
    (_no_mask, "the padding mask is not applied"),
    (_reads_memory_by_hand, "reads memory again at every step"),
    (_returns_pair, "returned a pair"),
    (lambda cross_attn, memory, memory_mask: cross_attn.project_source(memory).k, "should return a function"),
    (lambda cross_attn, memory, memory_mask: (lambda x: x[:, 0]), "has shape"),
])
def test_cross_attention_step_mistakes_get_their_hint(wrong, phrase):
    assert_fail(lesson06.check_cross_attention_step(wrong), phrase)


# --- exercise 3: cache size in bytes -----------------------------------------------------------------
def test_kv_cache_bytes_solution_passes():
    result = lesson06.check_kv_cache_bytes(kv_cache_bytes)
    assert result.passed, result


def test_kv_cache_bytes_accepts_a_float_and_element_size():
    def with_element_size(n_layers, n_heads, d_head, batch, tgt_len, src_len, dtype):
        size = torch.empty(0, dtype=dtype).element_size() / 1  # a float
        return 2 * n_layers * batch * n_heads * d_head * (tgt_len + src_len) * size
    assert lesson06.check_kv_cache_bytes(with_element_size).passed


def _size_variant(*, kv=2, layers=lambda n: n, per_head=lambda h, d: d, batch=lambda b: b,
                  size=lambda dtype: torch.finfo(dtype).bits // 8, self_part=True, cross_len=None):
    def fn(n_layers, n_heads, d_head, batch_size, tgt_len, src_len, dtype):
        per_position = kv * layers(n_layers) * batch(batch_size) * n_heads * per_head(n_heads, d_head) * size(dtype)
        cross = src_len if cross_len is None else cross_len(tgt_len, src_len)
        return per_position * (tgt_len if self_part else 0) + per_position * cross
    return lambda n_layers, n_heads, d_head, batch, tgt_len, src_len, dtype: fn(
        n_layers, n_heads, d_head, batch, tgt_len, src_len, dtype)


@pytest.mark.parametrize("wrong, phrase", [
    (_size_variant(kv=1), "every position stores a key *and* a value"),
    (_size_variant(layers=lambda n: 1), "the layers are missing"),
    (_size_variant(layers=lambda n: 2 * n), "do not add the encoder's"),
    (_size_variant(per_head=lambda h, d: h * d), "each head stores d_head numbers"),
    (_size_variant(batch=lambda b: 1), "the batch is missing"),
    (_size_variant(size=lambda dtype: torch.finfo(dtype).bits), "bits, not bytes"),
    (_size_variant(size=lambda dtype: 4), "the dtype is ignored"),
    (_size_variant(self_part=False), "only the cross-attention part"),
    (_size_variant(cross_len=lambda t, s: 0), "only the self-attention part"),
    (_size_variant(cross_len=lambda t, s: t), "use src_len there"),
    (_size_variant(cross_len=lambda t, s: s + 1), "Count 2 (K and V)"),
    (lambda *args, **kwargs: "a lot", "should return a number of bytes"),
    (lambda n_layers, heads, d_head, batch, tgt_len, src_len, dtype: 0, "unexpected keyword argument"),
])
def test_kv_cache_bytes_mistakes_get_their_hint(wrong, phrase):
    assert_fail(lesson06.check_kv_cache_bytes(wrong), phrase)


def test_kv_cache_bytes_half_factor_in_one_part_is_named():
    def no_factor_in_cross(n_layers, n_heads, d_head, batch, tgt_len, src_len, dtype):
        per_position = n_layers * batch * n_heads * d_head * torch.finfo(dtype).bits // 8
        return 2 * per_position * tgt_len + per_position * src_len
    assert_fail(lesson06.check_kv_cache_bytes(no_factor_in_cross), "missing in the cross-attention part")


# --- exercise 4: predict, then verify ------------------------------------------------------------------
def test_step_time_prediction_solution_passes_with_evidence():
    result = lesson06.check_step_time_prediction(prediction_without_cache, prediction_with_cache)
    assert result.passed, result
    assert "(1 -> 64)" in result.message and "processes 1 position" in result.message


@pytest.mark.parametrize("without, with_, phrase", [
    ("flat", "flat", "runs over the whole prefix again"),
    ("quadratic", "flat", "*total* over N tokens"),
    ("linear", "linear", "one new position"),
    ("linear", "quadratic", "one new position"),
    ("linear", "exponential", 'one of "flat", "linear" or "quadratic"'),
    (2, "flat", "got 2"),
])
def test_step_time_prediction_mistakes_get_their_hint(without, with_, phrase):
    assert_fail(lesson06.check_step_time_prediction(without, with_), phrase)


def test_step_time_prediction_accepts_synonyms():
    assert lesson06.check_step_time_prediction(" Linear", "constant").passed


# --- every checker: unfinished, None, crashing, wrong type ----------------------------------------------
FUNCTION_CHECKERS = [lesson06.check_cached_attention_step, lesson06.check_cross_attention_step,
                     lesson06.check_kv_cache_bytes]


@pytest.mark.parametrize("check", FUNCTION_CHECKERS)
def test_unfinished_and_none_are_not_done(check):
    assert check(raise_not_implemented).status == "not_done"
    assert check(None).status == "not_done"


def test_unanswered_prediction_is_not_done():
    assert lesson06.check_step_time_prediction(None, None).status == "not_done"
    assert lesson06.check_step_time_prediction("linear", None).status == "not_done"


@pytest.mark.parametrize("check", FUNCTION_CHECKERS)
def test_crashing_or_wrong_type_fails_without_raising(check):
    assert_fail(check(raise_value_error), "raised ValueError: boom")
    assert_fail(check(lambda *args, **kwargs: [1, 2, 3]), "")
    assert_fail(check(42), "should be a function")


def test_step_that_raises_later_is_a_hint():
    def make(cross_attn, memory, memory_mask):
        def step(x):
            raise RuntimeError("inside step")
        return step
    assert_fail(lesson06.check_cross_attention_step(make), "step(x) raised RuntimeError: inside step")


def test_checkers_leave_threads_and_random_state_alone():
    threads = torch.get_num_threads()
    state = torch.get_rng_state()
    lesson06.check_cached_attention_step(cached_attention_step)
    lesson06.check_kv_cache_bytes(kv_cache_bytes)
    assert torch.get_num_threads() == threads
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.is_grad_enabled()
