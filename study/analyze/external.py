"""summary.json's `external` key: per external test set, how the best search trial and each
confirm run do on it, with what was chosen on the development val and nothing fitted on it.
Pure: study and predictions in, a JSON-ready dict out (docs/external-test-sets.md).

    external_summary(study, read_predictions(folder), n_resamples=10_000, seed=0)
    comparison_predictions(predictions, "messidor2")   # confirm.test: the pairs on that set

Per set: its images and patients, the grade shares beside the development test's, and per run
kappa, accuracy and balanced accuracy (patient-bootstrap intervals for the best trial,
`study.analyze.resample`), the confusion matrix, and the referable block of
`study.analyze.clinical.run_clinical` (AUROC, the threshold chosen on val and its sensitivity /
specificity on the set; the temperature is fitted on val, its ECE read on the set).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from retina.metrics import NUM_CLASSES
from study.analyze.clinical import run_clinical, summary_runs
from study.analyze.load import StudyResults
from study.analyze.referable import CONFIDENCE, OperatingPoint, percentile_interval
from study.analyze.resample import (
    METRIC_FUNCTIONS,
    METRICS,
    RunCodes,
    full_confusions,
    run_metrics,
)
from study.record.predictions import external_split


def external_names(study: StudyResults) -> list[str]:
    """The study's external sets, as its YAML lists them."""
    sets = (study.meta.get("config") or {}).get("external") or []
    return [str(s["name"]) for s in sets if isinstance(s, dict) and "name" in s]


def comparison_predictions(predictions: pd.DataFrame, test: str) -> pd.DataFrame:
    """The rows the comparison reads as `test`: the held-out test's (`test`), or an external
    set's relabelled `test` (`confirm.test: <name>`)."""
    if test == "test":
        return predictions
    rows = predictions[predictions["split"] == external_split(test)].copy()
    rows["split"] = "test"
    return rows


def grade_shares(counts) -> list[float] | None:
    counts = np.asarray(counts, dtype=np.float64)
    return (counts / counts.sum()).tolist() if counts.size and counts.sum() > 0 else None


def run_block(
    trial_id: str, val: pd.DataFrame, rows: pd.DataFrame, dev_test: pd.DataFrame,
    point: OperatingPoint, n_resamples: int, rng: np.random.Generator,
) -> dict:  # fmt: skip
    """One run on one set: grading metrics with intervals, confusion, referable, calibration."""
    codes = RunCodes.from_predictions(rows, [trial_id])
    full, boot = run_metrics(codes, n_resamples, rng)
    out: dict = {"trial_id": trial_id, "images": codes.n_images, "patients": codes.n_patients}
    for m in METRIC_FUNCTIONS:
        out[m] = float(full[m][0])
        out[f"{m}_ci"] = percentile_interval(boot[m][:, 0])
    out["confusion"] = full_confusions(codes)[0].astype(int).tolist()  # rows true, cols predicted
    if not dev_test.empty:  # the same run on the development test, beside
        cms = full_confusions(RunCodes.from_predictions(dev_test, [trial_id]))
        out["development_test"] = {m: float(METRICS[m](cms)[0]) for m in METRIC_FUNCTIONS}
    referable, calibration = run_clinical(val, rows, point, n_resamples, rng)
    out["referable"] = referable  # its test_image / test_patient blocks are on this set
    # T from val, ECE on this set (its `test_*` keys); the diagram's bins stay in the file's
    # own calibration block
    out["calibration"] = calibration and {
        k: v for k, v in calibration.items() if not k.startswith("bins")
    }
    return out


def set_block(
    study: StudyResults, predictions: pd.DataFrame, name: str, point: OperatingPoint,
    n_resamples: int, rng: np.random.Generator,
) -> dict:  # fmt: skip
    split = external_split(name)
    block: dict = {"split": split, "images": 0, "patients": 0, "grade_shares": {},
                   "best": None, "confirm": [], "note": ""}  # fmt: skip
    rows = predictions[predictions["split"] == split]
    if not rows.empty:
        first = rows[rows["trial_id"] == rows["trial_id"].iloc[0]]
        block["images"], block["patients"] = len(first), int(first["patient"].nunique())
        counts = np.bincount(first["true"].to_numpy(np.int64), minlength=NUM_CLASSES)
        block["grade_counts"] = counts.tolist()
        block["grade_shares"]["external"] = grade_shares(counts)
    block["grade_shares"]["development_test"] = grade_shares(study.class_counts.get("test", []))
    skipped = []
    for trial_id, role in summary_runs(study):
        own = predictions[predictions["trial_id"] == trial_id]
        val, ext = own[own["split"] == "val"], own[own["split"] == split]
        if val.empty or ext.empty:
            skipped.append(f"{trial_id} (no {'val' if val.empty else name} predictions)")
            continue
        # intervals for the best trial; a confirm run's spread over seeds is its own interval
        resamples = n_resamples if role == "best" else 0
        dev_test = own[own["split"] == "test"]
        run = run_block(trial_id, val, ext, dev_test, point, resamples, rng)
        if role == "best":
            block["best"] = run
        else:
            block["confirm"].append(run)
    if skipped:
        block["note"] = "Left out: " + ", ".join(skipped) + "."
    return block


def external_summary(
    study: StudyResults, predictions: pd.DataFrame, n_resamples: int, seed: int
) -> dict:
    """{set name: its block} (docs/external-test-sets.md); {} for a study without any."""
    names = external_names(study)
    if not names:
        return {}
    point = OperatingPoint.from_config((study.meta.get("config") or {}).get("operating_point"))
    rng = np.random.default_rng(seed)
    out = {}
    for name in names:
        out[name] = set_block(study, predictions, name, point, n_resamples, rng)
        out[name]["bootstrap"] = {"unit": "patient", "resamples": n_resamples, "seed": seed,
                                  "confidence": CONFIDENCE, "runs": "best"}  # fmt: skip
    return out
