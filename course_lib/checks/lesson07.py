"""Checkers for the exercises of lesson 07 (toy translation).

Each exercise is its reference, its cases and its list of named mistakes (``MISTAKES``), run by
``_harness.run_cases``. References: ``course_lib.data.collate``, ``course_lib.greedy_decode`` (cache="full")
on a small untrained model, and ``course_lib.metrics`` (``argmax_links``, ``alignment_error_rate``).
"""
from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from ..data import collate
from ..generate import greedy_decode
from ..metrics import alignment_error_rate, argmax_links
from ..model import Seq2SeqTransformer, TransformerConfig
from ._cases import Case, Mistake, call_learner, require_function
from ._harness import run_cases
from ._results import Hint, checker

# --- Exercise 1 · pad_batch(pairs, pad_id, bos_id, eos_id) ----------------------------------------------

Pairs = list[tuple[list[int], list[int]]]


def pad_batch_reference(pairs: Pairs, pad_id: int, bos_id: int, eos_id: int) -> tuple[Tensor, Tensor, Tensor]:
    """``(src_ids [B, S], tgt_in [B, T], tgt_out [B, T])``, torch.long, right-padded, T = longest target + 1."""
    batch = collate(pairs, pad_id=pad_id, bos_id=bos_id, eos_id=eos_id)
    return batch.src_ids, batch.tgt_in, batch.tgt_out


_PAIRS = [  # name, pairs of (source ids, target ids), pad_id, bos_id, eos_id
    ("three pairs of different lengths", [([5, 6, 7], [8]), ([9], [10, 11, 12]), ([4, 5], [6, 7])], 0, 1, 2),
    ("batch of 1", [([5, 6], [7, 8, 9])], 0, 1, 2),
    ("pad_id=3, bos_id=0, eos_id=1", [([5], [6, 7]), ([8, 9, 10], [11])], 3, 0, 1),
]
PAD_CASES = [Case(name, (pairs, pad, bos, eos), batch=len(pairs), info={"pad_id": pad})
             for name, pairs, pad, bos, eos in _PAIRS]


def _rows(rows: Sequence[Sequence[int]], width: int, pad_id: int, *, left: bool = False) -> Tensor:
    return torch.tensor([[pad_id] * (width - len(r)) + [*r] if left else [*r] + [pad_id] * (width - len(r))
                         for r in rows], dtype=torch.long)


def _pad(pairs: Pairs, pad_id: int, bos_id: int, eos_id: int, *, left: bool = False, extra: int = 1,
         bos: bool = True, eos: bool = True, eos_last: bool = False) -> tuple[Tensor, Tensor, Tensor]:
    """pad_batch with one typical mistake switched on (``extra``: T = longest target + extra)."""
    s, t = max(len(src) for src, _ in pairs), max(len(tgt) for _, tgt in pairs) + extra
    ins = [([bos_id] if bos else []) + [*tgt] for _, tgt in pairs]
    outs = [[*tgt] + ([eos_id] if eos else []) for _, tgt in pairs]
    tgt_out = _rows([r[:t] for r in outs], t, pad_id, left=left)
    if eos_last:  # <eos> written into the last column, after the padding
        tgt_out = _rows([tgt for _, tgt in pairs], t, pad_id)
        tgt_out[:, -1] = eos_id
    return (_rows([src for src, _ in pairs], s, pad_id, left=left), _rows([r[:t] for r in ins], t, pad_id, left=left),
            tgt_out)


def _no_plus_one_raising(pairs: Pairs, pad_id: int, bos_id: int, eos_id: int) -> tuple[Tensor, Tensor, Tensor]:
    """The solution with T = longest target: filling the longest row raises."""
    src_len, tgt_len = max(len(s) for s, _ in pairs), max(len(t) for _, t in pairs)
    src_ids = torch.full((len(pairs), src_len), pad_id, dtype=torch.long)
    tgt_in = torch.full((len(pairs), tgt_len), pad_id, dtype=torch.long)
    tgt_out = torch.full((len(pairs), tgt_len), pad_id, dtype=torch.long)
    for row, (src, tgt) in enumerate(pairs):
        src_ids[row, : len(src)] = torch.tensor(src)
        tgt_in[row, : len(tgt) + 1] = torch.tensor([bos_id, *tgt])
        tgt_out[row, : len(tgt) + 1] = torch.tensor([*tgt, eos_id])
    return src_ids, tgt_in, tgt_out


