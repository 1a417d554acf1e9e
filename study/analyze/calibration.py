"""Calibration on test: expected calibration error with equal-mass bins and the bins of a
reliability diagram, of a classify head's top-label probability (temperature scaling fitted
on val) and of any head's P(referable) (with patient-bootstrap intervals). The fits live in
`retina.calibration`, which `retina.predict` applies. Pure numpy and scipy: arrays in,
numbers out.

    t = fit_temperature(val_probs, val_true)
    ece(test_probs, test_true), ece(apply_temperature(test_probs, t), test_true)
    referable_calibration(p_before, p_after, test_true, test_patient, 1000, rng)
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from retina.calibration import (  # the one temperature scaling (numpy, no torch)
    fit_temperature,
    negative_log_likelihood,
)
from retina.calibration import temperature_scaled as apply_temperature
from retina.metrics import REFERABLE_GRADE
from study.analyze.referable import percentile_interval
from study.analyze.resample import CHUNK, patient_weights

N_BINS = 10  # equal-mass bins: each holds ~N/10 images, so no bin is empty or rests on a few


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


def outcome_bins(confidence: np.ndarray, outcome: np.ndarray, n_bins: int = N_BINS) -> list[dict]:
    """Per equal-mass bin of `confidence`: its images, mean confidence and the share of them
    whose `outcome` is true (the diagram's points)."""
    confidence, outcome = np.asarray(confidence, np.float64), np.asarray(outcome, bool)
    return [
        {"n": int(len(b)), "confidence": float(confidence[b].mean()),
         "accuracy": float(outcome[b].mean())}
        for b in equal_mass_bins(confidence, n_bins)
    ]  # fmt: skip


def reliability_bins(probs: np.ndarray, true: np.ndarray, n_bins: int = N_BINS) -> list[dict]:
    """Top-label bins: mean confidence of the top grade and how often it is right."""
    return outcome_bins(*confidence_correct(probs, true), n_bins)


def bins_ece(bins: list[dict]) -> float:
    """Expected calibration error: sum over bins of (bin share) x |accuracy - mean confidence|."""
    total = sum(b["n"] for b in bins)
    if not total:
        return float("nan")
    return float(sum(b["n"] / total * abs(b["accuracy"] - b["confidence"]) for b in bins))


def ece(probs: np.ndarray, true: np.ndarray, n_bins: int = N_BINS) -> float:
    """Top-label expected calibration error of softmax probabilities."""
    return bins_ece(reliability_bins(probs, true, n_bins))


def resampled_ece(
    confidence: np.ndarray, outcome: np.ndarray, weights: np.ndarray, n_bins: int = N_BINS
) -> np.ndarray:
    """ECE under each row of `weights` (B, N) (an image's multiplicity in a patient resample),
    shape (B,). The bins are the whole sample's equal-mass bins, so a resample moves the
    images' counts, not the bin edges; with unit weights it is `bins_ece(outcome_bins(...))`.
    One product per sum: ECE_b = sum_k |sum_k w*y - sum_k w*p| / sum w."""
    confidence, outcome = np.asarray(confidence, np.float64), np.asarray(outcome, np.float64)
    member = np.zeros((len(confidence), n_bins))
    for k, b in enumerate(equal_mass_bins(confidence, n_bins)):
        member[b, k] = 1.0
    weights = np.atleast_2d(np.asarray(weights, np.float64))
    gap = weights @ (member * (outcome - confidence)[:, None])  # (B, bins)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.abs(gap).sum(axis=1) / weights.sum(axis=1)


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


def referable_calibration(
    before: np.ndarray, after: np.ndarray, true: np.ndarray, patient: np.ndarray,
    n_resamples: int, rng: np.random.Generator,
) -> dict:  # fmt: skip
    """Calibration of P(referable) on test, as trained (`before`) and calibrated on val
    (`after`): ECE in equal-mass bins of P with patient-bootstrap intervals (both eyes of a
    patient drawn together, `resample.patient_weights`), and the reliability bins of each."""
    positive = np.asarray(true) >= REFERABLE_GRADE
    p_index, uniques = pd.factorize(pd.Series(patient), sort=True)
    boot = {"before": [], "after": []}
    for start in range(0, n_resamples, CHUNK):
        w = patient_weights(len(uniques), min(CHUNK, n_resamples - start), rng)[:, p_index]
        boot["before"].append(resampled_ece(before, positive, w))
        boot["after"].append(resampled_ece(after, positive, w))
    ci = {k: percentile_interval(np.concatenate(v) if v else np.array([])) for k, v in boot.items()}
    bins, bins_scaled = outcome_bins(before, positive), outcome_bins(after, positive)
    return {
        "test_ece": bins_ece(bins), "test_ece_ci": ci["before"],
        "test_ece_scaled": bins_ece(bins_scaled), "test_ece_scaled_ci": ci["after"],
        "bins": bins, "bins_scaled": bins_scaled,
    }  # fmt: skip
