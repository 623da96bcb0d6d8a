"""Checkers for the exercises of lesson 01 (self-attention from scratch).

Each exercise is its reference, its cases and its list of named mistakes (``MISTAKES``), run by
``_harness.run_cases``. References: ``F.scaled_dot_product_attention`` for outputs and
``course_lib.scaled_dot_product_attention`` for weights.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from ..attention import scaled_dot_product_attention
from ._answers import as_float
from ._cases import Case, Mistake
from ._compare import same
from ._harness import run_cases
from ._results import Hint, NotDone, checker, short_repr

_TRANSPOSE_TIP = ("If the error is about matrix sizes: the scores are q @ k.transpose(-2, -1), which transposes the "
                  "keys' last two dims for any number of leading dims (k.T and k.transpose(1, 2) do not).")
_ERROR_TIPS = [("RuntimeError", _TRANSPOSE_TIP)]
_PAIR = ("output", "attn_weights")


def _randn(*shape: int, gen: torch.Generator, dtype: torch.dtype) -> Tensor:
    return torch.randn(*shape, generator=gen, dtype=dtype)


def _qkv(batch: tuple[int, ...], t_q: int, t_k: int, d_k: int, d_v: int, *, seed: int,
         dtype: torch.dtype = torch.float32) -> tuple[Tensor, Tensor, Tensor]:
    gen = torch.Generator().manual_seed(seed)
    q, k, v = (_randn(*batch, t, d, gen=gen, dtype=dtype) for t, d in ((t_q, d_k), (t_k, d_k), (t_k, d_v)))
    return q, k, v


def _softmax_attention(q: Tensor, k: Tensor, v: Tensor, *, scale: float | None = None, dim: int = -1,
                       keys: Callable[[Tensor], Tensor] = lambda k: k.transpose(-2, -1)) -> tuple[Tensor, Tensor]:
    """Unmasked attention, with one knob per typical mistake."""
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    weights = torch.softmax(q @ keys(k) * scale, dim=dim)  # [..., T_q, T_k]
    return weights @ v, weights


# --- Exercise 1 · attention(q, k, v) --------------------------------------------------------------

def attention_reference(q: Tensor, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
    """``(output [..., T_q, d_v], attn_weights [..., T_q, T_k])``."""
    return F.scaled_dot_product_attention(q, k, v), scaled_dot_product_attention(q, k, v)[1]


ATTENTION_CASES = [
    Case("T_q != T_k (3 queries, 5 keys)", _qkv((2,), 3, 5, 5, 4, seed=2)),
    Case("batch of 1", _qkv((1,), 4, 6, 8, 8, seed=1)),
    Case("float64", _qkv((2,), 5, 5, 16, 3, seed=3, dtype=torch.float64)),
    Case("a heads dim [B, H, T, d]", _qkv((2, 3), 4, 6, 8, 2, seed=4)),
]


def _no_softmax(q: Tensor, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    return scores @ v, scores


def _scale_after_softmax(q: Tensor, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
    weights = torch.softmax(q @ k.transpose(-2, -1), dim=-1) / math.sqrt(q.shape[-1])
    return weights @ v, weights


def _returns_scores(q: Tensor, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
    return attention_reference(q, k, v)[0], q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])


ATTENTION_MISTAKES = [
    Mistake("no_scale", "the weights are softmax(q @ k^T) without the scale: divide the scores by sqrt(d_k) "
            "before the softmax", lambda q, k, v: _softmax_attention(q, k, v, scale=1.0)),
    Mistake("scale_by_d_k", "you divided the scores by d_k; the scale is 1/sqrt(d_k) (math.sqrt(d_k))",
            lambda q, k, v: _softmax_attention(q, k, v, scale=1 / q.shape[-1])),
    Mistake("scale_multiplied", "you multiplied the scores by sqrt(d_k); divide them by it",
            lambda q, k, v: _softmax_attention(q, k, v, scale=q.shape[-1] ** 0.5)),
    Mistake("scale_by_d_v", "you scaled by sqrt(d_v), the values' width; the scale is 1/sqrt(d_k), with d_k the "
            "width of the queries and keys (q.shape[-1])",
            lambda q, k, v: _softmax_attention(q, k, v, scale=v.shape[-1] ** -0.5)),
    Mistake("scale_by_length", "you scaled by the square root of a sequence length; the scale is 1/sqrt(d_k), "
            "with d_k the *last* dim of q and k (q.shape[-1])",
            lambda q, k, v: _softmax_attention(q, k, v, scale=k.shape[-2] ** -0.5)),
    Mistake("scale_by_query_length", "you scaled by the square root of the number of queries; the scale is "
            "1/sqrt(d_k), with d_k the *last* dim of q and k (q.shape[-1])",
            lambda q, k, v: _softmax_attention(q, k, v, scale=q.shape[-2] ** -0.5)),
    Mistake("scale_after_softmax", "you divided by sqrt(d_k) after the softmax, so the rows no longer sum to 1: "
            "scale the scores, then take the softmax", _scale_after_softmax),
    Mistake("softmax_over_queries", "the softmax runs over the queries (dim=-2), so columns sum to 1; each "
            "query's row must sum to 1: use dim=-1", lambda q, k, v: _softmax_attention(q, k, v, dim=-2)),
    Mistake("no_softmax", "the weights are the scaled scores themselves: apply torch.softmax(scores, dim=-1) "
            "to turn them into weights that sum to 1", _no_softmax),
    Mistake("keys_not_transposed", "you multiplied q by k instead of by k transposed: use q @ k.transpose(-2, -1)",
            lambda q, k, v: _softmax_attention(q, k, v, keys=lambda k: k)),
    Mistake("transpose_1_2", "k.transpose(1, 2) swaps the wrong axes when there is a heads dim [B, H, T, d]: "
            "use k.transpose(-2, -1), which transposes the last two dims for any number of leading dims",
            lambda q, k, v: _softmax_attention(q, k, v, keys=lambda k: k.transpose(1, 2)),
            applies_when=lambda case: case.args[0].ndim >= 4),
    Mistake("k_dot_T", "k.T reverses *all* dims of a 3-D or 4-D tensor, not the last two: use "
            "k.transpose(-2, -1)", lambda q, k, v: _softmax_attention(q, k, v, keys=lambda k: k.permute(
                *range(k.ndim - 1, -1, -1)))),
    Mistake("scores_with_values", "the scores use the values: they are q @ k.transpose(-2, -1), queries against "
            "keys; the values only come in after the softmax",
            lambda q, k, v: _softmax_attention(q, v, v)),
    Mistake("output_from_keys", "the output is a weighted sum of the keys; it should be a weighted sum of the "
            "values: attn_weights @ v", lambda q, k, v: (_softmax_attention(q, k, v)[1] @ k,
                                                         _softmax_attention(q, k, v)[1])),
    Mistake("output_from_scores", "the output uses the raw scores; use the softmax weights: attn_weights @ v",
            lambda q, k, v: (q @ k.transpose(-2, -1) * q.shape[-1] ** -0.5 @ v, _softmax_attention(q, k, v)[1])),
    Mistake("returned_scores", "the second item is the scores before the softmax; return the weights "
            "(softmax of the scaled scores), whose rows sum to 1", _returns_scores),
]


@checker("Exercise 1 · attention(q, k, v)")
def check_attention(attention: Callable[..., Any]) -> str:
    """``attention(q, k, v) -> (output [..., T_q, d_v], attn_weights [..., T_q, T_k])``, no mask."""
    return run_cases(attention, reference=attention_reference, cases=ATTENTION_CASES, mistakes=ATTENTION_MISTAKES,
                     what="attention(q, k, v)", outputs=_PAIR, error_tips=_ERROR_TIPS,
                     passed="matches F.scaled_dot_product_attention on a batch of 1, T_q != T_k, float64 and a "
                            "heads dim")


# --- Exercise 2 · masked_attention(q, k, v, mask) -------------------------------------------------

def masked_attention_reference(q: Tensor, k: Tensor, v: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
    return scaled_dot_product_attention(q, k, v, mask)


def _mixed_mask(shape: tuple[int, ...], seed: int) -> Tensor:
    """A random bool mask in which every row has at least one True and one False."""
    mask = torch.rand(*shape, generator=torch.Generator().manual_seed(seed)) > 0.5
    mask[..., 0], mask[..., -1] = True, False
    return mask[..., torch.randperm(shape[-1], generator=torch.Generator().manual_seed(seed))]


def _masked_cases() -> list[Case]:
    full_row = _mixed_mask((2, 4, 5), 12)
    full_row[0, 1] = False  # query 1 of batch 0 may see no key at all
    one_full = _mixed_mask((1, 3, 6), 13)
    one_full[0, 2] = False
    return [
        Case("every row has some keys blocked", (*_qkv((2,), 4, 5, 8, 3, seed=11), _mixed_mask((2, 4, 5), 11))),
        Case("every key visible", (*_qkv((2,), 3, 4, 8, 3, seed=14), torch.ones(2, 3, 4, dtype=torch.bool))),
        Case("a fully masked row (batch 0, query 1)", (*_qkv((2,), 4, 5, 8, 3, seed=12), full_row)),
        Case("batch of 1, float64, last query fully masked",
             (*_qkv((1,), 3, 6, 4, 2, seed=13, dtype=torch.float64), one_full)),
    ]


MASKED_CASES = _masked_cases()


def _scores(q: Tensor, k: Tensor) -> Tensor:
    return q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])  # [..., T_q, T_k]


def _weights_then_output(weights: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
    return weights @ v, weights


def _zero_rows_with_any_blocked(q: Tensor, k: Tensor, v: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
    weights = scaled_dot_product_attention(q, k, v, mask)[1].masked_fill(~mask.all(dim=-1, keepdim=True), 0.0)
    return weights @ v, weights


MASKED_MISTAKES = [
    Mistake("inverted_mask", "your mask hides the real tokens instead of the blocked ones: True means 'may "
            "attend', so fill -inf where the mask is False (~mask)",
            lambda q, k, v, mask: scaled_dot_product_attention(q, k, v, ~mask)),
    Mistake("mask_after_softmax", "you masked after the softmax, so the rows no longer sum to 1: fill the scores "
            "with -inf before the softmax",
            lambda q, k, v, mask: _weights_then_output(torch.softmax(_scores(q, k), -1).masked_fill(~mask, 0.0), v)),
    Mistake("nan_on_full_rows", "NaN in the fully masked row: softmax of a row that is all -inf is 0/0. Find such "
            "rows with mask.any(dim=-1) and give them zero weights and output",
            lambda q, k, v, mask: _weights_then_output(
                torch.softmax(_scores(q, k).masked_fill(~mask, float("-inf")), -1), v)),
    Mistake("finite_fill", "the fully masked row got uniform weights 1/T_k (a finite fill like -1e9 makes all "
            "its scores equal): such a row must get zero weights and a zero output",
            lambda q, k, v, mask: _weights_then_output(torch.softmax(_scores(q, k).masked_fill(~mask, -1e9), -1), v)),
    Mistake("zero_fill", "blocked scores were set to 0 (masked_fill with 0, or scores * mask), but exp(0) = 1 "
            "still gives them weight: fill them with float('-inf')",
            lambda q, k, v, mask: _weights_then_output(torch.softmax(_scores(q, k).masked_fill(~mask, 0.0), -1), v)),
    Mistake("ignores_mask", "the mask has no effect: fill the scores with -inf where it is False",
            lambda q, k, v, mask: _softmax_attention(q, k, v)),
    Mistake("masked_no_scale", "the scores are not scaled: divide them by sqrt(d_k) before masking and the "
            "softmax", lambda q, k, v, mask: scaled_dot_product_attention(q, k, v, mask, scale=1.0)),
    Mistake("masked_softmax_over_queries", "the softmax runs over the queries (dim=-2): each query's weights "
            "over the keys must sum to 1, so use dim=-1",
            lambda q, k, v, mask: _weights_then_output(
                torch.softmax(_scores(q, k).masked_fill(~mask, float("-inf")), -2).nan_to_num(0.0), v)),
    Mistake("zeroed_wrong_rows", "you zeroed every row with *some* blocked key; only a row where *every* key is "
            "blocked (mask.any(dim=-1) is False) must be all zeros", _zero_rows_with_any_blocked),
    Mistake("full_row_output_not_zero", "the weights are right but the fully masked row's output is not zero: "
            "compute the output from the corrected weights (zeros in that row)",
            lambda q, k, v, mask: (torch.softmax(_scores(q, k).masked_fill(~mask, -1e9), -1) @ v,
                                   scaled_dot_product_attention(q, k, v, mask)[1])),
]


@checker("Exercise 2 · masked_attention(q, k, v, mask)")
def check_masked_attention(masked_attention: Callable[..., Any]) -> str:
    """``masked_attention(q, k, v, mask)`` with a bool mask (True = may attend); fully masked rows give zeros."""
    return run_cases(masked_attention, reference=masked_attention_reference, cases=MASKED_CASES,
                     mistakes=MASKED_MISTAKES, what="masked_attention(q, k, v, mask)", outputs=_PAIR,
                     error_tips=_ERROR_TIPS,
                     passed="matches the reference with mixed masks, an all-visible mask and fully masked rows "
                            "(zeros, no NaN)")


# --- Exercise 3 · predict, then verify: no scale, growing d_k ----------------------------------------

SCALE_STATEMENTS = {
    "A": "Not much changes: softmax normalises the scores, so the weights look alike at every d_k.",
    "B": "The weights get sharper: each query's largest weight climbs toward 1 (nearly one-hot).",
    "C": "The weights get flatter: every weight approaches 1/T_k (uniform attention).",
    "D": "The weights turn into NaN once d_k is large, because exp() overflows.",
}
SCALE_ANSWER = "B"
SCALE_MISTAKES = [
    Mistake("softmax_hides_the_spread", "Softmax fixes the sum of the weights, not their spread. The raw scores' "
            "std grows like sqrt(d_k), and exp() turns a wide spread of scores into one dominant weight.", "A"),
    Mistake("flatter", "It goes the other way: bigger score gaps make softmax sharper, not flatter (flatter is what "
            "you get when scores shrink, e.g. when you divide by too much).", "C"),
    Mistake("overflow", "torch.softmax subtracts each row's max before exp(), so it never overflows; the real "
            "problem is saturation, and with it vanishing gradients.", "D"),
]


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
    letter = prediction.strip().upper().rstrip(".)") if isinstance(prediction, str) else None
    if letter not in SCALE_STATEMENTS:
        raise Hint(f"answer with one letter, A, B, C or D; got {short_repr(prediction)}", mistake="wrong_type")
    measured = max_weight_experiment()
    raw = " → ".join(f"{w:.2f}" for w in measured["raw"])
    scaled = f"{min(measured['scaled']):.2f}–{max(measured['scaled']):.2f}"
    facts = (f"Measured mean max weight without the scale for d_k = 4 → 1024: {raw} (one-hot is 1.00; "
             f"uniform over 16 keys is 0.06); with the scale it stays at {scaled}.")
    mistake = next((m for m in SCALE_MISTAKES if m.wrong == letter), None)
    if mistake is not None:
        raise Hint(f"not {letter}. {mistake.hint} {facts}", mistake=mistake.name)
    return (f"right. {facts} The scores' std grows like sqrt(d_k), the softmax saturates, and its gradient "
            "vanishes; dividing by sqrt(d_k) keeps the std at 1.")


# --- Exercise 4 · predict, then verify: a duplicated key ---------------------------------------------

DUPLICATE_WEIGHTS = (0.5, 0.3, 0.2)  # keys A, B, C
_P_A = DUPLICATE_WEIGHTS[0]
DUPLICATE_MISTAKES = [
    Mistake("copies_share_weight", "the copies do not share A's old weight: softmax scores every key on its own, "
            "so exp(s_A) now appears twice in the sum.", [_P_A / 2, *DUPLICATE_WEIGHTS[1:], _P_A / 2]),
    Mistake("old_weights_kept", "the old weights cannot all stay: with the copy they would sum to 1.5, but softmax "
            "weights always sum to 1.", [*DUPLICATE_WEIGHTS, _P_A]),
    Mistake("copy_gets_no_weight", "A and its copy have the same key, so the same score, so the same weight "
            "(the copy does not get 0).", [*DUPLICATE_WEIGHTS, 0.0]),
]


def duplicate_key_experiment(weights: tuple[float, ...] = DUPLICATE_WEIGHTS) -> tuple[Tensor, Tensor]:
    """Attention weights of one query before and after appending a copy of key A (and its value)."""
    scores = torch.tensor(weights, dtype=torch.float64).log()
    q = torch.ones(1, 1, dtype=torch.float64)  # [T_q=1, d_k=1]
    k = scores[:, None]  # [3, 1]: q . k_j = log w_j, so softmax gives the weights back
    v = torch.eye(3, dtype=torch.float64)  # [3, 3]
    before = scaled_dot_product_attention(q, k, v, scale=1.0)[1][0]  # [3]
    after = scaled_dot_product_attention(q, torch.cat([k, k[:1]]), torch.cat([v, v[:1]]), scale=1.0)[1][0]  # [4]
    return before, after


def _four_numbers(predicted_weights: Any) -> list[float]:
    """The learner's 4 weights as floats (a list, tuple, numpy array or tensor of numbers)."""
    if isinstance(predicted_weights, (str, bytes, dict)) or not hasattr(predicted_weights, "__len__"):
        raise Hint(f"give 4 numbers, e.g. [0.1, 0.2, 0.3, 0.4]; got {short_repr(predicted_weights)}",
                   mistake="wrong_type")
    items = (predicted_weights.flatten().tolist() if isinstance(predicted_weights, Tensor)
             else list(predicted_weights))
    numbers_ = [as_float(x) for x in items]
    if any(x is None for x in numbers_):
        raise Hint(f"give 4 numbers, e.g. [0.1, 0.2, 0.3, 0.4]; got {short_repr(predicted_weights)}",
                   mistake="wrong_type")
    if len(numbers_) != 4:
        raise Hint(f"give 4 numbers, one per key in the order A, B, C, copy of A; got {len(numbers_)}",
                   mistake="wrong_type")
    return [float(x) for x in numbers_ if x is not None]


