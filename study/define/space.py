"""A validated `StudyConfig` as Ray Tune objects: param space, search algorithm, scheduler.

Imported only by the sweep (it imports Ray and Optuna); `study.define.schema` stays pure Python.

    tuner = tune.Tuner(trainable, param_space=tune_param_space(study),
                       tune_config=tune_config(study))

Fixed values go into the param space as constants, so every trial's config, Tune's progress
table and the checkpoints show them. Conditional values (`depends_on`) are left out: Optuna
cannot express them; the trainable and the results writer fill them in with
`study.define.schema.resolve_trial_config`, which also fills fixed ones, so either way works.

Reproducibility: `optuna` uses `TPESampler(seed=search.seed)`; `random` and `grid` use
`BasicVariantGenerator(random_state=search.seed)`, which draws every `choice`/`uniform`/...
value from one numpy generator seeded once, so the same seed gives the same sequence of
trial configs. With several trials in flight, TPE's later suggestions depend on which results
arrived first, so only the random/grid sequence is exactly repeatable when run concurrently.
"""

from __future__ import annotations

from typing import Any

from ray import tune
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, TrialScheduler
from ray.tune.search import BasicVariantGenerator, ConcurrencyLimiter, SearchAlgorithm, Searcher

from study.define.schema import StudyConfig, max_epochs


def tune_param_space(cfg: StudyConfig) -> dict[str, Any]:
    """name -> tune.choice/grid_search/uniform/loguniform/randint, or the fixed value."""
    space: dict[str, Any] = {}
    for name, dim in cfg.space.items():
        if dim.kind == "fixed":
            space[name] = dim.values[0]
        elif dim.kind == "choice":
            space[name] = tune.choice(list(dim.values))
        elif dim.kind == "grid":  # with num_samples N, the grid is run N times
            space[name] = tune.grid_search(list(dim.values))
        elif dim.kind == "uniform":
            space[name] = tune.uniform(dim.low, dim.high)
        elif dim.kind == "loguniform":
            space[name] = tune.loguniform(dim.low, dim.high)
        elif dim.kind == "randint":  # high exclusive, as in the YAML
            space[name] = tune.randint(dim.low, dim.high)
    return space


def build_search_alg(cfg: StudyConfig) -> Searcher | SearchAlgorithm:
    """Optuna TPE (seeded, behind a ConcurrencyLimiter when `max_concurrent` is set), or Tune's
    BasicVariantGenerator for `random` and `grid` (seeded, with `max_concurrent` built in) and
    for an `optuna` study whose dimensions are all fixed or conditional.

    The concurrency limit is inside the returned object: give `tune.TuneConfig`
    `max_concurrent_trials=None` (as `tune_config` does), or the same number.
    """
    # Optuna refuses an empty space; with every dimension fixed there is nothing to search.
    if cfg.search.algorithm == "optuna" and any(dim.sampled for dim in cfg.space.values()):
        from optuna.samplers import TPESampler
        from ray.tune.search.optuna import OptunaSearch

        # metric and mode come from TuneConfig; giving them here too makes Tune refuse.
        searcher: Searcher = OptunaSearch(sampler=TPESampler(seed=cfg.search.seed))
        if cfg.max_concurrent:
            searcher = ConcurrencyLimiter(searcher, max_concurrent=cfg.max_concurrent)
        return searcher
    return BasicVariantGenerator(
        max_concurrent=cfg.max_concurrent or 0, random_state=cfg.search.seed
    )


def build_scheduler(cfg: StudyConfig) -> TrialScheduler:
    """ASHA over epochs (`training_iteration`: one `tune.report` per epoch), or FIFO (none)."""
    if cfg.scheduler.name == "asha":
        return ASHAScheduler(
            time_attr="training_iteration",
            max_t=max_epochs(cfg),
            grace_period=cfg.scheduler.grace_period,
            reduction_factor=cfg.scheduler.reduction_factor,
        )
    return FIFOScheduler()


def resolve_gpu(cfg: StudyConfig, cuda_available: bool) -> float:
    """GPUs per trial: `auto` is 1 where CUDA is present and 0 otherwise; a number as given.

    A number is not checked against this machine: on a cluster the GPUs may be on other nodes.
    """
    if cfg.resources.gpu == "auto":
        return 1.0 if cuda_available else 0.0
    return float(cfg.resources.gpu)


def tune_config(cfg: StudyConfig) -> tune.TuneConfig:
    """Metric, mode, samples, search algorithm and scheduler of the study, wired together."""
    return tune.TuneConfig(
        metric=cfg.metric.name,
        mode=cfg.metric.mode,
        num_samples=cfg.num_samples,
        search_alg=build_search_alg(cfg),
        scheduler=build_scheduler(cfg),
        max_concurrent_trials=None,  # already inside the search algorithm
        # A finished trial's worker process runs the next trial: no new Python process, no
        # second import of torch and the trainable per trial (seconds each on a small machine;
        # python -m retina.bench measures it). train_trial sets every process-wide setting
        # (seed, threads, determinism, compile caches) itself at its start.
        reuse_actors=True,
    )


# A confirm trial's config is one point of the grid over (cell, seed): {"cell": {the cell's
# best search trial's hyperparameters}, "seed": training seed}. Search trials have neither.
CELL_KEY, SEED_KEY = "cell", "seed"


def confirm_param_space(cells: list[dict[str, Any]], seeds: list[int]) -> dict[str, Any]:
    """Every cell's configuration once per training seed (Tune's grid: cells x seeds)."""
    return {CELL_KEY: tune.grid_search(cells), SEED_KEY: tune.grid_search(seeds)}


def trial_values(config: dict[str, Any]) -> dict[str, Any]:
    """The hyperparameter values of a trial's config, search or confirm, at the top level."""
    cell = config.get(CELL_KEY)
    return {**config, **cell} if isinstance(cell, dict) else dict(config)


CONFIRM_SEED_OFFSET = 1000  # confirm seeds never repeat the search's training seed (study.seed)


def confirm_seeds(study: StudyConfig, start: int = 0, count: int | None = None) -> list[int]:
    """The training seeds of the confirm stage's runs (one per seed, in every cell): run
    indices `start`.. of the study, `confirm.seeds` of them unless `count` (--more-seeds)."""
    count = study.confirm.seeds if count is None else count
    # Modulo: numpy seeds must stay below 2**32 whatever study.seed is.
    return [(study.seed + CONFIRM_SEED_OFFSET + i) % 2**32 for i in range(start, start + count)]


def trial_seed(cfg: StudyConfig, config: dict[str, Any]) -> int:
    """The training seed of a trial: its own (confirm trials), else the study's."""
    return int(config.get(SEED_KEY, cfg.seed))
