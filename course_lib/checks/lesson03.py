"""Checkers for the exercises of lesson 03 (cross-attention).

Each exercise is its reference, its cases and its list of named mistakes (``MISTAKES``), run by
``_harness.run_cases`` (predictions: compared entry by entry). References: ``F.scaled_dot_product_attention``,
``cl.MultiHeadAttention`` and ``argmax``.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._checks import shape_str
from ..attention import MultiHeadAttention
from ._answers import expect_shape
from ._cases import Case, Mistake
from ._compare import same
from ._harness import map_result, run_cases, second_look
from ._results import Hint, NotDone, checker, short_repr

# --- Exercise 1 · cross_attention(decoder_states, encoder_out, w_q, w_k, w_v) -----------------------

def _attend(q_in: Tensor, k_in: Tensor, v_in: Tensor, w: Sequence[Tensor], *, scale_dim: int | None = None,
            dim: int = -1, transpose_w: bool = True, scale_power: float = -0.5) -> tuple[Tensor, Tensor]:
    """Single-head attention, with one knob per typical mistake: ``(output, attn_weights)``."""
    w_q, w_k, w_v = (m.T if transpose_w else m for m in w)
    q, k, v = q_in @ w_q, k_in @ w_k, v_in @ w_v  # [B, T_q, d_k], [B, T_k, d_k], [B, T_k, d_v]
    scale_dim = q.shape[-1] if scale_dim is None else scale_dim
    attn_weights = torch.softmax(q @ k.transpose(-2, -1) * scale_dim ** scale_power, dim=dim)  # [B, T_q, T_k]
    return attn_weights @ v, attn_weights


def cross_attention_reference(decoder_states: Tensor, encoder_out: Tensor, w_q: Tensor, w_k: Tensor,
                              w_v: Tensor) -> tuple[Tensor, Tensor]:
    """``(output [B, T_tgt, d_v], attn_weights [B, T_tgt, T_src])``: queries from the decoder, keys and values
    from the encoder; weights stored as ``nn.Linear`` stores them."""
    q, k, v = decoder_states @ w_q.T, encoder_out @ w_k.T, encoder_out @ w_v.T
    return F.scaled_dot_product_attention(q, k, v), _attend(decoder_states, encoder_out, encoder_out,
                                                            (w_q, w_k, w_v))[1]


_SHAPES = [  # name, B, T_tgt, T_src, d_model, d_k, d_v, dtype
    ("B=2, T_tgt=4, T_src=7", 2, 4, 7, 8, 8, 8, torch.float32),
    ("batch of 1, target longer than source (T_tgt=6, T_src=3)", 1, 6, 3, 8, 4, 6, torch.float32),
    ("equal lengths T_tgt = T_src = 5", 2, 5, 5, 6, 6, 6, torch.float32),
    ("float64, T_tgt=3, T_src=9, d_k=4", 2, 3, 9, 12, 4, 4, torch.float64),
]
ANOTHER_SOURCE = "the same decoder states and weights as the first case, another source"


def _cross_cases() -> list[Case]:
    gen = torch.Generator().manual_seed(30)
    cases = []
    for name, b, t_tgt, t_src, d, d_k, d_v, dtype in _SHAPES:
        dec, enc, enc2 = (torch.randn(b, t, d, generator=gen, dtype=dtype) for t in (t_tgt, t_src, t_src))
        w = [torch.randn(n, d, generator=gen, dtype=dtype) / math.sqrt(d) for n in (d_k, d_k, d_v)]
        info = {"t_tgt": t_tgt, "t_src": t_src, "d_model": d, "d_k": d_k, "d_v": d_v}
        cases.append(Case(name, (dec, enc, *w), info=info))
        if len(cases) == 1:
            cases.append(Case(ANOTHER_SOURCE, (dec, enc2, *w), info=info))
    return cases


CROSS_CASES = _cross_cases()
_FIRST_SOURCE = CROSS_CASES[0].args[1]
SELF_HINT = ("the keys and values came from decoder_states, so this is self-attention by mistake: compute "
             "k and v from encoder_out (only q comes from decoder_states)")
SOURCE_LENGTH_HINT = ("your output has the source's length: one row per source position (T_src = {t_src}), but the "
                      "decoder needs one row per target position (T_tgt = {t_tgt}) to add it to its own states. "
                      "Queries come from decoder_states, keys and values from encoder_out: you have them the other "
                      "way round")
CROSS_MISTAKES = [
    Mistake("source_kv_reused", "your output for another source is the output for the first one: the keys and values "
            "were computed once and reused (a global, a default argument or a cache). Project encoder_out with w_k "
            "and w_v on every call",
            lambda dec, enc, *w: cross_attention_reference(dec, _FIRST_SOURCE, *w),
            applies_when=lambda case: case.name == ANOTHER_SOURCE),
    Mistake("kv_from_decoder", SELF_HINT, lambda dec, enc, *w: _attend(dec, dec, dec, w)),
    Mistake("queries_from_source", "queries and keys/values are swapped: q comes from decoder_states (one output "
            "row per target position), k and v from encoder_out",
            lambda dec, enc, *w: _attend(enc, dec, dec, w)),
    Mistake("values_from_decoder", "the keys come from encoder_out but the values from decoder_states: each value "
            "must belong to its key, so v comes from encoder_out too", lambda dec, enc, *w: _attend(dec, enc, dec, w)),
    Mistake("keys_from_decoder", "the keys come from decoder_states: k, like v, comes from encoder_out",
            lambda dec, enc, *w: _attend(dec, dec, enc, w)),
    Mistake("weights_transposed", "your weights are [B, T_src, T_tgt]; they should be [B, T_tgt, T_src]: one row per "
            "target position (query), one column per source position",
            lambda dec, enc, *w: (lambda out, a: (out, a.transpose(-2, -1)))(*_attend(dec, enc, enc, w))),
    Mistake("no_scale", "the scores are not scaled: divide q @ k^T by sqrt(d_k)",
            lambda dec, enc, *w: _attend(dec, enc, enc, w, scale_dim=1)),
    Mistake("softmax_over_targets", "the softmax runs over the target positions (dim=-2): for each target position "
            "the weights over the *source* must sum to 1, so use softmax(..., dim=-1)",
            lambda dec, enc, *w: _attend(dec, enc, enc, w, dim=-2)),
    Mistake("scale_by_d_model", "you scaled by 1/sqrt(d_model) = 1/sqrt({d_model}); the dot products have d_k = {d_k} "
            "terms: divide by sqrt(d_k)", lambda dec, enc, *w: _attend(dec, enc, enc, w, scale_dim=dec.shape[-1])),
    Mistake("scale_by_d_v", "you scaled by 1/sqrt(d_v), the values' width; the scale is 1/sqrt(d_k), the width of "
            "q and k (q.shape[-1])", lambda dec, enc, *w: _attend(dec, enc, enc, w, scale_dim=w[2].shape[0])),
    Mistake("scale_multiplied", "you multiplied the scores by sqrt(d_k); divide them by it",
            lambda dec, enc, *w: _attend(dec, enc, enc, w, scale_power=0.5)),
    Mistake("weights_not_transposed", "the weights are stored as nn.Linear stores them, [out_features, "
            "in_features]: compute x @ w_q.T, not x @ w_q",
            lambda dec, enc, *w: _attend(dec, enc, enc, w, transpose_w=False)),
    Mistake("returned_scores", "the second item is the scaled scores before the softmax; return the weights "
            "(softmax over the source), whose rows sum to 1",
            lambda dec, enc, w_q, w_k, w_v: (
                cross_attention_reference(dec, enc, w_q, w_k, w_v)[0],
                (dec @ w_q.T) @ (enc @ w_k.T).transpose(-2, -1) / math.sqrt(w_q.shape[0]))),
    # by shape alone: the same two mistakes with something else wrong as well
    Mistake("output_per_source_position", SOURCE_LENGTH_HINT,
            lambda dec, enc, *w: _attend(enc, dec, dec, w, scale_dim=1), match="shape"),
    Mistake("target_attends_to_itself", "your weights are T_tgt x T_tgt: the target attended to itself; " + SELF_HINT,
            lambda dec, enc, *w: _attend(dec, dec, dec, w, scale_dim=1), match="shape"),
]
_CROSS_TIPS = [("RuntimeError", "(A projection is x @ w_q.T: the weights are stored as nn.Linear stores them, "
                                "[out_features, in_features]. The scores are q @ k.transpose(-2, -1).)")]


@checker("Exercise 1 · cross_attention(decoder_states, encoder_out, w_q, w_k, w_v)")
def check_cross_attention(cross_attention: Callable[..., Any]) -> str:
    """``cross_attention(decoder_states [B, T_tgt, d], encoder_out [B, T_src, d], w_q, w_k, w_v)`` ->
    ``(output [B, T_tgt, d_v], attn_weights [B, T_tgt, T_src])``; weights stored as ``nn.Linear`` does."""
    return run_cases(cross_attention, reference=cross_attention_reference, cases=CROSS_CASES, mistakes=CROSS_MISTAKES,
                     what="cross_attention(decoder_states, encoder_out, w_q, w_k, w_v)",
                     outputs=("output", "attn_weights"), error_tips=_CROSS_TIPS,
                     passed="matches F.scaled_dot_product_attention with queries from the decoder and keys/values "
                            "from the encoder: T_tgt < T_src, T_tgt > T_src, equal lengths, a batch of 1 and float64")


# --- Exercise 2 · predict, then verify: every shape -------------------------------------------------
B, H, T_TGT, T_SRC, D_MODEL = 3, 4, 6, 11, 64
D_HEAD = D_MODEL // H
_SYMBOLS = {B: "B", H: "H", T_TGT: "T_tgt", T_SRC: "T_src", D_MODEL: "d_model", D_HEAD: "d_head"}
_REASONS = {
    "q_shape": "Q is projected from the decoder states, one row per target position, and each head gets "
               "d_head = d_model / H features",
    "kv_shape": "K and V are projected from the encoder output, one row per source position, d_head features "
                "per head",
    "weights_shape": "one row per target position (query) and one column per source position (key), per head; "
                     "each row sums to 1 over the source",
    "output_shape": "the heads are merged back (H x d_head = d_model) and there is one row per query, so the "
                    "output has the target's length and can be added to the decoder states",
}
_NOT_MOVED = "is the view before .transpose(1, 2): in [B, H, T, d_head] the head axis comes before the positions"
SHAPE_MISTAKES = {
    "q_shape": [
        Mistake("q_from_source", "Q comes from the decoder states: one row per target position (T_tgt = 6), not "
                "per source position", (B, H, T_SRC, D_HEAD)),
        Mistake("q_head_axis_not_moved", "[B, T_tgt, H, d_head] " + _NOT_MOVED, (B, T_TGT, H, D_HEAD)),
        Mistake("q_full_width_per_head", "each head gets only d_head = d_model / H = 16 of the 64 features",
                (B, H, T_TGT, D_MODEL)),
        Mistake("q_not_split", "that is Q before the split into heads; after it each head has its own d_head = 16 "
                "features: [B, H, T_tgt, d_head]", (B, T_TGT, D_MODEL)),
    ],
    "kv_shape": [
        Mistake("kv_from_target", "K and V are projected from the encoder output: one row per source position "
                "(T_src = 11)", (B, H, T_TGT, D_HEAD)),
        Mistake("kv_head_axis_not_moved", "[B, T_src, H, d_head] " + _NOT_MOVED, (B, T_SRC, H, D_HEAD)),
        Mistake("kv_full_width_per_head", "each head gets only d_head = d_model / H = 16 of the 64 features",
                (B, H, T_SRC, D_MODEL)),
        Mistake("kv_not_split", "that is K before the split into heads: [B, H, T_src, d_head]", (B, T_SRC, D_MODEL)),
    ],
    "weights_shape": [
        Mistake("weights_rows_are_source", "rows are queries (target positions) and columns keys (source "
                "positions): [B, H, T_tgt, T_src]", (B, H, T_SRC, T_TGT)),
        Mistake("weights_averaged_over_heads", "nn.MultiheadAttention averages the weights over the heads by "
                "default; cl.MultiHeadAttention returns one matrix per head", (B, T_TGT, T_SRC)),
        Mistake("weights_target_by_target", "the weights have one column per key, and the keys come from the "
                "source: T_src = 11 columns", (B, H, T_TGT, T_TGT)),
        Mistake("weights_d_head_columns", "that is the shape of each head's context (weights @ V); the weights have "
                "one column per source position", (B, H, T_TGT, D_HEAD)),
    ],
    "output_shape": [
        Mistake("output_source_length", "the output has one row per query, and the queries come from the decoder: "
                "T_tgt rows, so it can be added to the decoder states", (B, T_SRC, D_MODEL)),
        Mistake("output_not_merged", "the heads are merged back and projected: [B, T_tgt, d_model]",
                (B, H, T_TGT, D_HEAD)),
        Mistake("output_d_head", "the heads are merged back: H x d_head = 4 x 16 = d_model = 64", (B, T_TGT, D_HEAD)),
    ],
}


def _named(shape: tuple[int, ...]) -> str:
    return "[" + ", ".join(_SYMBOLS.get(n, str(n)) for n in shape) + "]"


def true_shapes() -> dict[str, tuple[int, ...]]:
    """The four shapes, measured on ``cl.MultiHeadAttention(64, 4)``."""
    gen = torch.Generator().manual_seed(31)
    mha = MultiHeadAttention(D_MODEL, H)
    dec, enc = torch.randn(B, T_TGT, D_MODEL, generator=gen), torch.randn(B, T_SRC, D_MODEL, generator=gen)
    with torch.no_grad():
        q = mha.split_heads(mha.q_proj(dec))  # [B, H, T_tgt, d_head]
        k, v = mha.project_source(enc)  # [B, H, T_src, d_head]
        output, attn_weights = mha(dec, enc, need_weights=True)
    assert k.shape == v.shape
    return {"q_shape": tuple(q.shape), "kv_shape": tuple(k.shape), "weights_shape": tuple(attn_weights.shape),
            "output_shape": tuple(output.shape)}


@checker("Exercise 2 · predict: every shape")
def check_shapes(q_shape: Any, kv_shape: Any, weights_shape: Any, output_shape: Any) -> str:
    """Predicted shapes in ``cl.MultiHeadAttention(64, 4)(decoder_states [3, 6, 64], encoder_out [3, 11, 64])``;
    every wrong entry is explained axis by axis, with its mistake's hint where one is named."""
    guesses = {name: expect_shape(value, name) for name, value in
               (("q_shape", q_shape), ("kv_shape", kv_shape), ("weights_shape", weights_shape),
                ("output_shape", output_shape))}
    actual = true_shapes()
    wrong, named = [], []
    for name, shape in actual.items():
        if guesses[name] == shape:
            continue
        mistake = next((m for m in SHAPE_MISTAKES[name] if same(guesses[name], m.wrong)), None)
        named += [mistake] if mistake is not None else []
        wrong.append(f"{name}: you wrote {shape_str(guesses[name])} = {_named(guesses[name])}, but it is "
                     f"{shape_str(shape)} = {_named(shape)}: {mistake.hint if mistake else _REASONS[name]}")
    if wrong:
        raise Hint(f"{len(wrong)} of 4 wrong. " + " | ".join(wrong), mistake=named[0].name if named else None)
    return ("Q " + ", K and V ".join(f"{shape_str(actual[n])} = {_named(actual[n])}" for n in ("q_shape", "kv_shape"))
            + f", weights {shape_str(actual['weights_shape'])} = {_named(actual['weights_shape'])}, output "
            f"{shape_str(actual['output_shape'])} = {_named(actual['output_shape'])}. T_src appears only in K, V "
            "and the weights' columns: the output has the target's length")


