"""The append-only journal of a study's results: `results/<study>/journal.jsonl`.

One JSON line per change to the results (a trial started, an epoch, a failure, a finish, a
test), appended and flushed to the disk (fdatasync) before the call that made the change
returns. Recording a result therefore costs the driver one small write, whatever the size of
the study; the Parquet files are a view rebuilt from memory every few seconds
(`study.record.results.ResultsStore`), and the journal is what `--resume` reads back.

A driver killed mid-append leaves at most its last line cut short: readers skip it, and the
next driver (`read_events(..., repair=True)`) cuts it off before appending after it. Only the
driver writes here; one driver holds a study at a time (`study.run.lock`).

Each line is a versioned event of its own format (`EVENTS`), e.g.
    {"v": 1, "event": "epoch", "trial": "t_00003", "result": {"epoch": 2, "val_kappa": 0.41}}
decoupled from the store's method names. A journal of the format before (`{"op": ...}`) is
read through `upgrade`, and the driver rewrites it once as events.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from retina import files
from retina.errors import RetinaError

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


VERSION = 1  # of the event records below; a reader refuses a newer one by name

# The events of a study, each with the fields it carries (besides "v" and "event"). The names
# are the journal's own: renaming a Python method or parameter never changes them.
EVENTS: dict[str, tuple[str, ...]] = {
    "trial_started": ("trial", "config", "stage", "seed", "at"),
    "epoch": ("trial", "result"),
    "trial_failed": ("trial", "reason"),
    "trial_ended": ("trial", "status", "error", "at"),  # at: since 2026-12 (optuna.log's end)
    "test": ("trial", "epoch", "metrics", "confusion"),
    "trial_running": ("trial",),
    "restore": ("state",),  # a whole state, e.g. a study loaded from its Parquet files
}

# The format before versioned events (2026-11, frozen): {"op": <store method>, "args": [...],
# "kwargs": {...}}; each op's parameters in order, and the event it now is.
_V0 = {
    "start_trial": ("trial_started", ("trial", "config", "stage", "seed")),
    "record_epoch": ("epoch", ("trial", "result")),
    "record_failure": ("trial_failed", ("trial", "reason")),
    "finish_trial": ("trial_ended", ("trial", "status", "error")),
    "record_test": ("test", ("trial", "epoch", "metrics", "confusion")),
    "mark_running": ("trial_running", ("trial",)),
    "restore": ("restore", ("state",)),
}
_V0_KWARGS = {"trial_id": "trial"}  # v0's keyword names where they differ from the fields


def event(name: str, **fields: Any) -> dict[str, Any]:
    """One journal record: `{"v": 1, "event": name, **fields}`; unknown names or fields are a
    programming error, caught here rather than in a study's journal."""
    expected = EVENTS[name]
    unknown = set(fields) - set(expected)
    if unknown:
        raise TypeError(f"event {name!r} has no field(s) {sorted(unknown)}")
    return {"v": VERSION, "event": name, **fields}


def _from_v0(record: Mapping[str, Any], where: str) -> dict[str, Any]:
    op = record.get("op")
    if op not in _V0:
        raise RetinaError(
            f"{where}: unknown journal record {op!r}; resume with the version that wrote it"
        )
    name, params = _V0[op]
    fields = dict(zip(params, record.get("args", []), strict=False))
    fields.update({_V0_KWARGS.get(k, k): v for k, v in (record.get("kwargs") or {}).items()})
    return {"v": VERSION, "event": name, **fields}


def upgrade(records: list[dict], where: str) -> tuple[list[dict], int]:
    """(the records as events of this VERSION, how many were in the format before it).

    A record of a newer version is refused, naming the file: it was written by a newer
    harness, whose events this one cannot apply.
    """
    out, old = [], 0
    for record in records:
        if "event" not in record:
            out.append(_from_v0(record, where))
            old += 1
            continue
        version = record.get("v")
        if not isinstance(version, int) or version > VERSION:
            raise RetinaError(
                f"{where}: a journal record of version {version!r} (this harness reads up to "
                f"{VERSION}): resume the study with the version of the harness that wrote it"
            )
        out.append(record)
    return out, old