_SHORT = ("T must be the longest target + 1: each row gets *one* extra token, <bos> in front (tgt_in) or <eos> at "
          "the end (tgt_out)")
PAD_MISTAKES = [
    Mistake("left_padded", "the padding is on the left: pad on the right, after the words (the decoder's causal "
            "mask then keeps real positions from ever seeing a pad)",
            lambda p, pad, b, e: _pad(p, pad, b, e, left=True)),
    Mistake("padded_with_0", "you padded with 0, but pad_id here is {pad_id}: use the pad_id argument",
            lambda p, pad, b, e: pad_batch_reference(p, 0, b, e)),
    Mistake("in_out_swapped", "tgt_in and tgt_out are swapped: the decoder *reads* <bos> + target (tgt_in) and must "
            "*predict* target + <eos> (tgt_out)", lambda p, pad, b, e: (lambda s, i, o: (s, o, i))(
                *pad_batch_reference(p, pad, b, e))),
    Mistake("no_bos", "tgt_in has no <bos>: it must start with bos_id, then the target words",
            lambda p, pad, b, e: _pad(p, pad, b, e, bos=False)),
    Mistake("no_eos", "tgt_out has no <eos>: without it the model never learns to stop",
            lambda p, pad, b, e: _pad(p, pad, b, e, eos=False)),
    Mistake("eos_after_padding", "<eos> must come right after each target's last word, then the padding; yours is "
            "in the last column, after the padding", lambda p, pad, b, e: _pad(p, pad, b, e, eos_last=True)),
    Mistake("one_column_too_long", "tgt_in and tgt_out are one column too long. Each row gets *one* extra token: "
            "tgt_in = <bos> + target, tgt_out = target + <eos>, so T = longest target + 1",
            lambda p, pad, b, e: _pad(p, pad, b, e, extra=2), match="shape"),
    Mistake("one_column_short", f"tgt_in and tgt_out are one column short: {_SHORT}",
            lambda p, pad, b, e: _pad(p, pad, b, e, extra=0), match="shape"),
    Mistake("no_room_for_special_token", f"the target rows have no room for the special token: {_SHORT}",
            _no_plus_one_raising),
]
_PARTS = ("src_ids", "tgt_in", "tgt_out")
_LONG = "token ids must be torch.long (int64): the embedding layers look them up by these ids"


def _with_dtype_tip(hint: Hint) -> Hint:
    if hint.mistake == "wrong_dtype":
        return Hint(f"{str(hint).rstrip('.')}: {_LONG}", mistake=hint.mistake, case=hint.case)
    return hint


@checker("Exercise 1 · the padding collate")
def check_pad_batch(pad_batch: Callable[..., Any]) -> str:
    """``pad_batch(pairs, pad_id, bos_id, eos_id) -> (src_ids [B, S], tgt_in [B, T], tgt_out [B, T])``."""
    try:
        return run_cases(pad_batch, reference=pad_batch_reference, cases=PAD_CASES, mistakes=PAD_MISTAKES,
                         what="pad_batch(pairs, pad_id, bos_id, eos_id)", outputs=_PARTS,
                         passed="src_ids, tgt_in = <bos> + target and tgt_out = target + <eos>, right-padded, "
                                "for any special ids")
    except Hint as hint:
        raise _with_dtype_tip(hint) from None


# --- Exercise 2 · greedy_translate(model, src_ids, bos_id, eos_id, max_new_tokens) --------------------------

class _RecordingModel(Seq2SeqTransformer):
    """Remembers, for every ``decode`` call, how many target positions it got and whether a cache came."""

    calls: list[tuple[int, bool]]

    def decode(self, tgt_ids: Tensor, memory: Tensor | None, src_mask: Tensor, *, cache: Any = None,
               need_weights: bool = False) -> Any:
        self.calls.append((int(tgt_ids.shape[1]), cache is not None))
        return super().decode(tgt_ids, memory, src_mask, cache=cache, need_weights=need_weights)


def _small_model(seed: int = 1) -> _RecordingModel:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        config = TransformerConfig(20, 20, d_model=32, n_heads=4, n_encoder_layers=1, n_decoder_layers=2, d_ff=64)
        model = _RecordingModel(config).eval()
    model.calls = []
    return model


