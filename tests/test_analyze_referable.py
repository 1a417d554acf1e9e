"""Referable DR and calibration against hand-computed values on hand-made predictions: AUROC
(ties, weights), the operating point (chosen on val only), sensitivity / specificity per image
and per patient, ECE with equal-mass bins, and temperature scaling."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from study.analyze.calibration import (
    apply_temperature,
    ece,
    fit_temperature,
    negative_log_likelihood,
    reliability_bins,
)
from study.analyze.clinical import run_clinical
from study.analyze.referable import (
    OperatingPoint,
    auroc,
    auroc_mann_whitney,
    choose_threshold,
    referable_analysis,
    referable_score,
    sensitivity_specificity,
)

# val: ten images, referable at the scores 0.3, 0.6, 0.8, 0.9, 0.95
VAL_SCORE = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95])
VAL_POS = np.array([0, 0, 1, 0, 0, 1, 0, 1, 1, 1], dtype=bool)


def test_auroc_by_hand_with_ties_and_weights():
    assert auroc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]) == pytest.approx(0.75)
    # pairs (pos, neg): (.5,.5) tie 1/2, (.5,.2) 1, (.9,.5) 1, (.9,.2) 1 -> 3.5 / 4
    assert auroc([0.5, 0.5, 0.2, 0.9], [1, 0, 0, 1]) == pytest.approx(0.875)
    # weight 2 on the 0.4 negative = that image twice: wins 1 + 1 + 2 of 2 x 3 pairs
    weighted = auroc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1], np.array([[1, 2, 1, 1], [1, 1, 1, 1]]))
    assert weighted == pytest.approx([4 / 6, 0.75])
    rng = np.random.default_rng(0)
    score, pos = rng.integers(0, 6, 200) / 5, rng.random(200) < 0.3
    assert auroc(score, pos) == pytest.approx(auroc_mann_whitney(score, pos))
    assert np.isnan(auroc([0.2, 0.3], [0, 0]))


def test_operating_points_by_hand():
    def point(target, value):
        return choose_threshold(VAL_SCORE, VAL_POS, OperatingPoint(target, value))

    assert point("sensitivity", 0.9) == 0.3  # all five referable flagged: t at the lowest one
    assert sensitivity_specificity(VAL_SCORE, VAL_POS, 0.3) == (1.0, 0.4)
    assert point("sensitivity", 0.8) == 0.6  # four of five is enough: the most specific t
    assert sensitivity_specificity(VAL_SCORE, VAL_POS, 0.6) == (0.8, 0.8)
    assert point("specificity", 0.8) == 0.6  # 4 of 5 negatives below t: the most sensitive t
    assert point("specificity", 1.0) == 0.8
    assert point("sensitivity", 1.0) == 0.3
    assert np.isnan(choose_threshold(VAL_SCORE, np.zeros(10, bool), OperatingPoint()))


def _frame(split, patients, true, score):
    high = np.asarray(score, float)
    return pd.DataFrame({
        "trial_id": "t", "split": split, "image": [f"{p}_{i}" for i, p in enumerate(patients)],
        "patient": patients, "true": true, "predicted": 0,
        "p0": 1 - high, "p1": 0.0, "p2": high, "p3": 0.0, "p4": 0.0,
    })  # fmt: skip


# test: patients a (grade 0 at .2, grade 2 at .1), b (0 at .7, 0 at .1), c (3 at .9, 1 at .3),
# d (0 at .1, 0 at .2). At t = 0.3: a is a missed referable patient, b a false alarm, c found.
TEST = _frame("test", list("aabbccdd"), [0, 2, 0, 0, 3, 1, 0, 0],
              [0.2, 0.1, 0.7, 0.1, 0.9, 0.3, 0.1, 0.2])  # fmt: skip
VAL = _frame("val", [f"v{i // 2}" for i in range(10)], np.where(VAL_POS, 2, 0), VAL_SCORE)


def test_sensitivity_and_specificity_per_image_and_per_patient():
    rng = np.random.default_rng(0)
    point = OperatingPoint("sensitivity", 0.9)
    out = referable_analysis(
        VAL, TEST, referable_score(VAL), referable_score(TEST), point, 300, rng
    )
    assert out["threshold"] == pytest.approx(0.3)
    # images: referable a_1 (.1, missed) and c_4 (.9, found); 6 others, flagged b_2 (.7), c_5 (.3)
    img = out["test_image"]
    assert (img["n"], img["referable"]) == (8, 2)
    assert (img["sensitivity"], img["specificity"]) == pytest.approx((0.5, 4 / 6))
    pat = out["test_patient"]  # a missed, c found; b flagged (.7), d not
    assert (pat["n"], pat["referable"], pat["sensitivity"], pat["specificity"]) == (4, 2, 0.5, 0.5)
    # AUROC: positives .1, .9 against .2 .7 .1 .3 .1 .2: .9 beats all 6; .1 ties two -> 7 / 12
    assert out["auroc"] == pytest.approx(7 / 12)
    lo, hi = out["auroc_ci"]
    assert 0 <= lo <= out["auroc"] <= hi <= 1
    assert out["val"] == {"n": 10, "referable": 5, "sensitivity": 1.0, "specificity": 0.4}


def test_a_regress_heads_score_is_the_referable_score():
    frame = TEST.assign(p0=np.nan, p1=np.nan, p2=np.nan, p3=np.nan, p4=np.nan,
                        score=[0.2, 2.1, 0.7, 0.0, 3.3, 1.0, 0.1, 0.2])  # fmt: skip
    assert list(referable_score(frame)) == [0.2, 2.1, 0.7, 0.0, 3.3, 1.0, 0.1, 0.2]
    assert list(referable_score(TEST.assign(score=9.0))) == pytest.approx(TEST["p2"])


def _probs(rng, n, temperature):
    """Probabilities of an over-confident model: the truth is drawn from softmax(z / T), the
    stored probabilities are softmax(z)."""
    z = rng.normal(0, 2.5, size=(n, 5))
    p_true = np.exp(z / temperature) / np.exp(z / temperature).sum(axis=1, keepdims=True)
    true = np.array([rng.choice(5, p=row) for row in p_true])
    return np.exp(z) / np.exp(z).sum(axis=1, keepdims=True), true


def test_changing_test_predictions_never_moves_the_operating_point_or_temperature():
    rng = np.random.default_rng(1)
    val_p, val_true = _probs(rng, 300, 2.0)
    val = pd.DataFrame(val_p, columns=[f"p{g}" for g in range(5)]).assign(
        split="val", patient=[f"v{i // 2}" for i in range(300)], true=val_true
    )
    seen = set()
    for trial in range(4):
        test_p, test_true = _probs(np.random.default_rng(10 + trial), 120, 0.5 + trial)
        test = pd.DataFrame(test_p, columns=[f"p{g}" for g in range(5)]).assign(
            split="test", patient=[f"t{i // 2}" for i in range(120)], true=test_true
        )
        ref, cal = run_clinical(val, test, OperatingPoint(), 50, np.random.default_rng(trial))
        seen.add((ref["threshold"], cal["temperature"], ref["val"]["sensitivity"]))
    assert len(seen) == 1
    ((_, temperature, val_sens),) = seen
    assert val_sens >= 0.9


def test_ece_with_equal_mass_bins_by_hand():
    # top-label confidences .9 .6 .8 .7, right, wrong, right, right; two bins of two
    probs = np.zeros((4, 5))
    for row, (top, other, p) in enumerate([(1, 0, 0.9), (2, 3, 0.6), (0, 4, 0.8), (4, 0, 0.7)]):
        probs[row, top], probs[row, other] = p, 1 - p
    true = np.array([1, 3, 0, 4])
    bins = reliability_bins(probs, true, n_bins=2)
    assert [b["n"] for b in bins] == [2, 2]
    assert [b["confidence"] for b in bins] == pytest.approx([0.65, 0.85])
    assert [b["accuracy"] for b in bins] == [0.5, 1.0]
    assert ece(probs, true, n_bins=2) == pytest.approx(0.5 * 0.15 + 0.5 * 0.15)
    # one image per bin: |0 - .6|, |1 - .7|, |1 - .8|, |1 - .9|
    assert ece(probs, true, n_bins=4) == pytest.approx((0.6 + 0.3 + 0.2 + 0.1) / 4)


def test_temperature_scaling_finds_a_known_temperature_and_lowers_ece():
    val_p, val_true = _probs(np.random.default_rng(2), 3000, 2.0)
    t = fit_temperature(val_p, val_true)
    assert t == pytest.approx(2.0, rel=0.1)
    nll = negative_log_likelihood(val_p, val_true, t)
    assert nll <= min(negative_log_likelihood(val_p, val_true, t * f) for f in (0.95, 1.05))
    assert np.allclose(apply_temperature(val_p, 1.0), val_p)
    test_p, test_true = _probs(np.random.default_rng(3), 3000, 2.0)
    assert ece(apply_temperature(test_p, t), test_true) < ece(test_p, test_true) / 2


def test_a_regress_head_gets_a_threshold_on_its_score_and_a_platt_calibration():
    nan = dict.fromkeys([f"p{g}" for g in range(5)], np.nan)
    val = VAL.assign(**nan, score=VAL_SCORE * 4)  # a grade estimate: monotone in the p's above
    test = TEST.assign(**nan, score=TEST["p2"] * 4)
    ref, cal = run_clinical(val, test, OperatingPoint(), 20, np.random.default_rng(0))
    assert cal["head"] == "regress" and "temperature" not in cal  # no top-label calibration
    assert cal["platt"]["slope"] > 0 and np.isfinite(cal["platt"]["intercept"])
    referable = cal["referable"]
    assert 0 <= referable["test_ece_scaled"] <= 1
    assert sum(b["n"] for b in referable["bins_scaled"]) == len(test)
    lo, hi = referable["test_ece_ci"]
    assert lo <= hi
    assert ref["threshold"] == pytest.approx(1.2)  # 0.3 x 4: the same images flagged
    assert ref["auroc"] == pytest.approx(7 / 12)
    assert ref["test_patient"]["sensitivity"] == 0.5
