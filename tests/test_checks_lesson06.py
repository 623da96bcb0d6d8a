"""The lesson 06 checkers: hand-written wrong answers get their hints, and the prediction is checked. What every
function checker must do runs in tests/test_checks_generic.py, over this module's CHECKS, GENERIC and
ALTERNATIVES (with learner_version and weird_versions for the exercises called differently)."""
from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from checker_helpers import assert_diagnosed, assert_fail, assert_named, batch_one_only, casts_to, mutates_input

from course_lib.checks import lesson06

pytestmark = pytest.mark.usefixtures("single_thread")


# Reference solutions, identical in behaviour to solutions/06_caching.ipynb.
def cached_attention_step(q_new, k_new, v_new, cache_k, cache_v):
    cache_k = torch.cat([cache_k, k_new], dim=2)  # [B, H, t + 1, d_head]
    cache_v = torch.cat([cache_v, v_new], dim=2)
    attn_scores = q_new @ cache_k.transpose(-2, -1) / math.sqrt(q_new.shape[-1])  # [B, H, 1, t + 1]
    attn_weights = torch.softmax(attn_scores, dim=-1)  # no mask: every cached key is in the past
    return attn_weights @ cache_v, cache_k, cache_v  # [B, H, 1, d_head]


def make_cross_attention_step(cross_attn, memory, memory_mask):
    cross_kv = cross_attn.project_source(memory)  # keys and values [B, H, S, d_head], once per source

    def step(x):
        output, _ = cross_attn(x, source_kv=cross_kv, mask=memory_mask)  # [B, 1, d_model]
        return output

    return step


def kv_cache_bytes(n_layers, n_heads, d_head, batch, tgt_len, src_len, dtype):
    bytes_per_value = torch.finfo(dtype).bits // 8
    per_position = 2 * n_layers * batch * n_heads * d_head * bytes_per_value  # a key and a value, every layer
    return per_position * tgt_len + per_position * src_len  # self-attention + cross-attention


PREDICTION = dict(positions_without_cache=10, positions_with_cache=1, scores_without_cache=100, scores_with_cache=10)
# every function checker with its solution: tests/test_checks_generic.py runs over CHECKS, GENERIC, ALTERNATIVES
CHECKS = {"check_cached_attention_step": (lesson06.check_cached_attention_step, cached_attention_step),
          "check_cross_attention_step": (lesson06.check_cross_attention_step, make_cross_attention_step),
          "check_kv_cache_bytes": (lesson06.check_kv_cache_bytes, kv_cache_bytes)}


def learner_version(name: str, mistake: Any) -> Callable[..., Any]:
    """What a learner would hand in: exercise 2's mistakes are stored as the checker runs them (``_driven``)."""
    return mistake.wrong.args[0] if name == "check_cross_attention_step" else mistake.wrong


def weird_versions(name: str, weird: Callable[..., Any]) -> list[Callable[..., Any]]:
    """A weird result, as each exercise gets it: kv_cache_bytes is called with keyword arguments; exercise 2's
    answer returns the step function, so a weird result can come from either."""
    if name == "check_cross_attention_step":
        return [lambda *a, **k: weird, weird]
    return [lambda *a, **k: weird(*a, *k.values())]


# --- correct alternatives (they must pass) ----------------------------------------------------

def step_sdpa(q_new, k_new, v_new, cache_k, cache_v):
    k, v = torch.cat((cache_k, k_new), dim=-2), torch.cat((cache_v, v_new), dim=-2)
    return F.scaled_dot_product_attention(q_new, k, v), k, v


def step_einsum(q_new, k_new, v_new, cache_k, cache_v):
    k, v = torch.concat([cache_k, k_new], 2), torch.concat([cache_v, v_new], 2)
    w = torch.einsum("bhqd,bhkd->bhqk", q_new, k).mul(q_new.shape[-1] ** -0.5).softmax(-1)
    return torch.einsum("bhqk,bhkd->bhqd", w, v), k, v


def step_preallocated(q_new, k_new, v_new, cache_k, cache_v):  # writes into a new, larger buffer
    b, h, t, d = cache_k.shape
    k, v = cache_k.new_empty(b, h, t + 1, d), cache_v.new_empty(b, h, t + 1, d)
    k[:, :, :t], k[:, :, t:] = cache_k, k_new
    v[:, :, :t], v[:, :, t:] = cache_v, v_new
    w = torch.softmax(q_new @ k.mT / math.sqrt(d), dim=-1)
    return w @ v, k, v


