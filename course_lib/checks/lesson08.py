"""Checkers for the exercises of lesson 08 (attention explorer: entropy of attention, silencing a head).

References: ``torch.distributions.Categorical(probs=...).entropy()`` for the entropy of a row,
``course_lib.metrics.attention_entropy`` for the normalised entropy, and multi-head attention written
out head by head (with one head's context left out) for silencing a head. Each typical wrong answer
(log2, NaN from 0·log 0, the sum over the query axis, padded keys counted, division by ln 1, rows of
the output projection instead of columns, interleaved heads, zeroed queries, ...) is computed and named.
"""
from __future__ import annotations

import copy
import math
import numbers
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from .._checks import shape_str
from ..attention import MultiHeadAttention
from ..metrics import attention_entropy
from ._harness import Hint, NotDone, call_learner, checker, compare, expect_tensor


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


def _no_nan(out: Tensor, expected: Tensor, case: str, hint: str) -> None:
    if not torch.isfinite(out).all() and torch.isfinite(expected).all():
        raise Hint(f"case '{case}': your result has NaN or inf. {hint}")


ZERO_LOG_ZERO = ("0 · ln 0 is 0 · (-inf) = NaN in floating point, but it counts as 0 in the entropy (a key with "
                 "no weight adds nothing): use torch.special.xlogy(p, p), or torch.where(p > 0, p * p.log(), 0)")


@checker("Exercise 1 · entropy of attention rows")
def check_attention_entropy(attention_entropy_fn: Callable[[Tensor], Any]) -> str:
    """``attention_entropy(attn_weights [..., T_q, S]) -> [..., T_q]``: nats, 0 · ln 0 = 0."""
    what = "attention_entropy(attn_weights)"
    for case, weights in _entropy_cases():
        out = call_learner(attention_entropy_fn, weights.clone(), what=what)
        expected = _categorical_entropy(weights)  # [..., T_q]
        out = expect_tensor(out, what)
        s, t_q = weights.shape[-1], weights.shape[-2]
        if out.shape != expected.shape:
            if tuple(out.shape) == (*weights.shape[:-2], s) and s != t_q:
                raise Hint(f"case '{case}': your result has one value per key {shape_str(out.shape)}: you summed over "
                           "the query axis (dim=-2). Each query's row is a distribution over the keys: sum over dim=-1")
            if tuple(out.shape) == (*expected.shape, 1):
                raise Hint(f"case '{case}': shape {shape_str(out.shape)} has an extra axis of size 1: sum without "
                           "keepdim=True")
            if out.numel() == 1:
                raise Hint(f"case '{case}': you returned one number; return one entropy per row, shape "
                           f"{shape_str(expected.shape)} (sum over the key axis only)")
            expect_tensor(out, f"{what} in case '{case}'", expected.shape)
        _no_nan(out, expected, case, ZERO_LOG_ZERO)
        n_keys = torch.full_like(expected, float(s))
        compare(out, expected, what=what, case=case, mistakes=[
            (expected / math.log(2), "these are bits (log2): measure in nats with the natural log, torch.log"),
            (-expected, "the entropy is never negative: H = -sum p ln p (ln p <= 0, so the minus sign makes it >= 0)"),
            (expected / s, "you took the mean over the keys; the entropy is the *sum* of -p ln p"),
            (expected / n_keys.log(), "you divided by ln S: that is the normalised entropy of exercise 2; here "
                                      "return the entropy itself, in nats"),
        ])
    return "-sum p ln p per row (0 · ln 0 = 0), matching Categorical(probs=...).entropy() on 4 cases"


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


def _divide(entropy: Tensor, n: Tensor) -> Tensor:
    return torch.where(n > 1, entropy / n.clamp(min=2).log(), torch.zeros_like(entropy))


