"""Runs the browser client's pure-module unit tests (static/tests/*.test.js) with node."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_static_js_units() -> None:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed")
    tests = sorted(str(p) for p in (ROOT / "static" / "tests").glob("*.test.js"))
    assert tests, "no static/tests/*.test.js found"
    result = subprocess.run(
        [node, "--test", "--test-reporter=spec", *tests],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, f"node --test failed:\n{result.stdout}\n{result.stderr}"