def cross_step_class(cross_attn, memory, memory_mask):
    class Step:
        def __init__(self):
            self.kv = cross_attn.project_source(memory)

        def __call__(self, x):
            return cross_attn(x, source_kv=self.kv, mask=memory_mask)[0]
    return Step()


def cross_step_by_hand(cross_attn, memory, memory_mask):  # projects once with the module's own linear layers
    k, v = cross_attn.split_heads(cross_attn.k_proj(memory)), cross_attn.split_heads(cross_attn.v_proj(memory))

    def step(x):
        q = cross_attn.split_heads(cross_attn.q_proj(x))  # [B, H, 1, d_head]
        context = F.scaled_dot_product_attention(q, k, v, attn_mask=memory_mask)
        return cross_attn.out_proj(cross_attn.merge_heads(context))
    return step


def cross_step_copy_of_memory(cross_attn, memory, memory_mask):  # keeps K/V, then a tuple instead of SourceKV
    kv = tuple(cross_attn.project_source(memory.clone()))
    return lambda x: cross_attn(x, source_kv=kv, mask=memory_mask)[0]


def bytes_element_size(n_layers, n_heads, d_head, batch, tgt_len, src_len, dtype):
    size = torch.empty(0, dtype=dtype).element_size() / 1  # a float
    return 2 * n_layers * batch * n_heads * d_head * (tgt_len + src_len) * size


def bytes_itemsize_numpy(n_layers, n_heads, d_head, batch, tgt_len, src_len, dtype):
    return np.int64(2 * n_layers * batch * n_heads * d_head * (tgt_len + src_len) * dtype.itemsize)


def bytes_by_tensors(n_layers, n_heads, d_head, batch, tgt_len, src_len, dtype):
    one = torch.empty(batch, n_heads, 1, d_head, dtype=dtype)
    return sum(2 * one.nbytes * length for length in (tgt_len, src_len)) * n_layers


ALTERNATIVES = [
    ("check_cached_attention_step", step_sdpa), ("check_cached_attention_step", step_einsum),
    ("check_cached_attention_step", step_preallocated),
    ("check_cross_attention_step", cross_step_class), ("check_cross_attention_step", cross_step_by_hand),
    ("check_cross_attention_step", cross_step_copy_of_memory),
    ("check_kv_cache_bytes", bytes_element_size), ("check_kv_cache_bytes", bytes_itemsize_numpy),
    ("check_kv_cache_bytes", bytes_by_tensors),
]


# --- generic mistake classes ----------------------------------------------------------------------

def step_appends_in_place(q_new, k_new, v_new, cache_k, cache_v):
    out, k, v = cached_attention_step(q_new, k_new, v_new, cache_k, cache_v)
    q_new.mul_(1.0)  # harmless
    k_new.add_(1.0)  # changes the caller's tensor
    return out, k, v


def cross_step_scales_memory(cross_attn, memory, memory_mask):
    memory /= 2.0
    return make_cross_attention_step(cross_attn, memory * 2.0, memory_mask)


def cross_step_first_sentence_only(cross_attn, memory, memory_mask):
    cross_kv = cross_attn.project_source(memory[:1])

    def step(x):
        return cross_attn(x[:1], source_kv=cross_kv, mask=memory_mask[:1])[0].expand(x.shape[0], -1, -1)
    return step


def bytes_as_tensor_of_wrong_value(n_layers, n_heads, d_head, batch, tgt_len, src_len, dtype):
    return torch.tensor(3 * kv_cache_bytes(n_layers, n_heads, d_head, batch, tgt_len, src_len, dtype))


def step_that_raises_later(cross_attn, memory, memory_mask):
    def step(x):
        raise RuntimeError("inside step")
    return step


