"""The comparison of cells (e.g. arch x pretrained) from the confirm stage's runs, with its
uncertainty: per cell the mean +- sd over training seeds of test kappa, accuracy and balanced
accuracy with a 95% interval; per pair of cells that differ in one compared dimension the
difference of the means with its 95% interval, a p-value raw and Holm-adjusted over the
study's pairs, P(A>B) with its interval, and one plain sentence.

    result = compare_cells(trials, predictions, ["arch", "pretrained"], 10_000, seed=0)

What the interval accounts for. A cell's mean over seeds varies for two reasons: the training
seeds (a fresh set of seeds gives other models) and the test sample (other patients give other
numbers). Each bootstrap resample b draws
- the test patients (study.analyze.resample; the same patients for every cell, so a
  difference is paired and the shared test sample mostly cancels), and
- the seeds' part of each cell's mean: N(0, sigma^2_b / S) for a cell of S runs, sigma^2_b
  the study's seed variance drawn from its fiducial distribution (study.analyze.inference:
  pooled over every confirm cell, net of the test noise the patient draw already carries,
  one chi-square draw per resample shared by the cells); a pair uses the larger of that
  pool and the pool of the cells outside the pair, draw by draw, so its own runs' luck
  cannot narrow it.
The 2.5 and 97.5 percentiles of the b values are the interval; the p-value of a pair is twice
the smaller share of its resampled differences on either side of 0, adjusted by Holm over
the study's pairs (per metric); the sentence names a winner only when the adjusted p-value is
below 0.05. P(A>B) (Bouthillier et al., MLSys 2021) is the chance that a new run of A beats a
new run of B on a test split like this one, Phi(difference / sqrt(2 sigma^2 + test noise of
one run minus one run)), computed under every resample for its interval.
"""

from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from study.analyze import inference
from study.analyze.resample import METRIC_FUNCTIONS, RunCodes, run_metrics
from study.analyze.seeds_needed import advice_text, noise_parts, seeds_needed
from study.define.config import ConfirmConfig

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


def _p_digits(value: float) -> str:
    # 3 digits near 0 and 1, so a P of 0.996 does not read as a certain 1.00
    return f"{value:.2f}" if 0.01 <= value <= 0.99 else f"{value:.3f}"


def _p_is(value: float) -> str:
    # the resamples resolve a p-value to about 1/B: below 0.001 says no more than that
    return "< 0.001" if value < 0.001 else f"= {value:.3f}"


def p_text(stats: dict) -> str:
    """'0.91 [0.78, 0.99]': P(A>B) and its interval."""
    lo, hi = _p_digits(stats["p_ci_low"]), _p_digits(stats["p_ci_high"])
    return f"{_p_digits(stats['p_a_beats_b'])} [{lo}, {hi}]"


def _p_phrase(a: str, b: str, stats: dict) -> str:
    verdict = stats["p_verdict"]
    p = f"P({a} > {b}) = " + p_text(stats)
    if verdict == "too_few_runs":
        return f"; {p}: too few runs to tell whether a gain is meaningful"
    word = {
        "meaningful_a": f"a meaningful gain for {a}",
        "meaningful_b": f"a meaningful gain for {b}",
        "not_meaningful": "no meaningful gain either way",
        "undecided": "too uncertain to call a gain meaningful",
    }[verdict]
    return f"; {p}: {word}"


