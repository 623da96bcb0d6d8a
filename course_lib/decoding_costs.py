"""Lesson 06's measurements of decoding, made readable: how the time of one greedy step grows with the step
number ``t`` (per cache mode), a table of those times, the cache sizes of published models, and the comments
that answer the learner's predictions with the numbers of this run.

``seconds`` everywhere is a dict ``{mode: Tensor [N]}``: the wall time of each of ``N`` decoding steps, step 1
first (step 1 also holds each way's once-per-source work, so the windows below start at step 2).
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import NamedTuple

from torch import Tensor

STEP_TIME_SHAPES = ("flat", "linear", "quadratic")


class StepGrowth(NamedTuple):
    """How one mode's step time grows: medians (ms) over an early, a middle and a late window of steps."""

    early_ms: float  # median of the first window (from step 2)
    middle_ms: float  # median of the middle window
    late_ms: float  # median of the last window (ending at step N)
    ratio: float  # late_ms / early_ms
    slope_ms: float  # extra ms per extra prefix token, between the early and late windows' centres
    bend: float  # middle_ms over what a straight line through early and late predicts there (1.0: a line)


def step_windows(n_steps: int, width: int = 8, count: int = 5) -> list[tuple[int, int]]:
    """``count`` windows of ``width`` steps, ``(first, last)`` counted from 1, spread from step 2 to ``n_steps``."""
    if n_steps < width + 1 or count < 2:
        raise ValueError(f"need n_steps >= width + 1 and count >= 2; got n_steps={n_steps}, width={width}, "
                         f"count={count}")
    last_start = n_steps - width + 1
    starts = [round(2 + (last_start - 2) * i / (count - 1)) for i in range(count)]
    return [(s, s + width - 1) for s in starts]


def median_ms(seconds: Tensor, first: int, last: int) -> float:
    """Median time in ms of steps ``first..last`` (counted from 1) of ``seconds [N]``."""
    return seconds[first - 1:last].median().item() * 1e3


def step_growth(seconds: Tensor, width: int = 8) -> StepGrowth:
    """Early, middle and late medians of ``seconds [N]`` and what they say about the growth with ``t``."""
    (a0, a1), _, (m0, m1), _, (z0, z1) = step_windows(len(seconds), width, count=5)
    early, middle, late = median_ms(seconds, a0, a1), median_ms(seconds, m0, m1), median_ms(seconds, z0, z1)
    centre = lambda first, last: (first + last) / 2  # noqa: E731
    slope = (late - early) / (centre(z0, z1) - centre(a0, a1))
    on_line = early + slope * (centre(m0, m1) - centre(a0, a1))
    return StepGrowth(early, middle, late, late / early, slope, middle / on_line)


def step_time_table(seconds: Mapping[str, Tensor], names: Mapping[str, str], width: int = 8) -> str:
    """A text table: per mode, step 1, the median ms per step over 5 windows, the total and the speedup over the
    first mode."""
    first_mode = next(iter(seconds))
    windows = step_windows(len(seconds[first_mode]), width)
    total = {mode: s.sum().item() for mode, s in seconds.items()}
    name_width = max(len(n) for n in names.values()) + 2
    header = f"{'way':{name_width}}{'step 1':>8}" + "".join(f"{f'{a}-{b}':>9}" for a, b in windows)
    lines = ["median ms per step over steps".rjust(name_width + 8 + 9 * len(windows)),
             header + f"{'total':>9}{'speedup':>9}"]
    for mode, s in seconds.items():
        cells = "".join(f"{median_ms(s, a, b):9.1f}" for a, b in windows)
        lines.append(f"{names[mode]:{name_width}}{s[0].item() * 1e3:8.1f}{cells}{total[mode]:8.2f}s"
                     f"{total[first_mode] / total[mode]:8.1f}x")
    return "\n".join(lines)


def measured_shape(growth: StepGrowth) -> str:
    """``"flat"`` when the late steps take under 1.3 times the early ones, else ``"linear"``, or ``"quadratic"``
    when the middle lies more than 15 % below the straight line (a curve that bends upward)."""
    if growth.ratio < 1.3:
        return "flat"
    return "quadratic" if growth.bend < 0.85 else "linear"