GENERIC = [
    ("check_cached_attention_step", mutates_input(cached_attention_step, 0), "mutated_input", "`q_new`"),
    ("check_cached_attention_step", step_appends_in_place, "mutated_input", "`k_new`"),
    ("check_cached_attention_step", batch_one_only(cached_attention_step), "batch_one_only", "right for a batch of 1"),
    ("check_cached_attention_step", casts_to(cached_attention_step, torch.float32), "wrong_dtype",
     "keep the inputs' dtype"),
    ("check_cached_attention_step", lambda *a: tuple(t.numpy() for t in cached_attention_step(*a)), "wrong_type",
     "numpy.ndarray"),
    ("check_cross_attention_step", cross_step_scales_memory, "mutated_input", "`memory`"),
    ("check_cross_attention_step", cross_step_first_sentence_only, "batch_one_only", "right for a batch of 1"),
    ("check_cross_attention_step", step_that_raises_later, "raised", "raised RuntimeError: inside step"),
    ("check_kv_cache_bytes", lambda **k: torch.tensor(kv_cache_bytes(**k)), "tensor_result", ".item()"),
    ("check_kv_cache_bytes", bytes_as_tensor_of_wrong_value, "wrong_type", ".item()"),
    ("check_kv_cache_bytes", lambda **k: str(kv_cache_bytes(**k)), "wrong_type", "whole number"),
    ("check_kv_cache_bytes", lambda **k: kv_cache_bytes(**k) + 0.5, "wrong_type", "whole number"),
]


# --- the wrong answers of the earlier tests, written by hand (each with its phrase) -------------------

def _step_variant(*, axis=2, attend="all", new_first=False, return_old=False, scale=None, is_causal=False):
    def step(q_new, k_new, v_new, cache_k, cache_v):
        pairs = ((k_new, cache_k), (v_new, cache_v))
        grown_k, grown_v = (torch.cat([new, old] if new_first else [old, new], dim=axis) for new, old in pairs)
        k, v = {"all": (grown_k, grown_v), "new": (k_new, v_new), "cache": (cache_k, cache_v)}[attend]
        out = F.scaled_dot_product_attention(q_new, k, v, scale=scale, is_causal=is_causal)
        return (out, cache_k, cache_v) if return_old else (out, grown_k, grown_v)
    return step


@pytest.mark.parametrize("wrong, mistake, phrase", [
    (_step_variant(attend="new"), "new_token_only", "the cache is not reused"),
    (_step_variant(axis=1), "cat_heads_axis", "dim=2 of [B, H, T, d_head]"),
    (_step_variant(axis=-1), "cat_feature_axis", "dim=2 of [B, H, T, d_head]"),
    (_step_variant(attend="cache"), "cache_only", "its own key and value"),
    (_step_variant(is_causal=True), "causal_mask_in_step", "a causal mask hides the cached keys"),
    (_step_variant(return_old=True), "cache_not_grown", "did not grow"),
    (_step_variant(new_first=True), "new_in_front", "went in front of the cache"),
    (_step_variant(scale=1.0), "no_scale", "not scaled"),
    (lambda *args: cached_attention_step(*args)[0], "wrong_type", "return a tuple of 3"),
    (lambda *args: cached_attention_step(*args)[:2], "wrong_type", "tuple of 2 items"),
    (lambda *args: (cached_attention_step(*args)[0].float(),) + cached_attention_step(*args)[1:], "wrong_dtype",
     "keep the"),
])
def test_cached_attention_step_mistakes_get_their_hint(wrong, mistake, phrase):
    assert_diagnosed(lesson06.check_cached_attention_step(wrong), mistake, phrase)


def _recomputes(cross_attn, memory, memory_mask):
    return lambda x: cross_attn(x, memory, mask=memory_mask)[0]


def _recomputes_from_a_copy(cross_attn, memory, memory_mask):  # right outputs, but projected at every step
    kept = memory.clone()
    return lambda x: cross_attn(x, kept, mask=memory_mask)[0]


def _projects_decoder_state(cross_attn, memory, memory_mask):
    return lambda x: cross_attn(x, source_kv=cross_attn.project_source(x), mask=memory_mask)[0]


def _self_attention(cross_attn, memory, memory_mask):
    return lambda x: cross_attn(x)[0]


def _no_mask(cross_attn, memory, memory_mask):
    cross_kv = cross_attn.project_source(memory)
    return lambda x: cross_attn(x, source_kv=cross_kv)[0]


