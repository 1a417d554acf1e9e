"""The vectorised test metrics and the patient bootstrap (study.analyze.resample) against
direct formulas, an explicit resample, and the binomial standard error; plus the timing of the
issue's size (10,000 resamples of 7,000 images), printed, not asserted."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd

from retina.metrics import balanced_accuracy as retina_balanced
from retina.metrics import confusion_matrix
from retina.metrics import quadratic_weighted_kappa as retina_kappa
from study.analyze.resample import (
    RunCodes,
    accuracy,
    balanced_accuracy,
    bootstrap_confusions,
    kappa,
    patient_weights,
    run_metrics,
)

TRUE = [0, 0, 1, 2, 4]
PRED = [0, 1, 1, 2, 3]


def test_metrics_match_hand_computed_values():
    cm = confusion_matrix(TRUE, PRED)
    # accuracy: 3 of 5 on the diagonal
    assert accuracy(cm) == 3 / 5
    # balanced: recalls of the grades present: 0 -> 1/2, 1 -> 1, 2 -> 1, 4 -> 0 (3 absent)
    assert balanced_accuracy(cm) == (0.5 + 1 + 1 + 0) / 4
    # quadratic kappa: w_ij = (i-j)^2/16. Observed: (0,1) and (4,3) -> 2/16. Expected:
    # rows (2,1,1,0,1), columns (1,2,1,1,0): sum_ij w_ij r_i c_j = (30+6+7+39)/16, over n = 5
    assert np.isclose(kappa(cm), 1 - (2 / 16) / (82 / 16 / 5))
    assert np.isclose(kappa(cm), 36 / 41)
    # one grade only on both sides: no chance disagreement, kappa 0 as in retina.metrics
    assert kappa(confusion_matrix([2, 2], [2, 2])) == 0.0


def test_vectorised_over_leading_axes_equals_one_matrix_at_a_time():
    rng = np.random.default_rng(0)
    cms = rng.integers(0, 6, size=(4, 3, 5, 5))
    cms[0, 0, 3] = 0  # a grade absent from the truth
    for i in range(4):
        for j in range(3):
            assert np.isclose(kappa(cms)[i, j], retina_kappa(cms[i, j]))
            assert np.isclose(balanced_accuracy(cms)[i, j], retina_balanced(cms[i, j]))
            assert np.isclose(accuracy(cms)[i, j], np.trace(cms[i, j]) / cms[i, j].sum())


def _eyes(rng, n_patients: int, runs: int, p_right: float) -> pd.DataFrame:
    """Two eyes per patient, each right with p_right independently (so binomial)."""
    true = rng.choice(5, size=2 * n_patients, p=[0.6, 0.1, 0.15, 0.1, 0.05])
    frames = []
    for r in range(runs):
        right = rng.random(2 * n_patients) < p_right
        frames.append(
            pd.DataFrame(
                {
                    "trial_id": f"r{r}",
                    "image": np.arange(2 * n_patients).astype(str),
                    "patient": np.repeat(np.arange(n_patients), 2).astype(str),
                    "true": true,
                    "predicted": np.where(right, true, (true + 1) % 5),
                }
            )
        )
    return pd.concat(frames, ignore_index=True)


def test_a_resample_is_the_metric_of_the_patients_drawn_both_eyes_together():
    rng = np.random.default_rng(1)
    rows = _eyes(rng, 30, 2, 0.7)
    codes = RunCodes.from_predictions(rows, ["r0", "r1"])
    cms = bootstrap_confusions(codes, 5, np.random.default_rng(7))
    weights = patient_weights(codes.n_patients, 5, np.random.default_rng(7))
    assert (weights.sum(axis=1) == codes.n_patients).all()
    patients = np.array(sorted(rows["patient"].unique()))  # the codes' order (factorize sorted)
    for b in range(5):
        drawn = np.repeat(patients, weights[b].astype(int))  # patient p drawn w times: both eyes
        for r, run in enumerate(["r0", "r1"]):
            mine = rows[rows["trial_id"] == run].set_index("patient")
            explicit = mine.loc[drawn]
            cm = confusion_matrix(explicit["true"], explicit["predicted"])
            assert (cms[b, r] == cm).all()
            assert np.isclose(kappa(cms[b, r]), retina_kappa(cm))


def test_ten_thousand_resamples_of_seven_thousand_images(capsys):
    """The issue's size. The bootstrap's sd of one run's accuracy must match the binomial
    standard error (eyes independent here); the time is printed for the record."""
    rng = np.random.default_rng(2)
    rows = _eyes(rng, 3_500, 12, 0.8)
    runs = [f"r{r}" for r in range(12)]
    start = time.perf_counter()
    codes = RunCodes.from_predictions(rows, runs)
    full, boot = run_metrics(codes, 10_000, np.random.default_rng(3))
    seconds = time.perf_counter() - start
    assert boot["kappa"].shape == (10_000, 12)
    binomial = np.sqrt(full["acc"] * (1 - full["acc"]) / 7_000)
    assert np.allclose(boot["acc"].std(axis=0), binomial, rtol=0.1)
    assert np.allclose(boot["acc"].mean(axis=0), full["acc"], atol=0.002)
    with capsys.disabled():
        print(
            f"\n[bench] patient bootstrap: 10,000 resamples x 7,000 images (3,500 patients) "
            f"x 12 runs x 3 metrics in {seconds:.2f} s"
        )
