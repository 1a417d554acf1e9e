"""Grades from a regression head's scores: four cut points, fixed or fitted to maximise kappa.

    grades_from_scores(scores, DEFAULT_THRESHOLDS)       # score 1.7 -> grade 2 (>= 1.5, < 2.5)
    fit_thresholds(val_scores, val_labels)               # cuts that maximise quadratic kappa

A regress head outputs one number per image, trained towards the grade (SmoothL1). Grade g is
given when t[g-1] <= score < t[g] (t[-1] = -inf, t[4] = +inf), as `np.digitize` and
`torch.bucketize(..., right=True)` count. The Kaggle 2015 and APTOS 2019 winners tuned the
cuts on validation data from 0.5/1.5/2.5/3.5; `fit_thresholds` does that by coordinate
search: each cut in turn is moved to the value, between its neighbours, that maximises the
quadratic weighted kappa with the others held (every distinct split of the scores is tried
at once, vectorised), until no move improves it. Pure numpy: no torch here.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from retina.metrics import NUM_CLASSES, confusion_matrix, kappas

DEFAULT_THRESHOLDS = (0.5, 1.5, 2.5, 3.5)
MAX_PASSES = 20  # over the four cuts; each accepted move raises kappa, so it ends sooner


def check_thresholds(thresholds: Sequence[float]) -> tuple[float, ...]:
    """`thresholds` as NUM_CLASSES - 1 finite, non-decreasing floats; ValueError otherwise."""
    t = tuple(float(v) for v in thresholds)
    if len(t) != NUM_CLASSES - 1 or not np.all(np.isfinite(t)) or np.any(np.diff(t) < 0):
        raise ValueError(f"thresholds must be {NUM_CLASSES - 1} increasing numbers, got {t}")
    return t


def grades_from_scores(scores: np.ndarray, thresholds: Sequence[float]) -> np.ndarray:
    """int64 grades 0..4: how many thresholds each score reaches."""
    return np.digitize(np.asarray(scores, dtype=np.float64), check_thresholds(thresholds))


def _best_cut(
    scores: np.ndarray, labels: np.ndarray, t: list[float], i: int
) -> tuple[float, float]:
    """(the value of cut `i` that maximises kappa with the other cuts held, that kappa)."""
    lo = t[i - 1] if i > 0 else -np.inf
    hi = t[i + 1] if i < len(t) - 1 else np.inf
    inside = (scores >= lo) & (scores < hi)  # these become grade i or i + 1, by the cut
    fixed = confusion_matrix(labels[~inside], grades_from_scores(scores[~inside], t))
    order = np.argsort(scores[inside], kind="stable")
    s, y = scores[inside][order], labels[inside][order]
    # Candidate k puts the k lowest scores in grade i and the rest in grade i + 1: the
    # per-label counts of each side are cumulative sums over the sorted scores.
    onehot = np.eye(NUM_CLASSES, dtype=np.int64)[y]
    below = np.vstack([np.zeros(NUM_CLASSES, np.int64), np.cumsum(onehot, axis=0)])  # [m+1, K]
    above = below[-1] - below
    conf = np.repeat(fixed[None], len(below), axis=0)
    conf[:, :, i] += below
    conf[:, :, i + 1] += above
    # The cut between sorted scores k-1 and k sits at their midpoint; at the ends, halfway
    # to the neighbouring cut (or 0.5 beyond the last score when there is none).
    edges = np.concatenate([[lo if np.isfinite(lo) else (s[0] - 1.0 if len(s) else t[i])], s,
                            [hi if np.isfinite(hi) else (s[-1] + 1.0 if len(s) else t[i])]])  # fmt: skip
    cuts = (edges[:-1] + edges[1:]) / 2
    valid = np.ones(len(cuts), dtype=bool)
    valid[1:-1] = s[1:] > s[:-1]  # no cut between two equal scores
    values = np.where(valid, kappas(conf), -np.inf)
    best = values.max()
    # Among equally good cuts, the one nearest the current: a cut never wanders for nothing.
    choice = np.flatnonzero(values == best)
    k = choice[np.argmin(np.abs(cuts[choice] - t[i]))]
    return float(cuts[k]), float(best)


def fit_thresholds(
    scores: np.ndarray, labels: np.ndarray, start: Sequence[float] = DEFAULT_THRESHOLDS
) -> tuple[float, ...]:
    """Cut points that maximise the quadratic weighted kappa of `grades_from_scores(scores)`
    against `labels` (ints 0..4), by coordinate search from `start`; `start` itself when no
    move improves on it (e.g. no scores)."""
    scores = np.asarray(scores, dtype=np.float64).ravel()
    labels = np.asarray(labels, dtype=np.int64).ravel()
    if scores.shape != labels.shape:
        raise ValueError(f"{scores.size} scores but {labels.size} labels")
    keep = np.isfinite(scores)  # a NaN score (a diverged model) grades nothing
    scores, labels = scores[keep], labels[keep]
    t = list(check_thresholds(start))
    if not len(scores):
        return tuple(t)
    current = float(kappas(confusion_matrix(labels, grades_from_scores(scores, t))))
    for _ in range(MAX_PASSES):
        moved = False
        for i in range(len(t)):
            cut, value = _best_cut(scores, labels, t, i)
            if value > current + 1e-12:
                t[i], current, moved = cut, value, True
        if not moved:
            break
    return tuple(t)
