"""Lesson 06's step-time analysis, cache-size table and prediction comments (course_lib.decoding_costs), and its
step-time figure (course_lib.charts.step_times_figure)."""
from __future__ import annotations

import itertools

import matplotlib
import pytest
import torch

matplotlib.use("Agg")

from course_lib import decoding_costs as dc  # noqa: E402
from course_lib.charts import step_times_figure  # noqa: E402

N = 128
T = torch.arange(1, N + 1, dtype=torch.float64)  # step numbers


def seconds_of(kind: str) -> torch.Tensor:
    """Synthetic step times [N] in seconds: 2 ms plus a term in t."""
    extra = {"flat": 0 * T, "slightly-linear": 0.01 * T, "linear": 1.0 * T, "quadratic": 0.02 * T**2}[kind]
    return (2.0 + extra) / 1e3


def test_step_windows_start_at_step_2_and_end_at_the_last_step() -> None:
    windows = dc.step_windows(N)
    assert windows[0] == (2, 9) and windows[-1] == (121, 128) and len(windows) == 5
    assert all(b - a == 7 for a, b in windows)
    with pytest.raises(ValueError, match="need n_steps >= width \\+ 1"):
        dc.step_windows(8)


def test_step_growth_of_a_line_has_its_slope_and_no_bend() -> None:
    growth = dc.step_growth(seconds_of("linear"))
    assert growth.slope_ms == pytest.approx(1.0)
    assert growth.bend == pytest.approx(1.0, abs=0.02)
    assert growth.ratio == pytest.approx(growth.late_ms / growth.early_ms)
    assert growth.early_ms == pytest.approx(2.0 + 5.0)  # steps 2..9: torch's median is the lower middle value


@pytest.mark.parametrize(("kind", "shape"), [("flat", "flat"), ("slightly-linear", "linear"), ("linear", "linear"),
                                              ("quadratic", "quadratic")])
def test_measured_shape_names_the_growth(kind: str, shape: str) -> None:
    assert dc.measured_shape(dc.step_growth(seconds_of(kind))) == shape


def test_step_time_table_has_a_row_per_mode_and_the_speedup_over_the_first() -> None:
    seconds = {"none": seconds_of("linear"), "full": seconds_of("flat")}
    table = dc.step_time_table(seconds, {"none": "recompute", "full": "cached"}).splitlines()
    assert len(table) == 4 and "121-128" in table[1] and "2-9" in table[1]
    assert table[2].startswith("recompute") and table[2].endswith("1.0x")
    speedup = seconds["none"].sum() / seconds["full"].sum()
    assert table[3].startswith("cached") and table[3].endswith(f"{speedup:.1f}x")


GUESSES = [None, "flat", "linear", "quadratic", "Linear ", "exponential"]
SCENARIOS = {"cpu": {"cross_kv": "linear", "full": "slightly-linear"},
             "launch-bound": {"cross_kv": "flat", "full": "flat"},
             "long-prefix": {"cross_kv": "quadratic", "full": "linear"}}


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_every_step_time_guess_gets_an_explanation_with_the_measurement(scenario: str) -> None:
    growth = {mode: dc.step_growth(seconds_of(kind)) for mode, kind in SCENARIOS[scenario].items()}
    answers = set()
    for without, with_ in itertools.product(GUESSES, GUESSES):
        text = dc.discuss_step_time_guess({"cross_kv": without, "full": with_}, growth)
        assert "❌" not in text and "wrong" not in text.lower()
        assert text.count(f"{growth['cross_kv'].ratio:.1f}x") >= 1 and f"{growth['full'].ratio:.1f}x" in text
        answers.add(text)
    assert len(answers) >= 16  # the comment depends on the guess


def test_step_time_comments_follow_the_lesson() -> None:
    growth = {mode: dc.step_growth(seconds_of(kind)) for mode, kind in SCENARIOS["cpu"].items()}
    text = dc.discuss_step_time_guess({"cross_kv": "linear", "full": "linear"}, growth)
    assert "Yes: step t pushes all t prefix positions" in text
    assert "Right, strictly speaking" in text  # "linear" for the cached step is defensible (exercise 06.4's lesson)
    flat = dc.discuss_step_time_guess({"cross_kv": "flat", "full": "flat"}, growth)
    assert "The measurement disagrees" in flat and "Nearly:" in flat
    assert "You left this guess empty" in dc.discuss_step_time_guess(None, growth)
    assert "the three shapes to choose from" in dc.discuss_step_time_guess({"cross_kv": "cubic"}, growth)


@pytest.mark.parametrize(("guess", "expected"), [
    (None, "You left the guess empty"), (9.0, "Close"), (0.1, "Most people expect"), (3.0, "Smaller than measured"),
    (50.0, "Larger than measured"), ("big", "a positive number was asked for")])
def test_cache_size_guess_comments(guess: object, expected: str) -> None:
    text = dc.discuss_cache_size_guess(guess, cache_bytes=10_223_616, weight_bytes=1_089_312, batch=64)
    assert expected in text and "9.4x the weights" in text and "❌" not in text


def test_cache_size_table_applies_the_formula_per_model_batch_and_length() -> None:
    def kv_bytes(n_layers: int, batch: int, n_heads: int, length: int, d_head: int, bytes_per_value: int) -> int:
        return 2 * n_layers * batch * n_heads * length * d_head * bytes_per_value

    table = dc.cache_size_table({"Whisper-small": (12, 12, 64, 1500, 244e6)}, kv_bytes, batches=(16,), tgt_lens=(448,))
    header, row = table.splitlines()
    self_mib, cross_mib = 2 * 12 * 16 * 12 * 448 * 64 * 2 / 2**20, 2 * 12 * 16 * 12 * 1500 * 64 * 2 / 2**20
    assert f"{self_mib:.0f} MiB" in row and f"{cross_mib:.0f} MiB" in row  # 252 MiB, 844 MiB (lesson 06, question 3)
    assert f"{(self_mib + cross_mib) * 2 / 1024:.2f} GiB" in row and "465 MiB" in row  # fp32 total; 244e6 * 2 bytes
    assert header.split()[:4] == ["model", "S", "B", "T"]


def test_step_times_figure_draws_every_mode_in_both_panels() -> None:
    seconds = {"none": seconds_of("linear"), "full": seconds_of("flat")}
    fig = step_times_figure(seconds, {"none": "way 1", "full": "way 4"}, title="B=64")
    ax_step, ax_total = fig.axes
    assert len(ax_step.lines) == len(ax_total.lines) == 2 and ax_step.get_title() == "B=64"
    assert ax_total.lines[0].get_ydata()[-1] == pytest.approx(seconds["none"].sum().item())
    assert len(ax_step.lines[0].get_xdata()) == N - 1  # step 1 (once-per-source work) is left out
    assert [t.get_text() for t in ax_step.get_legend().get_texts()] == ["way 1", "way 4"]
    with pytest.raises(ValueError, match="labels must name every mode"):
        step_times_figure(seconds, {"none": "way 1"})
