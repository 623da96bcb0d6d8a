"""The README's JupyterLab command opens the course at the repository root, on lesson 00.

Started as the README says (plus flags for a headless run), the server's file browser must list
notebooks/, exercises/ and solutions/ (so the lessons' links to ../exercises/ work), and the page it
opens must be lesson 00.
"""
from __future__ import annotations

import json
import os
import re
import shlex
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def quickstart_commands() -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = re.split(r"^#+ .*quickstart.*$", text, flags=re.I | re.M)[1]
    section = re.split(r"^#{1,2} ", section, flags=re.M)[0]
    blocks = re.findall(r"^```(?:bash|sh|shell|console)?\n(.*?)^```", section, flags=re.M | re.S)
    return [line.strip() for block in blocks for line in block.splitlines() if line.strip()]


def jupyter_arguments() -> list[str]:
    """The arguments after ``jupyter lab`` in the README's command."""
    commands = [c for c in quickstart_commands() if "jupyter lab" in c]
    assert len(commands) == 1, commands
    return shlex.split(commands[0].split("jupyter lab", 1)[1])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_readme_opens_lesson_00() -> None:
    assert "notebooks/00_setup_and_tour.ipynb" in jupyter_arguments()


def test_the_readme_command_serves_the_whole_course(tmp_path: Path) -> None:
    port, token = free_port(), "quickstart-test"
    env = dict(os.environ, JUPYTER_CONFIG_DIR=str(tmp_path / "config"), JUPYTER_DATA_DIR=str(tmp_path / "data"),
               JUPYTER_RUNTIME_DIR=str(tmp_path / "runtime"))
    command = [sys.executable, "-m", "jupyterlab", *jupyter_arguments(), "--no-browser", f"--port={port}",
               "--ServerApp.ip=127.0.0.1", f"--IdentityProvider.token={token}", "--LabApp.news_url=None"]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        command.append("--allow-root")
    server = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        listing = None
        for _ in range(120):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/contents?token={token}", timeout=5) as r:
                    listing = {item["name"] for item in json.load(r)["content"]}
                break
            except OSError:
                time.sleep(0.5)
        assert listing is not None, "JupyterLab did not answer within 60 s"
        assert {"notebooks", "exercises", "solutions"} <= listing, listing
        opened = [p.read_text() for p in (tmp_path / "runtime").glob("*open*.html")]
        assert any("lab/tree/notebooks/00_setup_and_tour.ipynb" in page for page in opened), opened
    finally:
        server.terminate()
        server.wait(timeout=30)
