"""The lesson 05 checkers pass the solutions, name the typical mistakes, and never raise."""
from __future__ import annotations

import math

import pytest
import torch
from checker_helpers import assert_fail, broken_answers, raise_not_implemented

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


# --- sinusoidal positions ------------------------------------------------------------------------
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


def test_positions_solution_passes():
    result = lesson05.check_sinusoidal_positions(sinusoidal_positions)
    assert result.passed, result


@pytest.mark.parametrize("wrong, phrase", [
    (_positions_variant(swap=True), "sin and cos are swapped"),
    (_positions_variant(exponent=1.0), "pair index i where the formula has 2i"),
    (_positions_variant(exponent=4.0), "twice too large"),
    (_positions_variant(per_feature=True), "share the frequency"),
    (_positions_variant(start=1), "positions start at 1"),
    (_positions_variant(halves=True), "interleaves them"),
    (_positions_variant(inverted=True), "do not multiply"),
    (lambda max_len, d: sinusoidal_positions(max_len, d).T, "is [d_model, max_len]"),
    (lambda max_len, d: sinusoidal_positions(max_len, d).long(), "dtype torch.int64"),
    (lambda max_len, d: sinusoidal_positions(max_len, d) * 2, "differs from the reference"),
])
def test_positions_mistakes_get_their_hint(wrong, phrase):
    assert_fail(lesson05.check_sinusoidal_positions(wrong), phrase)


# --- decoder layer -------------------------------------------------------------------------------
def _decoder_variant(*, order="self-cross", causal=True, pad=True, residual=("self", "cross", "ffn"), post=False,
                     query_from_memory=False, no_memory=False, causal_cross=False):
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

        blocks = {"self": (layer.norm1, self_block), "cross": (layer.norm2, cross_block)}
        for name in order.split("-") + ["ffn"]:
            norm, f = blocks.get(name, (layer.norm3, layer.ffn))
            if post:
                y = norm(y + f(y))
            else:
                y = (y if name in residual else 0) + f(norm(y))
        return y
    return forward


def test_decoder_layer_solution_passes():
    result = lesson05.check_decoder_layer_forward(decoder_layer_forward)
    assert result.passed, result


def test_decoder_layer_variant_helper_matches_the_solution():
    result = lesson05.check_decoder_layer_forward(_decoder_variant())
    assert result.passed, result


def _leaky_and_otherwise_wrong(layer, y, memory, self_mask, memory_mask):
    return 2 * _decoder_variant(causal=False)(layer, y, memory, self_mask, memory_mask)


def _unpacking_forgotten(layer, y, memory, self_mask, memory_mask):
    return y + layer.self_attn(layer.norm1(y), mask=self_mask)


@pytest.mark.parametrize("wrong, phrase", [
    (_decoder_variant(order="cross-self"), "cross-attention came before self-attention"),
    (_decoder_variant(causal=False), "the future leaks"),
    (_leaky_and_otherwise_wrong, "the future leaks"),
    (_decoder_variant(pad=False), "pass memory_mask"),
    (_decoder_variant(residual=("cross", "ffn")), "residual around self-attention"),
    (_decoder_variant(residual=("self", "ffn")), "residual around cross-attention"),
    (_decoder_variant(residual=("self", "cross")), "residual around the feed-forward"),
    (_decoder_variant(post=True), "that is post-norm"),
    (_decoder_variant(query_from_memory=True), "memory was passed as the queries"),
    (_decoder_variant(no_memory=True), "got no memory"),
    (_decoder_variant(causal_cross=True), "cross-attention got the causal mask"),
    (_unpacking_forgotten, "unpack it"),
])
def test_decoder_layer_mistakes_get_their_hint(wrong, phrase):
    assert_fail(lesson05.check_decoder_layer_forward(wrong), phrase)


# --- post-norm encoder layer ---------------------------------------------------------------------
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


def test_post_norm_solution_passes():
    result = lesson05.check_post_norm_encoder_layer(encoder_layer_post_norm)
    assert result.passed, result


