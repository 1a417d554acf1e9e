"""Referable DR (ICDR grade >= 2) as a screening test: AUROC of a referable score, an operating
point chosen on val, and test sensitivity / specificity at it, per image and per patient (a
patient is referable when either eye is). Pure numpy/scipy: arrays in, numbers out.

Intervals resample test patients (both eyes together) with `resample.patient_weights`: each
image is weighted by its patient's multiplicity in a resample, so one resample is a weighted
sample and AUROC is the weighted Mann-Whitney statistic (ties count one half).

    score = referable_score(frame)                          # p2+p3+p4, or a regress head's score
    t = choose_threshold(val_score, val_true >= 2, OperatingPoint("sensitivity", 0.9))
    sensitivity_specificity(test_score, test_true >= 2, t)  # on test, never used to choose
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sparse
from scipy.stats import rankdata

from retina.metrics import NUM_CLASSES, REFERABLE_GRADE
from study.analyze.resample import CHUNK, patient_weights

TARGETS = ("sensitivity", "specificity")
CONFIDENCE = 0.95


@dataclass(frozen=True)
class OperatingPoint:
    """The screening target the threshold is chosen for on val: e.g. sensitivity >= 0.9."""

    target: str = "sensitivity"
    value: float = 0.9

    @classmethod
    def from_config(cls, config: dict | None) -> OperatingPoint:
        """From study.json's `config.operating_point` ({"sensitivity": 0.9}); the schema has
        already validated it, so anything else is the default."""
        for target in TARGETS:
            if isinstance(config, dict) and isinstance(config.get(target), int | float):
                return cls(target, float(config[target]))
        return cls()

    def label(self) -> str:
        return f"{self.target} >= {self.value:g} on val"


def referable_score(frame: pd.DataFrame) -> np.ndarray:
    """p2+p3+p4 of a classify head; a regress head's `score` (monotone in the grade) where its
    p's are null. NaN where a row has neither."""
    high = [f"p{g}" for g in range(REFERABLE_GRADE, NUM_CLASSES)]
    probs = (
        frame[high].astype("float64").sum(axis=1, min_count=len(high)).to_numpy()
        if set(high) <= set(frame.columns)
        else np.full(len(frame), np.nan)
    )
    if "score" in frame.columns:  # a regress head: p's null, `score` holds the grade estimate
        probs = np.where(np.isnan(probs), frame["score"].astype("float64").to_numpy(), probs)
    return probs


def auroc(score: np.ndarray, positive: np.ndarray, weights: np.ndarray | None = None):
    """Area under the ROC curve: P(score of a positive > score of a negative), ties 1/2.

    `weights` (B, N): one weighted AUROC per row (a patient resample), shape (B,); without
    weights a float. NaN when a row has no positive or no negative."""
    score, positive = np.asarray(score, np.float64), np.asarray(positive, bool)
    w = np.ones((1, len(score))) if weights is None else np.atleast_2d(weights)
    # Sum image weights per distinct score: the sums below are over distinct scores (ties).
    _, tie = np.unique(score, return_inverse=True)
    n_unique = int(tie.max()) + 1 if len(tie) else 0
    pos = sparse.csr_matrix((positive.astype(float), (np.arange(len(score)), tie)),
                            shape=(len(score), n_unique))  # fmt: skip
    neg = sparse.csr_matrix(((~positive).astype(float), (np.arange(len(score)), tie)),
                            shape=(len(score), n_unique))  # fmt: skip
    wp, wn = (pos.T @ w.T).T, (neg.T @ w.T).T  # (B, U) weight of positives / negatives per score
    below = np.cumsum(wn, axis=1) - wn  # negatives strictly below each distinct score
    wins = (wp * (below + 0.5 * wn)).sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        area = wins / (wp.sum(axis=1) * wn.sum(axis=1))
    return float(area[0]) if weights is None else area


