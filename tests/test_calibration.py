"""Calibrated P(referable), the one home of each rule (retina.calibration) and its test ECE
(study.analyze.calibration): Platt scaling recovers a known logistic, stays finite on
separable scores; temperature scaling keeps failed rows NaN; the resampled ECE with unit
weights is the ECE of the bins; the patient bootstrap brackets the estimate."""

from __future__ import annotations

import numpy as np
import pytest

from retina.calibration import (
    fit_platt,
    platt_probability,
    referable_probability,
    temperature_scaled,
)
from study.analyze.calibration import (
    bins_ece,
    outcome_bins,
    referable_calibration,
    resampled_ece,
)


def test_platt_recovers_a_known_logistic():
    rng = np.random.default_rng(0)
    score = rng.uniform(0, 4, 20_000)
    positive = rng.random(score.size) < platt_probability(score, 2.0, -3.0)
    slope, intercept = fit_platt(score, positive)
    assert slope == pytest.approx(2.0, rel=0.08) and intercept == pytest.approx(-3.0, rel=0.08)


def test_platt_is_finite_on_separable_scores_and_nan_without_both_classes():
    score = np.array([0.0, 0.5, 1.0, 2.0, 3.0, 4.0])
    slope, intercept = fit_platt(score, score >= 2)
    assert np.isfinite(slope) and slope > 0
    p = platt_probability(score, slope, intercept)
    assert (p[:3] < 0.5).all() and (p[3:] > 0.5).all()
    assert np.isnan(fit_platt(score, np.zeros(6, bool))).all()


def test_temperature_scaling_and_referable_probability():
    probs = np.array([[0.5, 0.2, 0.1, 0.1, 0.1], [np.nan] * 5])
    scaled = temperature_scaled(probs, 2.0)
    assert np.isnan(scaled[1]).all() and scaled[0].sum() == pytest.approx(1.0)
    assert scaled[0, 0] < 0.5  # T > 1 softens the top grade
    assert referable_probability(probs[:1]) == pytest.approx([0.3])
    batched = np.stack([probs[:1], probs[:1]])  # [2, 1, 5]: any leading axes
    assert temperature_scaled(batched, 2.0)[1] == pytest.approx(scaled[:1])


def test_resampled_ece_with_unit_weights_is_the_bins_ece():
    rng = np.random.default_rng(1)
    p = rng.random(53)
    y = rng.random(53) < p**2
    assert resampled_ece(p, y, np.ones((3, 53)))[0] == pytest.approx(bins_ece(outcome_bins(p, y)))


def test_patient_bootstrap_interval_brackets_the_ece():
    rng = np.random.default_rng(2)
    n = 400
    true = rng.integers(0, 5, n)
    before = np.clip((true >= 2) * 0.9 + rng.normal(0, 0.3, n), 0.001, 0.999)  # over-confident
    after = np.clip(0.5 + (before - 0.5) * 0.6, 0, 1)
    patient = np.arange(n) // 2  # two eyes each
    block = referable_calibration(before, after, true, patient, 300, rng)
    for key in ("test_ece", "test_ece_scaled"):
        lo, hi = block[f"{key}_ci"]
        assert lo <= block[key] <= hi
    assert sum(b["n"] for b in block["bins"]) == n


def test_the_reliability_diagram_of_p_referable_is_a_pure_figure_of_a_frame():
    from study.analyze.figure_reliability import (
        REFERABLE_AXES,
        reliability_figure,
        reliability_frame,
    )

    rng = np.random.default_rng(3)
    true = rng.integers(0, 5, 200)
    p = np.clip((true >= 2) * 0.7 + rng.random(200) * 0.3, 0, 1)
    block = referable_calibration(p, p * 0.9, true, np.arange(200), 0, rng)
    assert block["test_ece_ci"] == [None, None]  # no resamples: no interval
    runs = [
        {"trial_id": "t01", "head": "regress", "referable": block},
        {"trial_id": "t02", "head": "classify"},
    ]  # fmt: skip  (no bins: left out)
    frame = reliability_frame(runs, "referable")
    assert len(frame) == 20 and set(frame["stage"]) == {"as trained", "calibrated on val"}
    assert frame.groupby("stage")["n"].sum().tolist() == [200, 200]
    fig = reliability_figure(frame, REFERABLE_AXES, 10, "best trial")
    assert fig.layout.title.text.startswith("Reliability of P(referable) on test, best trial")
    assert [t.name for t in fig.data][1:] == ["t01 (regress): as trained",
                                              "t01 (regress): calibrated on val"]  # fmt: skip
    assert reliability_frame(runs).empty  # no top-label bins on either run
