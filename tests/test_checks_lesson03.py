"""The lesson 03 checkers: hand-written wrong answers get their hints, and the shape and suspect predictions are
checked. What every function checker must do runs in tests/test_checks_generic.py, over this module's CHECKS,
GENERIC, ALTERNATIVES and BROKEN."""
from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from checker_helpers import (
    assert_diagnosed,
    assert_fail,
    assert_named,
    casts_to,
    mutates_input,
    raise_value_error,
    tensor_exercise_mistakes,
)

from course_lib.checks import lesson03


# --- the solutions, identical in behaviour to solutions/03_cross_attention.ipynb ------------------------
def cross_attention(decoder_states, encoder_out, w_q, w_k, w_v):
    q = decoder_states @ w_q.T  # [B, T_tgt, d_k]
    k = encoder_out @ w_k.T  # [B, T_src, d_k]
    v = encoder_out @ w_v.T  # [B, T_src, d_v]
    attn_scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])  # [B, T_tgt, T_src]
    attn_weights = torch.softmax(attn_scores, dim=-1)
    return attn_weights @ v, attn_weights


def read_alignment(attn_weights, source_tokens):
    return [source_tokens[j] for j in attn_weights.argmax(dim=-1).tolist()]


def depends_on_source(layer, decoder_states, encoder_out):
    other_source = torch.randn_like(encoder_out)
    with torch.no_grad():
        return not torch.allclose(layer(decoder_states, encoder_out), layer(decoder_states, other_source))


# every function checker with its solution: tests/test_checks_generic.py runs over CHECKS, GENERIC, ALTERNATIVES
# and BROKEN
CHECKS = {"check_cross_attention": (lesson03.check_cross_attention, cross_attention),
          "check_read_alignment": (lesson03.check_read_alignment, read_alignment),
          "check_depends_on_source": (lesson03.check_depends_on_source, depends_on_source)}
BROKEN = [  # exercise 1 returns a pair
    ("check_cross_attention", raise_value_error, "raised ValueError: boom"),
    ("check_cross_attention", lambda *args: [1, 2, 3], "should return a pair"),
    ("check_cross_attention", lambda *args: torch.zeros(1, 2, 3), "returned one tensor"),
    ("check_cross_attention", lambda *args: (torch.zeros(1, 2, 3, 4), torch.zeros(1)), "has shape [1, 2, 3, 4]"),
    ("check_cross_attention", 42, "should be a function"),
]
RIGHT_SHAPES = {"q_shape": (3, 4, 6, 16), "kv_shape": (3, 4, 11, 16), "weights_shape": (3, 4, 6, 11),
                "output_shape": (3, 6, 64)}


# --- every wrong prediction gets its own hint -----------------------------------------------------------

@pytest.mark.parametrize(("entry", "mistake"), [(entry, m) for entry, ms in lesson03.SHAPE_MISTAKES.items()
                                                for m in ms], ids=lambda x: getattr(x, "name", x))
def test_every_wrong_shape_gets_its_own_hint(entry: str, mistake: Any) -> None:
    result = lesson03.check_shapes(**{**RIGHT_SHAPES, entry: mistake.wrong})
    assert_named(result, mistake)
    assert result.message.startswith("1 of 4 wrong. " + entry)


@pytest.mark.parametrize("mistake", lesson03.SUSPECT_MISTAKES, ids=lambda m: m.name)
def test_every_wrong_suspect_gets_its_own_hint(mistake: Any) -> None:
    assert_named(lesson03.check_suspect(mistake.wrong), mistake)


# --- correct alternatives (they must pass) ----------------------------------------------------

def cross_sdpa(dec, enc, w_q, w_k, w_v):
    q, k, v = dec @ w_q.T, enc @ w_k.T, enc @ w_v.T
    weights = torch.softmax(q @ k.mT / math.sqrt(q.shape[-1]), dim=-1)
    return F.scaled_dot_product_attention(q, k, v), weights


def cross_linear_einsum(dec, enc, w_q, w_k, w_v):
    q, k, v = F.linear(dec, w_q), F.linear(enc, w_k), F.linear(enc, w_v)
    weights = torch.einsum("btd,bsd->bts", q * q.shape[-1] ** -0.5, k).softmax(-1)
    return torch.einsum("bts,bsd->btd", weights, v), weights


def cross_bmm_manual_softmax(dec, enc, w_q, w_k, w_v):
    q, k, v = torch.matmul(dec, w_q.t()), torch.matmul(enc, w_k.t()), torch.matmul(enc, w_v.t())
    scores = torch.bmm(q, k.transpose(1, 2)) / torch.tensor(float(q.size(-1))).sqrt()
    e = torch.exp(scores - scores.amax(dim=-1, keepdim=True))
    weights = e / e.sum(dim=-1, keepdim=True)
    return torch.bmm(weights, v), weights


