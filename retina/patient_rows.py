"""`python -m retina.predict --by-patient`: the patient rows of predict's output, and what it
says about them (the rule itself is `retina.patients`').

With `--by-patient` the output (one table, CSV or Parquet) gains three columns in front, and
one row per patient after the image rows:
- `level`: `image` or `patient`;
- `patient`: the patient an image belongs to (`<patient>` of `<patient>_left/_right`; empty
  when its name pairs no eye), or the patient of a patient row;
- `eye`: an image's `left`/`right`; a patient row's graded eyes, `both`, `left` or `right` (one
  eye only: its grade is that eye's);
and a patient row holds `label` (the higher eye's), `grade` (the higher eye's predicted grade),
`referable` (either eye's `referable`: at the model's threshold when it has one, else either
eye's grade >= 2), empty `image`, `p0`..`p4` and `score`, and `error` when no eye was graded.
"""

from __future__ import annotations

from typing import TextIO

import numpy as np
import pandas as pd

from retina.patients import pair_eyes, patient_metrics, per_patient

LEVELS = ("image", "patient")
MAX_LISTED = 20  # names in a note, as predict's failure summary
NONE_GRADED = "no eye of this patient could be graded"


def with_patient_rows(frame: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(predict's frame with `level`, `patient`, `eye` and the patient rows appended, the
    per-patient table of `retina.patients.per_patient`)."""
    pairing = pair_eyes(frame["image"].tolist())
    labels = frame["label"] if "label" in frame else None
    table = per_patient(pairing.patient, frame["grade"], labels, frame["referable"])
    images = frame.copy()
    images.insert(0, "level", pd.array(["image"] * len(images), dtype="string"))
    images.insert(2, "patient", pd.array(pairing.patient, dtype="string"))
    images.insert(3, "eye", pd.array(pairing.eye, dtype="string"))
    graded = images[images["grade"].notna() & images["patient"].notna()]
    graded_eyes = graded.groupby("patient")["eye"].agg(lambda e: "both" if e.nunique() > 1 else e.iloc[0])  # fmt: skip
    patients = pd.DataFrame({
        "level": pd.array(["patient"] * len(table), dtype="string"),
        "patient": pd.array(table.index, dtype="string"),
        "eye": pd.array(graded_eyes.reindex(table.index).tolist(), dtype="string"),
        "grade": table["grade"].to_numpy(),
        "referable": table["referable"].to_numpy(),
        "error": pd.array(np.where(table["eyes"] > 0, None, NONE_GRADED), dtype="string"),
    })  # fmt: skip
    if labels is not None:
        patients["label"] = table["label"].to_numpy()
    out = pd.concat([images, patients.reindex(columns=images.columns)], ignore_index=True)
    return out.astype(images.dtypes.to_dict()), table


def print_patients(frame: pd.DataFrame, table: pd.DataFrame, stream: TextIO) -> None:
    """What the patient rows hold and what they leave out: patients with one eye, images in no
    patient row (which, and why), and, for labelled images, the patient-level agreement."""
    pairing = pair_eyes(frame.loc[frame["level"] == "image", "image"].tolist())
    n_images = len(pairing.patient)
    if not len(table):
        print(
            f"--by-patient: none of the {n_images} image names pairs eyes (`<patient>_left` / "
            "`<patient>_right`, as Kaggle's `10_left.jpeg`), so there are no patient rows; "
            "the image rows are written as usual",
            file=stream,
        )
    else:
        one = table[table["eyes"] == 1]
        print(
            f"by patient: {len(table)} patients ({int((table['eyes'] >= 2).sum())} with both "
            f"eyes graded, {len(one)} with one eye only), rows with level=patient",
            file=stream,
        )
        if len(one):
            rows = frame[(frame["level"] == "patient") & frame["patient"].isin(one.index)]
            listed = [
                f"{p} ({e} only)" for p, e in rows[["patient", "eye"]].itertuples(index=False)
            ]
            _listing(
                "one eye only (its grade is the patient's; counted for referable, not for the "
                "patient-level kappa)", listed, stream,
            )  # fmt: skip
    if pairing.unpaired and len(table):
        print(f"{len(pairing.unpaired)} of {n_images} images are in no patient row:", file=stream)
        _listing(None, [f"{name}: {why}" for name, why in pairing.unpaired], stream)
    view = patient_metrics(table)
    if view.n_patients:
        print(f"against the labels, per patient: {view.sentence()}", file=stream)


def _listing(title: str | None, items: list[str], stream: TextIO) -> None:
    if title:
        print(f"{title}:", file=stream)
    for item in items[:MAX_LISTED]:
        print(f"  {item}", file=stream)
    if len(items) > MAX_LISTED:
        print(f"  ... and {len(items) - MAX_LISTED} more", file=stream)
