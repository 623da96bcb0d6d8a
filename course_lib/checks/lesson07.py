"""Checkers for the exercises of lesson 07 (toy translation).

References: ``course_lib.data.collate``, ``course_lib.greedy_decode`` (cache="full") on a small untrained
model, and ``course_lib.metrics`` (``argmax_links``, ``alignment_error_rate``). Each typical wrong answer
(no <bos>, padding on the left, the whole prefix fed to a cache, the <eos> row counted, argmax instead of
argmin, ...) is computed and named.
"""
from __future__ import annotations

import numbers
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from ..data import collate
from ..generate import greedy_decode
from ..metrics import alignment_error_rate, argmax_links
from ..model import Seq2SeqTransformer, TransformerConfig
from ._harness import Hint, NotDone, call_learner, checker, compare, expect_tensor

_PAIRS = [  # name, pairs of (source ids, target ids), pad_id, bos_id, eos_id
    ("three pairs of different lengths", [([5, 6, 7], [8]), ([9], [10, 11, 12]), ([4, 5], [6, 7])], 0, 1, 2),
    ("batch of 1", [([5, 6], [7, 8, 9])], 0, 1, 2),
    ("pad_id=3, bos_id=0, eos_id=1", [([5], [6, 7]), ([8, 9, 10], [11])], 3, 0, 1),
]


def _left_padded(rows: list[list[int]], pad_id: int) -> Tensor:
    width = max(map(len, rows))
    return torch.tensor([[pad_id] * (width - len(r)) + r for r in rows])


@checker("padding collate")
def check_pad_batch(pad_batch: Callable[..., Any]) -> str:
    """``pad_batch(pairs, pad_id, bos_id, eos_id) -> (src_ids [B, S], tgt_in [B, T], tgt_out [B, T])``."""
    what = "pad_batch(pairs, pad_id, bos_id, eos_id)"
    for name, pairs, pad, bos, eos in _PAIRS:
        out = call_learner(pad_batch, [(list(s), list(t)) for s, t in pairs], pad, bos, eos, what=what)
        if not isinstance(out, (tuple, list)) or len(out) != 3:
            raise Hint(f"{what} should return three tensors (src_ids, tgt_in, tgt_out); got {type(out).__name__}")
        expected = collate(pairs, pad_id=pad, bos_id=bos, eos_id=eos)
        for label, value, ref in zip(("src_ids", "tgt_in", "tgt_out"), out, (expected.src_ids, expected.tgt_in,
                                                                            expected.tgt_out)):
            value = expect_tensor(value, f"{label} from {what}")
            if value.dtype.is_floating_point or value.dtype == torch.bool:
                raise Hint(f"{label} has dtype {value.dtype}: token ids must be integers (torch.long), the "
                           "embedding layers look them up")
            if label != "src_ids" and value.ndim == 2 and value.shape[1] == ref.shape[1] + 1:
                raise Hint(f"case '{name}': {label} is one column too long. Each row gets *one* extra token: "
                           "tgt_in = <bos> + target, tgt_out = target + <eos>, so T = longest target + 1")
            if label != "src_ids" and value.ndim == 2 and value.shape[1] == ref.shape[1] - 1:
                raise Hint(f"case '{name}': {label} is one column short: T must be the longest target + 1, "
                           "room for <bos> (tgt_in) or <eos> (tgt_out)")
            mistakes = [(_left_padded([r[r != pad].tolist() for r in ref], pad),
                         "the padding is on the left: pad on the right, after the words (the decoder's causal "
                         "mask then keeps real positions from ever seeing a pad)")]
            if pad != 0:
                mistakes.append((ref.masked_fill(ref == pad, 0),
                                 f"you padded with 0, but pad_id here is {pad}: use the pad_id argument"))
            if label == "tgt_in":
                mistakes += [(expected.tgt_out, "tgt_in and tgt_out are swapped: the decoder *reads* <bos> + "
                                                "target and must *predict* target + <eos>"),
                             (collate(pairs, pad_id=pad, bos_id=bos, eos_id=pad).tgt_out,
                              "tgt_in has no <bos>: it must start with bos_id, then the target words")]
            if label == "tgt_out":
                mistakes += [(expected.tgt_in, "tgt_in and tgt_out are swapped: tgt_out is target + <eos>"),
                              (collate(pairs, pad_id=pad, bos_id=bos, eos_id=pad).tgt_out,
                               "tgt_out has no <eos>: without it the model never learns to stop")]
            compare(expect_tensor(value, label, expected_shape=ref.shape).double(), ref.double(),
                    what=f"{label} from {what}", case=name, mistakes=[(m.double(), h) for m, h in mistakes])
    return "src_ids, tgt_in = <bos> + target and tgt_out = target + <eos>, right-padded, for any special ids"


