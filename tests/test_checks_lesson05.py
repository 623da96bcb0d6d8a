"""The lesson 05 checkers: hand-written wrong answers get their hints, and the predictions are checked. What every
function checker must do runs in tests/test_checks_generic.py, over this module's CHECKS, GENERIC, ALTERNATIVES
and BROKEN."""
from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from checker_helpers import assert_diagnosed, assert_fail, assert_named, batch_one_only, broken_answers

from course_lib.checks import lesson05

pytestmark = pytest.mark.usefixtures("single_thread")


# The reference solutions, identical in behaviour to solutions/05_encoder_decoder.ipynb.
def sinusoidal_positions(max_len: int, d_model: int) -> torch.Tensor:
    position = torch.arange(max_len, dtype=torch.float32)[:, None]  # [max_len, 1]
    frequency = 1.0 / 10000.0 ** (torch.arange(0, d_model, 2, dtype=torch.float32) / d_model)  # [d_model / 2]
    table = torch.zeros(max_len, d_model)
    table[:, 0::2] = torch.sin(position * frequency)  # even features
    table[:, 1::2] = torch.cos(position * frequency)  # odd features
    return table


def decoder_layer_forward(layer, y, memory, self_mask, memory_mask):
    attended, _ = layer.self_attn(layer.norm1(y), mask=self_mask)  # [B, T, d_model]
    y = y + attended
    attended, _ = layer.cross_attn(layer.norm2(y), memory, mask=memory_mask)  # [B, T, d_model]
    y = y + attended
    return y + layer.ffn(layer.norm3(y))


def encoder_layer_post_norm(layer, x, mask):
    attended, _ = layer.self_attn(x, mask=mask)  # [B, S, d_model]
    x = layer.norm1(x + attended)
    return layer.norm2(x + layer.ffn(x))


ENCODER_LAYER = 4 * (64 * 64 + 64) + (64 * 256 + 256) + (256 * 64 + 64) + 2 * (2 * 64)
DECODER_LAYER = 2 * 4 * (64 * 64 + 64) + (64 * 256 + 256) + (256 * 64 + 64) + 3 * (2 * 64)
TOTAL = 1000 * 64 + 800 * 64 + 2 * ENCODER_LAYER + 2 * DECODER_LAYER + 2 * (2 * 64) + (64 * 800 + 800)
# every function checker with its solution: tests/test_checks_generic.py runs over CHECKS, GENERIC, ALTERNATIVES
# and BROKEN
CHECKS = {"check_sinusoidal_positions": (lesson05.check_sinusoidal_positions, sinusoidal_positions),
          "check_decoder_layer_forward": (lesson05.check_decoder_layer_forward, decoder_layer_forward),
          "check_post_norm_encoder_layer": (lesson05.check_post_norm_encoder_layer, encoder_layer_post_norm)}
BROKEN = [(name, answer, phrase) for name in CHECKS for answer, phrase in broken_answers(torch.zeros(1, 2, 3, 4, 5))]
BROKEN += [(name, lambda *args: torch.full((50, 16), math.nan),
            "contains NaN" if name == "check_sinusoidal_positions" else "has shape [50, 16]") for name in CHECKS]


# --- correct alternatives (they must pass) ----------------------------------------------------

def positions_exp_log(max_len, d_model):  # the library's way, in float32
    position = torch.arange(max_len).unsqueeze(1).float()
    div = torch.exp(torch.arange(0, d_model, 2).float() * (-math.log(10000.0) / d_model))
    table = torch.zeros(max_len, d_model)
    table[:, 0::2], table[:, 1::2] = torch.sin(position * div), torch.cos(position * div)
    return table


