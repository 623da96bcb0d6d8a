"""Order and time in cross-attention (lesson 13): relative position biases and time-restricted masks.

Cross-attention sees its keys as a *set*: permute the source's keys and values together and the output does not
change. Order reaches it only through the encoder (its positional encodings). Source and target positions are not
directly comparable either: step ``i`` of a 5-token target and position ``i`` of a 9-token source are not "the same
place". The natural relative position for cross-attention is therefore the distance of source position ``j`` from
where target step ``i`` would sit if both sequences advanced at the same pace::

    alignment_distance[i, j] = j - i * T_src / T_tgt

A bias built from it is a float ``[H, T_q, T_k]`` added to the scores (``MultiHeadAttention.forward(..., bias=)``):
``diagonal_bias`` is fixed (ALiBi-style slopes per head), ``BucketedCrossBias`` learned (T5-style buckets). Masks
stay bool, True = may attend: ``streaming_mask`` and ``wait_k_mask`` stop a decoder from reading source it has not
received yet.
"""
from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from ._checks import require_tensor, shape_str

__all__ = ["BucketedCrossBias", "alibi_slopes", "alignment_distance", "diagonal_bias", "flex_biased_attention",
           "relative_position_buckets", "streaming_mask", "wait_k_mask"]


def _require_int(name: str, value: object, minimum: int) -> int:
    """``value`` as an int >= ``minimum`` (bools refused), or a ValueError naming both."""
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}; got {value!r}")
    return value


def alignment_distance(t_q: int, t_k: int, *, source_per_target: float | None = None, query_offset: int = 0,
                       device: torch.device | str | None = None, dtype: torch.dtype = torch.float32) -> Tensor:
    """``[T_q, T_k]`` distances ``j - i * t_k / t_q`` of source position ``j`` from target step ``i``'s diagonal point.

    Negative: the source position lies behind where step ``i`` "should" read; positive: ahead of it.

    While generating, the target's length is not known yet: pass the task's average ``source_per_target`` (source
    positions per target step, e.g. measured on the training data) to use ``j - i * source_per_target`` instead, and
    ``query_offset`` for the rows of steps ``query_offset .. query_offset + t_q - 1`` (incremental decoding).

    Raises:
        ValueError: if ``t_q`` or ``t_k`` is not an int >= 1, ``query_offset`` not an int >= 0 (or > 0 without
        ``source_per_target``), ``source_per_target`` not a finite number > 0, or ``dtype`` not a float dtype.
    """
    _require_int("t_q", t_q, 1)
    _require_int("t_k", t_k, 1)
    _require_int("query_offset", query_offset, 0)
    if not dtype.is_floating_point:
        raise ValueError(f"dtype must be a float dtype; got {dtype}")
    if source_per_target is None:
        if query_offset:
            raise ValueError(f"query_offset={query_offset} needs source_per_target: the rows' diagonal cannot come "
                             f"from t_k / t_q when the target is only partly there")
        rate = t_k / t_q
    elif isinstance(source_per_target, bool) or not isinstance(source_per_target, (int, float)) \
            or not math.isfinite(source_per_target) or source_per_target <= 0:
        raise ValueError(f"source_per_target must be a finite number > 0; got {source_per_target!r}")
    else:
        rate = float(source_per_target)
    steps = torch.arange(query_offset, query_offset + t_q, device=device, dtype=torch.float64)
    rows = (steps * rate).to(dtype)  # [T_q]: where step i sits in the source
    cols = torch.arange(t_k, device=device, dtype=dtype)  # [T_k]
    return cols[None, :] - rows[:, None]


def alibi_slopes(n_heads: int, *, device: torch.device | str | None = None,
                 dtype: torch.dtype = torch.float32) -> Tensor:
    """ALiBi's per-head slopes ``[H]`` (Press et al. 2022): ``2 ** (-8 * h / n)`` for ``h = 1..n``.

    When ``n_heads`` is not a power of two, the paper's recipe: the slopes of the largest power of two ``m`` below it,
    then every other slope of ``2m`` heads (the ones interleaved between them) until there are ``n_heads``.

    Raises:
        ValueError: if ``n_heads`` is not an int >= 1.
    """
    _require_int("n_heads", n_heads, 1)

    def geometric(n: int) -> list[float]:
        return [2.0 ** (-8.0 * h / n) for h in range(1, n + 1)]

    m = 2 ** int(math.floor(math.log2(n_heads)))
    slopes = geometric(m) + geometric(2 * m)[0::2][: n_heads - m]
    return torch.tensor(slopes, device=device, dtype=dtype)