# --- Exercise 3 · read_alignment(attn_weights, source_tokens) ---------------------------------------

def example_alignment() -> tuple[Tensor, list[str], list[str]]:
    """A cross-attention matrix ``[T_tgt=7, T_src=6]`` with its target and source tokens."""
    source = ["I", "saw", "the", "red", "car", "<eos>"]
    target = ["j'", "ai", "vu", "la", "voiture", "rouge", "<eos>"]
    aligned = [0, 1, 1, 2, 4, 3, 5]  # source position each target token translates
    scores = 0.8 * torch.randn(7, 6, generator=torch.Generator().manual_seed(32))  # [T_tgt, T_src]
    scores[torch.arange(7), aligned] += 3.0
    return torch.softmax(scores, dim=-1), target, source


def read_alignment_reference(attn_weights: Tensor, source_tokens: list[str]) -> list[str]:
    return [source_tokens[j] for j in attn_weights.argmax(dim=-1).tolist()]  # one token per row


def _alignment_cases() -> list[Case]:
    gen = torch.Generator().manual_seed(33)
    weights, _, source = example_alignment()
    cases = [Case("the example: 7 target tokens, 6 source tokens", (weights, source), square=False,
                  info={"t_tgt": 7, "t_src": 6})]
    for name, t_tgt, t_src, dtype in (("4 target tokens, 9 source tokens", 4, 9, torch.float32),
                                      ("equal lengths, 5 and 5", 5, 5, torch.float32),
                                      ("float64, 8 target tokens, 3 source tokens", 8, 3, torch.float64)):
        scores = 3 * torch.randn(t_tgt, t_src, generator=gen, dtype=dtype)
        cases.append(Case(name, (torch.softmax(scores, dim=-1), [f"w{j}" for j in range(t_src)]),
                          square=t_tgt == t_src, info={"t_tgt": t_tgt, "t_src": t_src}))
    return cases