def cross_in_float64(dec, enc, w_q, w_k, w_v):
    out, weights = cross_attention(dec.double(), enc.double(), w_q.double(), w_k.double(), w_v.double())
    return out.to(dec.dtype), weights.to(dec.dtype)


def read_with_int_of_rows(w, s):
    return [s[int(torch.argmax(row))] for row in w]


def read_with_numpy(w, s):
    return list(np.array(s)[w.argmax(dim=-1).numpy()])  # numpy str_ items


def read_with_max_indices(w, s):
    return list(map(s.__getitem__, w.max(dim=-1).indices.tolist()))


def read_in_python(w, s):
    return tuple(s[row.index(max(row))] for row in w.tolist())


def depends_equal(layer, dec, enc):
    return not torch.equal(layer(dec, enc), layer(dec, enc + torch.randn_like(enc)))


def depends_bool_tensor(layer, dec, enc):
    return (layer(dec, enc) != layer(dec, torch.randn_like(enc))).any()


def depends_numpy(layer, dec, enc):
    with torch.no_grad():
        a, b = layer(dec, enc).numpy(), layer(dec, torch.zeros_like(enc)).numpy()
    return np.any(a != b)


def depends_max_change(layer, dec, enc):
    with torch.no_grad():
        return (layer(dec, enc) - layer(dec, 2 * enc + 1)).abs().max().item() > 0


ALTERNATIVES = [
    ("check_cross_attention", cross_sdpa), ("check_cross_attention", cross_linear_einsum),
    ("check_cross_attention", cross_bmm_manual_softmax), ("check_cross_attention", cross_in_float64),
    ("check_read_alignment", read_with_int_of_rows), ("check_read_alignment", read_with_numpy),
    ("check_read_alignment", read_with_max_indices), ("check_read_alignment", read_in_python),
    ("check_depends_on_source", depends_equal), ("check_depends_on_source", depends_bool_tensor),
    ("check_depends_on_source", depends_numpy), ("check_depends_on_source", depends_max_change),
]


# --- generic mistake classes ----------------------------------------------------------------------



def square_only_cross_attention(dec, enc, w_q, w_k, w_v):  # the weights reshaped with the target's length twice
    out, weights = cross_attention(dec, enc, w_q, w_k, w_v)
    return out, weights.reshape(dec.shape[0], dec.shape[1], dec.shape[1])


def _edits_tokens(edit: Callable[[list], Any]) -> Callable[..., Any]:
    def wrong(w, s):
        out = read_alignment(w, s)
        edit(s)
        return out
    return wrong


def noise_added_in_place(layer, dec, enc):
    before = layer(dec, enc)
    enc.add_(torch.randn_like(enc))  # the learner's own encoder_out changes
    return not torch.allclose(before, layer(dec, enc))


GENERIC = [("check_cross_attention", *row) for row in tensor_exercise_mistakes(cross_attention, pair=True)]
GENERIC += [
    ("check_cross_attention", casts_to(cross_attention, torch.float32), "wrong_dtype", "keep the inputs' dtype"),
    ("check_cross_attention", mutates_input(cross_attention, 0), "mutated_input",
     "changed its inputs in place (`decoder_states`"),
    ("check_cross_attention", mutates_input(cross_attention, 1), "mutated_input", "`encoder_out`"),
    ("check_cross_attention", mutates_input(cross_attention, 2), "mutated_input", "`w_q`"),
    ("check_cross_attention", square_only_cross_attention, "square_only", "lengths are equal"),
    ("check_read_alignment", _edits_tokens(lambda s: s.sort()), "mutated_input", "`source_tokens`"),
    ("check_read_alignment", _edits_tokens(lambda s: s.reverse()), "mutated_input", "`source_tokens`"),
    ("check_read_alignment", _edits_tokens(lambda s: s.append("<eos>")), "mutated_input", "`source_tokens`"),
    ("check_read_alignment", lambda w, s: read_alignment(w.mul_(2), s), "mutated_input", "`attn_weights`"),
    ("check_depends_on_source", noise_added_in_place, "mutated_input", "`encoder_out`"),
]


# --- the wrong answers of the earlier tests, written by hand (each with its phrase) -------------------

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


_CACHE: dict[str, torch.Tensor] = {}


def kv_cached_on_first_call(dec, enc, w_q, w_k, w_v):
    if "k" not in _CACHE:
        _CACHE["k"], _CACHE["v"] = enc @ w_k.T, enc @ w_v.T
    q = dec @ w_q.T
    weights = torch.softmax(q @ _CACHE["k"].transpose(-2, -1) / math.sqrt(q.shape[-1]), dim=-1)
    return weights @ _CACHE["v"], weights


