"""Write each finished trial's per-image predictions once its rows are known.

Val rows come from the best epoch's checkpoint folder (the trainable saved that epoch's
softmax beside the weights); test rows from the held-out test or the confirm test. See
`study.record.predictions` for the files.
"""

from __future__ import annotations

from pathlib import Path

from retina.prepare import PreparedData
from study.conclude.holdout import find_checkpoint
from study.record.predictions import (
    SplitPredictions,
    load_split,
    predictions_frame,
    write_predictions,
)
from study.record.results import ResultsStore


def val_predictions(result, epoch: int) -> SplitPredictions | None:
    """The val softmax of a trial's `epoch`, from the checkpoint Ray kept of it (or None)."""
    folder = find_checkpoint(result, epoch) if result is not None else None
    return load_split(folder, "val") if folder is not None else None


def write_trial_predictions(
    folder: Path,
    trial_id: str,
    data: PreparedData,
    parts: list[SplitPredictions | None],
) -> bool:
    """`predictions/<trial_id>.parquet` from the parts that exist; False when none does, or
    the file was already written (a resumed study)."""
    known = [part for part in parts if part is not None]
    if not known:
        return False
    frame = predictions_frame(trial_id, known, data.labels, data.image_ids, data.patient_ids)
    return write_predictions(folder, trial_id, frame)


def write_search_predictions(
    store: ResultsStore,
    results_by_id: dict,
    data: PreparedData,
    folder: Path,
    tested: dict[str, SplitPredictions],
) -> list[str]:
    """A file per finished search trial: val at its best epoch, plus test if it was tested.

    Returns what to print: a line per trial whose best epoch's checkpoint was not kept.
    """
    trials = store.trials_frame()
    done = trials[(trials["stage"] == "search") & (trials["status"] == "TERMINATED")]
    best = store.best_epochs()
    lines, written = [], 0
    for trial_id in done["trial_id"].astype(str):
        if trial_id not in best:
            continue
        epoch = int(best[trial_id]["epoch"])
        val = val_predictions(results_by_id.get(trial_id), epoch)
        if val is None:
            lines.append(f"{trial_id}: no checkpoint of epoch {epoch} kept; no val predictions")
        written += write_trial_predictions(folder, trial_id, data, [val, tested.get(trial_id)])
    lines.append(f"per-image predictions: {written} new files in {folder / 'predictions'}")
    return lines