ALIGNMENT_CASES = _alignment_cases()
AXIS_HINT = ("you took the argmax over the target axis (dim=0), which gives one target position per source "
             "token. Each *row* is one target token's weights over the source: use attn_weights.argmax(dim=-1)")
_MAX_VALUES = ("you used the largest *weights* as indices: .max(dim=-1) returns (values, indices), and [0] is the "
               "values. Take .indices (or [1]), or use .argmax(dim=-1)")
ALIGNMENT_MISTAKES = [
    Mistake("argmax_over_targets", AXIS_HINT, lambda w, s: [s[i] for i in w.argmax(dim=0).tolist()]),
    Mistake("argmin", "you picked each target token's *weakest* source token (argmin); use argmax",
            lambda w, s: [s[j] for j in w.argmin(dim=-1).tolist()]),
    Mistake("returned_indices_tensor", "you returned the indices as a tensor; return a list of source tokens (str): "
            "source_tokens[j] for each index j", lambda w, s: w.argmax(dim=-1)),
    Mistake("returned_indices", "return the tokens themselves (source_tokens[j], a str), not their indices",
            lambda w, s: w.argmax(dim=-1).tolist()),
    Mistake("max_values_as_indices", _MAX_VALUES, lambda w, s: [s[j] for j in w.max(dim=-1)[0].tolist()]),
    Mistake("max_value_tensors_as_indices", _MAX_VALUES, lambda w, s: [s[j] for j in w.max(dim=-1)[0]]),
    Mistake("max_values_rounded_to_indices", "every target token got source token 0: if you used the largest "
            "*weights* (.max(dim=-1)[0], all below 1) as indices, take .indices (or [1]), or use .argmax(dim=-1)",
            lambda w, s: [s[int(j)] for j in w.max(dim=-1)[0]]),
    Mistake("one_per_source_token", "you returned {t_src} tokens, one per *source* position; return one per target "
            "position (T_tgt = {t_tgt}, the rows of attn_weights): attn_weights.argmax(dim=-1)",
            lambda w, s: [s[0]] * w.shape[1], match="shape"),
]