@checker("Exercise 4 · predict: a duplicated key")
def check_duplicate_key_prediction(predicted_weights: Any) -> str:
    """``predicted_weights``: 4 numbers, the weights on keys A, B, C and the copy of A."""
    if predicted_weights is None:
        raise NotDone("not done yet: set `predicted_weights` to a list of 4 numbers")
    guess = _four_numbers(predicted_weights)
    _, after = duplicate_key_experiment()
    outcome = ("Measured: " + ", ".join(f"{w:.3f}" for w in after.tolist()) + ". With Z the old sum of exps, "
               f"each copy gets exp(s_A) / (Z + exp(s_A)) = {_P_A}/(1 + {_P_A}) = {_P_A / (1 + _P_A):.3f}; together "
               f"the copies get {2 * _P_A / (1 + _P_A):.3f} > {_P_A}, and B and C keep their ratio 3:2.")
    if same(guess, after.tolist(), atol=5e-3, rtol=0):
        return f"right. {outcome} Duplicating a key gives it more total weight, not the same weight shared."
    for mistake in DUPLICATE_MISTAKES:
        if same(guess, mistake.wrong, atol=5e-3, rtol=0):
            raise Hint(f"{mistake.hint} {outcome}", mistake=mistake.name)
    if abs(sum(guess) - 1) > 0.01:
        raise Hint(f"your weights sum to {sum(guess):.3g}, but softmax weights always sum to 1. {outcome}",
                   mistake="weights_do_not_sum_to_1")
    if abs(guess[0] - guess[3]) > 5e-3:
        raise Hint(f"A and its copy have the same key, so the same score, so the same weight. {outcome}",
                   mistake="copy_weight_differs")
    raise Hint(f"not quite. {outcome}")


MISTAKES = {
    "check_attention": ATTENTION_MISTAKES,
    "check_masked_attention": MASKED_MISTAKES,
    "check_scale_prediction": SCALE_MISTAKES,
    "check_duplicate_key_prediction": DUPLICATE_MISTAKES,
}
CASES = {"check_attention": ATTENTION_CASES, "check_masked_attention": MASKED_CASES}
REFERENCES = {"check_attention": attention_reference, "check_masked_attention": masked_attention_reference}
