"""The comparison's model of chance, in one place: the seed-to-seed variance pooled over the
confirm cells, its fiducial draws, P(A>B) under the same model, a p-value per pair and Holm's
adjustment over the study's family of pairs. numpy/scipy only.

The model. Run i of cell c scores y_ci = mu_c + s_ci + e_ci on the test split: s_ci the
training seed's effect (sd sigma, the same in every cell: one seed model for the study), e_ci
the test sample's (other patients give other numbers; the patient bootstrap carries it). The
runs of a cell share the test patients, so the spread of their values around the cell mean
holds sigma^2 plus only the part of the test noise they do not share, tau^2 (the bootstrap
variance of one run minus the bootstrap covariance of two). Per cell, s_c^2 - tau_c^2 from
2-3 runs is often below 0 (issue 19: 32-54% of cells at sigma = 0.04 kappa) and a cell
estimate truncated at 0 removes the seeds from its interval. So the intervals use the pool:
s^2 = sum (n_c - 1) s_c^2 / dof with dof = sum (n_c - 1) over the cells, and a fiducial draw
per resample, sigma^2_b = max(dof * s^2 / chi2_dof,b - tau^2, 0): the variance of seeds plus
unshared test noise is a scaled chi-square, so its draws are never all 0 even when these runs
happen to agree closely. A pair uses the larger of that pool and the pool of the other cells,
draw by draw (`pair_draws`). Each cell's own estimate stays in summary.json (`seed_sd`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import ndtr
from scipy.stats import chi2

ALPHA = 0.05
MEANINGFUL = 0.75  # Bouthillier et al. (MLSys 2021): P(A>B) >= 0.75 is a meaningful gain
MIN_RUNS_FOR_P = 2  # per cell: with one run a cell has no spread of its own to show


@dataclass(frozen=True)
class SeedVariance:
    """One metric's seed-to-seed variance, pooled over the cells with >= 2 runs."""

    spread: float  # pooled variance of the runs around their cell means (seeds + unshared noise)
    unshared_noise: float  # tau^2: the part of that spread the test sample makes
    dof: int  # sum over cells of (runs - 1)

    @property
    def seed(self) -> float:
        """The point estimate of sigma^2 (0 when the runs spread no more than test noise)."""
        return max(self.spread - self.unshared_noise, 0.0) if self.dof else float("nan")

    def draws(self, u: np.ndarray) -> np.ndarray:
        """sigma^2 under each resample from its uniform u (the chi-square(dof) quantile at u:
        pools of other dof drawn with the same u move together); 0 without dof."""
        if not self.dof:
            return np.zeros(len(u))
        return np.maximum(self.dof * self.spread / chi2.ppf(u, self.dof) - self.unshared_noise, 0)

    def as_dict(self) -> dict:
        return {
            "pooled_sd": float(np.sqrt(self.seed)),
            "dof": self.dof,
            "unshared_test_noise_sd": float(np.sqrt(self.unshared_noise)),
            "runs_sd": float(np.sqrt(self.spread)) if self.dof else float("nan"),
        }


def unshared_noise(boot: np.ndarray) -> float:
    """tau^2 of one cell's runs, boot (B, n): mean bootstrap variance of one run minus mean
    covariance of two (the test noise the runs share moves their mean, not their spread)."""
    n = boot.shape[1]
    cov = np.cov(boot, rowvar=False)
    return max(float(np.mean(np.diag(cov)) - (cov.sum() - np.trace(cov)) / (n * (n - 1))), 0.0)


def cell_seed_variance(full: np.ndarray, boot: np.ndarray) -> float:
    """One cell's own estimate of sigma^2 (for inspection; NaN with one run)."""
    if len(full) < 2:
        return float("nan")
    return max(float(np.var(full, ddof=1)) - unshared_noise(boot), 0.0)


def pool(cells: list[tuple[np.ndarray, np.ndarray]]) -> SeedVariance:
    """Pool (full values (n,), bootstrap values (B, n)) of each cell; cells of one run add
    nothing (no spread of their own) but are still given the pooled seed part."""
    many = [(f, b) for f, b in cells if len(f) >= 2]
    dof = sum(len(f) - 1 for f, _ in many)
    if not dof:
        return SeedVariance(float("nan"), 0.0, 0)
    spread = sum((len(f) - 1) * float(np.var(f, ddof=1)) for f, _ in many) / dof
    noise = sum((len(f) - 1) * unshared_noise(b) for f, b in many) / dof
    return SeedVariance(spread, noise, dof)


