"""Writing files so that a reader, a crash or a full disk never sees half of one."""

from __future__ import annotations

import os
import secrets
import shutil
import socket
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


def temp_tag() -> str:
    """`host-pid-random`: which process wrote a temporary file or folder (see `orphaned`); the
    random part keeps two of one process apart."""
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(4)}"


def orphaned(tag: str) -> bool:
    """Whether the writer a `temp_tag` names was killed: it ran on this host and its pid is gone.
    Another machine's writer (a shared file system) or another user's is never called gone."""
    parts = tag.rsplit("-", 2)  # the host name may itself hold '-'
    if len(parts) != 3 or parts[0] != socket.gethostname() or not parts[1].isdigit():
        return False
    try:
        os.kill(int(parts[1]), 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's process
        pass
    return False


def _recover_orphans(folder: Path) -> None:
    """Clean up after a writer of `folder` that was killed: its half-filled temp folder goes; an
    old folder it had set aside comes back if the new one never arrived (else it goes)."""
    for entry in folder.parent.glob(f".{folder.name}.*-*"):
        kind, _, tag = entry.name[len(folder.name) + 2 :].partition("-")
        if kind not in ("tmp", "old") or not orphaned(tag):
            continue
        if kind == "old" and not folder.exists():
            os.rename(entry, folder)  # killed between its two renames: the old one is all there is
        else:
            shutil.rmtree(entry, ignore_errors=True)


def write_folder_atomic(folder: Path, fill: Callable[[Path], None]) -> None:
    """Call `fill(tmp)` on a new temp folder beside `folder`, then put it in `folder`'s place.

    Readers see the old folder or the complete new one, never a half-filled one: an existing
    `folder` is renamed aside, the new one renamed in, the old one deleted. On any error the
    temp folder is removed and the old folder stays; what a killed writer left is cleaned up
    (or put back) by the next write.
    """
    folder.parent.mkdir(parents=True, exist_ok=True)
    _recover_orphans(folder)
    tag = temp_tag()
    tmp = folder.parent / f".{folder.name}.tmp-{tag}"
    tmp.mkdir(mode=0o755)
    try:
        fill(tmp)
        if folder.exists():
            old = folder.parent / f".{folder.name}.old-{tag}"
            os.rename(folder, old)  # a folder cannot be replaced in one step: set it aside
            try:
                os.rename(tmp, folder)
            except BaseException:
                os.rename(old, folder)  # put the previous one back
                raise
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
