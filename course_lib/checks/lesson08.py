"""Checkers for the exercises of lesson 08 (attention explorer: entropy of attention, silencing a head).

Each exercise is its reference, its cases and its list of named mistakes (``MISTAKES``), run by
``_harness.run_cases``. References: ``torch.distributions.Categorical(probs=...).entropy()`` for the
entropy of a row, ``course_lib.metrics.attention_entropy`` for the normalised entropy, and, for silencing
a head, the head's columns of ``out_proj.weight`` zeroed (checked against attention written out head by
head with that head's context left out).
"""
from __future__ import annotations

import copy
import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from ..attention import MultiHeadAttention
from ..metrics import attention_entropy
from ._answers import as_float
from ._cases import Case, Mistake
from ._compare import describe_difference
from ._harness import run_cases
from ._results import Hint, NotDone, checker

# --- Exercise 1 · attention_entropy(attn_weights) --------------------------------------------------------

def _rows(shape: tuple[int, ...], n_real: list[int] | None, seed: int, dtype: torch.dtype) -> Tensor:
    """Softmax rows ``shape = [..., T_q, S]`` with sharp and flat rows; keys past ``n_real[b]`` get weight 0."""
    gen = torch.Generator().manual_seed(seed)
    sharpness = torch.linspace(0.2, 6.0, shape[-2], dtype=torch.float64)[:, None]  # flat rows to peaked rows
    scores = torch.randn(shape, generator=gen, dtype=torch.float64) * sharpness  # [..., T_q, S]
    if n_real is not None:
        real = torch.arange(shape[-1]) < torch.tensor(n_real)[:, None]  # [B, S]
        scores = scores.masked_fill(~real.view(len(n_real), *([1] * (len(shape) - 2)), shape[-1]), float("-inf"))
    weights = torch.softmax(scores, dim=-1).nan_to_num(0.0)
    return weights.to(dtype)


def _entropy_cases() -> list[tuple[str, Tensor]]:
    one = _rows((2, 2, 4, 6), [6, 3], 80, torch.float32)  # sentence 1 has 3 padded keys (weight 0)
    one[0, 0, 0] = torch.tensor([0.0, 0.0, 1.0, 0.0, 0.0, 0.0])  # a row on one key: entropy 0
    one[0, 1, 1] = torch.full((6,), 1 / 6)  # an even row: entropy ln 6
    masked = _rows((1, 1, 3, 4), None, 81, torch.float32)
    masked[0, 0, 2] = 0.0  # a query with no key to attend to: the course gives it zero weights
    return [("B=2, H=2, T_q=4 != S=6, padded keys", one), ("one head, 3 queries over 5 keys", _rows((3, 5), None, 82,
            torch.float32)), ("float64, batch of 1", _rows((1, 1, 2, 7), None, 83, torch.float64)),
            ("a fully masked row (all weights 0)", masked)]


def _categorical_entropy(weights: Tensor) -> Tensor:
    """PyTorch's entropy of each row; a row of zeros (nothing to attend to) gets 0."""
    empty = weights.sum(dim=-1) == 0  # [..., T_q]
    safe = torch.where(empty[..., None], torch.ones_like(weights), weights)
    entropy = torch.distributions.Categorical(probs=safe, validate_args=False).entropy()
    return entropy.masked_fill(empty, 0.0)


ENTROPY_CASES = [Case(name, (weights,)) for name, weights in _entropy_cases()]


def entropy_reference(attn_weights: Tensor) -> Tensor:
    """PyTorch's ``Categorical(probs=...).entropy()`` of every row ``[..., T_q]``; a row of zeros gets 0."""
    return _categorical_entropy(attn_weights)

ZERO_LOG_ZERO = ("0 · ln 0 is 0 · (-inf) = NaN in floating point, but it counts as 0 in the entropy (a key with "
                 "no weight adds nothing): use torch.special.xlogy(p, p), or torch.where(p > 0, p * p.log(), 0)")


