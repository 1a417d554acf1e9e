"""Per-image predictions of a study: `results/<study>/predictions/<trial_id>.parquet`.

One file per trial, written once by the driver when all of its rows are known (val at the
trial's best epoch; test too when the trial was tested) and never rewritten, so a reader can
take the folder as one table at any moment:

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

from study.record.layout import PREDICTIONS_DIR
from study.record.results import NUM_CLASSES, write_atomic

SPLITS = ("val", "test")
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
    ]
)
COLUMNS = SCHEMA.names


@dataclass(frozen=True)
class SplitPredictions:
    """One evaluation's softmax per image: `index` are manifest rows, in the loader's order."""

    split: str
    index: np.ndarray  # int64 [n]
    probabilities: np.ndarray  # float32 [n, NUM_CLASSES]

    def __post_init__(self):
        if self.split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {self.split!r}")
        if self.probabilities.shape != (len(self.index), NUM_CLASSES):
            raise ValueError(
                f"{len(self.index)} images but probabilities of shape {self.probabilities.shape}"
            )


def split_file(split: str) -> str:
    """The file in a checkpoint folder that holds that epoch's predictions of `split`."""
    return f"{split}_predictions.npz"


def save_split(folder: Path, predictions: SplitPredictions) -> None:
    # Plain arrays (no pickle): the driver loads them with allow_pickle=False.
    np.savez(
        Path(folder, split_file(predictions.split)),
        index=np.asarray(predictions.index, dtype=np.int64),
        probabilities=np.asarray(predictions.probabilities, dtype=np.float32),
    )


def load_split(folder: Path, split: str) -> SplitPredictions | None:
    """The predictions a checkpoint folder holds for `split`, or None (an older checkpoint)."""
    path = Path(folder, split_file(split))
    if not path.exists():
        return None
    with np.load(path, allow_pickle=False) as npz:
        return SplitPredictions(split, npz["index"], npz["probabilities"])


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
        probs = np.asarray(part.probabilities, dtype=np.float32)
        frame = pd.DataFrame(
            {
                "trial_id": trial_id,
                "split": part.split,
                "image": ids[part.index],
                "patient": patients[part.index],
                "true": np.asarray(labels)[part.index].astype(np.int8),
                "predicted": probs.argmax(axis=1).astype(np.int8),
            }
        )
        for c in range(NUM_CLASSES):
            frame[f"p{c}"] = probs[:, c]
        frames.append(frame)
    if not frames:
        return pd.DataFrame({name: pd.Series(dtype=object) for name in COLUMNS})
    return pd.concat(frames, ignore_index=True)


def predictions_path(folder: Path, trial_id: str) -> Path:
    return Path(folder) / PREDICTIONS_DIR / f"{trial_id}.parquet"


def write_predictions(folder: Path, trial_id: str, frame: pd.DataFrame) -> bool:
    """Write `results/<study>/predictions/<trial_id>.parquet` unless it exists (then False).

    A file is whole or absent (temp file, then rename); one that exists is never rewritten:
    a resumed study that concludes again leaves it as it was.
    """
    path = predictions_path(folder, trial_id)
    if path.exists():
        return False
    table = pa.Table.from_pandas(frame[COLUMNS], schema=SCHEMA, preserve_index=False)
    write_atomic(path, lambda p: pq.write_table(table, p))
    return True
