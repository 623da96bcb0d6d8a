"""What every notebook's setup cell needs (a device and a seed), and how many CPU threads the small models use."""
from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import torch


def pick_device(prefer: str | None = None) -> torch.device:
    """``cuda`` when a GPU is available (or ``prefer`` says which device), else ``cpu``."""
    if prefer is not None:
        return torch.device(prefer)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def seed_everything(seed: int = 0) -> None:
    """Seed Python's, NumPy's and torch's random generators (all devices)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device


def small_model_threads() -> int:
    """CPU threads for training and decoding the course's small models: one less than the cores, at least 1 (and
    no more than torch uses now). Their operations are small, so threads mostly wait for each other: on 2 cores one
    thread trained faster than two whether the machine was idle or busy, and decoded twice as fast (README,
    "Threads")."""
    return max(1, min(torch.get_num_threads(), (os.cpu_count() or 1) - 1))


class num_threads:  # noqa: N801 (used like a function: ``with num_threads(1):``)
    """A ``with`` block on ``threads`` CPU threads (``None``: leave the count alone); the old count comes back after."""

    def __init__(self, threads: int | None) -> None:
        if threads is not None and threads < 1:
            raise ValueError(f"threads must be >= 1 or None; got {threads}")
        self.threads, self.before = threads, torch.get_num_threads()

    def __enter__(self) -> None:
        self.before = torch.get_num_threads()
        if self.threads is not None and self.threads != self.before:
            torch.set_num_threads(self.threads)

    def __exit__(self, *exc: object) -> None:
        if torch.get_num_threads() != self.before:
            torch.set_num_threads(self.before)


def course_cache_dir() -> Path:
    """Where trained models are kept between runs: ``$COURSE_CACHE_DIR``, else
    ``~/.cache/cross-attention-from-scratch``."""
    return Path(os.environ.get("COURSE_CACHE_DIR") or Path.home() / ".cache" / "cross-attention-from-scratch")


def save_atomically(payload: object, path: str | Path) -> Path:
    """``torch.save(payload)`` to a temporary file next to ``path``, then renamed: a reader never sees half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save(payload, temporary)
    os.replace(temporary, path)
    return path