def _plain_entropy(w: Tensor) -> Tensor:
    return -(w * w.log()).sum(dim=-1)  # NaN where a weight is 0


ENTROPY_MISTAKES = [
    Mistake("zero_log_zero", ZERO_LOG_ZERO, _plain_entropy),
    Mistake("nan_to_num_after_sum", "you replaced the NaN after the sum, so a row with any zero weight loses its "
            "whole entropy: 0 · ln 0 must count as 0 term by term, before the sum (torch.special.xlogy(p, p))",
            lambda w: _plain_entropy(w).nan_to_num(0.0)),
    Mistake("bits", "these are bits (log2): measure in nats with the natural log, torch.log",
            lambda w: _categorical_entropy(w) / math.log(2)),
    Mistake("sum_over_queries", "your result has one value per key: you summed over the query axis (dim=-2). Each "
            "query's row is a distribution over the keys: sum over dim=-1",
            lambda w: -torch.special.xlogy(w, w).sum(dim=-2), match="shape"),
    Mistake("no_minus_sign", "the entropy is never negative: H = -sum p ln p (ln p <= 0, so the minus sign makes "
            "it >= 0)", lambda w: -_categorical_entropy(w)),
    Mistake("mean_over_keys", "you took the mean over the keys; the entropy is the *sum* of -p ln p",
            lambda w: _categorical_entropy(w) / w.shape[-1]),
    Mistake("keepdim", "your result has an extra axis of size 1: sum without keepdim=True",
            lambda w: _categorical_entropy(w)[..., None], match="shape"),
    Mistake("one_number", "you returned one number; return one entropy per row, [..., T_q] (sum over the key "
            "axis only)", lambda w: _categorical_entropy(w).sum(), match="shape"),
    Mistake("normalised_by_ln_S", "you divided by ln S: that is the normalised entropy of exercise 2; here return "
            "the entropy itself, in nats", lambda w: _categorical_entropy(w) / math.log(w.shape[-1])),
]


def _nan_tip(hint: Hint, tip: str) -> Hint:
    """A generic "contains NaN" failure, with the tip for where NaN comes from in this exercise."""
    if hint.mistake == "nan":
        return Hint(f"{str(hint).rstrip('.')}. {tip}", mistake=hint.mistake, case=hint.case)
    return hint


@checker("Exercise 1 · entropy of attention rows")
def check_attention_entropy(attention_entropy_fn: Callable[[Tensor], Any]) -> str:
    """``attention_entropy(attn_weights [..., T_q, S]) -> [..., T_q]``: nats, 0 · ln 0 = 0."""
    try:
        return run_cases(attention_entropy_fn, reference=entropy_reference, cases=ENTROPY_CASES,
                         mistakes=ENTROPY_MISTAKES, what="attention_entropy(attn_weights)",
                         passed="-sum p ln p per row (0 · ln 0 = 0), matching Categorical(probs=...).entropy() "
                                f"on {len(ENTROPY_CASES)} cases")
    except Hint as hint:
        raise _nan_tip(hint, ZERO_LOG_ZERO) from None


# --- Exercise 2 · normalised_entropy(attn_weights, key_mask) ----------------------------------------------

def _normalised_cases() -> list[tuple[str, Tensor, Tensor]]:
    cases = []
    for name, n_real, shape, dtype in [("2 sentences of 6 and 4 words, 2 heads, S=6", [6, 4], (2, 2, 3, 6),
                                        torch.float32),
                                       ("sentences of 4, 1 and 0 words (S=5)", [4, 1, 0], (3, 1, 2, 5), torch.float32),
                                       ("float64, batch of 1, no padding", [7], (1, 2, 4, 7), torch.float64)]:
        weights = _rows(shape, n_real, 84 + len(cases), dtype)
        key_mask = (torch.arange(shape[-1]) < torch.tensor(n_real)[:, None])[:, None, None, :]  # [B, 1, 1, S]
        cases.append((name, weights, key_mask))
    return cases



