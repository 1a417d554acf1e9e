"""Per-image predictions of a study: `results/<study>/predictions/<trial_id>.parquet`.

One file per trial, written once by the driver when all of its rows are known (val at the
trial's best epoch; test too when the trial was tested) and never rewritten, and one more per
external test set it was tested on (split `external:<name>`), so a reader can take the folder
as one table at any moment:

    pd.read_parquet("results/demo/predictions")          # or duckdb: 'predictions/*.parquet'

Val probabilities travel from the trial to the driver in its checkpoint folder
(`save_split`/`load_split`, beside `checkpoint.pt`): the driver reads those of the best epoch's
checkpoint, as it reads that checkpoint's weights for the test. No torch and no Ray here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from study.record.disk import write_atomic
from study.record.layout import PREDICTIONS_DIR
from study.record.results import NUM_CLASSES

SPLITS = ("val", "test")
EXTERNAL = "external:"  # + a set's name: the split of an external test set's rows


def external_split(name: str) -> str:
    """The `split` of the rows of external test set `name`: `external:<name>`."""
    return f"{EXTERNAL}{name}"


# One schema for every file, so the folder reads as one table whatever each trial held.
SCHEMA = pa.schema(
    [
        ("trial_id", pa.string()),
        ("split", pa.string()),
        ("image", pa.string()),
        ("patient", pa.string()),
        ("true", pa.int8()),
        ("predicted", pa.int8()),
        *[(f"p{c}", pa.float32()) for c in range(NUM_CLASSES)],
        ("score", pa.float32()),
    ]
)
COLUMNS = SCHEMA.names


@dataclass(frozen=True)
class SplitPredictions:
    """One evaluation per image: `index` are manifest rows, in the loader's order.

    A classify head gives `probabilities` (its softmax; `scores` and `predicted` follow from
    them when not given); a regress head gives `scores` and `predicted` (its output cut by
    thresholds) and no probabilities.
    """

    split: str
    index: np.ndarray  # int64 [n]
    probabilities: np.ndarray | None  # float32 [n, NUM_CLASSES], None for a regress head
    scores: np.ndarray | None = None  # float32 [n]: expected grade, or the regression output
    predicted: np.ndarray | None = None  # int [n]: the grade

    def __post_init__(self):
        if self.split not in SPLITS and not self.split.startswith(EXTERNAL):
            raise ValueError(f"split must be one of {SPLITS} or {EXTERNAL}NAME, got {self.split!r}")
        n = len(self.index)
        if self.probabilities is not None:
            if self.probabilities.shape != (n, NUM_CLASSES):
                raise ValueError(
                    f"{n} images but probabilities of shape {self.probabilities.shape}"
                )
            probs = np.asarray(self.probabilities, dtype=np.float32)
            if self.scores is None:  # the expected grade sum_k k * p_k
                object.__setattr__(self, "scores", probs @ np.arange(NUM_CLASSES, dtype=np.float32))
            if self.predicted is None:
                object.__setattr__(self, "predicted", probs.argmax(axis=1))
        if self.scores is None or self.predicted is None:
            raise ValueError("a regress head's predictions need scores and predicted grades")
        if len(self.scores) != n or len(self.predicted) != n:
            raise ValueError(
                f"{n} images but {len(self.scores)} scores, {len(self.predicted)} grades"
            )


def split_predictions(split: str, index: np.ndarray, metrics) -> SplitPredictions:
    """The per-image rows of an evaluation kept with `keep_probabilities` (an EpochMetrics)."""
    return SplitPredictions(split, index, metrics.probabilities, metrics.scores, metrics.grades)


def split_file(split: str) -> str:
    """The file in a checkpoint folder that holds that epoch's predictions of `split`."""
    return f"{split}_predictions.npz"


def save_split(folder: Path, predictions: SplitPredictions) -> None:
    # Plain arrays (no pickle): the driver loads them with allow_pickle=False.
    arrays = {
        "index": np.asarray(predictions.index, dtype=np.int64),
        "scores": np.asarray(predictions.scores, dtype=np.float32),
        "predicted": np.asarray(predictions.predicted, dtype=np.int64),
    }
    if predictions.probabilities is not None:
        arrays["probabilities"] = np.asarray(predictions.probabilities, dtype=np.float32)
    np.savez(Path(folder, split_file(predictions.split)), **arrays)


def load_split(folder: Path, split: str) -> SplitPredictions | None:
    """The predictions a checkpoint folder holds for `split`, or None (an older checkpoint)."""
    path = Path(folder, split_file(split))
    if not path.exists():
        return None
    with np.load(path, allow_pickle=False) as npz:
        arrays = {name: npz[name] for name in npz.files}
    # An older file holds index and probabilities only: scores and grades follow from them.
    return SplitPredictions(
        split, arrays["index"], arrays.get("probabilities"), arrays.get("scores"),
        arrays.get("predicted"),
    )  # fmt: skip


def predictions_frame(
    trial_id: str,
    parts: Sequence[SplitPredictions],
    labels: np.ndarray,
    image_ids: Sequence[str],
    patient_ids: Sequence[str],
) -> pd.DataFrame:
    """The rows of one trial's file; `labels`, `image_ids`, `patient_ids` are per manifest row."""
    frames = []
    ids, patients = np.asarray(image_ids, dtype=object), np.asarray(patient_ids, dtype=object)
    for part in parts:
        frame = pd.DataFrame(
            {
                "trial_id": trial_id,
                "split": part.split,
                "image": ids[part.index],
                "patient": patients[part.index],
                "true": np.asarray(labels)[part.index].astype(np.int8),
                "predicted": np.asarray(part.predicted).astype(np.int8),
            }
        )
        for c in range(NUM_CLASSES):  # null for a regress head: it has no probabilities
            frame[f"p{c}"] = (
                np.full(len(part.index), np.nan, np.float32)
                if part.probabilities is None
                else np.asarray(part.probabilities, dtype=np.float32)[:, c]
            )
        frame["score"] = np.asarray(part.scores, dtype=np.float32)
        frames.append(frame)
    if not frames:
        return pd.DataFrame({name: pd.Series(dtype=object) for name in COLUMNS})
    return pd.concat(frames, ignore_index=True)


def predictions_path(folder: Path, trial_id: str, external: str | None = None) -> Path:
    """A trial's file; an external set's rows, tested after it was written, have their own:
    `<trial_id>.external.<name>.parquet` (the folder still reads as one table)."""
    stem = trial_id if external is None else f"{trial_id}.external.{external}"
    return Path(folder) / PREDICTIONS_DIR / f"{stem}.parquet"


def write_predictions(
    folder: Path, trial_id: str, frame: pd.DataFrame, external: str | None = None
) -> bool:
    """Write `results/<study>/predictions/<trial_id>.parquet` (or an external set's file of the
    trial) unless it exists (then False).

    A file is whole or absent (temp file, then rename); one that exists is never rewritten:
    a resumed study that concludes again leaves it as it was.
    """
    path = predictions_path(folder, trial_id, external)
    if path.exists():
        return False
    table = pa.Table.from_pandas(frame[COLUMNS], schema=SCHEMA, preserve_index=False)
    write_atomic(path, lambda p: pq.write_table(table, p))
    return True
