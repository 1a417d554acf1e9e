"""The three results tables, built from a `ResultsStore`'s rows, and rebuilt incrementally.

`epochs_frame_of`, `confusion_frame_of` and `trial_row` say what the tables hold
(docs/results.md); `ResultsStore.*_frame()` build them whole. While a sweep runs, the driver
rewrites the Parquet files every few seconds; rebuilding them whole is linear in the study
(0.6 s for 1,024 trials x 30 epochs: 30,720 epoch rows and 768,000 confusion counts), so its
cost per result would grow with the study. `TableCache` keeps each trial's part of each table
(Arrow slices, trial rows, best epochs) and rebuilds only the trials changed since (the few
that run): the file written is identical to a whole rebuild, at a fraction of its cost
(`python -m study.bench_driver` measures it).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from study.record.layout import Stage
from study.record.ranking import best_epoch

NUM_CLASSES = 5
METRIC_KEYS = (
    "loss",
    "acc",
    "kappa",
    "balanced_acc",
    "referable_sensitivity",
    "referable_specificity",
)
# Of the test alone: quadratic kappa of the image as is, beside test_kappa over the study's
# `tta` views (retina.tta; equal to it with one view). NaN where a test did not record it.
TEST_ONLY_KEYS = ("kappa_1view",)
EPOCH_COLUMNS = (
    ["trial_id", "epoch"]
    + [f"train_{k}" for k in ("loss", "acc", "kappa", "images_per_s")]
    + [f"val_{k}" for k in METRIC_KEYS]
    + [f"val_recall_{c}" for c in range(NUM_CLASSES)]
    + ["val_images_per_s", "seconds", "time_total_s"]
)
CONFUSION_COLUMNS = ["trial_id", "split", "epoch", "true", "predicted", "count"]
STAGES = tuple(Stage)  # `stage` of a trial: found by the search, or a confirm rerun
TRIAL_TAIL_COLUMNS = (
    ["epochs_run", "stopped_early", "best_epoch"]
    + [f"best_val_{k}" for k in METRIC_KEYS]
    + [f"test_{k}" for k in (*METRIC_KEYS, *TEST_ONLY_KEYS)]
    + ["error", "seconds", "device", "node"]
)


def epochs_frame_of(rows: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    """One row per (trial, epoch), sorted by both."""
    rows = sorted(rows, key=lambda r: (r["trial_id"], r["epoch"]))
    df = pd.DataFrame(rows, columns=EPOCH_COLUMNS)
    return df.astype({"trial_id": "string", "epoch": "int64"})


def confusion_frame_of(confusion: Mapping[tuple[str, str, int], list[int]]) -> pd.DataFrame:
    """Tidy counts, one row per (trial, split, epoch, true, predicted), sorted."""
    keys = sorted(confusion)
    cells = NUM_CLASSES**2
    # Vectorised: a large study holds hundreds of thousands of counts.
    counts = np.array([confusion[k] for k in keys], dtype=np.int64).reshape(-1)
    cell = np.tile(np.arange(cells), len(keys))
    columns = [np.repeat(np.array([k[i] for k in keys], dtype=object), cells) for i in (0, 1)]
    epochs = np.repeat(np.array([k[2] for k in keys], dtype=np.int64), cells)
    values = [*columns, epochs, cell // NUM_CLASSES, cell % NUM_CLASSES, counts]
    df = pd.DataFrame(dict(zip(CONFUSION_COLUMNS, values, strict=True)), columns=CONFUSION_COLUMNS)
    return df.astype(
        {"trial_id": "string", "split": "string", "epoch": "int64", "true": "int64"}
        | {"predicted": "int64", "count": "int64"}
    )


def trial_row(
    trial_id: str, info: Mapping, best: Mapping | None, epochs_run: int, hyperparameters: list
) -> dict:
    """A trial's row of trials.parquet: its config, status, best epoch on val and test."""
    cfg, row = info.get("config", {}), best or {}
    planned = cfg.get("epochs")
    out = {"trial_id": trial_id, "status": info.get("status", "PENDING")}
    out["stage"], out["seed"] = info.get("stage", "search"), info.get("seed")
    out |= {name: cfg.get(name) for name in hyperparameters}
    out["epochs_run"] = epochs_run
    out["stopped_early"] = bool(
        info.get("status") == "TERMINATED" and planned is not None and epochs_run < planned
    )
    out["best_epoch"] = int(row["epoch"]) if row else -1
    out |= {f"best_val_{k}": row.get(f"val_{k}", float("nan")) for k in METRIC_KEYS}
    test = info.get("test", {})
    out |= {f"test_{k}": test.get(k, float("nan")) for k in (*METRIC_KEYS, *TEST_ONLY_KEYS)}
    out["error"] = info.get("error")
    out["seconds"] = float(info.get("seconds", 0.0))
    out["device"], out["node"] = info.get("device"), info.get("node")
    return out


