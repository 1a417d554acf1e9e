"""The search of `--more`: a searcher and a scheduler that have seen every earlier trial.

    config = warm_tune_config(study, store, trials=4, growth=1)
    tune.Tuner(trainable, param_space=..., tune_config=config, ...)

Optuna's TPE gets the earlier search trials as Optuna trials (study.record.optuna_log, the
same record as `optuna.log`): each finished trial with its value, each ASHA-stopped one as
PRUNED with its val metric per epoch up to the rung it reached (TPE ranks a pruned trial by
its last intermediate value), failed ones as FAIL. They are added to the Optuna study that
Ray's `OptunaSearch` then loads (its `storage`/`study_name`), so its suggestions continue the
search rather than restart it. ASHA's rungs are filled with the earlier trials' results
(study.run.ray_private.prefill_rungs), so a new trial is stopped against the whole study.
The sampler's seed moves on with each growth: the same seed would draw the first random
configs of the study again.
"""

from __future__ import annotations

import dataclasses

from ray import tune
from ray.tune.schedulers import AsyncHyperBandScheduler
from ray.tune.search import ConcurrencyLimiter

from study.define.optuna_space import optuna_distributions
from study.define.schema import StudyConfig
from study.define.space import tune_config
from study.record.layout import Stage
from study.record.optuna_log import OptunaLog
from study.record.results import ResultsStore
from study.run.ray_private import prefill_rungs


def earlier_trials(study: StudyConfig, store: ResultsStore) -> list:
    """Every ended search trial of `store` as an Optuna FrozenTrial."""
    log = OptunaLog(store.folder, study.name, optuna_distributions(study), study.metric.mode)
    return log.frozen_trials(store, Stage.SEARCH)


def earlier_rewards(store: ResultsStore) -> dict[str, dict[int, float]]:
    """trial id -> {epoch: the study metric} of every search trial in `store`."""
    out: dict[str, dict[int, float]] = {}
    search = {t for t, info in store.trials.items() if info.get("stage", "search") == "search"}
    for (trial_id, epoch), row in store.epochs.items():
        if trial_id in search:
            out.setdefault(trial_id, {})[int(epoch)] = float(row.get(store.metric))
    return out


def warm_searcher(study: StudyConfig, store: ResultsStore, seed: int):
    """(Ray's OptunaSearch whose Optuna study already holds every earlier search trial of
    `store`, that Optuna storage, the earlier trials); TPE seeded with `seed`."""
    import optuna
    from optuna.samplers import TPESampler
    from ray.tune.search.optuna import OptunaSearch

    earlier = earlier_trials(study, store)
    storage = optuna.storages.InMemoryStorage()
    direction = "maximize" if study.metric.mode == "max" else "minimize"
    ot = optuna.create_study(storage=storage, study_name=study.name, direction=direction)
    ot.add_trials(earlier)
    # OptunaSearch loads this study (create_study(load_if_exists=True) on its storage).
    searcher = OptunaSearch(sampler=TPESampler(seed=seed), storage=storage, study_name=study.name)
    return searcher, storage, earlier


def warm_tune_config(
    study: StudyConfig, store: ResultsStore, trials: int, growth: int
) -> tuple[tune.TuneConfig, str]:
    """The TuneConfig of the `growth`-th --more (1-based) of `trials` trials, and one line
    saying what the searcher and the scheduler were given."""
    search = dataclasses.replace(study.search, seed=study.search.seed + growth)
    config = tune_config(dataclasses.replace(study, num_samples=trials, search=search))
    said = []
    if study.search.algorithm == "optuna" and any(d.sampled for d in study.space.values()):
        searcher, _, earlier = warm_searcher(study, store, search.seed)
        if study.max_concurrent:
            searcher = ConcurrencyLimiter(searcher, max_concurrent=study.max_concurrent)
        config = dataclasses.replace(config, search_alg=searcher)
        states = [t.state.name for t in earlier]
        said.append(
            f"the searcher saw {len(earlier)} earlier trials ("
            + ", ".join(f"{states.count(s)} {s.lower()}" for s in sorted(set(states)))
            + ")"
        )
    else:
        said.append(f"the {study.search.algorithm} search draws new configs (seed {search.seed})")
    if isinstance(config.scheduler, AsyncHyperBandScheduler):
        count = prefill_rungs(config.scheduler, earlier_rewards(store), study.metric.mode)
        said.append(f"ASHA's rungs hold {count} earlier results")
    return config, "warm start: " + "; ".join(said)
