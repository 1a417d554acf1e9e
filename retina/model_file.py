"""The exported model file, `model.pt`: written by `python -m study.export`, read by predict.

    python -m study.export results/<study>            # writes results/<study>/best/model.pt
    python -m retina.predict --model results/<study>/best photo.jpeg

One dict of plain values (tensors, str, int, float, bool, None, lists, dicts) so that
`torch.load(path, weights_only=True)` reads it without running any pickled code:

    format, format_version   "retina-study model", 1 (2 for a regress head: older readers
                             would take its one output for a 1-way softmax, so they refuse it)
    arch, num_classes        torchvision ResNet name and its head width (5 ICDR grades, or 1)
    head, thresholds         "classify" (arg max of 5 logits) or "regress" (one score, cut by
                             4 thresholds fitted on val at the selected epoch: grade g when
                             t[g-1] <= score < t[g]); thresholds None for classify. A file
                             without them is classify
    state_dict               the weights (no optimizer state)
    image_size, preprocessing  what the decode-once cache applied (retina.images.decode_fundus)
    normalisation            {"mean": [3 floats], "std": [3 floats]} on 0..1 pixels
    grade_names, referable_grade  ICDR names of grades 0-4; grade >= 2 is referable
    temperature, referable_threshold  optional (retina.screening): T fitted on val, and the
                             threshold on p2+p3+p4 (after T) chosen on val; absent: 1 and None
    referable_platt          optional, a regress head's [slope, intercept] fitted on val:
                             P(referable) = 1 / (1 + exp(-(slope * score + intercept)))
                             (retina.calibration); absent: predict gives no P(referable)
    tta                      optional: the dihedral views the study's tests averaged (1, 2, 4
                             or 8, `retina.tta`), retina.predict's default; absent: 1. The
                             version stays: a reader that ignores it grades the image as is,
                             a valid grading (the card states its test kappa too), where a
                             misread regress output (version 2) would not be
    info                     anything else worth keeping (the trial, its config and metrics,
                             the dataset hash, versions): plain values, read by people
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from retina.errors import RetinaError
from retina.heads import head_of, head_outputs
from retina.loader import IMAGENET_MEAN, IMAGENET_STD
from retina.metrics import REFERABLE_GRADE
from retina.models import ARCHS, build_model
from retina.thresholds import DEFAULT_THRESHOLDS, check_thresholds
from retina.tta import TTA_VIEWS, check_views

FORMAT = "retina-study model"
FORMAT_VERSION = 2  # the newest this harness reads; a classify model is still written as 1
MODEL_FILE = "model.pt"
ONNX_FILE = "model.onnx"
CARD_FILE = "card.md"
# ICDR severity scale (Wilkinson et al. 2003), the grades of the Kaggle EyePACS labels.
GRADE_NAMES = [
    "no apparent retinopathy",
    "mild non-proliferative",
    "moderate non-proliferative",
    "severe non-proliferative",
    "proliferative",
]
_REQUIRED = ("arch", "num_classes", "state_dict", "image_size", "preprocessing", "normalisation")
_HOW_TO_MAKE = "export one with `python -m study.export results/<study>` (it writes <study>/best/)"


def plain(value: Any) -> Any:
    """`value` as the plain types weights_only loading accepts: numpy scalars become Python
    numbers, paths and other objects become strings; dicts, lists and tuples recursively."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if value is None or isinstance(value, bool | int | float | str | torch.Tensor):
        return value
    return str(value)


