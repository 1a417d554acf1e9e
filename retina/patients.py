"""Both eyes of a patient: how image names pair into patients, and the patient-level view of
a grading (numpy/pandas only; shared by `retina.predict --by-patient`, the study's held-out
test, its summary.json `patients` key and the model card).

The rule, in one place:
- Names pair by the Kaggle convention `<patient>_left` / `<patient>_right` (case ignored, an
  image suffix such as `.jpeg` ignored). A name without it, or a patient with two images of
  one eye, is left out of the patient view, with the reason (`Pairing.unpaired`).
- A patient's grade is the higher of its eyes' grades (the worse eye decides care); its label
  likewise. Referable DR per patient: either eye's grade >= 2.
- Referable sensitivity / specificity count every patient with a graded eye; the patient-level
  kappa counts only patients with both eyes graded (a one-eyed patient's "max of two eyes" is
  one eye's grade, so it would be an image-level pair in disguise).

    pairing = pair_eyes(names)
    table = per_patient(pairing.patient, predicted, true)
    view = patient_metrics(table)          # n patients, both-eyed / one-eyed, sens, spec, kappa
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from retina.metrics import (
    REFERABLE_GRADE,
    confusion_matrix,
    quadratic_weighted_kappa,
    referable_sensitivity_specificity,
)

EYES = ("left", "right")
EYE_NAME = re.compile(r"^(.+)_(left|right)$", re.IGNORECASE)  # the manifest's patient rule too
# Loose files keep their suffix in predict's `image` column; the dataset ids have none.
IMAGE_SUFFIX = re.compile(r"\.(jpe?g|png|tiff?|bmp|webp)$", re.IGNORECASE)
NO_EYE = "the name does not end in _left or _right (the Kaggle `<patient>_left.jpeg` convention)"


def patient_of_id(image_id: str) -> str:
    """A dataset's patient id: `<patient>` of `<patient>_left`/`_right`, else the image id
    itself (`retina.manifest`; the split keeps a patient's images on one side)."""
    match = EYE_NAME.match(image_id)
    return match.group(1) if match else image_id


def eye_of(name: str) -> tuple[str, str] | None:
    """(patient, "left"|"right") of an image name or path, or None when it names no eye."""
    match = EYE_NAME.match(IMAGE_SUFFIX.sub("", str(name)))
    return (match.group(1), match.group(2).lower()) if match else None


@dataclass(frozen=True)
class Pairing:
    """Per image (input order): its patient and eye, None where it is left out; and the
    images left out with why."""

    patient: np.ndarray  # object [N]: patient id or None
    eye: np.ndarray  # object [N]: "left" | "right" | None
    unpaired: list[tuple[str, str]]  # (name, reason)

    @property
    def n_patients(self) -> int:
        return len({p for p in self.patient if p is not None})


def pair_eyes(names: Sequence[str]) -> Pairing:
    """Pair images into patients by name. A patient with two images of one eye (the same file
    given twice, or one name in two folders) is left out whole: which image is that eye is
    ambiguous, and half a patient would read as a one-eyed one."""
    found = [eye_of(n) for n in names]
    rows: dict[tuple[str, str], list[int]] = {}
    for i, pair in enumerate(found):
        if pair is not None:
            rows.setdefault(pair, []).append(i)
    doubled = {patient for (patient, _), idx in rows.items() if len(idx) > 1}
    patient = np.full(len(names), None, dtype=object)
    eye = np.full(len(names), None, dtype=object)
    unpaired: list[tuple[str, str]] = []
    for i, (name, pair) in enumerate(zip(names, found, strict=True)):
        if pair is None:
            unpaired.append((str(name), NO_EYE))
        elif pair[0] in doubled:
            same = [names[j] for side in EYES for j in rows.get((pair[0], side), []) if j != i]
            twice = [s for s in EYES if len(rows.get((pair[0], s), [])) > 1]
            unpaired.append((str(name), f"patient {pair[0]} has more than one {' and '.join(twice)}"
                             f"-eye image (also: {', '.join(map(str, same))})"))  # fmt: skip
        else:
            patient[i], eye[i] = pair
    return Pairing(patient, eye, unpaired)


def per_patient(
    patient: Sequence, predicted: Sequence, true: Sequence | None = None,
    flagged: Sequence | None = None,
) -> pd.DataFrame:  # fmt: skip
    """One row per patient (index `patient`, sorted): `eyes` (graded eyes), `grade` (the higher
    eye's predicted grade), `label` (the higher eye's true grade; null unless every graded eye
    has one), `referable` (either eye flagged; without `flagged`, either eye's grade >= 2).
    Images with patient None are left out; an image with no grade (negative or null: it failed)
    counts as no eye, so a patient whose images all failed has eyes 0 and a null grade."""
    eyes = pd.DataFrame({
        "patient": pd.array(patient, dtype=object),
        "grade": pd.array(pd.to_numeric(pd.Series(predicted, dtype="Float64")), dtype="Int64"),
        "label": pd.array(true if true is not None else [None] * len(patient), dtype="Int64"),
    })  # fmt: skip
    eyes.loc[eyes["grade"] < 0, "grade"] = pd.NA
    graded = eyes["grade"].notna()
    eyes["flag"] = (
        pd.array(flagged, dtype="boolean")
        if flagged is not None
        else eyes["grade"] >= REFERABLE_GRADE
    )
    eyes["flag"] = eyes["flag"].where(graded, pd.NA)
    eyes["labelled"] = eyes["label"].notna() | ~graded  # a failed eye does not ask for a label
    eyes.loc[~graded, "label"] = pd.NA  # ...nor gives one: the patient is what was graded
    eyes = eyes[eyes["patient"].notna()]
    groups = eyes.groupby("patient", sort=True)
    table = pd.DataFrame({
        "eyes": groups["grade"].count().astype("int64"),
        "grade": groups["grade"].max(),
        "label": groups["label"].max().where(groups["labelled"].all()),
        "referable": groups["flag"].max().astype("boolean"),
    })  # fmt: skip
    table.loc[table["eyes"] == 0, "label"] = pd.NA
    return table


@dataclass(frozen=True)
class PatientMetrics:
    """The patient-level view of a grading against labels (see the module's rule)."""

    n_patients: int  # with a graded, labelled eye: the referable figures' patients
    n_both: int  # both eyes graded: the kappa's patients
    n_one: int  # one eye only: in the referable figures, not in the kappa
    n_referable: int  # patients whose label is >= 2
    sensitivity: float  # NaN without a referable patient
    specificity: float  # NaN without a non-referable one
    kappa: float  # quadratic, on max grades, both-eyed patients only; NaN when there are none

    def as_dict(self) -> dict:
        return {
            "patients": self.n_patients, "both_eyes": self.n_both, "one_eye": self.n_one,
            "referable": self.n_referable, "sensitivity": self.sensitivity,
            "specificity": self.specificity, "kappa_both_eyes": self.kappa,
        }  # fmt: skip

    def sentence(self) -> str:
        """One line for a terminal: what was counted, and where."""
        kappa = (
            f"quadratic kappa {self.kappa:.3f} on the {self.n_both} with both eyes graded "
            "(max of the two eyes' grades)"
            if self.n_both
            else "no patient has both eyes graded, so no patient-level kappa"
        )
        one = (
            f"; the {self.n_one} with one eye only count for referable, not for the kappa"
            if self.n_one
            else ""
        )
        return (
            f"{self.n_patients} patients ({self.n_both} both eyes, {self.n_one} one eye): "
            f"referable (either eye's grade >= {REFERABLE_GRADE}) sensitivity {self.sensitivity:.3f}, "
            f"specificity {self.specificity:.3f} ({self.n_referable} referable); {kappa}{one}"
        )


def patient_metrics(table: pd.DataFrame) -> PatientMetrics:
    """Referable sensitivity/specificity (the grade rule: max grade >= 2) over the patients with
    a graded eye and a label; quadratic kappa of max true vs max predicted over the both-eyed."""
    rows = table[(table["eyes"] > 0) & table["label"].notna() & table["grade"].notna()]
    true, pred = rows["label"].to_numpy(np.int64), rows["grade"].to_numpy(np.int64)
    sens, spec = referable_sensitivity_specificity(confusion_matrix(true, pred))
    both = (rows["eyes"] >= 2).to_numpy()
    kappa = (
        quadratic_weighted_kappa(confusion_matrix(true[both], pred[both]))
        if both.any()
        else float("nan")
    )
    return PatientMetrics(
        n_patients=len(rows), n_both=int(both.sum()), n_one=int((~both).sum()),
        n_referable=int((true >= REFERABLE_GRADE).sum()), sensitivity=sens, specificity=spec,
        kappa=kappa,
    )  # fmt: skip


def grading_view(names: Sequence[str], true: Sequence, predicted: Sequence) -> PatientMetrics:
    """The patient view of one labelled grading (names as image ids or file names)."""
    return patient_metrics(per_patient(pair_eyes(names).patient, predicted, true))
