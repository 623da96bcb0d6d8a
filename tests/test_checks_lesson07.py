"""The lesson 07 checkers: hand-written wrong answers get their hints. What every function checker must do runs in
tests/test_checks_generic.py, over this module's CHECKS, GENERIC and ALTERNATIVES."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from checker_helpers import assert_diagnosed

from course_lib.checks import lesson07

pytestmark = pytest.mark.usefixtures("single_thread")


# --- the solutions, identical in behaviour to solutions/07_toy_translation.ipynb -----------------------
def pad_batch(pairs, pad_id, bos_id, eos_id):
    src_len, tgt_len = max(len(s) for s, _ in pairs), max(len(t) for _, t in pairs) + 1
    src_ids = torch.full((len(pairs), src_len), pad_id, dtype=torch.long)  # [B, S]
    tgt_in = torch.full((len(pairs), tgt_len), pad_id, dtype=torch.long)  # [B, T]
    tgt_out = torch.full((len(pairs), tgt_len), pad_id, dtype=torch.long)  # [B, T]
    for row, (src, tgt) in enumerate(pairs):
        src_ids[row, : len(src)] = torch.tensor(src)
        tgt_in[row, : len(tgt) + 1] = torch.tensor([bos_id, *tgt])
        tgt_out[row, : len(tgt) + 1] = torch.tensor([*tgt, eos_id])
    return src_ids, tgt_in, tgt_out


def greedy_translate(model, src_ids, bos_id, eos_id, max_new_tokens, *, feed="newest", cache_kind="full",
                     pad_after_eos=True, stop="all", keep_bos=False):
    """The solution, and (through the keyword arguments) typical wrong variants of it."""
    memory, _ = model.encode(src_ids)  # [B, S, d_model]
    src_mask = model.source_mask(src_ids)  # [B, 1, 1, S]
    caches = {"full": lambda: model.new_cache(memory), "memory": lambda: model.new_cache(memory, self_kv=False)}
    cache = caches[cache_kind]() if cache_kind in caches else None
    prefix = torch.full((src_ids.shape[0], 1), bos_id, dtype=torch.long)  # [B, 1]
    finished = torch.zeros(src_ids.shape[0], dtype=torch.bool)
    for _ in range(max_new_tokens):
        new = prefix[:, -1:] if feed == "newest" else prefix
        logits = model.decode(new, memory, src_mask, cache=cache).logits  # [B, t, V]
        next_token = logits[:, -1].argmax(dim=-1)  # [B]
        if pad_after_eos:
            next_token = next_token.masked_fill(finished, model.config.pad_id)
        finished = finished | (next_token == eos_id)
        prefix = torch.cat([prefix, next_token[:, None]], dim=1)
        if (stop == "all" and finished.all()) or (stop == "any" and finished.any()):
            break
    return prefix if keep_bos else prefix[:, 1:]


def aer_from_attention(cross_weights, gold_links):
    predicted = {(int(s), j) for j, s in enumerate(cross_weights[:-1].argmax(dim=-1))}
    gold = set(gold_links)
    return 1 - 2 * len(predicted & gold) / (len(predicted) + len(gold))


def best_head(per_head_aer):
    return divmod(int(per_head_aer.argmin()), per_head_aer.shape[1])


# every function checker with its solution: tests/test_checks_generic.py runs over CHECKS, GENERIC, ALTERNATIVES
CHECKS = {"check_pad_batch": (lesson07.check_pad_batch, pad_batch),
          "check_greedy_translate": (lesson07.check_greedy_translate, greedy_translate),
          "check_aer": (lesson07.check_aer, aer_from_attention),
          "check_best_head": (lesson07.check_best_head, best_head)}


def test_titles_follow_one_pattern() -> None:
    for n, (check, _) in enumerate(CHECKS.values(), start=1):
        assert check(None).title.startswith(f"Exercise {n} · ")


# --- correct alternatives (they must pass) ----------------------------------------------------

def pad_with_pad_sequence(pairs, pad_id, bos_id, eos_id):
    def padded(rows):
        return torch.nn.utils.rnn.pad_sequence([torch.tensor(r) for r in rows], batch_first=True,
                                               padding_value=pad_id)
    return (padded([s for s, _ in pairs]), padded([[bos_id, *t] for _, t in pairs]),
            padded([[*t, eos_id] for _, t in pairs]))


def pad_with_f_pad(pairs, pad_id, bos_id, eos_id):
    s, t = max(len(x) for x, _ in pairs), max(len(y) for _, y in pairs) + 1
    row = lambda ids, width: F.pad(torch.tensor(ids, dtype=torch.long), (0, width - len(ids)), value=pad_id)
    return (torch.stack([row(x, s) for x, _ in pairs]), torch.stack([row([bos_id] + y, t) for _, y in pairs]),
            torch.stack([row(y + [eos_id], t) for _, y in pairs]))


def pad_with_numpy(pairs, pad_id, bos_id, eos_id):
    s, t = max(len(x) for x, _ in pairs), max(len(y) for _, y in pairs) + 1
    src, tin, tout = (np.full((len(pairs), w), pad_id, dtype=np.int64) for w in (s, t, t))
    for i, (x, y) in enumerate(pairs):
        src[i, :len(x)], tin[i, :len(y) + 1], tout[i, :len(y) + 1] = x, [bos_id, *y], [*y, eos_id]
    return torch.from_numpy(src), torch.from_numpy(tin), torch.from_numpy(tout)


def greedy_runs_to_the_end(model, src_ids, bos_id, eos_id, max_new_tokens):
    """No early stop, tokens kept in a list, torch.where instead of masked_fill: extra pad columns are fine."""
    with torch.no_grad():
        memory, _ = model.encode(src_ids)
        src_mask = model.source_mask(src_ids)
        cache = model.new_cache(memory, cross_kv=True, self_kv=True)
        last = torch.full((src_ids.shape[0],), bos_id)
        done = torch.zeros(src_ids.shape[0], dtype=torch.bool)
        tokens = []
        for _ in range(max_new_tokens):
            out = model.decode(last[:, None], memory, src_mask, cache=cache)
            last = torch.where(done, torch.full_like(last, model.config.pad_id), out[0][:, -1].argmax(-1))
            done |= last == eos_id
            tokens.append(last)
        return torch.stack(tokens, dim=1)


def greedy_with_logits_softmax(model, src_ids, bos_id, eos_id, max_new_tokens):
    """Argmax of the probabilities, a Python loop condition, a list of columns."""
    memory = model.encode(src_ids)[0]
    mask = model.source_mask(src_ids)
    cache = model.new_cache(memory)
    columns, current = [], torch.full((src_ids.shape[0], 1), bos_id)
    finished = torch.zeros(src_ids.shape[0], dtype=torch.bool)
    while len(columns) < max_new_tokens and not bool(finished.all()):
        probs = model.decode(current, memory, mask, cache=cache).logits.softmax(-1)  # [B, 1, V]
        current = probs.argmax(-1)  # [B, 1]
        current[finished] = model.config.pad_id
        finished = finished | (current[:, 0] == eos_id)
        columns.append(current)
    return torch.cat(columns, dim=1)


def aer_with_the_library(cross_weights, gold_links):
    from course_lib.metrics import alignment_error_rate, argmax_links
    return alignment_error_rate(argmax_links(cross_weights[:-1]), gold_links)


def aer_with_lists(cross_weights, gold_links):
    predicted = [(s, j) for j, s in enumerate(cross_weights[:-1].argmax(dim=-1).tolist())]
    hits = sum(1 for link in predicted if link in gold_links)
    return torch.tensor(1.0 - 2.0 * hits / (len(predicted) + len(gold_links)))  # a 0-d tensor is a number too


def aer_with_numpy(cross_weights, gold_links):
    best = np.asarray(cross_weights[:-1]).argmax(axis=1)
    predicted = {(int(s), j) for j, s in enumerate(best)}
    return np.float64(1 - 2 * len(predicted & set(gold_links)) / (len(predicted) + len(gold_links)))


ALTERNATIVES = [
    ("check_pad_batch", pad_with_pad_sequence), ("check_pad_batch", pad_with_f_pad),
    ("check_pad_batch", pad_with_numpy),
    ("check_greedy_translate", greedy_runs_to_the_end), ("check_greedy_translate", greedy_with_logits_softmax),
    ("check_aer", aer_with_the_library), ("check_aer", aer_with_lists), ("check_aer", aer_with_numpy),
    ("check_best_head", lambda t: tuple(int(i) for i in torch.unravel_index(t.argmin(), t.shape))),
    ("check_best_head", lambda t: (t == t.min()).nonzero()[0].tolist()),
    ("check_best_head", lambda t: np.unravel_index(np.argmin(t.numpy()), t.shape)),
    ("check_best_head", lambda t: (float(t.min(dim=1).values.argmin()), float(t.min(dim=0).values.argmin()))),
]


# --- generic mistake classes ----------------------------------------------------------------------

def _pad_mutating(where: str):
    def wrong(pairs, pad_id, bos_id, eos_id):
        out = pad_batch([(list(s), list(t)) for s, t in pairs], pad_id, bos_id, eos_id)
        for _, tgt in pairs:
            tgt.insert(0, bos_id) if where == "insert" else tgt.append(eos_id)
        return out
    return wrong


def _pad_first_pair_only(pairs, pad_id, bos_id, eos_id):
    return pad_batch(pairs[:1], pad_id, bos_id, eos_id)


def _greedy_first_row_only(model, src_ids, bos_id, eos_id, max_new_tokens):
    return greedy_translate(model, src_ids[:1], bos_id, eos_id, max_new_tokens)


def _greedy_mutating(model, src_ids, bos_id, eos_id, max_new_tokens):
    out = greedy_translate(model, src_ids.clone(), bos_id, eos_id, max_new_tokens)
    src_ids[src_ids == 0] = model.config.pad_id + 1
    return out


def _aer_mutating(cross_weights, gold_links):
    out = aer_from_attention(cross_weights, gold_links)
    gold_links.append((0, 0))
    return out


def _best_mutating(table):
    out = best_head(table)
    table.clamp_(max=0.5)
    return out


GENERIC = [
    ("check_pad_batch", lambda *a: tuple(x.numpy() for x in pad_batch(*a)), "wrong_type", "numpy.ndarray"),
    ("check_pad_batch", lambda *a: tuple(x.tolist() for x in pad_batch(*a)), "wrong_type", "list"),
    ("check_pad_batch", lambda *a: tuple(x.int() for x in pad_batch(*a)), "wrong_dtype", "torch.long"),
    ("check_pad_batch", lambda *a: tuple(x.float() for x in pad_batch(*a)), "wrong_dtype", "torch.long"),
    ("check_pad_batch", lambda *a: pad_batch(*a)[:2], "wrong_type", "a tuple of 3"),
    ("check_pad_batch", _pad_mutating("insert"), "mutated_input", "changed its inputs in place (`pairs`"),
    ("check_pad_batch", _pad_mutating("append"), "mutated_input", "changed its inputs in place (`pairs`"),
    ("check_pad_batch", _pad_first_pair_only, "batch_one_only", "right for a batch of 1"),
    ("check_greedy_translate", lambda *a: greedy_translate(*a).numpy(), "wrong_type", "numpy.ndarray"),
    ("check_greedy_translate", lambda *a: greedy_translate(*a).float(), "wrong_dtype", "torch.float32"),
    ("check_greedy_translate", _greedy_mutating, "mutated_input", "`src_ids`"),
    ("check_greedy_translate", _greedy_first_row_only, "batch_one_only", "right for a batch of 1"),
    ("check_aer", lambda *a: str(aer_from_attention(*a)), "wrong_type", "should be a number"),
    ("check_aer", _aer_mutating, "mutated_input", "`gold_links`"),
    ("check_best_head", _best_mutating, "mutated_input", "`per_head_aer`"),
    ("check_best_head", lambda t: torch.tensor(best_head(t)), "wrong_type", "should return a tuple"),
    ("check_best_head", lambda t: str(best_head(t)), "wrong_type", "should return a tuple"),
]


# --- the wrong answers of the earlier tests, written by hand (each with its phrase) -------------------

@pytest.mark.parametrize("wrong, mistake, phrase", [
    (lambda p, pad, bos, eos: (lambda a, b, c: (a, c, b))(*pad_batch(p, pad, bos, eos)), "in_out_swapped", "swapped"),
    (lambda p, pad, bos, eos: (lambda a, b, c: (a, torch.where(c == eos, pad, c), c))(*pad_batch(p, pad, bos, eos)),
     "no_bos", "no <bos>"),
    (lambda p, pad, bos, eos: (lambda a, b, c: (a, b, torch.where(c == eos, pad, c)))(*pad_batch(p, pad, bos, eos)),
     "no_eos", "no <eos>"),
    (lambda p, pad, bos, eos: pad_batch(p, 0, bos, eos), "padded_with_0", "pad_id here is 3"),
    (lambda p, pad, bos, eos: pad_batch([(s, [*t, eos]) for s, t in p], pad, bos, eos), "one_column_too_long",
     "one column too long"),
])
def test_hand_written_pad_batch_mistakes(wrong, mistake, phrase) -> None:
    assert_diagnosed(lesson07.check_pad_batch(wrong), mistake, phrase)


def test_left_padding_gets_its_hint() -> None:
    def left_padded(pairs, pad_id, bos_id, eos_id):
        src, tgt_in, tgt_out = pad_batch(pairs, pad_id, bos_id, eos_id)
        out = []
        for x in (src, tgt_in, tgt_out):
            rows = [r[r != pad_id].tolist() for r in x]
            out.append(torch.tensor([[pad_id] * (x.shape[1] - len(r)) + r for r in rows]))
        return tuple(out)

    assert_diagnosed(lesson07.check_pad_batch(left_padded), "left_padded", "padding is on the left")


def test_pad_batch_left_padding_only_the_targets_is_named() -> None:
    def targets_left(pairs, pad_id, bos_id, eos_id):
        src = pad_batch(pairs, pad_id, bos_id, eos_id)[0]
        return (src, *lesson07._pad(pairs, pad_id, bos_id, eos_id, left=True)[1:])

    assert lesson07.check_pad_batch(targets_left).mistake == "left_padded"


def test_pad_batch_without_the_plus_one_that_raises_is_named() -> None:
    def no_plus_one(pairs, pad_id, bos_id, eos_id):  # the solution with `+ 1` forgotten in T
        t = max(len(y) for _, y in pairs)
        src = pad_batch(pairs, pad_id, bos_id, eos_id)[0]
        tgt_in = torch.full((len(pairs), t), pad_id, dtype=torch.long)
        for row, (_, tgt) in enumerate(pairs):
            tgt_in[row, : len(tgt) + 1] = torch.tensor([bos_id, *tgt])
        return src, tgt_in, tgt_in

    assert_diagnosed(lesson07.check_pad_batch(no_plus_one), "no_room_for_special_token",
                     "T must be the longest target + 1")


@pytest.mark.parametrize("options, mistake, phrase", [
    (dict(cache_kind="none", feed="all"), "no_cache", "never got a cache"),
    (dict(feed="all"), "whole_prefix_into_cache", "only the newest token"),
    (dict(cache_kind="memory", feed="all"), "whole_prefix_every_step", "whole prefix at every step"),
    (dict(keep_bos=True), "kept_bos", "first column is <bos>"),
    (dict(pad_after_eos=False), "no_pad_after_eos", "continue with the pad id"),
    (dict(stop="any"), "stopped_at_first_eos", "stop only when *every* row"),
])
def test_hand_written_greedy_mistakes(options, mistake, phrase) -> None:
    result = lesson07.check_greedy_translate(lambda *args: greedy_translate(*args, **options))
    assert_diagnosed(result, mistake, phrase)


def test_greedy_item_on_a_batch_is_named() -> None:
    def with_item(model, src_ids, bos_id, eos_id, max_new_tokens):
        memory, _ = model.encode(src_ids)
        src_mask, cache = model.source_mask(src_ids), model.new_cache(memory)
        prefix = torch.full((src_ids.shape[0], 1), bos_id)
        for _ in range(max_new_tokens):
            logits = model.decode(prefix[:, -1:], memory, src_mask, cache=cache).logits
            token = logits[:, -1].argmax(dim=-1).item()  # one number: fine for a batch of 1 only
            prefix = torch.cat([prefix, torch.tensor([[token]])], dim=1)
            if token == eos_id:
                break
        return prefix[:, 1:]

    assert_diagnosed(lesson07.check_greedy_translate(with_item), "item_on_a_batch", ".item()")


def test_greedy_for_one_sentence_only_gets_the_batch_hint() -> None:
    def one_sentence(model, src_ids, bos_id, eos_id, max_new_tokens):
        memory, _ = model.encode(src_ids)
        cache = model.new_cache(memory)
        tokens = [bos_id]
        for _ in range(max_new_tokens):
            new = torch.tensor([[tokens[-1]]])  # [1, 1] whatever the batch
            logits = model.decode(new, memory, model.source_mask(src_ids), cache=cache).logits
            tokens.append(int(logits[0, -1].argmax()))
            if tokens[-1] == eos_id:
                break
        return torch.tensor([tokens[1:]])

    assert_diagnosed(lesson07.check_greedy_translate(one_sentence), "batch_one_only", "right for a batch of 1")


def test_greedy_cases_end_rows_at_different_steps() -> None:
    """The checker's first eos_id finishes some rows early and not others, so padding after <eos> is tested."""
    model, src_ids, bos_id, eos_id, n_new = lesson07.GREEDY_CASES[0].args
    free_run = lesson07.greedy_decode(model, src_ids, bos_id=bos_id, eos_id=None, max_new_tokens=n_new).tokens
    finished_at = [(row == eos_id).nonzero()[0].item() if (row == eos_id).any() else None for row in free_run]
    assert finished_at[0] is not None and finished_at[0] < 7
    assert len(set(finished_at)) == 3, finished_at


