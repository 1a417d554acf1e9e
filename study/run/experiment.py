"""What every Tune experiment of a study shares: the trainable, the run config and restore.

The search (`study.run.tuner`, in `results/<study>/tune/`) and the confirmation stage
(`study.conclude.confirm`, in `results/<study>/tune-confirm/`) are two Tuner experiments with
the same resources, checkpoints, retries and results callback, built here; both feed the
driver's one results store.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from ray import tune

from retina.prepare import PreparedData
from study.define.schema import StudyConfig
from study.define.space import resolve_gpu
from study.record.disk import DISK_FULL, disk_full_error
from study.record.layout import ENDED
from study.record.results import ResultsStore
from study.record.storage import Storage
from study.run.callback import ParquetCallback
from study.run.keep import checkpoint_config
from study.run.ray_private import run_config_of, trials_of
from study.run.snapshot import repair
from study.run.trainable import train_trial


def trainable(study: StudyConfig, data: PreparedData, folder: Path):
    """`train_trial` with the study's data and its resources per trial."""
    gpu = resolve_gpu(study, torch.cuda.is_available())
    return tune.with_resources(
        tune.with_parameters(train_trial, data=data, study=study, results=folder),
        {"cpu": study.resources.cpu, "gpu": gpu},
    )


def callbacks_for(study: StudyConfig, store: ResultsStore, name: str, stage: str, extra=()) -> list:
    """The results callback feeding the driver's `store`, then the `extra` ones (MLflow's)."""
    return [ParquetCallback(store, study, stage=stage, experiment=name), *extra]


def storage_of(study: StudyConfig, folder: Path) -> Storage:
    """The study's storage: `storage:` (--storage), or the results folder that holds `folder`."""
    return Storage.resolve(study.storage, Path(folder).parent)


def experiment_path(study: StudyConfig, folder: Path, name: str) -> tuple[str, object | None]:
    """Where experiment `name` (tune/, tune-confirm/) lives: its path and file system (None:
    the local disk, as Ray's default)."""
    storage = storage_of(study, folder)
    path = f"{storage.study_path(Path(folder).name)}/{name}"
    return path, None if storage.local else storage.fs


def run_config(
    study: StudyConfig, store: ResultsStore, name: str, stage: str, reporter=None, callbacks=()
) -> tune.RunConfig:
    """Experiment `name` in the study's storage (the store's folder by default), its trials
    recorded in `store` with `stage`; `callbacks` run after the results callback (MLflow's)."""
    storage = storage_of(study, store.folder)
    return tune.RunConfig(
        name=name,
        storage_path=storage.study_path(store.folder.name),
        storage_filesystem=None if storage.local else storage.fs,
        callbacks=callbacks_for(study, store, name, stage, callbacks),
        checkpoint_config=checkpoint_config(),  # the latest + the best so far (study.run.keep)
        failure_config=tune.FailureConfig(max_failures=study.max_failures),
        progress_reporter=reporter,
        verbose=1,
    )


def restore(
    experiment: str, trainable, param_space: dict, callbacks: list, fs=None
) -> tune.Tuner | None:
    """The Tuner of an interrupted experiment, to continue it; None when there is none.

    Its callbacks are this session's `callbacks` (`callbacks_for`: the results callback on
    this driver's store, then e.g. MLflow's, given with --resume), not the pickled ones of the
    session that was interrupted.
    """
    if not tune.Tuner.can_restore(str(experiment), storage_filesystem=fs):
        return None
    if fs is None:  # a full local disk can cut Tune's state short; a bucket write is whole
        note = repair(Path(experiment))  # else Tune would silently start the experiment over
        if note:
            print(note, file=sys.stderr)
    # Finished trials stay finished; unfinished and errored ones continue from checkpoints.
    tuner = tune.Tuner.restore(
        str(experiment),
        trainable,
        storage_filesystem=fs,
        resume_unfinished=True,
        resume_errored=True,
        param_space=param_space,
    )
    # Tune restores the pickled callbacks and has no public way to change them; `fit` reads
    # this list, so this session's store and flags apply.
    run_config_of(tuner).callbacks = list(callbacks)
    return tuner


def fit(tuner: tune.Tuner, folder: Path):
    """`tuner.fit()`, with a full disk said as every other full disk of the sweep is."""
    try:
        return tuner.fit()
    except OSError as exc:  # Ray's own experiment state hit a full disk before our files
        if exc.errno in DISK_FULL:
            raise disk_full_error(folder) from None
        raise


def experiment_finished(grid, expected: int, store) -> bool:
    """Whether a fitted experiment ran all of its `expected` trials to their end.

    After Ctrl-C, Tune returns normally and marks the trials it stopped TERMINATED, as if they
    had finished; only the driver's results `store` knows they did not, since
    our callback records a trial's end only when Tune reports one.
    """
    trials = trials_of(grid)
    return len(trials) >= expected and all(
        t.status in ENDED and store.trials.get(t.trial_id, {}).get("status") in ENDED
        for t in trials
    )


def results_by_trial(grid) -> dict:
    """Trial id -> Ray's `Result`, for every trial, also one with no metrics in this session
    (a finished trial that --resume skipped): its checkpoints are still found on disk."""
    trials = trials_of(grid)  # the ResultGrid lists them in this order
    return {trial.trial_id: grid[i] for i, trial in enumerate(trials)}
