"""The results folder of a study: typed Parquet tables, replaced atomically.

`ResultsStore` holds what the sweep learned so far (one row per trial, per (trial, epoch), and
tidy confusion counts) and writes `trials.parquet`, `epochs.parquet` and `confusion.parquet`
under `results/<study>/` as documented in docs/results.md. It knows nothing of Ray: the
driver-side callback in `study.run.callback` feeds it, and tests feed it directly.
"""

from __future__ import annotations

import errno
import json
import math
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from retina import files
from retina.errors import RetinaError
from study.conclude.ranking import best_epoch

NUM_CLASSES = 5
METRIC_KEYS = (
    "loss",
    "acc",
    "kappa",
    "balanced_acc",
    "referable_sensitivity",
    "referable_specificity",
)
EPOCH_COLUMNS = (
    ["trial_id", "epoch"]
    + [f"train_{k}" for k in ("loss", "acc", "kappa", "images_per_s")]
    + [f"val_{k}" for k in METRIC_KEYS]
    + [f"val_recall_{c}" for c in range(NUM_CLASSES)]
    + ["val_images_per_s", "seconds", "time_total_s"]
)
CONFUSION_COLUMNS = ["trial_id", "split", "epoch", "true", "predicted", "count"]
STAGES = ("search", "confirm")  # `stage` of a trial: found by the search, or a confirm rerun
TRIAL_TAIL_COLUMNS = (
    ["epochs_run", "stopped_early", "best_epoch"]
    + [f"best_val_{k}" for k in METRIC_KEYS]
    + [f"test_{k}" for k in METRIC_KEYS]
    + ["error", "seconds", "device", "node"]
)


DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


def disk_full_error(folder: Path) -> RetinaError:
    return RetinaError(
        f"no space left on the disk of {folder}; the sweep stopped and every file written so "
        "far is intact. Free space there, then continue with --resume (or use --results DIR "
        "on a larger disk for a new study)"
    )


def write_atomic(path: Path, write) -> None:
    """`retina.files.write_atomic`, with a full disk said once, clearly, for the sweep.

    A full disk leaves the previous file in place and raises `disk_full_error`.
    """
    try:
        files.write_atomic(path, write)
    except OSError as exc:
        if exc.errno in DISK_FULL:
            raise disk_full_error(path.parent) from None
        raise


def write_json_atomic(path: Path, obj: Any) -> None:
    write_atomic(path, lambda p: p.write_text(json.dumps(obj, indent=2, default=str) + "\n"))


def write_parquet_atomic(path: Path, df: pd.DataFrame) -> None:
    table = pa.Table.from_pandas(df, preserve_index=False)
    write_atomic(path, lambda p: pq.write_table(table, p))


def _nan_if_missing(value: Any) -> float:
    return float("nan") if value is None else float(value)


def trial_finished(folder: Path, trial_id: str) -> bool:
    """Whether `<folder>/trials.parquet` already records this trial as finished.

    Ray snapshots its experiment state every ~10 s; after the driver is killed, `--resume` can
    think a trial that finished is still running and restart it from an older checkpoint. The
    results folder is written when the trial finishes (its epochs first), so it knows better.
    """
    path = Path(folder, "trials.parquet")
    if not path.exists():
        return False
    table = pq.read_table(path, columns=["trial_id", "status"]).to_pydict()
    return any(
        t == trial_id and s == "TERMINATED"
        for t, s in zip(table["trial_id"], table["status"], strict=True)
    )


