"""The Ray side of a sweep: start or join Ray, run (or restore) the Tuner, test the best.

Called by `study.sweep` after the preflight has validated the space and built the cache.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import ray
from ray import tune

from retina.prepare import PreparedData
from study.conclude.pipeline import conclude_study
from study.define.schema import StudyConfig, hyperparameter_names
from study.define.space import tune_config, tune_param_space
from study.record.layout import TUNE_DIR
from study.record.ranking import rank_trials
from study.record.results import ResultsStore
from study.run.experiment import (
    experiment_finished,
    fit,
    restore,
    results_by_trial,
    run_config,
    trainable,
)
from study.run.live_report import CPU_SHARE, LiveReport
from study.run.ray_token import make_private, token_file, warn_if_shared

TABLE_PARAMS = {
    "arch": "arch",
    "pretrained": "pretrained",
    "lr": "lr",
    "batch_size": "batch",
    "weight_decay": "wd",
}
TABLE_METRICS = {"epoch": "epoch", "val_acc": "val acc", "val_kappa": "val kappa"}


def start_ray(address: str | None, dashboard_host: str) -> None:
    token = token_file()
    if address:  # join a cluster; its dashboard was configured by whoever started it
        ctx = ray.init(address=address, log_to_driver=True)
        warn_if_shared(token)  # not ours to change: say how
    else:  # "local": a new Ray of its own, never one that `ray start` left on this machine
        make_private(token)  # an old token is reused by ray.init: private before it serves
        ctx = ray.init(
            address="local",
            include_dashboard=True,
            dashboard_host=dashboard_host,
            log_to_driver=True,
        )
        make_private(token)  # ray.init writes a new one world-readable (0666 minus the umask)
    url = getattr(ctx, "dashboard_url", None)
    if url:  # token authentication is on: the dashboard asks for the token in this file
        print(f"Ray dashboard: http://{url} (token: {token})")
    else:
        print("Ray dashboard: not available (install ray[default])")


def build_tuner(
    study: StudyConfig, data: PreparedData, folder: Path, resume: bool, callbacks: list = ()
) -> tune.Tuner:
    """`callbacks`: more Tune callbacks (e.g. MLflow's) after the one that records results."""
    train = trainable(study, data, folder)
    if resume:
        restored = restore(folder / TUNE_DIR, train, tune_param_space(study), callbacks)
        if restored is not None:
            return restored
    reporter = tune.CLIReporter(
        parameter_columns={k: v for k, v in TABLE_PARAMS.items() if k in study.space},
        metric_columns=TABLE_METRICS,
        max_report_frequency=10,
        sort_by_metric=True,  # metric and mode come from the TuneConfig
    )
    return tune.Tuner(
        train,
        param_space=tune_param_space(study),
        tune_config=tune_config(study),
        run_config=run_config(study, folder, TUNE_DIR, "search", reporter, list(callbacks)),
    )


def leaderboard(store: ResultsStore, top: int = 10) -> str:
    df = store.trials_frame()
    df = df[df["stage"] == "search"]  # the search's ranking; confirm runs are summarised apart
    if df.empty:
        return "no trial finished an epoch"
    df = rank_trials(df, f"best_{store.metric}", store.mode).head(top)
    cols = [
        "trial_id",
        "status",
        *hyperparameter_names_in(df, store),
        "epochs_run",
        "best_val_acc",
        "best_val_kappa",
        "test_acc",
        "test_kappa",
    ]
    with pd.option_context(
        "display.width", 200, "display.max_columns", 30, "display.float_format", "{:.4g}".format
    ):
        return df[cols].to_string(index=False)


def hyperparameter_names_in(df: pd.DataFrame, store: ResultsStore) -> list[str]:
    return [h for h in store.hyperparameters if h in df.columns]


def expected_trials(study: StudyConfig) -> int:
    """Trials a complete study runs: `num_samples` times each combination of the grids."""
    count = study.num_samples
    for dim in study.space.values():
        if dim.kind == "grid":
            count *= len(dim.values)
    return count


def run_study(
    study: StudyConfig,
    data: PreparedData,
    folder: Path,
    address: str | None,
    dashboard_host: str,
    resume: bool,
    report_every: float = 30,
    report_cpu_share: float = CPU_SHARE,
    callbacks: list = (),
) -> bool:
    """Run the search to its end (True) or until interrupted (False); then conclude it.

    `report_every`: seconds between live renders of report.html (0: none); `report_cpu_share`:
    the most of this machine's CPU time they may use; `callbacks`: more Tune callbacks (e.g.
    MLflow's), after the one that writes the Parquet files.
    """
    start_ray(address, dashboard_host)
    live = LiveReport(folder, expected_trials(study), report_every, report_cpu_share)
    if report_every > 0:
        print(f"live report: {live.path} (rewritten at most every {report_every:g} s, "
              f"with at most {report_cpu_share:.1%} of this machine's CPU)")  # fmt: skip
    try:
        with live:  # rewritten through the confirm stage too, until the final report
            grid = fit(build_tuner(study, data, folder, resume, list(callbacks)), folder)
            store = ResultsStore(
                folder, hyperparameter_names(study), study.metric.name, study.metric.mode
            )
            store.load()
            finished = experiment_finished(grid, expected_trials(study), store)
            if finished:
                by_id = results_by_trial(grid)
                finished = conclude_study(study, data, folder, store, by_id, list(callbacks),
                                          on_confirm_plan=live.expect_confirm)  # fmt: skip
        print(leaderboard(store))
        live.final()  # after the test results: the report without the live banner
        return finished
    finally:
        ray.shutdown()