def diagonal_bias(t_q: int, t_k: int, slopes: Tensor, *, source_per_target: float | None = None,
                  query_offset: int = 0) -> Tensor:
    """A fixed ALiBi-style cross-attention bias ``[H, T_q, T_k]``: ``-slope[h] * |alignment_distance[i, j]|``.

    Zero on the diagonal, more negative the further a key is from it; steep heads look near the diagonal, shallow
    heads almost anywhere. Device and dtype follow ``slopes``. ``source_per_target`` and ``query_offset``: as in
    ``alignment_distance`` (for generation).

    Raises:
        ValueError: if ``slopes`` is not a 1-D float tensor ``[H]``, or ``t_q``/``t_k`` is not an int >= 1.
    """
    require_tensor("slopes", slopes)
    if slopes.ndim != 1 or not slopes.is_floating_point() or slopes.shape[0] == 0:
        raise ValueError(f"slopes must be a float tensor [H] with H >= 1; got {slopes.dtype} {shape_str(slopes.shape)}")
    distance = alignment_distance(t_q, t_k, source_per_target=source_per_target, query_offset=query_offset,
                                  device=slopes.device, dtype=slopes.dtype)
    return -slopes[:, None, None] * distance.abs()[None]


def _magnitude_buckets(n: Tensor, n_buckets: int, max_distance: int) -> Tensor:
    """Buckets ``0..n_buckets-1`` for integer magnitudes ``n >= 0``: half exact, half logarithmic up to max_distance."""
    exact = n_buckets // 2
    if exact == 0:  # one bucket: everything shares it
        return torch.zeros_like(n)
    n_log = n_buckets - exact
    # Bucket exact + m starts at the smallest integer >= exact * (max_distance / exact) ** (m / n_log), m = 1..n_log-1
    # (T5's floor(log(n / exact) / log(max_distance / exact) * n_log), written as thresholds; a distance within 1e-9
    # of a boundary counts as reaching it). With max_distance <= exact every non-exact distance is "far": last bucket.
    if max_distance > exact:
        ratio = max_distance / exact
        starts = [math.ceil(exact * ratio ** ((m - 1e-9) / n_log)) for m in range(1, n_log)]
    else:
        starts = [exact] * (n_log - 1)
    log_bucket = torch.full_like(n, exact)
    for start in starts:
        log_bucket = log_bucket + (n >= start).long()
    return torch.where(n < exact, n, log_bucket.clamp(max=n_buckets - 1))


def relative_position_buckets(distance: Tensor, n_buckets: int, max_distance: int, *,
                              bidirectional: bool = True) -> Tensor:
    """T5-style buckets (long, same shape) for a tensor of relative distances, rounded to integers first.

    Of the buckets for one sign, the first half hold the small distances ``0, 1, ...`` exactly; the rest cover the
    larger ones on a logarithmic scale up to ``max_distance``, and every distance beyond shares the last bucket.

    Args:
        distance: any real tensor, e.g. ``alignment_distance``; rounded with ``torch.round`` (halves to even).
        n_buckets: number of buckets in all.
        max_distance: where the logarithmic buckets end.
        bidirectional: True: distances <= 0 (source behind the diagonal) use buckets ``0..n_buckets//2 - 1`` and
            distances > 0 the next ``n_buckets // 2`` (an odd ``n_buckets`` leaves the last bucket unused). False:
            only ``|distance|`` counts (a symmetric bias, like ``diagonal_bias``), over all ``n_buckets``.

    Raises:
        ValueError: if ``distance`` is not a real tensor, ``n_buckets < 1`` (``< 2`` when bidirectional) or
        ``max_distance < 1``.
    """
    require_tensor("distance", distance)
    if distance.dtype == torch.bool or distance.is_complex():
        raise ValueError(f"distance must be a real (int or float) tensor; got dtype {distance.dtype}")
    _require_int("n_buckets", n_buckets, 2 if bidirectional else 1)
    _require_int("max_distance", max_distance, 1)
    rounded = torch.round(distance).long() if distance.is_floating_point() else distance.long()
    if not bidirectional:
        return _magnitude_buckets(rounded.abs(), n_buckets, max_distance)
    half = n_buckets // 2
    ahead = rounded > 0
    return _magnitude_buckets(rounded.abs(), half, max_distance) + ahead.long() * half


