"""summary.json's `referable` and `calibration` keys: the screening question (grade >= 2) and
the calibration of the best search trial (the one `study.export` exports) and of each confirm
run, from predictions/. Pure: study and predictions in, JSON-ready dicts out.

Per run, val chooses everything and test only reports: the temperature is fitted on val, the
referable score is p2+p3+p4 of the temperature-scaled softmax (what `retina.predict` outputs),
or a regress head's `score`, and the threshold meets the study's operating point on val.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from retina.metrics import NUM_CLASSES, REFERABLE_GRADE
from study.analyze.calibration import N_BINS, apply_temperature, calibration_analysis
from study.analyze.load import StudyResults
from study.analyze.referable import CONFIDENCE, OperatingPoint, referable_analysis, referable_score
from study.analyze.tuning import search_trials
from study.record.ranking import best_trial_ids

PROBS = [f"p{g}" for g in range(NUM_CLASSES)]
SCORE_CLASSIFY = "p2+p3+p4 of the softmax after temperature scaling (T fitted on val)"
SCORE_REGRESS = "the regress head's score (its grade estimate)"


def summary_runs(study: StudyResults) -> list[tuple[str, str]]:
    """(trial id, role): the best search trial, then the confirm runs in trials.parquet order."""
    best = best_trial_ids(search_trials(study.trials), study.score_column, study.mode, 1)
    runs = [(best[0], "best")] if best else []
    if "stage" in study.trials.columns:
        confirm = study.trials[study.trials["stage"] == "confirm"]["trial_id"].astype(str)
        runs += [(tid, "confirm") for tid in confirm if tid not in dict(runs)]
    return runs


def _has_probs(rows: pd.DataFrame) -> bool:
    return set(PROBS) <= set(rows.columns) and rows[PROBS].notna().all(axis=None) and len(rows) > 0


def run_clinical(
    val: pd.DataFrame, test: pd.DataFrame, point: OperatingPoint, n_resamples: int,
    rng: np.random.Generator,
) -> tuple[dict, dict | None]:  # fmt: skip
    """(referable, calibration or None for a regress head) of one run's val and test rows."""
    calibration, val_score, test_score = None, referable_score(val), referable_score(test)
    if _has_probs(val) and _has_probs(test):
        val_p, test_p = val[PROBS].to_numpy(np.float64), test[PROBS].to_numpy(np.float64)
        calibration = calibration_analysis(val_p, val["true"].to_numpy(), test_p,
                                           test["true"].to_numpy())  # fmt: skip
        t = calibration["temperature"]
        if np.isfinite(t):  # the referable score predict outputs: of the calibrated softmax
            high = slice(REFERABLE_GRADE, NUM_CLASSES)
            val_score = apply_temperature(val_p, t)[:, high].sum(axis=1)
            test_score = apply_temperature(test_p, t)[:, high].sum(axis=1)
    referable = referable_analysis(val, test, val_score, test_score, point, n_resamples, rng)
    return referable, calibration


def clinical_summary(
    study: StudyResults, predictions: pd.DataFrame, n_resamples: int, seed: int
) -> dict:
    """{"referable": ..., "calibration": ...} (docs/results.md, summary.json)."""
    point = OperatingPoint.from_config((study.meta.get("config") or {}).get("operating_point"))
    rng = np.random.default_rng(seed)
    referable = {
        "grade": REFERABLE_GRADE,
        "score": SCORE_CLASSIFY,
        "operating_point": {"target": point.target, "value": point.value, "chosen_on": "val"},
        "bootstrap": {"unit": "patient", "resamples": n_resamples, "seed": seed,
                      "confidence": CONFIDENCE, "runs": "best"},  # fmt: skip
        "best": None, "confirm": [], "note": "",
    }  # fmt: skip
    calibration = {"bins": N_BINS, "binning": "equal-mass", "confidence": "top label",
                   "fitted_on": "val", "best": None, "confirm": [], "note": ""}  # fmt: skip
    skipped = []
    for trial_id, role in summary_runs(study):
        rows = predictions[predictions["trial_id"] == trial_id]
        val, test = rows[rows["split"] == "val"], rows[rows["split"] == "test"]
        if val.empty or test.empty:
            skipped.append(f"{trial_id} (no {'val' if val.empty else 'test'} predictions)")
            continue
        # intervals for the best trial; a confirm run's spread over seeds is its own interval
        resamples = n_resamples if role == "best" else 0
        ref, cal = run_clinical(val, test, point, resamples, rng)
        if role == "best":
            referable["best"] = {"trial_id": trial_id, **ref}
            calibration["best"] = cal and {"trial_id": trial_id, **cal}
        else:
            referable["confirm"].append({"trial_id": trial_id, **ref})
            if cal is not None:
                calibration["confirm"].append({"trial_id": trial_id, **cal})
    if skipped:
        referable["note"] = calibration["note"] = "Left out: " + ", ".join(skipped) + "."
    if referable["best"] is None:
        referable["note"] = (
            "The best search trial has no val and test predictions in predictions/ (it was not "
            "tested, or the study predates them). " + referable["note"]
        ).strip()
    if calibration["best"] is None and referable["best"] is not None:
        calibration["note"] = "The best trial has no probabilities (a regress head)."
        referable["score"] = SCORE_REGRESS
    return {"referable": referable, "calibration": calibration}
