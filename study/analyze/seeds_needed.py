"""How many seeds per cell an undecided pair would need: the number of training seeds per cell
at which the pair's 95% difference interval would have a half-width equal to a target (the
observed difference, never below the study's `confirm.margin`), and, when the test set's own
noise alone is wider than that, how many test patients would do it. numpy/scipy only.

    parts = noise_parts(boot_a, boot_b)             # the pair's bootstrap values, (B, runs)
    advice = seeds_needed(0.05, seed_var, parts, n_cells=4, n_patients=75, runs=3)
    text = advice_text(advice, "kappa")

The model is the comparison's (study.analyze.inference): the difference of two cell means over
S seeds each varies by
    V(S) = C + (2 sigma^2 + tau_a^2 + tau_b^2) / S
sigma^2 the pooled seed variance, tau^2 a cell's unshared test noise (the part of one run's
test noise its cell's other runs do not share: it averages out over seeds) and C the test noise
the runs share (the same patients for every run: no number of seeds removes it). The
half-width at S is drawn as the comparison draws its interval (the seed variance from its
fiducial distribution with a study of S seeds' degrees of freedom, the larger of the study's
pool and the other cells' pool), at the median of a new study's estimate. Both test-noise
parts scale as 1 / test patients, so with N' patients instead of N they are multiplied by
N / N'. Checked in the simulated world: `python -m tests.helpers.seeds_check` (the figures are
in docs/growing-seeds.md).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.stats import chi2, norm

CONFIDENCE = 0.95
MAX_SEEDS = 1000  # beyond this, seeds are not a practical answer: say what patients would do
FLOOR_SHARE = 0.5  # the patients advised leave half of the target's variance to the seeds


@dataclass(frozen=True)
class NoiseParts:
    """The test noise of a pair's difference of cell means, split by what seeds average out."""

    shared: float  # C: shared by every run on these patients; seeds do not shrink it
    unshared: float  # tau_a^2 + tau_b^2: one run's own test noise, divided by S
    # (both unbiased estimates, so either may be below 0 when its true value is near 0)


def noise_parts(boot_a: np.ndarray, boot_b: np.ndarray) -> NoiseParts | None:
    """From the patient bootstrap of each run of A and B, (B, runs): C is the mean covariance of
    two different runs of A, plus that of B, minus twice that of a run of A with one of B; tau^2
    is a run's variance minus its cell's mean covariance. None with one run in a cell (no
    covariance of two runs to read)."""
    n_a, n_b = boot_a.shape[1], boot_b.shape[1]
    if min(n_a, n_b) < 2:
        return None
    cov = np.cov(np.hstack([boot_a, boot_b]), rowvar=False)
    within = [cov[:n_a, :n_a], cov[n_a:, n_a:]]
    var = [float(np.mean(np.diag(w))) for w in within]
    sizes = (n_a, n_b)
    pairs = [
        float((w.sum() - np.trace(w)) / (n * (n - 1))) for w, n in zip(within, sizes, strict=True)
    ]
    cross = float(cov[:n_a, n_a:].mean())
    # Not truncated at 0: with 2-3 runs a cell the estimates are noisy, and a truncated one is
    # biased upward (half the first studies of the seeds check read a shared noise of 0), which
    # advised ~20 % too many seeds; the half-width clips the total variance instead.
    shared = pairs[0] + pairs[1] - 2 * cross
    unshared = var[0] - pairs[0] + var[1] - pairs[1]
    return NoiseParts(shared, unshared)


def half_width(
    seeds, seed_var: float, parts: NoiseParts, n_cells: int, scale: float = 1.0, draws: int = 4000
) -> np.ndarray:
    """The half-width the comparison's interval would have with `seeds` per cell (an array), if
    the new runs' estimates were these, the test noise multiplied by `scale` (N / N' for N'
    test patients instead of N). Drawn as the interval is (study.analyze.inference): the seed
    variance from its fiducial distribution, with the pooled dof of `n_cells` cells, the larger
    of that and the other cells' pool draw by draw, plus the test noise; its 95% interval's
    half-width. The same uniforms for every number of seeds, so the widths fall smoothly."""
    seeds = np.asarray(seeds, dtype=np.float64)[:, None]
    rng = np.random.default_rng(0)
    u = np.clip(rng.random(draws), 1e-12, 1 - 1e-12)
    z_seed, z_test = rng.standard_normal((2, draws))
    tau = max(scale * parts.unshared / 2, 0.0)  # one cell's unshared test noise

    def fiducial(dof: np.ndarray) -> np.ndarray:
        # the spread of a new study's runs around their cell means at its median (a median
        # half-width is what the advice promises): the variance times chi2's median / dof
        spread = max(seed_var + tau, 0.0) * chi2.ppf(0.5, dof) / dof
        return np.maximum(dof * spread / chi2.ppf(u, dof) - tau, 0.0)

    sigma2 = fiducial(n_cells * (seeds - 1))
    if n_cells > 2:  # a pair takes the larger of the study's pool and the other cells' pool
        sigma2 = np.maximum(sigma2, fiducial((n_cells - 2) * (seeds - 1)))
    test = np.sqrt(np.maximum(scale * (parts.shared + parts.unshared / seeds), 0.0))
    diff = np.sqrt(2 * sigma2 / seeds) * z_seed + test * z_test
    tail = (1 - CONFIDENCE) / 2 * 100
    lo, hi = np.percentile(diff, [tail, 100 - tail], axis=1)
    return (hi - lo) / 2


