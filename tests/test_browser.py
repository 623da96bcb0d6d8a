"""JupyterLab in a real (headless) Chromium, driven by Playwright: Run All, no error output, the
attention explorer's figure appears and redraws when its slider and dropdown change; the translation
explorer translates what is typed into it and answers an unknown word with a message.

Lessons that load lesson 07's model get one trained for 10 s (``COURSE_CACHE_DIR`` points the
Jupyter server, and so its kernels, at it), so no lesson trains for 90 s here.

Needs Debian's chromium (/usr/bin/chromium) and the `playwright` package (never `playwright install`).
Skipped when they are missing, unless COURSE_REQUIRE_BROWSER=1 (set by .ci/run), which makes a
missing browser a failure. Screenshots go to test-artifacts/browser/.
"""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import nbformat
import pytest

import course_lib
from course_lib.authoring import setup_cell_source

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "test-artifacts" / "browser"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
# Every lesson that shows an explorer is driven in the browser, each once: a lesson with the translation
# explorer by its own test, which also moves the slider and head of the attention explorer inside it.
_LESSONS = {p.name: p.read_text() for p in sorted((ROOT / "notebooks").glob("*.ipynb"))}
TRANSLATION_LESSONS = [name for name, text in _LESSONS.items() if "TranslationExplorer(" in text]
EXPLORER_LESSONS = [name for name, text in _LESSONS.items()
                    if "AttentionExplorer(" in text and name not in TRANSLATION_LESSONS]
CAPTION_LESSONS = [name for name, text in _LESSONS.items() if "CaptionExplorer(" in text]

pytestmark = pytest.mark.browser


def _browser_available() -> str | None:
    if not Path(CHROMIUM).exists():
        return f"{CHROMIUM} not found (apt-get install chromium)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright package is not installed (pip install playwright)"
    return None


missing = _browser_available()
if missing:
    if os.environ.get("COURSE_REQUIRE_BROWSER") == "1":
        raise RuntimeError(f"browser test required but {missing}")
    pytest.skip(f"browser test skipped: {missing}", allow_module_level=True)

from playwright.sync_api import BrowserContext, Locator, Page, sync_playwright  # noqa: E402


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _explorer_notebook() -> nbformat.NotebookNode:
    """A minimal notebook showing the explorer on multi-layer, multi-head cross-attention."""
    code = """generator = torch.Generator().manual_seed(0)
scores = torch.randn(2, 4, 5, 7, generator=generator)  # [layers, heads, T_tgt, T_src]
source_mask = torch.tensor([True] * 6 + [False])      # the last source token is padding
weights = torch.softmax(scores.masked_fill(~source_mask, float("-inf")), dim=-1)
cl.widgets.AttentionExplorer(weights, ["le", "chat", "noir", "dort", "<eos>"],
                             ["the", "black", "cat", "is", "sleeping", "<eos>", "<pad>"],
                             scores=scores, mask=source_mask, title="synthetic cross-attention")"""
    return nbformat.v4.new_notebook(
        cells=[nbformat.v4.new_markdown_cell("# Explorer smoke test"),
               nbformat.v4.new_code_cell(setup_cell_source(course_lib.__version__) + "\nimport course_lib.widgets"),
               nbformat.v4.new_code_cell(code)],
        metadata={"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"}},
    )


def _caption_notebook() -> nbformat.NotebookNode:
    """A minimal notebook showing the caption explorer on the briefly trained captioner."""
    code = """from course_lib import captioning as cap
from course_lib.vision_widgets import CaptionExplorer

trained = cap.load_or_train_captioner(device=device)  # from $COURSE_CACHE_DIR
test = cap.caption_data(0, {"train": 1, "valid": 1, "test": 20, "generalisation": 1})["test"]
CaptionExplorer(trained.model, trained.vocab, test.scenes)"""
    return nbformat.v4.new_notebook(
        cells=[nbformat.v4.new_markdown_cell("# Caption explorer smoke test"),
               nbformat.v4.new_code_cell(setup_cell_source(course_lib.__version__)),
               nbformat.v4.new_code_cell(code)],
        metadata={"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"}},
    )


