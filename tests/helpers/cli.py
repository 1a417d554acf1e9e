"""Run the project's command-line entry points as a user would, from the repository root."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]  # the repository: tests/helpers/cli.py


def run_cli(*args: str, timeout: float = 600, **kwargs) -> subprocess.CompletedProcess:
    """`python -m <args>` in the repository root; output captured as text."""
    return subprocess.run(
        [sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True,
        timeout=timeout, **kwargs,
    )  # fmt: skip