def test_greedy_extra_padding_after_all_rows_finished_is_accepted() -> None:
    def padded(*args):
        tokens = greedy_translate(*args)
        return torch.cat([tokens, torch.zeros(tokens.shape[0], 2, dtype=torch.long)], dim=1)

    assert lesson07.check_greedy_translate(padded).passed


def _links(weights, rows):
    return {(int(s), j) for j, s in enumerate(weights[rows].argmax(dim=-1))}


def _aer(predicted, gold, kind="aer"):
    a, g = set(predicted), set(gold)
    return {"aer": 1 - 2 * len(a & g) / (len(a) + len(g)), "recall": 1 - len(a & g) / len(g),
            "precision": 1 - len(a & g) / len(a)}[kind]


def _aer_tensor_links(cross_weights, gold_links):
    predicted = {(s, j) for j, s in enumerate(cross_weights[:-1].argmax(dim=-1))}  # 0-d tensors: hashed by id
    return 1 - 2 * len(predicted & set(gold_links)) / (len(predicted) + len(gold_links))


@pytest.mark.parametrize("wrong, mistake, phrase", [
    (lambda w, g: _aer(_links(w, slice(None)), g), "kept_eos_row", "you kept the last row"),
    (lambda w, g: _aer(_links(w, slice(1, None)), g), "dropped_first_row", "dropped the first row"),
    (lambda w, g: _aer({(j, s) for s, j in _links(w, slice(None, -1))}, g), "links_target_source",
     "(target, source)"),
    (lambda w, g: _aer({(int(t), s) for s, t in enumerate(w[:-1].argmax(dim=0))}, g), "argmax_wrong_axis",
     "wrong axis"),
    (lambda w, g: _aer(_links(w, slice(None, -1)), g, "recall"), "recall_only", "recall only"),
    (lambda w, g: _aer(_links(w, slice(None, -1)), g, "precision"), "precision_only", "precision only"),
    (lambda w, g: 100 * aer_from_attention(w, g), "percentage", "percentage"),
    (lambda w, g: 1 - aer_from_attention(w, g), "agreement_not_error", "the agreement"),
    (_aer_tensor_links, "no_link_matched", "int(...) or .tolist()"),
    (lambda w, g: aer_from_attention(w, g) + 0.01, None, "expected"),
])
def test_hand_written_aer_mistakes(wrong, mistake, phrase) -> None:
    assert_diagnosed(lesson07.check_aer(wrong), mistake, phrase)


