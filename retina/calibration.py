"""Calibrated probabilities, the one home of each rule: temperature scaling of a classify
head's softmax, the classify head's P(referable) (p2+p3+p4), and a regress head's P(referable)
from its score by a one-feature logistic fit (Platt scaling). numpy and scipy only, no torch:
`study.analyze` fits them on val, `retina.screening` applies what `model.pt` stores.

    t = fit_temperature(val_probs, val_true)                  # T > 0, on val only
    p_ref = referable_probability(temperature_scaled(test_probs, t))
    slope, intercept = fit_platt(val_scores, val_true >= 2)  # a regress head, on val only
    p_ref = platt_probability(test_scores, slope, intercept)

predictions/ and the graded images keep softmax probabilities, not logits. log p differs from
the logits by one constant per image, which softmax ignores, so softmax(log p / T) is exactly
temperature scaling of the logits: the fit on log-probabilities is the fit on logits.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize, minimize_scalar
from scipy.special import expit, log_expit, log_softmax

from retina.metrics import REFERABLE_GRADE

FLOOR = 1e-12  # float32 softmax can round a probability to 0: log needs a floor
LOG_T_BOUNDS = (np.log(0.05), np.log(20.0))  # a temperature outside this means a broken model


def log_probabilities(probs: np.ndarray) -> np.ndarray:
    return np.log(np.clip(np.asarray(probs, np.float64), FLOOR, None))


def temperature_scaled(probs: np.ndarray, temperature: float) -> np.ndarray:
    """softmax(log p / T) over the last axis, float64 (T = 1: `probs` renormalised); rows of
    NaN (images that failed) stay NaN."""
    return np.exp(log_softmax(log_probabilities(probs) / temperature, axis=-1))


def negative_log_likelihood(probs: np.ndarray, true: np.ndarray, temperature: float) -> float:
    """Mean -log softmax(log p / T)[true] over the images."""
    logp = log_softmax(log_probabilities(probs) / temperature, axis=-1)
    return float(-logp[np.arange(len(logp)), np.asarray(true)].mean())


def fit_temperature(probs: np.ndarray, true: np.ndarray) -> float:
    """The T > 0 minimising the mean negative log-likelihood of `true` (val only). Searched on
    log T (bounded, Brent): T's scale is multiplicative. NaN with no images."""
    if not len(probs):
        return float("nan")
    result = minimize_scalar(
        lambda log_t: negative_log_likelihood(probs, true, float(np.exp(log_t))),
        bounds=LOG_T_BOUNDS,
        method="bounded",
        options={"xatol": 1e-6},
    )
    return float(np.exp(result.x))


def referable_probability(probs: np.ndarray) -> np.ndarray:
    """P(grade >= 2) of each image: the sum of its probabilities of grades 2..4 (last axis)."""
    return np.asarray(probs, np.float64)[..., REFERABLE_GRADE:].sum(axis=-1)


def platt_probability(score: np.ndarray, slope: float, intercept: float) -> np.ndarray:
    """P(referable) = 1 / (1 + exp(-(slope * score + intercept))), float64; NaN stays NaN."""
    return expit(slope * np.asarray(score, np.float64) + intercept)


def fit_platt(score: np.ndarray, positive: np.ndarray) -> tuple[float, float]:
    """(slope, intercept) of the logistic fit of `positive` (referable) on `score` (val only),
    by maximum likelihood with Platt's (1999) targets: (N+ + 1) / (N+ + 2) for a positive and
    1 / (N- + 2) for a negative, which keep the fit finite when the score separates the two
    classes. NaN, NaN without both classes (nothing to fit)."""
    score = np.asarray(score, np.float64).ravel()
    positive = np.asarray(positive, bool).ravel()
    keep = np.isfinite(score)
    score, positive = score[keep], positive[keep]
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if not n_pos or not n_neg:
        return float("nan"), float("nan")
    target = np.where(positive, (n_pos + 1) / (n_pos + 2), 1 / (n_neg + 2))
    # Centre and scale the score so that the (convex) problem is well conditioned.
    mean, sd = score.mean(), score.std() or 1.0
    z = (score - mean) / sd

    def loss(w: np.ndarray) -> tuple[float, np.ndarray]:
        eta = w[0] * z + w[1]
        value = -(target * log_expit(eta) + (1 - target) * log_expit(-eta)).mean()
        residual = expit(eta) - target
        return float(value), np.array([(residual * z).mean(), residual.mean()])

    w = minimize(loss, np.zeros(2), jac=True, method="BFGS", options={"gtol": 1e-10}).x
    return float(w[0] / sd), float(w[1] - w[0] * mean / sd)