def _translation_notebook() -> nbformat.NotebookNode:
    """A minimal notebook showing the translation explorer on the briefly trained translator."""
    code = """from course_lib import training

translator = training.load_or_train_translator(device=device)  # from $COURSE_CACHE_DIR
explorer = cl.widgets.TranslationExplorer(translator)
explorer"""
    return nbformat.v4.new_notebook(
        cells=[nbformat.v4.new_markdown_cell("# Translation explorer smoke test"),
               nbformat.v4.new_code_cell(setup_cell_source(course_lib.__version__) + "\nimport course_lib.widgets"),
               nbformat.v4.new_code_cell(code)],
        metadata={"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"}},
    )


@pytest.fixture(scope="session")
def translator_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder for ``COURSE_CACHE_DIR`` holding a toy translator trained for 10 s and a captioner trained for 60
    steps (once per session)."""
    from course_lib import captioning as cap
    from course_lib.training import TrainConfig, save_translator, train_toy_translator

    folder = tmp_path_factory.mktemp("course-cache")
    translator = train_toy_translator(config=TrainConfig(time_budget_s=10), progress=False).translator
    save_translator(translator, folder / "toy_translator.pt")
    # and lesson 10's captioner, trained for 60 steps (its captions are poor: the test drives the explorer)
    data = cap.caption_data(0, {"train": 2_000, "valid": 20, "test": 20, "generalisation": 10})
    config = TrainConfig(max_steps=60, eval_every=60, time_budget_s=60, target_exact_match=None, repeat_long_from=None)
    captioner, _ = cap.train_captioner(data, config=config, progress=False)
    cap.save_captioner(captioner, folder / "lesson10" / "captioner-seed0.pt")
    return folder


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory, translator_cache: Path) -> Iterator[tuple[str, Path]]:
    """A JupyterLab server on 127.0.0.1 over a copy of the notebooks, with hermetic Jupyter dirs and
    ``COURSE_CACHE_DIR`` set to ``translator_cache`` (kernels inherit the server's environment)."""
    home = tmp_path_factory.mktemp("lab")
    root = home / "course"
    shutil.copytree(ROOT / "notebooks", root / "notebooks")
    nbformat.write(_explorer_notebook(), root / "notebooks" / "explorer_smoke_test.ipynb")
    nbformat.write(_translation_notebook(), root / "notebooks" / "translation_smoke_test.ipynb")
    nbformat.write(_caption_notebook(), root / "notebooks" / "caption_smoke_test.ipynb")
    env = dict(os.environ)
    env["COURSE_CACHE_DIR"] = str(translator_cache)
    for name in ("JUPYTER_CONFIG_DIR", "JUPYTER_DATA_DIR", "JUPYTER_RUNTIME_DIR", "MPLCONFIGDIR"):
        (home / name).mkdir()
        env[name] = str(home / name)
    env["JUPYTER_PLATFORM_DIRS"] = "1"
    port, token = _free_port(), "browser-test-token"
    command = [sys.executable, "-m", "jupyter", "lab", "--no-browser", f"--port={port}",
               "--ServerApp.ip=127.0.0.1", f"--ServerApp.token={token}", f"--ServerApp.root_dir={root}",
               "--LabApp.news_url=None", "--ServerApp.open_browser=False"]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        command.append("--allow-root")
    log = open(home / "server.log", "w")  # noqa: SIM115 - closed below
    server = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 90
        while True:
            try:
                with urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=3):
                    break
            except OSError:
                if server.poll() is not None or time.time() > deadline:
                    log_tail = (home / "server.log").read_text()[-3000:]
                    raise RuntimeError("JupyterLab did not start:\n" + log_tail) from None
                time.sleep(0.5)
        # One fresh workspace per notebook (`reset`), so no tab or kernel of an earlier test is restored.
        yield f"{base}/lab/workspaces/{{workspace}}/tree/notebooks/{{name}}?reset&token={token}", root
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrowserContext]:
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")), executable_path=CHROMIUM, headless=True,
            args=CHROMIUM_ARGS, viewport={"width": 1400, "height": 1000},
        )
        yield context
        context.close()


