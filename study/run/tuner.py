"""The Ray side of a study: start or join Ray, and build the Tuners of its two experiments,
the search (`results/<study>/tune/`) and the confirm stage (`results/<study>/tune-confirm/`),
new or restored by `--resume`. Both record into the driver's one results store.

    start_ray(None, "127.0.0.1")
    grid = fit(build_search_tuner(study, data, store, resume=False), folder)

Called by `study.sweep` (the lifecycle) after the preflight has validated the space and built
the cache, and by the confirm stage (`study.conclude.confirm`).
"""

from __future__ import annotations

import ray
from ray import tune
from ray.tune.schedulers import FIFOScheduler
from ray.tune.search import BasicVariantGenerator

from retina.prepare import PreparedData
from study.define.dimensions import trial_count
from study.define.schema import StudyConfig
from study.define.space import confirm_param_space, tune_config, tune_param_space
from study.record.layout import CONFIRM_DIR, TUNE_DIR, Stage
from study.record.results import ResultsStore
from study.run.experiment import callbacks_for, experiment_path, restore, run_config, trainable
from study.run.ray_private import check_ray_version
from study.run.ray_token import make_private, make_token, token_file, warn_if_shared
from study.run.warm_start import warm_tune_config

TABLE_PARAMS = {
    "arch": "arch",
    "pretrained": "pretrained",
    "lr": "lr",
    "batch_size": "batch",
    "weight_decay": "wd",
}
TABLE_METRICS = {"epoch": "epoch", "val_acc": "val acc", "val_kappa": "val kappa"}


def start_ray(address: str | None, dashboard_host: str | None) -> None:
    """Join the cluster at `address`, or start a local Ray; `dashboard_host` None: without its
    dashboard (study.sweep's `--dashboard-host off`)."""
    check_ray_version()  # the private uses in study.run.ray_private were read against it
    token = token_file()
    if address:  # join a cluster; its dashboard was configured by whoever started it
        ctx = ray.init(address=address, log_to_driver=True)
        warn_if_shared(token)  # not ours to change: say how
    else:  # "local": a new Ray of its own, never one that `ray start` left on this machine
        make_token(token)  # a missing one: ours to make, private and whole before Ray reads it
        make_private(token)  # an old one is reused by ray.init: private before it serves
        ctx = ray.init(
            address="local",
            include_dashboard=dashboard_host is not None,
            dashboard_host=dashboard_host or "127.0.0.1",
            log_to_driver=True,
        )
        make_private(token)  # one Ray wrote itself (0666 minus the umask): private too
    url = getattr(ctx, "dashboard_url", None)
    if dashboard_host is None and not address:
        print("Ray dashboard: off (--dashboard-host off)")
    elif url:  # token authentication is on: the dashboard asks for the token in this file
        print(f"Ray dashboard: http://{url} (token: {token})")
    else:
        print("Ray dashboard: not available (install ray[default])")


def build_search_tuner(
    study: StudyConfig, data: PreparedData, store: ResultsStore, resume: bool, callbacks=()
) -> tune.Tuner:
    """The search: a new Tuner, or the interrupted one with `resume`. `callbacks`: more Tune
    callbacks (e.g. MLflow's) after the one that records results in `store`."""
    folder = store.folder
    train = trainable(study, data, folder)
    if resume:
        ours = callbacks_for(study, store, TUNE_DIR, Stage.SEARCH, callbacks)
        path, fs = experiment_path(study, folder, TUNE_DIR)
        restored = restore(path, train, tune_param_space(study), ours, fs)
        if restored is not None:
            return restored
    return tune.Tuner(
        train,
        param_space=tune_param_space(study),
        tune_config=tune_config(study),
        run_config=run_config(
            study, store, TUNE_DIR, Stage.SEARCH, _reporter(study), list(callbacks)
        ),
    )


def _reporter(study: StudyConfig) -> tune.CLIReporter:
    return tune.CLIReporter(
        parameter_columns={k: v for k, v in TABLE_PARAMS.items() if k in study.space},
        metric_columns=TABLE_METRICS,
        max_report_frequency=10,
        sort_by_metric=True,  # metric and mode come from the TuneConfig
    )


def build_growth_tuner(
    study: StudyConfig, data: PreparedData, store: ResultsStore, step: dict, growth: int,
    callbacks=(),
) -> tune.Tuner:  # fmt: skip
    """The `growth`-th `--more` (1-based; `step` as study.json records it: its `trials` and
    `experiment` folder): restored when its experiment exists (--resume, or a later --more),
    else new, warm-started from every search trial in `store` (study.run.warm_start)."""
    folder, experiment = store.folder, step["experiment"]
    train = trainable(study, data, folder)
    ours = callbacks_for(study, store, experiment, Stage.SEARCH, callbacks)
    path, fs = experiment_path(study, folder, experiment)
    restored = restore(path, train, tune_param_space(study), ours, fs)
    if restored is not None:
        return restored
    config, line = warm_tune_config(study, store, step["trials"], growth)
    print(line)
    return tune.Tuner(
        train,
        param_space=tune_param_space(study),
        tune_config=config,
        run_config=run_config(
            study, store, experiment, Stage.SEARCH, _reporter(study), list(callbacks)
        ),
    )


def build_confirm_tuner(
    study: StudyConfig,
    data: PreparedData,
    store: ResultsStore,
    cells: list[dict],
    seeds: list[int],
    callbacks=(),
    experiment: str = CONFIRM_DIR,
) -> tune.Tuner:
    """The confirm stage: a new Tuner over (cell, seed), or the interrupted one of this study
    (`--resume`); `callbacks` (e.g. MLflow's) log its runs as they log the search's.
    `experiment`: its folder, another one per batch of seeds added later (--more-seeds)."""
    folder = store.folder
    train, space = trainable(study, data, folder), confirm_param_space(cells, seeds)
    ours = callbacks_for(study, store, experiment, Stage.CONFIRM, callbacks)
    path, fs = experiment_path(study, folder, experiment)
    restored = restore(path, train, space, ours, fs)
    if restored is not None:
        return restored
    return tune.Tuner(
        train,
        param_space=space,
        tune_config=tune.TuneConfig(
            metric=study.metric.name,
            mode=study.metric.mode,
            num_samples=1,  # the grid is every run
            search_alg=BasicVariantGenerator(max_concurrent=study.max_concurrent or 0),
            scheduler=FIFOScheduler(),  # all epochs: no early stopping
            reuse_actors=True,
        ),
        run_config=run_config(study, store, experiment, Stage.CONFIRM, callbacks=callbacks),
    )


def expected_trials(study: StudyConfig) -> int:
    """Trials a complete study runs: `num_samples` times each combination of the grids."""
    return trial_count(study.space, study.num_samples)
