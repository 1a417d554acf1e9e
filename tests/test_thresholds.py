"""Grades from a regression head's scores: fixed cuts and cuts fitted to maximise kappa.

Run: .venv/bin/pytest tests/test_thresholds.py
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from retina.heads import grades_of
from retina.metrics import confusion_matrix, kappas, quadratic_weighted_kappa
from retina.thresholds import DEFAULT_THRESHOLDS, fit_thresholds, grades_from_scores


def kappa(scores, labels, thresholds) -> float:
    return quadratic_weighted_kappa(
        confusion_matrix(labels, grades_from_scores(scores, thresholds))
    )


def test_a_score_reaches_a_grade_at_its_cut():
    scores = np.array([-3.0, 0.49, 0.5, 1.5, 2.49, 3.5, 9.0])
    assert grades_from_scores(scores, DEFAULT_THRESHOLDS).tolist() == [0, 0, 1, 2, 2, 4, 4]
    # The engine's torch grades (evaluation, retina.predict) cut exactly as numpy does.
    got = grades_of(torch.tensor(scores, dtype=torch.float32)[:, None], DEFAULT_THRESHOLDS)
    assert got.tolist() == [0, 0, 1, 2, 2, 4, 4]
    with pytest.raises(ValueError, match="increasing"):
        grades_from_scores(scores, (0.5, 2.5, 1.5, 3.5))


def test_fitted_cuts_land_in_the_gaps_a_shifted_model_leaves():
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(5), [50, 20, 20, 10, 10])
    # Every grade's scores sit 0.6-1.0 above it: the fixed cuts put many images one grade too
    # high; the best cut between g and g + 1 is anywhere in the gap (g + 1.0, g + 1.6).
    scores = labels + rng.uniform(0.6, 1.0, len(labels))
    assert kappa(scores, labels, DEFAULT_THRESHOLDS) < 0.9
    fitted = fit_thresholds(scores, labels)
    assert kappa(scores, labels, fitted) == pytest.approx(1.0)
    for g, cut in enumerate(fitted):
        assert scores[labels == g].max() < cut <= scores[labels == g + 1].min()


def test_the_fit_matches_a_brute_force_search_and_keeps_a_start_that_is_already_best():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 5, 60)
    scores = labels + rng.normal(0, 0.9, 60)
    grid = np.round(np.arange(-0.5, 4.6, 0.25), 2)
    best = max(
        kappa(scores, labels, t) for t in itertools.combinations(grid, 4)
    )  # a coarse grid: the fit, free to cut anywhere, does at least as well
    assert kappa(scores, labels, fit_thresholds(scores, labels)) >= best - 1e-9
    perfect = labels.astype(float)  # grade g scored exactly g: 0.5/1.5/2.5/3.5 are perfect
    assert fit_thresholds(perfect, labels) == DEFAULT_THRESHOLDS
    assert fit_thresholds(np.array([]), np.array([], dtype=int)) == DEFAULT_THRESHOLDS


def test_batched_kappas_equal_the_metric():
    rng = np.random.default_rng(2)
    conf = rng.integers(0, 9, (6, 5, 5))
    conf[0] = 0
    conf[1] = 0
    conf[1, :, 2] = 7  # one predicted grade: 0/0, called 0
    assert kappas(conf) == pytest.approx([quadratic_weighted_kappa(c) for c in conf])