@checker("Exercise 2 · normalised entropy")
def check_normalised_entropy(normalised_entropy: Callable[[Tensor, Tensor], Any]) -> str:
    """``normalised_entropy(attn_weights [B, H, T_q, S], key_mask [B, 1, 1, S]) -> [B, H, T_q]``: H / ln n."""
    what = "normalised_entropy(attn_weights, key_mask)"
    for case, weights, key_mask in _normalised_cases():
        out = expect_tensor(call_learner(normalised_entropy, weights.clone(), key_mask.clone(), what=what), what)
        expected = attention_entropy(weights, key_mask, normalise=True)  # [B, H, T_q]
        entropy = _categorical_entropy(weights)
        n_real = key_mask.sum(dim=-1).to(entropy.dtype).expand_as(entropy)  # [B, H, T_q]
        expect_tensor(out, f"{what} in case '{case}'", expected.shape)
        if not torch.isfinite(out).all():
            bad = ~torch.isfinite(out)
            if bool((n_real[bad] <= 1).all()):
                raise Hint(f"case '{case}': NaN or inf for a sentence of {int(n_real[bad].max())} word(s): ln 1 = 0 "
                           "(and ln 0 = -inf), so the division breaks. A row with fewer than 2 keys cannot spread: "
                           "give it 0 with torch.where(n > 1, ..., 0)")
            _no_nan(out, expected, case, ZERO_LOG_ZERO)
        all_keys = torch.full_like(entropy, float(weights.shape[-1]))
        compare(out, expected, what=what, case=case, mistakes=[
            (_divide(entropy, all_keys), "you divided by ln S, the padded length: padded keys do not count. Count "
                                         "the real keys, n = key_mask.sum(dim=-1), and divide by ln n"),
            (_divide(entropy, all_keys - n_real), "n counts the padded keys instead of the real ones: key_mask is "
                                                  "True at real words (the course's convention, True = may attend)"),
            (expected * math.log(2), "a log2 in the denominator with ln in the entropy: use the same log in both "
                                     "(the ratio is then the same for any base)"),
            (expected / math.log(2), "log2 in the entropy but ln in the denominator: use the same log in both"),
            (entropy, "that is the entropy itself; divide it by ln n, n = the number of real keys"),
        ])
    return "H / ln n with n real keys, 0 for one-word sentences (3 cases, padding and float64 included)"


# --- Exercise 3 · silence_head(attn, head) ----------------------------------------------------------------
_HEAD_CASES = [("d_model=8, 2 heads, silence head 0", 8, 2, 0), ("d_model=12, 3 heads, silence head 1", 12, 3, 1),
               ("d_model=16, 4 heads, silence head 3", 16, 4, 3)]


def _module(d_model: int, n_heads: int, seed: int) -> MultiHeadAttention:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        attn = MultiHeadAttention(d_model, n_heads, use_sdpa=False).eval()
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


def _zero_columns(m: MultiHeadAttention, cols: slice, inter: slice) -> None:
    m.out_proj.weight[:, cols] = 0.0


_SILENCE_MISTAKES: list[tuple[Callable[[MultiHeadAttention, slice, slice], object], str]] = [
    (lambda m, cols, inter: m.out_proj.weight[cols].zero_(), "you zeroed *rows* of out_proj.weight: rows are output "
     "features, shared by all heads. nn.Linear stores weight as [out, in]; head h's context enters through the "
     "*columns* h*d_head:(h+1)*d_head"),
    (lambda m, cols, inter: m.out_proj.weight[:, inter].zero_(), "you zeroed every n_heads-th column: the heads are "
     "not interleaved. merge_heads puts them side by side, head h in columns h*d_head:(h+1)*d_head"),
    (lambda m, cols, inter: (m.q_proj.weight[cols].zero_(), m.q_proj.bias[cols].zero_()), "zero queries do not "
     "silence a head: every score q·k becomes 0, the softmax of equal scores is uniform, and the head outputs the "
     "*average* of its values. Zero its columns of out_proj.weight"),
    (lambda m, cols, inter: m.q_proj.weight[cols].zero_(), "zeroing the query weights does not silence a head: its "
     "attention changes, but it still writes its values to the output. Zero its columns of out_proj.weight"),
    (lambda m, cols, inter: m.v_proj.weight[cols].zero_(), "with v_proj's weight rows zeroed, the head's values are "
     "its bias v_proj.bias[...], not 0, and the head still adds out_proj of that constant. Zero the head's columns "
     "of out_proj.weight instead"),
    (lambda m, cols, inter: (_zero_columns(m, cols, inter), m.out_proj.bias.zero_()), "you also zeroed "
     "out_proj.bias: the bias is shared by all heads, not part of this one. Zero only the head's columns"),
    (lambda m, cols, inter: m.out_proj.weight.zero_(), "you zeroed the whole output projection, silencing every head"),
]


def _output_after(attn: MultiHeadAttention, edit: Callable[..., object], edit_args: tuple[slice, slice],
                  inputs: tuple[Tensor, Tensor, Tensor]) -> Tensor:
    """The output of a copy of ``attn`` edited by ``edit(copy, *edit_args)``, for ``(x, source, mask)``."""
    other = copy.deepcopy(attn)
    x, source, mask = inputs
    with torch.no_grad():
        edit(other, *edit_args)
        return other(x, source, mask=mask)[0]


