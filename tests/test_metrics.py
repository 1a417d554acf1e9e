"""Metrics against values worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from retina.metrics import (
    EpochMetrics,
    balanced_accuracy,
    confusion_matrix,
    per_class_recall,
    quadratic_weighted_kappa,
    referable_sensitivity_specificity,
)

# The worked example: five eyes.
#   true: 0 0 1 2 4
#   pred: 0 2 1 1 2
# confusion (rows true, cols predicted): (0,0) (0,2) (1,1) (2,1) (4,2), one each.
# Quadratic kappa, K = 5, w_ij = (i-j)^2 / 16:
#   observed  sum n_ij (i-j)^2 = 0 + 4 + 0 + 1 + 4 = 9
#   marginals true r = [2,1,1,0,1], predicted c = [1,2,2,0,0]
#   expected  sum r_i c_j (i-j)^2, row by row:
#     i=0 (r=2): c1*1 + c2*4 = 2 + 8 = 10, times 2 = 20
#     i=1 (r=1): c0*1 + c2*1 = 1 + 2 = 3
#     i=2 (r=1): c0*4 + c1*1 = 4 + 2 = 6
#     i=4 (r=1): c0*16 + c1*9 + c2*4 = 16 + 18 + 8 = 42          total 71
#   kappa = 1 - n * 9 / 71 = 1 - 45/71 = 26/71
# Recall per grade: 0: 1/2, 1: 1/1, 2: 0/1, 3: absent (NaN), 4: 0/1 -> balanced (0.5+1+0+0)/4
# Referable (grade >= 2): true 2 -> pred 1 (missed), true 4 -> pred 2 (caught): sensitivity 1/2;
# non-referable: true 0 -> 0 (ok), 0 -> 2 (false alarm), 1 -> 1 (ok): specificity 2/3.
Y_TRUE = [0, 0, 1, 2, 4]
Y_PRED = [0, 2, 1, 1, 2]


def test_confusion_matrix_of_the_worked_example():
    expected = np.zeros((5, 5), dtype=np.int64)
    for t, p in [(0, 0), (0, 2), (1, 1), (2, 1), (4, 2)]:
        expected[t, p] += 1
    conf = confusion_matrix(Y_TRUE, Y_PRED)
    assert conf.dtype == np.int64
    np.testing.assert_array_equal(conf, expected)


def test_confusion_matrix_counts_repeats_and_rejects_bad_values():
    conf = confusion_matrix([3, 3, 3], [4, 4, 3])
    assert conf[3, 4] == 2 and conf[3, 3] == 1 and conf.sum() == 3
    with pytest.raises(ValueError):
        confusion_matrix([0, 5], [0, 0])
    with pytest.raises(ValueError):
        confusion_matrix([0, 1], [0])


def test_kappa_of_the_worked_example():
    assert quadratic_weighted_kappa(confusion_matrix(Y_TRUE, Y_PRED)) == pytest.approx(26 / 71)


def test_recall_balanced_accuracy_and_referable_of_the_worked_example():
    conf = confusion_matrix(Y_TRUE, Y_PRED)
    recall = per_class_recall(conf)
    assert recall[:3] == [0.5, 1.0, 0.0] and recall[4] == 0.0
    assert math.isnan(recall[3])
    assert balanced_accuracy(conf) == pytest.approx(0.375)
    sens, spec = referable_sensitivity_specificity(conf)
    assert sens == pytest.approx(1 / 2)
    assert spec == pytest.approx(2 / 3)


def test_perfect_predictions():
    y = [0, 1, 2, 3, 4, 0, 0, 2]
    conf = confusion_matrix(y, y)
    assert quadratic_weighted_kappa(conf) == pytest.approx(1.0)
    assert balanced_accuracy(conf) == pytest.approx(1.0)
    assert referable_sensitivity_specificity(conf) == (1.0, 1.0)


def test_predicting_grade_0_everywhere_is_chance_level():
    # Observed and expected disagreement are both sum_i p_i * w_i0 when every prediction is 0.
    y_true = [0, 0, 0, 0, 1, 2, 3, 4]
    conf = confusion_matrix(y_true, [0] * len(y_true))
    assert quadratic_weighted_kappa(conf) == pytest.approx(0.0, abs=1e-12)
    assert balanced_accuracy(conf) == pytest.approx(1 / 5)  # recall 1 for grade 0, 0 for 1-4
    sens, spec = referable_sensitivity_specificity(conf)
    assert (sens, spec) == (0.0, 1.0)


def test_kappa_is_zero_not_nan_when_expected_disagreement_is_zero():
    # One grade in y_true and the same in y_pred: 0/0; defined as 0.0.
    conf = confusion_matrix([2, 2, 2], [2, 2, 2])
    assert quadratic_weighted_kappa(conf) == 0.0
    assert quadratic_weighted_kappa(np.zeros((5, 5), dtype=np.int64)) == 0.0


def test_kappa_penalises_far_misses_more_than_near_ones():
    y_true = [0, 1, 2, 3, 4] * 2
    near = [min(t + 1, 4) for t in y_true]
    far = [4 - t for t in y_true]
    k_near = quadratic_weighted_kappa(confusion_matrix(y_true, near))
    k_far = quadratic_weighted_kappa(confusion_matrix(y_true, far))
    assert k_near > 0.5 > 0 > k_far
    assert k_far == pytest.approx(-1.0)  # perfectly reversed grading


def test_referable_metrics_are_nan_without_eyes_of_that_kind():
    sens, spec = referable_sensitivity_specificity(confusion_matrix([0, 1], [0, 3]))
    assert math.isnan(sens) and spec == 0.5


def test_epoch_metrics_from_confusion_and_as_dict():
    conf = confusion_matrix(Y_TRUE, Y_PRED)
    m = EpochMetrics.from_confusion(conf, loss_sum=5.0, seconds=2.0)
    assert m.n_images == 5
    assert m.loss == pytest.approx(1.0)
    assert m.accuracy == pytest.approx(2 / 5)
    assert m.images_per_s == pytest.approx(2.5)
    assert m.kappa == pytest.approx(26 / 71)
    d = m.as_dict("val")
    assert list(d) == [
        "val_loss",
        "val_acc",
        "val_kappa",
        "val_balanced_acc",
        "val_referable_sensitivity",
        "val_referable_specificity",
        "val_recall_0",
        "val_recall_1",
        "val_recall_2",
        "val_recall_3",
        "val_recall_4",
        "val_images_per_s",
    ]
    assert all(type(v) is float for v in d.values())  # plain floats: Parquet/tune.report friendly
    assert d["val_balanced_acc"] == pytest.approx(0.375)
    assert math.isnan(d["val_recall_3"])


def _sklearn_style_kappa(y_true: np.ndarray, y_pred: np.ndarray, k: int = 5) -> float:
    """sklearn.metrics.cohen_kappa_score(weights="quadratic")'s definition written out per
    image pair (sklearn is not a dependency): 1 - sum(w * O) / sum(w * E), with the expected
    matrix the outer product of the marginals scaled to the observed total."""
    observed = np.zeros((k, k))
    for t, p in zip(y_true, y_pred, strict=True):
        observed[t, p] += 1
    expected = np.outer(observed.sum(axis=1), observed.sum(axis=0)) / observed.sum()
    weights = np.array([[(i - j) ** 2 for j in range(k)] for i in range(k)], dtype=float)
    return 1 - (weights * observed).sum() / (weights * expected).sum()


def test_batched_kappas_equal_the_definition_on_random_matrices():
    from retina.metrics import kappas

    rng = np.random.default_rng(7)
    pairs = [(rng.integers(0, 5, n), rng.integers(0, 5, n)) for n in rng.integers(2, 60, 40)]
    confs = np.stack([confusion_matrix(t, p) for t, p in pairs]).reshape(8, 5, 5, 5)
    batched = kappas(confs)
    assert batched.shape == (8, 5)
    expected = [_sklearn_style_kappa(t, p) for t, p in pairs]
    np.testing.assert_allclose(batched.ravel(), expected, rtol=1e-12)
    # known values: the worked example, perfect agreement, and complete reversal of 0 and 4
    known = np.stack([confusion_matrix(Y_TRUE, Y_PRED), confusion_matrix([0, 4], [0, 4]),
                      confusion_matrix([0, 4], [4, 0])])  # fmt: skip
    np.testing.assert_allclose(kappas(known), [26 / 71, 1.0, -1.0])
    assert quadratic_weighted_kappa(known[0]) == pytest.approx(26 / 71)