NORMALISED_CASES = [Case(name, (weights, key_mask)) for name, weights, key_mask in _normalised_cases()]


def normalised_reference(attn_weights: Tensor, key_mask: Tensor) -> Tensor:
    """``H / ln n`` per row ``[B, H, T_q]``, ``n`` real keys; 0 where ``n < 2``."""
    return attention_entropy(attn_weights, key_mask, normalise=True)


def _xlogy_entropy(w: Tensor) -> Tensor:
    """The entropy as a learner computes it (-sum xlogy(p, p)): exactly 0 for a row on one key."""
    return -torch.special.xlogy(w, w).sum(dim=-1)


def _divide(entropy: Tensor, n: Tensor) -> Tensor:
    return torch.where(n > 1, entropy / n.clamp(min=2).log(), torch.zeros_like(entropy))


def _by_count(count: Callable[[Tensor], Tensor]) -> Callable[[Tensor, Tensor], Tensor]:
    """Normalised entropy with n = ``count(key_mask)``."""
    def wrong(w: Tensor, key_mask: Tensor) -> Tensor:
        entropy = _xlogy_entropy(w)  # [B, H, T_q]
        return _divide(entropy, count(key_mask).to(entropy.dtype).expand_as(entropy))
    return wrong


def _squeezed_count(w: Tensor, key_mask: Tensor) -> Tensor:
    entropy = _xlogy_entropy(w)  # [B, H, T_q]
    n_keys = key_mask.sum(dim=-1).squeeze().to(entropy.dtype)  # [B]: lines up with T_q, not with B
    return torch.where(n_keys > 1, entropy / n_keys.clamp(min=2).log(), torch.zeros_like(entropy))


NAN_IN_NORMALISED = ("NaN comes from 0 · ln 0 (padded keys have weight 0: use torch.special.xlogy(p, p)) or from "
                     "dividing by ln 1 = 0 for a one-word sentence (give it 0 with torch.where(n > 1, ..., 0))")
NORMALISED_MISTAKES = [
    Mistake("divided_by_ln_S", "you divided by ln S, the padded length: padded keys do not count. Count the real "
            "keys, n = key_mask.sum(dim=-1), and divide by ln n",
            lambda w, m: _divide(_xlogy_entropy(w), torch.full_like(_xlogy_entropy(w), w.shape[-1]))),
    Mistake("counted_padding", "n counts the padded keys instead of the real ones: key_mask is True at real words "
            "(the course's convention, True = may attend)", _by_count(lambda m: (~m).sum(dim=-1))),
    Mistake("count_over_batch", "n counts the real words of the whole batch: count each sentence's own, "
            "key_mask.sum(dim=-1) ([B, 1, 1])", _by_count(lambda m: m.sum())),
    Mistake("count_squeezed", "the count of real words lost its axes: key_mask.sum(dim=-1) is [B, 1, 1] and "
            "broadcasts against [B, H, T_q]; after .squeeze() it is [B], which lines up with T_q instead of B",
            _squeezed_count),
    Mistake("division_by_ln_1", "NaN or inf for a sentence of one word or none: ln 1 = 0 (and ln 0 = -inf), so "
            "the division breaks. A row with fewer than 2 keys cannot spread: give it 0 with "
            "torch.where(n > 1, ..., 0)", lambda w, m: _xlogy_entropy(w) / m.sum(dim=-1).log()),
    Mistake("divided_by_n", "you divided by n; the largest entropy over n words is ln n (an even row): divide by "
            "ln n", lambda w, m: torch.where(m.sum(dim=-1) > 1, _xlogy_entropy(w) / m.sum(dim=-1).clamp(min=2),
                                             torch.zeros_like(_xlogy_entropy(w)))),
    Mistake("log2_denominator", "a log2 in the denominator with ln in the entropy: use the same log in both (the "
            "ratio is then the same for any base)", lambda w, m: normalised_reference(w, m) * math.log(2)),
    Mistake("log2_entropy", "log2 in the entropy but ln in the denominator: use the same log in both",
            lambda w, m: normalised_reference(w, m) / math.log(2)),
    Mistake("zero_log_zero", ZERO_LOG_ZERO, lambda w, m: _divide(_plain_entropy(w), m.sum(dim=-1).to(w.dtype))),
    Mistake("not_normalised", "that is the entropy itself; divide it by ln n, n = the number of real keys",
            lambda w, m: _xlogy_entropy(w)),
]


