"""One driver per study: an exclusive lock on `results/<study>/` for the driver's whole life.

    with StudyLock(folder) as lock:   # study.sweep, before anything in the folder is touched
        ...
    if lock.lost: ...                 # another driver took it: this one stopped its study

The lock is `filelock`'s soft lease on `results/<study>/.driver.lock` (its marker names the
owner's host, PID and process start; a heartbeat thread refreshes it every `LEASE_S / 3`),
and `.driver.json` beside it says who holds it since when, for the messages. A second driver
is refused with one line naming the running one. A lock left by a killed driver is stale -
its process is gone (same host: a stopped driver, e.g. SIGSTOP, is alive and keeps it), or
its lease was not renewed for `LEASE_S` (another host, e.g. on NFS) - and is taken over with
one warning line; filelock's takeover is atomic, so of two drivers resuming a stale study at
once exactly one runs (tests/test_study_lock_race.py). A driver whose lease is taken from it
stops its study (SIGINT to itself, as Ctrl-C) and says so.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import sys
import time
from pathlib import Path

from filelock import OwnerRecord, SoftFileLease, Timeout

from retina.errors import RetinaError

LOCK_FILE = ".driver.lock"
HOLDER_FILE = ".driver.json"
LEASE_S = 30.0  # every driver of a study must agree: a lease not renewed for this long is dead
POLL_S = 0.25


def _process_start(pid: int) -> str | None:
    """The start time of `pid` in clock ticks since boot (Linux), None if unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def _since(epoch_s: float | None) -> str:
    if epoch_s is None:
        return "an unknown time"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(epoch_s))


def _same_host(owner: OwnerRecord) -> bool:
    # filelock marks a host's other PID namespaces with "?pidns-": their PIDs are not ours.
    return owner.hostname == socket.gethostname()


def _alive_here(owner: OwnerRecord) -> bool:
    """Whether the owner's process runs on this host (a stopped one does)."""
    try:
        os.kill(owner.pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    start = _process_start(owner.pid)
    # filelock's start token holds the start ticks in its low 64 bits: a reused PID differs.
    return owner.start is None or start is None or owner.start % 2**64 == int(start)


class StudyLock:
    """Holds `<folder>/.driver.lock` from `acquire` (or `with`) until `release`.

    `lease_s`: the lease's length (tests shorten it; every driver of a study uses `LEASE_S`).
    `lost`: why the lock was taken from this driver, or None while it holds it.
    """

    def __init__(self, folder: Path, lease_s: float = LEASE_S):
        self.folder = Path(folder)
        self.path = self.folder / LOCK_FILE
        self.holder_path = self.folder / HOLDER_FILE
        self.lease_s = lease_s
        self.owner = {"host": socket.gethostname(), "pid": os.getpid(), "since": time.time()}
        self.lost: str | None = None
        self._lease = SoftFileLease(
            self.path, lease_duration=lease_s, thread_local=False, on_compromise=self._on_lost
        )
        self._made_folder = False

    # ---- taking it -----------------------------------------------------------------
    def acquire(self) -> None:
        if not self.folder.exists():
            self.folder.mkdir(parents=True, mode=0o755)
            self._made_folder = True
        try:
            before, holder = self._take()
            self._write_holder()
        except BaseException:
            if self._lease.is_locked:
                self._lease.release()
            self._drop_folder()
            raise
        if before is not None:
            why = "its process has ended" if _same_host(before) else "its lease was not renewed"
            print(
                f"warning: taking over the lock of the study in {self.folder} from a driver "
                f"that is gone ({self._describe(before, holder)}: {why})",
                file=sys.stderr,
            )

    def _take(self) -> tuple[OwnerRecord | None, dict]:
        """Take the lease; the stale owner taken over (None: the lock was free) and its record."""
        deadline = None
        while True:
            before, holder = self._lease.owner, self._read_holder()
            if before is not None and _same_host(before) and _alive_here(before):
                raise self._busy(before, holder)  # never by age: a stopped driver is not dead
            try:
                self._lease.acquire(blocking=False)  # breaks a dead local owner's lock itself
                return before, holder
            except Timeout:
                pass
            owner = self._lease.owner
            if owner is None:
                continue  # released meanwhile: try again
            # Another host's driver: only a lease left unrenewed for LEASE_S, watched on this
            # host's own clock (filelock's rule), is dead; a fresh marker is a running driver.
            if deadline is None:
                if not _same_host(owner) and self._age() < self.lease_s:
                    raise self._busy(owner, holder)
                deadline = time.monotonic() + self.lease_s + POLL_S * 4
                if not _same_host(owner):
                    print(f"the lock of {self.folder} is old ({self._describe(owner, holder)}); "
                          f"waiting up to {self.lease_s:.0f} s for its lease to expire",
                          file=sys.stderr)  # fmt: skip
            if time.monotonic() > deadline:
                raise self._busy(owner, holder)
            time.sleep(POLL_S)

    def _busy(self, owner: OwnerRecord, holder: dict) -> RetinaError:
        return RetinaError(
            f"the study in {self.folder} is being run by another driver "
            f"({self._describe(owner, holder)}); only one driver may run a study: wait for it "
            "to end, or stop it first (Ctrl-C, then --resume here)"
        )

    @staticmethod
    def _describe(owner: OwnerRecord, holder: dict) -> str:
        ours = holder.get("pid") == owner.pid and holder.get("host") == owner.hostname
        since = holder.get("since") if ours else None
        return f"host {owner.hostname}, PID {owner.pid}, since {_since(since)}"

    def _age(self) -> float:
        try:
            return time.time() - self.path.stat().st_mtime
        except FileNotFoundError:
            return 0.0

    def _read_holder(self) -> dict:
        try:
            return json.loads(self.holder_path.read_text())
        except (OSError, ValueError):
            return {}

    def _write_holder(self) -> None:
        tmp = self.holder_path.with_name(f"{HOLDER_FILE}.{os.getpid()}")
        tmp.write_text(json.dumps(self.owner))
        os.replace(tmp, self.holder_path)

    # ---- losing it -----------------------------------------------------------------
    def _on_lost(self, compromise) -> None:
        """Called by the lease's heartbeat thread: another driver took the lock."""
        holder, owner = self._read_holder(), self._lease.owner
        who = self._describe(owner, holder) if owner is not None else "its marker is gone"
        self.lost = (
            f"the lock of the study in {self.folder} was taken by another driver ({who}; "
            f"{compromise.reason}); this driver stopped its study so that only one runs it"
        )
        print(f"error: {self.lost}", file=sys.stderr)
        os.kill(os.getpid(), signal.SIGINT)  # as Ctrl-C: Tune stops and saves its state

    # ---- letting it go -------------------------------------------------------------
    def release(self) -> None:
        if self._lease.is_locked:
            if self.lost is None and self._lease.compromise is None:
                with contextlib.suppress(OSError):
                    if self._read_holder() == self.owner:
                        self.holder_path.unlink()
            self._lease.release()  # removes the marker only while it is still ours
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
