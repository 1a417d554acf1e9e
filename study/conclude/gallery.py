"""The gallery of what the best model gets wrong: thumbnails and Grad-CAM of chosen images.

The last step of `python -m study.sweep SPACE.yaml` (see `study.conclude.pipeline`). For the
best trial of the search (`study.record.ranking`), the checkpoint of its best epoch grades
every image of the test split when that trial was tested (else val), from the decode-once
cache. Per true grade it keeps the most confident errors and a few correct cases drawn with
the study's seed, and writes under `results/<study>/gallery/`:

    index.parquet          one row per image (columns in docs/results.md)
    g<true>-<kind>-<k>.jpg      the image as the model saw it (cache pixels), <= 160 px
    g<true>-<kind>-<k>-cam.jpg  the same with the Grad-CAM of the predicted grade blended in

The folder is built beside `gallery/` and renamed into place: a reader sees the old gallery
or the new one, never half of one. `python -m study.analyze` shows it as a report section.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.nn import functional as F
from tqdm import tqdm

from retina.engine import autocast_dtype
from retina.errors import RetinaError
from retina.files import write_folder_atomic
from retina.gradcam import grad_cam, jpeg, overlay_jpeg
from retina.heads import grades_of, head_outputs
from retina.loader import BatchLoader
from retina.manifest import read_manifest
from retina.metrics import NUM_CLASSES
from retina.models import build_model
from retina.prepare import PreparedData
from study.conclude.holdout import find_checkpoint
from study.define.schema import StudyConfig
from study.record.disk import DISK_FULL, disk_full_error
from study.record.layout import CHECKPOINT_FILE, GALLERY_DIR
from study.record.layout import GALLERY_INDEX as INDEX_FILE
from study.record.ranking import best_trial_ids
from study.record.results import ResultsStore, write_parquet_atomic

ERRORS_PER_GRADE = 4
CORRECT_PER_GRADE = 2
THUMB_PX = 160  # 2 JPEGs per case at quality 80: ~4 KB each at 160 px, ~1.6 KB at 64 px
PREDICT_BATCH = 64
LAYER4_MIN_PX = 128  # ResNets downsample 32x: layer4 of a 128 px image is 4x4
CAM_BATCH = 8  # Grad-CAM keeps the graph of the whole batch: small at 512 px on a CPU
INDEX_COLUMNS = [
    "image", "patient", "split", "true", "predicted", "probability", "kind", "file", "cam_file",
    "trial_id", "epoch",
]  # fmt: skip


@dataclass(frozen=True)
class Source:
    """Which model the gallery shows, and on which split."""

    trial_id: str
    epoch: int
    split: str  # "test" when the trial was tested, else "val"


def choose_source(trials: pd.DataFrame, metric: str, mode: str) -> Source | None:
    """The best trial of the search by the study's one ranking, its best epoch and split."""
    if "stage" in trials.columns:  # later stages (confirm seeds) never pick the gallery's model
        trials = trials[trials["stage"].fillna("search") == "search"]
    ids = best_trial_ids(trials, f"best_{metric}", mode, 1)
    if not ids:
        return None
    row = trials[trials["trial_id"].astype(str) == ids[0]].iloc[0]
    tested = "test_acc" in trials.columns and pd.notna(row["test_acc"])
    return Source(ids[0], int(row["best_epoch"]), "test" if tested else "val")


def pick_cases(
    true: np.ndarray,
    probs: np.ndarray,
    seed: int,
    errors_per_grade: int = ERRORS_PER_GRADE,
    correct_per_grade: int = CORRECT_PER_GRADE,
) -> pd.DataFrame:
    """Positions to show, per true grade: the most confident errors, then seeded correct cases.

    Returns `position`, `true`, `predicted`, `probability` (of the predicted grade) and `kind`
    ("error" | "correct"), grade by grade, each kind most confident first (ties: position).
    """
    true = np.asarray(true, dtype=np.int64)
    predicted = probs.argmax(axis=1)
    confidence = probs[np.arange(len(true)), predicted]
    rng = np.random.default_rng(seed)
    chosen: list[tuple[np.ndarray, str]] = []
    for grade in range(NUM_CLASSES):
        wrong = np.flatnonzero((true == grade) & (predicted != grade))
        # lexsort's last key sorts first: highest confidence, then the earlier position.
        wrong = wrong[np.lexsort((wrong, -confidence[wrong]))][:errors_per_grade]
        right = np.flatnonzero((true == grade) & (predicted == grade))
        take = min(correct_per_grade, len(right))
        # Drawn, not the most confident: typical correct cases, not only the easiest ones.
        right = rng.choice(right, size=take, replace=False) if take else right[:0]
        right = right[np.lexsort((right, -confidence[right]))]
        chosen += [(wrong, "error"), (right, "correct")]
    positions = np.concatenate([p for p, _ in chosen]).astype(np.int64)
    return pd.DataFrame(
        {
            "position": positions,
            "true": true[positions],
            "predicted": predicted[positions].astype(np.int64),
            "probability": confidence[positions].astype(np.float64),
            "kind": [kind for p, kind in chosen for _ in p],
        }
    )


