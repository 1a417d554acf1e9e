"""Driver-side Ray Tune callback that mirrors every trial result into the Parquet files.

Runs in the driver process (never in a trial), so one writer owns `results/<study>/` and
files are replaced atomically while the sweep runs.
"""

from __future__ import annotations

from pathlib import Path

from ray import tune

from study.define.schema import StudyConfig, hyperparameter_names, resolve_trial_config
from study.define.space import trial_seed, trial_values
from study.record.results import ResultsStore
from study.run.snapshot import TUNE_DIR, SnapshotKeeper


def _error_text(trial) -> str:
    """The last line of a trial's exception: what failed, without the remote traceback."""
    error = trial.get_error()
    text = str(error) if error is not None else "trial failed"
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1][:500] if lines else "trial failed"


class ParquetCallback(tune.Callback):
    """`stage` (search or confirm) is recorded with each trial; `experiment` is the folder
    under `folder` that holds that Tuner's state."""

    def __init__(
        self, folder: Path, study: StudyConfig, stage: str = "search", experiment: str = TUNE_DIR
    ):
        self.folder = Path(folder)
        self.study = study
        self.stage, self.experiment = stage, experiment
        self.store: ResultsStore | None = None
        # Epochs reported with a checkpoint that Ray has not registered yet, by trial id.
        self.unsaved: dict[str, dict] = {}
        self.keeper = SnapshotKeeper(self.folder / experiment)

    def __getstate__(self):
        # Ray pickles callbacks with the experiment; the rows live on disk, not in the pickle.
        fresh = ParquetCallback(self.folder, self.study, self.stage, self.experiment)
        return fresh.__dict__

    def _store(self) -> ResultsStore:
        if self.store is None:
            metric = self.study.metric
            self.store = ResultsStore(
                self.folder, hyperparameter_names(self.study), metric.name, metric.mode
            )
            self.store.load()  # a resumed study keeps every epoch it already finished
        return self.store

    def setup(self, **info):
        self._store()

    def on_trial_start(self, iteration, trials, trial, **info):
        store = self._store()
        config = resolve_trial_config(self.study, trial_values(trial.config))
        seed = trial_seed(self.study, trial.config)
        store.start_trial(trial.trial_id, config, stage=self.stage, seed=seed)
        store.flush(force=False)

    def on_trial_recover(self, iteration, trials, trial, **info):
        # Its retry starts from Ray's last registered checkpoint and reports the unsaved
        # epoch again: record it then, once.
        self.unsaved.pop(trial.trial_id, None)
        self._store().trials.setdefault(trial.trial_id, {})["status"] = "RUNNING"

    def on_trial_result(self, iteration, trials, trial, result, **info):
        store = self._store()
        if result.get("failed"):
            store.record_failure(trial.trial_id, str(result["failed"]))
            store.flush()
        elif result.get("should_checkpoint"):
            # Ray registers this epoch's checkpoint only after a second call to the trial's
            # worker (`save`); a worker killed before then is retried from the checkpoint
            # before. Written once registered (on_trial_save), an epoch in the results is
            # never run again.
            self.unsaved[trial.trial_id] = dict(result)
        elif "epoch" in result:
            self._record(trial.trial_id, result)

    def on_trial_save(self, iteration, trials, trial, **info):
        result = self.unsaved.pop(trial.trial_id, None)
        if result is not None:
            self._record(trial.trial_id, result)

    def _record(self, trial_id: str, result: dict) -> None:
        store = self._store()
        store.record_epoch(trial_id, result)
        # Now, not throttled: Ray's experiment snapshot at the end of this step may name
        # this epoch's checkpoint, and after a kill --resume continues after it.
        store.flush()

    def on_trial_complete(self, iteration, trials, trial, **info):
        store = self._store()
        result = self.unsaved.pop(trial.trial_id, None)
        if result is not None:  # finished before Ray saved its last checkpoint: it ran
            store.record_epoch(trial.trial_id, result)
        store.finish_trial(trial.trial_id, "TERMINATED")
        store.flush()

    def on_trial_error(self, iteration, trials, trial, **info):
        # An unsaved epoch is dropped: --resume retries the trial from Ray's last checkpoint.
        self.unsaved.pop(trial.trial_id, None)
        store = self._store()
        store.finish_trial(trial.trial_id, "ERROR", _error_text(trial))
        store.flush()

    def on_step_end(self, iteration, trials, **info):
        # Tune wrote its snapshot to its staging folder in this step, in this thread: keep a
        # whole copy, since its copy in tune/ is overwritten in place (see study.run.snapshot).
        storage = getattr(trials[0], "storage", None) if trials else None
        staging = getattr(storage, "experiment_driver_staging_path", None)
        if staging:
            self.keeper.keep(Path(staging))

    def on_experiment_end(self, trials, **info):
        store = self._store()
        # After a killed driver, Ray's snapshot may predate a trial that had started: --resume
        # does not know it, so its row would say RUNNING forever. Say what happened instead.
        known = {t.trial_id for t in trials}
        for trial_id, row in store.trials.items():
            if trial_id not in known and row.get("status") in ("RUNNING", "PENDING"):
                store.record_failure(
                    trial_id, "lost: the sweep was killed before Ray saved this trial's state"
                )
        store.flush()