def sentence(a: Cell, b: Cell, i: int, stats: dict, metric: str, seeds_known: bool) -> str:
    """'pretrained beats scratch for resnet18 by 0.12 kappa [0.05, 0.19], p = 0.004 (Holm, 4
    pairs); P(pretrained > scratch) = 0.91 [0.78, 0.99]: a meaningful gain for pretrained' or
    'no difference detectable with these runs (...)'; on the Holm-adjusted decision."""
    context = [v for j, v in enumerate(a.key) if j != i]
    where = f" for {', '.join(context)}" if context else ""
    word = METRIC_WORDS.get(metric, metric)
    d, lo, hi = stats["difference"], stats["ci_low"], stats["ci_high"]
    family = stats["family"]
    holm = f" (Holm, {family} pairs)" if family > 1 else ""
    if stats["different_adjusted"]:
        win, lose, d, lo, hi = (a, b, d, lo, hi) if d > 0 else (b, a, -d, -hi, -lo)
        d_, lo_, hi_ = _fmt((d, lo, hi))
        text = (
            f"{win.key[i]} beats {lose.key[i]}{where} by {d_} {word} [{lo_}, {hi_}], "
            f"p {_p_is(stats['p_value_adjusted'])}{holm}"
        )
    else:
        d_, lo_, hi_ = _fmt((d, lo, hi))
        why = (
            f"after adjusting for the study's {family} pairs"
            if stats["different"]
            else "with these runs"
        )
        text = (
            f"no difference detectable {why} ({a.key[i]} − {b.key[i]}{where}: "
            f"{d_} {word} [{lo_}, {hi_}], p {_p_is(stats['p_value'])}"
            + (f", Holm-adjusted {_p_is(stats['p_value_adjusted'])}" if family > 1 else "")
            + ")"
        )
    if not seeds_known:
        text += " — one run per cell: seed-to-seed variation is not in the interval"
    return text + _p_phrase(a.key[i], b.key[i], stats)


def _pool(cells, cols, values, boot) -> inference.SeedVariance:
    return inference.pool([(values[cols[c.label]], boot[:, cols[c.label]]) for c in cells])


