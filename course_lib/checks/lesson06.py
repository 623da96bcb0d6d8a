"""Checkers for the exercises of lesson 06 (caching).

Each exercise is its reference, its cases and its list of named mistakes (``MISTAKES``), run by
``_harness.run_cases`` (or ``check_answer`` for the prediction). References: ``F.scaled_dot_product_attention``
over the whole prefix, ``cl.MultiHeadAttention`` attending to the source it projected once, the byte count of a
real ``DecoderCache``, and the counts measured on a real decoder for the prediction.
"""
from __future__ import annotations

import copy
import functools
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from ..attention import MultiHeadAttention
from ..masks import padding_mask
from ..model import Seq2SeqTransformer, TransformerConfig
from ._answers import as_int, check_answer
from ._cases import Case, Mistake, require_function
from ._harness import run_cases
from ._results import Hint, NotDone, checker

# --- Exercise 1 · cached_attention_step(q_new, k_new, v_new, cache_k, cache_v) -----------------------------
AXIS = "concatenate along the time axis, dim=2 of [B, H, T, d_head]: torch.cat([cache_k, k_new], dim=2)"
_STEP_OUTPUTS = ("output", "cache_k", "cache_v")


def step_reference(q_new: Tensor, k_new: Tensor, v_new: Tensor, cache_k: Tensor,
                   cache_v: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """``(output [B, H, 1, d_head], cache_k, cache_v [B, H, t + 1, d_head])``: one query sees every key."""
    k, v = torch.cat([cache_k, k_new], dim=2), torch.cat([cache_v, v_new], dim=2)
    return F.scaled_dot_product_attention(q_new, k, v), k, v


def _step_cases() -> list[Case]:
    gen = torch.Generator().manual_seed(6)
    cases = []
    for name, b, h, t, d, dtype in [  # t: positions already cached
        ("B=2, H=4, 3 cached positions", 2, 4, 3, 8, torch.float32),
        ("batch of 1, 1 cached position", 1, 2, 1, 4, torch.float32),
        ("first step: empty cache (t = 0)", 3, 2, 0, 8, torch.float32),
        ("float64, 6 cached positions", 2, 2, 6, 16, torch.float64),
    ]:
        q_all, k_all, v_all = (torch.randn(b, h, t + 1, d, generator=gen, dtype=dtype) for _ in range(3))
        args = tuple(x.clone() for x in (q_all[:, :, t:], k_all[:, :, t:], v_all[:, :, t:],  # [B, H, 1, d_head]
                                         k_all[:, :, :t], v_all[:, :, :t]))  # [B, H, t, d_head]
        causal = F.scaled_dot_product_attention(q_all, k_all, v_all, is_causal=True)[:, :, t:]  # the last row
        torch.testing.assert_close(step_reference(*args)[0], causal)
        cases.append(Case(name, args, square=False))
    return cases


def _step(q_new: Tensor, k_new: Tensor, v_new: Tensor, cache_k: Tensor, cache_v: Tensor, *, axis: int = 2,
          attend: str = "all", new_first: bool = False, return_old: bool = False, scale: float | None = None,
          is_causal: bool = False) -> tuple[Tensor, Tensor, Tensor]:
    """A cached step, or one typical mistake of it."""
    pairs = ((k_new, cache_k), (v_new, cache_v))
    grown_k, grown_v = (torch.cat([new, old] if new_first else [old, new], dim=axis) for new, old in pairs)
    k, v = {"all": (grown_k, grown_v), "new": (k_new, v_new), "cache": (cache_k, cache_v)}[attend]
    out = F.scaled_dot_product_attention(q_new, k, v, scale=scale, is_causal=is_causal)
    return (out, cache_k, cache_v) if return_old else (out, grown_k, grown_v)


STEP_CASES = _step_cases()
STEP_MISTAKES = [
    Mistake("new_token_only", "your output uses only the new token's key and value: the cached keys and values are "
            "ignored, so the cache is not reused. Attend to torch.cat([cache_k, k_new], dim=2) (and the same for v)",
            lambda *a: _step(*a, attend="new")),
    Mistake("causal_mask_in_step", "a causal mask hides the cached keys: with one query and t + 1 keys, tril / "
            "is_causal=True align to the top-left and let the query see only key 0. The new token is the last "
            "position, so it may see every cached key: a one-token step needs no mask",
            lambda *a: _step(*a, is_causal=True)),
    Mistake("no_scale", "the scores are not scaled: divide q @ k^T by sqrt(d_head)", lambda *a: _step(*a, scale=1.0)),
    Mistake("cache_only", "you attend to the cached keys only: the new token must also see its own key and value "
            "(append first, then attend)", lambda *a: _step(*a, attend="cache")),
    Mistake("cache_not_grown", "the caches you returned did not grow: append this step's key and value to them, or "
            "the next step will not see this token", lambda *a: _step(*a, return_old=True)),
    Mistake("new_in_front", "the new key and value went in front of the cache: append them at the end, "
            "torch.cat([cache, new], dim=2), so position i stays at index i", lambda *a: _step(*a, new_first=True)),
    Mistake("cat_heads_axis", f"you concatenated along dim=1, the heads: {AXIS}", lambda *a: _step(*a, axis=1)),
    Mistake("cat_feature_axis", f"you concatenated along the last dim, the features: {AXIS}",
            lambda *a: _step(*a, axis=-1)),
]


@checker("Exercise 1 · cached_attention_step(q_new, k_new, v_new, cache_k, cache_v)")
def check_cached_attention_step(fn: Callable[..., Any]) -> str:
    """``fn(q_new, k_new, v_new, cache_k, cache_v) -> (output, cache_k, cache_v)``: per-head tensors
    ``[B, H, 1, d_head]`` for the new token and ``[B, H, t, d_head]`` cached; the output must equal the last row
    of causal attention over the whole prefix."""
    torch.set_num_threads(1)  # tiny tensors; @checker restores the learner's thread count
    torch.set_grad_enabled(False)
    return run_cases(fn, reference=step_reference, cases=STEP_CASES, mistakes=STEP_MISTAKES,
                     what="cached_attention_step(q_new, k_new, v_new, cache_k, cache_v)", outputs=_STEP_OUTPUTS,
                     error_tips=[("Sizes of tensors must match", AXIS)],
                     passed=f"equals the last row of causal attention over the whole prefix, and the cache grows by "
                            f"one position ({len(STEP_CASES)} cases, empty cache and float64 included)")


# --- Exercise 2 · make_cross_attention_step(cross_attn, memory, memory_mask) -----------------------------
PROJECTED_X = ("k_proj/v_proj were applied to the decoder state x [B, 1, d_model]: cross-attention keys and "
               "values come from the encoder output, memory [B, S, d_model]")
N_STEPS = 3
_CROSS_OUTPUTS = (f"the outputs of {N_STEPS} steps (stacked)", "memory projections during the steps")


def _drive(make_step: Callable[..., Any], cross_attn: MultiHeadAttention, memory: Tensor, memory_mask: Tensor,
           xs: Tensor, other: Tensor) -> tuple[Any, int]:
    """Use ``make_step`` as a decoder would: build the step, change memory to ``other`` (a step must not read it
    again), then call ``step(x)`` for each ``x`` of ``xs [N_STEPS, B, 1, d_model]``. Returns the outputs stacked,
    ``[N_STEPS, B, 1, d_model]`` (or the first output that is not a tensor), and how many times a tensor of
    memory's shape went through k_proj and v_proj during the steps."""
    given, phase, projections = memory.clone(), ["make"], []

    def count(module: Any, inputs: tuple, output: Any) -> None:
        if phase[0] == "step" and inputs[0].shape[1:] == memory.shape[1:]:
            projections.append(1)

    hooks = [getattr(cross_attn, name).register_forward_hook(count) for name in ("k_proj", "v_proj")]
    try:
        step = make_step(cross_attn, given, memory_mask)
        if not _unchanged_tensor(memory, given):
            memory.copy_(given)  # the learner changed memory in place: let the harness see it
        if not callable(step):
            raise TypeError(f"make_cross_attention_step returned a {type(step).__name__}, not a function step(x)")
        given.copy_(other)
        phase[0] = "step"
        outputs = [step(x) for x in xs]
    finally:
        for hook in hooks:
            hook.remove()
    odd = next((o for o in outputs if not isinstance(o, Tensor) or o.shape != outputs[0].shape), None)
    return (torch.stack(outputs) if odd is None else odd), len(projections) // 2


def _unchanged_tensor(a: Tensor, b: Tensor) -> bool:
    return a.shape == b.shape and bool(((a == b) | (a.isnan() & b.isnan())).all())


def make_step_reference(cross_attn: MultiHeadAttention, memory: Tensor, memory_mask: Tensor) -> Callable[..., Tensor]:
    cross_kv = cross_attn.project_source(memory)  # [B, H, S, d_head] each, once per source
    return lambda x: cross_attn(x, source_kv=cross_kv, mask=memory_mask)[0]


def _driven(make_step: Callable[..., Any]) -> Callable[..., tuple[Any, int]]:
    """``make_step`` as the checker runs it (the learner's original: ``.args[0]``)."""
    return functools.partial(_drive, make_step)


def cross_step_reference(cross_attn: MultiHeadAttention, memory: Tensor, memory_mask: Tensor, xs: Tensor,
                         other: Tensor) -> tuple[Tensor, int]:
    """The outputs ``cross_attn(x, memory, mask=memory_mask)`` for each x, with memory projected once."""
    outputs, projections = _drive(make_step_reference, cross_attn, memory, memory_mask, xs, other)
    expected = torch.stack([cross_attn(x, memory, mask=memory_mask)[0] for x in xs])
    torch.testing.assert_close(outputs, expected)
    return outputs, projections


def _cross_cases() -> list[Case]:
    cases = []
    for name, lengths, s, dtype in [("B=2, the second source padded", [5, 3], 5, torch.float32),
                                    ("batch of 1, no padding", [4], 4, torch.float32),
                                    ("float64", [6, 2], 6, torch.float64)]:
        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(len(name))
            b, d_model = len(lengths), 16
            cross_attn = MultiHeadAttention(d_model, 4).to(dtype).eval()
            memory, other = torch.randn(2, b, s, d_model, dtype=dtype)  # [B, S, d_model] each
            xs = torch.randn(N_STEPS, b, 1, d_model, dtype=dtype)  # one decoder state per step
        memory_mask = padding_mask(torch.tensor(lengths), s)  # [B, 1, 1, S]
        cases.append(Case(name, (cross_attn, memory, memory_mask, xs, other), square=False))
    return cases


def _recomputes(cross_attn: MultiHeadAttention, memory: Tensor, memory_mask: Tensor) -> Callable[..., Tensor]:
    return lambda x: cross_attn(x, memory, mask=memory_mask)[0]


def _lazy(cross_attn: MultiHeadAttention, memory: Tensor, memory_mask: Tensor) -> Callable[..., Tensor]:
    kept: list[Any] = []

    def step(x: Tensor) -> Tensor:
        if not kept:  # projected at the first step, when memory may already have changed
            kept.append(cross_attn.project_source(memory))
        return cross_attn(x, source_kv=kept[0], mask=memory_mask)[0]
    return step


def _reads_memory_by_hand(cross_attn: MultiHeadAttention, memory: Tensor,
                          memory_mask: Tensor) -> Callable[..., Tensor]:
    """Projects memory at every step with F.linear, which no hook on k_proj sees."""
    def step(x: Tensor) -> Tensor:
        k, v = (cross_attn.split_heads(F.linear(memory, p.weight, p.bias)) for p in (cross_attn.k_proj,
                                                                                      cross_attn.v_proj))
        return cross_attn(x, source_kv=(k, v), mask=memory_mask)[0]
    return step


def _projects_x(cross_attn: MultiHeadAttention, memory: Tensor, memory_mask: Tensor) -> Callable[..., Tensor]:
    return lambda x: cross_attn(x, source_kv=cross_attn.project_source(x), mask=memory_mask)[0]


def _self_attention(cross_attn: MultiHeadAttention, memory: Tensor, memory_mask: Tensor) -> Callable[..., Tensor]:
    return lambda x: cross_attn(x)[0]


def _no_mask(cross_attn: MultiHeadAttention, memory: Tensor, memory_mask: Tensor) -> Callable[..., Tensor]:
    cross_kv = cross_attn.project_source(memory)
    return lambda x: cross_attn(x, source_kv=cross_kv)[0]


def _returns_pair(cross_attn: MultiHeadAttention, memory: Tensor, memory_mask: Tensor) -> Callable[..., Any]:
    cross_kv = cross_attn.project_source(memory)
    return lambda x: cross_attn(x, source_kv=cross_kv, mask=memory_mask)


CROSS_CASES = _cross_cases()
CROSS_MISTAKES = [
    Mistake("projects_each_step", f"memory was projected again during the steps ({N_STEPS} times in {N_STEPS} "
            "steps): compute the keys and values once in make_cross_attention_step "
            "(cross_attn.project_source(memory)) and pass them with source_kv=... at every step",
            _driven(_recomputes)),
    Mistake("lazy_projection", "memory was projected at the first step, not in make_cross_attention_step: by then "
            "memory had changed (the checker changes it after your function returns), and the step used the new "
            "one. Project it before returning step", _driven(_lazy)),
    Mistake("reads_memory_later", "step(x) reads memory again at every step (it changed after "
            "make_cross_attention_step returned, and your output followed): use the keys and values projected once",
            _driven(_reads_memory_by_hand)),
    Mistake("kv_from_decoder_state", PROJECTED_X, _driven(_projects_x)),
    Mistake("self_attention", PROJECTED_X + " (cross_attn(x) is self-attention)", _driven(_self_attention)),
    Mistake("no_padding_mask", "the padding mask is not applied: pass mask=memory_mask, or padded source positions "
            "get attention", _driven(_no_mask)),
    Mistake("returns_pair", "step(x) returned a pair: MultiHeadAttention returns (output, attn_weights); return "
            "only the output [B, 1, d_model]", _driven(_returns_pair)),
]


@checker("Exercise 2 · make_cross_attention_step(cross_attn, memory, memory_mask)")
def check_cross_attention_step(make_step: Callable[..., Any]) -> str:
    """``make_step(cross_attn, memory, memory_mask) -> step``; ``step(x [B, 1, d_model]) -> [B, 1, d_model]``
    must equal ``cross_attn(x, memory, mask=memory_mask)[0]`` without projecting ``memory`` again."""
    what = "make_cross_attention_step(cross_attn, memory, memory_mask)"
    require_function(make_step, what)
    torch.set_num_threads(1)
    torch.set_grad_enabled(False)
    try:  # first, is the result a function at all?
        step = make_step(*copy.deepcopy(CROSS_CASES[0].args[:3]))
        crashed = False
    except NotImplementedError:
        raise
    except Exception:  # noqa: BLE001 - run_cases reports it with its case
        step, crashed = None, True
    if not crashed and (isinstance(step, (Tensor, tuple, list)) or not callable(step)):
        raise Hint(f"{what} should return a function step(x), but returned a {type(step).__name__}: project memory "
                   "once, then define and return step", mistake="wrong_type")
    return run_cases(_driven(make_step), reference=cross_step_reference, cases=CROSS_CASES, mistakes=CROSS_MISTAKES,
                     what=f"{what}, then step(x)", outputs=_CROSS_OUTPUTS,
                     passed=f"same output as cross_attn(x, memory), with memory projected once per source "
                            f"({len(CROSS_CASES)} cases, {N_STEPS} steps)")


# --- Exercise 3 · kv_cache_bytes(n_layers, n_heads, d_head, batch, tgt_len, src_len, dtype) --------------------

def kv_cache_bytes_reference(n_layers: int, n_heads: int, d_head: int, batch: int, tgt_len: int, src_len: int,
                             dtype: torch.dtype) -> int:
    """Self-attention K/V cache (tgt_len positions) plus cross-attention K/V (src_len), all decoder layers."""
    return _cache_bytes(n_layers, n_heads, d_head, batch, tgt_len, src_len, dtype)


def _cache_bytes(n_layers: int, n_heads: int, d_head: int, batch: int, tgt_len: int, src_len: int,
                 dtype: torch.dtype, *, nbytes: int | None = None, kv_self: int = 2, kv_cross: int = 2,
                 cross_len: int | None = None) -> int:
    size = torch.finfo(dtype).bits // 8 if nbytes is None else nbytes
    per_position = n_layers * batch * n_heads * d_head * size  # one key (or value) per position, all layers
    return kv_self * per_position * tgt_len + kv_cross * per_position * (src_len if cross_len is None else cross_len)


_SIZE_NAMES = ("n_layers", "n_heads", "d_head", "batch", "tgt_len", "src_len", "dtype")
_REAL_CACHE = (2, 3, 8, 3, 4, 5, torch.float32)  # the real DecoderCache below: 2 layers, 3 heads of 8, B=3, T=4, S=5
SIZE_CASES = [Case(name, (), dict(zip(_SIZE_NAMES, sizes))) for name, *sizes in [
    ("small odd sizes", 3, 5, 7, 11, 13, 17, torch.float32),
    ("T5-base, B=8, T=128, S=512, float16", 12, 12, 64, 8, 128, 512, torch.float16),
    ("Whisper-small, B=1, T=448, S=1500, float32", 12, 12, 64, 1, 448, 1500, torch.float32),
    ("float64", 2, 4, 16, 64, 128, 28, torch.float64),
    ("a real cl.DecoderCache (2 layers, 3 heads, B=3, T=4, S=5)", *_REAL_CACHE),
]]


def _real_cache_bytes() -> int:
    """``nbytes()`` of a ``DecoderCache`` filled by a small model with the sizes of ``_REAL_CACHE``."""
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.default_generator.manual_seed(0)
        model = Seq2SeqTransformer(TransformerConfig(10, 10, d_model=24, n_heads=3, d_ff=32, max_len=8)).eval()
        src_ids = torch.randint(1, 10, (3, 5))
        cache = model.new_cache(model.encode(src_ids)[0])
        model.decode(torch.randint(1, 10, (3, 4)), None, model.source_mask(src_ids), cache=cache)
    return cache.nbytes()


def _size(**changes: Any) -> Callable[..., int]:
    """A wrong byte count: ``changes`` maps a size's name to a function of all the sizes, or sets a keyword
    of ``_cache_bytes`` (nbytes, kv_self, kv_cross, cross_len) likewise."""
    def wrong(**sizes: Any) -> int:
        args = {k: sizes[k] for k in _SIZE_NAMES}
        extra = {k: f(sizes) for k, f in changes.items() if k not in _SIZE_NAMES}
        args.update({k: f(sizes) for k, f in changes.items() if k in _SIZE_NAMES})
        return _cache_bytes(**args, **extra)
    return wrong


_BYTES = lambda s: torch.finfo(s["dtype"]).bits // 8  # noqa: E731
SIZE_MISTAKES = [
    Mistake("no_kv_factor", "the factor 2 is missing: every position stores a key *and* a value",
            _size(kv_self=lambda s: 1, kv_cross=lambda s: 1)),
    Mistake("no_kv_factor_self", "the factor 2 is missing in the self-attention part: keys and values",
            _size(kv_self=lambda s: 1)),
    Mistake("no_kv_factor_cross", "the factor 2 is missing in the cross-attention part: keys and values",
            _size(kv_cross=lambda s: 1)),
    Mistake("no_layers", "the layers are missing: every decoder layer keeps its own keys and values",
            _size(n_layers=lambda s: 1)),
    Mistake("dtype_ignored", "the dtype is ignored: use its size (2 bytes for float16, 4 for float32, 8 for "
            "float64)", _size(nbytes=lambda s: 4)),
    Mistake("encoder_layers_added", "only decoder layers have a cache: n_layers counts the decoder's layers, do not "
            "add the encoder's", _size(n_layers=lambda s: 2 * s["n_layers"])),
    Mistake("d_model_per_head", "you used d_model = n_heads * d_head per head: each head stores d_head numbers per "
            "position", _size(d_head=lambda s: s["n_heads"] * s["d_head"])),
    Mistake("no_batch", "the batch is missing: every sequence in the batch has its own cache",
            _size(batch=lambda s: 1)),
    Mistake("bits_not_bytes", "that is bits, not bytes: a float16 number takes 2 bytes (torch.finfo(dtype).bits // "
            "8, or torch.empty(0, dtype=dtype).element_size())", _size(nbytes=lambda s: 8 * _BYTES(s))),
    Mistake("self_part_only", "only the self-attention part: add the cross-attention keys and values, "
            "[B, H, S, d_head] each per layer", _size(kv_cross=lambda s: 0)),
    Mistake("cross_part_only", "only the cross-attention part: add the self-attention keys and values, "
            "[B, H, T, d_head] each per layer", _size(kv_self=lambda s: 0)),
    Mistake("cross_with_tgt_len", "the cross-attention keys and values have one row per *source* position: use "
            "src_len there, not tgt_len", _size(cross_len=lambda s: s["tgt_len"])),
    Mistake("tensor_result", "return the number as a Python int, e.g. with .item(): a tensor is not a count",
            lambda **s: torch.tensor(kv_cache_bytes_reference(**s))),
]


@checker("Exercise 3 · kv_cache_bytes(n_layers, n_heads, d_head, batch, tgt_len, src_len, dtype)")
def check_kv_cache_bytes(fn: Callable[..., Any]) -> str:
    """``fn(n_layers, n_heads, d_head, batch, tgt_len, src_len, dtype) -> int``: self- plus cross-attention."""
    measured = _real_cache_bytes()
    if kv_cache_bytes_reference(*_REAL_CACHE) != measured:  # pragma: no cover - the library and formula disagree
        raise AssertionError(f"the checker's formula disagrees with DecoderCache.nbytes() ({measured})")
    what = "kv_cache_bytes(n_layers, n_heads, d_head, batch, tgt_len, src_len, dtype)"
    try:
        return run_cases(fn, reference=kv_cache_bytes_reference, cases=SIZE_CASES, mistakes=SIZE_MISTAKES, what=what,
                         passed=f"2 x L x B x H x (T + S) x d_head x bytes, and it matches DecoderCache.nbytes() "
                                f"({len(SIZE_CASES)} cases)")
    except Hint as hint:
        if hint.mistake is None:  # a number, but not the right one
            raise Hint(f"{hint}. Count 2 (K and V) x layers x batch x heads x length x d_head x bytes, once with "
                       "tgt_len (self-attention) and once with src_len (cross-attention)", case=hint.case) from None
        if hint.mistake == "wrong_type" and "tensor(" in str(hint):
            raise Hint(f"{hint}: return a Python int, e.g. with .item()", mistake=hint.mistake,
                       case=hint.case) from None
        raise


# --- Exercise 4 · predict, then verify: the work of one decoding step -----------------------------------------
STEP = 10  # the step asked about: the prefix holds <bos> and 9 written tokens
UNMASKED = STEP * (STEP + 1) // 2  # the scores the causal mask keeps
_POSITIONS_WITHOUT_MISTAKES = [
    Mistake("bos_not_counted", f"the prefix of step {STEP} holds {STEP} tokens, <bos> included, and the decoder "
            "runs over all of them", STEP - 1),
    Mistake("one_position_without_cache", "without the self-attention K/V cache nothing from the earlier steps is "
            f"kept: to get their keys and values the decoder runs over the whole prefix again, {STEP} positions", 1),
    Mistake("positions_are_scores", f"that counts query-key pairs; a position is one token of the prefix: {STEP} "
            "of them go through the projections and the feed-forward blocks", STEP * STEP),
]
_POSITIONS_WITH_MISTAKES = [
    Mistake("whole_prefix_with_cache", "with the self-attention K/V cache the earlier positions' keys and values "
            "are stored: the decoder processes only the newest token", STEP),
    Mistake("no_position_with_cache", "the newest token still goes through the decoder: it needs its own query, "
            "key and value, and its output gives the next token's logits", 0),
]
_SCORES_WITHOUT_MISTAKES = [
    Mistake("no_diagonal", "each position may also attend to itself (the diagonal of the causal mask): "
            f"{UNMASKED} scores survive the mask, of the {STEP * STEP} computed", STEP * (STEP - 1) // 2),
    Mistake("one_row_without_cache", f"that is one query's row: without the cache all {STEP} positions are "
            f"recomputed, each query against {STEP} keys", STEP),
]
_SCORES_WITH_MISTAKES = [
    Mistake("own_key_forgotten", f"the new token also attends to its own key: {STEP - 1} cached keys plus its own",
            STEP - 1),
    Mistake("one_score_with_cache", f"one query, but {STEP} keys: one score per key", 1),
    Mistake("grid_with_cache", f"a cached step feeds one query row, not the whole {STEP} x {STEP} grid: one query "
            f"against {STEP} keys", STEP * STEP),
    Mistake("triangle_with_cache", f"a cached step feeds one query row, not the whole triangle: one query against "
            f"{STEP} keys", UNMASKED),
]


def step_work_experiment() -> dict[str, int]:
    """Step ``STEP`` of greedy decoding on a small untrained model, without (way 3) and with (way 4) the
    self-attention K/V cache: positions fed to the decoder and self-attention scores per sentence, head and layer
    (all of them, and those the causal mask keeps)."""
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.default_generator.manual_seed(0)
        model = Seq2SeqTransformer(TransformerConfig(20, 20, d_model=32, n_heads=4, d_ff=64)).eval()
        src_ids, prefix = torch.randint(3, 20, (2, 6)), torch.randint(3, 20, (2, STEP))
        prefix[:, 0] = 1  # <bos>
        memory, src_mask = model.encode(src_ids)[0], model.source_mask(src_ids)
        fed: list[int] = []
        hook = model.decoder.register_forward_pre_hook(lambda module, args: fed.append(args[0].shape[1]))
        try:
            without = model.decode(prefix, None, src_mask, cache=model.new_cache(memory, self_kv=False),
                                   need_weights=True).self_weights[0]  # [B, H, t, t]
            cache = model.new_cache(memory)
            model.decode(prefix[:, :-1], None, src_mask, cache=cache)  # steps 1 .. t-1, at once
            with_cache = model.decode(prefix[:, -1:], None, src_mask, cache=cache,
                                      need_weights=True).self_weights[0]  # [B, H, 1, t]
        finally:
            hook.remove()
    return {"positions_without": fed[0], "positions_with": fed[-1],
            "scores_without": without.shape[-2] * without.shape[-1],
            "unmasked_without": int((without[0, 0] > 0).sum()),
            "scores_with": with_cache.shape[-2] * with_cache.shape[-1]}


@checker("Exercise 4 · predict: the work of one decoding step")
def check_step_work_prediction(positions_without_cache: Any, positions_with_cache: Any,
                               scores_without_cache: Any, scores_with_cache: Any) -> str:
    """Predicted positions fed to the decoder and self-attention scores (per sentence, head and layer) at step
    ``STEP``, without and with the self-attention K/V cache; every defensible answer gets its explanation."""
    answers = {"positions_without_cache": positions_without_cache, "positions_with_cache": positions_with_cache,
               "scores_without_cache": scores_without_cache, "scores_with_cache": scores_with_cache}
    for name, answer in answers.items():
        if answer is None:
            raise NotDone(f"not done yet: {name} is still None")
    seen = step_work_experiment()
    assert (seen["positions_without"], seen["positions_with"], seen["scores_without"], seen["unmasked_without"],
            seen["scores_with"]) == (STEP, 1, STEP * STEP, UNMASKED, STEP), seen
    template = "{what}: {got} is not it: {hint}"
    check_answer(positions_without_cache, STEP, what="positions_without_cache", mistakes=_POSITIONS_WITHOUT_MISTAKES,
                 template=template, otherwise=f"count the tokens of the prefix at step {STEP}")
    check_answer(positions_with_cache, 1, what="positions_with_cache", mistakes=_POSITIONS_WITH_MISTAKES,
                 template=template, otherwise="with the cache, which tokens still have to go through the decoder?")
    if as_int(scores_without_cache) == UNMASKED:
        grid = (f"{UNMASKED} scores (right, counting those the causal mask keeps; q @ k^T computes all "
                f"{STEP} x {STEP} = {STEP * STEP}, then the mask hides the rest)")
    else:
        check_answer(scores_without_cache, STEP * STEP, what="scores_without_cache", mistakes=_SCORES_WITHOUT_MISTAKES,
                     template=template, otherwise=f"{STEP} queries, each scored against the keys of the prefix")
        grid = (f"{STEP * STEP} scores (right: the whole {STEP} x {STEP} grid q @ k^T; counting only those the "
                f"causal mask keeps, {UNMASKED}, is right too)")
    check_answer(scores_with_cache, STEP, what="scores_with_cache", mistakes=_SCORES_WITH_MISTAKES, template=template,
                 otherwise="count the queries the step feeds in, times the keys each of them sees")
    return (f"measured at step {STEP}: without the self-attention K/V cache {STEP} positions and {grid}; with it 1 "
            f"position and {STEP} scores (one query, {STEP} keys). So an uncached step's work grows like t "
            "(positions through the projections and feed-forward blocks) plus t^2 (the score grid, a small share at "
            "the lesson's sizes): the straight lines of the lesson's timing. A cached step does the work of one "
            "position plus t scores: a slope so small that its curve looks flat")


MISTAKES = {
    "check_cached_attention_step": STEP_MISTAKES,
    "check_cross_attention_step": CROSS_MISTAKES,
    "check_kv_cache_bytes": SIZE_MISTAKES,
    "check_step_work_prediction:positions_without_cache": _POSITIONS_WITHOUT_MISTAKES,
    "check_step_work_prediction:positions_with_cache": _POSITIONS_WITH_MISTAKES,
    "check_step_work_prediction:scores_without_cache": _SCORES_WITHOUT_MISTAKES,
    "check_step_work_prediction:scores_with_cache": _SCORES_WITH_MISTAKES,
}
CASES = {"check_cached_attention_step": STEP_CASES, "check_cross_attention_step": CROSS_CASES,
         "check_kv_cache_bytes": SIZE_CASES}
REFERENCES = {"check_cached_attention_step": step_reference, "check_cross_attention_step": make_step_reference,
              "check_kv_cache_bytes": kv_cache_bytes_reference}