@pytest.mark.parametrize("wrong, phrase", [
    (_pre_norm, "that is pre-norm"),
    (_norm_branch_only, "normalise the sum"),
    (_ffn_reads_input, "read the layer's input x"),
    (_no_mask, "pass mask to layer.self_attn"),
    (_norm1_twice, "norm1 was used twice"),
    (_no_ffn_residual, "residual around the feed-forward block"),
])
def test_post_norm_mistakes_get_their_hint(wrong, phrase):
    assert_fail(lesson05.check_post_norm_encoder_layer(wrong), phrase)


# --- every function checker: not done, broken, wrong type or shape --------------------------------
FUNCTION_CHECKERS = [lesson05.check_sinusoidal_positions, lesson05.check_decoder_layer_forward,
                     lesson05.check_post_norm_encoder_layer]


@pytest.mark.parametrize("check", FUNCTION_CHECKERS)
@pytest.mark.parametrize("answer", [None, raise_not_implemented])
def test_unfinished_answer_is_not_done(check, answer):
    assert check(answer).status == "not_done"


@pytest.mark.parametrize("check", FUNCTION_CHECKERS)
@pytest.mark.parametrize("answer, phrase", [
    *broken_answers(torch.zeros(1, 2, 3, 4, 5)),
    (lambda *args: torch.full((50, 16), math.nan), "has shape [50, 16]"),
])
def test_broken_answer_fails_without_raising(check, answer, phrase):
    if check is lesson05.check_sinusoidal_positions and "[50, 16]" in phrase:
        phrase = "contains NaN"
    assert_fail(check(answer), phrase)


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
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(1)
    torch.testing.assert_close(torch.rand(3), expected)


# --- predict, then verify: parameter counts ---------------------------------------------------------
def test_param_counts_solution_passes():
    result = lesson05.check_param_counts(ENCODER_LAYER, DECODER_LAYER, TOTAL)
    assert result.passed, result
    assert f"{TOTAL:,}" in result.message


def test_param_counts_match_the_real_model():
    import course_lib as cl

    model = cl.Seq2SeqTransformer(cl.TransformerConfig(**lesson05.PARAM_CONFIG))
    assert sum(p.numel() for p in model.parameters()) == TOTAL
    assert sum(p.numel() for p in model.decoder.layers[0].parameters()) == DECODER_LAYER


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
])
def test_param_counts_mistakes_get_their_hint(guess, phrase):
    assert_fail(lesson05.check_param_counts(*guess), phrase)


@pytest.mark.parametrize("guess", [(None, DECODER_LAYER, TOTAL), (ENCODER_LAYER, DECODER_LAYER, None)])
def test_param_counts_not_done(guess):
    assert lesson05.check_param_counts(*guess).status == "not_done"


# --- predict, then verify: which outputs change -------------------------------------------------------
def test_what_changes_solution_passes():
    result = lesson05.check_what_changes({0, 1, 2, 3, 4}, [3, 4])
    assert result.passed, result


@pytest.mark.parametrize("by_source, by_target, phrase", [
    ({2}, {3, 4}, "every target position reads every source position"),
    ({2, 3, 4}, {3, 4}, "every target position reads every source position"),
    ({0, 1, 2, 3, 4}, {0, 1, 2, 3, 4}, "stops positions 0..2"),
    ({0, 1, 2, 3, 4}, {4}, "sees its own token"),
    ({0, 1, 2, 3, 4}, {3}, "positions after it read it"),
    ("all", {3, 4}, "collection of positions"),
    ({0, 1, 2, 3, 4}, [3.0, 4.0], "collection of positions"),
])
def test_what_changes_mistakes_get_their_hint(by_source, by_target, phrase):
    assert_fail(lesson05.check_what_changes(by_source, by_target), phrase)


def test_what_changes_not_done():
    assert lesson05.check_what_changes(None, {3, 4}).status == "not_done"
    assert lesson05.check_what_changes({0}, None).status == "not_done"
