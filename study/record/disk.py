"""The results folder's disk: a probe before any work, and a full disk said once, clearly.

    check_writable(Path("results"))      # study.sweep, before the lock and the preflight
    write_json_atomic(folder / "study.json", record)

Imports nothing heavier than the standard library, so a sweep given an unwritable --results is
refused in a fraction of a second (no torch, no Arrow).
"""

from __future__ import annotations

import errno
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from retina import files
from retina.errors import RetinaError

DISK_FULL = (errno.ENOSPC, errno.EDQUOT)
PROBE_BYTES = 1 << 20  # the preflight's test write: real bytes, not an empty file


def check_writable(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-check-") as probe:
            # Real bytes, not an empty file: an empty file still fits on a full disk.
            probe.write(bytes(PROBE_BYTES))
            probe.flush()
            os.fsync(probe.fileno())
    except OSError as exc:
        if exc.errno in DISK_FULL:
            raise RetinaError(
                f"results folder {folder} is on a full disk (no space left for a "
                f"{PROBE_BYTES >> 20} MiB test file); free space there or choose another "
                "with --results DIR"
            ) from None
        raise RetinaError(
            f"results folder {folder} is not writable ({exc.strerror}); "
            "choose another with --results DIR or fix its permissions"
        ) from None


def disk_full_error(folder: Path) -> RetinaError:
    return RetinaError(
        f"no space left on the disk of {folder}; the sweep stopped and every file written so "
        "far is intact. Free space there, then continue with --resume (or use --results DIR "
        "on a larger disk for a new study)"
    )


def write_atomic(path: Path, write) -> None:
    """`retina.files.write_atomic`, with a full disk said once, clearly, for the sweep.

    A full disk leaves the previous file in place and raises `disk_full_error`.
    """
    try:
        files.write_atomic(path, write)
    except OSError as exc:
        if exc.errno in DISK_FULL:
            raise disk_full_error(path.parent) from None
        raise


def write_json_atomic(path: Path, obj: Any) -> None:
    write_atomic(path, lambda p: p.write_text(json.dumps(obj, indent=2, default=str) + "\n"))
