"""One driver per study: an exclusive lock on `results/<study>/` for the driver's whole life.

    with StudyLock(folder):   # study.sweep, before anything in the folder is touched
        ...

The lock is the file `results/<study>/.driver.lock`, created with O_EXCL (atomic on a local
disk and on NFS) and holding the driver's host, PID, process start time and start date. A
daemon thread refreshes its heartbeat (the file's modification time) every few seconds. A
second driver finds the file and stops with one line naming the running one; a lock left by
a killed driver is stale - its process is gone (same host), or its heartbeat is older than
`STALE_S` (another host, e.g. on NFS) - and is taken over with one warning line. Takeovers go through a second O_EXCL
file, so two drivers resuming at once cannot both take the same stale lock.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import threading
import time
from pathlib import Path

from retina.errors import RetinaError

LOCK_FILE = ".driver.lock"
HEARTBEAT_S = 5.0
STALE_S = 30.0  # six missed heartbeats: the driver is dead or its host cut off


def _process_start(pid: int) -> str | None:
    """The start time of `pid` in clock ticks since boot (Linux), None if no such process:
    with the PID it names one process, even after the PID is reused."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def _alive_here(pid: int, start: str | None) -> bool:
    now = _process_start(pid)
    if now is None:
        try:  # no /proc (not Linux): ask the kernel whether the PID exists
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    return start is None or now == start


def _since(epoch_s: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(epoch_s))


class StudyLock:
    """Holds `<folder>/.driver.lock` from `acquire` (or `with`) until `release`."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.path = self.folder / LOCK_FILE
        self.owner = {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "process_start": _process_start(os.getpid()),
            "since": time.time(),
        }
        self._made_folder = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ---- taking it -----------------------------------------------------------------
    def acquire(self) -> None:
        if not self.folder.exists():
            self.folder.mkdir(parents=True, mode=0o755)
            self._made_folder = True
        try:
            if not self._create(self.path):
                self._take_over()
        except BaseException:
            self._drop_folder()
            raise
        self._thread = threading.Thread(target=self._beat, name="study-lock", daemon=True)
        self._thread.start()

    def _create(self, path: Path, content: dict | None = None) -> bool:
        """Create `path` with O_EXCL holding `content` (our owner record); False if it exists."""
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            return False
        try:
            os.write(fd, json.dumps(content or self.owner).encode())
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            path.unlink(missing_ok=True)
            raise
        os.close(fd)
        return True

    def _take_over(self) -> None:
        guard = self.path.with_name(LOCK_FILE + ".takeover")
        if not self._create(guard):
            if self._age(guard) is not None and self._age(guard) > STALE_S:
                guard.unlink(missing_ok=True)  # left by a driver killed mid-takeover
            if not self._create(guard):
                raise RetinaError(
                    f"another driver is taking over the study in {self.folder} right now; "
                    "only one may run it: wait for it, or stop it first"
                )
        try:
            holder = self._read(self.path)
            stale = self._stale(holder)
            if holder is not None and stale is None:
                raise RetinaError(
                    f"the study in {self.folder} is being run by another driver (host "
                    f"{holder.get('host')}, PID {holder.get('pid')}, since "
                    f"{_since(float(holder.get('since', 0)))}); only one driver may run a "
                    "study: wait for it to end, or stop it first (Ctrl-C, then --resume here)"
                )
            if holder is not None:
                print(
                    f"warning: taking over the lock of the study in {self.folder} from a "
                    f"driver that is gone (host {holder.get('host')}, PID {holder.get('pid')}, "
                    f"since {_since(float(holder.get('since', 0)))}: {stale})",
                    file=sys.stderr,
                )
            self.path.unlink(missing_ok=True)
            if not self._create(self.path):  # never: every taker holds the guard first
                raise RetinaError(f"could not take the lock {self.path}; try again")
        finally:
            guard.unlink(missing_ok=True)

    def _read(self, path: Path) -> dict | None:
        try:
            return json.loads(path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return {}  # cut short (a driver killed as it wrote it): judged by its age

    @staticmethod
    def _age(path: Path) -> float | None:
        try:
            return time.time() - path.stat().st_mtime
        except FileNotFoundError:
            return None

    def _stale(self, holder: dict | None) -> str | None:
        """Why the lock is stale, or None while its driver lives."""
        if holder is None:
            return "no lock"
        age = self._age(self.path)
        if age is None:
            return "no lock"
        if holder.get("host") == self.owner["host"] and "pid" in holder:
            # On this host the process itself says it (a stopped driver is not a dead one).
            alive = _alive_here(int(holder["pid"]), holder.get("process_start"))
            return None if alive else "its process has ended"
        if age > STALE_S:
            return f"no heartbeat for {age:.0f} s"
        return None

    # ---- holding it ----------------------------------------------------------------
    def _beat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            with contextlib.suppress(OSError):  # a full disk does not stop a heartbeat
                if self._read(self.path) != self.owner:
                    print(
                        f"warning: the lock {self.path} was taken by another driver",
                        file=sys.stderr,
                    )
                    return
                os.utime(self.path)

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=HEARTBEAT_S)
        with contextlib.suppress(OSError):
            if self._read(self.path) == self.owner:
                self.path.unlink()
        self._drop_folder()

    def _drop_folder(self) -> None:
        if self._made_folder:  # a driver that stopped before doing anything leaves nothing
            with contextlib.suppress(OSError):
                self.folder.rmdir()  # only if empty

    def __enter__(self) -> StudyLock:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()
