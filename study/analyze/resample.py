"""Test metrics of many runs under one patient bootstrap, vectorised (numpy only).

Every run of a study is tested on the same test split, so one set of resampled patients
serves them all: resample b draws P patients with replacement (both eyes of a patient go
together: the patient is the unit that was sampled, and his two eyes are not independent)
and gives each image its patient's multiplicity as a weight. A run's confusion matrix under
b is then `weights_b @ counts_run`, where `counts_run[p, t*5+k]` counts the images of patient p
with true grade t predicted k. All runs at once: one sparse-dense matrix product per chunk of
resamples (a patient has 2 images, so a run's counts are ~90% zeros).

    cms = bootstrap_confusions(codes, n_resamples=10_000, rng=np.random.default_rng(0))
    kappa(cms), accuracy(cms), balanced_accuracy(cms)      # shape (B, runs)

10,000 resamples of 7,000 images (3,500 patients) x 12 runs take a few seconds on one core
(`tests/test_analyze_resample.py` prints the timing).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sparse

from retina.metrics import kappas as kappa  # the one quadratic kappa, batched

K = 5  # ICDR grades 0-4
METRIC_FUNCTIONS = ("kappa", "acc", "balanced_acc")
CHUNK = 256  # resamples per matrix product: keeps the (chunk x patients) weights ~ a few MB


def accuracy(cm: np.ndarray) -> np.ndarray:
    cm = np.asarray(cm, dtype=np.float64)
    n = cm.sum(axis=(-1, -2))
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.trace(cm, axis1=-2, axis2=-1) / n


def balanced_accuracy(cm: np.ndarray) -> np.ndarray:
    """Mean recall over the grades present (a resample can lose a rare grade: it is then left
    out of that resample's mean, as retina.metrics.balanced_accuracy does)."""
    cm = np.asarray(cm, dtype=np.float64)
    support = cm.sum(axis=-1)
    diag = np.diagonal(cm, axis1=-2, axis2=-1)
    present = support > 0
    recall = np.divide(diag, support, out=np.zeros_like(diag), where=present)
    with np.errstate(divide="ignore", invalid="ignore"):
        return recall.sum(axis=-1) / present.sum(axis=-1)


METRICS = {"kappa": kappa, "acc": accuracy, "balanced_acc": balanced_accuracy}


@dataclass(frozen=True)
class RunCodes:
    """The test predictions of R runs as integer codes (one entry per prediction row)."""

    run: np.ndarray  # run index 0..R-1
    patient: np.ndarray  # patient index 0..P-1, shared by every run
    cell: np.ndarray  # true * K + predicted
    run_ids: list[str]
    n_patients: int
    n_images: int

    @classmethod
    def from_predictions(cls, test: pd.DataFrame, run_ids: list[str]) -> RunCodes:
        """`test`: prediction rows (split == test) with trial_id, patient, true, predicted."""
        rows = test[test["trial_id"].isin(run_ids)]
        run = pd.Categorical(rows["trial_id"], categories=run_ids).codes.astype(np.int64)
        patient, _ = pd.factorize(rows["patient"], sort=True)
        true = rows["true"].to_numpy(np.int64)
        pred = rows["predicted"].to_numpy(np.int64)
        return cls(
            run=run,
            patient=patient.astype(np.int64),
            cell=true * K + pred,
            run_ids=list(run_ids),
            n_patients=int(patient.max()) + 1 if len(patient) else 0,
            n_images=int(rows["image"].nunique()) if "image" in rows else len(rows),
        )

    def patient_counts(self) -> np.ndarray:
        """(P, R*K*K) float32: per patient, the counts of each run's (true, predicted) pairs."""
        r, kk = len(self.run_ids), K * K
        flat = np.bincount(
            self.patient * (r * kk) + self.run * kk + self.cell,
            minlength=self.n_patients * r * kk,
        )
        return flat.reshape(self.n_patients, r * kk).astype(np.float32)


def patient_weights(n_patients: int, n_resamples: int, rng: np.random.Generator) -> np.ndarray:
    """(B, P) float32: how often each patient is drawn in each resample (each row sums to P)."""
    draws = rng.integers(0, n_patients, size=(n_resamples, n_patients))
    draws += (np.arange(n_resamples) * n_patients)[:, None]  # one bincount for all rows
    flat = np.bincount(draws.ravel(), minlength=n_resamples * n_patients)
    return flat.reshape(n_resamples, n_patients).astype(np.float32)


def full_confusions(codes: RunCodes) -> np.ndarray:
    """(R, K, K): each run's confusion matrix on the whole test split."""
    counts = codes.patient_counts().sum(axis=0, dtype=np.float64)
    return counts.reshape(len(codes.run_ids), K, K)


def bootstrap_confusions(codes: RunCodes, n_resamples: int, rng: np.random.Generator) -> np.ndarray:
    """(B, R, K, K): every run's confusion matrix under each patient resample; resample b is
    the same patients for every run (paired)."""
    counts = sparse.csr_matrix(codes.patient_counts().T)  # (R*K*K, P)
    out = np.empty((n_resamples, counts.shape[0]), dtype=np.float32)
    for start in range(0, n_resamples, CHUNK):
        stop = min(start + CHUNK, n_resamples)
        # float32 is exact here: every count is a whole number far below 2**24
        out[start:stop] = (counts @ patient_weights(codes.n_patients, stop - start, rng).T).T
    return out.reshape(n_resamples, len(codes.run_ids), K, K)


def run_metrics(
    codes: RunCodes, n_resamples: int, rng: np.random.Generator
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Each metric of each run on the whole test split, shape (R,), and under each patient
    resample, shape (B, R)."""
    full_cm = full_confusions(codes)
    boot_cm = bootstrap_confusions(codes, n_resamples, rng)
    full = {name: fn(full_cm) for name, fn in METRICS.items()}
    boot = {name: fn(boot_cm) for name, fn in METRICS.items()}
    return full, boot
