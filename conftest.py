"""Test-run settings for the whole repository (tests/, and the notebooks that nbval executes).

`pytest` must never touch a learner's own cache folder (lesson 07 saves its trained translator there, and
lesson 08 loads it): every test run gets a fresh temporary ``COURSE_CACHE_DIR``, set before any notebook
kernel starts, so the kernels inherit it. ``COURSE_TEST_CACHE_DIR`` names a folder to use instead (CI keeps
one per run, shared by its two pytest calls).

Parallel runs (``pytest -n 2``, pytest-xdist; the README's test command). Three rules keep them correct and
make each model train once per run:

* the controller makes the cache folder before the workers start, and the workers inherit it (one folder per
  run, not one per worker);
* the scheduler sends whole groups of files to a worker (``group_of``), which runs them in order: a notebook's
  cells must run in one kernel, in order, the notebook, solution and exercise of one lesson share the lesson's
  trained models, and the files in ``SHARED_MODELS`` run one after the other, the one that trains it first.
  (pytest-xdist's own ``--dist loadgroup`` cannot do this with pytest 9.2: it renames test ids, which pytest
  9.2 computes instead of storing; ``--dist loadfile`` would split a lesson's files between workers.)
* each worker's processes (and the notebook kernels they start) get ``OMP_NUM_THREADS`` = cores / workers, so
  two workers do not fight over two cores.

Groups are started longest first (``SLOW_GROUPS``, measured), so the run ends when both workers end.
"""
from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent

# Files that share a model through the cache folder, in the order they must run: the first trains and saves it.
SHARED_MODELS: dict[str, tuple[str, ...]] = {
    # lesson 12 swaps approximations into lesson 07's translator; lesson 13 tunes it
    "lesson07-translator": ("notebooks/07_toy_translation.ipynb", "notebooks/08_attention_explorer.ipynb",
                            "tests/test_browser.py", "notebooks/12_long_sources.ipynb",
                            "solutions/12_long_sources.ipynb", "exercises/12_long_sources.ipynb",
                            # lesson 13 tunes it (order, wait-k, an alignment loss)
                            "notebooks/13_position_and_streaming.ipynb", "solutions/13_position_and_streaming.ipynb",
                            "exercises/13_position_and_streaming.ipynb"),
    # lesson 11 reads images through lesson 10's captioner's (frozen) encoder
    "lesson10-captioner": ("notebooks/10_image_captioning.ipynb", "solutions/10_image_captioning.ipynb",
                           "exercises/10_image_captioning.ipynb", "notebooks/11_fusing_sources.ipynb",
                           "solutions/11_fusing_sources.ipynb", "exercises/11_fusing_sources.ipynb"),
}
# The notebooks, solutions and exercises of one lesson form one group (they load the lesson's models, if any).
LESSON_FILE = re.compile(r"^(notebooks|solutions|exercises)/(\d\d)_[^/]+\.ipynb$")
LESSON_FOLDER_ORDER = {"notebooks": 0, "solutions": 1, "exercises": 2}
# Groups that take longest on 2 cores (seconds, measured in a parallel run): started first.
SLOW_GROUPS: dict[str, int] = {"lesson10-captioner": 560, "lesson07-translator": 660, "lesson09": 300}


def pytest_configure(config: pytest.Config) -> None:
    folder = os.environ.get("COURSE_TEST_CACHE_DIR") or tempfile.mkdtemp(prefix="course-test-cache-")
    os.makedirs(folder, exist_ok=True)
    os.environ["COURSE_TEST_CACHE_DIR"] = folder  # inherited by xdist's workers, started after this
    os.environ["COURSE_CACHE_DIR"] = folder
    workers = _worker_count(config)
    if workers > 1 and "OMP_NUM_THREADS" not in os.environ:
        os.environ["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // workers))


@pytest.hookimpl(optionalhook=True, tryfirst=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log):
    """With ``-n``: whole groups to each worker (``group_of``), longest first (``SLOW_GROUPS``), then in
    collection order."""
    from xdist.scheduler import LoadScopeScheduling

    class GroupScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return group_of(file_of(nodeid))

    config.option.loadscopereorder = False  # keep our order, not "most tests first"
    return GroupScheduling(config, log)


def file_of(nodeid: str) -> str:
    """The file part of a test id; ``a/b::ipynb::Cell 3`` (how pytest 9.2 sends a notebook's ids from an xdist
    worker) is ``a/b.ipynb``."""
    head, _, rest = nodeid.partition("::")
    extension = rest.split("::", 1)[0]
    return f"{head}.{extension}" if extension in ("ipynb", "py") and not head.endswith((".ipynb", ".py")) else head


def _worker_count(config: pytest.Config) -> int:
    """How many xdist workers this run starts (0 without ``-n``); in a worker, the count its controller chose."""
    if hasattr(config, "workerinput"):
        return int(config.workerinput.get("workercount", 1))
    processes = getattr(config.option, "numprocesses", None)
    if processes == "auto" or processes == "logical":
        return os.cpu_count() or 1
    return int(processes or 0)


def group_of(relative_path: str) -> str:
    """The xdist group of a test file (path relative to the repository root, with forward slashes)."""
    for group, files in SHARED_MODELS.items():
        if relative_path in files:
            return group
    lesson = LESSON_FILE.match(relative_path)
    return f"lesson{lesson.group(2)}" if lesson else relative_path


def _within_group(relative_path: str) -> int:
    """A file's place in its group: the shared models' listed order; a lesson's notebook, solution, exercise."""
    group = group_of(relative_path)
    if group in SHARED_MODELS:
        return SHARED_MODELS[group].index(relative_path)
    lesson = LESSON_FILE.match(relative_path)
    return LESSON_FOLDER_ORDER[lesson.group(1)] if lesson else 0


def _relative(item: pytest.Item) -> str:
    path = Path(str(item.path)).resolve()
    return path.relative_to(ROOT).as_posix() if path.is_relative_to(ROOT) else str(path)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    paths = {id(item): _relative(item) for item in items}
    groups = {id(item): group_of(paths[id(item)]) for item in items}
    first_seen: dict[str, int] = {}
    for index, item in enumerate(items):
        first_seen.setdefault(groups[id(item)], index)
    # Slow groups first, then collection order; a stable sort keeps the cells of a notebook (and the tests of a
    # file) in their order.
    items.sort(key=lambda item: (-SLOW_GROUPS.get(groups[id(item)], 0), first_seen[groups[id(item)]],
                                 _within_group(paths[id(item)])))