def _small_model(seed: int = 1) -> Seq2SeqTransformer:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        config = TransformerConfig(20, 20, d_model=32, n_heads=4, n_encoder_layers=1, n_decoder_layers=2, d_ff=64)
        model = _RecordingModel(config).eval()
    model.calls = []
    return model


class _RecordingModel(Seq2SeqTransformer):
    """Remembers, for every ``decode`` call, how many target positions it got and whether a cache came."""

    calls: list[tuple[int, bool]]

    def decode(self, tgt_ids: Tensor, memory: Tensor | None, src_mask: Tensor, *, cache: Any = None,
               need_weights: bool = False) -> Any:
        self.calls.append((int(tgt_ids.shape[1]), cache is not None))
        return super().decode(tgt_ids, memory, src_mask, cache=cache, need_weights=need_weights)


def _ending_token(free_run: Tensor) -> int:
    """A token (not pad or bos) of row 0 whose first appearance differs most between rows, so that rows
    finish at different steps when it is the <eos> id."""
    def first_steps(token: int) -> set[int]:
        return {int((row == token).nonzero()[0]) if bool((row == token).any()) else -1 for row in free_run}

    candidates = sorted({t for t in free_run[0, 1:].tolist() if t > 1})
    return max(candidates, key=lambda t: (len(first_steps(t)), -t))


_SOURCES = [("3 sources with padding", [[5, 6, 7, 8], [9, 10, 0, 0], [11, 12, 13, 0]]),
            ("batch of 1", [[7, 8, 9, 10, 11]])]


@checker("greedy decoding with a cache")
def check_greedy_translate(greedy_translate: Callable[..., Any]) -> str:
    """``greedy_translate(model, src_ids, bos_id, eos_id, max_new_tokens) -> tokens [B, T_new]`` (no <bos>),
    rows padded with ``model.config.pad_id`` after their <eos>; compared with ``cl.greedy_decode``."""
    what = "greedy_translate(model, src_ids, bos_id, eos_id, max_new_tokens)"
    model, bos, n_new = _small_model(), 1, 8
    for name, rows in _SOURCES:
        src_ids = torch.tensor(rows)
        free_run = greedy_decode(model, src_ids, bos_id=bos, eos_id=None, max_new_tokens=n_new).tokens  # [B, n_new]
        seen = set(free_run.flatten().tolist())
        for eos in (_ending_token(free_run), min(set(range(2, 20)) - seen)):  # rows end at different steps; never
            expected = greedy_decode(model, src_ids, bos_id=bos, eos_id=eos, max_new_tokens=n_new).tokens
            model.calls = []
            out = call_learner(greedy_translate, model, src_ids.clone(), bos, eos, n_new, what=what)
            out = expect_tensor(out, what)
            case = f"{name}, eos_id={eos}"
            if out.ndim == 2 and out.shape[1] == expected.shape[1] + 1 and bool((out[:, 0] == bos).all()):
                raise Hint(f"case '{case}': the first column is <bos>: return only the new tokens (prefix[:, 1:])")
            if out.ndim == 2 and out.shape[0] == expected.shape[0] and out.shape[1] > expected.shape[1] \
                    and bool((out[:, expected.shape[1]:] == model.config.pad_id).all()):
                out = out[:, : expected.shape[1]]  # kept going after every row finished: extra pads are harmless
            if out.ndim == 2 and out.shape[1] < expected.shape[1] and torch.equal(out, expected[:, : out.shape[1]]):
                raise Hint(f"case '{case}': you stopped after {out.shape[1]} tokens, when the first row finished: "
                           "stop only when *every* row has produced <eos> (or after max_new_tokens)")
            fed_prefix = any(length > 1 for length, _ in model.calls[1:])
            if fed_prefix and any(with_cache for _, with_cache in model.calls) and (
                    out.shape != expected.shape or not torch.equal(out.cpu(), expected)):
                raise Hint(f"case '{case}': with a cache, feed the decoder only the newest token "
                           "(prefix[:, -1:]): the earlier ones are already in the cache, so the whole prefix "
                           "stores them twice and shifts the positions")
            expect_tensor(out, what, expected_shape=expected.shape)
            no_eos = free_run[:, : expected.shape[1]]
            compare(out.double().cpu(), expected.double(), what=what, case=case, mistakes=[
                (no_eos.double(), "after a row produces <eos>, it must continue with the pad id (the row is finished); "
                                  "keep a `finished` flag per row and masked_fill the next token"),
            ])
            if not any(with_cache for _, with_cache in model.calls):
                raise Hint("the tokens are right, but model.decode never got a cache: create one with "
                           "model.new_cache(memory) and pass cache=... so each step only processes the new token")
            if fed_prefix:
                raise Hint("the tokens are right, but you feed the whole prefix at every step: with "
                           "model.new_cache(memory) (self-attention cache included) pass only the newest token, "
                           "prefix[:, -1:]")
    return "same tokens as cl.greedy_decode(cache='full'), one new token per step through the cache (4 cases)"


