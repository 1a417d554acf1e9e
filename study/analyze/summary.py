"""The study's conclusions as numbers: what `python -m study.analyze` writes to
`results/<study>/summary.json` (keys documented in docs/results.md) and what the report's
comparison section shows. Pure: study and predictions in, a JSON-ready dict out.

    summary = build_summary(load_study(folder), read_predictions(folder), n_resamples=10_000)
    text = summary_text(summary)          # the caller writes it atomically
"""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd

from study.analyze.clinical import clinical_summary
from study.analyze.comparison import CONFIDENCE, compare_cells, value_label
from study.analyze.external import comparison_predictions, external_summary
from study.analyze.load import StudyResults
from study.analyze.patient_view import patients_summary
from study.analyze.resample import METRIC_FUNCTIONS
from study.analyze.tuning import optimism, search_trials, tuning_summary
from study.define.config import ConfirmConfig
from study.record.ranking import best_trial_ids

# 4: pairs[].seeds_needed and test_noise, confirm.margin and batches (issue 27), `external` and
# `confirm.test` (issue 29); 3: `patients` (both eyes, issue 18); 2: pooled seed variance,
# P(A>B), Holm
SCHEMA_VERSION = 4
DEFAULT_COMPARE = ("arch", "pretrained")
CONFIRM_HINT = (
    "add `confirm: {compare: [arch, pretrained], seeds: 3}` to the study's YAML (or "
    "`--set confirm.seeds=3`) and run the sweep again: the best configuration of each cell "
    "is retrained with 3 new seeds and tested once"
)


def compared_dims(study: StudyResults) -> list[str]:
    """config.confirm.compare, else arch and pretrained; only those the trials carry."""
    confirm = (study.meta.get("config") or {}).get("confirm") or {}
    dims = confirm.get("compare") or list(DEFAULT_COMPARE)
    return [str(d) for d in dims if d in study.trials.columns]


def primary_metric(study: StudyResults) -> str:
    """The test metric the sentences use: the study metric's, else kappa."""
    base = study.metric.removeprefix("val_")
    return base if base in METRIC_FUNCTIONS else "kappa"


def _status(trials: pd.DataFrame, comparison: dict, seeds) -> tuple[str, str]:
    has_confirm = "stage" in trials.columns and (trials["stage"] == "confirm").any()
    if not has_confirm:
        if seeds == 0:
            return (
                "off",
                f"The confirm stage is off (confirm.seeds: 0); to compare cells, {CONFIRM_HINT}.",
            )
        return "no_confirm", f"This study has no confirm run; to compare cells, {CONFIRM_HINT}."
    if not comparison["cells"]:
        return "no_predictions", (
            "The confirm runs have no finished test predictions in predictions/ yet; run the "
            "analysis again when the confirm stage has finished (or resume the sweep with --resume)."
        )
    if len(comparison["cells"]) < 2 or not comparison["pairs"]:
        return "one_cell", "Only one cell has confirm runs: there is no pair to compare."
    return "ok", ""


def _best_cell(study: StudyResults, dims: list[str], comparison: dict, metric: str):
    """The confirm runs of the best search trial's cell, for the optimism line."""
    ids = best_trial_ids(search_trials(study.trials), study.score_column, study.mode, 1)
    if not ids or not dims:
        return None
    row = study.trials[study.trials["trial_id"] == ids[0]].iloc[0]
    label = " · ".join(value_label(d, row[d]) for d in dims)
    for cell in comparison["cells"]:
        if cell["cell"] == label:
            m = cell["metrics"][metric]
            return {"cell": label, "mean": m["mean"], "sd": m["sd"], "n_runs": cell["n_runs"]}
    return None


def confirm_batches(meta: dict) -> list[dict]:
    """When each confirm seed joined the study: `{"seeds", "at", "cells"}` per batch, the
    study's own first (`cells` null: every cell), then each `--more-seeds` (study.json's
    `confirm_added`)."""
    added = meta.get("confirm_added") or []
    later = {s for batch in added for s in batch["seeds"]}
    first = [s for s in (meta.get("seeds") or {}).get("confirm") or [] if s not in later]
    own = [{"seeds": first, "at": meta.get("created"), "cells": None}] if first else []
    return own + [dict(batch) for batch in added]


def build_summary(
    study: StudyResults, predictions: pd.DataFrame, n_resamples: int = 10_000, seed: int = 0
) -> dict:
    """Every number of the comparison section (see docs/results.md, `summary.json`)."""
    confirm = (study.meta.get("config") or {}).get("confirm") or {}
    dims = compared_dims(study)
    primary = primary_metric(study)
    margin = confirm.get("margin", ConfirmConfig.margin)  # a study from before the key: default
    tested_on = str(confirm.get("test") or "test")  # confirm.test: test or an external set
    compared = comparison_predictions(predictions, tested_on)
    comparison = compare_cells(study.trials, compared, dims, n_resamples, seed, primary, margin)
    if tested_on != "test":  # say on which data the pairs were compared
        for pair in comparison["pairs"]:
            pair["sentence"] = f"On the external set {tested_on}: {pair['sentence']}"
    status, note = _status(study.trials, comparison, confirm.get("seeds"))
    pooled = comparison["seed_variance"].get(primary) or {}
    seed_sd = pooled["pooled_sd"] if pooled.get("dof") else None  # this study's, net of noise
    best_cell = _best_cell(study, dims, comparison, primary)
    return {
        "schema_version": SCHEMA_VERSION,
        "study": study.name,
        "metric": {"name": study.metric, "mode": study.mode},
        "primary_metric": primary,
        "confirm": {
            "compare": dims,
            "seeds": confirm.get("seeds"),
            "margin": margin,
            "batches": confirm_batches(study.meta),
            "test": tested_on,
            "status": status,
            "note": note,
        },
        "bootstrap": {
            "unit": "patient",
            "resamples": n_resamples,
            "seed": seed,
            "confidence": CONFIDENCE,
            "test_images": comparison["test_images"],
            "test_patients": comparison["test_patients"],
            "seed_part": "normal draw with the seed variance pooled over the cells, net of "
            "test noise, drawn from its fiducial (scaled chi-square) distribution",
            "adjustment": "holm",
        },
        "cells": comparison["cells"],
        "pairs": comparison["pairs"],
        "tuning": tuning_summary(study.trials, study.score_column, study.mode, dims, seed_sd),
        "optimism": optimism(study.trials, study.score_column, study.mode, best_cell),
        "seed_variance": comparison["seed_variance"],
        **clinical_summary(study, predictions, n_resamples, seed),  # referable, calibration
        "patients": patients_summary(study, predictions, n_resamples, seed),
        "external": external_summary(study, predictions, n_resamples, seed),
    }


def jsonable(value):
    """NaN/inf -> None, numpy scalars and arrays -> Python, recursively (strict JSON)."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [jsonable(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def summary_text(summary: dict) -> str:
    return json.dumps(jsonable(summary), indent=2, allow_nan=False) + "\n"