@checker("Exercise 3 · silence one head")
def check_silence_head(silence_head: Callable[[MultiHeadAttention, int], Any]) -> str:
    """``silence_head(attn, head)`` edits ``attn`` (a ``cl.MultiHeadAttention``) in place so that ``head``
    contributes nothing to the output; compared with attention written out head by head."""
    what = "silence_head(attn, head)"
    gen = torch.Generator().manual_seed(88)
    for index, (case, d_model, n_heads, head) in enumerate(_HEAD_CASES):
        attn = _module(d_model, n_heads, 90 + index)
        x, source = torch.randn(2, 3, d_model, generator=gen), torch.randn(2, 5, d_model, generator=gen)
        mask = (torch.arange(5) < torch.tensor([5, 3])[:, None])[:, None, None, :]  # [B, 1, 1, S]: sentence 2 padded
        inputs = (x, source, mask)
        learner = copy.deepcopy(attn)
        try:
            returned = call_learner(silence_head, learner, head, what=what)
        except Hint as hint:
            if "leaf Variable" in str(hint) or "requires grad" in str(hint):
                raise Hint(f"{str(hint).rstrip('.')}. Change weights inside `with torch.no_grad():` (they are "
                           "parameters that require gradients)") from None
            raise
        if isinstance(returned, MultiHeadAttention):
            learner = returned
        with torch.no_grad():
            expected = _by_hand(attn, x, source, mask[:, 0], head)
            out, _ = learner(x, source, mask=mask)
        if torch.equal(out, _output_after(attn, lambda m: None, (), inputs)):
            raise Hint(f"case '{case}': the module's output did not change. Edit its weights in place, e.g. "
                       "attn.out_proj.weight[...] = 0 under torch.no_grad() (a new tensor is not used by the module)")
        d = d_model // n_heads
        edit_args = (slice(head * d, (head + 1) * d), slice(head, None, n_heads))  # the head's columns; interleaved
        mistakes = [(_output_after(attn, edit, edit_args, inputs), hint) for edit, hint in _SILENCE_MISTAKES]
        mistakes += [(_output_after(attn, _zero_columns, (slice(h * d, (h + 1) * d), slice(0)), inputs),
                      f"you silenced head {h}; the case asks for head {head} (heads count from 0)")
                     for h in range(n_heads) if h != head]
        compare(out, expected, what="the output of the edited module", case=case, mistakes=mistakes)
    return "the head's columns of out_proj.weight zeroed: same output as attention without that head (3 cases)"


# --- Exercise 4 · predict, then verify: a head with zero queries -----------------------------------------
@checker("Exercise 4 · predict, then verify: a head whose queries are zero")
def check_zero_query_prediction(prediction: Any) -> str:
    """``prediction``: the normalised entropy of every row of a head whose query projection is all zero."""
    if prediction is None:
        raise NotDone("not done yet: set predicted_entropy to a number")
    if isinstance(prediction, Tensor) and prediction.numel() == 1:
        prediction = prediction.item()
    if not isinstance(prediction, numbers.Real) or isinstance(prediction, bool):
        raise Hint(f"predicted_entropy should be a number such as 0.5; got {type(prediction).__name__}")
    attn = _module(16, 4, 95)
    with torch.no_grad():
        attn.q_proj.weight[4:8] = 0.0  # head 1
        attn.q_proj.bias[4:8] = 0.0
        gen = torch.Generator().manual_seed(96)
        x, source = torch.randn(2, 3, 16, generator=gen), torch.randn(2, 6, 16, generator=gen)
        key_mask = (torch.arange(6) < torch.tensor([6, 4])[:, None])[:, None, None, :]  # [B, 1, 1, S]
        _, weights = attn(x, source, mask=key_mask, need_weights=True)  # [B, H, T, S]
        measured = attention_entropy(weights, key_mask, normalise=True)[:, 1]  # [B, T]
        context = weights[:, 1] @ attn.project_source(source).v[:, 1]  # [B, T, d_head]
    values = attn.project_source(source).v[:, 1].detach()  # [B, S, d_head]
    mean_values = torch.stack([values[0].mean(dim=0), values[1, :4].mean(dim=0)])[:, None]  # [B, 1, d_head]
    assert torch.allclose(context, mean_values.expand_as(context), atol=1e-5)
    result = (f"measured {measured.min():.3f} to {measured.max():.3f} on every row (two sentences, 6 and 4 words). "
              "With q = 0 every score q·k is 0; the softmax of equal scores is uniform over the real words, the "
              "most spread a row can be. The head is not silent: its output is the average of its values over the "
              "source words. Zeroing W_q makes a head uniform; zeroing its columns of W_o (exercise 3) silences it")
    if abs(float(prediction) - 1.0) <= 0.02:
        return f"right, 1: {result}"
    if abs(float(prediction)) <= 0.02:
        raise Hint(f"you predicted 0 (a head on one word, or silent), but: {result}")
    raise Hint(f"you predicted {float(prediction):g}, but: {result}")
