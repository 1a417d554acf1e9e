"""summary.json's `referable` and `calibration` keys: the screening question (grade >= 2) and
the calibration of the best search trial (the one `study.export` exports) and of each confirm
run, from predictions/. Pure: study and predictions in, JSON-ready dicts out.

Per run, val chooses everything and test only reports: the temperature is fitted on val, the
referable score is p2+p3+p4 of the temperature-scaled softmax (what `retina.predict` outputs),
or a regress head's `score`, and the threshold meets the study's operating point on val. Both
heads get a calibrated P(referable) (a classify head's temperature-scaled p2+p3+p4, a regress
head's Platt-scaled score) and its test ECE before and after, with patient-bootstrap
intervals for the best trial.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from retina.calibration import fit_platt, platt_probability, referable_probability
from retina.metrics import NUM_CLASSES, REFERABLE_GRADE
from study.analyze.calibration import (
    N_BINS,
    apply_temperature,
    calibration_analysis,
    referable_calibration,
)
from study.analyze.load import StudyResults
from study.analyze.referable import CONFIDENCE, OperatingPoint, referable_analysis, referable_score
from study.analyze.tuning import search_trials
from study.record.ranking import best_trial_ids

PROBS = [f"p{g}" for g in range(NUM_CLASSES)]
SCORE_CLASSIFY = "p2+p3+p4 of the softmax after temperature scaling (T fitted on val)"
SCORE_REGRESS = "the regress head's score (its grade estimate)"
# A regress head's P(referable) as trained: its score read as a logit about the fixed cut
# between grades 1 and 2 (1.5), slope 1; calibrated, the slope and intercept fitted on val.
REGRESS_AS_TRAINED = (1.0, -(REFERABLE_GRADE - 0.5))
REFERABLE_PROBABILITY = {
    "classify": "p2+p3+p4 of the softmax; calibrated: after temperature scaling (T fitted on val)",
    "regress": "1 / (1 + exp(-(score - 1.5))) as trained; calibrated: 1 / (1 + exp(-(a score "
    "+ b))), a and b fitted on val (Platt scaling)",
}


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
    """(referable, calibration) of one run's val and test rows; calibration None when the run
    has neither probabilities nor finite scores (a diverged model)."""
    calibration, val_score, test_score = None, referable_score(val), referable_score(test)
    val_true, test_true = val["true"].to_numpy(), test["true"].to_numpy()
    if _has_probs(val) and _has_probs(test):
        val_p, test_p = val[PROBS].to_numpy(np.float64), test[PROBS].to_numpy(np.float64)
        calibration = {"head": "classify",
                       **calibration_analysis(val_p, val_true, test_p, test_true)}  # fmt: skip
        t = calibration["temperature"]
        before = after = referable_probability(test_p)
        if np.isfinite(t):  # the referable score predict outputs: of the calibrated softmax
            val_score = referable_probability(apply_temperature(val_p, t))
            test_score = after = referable_probability(apply_temperature(test_p, t))
    elif np.isfinite(val_score).all() and np.isfinite(test_score).all():
        # a regress head: P(referable) is a logistic of its score, fitted on val (Platt)
        slope, intercept = fit_platt(val_score, val_true >= REFERABLE_GRADE)
        calibration = {"head": "regress", "platt": {"slope": slope, "intercept": intercept}}
        before = platt_probability(test_score, *REGRESS_AS_TRAINED)
        fitted = np.isfinite(slope) and np.isfinite(intercept)
        after = platt_probability(test_score, slope, intercept) if fitted else before
    referable = referable_analysis(val, test, val_score, test_score, point, n_resamples, rng)
    if calibration is not None:  # after the referable intervals: their draws stay as they were
        calibration["referable"] = referable_calibration(
            before, after, test_true, test["patient"].to_numpy(), n_resamples, rng
        )
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
                   "referable_probability": REFERABLE_PROBABILITY, "fitted_on": "val",
                   "bootstrap": referable["bootstrap"], "best": None, "confirm": [],
                   "note": ""}  # fmt: skip
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
    if (calibration["best"] or {}).get("head") == "regress":
        referable["score"] = SCORE_REGRESS
        calibration["note"] = (
            "The best trial is a regress head: it has no grade probabilities (no top-label "
            "calibration); its P(referable) is Platt-scaled. " + calibration["note"]
        ).strip()
    elif calibration["best"] is None and referable["best"] is not None:
        calibration["note"] = (
            "The best trial has neither probabilities nor finite scores. " + calibration["note"]
        ).strip()
    return {"referable": referable, "calibration": calibration}
