"""Grade fundus photographs with an exported model.

    python -m retina.predict --model results/<study>/best INPUT... [--out preds.csv|preds.parquet]
        [--batch-size N] [--device auto|cpu|cuda] [--workers N] [--tta 1|2|4|8] [--by-patient]

INPUT: image files, folders of images (not searched recursively), or dataset folders in any
layout `retina.manifest` reads (Kaggle EyePACS, the course lab's CSVs, APTOS 2019, Messidor-2,
IDRiD, DDR: docs/data-layouts.md; ungradable images are left out as in a study); for labelled
images the accuracy, quadratic kappa, balanced accuracy, referable sensitivity and specificity
are printed with 95 % patient-bootstrap intervals, per image and, where the layout knows its
patients, per patient (`retina.agreement`), with the confusion matrix.
Each image gets exactly the decode-once cache's crop-to-fundus and resize and the training
normalisation (`retina.grading`), decoded on `--workers` processes with a progress bar.
`--tta N` averages the model over N dihedral views of each image (`retina.tta`: rotations and
mirrors; N times the compute); the default is the study's own `tta`, stored in model.pt, so
the grades are those of the study's test. `--tta 1` grades the image as is.

Output, one row per image (CSV to stdout without --out): `image`, [`layout`: the dataset layout
the row was read from, empty for a loose file], [`label`], `grade`, `p0`..`p4`
(temperature-scaled when the model stores its study's temperature), `score`, `p_referable`
(P(grade >= 2): p2+p3+p4, or a regress model's score through the logistic its study fitted on
val, stored in model.pt; empty for a regress model without one), `referable` (at the
threshold the study chose on val, stored in model.pt: on p2+p3+p4, or on a regress model's
score; else grade >= 2), `error` (why the image could not be graded; its other columns empty).
`score` is the expected grade sum_k k * p_k of a classify model, or a regress model's output; a
regress model has no probabilities (p0..p4 empty) and its grade is the score cut by the
thresholds in its model.pt (fitted on val when it was exported).
With --by-patient, rows for patients too when names pair eyes (`<id>_left`/`<id>_right`), told
apart by a `level` column (image|patient): a patient's grade is its higher eye's, referable when
either eye is (`retina.patient_rows`); images whose names pair no eye are listed, and keep their row.
Exit 0 when any image was graded (failures summarised), 2 with one `error:` line when none
could be, or when the model folder, an input folder or a flag is wrong.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import numpy as np
import pandas as pd
import torch

from retina.agreement import agreement_lines
from retina.cli import run_command
from retina.errors import RetinaError
from retina.files import write_atomic
from retina.grading import Graded, grade_files
from retina.manifest import found_layouts, read_manifest
from retina.metrics import NUM_CLASSES, REFERABLE_GRADE
from retina.model_file import load_model
from retina.patient_rows import print_patients, with_patient_rows
from retina.screening import calibrated, referable_column, referable_probability_column
from retina.tta import TTA_VIEWS

WRITERS = {".csv": "to_csv", ".parquet": "to_parquet"}
MAX_LISTED = 20  # failed images named in the summary


@dataclass(frozen=True)
class Inputs:
    names: list[str]  # the `image` column: a dataset's image id, else the path as given
    paths: list[Path]
    labels: list[int | None]  # a dataset's grade, else None
    datasets: list[tuple[Path, str]]  # (folder, content hash) of each dataset read
    layouts: list[str | None]  # the layout a dataset's image was read from, else None
    patients: list[str | None]  # a dataset's patient ("<k>:<patient>" of its k-th dataset)
    patients_known: bool = False  # some dataset's layout names patients (not image = patient)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m retina.predict", description=__doc__.splitlines()[0]
    )
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image files, folders, datasets")
    p.add_argument("--model", required=True, help="exported model folder (results/<study>/best)")
    p.add_argument("--out", type=Path, help="write predictions to this .csv or .parquet file")
    p.add_argument("--batch-size", type=int, default=64, help="images per forward pass")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--workers", type=int, help="decoding processes (default: all cores)")
    p.add_argument(
        "--tta", type=int, choices=TTA_VIEWS, metavar="{1,2,4,8}",
        help="dihedral views averaged per image (default: the study's, from model.pt)",
    )  # fmt: skip
    p.add_argument(
        "--by-patient", action="store_true",
        help="add a row per patient (level=patient; columns level, patient, eye added) when "
        "names pair eyes as <id>_left/<id>_right: grade = the higher eye's, referable = either "
        "eye's; with labels, patient-level sensitivity/specificity and a kappa of the patients "
        "with both eyes graded are printed",
    )  # fmt: skip
    return p.parse_args(argv)


def resolve_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise RetinaError("--device cuda: torch sees no CUDA device here; use --device cpu or auto")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


def is_dataset(folder: Path) -> bool:
    return bool(found_layouts(folder))


def collect_inputs(inputs: list[str]) -> Inputs:
    """Every image named by the inputs; a path that is no folder counts as one image (a missing
    one becomes a row with its error)."""
    names: list[str] = []
    paths: list[Path] = []
    labels: list[int | None] = []
    datasets: list[tuple[Path, str]] = []
    layouts: list[str | None] = []
    patients: list[str | None] = []
    known = False
    for text in inputs:
        path = Path(text).expanduser()
        if not path.is_dir():
            names.append(text)
            paths.append(path)
            labels.append(None)
        elif is_dataset(path):
            manifest = read_manifest(path)  # a broken dataset is one clear RetinaError
            names += manifest.image_ids
            paths += manifest.paths
            labels += [int(v) for v in manifest.labels]
            layouts += [manifest.layout] * len(manifest)
            patients += [f"{len(datasets)}:{p}" for p in manifest.patient_ids]
            known |= manifest.patient_ids != manifest.image_ids
            datasets.append((manifest.root, manifest.content_hash()))
            for note in manifest.notes:
                print(f"{manifest.root}: {note}", file=sys.stderr)
            if manifest.ungradable:
                print(f"{manifest.root}: {len(manifest.ungradable)} image(s) the dataset grades "
                      "ungradable are left out (never graded)", file=sys.stderr)  # fmt: skip
        else:
            files = sorted(p for p in path.iterdir() if not p.name.startswith(".") and p.is_file())
            if not files:
                raise RetinaError(
                    f"{path} holds no image files (subfolders are not searched); pass image "
                    "files, a folder of images or a dataset folder"
                )
            names += [str(p) for p in files]
            paths += files
            labels += [None] * len(files)
        layouts += [None] * (len(names) - len(layouts))
        patients += [None] * (len(names) - len(patients))
    return Inputs(names, paths, labels, datasets, layouts, patients, known)


def predictions_frame(inputs: Inputs, graded: Graded) -> pd.DataFrame:
    ok = graded.ok
    grade = (
        graded.grades
        if graded.grades is not None
        else np.where(ok, np.nan_to_num(graded.probs).argmax(axis=1), -1)
    )
    columns: dict[str, object] = {"image": pd.array(inputs.names, dtype="string")}
    if inputs.datasets:  # which layout each row was read from (empty: a loose file)
        columns["layout"] = pd.array(inputs.layouts, dtype="string")
    if any(label is not None for label in inputs.labels):
        columns["label"] = pd.array(inputs.labels, dtype="Int64")
    columns["grade"] = pd.array(np.where(ok, grade, None), dtype="Int64")
    for g in range(NUM_CLASSES):
        columns[f"p{g}"] = graded.probs[:, g]
    if graded.scores is not None:
        columns["score"] = graded.scores
    columns["referable"] = pd.array(np.where(ok, grade >= REFERABLE_GRADE, None), dtype="boolean")
    columns["error"] = pd.array(graded.errors, dtype="string")
    return pd.DataFrame(columns)


def write_predictions(frame: pd.DataFrame, out: Path) -> None:
    try:
        write_atomic(out, lambda tmp: getattr(frame, WRITERS[out.suffix])(tmp, index=False))
    except OSError as exc:
        raise RetinaError(
            f"cannot write {out} ({exc.strerror or exc}); choose another --out"
        ) from None


def print_summary(frame: pd.DataFrame, stream: TextIO) -> None:
    failed = frame[frame["error"].notna()]
    print(f"graded {len(frame) - len(failed)} of {len(frame)} images", file=stream)
    if failed.empty:
        return
    print(f"{len(failed)} could not be graded (their rows hold the reason):", file=stream)
    for image, error in failed[["image", "error"]].head(MAX_LISTED).itertuples(index=False):
        print(f"  {image}: {error}", file=stream)
    if len(failed) > MAX_LISTED:
        print(f"  ... and {len(failed) - MAX_LISTED} more", file=stream)


def print_agreement(frame: pd.DataFrame, inputs: Inputs, model_info: dict, stream: TextIO) -> None:
    """The metrics of the labelled, graded images with their intervals (`retina.agreement`)."""
    if "label" not in frame:
        return
    rows = frame["label"].notna() & frame["grade"].notna()
    if not rows.any():
        return
    patients = np.asarray(inputs.patients, dtype=object)[rows.to_numpy()]
    true, grade = frame.loc[rows, "label"].to_numpy(int), frame.loc[rows, "grade"].to_numpy(int)
    for line in agreement_lines(true, grade, patients, inputs.patients_known):
        print(line, file=stream)
    trained_on = model_info.get("dataset_hash")
    for folder, digest in inputs.datasets:
        if digest == trained_on:
            print(
                f"note: {folder} is the dataset this model was trained and selected on; these "
                "numbers include its training images (see card.md for its test metrics)",
                file=stream,
            )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.out is not None and args.out.suffix not in WRITERS:
        raise RetinaError(f"--out {args.out}: write a .csv or .parquet file, e.g. --out preds.csv")
    if args.batch_size < 1:
        raise RetinaError(f"--batch-size {args.batch_size}: pass 1 or more")
    workers = args.workers if args.workers is not None else os.cpu_count() or 1
    if workers < 1:
        raise RetinaError(f"--workers {workers}: pass 1 or more")
    device = resolve_device(args.device)
    loaded = load_model(args.model, device)
    inputs = collect_inputs(args.inputs)
    graded = grade_files(
        loaded, inputs.paths, batch_size=args.batch_size, device=device,
        workers=min(workers, len(inputs.paths)), progress=True, views=args.tta,
    )  # fmt: skip
    graded = calibrated(graded, loaded.temperature)  # the study's temperature, fitted on val
    frame = predictions_frame(inputs, graded)
    frame["referable"] = referable_column(graded, loaded.referable_threshold)
    p_referable = referable_probability_column(graded, loaded.platt)  # calibrated on val
    frame.insert(frame.columns.get_loc("referable"), "p_referable", p_referable)
    if not graded.ok.any():
        first = next(f"{n}: {e}" for n, e in zip(inputs.names, graded.errors, strict=True) if e)
        raise RetinaError(
            f"none of the {len(frame)} images could be graded (first: {first}); check the files"
        )
    stream = sys.stdout if args.out is not None else sys.stderr
    written, patients = with_patient_rows(frame) if args.by_patient else (frame, None)
    if args.out is not None:
        write_predictions(written, args.out)
    else:
        written.to_csv(sys.stdout, index=False)
    print_summary(frame, stream)
    views = loaded.tta if args.tta is None else args.tta
    if views > 1:
        print(f"each image: the mean of {views} dihedral views (--tta 1: as is)", file=stream)
    print_agreement(frame, inputs, loaded.info, stream)
    if patients is not None:
        print_patients(written, patients, stream)
    if args.out is not None:
        print(f"wrote {args.out}", file=stream)
    return 0


if __name__ == "__main__":
    run_command(main)
