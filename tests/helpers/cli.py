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


def run_here(main, args, capsys) -> subprocess.CompletedProcess:
    """An entry point's `main(argv)` through `run_main` in this process, as its `__main__` runs
    it: the same exit code and output as the command, without a Python start and its imports
    (~2 s) per call. Each command keeps at least one test that runs it with `run_cli`."""
    from retina.cli import run_main

    capsys.readouterr()  # what earlier calls printed is not this call's output
    try:
        code = run_main(main, [str(a) for a in args])
    except SystemExit as exc:  # argparse's usage errors print, then exit 2
        code = exc.code
    out, err = capsys.readouterr()
    return subprocess.CompletedProcess(list(args), code, out, err)


def assert_fails(result: subprocess.CompletedProcess, *words: str) -> None:
    """Exit 2 with one line, `error: ...`, holding every word; no traceback."""
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for word in words:
        assert word in lines[0], lines[0]