class ResultsStore:
    """In-memory rows of one study plus their atomic Parquet mirror on disk.

    `hyperparameters` are the column names of the trial config, in order; `metric` and
    `mode` choose each trial's best epoch. Re-reported epochs (a trial resumed from an older
    checkpoint) replace the earlier row, so every (trial, epoch) appears exactly once.
    """

    def __init__(self, folder: Path, hyperparameters: list[str], metric: str, mode: str):
        self.folder = Path(folder)
        self.hyperparameters = list(hyperparameters)
        self.metric, self.mode = metric, mode
        self.epochs: dict[tuple[str, int], dict] = {}
        self.confusion: dict[tuple[str, str, int], list[int]] = {}
        self.trials: dict[str, dict] = {}
        self._last_flush = 0.0

    # ---- feeding -------------------------------------------------------------------
    def start_trial(
        self,
        trial_id: str,
        config: Mapping[str, Any],
        stage: str = "search",
        seed: int | None = None,
    ) -> None:
        """`stage` is one of STAGES; `seed` the trial's training seed."""
        info = self.trials.setdefault(trial_id, {"status": "PENDING", "error": None})
        info["config"] = {k: config.get(k) for k in self.hyperparameters}
        info["stage"], info["seed"] = stage, seed
        info.setdefault("started", time.time())
        if info["status"] in ("PENDING", "ERROR"):
            # Running again (an errored trial that --resume retries): the old failure no
            # longer describes it; a trial that fails again says so again.
            info.update(status="RUNNING", error=None, failed=False)

    def record_epoch(self, trial_id: str, result: Mapping[str, Any]) -> None:
        epoch = int(result["epoch"])
        row = {"trial_id": trial_id, "epoch": epoch}
        for col in EPOCH_COLUMNS[2:]:
            row[col] = _nan_if_missing(result.get(col))
        self.epochs[(trial_id, epoch)] = row
        if result.get("val_confusion") is not None:
            self.confusion[(trial_id, "val", epoch)] = [int(c) for c in result["val_confusion"]]
        info = self.trials.setdefault(trial_id, {"status": "RUNNING", "error": None})
        info["seconds"] = float(result.get("time_total_s") or 0.0)
        info["device"], info["node"] = result.get("device"), result.get("node")

    def record_failure(self, trial_id: str, reason: str) -> None:
        """A trial that ended itself (e.g. a NaN loss): kept as ERROR with its reason."""
        info = self.trials.setdefault(trial_id, {"config": {}})
        info.update(status="ERROR", error=reason, failed=True)

    def finish_trial(self, trial_id: str, status: str, error: str | None = None) -> None:
        info = self.trials.setdefault(trial_id, {"config": {}})
        if info.get("failed"):  # the trial's own failure reason wins over Ray's clean exit
            return
        info["status"], info["error"] = status, error

    def record_test(
        self, trial_id: str, epoch: int, metrics: Mapping[str, float], confusion
    ) -> None:
        info = self.trials[trial_id]
        info["test"] = {k: float(metrics[f"test_{k}"]) for k in METRIC_KEYS}
        self.confusion[(trial_id, "test", int(epoch))] = [int(c) for c in confusion]

    # ---- tables --------------------------------------------------------------------
    def epochs_frame(self) -> pd.DataFrame:
        rows = sorted(self.epochs.values(), key=lambda r: (r["trial_id"], r["epoch"]))
        df = pd.DataFrame(rows, columns=EPOCH_COLUMNS)
        return df.astype({"trial_id": "string", "epoch": "int64"})

    def confusion_frame(self) -> pd.DataFrame:
        rows = [
            (trial_id, split, epoch, i // NUM_CLASSES, i % NUM_CLASSES, count)
            for (trial_id, split, epoch), counts in sorted(self.confusion.items())
            for i, count in enumerate(counts)
        ]
        df = pd.DataFrame(rows, columns=CONFUSION_COLUMNS)
        return df.astype(
            {"trial_id": "string", "split": "string", "epoch": "int64", "true": "int64"}
            | {"predicted": "int64", "count": "int64"}
        )

    def best_epochs(self) -> dict[str, dict]:
        """The best epoch row per trial, by the study's one ranking (`study.conclude.ranking`)."""
        per_trial: dict[str, list[dict]] = {}
        for (trial_id, _), row in sorted(self.epochs.items()):
            per_trial.setdefault(trial_id, []).append(row)
        best = {t: best_epoch(rows, self.metric, self.mode) for t, rows in per_trial.items()}
        return {t: dict(row) for t, row in best.items() if row is not None}

    def trials_frame(self) -> pd.DataFrame:
        best = self.best_epochs()
        runs: dict[str, int] = {}
        for trial_id, epoch in self.epochs:
            runs[trial_id] = max(runs.get(trial_id, 0), epoch)
        rows = []
        for trial_id, info in sorted(self.trials.items()):
            cfg, row = info.get("config", {}), best.get(trial_id, {})
            planned, done = cfg.get("epochs"), runs.get(trial_id, 0)
            out = {"trial_id": trial_id, "status": info.get("status", "PENDING")}
            out["stage"], out["seed"] = info.get("stage", "search"), info.get("seed")
            out |= {name: cfg.get(name) for name in self.hyperparameters}
            out["epochs_run"] = done
            out["stopped_early"] = bool(
                info.get("status") == "TERMINATED" and planned is not None and done < planned
            )
            out["best_epoch"] = int(row["epoch"]) if row else -1
            out |= {f"best_val_{k}": row.get(f"val_{k}", float("nan")) for k in METRIC_KEYS}
            test = info.get("test", {})
            out |= {f"test_{k}": test.get(k, float("nan")) for k in METRIC_KEYS}
            out["error"] = info.get("error")
            out["seconds"] = float(info.get("seconds", 0.0))
            out["device"], out["node"] = info.get("device"), info.get("node")
            rows.append(out)
        if rows:
            df = pd.DataFrame(rows)
        else:
            df = pd.DataFrame(
                columns=["trial_id", "status", "stage", "seed", *self.hyperparameters]
            )
            df = df.reindex(columns=[*df.columns, *TRIAL_TAIL_COLUMNS])
        df = df.astype({"trial_id": "string", "status": "string", "error": "string"})
        df = df.astype({"stage": "string", "seed": "Int64"})  # a seed is never lost to a float
        return df.astype({"device": "string", "node": "string"})

    # ---- disk ----------------------------------------------------------------------
    def flush(self, force: bool = True, min_interval_s: float = 1.0) -> None:
        """Write the three tables; unless `force`, at most once per `min_interval_s`."""
        now = time.monotonic()
        if not force and now - self._last_flush < min_interval_s:
            return
        write_parquet_atomic(self.folder / "epochs.parquet", self.epochs_frame())
        write_parquet_atomic(self.folder / "confusion.parquet", self.confusion_frame())
        write_parquet_atomic(self.folder / "trials.parquet", self.trials_frame())
        self._last_flush = now

    def load(self) -> None:
        """Take back what an earlier run of this study wrote (for `--resume`)."""
        epochs_file = self.folder / "epochs.parquet"
        if not epochs_file.exists():
            return
        for row in pd.read_parquet(epochs_file).to_dict("records"):
            self.epochs[(str(row["trial_id"]), int(row["epoch"]))] = row
        conf = pd.read_parquet(self.folder / "confusion.parquet")
        for (trial_id, split, epoch), group in conf.groupby(["trial_id", "split", "epoch"]):
            counts = [0] * NUM_CLASSES**2
            for t, p, c in zip(group["true"], group["predicted"], group["count"], strict=True):
                counts[int(t) * NUM_CLASSES + int(p)] = int(c)
            self.confusion[(str(trial_id), str(split), int(epoch))] = counts
        for row in pd.read_parquet(self.folder / "trials.parquet").to_dict("records"):
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
                info["test"] = {k: float(row[f"test_{k}"]) for k in METRIC_KEYS}
            self.trials[str(row["trial_id"])] = info
