"""Per-epoch classification metrics for DR grading (ICDR grades 0-4).

Everything is computed from one 5x5 confusion matrix (rows = true grade, columns = predicted),
so the engine only has to count (true, predicted) pairs on the device and copy 25 integers
to the host once per epoch.

    confusion_matrix(y_true, y_pred)        -> int64 [5, 5]
    quadratic_weighted_kappa(conf)          -> Cohen's kappa with quadratic weights
    kappas(confs)                           -> the same of many matrices [..., 5, 5] at once
    balanced_accuracy(conf)                 -> mean recall over the grades present in y_true
    per_class_recall(conf)                  -> recall per grade (NaN where the grade is absent)
    referable_sensitivity_specificity(conf) -> the screening question: grade >= 2 or not
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

NUM_CLASSES = 5
# ICDR: grade 2 (moderate non-proliferative DR) and above is "referable" to an ophthalmologist.
REFERABLE_GRADE = 2


def confusion_matrix(y_true, y_pred, num_classes: int = NUM_CLASSES) -> np.ndarray:
    """Counts of (true, predicted) pairs: int64 [num_classes, num_classes], rows true, cols predicted."""
    t = np.asarray(y_true, dtype=np.int64).ravel()
    p = np.asarray(y_pred, dtype=np.int64).ravel()
    if t.shape != p.shape:
        raise ValueError(f"y_true has {t.size} labels but y_pred has {p.size}")
    for name, v in (("y_true", t), ("y_pred", p)):
        if v.size and (v.min() < 0 or v.max() >= num_classes):
            raise ValueError(f"{name} holds values outside 0..{num_classes - 1}")
    # One bincount over the flattened pair index is the whole computation.
    flat = np.bincount(t * num_classes + p, minlength=num_classes * num_classes)
    return flat.reshape(num_classes, num_classes).astype(np.int64)


def kappas(conf: np.ndarray) -> np.ndarray:
    """Cohen's kappa with quadratic weights w_ij = (i - j)^2 / (K - 1)^2 of each confusion
    matrix in `conf` [..., K, K] (rows true), as an array of shape [...]: the one kappa of the
    harness (an epoch, a threshold search's candidates, a bootstrap's resamples).

    kappa = 1 - sum(w * observed) / sum(w * expected), where expected is the outer product of the
    true and predicted marginals (chance agreement). 1 = perfect, 0 = chance level.
    """
    conf = np.asarray(conf, dtype=np.float64)
    k = conf.shape[-1]
    idx = np.arange(k)
    weights = (idx[:, None] - idx[None, :]) ** 2 / (k - 1) ** 2
    n = conf.sum(axis=(-2, -1))
    observed = (weights * conf).sum(axis=(-2, -1))  # n * sum(w * O)
    expected = np.einsum("...i,ij,...j->...", conf.sum(axis=-1), weights, conf.sum(axis=-2))
    # The expected disagreement (n^2 * sum(w * E)) is 0 when the true grades or the predictions
    # are all one single grade (e.g. a constant predictor on a one-grade batch), or there are
    # none. Kappa is then 0/0; we call it 0.0 ("no better than chance") rather than NaN, so a
    # max-kappa search never sees NaN and a model that predicts one grade for everything never
    # looks better than chance.
    defined = expected > 0
    return np.where(defined, 1.0 - observed * n / np.where(defined, expected, 1.0), 0.0)


def quadratic_weighted_kappa(conf: np.ndarray) -> float:
    """`kappas` of one confusion matrix [K, K], as a float."""
    return float(kappas(conf))


def per_class_recall(conf: np.ndarray) -> list[float]:
    """Recall of each grade (diagonal / row sum); NaN for a grade absent from y_true."""
    conf = np.asarray(conf, dtype=np.float64)
    support = conf.sum(axis=1)
    diag = np.diag(conf)
    return [float(d / s) if s > 0 else float("nan") for d, s in zip(diag, support, strict=True)]


def balanced_accuracy(conf: np.ndarray) -> float:
    """Mean recall over the grades present in y_true (NaN for an empty matrix)."""
    recalls = [r for r in per_class_recall(conf) if not np.isnan(r)]
    return float(np.mean(recalls)) if recalls else float("nan")


def referable_sensitivity_specificity(conf: np.ndarray) -> tuple[float, float]:
    """Screening metrics for referable DR (grade >= 2) against non-referable (0-1).

    sensitivity = referable eyes predicted referable / referable eyes;
    specificity = non-referable eyes predicted non-referable / non-referable eyes.
    NaN where the denominator is 0 (no eye of that kind in y_true).
    """
    conf = np.asarray(conf, dtype=np.float64)
    r = REFERABLE_GRADE
    referable_total = conf[r:, :].sum()
    healthy_total = conf[:r, :].sum()
    sens = conf[r:, r:].sum() / referable_total if referable_total > 0 else float("nan")
    spec = conf[:r, :r].sum() / healthy_total if healthy_total > 0 else float("nan")
    return float(sens), float(spec)


@dataclass
class EpochMetrics:
    """Metrics of one pass over one split (a training epoch or an evaluation)."""

    loss: float
    accuracy: float
    kappa: float
    balanced_accuracy: float
    recall: list[float]
    referable_sensitivity: float
    referable_specificity: float
    confusion: np.ndarray = field(repr=False)
    images_per_s: float
    seconds: float
    n_images: int
    # float32 [n_images, 5] softmax per image in the loader's order, when the evaluation was
    # asked for it (`evaluate(..., keep_probabilities=True)`); None otherwise.
    probabilities: np.ndarray | None = field(default=None, repr=False)
    # With them (and for a regress head, which has no probabilities): float32 [n_images]
    # scores (expected grade, or the regression output) and int64 grades per image.
    scores: np.ndarray | None = field(default=None, repr=False)
    grades: np.ndarray | None = field(default=None, repr=False)

    @classmethod
    def from_confusion(cls, conf: np.ndarray, loss_sum: float, seconds: float) -> EpochMetrics:
        """Build every metric from the epoch's confusion matrix and summed per-image loss."""
        conf = np.asarray(conf, dtype=np.int64)
        n = int(conf.sum())
        sens, spec = referable_sensitivity_specificity(conf)
        return cls(
            loss=float(loss_sum / n) if n else float("nan"),
            accuracy=float(np.trace(conf) / n) if n else float("nan"),
            kappa=quadratic_weighted_kappa(conf),
            balanced_accuracy=balanced_accuracy(conf),
            recall=per_class_recall(conf),
            referable_sensitivity=sens,
            referable_specificity=spec,
            confusion=conf,
            images_per_s=float(n / seconds) if seconds > 0 else 0.0,
            seconds=float(seconds),
            n_images=n,
        )

    def as_dict(self, prefix: str) -> dict[str, float]:
        """Flat scalars for tables and `tune.report`: f"{prefix}_loss", ... (no confusion matrix)."""
        out = {
            f"{prefix}_loss": float(self.loss),
            f"{prefix}_acc": float(self.accuracy),
            f"{prefix}_kappa": float(self.kappa),
            f"{prefix}_balanced_acc": float(self.balanced_accuracy),
            f"{prefix}_referable_sensitivity": float(self.referable_sensitivity),
            f"{prefix}_referable_specificity": float(self.referable_specificity),
        }
        for grade, value in enumerate(self.recall):
            out[f"{prefix}_recall_{grade}"] = float(value)
        out[f"{prefix}_images_per_s"] = float(self.images_per_s)
        return out
