"""The package's import surface: `import course_lib` stays light, heavy submodules load on first use."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

import course_lib as cl

HEAVY = ("matplotlib", "seaborn", "ipywidgets", "sacrebleu")  # (torch itself imports tqdm)


def test_import_course_lib_does_not_pull_in_plotting_or_widgets() -> None:
    code = f"import sys, course_lib; print(' '.join(m for m in {HEAVY!r} if m in sys.modules))"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert loaded == [], f"`import course_lib` imported {loaded}"


@pytest.mark.parametrize("name", sorted(cl._LAZY_SUBMODULES))
def test_every_lazy_submodule_resolves_as_an_attribute(name: str) -> None:
    module = getattr(cl, name)
    assert module.__name__ == f"course_lib.{name}"


def test_unknown_attribute_raises_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'not_a_module'"):
        cl.not_a_module  # noqa: B018


def _policy_after(code: str, env_policy: str | None) -> str:
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if env_policy is not None:
        env["OMP_WAIT_POLICY"] = env_policy
    code += "; import os; print(os.environ.get('OMP_WAIT_POLICY', 'unset'))"
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                          env=env).stdout.strip()


def test_importing_course_lib_first_makes_waiting_threads_sleep() -> None:
    assert _policy_after("import course_lib", None) == "PASSIVE"
    assert _policy_after("import course_lib", "ACTIVE") == "ACTIVE"  # the user's own choice wins
    assert _policy_after("import torch, course_lib", None) == "unset"  # too late to matter: left alone
