"""The checkers of lesson 03 pass the solutions, name each typical mistake, and never raise."""
from __future__ import annotations

import math

import pytest
import torch
from checker_helpers import assert_fail, raise_not_implemented, raise_value_error

from course_lib.checks import lesson03


# --- Exercise 1 · cross_attention -----------------------------------------------------------------
def cross_attention(decoder_states, encoder_out, w_q, w_k, w_v):
    """The notebook's solution."""
    q = decoder_states @ w_q.T  # [B, T_tgt, d_k]
    k = encoder_out @ w_k.T  # [B, T_src, d_k]
    v = encoder_out @ w_v.T  # [B, T_src, d_v]
    attn_scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])  # [B, T_tgt, T_src]
    attn_weights = torch.softmax(attn_scores, dim=-1)
    return attn_weights @ v, attn_weights


def _variant(*, swap=False, kv_from_decoder=False, v_from_decoder=False, scale=None, dim=-1, transpose_w=True,
             weights_transposed=False):
    def fn(dec, enc, w_q, w_k, w_v):
        q_in, k_in, v_in = (enc, dec, dec) if swap else (dec, enc, enc)
        if kv_from_decoder:
            k_in = v_in = dec
        if v_from_decoder:
            v_in = dec
        t = (lambda m: m.T) if transpose_w else (lambda m: m)
        q, k, v = q_in @ t(w_q), k_in @ t(w_k), v_in @ t(w_v)
        s = math.sqrt(q.shape[-1]) if scale is None else scale(dec, q)
        attn_weights = torch.softmax(q @ k.transpose(-2, -1) / s, dim=dim)
        out = attn_weights @ v
        return out, attn_weights.transpose(-2, -1) if weights_transposed else attn_weights
    return fn


def test_cross_attention_solution_passes():
    result = lesson03.check_cross_attention(cross_attention)
    assert result.passed, result


def test_sdpa_based_solution_passes():
    def with_sdpa(dec, enc, w_q, w_k, w_v):
        q, k, v = dec @ w_q.T, enc @ w_k.T, enc @ w_v.T
        weights = torch.softmax(q @ k.mT / math.sqrt(q.shape[-1]), dim=-1)
        return torch.nn.functional.scaled_dot_product_attention(q, k, v), weights
    assert lesson03.check_cross_attention(with_sdpa).passed


@pytest.mark.parametrize("wrong, phrase", [
    (_variant(swap=True), "your output has the source's length"),
    (_variant(kv_from_decoder=True), "self-attention by mistake"),
    (_variant(scale=lambda dec, q: 1.0), "not scaled"),
    (_variant(dim=-2), "softmax runs over the target positions"),
    (_variant(scale=lambda dec, q: math.sqrt(dec.shape[-1])), "1/sqrt(d_model)"),
    (_variant(transpose_w=False), "x @ w_q.T, not x @ w_q"),
    (_variant(weights_transposed=True), "should be [B, T_tgt, T_src]"),
    (lambda dec, enc, w_q, w_k, w_v: cross_attention(dec, enc, w_q, w_k, w_v)[::-1], "has shape"),
])
def test_cross_attention_mistakes_get_their_hint(wrong, phrase):
    assert_fail(lesson03.check_cross_attention(wrong), phrase)


def test_kv_from_decoder_is_caught_even_with_equal_lengths():
    """With T_tgt == T_src the shapes are right; the source-change test must still catch it."""
    def self_when_equal(dec, enc, w_q, w_k, w_v):
        return (_variant(kv_from_decoder=True) if dec.shape[1] == enc.shape[1] else cross_attention)(
            dec, enc, w_q, w_k, w_v)
    assert_fail(lesson03.check_cross_attention(self_when_equal), "does not change when the source changes")


@pytest.mark.parametrize("wrong, phrase", [
    (_variant(swap=True), "swapped"),
    (_variant(v_from_decoder=True), "values from decoder_states"),
])
def test_equal_length_mistakes_are_named(wrong, phrase):
    """Swaps that only run when T_tgt == T_src are diagnosed from the values, not the shape."""
    def only_when_equal(dec, enc, w_q, w_k, w_v):
        return (wrong if dec.shape[1] == enc.shape[1] else cross_attention)(dec, enc, w_q, w_k, w_v)
    assert_fail(lesson03.check_cross_attention(only_when_equal), phrase)


@pytest.mark.parametrize("answer", [None, raise_not_implemented])
def test_cross_attention_unfinished_is_not_done(answer):
    assert lesson03.check_cross_attention(answer).status == "not_done"


@pytest.mark.parametrize("answer, phrase", [
    (raise_value_error, "raised ValueError: boom"),
    (lambda *args: [1, 2, 3], "should return a pair"),
    (lambda *args: torch.zeros(1, 2, 3), "returned one tensor"),
    (lambda *args: (torch.zeros(1, 2, 3, 4), torch.zeros(1)), "has shape [1, 2, 3, 4]"),
    (42, "should be a function"),
])
def test_cross_attention_broken_answer_fails_without_raising(answer, phrase):
    assert_fail(lesson03.check_cross_attention(answer), phrase)


# --- Exercise 2 · predict every shape -------------------------------------------------------------
RIGHT_SHAPES = ((3, 4, 6, 16), (3, 4, 11, 16), (3, 4, 6, 11), (3, 6, 64))


def test_shapes_solution_passes():
    result = lesson03.check_shapes(*RIGHT_SHAPES)
    assert result.passed, result
    assert "[B, H, T_tgt, T_src]" in result.message


