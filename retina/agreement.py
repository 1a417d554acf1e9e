"""What `python -m retina.predict` prints about labelled images: accuracy, quadratic kappa,
balanced accuracy and referable sensitivity/specificity, each with a 95 % interval, per image
and, where the dataset's layout knows its patients, per patient; and the confusion matrix.

The intervals are percentile bootstraps that resample patients (an image's patient is the unit
that was sampled; images of one patient are not independent), or images where the layout knows
no patients. Each resample's metrics come from its confusion matrix through
`EpochMetrics.from_confusion`, the metrics of training and evaluation: one rule for each. The
patient view is `retina.patients`': a patient's grade and label are its worse eye's; referable
figures count every patient, the patient kappa the patients with both eyes graded.

    lines = agreement_lines(true, predicted, groups, patients_known)
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from retina.metrics import NUM_CLASSES, EpochMetrics, confusion_matrix
from retina.patients import patient_metrics, per_patient

RESAMPLES = 2000
LEVEL = 0.95
# (attribute of EpochMetrics, how the line names it)
METRICS = (
    ("accuracy", "accuracy"),
    ("kappa", "quadratic kappa"),
    ("balanced_accuracy", "balanced accuracy"),
    ("referable_sensitivity", "referable sensitivity"),
    ("referable_specificity", "specificity"),
)


def intervals(
    true: np.ndarray, predicted: np.ndarray, groups: Sequence, seed: int = 0
) -> dict[str, tuple[float, float, float]]:
    """metric -> (estimate, low, high): a percentile bootstrap resampling the `groups` (patients,
    or one group per image) with replacement, RESAMPLES times."""
    codes, group = np.unique(np.asarray(groups, dtype=object).astype(str), return_inverse=True)
    # Confusion counts per group [G, K*K]; a resample's matrix is its group counts' weighted sum.
    cell = true.astype(np.int64) * NUM_CLASSES + predicted.astype(np.int64)
    per_group = np.zeros((len(codes), NUM_CLASSES * NUM_CLASSES), dtype=np.int64)
    np.add.at(per_group, (group, cell), 1)
    rng = np.random.default_rng(seed)
    weights = rng.multinomial(len(codes), np.full(len(codes), 1 / len(codes)), size=RESAMPLES)
    resampled = (weights @ per_group).reshape(RESAMPLES, NUM_CLASSES, NUM_CLASSES)
    point = EpochMetrics.from_confusion(confusion_matrix(true, predicted), 0.0, 0.0)
    draws = [EpochMetrics.from_confusion(conf, 0.0, 0.0) for conf in resampled]
    tail = 100 * (1 - LEVEL) / 2
    out = {}
    for name, _ in METRICS:
        values = np.array([getattr(m, name) for m in draws], dtype=np.float64)
        low, high = np.nanpercentile(values, [tail, 100 - tail]) if np.isfinite(values).any() else (np.nan, np.nan)  # fmt: skip
        out[name] = (float(getattr(point, name)), float(low), float(high))
    return out


def _said(values: dict[str, tuple[float, float, float]], names: Sequence[str]) -> str:
    shown = dict(METRICS)
    return ", ".join(f"{shown[n]} {values[n][0]:.3f} [{values[n][1]:.3f}, {values[n][2]:.3f}]" for n in names)  # fmt: skip


def agreement_lines(
    true: np.ndarray, predicted: np.ndarray, patients: Sequence, patients_known: bool
) -> list[str]:
    """The per-image line (with the confusion matrix) and the per-patient line, or why not."""
    unit = "patients" if patients_known else "images (no patient ids: each image its own)"
    per_image = intervals(true, predicted, patients if patients_known else np.arange(len(true)))
    lines = [
        f"against the labels ({len(true)} images): " + _said(per_image, [n for n, _ in METRICS]),
        f"  ([95 % intervals]: percentile bootstrap over {unit}, {RESAMPLES} resamples)",
        "confusion matrix (rows: label, columns: predicted grade)",
        "       " + "".join(f"{g:>7}" for g in range(NUM_CLASSES)),
    ]
    conf = confusion_matrix(true, predicted)
    lines += [f"{g:>7}" + "".join(f"{v:>7}" for v in conf[g]) for g in range(NUM_CLASSES)]
    if not patients_known:
        lines.append(
            "per patient: the layout publishes no patient ids, so each image is its own patient "
            "and the per-image figures are the only ones"
        )
        return lines
    table = per_patient(list(patients), predicted, true)
    view = patient_metrics(table)
    rows = table[(table["eyes"] > 0) & table["label"].notna()]
    label, grade = rows["label"].to_numpy(np.int64), rows["grade"].to_numpy(np.int64)
    both = (rows["eyes"] >= 2).to_numpy()
    referable = intervals(label, grade, np.arange(len(rows)))
    said = _said(referable, ["referable_sensitivity", "referable_specificity"])
    line = f"per patient ({view.n_patients}: the worse eye's grade): {said}"
    if both.any():
        kappa = intervals(label[both], grade[both], np.arange(int(both.sum())))
        line += f"; {_said(kappa, ['kappa'])} on the {int(both.sum())} with both eyes graded"
    lines.append(line)
    return lines
