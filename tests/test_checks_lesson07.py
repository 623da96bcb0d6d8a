"""The lesson 07 checkers pass the solutions, name each typical mistake, and never raise."""
from __future__ import annotations

import pytest
import torch
from checker_helpers import assert_fail, assert_robust

from course_lib.checks import lesson07

pytestmark = pytest.mark.usefixtures("single_thread")


# Reference solutions, identical in behaviour to solutions/07_toy_translation.ipynb.
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
        logits, _, _ = model.decode(new, memory, src_mask, cache=cache)  # [B, t, V]
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


CHECKS = [(lesson07.check_pad_batch, pad_batch), (lesson07.check_greedy_translate, greedy_translate),
          (lesson07.check_aer, aer_from_attention), (lesson07.check_best_head, best_head)]


@pytest.mark.parametrize("check, solution", CHECKS)
def test_solutions_pass(check, solution) -> None:
    result = check(solution)
    assert result.passed, result


@pytest.mark.parametrize("check", [c for c, _ in CHECKS])
def test_stubs_errors_and_wrong_types_never_raise(check) -> None:
    assert_robust(check, wrong_shape=torch.zeros(2, 2, 2))


# --- padding collate -----------------------------------------------------------------------------------
def _left(pairs, pad_id, bos_id, eos_id):
    return tuple(x.flip(-1).clone() for x in pad_batch([(s[::-1], t[::-1]) for s, t in pairs], pad_id, bos_id, eos_id))


@pytest.mark.parametrize("wrong, phrase", [
    (lambda p, pad, bos, eos: (lambda a, b, c: (a, c, b))(*pad_batch(p, pad, bos, eos)), "swapped"),
    (lambda p, pad, bos, eos: (lambda a, b, c: (a, torch.where(c == eos, pad, c), c))(*pad_batch(p, pad, bos, eos)),
     "no <bos>"),
    (lambda p, pad, bos, eos: (lambda a, b, c: (a, b, torch.where(c == eos, pad, c)))(*pad_batch(p, pad, bos, eos)),
     "no <eos>"),
    (lambda p, pad, bos, eos: pad_batch(p, 0, bos, eos), "padded with 0"),
    (lambda p, pad, bos, eos: tuple(x.float() for x in pad_batch(p, pad, bos, eos)), "torch.long"),
    (lambda p, pad, bos, eos: pad_batch([(s, [*t, eos]) for s, t in p], pad, bos, eos), "one column too long"),
    (lambda p, pad, bos, eos: pad_batch(p, pad, bos, eos)[:2], "three tensors"),
])
def test_pad_batch_mistakes_get_their_hint(wrong, phrase) -> None:
    assert_fail(lesson07.check_pad_batch(wrong), phrase)


def test_left_padding_gets_its_hint() -> None:
    def left_padded(pairs, pad_id, bos_id, eos_id):
        src, tgt_in, tgt_out = pad_batch(pairs, pad_id, bos_id, eos_id)
        out = []
        for x in (src, tgt_in, tgt_out):
            rows = [r[r != pad_id].tolist() for r in x]
            out.append(torch.tensor([[pad_id] * (x.shape[1] - len(r)) + r for r in rows]))
        return tuple(out)

    assert_fail(lesson07.check_pad_batch(left_padded), "padding is on the left")


# --- greedy decoding with a cache ------------------------------------------------------------------------
@pytest.mark.parametrize("options, phrase", [
    (dict(cache_kind="none", feed="all"), "never got a cache"),
    (dict(feed="all"), "only the newest token"),
    (dict(cache_kind="memory", feed="all"), "whole prefix at every step"),
    (dict(keep_bos=True), "first column is <bos>"),
    (dict(pad_after_eos=False), "continue with the pad id"),
    (dict(stop="any"), "stop only when *every* row"),
])
def test_greedy_mistakes_get_their_hint(options, phrase) -> None:
    assert_fail(lesson07.check_greedy_translate(lambda *args: greedy_translate(*args, **options)), phrase)