def _measured(growth: StepGrowth) -> str:
    return (f"steps at the end took {growth.ratio:.1f}x as long as at the start ({growth.early_ms:.1f} -> "
            f"{growth.late_ms:.1f} ms, {growth.slope_ms:+.3f} ms per extra prefix token)")


def _without_self_cache(guess: str, growth: StepGrowth) -> str:
    seen = measured_shape(growth)
    if seen == "flat":  # e.g. a GPU, where launching the small kernels dominates
        return (f"Here the curve barely rose: {_measured(growth)}. On this device a step is dominated by fixed costs "
                f"(launching many small operations), so the t positions it reprocesses hardly show; "
                f"'{guess}' describes the arithmetic, which still grows with t, and would show at larger sizes.")
    line = (f"the middle of the run took {growth.middle_ms:.1f} ms where a straight line through the ends puts "
            f"{growth.middle_ms / growth.bend:.1f} ms")
    if guess == "linear":
        return (f"Yes: step t pushes all t prefix positions through every layer, so {_measured(growth)}; "
                f"{line}. Self-attention over the prefix adds a t x t term, a small share at these sizes.")
    if guess == "quadratic":
        return (f"Partly: self-attention over the prefix compares t queries with t keys, a t^2 term per step, and the "
                f"*total* over N steps does grow as N^2/2. But per step the t positions' projections and feed-forward "
                f"dominate here: {_measured(growth)}, and {line}. For long prefixes the t^2 term bends the curve up.")
    return (f"The measurement disagrees: {_measured(growth)}. Without the self-attention K/V cache the decoder "
            f"reprocesses the whole prefix, t positions at step t; only the encoder and cross-attention work is "
            f"the same at every step.")


def _with_self_cache(guess: str, growth: StepGrowth, reference: StepGrowth | None) -> str:
    compared = (f", {reference.slope_ms / growth.slope_ms:.0f}x less per token than without the cache"
                if reference is not None and growth.slope_ms > 0 and reference.slope_ms > 0 else "")
    grows = (f"{_measured(growth)}{compared}. Two parts of a cached step do grow with t: the new query is compared "
             f"with t cached keys, and torch.cat copies the t cached positions")
    if guess == "flat":
        return (f"Nearly: {grows}. Next to the fixed work of a step (projections, feed-forward, output layer, Python) "
                f"they are small here, so the curve looks flat; with long outputs they would show.")
    if guess == "linear":
        return (f"Right, strictly speaking: {grows}, both proportional to t. Their slope is small next to the fixed "
                f"work of a step, which is why the curve looks almost flat beside the uncached ways.")
    if guess == "quadratic":
        return (f"Not per step: one new query against t cached keys is t dot products, linear in t; {grows}. "
                f"Quadratic is the *total* time of the uncached ways over N tokens (1 + 2 + ... + N positions).")
    return f"Measured: {grows}. So a cached step does grow a little with t, but far less than an uncached one."


def discuss_step_time_guess(guess: Mapping[str, str | None] | None, growth: Mapping[str, StepGrowth]) -> str:
    """Answer a prediction ``{"cross_kv": shape, "full": shape}`` (each ``"flat"``, ``"linear"`` or
    ``"quadratic"``) about how one step's time grows with ``t``, without (``"cross_kv"``) and with (``"full"``) the
    self-attention K/V cache, using ``growth`` measured per mode. Every answer gets an explanation."""
    guess = dict(guess or {})
    lines = []
    for mode, title in (("cross_kv", "way 3, no self-attention K/V cache"), ("full", "way 4, with it")):
        said = guess.get(mode)
        said = said.strip().lower() if isinstance(said, str) else said
        if said is None:
            intro = "You left this guess empty. "
        elif said not in STEP_TIME_SHAPES:
            intro = f"You wrote {said!r}; the three shapes to choose from are {', '.join(STEP_TIME_SHAPES)}. "
            said = None
        else:
            intro = f"You guessed {said}. "
        if mode == "cross_kv":
            body = _without_self_cache(said, growth[mode]) if said else f"Measured: {_measured(growth[mode])}."
        else:
            body = _with_self_cache(said or "", growth[mode], growth.get("cross_kv"))
        lines.append(f"{title}: {intro}{body}")
    return "\n\n".join(lines)