def _reads_memory_by_hand(cross_attn, memory, memory_mask):
    """Projects memory at every step with F.linear, which no hook on k_proj sees."""
    def step(x):
        k, v = (cross_attn.split_heads(F.linear(memory, p.weight, p.bias)) for p in (cross_attn.k_proj,
                                                                                      cross_attn.v_proj))
        return cross_attn(x, source_kv=(k, v), mask=memory_mask)[0]
    return step


def _lazy(cross_attn, memory, memory_mask):
    cache = {}

    def step(x):
        if "kv" not in cache:
            cache["kv"] = cross_attn.project_source(memory)
        return cross_attn(x, source_kv=cache["kv"], mask=memory_mask)[0]
    return step


def _returns_pair(cross_attn, memory, memory_mask):
    cross_kv = cross_attn.project_source(memory)
    return lambda x: cross_attn(x, source_kv=cross_kv, mask=memory_mask)


@pytest.mark.parametrize("wrong, mistake, phrase", [
    (_recomputes, "projects_each_step", "memory was projected again during the steps (3 times in 3 steps)"),
    (_recomputes_from_a_copy, "projects_each_step", "memory was projected again during the steps"),
    (_projects_decoder_state, "kv_from_decoder_state", "applied to the decoder state x"),
    (_self_attention, "self_attention", "applied to the decoder state x"),
    (_no_mask, "no_padding_mask", "the padding mask is not applied"),
    (_reads_memory_by_hand, "reads_memory_later", "reads memory again at every step"),
    (_lazy, "lazy_projection", "projected at the first step"),
    (_returns_pair, "returns_pair", "returned a pair"),
    (lambda cross_attn, memory, memory_mask: cross_attn.project_source(memory).k, "wrong_type",
     "should return a function"),
    (lambda cross_attn, memory, memory_mask: None, "wrong_type", "should return a function"),
    (lambda cross_attn, memory, memory_mask: (lambda x: x[:, 0]), "wrong_shape", "has shape"),
])
def test_cross_attention_step_mistakes_get_their_hint(wrong, mistake, phrase):
    assert_diagnosed(lesson06.check_cross_attention_step(wrong), mistake, phrase)


