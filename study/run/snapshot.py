"""A kept copy of Ray Tune's experiment snapshot, so `--resume` works after a disk filled up.

Tune writes its snapshot (`experiment_state-<session>.json`, the searcher's state) into a local
staging folder, then copies it over the files in `results/<study>/tune/`, in place. A copy
made while the disk is full leaves them truncated; on `--resume` Tune then logs "Failed to
restore the run state" and silently starts the study again (new trial ids: every trial runs
again). So the driver keeps its own copy of each complete snapshot in `tune/.kept-state/`
(`SnapshotKeeper`, from the results callback), and `--resume` puts it back where Tune's is
unreadable (`repair`).

The keeper also numbers the snapshots it sees (`generation`) and says which one `tune/` holds
(`durable`): the driver deletes a superseded checkpoint only once no snapshot that `--resume`
may read names it (study.run.retention).
"""

from __future__ import annotations

import hashlib
import json
import os
import pickletools
import shutil
import time
from pathlib import Path

from retina.errors import RetinaError
from study.record.disk import DISK_FULL, disk_full_error

KEPT = ".kept-state"
REMOTE_LOOK_S = 1.0  # Tune's copy in a bucket is looked at no more often than this
STATE_GLOB = "experiment_state-*.json"


def _session(state: Path) -> str:
    return state.stem.split("-", 1)[1]  # experiment_state-2026-01-31_12-00-00 -> the stamp


def _snapshot_files(folder: Path, session: str) -> list[Path]:
    """The files of one snapshot: the experiment state and the searcher's, same session."""
    return [p for p in folder.iterdir() if p.is_file() and p.stem.endswith(f"-{session}")]


def _newest_state(folder: Path) -> Path | None:
    states = sorted(folder.glob(STATE_GLOB))  # Tune restores the newest name, as here
    return states[-1] if states else None


def _whole(path: Path) -> bool:
    """Whether a snapshot file reads to its end: JSON, or a pickle (scanned, never loaded).

    By content, not by name: Tune's `search_gen_state-*.json` holds a pickle.
    """
    try:
        data = path.read_bytes()
    except OSError:
        return False
    try:
        json.loads(data)
        return True
    except ValueError:
        pass
    try:
        ops = list(pickletools.genops(data))
    except ValueError:
        return False
    return bool(ops) and ops[-1][0].name == "STOP"


