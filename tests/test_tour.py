"""Lesson 00's helpers: the environment report and the course map."""
from __future__ import annotations

import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch  # noqa: E402

import course_lib  # noqa: E402
from course_lib import tour  # noqa: E402

EXPECTED_KEYS = [
    "python", "torch", "device", "course_lib", "numpy", "matplotlib", "seaborn", "ipywidgets", "tqdm", "sacrebleu",
]


def test_environment_report_has_every_check_with_the_right_types() -> None:
    report = tour.environment_report()
    assert list(report) == EXPECTED_KEYS
    for key, check in report.items():
        assert isinstance(check, tour.EnvCheck)
        assert check.name == key
        assert isinstance(check.ok, bool)
        assert isinstance(check.detail, str) and check.detail


def test_environment_report_passes_in_the_test_environment() -> None:
    report = tour.environment_report()
    assert [name for name, check in report.items() if not check.ok] == []
    assert report["course_lib"].detail == course_lib.__version__
    assert report["torch"].detail == torch.__version__


def test_device_check_names_the_device_it_ran_on(device: torch.device) -> None:
    check = tour.environment_report(device)["device"]
    assert check.ok
    assert check.detail.startswith(device.type)


def test_default_device_is_cuda_exactly_when_available() -> None:
    detail = tour.environment_report()["device"].detail
    assert detail.startswith("cuda") == torch.cuda.is_available()


@pytest.mark.parametrize(("version", "minimum", "ok"), [
    ("2.13.0+cpu", "2.1", True),   # 13 > 1 as integers, although "13" < "1 " as text
    ("2.1.0", "2.1", True),
    ("2.0.1", "2.1", False),
    ("7.6.5", "7.7", False),
    ("8.1.9", "7.7", True),
    ("4.60.0", "4.60", True),
    ("4.9.0", "4.60", False),
])
def test_check_version_compares_parts_as_integers(version: str, minimum: str, ok: bool) -> None:
    check = tour.check_version("pkg", version, minimum)
    assert check.ok is ok
    assert ("too old" in check.detail) is (not ok)


def test_version_tuple_ignores_local_and_pre_release_suffixes() -> None:
    assert tour.version_tuple("2.13.0+cu121") == (2, 13, 0)
    assert tour.version_tuple("8.1.9rc1") == (8, 1, 9)
    assert tour.version_tuple("unknown") == ()


def test_format_report_lists_each_check_and_gives_a_verdict() -> None:
    report = {"python": tour.EnvCheck("python", True, "3.11.7"), "torch": tour.EnvCheck("torch", False, "1.13 (old)")}
    lines = tour.format_report(report).splitlines()
    assert lines[0].startswith("✅ python") and "3.11.7" in lines[0]
    assert lines[1].startswith("❌ torch")
    assert lines[2] == "1 of 2 checks failed: torch. Fix these first."
    report["torch"] = tour.EnvCheck("torch", True, "2.13.0")
    assert tour.format_report(report).splitlines()[-1] == "All 2 checks passed: you are ready."


def test_minimum_versions_match_pyproject() -> None:
    pyproject = (Path(__file__).resolve().parents[1] / "pyproject.toml").read_text()
    dependencies = re.search(r"^dependencies = \[(.*?)^\]", pyproject, re.M | re.S).group(1)
    declared = dict(re.findall(r'"([a-z_]+)>=([\d.]+)"', dependencies))
    assert declared == tour.MINIMUM_VERSIONS
    python = re.search(r'requires-python = ">=([\d.]+)"', pyproject).group(1)
    assert tour.version_tuple(python) == tour.MINIMUM_PYTHON


def _boxes(fig: Figure) -> list[FancyBboxPatch]:
    return [p for p in fig.axes[0].patches if (p.get_gid() or "").startswith("lesson-")]


def _arrows(fig: Figure) -> list[FancyArrowPatch]:
    return [p for p in fig.axes[0].patches if (p.get_gid() or "").startswith("arrow-")]


def test_course_map_has_one_box_per_lesson_in_order_and_arrows_between_them() -> None:
    fig = tour.course_map()
    try:
        assert isinstance(fig, Figure)
        assert [b.get_gid() for b in _boxes(fig)] == [f"lesson-{n:02d}" for n in range(9)]
        assert [a.get_gid() for a in _arrows(fig)] == [f"arrow-{n:02d}" for n in range(1, 9)]
        width, _ = fig.get_size_inches()
        assert width <= 10
    finally:
        plt.close(fig)


def test_course_map_names_what_each_lesson_builds() -> None:
    fig = tour.course_map()
    try:
        texts = "\n".join(t.get_text() for t in fig.axes[0].texts)
        for lesson in tour.LESSONS:
            assert f"{lesson.number} · {lesson.title}" in texts
            for piece in lesson.builds:
                assert piece in texts
        assert "scaled_dot_product_attention" in texts and "MultiHeadAttention" in texts
    finally:
        plt.close(fig)


def test_course_map_reads_row_by_row_and_boxes_do_not_overlap() -> None:
    fig = tour.course_map(n_cols=3)
    try:
        corners = [(b.get_x(), b.get_y()) for b in _boxes(fig)]
        assert corners[0][1] == corners[1][1] == corners[2][1] > corners[3][1]  # first row above the second
        assert corners[0][0] < corners[1][0] < corners[2][0]  # left to right
        assert corners[3][0] == corners[0][0]  # each row starts on the left
        widths = {round(b.get_width(), 6) for b in _boxes(fig)}
        assert all(abs(corners[i + 1][0] - corners[i][0]) >= max(widths)
                   for i in range(len(corners) - 1) if corners[i][1] == corners[i + 1][1])
    finally:
        plt.close(fig)


def test_course_map_takes_any_number_of_lessons() -> None:
    lessons = tour.LESSONS[:4]
    fig = tour.course_map(lessons, n_cols=2)
    try:
        assert len(_boxes(fig)) == 4 and len(_arrows(fig)) == 3
    finally:
        plt.close(fig)
    with pytest.raises(ValueError, match="at least one lesson"):
        tour.course_map([])
