"""The comparison of cells (e.g. arch x pretrained) from the confirm stage's runs, with its
uncertainty: per cell the mean +- sd over training seeds of test kappa, accuracy and balanced
accuracy with a 95% interval; per pair of cells that differ in one compared dimension the
difference of the means with its 95% interval, P(A>B) and one plain sentence.

    result = compare_cells(trials, predictions, ["arch", "pretrained"], 10_000, seed=0)

What the interval accounts for. A cell's mean over seeds varies for two reasons: the training
seeds (a fresh set of seeds gives other models) and the test sample (other patients give other
numbers). Each bootstrap resample b draws
- the test patients (study.analyze.resample; the same patients for every cell, so a
  difference is paired and the shared test sample mostly cancels), and
- the seeds' part: sqrt(v_seed / S) * t_{S-1}, one draw per cell. Resampling S = 3 seeds with
  replacement would give only 10 distinct means and understate their variance by (S-1)/S;
  the scaled t draw is the fiducial (Behrens-Fisher) distribution of a mean from S values,
  which is calibrated for small S. v_seed is the seed-to-seed variance of the cell's runs on
  the whole test split minus the part the patient bootstrap already carries (each run's own
  test-sample noise: the mean bootstrap variance of one run minus the mean covariance of two
  runs of the cell), so that noise is not counted twice.
The 2.5 and 97.5 percentiles of the b values are the interval. A pair is called different
when its interval excludes 0. P(A>B) (Bouthillier et al., MLSys 2021) is the share of
(run of A, run of B) pairs in which A's run scores higher on the test split (ties count half);
its interval resamples the seeds of both cells and the patients.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import pandas as pd

from study.analyze.resample import METRIC_FUNCTIONS, RunCodes, run_metrics

CONFIDENCE = 0.95
RANGE = {"kappa": (-1.0, 1.0), "acc": (0.0, 1.0), "balanced_acc": (0.0, 1.0)}
METRIC_WORDS = {"kappa": "kappa", "acc": "accuracy", "balanced_acc": "balanced accuracy"}


@dataclass(frozen=True)
class Cell:
    key: tuple[str, ...]  # one label per compared dimension, e.g. ("resnet18", "pretrained")
    label: str  # "resnet18 · pretrained"
    trial_ids: list[str]
    seeds: list


def value_label(dim: str, value) -> str:
    """How a cell's value of `dim` reads in a sentence: pretrained/scratch, an arch by name."""
    if dim == "pretrained":
        if isinstance(value, str):
            value = value.strip().lower() in ("true", "1", "yes")
        return "pretrained" if bool(value) else "scratch"
    if isinstance(value, (bool, np.bool_)):
        return f"{dim}={'true' if value else 'false'}"
    if dim in ("arch", "optimizer", "model"):
        return str(value)
    return f"{dim}={value}"


def _order(dim: str, label: str) -> tuple:
    # pretrained before scratch (so "A - B" reads "pretrained - scratch"); others by name
    return (0 if label == "pretrained" else 1, label) if dim == "pretrained" else (0, label)


def confirm_cells(trials: pd.DataFrame, dims: list[str], tested: set[str]) -> list[Cell]:
    """The cells of the finished confirm runs that have test predictions, in a stable order."""
    if "stage" not in trials.columns:
        return []
    runs = trials[
        (trials["stage"] == "confirm")
        & (trials["status"] == "TERMINATED")
        & trials["trial_id"].isin(tested)
    ]
    groups: dict[tuple, list] = {}
    for _, row in runs.iterrows():
        key = tuple(value_label(d, row.get(d)) for d in dims)
        groups.setdefault(key, []).append(row)
    cells = []
    for key in sorted(groups, key=lambda k: [_order(d, v) for d, v in zip(dims, k, strict=True)]):
        rows = sorted(groups[key], key=lambda r: str(r["trial_id"]))
        seeds = [_plain(r.get("seed")) for r in rows]
        cells.append(Cell(key, " · ".join(key), [str(r["trial_id"]) for r in rows], seeds))
    return cells


def _plain(value):
    if value is None or pd.isna(value):  # also pd.NA of a nullable Int64 `seed` column
        return None
    return value.item() if isinstance(value, np.generic) else value


def _seed_part(boot: np.ndarray, full: np.ndarray, t_draws: np.ndarray) -> tuple[np.ndarray, float]:
    """The seeds' share of a cell mean's variation under each resample, and v_seed (NaN when
    one run: the seed-to-seed variation is then unknown and left out)."""
    s = len(full)
    if s < 2:
        return np.zeros(len(t_draws)), float("nan")
    cov = np.cov(boot, rowvar=False)
    own_test_noise = float(np.mean(np.diag(cov)) - (cov.sum() - np.trace(cov)) / (s * (s - 1)))
    v_seed = max(float(np.var(full, ddof=1)) - max(own_test_noise, 0.0), 0.0)
    return np.sqrt(v_seed / s) * t_draws, v_seed


def _interval(values: np.ndarray, bounds: tuple[float, float]) -> tuple[float, float]:
    """Percentile interval, kept within what the quantity can be: the heavy tails of t_{S-1}
    with 2-3 seeds otherwise reach past e.g. an accuracy of 1."""
    tail = (1 - CONFIDENCE) / 2 * 100
    lo, hi = np.clip(np.nanpercentile(values, [tail, 100 - tail]), *bounds)
    return float(lo), float(hi)