def _number(value: Any, what: str) -> float:
    if value is None:
        raise NotDone(f"not done yet: {what} returned None")
    if isinstance(value, Tensor) and value.numel() == 1:
        value = value.item()
    if not isinstance(value, numbers.Real) or isinstance(value, bool):
        raise Hint(f"{what} should return a number (a float), but returned {type(value).__name__}")
    return float(value)


def _peaked(argmax_per_row: list[int], n_src: int) -> Tensor:
    """Attention rows ``[len(argmax_per_row), n_src]`` with 0.6 on the given source word, 0.1 elsewhere, normalised."""
    weights = torch.full((len(argmax_per_row), n_src), 0.1)
    weights[torch.arange(len(argmax_per_row)), torch.tensor(argmax_per_row)] = 0.6
    return weights / weights.sum(dim=-1, keepdim=True)


def _aer_cases() -> list[tuple[str, Tensor, list[tuple[int, int]]]]:
    # Gold alignments in general give a word zero, one or several links: here |A| != |G|, so the formula matters.
    return [
        ("3 words, two of them with two gold links", _peaked([3, 2, 1, 0], 4), [(3, 0), (1, 0), (0, 1), (2, 1),
                                                                                (1, 2)]),
        ("6 words, one with no gold link", _peaked([4, 0, 2, 2, 4, 2, 1], 5),
         [(0, 2), (2, 3), (3, 1), (3, 3), (3, 4), (3, 5), (4, 1), (4, 4)]),
    ]


def _aer(links: Sequence[tuple[int, int]], gold: Sequence[tuple[int, int]], kind: str = "aer") -> float:
    a, g = set(links), set(gold)
    return {"aer": 1 - 2 * len(a & g) / (len(a) + len(g)), "recall": 1 - len(a & g) / len(g),
            "precision": 1 - len(a & g) / len(a)}[kind]


