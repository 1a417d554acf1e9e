"""summary.json's `patients` key (study.analyze.patient_view), the report's "Both eyes" part and
the card's, on a hand-made test split whose answers are worked out by hand."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from retina.metrics import confusion_matrix, quadratic_weighted_kappa
from study.analyze.patient_view import patient_view
from study.analyze.section_patients import patients_section
from study.analyze.summary import jsonable
from study.conclude.card_screening import patient_lines

# (image, true, predicted); per patient (label, grade) = max over the eyes:
#   A (1, 2) both eyes   B (3, 3) both   C (0, 0) both   F (1, 1) both
#   D (2, 0) left only: referable, missed; counted for referable, not in the kappa
#   E (4, 4) left only
#   scan7: no eye in its name -> left out of the patient view (and of its per-image row)
ROWS = [
    ("A_left", 0, 0), ("A_right", 1, 2), ("B_left", 3, 3), ("B_right", 2, 1),
    ("C_left", 0, 0), ("C_right", 0, 0), ("D_left", 2, 0), ("E_left", 4, 4),
    ("F_left", 1, 1), ("F_right", 1, 1), ("scan7", 2, 2),
]  # fmt: skip


def hand_made_test() -> pd.DataFrame:
    image, true, pred = zip(*ROWS, strict=True)
    return pd.DataFrame({"image": image, "true": np.array(true, np.int8),
                         "predicted": np.array(pred, np.int8)})  # fmt: skip


def test_the_patient_view_of_a_hand_made_test_split():
    view = patient_view(hand_made_test(), 0, np.random.default_rng(0))
    assert (view["images"], view["left_out_images"]) == (11, 1)
    assert (view["patients"], view["both_eyes"], view["one_eye"]) == (6, 4, 2)
    pat, img = view["per_patient"], view["per_image"]
    assert (pat["n"], pat["referable"]) == (6, 3)  # B, D, E
    assert pat["sensitivity"] == pytest.approx(2 / 3)  # D missed
    assert pat["specificity"] == pytest.approx(2 / 3)  # A called referable
    both = quadratic_weighted_kappa(confusion_matrix([1, 3, 0, 1], [2, 3, 0, 1]))  # A B C F
    assert pat["kappa_both_eyes"] == pytest.approx(both)
    # per image, on the same 10 images: referable B_l, B_r, D_l, E_l -> B_l and E_l caught
    assert (img["n"], img["referable"]) == (10, 4)
    assert img["sensitivity"] == pytest.approx(0.5) and img["specificity"] == pytest.approx(5 / 6)
    true, pred = zip(*[(t, p) for _, t, p in ROWS[:-1]], strict=True)
    assert img["kappa"] == pytest.approx(quadratic_weighted_kappa(confusion_matrix(true, pred)))
    assert pat["sensitivity_ci"] == [None, None] and img["kappa_ci"] == [None, None]


def test_intervals_resample_patients_and_hold_the_point_value():
    rng = np.random.default_rng(0)
    n = 60  # patients with two eyes each and a model that is mostly right
    true = rng.choice(5, size=2 * n, p=[0.6, 0.1, 0.2, 0.05, 0.05])
    pred = np.where(rng.random(2 * n) < 0.8, true, np.clip(true + rng.choice([-1, 1], 2 * n), 0, 4))
    names = [f"{p}_{side}" for p in range(n) for side in ("left", "right")]
    frame = pd.DataFrame({"image": names, "true": true, "predicted": pred})
    view = patient_view(frame, 2000, np.random.default_rng(1))
    for level, key in (("per_patient", "kappa_both_eyes"), ("per_image", "kappa")):
        for metric in ("sensitivity", "specificity", key):
            lo, hi = view[level][f"{metric}_ci"]
            assert lo < view[level][metric] < hi, (level, metric)
    # the same seed gives the same intervals (the summary is reproducible)
    again = patient_view(frame, 2000, np.random.default_rng(1))
    assert jsonable(again) == jsonable(view)


def test_no_pairs_no_patient_rows_and_the_report_and_card_say_it():
    frame = pd.DataFrame({"image": ["scan1", "scan2"], "true": [0, 2], "predicted": [0, 2]})
    view = patient_view(frame, 100, np.random.default_rng(0))
    assert view["patients"] == 0 and view["left_out_images"] == 2
    patients = {"note": "t01: no test image name pairs eyes (<patient>_left/_right)",
                "best": None, "confirm": [], "bootstrap": {}}  # fmt: skip
    assert "no test image name pairs eyes" in patients_section({"patients": patients})
    lines = "\n".join(patient_lines({"patients": patients}, "t01"))
    assert "No patient-level view: t01: no test image name pairs eyes" in lines
    assert "no patient-level view" in patients_section({})


def test_the_report_and_the_card_state_both_levels_and_who_is_counted():
    view = patient_view(hand_made_test(), 500, np.random.default_rng(0))
    patients = {
        "best": {"trial_id": "t01", **jsonable(view)}, "confirm": [],
        "bootstrap": {"resamples": 500, "seed": 0, "confidence": 0.95},
        "note": "2 of 6 test patients have one eye only: counted for referable, not in the "
        "both-eyes kappa",
    }  # fmt: skip
    html = patients_section({"patients": patients})
    assert "6 test patients, 4 with both eyes, 2 with one eye only" in html
    assert "test, per patient" in html and "test, per image" in html and "66.7%" in html
    card = "\n".join(patient_lines({"patients": patients}, "t01"))
    assert "Test patients: **6** (4 with both eyes, 2 with one eye only" in card
    assert "sensitivity 66.7% [" in card and "(3 referable of 6)" in card
    assert "the 4 with both eyes): 0." in card and "Note: 2 of 6 test patients" in card
    # another trial exported: its card does not borrow the best trial's patients
    assert "No patient-level view" in "\n".join(patient_lines({"patients": patients}, "t07"))
