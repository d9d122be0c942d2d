import os
import sys

import pytest
from hypothesis import HealthCheck, settings

# Shared test helpers (tests/oracle.py) import as a top-level module; only tests/ goes on the
# path, never the repository root, so `import convbp` always finds the installed package.
sys.path.insert(0, os.path.dirname(__file__))

settings.register_profile("ci", derandomize=True, database=None, deadline=None,
                          max_examples=60, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("dev", deadline=None, max_examples=100,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("thorough", deadline=None, max_examples=2000,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture(autouse=True)
def threads_for_any_size(monkeypatch):
    """Let tiny test calls run on several threads: the work threshold that keeps small calls on
    one thread, and the load check that leaves busy CPUs alone, would otherwise hide races and
    make the 1-vs-2-thread comparisons compare one thread with itself.  Tests of the threshold
    itself restore it."""
    from convbp import _threads
    monkeypatch.setattr(_threads, "MIN_FLOPS_PER_THREAD", 0)
    monkeypatch.setattr(_threads, "ADAPT_TO_LOAD", False)
