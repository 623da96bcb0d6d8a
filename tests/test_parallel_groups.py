"""The groups that let `pytest -n` run notebooks in parallel (conftest.py at the repository root)."""
from __future__ import annotations

import importlib.util
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("root_conftest", ROOT / "conftest.py")
root_conftest = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(root_conftest)


def test_a_lessons_notebook_solution_and_exercise_share_a_group() -> None:
    groups = {root_conftest.group_of(f"{folder}/09_why_cross_attention.ipynb")
              for folder in ("notebooks", "solutions", "exercises")}
    assert groups == {"lesson09"}


def test_lesson_08_runs_with_lesson_07_whose_translator_it_loads() -> None:
    group = root_conftest.group_of("notebooks/07_toy_translation.ipynb")
    assert root_conftest.group_of("notebooks/08_attention_explorer.ipynb") == group
    assert root_conftest.group_of("tests/test_browser.py") == group
    files = root_conftest.SHARED_MODELS[group]
    assert files.index("notebooks/07_toy_translation.ipynb") == 0  # it trains and saves the model the rest load


def test_other_test_files_are_groups_of_their_own() -> None:
    assert root_conftest.group_of("tests/test_generate.py") == "tests/test_generate.py"
    assert root_conftest.group_of("tests/test_training.py") != root_conftest.group_of("tests/test_generate.py")


def test_every_shared_model_file_exists() -> None:
    for files in root_conftest.SHARED_MODELS.values():
        for relative in files:
            assert (ROOT / relative).is_file(), relative


def test_every_file_that_loads_lesson_07s_translator_runs_after_lesson_07() -> None:
    """Lesson 07 saves the translator; a file that loads it from the cache folder (or trains its own if missing)
    must be in its group, later in the list: else two workers train it at once, or one reads a half-written
    file. (A call with a path of its own, as in test_training.py, does not share it.)"""
    from_cache = re.compile(r"load_or_train_translator\((\)|device=|progress=)")
    files = root_conftest.SHARED_MODELS["lesson07-translator"]
    loaders = [path.relative_to(ROOT).as_posix() for folder in ("notebooks", "solutions", "exercises", "tests")
               for path in sorted((ROOT / folder).glob("*")) if path.suffix in (".ipynb", ".py")
               and from_cache.search(path.read_text())]
    assert loaders, "no file loads the translator any more: update SHARED_MODELS"
    for relative in loaders:
        assert relative in files[1:], relative


def test_every_file_that_loads_lesson_10s_captioner_runs_after_lesson_10() -> None:
    """Lesson 10 saves the captioner; lesson 11 (``fusion_runs.lesson11_data``) and lesson 10's solution and
    exercise load it from the cache folder, so they must follow lesson 10 in its group."""
    from_cache = re.compile(r"load_or_train_captioner\(|lesson11_data\(")
    files = root_conftest.SHARED_MODELS["lesson10-captioner"]
    assert files[0] == "notebooks/10_image_captioning.ipynb"
    loaders = [path.relative_to(ROOT).as_posix() for folder in ("notebooks", "solutions", "exercises")
               for path in sorted((ROOT / folder).glob("*.ipynb")) if from_cache.search(path.read_text())]
    assert "notebooks/11_fusing_sources.ipynb" in loaders
    for relative in loaders:
        assert relative in files, relative  # files[0], lesson 10, trains it; the rest follow


def test_the_file_of_a_test_id_as_an_xdist_worker_sends_it() -> None:
    assert root_conftest.file_of("tests/test_generate.py::test_greedy[cpu]") == "tests/test_generate.py"
    assert root_conftest.file_of("notebooks/07_toy_translation.ipynb::Cell 3") == "notebooks/07_toy_translation.ipynb"
    assert root_conftest.file_of("notebooks/07_toy_translation::ipynb::Cell 3") == "notebooks/07_toy_translation.ipynb"