def _as_tokens(result: Any) -> Any:
    """A list of str subclasses (numpy's str_) read as a list of str."""
    if isinstance(result, (list, tuple)) and all(isinstance(t, str) for t in result):
        return [str(t) for t in result]
    return result


def _explain_alignment(result: Any, case: Case) -> Hint | None:
    weights, source = case.args
    expected = read_alignment_reference(weights, source)
    if not isinstance(result, (list, tuple)):
        return None
    where = f"case '{case.name}': "
    if any(not isinstance(t, str) for t in result):
        return Hint(where + "return the tokens themselves (source_tokens[j], a str), not their indices or tensors; "
                    f"got {short_repr(list(result), 80)}", mistake="not_tokens", case=case.name)
    if len(result) != len(expected):
        return Hint(where + f"{len(result)} tokens; expected one per target position ({len(expected)})",
                    mistake="wrong_length", case=case.name)
    first = next((i for i, (a, e) in enumerate(zip(result, expected)) if a != e), None)
    if first is None:
        return None
    return Hint(where + f"target position {first} attends most to {expected[first]!r} (weight "
                f"{weights[first].max().item():.2f}), you said {result[first]!r}", case=case.name)


@checker("Exercise 3 · read_alignment(attn_weights, source_tokens)")
def check_read_alignment(read_alignment: Callable[[Tensor, list[str]], Any]) -> str:
    """``read_alignment(attn_weights [T_tgt, T_src], source_tokens)`` -> one source token per target position."""
    try:
        run_cases(map_result(read_alignment, _as_tokens), reference=read_alignment_reference, cases=ALIGNMENT_CASES,
                  mistakes=ALIGNMENT_MISTAKES, what="read_alignment(attn_weights, source_tokens)",
                  error_tips=[("IndexError", "Perhaps " + AXIS_HINT)])
    except Hint as hint:
        raise second_look(hint, read_alignment, ALIGNMENT_CASES, _explain_alignment) from None
    return ("one source token per target token, from each row's largest weight: 'voiture' -> 'car', "
            "'rouge' -> 'red' (4 cases, T_tgt < T_src, T_tgt > T_src, equal lengths)")