@checker("Exercise 2 · normalised entropy")
def check_normalised_entropy(normalised_entropy: Callable[[Tensor, Tensor], Any]) -> str:
    """``normalised_entropy(attn_weights [B, H, T_q, S], key_mask [B, 1, 1, S]) -> [B, H, T_q]``: H / ln n."""
    try:
        return run_cases(normalised_entropy, reference=normalised_reference, cases=NORMALISED_CASES,
                         mistakes=NORMALISED_MISTAKES, what="normalised_entropy(attn_weights, key_mask)",
                         passed="H / ln n with n real keys, 0 for one-word sentences (3 cases, padding and float64 "
                                "included)")
    except Hint as hint:
        raise _nan_tip(hint, NAN_IN_NORMALISED) from None


# --- Exercise 3 · silence_head(attn, head) ----------------------------------------------------------------

class _ProbedAttention(MultiHeadAttention):
    """A ``cl.MultiHeadAttention`` that compares equal to another when their outputs agree on its probe
    inputs ``(x, source, mask)``: the checker judges an edit by what the module computes, not by its weights."""

    probe: tuple[Tensor, Tensor, Tensor]

    def output(self) -> Tensor:
        with torch.no_grad():
            x, source, mask = self.probe
            return self(x, source, mask=mask)[0]  # [B, T, d_model]

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, _ProbedAttention):
            return NotImplemented
        return bool(torch.allclose(self.output(), other.output(), atol=1e-5, rtol=1e-4))

    __hash__ = nn.Module.__hash__


_HEAD_CASES = [("d_model=8, 2 heads, silence head 0", 8, 2, 0), ("d_model=12, 3 heads, silence head 1", 12, 3, 1),
               ("d_model=16, 4 heads, silence head 3", 16, 4, 3)]


def _module(d_model: int, n_heads: int, seed: int, kind: type[MultiHeadAttention] = MultiHeadAttention) -> Any:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        attn = kind(d_model, n_heads, use_sdpa=False).eval()
        for p in attn.parameters():  # every bias non-zero, so a forgotten bias shows
            nn.init.normal_(p, std=0.3)
    return attn


def _by_hand(attn: MultiHeadAttention, x: Tensor, source: Tensor, mask: Tensor, silent: int) -> Tensor:
    """Multi-head cross-attention written out head by head, leaving out head ``silent``'s context."""
    d = attn.d_head
    w_o = attn.out_proj.weight  # [d_model, d_model]: (out, in)
    out = attn.out_proj.bias.expand(*x.shape[:2], -1)  # [B, T, d_model]
    for h in range(attn.n_heads):
        rows = slice(h * d, (h + 1) * d)
        q = x @ attn.q_proj.weight[rows].T + attn.q_proj.bias[rows]  # [B, T, d_head]
        k = source @ attn.k_proj.weight[rows].T + attn.k_proj.bias[rows]  # [B, S, d_head]
        v = source @ attn.v_proj.weight[rows].T + attn.v_proj.bias[rows]  # [B, S, d_head]
        scores = (q @ k.transpose(1, 2) / math.sqrt(d)).masked_fill(~mask, float("-inf"))  # [B, T, S]
        context = torch.softmax(scores, dim=-1) @ v  # [B, T, d_head]
        if h != silent:
            out = out + context @ w_o[:, rows].T
    return out


