"""The lesson 02 checkers: hand-written wrong answers get their hints, and the predictions are checked. What every
function checker must do runs in tests/test_checks_generic.py, over this module's CHECKS, GENERIC, ALTERNATIVES
and BROKEN."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from checker_helpers import (
    assert_diagnosed,
    assert_fail,
    assert_named,
    broken_answers,
    casts_to,
    mutates_input,
    tensor_exercise_mistakes,
)

from course_lib.checks import lesson02


# The reference solutions, identical in behaviour to solutions/02_multi_head_attention.ipynb.
def split_heads(x: torch.Tensor, n_heads: int) -> torch.Tensor:
    batch, length, d_model = x.shape
    return x.view(batch, length, n_heads, d_model // n_heads).transpose(1, 2)


def merge_heads(x: torch.Tensor) -> torch.Tensor:
    batch, n_heads, length, d_head = x.shape
    return x.transpose(1, 2).reshape(batch, length, n_heads * d_head)


def mha_forward(x, source, w_q, w_k, w_v, w_o, n_heads):
    q = split_heads(x @ w_q.T, n_heads)  # [B, H, T_q, d_head]
    k = split_heads(source @ w_k.T, n_heads)  # [B, H, T_k, d_head]
    v = split_heads(source @ w_v.T, n_heads)
    attn_scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])  # [B, H, T_q, T_k]
    attn_weights = torch.softmax(attn_scores, dim=-1)
    context = attn_weights @ v  # [B, H, T_q, d_head]
    return merge_heads(context) @ w_o.T  # [B, T_q, d_model]


# every function checker with its solution: tests/test_checks_generic.py runs over CHECKS, GENERIC, ALTERNATIVES
# and BROKEN
CHECKS = {"check_split_heads": (lesson02.check_split_heads, split_heads),
          "check_merge_heads": (lesson02.check_merge_heads, merge_heads),
          "check_mha_forward": (lesson02.check_mha_forward, mha_forward)}
BROKEN = [(name, answer, phrase) for name in CHECKS for answer, phrase in broken_answers(torch.zeros(1, 2, 3, 4, 5))]


# --- correct alternatives (they must pass) ----------------------------------------------------

def split_chunk_stack(x, n_heads):
    return torch.stack(x.chunk(n_heads, dim=-1), dim=1)


def split_unflatten(x, n_heads):
    return x.unflatten(-1, (n_heads, -1)).permute(0, 2, 1, 3)


def merge_cat(x):
    return torch.cat(x.unbind(dim=1), dim=-1)


def merge_flatten(x):
    return x.permute(0, 2, 1, 3).contiguous().view(x.shape[0], x.shape[2], -1)


def mha_linear_sdpa(x, source, w_q, w_k, w_v, w_o, n_heads):
    q, k, v = (split_chunk_stack(F.linear(t, w), n_heads) for t, w in ((x, w_q), (source, w_k), (source, w_v)))
    return F.linear(merge_cat(F.scaled_dot_product_attention(q, k, v)), w_o)


def mha_head_loop(x, source, w_q, w_k, w_v, w_o, n_heads):
    d_head = x.shape[-1] // n_heads
    heads = []
    for h in range(n_heads):
        rows = slice(h * d_head, (h + 1) * d_head)
        q, k, v = x @ w_q[rows].T, source @ w_k[rows].T, source @ w_v[rows].T
        heads.append(torch.softmax(q @ k.transpose(-2, -1) / d_head ** 0.5, dim=-1) @ v)
    return torch.cat(heads, dim=-1) @ w_o.T


def mha_einsum(x, source, w_q, w_k, w_v, w_o, n_heads):
    b, t_q, d = x.shape
    q = torch.einsum("btd,ed->bte", x, w_q).reshape(b, t_q, n_heads, -1)
    k = torch.einsum("btd,ed->bte", source, w_k).reshape(b, source.shape[1], n_heads, -1)
    v = torch.einsum("btd,ed->bte", source, w_v).reshape(b, source.shape[1], n_heads, -1)
    w = torch.einsum("bqhe,bkhe->bhqk", q, k).div(math.sqrt(d // n_heads)).softmax(-1)
    return torch.einsum("bhqk,bkhe->bqhe", w, v).reshape(b, t_q, d) @ w_o.T


ALTERNATIVES = [
    ("check_split_heads", split_chunk_stack), ("check_split_heads", split_unflatten),
    ("check_split_heads", lambda x, h: x.reshape(x.shape[0], x.shape[1], h, -1).permute(0, 2, 1, 3)),
    ("check_merge_heads", merge_cat), ("check_merge_heads", merge_flatten),
    ("check_merge_heads", lambda x: x.transpose(1, 2).flatten(2)),
    ("check_mha_forward", mha_linear_sdpa), ("check_mha_forward", mha_head_loop), ("check_mha_forward", mha_einsum),
]


# --- generic mistake classes ----------------------------------------------------------------------

def _generic(solution):
    return [*tensor_exercise_mistakes(solution),
            (casts_to(solution, torch.float32), "wrong_dtype", "keep the input"),
            (mutates_input(solution, 0), "mutated_input", "changed its inputs in place (`x`")]


def mha_square_only(x, source, w_q, w_k, w_v, w_o, n_heads):  # uses x's length for the source's heads
    b, t, d = x.shape
    q = (x @ w_q.T).view(b, t, n_heads, -1).transpose(1, 2)
    k = (source @ w_k.T).view(b, t, n_heads, -1).transpose(1, 2)
    v = (source @ w_v.T).view(b, t, n_heads, -1).transpose(1, 2)
    context = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(d // n_heads), dim=-1) @ v
    return context.transpose(1, 2).reshape(b, t, d) @ w_o.T


GENERIC = [(name, *row) for name, (_, solution) in CHECKS.items() for row in _generic(solution)]
GENERIC += [("check_mha_forward", mha_square_only, "square_only", "lengths are equal")]


# --- the wrong answers of the earlier tests, written by hand (each with its phrase) -------------------

def _mha_variant(*, scale=None, dim=-1, split=split_heads, merge=merge_heads, out_proj=True, kv_from_x=False,
                 transpose_w=True, swap_qk_source=False):
    """mha_forward with one typical mistake switched on."""
    def forward(x, source, w_q, w_k, w_v, w_o, n_heads):
        if kv_from_x:
            source = x
        if swap_qk_source:
            x, source = source, x
        t = (lambda m: m.T) if transpose_w else (lambda m: m)
        q, k, v = split(x @ t(w_q), n_heads), split(source @ t(w_k), n_heads), split(source @ t(w_v), n_heads)
        d = q.shape[-1] if scale is None else scale(x.shape[-1])
        weights = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(d), dim=dim)
        context = merge(weights @ v)
        return context @ t(w_o) if out_proj else context
    return forward


@pytest.mark.parametrize("wrong, mistake, phrase", [
    (lambda x, h: x.view(x.shape[0], h, x.shape[1], x.shape[2] // h), "split_no_transpose", "regroups the flat memory"),
    (lambda x, h: x.view(x.shape[0], x.shape[1], x.shape[2] // h, h).permute(0, 3, 1, 2), "split_interleaved",
     "interleaved"),
    (lambda x, h: x.view(x.shape[0], x.shape[1], h, x.shape[2] // h), "head_axis_not_moved", "add .transpose(1, 2)"),
    (lambda x, h: split_heads(x, h).float(), "wrong_dtype", "keep the input's dtype"),
    (lambda x, h: x.view(x.shape[0], x.shape[1], h, -1).transpose(1, 2) * 2, None, "differs from the reference"),
])
def test_hand_written_split_mistakes(wrong, mistake, phrase):
    assert_diagnosed(lesson02.check_split_heads(wrong), mistake, phrase)


@pytest.mark.parametrize("wrong, mistake, phrase", [
    (lambda x: x.reshape(x.shape[0], x.shape[2], -1), "merge_no_transpose", "without moving the heads back"),
    (lambda x: x.permute(0, 2, 3, 1).reshape(x.shape[0], x.shape[2], -1), "merge_interleaved", "interleaved"),
    (lambda x: x.transpose(1, 2), "not_flattened", "now flatten them"),
    (lambda x: x.transpose(1, 2).view(x.shape[0], x.shape[2], -1), "view_after_transpose", "not contiguous"),
])
def test_hand_written_merge_mistakes(wrong, mistake, phrase):
    assert_diagnosed(lesson02.check_merge_heads(wrong), mistake, phrase)


@pytest.mark.parametrize("wrong, mistake, phrase", [
    (_mha_variant(out_proj=False), "no_output_projection", "output projection W_o is missing"),
    (_mha_variant(scale=lambda d: d), "scale_by_d_model", "divide by sqrt(d_head)"),
    (_mha_variant(scale=lambda d: 1), "no_scale", "not scaled"),
    (_mha_variant(dim=-2), "softmax_over_queries", "softmax over the queries"),
    (_mha_variant(merge=lambda c: c.reshape(c.shape[0], c.shape[2], -1)), "merge_no_transpose",
     "without transposing back"),
    (_mha_variant(merge=lambda c: c.permute(0, 2, 3, 1).reshape(c.shape[0], c.shape[2], -1)), "merge_interleaved",
     "wrong order"),
    (_mha_variant(split=lambda x, h: x.reshape(x.shape[0], h, x.shape[1], -1)), "split_no_transpose",
     "heads split wrongly"),
    (_mha_variant(transpose_w=False), "weights_not_transposed", "x @ w_q.T"),
    (_mha_variant(kv_from_x=True), "kv_from_x", "keys and values came from x"),
    (_mha_variant(swap_qk_source=True), "queries_from_source", "queries come from x"),
    (lambda x, source, w_q, w_k, w_v, w_o, h: split_heads(x @ w_q.T, h), "heads_not_merged", "still per head"),
])
def test_hand_written_mha_mistakes(wrong, mistake, phrase):
    assert_diagnosed(lesson02.check_mha_forward(wrong), mistake, phrase)


def test_scale_hint_quotes_the_case_numbers():
    result = lesson02.check_mha_forward(_mha_variant(scale=lambda d: d))
    assert "1/sqrt(16)" in result.message and "d_head = 4" in result.message


# --- predict, then verify: parameter count --------------------------------------------------------
PARAMS = 1_050_624


@pytest.mark.parametrize("answer", [PARAMS, 4 * (512 * 512 + 512), float(PARAMS), np.int64(PARAMS),
                                    np.float64(PARAMS)])
def test_param_count_accepts_equivalent_types(answer):
    result = lesson02.check_param_count(answer, False)
    assert result.passed, result
    assert "1,050,624" in result.message
    assert lesson02.check_param_count(answer, np.bool_(False)).passed


@pytest.mark.parametrize("mistake", lesson02.PARAM_MISTAKES, ids=lambda m: m.name)
def test_every_wrong_param_count_gets_its_own_hint(mistake):
    assert_named(lesson02.check_param_count(mistake.wrong, False), mistake)


def test_depends_on_heads_mistake_is_named():
    mistake = lesson02.DEPENDS_MISTAKES[0]
    assert_named(lesson02.check_param_count(PARAMS, mistake.wrong), mistake)


@pytest.mark.parametrize("params, depends, phrase", [
    (4 * 512 * 512, False, "leaves out the biases"),
    (3 * (512 * 512 + 512), False, "not the output projection"),
    (8 * PARAMS, False, "do not have full-size matrices"),
    (PARAMS // 8, False, "one head's share"),
    (PARAMS, True, "does not depend on n_heads"),
    (123, False, "count the four nn.Linear(512, 512)"),
    ("a lot", False, "whole number"),
    (PARAMS + 0.5, False, "whole number"),
    (torch.tensor([PARAMS]), False, "whole number"),
    (True, False, "whole number"),
    (PARAMS, "no", "True or False"),
])
def test_param_count_mistakes_get_their_hint(params, depends, phrase):
    assert_fail(lesson02.check_param_count(params, depends), phrase)


@pytest.mark.parametrize("params, depends", [(None, False), (PARAMS, None), (None, None)])
def test_param_count_unanswered_is_not_done(params, depends):
    assert lesson02.check_param_count(params, depends).status == "not_done"


# --- predict, then verify: shapes in cross-attention ------------------------------------------------
def test_cross_attention_shapes_solution_passes():
    result = lesson02.check_cross_attention_shapes((2, 4, 5, 9), (2, 5, 32))
    assert result.passed, result


@pytest.mark.parametrize("mistake", lesson02.WEIGHTS_SHAPE_MISTAKES, ids=lambda m: m.name)
def test_every_wrong_weights_shape_gets_its_own_hint(mistake):
    assert_named(lesson02.check_cross_attention_shapes(mistake.wrong, (2, 5, 32)), mistake)


@pytest.mark.parametrize("mistake", lesson02.OUTPUT_SHAPE_MISTAKES, ids=lambda m: m.name)
def test_every_wrong_output_shape_gets_its_own_hint(mistake):
    assert_named(lesson02.check_cross_attention_shapes((2, 4, 5, 9), mistake.wrong), mistake)


@pytest.mark.parametrize("weights, output, phrase", [
    ((2, 4, 9, 5), (2, 5, 32), "rows are queries"),
    ((2, 4, 5, 5), (2, 5, 32), "T_k = 9"),
    ((2, 5, 9), (2, 5, 32), "averages over the heads"),
    ((2, 4, 5, 9), (2, 9, 32), "one row per query"),
    ((2, 4, 5, 9), (2, 4, 5, 8), "merged and projected back"),
    ((2, 4, 5, 9), "2, 5, 32", "tuple of ints"),
    ([2, 4, 5, 9.0], (2, 5, 32), "tuple of ints"),
    ((1, 2, 3), (2, 5, 32), "one matrix per batch element and head"),
])
def test_cross_attention_shapes_mistakes_get_their_hint(weights, output, phrase):
    assert_fail(lesson02.check_cross_attention_shapes(weights, output), phrase)


def test_cross_attention_shapes_accepts_lists_and_sizes():
    assert lesson02.check_cross_attention_shapes([2, 4, 5, 9], torch.Size([2, 5, 32])).passed
    assert lesson02.check_cross_attention_shapes((2, 4, 5, np.int64(9)), [2, 5, 32]).passed


@pytest.mark.parametrize("weights, output", [(None, (2, 5, 32)), ((2, 4, 5, 9), None)])
def test_cross_attention_shapes_unanswered_is_not_done(weights, output):
    assert lesson02.check_cross_attention_shapes(weights, output).status == "not_done"


def test_titles_follow_one_pattern():
    checks = [lesson02.check_split_heads, lesson02.check_merge_heads, lesson02.check_mha_forward,
              lambda a: lesson02.check_param_count(a, a), lambda a: lesson02.check_cross_attention_shapes(a, a)]
    for n, check in enumerate(checks, start=1):
        assert check(None).title.startswith(f"Exercise {n} · ")
