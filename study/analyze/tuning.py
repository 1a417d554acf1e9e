"""How much the search bought, and how optimistic its winner's val number is.

Tuning curve (Dodge et al. 2019, "Show Your Work"): the expected best val metric after n
trials, n = 1..N, estimated from the N finished search trials with the unbiased U-statistic of
Tang et al. 2020 (opda's `u_tuning_curve`: the mean, over every subset of n of the N trials,
of the subset's best). Beside it the median tuning curve with a simultaneous 80% band
(Lourie et al. 2023, opda's `confidence_bands`; the Kolmogorov-Smirnov band: exact coverage
and instant, where opda's tighter LD bands took ~1 s for 64 trials and a minute for 200 on a
busy core). Both treat trials as independent draws from
the search; TPE's later trials are not, so read the curve as a guide to diminishing returns.

Optimism: the best trial's val metric is a maximum over trials and epochs, so it overstates
what that model does on new data; its one test value shows by how much.

    tuning = tuning_summary(trials, "best_val_kappa", "max", ["arch", "pretrained"])
    gap = optimism(trials, "best_val_kappa", "max")
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
from opda.nonparametric import EmpiricalDistribution

from study.analyze.comparison import value_label
from study.record.ranking import best_trial_ids

BAND = 0.80
LEAD = 0.05  # a trial "well above the rest" beats the rest's best by more than this
CLOSE = 0.01  # "the answer": within this much (kappa, or 1 pp of a share) of the N-trial value
SUPPORT = {"kappa": (-1.0, 1.0), "loss": (0.0, math.inf)}  # every other metric is a share


def search_trials(trials: pd.DataFrame) -> pd.DataFrame:
    """The search stage's trials (every trial of a study without a `stage` column)."""
    if "stage" not in trials.columns:
        return trials
    return trials[trials["stage"].fillna("search") == "search"]


def _support(metric: str) -> tuple[float, float]:
    base = metric.removeprefix("best_").removeprefix("val_")
    return SUPPORT.get(base, (0.0, 1.0))


def tuning_curve(values: np.ndarray, metric: str, mode: str, band: bool) -> dict:
    """n, the expected best (U-statistic) and, with `band`, the median curve and its band."""
    ys = np.asarray(values, dtype=np.float64)
    ns = np.arange(1, len(ys) + 1)
    minimize = mode == "min"
    curve = {"n": ns.tolist()}
    curve["expected_best"] = (
        EmpiricalDistribution(ys).u_tuning_curve(ns, minimize=minimize).tolist()
    )
    if band and len(ys) >= 2:
        a, b = _support(metric)
        with warnings.catch_warnings():
            # ties (several trials at kappa 0.000) make the KS band conservative, not wrong
            warnings.filterwarnings("ignore", "Duplicates detected", RuntimeWarning)
            lo_cdf, point, hi_cdf = EmpiricalDistribution.confidence_bands(
                ys, BAND, a=a, b=b, generator=np.random.default_rng(0), method="ks", n_jobs=1
            )
        one = hi_cdf.quantile_tuning_curve(ns, minimize=minimize)
        other = lo_cdf.quantile_tuning_curve(ns, minimize=minimize)
        curve["median_best"] = point.quantile_tuning_curve(ns, minimize=minimize).tolist()
        curve["band_low"] = np.minimum(one, other).tolist()
        curve["band_high"] = np.maximum(one, other).tolist()
    return curve


def needed_trials(expected: list[float]) -> tuple[int, float]:
    """The fewest trials whose expected best is within CLOSE of the N-trial value, and what
    the last doubling (N/2 -> N trials) added."""
    curve = np.asarray(expected)
    n = len(curve)
    needed = int(np.argmax(np.abs(curve - curve[-1]) <= CLOSE)) + 1
    half = max(math.ceil(n / 2), 1)
    return needed, float(abs(curve[-1] - curve[half - 1]))


def leading_trials(values: np.ndarray, mode: str) -> int:
    """1 or 2 when the best one or two trials stand well above all the others (the k-th best
    beats the best of the rest by more than LEAD and by more than twice the rest's top-half
    spread: e.g. one trial at kappa 0.5 while 7 sit at <= 0.03), else 0. A curve resting on
    them measures one lucky configuration, not how the search space behaves."""
    ys = np.sort(np.asarray(values, dtype=np.float64))
    ys = ys[::-1] if mode == "max" else ys  # best first
    sign = 1.0 if mode == "max" else -1.0
    for k in (1, 2):
        rest = ys[k:]
        if len(rest) < 3:
            break
        gap = sign * (ys[k - 1] - rest[0])
        spread = sign * (rest[0] - np.median(rest))
        if gap > LEAD and gap > 2 * spread:
            return k
    return 0


def _lead_text(values: np.ndarray, mode: str, lead: int, word: str) -> str:
    ys = np.sort(np.asarray(values, dtype=np.float64))
    ys = ys[::-1] if mode == "max" else ys
    tops = " and ".join(f"{v:.3f}" for v in ys[:lead])
    bound = "at most" if mode == "max" else "at least"
    which = "one trial" if lead == 1 else "two trials"
    return (
        f" It rests on {which}: val {word} {tops} against {bound} {ys[lead]:.3f} for the other "
        f"{len(ys) - lead}, so the curve shows {'a lucky find' if lead == 1 else 'two lucky finds'} "
        "more than how the search space behaves."
    )


