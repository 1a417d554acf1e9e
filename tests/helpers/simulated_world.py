"""A simulated world of known truth for the comparison's statistics (issue 19): studies whose
confirm runs are drawn from cells with a known expected test kappa, known seed-to-seed sd and
a known P(A>B), shaped like a small EyePACS test split.

    world = World()
    cells = world.cells({("resnet18", True): 0.65, ("resnet18", False): 0.55})
    trials, predictions = world.study(np.random.default_rng(0), cells, seeds=3)

The world: a test split of 75 patients, two eyes each. A patient's grade is drawn from the
DR grade shares (0.72/0.09/0.15/0.02/0.02); each eye has it with probability 0.7, else a grade
drawn afresh (eyes of a patient agree more often than two patients do). A run grades an eye
by rounding a latent `grade + shared + own` to 0..4: `shared` (a patient part and an eye part,
sd 0.4 and 0.45) is the same for every run (hard images are hard for every model), `own` is
the run's own noise with sd `scale * exp(u)`, u ~ N(0, seed_log_sd) being the training seed.
So the population kappa of a run is closed form (the latent error is normal with sd
sqrt(shared^2 + (scale e^u)^2)); a cell's true kappa is its mean over seeds (Gauss-Hermite),
and `scale` and `seed_log_sd` are solved so that each cell has the asked kappa and a seed sd
of 0.04 in kappa.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy.optimize import brentq
from scipy.stats import norm

from study.analyze.resample import K, kappa

GRADE_SHARES = (0.72, 0.09, 0.15, 0.02, 0.02)
NODES, WEIGHTS = np.polynomial.hermite_e.hermegauss(41)  # E over u ~ N(0, 1)
WEIGHTS = WEIGHTS / WEIGHTS.sum()


@dataclass(frozen=True)
class CellTruth:
    scale: float  # the run's own latent noise sd at u = 0
    seed_log_sd: float  # sd of u, the training seed's effect on log(scale)
    kappa: float  # expected population kappa over seeds (the interval's target)
    seed_sd: float  # sd over seeds of the population kappa


@dataclass(frozen=True)
class World:
    n_patients: int = 75
    shares: tuple[float, ...] = GRADE_SHARES
    same_grade: float = 0.7  # chance an eye has its patient's grade
    patient_sd: float = 0.4
    eye_sd: float = 0.45
    seed_sd: float = 0.04  # in kappa, every cell
    _cache: dict = field(default_factory=dict, compare=False, repr=False)

    def population_kappa(self, own_sd: np.ndarray) -> np.ndarray:
        """Kappa of a run on the whole population, for an array of own-noise sds."""
        s = np.sqrt(self.patient_sd**2 + self.eye_sd**2 + np.asarray(own_sd) ** 2)[..., None, None]
        g, k = np.arange(K)[:, None], np.arange(K)[None, :]
        up = np.where(k < K - 1, norm.cdf((k + 0.5 - g) / s), 1.0)
        lo = np.where(k > 0, norm.cdf((k - 0.5 - g) / s), 0.0)
        return kappa(np.asarray(self.shares)[:, None] * (up - lo))

    def _over_seeds(self, scale: float, log_sd: float) -> tuple[float, float]:
        values = self.population_kappa(scale * np.exp(log_sd * NODES))
        mean = float(WEIGHTS @ values)
        return mean, float(np.sqrt(WEIGHTS @ (values - mean) ** 2))

    def _mean_gap(self, scale: float, log_sd: float, target: float) -> float:
        return self._over_seeds(scale, log_sd)[0] - target

    def _sd_gap(self, log_sd: float, scale: float, target: float) -> float:
        return self._over_seeds(scale, log_sd)[1] - target

    def cell(self, target_kappa: float, seed_sd: float | None = None) -> CellTruth:
        """The cell whose runs have expected kappa `target_kappa` and seed sd `seed_sd` (the
        world's by default)."""
        seed_sd = self.seed_sd if seed_sd is None else seed_sd
        if (target_kappa, seed_sd) not in self._cache:
            log_sd = 0.1
            for _ in range(6):  # the two conditions move each other a little: alternate
                scale = brentq(self._mean_gap, 0.01, 5, args=(log_sd, target_kappa))
                log_sd = brentq(self._sd_gap, 1e-4, 2.0, args=(scale, seed_sd))
            mean, sd = self._over_seeds(scale, log_sd)
            self._cache[target_kappa, seed_sd] = CellTruth(scale, log_sd, mean, sd)
        return self._cache[target_kappa, seed_sd]

    def cells(self, kappas: dict) -> dict:
        """key -> CellTruth from key -> kappa or (kappa, seed sd)."""
        return {key: self.cell(*np.atleast_1d(k)) for key, k in kappas.items()}

    def eyes(self, rng: np.random.Generator, n_studies: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """(n_studies, 2P) true grades and shared latent offsets of the test eyes."""
        p = self.n_patients
        grade = rng.choice(K, size=(n_studies, p), p=self.shares)
        fresh = rng.choice(K, size=(n_studies, p, 2), p=self.shares)
        same = rng.random((n_studies, p, 2)) < self.same_grade
        true = np.where(same, grade[..., None], fresh).reshape(n_studies, 2 * p)
        shared = rng.normal(0, self.patient_sd, (n_studies, p, 1)) + rng.normal(
            0, self.eye_sd, (n_studies, p, 2)
        )
        return true, shared.reshape(n_studies, 2 * p)

    def grade(self, rng, true, shared, truth: CellTruth, runs: int = 1) -> np.ndarray:
        """(runs, ..., 2P) predicted grades of `runs` new seeds of a cell on the eyes."""
        sd = truth.scale * np.exp(truth.seed_log_sd * rng.standard_normal(runs))
        sd = sd.reshape((runs,) + (1,) * np.ndim(true))
        latent = true + shared + sd * rng.standard_normal((runs, *np.shape(true)))
        return np.clip(np.rint(latent), 0, K - 1).astype(np.int64)

    def study(self, rng, cells: dict, seeds: int) -> tuple[pd.DataFrame, pd.DataFrame]:
        """trials.parquet rows of a confirm stage (cell keys (arch, pretrained)) and its
        predictions/ test rows, on one test split of this world."""
        true, shared = (a[0] for a in self.eyes(rng))
        images = [f"{p}_{side}" for p in range(self.n_patients) for side in ("left", "right")]
        patient = np.repeat(np.arange(self.n_patients).astype(str), 2)
        trials, preds = [], []
        for (arch, pretrained), truth in cells.items():
            grades = self.grade(rng, true, shared, truth, seeds)
            for s in range(seeds):
                tid = f"c_{arch}_{'p' if pretrained else 's'}_{s}"
                trials.append({"trial_id": tid, "status": "TERMINATED", "stage": "confirm"})
                trials[-1] |= {"seed": s, "arch": arch, "pretrained": pretrained}
                preds.append(pd.DataFrame({"trial_id": tid, "split": "test", "image": images,
                                           "patient": patient, "true": true,
                                           "predicted": grades[s]}))  # fmt: skip
        return pd.DataFrame(trials), pd.concat(preds, ignore_index=True)

    def pair_truth(self, rng, a: CellTruth, b: CellTruth, draws: int = 40_000) -> dict:
        """The truth a pair's statistics estimate, by simulation: `difference`, the expected
        test kappa of a run of A minus one of B on a new test split of this size (kappa on 150
        eyes is biased by ~+0.02 from its population value; the bias is the metric's, not the
        seeds', so the target is the test split's expectation), and `p_a_beats_b`, the chance
        that a new run of A scores higher than a new run of B on the same new split (ties
        half). A pair of equal cells is exactly 0 and 0.5, by symmetry."""
        if a == b:
            return {"difference": 0.0, "p_a_beats_b": 0.5}
        wins, diff = 0.0, 0.0
        for start in range(0, draws, 2_000):
            n = min(2_000, draws - start)
            true, shared = self.eyes(rng, n)
            ka = _kappas(true, self.grade(rng, true, shared, a)[0])
            kb = _kappas(true, self.grade(rng, true, shared, b)[0])
            wins += float(np.sum((ka > kb) + 0.5 * (ka == kb)))
            diff += float(np.sum(ka - kb))
        return {"difference": diff / draws, "p_a_beats_b": wins / draws}


def _kappas(true: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """Kappa of each row's (true, predicted) grades."""
    rows = np.arange(len(true))[:, None] * K * K
    cm = np.bincount((rows + true * K + pred).ravel(), minlength=len(true) * K * K)
    return kappa(cm.reshape(len(true), K, K))
