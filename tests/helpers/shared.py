"""Session fixtures made once per test run, also when pytest-xdist runs it in workers.

Each xdist worker is its own process with its own session: without this, every worker would
generate the data and run the shared sweep again. The first worker to take the lock makes the
thing in the run's common temp folder; the others wait on the lock and reuse it.
"""

from __future__ import annotations

import fcntl
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest


def run_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The temp folder every worker of this run shares (the session's own without xdist)."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


def made_once(
    tmp_path_factory: pytest.TempPathFactory, name: str, make: Callable[[Path], None]
) -> Path:
    """`<run root>/<name>`, made by `make(folder)` in the first worker that asks; the others
    wait for it. A folder whose `make` failed is made again by the next worker (no marker)."""
    root = run_root(tmp_path_factory)
    folder, done = root / name, root / f"{name}.done"
    with open(root / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, also if we crash
        if not done.exists():
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir()
            make(folder)
            done.touch()
    return folder


def own_copy(tmp_path_factory: pytest.TempPathFactory, shared: Path, name: str) -> Path:
    """A copy of `shared` for this worker alone, so that no test sees another worker's writes
    (under xdist; without it the shared folder is this session's own and is returned)."""
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        return shared
    copy = tmp_path_factory.mktemp(name)
    shutil.copytree(shared, copy, dirs_exist_ok=True, symlinks=True)
    return copy