def greedy_reference(model: Seq2SeqTransformer, src_ids: Tensor, bos_id: int, eos_id: int,
                     max_new_tokens: int) -> Tensor:
    """The new tokens ``[B, T_new]`` of ``cl.greedy_decode(cache="full")``, rows padded after their <eos>."""
    return greedy_decode(model, src_ids, bos_id=bos_id, eos_id=eos_id, max_new_tokens=max_new_tokens).tokens


def _ending_token(free_run: Tensor) -> int:
    """A token (not pad or bos) of row 0 whose first appearance differs most between rows, so that rows
    finish at different steps when it is the <eos> id."""
    def first_steps(token: int) -> set[int]:
        return {int((row == token).nonzero()[0]) if bool((row == token).any()) else -1 for row in free_run}

    candidates = sorted({t for t in free_run[0, 1:].tolist() if t > 1})
    return max(candidates, key=lambda t: (len(first_steps(t)), -t))


_SOURCES = [("3 sources with padding", [[5, 6, 7, 8], [9, 10, 0, 0], [11, 12, 13, 0]]),
            ("batch of 1", [[7, 8, 9, 10, 11]])]
_BOS, _N_NEW = 1, 8


def _greedy_cases() -> list[Case]:
    model, cases = _small_model(), []
    for name, rows in _SOURCES:
        src_ids = torch.tensor(rows)
        free_run = greedy_decode(model, src_ids, bos_id=_BOS, eos_id=None, max_new_tokens=_N_NEW).tokens
        never = min(set(range(2, 20)) - set(free_run.flatten().tolist()))
        for eos in (_ending_token(free_run), never):  # rows end at different steps; no row ever ends
            cases.append(Case(f"{name}, eos_id={eos}", (model, src_ids, _BOS, eos, _N_NEW), batch=len(rows)))
    return cases


GREEDY_CASES = _greedy_cases()


def _greedy(model: Seq2SeqTransformer, src_ids: Tensor, bos_id: int, eos_id: int, max_new_tokens: int, *,
            feed: str = "newest", cache_kind: str = "full", pad_after_eos: bool = True, stop: str = "all",
            keep_bos: bool = False, mask: str = "padding", eos_to_pad: bool = False, use_eos: bool = True,
            item: bool = False) -> Tensor:
    """The solution, with one typical mistake switched on by a keyword."""
    with torch.no_grad():
        memory, _ = model.encode(src_ids)  # [B, S, d_model]
        src_mask = model.source_mask(src_ids)  # [B, 1, 1, S]
        if mask == "all":
            src_mask = torch.ones_like(src_mask)
        caches = {"full": lambda: model.new_cache(memory), "cross_kv": lambda: model.new_cache(memory, self_kv=False)}
        cache = caches[cache_kind]() if cache_kind in caches else None
        prefix = torch.full((src_ids.shape[0], 1), bos_id, dtype=torch.long)  # [B, 1]
        finished = torch.zeros(src_ids.shape[0], dtype=torch.bool)
        for _ in range(max_new_tokens):
            if cache_kind == "fresh_each_step":
                cache = model.new_cache(memory)
            new = prefix[:, -1:] if feed == "newest" else prefix
            logits = model.decode(new, memory, src_mask, cache=cache).logits  # [B, t, V]
            next_token = logits[:, -1].argmax(dim=-1)  # [B]
            if item:
                next_token = torch.tensor([next_token.item()])
            if not use_eos:
                prefix = torch.cat([prefix, next_token[:, None]], dim=1)
                continue
            if eos_to_pad:
                finished = finished | (next_token == eos_id)
            if pad_after_eos:
                next_token = next_token.masked_fill(finished, model.config.pad_id)
            finished = finished | (next_token == eos_id)
            prefix = torch.cat([prefix, next_token[:, None]], dim=1)
            if (stop == "all" and finished.all()) or (stop == "any" and finished.any()):
                break
    return prefix if keep_bos else prefix[:, 1:]


def _variant(**options: Any) -> Callable[..., Tensor]:
    return lambda model, src_ids, bos_id, eos_id, n: _greedy(model, src_ids, bos_id, eos_id, n, **options)


NO_CACHE = Mistake("no_cache", "the tokens are right, but model.decode never got a cache: create one with "
                   "model.new_cache(memory) and pass cache=... so each step only processes the new token",
                   _variant(cache_kind="none", feed="all"))
WHOLE_PREFIX = Mistake("whole_prefix_every_step", "the tokens are right, but you feed the whole prefix at every "
                       "step: with model.new_cache(memory) (self-attention cache included) pass only the newest "
                       "token, prefix[:, -1:]", _variant(cache_kind="cross_kv", feed="all"))