@checker("alignment error rate from attention")
def check_aer(aer_from_attention: Callable[..., Any]) -> str:
    """``aer_from_attention(cross_weights [T + 1, S], gold_links) -> float``: row ``j`` predicts target word
    ``j``; the last row predicts <eos> and is left out."""
    what = "aer_from_attention(cross_weights, gold_links)"
    for name, weights, gold in _aer_cases():
        out = _number(call_learner(aer_from_attention, weights.clone(), list(gold), what=what), what)
        links = argmax_links(weights[:-1])
        expected = alignment_error_rate(links, gold)
        if abs(out - expected) < 1e-6:
            continue
        if abs(out - 100 * expected) < 1e-4:
            raise Hint(f"case '{name}': you returned a percentage; return the fraction (0 = perfect, 1 = disjoint)")
        mistakes = [
            (alignment_error_rate(argmax_links(weights), gold), "you kept the last row: it predicts <eos>, which "
             "is no target word and has no gold link. Use cross_weights[:-1]"),
            (alignment_error_rate([(s, j) for s, j in argmax_links(weights[1:])], gold), "you dropped the first "
             "row instead of the last: row j (reading the word before, <bos> for j = 0) is the query that predicts "
             "target word j"),
            (alignment_error_rate([(t, s) for s, t in links], gold), "your links are (target, source); the gold "
             "links are (source index, target index)"),
            (alignment_error_rate([(s, t) for t, s in enumerate(weights[:-1].argmax(dim=0).tolist())], gold),
             "argmax over the wrong axis: for each target word (row) take the source word (column) with the "
             "most attention, argmax(dim=-1)"),
            (_aer(links, gold, "recall"), "that is 1 - |A∩G| / |G| (recall only): AER = 1 - 2|A∩G| / (|A| + |G|)"),
            (_aer(links, gold, "precision"), "that is 1 - |A∩G| / |A| (precision only): AER = "
             "1 - 2|A∩G| / (|A| + |G|)"),
        ]
        for value, hint in mistakes:
            if abs(out - value) < 1e-6:
                raise Hint(f"case '{name}': {hint}")
        raise Hint(f"case '{name}': AER {out:.4f}, expected {expected:.4f} (predicted links {links})")
    return "argmax links of the word rows, AER = 1 - 2|A∩G| / (|A| + |G|) (2 cases)"


_TABLES = [("2 layers x 4 heads", torch.tensor([[0.62, 0.55, 0.71, 0.58], [0.31, 0.12, 0.44, 0.27]])),
           ("3 layers x 2 heads", torch.tensor([[0.40, 0.90], [0.35, 0.08], [0.60, 0.20]])),
           ("1 layer x 3 heads", torch.tensor([[0.5, 0.7, 0.2]]))]


@checker("the best-aligning head")
def check_best_head(best_head: Callable[[Tensor], Any]) -> str:
    """``best_head(per_head_aer [layers, heads]) -> (layer, head)`` with the lowest AER."""
    what = "best_head(per_head_aer)"
    for name, table in _TABLES:
        out = call_learner(best_head, table.clone(), what=what)
        layers, heads = table.shape
        flat = int(table.argmin())
        if (isinstance(out, numbers.Integral) and not isinstance(out, bool)) or (isinstance(out, Tensor)
                                                                                 and out.numel() == 1):
            raise Hint(f"case '{name}': you returned one number ({int(out)}), the index into the flattened table: "
                       "return a pair (layer, head), e.g. divmod(index, number of heads)")
        if not isinstance(out, (tuple, list)) or len(out) != 2:
            raise Hint(f"{what} should return a pair (layer, head); got {type(out).__name__}")
        try:
            layer, head = (int(v) for v in out)
        except (TypeError, ValueError, RuntimeError):
            raise Hint(f"{what} should return two integers (layer, head); got {out!r}") from None
        expected = divmod(flat, heads)
        if (layer, head) == expected:
            continue
        if (layer, head) == divmod(int(table.argmax()), heads):
            raise Hint(f"case '{name}': that is the head with the *highest* AER: lower AER means better alignment, "
                       "use argmin")
        if (head, layer) == expected:
            raise Hint(f"case '{name}': (head, layer) instead of (layer, head)")
        if (layer, head) == divmod(flat, layers):
            raise Hint(f"case '{name}': to unravel the flat index, divide by the number of *heads* per layer "
                       "(table.shape[1]), not the number of layers")
        raise Hint(f"case '{name}': ({layer}, {head}) has AER {table[layer % layers, head % heads]:.2f}; the "
                   f"lowest is {table.min():.2f}")
    return "the (layer, head) with the lowest AER, for any table shape (3 cases)"
