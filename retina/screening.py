"""What an exported model carries from its study's screening analysis, applied to new images:
the temperature fitted on val (calibrated probabilities), a regress head's Platt fit (its
calibrated P(referable)) and the referable threshold chosen on val for the study's operating
point (`study.analyze.clinical`; `model.pt`'s `temperature`, `referable_platt` and
`referable_threshold`). numpy only; the rules themselves live in `retina.calibration`.

    graded = calibrated(graded, loaded.temperature)
    frame["p_referable"] = referable_probability_column(graded, loaded.platt)
    frame["referable"] = referable_column(graded, loaded.referable_threshold)
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd

from retina import calibration
from retina.grading import Graded
from retina.metrics import REFERABLE_GRADE


def temperature_scaled(probs: np.ndarray, temperature: float) -> np.ndarray:
    """`retina.calibration.temperature_scaled`, float32 like the model's; NaN rows (failed
    images) stay NaN; T = 1 returns `probs` itself."""
    if temperature == 1.0:
        return probs
    return calibration.temperature_scaled(probs, temperature).astype(np.float32)


def calibrated(graded: Graded, temperature: float) -> Graded:
    return replace(graded, probs=temperature_scaled(graded.probs, temperature))


def referable_probability_column(graded: Graded, platt: tuple[float, float] | None) -> np.ndarray:
    """P(referable) per image, float64: a classify model's p2+p3+p4 (of the probabilities as
    given: pass them through `calibrated` first), a regress model's score through its stored
    Platt fit (`retina.calibration`); NaN where the image failed, or for a regress model
    exported without a fit (it has no probability to give)."""
    if graded.scores is not None and np.isnan(graded.probs).all():  # a regress head
        if platt is None:
            return np.full(len(graded.scores), np.nan)
        return calibration.platt_probability(graded.scores, *platt)
    return calibration.referable_probability(graded.probs)


def referable_column(graded: Graded, threshold: float | None) -> pd.arrays.BooleanArray:
    """Referable per image: the referable score (p2+p3+p4; a regress model's own score, which
    has no probabilities) >= the stored threshold; without one (a model exported before
    thresholds, or from a study without val predictions), predicted grade >= 2. Empty (NA)
    where the image failed."""
    probs = np.nan_to_num(graded.probs)
    regress = graded.scores is not None and np.isnan(graded.probs).all()
    if threshold is None:
        grades = graded.grades if graded.grades is not None else probs.argmax(axis=1)
        flag = grades >= REFERABLE_GRADE
    elif regress:
        flag = np.nan_to_num(graded.scores, nan=-np.inf) >= threshold
    else:
        flag = probs[:, REFERABLE_GRADE:].sum(axis=1, dtype=np.float64) >= threshold
    return pd.array(np.where(graded.ok, flag, None), dtype="boolean")