def self_when_equal(dec, enc, w_q, w_k, w_v):
    return (_variant(kv_from_decoder=True) if dec.shape[1] == enc.shape[1] else cross_attention)(
        dec, enc, w_q, w_k, w_v)


def _only_when_equal(wrong):
    def fn(dec, enc, w_q, w_k, w_v):
        return (wrong if dec.shape[1] == enc.shape[1] else cross_attention)(dec, enc, w_q, w_k, w_v)
    return fn


@pytest.mark.parametrize(("wrong", "mistake", "phrase"), [
    (_variant(swap=True), "queries_from_source", "queries and keys/values are swapped"),
    (_variant(kv_from_decoder=True), "kv_from_decoder", "self-attention by mistake"),
    (_variant(scale=lambda dec, q: 1.0), "no_scale", "not scaled"),
    (_variant(dim=-2), "softmax_over_targets", "softmax runs over the target positions"),
    (_variant(scale=lambda dec, q: math.sqrt(dec.shape[-1])), "scale_by_d_model", "1/sqrt(d_model)"),
    (_variant(transpose_w=False), "weights_not_transposed", "x @ w_q.T, not x @ w_q"),
    (_variant(weights_transposed=True), "weights_transposed", "should be [B, T_tgt, T_src]"),
    (_variant(v_from_decoder=True), "values_from_decoder", "values from decoder_states"),
    (lambda dec, enc, w_q, w_k, w_v: cross_attention(dec, enc, w_q, w_k, w_v)[::-1], "swapped_outputs",
     "the order is (output, attn_weights)"),
    (self_when_equal, "kv_from_decoder", "self-attention by mistake"),
    (_only_when_equal(_variant(swap=True)), "queries_from_source", "swapped"),
    (_only_when_equal(_variant(v_from_decoder=True)), "values_from_decoder", "values from decoder_states"),
    (kv_cached_on_first_call, "source_kv_reused", "computed once and reused"),
])
def test_hand_written_cross_attention_mistakes(wrong, mistake, phrase):
    _CACHE.clear()
    assert_diagnosed(lesson03.check_cross_attention(wrong), mistake, phrase)


def test_swap_with_another_bug_is_still_named_by_the_output_length():
    result = lesson03.check_cross_attention(_variant(swap=True, scale=lambda dec, q: 2.0))
    assert result.mistake == "output_per_source_position" and "T_src = 7" in result.message


@pytest.mark.parametrize(("wrong", "mistake", "phrase"), [
    (lambda w, s: [s[i] for i in w.argmax(dim=0).tolist()], "argmax_over_targets", "argmax over the target axis"),
    (lambda w, s: [s[j] for j in w.argmin(dim=-1).tolist()], "argmin", "argmin"),
    (lambda w, s: w.argmax(dim=-1), "returned_indices_tensor", "as a tensor"),
    (lambda w, s: w.argmax(dim=-1).tolist(), "returned_indices", "not their indices"),
    (lambda w, s: [s[j] for j in torch.max(w, dim=-1)[0]], "max_value_tensors_as_indices", "(values, indices)"),
    (lambda w, s: [s[0]] * w.shape[0], "max_values_rounded_to_indices", "every target token got source token 0"),
    (lambda w, s: [s[-1]] * w.shape[0], None, "attends most to"),
    (lambda w, s: read_alignment(w, s)[:-2], "wrong_length", "expected one per target position"),
    (lambda w, s: [s[i] for i in w.argmax(dim=-1).tolist()][:1] + [0] * (w.shape[0] - 1), "not_tokens",
     "return the tokens themselves"),
    (lambda w, s: [s[w[i].argmax()] for i in range(len(s))], "one_per_source_token", "one per *source* position"),
    (lambda w, s: "car", "wrong_type", "should return a list"),
])
def test_hand_written_read_alignment_mistakes(wrong, mistake, phrase):
    assert_diagnosed(lesson03.check_read_alignment(wrong), mistake, phrase)


def test_example_alignment_reads_as_intended():
    weights, target, source = lesson03.example_alignment()
    assert weights.shape == (len(target), len(source))
    assert read_alignment(weights, source) == ["I", "saw", "saw", "the", "car", "red", "<eos>"]


def compares_shapes(layer, dec, enc):
    return layer(dec, enc).shape != layer(dec, torch.randn_like(enc)).shape


def compares_with_a_clone(layer, dec, enc):
    return not torch.allclose(layer(dec, enc), layer(dec, enc.clone()))


