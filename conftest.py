"""Test-run settings for the whole repository (tests/, and the notebooks that nbval executes).

`pytest` must never touch a learner's own cache folder (lesson 07 saves its trained translator there, and
lesson 08 loads it): every test run gets a fresh temporary ``COURSE_CACHE_DIR``, set before any notebook
kernel starts, so the kernels inherit it. ``COURSE_TEST_CACHE_DIR`` names a folder to use instead (CI can
keep one per run).
"""
from __future__ import annotations

import os
import tempfile

import pytest


def pytest_configure(config: pytest.Config) -> None:
    folder = os.environ.get("COURSE_TEST_CACHE_DIR") or tempfile.mkdtemp(prefix="course-test-cache-")
    os.makedirs(folder, exist_ok=True)
    os.environ["COURSE_CACHE_DIR"] = folder