def trials_frame_of(rows: list[dict], hyperparameters: list) -> pd.DataFrame:
    if rows:
        df = pd.DataFrame(rows)
    else:
        df = pd.DataFrame(columns=["trial_id", "status", "stage", "seed", *hyperparameters])
        df = df.reindex(columns=[*df.columns, *TRIAL_TAIL_COLUMNS])
    df = df.astype({"trial_id": "string", "status": "string", "error": "string"})
    df = df.astype({"stage": "string", "seed": "Int64"})  # a seed is never lost to a float
    return df.astype({"device": "string", "node": "string"})


def _per_trial(table: pa.Table) -> dict[str, pa.Table]:
    """Zero-copy slices of a table sorted by trial_id, one per trial."""
    ids = table.column("trial_id").to_numpy(zero_copy_only=False)
    if len(ids) == 0:
        return {}
    starts = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]])
    ends = np.r_[starts[1:], len(ids)]
    return {str(ids[s]): table.slice(s, e - s) for s, e in zip(starts, ends, strict=True)}


class TableCache:
    """Each trial's part of the tables, kept until that trial changes (`forget`)."""

    def __init__(self):
        self.best: dict[str, Mapping | None] = {}
        self.runs: dict[str, int] = {}
        self.rows: dict[str, dict] = {}  # trials.parquet's rows
        self.epochs: dict[str, pa.Table] = {}
        self.confusion: dict[str, pa.Table] = {}

    def forget(self, trial_ids: Iterable[str]) -> None:
        for trial_id in trial_ids:
            for part in (self.best, self.runs, self.rows, self.epochs, self.confusion):
                part.pop(trial_id, None)

    def best_epochs(self, epochs: Mapping, metric: str, mode: str) -> dict[str, Mapping | None]:
        """Trial -> best epoch row (None: no finite metric), recomputed for changed trials."""
        fresh: dict[str, list] = {}
        for (trial_id, _), row in epochs.items():
            if trial_id not in self.best:
                fresh.setdefault(trial_id, []).append(row)
        for trial_id, rows in fresh.items():
            rows.sort(key=lambda r: r["epoch"])  # ties go to the earlier epoch (the ranking)
            self.best[trial_id] = best_epoch(rows, metric, mode)
            self.runs[trial_id] = max(int(r["epoch"]) for r in rows)
        return self.best

    def trial_rows(
        self,
        trials: Mapping[str, Mapping],
        epochs: Mapping,
        metric: str,
        mode: str,
        hyperparameters: list,
    ) -> list[dict]:
        """trials.parquet's rows, sorted; each row needs its trial's best epoch first."""
        self.best_epochs(epochs, metric, mode)
        for trial_id, info in trials.items():
            if trial_id not in self.rows:
                best, runs = self.best.get(trial_id), self.runs.get(trial_id, 0)
                self.rows[trial_id] = trial_row(trial_id, info, best, runs, hyperparameters)
        return [self.rows[t] for t in sorted(trials)]

    def epochs_table(self, epochs: Mapping) -> pa.Table:
        rows = [row for (trial_id, _), row in epochs.items() if trial_id not in self.epochs]
        if rows:
            self.epochs |= _per_trial(arrow_table(epochs_frame_of(rows)))
        return _concat(self.epochs, epochs_frame_of([]))

    def confusion_table(self, confusion: Mapping) -> pa.Table:
        fresh = {k: v for k, v in confusion.items() if k[0] not in self.confusion}
        if fresh:
            self.confusion |= _per_trial(arrow_table(confusion_frame_of(fresh)))
        return _concat(self.confusion, confusion_frame_of({}))


def arrow_table(df: pd.DataFrame) -> pa.Table:
    """A frame as the Parquet files store it (no pandas index)."""
    return pa.Table.from_pandas(df, preserve_index=False)


def _concat(parts: Mapping[str, pa.Table], empty: pd.DataFrame) -> pa.Table:
    if not parts:
        return arrow_table(empty)
    tables = [parts[t] for t in sorted(parts)]
    try:
        return pa.concat_tables(tables)
    except pa.ArrowInvalid:  # a column all null in one part (e.g. a restored NaN): widen it
        return pa.concat_tables(tables, promote_options="permissive")
