"""A study's sampled dimensions as Optuna distributions, the ones Ray's `OptunaSearch` makes.

    distributions = optuna_distributions(study)   # {"lr": FloatDistribution(3e-3, 3e-2, log=True), ...}

The study's Optuna storage (`results/<study>/optuna.log`, study.record.optuna_log) and the
warm start of `--more` (study.run.grow) add earlier trials with these distributions: Optuna
refuses a trial whose distribution of a parameter differs from the study's, so they mirror
`ray.tune.search.optuna.OptunaSearch.convert_search_space` (a test holds them equal). Fixed and
conditional dimensions are no parameters of the search (Optuna never chose them).
"""

from __future__ import annotations

from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

from study.define.schema import StudyConfig


def optuna_distributions(study: StudyConfig) -> dict[str, BaseDistribution]:
    """name -> distribution of every dimension the searcher chooses (grids as categories)."""
    out: dict[str, BaseDistribution] = {}
    for name, dim in study.space.items():
        if dim.kind in ("choice", "grid"):
            out[name] = CategoricalDistribution(list(dim.values))
        elif dim.kind == "uniform":
            out[name] = FloatDistribution(dim.low, dim.high)
        elif dim.kind == "loguniform":
            out[name] = FloatDistribution(dim.low, dim.high, log=True)
        elif dim.kind == "randint":  # the YAML's high is exclusive, Optuna's inclusive
            out[name] = IntDistribution(int(dim.low), int(dim.high) - 1)
    return out