@pytest.mark.parametrize(("wrong", "mistake", "phrase"), [
    (lambda layer, dec, enc: not torch.allclose(layer(dec, enc), layer(dec, enc.flip(1))), "only_reordered",
     "only reordered"),
    (lambda layer, dec, enc: not torch.allclose(layer(dec, enc), layer(dec, torch.randn_like(enc)), atol=1e-2),
     "too_tolerant", "too tolerant"),
    (lambda layer, dec, enc: True, "true_for_self_attention", "never reads encoder_out"),
    (lambda layer, dec, enc: not torch.allclose(layer(dec, enc), layer(torch.randn_like(dec), torch.randn_like(enc))),
     "true_for_self_attention", "If you changed decoder_states too"),
    (lambda layer, dec, enc: layer(dec, enc) != layer(dec, torch.randn_like(enc)), "elementwise_comparison",
     "True or False"),
    (compares_shapes, "never_sees_a_change", "comparing shapes"),
    (compares_with_a_clone, "never_sees_a_change", "a copy of encoder_out"),
    (lambda layer, dec, enc: False, "never_sees_a_change", "can never see a change"),
    (lambda layer, dec, enc: 1, "wrong_type", "should return a bool"),
])
def test_hand_written_depends_on_source_mistakes(wrong, mistake, phrase):
    assert_diagnosed(lesson03.check_depends_on_source(wrong), mistake, phrase)


# --- exercise 2 · predict every shape ---------------------------------------------------------------

def test_shapes_solution_passes():
    result = lesson03.check_shapes(*RIGHT_SHAPES.values())
    assert result.passed, result
    assert "[B, H, T_tgt, T_src]" in result.message


def test_true_shapes_are_the_modules():
    assert lesson03.true_shapes() == RIGHT_SHAPES


@pytest.mark.parametrize(("entry", "guess", "phrase"), [
    ("weights_shape", (3, 4, 11, 6), "you wrote [3, 4, 11, 6] = [B, H, T_src, T_tgt]"),
    ("weights_shape", (3, 6, 11), "averages the weights over the heads"),
    ("output_shape", (3, 11, 64), "= [B, T_src, d_model]"),
    ("q_shape", (3, 4, 6, 64), "= [B, H, T_tgt, d_model]"),
    ("kv_shape", (3, 4, 6, 16), "one row per source position"),
    ("q_shape", (3, 6, 4, 16), "= [B, T_tgt, H, d_head]"),
    ("q_shape", (3, 4, 6, 8), "each head gets"),  # no named mistake: the axis-by-axis reason
    ("output_shape", "3, 6, 64", "tuple of ints"),
])
def test_shape_mistakes_are_explained(entry, guess, phrase):
    assert_fail(lesson03.check_shapes(**{**RIGHT_SHAPES, entry: guess}), phrase)


def test_several_wrong_shapes_are_all_explained():
    result = lesson03.check_shapes((3, 6, 4, 16), (3, 4, 11, 16), (3, 6, 11), (3, 6, 64))
    assert result.message.startswith("2 of 4 wrong") and result.mistake == "q_head_axis_not_moved"
    assert "averages the weights" in result.message


def test_shapes_accept_lists_and_sizes():
    assert lesson03.check_shapes([3, 4, 6, 16], torch.Size([3, 4, 11, 16]), (3, 4, 6, 11), [3, 6, np.int64(64)]).passed


@pytest.mark.parametrize("index", range(4))
def test_shapes_unanswered_is_not_done(index):
    shapes = list(RIGHT_SHAPES.values())
    shapes[index] = None
    assert lesson03.check_shapes(*shapes).status == "not_done"


# --- exercise 4 · the suspect -------------------------------------------------------------------------

def test_the_suspect_is_found_by_the_solution():
    gen = torch.Generator().manual_seed(0)
    dec, enc = torch.randn(2, 5, 16, generator=gen), torch.randn(2, 7, 16, generator=gen)
    found = [n for n, layer in lesson03.suspect_layers().items() if not depends_on_source(layer, dec, enc)]
    assert found == ["c"]
    assert lesson03.check_suspect("c").passed
    assert lesson03.check_suspect(" C ").passed


@pytest.mark.parametrize(("answer", "phrase"), [
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


def test_the_positions_case_tells_reordering_from_a_copy():
    """The first case is a layer whose output changes when the source is reordered: there the flip test is right
    and a comparison with a copy is not, so the two get different hints."""
    layer, dec, enc = lesson03.DEPENDS_CASES[0].args
    with torch.no_grad():
        assert not torch.allclose(layer(dec, enc), layer(dec, enc.flip(1)))


# --- every checker: titles, unfinished ------------------------------------------------------------------

def test_titles_follow_one_pattern() -> None:
    checks = [lesson03.check_cross_attention, lambda a: lesson03.check_shapes(a, a, a, a),
              lesson03.check_read_alignment, lesson03.check_depends_on_source, lesson03.check_suspect]
    for n, check in zip([1, 2, 3, 4, 4], checks):
        result = check(None)
        assert result.status == "not_done" and result.title.startswith(f"Exercise {n} · ")