def _first_enough(target: float, seed_var: float, parts: NoiseParts, n_cells: int, scale=1.0):
    """The fewest seeds per cell (2..MAX_SEEDS) whose half-width is at most `target`, or None:
    a coarse geometric grid first, then every number in the bracket it found (the widths fall
    with the seeds; drawing every number up to MAX_SEEDS costs seconds)."""

    def first(seeds: np.ndarray) -> int | None:
        enough = half_width(seeds, seed_var, parts, n_cells, scale) <= target
        return int(np.argmax(enough)) if enough.any() else None

    grid = np.unique(np.geomspace(2, MAX_SEEDS, 30).astype(int))
    k = first(grid)
    if k is None or k == 0:
        return None if k is None else int(grid[0])
    bracket = np.arange(grid[k - 1] + 1, grid[k] + 1)
    return int(bracket[first(bracket)])


def seeds_needed(
    target: float, seed_var: float, parts: NoiseParts | None, n_cells: int, n_patients: int,
    runs: int,
) -> dict | None:  # fmt: skip
    """The advice for one pair (summary.json's `pairs[].seeds_needed`), or None when the study
    cannot say (a cell of one run: no seed variance, no shared test noise to read).

    `target`: the half-width to reach; `seed_var`: the pooled sigma^2 net of test noise, not
    truncated at 0 (the pool's spread minus its unshared noise: unbiased);
    `runs`: the seeds per cell now. `seeds` is the seeds per cell that reach the target on this
    test set, or None when its noise alone is too wide (`test_floor`: the half-width infinitely
    many seeds would leave); then `patients` test patients would leave half the target's
    variance to the seeds, and `seeds_with_patients` seeds per cell would reach it there."""
    if parts is None or not math.isfinite(seed_var) or target <= 0:
        return None
    z = float(norm.ppf(0.5 + CONFIDENCE / 2))
    out = {
        "target": float(target),
        "runs": int(runs),
        # the model's half-width at the seeds there are now (beside the interval's own)
        "half_width_now": float(half_width([runs], seed_var, parts, n_cells)[0]),
        "test_floor": z * math.sqrt(max(parts.shared, 0.0)),
        "seeds": _first_enough(target, seed_var, parts, n_cells),
        "test_patients": int(n_patients),
        "patients": None,
        "seeds_with_patients": None,
    }
    if out["seeds"] is None and parts.shared > 0:
        # the patients at which the test floor's variance is FLOOR_SHARE of the target's
        # (none when that is no more than there are: the seeds' own spread is what is wide)
        patients = math.ceil(n_patients * z**2 * parts.shared / (FLOOR_SHARE * target**2))
        if patients > n_patients:
            out["patients"] = patients
            out["seeds_with_patients"] = _first_enough(
                target, seed_var, parts, n_cells, n_patients / patients
            )
    return out


def advice_text(advice: dict | None, word: str) -> str:
    """The sentence's last clause, e.g. 'about 12 seeds per cell (now 3) would narrow the
    interval to ±0.05 kappa'; '' without advice."""
    if advice is None:
        return ""
    target = f"±{advice['target']:.2f} {word}"
    if advice["seeds"] is None and advice["patients"] is None:  # the seeds' own spread is huge
        return f"more than {MAX_SEEDS} seeds per cell would be needed to reach {target}"
    patients = (
        f"about {advice['patients']} test patients, with {advice['seeds_with_patients']} seeds "
        f"per cell, would narrow the interval to {target}"
    )
    if advice["seeds"] is None and advice["test_floor"] < advice["target"]:
        return (
            f"more than {MAX_SEEDS} seeds per cell would be needed on these "
            f"{advice['test_patients']} test patients; {patients}"
        )
    if advice["seeds"] is not None and advice["seeds"] <= advice["runs"]:
        return f"its interval is already within {target}: the cells differ by less than that"
    if advice["seeds"] is not None:
        more = advice["seeds"] - advice["runs"]
        return (
            f"about {advice['seeds']} seeds per cell (now {advice['runs']}"
            + (f"; --more-seeds {more}" if more > 0 else "")
            + f") would narrow the interval to {target}"
        )
    return (
        f"seeds cannot decide it: the test set's own noise alone leaves ±"
        f"{advice['test_floor']:.2f} {word} ({advice['test_patients']} test patients); {patients}"
    )
