"""The append-only journal of a study's results: `results/<study>/journal.jsonl`.

One JSON line per change to the results (a trial started, an epoch, a failure, a finish, a
test), appended and flushed to the disk (fdatasync) before the call that made the change
returns. Recording a result therefore costs the driver one small write, whatever the size of
the study; the Parquet files are a view rebuilt from memory every few seconds
(`study.record.results.ResultsStore`), and the journal is what `--resume` reads back.

A driver killed mid-append leaves at most its last line cut short: readers skip it, and the
next driver (`read_events(..., repair=True)`) cuts it off before appending after it. Only the
driver writes here; one driver holds a study at a time (`study.run.lock`).
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from retina import files
from retina.errors import RetinaError

JOURNAL_FILE = "journal.jsonl"
PLAIN = (str, int, float, bool, type(None))


def plain(value: Any) -> Any:
    """A JSON-ready copy: numpy scalars and arrays become Python values and lists; values of
    any other type (Tune puts objects in its results) are left out of a mapping."""
    if isinstance(value, PLAIN):
        return value
    if isinstance(value, Mapping):
        out = {}
        for key, item in value.items():
            item = plain(item)
            if item is not _SKIP:
                out[str(key)] = item
        return out
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if hasattr(value, "tolist"):  # numpy scalar or array: NaN stays a float NaN
        return value.tolist()
    return _SKIP


_SKIP = object()


def encode(event: Mapping[str, Any]) -> bytes:
    # NaN and Infinity are written as JSON's common extension (Python reads them back).
    return (json.dumps(plain(event), separators=(",", ":")) + "\n").encode()


def read_events(path: Path, repair: bool = False) -> list[dict]:
    """Every event in the journal, in order.

    A last line without its newline (the writer was killed mid-append) is skipped, and with
    `repair` (the driver, before it appends) cut off the file. A bad line anywhere else
    means the file was damaged by something other than a kill: refused, naming the line.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return []
    end = data.rfind(b"\n") + 1  # the bytes after the last newline are a torn append
    if repair and end < len(data):
        with open(path, "r+b") as fh:
            fh.truncate(end)
            os.fsync(fh.fileno())
    events = []
    for number, line in enumerate(data[:end].splitlines(), start=1):
        try:
            events.append(json.loads(line))
        except ValueError:
            raise RetinaError(
                f"{path} line {number} is damaged (not a write cut short by a kill); the "
                "Parquet files beside it hold the results up to a few seconds before: move "
                "the journal aside and run --resume again to rebuild it from them"
            ) from None
    return events


def write_events(path: Path, events: list[Mapping[str, Any]]) -> None:
    """A new journal holding `events`, written whole (temp file, fsync, rename)."""

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as fh:
            for event in events:
                fh.write(encode(event))
            fh.flush()
            os.fsync(fh.fileno())

    files.write_atomic(Path(path), write)


class Journal:
    """Appends events to one journal file; each `append` is on the disk when it returns."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._fd: int | None = None

    def append(self, event: Mapping[str, Any]) -> None:
        line = encode(event)
        if self._fd is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        start = os.lseek(self._fd, 0, os.SEEK_END)
        try:
            written = os.write(self._fd, line)
            if written != len(line):  # a short write: the disk filled part-way
                raise OSError(28, os.strerror(28))
            os.fdatasync(self._fd)  # durable before Ray's snapshot can name this result
        except OSError:
            # Leave no partial line behind where we can help it (a full disk).
            try:
                os.ftruncate(self._fd, start)
            except OSError:
                pass  # a torn last line is skipped by every reader anyway
            raise

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def journaled(method):
    """Marks a `ResultsStore` method that changes the results: each call is appended to the
    store's journal (when it has one) before it changes anything, so a call that fails to
    reach the disk (a full disk) changes nothing, and replaying the journal redoes them all."""

    @functools.wraps(method)
    def logged(self, *args, **kwargs):
        if self.journal is not None:
            event = {"op": method.__name__, "args": list(args)}
            if kwargs:
                event["kwargs"] = kwargs
            self.journal.append(event)
        self.dirty = True
        # Every change is about one trial, named first: its parts of the tables are stale.
        self.touched.add(str(args[0] if args else kwargs["trial_id"]))
        return method(self, *args, **kwargs)

    logged.journaled = True
    return logged


def replay(store, events: list[dict]) -> None:
    """Apply journal events to `store` (without journaling them again)."""
    for event in events:
        op = event.get("op")
        if op == "restore":  # a whole state, e.g. a study loaded from its Parquet files
            store.restore_state(event["state"])
            continue
        method = getattr(type(store), str(op), None)
        if not getattr(method, "journaled", False):
            raise RetinaError(
                f"{store.folder / JOURNAL_FILE}: unknown event {op!r} (written by a newer "
                "version of the harness?); resume the study with that version"
            )
        method.__wrapped__(store, *event.get("args", []), **event.get("kwargs", {}))
