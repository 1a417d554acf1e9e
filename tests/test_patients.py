"""The patient-level view (retina.patients) on hand-made gradings whose answers are worked out
by hand: how names pair, the max-grade rule, who counts for referable and who for kappa."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from retina.metrics import confusion_matrix, quadratic_weighted_kappa
from retina.patients import eye_of, pair_eyes, patient_metrics, patient_of_id, per_patient


def test_names_pair_by_the_kaggle_convention():
    assert eye_of("10_left.jpeg") == ("10", "left")
    assert eye_of("data/train/10_RIGHT.JPG") == ("data/train/10", "right")
    assert eye_of("10_left") == ("10", "left")
    assert eye_of("scan_07.png") is None and eye_of("left.jpeg") is None
    # the manifest's rule on dataset ids: unchanged, no suffix stripped
    assert patient_of_id("sub/9_left") == "sub/9" and patient_of_id("scan_07") == "scan_07"


def test_unpaired_and_ambiguous_names_are_left_out_with_the_reason():
    names = ["1_left", "1_right", "2_left.jpeg", "scan.jpeg", "a/4_left.jpeg", "b/4_left.jpeg"]
    pairing = pair_eyes(names)
    # different folders are different patients: a/4 and b/4 each have one left eye
    assert pairing.patient.tolist() == ["1", "1", "2", None, "a/4", "b/4"]
    assert pairing.eye.tolist() == ["left", "right", "left", None, "left", "left"]
    assert pairing.n_patients == 4
    assert [name for name, _ in pairing.unpaired] == ["scan.jpeg"]
    assert "_left or _right" in pairing.unpaired[0][1]
    doubled = pair_eyes(["4_left.jpeg", "4_left.png", "4_right.jpeg"])
    assert doubled.patient.tolist() == [None, None, None]  # the whole patient: half would mislead
    reasons = dict(doubled.unpaired)
    assert "more than one left-eye image (also: 4_left.png, 4_right.jpeg)" in reasons["4_left.jpeg"]


# Six patients, worked out by hand (true grade, predicted grade per eye):
#   A both eyes (0,0) (1,2)  -> label 1, grade 2: a false referable call
#   B both eyes (3,3) (2,1)  -> label 3, grade 3: referable, caught (by the other eye)
#   C both eyes (0,0) (0,0)  -> label 0, grade 0
#   D left only (2,0)        -> label 2, grade 0: referable, missed; one eye: not in the kappa
#   E both, right failed (4,4) (0,-1) -> one graded eye: label 4 (the failed eye gives none)
#   F both eyes (1,1) (1,1)  -> label 1, grade 1
NAMES = ["A_left", "A_right", "B_left", "B_right", "C_left", "C_right", "D_left",
         "E_left", "E_right", "F_left", "F_right"]  # fmt: skip
TRUE = [0, 1, 3, 2, 0, 0, 2, 4, 0, 1, 1]
PRED = [0, 2, 3, 1, 0, 0, 0, 4, -1, 1, 1]


def test_a_patient_is_the_max_of_its_graded_eyes():
    table = per_patient(pair_eyes(NAMES).patient, PRED, TRUE)
    assert table.index.tolist() == list("ABCDEF")
    assert table["eyes"].tolist() == [2, 2, 2, 1, 1, 2]
    assert table["grade"].tolist() == [2, 3, 0, 0, 4, 1]
    assert table["label"].tolist() == [1, 3, 0, 2, 4, 1]
    assert table["referable"].tolist() == [True, True, False, False, True, False]


def test_referable_counts_every_patient_and_kappa_only_the_both_eyed():
    view = patient_metrics(per_patient(pair_eyes(NAMES).patient, PRED, TRUE))
    assert (view.n_patients, view.n_both, view.n_one) == (6, 4, 2)
    assert view.n_referable == 3  # B, D, E
    assert view.sensitivity == pytest.approx(2 / 3)  # B and E caught, D missed
    assert view.specificity == pytest.approx(2 / 3)  # C and F right, A called referable
    # A, B, C, F: (label, grade) = (1, 2), (3, 3), (0, 0), (1, 1)
    expected = quadratic_weighted_kappa(confusion_matrix([1, 3, 0, 1], [2, 3, 0, 1]))
    assert view.kappa == pytest.approx(expected)
    line = view.sentence()
    assert "6 patients (4 both eyes, 2 one eye)" in line
    assert "the 2 with one eye only count for referable, not for the kappa" in line


def test_referable_follows_the_eyes_flags_when_given():
    """predict's `referable` is at the model's threshold: a patient is flagged when an eye is."""
    flags = [False, True, False, False, False, False, True, None, None, False, False]
    table = per_patient(pair_eyes(NAMES).patient, PRED, TRUE, flagged=flags)
    assert table["referable"].tolist() == [True, False, False, True, pd.NA, False]


def test_no_pair_no_kappa_and_a_failed_patient_has_no_grade():
    table = per_patient(np.array(["P", "Q"], dtype=object), [2, -1], [3, 0])
    assert table["eyes"].tolist() == [1, 0] and table["grade"].isna().tolist() == [False, True]
    view = patient_metrics(table)
    assert (view.n_patients, view.n_both, view.n_one) == (1, 0, 1)
    assert np.isnan(view.kappa) and np.isnan(view.specificity) and view.sensitivity == 1.0
    assert "no patient has both eyes graded, so no patient-level kappa" in view.sentence()


def test_unlabelled_images_give_grades_but_no_metrics():
    table = per_patient(pair_eyes(NAMES).patient, PRED)
    assert table["label"].isna().all() and table["grade"].tolist() == [2, 3, 0, 0, 4, 1]
    assert patient_metrics(table).n_patients == 0