@pytest.mark.parametrize("index, guess, phrase", [
    (2, (3, 4, 11, 6), "you wrote [3, 4, 11, 6] = [B, H, T_src, T_tgt]"),
    (2, (3, 6, 11), "averages the weights over the heads"),
    (3, (3, 11, 64), "= [B, T_src, d_model]"),
    (0, (3, 4, 6, 64), "= [B, H, T_tgt, d_model]"),
    (1, (3, 4, 6, 16), "one row per source position"),
    (0, (3, 6, 4, 16), "= [B, T_tgt, H, d_head]"),
    (3, "3, 6, 64", "tuple of ints"),
])
def test_shape_mistakes_are_explained(index, guess, phrase):
    shapes = list(RIGHT_SHAPES)
    shapes[index] = guess
    assert_fail(lesson03.check_shapes(*shapes), phrase)


def test_shapes_accept_lists_and_sizes():
    assert lesson03.check_shapes([3, 4, 6, 16], torch.Size([3, 4, 11, 16]), (3, 4, 6, 11), [3, 6, 64]).passed


@pytest.mark.parametrize("index", range(4))
def test_shapes_unanswered_is_not_done(index):
    shapes = list(RIGHT_SHAPES)
    shapes[index] = None
    assert lesson03.check_shapes(*shapes).status == "not_done"


# --- Exercise 3 · read an alignment ---------------------------------------------------------------
def read_alignment(attn_weights, source_tokens):
    """The notebook's solution."""
    return [source_tokens[j] for j in attn_weights.argmax(dim=-1).tolist()]


def test_read_alignment_solution_passes():
    result = lesson03.check_read_alignment(read_alignment)
    assert result.passed, result


def test_example_alignment_reads_as_intended():
    weights, target, source = lesson03.example_alignment()
    assert weights.shape == (len(target), len(source))
    assert read_alignment(weights, source) == ["I", "saw", "saw", "the", "car", "red", "<eos>"]


@pytest.mark.parametrize("wrong, phrase", [
    (lambda w, s: [s[i] for i in w.argmax(dim=0).tolist()], "argmax over the target axis"),
    (lambda w, s: [s[j] for j in w.argmin(dim=-1).tolist()], "argmin"),
    (lambda w, s: w.argmax(dim=-1), "you returned a tensor"),
    (lambda w, s: w.argmax(dim=-1).tolist(), "not their indices"),
    (lambda w, s: [s[0]] * w.shape[0], "attends most to"),
    (lambda w, s: read_alignment(w, s)[:-2], "expected one per target position"),
    (lambda w, s: "car", "should return a list of str"),
])
def test_read_alignment_mistakes_get_their_hint(wrong, phrase):
    assert_fail(lesson03.check_read_alignment(wrong), phrase)


@pytest.mark.parametrize("answer", [None, raise_not_implemented])
def test_read_alignment_unfinished_is_not_done(answer):
    assert lesson03.check_read_alignment(answer).status == "not_done"


def test_read_alignment_that_raises_fails_without_raising():
    assert_fail(lesson03.check_read_alignment(raise_value_error), "raised ValueError: boom")


# --- Exercise 4 · which call is secretly self-attention? ------------------------------------------
def depends_on_source(layer, decoder_states, encoder_out):
    """The notebook's solution."""
    other_source = torch.randn_like(encoder_out)
    return not torch.allclose(layer(decoder_states, encoder_out), layer(decoder_states, other_source))


def test_depends_on_source_solution_passes():
    assert lesson03.check_depends_on_source(depends_on_source).passed


@pytest.mark.parametrize("wrong, phrase", [
    (lambda layer, dec, enc: not torch.allclose(layer(dec, enc), layer(dec, enc.flip(1))), "only reordered"),
    (lambda layer, dec, enc: not torch.allclose(layer(dec, enc), layer(dec, torch.randn_like(enc)), atol=1e-2),
     "too tolerant"),
    (lambda layer, dec, enc: True, "never reads encoder_out"),
    (lambda layer, dec, enc: layer(dec, enc) != layer(dec, torch.randn_like(enc)), "True or False"),
])
def test_depends_on_source_mistakes_get_their_hint(wrong, phrase):
    assert_fail(lesson03.check_depends_on_source(wrong), phrase)


def test_depends_on_source_accepts_a_bool_tensor():
    answer = lambda layer, dec, enc: (layer(dec, enc) != layer(dec, torch.randn_like(enc))).any()  # noqa: E731
    assert lesson03.check_depends_on_source(answer).passed


@pytest.mark.parametrize("answer", [None, raise_not_implemented])
def test_depends_on_source_unfinished_is_not_done(answer):
    assert lesson03.check_depends_on_source(answer).status == "not_done"


def test_depends_on_source_that_raises_fails_without_raising():
    assert_fail(lesson03.check_depends_on_source(raise_value_error), "raised ValueError: boom")


def test_the_suspect_is_found_by_the_solution():
    gen = torch.Generator().manual_seed(0)
    dec, enc = torch.randn(2, 5, 16, generator=gen), torch.randn(2, 7, 16, generator=gen)
    found = [n for n, layer in lesson03.suspect_layers().items() if not depends_on_source(layer, dec, enc)]
    assert found == ["c"]
    assert lesson03.check_suspect("c").passed
    assert lesson03.check_suspect(" C ").passed


@pytest.mark.parametrize("answer, phrase", [
    ("a", "really reads encoder_out"), ("b", "really reads encoder_out"), ("d", "one letter"), (["c"], "one letter"),
])
def test_wrong_suspect_gets_a_hint(answer, phrase):
    assert_fail(lesson03.check_suspect(answer), phrase)


def test_unanswered_suspect_is_not_done():
    assert lesson03.check_suspect(None).status == "not_done"


def test_suspect_layers_leave_the_global_random_stream_alone():
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    lesson03.suspect_layers()
    assert torch.equal(torch.rand(3), expected)