def _dismiss_news(page: Page) -> None:
    button = page.locator(".jp-toast-button:has-text('No')")
    if button.count():
        button.first.click()


def _wait_for_kernel(page: Page) -> None:
    """Wait until the kernel is idle, accepting JupyterLab's "Select Kernel" dialog if it asks."""
    idle = page.locator(".jp-StatusBar-TextItem", has_text="| Idle")  # "Python 3 (ipykernel) | Idle"
    accept = page.locator(".jp-Dialog .jp-mod-accept")
    for _ in range(240):
        if accept.count() and accept.first.is_visible():
            accept.first.click()
        elif idle.count():
            return
        page.wait_for_timeout(250)
    raise AssertionError("the kernel did not become idle within 60 s")


def _run_all(page: Page) -> None:
    _wait_for_kernel(page)
    _dismiss_news(page)
    page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
    page.locator(".lm-Menu-item[data-command='runmenu:run-all']").click()
    page.wait_for_timeout(1000)
    # Done when every code cell shows an execution number ("[12]:") and the kernel is idle: this also
    # proves Run All really ran every cell.
    page.wait_for_function(
        """() => {
            const prompts = [...document.querySelectorAll('.jp-Notebook .jp-CodeCell .jp-InputPrompt')];
            const allRan = prompts.length > 0 && prompts.every(p => /\\[\\d+\\]/.test(p.textContent));
            const idle = [...document.querySelectorAll('.jp-StatusBar-TextItem')]
                .some(item => item.textContent.includes('| Idle'));
            return allRan && idle;
        }""",
        timeout=300_000,
    )


def _errors(page: Page) -> list[str]:
    texts = page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']").all_inner_texts()
    return [t for t in texts if "Traceback" in t or "Error" in t]


def _settled_image(page: Page, explorer: Locator | None = None) -> str:
    """Wait until the kernel is idle and the explorer (default: the page's first) shows exactly one loaded
    image whose source has not changed for a second (redraws replace the image; old and new coexist briefly)."""
    explorer = explorer if explorer is not None else page.locator(".attention-explorer").first
    idle = page.locator(".jp-StatusBar-TextItem", has_text="| Idle")
    previous, stable_polls = None, 0
    for _ in range(240):
        images = explorer.locator(".widget-output img")
        if idle.count() and images.count() == 1 and images.first.evaluate("i => i.complete && i.naturalWidth > 0"):
            src = images.first.get_attribute("src")
            stable_polls = stable_polls + 1 if src == previous else 0
            previous = src
            if stable_polls >= 4:
                return src
        else:
            stable_polls = 0
        page.wait_for_timeout(250)
    raise AssertionError("the explorer's figure did not appear, or never settled")


