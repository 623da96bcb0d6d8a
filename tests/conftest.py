"""Shared test fixtures: every device available here, and hypothesis' example counts."""
from __future__ import annotations

import os

import pytest
import torch
from hypothesis import HealthCheck, settings

# At least 200 examples per property everywhere (CI included); HYPOTHESIS_PROFILE=quick for a fast local run.
settings.register_profile("thorough", max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("quick", max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "thorough"))

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.fixture(params=DEVICES)
def device(request: pytest.FixtureRequest) -> torch.device:
    """Each test that takes ``device`` runs on the CPU, and on CUDA too when one is present."""
    return torch.device(request.param)
