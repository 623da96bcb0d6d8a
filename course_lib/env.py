"""The two things every notebook's setup cell needs: a device and a seed."""
from __future__ import annotations

import random

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