GREEDY_MISTAKES = [
    Mistake("kept_bos", "the first column is <bos>: return only the new tokens (prefix[:, 1:])",
            _variant(keep_bos=True)),
    Mistake("whole_prefix_into_cache", "with a cache, feed the decoder only the newest token (prefix[:, -1:]): the "
            "earlier ones are already in the cache, so the whole prefix stores them twice and shifts the positions",
            _variant(feed="all")),
    Mistake("new_cache_every_step", "you create a new cache at every step, so the decoder forgets the tokens "
            "before the newest one: call model.new_cache(memory) once, before the loop",
            _variant(cache_kind="fresh_each_step")),
    Mistake("stopped_at_first_eos", "you stopped when the first row finished: stop only when *every* row has "
            "produced <eos> (or after max_new_tokens)", _variant(stop="any")),
    Mistake("no_pad_after_eos", "after a row produces <eos>, it must continue with the pad id (the row is "
            "finished); keep a `finished` flag per row and masked_fill the next token",
            _variant(pad_after_eos=False)),
    Mistake("eos_replaced_by_pad", "the <eos> token itself became pad: mark a row finished *after* its <eos> is "
            "appended; only the tokens after <eos> become pad", _variant(eos_to_pad=True)),
    Mistake("ignores_eos", "your loop ignores eos_id: a row that produces <eos> is finished, it continues with the "
            "pad id, and the loop stops once every row has finished", _variant(use_eos=False)),
    Mistake("source_padding_attended", "the decoder attends to the source's padding: pass "
            "src_mask = model.source_mask(src_ids) (True at real source words), not a mask of all True",
            _variant(mask="all")),
    Mistake("item_on_a_batch", ".item() turns the batch's next tokens into one number, which works only for a "
            "batch of 1: keep the tensor, next_token = logits[:, -1].argmax(dim=-1) ([B], one token per row)",
            _variant(item=True)),
    NO_CACHE,
    WHOLE_PREFIX,
]


