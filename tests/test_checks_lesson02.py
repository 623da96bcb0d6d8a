"""The lesson 02 checkers pass the solutions, name the typical mistakes, and never raise."""
from __future__ import annotations

import math

import pytest
import torch
from checker_helpers import assert_fail, broken_answers, raise_not_implemented

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


# --- split_heads ---------------------------------------------------------------------------------
def test_split_heads_solution_passes():
    result = lesson02.check_split_heads(split_heads)
    assert result.passed, result


@pytest.mark.parametrize("wrong, phrase", [
    (lambda x, h: x.view(x.shape[0], h, x.shape[1], x.shape[2] // h), "regroups the flat memory"),
    (lambda x, h: x.view(x.shape[0], x.shape[1], x.shape[2] // h, h).permute(0, 3, 1, 2), "interleaved"),
    (lambda x, h: x.view(x.shape[0], x.shape[1], h, x.shape[2] // h), "add .transpose(1, 2)"),
    (lambda x, h: split_heads(x, h).float(), "keep the input's dtype"),
    (lambda x, h: x.view(x.shape[0], x.shape[1], h, -1).transpose(1, 2) * 2, "differs from the reference"),
])
def test_split_heads_mistakes_get_their_hint(wrong, phrase):
    assert_fail(lesson02.check_split_heads(wrong), phrase)


# --- merge_heads ---------------------------------------------------------------------------------
def test_merge_heads_solution_passes():
    result = lesson02.check_merge_heads(merge_heads)
    assert result.passed, result


@pytest.mark.parametrize("wrong, phrase", [
    (lambda x: x.reshape(x.shape[0], x.shape[2], -1), "without moving the heads back"),
    (lambda x: x.permute(0, 2, 3, 1).reshape(x.shape[0], x.shape[2], -1), "interleaved"),
    (lambda x: x.transpose(1, 2), "now flatten them"),
    (lambda x: x.transpose(1, 2).view(x.shape[0], x.shape[2], -1), "not contiguous"),
])
def test_merge_heads_mistakes_get_their_hint(wrong, phrase):
    assert_fail(lesson02.check_merge_heads(wrong), phrase)


# --- mha_forward ---------------------------------------------------------------------------------
def test_mha_forward_solution_passes():
    result = lesson02.check_mha_forward(mha_forward)
    assert result.passed, result


@pytest.mark.parametrize("wrong, phrase", [
    (_mha_variant(out_proj=False), "output projection W_o is missing"),
    (_mha_variant(scale=lambda d: d), "divide by sqrt(d_head)"),
    (_mha_variant(scale=lambda d: 1), "not scaled"),
    (_mha_variant(dim=-2), "softmax over the queries"),
    (_mha_variant(merge=lambda c: c.reshape(c.shape[0], c.shape[2], -1)), "without transposing back"),
    (_mha_variant(merge=lambda c: c.permute(0, 2, 3, 1).reshape(c.shape[0], c.shape[2], -1)), "wrong order"),
    (_mha_variant(split=lambda x, h: x.reshape(x.shape[0], h, x.shape[1], -1)), "heads split wrongly"),
    (_mha_variant(transpose_w=False), "x @ w_q.T"),
    (_mha_variant(kv_from_x=True), "keys and values came from x"),
    (_mha_variant(swap_qk_source=True), "queries come from x"),
    (lambda x, source, w_q, w_k, w_v, w_o, h: split_heads(x @ w_q.T, h), "still per head"),
])
def test_mha_forward_mistakes_get_their_hint(wrong, phrase):
    assert_fail(lesson02.check_mha_forward(wrong), phrase)


# --- every function checker: not done, broken, wrong type or shape --------------------------------
FUNCTION_CHECKERS = [lesson02.check_split_heads, lesson02.check_merge_heads, lesson02.check_mha_forward]


@pytest.mark.parametrize("check", FUNCTION_CHECKERS)
@pytest.mark.parametrize("answer", [None, raise_not_implemented])
def test_unfinished_answer_is_not_done(check, answer):
    assert check(answer).status == "not_done"


@pytest.mark.parametrize("check", FUNCTION_CHECKERS)
@pytest.mark.parametrize("answer, phrase", broken_answers(torch.zeros(1, 2, 3, 4, 5)))
def test_broken_answer_fails_without_raising(check, answer, phrase):
    assert_fail(check(answer), phrase)


# --- predict, then verify: parameter count --------------------------------------------------------
def test_param_count_solution_passes():
    result = lesson02.check_param_count(1_050_624, False)
    assert result.passed, result
    assert "1,050,624" in result.message


@pytest.mark.parametrize("params, depends, phrase", [
    (4 * 512 * 512, False, "leaves out the biases"),
    (3 * (512 * 512 + 512), False, "not the output projection"),
    (8 * 1_050_624, False, "do not have full-size matrices"),
    (1_050_624 // 8, False, "one head's share"),
    (1_050_624, True, "does not depend on n_heads"),
    (123, False, "count the four nn.Linear(512, 512)"),
    ("a lot", False, "whole number"),
    (1_050_624, "no", "True or False"),
])
def test_param_count_mistakes_get_their_hint(params, depends, phrase):
    assert_fail(lesson02.check_param_count(params, depends), phrase)


@pytest.mark.parametrize("params, depends", [(None, False), (1_050_624, None), (None, None)])
def test_param_count_unanswered_is_not_done(params, depends):
    assert lesson02.check_param_count(params, depends).status == "not_done"


# --- predict, then verify: shapes in cross-attention ------------------------------------------------
def test_cross_attention_shapes_solution_passes():
    result = lesson02.check_cross_attention_shapes((2, 4, 5, 9), (2, 5, 32))
    assert result.passed, result


@pytest.mark.parametrize("weights, output, phrase", [
    ((2, 4, 9, 5), (2, 5, 32), "rows are queries"),
    ((2, 4, 5, 5), (2, 5, 32), "T_k = 9"),
    ((2, 5, 9), (2, 5, 32), "averages over the heads"),
    ((2, 4, 5, 9), (2, 9, 32), "one row per query"),
    ((2, 4, 5, 9), (2, 4, 5, 8), "merged and projected back"),
    ((2, 4, 5, 9), "2, 5, 32", "tuple of ints"),
    ([2, 4, 5, 9.0], (2, 5, 32), "tuple of ints"),
])
def test_cross_attention_shapes_mistakes_get_their_hint(weights, output, phrase):
    assert_fail(lesson02.check_cross_attention_shapes(weights, output), phrase)


def test_cross_attention_shapes_accepts_lists_and_sizes():
    assert lesson02.check_cross_attention_shapes([2, 4, 5, 9], torch.Size([2, 5, 32])).passed


@pytest.mark.parametrize("weights, output", [(None, (2, 5, 32)), ((2, 4, 5, 9), None)])
def test_cross_attention_shapes_unanswered_is_not_done(weights, output):
    assert lesson02.check_cross_attention_shapes(weights, output).status == "not_done"