def model_record(
    model: nn.Module,
    *,
    arch: str,
    image_size: int,
    preprocessing: str,
    info: dict[str, Any],
    head: str = "classify",
    thresholds: list[float] | None = None,
    tta: int = 1,
) -> dict[str, Any]:
    """The dict that `save_model` writes (weights copied to the CPU, everything else plain);
    `tta`: the views the study tested with (`retina.tta`)."""
    return {
        "format": FORMAT,
        "format_version": 1 if head == "classify" else FORMAT_VERSION,
        "arch": arch,
        "num_classes": head_outputs(head),
        **head_fields(head, thresholds),
        "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
        "image_size": int(image_size),
        "preprocessing": preprocessing,
        "normalisation": {"mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)},
        "grade_names": list(GRADE_NAMES),
        "referable_grade": REFERABLE_GRADE,
        "tta": check_views(tta),
        "info": plain(info),
    }


def head_fields(head: str, thresholds: list[float] | None) -> dict[str, Any]:
    """`head` and `thresholds` of a model file: a regress head's cuts (the fixed ones when
    none were fitted), None for classify."""
    if head_outputs(head) > 1:
        return {"head": head, "thresholds": None}
    cuts = check_thresholds(thresholds) if thresholds is not None else DEFAULT_THRESHOLDS
    return {"head": head, "thresholds": [float(t) for t in cuts]}


@dataclass(frozen=True)
class LoadedModel:
    """An exported model, ready to grade: the network in eval mode plus how to feed it."""

    model: nn.Module
    arch: str
    image_size: int
    preprocessing: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    grade_names: list[str]
    info: dict[str, Any]
    path: Path
    temperature: float = 1.0  # retina.screening: the study's calibration, fitted on val
    referable_threshold: float | None = None  # on p2+p3+p4 after temperature; None: grade >= 2
    platt: tuple[float, float] | None = None  # a regress head's (slope, intercept) on its score
    head: str = "classify"
    thresholds: tuple[float, ...] | None = None  # a regress head's cuts
    tta: int = 1  # views averaged by the study's tests (retina.tta): retina.predict's default


def _model_path(where: Path) -> Path:
    if not where.exists():
        raise RetinaError(f"model folder {where} does not exist; {_HOW_TO_MAKE}")
    path = where / MODEL_FILE if where.is_dir() else where
    if not path.is_file():
        raise RetinaError(
            f"{where} is not a model folder: it holds no {MODEL_FILE}; {_HOW_TO_MAKE}"
        )
    return path


def read_record(where: str | Path) -> tuple[Path, dict[str, Any]]:
    """(path of model.pt, its dict) from a model folder or the file itself; RetinaError when
    it is missing, damaged or not a model of this harness."""
    path = _model_path(Path(where).expanduser())
    damaged = f"{path} is damaged or not an exported model"
    try:
        record = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - zip, unpickling and I/O errors all mean "damaged"
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise RetinaError(f"{damaged} ({reason[:200]}); export it again: {_HOW_TO_MAKE}") from None
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        raise RetinaError(f"{damaged} (no '{FORMAT}' header); {_HOW_TO_MAKE}")
    version = record.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise RetinaError(
            f"{path} has format version {version!r}; this harness reads up to "
            f"{FORMAT_VERSION}: update retina-study, or export the model again"
        )
    missing = [k for k in _REQUIRED if k not in record]
    if missing:
        raise RetinaError(f"{damaged} (lacks {', '.join(missing)}); export it again")
    return path, record


def load_model(where: str | Path, device: torch.device | str = "cpu") -> LoadedModel:
    """The exported model in `where` (a folder holding model.pt, or the file), in eval mode."""
    path, record = read_record(where)
    arch = record["arch"]
    if arch not in ARCHS:
        raise RetinaError(
            f"{path} holds an unknown architecture {arch!r} (this harness knows "
            f"{', '.join(ARCHS)}); update retina-study or export it again"
        )
    try:
        model = build_model(arch, pretrained=False, num_classes=int(record["num_classes"]))
        model.load_state_dict(record["state_dict"])
        norm = record["normalisation"]
        mean, std = tuple(float(v) for v in norm["mean"]), tuple(float(v) for v in norm["std"])
        if len(mean) != 3 or len(std) != 3:
            raise ValueError("normalisation needs 3 means and 3 stds")
        loaded = LoadedModel(
            model=model.eval(),
            arch=arch,
            image_size=int(record["image_size"]),
            preprocessing=str(record["preprocessing"]),
            mean=mean,
            std=std,
            grade_names=list(record.get("grade_names", GRADE_NAMES)),
            info=dict(record.get("info", {})),
            path=path,
            temperature=float(record.get("temperature") or 1.0),
            referable_threshold=(
                None
                if record.get("referable_threshold") is None
                else float(record["referable_threshold"])
            ),
            **loaded_head(record),
            platt=stored_platt(record),
            tta=stored_views(record),
        )
    except (RuntimeError, TypeError, ValueError, KeyError, AttributeError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise RetinaError(
            f"{path} is damaged: its contents do not make a {arch} model ({first}); export it again"
        ) from None
    loaded.model.to(device)
    return loaded


def stored_platt(record: dict[str, Any]) -> tuple[float, float] | None:
    """The record's `referable_platt` (slope, intercept), None when absent."""
    pair = record.get("referable_platt")
    if pair is None:
        return None
    slope, intercept = (float(v) for v in pair)  # ValueError/TypeError: damaged
    if not (np.isfinite(slope) and np.isfinite(intercept)):
        raise ValueError(f"referable_platt {pair!r} is not two finite numbers")
    return slope, intercept


def stored_views(record: dict[str, Any]) -> int:
    """The record's `tta` (1 when absent: a file from before test-time augmentation)."""
    views = record.get("tta", 1)
    if type(views) is not int or views not in TTA_VIEWS:
        raise ValueError(f"tta {views!r} is not one of {', '.join(map(str, TTA_VIEWS))}")
    return views


def loaded_head(record: dict[str, Any]) -> dict[str, Any]:
    """LoadedModel's `head` and `thresholds` from a record (ValueError when they do not fit)."""
    head = record.get("head", head_of(int(record["num_classes"])))
    if head_outputs(head) != int(record["num_classes"]):
        raise ValueError(f"head {head} with {record['num_classes']} outputs")
    cuts = record.get("thresholds")
    if head == "regress":
        return {"head": head, "thresholds": check_thresholds(cuts or DEFAULT_THRESHOLDS)}
    return {"head": head, "thresholds": None}
