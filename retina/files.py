"""Writing files so that a reader, a crash or a full disk never sees half of one."""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path


def write_atomic(path: Path, write: Callable[[Path], None], mode: int = 0o644) -> None:
    """Call `write(tmp)` on a temp file beside `path`, then rename it over `path`.

    The rename is atomic on one file system: readers see the old file or the new one, never
    a partial one. On any error the temp file is removed and the old file is left in place;
    the OSError propagates for the caller to word. `mode` replaces mkstemp's 0600 (shared
    read-only by default; never writable by others).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_folder_atomic(folder: Path, fill: Callable[[Path], None]) -> None:
    """Call `fill(tmp)` on a new temp folder beside `folder`, then put it in `folder`'s place.

    Readers see the old folder or the complete new one, never a half-filled one: an existing
    `folder` is renamed aside, the new one renamed in, the old one deleted. On any error the
    temp folder is removed and the old folder stays.
    """
    folder.parent.mkdir(parents=True, exist_ok=True)
    tag = f"{os.getpid()}-{secrets.token_hex(4)}"
    tmp = folder.parent / f".{folder.name}.tmp-{tag}"
    tmp.mkdir(mode=0o755)
    try:
        fill(tmp)
        if folder.exists():
            old = folder.parent / f".{folder.name}.old-{tag}"
            os.rename(folder, old)
            os.rename(tmp, folder)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