class SnapshotKeeper:
    """Copies Tune's newest snapshot from its staging folder into `<experiment>/.kept-state/`.

    Called in the driver after each Tune step: Tune writes the staging copy in that same
    thread, so the files read here are whole and belong together.
    """

    def __init__(self, experiment: Path, remote=None):
        self.kept = Path(experiment) / KEPT
        # (pyarrow file system, experiment path) where Tune's copy lives in a bucket
        # (--storage s3://...); None: `experiment` itself, on this disk.
        self._remote = remote
        self._next_look = 0.0  # monotonic time of the next look at the bucket's copy
        self._state: Path | None = None  # this session's state file: one name per run
        self._copied: int | None = None  # the mtime of the snapshot kept last
        self._seen: int | None = None  # the mtime of the newest snapshot seen in staging
        self.generation = 0  # snapshots of this session seen so far (1, 2, ...)
        self.kept_generation: int | None = None  # the one whose copy is in .kept-state/
        self._digest: bytes | None = None  # of the kept copy's experiment state file
        self._checked: tuple | None = None  # (size, mtime, generation) last compared
        self._durable: int | None = None  # the generation tune/ held then

    def keep(self, staging: Path) -> bool:
        """Copy Tune's snapshot if it wrote a new one since the last call; whether it did."""
        if self._state is None or self._state.parent != staging:
            self._state = _newest_state(staging) if staging.is_dir() else None
        if self._state is None or not self._state.exists():
            return False
        state, mtime = self._state, self._state.stat().st_mtime_ns
        if mtime != self._seen:  # a new snapshot, whether or not its copy below succeeds
            self._seen, self.generation = mtime, self.generation + 1
        if mtime == self._copied:
            return False  # no snapshot since the last copy (the usual case: one every ~10 s)
        new = self.kept / str(time.time_ns())
        partial = new.with_name(new.name + ".tmp")
        try:
            partial.mkdir(parents=True)
            for path in _snapshot_files(staging, _session(state)):
                shutil.copyfile(path, partial / path.name)
            digest = _digest(partial / state.name)  # what tune/'s copy is compared with
            partial.rename(new)  # a kept copy appears whole, or not at all
        except OSError as exc:
            shutil.rmtree(partial, ignore_errors=True)
            if exc.errno in DISK_FULL:  # the last whole copy stays for --resume
                raise disk_full_error(self.kept.parent.parent) from None
            raise
        for old in self.kept.iterdir():
            if old != new:
                shutil.rmtree(old, ignore_errors=True)
        self._copied, self.kept_generation, self._digest = mtime, self.generation, digest
        return True

    def durable(self) -> int | None:
        """The generation of the snapshot `tune/` holds when it is the one kept last, else None.

        Byte for byte: Tune copies its staged snapshot into `tune/` in a background thread
        (and skips a copy while the last one still runs), so the file there may be older, half
        written, or cut short by a full disk. Read again only after Tune rewrote it.
        """
        if self._state is None or self.kept_generation is None:
            return None
        if self._remote is not None:  # a request per look: once per snapshot, at most 1/s
            if self._durable == self.kept_generation or time.monotonic() < self._next_look:
                return self._durable
            self._next_look = time.monotonic() + REMOTE_LOOK_S
        try:
            size, mtime, read = self._tune_copy(self._state.name)
        except OSError:  # not copied there yet
            return None
        key = (size, mtime, self.kept_generation)
        if key != self._checked:
            self._checked = key
            try:
                same = hashlib.blake2b(read(), digest_size=16).digest() == self._digest
            except OSError:
                same = False
            self._durable = self.kept_generation if same else None
        return self._durable

    def _tune_copy(self, name: str):
        """(size, mtime, a reader of its bytes) of Tune's copy of snapshot file `name`."""
        if self._remote is None:
            ours = self.kept.parent / name
            stat = ours.stat()
            return stat.st_size, stat.st_mtime_ns, ours.read_bytes
        fs, experiment = self._remote
        path = f"{experiment}/{name}"
        info = fs.get_file_info(path)
        if info.size is None:
            raise FileNotFoundError(path)

        def read() -> bytes:
            with fs.open_input_stream(path) as fh:
                return fh.read()

        return info.size, info.mtime_ns, read


def _digest(path: Path) -> bytes:
    return hashlib.blake2b(path.read_bytes(), digest_size=16).digest()


def repair(experiment: Path) -> str | None:
    """Before `--resume`: put the kept snapshot back if Tune's newest one is unreadable.

    Returns what it did, for the user, or None when Tune's snapshot is whole.
    """
    experiment = Path(experiment)
    state = _newest_state(experiment)
    if state is None or all(_whole(p) for p in _snapshot_files(experiment, _session(state))):
        return None
    kept_dirs = sorted(
        (p for p in (experiment / KEPT).glob("*") if p.is_dir() and p.name.isdigit()),
        key=lambda p: int(p.name),
    )
    if not kept_dirs:
        raise RetinaError(
            f"--resume: Ray's saved state {state} is damaged (the disk filled while it was "
            "written) and no good copy was kept; start a new study with --name NEW_NAME"
        )
    kept = kept_dirs[-1]
    # The damaged session's files go aside, so Tune's newest snapshot is the kept one.
    aside = experiment / f".damaged-{time.time_ns()}"
    aside.mkdir()
    for path in _snapshot_files(experiment, _session(state)):
        os.replace(path, aside / path.name)
    for path in kept.iterdir():
        shutil.copyfile(path, experiment / path.name)
    taken = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(int(kept.name) / 1e9))
    return (
        f"warning: Ray's saved state of this study is damaged (the disk filled while it was "
        f"written; moved to {aside}); resuming from the copy the sweep kept at {taken}"
    )