def curve_sentence(
    n: int, needed: int, gain: float, word: str, seed_sd: float | None, lead: str = ""
) -> str:
    if n < 2:
        return f"{n} finished search trial: a tuning curve needs at least 2."
    half = math.ceil(n / 2)
    text = (
        f"{n} finished search trials. The expected best val {word} came within {CLOSE} of its "
        f"{n}-trial value by {needed} trial{'s' if needed > 1 else ''}; going from {half} to "
        f"{n} trials raised it by {gain:.3f}: "
    )
    text += (
        "the curve is still rising, more trials would likely help."
        if gain > CLOSE
        else "flat, more trials would likely add little."
    )
    text += lead
    if seed_sd is not None and not math.isnan(seed_sd) and seed_sd > 0:
        text += (
            f" For scale: in this study's confirm runs one configuration's test {word} varies "
            f"by {seed_sd:.3f} (sd, net of test-sample noise) between training seeds"
            + (", more than the last doubling of the search bought." if gain < seed_sd else ".")
        )
    elif seed_sd is not None and not math.isnan(seed_sd):
        text += (
            f" For scale: this study's confirm runs spread no more between training seeds than "
            f"the test sample alone makes a run's {word} move."
        )
    return text


def tuning_summary(
    trials: pd.DataFrame, score: str, mode: str, dims: list[str], seed_sd: float | None = None
) -> dict:
    """summary.json's `tuning`: the whole search's curve (with its band) and each cell's."""
    search = search_trials(trials)
    finished = search[(search["status"] == "TERMINATED") & search[score].notna()]
    word = score.removeprefix("best_val_").replace("_", " ")
    out: dict = {"metric": score, "band": BAND, "close": CLOSE, "trials": int(len(finished))}
    if finished.empty:
        out |= {"study": None, "cells": {}, "needed_trials": None, "gain_last_doubling": None}
        out["rests_on"] = None
        out["sentence"] = "No finished search trial yet: no tuning curve."
        return out
    out["study"] = tuning_curve(finished[score].to_numpy(), score, mode, band=True)
    needed, gain = needed_trials(out["study"]["expected_best"])
    values = finished[score].to_numpy()
    lead = leading_trials(values, mode)
    out |= {"needed_trials": needed, "gain_last_doubling": gain, "rests_on": lead}
    lead_text = _lead_text(values, mode, lead, word) if lead else ""
    out["sentence"] = curve_sentence(len(finished), needed, gain, word, seed_sd, lead_text)
    cells = {}
    dims = [d for d in dims if d in finished.columns]
    if dims:
        labels = finished[dims].apply(
            lambda r: " · ".join(value_label(d, r[d]) for d in dims), axis=1
        )
        for label, group in finished.groupby(labels, sort=True):
            curve = tuning_curve(group[score].to_numpy(), score, mode, band=False)
            needed, gain = needed_trials(curve["expected_best"])
            cells[label] = curve | {"needed_trials": needed, "gain_last_doubling": gain}
    out["cells"] = cells
    return out


def optimism(trials: pd.DataFrame, score: str, mode: str, confirm_test: dict | None = None) -> dict:
    """summary.json's `optimism`: the best search trial's val value (a max over trials and
    epochs) beside its test value; `confirm_test` = its cell's confirm runs ({"cell", "mean",
    "sd", "n_runs"}) when there are some."""
    search = search_trials(trials)
    ids = best_trial_ids(search, score, mode, 1)
    base = score.removeprefix("best_val_")
    word = base.replace("_", " ")
    if not ids:
        return {"trial_id": None, "val": None, "test": None, "gap": None,
                "sentence": "No finished search trial yet."}  # fmt: skip
    best = search[search["trial_id"] == ids[0]].iloc[0]
    val = float(best[score])
    test = float(best.get(f"test_{base}", math.nan))
    n = int(((search["status"] != "ERROR") & search[score].notna()).sum())  # as ranked
    text = f"The best search trial ({ids[0]}) reached val {word} {val:.3f}, the best of {n} trials and their epochs"
    if math.isnan(test):
        text += "; it has no test value (not tested), so its optimism cannot be measured."
    else:
        over = val - test if mode == "max" else test - val  # > 0: val flattered the winner
        text += (
            f"; on test it scored {test:.3f}, {abs(val - test):.3f} "
            + ("worse. Expect a winner's val number to overstate new data." if over > 0 else
               "better: no optimism visible this time (one test, itself noisy).")
        )  # fmt: skip
    if confirm_test and confirm_test["n_runs"] == 1:  # one run has no spread: say it is one
        text += (
            f" Retrained with 1 new seed, its cell ({confirm_test['cell']}) scored test {word} "
            f"{confirm_test['mean']:.3f} (a single run)."
        )
    elif confirm_test:
        text += (
            f" Retrained with {confirm_test['n_runs']} new seeds, its cell "
            f"({confirm_test['cell']}) scored test {word} {confirm_test['mean']:.3f} "
            f"± {confirm_test['sd']:.3f} (mean ± sd)."
        )
    return {
        "trial_id": ids[0],
        "val": val,
        "test": None if math.isnan(test) else test,
        "gap": None if math.isnan(test) else val - test,
        "confirm": confirm_test,
        "sentence": text,
    }