def load_checkpoint_model(checkpoint_dir: Path, device: torch.device) -> torch.nn.Module:
    """The trial's model with the weights of its checkpoint, in eval mode on `device`."""
    state = torch.load(checkpoint_dir / CHECKPOINT_FILE, map_location="cpu", weights_only=True)
    trial = state["config"]["trial"]
    outputs = head_outputs(trial.get("head", "classify"))
    model = build_model(trial["arch"], pretrained=False, num_classes=outputs)  # weights below
    model.load_state_dict(state["model"])
    return model.to(device).eval()


def checkpoint_inputs(checkpoint_dir: Path) -> tuple[list[float] | None, int | None]:
    """(a regress head's cuts fitted on val at the checkpoint's epoch (None for classify),
    the image size the trial trained at (None in a checkpoint from before it was searched))."""
    state = torch.load(checkpoint_dir / CHECKPOINT_FILE, map_location="cpu", weights_only=True)
    return state.get("thresholds"), state["config"]["trial"].get("image_size")


def grade_probs(logits: torch.Tensor, thresholds: list[float] | None) -> torch.Tensor:
    """The softmax; for a regress head (no probabilities) its grade as a one-hot row, so the
    gallery ranks its errors by position and its CAM follows the score (`cam_targets`)."""
    if logits.shape[1] > 1:
        return torch.softmax(logits.float(), dim=1)
    return F.one_hot(grades_of(logits, thresholds), NUM_CLASSES).float()


def cam_targets(model: torch.nn.Module, predicted: np.ndarray) -> np.ndarray:
    """The output Grad-CAM follows: the predicted grade's logit, or a regress head's score."""
    return np.zeros_like(predicted) if model.fc.out_features == 1 else predicted


def predict_probs(
    model: torch.nn.Module,
    loader: BatchLoader,
    device: torch.device,
    desc: str,
    progress: bool,
    thresholds: list[float] | None = None,
) -> np.ndarray:
    """Softmax probabilities [N, 5] of every image of `loader`, in its order."""
    out, amp = [], autocast_dtype(device)
    with torch.inference_mode():
        for x, _ in tqdm(loader, desc=desc, unit="batch", disable=not progress, leave=False):
            with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
                logits = model(x)
            out.append(grade_probs(logits, thresholds).cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, NUM_CLASSES), np.float32)


def cam_layer(model: torch.nn.Module, image_size: int) -> torch.nn.Module:
    """`layer4`, the usual Grad-CAM layer, from 128 px up (>= 4x4 positions); below that its
    map has 1-3 positions per side and says nothing of where, so `layer3` (twice as fine)."""
    return model.layer4 if image_size >= LAYER4_MIN_PX else model.layer3


def thumbnails(
    model: torch.nn.Module,
    data: PreparedData,
    rows: np.ndarray,
    targets: np.ndarray,
    device: torch.device,
    size: int = THUMB_PX,
) -> list[tuple[bytes, bytes]]:
    """(image JPEG, Grad-CAM overlay JPEG) of cache rows `rows`, CAM of `targets` (grades)."""
    images = data.cache.open()
    # The loader normalises exactly as training and evaluation did (eval order, no flips).
    loader = BatchLoader(images, data.labels, rows, CAM_BATCH, device, train=False)
    out, start = [], 0
    for x, _ in loader:
        batch = rows[start : start + len(x)]
        cams = grad_cam(model, x, targets[start : start + len(x)], cam_layer(model, x.shape[-1]))
        for row, cam in zip(batch, cams, strict=True):
            pixels = np.asarray(images[row])
            out.append((jpeg(pixels, size), overlay_jpeg(pixels, cam, size)))
        start += len(x)
    return out