def _zero_out_columns(attn: MultiHeadAttention, cols: slice) -> None:
    attn.out_proj.weight[:, cols] = 0.0


def silence_head_reference(attn: MultiHeadAttention, head: int) -> None:
    """Zero the columns of ``out_proj.weight`` that read head ``head``'s context, in place."""
    with torch.no_grad():
        _zero_out_columns(attn, slice(head * attn.d_head, (head + 1) * attn.d_head))


def _silence_cases() -> list[Case]:
    gen = torch.Generator().manual_seed(88)
    cases = []
    for index, (name, d_model, n_heads, head) in enumerate(_HEAD_CASES):
        attn = _module(d_model, n_heads, 90 + index, _ProbedAttention)
        x, source = torch.randn(2, 3, d_model, generator=gen), torch.randn(2, 5, d_model, generator=gen)
        mask = (torch.arange(5) < torch.tensor([5, 3])[:, None])[:, None, None, :]  # [B, 1, 1, S]: sentence 2 padded
        attn.probe = (x, source, mask)
        silenced = copy.deepcopy(attn)
        silence_head_reference(silenced, head)
        with torch.no_grad():  # the reference agrees with attention written out without that head
            assert torch.allclose(silenced.output(), _by_hand(attn, x, source, mask[:, 0], head), atol=1e-5)
        cases.append(Case(name, (attn, head), info={"head": head, "previous": head - 1,
                                                     "next": (head + 1) % n_heads}))
    return cases[1:] + cases[:1]  # head 0 last: there, counting from 1 edits nothing (slice(-d_head, 0))


SILENCE_CASES = _silence_cases()


def _edit(change: Callable[[MultiHeadAttention, int, slice], object]) -> Callable[[MultiHeadAttention, int], None]:
    """An in-place edit ``change(attn, head, the head's columns)`` made under torch.no_grad()."""
    def wrong(attn: MultiHeadAttention, head: int) -> None:
        with torch.no_grad():
            change(attn, head, slice(head * attn.d_head, (head + 1) * attn.d_head))
    return wrong


_NO_GRAD = ("Parameters require gradients, so PyTorch refuses in-place changes to them: change the weights "
            "inside `with torch.no_grad():`")