def discuss_cache_size_guess(guess_ratio: float | None, cache_bytes: int, weight_bytes: int, batch: int) -> str:
    """Answer a prediction of the cache's size as a multiple of the model's weights (``guess_ratio``) with the
    measured ``cache_bytes`` of a batch of ``batch`` sequences."""
    ratio = cache_bytes / weight_bytes
    per_sequence = ratio / batch
    facts = (f"The cache holds {cache_bytes / 2**20:.2f} MiB, {ratio:.1f}x the weights ({weight_bytes / 2**20:.2f} "
             f"MiB); per sequence it is {per_sequence:.2f}x, and the batch has {batch} sequences.")
    if guess_ratio is None:
        return f"You left the guess empty. {facts}"
    if not isinstance(guess_ratio, (int, float)) or guess_ratio <= 0:
        return f"You wrote {guess_ratio!r}; a positive number was asked for (e.g. 0.5 for half the weights). {facts}"
    off = guess_ratio / ratio
    said = f"You guessed {guess_ratio:g}x. {facts}"
    if 2 / 3 <= off <= 1.5:
        return f"{said} Close: you saw that the batch multiplies the cache while the weights are shared."
    if guess_ratio < 1 <= ratio:
        return (f"{said} Most people expect the cache to be a by-product, small next to 'the model'. Per sequence it "
                f"is; but all {batch} sequences share one copy of the weights, and each keeps its own cache.")
    if off < 1:
        return (f"{said} Smaller than measured, by a factor of {1 / off:.1f}. Count again per sequence: keys *and* "
                f"values, in every decoder layer, for every target and every (padded) source position.")
    return (f"{said} Larger than measured, by a factor of {off:.1f}: a cache holds only keys and values, "
            f"d_head numbers per head and position, in the decoder layers only; the weights include every "
            f"matrix of the encoder and the decoder, and the embeddings.")


def cache_size_table(models: Mapping[str, Sequence[float]], kv_bytes: Callable[[int, int, int, int, int, int], float],
                     *, batches: Sequence[int] = (1, 32), tgt_lens: Sequence[int] = (128, 448)) -> str:
    """A text table of full caches: per model ``(decoder layers, heads, d_head, source length S, parameters)`` and
    each batch and target length, the self-attention part, the cross-attention part and their total in float16,
    the total in float32, and the weights in float16. ``kv_bytes(n_layers, batch, n_heads, length, d_head,
    bytes_per_value)`` is the lesson's formula for the keys and values of ``length`` positions."""
    def size(n_bytes: float) -> str:
        return f"{n_bytes / 2**30:.2f} GiB" if n_bytes >= 2**30 else f"{n_bytes / 2**20:.0f} MiB"

    lines = [f"{'model':14}{'S':>5}{'B':>4}{'T':>5} | {'self fp16':>10}{'cross fp16':>11}{'total fp16':>11}"
             f"{'total fp32':>11} | {'weights fp16':>12}"]
    for name, (n_layers, n_heads, d_head, src_len, params) in models.items():
        for batch in batches:
            for tgt_len in tgt_lens:
                self_part = kv_bytes(int(n_layers), batch, int(n_heads), tgt_len, int(d_head), 2)  # [B, H, T, d_head]
                cross_part = kv_bytes(int(n_layers), batch, int(n_heads), int(src_len), int(d_head), 2)  # [.., S, ..]
                both = self_part + cross_part
                lines.append(f"{name:14}{int(src_len):>5}{batch:>4}{tgt_len:>5} | {size(self_part):>10}"
                             f"{size(cross_part):>11}{size(both):>11}{size(2 * both):>11} | {size(2 * params):>12}")
    return "\n".join(lines)