def positions_stacked_float64(max_len, d_model):  # float64 is fine too
    angle = torch.arange(max_len, dtype=torch.float64)[:, None] / 10000 ** (
        torch.arange(d_model // 2, dtype=torch.float64) * 2 / d_model)
    return torch.stack([angle.sin(), angle.cos()], dim=-1).reshape(max_len, d_model)


def positions_loops(max_len, d_model):
    table = torch.empty(max_len, d_model)
    for p in range(max_len):
        for i in range(0, d_model, 2):
            table[p, i] = math.sin(p / 10000 ** (i / d_model))
            table[p, i + 1] = math.cos(p / 10000 ** (i / d_model))
    return table


def decoder_with_sequential_names(layer, y, memory, self_mask, memory_mask):
    h = layer.norm1(y)
    y = y + layer.self_attn(h, h, mask=self_mask)[0]
    y = y + layer.cross_attn(layer.norm2(y), source=memory, mask=memory_mask)[0]
    return y + layer.ffn(layer.norm3(y))


def decoder_via_projections(layer, y, memory, self_mask, memory_mask):
    y = y + layer.self_attn(layer.norm1(y), mask=self_mask)[0]
    cross_kv = layer.cross_attn.project_source(memory)
    y = y + layer.cross_attn(layer.norm2(y), source_kv=cross_kv, mask=memory_mask)[0]
    return y + layer.ffn(layer.norm3(y))


def decoder_mask_broadcast_by_hand(layer, y, memory, self_mask, memory_mask):
    b, t = y.shape[:2]
    y = y + layer.self_attn(layer.norm1(y), mask=self_mask.expand(b, t, t))[0]
    y = y + layer.cross_attn(layer.norm2(y), memory, mask=memory_mask.expand(-1, -1, t, -1))[0]
    return y + layer.ffn(layer.norm3(y))


def encoder_in_place_on_a_copy(layer, x, mask):
    x = x.clone()
    x += layer.self_attn(x, mask=mask)[0]
    x = layer.norm1(x)
    return layer.norm2(x + layer.ffn(x))


def encoder_functional_norms(layer, x, mask):
    def norm(n, h):
        return torch.nn.functional.layer_norm(h, h.shape[-1:], n.weight, n.bias, n.eps)
    x = norm(layer.norm1, x + layer.self_attn(x, mask=mask)[0])
    return norm(layer.norm2, x + layer.ffn(x))


ALTERNATIVES = [
    ("check_sinusoidal_positions", positions_exp_log), ("check_sinusoidal_positions", positions_stacked_float64),
    ("check_sinusoidal_positions", positions_loops),
    ("check_decoder_layer_forward", decoder_with_sequential_names),
    ("check_decoder_layer_forward", decoder_via_projections),
    ("check_decoder_layer_forward", decoder_mask_broadcast_by_hand),
    ("check_post_norm_encoder_layer", encoder_in_place_on_a_copy),
    ("check_post_norm_encoder_layer", encoder_functional_norms),
]


# --- generic mistake classes ----------------------------------------------------------------------

def decoder_adds_in_place(layer, y, memory, self_mask, memory_mask):
    y += layer.self_attn(layer.norm1(y), mask=self_mask)[0]  # changes the caller's y
    y += layer.cross_attn(layer.norm2(y), memory, mask=memory_mask)[0]
    return y + layer.ffn(layer.norm3(y))


def encoder_adds_in_place(layer, x, mask):
    x += layer.self_attn(x, mask=mask)[0]
    x = layer.norm1(x)
    return layer.norm2(x + layer.ffn(x))


def decoder_edits_the_layer(layer, y, memory, self_mask, memory_mask):
    with torch.no_grad():
        layer.norm1.weight.mul_(1.0001)
    return decoder_layer_forward(layer, y, memory, self_mask, memory_mask)


def decoder_batch_one_view(layer, y, memory, self_mask, memory_mask):  # hard-codes a batch of 1
    y = y.view(1, *y.shape[1:])
    return decoder_layer_forward(layer, y, memory[:1], self_mask, memory_mask[:1])


def decoder_square_only(layer, y, memory, self_mask, memory_mask):  # takes S from the target's length
    b, t, _ = y.shape
    return decoder_layer_forward(layer, y, memory, self_mask, memory_mask.reshape(b, 1, 1, t))


GENERIC = [
    ("check_decoder_layer_forward", decoder_adds_in_place, "mutated_input", "`y`"),
    ("check_post_norm_encoder_layer", encoder_adds_in_place, "mutated_input", "`x`"),
    ("check_decoder_layer_forward", decoder_edits_the_layer, "mutated_input", "`layer`"),
    ("check_decoder_layer_forward", batch_one_only(decoder_layer_forward), "batch_one_only", "right for a batch of 1"),
    ("check_post_norm_encoder_layer", batch_one_only(encoder_layer_post_norm), "batch_one_only",
     "right for a batch of 1"),
    ("check_decoder_layer_forward", decoder_batch_one_view, "batch_one_only", "right for a batch of 1"),
    ("check_decoder_layer_forward", lambda *a: decoder_layer_forward(*a).float(), "wrong_dtype",
     "keep the inputs' dtype"),
    ("check_post_norm_encoder_layer", lambda *a: encoder_layer_post_norm(*a).numpy(), "wrong_type", "numpy.ndarray"),
    ("check_sinusoidal_positions", lambda n, d: sinusoidal_positions(n, d).half(), "wrong_dtype",
     "expected torch.float32"),
    ("check_sinusoidal_positions", lambda n, d: sinusoidal_positions(n, d).tolist(), "wrong_type",
     "should return a torch.Tensor"),
    ("check_decoder_layer_forward", decoder_square_only, "square_only", "lengths are equal"),
]


# --- the wrong answers of the earlier tests, written by hand (each with its phrase) -------------------

def _positions_variant(*, swap=False, exponent=2.0, start=0, halves=False, per_feature=False, inverted=False):
    def positions(max_len, d_model):
        position = torch.arange(start, start + max_len, dtype=torch.float32)[:, None]
        if per_feature:
            angle = position / 10000.0 ** (torch.arange(d_model) / d_model)
            return torch.where(torch.arange(d_model) % 2 == 0, torch.sin(angle), torch.cos(angle))
        power = exponent * torch.arange(d_model // 2, dtype=torch.float32) / d_model
        angle = position * 10000.0 ** (power if inverted else -power)
        first, second = (torch.cos(angle), torch.sin(angle)) if swap else (torch.sin(angle), torch.cos(angle))
        if halves:
            return torch.cat([first, second], dim=1)
        return torch.stack([first, second], dim=2).reshape(max_len, d_model)
    return positions


def positions_integer_table(max_len, d_model):
    position = torch.arange(max_len)[:, None]
    frequency = 1.0 / 10000.0 ** (torch.arange(0, d_model, 2) / d_model)
    table = torch.zeros(max_len, d_model, dtype=torch.long)
    table[:, 0::2] = torch.sin(position * frequency)
    table[:, 1::2] = torch.cos(position * frequency)
    return table


@pytest.mark.parametrize("wrong, mistake, phrase", [
    (_positions_variant(swap=True), "sin_cos_swapped", "sin and cos are swapped"),
    (_positions_variant(exponent=1.0), "exponent_i", "pair index i where the formula has 2i"),
    (_positions_variant(exponent=4.0), "exponent_4i", "twice too large"),
    (_positions_variant(per_feature=True), "frequency_per_feature", "share the frequency"),
    (_positions_variant(start=1), "positions_from_1", "positions start at 1"),
    (_positions_variant(halves=True), "sines_then_cosines", "interleaves them"),
    (_positions_variant(inverted=True), "frequencies_inverted", "do not multiply"),
    (lambda max_len, d: sinusoidal_positions(max_len, d).T, "transposed", "is [d_model, max_len]"),
    (lambda max_len, d: sinusoidal_positions(max_len, d).long(), "integer_table", "holds integers"),
    (positions_integer_table, "integer_table", "holds integers"),
    (lambda max_len, d: sinusoidal_positions(max_len, d) * 2, None, "differs from the reference"),
])
def test_positions_mistakes_get_their_hint(wrong, mistake, phrase):
    assert_diagnosed(lesson05.check_sinusoidal_positions(wrong), mistake, phrase)


def _decoder_variant(*, order="self-cross", causal=True, pad=True, residual=("self", "cross", "ffn"), post=False,
                     query_from_memory=False, no_memory=False, causal_cross=False, norms=(1, 2, 3)):
    def forward(layer, y, memory, self_mask, memory_mask):
        def self_block(h):
            return layer.self_attn(h, mask=self_mask if causal else None)[0]

        def cross_block(h):
            if no_memory:
                return layer.cross_attn(h)[0]
            if query_from_memory:
                return layer.cross_attn(memory, h)[0]
            if causal_cross:
                return layer.cross_attn(h, memory, mask=self_mask)[0]
            return layer.cross_attn(h, memory, mask=memory_mask if pad else None)[0]

        norm = {name: getattr(layer, f"norm{n}") for name, n in zip(("self", "cross", "ffn"), norms)}
        blocks = {"self": self_block, "cross": cross_block, "ffn": layer.ffn}
        for name in order.split("-") + ["ffn"]:
            f = blocks[name]
            if post:
                y = norm[name](y + f(y))
            else:
                y = (y if name in residual else 0) + f(norm[name](y))
        return y
    return forward


def test_decoder_layer_variant_helper_matches_the_solution():
    assert lesson05.check_decoder_layer_forward(_decoder_variant()).passed


def _leaky_and_otherwise_wrong(layer, y, memory, self_mask, memory_mask):
    return 2 * _decoder_variant(causal=False)(layer, y, memory, self_mask, memory_mask)


def _unpacking_forgotten(layer, y, memory, self_mask, memory_mask):
    return y + layer.self_attn(layer.norm1(y), mask=self_mask)


def _returns_the_pair(layer, y, memory, self_mask, memory_mask):
    return layer.self_attn(layer.norm1(y), mask=self_mask)


@pytest.mark.parametrize("wrong, mistake, phrase", [
    (_decoder_variant(order="cross-self"), "cross_before_self", "cross-attention came before self-attention"),
    (_decoder_variant(causal=False), "no_causal_mask", "the future leaks"),
    (_leaky_and_otherwise_wrong, "future_leaks", "the future leaks"),
    (_decoder_variant(pad=False), "no_memory_mask", "pass memory_mask"),
    (_decoder_variant(residual=("cross", "ffn")), "no_self_residual", "residual around self-attention"),
    (_decoder_variant(residual=("self", "ffn")), "no_cross_residual", "residual around cross-attention"),
    (_decoder_variant(residual=("self", "cross")), "no_ffn_residual", "residual around the feed-forward"),
    (_decoder_variant(post=True), "post_norm", "that is post-norm"),
    (_decoder_variant(query_from_memory=True), "memory_as_queries", "memory was passed as the queries"),
    (_decoder_variant(no_memory=True), "cross_without_memory", "got no memory"),
    (_decoder_variant(causal_cross=True), "causal_cross_attention", "cross-attention got the causal mask"),
    (_decoder_variant(norms=(2, 1, 3)), "norm1_norm2_swapped", "its own LayerNorm"),
    (_decoder_variant(norms=(1, 3, 2)), "norm2_norm3_swapped", "its own LayerNorm"),
    (_unpacking_forgotten, "raised", "unpack it"),
    (_returns_the_pair, "wrong_type", "unpack it"),
])
def test_decoder_layer_mistakes_get_their_hint(wrong, mistake, phrase):
    assert_diagnosed(lesson05.check_decoder_layer_forward(wrong), mistake, phrase)


def _pre_norm(layer, x, mask):
    x = x + layer.self_attn(layer.norm1(x), mask=mask)[0]
    return x + layer.ffn(layer.norm2(x))


def _norm_branch_only(layer, x, mask):
    x = x + layer.norm1(layer.self_attn(x, mask=mask)[0])
    return x + layer.norm2(layer.ffn(x))


def _ffn_reads_input(layer, x, mask):
    attended = layer.self_attn(x, mask=mask)[0]
    return layer.norm2(layer.norm1(x + attended) + layer.ffn(x))


def _no_mask(layer, x, mask):
    return encoder_layer_post_norm(layer, x, None)


def _norm1_twice(layer, x, mask):
    x = layer.norm1(x + layer.self_attn(x, mask=mask)[0])
    return layer.norm1(x + layer.ffn(x))


def _no_ffn_residual(layer, x, mask):
    return layer.norm2(layer.ffn(layer.norm1(x + layer.self_attn(x, mask=mask)[0])))


def _no_attention_residual(layer, x, mask):
    x = layer.norm1(layer.self_attn(x, mask=mask)[0])
    return layer.norm2(x + layer.ffn(x))


def _residual_from_the_input(layer, x, mask):
    h = layer.norm1(x + layer.self_attn(x, mask=mask)[0])
    return layer.norm2(x + layer.ffn(h))


def _norms_swapped(layer, x, mask):
    x = layer.norm2(x + layer.self_attn(x, mask=mask)[0])
    return layer.norm1(x + layer.ffn(x))


def _norms_at_the_end(layer, x, mask):
    x = x + layer.self_attn(x, mask=mask)[0]
    x = x + layer.ffn(x)
    return layer.norm2(layer.norm1(x))


@pytest.mark.parametrize("wrong, mistake, phrase", [
    (_pre_norm, "pre_norm", "that is pre-norm"),
    (_norm_branch_only, "norm_branch_only", "normalise the sum"),
    (_ffn_reads_input, "ffn_reads_input", "read the layer's input x"),
    (_no_mask, "no_padding_mask", "pass mask to layer.self_attn"),
    (_norm1_twice, "norm1_twice", "norm1 was used twice"),
    (_no_ffn_residual, "no_ffn_residual", "residual around the feed-forward block"),
    (_no_attention_residual, "no_attention_residual", "residual around self-attention"),
    (_residual_from_the_input, "ffn_residual_from_input", "added the layer's input x"),
    (_norms_swapped, "norms_swapped", "norm1 and norm2 are swapped"),
    (_norms_at_the_end, "norms_at_the_end", "applied at the end"),
])
def test_post_norm_mistakes_get_their_hint(wrong, mistake, phrase):
    assert_diagnosed(lesson05.check_post_norm_encoder_layer(wrong), mistake, phrase)


# --- state, and the cases of the old checker ---------------------------------------------------------------

def test_checkers_leave_the_random_state_and_thread_count_alone():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    torch.set_num_threads(2)  # the module runs on one thread (fixture); the checkers must restore whatever was set
    try:
        assert lesson05.check_decoder_layer_forward(decoder_layer_forward).passed
        assert lesson05.check_post_norm_encoder_layer(encoder_layer_post_norm).passed
        assert lesson05.check_param_counts(ENCODER_LAYER, DECODER_LAYER, TOTAL).passed
        assert lesson05.check_what_changes({0, 1, 2, 3, 4}, {3, 4}).passed
        assert torch.get_num_threads() == 2 and torch.is_grad_enabled()
    finally:
        torch.set_num_threads(1)
    torch.testing.assert_close(torch.rand(3), expected)


def test_the_cases_are_those_of_the_old_checker():
    """Same seeds as before the conversion: case 0 of the decoder is the first draw of a generator seeded 5."""
    gen = torch.Generator().manual_seed(5)
    torch.testing.assert_close(lesson05.DECODER_CASES[0].args[1], torch.randn(2, 5, 16, generator=gen))
    layer = copy.deepcopy(lesson05.DECODER_CASES[0].args[0])
    assert not torch.allclose(layer.norm1.weight, torch.ones(16))  # randomised norms


# --- exercise 4: parameter counts ---------------------------------------------------------------------

@pytest.mark.parametrize("answers", [(ENCODER_LAYER, DECODER_LAYER, TOTAL),
                                     (float(ENCODER_LAYER), np.int64(DECODER_LAYER), float(TOTAL))])
def test_param_counts_pass(answers):
    result = lesson05.check_param_counts(*answers)
    assert result.passed, result
    assert f"{TOTAL:,}" in result.message


def test_param_counts_match_the_real_model():
    import course_lib as cl

    model = cl.Seq2SeqTransformer(cl.TransformerConfig(**lesson05.PARAM_CONFIG))
    assert sum(p.numel() for p in model.parameters()) == TOTAL == lesson05.TOTAL
    assert sum(p.numel() for p in model.decoder.layers[0].parameters()) == DECODER_LAYER


PARAM_PARTS = {"encoder_layer": 0, "decoder_layer": 1, "total": 2}


@pytest.mark.parametrize(("part", "mistake"), [(part, m) for part in PARAM_PARTS
                                               for m in lesson05.MISTAKES[f"check_param_counts:{part}"]],
                         ids=lambda x: getattr(x, "name", x))
def test_every_wrong_param_count_gets_its_own_hint(part, mistake):
    answers = [ENCODER_LAYER, DECODER_LAYER, TOTAL]
    answers[PARAM_PARTS[part]] = mistake.wrong
    assert_named(lesson05.check_param_counts(*answers), mistake)


@pytest.mark.parametrize("guess, phrase", [
    ((ENCODER_LAYER - 576, DECODER_LAYER, TOTAL), "biases are missing"),
    ((ENCODER_LAYER - 256, DECODER_LAYER, TOTAL), "LayerNorms are missing"),
    ((ENCODER_LAYER + 3 * 16640, DECODER_LAYER, TOTAL), "do not multiply them"),
    ((ENCODER_LAYER, DECODER_LAYER - 16640, TOTAL), "two attention blocks"),
    ((ENCODER_LAYER, DECODER_LAYER - 128, TOTAL), "three LayerNorms"),
    ((ENCODER_LAYER, DECODER_LAYER, TOTAL - 256), "final LayerNorm"),
    ((ENCODER_LAYER, DECODER_LAYER, TOTAL - 800), "has a bias too"),
    ((ENCODER_LAYER, DECODER_LAYER, TOTAL + 256 * 64), "no parameters"),
    ((ENCODER_LAYER, DECODER_LAYER, TOTAL - DECODER_LAYER), "n_decoder_layers = 2"),
    ((ENCODER_LAYER, DECODER_LAYER, TOTAL + 1), "is not it"),
    ((1.5, DECODER_LAYER, TOTAL), "whole number"),
    (("many", DECODER_LAYER, TOTAL), "whole number"),
    ((torch.tensor(ENCODER_LAYER), DECODER_LAYER, TOTAL), ".item()"),
])
def test_param_counts_mistakes_get_their_hint(guess, phrase):
    assert_fail(lesson05.check_param_counts(*guess), phrase)


@pytest.mark.parametrize("guess", [(None, DECODER_LAYER, TOTAL), (ENCODER_LAYER, DECODER_LAYER, None),
                                   (ENCODER_LAYER + 1, None, TOTAL)])
def test_param_counts_not_done(guess):
    assert lesson05.check_param_counts(*guess).status == "not_done"


# --- exercise 5: which outputs change -------------------------------------------------------------------

def test_what_changes_experiment():
    assert lesson05.what_changes_experiment() == ({0, 1, 2, 3, 4}, {3, 4})


@pytest.mark.parametrize("by_source, by_target", [
    ({0, 1, 2, 3, 4}, [3, 4]), ([0, 1, 2, 3, 4], (3, 4)), (range(5), {3.0, 4.0}), ({0, 1, 2, 3, 4}, [3.0, 4.0]),
    (frozenset(range(5)), [np.int64(3), np.int64(4)]),
])
def test_what_changes_passes(by_source, by_target):
    result = lesson05.check_what_changes(by_source, by_target)
    assert result.passed, result


SEEN = {"source": {0, 1, 2, 3, 4}, "target": {3, 4}}


@pytest.mark.parametrize(("part", "mistake"), [(part, m) for part in SEEN
                                               for m in lesson05.MISTAKES[f"check_what_changes:{part}"]],
                         ids=lambda x: getattr(x, "name", x))
def test_every_wrong_set_of_positions_gets_its_own_hint(part, mistake):
    answers = dict(SEEN)
    answers[part] = mistake.wrong(SEEN[part])
    assert_named(lesson05.check_what_changes(answers["source"], answers["target"]), mistake)


@pytest.mark.parametrize("by_source, by_target, phrase", [
    ({2}, {3, 4}, "every target position reads every source position"),
    ({2, 3, 4}, {3, 4}, "every target position reads every source position"),
    ({0, 1, 2, 3, 4}, {0, 1, 2, 3, 4}, "stops positions 0..2"),
    ({0, 1, 2, 3, 4}, {4}, "sees its own token"),
    ({0, 1, 2, 3, 4}, {3}, "positions after it read it"),
    ({1, 2, 3, 4, 5}, {3, 4}, "numbered from 0"),
    ({0, 1, 2, 3, 4}, {4, 5}, "numbered from 0"),
    ({0, 1, 2, 3, 4}, {2, 3, 4}, "stops positions 0..2"),
    ({0, 1, 2}, {3, 4}, "every target position reads every source position"),
    ("all", {3, 4}, "collection of positions"),
    ({0, 1, 2, 3, 4}, [3.5, 4.0], "collection of positions"),
    ({0, 1, 2, 3, 4}, torch.tensor([3, 4]), ".tolist()"),
    ({0, 1, 2, 3, 4}, {True, 4}, "collection of positions"),
])
def test_what_changes_mistakes_get_their_hint(by_source, by_target, phrase):
    assert_fail(lesson05.check_what_changes(by_source, by_target), phrase)


def test_what_changes_not_done():
    assert lesson05.check_what_changes(None, {3, 4}).status == "not_done"
    assert lesson05.check_what_changes({0}, None).status == "not_done"


# --- every checker ----------------------------------------------------------------------------------

ALL_CHECKERS = [lesson05.check_sinusoidal_positions, lesson05.check_decoder_layer_forward,
                lesson05.check_post_norm_encoder_layer, lesson05.check_param_counts, lesson05.check_what_changes]


def test_titles_follow_one_pattern() -> None:
    for n, check in enumerate(ALL_CHECKERS, start=1):
        args = (None,) * (3 if check is lesson05.check_param_counts else 2 if check is lesson05.check_what_changes
                          else 1)
        result = check(*args)
        assert result.status == "not_done" and result.title.startswith(f"Exercise {n} · "), result