SILENCE_MISTAKES = [
    Mistake("zeroed_rows", "you zeroed *rows* of out_proj.weight: rows are output features, shared by all heads. "
            "nn.Linear stores weight as [out, in]; head h's context enters through the *columns* "
            "h*d_head:(h+1)*d_head", _edit(lambda a, h, c: a.out_proj.weight[c].zero_())),
    Mistake("interleaved_columns", "you zeroed every n_heads-th column: the heads are not interleaved. merge_heads "
            "puts them side by side, head h in columns h*d_head:(h+1)*d_head",
            _edit(lambda a, h, c: a.out_proj.weight[:, h::a.n_heads].zero_())),
    Mistake("zero_queries", "zero queries do not silence a head: every score q·k becomes 0, the softmax of equal "
            "scores is uniform, and the head outputs the *average* of its values. Zero its columns of "
            "out_proj.weight", _edit(lambda a, h, c: (a.q_proj.weight[c].zero_(), a.q_proj.bias[c].zero_()))),
    Mistake("zero_query_weights", "zeroing the query weights does not silence a head: its attention changes, but it "
            "still writes its values to the output. Zero its columns of out_proj.weight",
            _edit(lambda a, h, c: a.q_proj.weight[c].zero_())),
    Mistake("value_bias_left", "with v_proj's weight rows zeroed, the head's values are its bias "
            "v_proj.bias[...], not 0, and the head still adds out_proj of that constant. Zero the head's columns of "
            "out_proj.weight instead", _edit(lambda a, h, c: a.v_proj.weight[c].zero_())),
    Mistake("zeroed_shared_bias", "you also zeroed out_proj.bias: the bias is shared by all heads, not part of this "
            "one. Zero only the head's columns",
            _edit(lambda a, h, c: (_zero_out_columns(a, c), a.out_proj.bias.zero_()))),
    Mistake("zeroed_every_head", "you zeroed the whole output projection, silencing every head",
            _edit(lambda a, h, c: a.out_proj.weight.zero_())),
    Mistake("counted_from_1", "you silenced head {previous}; the case asks for head {head}: heads count from 0, "
            "head h is columns h*d_head:(h+1)*d_head",
            _edit(lambda a, h, c: _zero_out_columns(a, slice((h - 1) * a.d_head, h * a.d_head)))),
    Mistake("next_head", "you silenced head {next}; the case asks for head {head} (heads count from 0)",
            _edit(lambda a, h, c: _zero_out_columns(a, slice((h + 1) % a.n_heads * a.d_head,
                                                              ((h + 1) % a.n_heads + 1) * a.d_head)))),
    Mistake("module_unchanged", "the module's output did not change. Edit its weights in place, e.g. "
            "attn.out_proj.weight[...] = 0 under torch.no_grad() (a new tensor is not used by the module)",
            lambda attn, head: attn.out_proj.weight[:, head * attn.d_head:(head + 1) * attn.d_head].clone().zero_()),
    Mistake("needs_no_grad", _NO_GRAD, lambda attn, head: _zero_out_columns(
        attn, slice(head * attn.d_head, (head + 1) * attn.d_head))),
    Mistake("needs_no_grad_whole_tensor", _NO_GRAD, lambda attn, head: attn.out_proj.weight.mul_(
        torch.ones_like(attn.out_proj.weight))),
]


def _what_differs(silence_head: Callable[..., Any], case_name: str | None) -> str | None:
    """Where the learner's edited module's output differs from the reference's, for one case."""
    case = next((c for c in SILENCE_CASES if c.name == case_name), None)
    if case is None:
        return None
    attn, head = case.args
    mine, expected = copy.deepcopy(attn), copy.deepcopy(attn)
    silence_head_reference(expected, head)
    try:
        silence_head(mine, head)
        text = describe_difference(mine.output(), expected.output(), "the edited module's output", case.name)
    except Exception:  # noqa: BLE001 - the learner's code; the first run already reported what it does
        return None
    return f"{text}; it should compute attention without head {head}, everything else unchanged"


@checker("Exercise 3 · silence one head")
def check_silence_head(silence_head: Callable[[MultiHeadAttention, int], Any]) -> str:
    """``silence_head(attn, head)`` edits ``attn`` (a ``cl.MultiHeadAttention``) in place so that ``head``
    contributes nothing to the output; compared by output with attention written out head by head."""
    try:
        return run_cases(silence_head, reference=silence_head_reference, cases=SILENCE_CASES,
                         mistakes=SILENCE_MISTAKES, what="silence_head(attn, head)", in_place=0,
                         error_tips=[("leaf Variable", _NO_GRAD)],
                         passed="the head's columns of out_proj.weight zeroed: same output as attention without "
                                "that head (3 cases)")
    except Hint as hint:
        if hint.mistake is None:
            described = _what_differs(silence_head, hint.case)
            if described is not None:
                raise Hint(described, case=hint.case) from None
        raise


