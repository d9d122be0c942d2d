"""examples/layouts.py runs and its own checks (every layout matches a float64 reference) pass."""

import os
import subprocess
import sys

import pytest

EXAMPLE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples",
                       "layouts.py")


def test_layouts_example_runs():
    if not os.path.exists(EXAMPLE):
        pytest.skip("examples/ is not next to the tests (installed tests only)")
    proc = subprocess.run([sys.executable, EXAMPLE], capture_output=True, text=True,
                          timeout=300, cwd=os.path.dirname(EXAMPLE))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "all layouts agree" in proc.stdout
