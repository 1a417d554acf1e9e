"""What the model card is written from (`CardInputs`): its own module so that the card
(`study.conclude.card`) and its checklist (`study.conclude.checklist`) both read it and
neither imports the other: the card calls the checklist, never the reverse."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class CardInputs:
    study: dict[str, Any]  # study.json
    trial: dict[str, Any]  # the trial's row of trials.parquet
    config: dict[str, Any]  # the trial's resolved hyperparameters (from its checkpoint)
    selection: str  # how the trial was chosen, one sentence
    grade_names: list[str]
    onnx_max_diff: float
    onnx_images: int
    opset: int
    versions: dict[str, str]  # at export
    date: str
    summary: dict[str, Any] | None  # summary.json of the confirm stage, when it exists
    thresholds: list[float] | None = None  # a regress head's cuts (model.pt's); None: classify
    tta: int = 1  # dihedral views the study's tests averaged (model.pt's `tta`)
