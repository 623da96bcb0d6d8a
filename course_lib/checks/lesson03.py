"""Checkers for the exercises of lesson 03 (cross-attention).

References: ``F.scaled_dot_product_attention`` and ``cl.MultiHeadAttention``. Each typical wrong answer
(queries and keys/values swapped, the decoder state used as keys and values, no scale, softmax over the
target axis, argmax over the wrong axis, a source test that only reorders the source) is computed and
named in its hint.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._checks import shape_str
from ..attention import MultiHeadAttention
from ._harness import Hint, NotDone, call_learner, checker, compare, expect_shape, expect_tensor, is_close

# --- Exercise 1 · cross_attention(decoder_states, encoder_out, w_q, w_k, w_v) -----------------------
_CASES = [  # name, B, T_tgt, T_src, d_model, d_k, d_v, dtype
    ("B=2, T_tgt=4, T_src=7", 2, 4, 7, 8, 8, 8, torch.float32),
    ("batch of 1, target longer than source (T_tgt=6, T_src=3)", 1, 6, 3, 8, 4, 6, torch.float32),
    ("equal lengths T_tgt = T_src = 5", 2, 5, 5, 6, 6, 6, torch.float32),
    ("float64, T_tgt=3, T_src=9, d_k=4", 2, 3, 9, 12, 4, 4, torch.float64),
]
SELF_HINT = ("the keys and values came from decoder_states, so this is self-attention by mistake: compute "
             "k and v from encoder_out (only q comes from decoder_states)")


def _attend(q_in: Tensor, k_in: Tensor, v_in: Tensor, w: list[Tensor], *, scale_dim: int | None = None,
            dim: int = -1, transpose_w: bool = True) -> tuple[Tensor, Tensor]:
    """Single-head attention, optionally with a typical mistake: ``(output, attn_weights)``."""
    w_q, w_k, w_v = (m.T if transpose_w else m for m in w)
    q, k, v = q_in @ w_q, k_in @ w_k, v_in @ w_v  # [B, T_q, d_k], [B, T_k, d_k], [B, T_k, d_v]
    scale_dim = q.shape[-1] if scale_dim is None else scale_dim
    attn_weights = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(scale_dim), dim=dim)  # [B, T_q, T_k]
    return attn_weights @ v, attn_weights


def _pair(result: Any, what: str) -> tuple[Tensor, Tensor]:
    if isinstance(result, Tensor):
        raise Hint(f"{what} returned one tensor {shape_str(result.shape)}; return the pair (output, attn_weights)")
    if not isinstance(result, (tuple, list)) or len(result) != 2 or not all(isinstance(r, Tensor) for r in result):
        raise Hint(f"{what} should return a pair of tensors (output, attn_weights); got {type(result).__name__}")
    return result[0], result[1]


@checker("Exercise 1 · cross_attention")
def check_cross_attention(cross_attention: Callable[..., Any]) -> str:
    """``cross_attention(decoder_states [B, T_tgt, d], encoder_out [B, T_src, d], w_q, w_k, w_v)`` ->
    ``(output [B, T_tgt, d_v], attn_weights [B, T_tgt, T_src])``; weights stored as ``nn.Linear`` does."""
    gen = torch.Generator().manual_seed(30)
    what = "cross_attention(decoder_states, encoder_out, w_q, w_k, w_v)"
    for name, b, t_tgt, t_src, d, d_k, d_v, dtype in _CASES:
        dec, enc, enc2 = (torch.randn(b, t, d, generator=gen, dtype=dtype) for t in (t_tgt, t_src, t_src))
        w = [torch.randn(n, d, generator=gen, dtype=dtype) / math.sqrt(d) for n in (d_k, d_k, d_v)]
        args = [dec, enc, *w]
        try:
            result = call_learner(cross_attention, *(a.clone() for a in args), what=what)
        except Hint as hint:
            tip = (" (A projection is x @ w_q.T: the weights are stored as nn.Linear stores them, [out_features, "
                   "in_features]. The scores are q @ k.transpose(-2, -1).)") if "RuntimeError" in str(hint) else ""
            raise Hint(f"case '{name}': {hint}{tip}") from None
        out, attn = _pair(result, what)
        if tuple(out.shape) == (b, t_src, d_v) and t_src != t_tgt:
            raise Hint(f"case '{name}': your output has the source's length: {shape_str(out.shape)} has one row per "
                       f"source position (T_src = {t_src}), but the decoder needs one row per target position "
                       f"(T_tgt = {t_tgt}) to add it to its own states. Queries come from decoder_states, keys and "
                       "values from encoder_out: you have them the other way round")
        if tuple(attn.shape) == (b, t_tgt, t_tgt) and t_src != t_tgt:
            raise Hint(f"case '{name}': your weights are T_tgt x T_tgt {shape_str(attn.shape)}: the target attended "
                       "to itself: " + SELF_HINT)
        if tuple(attn.shape) == (b, t_src, t_tgt) and t_src != t_tgt:
            raise Hint(f"case '{name}': your weights are [B, T_src, T_tgt] {shape_str(attn.shape)}; they should "
                       "be [B, T_tgt, T_src]: one row per target position (query), one column per source position")
        out = expect_tensor(out, f"the output in case '{name}'", (b, t_tgt, d_v))
        attn = expect_tensor(attn, f"attn_weights in case '{name}'", (b, t_tgt, t_src))
        out2 = _pair(call_learner(cross_attention, dec.clone(), enc2.clone(), *(m.clone() for m in w), what=what),
                     what)[0]
        if is_close(out, out2):
            raise Hint(f"case '{name}': your output does not change when the source changes: " + SELF_HINT)
        ref_out = F.scaled_dot_product_attention(dec @ w[0].T, enc @ w[1].T, enc @ w[2].T)  # [B, T_tgt, d_v]
        ref_attn = _attend(dec, enc, enc, w)[1]  # [B, T_tgt, T_src]
        mistakes = [
            (_attend(dec, enc, enc, w, scale_dim=1), "the scores are not scaled: divide q @ k^T by sqrt(d_k)"),
            (_attend(dec, enc, enc, w, dim=-2), "the softmax runs over the target positions (dim=-2): for each "
                                                "target position the weights over the *source* must sum to 1, "
                                                "so use softmax(..., dim=-1)"),
        ]
        if d_k != d:
            mistakes.append((_attend(dec, enc, enc, w, scale_dim=d), f"you scaled by 1/sqrt(d_model) = 1/sqrt({d}); "
                             f"the dot products have d_k = {d_k} terms: divide by sqrt(d_k)"))
        if d_k == d_v == d:
            mistakes.append((_attend(dec, enc, enc, w, transpose_w=False), "the weights are stored as nn.Linear "
                             "stores them, [out_features, in_features]: compute x @ w_q.T, not x @ w_q"))
        if t_src == t_tgt:
            mistakes += [
                (_attend(enc, dec, dec, w), "queries and keys/values are swapped: q comes from decoder_states, k "
                                            "and v from encoder_out (here T_tgt = T_src, so the shape could not "
                                            "give it away)"),
                (_attend(dec, enc, dec, w), "the keys come from encoder_out but the values from decoder_states: "
                                            "each value must belong to its key, so v comes from encoder_out too"),
                (_attend(dec, dec, enc, w), "the keys come from decoder_states: k, like v, comes from encoder_out"),
            ]
        compare(attn, ref_attn, what="attn_weights", case=name, mistakes=[(m[1], h) for m, h in mistakes])
        compare(out, ref_out, what="the output", case=name, mistakes=[(m[0], h) for m, h in mistakes])
    return ("matches F.scaled_dot_product_attention with queries from the decoder and keys/values from the "
            "encoder: T_tgt < T_src, T_tgt > T_src, equal lengths, a batch of 1 and float64")


# --- Exercise 2 · predict, then verify: every shape -------------------------------------------------
B, H, T_TGT, T_SRC, D_MODEL = 3, 4, 6, 11, 64
_SYMBOLS = {B: "B", H: "H", T_TGT: "T_tgt", T_SRC: "T_src", D_MODEL: "d_model", D_MODEL // H: "d_head"}
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


def _named(shape: tuple[int, ...]) -> str:
    return "[" + ", ".join(_SYMBOLS.get(n, str(n)) for n in shape) + "]"


@checker("Exercise 2 · predict every shape")
def check_shapes(q_shape: Any, kv_shape: Any, weights_shape: Any, output_shape: Any) -> str:
    """Predicted shapes in ``cl.MultiHeadAttention(64, 4)(decoder_states [3, 6, 64], encoder_out [3, 11, 64])``."""
    guesses = {name: expect_shape(value, name) for name, value in
               (("q_shape", q_shape), ("kv_shape", kv_shape), ("weights_shape", weights_shape),
                ("output_shape", output_shape))}
    gen = torch.Generator().manual_seed(31)
    mha = MultiHeadAttention(D_MODEL, H)
    dec, enc = torch.randn(B, T_TGT, D_MODEL, generator=gen), torch.randn(B, T_SRC, D_MODEL, generator=gen)
    with torch.no_grad():
        q = mha.split_heads(mha.q_proj(dec))  # [B, H, T_tgt, d_head]
        k, v = mha.project_source(enc)  # [B, H, T_src, d_head]
        output, attn_weights = mha(dec, enc, need_weights=True)
    assert k.shape == v.shape
    actual = {"q_shape": tuple(q.shape), "kv_shape": tuple(k.shape), "weights_shape": tuple(attn_weights.shape),
              "output_shape": tuple(output.shape)}
    wrong = [f"{name}: you wrote {shape_str(guesses[name])} = {_named(guesses[name])}, but it is "
             f"{shape_str(shape)} = {_named(shape)}: {_REASONS[name]}" for name, shape in actual.items()
             if guesses[name] != shape]
    if wrong:
        note = (" (nn.MultiheadAttention averages the weights over the heads by default; cl.MultiHeadAttention "
                "returns one matrix per head)") if guesses["weights_shape"] == (B, T_TGT, T_SRC) else ""
        raise Hint(f"{len(wrong)} of 4 wrong. " + " | ".join(wrong) + note)
    return ("Q " + ", K and V ".join(f"{shape_str(actual[n])} = {_named(actual[n])}" for n in ("q_shape", "kv_shape"))
            + f", weights {shape_str(actual['weights_shape'])} = {_named(actual['weights_shape'])}, output "
            f"{shape_str(actual['output_shape'])} = {_named(actual['output_shape'])}. T_src appears only in K, V "
            "and the weights' columns: the output has the target's length")


# --- Exercise 3 · read an alignment -----------------------------------------------------------------
def example_alignment() -> tuple[Tensor, list[str], list[str]]:
    """A cross-attention matrix ``[T_tgt=7, T_src=6]`` with its target and source tokens."""
    source = ["I", "saw", "the", "red", "car", "<eos>"]
    target = ["j'", "ai", "vu", "la", "voiture", "rouge", "<eos>"]
    aligned = [0, 1, 1, 2, 4, 3, 5]  # source position each target token translates
    scores = 0.8 * torch.randn(7, 6, generator=torch.Generator().manual_seed(32))  # [T_tgt, T_src]
    scores[torch.arange(7), aligned] += 3.0
    return torch.softmax(scores, dim=-1), target, source


def _alignment_cases() -> list[tuple[str, Tensor, list[str]]]:
    gen = torch.Generator().manual_seed(33)
    weights, _, source = example_alignment()
    cases = [("the example: 7 target tokens, 6 source tokens", weights, source)]
    for name, t_tgt, t_src, dtype in (("4 target tokens, 9 source tokens", 4, 9, torch.float32),
                                      ("equal lengths, 5 and 5", 5, 5, torch.float32),
                                      ("float64, 8 target tokens, 3 source tokens", 8, 3, torch.float64)):
        scores = 3 * torch.randn(t_tgt, t_src, generator=gen, dtype=dtype)
        cases.append((name, torch.softmax(scores, dim=-1), [f"w{j}" for j in range(t_src)]))
    return cases


@checker("Exercise 3 · read an alignment")
def check_read_alignment(read_alignment: Callable[[Tensor, list[str]], Any]) -> str:
    """``read_alignment(attn_weights [T_tgt, T_src], source_tokens)`` -> one source token per target position."""
    what = "read_alignment(attn_weights, source_tokens)"
    axis_hint = ("you took the argmax over the target axis (dim=0), which gives one target position per source "
                 "token. Each *row* is one target token's weights over the source: use attn_weights.argmax(dim=-1)")
    for name, weights, source in _alignment_cases():
        t_tgt, t_src = weights.shape
        try:
            result = call_learner(read_alignment, weights.clone(), list(source), what=what)
        except Hint as hint:
            tip = f". Perhaps {axis_hint}" if "IndexError" in str(hint) else ""
            raise Hint(f"case '{name}': {hint}{tip}") from None
        if isinstance(result, Tensor):
            raise Hint(f"case '{name}': you returned a tensor {shape_str(result.shape)}; return a list of source "
                       "tokens (str): source_tokens[j] for each index j")
        if not isinstance(result, (list, tuple)):
            raise Hint(f"case '{name}': {what} should return a list of str, but returned {type(result).__name__}")
        if any(not isinstance(token, str) for token in result):
            raise Hint(f"case '{name}': return the tokens themselves (source_tokens[j], a str), not their indices "
                       "or tensors")
        if len(result) == t_src != t_tgt:
            raise Hint(f"case '{name}': {len(result)} tokens, one per source position; " + axis_hint)
        if len(result) != t_tgt:
            raise Hint(f"case '{name}': {len(result)} tokens; expected one per target position ({t_tgt})")
        expected = [source[j] for j in weights.argmax(dim=-1).tolist()]
        if list(result) == expected:
            continue
        if t_tgt == t_src and list(result) == [source[i] for i in weights.argmax(dim=0).tolist()]:
            raise Hint(f"case '{name}': " + axis_hint)
        if list(result) == [source[j] for j in weights.argmin(dim=-1).tolist()]:
            raise Hint(f"case '{name}': you picked each target token's *weakest* source token (argmin); use argmax")
        first = next(i for i, (a, e) in enumerate(zip(result, expected)) if a != e)
        raise Hint(f"case '{name}': target position {first} attends most to {expected[first]!r} (weight "
                   f"{weights[first].max().item():.2f}), you said {result[first]!r}")
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


@checker("Exercise 4 · depends_on_source")
def check_depends_on_source(depends_on_source: Callable[..., Any]) -> str:
    """``depends_on_source(layer, decoder_states, encoder_out) -> bool`` on hidden layers."""
    layers = _layers(35)
    weak_mha = _layers(36)["a"]
    cases = [
        ("cross-attention, mha(decoder_states, encoder_out)", layers["a"], True,
         "you judged a real cross-attention layer independent of the source. If you only reordered the source "
         "positions (e.g. encoder_out.flip(1)): attention is a weighted sum over the source, so moving keys "
         "together with their values changes nothing. Give the layer a source with different values instead, "
         "e.g. torch.randn_like(encoder_out)"),
        ("self-attention by mistake, mha(decoder_states)", layers["c"], False,
         "you judged a layer that never reads encoder_out as depending on it: call the layer twice, with the "
         "same decoder_states and two different sources, and compare the two outputs"),
        ("cross-attention with a small effect (output moves by about 1e-3)",
         lambda dec, enc: dec + 1e-3 * weak_mha(dec, enc), True,
         "the output moves by about 1e-3 when the source changes and you said it does not: your comparison is "
         "too tolerant; use torch.allclose with its default tolerances (or torch.equal)"),
    ]
    gen = torch.Generator().manual_seed(37)
    for name, layer, expected, hint in cases:
        dec, enc = torch.randn(2, 5, 16, generator=gen), torch.randn(2, 7, 16, generator=gen)
        answer = call_learner(depends_on_source, layer, dec.clone(), enc.clone(),
                              what="depends_on_source(layer, decoder_states, encoder_out)")
        if isinstance(answer, Tensor) and answer.numel() == 1 and answer.dtype == torch.bool:
            answer = bool(answer)
        if not isinstance(answer, bool):
            raise Hint(f"depends_on_source should return True or False, but returned {type(answer).__name__}")
        if answer != expected:
            raise Hint(f"layer '{name}': {hint}")
    return "tells real cross-attention from self-attention by mistake, even when the source's effect is small"


@checker("Exercise 4 · the suspect")
def check_suspect(secretly_self: Any) -> str:
    """Which of ``suspect_layers()`` ("a", "b" or "c") is secretly self-attention."""
    if secretly_self is None:
        raise NotDone("not done yet: secretly_self is still None")
    layers = suspect_layers()
    if not isinstance(secretly_self, str) or secretly_self.strip().lower() not in layers:
        raise Hint(f"secretly_self should be one letter, 'a', 'b' or 'c'; got {secretly_self!r}")
    gen = torch.Generator().manual_seed(38)
    dec, enc, enc2 = torch.randn(2, 5, 16, generator=gen), torch.randn(2, 7, 16, generator=gen), \
        torch.randn(2, 7, 16, generator=gen)
    with torch.no_grad():
        change = {n: (f(dec, enc) - f(dec, enc2)).abs().max().item() for n, f in layers.items()}
    answer = secretly_self.strip().lower()
    if change[answer] > 0:
        raise Hint(f"layer {answer}'s output changes by up to {change[answer]:.2f} when the source changes: it "
                   "really reads encoder_out")
    return ("layer " + answer + ": its output is identical for two different sources (largest change "
            + ", ".join(f"{n}: {c:.2f}" for n, c in change.items()) + "), so it attends only to decoder_states")
