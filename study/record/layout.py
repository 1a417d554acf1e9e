"""The results folder of a study, by name: the contract between the sweep, its conclusion and
the analysis (docs/results.md). Every floor that reads or writes a part of `results/<study>/`
takes its name from here, so a folder is named once.

    from study.record.layout import TUNE_DIR, CHECKPOINT_FILE
    checkpoint = folder / TUNE_DIR / trial_dir / "checkpoint_000003" / CHECKPOINT_FILE

The names that cross modules (a trial's stage and status) are typed here too: `Stage`,
`Status` (StrEnums, equal to the strings written in the tables).
"""

from __future__ import annotations

from enum import StrEnum

STUDY_JSON = "study.json"  # resolved space, dataset hash, versions, seeds
TRIALS_FILE = "trials.parquet"  # one row per trial
EPOCHS_FILE = "epochs.parquet"  # one row per (trial, epoch)
CONFUSION_FILE = "confusion.parquet"  # tidy confusion matrices
JOURNAL_FILE = "journal.jsonl"  # append-only events: crash recovery, never a hand-over
PREDICTIONS_DIR = "predictions"  # per-image predictions, one Parquet file per trial
SUMMARY_FILE = "summary.json"  # the study's conclusions as numbers
OPTUNA_LOG = "optuna.log"  # the search as an Optuna storage, for optuna-dashboard
REPORT_FILE = "report.html"  # written by python -m study.analyze
BEST_DIR = "best"  # the exported winner: model.pt, model.onnx, card.md
EXPORT_FAILED_FILE = "export-failed.txt"  # why the sweep's export failed, until one works
GALLERY_DIR = "gallery"  # thumbnails and Grad-CAM of the best model's errors
GALLERY_INDEX = "index.parquet"  # the gallery's table of cases
TUNE_DIR = "tune"  # Ray Tune's experiment of the search: its state and checkpoints
CONFIRM_DIR = "tune-confirm"  # the confirm stage's Tune experiment, beside tune/
CHECKPOINT_FILE = "checkpoint.pt"  # the file inside each of a trial's Tune checkpoints


def confirm_dir(start: int) -> str:
    """The Tune experiment of the confirm runs from run index `start` on: tune-confirm/ for the
    study's own, tune-confirm-3/ for seeds added from the 4th on (--more-seeds)."""
    return CONFIRM_DIR if start == 0 else f"{CONFIRM_DIR}-{start}"


class Stage(StrEnum):
    """`stage` of a trial in trials.parquet: found by the search, or a confirm rerun."""

    SEARCH = "search"
    CONFIRM = "confirm"


class Status(StrEnum):
    """`status` of a trial in trials.parquet (Ray Tune's names for the same states)."""

    PENDING = "PENDING"
    RUNNING = "RUNNING"
    TERMINATED = "TERMINATED"
    ERROR = "ERROR"


ENDED = (Status.TERMINATED, Status.ERROR)  # a trial in one of these runs no more
