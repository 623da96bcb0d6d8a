"""Lesson 00's helpers: an environment report (a pass/fail checklist) and the course map figure."""
from __future__ import annotations

import importlib
import re
import sys
from dataclasses import dataclass

import matplotlib.pyplot as plt
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch, Patch
from matplotlib.path import Path

from .env import pick_device

# The lower bounds of pyproject.toml (a test keeps the two in step).
MINIMUM_VERSIONS: dict[str, str] = {
    "torch": "2.1", "numpy": "1.24", "matplotlib": "3.7", "seaborn": "0.12", "ipywidgets": "7.7", "tqdm": "4.60",
    "sacrebleu": "2.0",
}
MINIMUM_PYTHON = (3, 10)


@dataclass(frozen=True)
class EnvCheck:
    """One line of the environment report."""

    name: str
    ok: bool
    detail: str

    def __str__(self) -> str:
        return f"{'✅' if self.ok else '❌'} {self.name:<11} {self.detail}"


def version_tuple(version: str) -> tuple[int, ...]:
    """``"2.13.0+cpu"`` -> ``(2, 13, 0)``: the leading numeric parts of a version string."""
    match = re.match(r"\d+(\.\d+)*", version.strip())
    return tuple(int(part) for part in match.group(0).split(".")) if match else ()


def check_version(name: str, version: str, minimum: str) -> EnvCheck:
    """Pass when ``version`` is at least ``minimum`` (compared part by part as integers)."""
    ok = version_tuple(version) >= version_tuple(minimum)
    return EnvCheck(name, ok, f"{version}" + ("" if ok else f" (too old: the course needs >= {minimum})"))


def _package_check(name: str) -> EnvCheck:
    try:
        module = importlib.import_module(name)
    except ImportError as error:
        return EnvCheck(name, False, f"not installed ({error}): pip install '{name}>={MINIMUM_VERSIONS[name]}'")
    return check_version(name, str(getattr(module, "__version__", "0")), MINIMUM_VERSIONS[name])


def _device_check(device: torch.device) -> EnvCheck:
    """Run a tiny computation on ``device``; say which GPU it is, if any."""
    try:
        works = torch.ones(3, device=device).sum().item() == 3.0
    except RuntimeError as error:
        return EnvCheck("device", False, f"{device}: a tiny computation failed ({error})")
    if device.type == "cuda":
        return EnvCheck("device", works, f"cuda ({torch.cuda.get_device_name(device)})")
    hint = "" if torch.cuda.is_available() else ", no GPU found: every notebook runs on the CPU, just a bit slower"
    return EnvCheck("device", works, f"{device.type}{hint}")


def environment_report(device: torch.device | str | None = None) -> dict[str, EnvCheck]:
    """Check Python, the packages the course needs, the device and course_lib itself.

    Returns a dict keyed ``python``, ``torch``, ``device``, ``course_lib``, ``numpy``, ``matplotlib``,
    ``seaborn``, ``ipywidgets``, ``tqdm``, ``sacrebleu``; each value says ``ok`` and a one-line ``detail``.
    """
    from . import __version__

    device = pick_device() if device is None else torch.device(device)
    python = ".".join(map(str, sys.version_info[:3]))
    report = {
        "python": EnvCheck("python", sys.version_info[:2] >= MINIMUM_PYTHON, python),
        "torch": check_version("torch", torch.__version__, MINIMUM_VERSIONS["torch"]),
        "device": _device_check(device),
        "course_lib": EnvCheck("course_lib", True, __version__),
    }
    for name in ("numpy", "matplotlib", "seaborn", "ipywidgets", "tqdm", "sacrebleu"):
        report[name] = _package_check(name)
    return report


def format_report(report: dict[str, EnvCheck]) -> str:
    """The checklist, one line per check, then a verdict line."""
    failed = [check.name for check in report.values() if not check.ok]
    verdict = (f"All {len(report)} checks passed: you are ready." if not failed
               else f"{len(failed)} of {len(report)} checks failed: {', '.join(failed)}. Fix these first.")
    return "\n".join([*map(str, report.values()), verdict])


@dataclass(frozen=True)
class Lesson:
    """One stop on the course map: its number, title and the ``course_lib`` pieces it builds."""

    number: str
    title: str
    builds: tuple[str, ...]
    part: str


LESSONS: tuple[Lesson, ...] = (
    Lesson("00", "Setup and tour", (), "start"),
    Lesson("01", "Self-attention", ("scaled_dot_product_attention",), "attention"),
    Lesson("02", "Multi-head attention", ("MultiHeadAttention",), "attention"),
    Lesson("03", "Cross-attention", ("MultiHeadAttention(x, source)",), "attention"),
    Lesson("04", "Masks", ("masks",), "model"),
    Lesson("05", "Encoder–decoder", ("layers", "model"), "model"),
    Lesson("06", "Caching", ("cache", "generate"), "use"),
    Lesson("07", "Toy translation", ("toy_language, data", "training, metrics"), "use"),
    Lesson("08", "Attention explorer", ("TranslationExplorer", "attention_entropy"), "use"),
)
PARTS: dict[str, tuple[str, str]] = {  # part -> (legend label, box colour)
    "start": ("getting started", "#e8e8e8"),
    "attention": ("attention itself", "#d6e6f5"),
    "model": ("building the model", "#dcefd9"),
    "use": ("running and reading it", "#fbe3cc"),
}


