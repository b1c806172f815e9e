"""Shared fixtures: the repository root on sys.path and a helper to run the CLIs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("MUJOCO_GL", "egl")


def run_cli(script: str, *args: str, cwd: Path | None = None, timeout: float = 600
            ) -> subprocess.CompletedProcess:
    """Run ``python script args`` from the repository root and capture its output."""
    return subprocess.run([sys.executable, str(ROOT / script), *args], cwd=cwd or ROOT, capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, "PYTHONWARNINGS": "ignore"})


@pytest.fixture
def cli():
    return run_cli