def _drive_explorer(page: Page, url: str, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.goto(url.format(name=name, workspace=Path(name).stem.replace("_", "-")))
    _run_all(page)
    page.screenshot(path=str(ARTIFACTS / f"{Path(name).stem}-0-run-all.png"), full_page=True)
    assert _errors(page) == []
    explorer = page.locator(".attention-explorer").first
    explorer.wait_for(timeout=120_000)  # widget views render after the kernel's last message
    explorer.scroll_into_view_if_needed()
    first = _settled_image(page)
    page.screenshot(path=str(ARTIFACTS / f"{Path(name).stem}-1-after-run-all.png"))

    handle = explorer.locator(".widget-slider .noUi-handle").first
    handle.focus()
    handle.press("ArrowRight")  # query 0 -> 1
    after_slider = _settled_image(page)
    assert after_slider != first, "moving the query slider redraws the figure"
    page.screenshot(path=str(ARTIFACTS / f"{Path(name).stem}-2-after-slider.png"))

    head = explorer.locator(".widget-dropdown select").nth(1)  # layer, then head
    head.select_option(label="head 1")
    after_dropdown = _settled_image(page)
    assert after_dropdown != after_slider, "choosing another head redraws the figure"
    explorer.screenshot(path=str(ARTIFACTS / f"{Path(name).stem}-3-after-dropdown.png"))


def _wait_for_change(page: Page, read: Callable[[], str], old: str, what: str) -> str:
    """Poll ``read()`` until it differs from ``old`` (60 s at most); return the new value."""
    for _ in range(240):
        now = read()
        if now != old:
            return now
        page.wait_for_timeout(250)
    raise AssertionError(f"{what} did not change within 60 s (still {old!r})")


def _selected_label(select: Locator) -> str:
    return select.evaluate("s => s.options[s.selectedIndex].textContent").replace("\xa0", " ")  # ipywidgets: nbsp


def _open_and_run_all(page: Page, url: str, name: str, widget: str) -> tuple[str, Locator]:
    """Open notebook ``name`` in a fresh workspace, Run All (a screenshot, no errors), and return its stem and the
    first ``widget`` (a CSS selector), rendered and scrolled into view."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    stem = Path(name).stem
    page.goto(url.format(name=name, workspace=stem.replace("_", "-")))
    _run_all(page)
    page.screenshot(path=str(ARTIFACTS / f"{stem}-0-run-all.png"), full_page=True)
    assert _errors(page) == []
    root = page.locator(widget).first
    root.wait_for(timeout=120_000)  # widget views render after the kernel's last message
    root.scroll_into_view_if_needed()
    return stem, root


def _drive_translation_explorer(page: Page, url: str, name: str) -> None:
    """Run All; then in the first translation explorer: move the query slider and choose head 1, type a new
    sentence (figure and translation change, head 1 kept), type an unknown word (a message, no traceback)."""
    stem, root = _open_and_run_all(page, url, name, ".translation-explorer")
    explorer, message = root.locator(".attention-explorer"), root.locator(".translation-message")
    text_box = root.locator(".translation-input input")
    first = _settled_image(page, explorer)
    assert " target word" in message.inner_text()
    root.screenshot(path=str(ARTIFACTS / f"{stem}-1-after-run-all.png"))

    handle = explorer.locator(".widget-slider .noUi-handle").first
    handle.focus()
    handle.press("ArrowRight")  # query 0 -> 1
    after_slider = _settled_image(page, explorer)
    assert after_slider != first, "moving the query slider redraws the figure"
    explorer.locator(".widget-dropdown select").nth(1).select_option(label="head 1")  # layer, then head
    after_head = _settled_image(page, explorer)
    assert after_head != after_slider, "choosing another head redraws the figure"

    before = message.inner_text()
    text_box.fill("The old farmers helped a tired horse.")
    text_box.press("Enter")
    now = _wait_for_change(page, message.inner_text, before, "the translation message")
    assert "7 source words" in now
    new_sentence = _settled_image(page, explorer)
    assert new_sentence != after_head, "a new sentence redraws the figure"
    assert _selected_label(explorer.locator(".widget-dropdown select").nth(1)) == "head 1", "head choice kept"
    root.screenshot(path=str(ARTIFACTS / f"{stem}-2-new-sentence.png"))

    text_box.fill("the small dgo sleeps")
    text_box.press("Enter")
    now = _wait_for_change(page, message.inner_text, now, "the translation message")
    assert "unknown word 'dgo' (did you mean 'dog'" in now
    explorer.wait_for(state="detached", timeout=30_000)  # the last good sentence's figure is cleared
    assert _errors(page) == [] and "Traceback" not in root.inner_text()
    root.screenshot(path=str(ARTIFACTS / f"{stem}-3-unknown-word.png"))


def _drive_caption_explorer(page: Page, url: str, name: str) -> None:
    """Run All; then in the first caption explorer: step to the next word, choose head 1, build a scene (caption and
    figure change), build one with two objects in one cell (a message, no traceback, the figure kept)."""
    stem, root = _open_and_run_all(page, url, name, ".caption-explorer")
    message = root.locator(".caption-message")
    first = _settled_image(page, root)
    root.screenshot(path=str(ARTIFACTS / f"{stem}-1-after-run-all.png"))

    handle = root.locator(".caption-word .noUi-handle").first
    handle.focus()
    handle.press("ArrowRight")  # word 0 -> 1
    after_word = _settled_image(page, root)
    assert after_word != first, "stepping to the next word redraws the figure"
    root.locator(".caption-head select").select_option(label="1")
    after_head = _settled_image(page, root)
    assert after_head != after_word, "choosing another head redraws the figure"

    root.locator(".caption-shape-0 select").select_option(label="triangle")
    root.locator(".caption-cell-0 select").select_option(label="4")
    root.locator(".caption-shape-1 select").select_option(label="square")
    root.locator(".caption-cell-1 select").select_option(label="6")
    before = message.inner_text()
    root.locator(".caption-build button, button.caption-build").first.click()
    now = _wait_for_change(page, message.inner_text, before, "the caption")
    built = _settled_image(page, root)
    assert built != after_head, "a built scene is drawn"
    root.screenshot(path=str(ARTIFACTS / f"{stem}-2-built-scene.png"))

    root.locator(".caption-cell-1 select").select_option(label="4")  # the same cell as object 1
    root.locator(".caption-build button, button.caption-build").first.click()
    now = _wait_for_change(page, message.inner_text, now, "the message")
    assert "used twice" in now
    assert _errors(page) == [] and "Traceback" not in root.inner_text()
    assert root.locator(".widget-output img").count() == 1, "the last good scene's figure stays"
    root.screenshot(path=str(ARTIFACTS / f"{stem}-3-overlap.png"))


@pytest.fixture(scope="module")
def page(browser: BrowserContext) -> Iterator[Page]:
    page = browser.new_page()
    yield page
    page.close()


def test_explorer_renders_and_redraws_in_jupyterlab(page: Page, lab: tuple[str, Path]) -> None:
    _drive_explorer(page, lab[0], "explorer_smoke_test.ipynb")


@pytest.mark.parametrize("name", EXPLORER_LESSONS)
def test_lesson_runs_and_its_explorer_redraws_in_jupyterlab(page: Page, lab: tuple[str, Path], name: str) -> None:
    _drive_explorer(page, lab[0], name)


def test_translation_explorer_translates_what_is_typed_in_jupyterlab(page: Page, lab: tuple[str, Path]) -> None:
    _drive_translation_explorer(page, lab[0], "translation_smoke_test.ipynb")


@pytest.mark.parametrize("name", TRANSLATION_LESSONS)
def test_lesson_runs_and_its_translation_explorer_works_in_jupyterlab(page: Page, lab: tuple[str, Path],
                                                                      name: str) -> None:
    _drive_translation_explorer(page, lab[0], name)


def test_caption_explorer_steps_through_words_and_builds_scenes_in_jupyterlab(page: Page,
                                                                           lab: tuple[str, Path]) -> None:
    _drive_caption_explorer(page, lab[0], "caption_smoke_test.ipynb")


@pytest.mark.parametrize("name", CAPTION_LESSONS)
def test_lesson_runs_and_its_caption_explorer_works_in_jupyterlab(page: Page, lab: tuple[str, Path],
                                                                  name: str) -> None:
    _drive_caption_explorer(page, lab[0], name)