def _size_variant(*, kv=2, layers=lambda n: n, per_head=lambda h, d: d, batch=lambda b: b,
                  size=lambda dtype: torch.finfo(dtype).bits // 8, self_part=True, cross_len=None):
    def fn(n_layers, n_heads, d_head, batch_size, tgt_len, src_len, dtype):
        per_position = kv * layers(n_layers) * batch(batch_size) * n_heads * per_head(n_heads, d_head) * size(dtype)
        cross = src_len if cross_len is None else cross_len(tgt_len, src_len)
        return per_position * (tgt_len if self_part else 0) + per_position * cross
    return lambda n_layers, n_heads, d_head, batch, tgt_len, src_len, dtype: fn(
        n_layers, n_heads, d_head, batch, tgt_len, src_len, dtype)


def no_factor_in_cross(n_layers, n_heads, d_head, batch, tgt_len, src_len, dtype):
    per_position = n_layers * batch * n_heads * d_head * torch.finfo(dtype).bits // 8
    return 2 * per_position * tgt_len + per_position * src_len


@pytest.mark.parametrize("wrong, mistake, phrase", [
    (_size_variant(kv=1), "no_kv_factor", "every position stores a key *and* a value"),
    (_size_variant(layers=lambda n: 1), "no_layers", "the layers are missing"),
    (_size_variant(layers=lambda n: 2 * n), "encoder_layers_added", "do not add the encoder's"),
    (_size_variant(per_head=lambda h, d: h * d), "d_model_per_head", "each head stores d_head numbers"),
    (_size_variant(batch=lambda b: 1), "no_batch", "the batch is missing"),
    (_size_variant(size=lambda dtype: torch.finfo(dtype).bits), "bits_not_bytes", "bits, not bytes"),
    (_size_variant(size=lambda dtype: 4), "dtype_ignored", "the dtype is ignored"),
    (_size_variant(self_part=False), "cross_part_only", "only the cross-attention part"),
    (_size_variant(cross_len=lambda t, s: 0), "self_part_only", "only the self-attention part"),
    (_size_variant(cross_len=lambda t, s: t), "cross_with_tgt_len", "use src_len there"),
    (no_factor_in_cross, "no_kv_factor_cross", "missing in the cross-attention part"),
    (_size_variant(cross_len=lambda t, s: s + 1), None, "Count 2 (K and V)"),
    (lambda *args, **kwargs: "a lot", "wrong_type", "should be a whole number"),
    (lambda n_layers, heads, d_head, batch, tgt_len, src_len, dtype: 0, "raised", "unexpected keyword argument"),
])
def test_kv_cache_bytes_mistakes_get_their_hint(wrong, mistake, phrase):
    assert_diagnosed(lesson06.check_kv_cache_bytes(wrong), mistake, phrase)


# --- state -------------------------------------------------------------------------------------------------

def test_checkers_leave_threads_grad_and_random_state_alone():
    threads = torch.get_num_threads()
    state = torch.get_rng_state()
    for name, (check, solution) in CHECKS.items():
        assert check(solution).passed, name
    assert lesson06.check_step_work_prediction(**PREDICTION).passed
    assert torch.get_num_threads() == threads
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.is_grad_enabled()


# --- exercise 4: predict, then verify: the work of one step --------------------------------------------

def test_step_work_experiment_counts():
    assert lesson06.step_work_experiment() == {"positions_without": 10, "positions_with": 1, "scores_without": 100,
                                               "unmasked_without": 55, "scores_with": 10}


@pytest.mark.parametrize(("scores_without", "phrase"), [(100, "the whole 10 x 10 grid"),
                                                        (55, "counting those the causal mask keeps"),
                                                        (100.0, "the whole 10 x 10 grid"),
                                                        (np.int64(55), "counting those the causal mask keeps")])
def test_every_defensible_prediction_passes_with_its_explanation(scores_without, phrase):
    result = lesson06.check_step_work_prediction(10, 1, scores_without, 10)
    assert result.passed and phrase in result.message, result
    assert "looks flat" in result.message and "straight lines" in result.message


PREDICTION_PARTS = ("positions_without_cache", "positions_with_cache", "scores_without_cache", "scores_with_cache")


@pytest.mark.parametrize(("part", "mistake"), [(part, m) for part in PREDICTION_PARTS
                                               for m in lesson06.MISTAKES[f"check_step_work_prediction:{part}"]],
                         ids=lambda x: getattr(x, "name", x))
def test_every_wrong_prediction_gets_its_own_hint(part, mistake):
    assert_named(lesson06.check_step_work_prediction(**{**PREDICTION, part: mistake.wrong}), mistake)


@pytest.mark.parametrize(("answers", "phrase"), [
    ((10, 10, 100, 10), "the decoder processes only the newest token"),
    ((10, 1, 100, 100), "not the whole 10 x 10 grid"),
    ((10, 1, 100, 55), "not the whole triangle"),
    ((10, 1, 100, 9), "its own key"),
    ((9, 1, 100, 10), "<bos> included"),
    ((10, 1, 45, 10), "attend to itself"),
    ((10, 1, 99, 10), "each scored against the keys"),
    ((10, 1, 100, 11), "count the queries"),
    ((10, 1, 100, torch.tensor(10)), ".item()"),
    (("linear", 1, 100, 10), "whole number"),
    ((10, 1.5, 100, 10), "whole number"),
])
def test_wrong_predictions_are_explained(answers, phrase):
    assert_fail(lesson06.check_step_work_prediction(*answers), phrase)


@pytest.mark.parametrize("answers", [(None, None, None, None), (10, 1, 100, None), (10, None, 100, 10),
                                     (11, 1, None, 10)])
def test_unanswered_prediction_is_not_done(answers):
    assert lesson06.check_step_work_prediction(*answers).status == "not_done"


# --- every checker ----------------------------------------------------------------------------------

ALL_CHECKERS = [lesson06.check_cached_attention_step, lesson06.check_cross_attention_step,
                lesson06.check_kv_cache_bytes, lesson06.check_step_work_prediction]


def test_titles_follow_one_pattern() -> None:
    for n, check in enumerate(ALL_CHECKERS, start=1):
        args = (None,) * (4 if check is lesson06.check_step_work_prediction else 1)
        result = check(*args)
        assert result.status == "not_done" and result.title.startswith(f"Exercise {n} · "), result
