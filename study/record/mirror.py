"""The driver's results folder mirrored to the study's storage, so that a study whose driver
machine is lost resumes from the storage alone:

    python -m study.sweep SPACE --storage s3://bucket/runs --resume   # on a new machine

`results/<study>/` (study.json, journal, Parquet tables, predictions, summary, report, best/,
gallery) is copied to `<storage>/<study>/`, beside Ray's `tune/` and `tune-confirm/`, after
each Parquet rebuild (the results store's own throttle, `ResultsStore.after_flush`; in a
thread of its own) and at the end of every stage; only files changed since the last copy
travel. The journal goes by segments, with every epoch, in the driver's thread. `restore` copies it back
into an empty local folder. Ray's experiment folders are Ray's: never mirrored here.

    mirror = Mirror(folder, storage)
    store.after_flush = mirror.push_soon
    mirror.restore()        # --resume with an empty results/<study>/
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pyarrow.fs as pafs

from retina.errors import RetinaError
from study.record.layout import CONFIRM_DIR, JOURNAL_FILE, STUDY_JSON, TUNE_DIR
from study.record.storage import Storage

SEGMENTS = "journal.d"  # the journal in the storage: one object per push of its new lines
LEASE = "driver.json"  # in the storage only: who runs the study, renewed every LEASE_S / 3
LEASE_S = 30.0


def _skipped(relative: str) -> bool:
    """Not copied file by file: Ray's experiment folders (in the storage already), the journal
    (by segments), hidden files (the driver's lock, temporary files of atomic writes)."""
    parts = relative.split("/")
    special = (TUNE_DIR, CONFIRM_DIR, JOURNAL_FILE, SEGMENTS, LEASE)
    return parts[0] in special or any(p.startswith(".") for p in parts)


class Mirror:
    """Copies `folder` (results/<study>) to `<storage>/<study>/` and back."""

    def __init__(self, folder: Path, storage: Storage):
        self.folder = Path(folder)
        self.storage = storage
        self.remote = storage.study_path(self.folder.name)
        self._sent: dict[str, tuple[int, int]] = {}  # relative path -> (size, mtime_ns) copied
        self._journal_sent: int | None = None  # journal bytes in the storage (None: not read)
        self._pool: ThreadPoolExecutor | None = None  # push_soon's thread
        self._lock = threading.Lock()
        self._waiting = False  # a push_soon queued, not started
        self.bytes_pushed = 0  # for the sweep's line and the bench
        self.seconds = 0.0

    def push_journal(self) -> int:
        """Copy the journal's lines written since the last push, as one new object named by
        their offset (S3 cannot append; each push costs its new bytes only); the bytes copied.
        Called for every epoch journaled: the storage's journal is never behind Ray's
        snapshot there, as the local one is never behind it on disk."""
        began = time.perf_counter()
        if self._journal_sent is None:
            self._journal_sent = max((o + n for o, n, _ in self._segments()), default=0)
        try:
            with open(self.folder / JOURNAL_FILE, "rb") as fh:
                fh.seek(self._journal_sent)
                new = fh.read()
        except FileNotFoundError:
            return 0
        new = new[: new.rfind(b"\n") + 1]  # whole lines only
        if new:
            path = f"{self.remote}/{SEGMENTS}/{self._journal_sent:014d}.jsonl"
            with self.storage.fs.open_output_stream(path) as out:
                out.write(new)
            self._journal_sent += len(new)
            self.bytes_pushed += len(new)
        self.seconds += time.perf_counter() - began
        return len(new)

    def _segments(self) -> list[tuple[int, int, str]]:
        """(offset, size, path) of the journal's segments in the storage, by offset."""
        selector = pafs.FileSelector(f"{self.remote}/{SEGMENTS}", allow_not_found=True)
        found = []
        for info in self.storage.fs.get_file_info(selector):
            stem = info.base_name.split(".", 1)[0]
            if info.type == pafs.FileType.File and stem.isdigit():
                found.append((int(stem), info.size, info.path))
        return sorted(found)

    def _restore_journal(self) -> int:
        """The journal put back from its segments (overlaps skipped); its bytes."""
        length = 0
        partial = self.folder / f".{JOURNAL_FILE}.restoring"
        with open(partial, "wb") as out:
            for offset, _, path in self._segments():
                with self.storage.fs.open_input_stream(path) as src:
                    data = src.read()
                if offset + len(data) <= length:
                    continue
                out.write(data[max(0, length - offset) :])
                length = max(length, offset + len(data))
        os.replace(partial, self.folder / JOURNAL_FILE)
        self._journal_sent = length
        return length

    def push_soon(self) -> None:
        """`push` in a thread of its own, off the driver's loop (after each Parquet rebuild):
        the journal's lines now, the files there; a push already waiting covers this one."""
        self.push_journal()
        with self._lock:
            if self._waiting:
                return
            self._waiting = True
        if self._pool is None:
            self._pool = ThreadPoolExecutor(1, thread_name_prefix="results-mirror")
        self._pool.submit(self._push_files_later)

    def _push_files_later(self) -> None:
        with self._lock:
            self._waiting = False
        try:
            self._push_files()
        except OSError as exc:  # said once; the next push (at the latest, at exit) retries
            print(f"warning: mirroring the results to {self.storage.uri} failed ({exc})",
                  file=sys.stderr)  # fmt: skip

    def drain(self) -> None:
        """Wait for the pushes under way (before the last one, at exit)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def push(self) -> int:
        """Copy the journal's new lines and every file changed since the last push; the bytes
        copied."""
        self.drain()
        return self.push_journal() + self._push_files()

    def _push_files(self) -> int:
        moved, began = 0, time.perf_counter()
        for path in sorted(self.folder.rglob("*")):
            relative = path.relative_to(self.folder).as_posix()
            if _skipped(relative) or not path.is_file():
                continue
            try:
                stat = path.stat()
                key = (stat.st_size, stat.st_mtime_ns)
                if self._sent.get(relative) == key:
                    continue
                data = path.read_bytes()
            except FileNotFoundError:  # replaced or removed meanwhile: the next push has it
                continue
            with self.storage.fs.open_output_stream(f"{self.remote}/{relative}") as out:
                out.write(data)  # an object appears whole, or not at all
            self._sent[relative] = key
            moved += len(data)
        self.bytes_pushed += moved
        self.seconds += time.perf_counter() - began
        return moved

    def holds_study(self) -> bool:
        """Whether the storage holds a study of this name (its study.json)."""
        info = self.storage.fs.get_file_info(f"{self.remote}/{STUDY_JSON}")
        return info.type == pafs.FileType.File

    def restore(self) -> tuple[int, int]:
        """Copy the mirrored study into `folder` (empty of it); (files, bytes) copied."""
        selector = pafs.FileSelector(self.remote, recursive=True, allow_not_found=True)
        files = bytes_ = 0
        for info in self.storage.fs.get_file_info(selector):
            relative = info.path[len(self.remote) :].lstrip("/")
            if info.type != pafs.FileType.File or _skipped(relative):
                continue
            target = self.folder / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            partial = target.with_name(f".{target.name}.restoring")
            with self.storage.fs.open_input_stream(info.path) as src:
                partial.write_bytes(src.read())
            os.replace(partial, target)
            stat = target.stat()
            self._sent[relative] = (stat.st_size, stat.st_mtime_ns)  # already there
            files, bytes_ = files + 1, bytes_ + stat.st_size
        journal = self._restore_journal()
        return files + 1, bytes_ + journal


class StorageLease:
    """Best effort across machines: the driver running a study renews `<storage>/<study>/
    driver.json` every `LEASE_S / 3`; another driver resuming the same study from the
    storage is refused while it is fresh. S3 has no atomic create here (pyarrow.fs): two
    drivers starting within the same second can both pass (docs/cluster-storage.md)."""

    def __init__(self, mirror: Mirror, owner: dict):
        self.path = f"{mirror.remote}/{LEASE}"
        self.fs, self.uri, self.owner = mirror.storage.fs, mirror.storage.uri, owner
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def acquire(self) -> None:
        try:
            with self.fs.open_input_stream(self.path) as src:
                holder = json.loads(src.read())
        except (OSError, ValueError):
            holder = None
        if holder is not None and _live(holder):
            since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(holder.get("since", 0)))
            raise RetinaError(
                f"the study {self.path.rsplit('/', 2)[-2]} in {self.uri} is being run by another "
                f"driver (host {holder.get('host')}, PID {holder.get('pid')}, since {since}); "
                "only one driver may run a study: wait for it to end, or stop it first"
            )
        self._renew()
        self._thread = threading.Thread(target=self._beat, name="storage-lease", daemon=True)
        self._thread.start()

    def _renew(self) -> None:
        with self.fs.open_output_stream(self.path) as out:
            out.write(json.dumps({**self.owner, "renewed": time.time()}).encode())

    def _beat(self) -> None:
        while not self._stop.wait(LEASE_S / 3):
            with contextlib.suppress(OSError):  # a missed renewal: the next one may land
                self._renew()

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=LEASE_S / 3)
            with contextlib.suppress(OSError):
                self.fs.delete_file(self.path)


def _live(holder: dict) -> bool:
    """Whether a lease's driver may still run: renewed in the last LEASE_S, and on this host
    its process still exists (a driver killed here frees the lease at once)."""
    if time.time() - float(holder.get("renewed", 0)) >= LEASE_S:
        return False
    if holder.get("host") != socket.gethostname():
        return True
    try:
        os.kill(int(holder.get("pid", 0)), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, ValueError, OverflowError):
        return True
    return True


def mirror_for(folder: Path, uri: str | None) -> Mirror | None:
    """The mirror of results/<study> `folder` to the study's storage `uri`; None without one
    (or where the storage is that very folder's parent)."""
    if uri is None:
        return None
    storage = Storage.resolve(uri, Path(folder).parent)
    if storage.local and Path(storage.root) == Path(folder).parent.resolve():
        return None
    return Mirror(folder, storage)