def for_pair(study: SeedVariance, others: SeedVariance) -> SeedVariance:
    """The larger point estimate of the study's pool and the pool of the cells outside the
    pair (what summary.json reports for the pair)."""
    return others if others.dof and others.seed > study.seed else study


def pair_draws(study: SeedVariance, others: SeedVariance, u: np.ndarray) -> np.ndarray:
    """sigma^2 of a pair under each resample: the larger of the study's pool and the pool of
    the cells outside the pair, draw by draw (same u). A pair whose own runs happen to agree
    closely pulls the study's pool down exactly when its interval needs it; the other cells'
    pool does not depend on the pair's runs, so the pair's luck can widen its interval but
    not narrow it below what the rest of the study says. (Taking the larger point estimate
    instead still covered only 0.90-0.92 in those subgroups; draw by draw it is >= 0.93.)"""
    if not others.dof:
        return study.draws(u)
    return np.maximum(study.draws(u), others.draws(u))


def pair_noise(boot_a: np.ndarray, boot_b: np.ndarray) -> float:
    """The test sample's variance of (one run of A - one run of B), averaged over run pairs."""
    n_a = boot_a.shape[1]
    cov = np.cov(np.hstack([boot_a, boot_b]), rowvar=False)
    cross = cov[:n_a, n_a:]
    return float(np.mean(np.diag(cov)[:n_a]) + np.mean(np.diag(cov)[n_a:]) - 2 * cross.mean())


def p_beats_model(diff, seed_var, noise: float) -> np.ndarray:
    """P(A>B) = Phi(diff / sqrt(2 sigma^2 + noise)): the chance that a new run of A scores
    higher than a new run of B on a test split like this one, given the cells' difference and
    the seed variance (one value or one per resample). Without any spread: 1, 0 or 0.5."""
    diff = np.asarray(diff, dtype=np.float64)
    scale = np.sqrt(np.maximum(2 * np.asarray(seed_var, dtype=np.float64) + noise, 0.0))
    z = np.divide(diff, scale, out=np.zeros_like(diff * scale), where=scale > 0)
    return np.where(scale > 0, ndtr(z), np.where(diff == 0, 0.5, (diff > 0) * 1.0))


def p_value(draws: np.ndarray) -> float:
    """Two-sided p-value of 'no difference' from the difference's resampled distribution:
    2 x the smaller share of draws on either side of 0 (the interval excludes 0 at 95% when
    this is below 0.05)."""
    below, above = float(np.mean(draws <= 0)), float(np.mean(draws >= 0))
    return min(1.0, 2 * min(below, above))


def holm(p_values) -> np.ndarray:
    """Holm's step-down adjustment (controls the family-wise error rate, no assumption about
    how the pairs depend on each other): sorted p_(1) <= ... <= p_(m) become
    max_{j <= i} min(1, (m - j + 1) p_(j)), in the original order."""
    p = np.asarray(p_values, dtype=np.float64)
    order = np.argsort(p, kind="stable")
    m = len(p)
    steps = np.minimum(1.0, np.maximum.accumulate((m - np.arange(m)) * p[order]))
    out = np.empty(m)
    out[order] = steps
    return out


def p_verdict(p_low: float, p_high: float, runs: tuple[int, int], dof: int) -> str:
    """What P(A>B)'s interval says: `meaningful_a`/`meaningful_b` (the whole interval at or
    beyond 0.75/0.25), `not_meaningful` (inside (0.25, 0.75)), `undecided`, or
    `too_few_runs` (a cell with fewer than MIN_RUNS_FOR_P runs, or no pooled seed spread)."""
    if min(runs) < MIN_RUNS_FOR_P or dof < 1:
        return "too_few_runs"
    if p_low >= MEANINGFUL:
        return "meaningful_a"
    if p_high <= 1 - MEANINGFUL:
        return "meaningful_b"
    if p_low > 1 - MEANINGFUL and p_high < MEANINGFUL:
        return "not_meaningful"
    return "undecided"
