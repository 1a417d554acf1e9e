"""Read one study's results folder (docs/results.md) into typed dataframes, or say clearly why not.

Only `study.json` and the Parquet files are read: no Ray, no torch. Every problem a user can
cause (wrong path, no study, a study with no finished epoch, a file from another tool, missing
columns) raises `RetinaError` with the file and the fix.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from retina.errors import RetinaError
from study.record.layout import CONFUSION_FILE, EPOCHS_FILE, STUDY_JSON, TRIALS_FILE
from study.record.results import METRIC_KEYS  # the writer's contract: pandas and pyarrow only

STATUSES = ("TERMINATED", "RUNNING", "PENDING", "ERROR")
# Columns the report reads; the rest of the contract (device, node, images/s, ...) is optional.
TRIAL_NUMERIC = (
    ["epochs_run", "best_epoch", "seconds"]
    + [f"best_val_{k}" for k in METRIC_KEYS]
    + [f"test_{k}" for k in METRIC_KEYS]
)
TRIAL_REQUIRED = ["trial_id", "status", "stopped_early", "error", *TRIAL_NUMERIC]
EPOCH_NUMERIC = ["epoch"] + [f"{s}_{k}" for s in ("train", "val") for k in ("loss", "acc", "kappa")]
EPOCH_REQUIRED = ["trial_id", *EPOCH_NUMERIC]
CONFUSION_NUMERIC = ["epoch", "true", "predicted", "count"]
CONFUSION_REQUIRED = ["trial_id", "split", *CONFUSION_NUMERIC]
SWEEP_HINT = "results folders are written by `python -m study.sweep SPACE.yaml`"


@dataclass(frozen=True)
class StudyResults:
    """One study as the report sees it. `trials` gains `init` ("pretrained"/"scratch"/"unknown")
    and `planned_epochs` (the trial's `epochs`, else the study's `max_epochs`)."""

    folder: Path
    meta: dict
    name: str
    hyperparameters: list[str]
    metric: str  # an epochs.parquet column, e.g. "val_kappa"
    mode: str  # "max" | "min"
    max_epochs: int
    class_counts: dict[str, list[int]]
    trials: pd.DataFrame
    epochs: pd.DataFrame
    confusion: pd.DataFrame

    @property
    def score_column(self) -> str:
        """The trials.parquet column holding each trial's best study metric."""
        return f"best_{self.metric}"


def search_view(study: StudyResults) -> StudyResults:
    """The study without its confirm runs: the search sections (leaderboard, curves, best
    trial, hyperparameter effects) describe the search; the comparison reads the confirm runs."""
    if "stage" not in study.trials.columns:
        return study
    trials = study.trials[study.trials["stage"].fillna("search") == "search"]
    ids = set(trials["trial_id"].astype(str))
    keep = lambda df: df[df["trial_id"].astype(str).isin(ids)].reset_index(drop=True)  # noqa: E731
    return replace(
        study,
        trials=trials.reset_index(drop=True),
        epochs=keep(study.epochs),
        confusion=keep(study.confusion),
    )


def find_studies(path: str | Path) -> list[Path]:
    """`path` itself if it holds study.json, else its subfolders that do (sorted)."""
    folder = Path(path).expanduser()
    if not folder.exists():
        raise RetinaError(f"{folder} does not exist; give a study folder such as results/demo")
    if folder.is_file():
        if folder.name == STUDY_JSON:
            return [folder.parent]
        raise RetinaError(f"{folder} is a file; give the study folder that holds study.json")
    if (folder / STUDY_JSON).exists():
        return [folder]
    if any((folder / name).exists() for name in (TRIALS_FILE, EPOCHS_FILE)):
        raise RetinaError(
            f"{folder} has Parquet results but no study.json; copy the whole study folder ({SWEEP_HINT})"
        )
    found = sorted(p.parent for p in folder.glob("*/study.json"))
    if not found:
        raise RetinaError(
            f"no study in {folder}: neither it nor its subfolders hold a study.json; {SWEEP_HINT}"
        )
    return found


