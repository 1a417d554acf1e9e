"""The results folder of a study: typed Parquet tables, replaced atomically.

`ResultsStore` holds what the sweep learned so far (one row per trial, per (trial, epoch), and
tidy confusion counts) and writes `trials.parquet`, `epochs.parquet` and `confusion.parquet`
under `results/<study>/` as documented in docs/results.md. It knows nothing of Ray: the
driver-side callback in `study.run.callback` feeds it, and tests feed it directly.

Every change is first appended to `journal.jsonl` (`study.record.journal`), the source of
truth: one small durable write per result. The Parquet files are rebuilt from memory at most
every few seconds (`flush(force=False)`) and whenever the study ends; `load` rebuilds the
store from the journal (or, for a study written before the journal, from the Parquet files).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from retina.errors import RetinaError
from study.record.disk import DISK_FULL, disk_full_error, write_atomic
from study.record.journal import Journal, event, plain, read_events, upgrade, write_events
from study.record.layout import (
    CONFUSION_FILE,
    EPOCHS_FILE,
    JOURNAL_FILE,
    TRIALS_FILE,
    Stage,
    Status,
)
from study.record.tables import (  # noqa: F401 (the tables' columns, for the store's readers)
    CONFUSION_COLUMNS,
    EPOCH_COLUMNS,
    METRIC_KEYS,
    NUM_CLASSES,
    STAGES,
    TEST_ONLY_KEYS,
    TRIAL_TAIL_COLUMNS,
    TableCache,
    arrow_table,
    confusion_frame_of,
    epochs_frame_of,
    trials_frame_of,
)

# A throttled rebuild of the Parquet files waits at least this many times its last duration:
# in a very large study the rebuilds take at most ~10 % of the driver's time.
REBUILD_SPACING = 10
# A trial that started or ended is written at once, not at the next periodic rebuild, while
# those early rebuilds have taken at most this share of the time since the store was made: in
# a small study (rebuilds of milliseconds) always, as a user watching it (and the fault tests)
# expect; in a very large one (rebuilds of ~0.1 s, trials ending every second) now and then.
EVENT_SHARE = 0.02


def write_parquet_atomic(path: Path, df: pd.DataFrame) -> None:
    write_table_atomic(path, arrow_table(df))


def write_table_atomic(path: Path, table: pa.Table) -> None:
    write_atomic(path, lambda p: pq.write_table(table, p))


def _nan_if_missing(value: Any) -> float:
    return float("nan") if value is None else float(value)


class ResultsStore:
    """In-memory rows of one study plus their atomic Parquet mirror on disk.

    `hyperparameters` are the column names of the trial config, in order; `metric` and
    `mode` choose each trial's best epoch. Re-reported epochs (a trial resumed from an older
    checkpoint) replace the earlier row, so every (trial, epoch) appears exactly once.
    With `journal` (the sweep's driver), every change is appended to `journal.jsonl` first.
    """

    def __init__(
        self,
        folder: Path,
        hyperparameters: list[str],
        metric: str,
        mode: str,
        journal: bool = True,
    ):
        self.folder = Path(folder)
        self.hyperparameters = list(hyperparameters)
        self.metric, self.mode = metric, mode
        self.epochs: dict[tuple[str, int], dict] = {}
        self.confusion: dict[tuple[str, str, int], list[int]] = {}
        self.trials: dict[str, dict] = {}
        self.journal = Journal(self.folder / JOURNAL_FILE) if journal else None
        self.dirty = False  # changed since the Parquet files were last written
        self.trials_changed = False  # a trial started or ended since the last rebuild
        self.touched: set[str] = set()  # trials changed since their parts of the tables were built
        self._tables = TableCache()
        # Other views of the rows, rebuilt when the tables are (`refresh(store)`): the study's
        # optuna.log (study.record.optuna_log), added by the sweep.
        self.mirrors: list = []
        self._last_flush, self._last_cost = 0.0, 0.0
        self._created, self._event_cost = time.monotonic(), 0.0  # the EVENT_SHARE budget
        # Called after each rebuild, its time counted in the rebuild's (the mirror to the
        # study's storage, study.record.mirror): it runs at the tables' own throttle.
        self.after_flush: Callable[[], object] | None = None
        self.after_epoch: Callable[[], object] | None = None  # the mirror's journal push

    # ---- feeding: each change is one journal event, on the disk before it is applied ------
    def start_trial(
        self,
        trial_id: str,
        config: Mapping[str, Any],
        stage: Stage = Stage.SEARCH,
        seed: int | None = None,
    ) -> None:
        """`stage` is one of STAGES; `seed` the trial's training seed."""
        config = {k: config.get(k) for k in self.hyperparameters}
        self._emit(event("trial_started", trial=trial_id, config=config, stage=stage,
                         seed=seed, at=time.time()))  # fmt: skip

    def record_epoch(self, trial_id: str, result: Mapping[str, Any]) -> None:
        self._emit(event("epoch", trial=trial_id, result=dict(result)))
        if self.after_epoch is not None:
            self.after_epoch()

    def record_failure(self, trial_id: str, reason: str) -> None:
        """A trial that ended itself (e.g. a NaN loss): kept as ERROR with its reason."""
        self._emit(event("trial_failed", trial=trial_id, reason=reason))

    def finish_trial(self, trial_id: str, status: str, error: str | None = None) -> None:
        self._emit(event("trial_ended", trial=trial_id, status=status, error=error, at=time.time()))

    def record_test(
        self, trial_id: str, epoch: int, metrics: Mapping[str, float], confusion
    ) -> None:
        """`metrics`: test_<k> for every METRIC_KEYS, and optionally test_kappa_1view."""
        keys = [*METRIC_KEYS, *(k for k in TEST_ONLY_KEYS if f"test_{k}" in metrics)]
        metrics = {f"test_{k}": float(metrics[f"test_{k}"]) for k in keys}
        self._emit(event("test", trial=trial_id, epoch=int(epoch), metrics=metrics,
                         confusion=[int(c) for c in confusion]))  # fmt: skip

    def mark_running(self, trial_id: str) -> None:
        """Ray retries the trial (its worker died): it runs again from its last checkpoint."""
        self._emit(event("trial_running", trial=trial_id))

    def _emit(self, change: dict[str, Any]) -> None:
        # Journaled before it is applied: a change that fails to reach the disk (a full
        # disk) changes nothing, and replaying the journal redoes every change.
        if self.journal is not None:
            self.journal.append(change)
        self.apply(change)

    def replay(self, events: list[dict]) -> None:
        """Apply journal events (already `upgrade`d) without journaling them again."""
        for change in events:
            self.apply(change)

    def apply(self, change: Mapping[str, Any]) -> None:
        """Apply one event to the rows in memory."""
        name = change["event"]
        if name == "restore":
            self.restore_state(change["state"])
            return
        trial_id = str(change["trial"])
        self.dirty = True
        self.touched.add(trial_id)  # its parts of the tables are stale
        if name == "trial_started":
            info = self.trials.setdefault(trial_id, {"status": Status.PENDING, "error": None})
            info["config"] = dict(change["config"])
            info["stage"], info["seed"] = change.get("stage", Stage.SEARCH), change.get("seed")
            info.setdefault("started", change.get("at") or time.time())
            self.trials_changed = True
            if info["status"] in (Status.PENDING, Status.ERROR):
                # Running again (an errored trial that --resume retries): the old failure no
                # longer describes it; a trial that fails again says so again.
                info.update(status=Status.RUNNING, error=None, failed=False)
        elif name == "epoch":
            result = change["result"]
            epoch = int(result["epoch"])
            row = {"trial_id": trial_id, "epoch": epoch}
            for col in EPOCH_COLUMNS[2:]:
                row[col] = _nan_if_missing(result.get(col))
            self.epochs[(trial_id, epoch)] = row
            if result.get("val_confusion") is not None:
                self.confusion[(trial_id, "val", epoch)] = [int(c) for c in result["val_confusion"]]
            info = self.trials.setdefault(trial_id, {"status": Status.RUNNING, "error": None})
            info["seconds"] = float(result.get("time_total_s") or 0.0)
            info["device"], info["node"] = result.get("device"), result.get("node")
        elif name == "trial_failed":
            info = self.trials.setdefault(trial_id, {"config": {}})
            info.update(status=Status.ERROR, error=change["reason"], failed=True)
            self.trials_changed = True
        elif name == "trial_ended":
            info = self.trials.setdefault(trial_id, {"config": {}})
            info["ended"] = change.get("at")  # None in a journal written before it was kept
            if info.get("failed"):  # the trial's own failure reason wins over Ray's clean exit
                return
            info["status"], info["error"] = change["status"], change.get("error")
            self.trials_changed = True
        elif name == "test":
            metrics = change["metrics"]
            known = [*METRIC_KEYS, *(k for k in TEST_ONLY_KEYS if f"test_{k}" in metrics)]
            self.trials[trial_id]["test"] = {k: float(metrics[f"test_{k}"]) for k in known}
            self.confusion[(trial_id, "test", int(change["epoch"]))] = list(change["confusion"])
        elif name == "trial_running":
            self.trials.setdefault(trial_id, {})["status"] = Status.RUNNING
            self.trials_changed = True
        else:  # upgrade() lets through only this version's events
            raise RetinaError(f"{self.folder / JOURNAL_FILE}: unknown event {name!r}")

    # ---- tables --------------------------------------------------------------------
    def _cache(self) -> TableCache:
        """The per-trial parts of the tables, less those of the trials changed since."""
        self._tables.forget(self.touched)
        self.touched.clear()
        return self._tables

    def epochs_frame(self) -> pd.DataFrame:
        return epochs_frame_of(self.epochs.values())

    def confusion_frame(self) -> pd.DataFrame:
        return confusion_frame_of(self.confusion)

    def best_epochs(self) -> dict[str, dict]:
        """The best epoch row per trial, by the study's one ranking (`study.record.ranking`)."""
        best = self._cache().best_epochs(self.epochs, self.metric, self.mode)
        return {t: dict(row) for t, row in best.items() if row is not None}

    def trials_frame(self) -> pd.DataFrame:
        rows = self._cache().trial_rows(
            self.trials, self.epochs, self.metric, self.mode, self.hyperparameters
        )
        return trials_frame_of(rows, self.hyperparameters)

    # ---- disk ----------------------------------------------------------------------
    def flush(self, force: bool = True, min_interval_s: float = 1.0) -> None:
        """Write the three tables; unless `force`, only after a change and at most once per
        `min_interval_s` (or `REBUILD_SPACING` times the last rebuild, if longer), or at once
        when a trial started or ended and the `EVENT_SHARE` budget allows."""
        now = time.monotonic()
        periodic = now - self._last_flush >= max(min_interval_s, REBUILD_SPACING * self._last_cost)
        budget = EVENT_SHARE * (now - self._created) - self._event_cost
        early = not periodic and self.trials_changed and self._last_cost <= budget
        if not force and (not self.dirty or not (periodic or early)):
            return
        cache = self._cache()  # rebuilds only the trials changed since the last write
        write_table_atomic(self.folder / EPOCHS_FILE, cache.epochs_table(self.epochs))
        write_table_atomic(self.folder / CONFUSION_FILE, cache.confusion_table(self.confusion))
        write_parquet_atomic(self.folder / TRIALS_FILE, self.trials_frame())
        for mirror in self.mirrors:
            mirror.refresh(self)
        if self.after_flush is not None:
            self.after_flush()
        self._last_flush = time.monotonic()
        self._last_cost, self.dirty = self._last_flush - now, False
        self.trials_changed = False
        if early and not force:
            self._event_cost += self._last_cost

    def close(self) -> None:
        if self.journal is not None:
            self.journal.close()

    def load(self) -> None:
        """Take back what an earlier run of this study recorded (for `--resume`): its journal,
        or the Parquet files of a study written before the journal (then journaled whole)."""
        self.dirty = True
        self._tables = TableCache()  # every row may change: its parts are built again
        journal = self.folder / JOURNAL_FILE
        if journal.exists():
            events, old = upgrade(
                read_events(journal, repair=self.journal is not None), str(journal)
            )
            if old and self.journal is not None:  # once: the driver appends events after them
                self._rewrite(journal, events)
                print(f"{journal}: converted {old} records to the journal's event format v1")
            self.replay(events)
            return
        self._load_parquet()
        if self.journal is not None and self.trials:
            self._rewrite(journal, [event("restore", state=self.state())])

    def _rewrite(self, journal: Path, events: list[dict]) -> None:
        try:
            write_events(journal, events)
        except OSError as exc:
            if exc.errno in DISK_FULL:
                raise disk_full_error(self.folder) from None
            raise

    def state(self) -> dict:
        """Everything the store holds, JSON-ready (a journal's `restore` event)."""
        return plain(
            {
                "trials": self.trials,
                "epochs": list(self.epochs.values()),
                "confusion": [[*key, counts] for key, counts in self.confusion.items()],
            }
        )

    def restore_state(self, state: dict) -> None:
        self.trials.update({str(t): dict(info) for t, info in state["trials"].items()})
        for row in state["epochs"]:
            self.epochs[(str(row["trial_id"]), int(row["epoch"]))] = dict(row)
        for trial_id, split, epoch, counts in state["confusion"]:
            self.confusion[(str(trial_id), str(split), int(epoch))] = list(counts)

    def _load_parquet(self) -> None:
        epochs_file = self.folder / EPOCHS_FILE
        if not epochs_file.exists():
            return
        for row in pd.read_parquet(epochs_file).to_dict("records"):
            self.epochs[(str(row["trial_id"]), int(row["epoch"]))] = row
        conf = pd.read_parquet(self.folder / CONFUSION_FILE)
        for (trial_id, split, epoch), group in conf.groupby(["trial_id", "split", "epoch"]):
            counts = [0] * NUM_CLASSES**2
            for t, p, c in zip(group["true"], group["predicted"], group["count"], strict=True):
                counts[int(t) * NUM_CLASSES + int(p)] = int(c)
            self.confusion[(str(trial_id), str(split), int(epoch))] = counts
        for row in pd.read_parquet(self.folder / TRIALS_FILE).to_dict("records"):
            error = row.get("error")
            info = {
                "config": {k: row.get(k) for k in self.hyperparameters},
                "status": str(row["status"]),
                # A study written before stages existed ran only a search.
                "stage": "search" if pd.isna(row.get("stage")) else str(row["stage"]),
                "seed": None if pd.isna(row.get("seed")) else int(row["seed"]),
                "error": None if pd.isna(error) else str(error),
                "seconds": float(row.get("seconds") or 0.0),
                "device": row.get("device"),
                "node": row.get("node"),
            }
            if info["error"] and info["status"] == "ERROR":
                info["failed"] = True
            if not math.isnan(row.get("test_acc", float("nan"))):
                known = [*METRIC_KEYS, *(k for k in TEST_ONLY_KEYS if f"test_{k}" in row)]
                info["test"] = {k: float(row[f"test_{k}"]) for k in known}
            self.trials[str(row["trial_id"])] = info