def p_beats(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Share of (run of A, run of B) pairs where A is higher, ties half; over the last axis."""
    diff = a[..., :, None] - b[..., None, :]
    return ((diff > 0) + 0.5 * (diff == 0)).mean(axis=(-1, -2))


def _pairs(cells: list[Cell]):
    for a, b in itertools.combinations(cells, 2):
        differ = [i for i, (x, y) in enumerate(zip(a.key, b.key, strict=True)) if x != y]
        if len(differ) == 1:
            yield a, b, differ[0]


def _fmt(values: tuple[float, ...]) -> list[str]:
    digits = 3 if max(abs(v) for v in values) < 0.05 or values[-1] - values[-2] < 0.05 else 2
    return [f"{v:.{digits}f}" for v in values]


def sentence(a: Cell, b: Cell, i: int, stats: dict, metric: str, seeds_known: bool) -> str:
    """'pretrained beats scratch for resnet18 by 0.12 kappa [0.05, 0.19]' or 'no difference
    detectable with these runs (...)'."""
    context = [v for j, v in enumerate(a.key) if j != i]
    where = f" for {', '.join(context)}" if context else ""
    word = METRIC_WORDS.get(metric, metric)
    d, lo, hi = stats["difference"], stats["ci_low"], stats["ci_high"]
    if stats["different"]:
        win, lose, d, lo, hi = (a, b, d, lo, hi) if d > 0 else (b, a, -d, -hi, -lo)
        d_, lo_, hi_ = _fmt((d, lo, hi))
        text = f"{win.key[i]} beats {lose.key[i]}{where} by {d_} {word} [{lo_}, {hi_}]"
    else:
        d_, lo_, hi_ = _fmt((d, lo, hi))
        text = (
            f"no difference detectable with these runs ({a.key[i]} − {b.key[i]}{where}: "
            f"{d_} {word} [{lo_}, {hi_}])"
        )
    if not seeds_known:
        text += " — one run in a cell: seed-to-seed variation is not in the interval"
    return text


def compare_cells(
    trials: pd.DataFrame,
    predictions: pd.DataFrame,
    dims: list[str],
    n_resamples: int,
    seed: int = 0,
    primary: str = "kappa",
) -> dict:
    """Cells and pairs as plain dicts (summary.json's `cells` and `pairs`), plus the test
    sample's size. Empty lists when there is no finished confirm run with test predictions."""
    test = predictions[predictions["split"] == "test"]
    cells = confirm_cells(trials, dims, set(test["trial_id"].astype(str)))
    if not cells:
        return {"cells": [], "pairs": [], "test_images": 0, "test_patients": 0}
    run_ids = [t for c in cells for t in c.trial_ids]
    codes = RunCodes.from_predictions(test, run_ids)
    rng = np.random.default_rng(seed)
    full, boot = run_metrics(codes, n_resamples, rng)
    cols = {}
    start = 0
    for c in cells:
        cols[c.label] = np.arange(start, start + len(c.trial_ids))
        start += len(c.trial_ids)
    # one seed draw per cell and resample, shared by its metrics, cell interval and pairs
    t_draws = {
        c.label: rng.standard_t(max(len(c.trial_ids) - 1, 1), size=n_resamples) for c in cells
    }
    estimate: dict[tuple[str, str], np.ndarray] = {}
    cell_out = []
    for c in cells:
        idx = cols[c.label]
        metrics = {}
        for m in METRIC_FUNCTIONS:
            part, v_seed = _seed_part(boot[m][:, idx], full[m][idx], t_draws[c.label])
            estimate[c.label, m] = boot[m][:, idx].mean(axis=1) + part
            lo, hi = _interval(estimate[c.label, m], RANGE[m])
            values = full[m][idx]
            metrics[m] = {
                "mean": float(values.mean()),
                "sd": float(values.std(ddof=1)) if len(values) > 1 else float("nan"),
                "ci_low": lo,
                "ci_high": hi,
                "seed_sd": float(np.sqrt(v_seed)),
                "runs": [float(v) for v in values],
            }
        values = dict(zip(dims, c.key, strict=True))
        cell_out.append(
            {"cell": c.label, "values": values, "trial_ids": c.trial_ids, "seeds": c.seeds}
            | {"n_runs": len(c.trial_ids), "metrics": metrics}
        )
    pair_out = []
    for a, b, i in _pairs(cells):
        ia, ib = cols[a.label], cols[b.label]
        seeds_known = len(ia) > 1 and len(ib) > 1
        pick_a = rng.integers(0, len(ia), size=(n_resamples, len(ia)))
        pick_b = rng.integers(0, len(ib), size=(n_resamples, len(ib)))
        rows = np.arange(n_resamples)[:, None]
        metrics = {}
        for m in METRIC_FUNCTIONS:
            diff = estimate[a.label, m] - estimate[b.label, m]
            width = RANGE[m][1] - RANGE[m][0]
            lo, hi = _interval(diff, (-width, width))
            d = float(full[m][ia].mean() - full[m][ib].mean())
            p_boot = p_beats(boot[m][:, ia][rows, pick_a], boot[m][:, ib][rows, pick_b])
            p_lo, p_hi = _interval(p_boot, (0.0, 1.0))
            metrics[m] = {
                "difference": d,
                "ci_low": lo,
                "ci_high": hi,
                "different": bool(lo > 0 or hi < 0),
                "p_a_beats_b": float(p_beats(full[m][ia], full[m][ib])),
                "p_ci_low": p_lo,
                "p_ci_high": p_hi,
            }
        pair_out.append(
            {"a": a.label, "b": b.label, "dimension": dims[i], "a_value": a.key[i]}
            | {"b_value": b.key[i], "seed_variation_included": seeds_known, "metrics": metrics}
            | {"sentence": sentence(a, b, i, metrics[primary], primary, seeds_known)}
        )
    return {
        "cells": cell_out,
        "pairs": pair_out,
        "test_images": codes.n_images,
        "test_patients": codes.n_patients,
    }