# --- Exercise 4 · which call is secretly self-attention? --------------------------------------------

def _layers(seed: int, device: torch.device | str | None = None) -> dict[str, Callable[[Tensor, Tensor], Tensor]]:
    """Post-norm cross-attention blocks ``(decoder_states, encoder_out) -> [B, T_tgt, 16]``: two real, one not."""
    with torch.random.fork_rng(devices=[]):  # leave the learner's random stream untouched
        torch.random.default_generator.manual_seed(seed)
        a, b, c = (MultiHeadAttention(16, 4).to(device) for _ in range(3))
    norm = nn.LayerNorm(16, device=device)
    return {"a": lambda dec, enc: norm(dec + a(dec, enc)[0]),
            "b": lambda dec, enc: norm(dec + b(dec, enc)[0]),
            "c": lambda dec, enc: norm(dec + c(dec)[0])}  # the bug: the source is never used


def suspect_layers(device: torch.device | str | None = None) -> dict[str, Callable[[Tensor, Tensor], Tensor]]:
    """Three decoder sub-layers ``layer(decoder_states [B, T_tgt, 16], encoder_out [B, T_src, 16])``; one of
    them calls its attention as self-attention by mistake."""
    return _layers(34, device)


def _other_source(encoder_out: Tensor) -> Tensor:
    gen = torch.Generator().manual_seed(40)
    return torch.randn(encoder_out.shape, generator=gen, dtype=encoder_out.dtype).to(encoder_out.device)