class BucketedCrossBias(nn.Module):
    """A learned T5-style cross-attention bias: one scalar per (bucket of ``alignment_distance``, head).

    ``forward(t_q, t_k)`` returns ``[H, T_q, T_k]`` to pass as ``MultiHeadAttention.forward(..., bias=)``. The table
    starts at zero, so a model starts unbiased and learns where to look.

    Args:
        n_heads: number of heads ``H``.
        n_buckets, max_distance, bidirectional: as in ``relative_position_buckets``.
    """

    def __init__(self, n_heads: int, n_buckets: int = 32, max_distance: int = 128, *, bidirectional: bool = True,
                 device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> None:
        super().__init__()
        _require_int("n_heads", n_heads, 1)
        _require_int("n_buckets", n_buckets, 2 if bidirectional else 1)
        _require_int("max_distance", max_distance, 1)
        self.n_heads, self.n_buckets, self.max_distance = n_heads, n_buckets, max_distance
        self.bidirectional = bidirectional
        self.table = nn.Parameter(torch.zeros(n_buckets, n_heads, device=device, dtype=dtype))  # [buckets, H]

    def forward(self, t_q: int, t_k: int, *, source_per_target: float | None = None, query_offset: int = 0) -> Tensor:
        """The bias ``[H, T_q, T_k]`` for a target of ``t_q`` steps and a source of ``t_k`` positions
        (``source_per_target``, ``query_offset``: as in ``alignment_distance``)."""
        distance = alignment_distance(t_q, t_k, source_per_target=source_per_target, query_offset=query_offset,
                                      device=self.table.device, dtype=torch.float32)
        buckets = relative_position_buckets(distance, self.n_buckets, self.max_distance,
                                            bidirectional=self.bidirectional)  # [T_q, T_k]
        return self.table[buckets].permute(2, 0, 1)  # [T_q, T_k, H] -> [H, T_q, T_k]


def streaming_mask(visible: Tensor, t_k: int) -> Tensor:
    """A time-restricted (monotonic) cross-attention mask: step ``i`` may read source positions ``j < visible[i]``.

    Args:
        visible: int tensor ``[..., T_q]``: how many source positions each target step has received, in ``0..t_k``.
        t_k: the source length ``T_k``.

    Returns:
        bool ``[..., T_q, T_k]``, True = may attend. A step with ``visible = 0`` sees nothing (attention gives zeros).

    Raises:
        ValueError: if ``visible`` is not an int tensor with at least one dim, ``t_k < 1``, or a count is outside
        ``0..t_k``.
    """
    require_tensor("visible", visible)
    _require_int("t_k", t_k, 1)
    if visible.dtype == torch.bool or visible.is_floating_point() or visible.is_complex() or visible.ndim == 0:
        raise ValueError(f"visible must be an int tensor [..., T_q]; got {visible.dtype} {shape_str(visible.shape)}")
    if visible.numel() and (int(visible.min()) < 0 or int(visible.max()) > t_k):
        raise ValueError(f"visible counts must lie in 0..t_k={t_k}; got values from {int(visible.min())} "
                         f"to {int(visible.max())}")
    return torch.arange(t_k, device=visible.device) < visible[..., None]


def wait_k_mask(t_q: int, source_lengths: Tensor | Sequence[int], k: int | None, *,
                t_k: int | None = None) -> Tensor:
    """The wait-k policy of simultaneous translation as a cross-attention mask ``[B, 1, T_q, T_k]``.

    Target step ``i`` (0-based) may read the first ``min(k + i, length)`` source tokens of its sentence: it waits for
    ``k`` tokens, then reads one more per step written. Padding is never visible. ``k=None`` waits for the whole
    sentence (an ordinary padding mask).

    Args:
        t_q: number of target steps.
        source_lengths: ``[B]`` true source lengths (int tensor or list), each in ``0..T_k``.
        k: tokens to wait for, an int >= 1, or None.
        t_k: padded source length; default the longest sentence.

    Raises:
        ValueError: if ``t_q < 1``, ``k < 1``, ``source_lengths`` is not 1-D ints, ``t_k < 1``, or a length is
        outside ``0..t_k``.
    """
    _require_int("t_q", t_q, 1)
    if k is not None:
        _require_int("k", k, 1)
    lengths = source_lengths if isinstance(source_lengths, Tensor) else torch.as_tensor(source_lengths)
    if lengths.ndim != 1 or lengths.numel() == 0 or lengths.dtype == torch.bool or lengths.is_floating_point():
        raise ValueError(f"source_lengths must be 1-D ints [B] with B >= 1; got {lengths.dtype} "
                         f"{shape_str(lengths.shape)}")
    t_k = max(int(lengths.max()), 1) if t_k is None else _require_int("t_k", t_k, 1)
    if int(lengths.min()) < 0 or int(lengths.max()) > t_k:
        raise ValueError(f"source_lengths must lie in 0..t_k={t_k}; got {lengths.tolist()}")
    steps = torch.arange(t_q, device=lengths.device)  # [T_q]
    visible = lengths[:, None].expand(-1, t_q) if k is None else torch.minimum(k + steps[None, :], lengths[:, None])
    return streaming_mask(visible[:, None, :], t_k)  # [B, 1, T_q, T_k]


def flex_biased_attention(q: Tensor, k: Tensor, v: Tensor, bias: Tensor) -> Tensor:
    """Attention with a score bias ``[H, T_q, T_k]`` written as FlexAttention's ``score_mod`` (run eagerly): an
    independent reference for ``MultiHeadAttention(..., bias=)``. ``q [B, H, T_q, d]``, ``k, v [B, H, T_k, d]``.

    Raises:
        ValueError: if ``bias`` is not ``[H, T_q, T_k]`` for these inputs.
    """
    from torch.nn.attention.flex_attention import flex_attention

    expected = (q.shape[1], q.shape[2], k.shape[2])
    if bias.ndim != 3 or tuple(bias.shape) != expected:
        raise ValueError(f"bias must be [H, T_q, T_k] = {list(expected)}; got {shape_str(bias.shape)}")

    def score_mod(score: Tensor, b: Tensor, h: Tensor, q_idx: Tensor, kv_idx: Tensor) -> Tensor:
        return score + bias[h, q_idx, kv_idx]

    with warnings.catch_warnings():  # eager flex warns that it is slow: it is only a reference here
        warnings.simplefilter("ignore")
        return flex_attention(q, k, v, score_mod=score_mod)
