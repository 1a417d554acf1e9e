"""Hyperparameter importances of the finished trials, with Optuna's PED-ANOVA evaluator.

The Parquet rows are turned back into an in-memory Optuna study (`optuna.create_study` +
`add_trials(create_trial(params, distributions, value))`), so importances are available for any
search algorithm the sweep used. PED-ANOVA needs no scikit-learn (fANOVA and mean-decrease-
impurity do, and it is not a dependency). Too few trials, or nothing that varies: skipped with
a note instead of a number that means nothing.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field

import numpy as np
import optuna
import pandas as pd
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

from study.analyze.figures_hparams import axis_kind, categories

MIN_TRIALS = 4
METHOD = "PED-ANOVA, optuna.importance.PedAnovaImportanceEvaluator"


@dataclass(frozen=True)
class Importance:
    """`values` is empty when skipped; `note` says why, or how the numbers were made."""

    method: str
    values: dict[str, float] = field(default_factory=dict)
    note: str = ""


def _native(value):
    """Optuna's categorical choices must be plain Python None/bool/int/float/str."""
    if isinstance(value, np.generic):
        return value.item()
    return value


def _distribution(name: str, values: pd.Series, space: dict | None) -> BaseDistribution:
    kind = axis_kind(name, values, space)
    if kind == "category":
        return CategoricalDistribution([_native(v) for v in categories(values)])
    low, high = float(values.min()), float(values.max())
    spec = (space or {}).get(name)
    if isinstance(spec, dict) and len(spec) == 1:  # widen to the searched range where known
        bounds = next(iter(spec.values()))
        if isinstance(bounds, list) and len(bounds) >= 2:
            low, high = min(low, float(bounds[0])), max(high, float(bounds[1]))
    if pd.api.types.is_integer_dtype(values) and kind == "linear":
        return IntDistribution(int(low), int(high))
    return FloatDistribution(low, high, log=kind == "log")


def varying(finished: pd.DataFrame, hyperparameters: list[str]) -> list[str]:
    """Hyperparameters that take at least two values among the finished trials."""
    return [h for h in hyperparameters if len(categories(finished[h])) >= 2]


def param_importances(
    finished: pd.DataFrame,
    hyperparameters: list[str],
    metric: str,
    mode: str,
    space: dict | None = None,
) -> Importance:
    """Importance of each varying hyperparameter for reaching the top trials by `metric`.

    A hyperparameter that some trials lack (a conditional one, e.g. momentum for SGD only) is
    left out, and the note says so, rather than dropping those trials."""
    rows = finished.dropna(subset=[f"best_{metric}"])
    names = [h for h in varying(rows, hyperparameters) if rows[h].notna().all()]
    partial = [h for h in varying(rows, hyperparameters) if h not in names]
    n = len(rows)
    if n < MIN_TRIALS:
        return Importance(
            METHOD,
            note=f"skipped: needs at least {MIN_TRIALS} finished trials with a {metric}, "
            f"this study has {n}",
        )
    if not names:
        return Importance(
            METHOD, note="skipped: no hyperparameter varies across the finished trials"
        )
    distributions = {h: _distribution(h, rows[h], space) for h in names}
    # PED-ANOVA compares the top quantile with the rest; keep >= 5 trials in it when possible.
    quantile = min(0.5, max(0.1, 5 / n))
    trials = [
        optuna.trial.create_trial(
            params={h: _native(r[h]) for h in names},
            distributions=distributions,
            value=float(r[f"best_{metric}"]),
        )
        for _, r in rows.iterrows()
    ]
    level = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # no "study created" chatter
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # PED-ANOVA is flagged experimental
            study = optuna.create_study(direction="maximize" if mode == "max" else "minimize")
            study.add_trials(trials)
            evaluator = optuna.importance.PedAnovaImportanceEvaluator(target_quantile=quantile)
            values = optuna.importance.get_param_importances(study, evaluator=evaluator)
    except (ValueError, RuntimeError, ZeroDivisionError) as exc:  # degenerate data: say so
        return Importance(METHOD, note=f"skipped: the evaluator failed ({exc})")
    finally:
        optuna.logging.set_verbosity(level)
    values = {k: float(v) for k, v in values.items() if not math.isnan(v)}
    note = (
        f"{n} finished trials; importance of each hyperparameter for reaching the top "
        f"{quantile:.0%} of trials by {metric}"
        + (" (few trials: read as a rough ranking)" if n < 20 else "")
        + (f"; left out, not set in every trial: {', '.join(partial)}" if partial else "")
    )
    return Importance(METHOD, values, note)