def _trailing_pads_trimmed(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn``, with columns of pad ids after every row finished removed: running on is harmless."""
    def run(model: Seq2SeqTransformer, src_ids: Tensor, bos_id: int, eos_id: int, max_new_tokens: int) -> Any:
        out = fn(model, src_ids, bos_id, eos_id, max_new_tokens)
        if isinstance(out, Tensor) and out.ndim == 2:
            width = greedy_reference(copy.deepcopy(model), src_ids.clone(), bos_id, eos_id, max_new_tokens).shape[1]
            if out.shape[1] > width and bool((out[:, width:] == model.config.pad_id).all()):
                out = out[:, :width]
        return out
    return run


def _check_the_loop(greedy_translate: Callable[..., Any]) -> None:
    """The tokens are right: did the loop use the cache, one new token per step?"""
    model = _small_model()
    _, src_ids, bos_id, eos_id, n_new = GREEDY_CASES[0].args
    call_learner(greedy_translate, model, src_ids.clone(), bos_id, eos_id, n_new, what="greedy_translate")
    if not any(with_cache for _, with_cache in model.calls):
        raise Hint(NO_CACHE.hint, mistake=NO_CACHE.name, case=GREEDY_CASES[0].name)
    if any(length > 1 for length, _ in model.calls[1:]):
        raise Hint(WHOLE_PREFIX.hint, mistake=WHOLE_PREFIX.name, case=GREEDY_CASES[0].name)


@checker("Exercise 2 · greedy decoding with a cache")
def check_greedy_translate(greedy_translate: Callable[..., Any]) -> str:
    """``greedy_translate(model, src_ids, bos_id, eos_id, max_new_tokens) -> tokens [B, T_new]`` (no <bos>),
    rows padded with ``model.config.pad_id`` after their <eos>; compared with ``cl.greedy_decode``."""
    what = "greedy_translate(model, src_ids, bos_id, eos_id, max_new_tokens)"
    require_function(greedy_translate, what)
    run_cases(_trailing_pads_trimmed(greedy_translate), reference=greedy_reference, cases=GREEDY_CASES,
              mistakes=GREEDY_MISTAKES, what=what)
    _check_the_loop(greedy_translate)
    return "same tokens as cl.greedy_decode(cache='full'), one new token per step through the cache (4 cases)"


# --- Exercise 3 · aer_from_attention(cross_weights, gold_links) ---------------------------------------------

def aer_reference(cross_weights: Tensor, gold_links: list[tuple[int, int]]) -> float:
    """AER of the argmax links of the word rows (all rows but the last, which predicts <eos>)."""
    return alignment_error_rate(argmax_links(cross_weights[:-1]), gold_links)


def _peaked(argmax_per_row: list[int], n_src: int) -> Tensor:
    """Attention rows ``[len(argmax_per_row), n_src]`` with 0.6 on the given source word, 0.1 elsewhere, normalised."""
    weights = torch.full((len(argmax_per_row), n_src), 0.1)
    weights[torch.arange(len(argmax_per_row)), torch.tensor(argmax_per_row)] = 0.6
    return weights / weights.sum(dim=-1, keepdim=True)


def _aer_cases() -> list[tuple[str, Tensor, list[tuple[int, int]]]]:
    # Gold alignments in general give a word zero, one or several links: here |A| != |G|, so the formula matters.
    # In the first case every mistake below gives its own value (and none gives 1.0).
    return [
        ("5 words, 3 source words, three words with two gold links", _peaked([1, 1, 1, 1, 0, 0], 3),
         [(1, 0), (0, 1), (1, 1), (1, 2), (2, 2), (1, 3), (2, 3), (1, 4)]),
        ("3 words, two of them with two gold links", _peaked([3, 2, 1, 0], 4), [(3, 0), (1, 0), (0, 1), (2, 1),
                                                                                (1, 2)]),
        ("6 words, one with no gold link", _peaked([4, 0, 2, 2, 4, 2, 1], 5),
         [(0, 2), (2, 3), (3, 1), (3, 3), (3, 4), (3, 5), (4, 1), (4, 4)]),
    ]


AER_CASES = [Case(name, (weights, gold)) for name, weights, gold in _aer_cases()]


def _aer(links: Sequence[tuple[int, int]], gold: Sequence[tuple[int, int]], kind: str = "aer") -> float:
    a, g = set(links), set(gold)
    return {"aer": 1 - 2 * len(a & g) / (len(a) + len(g)), "recall": 1 - len(a & g) / len(g),
            "precision": 1 - len(a & g) / len(a)}[kind]


_FORMULA = "AER = 1 - 2|A∩G| / (|A| + |G|)"
AER_MISTAKES = [
    Mistake("percentage", "you returned a percentage; return the fraction (0 = perfect, 1 = disjoint)",
            lambda w, g: 100 * aer_reference(w, g)),
    Mistake("kept_eos_row", "you kept the last row: it predicts <eos>, which is no target word and has no gold "
            "link. Use cross_weights[:-1]", lambda w, g: _aer(argmax_links(w), g)),
    Mistake("dropped_first_row", "you dropped the first row instead of the last: row j (reading the word before, "
            "<bos> for j = 0) is the query that predicts target word j", lambda w, g: _aer(argmax_links(w[1:]), g)),
    Mistake("links_target_source", "your links are (target, source); the gold links are (source index, target "
            "index)", lambda w, g: _aer([(t, s) for s, t in argmax_links(w[:-1])], g)),
    Mistake("argmax_wrong_axis", "argmax over the wrong axis: for each target word (row) take the source word "
            "(column) with the most attention, argmax(dim=-1)",
            lambda w, g: _aer([(s, t) for t, s in enumerate(w[:-1].argmax(dim=0).tolist())], g)),
    Mistake("recall_only", f"that is 1 - |A∩G| / |G| (recall only): {_FORMULA}",
            lambda w, g: _aer(argmax_links(w[:-1]), g, "recall")),
    Mistake("precision_only", f"that is 1 - |A∩G| / |A| (precision only): {_FORMULA}",
            lambda w, g: _aer(argmax_links(w[:-1]), g, "precision")),
    Mistake("agreement_not_error", f"that is 2|A∩G| / (|A| + |G|), the agreement; the error rate is 1 minus it: "
            f"{_FORMULA} (0 = perfect)", lambda w, g: 1 - aer_reference(w, g)),
    Mistake("no_link_matched", "AER 1.0: none of your links matched a gold link. If your links hold tensors (from "
            "iterating over argmax(...)), turn them into ints with int(...) or .tolist(): a tensor is hashed by "
            "identity, so it never meets the gold links' ints in a set", lambda w, g: 1.0),
]


@checker("Exercise 3 · alignment error rate from an attention map")
def check_aer(aer_from_attention: Callable[..., Any]) -> str:
    """``aer_from_attention(cross_weights [T + 1, S], gold_links) -> float``: row ``j`` predicts target word
    ``j``; the last row predicts <eos> and is left out."""
    return run_cases(aer_from_attention, reference=aer_reference, cases=AER_CASES, mistakes=AER_MISTAKES,
                     what="aer_from_attention(cross_weights, gold_links)",
                     passed=f"argmax links of the word rows, {_FORMULA} ({len(AER_CASES)} cases)")


# --- Exercise 4 · best_head(per_head_aer) -------------------------------------------------------------------

def best_head_reference(per_head_aer: Tensor) -> tuple[int, int]:
    """``(layer, head)`` of the lowest AER in the table ``[layers, heads]``."""
    layer, head = divmod(int(per_head_aer.argmin()), per_head_aer.shape[1])
    return layer, head


_TABLES = [("2 layers x 4 heads", torch.tensor([[0.62, 0.55, 0.71, 0.58], [0.31, 0.12, 0.44, 0.27]])),
           ("3 layers x 2 heads", torch.tensor([[0.40, 0.90], [0.35, 0.08], [0.60, 0.20]])),
           ("1 layer x 3 heads", torch.tensor([[0.5, 0.7, 0.2]])),
           ("the best head is not in the layer with the best mean",
            torch.tensor([[0.90, 0.95, 0.85, 0.10], [0.30, 0.32, 0.34, 0.31]]))]
BEST_CASES = [Case(name, (table,)) for name, table in _TABLES]


def _best_in_best_layer(t: Tensor) -> tuple[int, int]:
    layer = int(t.mean(dim=1).argmin())
    return layer, int(t[layer].argmin())


_FLAT = ("you returned one number, the index into the flattened table: return a pair (layer, head), e.g. "
         "divmod(index, number of heads)")
BEST_MISTAKES = [
    Mistake("highest_aer", "that is the head with the *highest* AER: lower AER means better alignment, use argmin",
            lambda t: divmod(int(t.argmax()), t.shape[1])),
    Mistake("flat_index", _FLAT, lambda t: int(t.argmin())),
    Mistake("flat_index_tensor", _FLAT, lambda t: t.argmin()),
    Mistake("head_layer_swapped", "(head, layer) instead of (layer, head)",
            lambda t: divmod(int(t.argmin()), t.shape[1])[::-1]),
    Mistake("divided_by_layers", "to unravel the flat index, divide by the number of *heads* per layer "
            "(table.shape[1]), not the number of layers", lambda t: divmod(int(t.argmin()), t.shape[0])),
    Mistake("best_layer_first", "you took the layer with the lowest mean AER, then its best head; the best head "
            "may sit in another layer: take the argmin over the whole table", _best_in_best_layer),
    Mistake("counted_from_1", "layers and heads count from 0 (the table's row 0 is layer 0): return the indices "
            "as they are, without + 1", lambda t: tuple(i + 1 for i in best_head_reference(t))),
    Mistake("tensors_not_ints", "return two Python ints: take each number out of its 0-d tensor with .item() "
            "(or int(...))", lambda t: tuple(torch.tensor(i) for i in best_head_reference(t))),
]


@checker("Exercise 4 · the best-aligning head")
def check_best_head(best_head: Callable[[Tensor], Any]) -> str:
    """``best_head(per_head_aer [layers, heads]) -> (layer, head)`` with the lowest AER."""
    return run_cases(best_head, reference=best_head_reference, cases=BEST_CASES, mistakes=BEST_MISTAKES,
                     what="best_head(per_head_aer)",
                     passed=f"the (layer, head) with the lowest AER, for any table shape ({len(BEST_CASES)} cases)")


MISTAKES = {
    "check_pad_batch": PAD_MISTAKES,
    "check_greedy_translate": GREEDY_MISTAKES,
    "check_aer": AER_MISTAKES,
    "check_best_head": BEST_MISTAKES,
}
CASES = {"check_pad_batch": PAD_CASES, "check_greedy_translate": GREEDY_CASES, "check_aer": AER_CASES,
         "check_best_head": BEST_CASES}
REFERENCES = {"check_pad_batch": pad_batch_reference, "check_greedy_translate": greedy_reference,
              "check_aer": aer_reference, "check_best_head": best_head_reference}