def compare_cells(
    trials: pd.DataFrame,
    predictions: pd.DataFrame,
    dims: list[str],
    n_resamples: int,
    seed: int = 0,
    primary: str = "kappa",
    margin: float | None = ConfirmConfig.margin,
) -> dict:
    """Cells, pairs and the pooled seed variance as plain dicts (summary.json's `cells`,
    `pairs` and `seed_variance`), plus the test sample's size. Empty when there is no
    finished confirm run with test predictions. An undecided pair also says how many seeds
    per cell would narrow its interval to its observed difference, or to `margin` (in the
    primary metric) when that is larger (`seeds_needed`, study.analyze.seeds_needed; None:
    no advice, e.g. for the simulated studies that check it)."""
    test = predictions[predictions["split"] == "test"]
    cells = confirm_cells(trials, dims, set(test["trial_id"].astype(str)))
    if not cells:
        return {"cells": [], "pairs": [], "seed_variance": {}, "test_images": 0, "test_patients": 0}
    run_ids = [t for c in cells for t in c.trial_ids]
    codes = RunCodes.from_predictions(test, run_ids)
    rng = np.random.default_rng(seed)
    full, boot = run_metrics(codes, n_resamples, rng)
    cols = {}
    start = 0
    for c in cells:
        cols[c.label] = np.arange(start, start + len(c.trial_ids))
        start += len(c.trial_ids)
    # one uniform per resample for the seed variance's chi-square draw, one normal per cell and
    # resample for its seeds' part: shared by the metrics, the cell intervals and the pairs
    u = np.clip(rng.random(n_resamples), 1e-12, 1 - 1e-12)
    z = {c.label: rng.standard_normal(n_resamples) for c in cells}
    pooled = {m: _pool(cells, cols, full[m], boot[m]) for m in METRIC_FUNCTIONS}
    base = {(c.label, m): boot[m][:, cols[c.label]].mean(axis=1)
            for c in cells for m in METRIC_FUNCTIONS}  # fmt: skip

    def estimate(c: Cell, m: str, seed_var: np.ndarray) -> np.ndarray:
        return base[c.label, m] + np.sqrt(seed_var / len(c.trial_ids)) * z[c.label]

    cell_out = []
    for c in cells:
        idx = cols[c.label]
        metrics = {}
        for m in METRIC_FUNCTIONS:
            lo, hi = _interval(estimate(c, m, pooled[m].draws(u)), RANGE[m])
            values = full[m][idx]
            own = inference.cell_seed_variance(values, boot[m][:, idx])
            metrics[m] = {
                "mean": float(values.mean()),
                "sd": float(values.std(ddof=1)) if len(values) > 1 else float("nan"),
                "ci_low": lo,
                "ci_high": hi,
                "seed_sd": float(np.sqrt(own)),  # this cell's own estimate, for inspection
                "runs": [float(v) for v in values],
            }
        values = dict(zip(dims, c.key, strict=True))
        cell_out.append(
            {"cell": c.label, "values": values, "trial_ids": c.trial_ids, "seeds": c.seeds}
            | {"n_runs": len(c.trial_ids), "metrics": metrics}
        )
    pairs = list(_pairs(cells))
    pair_metrics = []
    for a, b, _ in pairs:
        ia, ib = cols[a.label], cols[b.label]
        metrics = {}
        others = [c for c in cells if c not in (a, b)]
        for m in METRIC_FUNCTIONS:
            other = _pool(others, cols, full[m], boot[m])
            seeds = inference.for_pair(pooled[m], other)
            seed_var = inference.pair_draws(pooled[m], other, u)
            diff = estimate(a, m, seed_var) - estimate(b, m, seed_var)
            width = RANGE[m][1] - RANGE[m][0]
            lo, hi = _interval(diff, (-width, width))
            d = float(full[m][ia].mean() - full[m][ib].mean())
            noise = inference.pair_noise(boot[m][:, ia], boot[m][:, ib])
            p_draws = inference.p_beats_model(diff, seed_var, noise)
            p_lo, p_hi = _interval(p_draws, (0.0, 1.0))
            metrics[m] = {
                "difference": d,
                "ci_low": lo,
                "ci_high": hi,
                "different": bool(lo > 0 or hi < 0),
                "p_value": inference.p_value(diff),
                "p_a_beats_b": float(inference.p_beats_model(d, seeds.seed, noise)),
                "p_ci_low": p_lo,
                "p_ci_high": p_hi,
                "runs_share_a_beats_b": float(p_beats(full[m][ia], full[m][ib])),
                "seed_sd": float(np.sqrt(seeds.seed)),  # the one this pair's interval used
                "seed_dof": seeds.dof,
            }
        pair_metrics.append(metrics)
    for m in METRIC_FUNCTIONS:  # the family: every pair of the study, per metric
        adjusted = inference.holm([pm[m]["p_value"] for pm in pair_metrics])
        for (a, b, _), pm, p_adj in zip(pairs, pair_metrics, adjusted, strict=True):
            s = pm[m]
            s["p_value_adjusted"] = float(p_adj)
            s["different_adjusted"] = bool(s["different"] and p_adj < inference.ALPHA)
            s["family"] = len(pairs)
            runs = (len(a.trial_ids), len(b.trial_ids))
            verdict = inference.p_verdict(s["p_ci_low"], s["p_ci_high"], runs, pooled[m].dof)
            if verdict.startswith("meaningful") and not s["different_adjusted"]:
                verdict = "undecided"  # a gain the family's adjustment does not uphold
            s["p_verdict"] = verdict
    pair_out = []
    for (a, b, i), metrics in zip(pairs, pair_metrics, strict=True):
        seeds_known = pooled[primary].dof > 0
        s = metrics[primary]
        advice = None
        parts = noise_parts(boot[primary][:, cols[a.label]], boot[primary][:, cols[b.label]])
        if margin is not None and not s["different_adjusted"]:
            target = max(abs(s["difference"]), margin)
            runs = min(len(a.trial_ids), len(b.trial_ids))
            net = pooled[primary].spread - pooled[primary].unshared_noise  # unbiased, may be < 0
            advice = seeds_needed(target, net, parts, len(cells), codes.n_patients, runs)
        text = sentence(a, b, i, s, primary, seeds_known)
        if advice is not None:
            text += "; " + advice_text(advice, METRIC_WORDS.get(primary, primary))
        pair_out.append(
            {"a": a.label, "b": b.label, "dimension": dims[i], "a_value": a.key[i]}
            | {"b_value": b.key[i], "seed_variation_included": seeds_known, "metrics": metrics}
            | {"test_noise": None if parts is None else asdict(parts)}
            | {"seeds_needed": advice, "sentence": text}
        )
    return {
        "cells": cell_out,
        "pairs": pair_out,
        "seed_variance": {m: pooled[m].as_dict() for m in METRIC_FUNCTIONS},
        "test_images": codes.n_images,
        "test_patients": codes.n_patients,
    }
