"""Checkers for the exercises of lesson 01 (self-attention from scratch).

References: ``F.scaled_dot_product_attention`` for outputs and ``course_lib.scaled_dot_product_attention``
for weights. Each typical wrong answer (no scale, scale by d_k, softmax over queries, keys not
transposed, inverted mask, mask after softmax, NaN on a fully masked row, ...) is computed and
named in its hint.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from .._checks import shape_str
from ..attention import scaled_dot_product_attention
from ._harness import Hint, NotDone, call_learner, checker, compare, expect_tensor, is_close

_TRANSPOSE_TIP = (" If the error is about matrix sizes: the scores are q @ k.transpose(-2, -1), which transposes the "
                  "keys' last two dims for any number of leading dims (k.T and k.transpose(1, 2) do not).")


class _Case(NamedTuple):
    name: str
    q: Tensor
    k: Tensor
    v: Tensor
    mask: Tensor | None = None


def _randn(*shape: int, gen: torch.Generator, dtype: torch.dtype) -> Tensor:
    return torch.randn(*shape, generator=gen, dtype=dtype)


def _case(name: str, batch: tuple[int, ...], t_q: int, t_k: int, d_k: int, d_v: int, *, seed: int,
          dtype: torch.dtype = torch.float32, mask: Tensor | None = None) -> _Case:
    gen = torch.Generator().manual_seed(seed)
    q, k, v = (_randn(*batch, t, d, gen=gen, dtype=dtype) for t, d in ((t_q, d_k), (t_k, d_k), (t_k, d_v)))
    return _Case(name, q, k, v, mask)


def _run(fn: Any, case: _Case, what: str) -> tuple[Tensor, Tensor]:
    """Call the learner on a copy of the case; check it returns (output, attn_weights) of the right shapes."""
    args = [x.clone() for x in (case.q, case.k, case.v)] + ([case.mask.clone()] if case.mask is not None else [])
    try:
        result = call_learner(fn, *args, what=what)
    except Hint as hint:
        tip = _TRANSPOSE_TIP if "RuntimeError" in str(hint) else ""
        raise Hint(f"case '{case.name}': {str(hint).rstrip('.')}.{tip}") from None
    if any(not torch.equal(a, b) for a, b in zip(args, (case.q, case.k, case.v, case.mask))):
        raise Hint(f"{what} changed its inputs in place (e.g. `q /= ...`): compute new tensors instead")
    out_shape = (*case.q.shape[:-1], case.v.shape[-1])  # [..., T_q, d_v]
    w_shape = (*case.q.shape[:-1], case.k.shape[-2])  # [..., T_q, T_k]
    if isinstance(result, Tensor):
        raise Hint(f"{what} returned one tensor of shape {shape_str(result.shape)}; return a pair "
                   "(output, attn_weights)")
    if not isinstance(result, (tuple, list)) or len(result) != 2:
        raise Hint(f"{what} should return a pair (output, attn_weights); got {type(result).__name__}")
    output, weights = result
    if (isinstance(output, Tensor) and isinstance(weights, Tensor) and tuple(output.shape) == w_shape
            and tuple(weights.shape) == out_shape):
        raise Hint(f"case '{case.name}': you returned (attn_weights, output); the order is (output, attn_weights)")
    if isinstance(output, Tensor) and case.k.shape[-1] != case.v.shape[-1] and output.shape[-1] == case.k.shape[-1]:
        raise Hint(f"case '{case.name}': the output has the keys' width d_k = {case.k.shape[-1]}, not the values' "
                   f"d_v = {case.v.shape[-1]}: it should be a weighted sum of the values, attn_weights @ v")
    output = expect_tensor(output, f"the output of {what} in case '{case.name}'", out_shape)
    weights = expect_tensor(weights, f"attn_weights of {what} in case '{case.name}'", w_shape)
    for name, x in (("output", output), ("attn_weights", weights)):
        if x.dtype != case.q.dtype:
            raise Hint(f"case '{case.name}': {name} has dtype {x.dtype}, but the inputs are {case.q.dtype}; "
                       "keep the inputs' dtype (no .float(), no new float32 tensors)")
    return output, weights


def _softmax_scores(case: _Case, scale: float, dim: int = -1, transpose: bool = True) -> Tensor:
    keys = case.k.transpose(-2, -1) if transpose else case.k
    return torch.softmax(case.q @ keys * scale, dim=dim)


def _basic_cases() -> list[_Case]:
    return [
        _case("T_q != T_k (3 queries, 5 keys)", (2,), 3, 5, 5, 4, seed=2),
        _case("batch of 1", (1,), 4, 6, 8, 8, seed=1),
        _case("float64", (2,), 5, 5, 16, 3, seed=3, dtype=torch.float64),
        _case("a heads dim [B, H, T, d]", (2, 3), 4, 6, 8, 2, seed=4),
    ]


@checker("Exercise 1 · attention(q, k, v)")
def check_attention(attention: Callable[..., Any]) -> str:
    """``attention(q, k, v) -> (output [..., T_q, d_v], attn_weights [..., T_q, T_k])``, no mask."""
    for case in _basic_cases():
        output, weights = _run(attention, case, "attention(q, k, v)")
        d_k = case.q.shape[-1]
        expected_weights = scaled_dot_product_attention(case.q, case.k, case.v)[1]
        mistakes = [
            (_softmax_scores(case, 1.0), "the weights are softmax(q @ k^T) without the scale: divide the scores "
                                         "by sqrt(d_k) before the softmax"),
            (_softmax_scores(case, 1 / d_k), "you divided the scores by d_k; the scale is 1/sqrt(d_k) "
                                             "(math.sqrt(d_k))"),
            (_softmax_scores(case, d_k**-0.5, dim=-2), "the softmax runs over the queries (dim=-2), so columns "
                                                       "sum to 1; each query's row must sum to 1: use dim=-1"),
        ]
        if case.k.shape[-2] == d_k:  # only here does q @ k (no transpose) run at all
            mistakes.append((_softmax_scores(case, d_k**-0.5, transpose=False),
                             "you multiplied q by k instead of by k transposed: use q @ k.transpose(-2, -1)"))
        compare(weights, expected_weights, what="attn_weights", case=case.name, mistakes=mistakes)
        compare(output, F.scaled_dot_product_attention(case.q, case.k, case.v), what="output", case=case.name,
                mistakes=[(weights @ case.k, "the output is a weighted sum of the keys; it should be a weighted sum "
                                             "of the values: attn_weights @ v"),
                          (case.q @ case.k.transpose(-2, -1) * d_k**-0.5 @ case.v,
                           "the output uses the raw scores; use the softmax weights: attn_weights @ v")])
    return "matches F.scaled_dot_product_attention on a batch of 1, T_q != T_k, float64 and a heads dim"


def _mixed_mask(shape: tuple[int, ...], seed: int) -> Tensor:
    """A random bool mask in which every row has at least one True and one False."""
    mask = torch.rand(*shape, generator=torch.Generator().manual_seed(seed)) > 0.5
    mask[..., 0], mask[..., -1] = True, False
    return mask[..., torch.randperm(shape[-1], generator=torch.Generator().manual_seed(seed))]


def _masked_cases() -> list[_Case]:
    full_row = _mixed_mask((2, 4, 5), 12)
    full_row[0, 1] = False  # query 1 of batch 0 may see no key at all
    one_full = _mixed_mask((1, 3, 6), 13)
    one_full[0, 2] = False
    return [
        _case("every row has some keys blocked", (2,), 4, 5, 8, 3, seed=11, mask=_mixed_mask((2, 4, 5), 11)),
        _case("every key visible", (2,), 3, 4, 8, 3, seed=14, mask=torch.ones(2, 3, 4, dtype=torch.bool)),
        _case("a fully masked row (batch 0, query 1)", (2,), 4, 5, 8, 3, seed=12, mask=full_row),
        _case("batch of 1, float64, last query fully masked", (1,), 3, 6, 4, 2, seed=13, dtype=torch.float64,
              mask=one_full),
    ]


@checker("Exercise 2 · masked_attention(q, k, v, mask)")
def check_masked_attention(masked_attention: Callable[..., Any]) -> str:
    """``masked_attention(q, k, v, mask)`` with a bool mask (True = may attend); fully masked rows give zeros."""
    for case in _masked_cases():
        assert case.mask is not None
        output, weights = _run(masked_attention, case, "masked_attention(q, k, v, mask)")
        expected_out, expected_weights = scaled_dot_product_attention(case.q, case.k, case.v, case.mask)
        blocked_rows = ~case.mask.any(dim=-1)  # [B, T_q]
        if torch.isnan(weights).any() or torch.isnan(output).any():
            if blocked_rows.any() and not torch.isnan(weights[~blocked_rows]).any():
                raise Hint(f"case '{case.name}': NaN in the fully masked row: softmax of a row that is all -inf "
                           "is 0/0. Find such rows with mask.any(dim=-1) and give them zero weights and output")
            raise Hint(f"case '{case.name}': your result contains NaN where the reference has none")
        scores = case.q @ case.k.transpose(-2, -1) / math.sqrt(case.q.shape[-1])  # [B, T_q, T_k]
        mistakes = [
            (scaled_dot_product_attention(case.q, case.k, case.v, ~case.mask)[1],
             "your mask hides the real tokens instead of the blocked ones: True means 'may attend', so fill "
             "-inf where the mask is False (~mask)"),
            (torch.softmax(scores, dim=-1).masked_fill(~case.mask, 0.0),
             "you masked after the softmax, so the rows no longer sum to 1: fill the scores with -inf "
             "before the softmax"),
            (torch.softmax(scores.masked_fill(~case.mask, -1e9), dim=-1),
             "the fully masked row got uniform weights 1/T_k (a finite fill like -1e9 makes all its scores "
             "equal): such a row must get zero weights and a zero output"),
            (torch.softmax(scores, dim=-1), "the mask has no effect: fill the scores with -inf where it is False"),
            (scaled_dot_product_attention(case.q, case.k, case.v, case.mask, scale=1.0)[1],
             "the scores are not scaled: divide them by sqrt(d_k) before masking and the softmax"),
        ]
        compare(weights, expected_weights, what="attn_weights", case=case.name, mistakes=mistakes)
        compare(output, expected_out, what="output", case=case.name, mistakes=[
            (torch.softmax(scores.masked_fill(~case.mask, -1e9), dim=-1) @ case.v,
             "the weights are right but the fully masked row's output is not zero")])
    return "matches the reference with mixed masks, an all-visible mask and fully masked rows (zeros, no NaN)"


# --- predict, then verify -------------------------------------------------------------------------

SCALE_STATEMENTS = {
    "A": "Not much changes: softmax normalises the scores, so the weights look alike at every d_k.",
    "B": "The weights get sharper: each query's largest weight climbs toward 1 (nearly one-hot).",
    "C": "The weights get flatter: every weight approaches 1/T_k (uniform attention).",
    "D": "The weights turn into NaN once d_k is large, because exp() overflows.",
}


def max_weight_experiment(d_ks: tuple[int, ...] = (4, 16, 64, 256, 1024), t_k: int = 16,
                          seed: int = 0) -> dict[str, list[float]]:
    """Mean largest attention weight of random unit-variance q, k (64 x 32 queries, ``t_k`` keys),
    without (``"raw"``) and with (``"scaled"``) the 1/sqrt(d_k) scale, for each d_k."""
    gen = torch.Generator().manual_seed(seed)
    result: dict[str, list[float]] = {"raw": [], "scaled": []}
    for d_k in d_ks:
        q, k = _randn(64, 32, d_k, gen=gen, dtype=torch.float32), _randn(64, t_k, d_k, gen=gen, dtype=torch.float32)
        scores = q @ k.transpose(-2, -1)  # [64, 32, t_k]
        for name, s in (("raw", scores), ("scaled", scores / math.sqrt(d_k))):
            result[name].append(torch.softmax(s, dim=-1).amax(dim=-1).mean().item())
    return result


@checker("Exercise 3 · predict: no scale, growing d_k")
def check_scale_prediction(prediction: Any) -> str:
    """``prediction``: one letter of ``SCALE_STATEMENTS``; the verdict quotes the measured max weights."""
    if prediction is None or (isinstance(prediction, str) and not prediction.strip()):
        raise NotDone("not done yet: set `prediction` to one letter, A, B, C or D")
    letter = str(prediction).strip().upper().rstrip(".)")
    if letter not in SCALE_STATEMENTS:
        raise Hint(f"answer with one letter, A, B, C or D; got {prediction!r}")
    measured = max_weight_experiment()
    raw = " → ".join(f"{w:.2f}" for w in measured["raw"])
    scaled = f"{min(measured['scaled']):.2f}–{max(measured['scaled']):.2f}"
    facts = (f"Measured mean max weight without the scale for d_k = 4 → 1024: {raw} (one-hot is 1.00; "
             f"uniform over 16 keys is 0.06); with the scale it stays at {scaled}.")
    why = {
        "A": "Softmax fixes the sum of the weights, not their spread. The raw scores' std grows like sqrt(d_k), "
             "and exp() turns a wide spread of scores into one dominant weight.",
        "C": "It goes the other way: bigger score gaps make softmax sharper, not flatter (flatter is what "
             "you get when scores shrink, e.g. when you divide by too much).",
        "D": "torch.softmax subtracts each row's max before exp(), so it never overflows; the real problem is "
             "saturation, and with it vanishing gradients.",
    }
    if letter != "B":
        raise Hint(f"not {letter}. {why[letter]} {facts}")
    return (f"right. {facts} The scores' std grows like sqrt(d_k), the softmax saturates, and its gradient "
            "vanishes; dividing by sqrt(d_k) keeps the std at 1.")


DUPLICATE_WEIGHTS = (0.5, 0.3, 0.2)  # keys A, B, C


def duplicate_key_experiment(weights: tuple[float, ...] = DUPLICATE_WEIGHTS) -> tuple[Tensor, Tensor]:
    """Attention weights of one query before and after appending a copy of key A (and its value)."""
    scores = torch.tensor(weights, dtype=torch.float64).log()
    q = torch.ones(1, 1, dtype=torch.float64)  # [T_q=1, d_k=1]
    k = scores[:, None]  # [3, 1]: q . k_j = log w_j, so softmax gives the weights back
    v = torch.eye(3, dtype=torch.float64)  # [3, 3]
    before = scaled_dot_product_attention(q, k, v, scale=1.0)[1][0]  # [3]
    after = scaled_dot_product_attention(q, torch.cat([k, k[:1]]), torch.cat([v, v[:1]]), scale=1.0)[1][0]  # [4]
    return before, after


@checker("Exercise 4 · predict: a duplicated key")
def check_duplicate_key_prediction(predicted_weights: Any) -> str:
    """``predicted_weights``: 4 numbers, the weights on keys A, B, C and the copy of A."""
    if predicted_weights is None:
        raise NotDone("not done yet: set `predicted_weights` to a list of 4 numbers")
    try:
        guess = torch.as_tensor(predicted_weights, dtype=torch.float64).flatten()
    except (TypeError, ValueError, RuntimeError):
        raise Hint(f"give 4 numbers, e.g. [0.1, 0.2, 0.3, 0.4]; got {predicted_weights!r}") from None
    if guess.numel() != 4:
        raise Hint(f"give 4 numbers, one per key in the order A, B, C, copy of A; got {guess.numel()}")
    _, after = duplicate_key_experiment()
    p_a = DUPLICATE_WEIGHTS[0]
    outcome = ("Measured: " + ", ".join(f"{w:.3f}" for w in after.tolist()) + ". With Z the old sum of exps, "
               f"each copy gets exp(s_A) / (Z + exp(s_A)) = {p_a}/(1 + {p_a}) = {p_a / (1 + p_a):.3f}; together "
               f"the copies get {2 * p_a / (1 + p_a):.3f} > {p_a}, and B and C keep their ratio 3:2.")
    if is_close(guess, after, atol=5e-3, rtol=0):
        return f"right. {outcome} Duplicating a key gives it more total weight, not the same weight shared."
    split = torch.tensor([p_a / 2, *DUPLICATE_WEIGHTS[1:], p_a / 2], dtype=torch.float64)
    if is_close(guess, split, atol=5e-3, rtol=0):
        raise Hint("the copies do not share A's old weight: softmax scores every key on its own, so exp(s_A) "
                   f"now appears twice in the sum. {outcome}")
    if abs(guess.sum().item() - 1) > 0.01:
        raise Hint(f"your weights sum to {guess.sum().item():.3g}, but softmax weights always sum to 1. {outcome}")
    if abs(guess[0].item() - guess[3].item()) > 5e-3:
        raise Hint(f"A and its copy have the same key, so the same score, so the same weight. {outcome}")
    raise Hint(f"not quite. {outcome}")