def test_greedy_cases_end_rows_at_different_steps() -> None:
    """The checker's first eos_id finishes some rows early and not others, so padding after <eos> is tested."""
    model = lesson07._small_model()
    src_ids = torch.tensor(lesson07._SOURCES[0][1])
    free_run = lesson07.greedy_decode(model, src_ids, bos_id=1, eos_id=None, max_new_tokens=8).tokens
    eos = lesson07._ending_token(free_run)
    finished_at = [(row == eos).nonzero()[0].item() if (row == eos).any() else None for row in free_run]
    assert finished_at[0] is not None and finished_at[0] < 7
    assert len(set(finished_at)) == 3, finished_at


def test_greedy_extra_padding_after_all_rows_finished_is_accepted() -> None:
    def padded(*args):
        tokens = greedy_translate(*args)
        return torch.cat([tokens, torch.zeros(tokens.shape[0], 2, dtype=torch.long)], dim=1)

    assert lesson07.check_greedy_translate(padded).passed


# --- AER from attention ----------------------------------------------------------------------------------
def _links(weights, rows):
    return {(int(s), j) for j, s in enumerate(weights[rows].argmax(dim=-1))}


def _aer(predicted, gold, kind="aer"):
    a, g = set(predicted), set(gold)
    return {"aer": 1 - 2 * len(a & g) / (len(a) + len(g)), "recall": 1 - len(a & g) / len(g),
            "precision": 1 - len(a & g) / len(a)}[kind]


@pytest.mark.parametrize("wrong, phrase", [
    (lambda w, g: _aer(_links(w, slice(None)), g), "you kept the last row"),
    (lambda w, g: _aer(_links(w, slice(1, None)), g), "dropped the first row"),
    (lambda w, g: _aer({(j, s) for s, j in _links(w, slice(None, -1))}, g), "(target, source)"),
    (lambda w, g: _aer({(int(t), s) for s, t in enumerate(w[:-1].argmax(dim=0))}, g), "wrong axis"),
    (lambda w, g: _aer(_links(w, slice(None, -1)), g, "recall"), "recall only"),
    (lambda w, g: _aer(_links(w, slice(None, -1)), g, "precision"), "precision only"),
    (lambda w, g: 100 * aer_from_attention(w, g), "percentage"),
    (lambda w, g: 1 - aer_from_attention(w, g), "expected"),
])
def test_aer_mistakes_get_their_hint(wrong, phrase) -> None:
    assert_fail(lesson07.check_aer(wrong), phrase)


def test_aer_cases_tell_the_mistakes_apart() -> None:
    """In every case, each typical mistake gives a value different from the right one and from each other."""
    for _, weights, gold in lesson07._aer_cases():
        right = _links(weights, slice(None, -1))
        values = [aer_from_attention(weights, gold), _aer(_links(weights, slice(None)), gold),
                  _aer(_links(weights, slice(1, None)), gold), _aer({(j, s) for s, j in right}, gold),
                  _aer({(int(t), s) for s, t in enumerate(weights[:-1].argmax(dim=0))}, gold),
                  _aer(right, gold, "recall"), _aer(right, gold, "precision")]
        assert len({round(v, 6) for v in values}) == len(values), values


def test_aer_accepts_a_one_element_tensor() -> None:
    assert lesson07.check_aer(lambda w, g: torch.tensor(aer_from_attention(w, g))).passed


# --- best head -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("wrong, phrase", [
    (lambda t: divmod(int(t.argmax()), t.shape[1]), "*highest* AER"),
    (lambda t: int(t.argmin()), "flattened table"),
    (lambda t: t.argmin(), "flattened table"),
    (lambda t: divmod(int(t.argmin()), t.shape[1])[::-1], "(head, layer)"),
    (lambda t: divmod(int(t.argmin()), t.shape[0]), "number of *heads*"),
    (lambda t: (0, 0), "lowest is"),
])
def test_best_head_mistakes_get_their_hint(wrong, phrase) -> None:
    assert_fail(lesson07.check_best_head(wrong), phrase)


def test_best_head_accepts_tensors_in_the_pair() -> None:
    assert lesson07.check_best_head(lambda t: tuple(torch.tensor(divmod(int(t.argmin()), t.shape[1])))).passed
