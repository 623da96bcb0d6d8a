"""Shared test fixtures: every device available here, and hypothesis' example counts."""
from __future__ import annotations

import os
from collections.abc import Iterator

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


@pytest.fixture(scope="module")
def single_thread() -> Iterator[None]:
    """Run a module's tests with one intra-op thread, then restore the previous count.

    The property and generation tests run thousands of tiny ops; threads gain nothing there, and on a
    busy 2-core machine the thread pool's spin-waiting made each op 10-30x slower.
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