def depends_on_source_reference(layer: Callable[[Tensor, Tensor], Tensor], decoder_states: Tensor,
                                encoder_out: Tensor) -> bool:
    with torch.no_grad():
        return not torch.equal(layer(decoder_states, encoder_out), layer(decoder_states, _other_source(encoder_out)))


def _depends_cases() -> list[Case]:
    layers, weak_mha, with_positions = _layers(35), _layers(36)["a"], _layers(39)["a"]
    positions = torch.randn(7, 16, generator=torch.Generator().manual_seed(39))  # [T_src, 16]
    gen = torch.Generator().manual_seed(37)
    inputs = [(torch.randn(2, 5, 16, generator=gen), torch.randn(2, 7, 16, generator=gen)) for _ in range(3)]
    gen_p = torch.Generator().manual_seed(38)
    first = (torch.randn(2, 5, 16, generator=gen_p), torch.randn(2, 7, 16, generator=gen_p))
    return [
        Case("cross-attention whose source carries positions, mha(decoder_states, encoder_out + pos)",
             (lambda dec, enc: with_positions(dec, enc + positions), *first)),
        Case("cross-attention, mha(decoder_states, encoder_out)", (layers["a"], *inputs[0])),
        Case("self-attention by mistake, mha(decoder_states)", (layers["c"], *inputs[1])),
        Case("cross-attention with a small effect (output moves by about 1e-3)",
             (lambda dec, enc: dec + 1e-3 * weak_mha(dec, enc), *inputs[2])),
    ]


DEPENDS_CASES = _depends_cases()


def _differs(layer: Callable[[Tensor, Tensor], Tensor], dec_a: Tensor, enc_a: Tensor, dec_b: Tensor, enc_b: Tensor,
             **tolerance: float) -> bool:
    with torch.no_grad():
        return not torch.allclose(layer(dec_a, enc_a), layer(dec_b, enc_b), **tolerance)


