"""Calibration of a classify head's probabilities: expected calibration error with equal-mass
bins, the bins of a reliability diagram, and temperature scaling fitted on val. Pure numpy and
scipy: arrays in, numbers out.

predictions/ stores softmax probabilities, not logits. log p differs from the logits by one
constant per image, which softmax ignores, so softmax(log p / T) is exactly temperature scaling
of the logits: the fit on log-probabilities is the fit on logits.

    t = fit_temperature(val_probs, val_true)
    ece(test_probs, test_true), ece(apply_temperature(test_probs, t), test_true)
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax

N_BINS = 10  # equal-mass bins: each holds ~N/10 images, so no bin is empty or rests on a few
FLOOR = 1e-12  # float32 softmax can round a probability to 0: log needs a floor
LOG_T_BOUNDS = (np.log(0.05), np.log(20.0))  # a temperature outside this means a broken model


def confidence_correct(probs: np.ndarray, true: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Top-label calibration: the highest probability of each image, and whether that grade is
    the true one."""
    probs = np.asarray(probs, np.float64)
    return probs.max(axis=1), probs.argmax(axis=1) == np.asarray(true)


def equal_mass_bins(confidence: np.ndarray, n_bins: int = N_BINS) -> list[np.ndarray]:
    """Indices of the images in each bin: sorted by confidence, cut into `n_bins` runs of equal
    size (the first ones one larger when N is not a multiple); fewer bins when N < n_bins."""
    order = np.argsort(confidence, kind="stable")
    return [b for b in np.array_split(order, min(n_bins, len(order))) if len(b)]


def reliability_bins(probs: np.ndarray, true: np.ndarray, n_bins: int = N_BINS) -> list[dict]:
    """Per equal-mass bin: its images, mean confidence and accuracy (the diagram's points)."""
    conf, correct = confidence_correct(probs, true)
    return [
        {
            "n": int(len(b)),
            "confidence": float(conf[b].mean()),
            "accuracy": float(correct[b].mean()),
        }
        for b in equal_mass_bins(conf, n_bins)
    ]


def ece(probs: np.ndarray, true: np.ndarray, n_bins: int = N_BINS) -> float:
    """Expected calibration error: sum over bins of (bin share) x |accuracy - mean confidence|."""
    bins = reliability_bins(probs, true, n_bins)
    total = sum(b["n"] for b in bins)
    if not total:
        return float("nan")
    return float(sum(b["n"] / total * abs(b["accuracy"] - b["confidence"]) for b in bins))


def log_probabilities(probs: np.ndarray) -> np.ndarray:
    return np.log(np.clip(np.asarray(probs, np.float64), FLOOR, None))


def apply_temperature(probs: np.ndarray, temperature: float) -> np.ndarray:
    """softmax(log p / T): the probabilities temperature scaling gives (T = 1: unchanged)."""
    return np.exp(log_softmax(log_probabilities(probs) / temperature, axis=1))


def negative_log_likelihood(probs: np.ndarray, true: np.ndarray, temperature: float) -> float:
    logp = log_softmax(log_probabilities(probs) / temperature, axis=1)
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


def calibration_analysis(
    val_probs: np.ndarray, val_true: np.ndarray, test_probs: np.ndarray, test_true: np.ndarray
) -> dict:
    """One run's calibration: T fitted on val; test ECE and reliability bins before and after."""
    temperature = fit_temperature(val_probs, val_true)
    scaled = apply_temperature(test_probs, temperature) if np.isfinite(temperature) else test_probs
    return {
        "temperature": temperature,
        "val_nll": [
            negative_log_likelihood(val_probs, val_true, 1.0),
            negative_log_likelihood(val_probs, val_true, temperature),
        ],  # fmt: skip
        "test_ece": ece(test_probs, test_true),
        "test_ece_scaled": ece(scaled, test_true),
        "bins": reliability_bins(test_probs, test_true),
        "bins_scaled": reliability_bins(scaled, test_true),
    }