def course_map(lessons: tuple[Lesson, ...] | list[Lesson] = LESSONS, n_cols: int = 3) -> Figure:
    """The lessons as boxes on a path, read row by row, each naming the ``course_lib`` pieces it builds.

    Boxes carry the gid ``lesson-NN`` and arrows ``arrow-NN``, so tests (and curious readers) can find them.
    """
    if not lessons or n_cols < 1:
        raise ValueError(f"need at least one lesson and one column; got {len(lessons)} lessons, n_cols={n_cols}")
    n_rows = -(-len(lessons) // n_cols)
    box_w, box_h, gap_x, gap_y = 2.75, 1.05, 0.5, 0.6
    fig_w, fig_h = n_cols * box_w + (n_cols - 1) * gap_x, n_rows * box_h + (n_rows - 1) * gap_y
    fig, ax = plt.subplots(figsize=(fig_w + 0.4, fig_h + 1.1))
    ax.set(xlim=(-0.2, fig_w + 0.2), ylim=(-0.65, fig_h + 0.45), aspect="equal")
    ax.axis("off")

    def corner(index: int) -> tuple[float, float]:  # lower-left corner of box ``index``
        row, col = divmod(index, n_cols)
        return col * (box_w + gap_x), fig_h - (row + 1) * box_h - row * gap_y

    for index, lesson in enumerate(lessons):
        x, y = corner(index)
        colour = PARTS.get(lesson.part, ("", "#eeeeee"))[1]
        ax.add_patch(FancyBboxPatch((x, y), box_w, box_h, boxstyle="round,pad=0,rounding_size=0.12",
                                    facecolor=colour, edgecolor="0.35", linewidth=1.1, gid=f"lesson-{lesson.number}"))
        ax.text(x + 0.14, y + box_h - 0.2, f"{lesson.number} · {lesson.title}", ha="left", va="top",
                fontsize=10.5, fontweight="bold")
        builds = "\n".join(lesson.builds) if lesson.builds else "(checks your setup)"
        ax.text(x + 0.14, y + box_h - 0.5, builds, ha="left", va="top", fontsize=8.5, linespacing=1.25,
                family="monospace" if lesson.builds else None, style="normal" if lesson.builds else "italic",
                color="0.15")

    arrow = {"arrowstyle": "-|>,head_length=0.5,head_width=0.25", "mutation_scale": 14, "color": "0.3",
             "linewidth": 1.3, "shrinkA": 0, "shrinkB": 0}
    for index in range(1, len(lessons)):
        (x0, y0), (x1, y1) = corner(index - 1), corner(index)
        if y0 == y1:  # same row: straight arrow between the boxes
            path = Path([(x0 + box_w + 0.06, y0 + box_h / 2), (x1 - 0.06, y1 + box_h / 2)])
        else:  # next row: down from the row's last box, back along the gap, down into the first box
            mid_y = y0 - gap_y / 2
            start, end = (x0 + box_w / 2, y0 - 0.04), (x1 + box_w / 2, y1 + box_h + 0.06)
            path = Path([start, (start[0], mid_y), (end[0], mid_y), end],
                        [Path.MOVETO, Path.LINETO, Path.LINETO, Path.LINETO])
        ax.add_patch(FancyArrowPatch(path=path, gid=f"arrow-{lessons[index].number}", **arrow))

    used = [part for part in PARTS if any(lesson.part == part for lesson in lessons)]
    handles = [Patch(facecolor=PARTS[p][1], edgecolor="0.35") for p in used]
    ax.legend(handles, [PARTS[p][0] for p in used], loc="lower center", bbox_to_anchor=(0.5, -0.02),
              ncol=len(used), frameon=False, fontsize=9, handlelength=1.4)
    ax.set_title("The course map: each lesson builds a piece of course_lib that later lessons import",
                 fontsize=11, loc="left")
    fig.tight_layout()
    return fig


def weights_bar_chart(weights: torch.Tensor, key_labels: list[str] | tuple[str, ...], *, title: str = "",
                      ax: Axes | None = None) -> Axes:
    """One query's attention weights ``[T_k]`` as bars over the keys, on a 0-1 axis (lesson 00's slider)."""
    if weights.ndim != 1 or len(key_labels) != weights.shape[0]:
        raise ValueError(f"need weights [T_k] and one label per key; got weights {list(weights.shape)} and "
                         f"{len(key_labels)} labels")
    if ax is None:
        _, ax = plt.subplots(figsize=(5, 2.6), constrained_layout=True)
    ax.bar(range(len(key_labels)), weights.detach().float().cpu().numpy(), color="#4c72b0")
    ax.set_xticks(range(len(key_labels)), list(key_labels))
    ax.set(ylim=(0, 1), xlabel="key", ylabel="attention weight", title=title)
    return ax