def write_gallery(folder: Path, index: pd.DataFrame, files: dict[str, bytes]) -> Path:
    """Write `files` and `index.parquet` into a temp folder, then rename it to `folder/gallery`
    (`retina.files.write_folder_atomic`: the old gallery stays whole if anything fails)."""
    final = folder / GALLERY_DIR

    def fill(tmp: Path) -> None:
        for name, blob in files.items():
            (tmp / name).write_bytes(blob)
            os.chmod(tmp / name, 0o644)  # shared read-only, whatever the umask
        typed = index[INDEX_COLUMNS].astype(
            {"true": "int64", "predicted": "int64", "probability": "float64", "epoch": "int64"}
        )
        write_parquet_atomic(tmp / INDEX_FILE, typed)

    try:
        write_folder_atomic(final, fill)
    except OSError as exc:
        if exc.errno in DISK_FULL:
            raise disk_full_error(folder) from None
        raise
    return final


def build_gallery(
    model: torch.nn.Module,
    data: PreparedData,
    source: Source,
    seed: int,
    device: torch.device,
    *,
    progress: bool = True,
    thresholds: list[float] | None = None,
) -> tuple[pd.DataFrame, dict[str, bytes]]:
    """The index and the JPEG files (name -> bytes) of `model` on `source.split`, for `seed`."""
    manifest = read_manifest(
        data.data_dir, data.layout
    )  # the cache holds pixels only: names come from here
    if not np.array_equal(manifest.labels, data.labels):
        raise RetinaError(
            f"the data in {data.data_dir} changed while the study ran (its labels differ from "
            "the cache's); restore it, or run the study again"
        )
    indices = data.split.indices(source.split)
    loader = data.loader(source.split, PREDICT_BATCH, device, train=False)
    probs = predict_probs(model, loader, device, f"gallery: {source.split}", progress, thresholds)
    cases = pick_cases(data.labels[indices], probs, seed)
    rows = indices[cases["position"].to_numpy()]
    thumbs = thumbnails(
        model, data, rows, cam_targets(model, cases["predicted"].to_numpy()), device
    )
    numbers = cases.groupby(["true", "kind"], sort=False).cumcount() + 1
    stems = [
        f"g{t}-{k}-{n:02d}" for t, k, n in zip(cases["true"], cases["kind"], numbers, strict=True)
    ]
    index = cases.assign(
        image=[manifest.image_ids[r] for r in rows],
        patient=[manifest.patient_ids[r] for r in rows],
        split=source.split,
        file=[f"{s}.jpg" for s in stems],
        cam_file=[f"{s}-cam.jpg" for s in stems],
        trial_id=source.trial_id,
        epoch=source.epoch,
    )
    files = {}
    for (picture, cam), name, cam_name in zip(thumbs, index["file"], index["cam_file"], strict=True):  # fmt: skip
        files[name], files[cam_name] = picture, cam
    return index, files


def make_gallery(
    study: StudyConfig,
    data: PreparedData,
    folder: Path,
    store: ResultsStore,
    results_by_id: dict,
    *,
    progress: bool = True,
) -> str:
    """Build `folder/gallery/` for the study's best trial; returns the line to print."""
    source = choose_source(store.trials_frame(), store.metric, store.mode)
    if source is None:
        return "no trial has a value of the study metric: no gallery"
    result = results_by_id.get(source.trial_id)
    checkpoint = find_checkpoint(result, source.epoch) if result is not None else None
    if checkpoint is None:
        return f"{source.trial_id}: no checkpoint of epoch {source.epoch} kept; no gallery"
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = load_checkpoint_model(checkpoint, device)
    thresholds, size = checkpoint_inputs(checkpoint)
    index, files = build_gallery(
        model, data.at_size(size or data.image_size), source, study.seed, device,
        progress=progress, thresholds=thresholds,
    )  # fmt: skip
    final = write_gallery(folder, index, files)
    errors = int((index["kind"] == "error").sum())
    size = sum(len(b) for b in files.values())
    return (
        f"gallery of {source.trial_id} (epoch {source.epoch}) on {source.split}: {errors} "
        f"errors and {len(index) - errors} correct cases, {size / 1024:.0f} KiB in {final}"
    )