def test_aer_first_case_tells_the_mistakes_apart() -> None:
    """In the first case (the one a hint quotes first), each typical mistake gives its own value, and none 1.0."""
    weights, gold = lesson07.AER_CASES[0].args
    values = [lesson07.aer_reference(weights, gold)] + [m.wrong(weights, gold) for m in lesson07.AER_MISTAKES]
    assert len({round(float(v), 6) for v in values}) == len(values), values


@pytest.mark.parametrize("wrong, mistake, phrase", [
    (lambda t: divmod(int(t.argmax()), t.shape[1]), "highest_aer", "*highest* AER"),
    (lambda t: int(t.argmin()), "flat_index", "flattened table"),
    (lambda t: t.argmin(), "flat_index_tensor", "flattened table"),
    (lambda t: divmod(int(t.argmin()), t.shape[1])[::-1], "head_layer_swapped", "(head, layer)"),
    (lambda t: divmod(int(t.argmin()), t.shape[0]), "divided_by_layers", "number of *heads*"),
    (lambda t: (int(t.mean(1).argmin()), int(t[t.mean(1).argmin()].argmin())), "best_layer_first",
     "lowest mean AER"),
    (lambda t: tuple(torch.unravel_index(t.argmin(), t.shape)), "tensors_not_ints", ".item()"),
    (lambda t: tuple(i + 1 for i in best_head(t)), "counted_from_1", "count from 0"),
    (lambda t: (0, 0), None, "yours (0, 0)"),
    (lambda t: [best_head(t)], None, "differs from the reference"),
])
def test_hand_written_best_head_mistakes(wrong, mistake, phrase) -> None:
    assert_diagnosed(lesson07.check_best_head(wrong), mistake, phrase)


def test_best_head_has_a_case_where_the_best_layer_holds_no_best_head() -> None:
    assert any(lesson07._best_in_best_layer(c.args[0]) != best_head(c.args[0]) for c in lesson07.BEST_CASES)