# --- Exercise 4 · predict, then verify: a head with zero queries -----------------------------------------
def zero_query_experiment() -> Tensor:
    """Normalised entropy ``[B, T]`` of head 1 of a small module whose query projection for that head is zero,
    on two sentences of 6 and 4 words; asserts that the head's output is the mean of its values."""
    attn = _module(16, 4, 95)
    with torch.no_grad():
        attn.q_proj.weight[4:8] = 0.0  # head 1
        attn.q_proj.bias[4:8] = 0.0
        gen = torch.Generator().manual_seed(96)
        x, source = torch.randn(2, 3, 16, generator=gen), torch.randn(2, 6, 16, generator=gen)
        key_mask = (torch.arange(6) < torch.tensor([6, 4])[:, None])[:, None, None, :]  # [B, 1, 1, S]
        _, weights = attn(x, source, mask=key_mask, need_weights=True)  # [B, H, T, S]
        measured = attention_entropy(weights, key_mask, normalise=True)[:, 1]  # [B, T]
        values = attn.project_source(source).v[:, 1]  # [B, S, d_head]
        context = weights[:, 1] @ values  # [B, T, d_head]
    mean_values = torch.stack([values[0].mean(dim=0), values[1, :4].mean(dim=0)])[:, None]  # [B, 1, d_head]
    assert torch.allclose(context, mean_values.expand_as(context), atol=1e-5)
    return measured


ZERO_QUERY_MISTAKES = [
    Mistake("silent_or_one_word", "you predicted 0 (a head on one word, or silent)", 0.0),
    Mistake("raw_entropy_6_words", "you predicted ln 6 = 1.79, the raw entropy of an even row over 6 words; the "
            "normalised entropy divides it by ln n, so an even row gives 1", math.log(6)),
    Mistake("raw_entropy_4_words", "you predicted ln 4 = 1.39, the raw entropy of an even row over 4 words; the "
            "normalised entropy divides it by ln n, so an even row gives 1", math.log(4)),
]
OUT_OF_RANGE = Mistake("outside_0_1", "a normalised entropy lies between 0 (all weight on one word) and 1 (even "
                       "over the real words)", None)


@checker("Exercise 4 · predict, then verify: a head whose queries are zero")
def check_zero_query_prediction(prediction: Any) -> str:
    """``prediction``: the normalised entropy of every row of a head whose query projection is all zero."""
    if prediction is None:
        raise NotDone("not done yet: set predicted_entropy to a number")
    value = as_float(prediction)
    if value is None or not math.isfinite(value):
        raise Hint(f"predicted_entropy should be a number such as 0.5; got {type(prediction).__name__}",
                   mistake="wrong_type")
    measured = zero_query_experiment()
    result = (f"measured {measured.min():.3f} to {measured.max():.3f} on every row (two sentences, 6 and 4 words). "
              "With q = 0 every score q·k is 0; the softmax of equal scores is uniform over the real words, the "
              "most spread a row can be. The head is not silent: its output is the average of its values over the "
              "source words. Zeroing W_q makes a head uniform; zeroing its columns of W_o (exercise 3) silences it")
    if abs(value - 1.0) <= 0.02:
        return f"right, 1: {result}"
    for mistake in ZERO_QUERY_MISTAKES:
        if abs(value - mistake.wrong) <= 0.02:
            raise Hint(f"{mistake.hint}, but: {result}", mistake=mistake.name)
    if not 0.0 <= value <= 1.0:
        raise Hint(f"you predicted {value:g}, but {OUT_OF_RANGE.hint}: {result}", mistake=OUT_OF_RANGE.name)
    raise Hint(f"you predicted {value:g}, but: {result}")


MISTAKES = {
    "check_attention_entropy": ENTROPY_MISTAKES,
    "check_normalised_entropy": NORMALISED_MISTAKES,
    "check_silence_head": SILENCE_MISTAKES,
    "check_zero_query_prediction": [*ZERO_QUERY_MISTAKES, OUT_OF_RANGE],
}
CASES = {"check_attention_entropy": ENTROPY_CASES, "check_normalised_entropy": NORMALISED_CASES,
         "check_silence_head": SILENCE_CASES}
REFERENCES = {"check_attention_entropy": entropy_reference, "check_normalised_entropy": normalised_reference,
              "check_silence_head": silence_head_reference}