def read_study_json(folder: Path) -> dict:
    path = folder / STUDY_JSON
    if not path.exists():
        raise RetinaError(f"{path} is missing; {SWEEP_HINT}")
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise RetinaError(f"{path} is not text ({exc.reason}); {SWEEP_HINT}") from None
    except json.JSONDecodeError as exc:
        raise RetinaError(
            f"{path} is not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg}); {SWEEP_HINT}"
        ) from None
    if not isinstance(meta, dict):
        raise RetinaError(f"{path} must hold a JSON object, not {type(meta).__name__}")
    missing = [k for k in ("name", "hyperparameters", "metric", "data") if k not in meta]
    if missing:
        raise RetinaError(f"{path} lacks the key(s) {', '.join(missing)}; {SWEEP_HINT}")
    metric = meta["metric"]
    if not (
        isinstance(metric, dict) and metric.get("mode") in ("max", "min") and metric.get("name")
    ):
        raise RetinaError(f'{path}: "metric" must be like {{"name": "val_kappa", "mode": "max"}}')
    counts = meta["data"].get("class_counts") if isinstance(meta["data"], dict) else None
    if not isinstance(counts, dict) or not isinstance(counts.get("val"), list):
        raise RetinaError(f'{path}: "data.class_counts" must hold {{"val": [5 ints], ...}}')
    if not isinstance(meta["hyperparameters"], list):
        raise RetinaError(f'{path}: "hyperparameters" must be a list of column names')
    try:
        meta["data"]["class_counts"] = {k: [int(c) for c in v] for k, v in counts.items()}
        int(meta.get("max_epochs") or 0)
    except (TypeError, ValueError):
        raise RetinaError(
            f'{path}: "data.class_counts" must hold 5 whole numbers per split and "max_epochs" '
            f"a whole number; {SWEEP_HINT}"
        ) from None
    return meta