def auroc_mann_whitney(score: np.ndarray, positive: np.ndarray) -> float:
    """The unweighted AUROC from ranks (U / (n1 n0)); a check on `auroc`."""
    positive = np.asarray(positive, bool)
    ranks = rankdata(score)
    n1, n0 = positive.sum(), (~positive).sum()
    return float((ranks[positive].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def choose_threshold(score: np.ndarray, positive: np.ndarray, point: OperatingPoint) -> float:
    """The threshold t (referable: score >= t) that meets `point` on these (val) images and is
    best on the other side: for a sensitivity target the largest t with sensitivity >= target
    (most specific), for a specificity target the smallest t with specificity >= target (most
    sensitive). Candidates are the distinct scores, plus +inf (nothing referable). NaN when the
    images hold no positive (sensitivity) or no negative (specificity)."""
    score, positive = np.asarray(score, np.float64), np.asarray(positive, bool)
    candidates = np.append(np.unique(score), np.inf)

    def share_at_or_above(values: np.ndarray) -> np.ndarray:  # per candidate t: mean(v >= t)
        ordered = np.sort(values)
        return (len(ordered) - np.searchsorted(ordered, candidates, side="left")) / len(ordered)

    if point.target == "sensitivity":
        if not positive.any():
            return float("nan")
        sens = share_at_or_above(score[positive])  # non-increasing in t
        return float(candidates[sens >= point.value - 1e-12].max())
    if not (~positive).any():
        return float("nan")
    spec = 1.0 - share_at_or_above(score[~positive])  # non-decreasing in t
    return float(candidates[spec >= point.value - 1e-12].min())


def sensitivity_specificity(
    score: np.ndarray, positive: np.ndarray, threshold: float, weights: np.ndarray | None = None
):
    """(sensitivity, specificity) of `score >= threshold`; with `weights` (B, N) arrays (B,)."""
    score, positive = np.asarray(score, np.float64), np.asarray(positive, bool)
    flagged = score >= threshold
    w = np.ones((1, len(score))) if weights is None else np.atleast_2d(weights)
    # one BLAS product for the four counts (bool operands would take numpy's slow path)
    masks = np.stack([positive & flagged, positive, ~positive & ~flagged, ~positive], axis=1)
    tp, pos, tn, neg = (w @ masks.astype(w.dtype)).T
    with np.errstate(divide="ignore", invalid="ignore"):
        sens, spec = tp / pos, tn / neg
    if weights is None:
        return float(sens[0]), float(spec[0])
    return sens, spec


def per_patient(frame: pd.DataFrame, score: np.ndarray) -> pd.DataFrame:
    """One row per patient: referable if either eye's grade is >= 2, score the higher eye's
    (so `score >= t` means either eye is flagged), sorted by patient id."""
    eyes = pd.DataFrame({"patient": frame["patient"].to_numpy(), "score": score,
                         "positive": frame["true"].to_numpy() >= REFERABLE_GRADE})  # fmt: skip
    return eyes.groupby("patient", sort=True).agg(
        score=("score", "max"), positive=("positive", "any")
    )


def percentile_interval(values: np.ndarray) -> list[float | None]:
    finite = values[np.isfinite(values)]
    if not len(finite):
        return [None, None]
    half = (1 - CONFIDENCE) / 2
    return [float(np.quantile(finite, half)), float(np.quantile(finite, 1 - half))]


def referable_analysis(
    val: pd.DataFrame,
    test: pd.DataFrame,
    val_score: np.ndarray,
    test_score: np.ndarray,
    point: OperatingPoint,
    n_resamples: int,
    rng: np.random.Generator,
) -> dict:
    """Everything the summary states about one run's referable call. The threshold depends on
    `val`/`val_score` only; test is read to report it."""
    val_pos = val["true"].to_numpy() >= REFERABLE_GRADE
    test_pos = test["true"].to_numpy() >= REFERABLE_GRADE
    threshold = choose_threshold(val_score, val_pos, point)
    patients = per_patient(test, test_score)
    p_index, _ = pd.factorize(test["patient"], sort=True)  # same order as `patients`
    auc = auroc(test_score, test_pos)
    image_ss = sensitivity_specificity(test_score, test_pos, threshold)
    p_score, p_pos = patients["score"].to_numpy(), patients["positive"].to_numpy()
    patient_ss = sensitivity_specificity(p_score, p_pos, threshold)
    boot = {k: [] for k in ("auc", "img_sens", "img_spec", "pat_sens", "pat_spec")}
    for start in range(0, n_resamples, CHUNK):
        w_patient = patient_weights(len(patients), min(CHUNK, n_resamples - start), rng)
        w_image = w_patient[:, p_index]  # an eye counts as often as its patient is drawn
        boot["auc"].append(auroc(test_score, test_pos, w_image))
        pairs = {
            "img": sensitivity_specificity(test_score, test_pos, threshold, w_image),
            "pat": sensitivity_specificity(p_score, p_pos, threshold, w_patient),
        }
        for key, (sens, spec) in pairs.items():
            boot[f"{key}_sens"].append(sens)
            boot[f"{key}_spec"].append(spec)
    boot = {k: np.concatenate(v) if v else np.array([]) for k, v in boot.items()}

    def block(sens, spec, prefix, n, n_pos):
        return {
            "n": int(n), "referable": int(n_pos),
            "sensitivity": sens, "sensitivity_ci": percentile_interval(boot[f"{prefix}_sens"]),
            "specificity": spec, "specificity_ci": percentile_interval(boot[f"{prefix}_spec"]),
        }  # fmt: skip

    val_ss = sensitivity_specificity(val_score, val_pos, threshold)
    return {
        "auroc": auc,
        "auroc_ci": percentile_interval(boot["auc"]),
        "threshold": threshold,
        "val": {
            "n": len(val),
            "referable": int(val_pos.sum()),
            "sensitivity": val_ss[0],
            "specificity": val_ss[1],
        },  # fmt: skip
        "test_image": block(*image_ss, "img", len(test), test_pos.sum()),
        "test_patient": block(*patient_ss, "pat", len(patients), p_pos.sum()),
    }
