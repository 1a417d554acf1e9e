"""The one ranking of a study: which epoch of a trial is its best, and which trial is best.

Every place that picks a "best" uses these functions and nothing else: the trainable (which
checkpoint to keep), the results store (each trial's best epoch), the held-out test (which
trials to test), the sweep's leaderboard, the report's "best trial" and the export. Ties are
common (several trials, or every epoch of one trial, at val kappa 0.000 when a model predicts
grade 0 only), so the order is total:

1. the study metric on val (`mode` max or min; NaN last),
2. then the val loss (lower first; NaN last),
3. then the earlier epoch (within a trial) or the earlier trial (by trial id, which Ray
   numbers in the order it created the trials).

Pure Python and pandas: `study.analyze` imports it without torch or Ray.

    from study.record.ranking import best_epoch, rank_trials
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import pandas as pd


def _finite(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(number) else number


def epoch_key(row: Mapping[str, Any], metric: str, mode: str) -> tuple:
    """Sort key of one epoch's result: smaller is better (see the module docstring)."""
    value, loss = _finite(row.get(metric)), _finite(row.get("val_loss"))
    sign = -1.0 if mode == "max" else 1.0
    return (
        value is None,
        0.0 if value is None else sign * value,
        loss is None,
        0.0 if loss is None else loss,
        int(row.get("epoch", 0)),
    )


def best_epoch(rows: Iterable[Mapping[str, Any]], metric: str, mode: str) -> Mapping | None:
    """The best epoch row of one trial, or None when no epoch has a finite metric."""
    scored = [r for r in rows if _finite(r.get(metric)) is not None]
    return min(scored, key=lambda r: epoch_key(r, metric, mode)) if scored else None


def rank_trials(trials: pd.DataFrame, score: str, mode: str) -> pd.DataFrame:
    """Trials best first by `score` (a `best_val_*` column), then `best_val_loss`, then trial
    id; with `rank` 1, 2, ... (NaN where the score is NaN)."""
    keys, ascending = [score], [mode == "min"]
    if "best_val_loss" in trials.columns and score != "best_val_loss":
        keys.append("best_val_loss")
        ascending.append(True)
    keys.append("trial_id")
    ascending.append(True)
    # One key at a time from the last, stable: NaN last for each key, whatever its direction.
    ranked = trials
    for key, up in reversed(list(zip(keys, ascending, strict=True))):
        ranked = ranked.sort_values(key, ascending=up, na_position="last", kind="stable")
    ranked = ranked.reset_index(drop=True)
    scored = ranked[score].notna()
    ranked["rank"] = np.where(scored, np.arange(1, len(ranked) + 1), np.nan)
    return ranked


def best_trial_ids(trials: pd.DataFrame, score: str, mode: str, k: int | None = None) -> list[str]:
    """Ids of the best `k` (all when None) trials that did not fail, with a finite score."""
    ok = trials[(trials["status"] != "ERROR") & trials[score].notna()]
    ids = rank_trials(ok, score, mode)["trial_id"].astype(str).tolist()
    return ids if k is None else ids[:k]