def read_table(path: Path) -> pd.DataFrame:
    """The Parquet file as a dataframe; RetinaError if it is not Parquet or unreadable."""
    try:
        return pq.read_table(path).to_pandas()
    except (pa.ArrowException, OSError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise RetinaError(
            f"{path} is not a readable Parquet file ({first}); it may come from another tool "
            f"or be damaged: re-run the sweep or copy the file again ({SWEEP_HINT})"
        ) from None


def check_columns(
    df: pd.DataFrame, path: Path, required: list[str], numeric: list[str]
) -> pd.DataFrame:
    """Check that `required` columns exist and `numeric` ones hold numbers (made float64)."""
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise RetinaError(
            f"{path} lacks the column(s) {', '.join(missing)}: it was not written by this "
            f"version of study.sweep; re-run the sweep (see docs/results.md)"
        )
    for col in numeric:
        if not (pd.api.types.is_numeric_dtype(df[col]) or df[col].isna().all()):
            raise RetinaError(
                f"{path}: column {col} holds {df[col].dtype} values, expected numbers; "
                f"the file was written by another tool (see docs/results.md)"
            )
        df[col] = df[col].astype("float64")
    return df


def _init(pretrained) -> str:
    """The trial's initialisation: pretrained, scratch or unknown (no value); text "false"
    (a hand-edited file) means scratch, not bool("false")."""
    if pretrained is None or pretrained is pd.NA or pd.isna(pretrained):
        return "unknown"
    if isinstance(pretrained, str):
        pretrained = pretrained.strip().lower() in ("true", "1", "yes")
    return "pretrained" if bool(pretrained) else "scratch"


def _normalise_trials(df: pd.DataFrame, meta: dict, max_epochs: int) -> pd.DataFrame:
    df = df.copy()
    df["trial_id"] = df["trial_id"].astype(str)
    df["status"] = df["status"].astype(str)
    df["error"] = df["error"].astype(object).where(df["error"].notna(), None)
    df["stopped_early"] = df["stopped_early"].fillna(False).astype(bool)
    df["epochs_run"] = df["epochs_run"].fillna(0).astype(int)
    df["best_epoch"] = df["best_epoch"].fillna(-1).astype(int)
    if "device" not in df.columns:
        df["device"] = None
    pretrained = df["pretrained"] if "pretrained" in df.columns else pd.Series(None, index=df.index)
    df["init"] = [_init(v) for v in pretrained]
    if "arch" not in df.columns:
        fixed = ((meta.get("config") or {}).get("space") or {}).get("arch")  # a fixed setting
        df["arch"] = fixed if isinstance(fixed, str) else "model"
    df["arch"] = df["arch"].astype(object).where(df["arch"].notna(), "unknown").astype(str)
    planned = pd.to_numeric(df["epochs"], errors="coerce") if "epochs" in df.columns else None
    df["planned_epochs"] = (
        max_epochs if planned is None else planned.fillna(max_epochs).astype(int).to_numpy()
    )
    return df.reset_index(drop=True)


def load_study(folder: str | Path) -> StudyResults:
    """Read and check one study folder; RetinaError names what is wrong and the fix."""
    folder = Path(folder)
    meta = read_study_json(folder)
    hparams = [str(h) for h in meta["hyperparameters"]]
    metric, mode = str(meta["metric"]["name"]), str(meta["metric"]["mode"])
    epochs_file, trials_file = folder / EPOCHS_FILE, folder / TRIALS_FILE
    if not epochs_file.exists():
        raise RetinaError(
            f"study {meta['name']!r} in {folder} has no finished epoch yet (no epochs.parquet); "
            "run the analysis again once the first epoch of a trial has finished"
        )
    epochs = read_table(epochs_file)
    if epochs.empty:  # checked first: an empty table may not even carry its columns
        raise RetinaError(
            f"study {meta['name']!r} in {folder} has no finished epoch yet (epochs.parquet is "
            "empty); run the analysis again once the first epoch of a trial has finished"
        )
    metric_cols = [metric] if metric not in EPOCH_REQUIRED else []
    epochs = check_columns(
        epochs, epochs_file, EPOCH_REQUIRED + metric_cols, EPOCH_NUMERIC + metric_cols
    )
    if not trials_file.exists():
        raise RetinaError(f"{trials_file} is missing; {SWEEP_HINT}")
    score = [f"best_{metric}"] if f"best_{metric}" not in TRIAL_REQUIRED else []
    trials = check_columns(
        read_table(trials_file),
        trials_file,
        TRIAL_REQUIRED + hparams + score,
        TRIAL_NUMERIC + score,
    )
    if trials.empty:  # epochs.parquet is written first: the trials table may lag a moment
        raise RetinaError(f"{trials_file} holds no trial yet; run the analysis again in a moment")
    epochs["trial_id"] = epochs["trial_id"].astype(str)
    epochs["epoch"] = epochs["epoch"].astype(int)
    epochs = epochs.sort_values(["trial_id", "epoch"]).reset_index(drop=True)
    max_epochs = int(meta.get("max_epochs") or epochs["epoch"].max())
    confusion_file = folder / CONFUSION_FILE
    if confusion_file.exists():
        confusion = check_columns(
            read_table(confusion_file), confusion_file, CONFUSION_REQUIRED, CONFUSION_NUMERIC
        )
        confusion["trial_id"] = confusion["trial_id"].astype(str)
        confusion["split"] = confusion["split"].astype(str)
        confusion = confusion.dropna(subset=CONFUSION_NUMERIC).astype(
            {c: int for c in CONFUSION_NUMERIC}
        )
    else:  # a sweep that just started may not have flushed it yet; the section says so
        confusion = pd.DataFrame({c: pd.Series(dtype=object) for c in CONFUSION_REQUIRED})
    counts = meta["data"]["class_counts"]
    return StudyResults(
        folder=folder,
        meta=meta,
        name=str(meta["name"]),
        hyperparameters=hparams,
        metric=metric,
        mode=mode,
        max_epochs=max_epochs,
        class_counts=counts,
        trials=_normalise_trials(trials, meta, max_epochs),
        epochs=epochs,
        confusion=confusion,
    )


PREDICTION_COLUMNS = ["trial_id", "split", "image", "patient", "true", "predicted"]


def read_predictions(folder: Path) -> pd.DataFrame:
    """`predictions/` (one Parquet file per trial) as one table; an empty one with the contract's
    columns when the study has none (a study from before predictions were written)."""
    path = Path(folder) / "predictions"
    empty = pd.DataFrame({c: pd.Series(dtype=object) for c in PREDICTION_COLUMNS})
    if not path.is_dir() or not any(path.glob("*.parquet")):
        return empty
    df = read_table(path)  # pyarrow reads the folder as one dataset; skips .tmp / hidden files
    df = check_columns(df, path, PREDICTION_COLUMNS, ["true", "predicted"])
    for col in ("trial_id", "split", "image", "patient"):
        df[col] = df[col].astype(str)
    df = df.dropna(subset=["true", "predicted"])
    return df.astype({"true": "int64", "predicted": "int64"})