DEPENDS_MISTAKES = [
    Mistake("too_tolerant", "the output moves by about 1e-3 when the source changes and you said it does not: your "
            "comparison is too tolerant; use torch.allclose with its default tolerances (or torch.equal)",
            lambda layer, dec, enc: _differs(layer, dec, enc, dec, _other_source(enc), atol=1e-2)),
    Mistake("only_reordered", "you judged a real cross-attention layer independent of the source. If you only "
            "reordered the source positions (e.g. encoder_out.flip(1)): attention is a weighted sum over the source, "
            "so moving keys together with their values changes nothing. Give the layer a source with different "
            "values instead, e.g. torch.randn_like(encoder_out)",
            lambda layer, dec, enc: _differs(layer, dec, enc, dec, enc.flip(1))),
    Mistake("never_sees_a_change", "you said False for a layer that reads the source: your test can never see a "
            "change. Comparing with a copy of encoder_out, or comparing shapes, gives the same either way: call the "
            "layer with a source of different content (torch.randn_like(encoder_out)) and compare the outputs' "
            "values", lambda layer, dec, enc: _differs(layer, dec, enc, dec, enc.clone())),
    Mistake("true_for_self_attention", "you said True for the layer that never reads encoder_out. If you changed "
            "decoder_states too, the output changes for that reason; and `is`, `!=` between objects or id() always "
            "differ. Keep decoder_states, change only encoder_out, and compare the two outputs' values",
            lambda layer, dec, enc: _differs(layer, dec, enc, torch.randn_like(dec), enc)),
    Mistake("elementwise_comparison", "you returned the element-wise comparison, a tensor; return one True or "
            "False: reduce it with .any(), or use torch.allclose / torch.equal",
            lambda layer, dec, enc: layer(dec, enc) != layer(dec, _other_source(enc)), match="shape"),
]


def _as_bool(answer: Any) -> Any:
    """A one-element bool tensor or a numpy bool read as a Python bool."""
    if isinstance(answer, Tensor) and answer.numel() == 1 and answer.dtype == torch.bool:
        return bool(answer)
    return bool(answer) if isinstance(answer, np.bool_) else answer


@checker("Exercise 4 · depends_on_source(layer, decoder_states, encoder_out)")
def check_depends_on_source(depends_on_source: Callable[..., Any]) -> str:
    """``depends_on_source(layer, decoder_states, encoder_out) -> bool`` on hidden layers."""
    run_cases(map_result(depends_on_source, _as_bool), reference=depends_on_source_reference, cases=DEPENDS_CASES,
              mistakes=DEPENDS_MISTAKES, what="depends_on_source(layer, decoder_states, encoder_out)")
    return "tells real cross-attention from self-attention by mistake, even when the source's effect is small"


SUSPECT_MISTAKES = [Mistake(f"layer_{name}_reads_the_source", "it really reads encoder_out: its output changes "
                            "when the source changes", name) for name in ("a", "b")]


@checker("Exercise 4 · the suspect")
def check_suspect(secretly_self: Any) -> str:
    """Which of ``suspect_layers()`` ("a", "b" or "c") is secretly self-attention."""
    if secretly_self is None:
        raise NotDone("not done yet: secretly_self is still None")
    layers = suspect_layers()
    if not isinstance(secretly_self, str) or secretly_self.strip().lower() not in layers:
        raise Hint(f"secretly_self should be one letter, 'a', 'b' or 'c'; got {short_repr(secretly_self)}",
                   mistake="wrong_type")
    gen = torch.Generator().manual_seed(38)
    dec, enc, enc2 = torch.randn(2, 5, 16, generator=gen), torch.randn(2, 7, 16, generator=gen), \
        torch.randn(2, 7, 16, generator=gen)
    with torch.no_grad():
        change = {n: (f(dec, enc) - f(dec, enc2)).abs().max().item() for n, f in layers.items()}
    answer = secretly_self.strip().lower()
    mistake = next((m for m in SUSPECT_MISTAKES if m.wrong == answer), None)
    if mistake is not None:
        raise Hint(f"layer {answer}: {mistake.hint} (by up to {change[answer]:.2f})", mistake=mistake.name)
    return ("layer " + answer + ": its output is identical for two different sources (largest change "
            + ", ".join(f"{n}: {c:.2f}" for n, c in change.items()) + "), so it attends only to decoder_states")


MISTAKES = {
    "check_cross_attention": CROSS_MISTAKES,
    **{f"check_shapes:{name}": mistakes for name, mistakes in SHAPE_MISTAKES.items()},
    "check_read_alignment": ALIGNMENT_MISTAKES,
    "check_depends_on_source": DEPENDS_MISTAKES,
    "check_suspect": SUSPECT_MISTAKES,
}
CASES = {"check_cross_attention": CROSS_CASES, "check_read_alignment": ALIGNMENT_CASES,
         "check_depends_on_source": DEPENDS_CASES}
REFERENCES = {"check_cross_attention": cross_attention_reference, "check_read_alignment": read_alignment_reference,
              "check_depends_on_source": depends_on_source_reference}
