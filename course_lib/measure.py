"""Measuring helpers the lessons call: time, memory, the kernels SDPA runs, calls and parameters.

Lesson 02 measures how attention's cost grows with the length: ``attention_cost`` (on ``attention_benchmark``,
``median_seconds`` and ``peak_memory_bytes``), ``loglog_slope``, ``sdpa_kernels``, ``num_threads``. Lesson 05
counts what a model holds and does: ``parameter_table``, ``CallCounter``. ``python -m course_lib.bench``
builds its tables on the same functions.

Times are medians of ``repeats`` runs timed with ``time.perf_counter`` after a warm-up run.
"""
from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable, Sequence
from functools import partial

import torch
import torch.nn.functional as F
from torch.profiler import ProfilerActivity, profile

from .attention import scaled_dot_product_attention
from .env import num_threads  # noqa: F401 (lesson 02 uses it as measure.num_threads)
from .long_attention import chunked_attention
from .model import Seq2SeqTransformer


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_seconds(fns: dict[str, Callable[[], object]], repeats: int, device: torch.device) -> dict[str, float]:
    """Median wall time of each function over ``repeats`` rounds; each round calls every function once, so a
    change in the machine's load hits all of them alike. The caller warms up first."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            _synchronize(device)
            start = time.perf_counter()
            fn()
            _synchronize(device)
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(ts) for name, ts in times.items()}


def peak_memory_bytes(fn: Callable[[], object], device: torch.device) -> int:
    """Peak bytes that ``fn()`` allocates on ``device`` above what was allocated before it (its output included).

    CUDA: ``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats``. CPU: PyTorch keeps no
    CPU peak counter, so ``fn`` runs under ``torch.profiler.profile(profile_memory=True)``, whose
    allocator events record +bytes for each allocation and -bytes for each free; the peak is the largest
    running total of those events in time order.
    """
    if device.type == "cuda":
        _synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        result = fn()
        _synchronize(device)
        del result
        return torch.cuda.max_memory_allocated(device) - before
    os.environ.setdefault("KINETO_LOG_LEVEL", "6")  # silence the profiler's start/stop lines on stderr
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        result = fn()
        del result
    events = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"]
    running, peak = 0, 0
    for event in sorted(events, key=lambda e: e.start_ns()):
        running += event.nbytes()
        peak = max(peak, running)
    return peak


@torch.no_grad()
def attention_benchmark(
    *, batch: int = 32, heads: int = 4, d_head: int = 16, lengths: Sequence[int] = (128, 512, 1024),
    repeats: int = 3, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32, seed: int = 0,
) -> list[dict]:
    """Self-attention forward on random ``q, k, v`` ``[batch, heads, T, d_head]`` for each ``T`` in ``lengths``.

    Returns one dict per ``T``: ``T``, ``hand_s`` and ``sdpa_s`` (median seconds), ``ratio``
    (``hand_s / sdpa_s``), ``hand_peak_bytes`` and ``sdpa_peak_bytes`` (see ``peak_memory_bytes``),
    ``max_abs_diff`` between the two outputs.
    """
    device = torch.device(device)
    generator = torch.Generator().manual_seed(seed)
    rows = []
    for length in lengths:
        q, k, v = (torch.randn(batch, heads, length, d_head, generator=generator, dtype=dtype).to(device)
                   for _ in range(3))  # each [B, H, T, d_head]
        hand = partial(scaled_dot_product_attention, q, k, v)  # materialises scores [B, H, T, T]
        fused = partial(F.scaled_dot_product_attention, q, k, v)
        max_abs_diff = (hand()[0] - fused()).abs().max().item()  # also the warm-up
        times = median_seconds({"hand": hand, "sdpa": fused}, repeats, device)
        hand_s, sdpa_s = times["hand"], times["sdpa"]
        rows.append(dict(T=length, hand_s=hand_s, sdpa_s=sdpa_s, ratio=hand_s / sdpa_s,
                         hand_peak_bytes=peak_memory_bytes(hand, device),
                         sdpa_peak_bytes=peak_memory_bytes(fused, device), max_abs_diff=max_abs_diff))
    return rows


# --- lesson 02: how attention's cost grows with the length ------------------------------------------------
def loglog_slope(xs: Sequence[float], ys: Sequence[float]) -> float:
    """Least-squares slope of ``log y`` against ``log x``: the exponent ``p`` in ``y ∝ x^p``."""
    if len(xs) != len(ys) or len(xs) < 2 or min(*xs, *ys) <= 0:
        raise ValueError(f"need >= 2 points with positive x and y of equal count; got {len(xs)} x, {len(ys)} y")
    log_x, log_y = torch.tensor(xs, dtype=torch.float64).log(), torch.tensor(ys, dtype=torch.float64).log()
    centred = log_x - log_x.mean()
    return float((centred * (log_y - log_y.mean())).sum() / (centred**2).sum())


def sdpa_kernels(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, **kwargs: object) -> list[str]:
    """The ATen attention kernels ``F.scaled_dot_product_attention(q, k, v, **kwargs)`` runs on this machine, read
    from the profiler: e.g. ``["_scaled_dot_product_flash_attention_for_cpu"]`` (a fused kernel that works through
    the keys in blocks) or ``["_scaled_dot_product_attention_math"]`` (the fallback that stores every score)."""
    os.environ.setdefault("KINETO_LOG_LEVEL", "6")  # silence the profiler's start/stop lines on stderr
    with torch.no_grad(), profile(activities=[ProfilerActivity.CPU]) as prof:
        F.scaled_dot_product_attention(q, k, v, **kwargs)
    names = {event.key.removeprefix("aten::") for event in prof.key_averages() if event.key.startswith("aten::_")}
    return sorted(name for name in names if "attention" in name)


def _sdpa_math_only() -> object | None:
    """A context that forces SDPA onto its math fallback, or None on a torch without ``torch.nn.attention``."""
    try:
        from torch.nn.attention import SDPBackend, sdpa_kernel
    except ImportError:
        return None
    return sdpa_kernel(SDPBackend.MATH)


def _sdpa_math_fallback(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    with _sdpa_math_only():
        return F.scaled_dot_product_attention(q, k, v)


@torch.no_grad()
def attention_cost(
    *, lengths: Sequence[int] = (64, 128, 256, 512, 1024), batch: int = 1, heads: int = 4, d_head: int = 32,
    repeats: int = 5, device: torch.device | str = "cpu", threads: int | None = 1, seed: int = 0,
) -> list[dict]:
    """Lesson 02's measurement: ``attention_benchmark``'s rows, timed on ``threads`` CPU threads (ignored on a GPU),
    each with two more entries: ``score_bytes`` (``B·H·T·T`` × 4 bytes, the score tensor's size computed from its
    shape) and ``math_peak_bytes`` (the peak of ``F.scaled_dot_product_attention`` forced onto its math fallback;
    None where this torch cannot force it)."""
    device = torch.device(device)
    with num_threads(threads if device.type == "cpu" else None):
        rows = attention_benchmark(batch=batch, heads=heads, d_head=d_head, lengths=lengths, repeats=repeats,
                                   device=device, seed=seed)
        generator = torch.Generator().manual_seed(seed)
        for row in rows:
            q, k, v = (torch.randn(batch, heads, row["T"], d_head, generator=generator).to(device)
                       for _ in range(3))  # each [B, H, T, d_head]
            row["score_bytes"] = batch * heads * row["T"] ** 2 * q.element_size()
            row["math_peak_bytes"] = (peak_memory_bytes(partial(_sdpa_math_fallback, q, k, v), device)
                                      if _sdpa_math_only() else None)
    return rows


# --- lesson 05: what a model holds, and the calls of the encoder and the decoder while generating --------------
def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def parameter_table(model: Seq2SeqTransformer) -> str:
    """A ``Seq2SeqTransformer``'s parameters by component, each with its share of the total, as aligned text
    (the first layer of each stack broken down by sublayer; the sinusoidal table is a buffer, not a parameter)."""
    if not isinstance(model, Seq2SeqTransformer):
        raise ValueError(f"model must be a Seq2SeqTransformer; got {type(model).__name__}")
    enc, dec = model.encoder.layers[0], model.decoder.layers[0]
    norms = lambda layer: sum(_count(m) for m in layer.modules() if isinstance(m, torch.nn.LayerNorm))
    rows = [
        (f"source embedding ({model.src_embed.num_embeddings} x {model.src_embed.embedding_dim})",
         _count(model.src_embed)),
        (f"target embedding ({model.tgt_embed.num_embeddings} x {model.tgt_embed.embedding_dim})",
         _count(model.tgt_embed)),
        ("positional encoding (fixed)", _count(model.positions)),
        (f"encoder: {len(model.encoder.layers)} layers x {_count(enc):,}", _count(model.encoder.layers)),
        (f"  per layer: self-attn {_count(enc.self_attn):,}, FFN {_count(enc.ffn):,}, norms {norms(enc)}", None),
        ("encoder final norm", _count(model.encoder.norm)),
        (f"decoder: {len(model.decoder.layers)} layers x {_count(dec):,}", _count(model.decoder.layers)),
        (f"  per layer: self-attn {_count(dec.self_attn):,}, cross-attn {_count(dec.cross_attn):,}, "
         f"FFN {_count(dec.ffn):,}, norms {norms(dec)}", None),
        ("decoder final norm", _count(model.decoder.norm)),
        (f"output layer ({model.output.in_features} -> {model.output.out_features})", _count(model.output)),
    ]
    total = _count(model)
    lines = [f"{name:62} {n:>9,} {n / total:6.1%}" if n is not None else name for name, n in rows]
    return "\n".join([*lines, f"{'total':62} {total:>9,}"])


class CallCounter:
    """Counts the forward calls of named modules and the positions each call processed (``inputs[0].shape[1]``,
    for inputs ``[B, T, ...]``) while used as a context manager::

        with CallCounter(encoder=model.encoder, decoder=model.decoder) as calls:
            ...
        calls.counts  # {"encoder calls": 1, "encoder positions": 6, "decoder calls": 8, ...}

    The hooks are removed on exit. Raises ``ValueError`` without modules or for a value that is not a module.
    """

    def __init__(self, **modules: torch.nn.Module) -> None:
        if not modules or not all(isinstance(m, torch.nn.Module) for m in modules.values()):
            raise ValueError(f"pass modules by name, e.g. CallCounter(encoder=model.encoder); got {modules}")
        self.modules = modules
        self.counts = {f"{name} {what}": 0 for name in modules for what in ("calls", "positions")}
        self._hooks: list = []

    def _count(self, name: str, module: torch.nn.Module, inputs: tuple, output: object) -> None:
        self.counts[f"{name} calls"] += 1
        self.counts[f"{name} positions"] += inputs[0].shape[1]

    def __enter__(self) -> CallCounter:
        self._hooks = [m.register_forward_hook(partial(self._count, name)) for name, m in self.modules.items()]
        return self

    def __exit__(self, *exc_info: object) -> None:
        for hook in self._hooks:
            hook.remove()
        self._hooks = []


# --- lesson 12: cross-attention's cost is a product of two lengths ---------------------------------------------
CROSS_ATTENTION_METHODS = ("hand", "sdpa", "chunked")  # the paths ``cross_attention_cost`` measures


def _check_lengths(name: str, values: Sequence[int]) -> list[int]:
    lengths = list(values)
    if len(lengths) < 2 or any(isinstance(t, bool) or not isinstance(t, int) or t < 1 for t in lengths):
        raise ValueError(f"{name} must hold at least 2 positive int lengths (to fit a slope); got {values!r}")
    return lengths


@torch.no_grad()
def cross_attention_cost(
    t_tgt_values: Sequence[int] = (64, 128, 256, 512, 1024, 2048),
    t_src_values: Sequence[int] = (256, 512, 1024, 2048, 4096, 8192),
    *, fixed_t_tgt: int = 256, fixed_t_src: int = 1024, batch: int = 1, heads: int = 4, d_head: int = 32,
    chunk_size: int = 128, repeats: int = 3, device: torch.device | str = "cpu", threads: int | None = 1,
    seed: int = 0,
) -> dict:
    """Lesson 12's measurement: forward time and peak memory of cross-attention of ``T_tgt`` queries over ``T_src``
    keys for three paths: ``"hand"`` (``attention.scaled_dot_product_attention``, which stores the scores),
    ``"sdpa"`` (``F.scaled_dot_product_attention``) and ``"chunked"`` (``long_attention.chunked_attention`` with
    ``chunk_size`` keys at a time); random float32 ``q [batch, heads, T_tgt, d_head]``, ``k, v [.., T_src, ..]``.

    Two sweeps: ``"t_src"`` grows over ``t_src_values`` with ``T_tgt = fixed_t_tgt``, and ``"t_tgt"`` grows over
    ``t_tgt_values`` with ``T_src = fixed_t_src``. Timed on ``threads`` CPU threads (ignored on a GPU).

    Returns a dict with
        ``"rows"``: one dict per sweep, length and path: ``sweep`` ("t_src" or "t_tgt"), ``t_tgt``, ``t_src``,
        ``method``, ``seconds`` (median of ``repeats``), ``peak_bytes`` (``peak_memory_bytes``), ``score_bytes``
        (``batch·heads·T_tgt·T_src·4``, one score matrix), ``max_abs_diff`` (against SDPA's output);
        ``"slopes"``: ``slopes[sweep][method] = {"seconds": p, "peak_bytes": p}``, each the ``loglog_slope`` of
        that quantity against the growing length;
        ``"settings"``: the arguments.
    Raises ``ValueError`` for fewer than 2 lengths in a sweep or sizes that are not positive ints.
    """
    sweeps = {"t_src": _check_lengths("t_src_values", t_src_values),
              "t_tgt": _check_lengths("t_tgt_values", t_tgt_values)}
    sizes = dict(fixed_t_tgt=fixed_t_tgt, fixed_t_src=fixed_t_src, batch=batch, heads=heads, d_head=d_head,
                 chunk_size=chunk_size, repeats=repeats)
    for name, value in sizes.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int; got {value!r}")
    device = torch.device(device)
    generator = torch.Generator().manual_seed(seed)
    random = lambda length: torch.randn(batch, heads, length, d_head, generator=generator).to(device)  # noqa: E731
    rows: list[dict] = []
    with num_threads(threads if device.type == "cpu" else None):
        for sweep, lengths in sweeps.items():
            for length in lengths:
                t_tgt, t_src = (fixed_t_tgt, length) if sweep == "t_src" else (length, fixed_t_src)
                q, k, v = random(t_tgt), random(t_src), random(t_src)  # [B, H, T_tgt | T_src, d_head]
                calls = {"hand": partial(scaled_dot_product_attention, q, k, v),  # scores [B, H, T_tgt, T_src]
                         "sdpa": partial(F.scaled_dot_product_attention, q, k, v),
                         "chunked": partial(chunked_attention, q, k, v, chunk_size=chunk_size)}
                reference = calls["sdpa"]()
                diffs = {name: float((_output(fn()) - reference).abs().max()) for name, fn in calls.items()}  # warm-up
                seconds = median_seconds(calls, repeats, device)
                for name, fn in calls.items():
                    rows.append(dict(sweep=sweep, t_tgt=t_tgt, t_src=t_src, method=name, seconds=seconds[name],
                                     peak_bytes=peak_memory_bytes(fn, device),
                                     score_bytes=batch * heads * t_tgt * t_src * q.element_size(),
                                     max_abs_diff=diffs[name]))
    slopes: dict[str, dict[str, dict[str, float]]] = {sweep: {} for sweep in sweeps}
    for sweep in sweeps:
        for name in CROSS_ATTENTION_METHODS:
            picked = [r for r in rows if r["sweep"] == sweep and r["method"] == name]
            slopes[sweep][name] = {quantity: loglog_slope([r[sweep] for r in picked], [r[quantity] for r in picked])
                                   for quantity in ("seconds", "peak_bytes")}
    settings = dict(sizes, t_tgt_values=sweeps["t_tgt"], t_src_values=sweeps["t_src"], device=str(device),
                    threads=threads, seed=seed)
    return {"rows": rows, "slopes": slopes, "settings": settings}


def _output(result: torch.Tensor | tuple[torch.Tensor, ...]) -> torch.Tensor:
    """The output of an attention call: the hand-written path returns ``(output, weights)``."""
    return result[0] if isinstance(result, tuple) else result
