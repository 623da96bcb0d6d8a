"""`pytest` never writes to the learner's own cache folder (conftest.py at the repository root)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from course_lib.translator import default_model_path

LEARNER_DEFAULT = Path.home() / ".cache" / "cross-attention-from-scratch"


def test_tests_use_a_temporary_cache_folder() -> None:
    folder = Path(os.environ["COURSE_CACHE_DIR"])
    assert folder.is_dir()
    assert LEARNER_DEFAULT not in (folder, *folder.parents)
    assert default_model_path().parent == folder


def test_notebook_kernels_inherit_the_temporary_folder() -> None:
    """nbval's kernels are child processes: they see the variable the test run set."""
    seen = subprocess.run([sys.executable, "-c", "import os; print(os.environ['COURSE_CACHE_DIR'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    assert seen == os.environ["COURSE_CACHE_DIR"]


def test_parallel_workers_share_one_cache_folder() -> None:
    """Under ``pytest -n``, the controller makes the folder and every worker inherits it (not one per worker)."""
    assert os.environ["COURSE_TEST_CACHE_DIR"] == os.environ["COURSE_CACHE_DIR"]
