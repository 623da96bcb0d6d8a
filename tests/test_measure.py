"""The measuring helpers on tiny sizes: structure and sanity only (speed is measured, never asserted)."""
from __future__ import annotations

import pytest
import torch

from course_lib.measure import attention_benchmark, peak_memory_bytes

LENGTHS, BATCH, HEADS = (16, 128), 2, 2


@pytest.fixture(scope="module")
def attention_rows() -> list[dict]:
    return attention_benchmark(batch=BATCH, heads=HEADS, d_head=8, lengths=LENGTHS, repeats=1)


def test_peak_memory_measures_an_allocation() -> None:
    peak = peak_memory_bytes(lambda: torch.empty(1_000_000), torch.device("cpu"))  # 4 MB of float32
    assert 4_000_000 <= peak < 4_100_000


def test_attention_rows_have_positive_times_and_their_ratio(attention_rows: list[dict]) -> None:
    assert [row["T"] for row in attention_rows] == list(LENGTHS)
    for row in attention_rows:
        assert row["hand_s"] > 0 and row["sdpa_s"] > 0
        assert row["ratio"] == pytest.approx(row["hand_s"] / row["sdpa_s"])
        assert row["max_abs_diff"] < 1e-5


def test_hand_written_attention_peaks_above_sdpa_at_the_largest_size(attention_rows: list[dict]) -> None:
    largest = attention_rows[-1]
    scores_bytes = BATCH * HEADS * LENGTHS[-1] ** 2 * 4  # the [B, H, T, T] float32 score matrix
    assert largest["hand_peak_bytes"] >= scores_bytes
    assert largest["sdpa_peak_bytes"] < largest["hand_peak_bytes"]
