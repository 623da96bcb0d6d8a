"""Every relative link in every notebook and in the README leads to a file that exists.

A learner opens the course at the repository root (the README's Quickstart), so a lesson's link to
``../exercises/04_masks.ipynb`` must resolve from the notebook's own folder.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted(p for folder in ("notebooks", "exercises", "solutions") for p in (ROOT / folder).glob("*.ipynb"))
MARKDOWN_LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
HTML_LINK = re.compile(r"""(?:href|src)\s*=\s*["']([^"']+)["']""")


def relative_links(text: str) -> list[str]:
    """Links in markdown or HTML that point into the repository (no scheme, not a pure #anchor)."""
    found = MARKDOWN_LINK.findall(text) + HTML_LINK.findall(text)
    return [link for link in found if not urlparse(link).scheme and not link.startswith(("#", "//"))]


def markdown_of(notebook: Path) -> str:
    cells = json.loads(notebook.read_text(encoding="utf-8"))["cells"]
    return "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "markdown")


def broken(links: list[str], folder: Path) -> list[str]:
    return [link for link in links if not (folder / unquote(link.split("#")[0])).exists()]


def test_the_link_finder_finds_relative_links_only() -> None:
    text = ("[a](../exercises/04_masks.ipynb) [b](https://pytorch.org) [c](#section) ![d](fig.png) "
            '<a href="x/y.ipynb">e</a> [g](03_cross_attention.ipynb#the-mistakes) '
            '<a href="mailto:me@example.org">m</a>')
    assert relative_links(text) == ["../exercises/04_masks.ipynb", "fig.png", "03_cross_attention.ipynb#the-mistakes",
                                    "x/y.ipynb"]
    assert broken(["README.md", "nope.md", "README.md#quickstart"], ROOT) == ["nope.md"]


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_relative_link_in_a_notebook_resolves(notebook: Path) -> None:
    links = relative_links(markdown_of(notebook))
    assert not broken(links, notebook.parent), f"{notebook.name}: links to files that do not exist"


def test_notebooks_link_to_each_other() -> None:
    """Lessons link to their exercises: the check above is not vacuous."""
    linked = [link for nb in NOTEBOOKS if nb.parent.name == "notebooks" for link in relative_links(markdown_of(nb))]
    assert any("../exercises/" in link for link in linked), linked[:10]


def test_every_relative_link_in_the_readme_resolves() -> None:
    links = relative_links((ROOT / "README.md").read_text(encoding="utf-8"))
    assert links, "the README links to the lessons"
    assert not broken(links, ROOT)
