"""Driver-side Ray Tune callback that records every trial result in the results folder.

Runs in the driver process (never in a trial), so one writer owns `results/<study>/`: the
driver's one `ResultsStore`, made by the sweep and handed to the callback of each experiment
(search, then confirm) and to the conclusion, so nothing is re-read from the disk. Each
result is appended to the study's journal within the call that receives it (one small durable
write); the Parquet files are rebuilt from memory every few seconds and when the study ends.
The callback times itself (`busy_s`, `results`) for the sweep's last lines: the driver's own
cost per result and its share of the search (`study.bench_driver` times it from outside).
It also owns the checkpoint retention (`study.run.retention`): it tells it each checkpoint Ray
registers and each experiment snapshot Tune writes, since it sees both.
"""

from __future__ import annotations

import functools
import time
from pathlib import Path

from ray import tune

from study.define.schema import StudyConfig, resolve_trial_config
from study.define.space import trial_seed, trial_values
from study.record.layout import TUNE_DIR, Stage, Status
from study.record.results import ResultsStore
from study.record.storage import Storage
from study.run.keep import ALREADY_RECORDED, KEEP_SCORE
from study.run.ray_private import driver_staging_path
from study.run.retention import Retention
from study.run.snapshot import SnapshotKeeper

PARQUET_EVERY_S = 5.0  # the Parquet files lag the journal by at most about this much


def timed(method):
    """Adds the wall time of a callback method to `self.busy_s` (the driver's own cost)."""

    @functools.wraps(method)
    def run(self, *args, **kwargs):
        started = time.perf_counter()
        try:
            return method(self, *args, **kwargs)
        finally:
            self.busy_s += time.perf_counter() - started

    return run


def _error_text(trial) -> str:
    """The last line of a trial's exception: what failed, without the remote traceback."""
    error = trial.get_error()
    text = str(error) if error is not None else "trial failed"
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1][:500] if lines else "trial failed"


class ParquetCallback(tune.Callback):
    """Feeds the driver's `store`; `stage` (search or confirm) is recorded with each trial;
    `experiment` is the folder under the store's folder that holds that Tuner's state."""

    def __init__(
        self,
        store: ResultsStore | None,
        study: StudyConfig,
        stage: Stage = Stage.SEARCH,
        experiment: str = TUNE_DIR,
        folder: Path | None = None,
    ):
        self.store = store
        self.folder = Path(folder) if folder is not None else store.folder
        self.study = study
        self.stage, self.experiment = stage, experiment
        # Epochs reported with a checkpoint that Ray has not registered yet, by trial id.
        self.unsaved: dict[str, dict] = {}
        # Trials started that Ray's saved state may not know yet: (config, seed) by trial id.
        self.starting: dict[str, tuple[dict, int]] = {}
        storage = Storage.resolve(study.storage, self.folder.parent)
        remote = None  # Tune's snapshot in a bucket: the keeper compares with it there
        if not storage.local:
            remote = (storage.fs, f"{storage.study_path(self.folder.name)}/{experiment}")
        self.keeper = SnapshotKeeper(self.folder / experiment, remote)
        # Deletes superseded checkpoints once no snapshot names them, where they are.
        self.retention = Retention(None if storage.local else storage.fs)
        self.busy_s, self.results = 0.0, 0  # time spent in this callback; results received
        self.started = time.perf_counter()

    def __getstate__(self):
        # Ray pickles callbacks with the experiment; the rows live in the driver's store and
        # its journal, not in the pickle. A resumed Tuner gets this session's callback instead
        # (study.run.experiment.restore), so a pickled one never records anything.
        fresh = ParquetCallback(None, self.study, self.stage, self.experiment, self.folder)
        return fresh.__dict__

    def _store(self) -> ResultsStore:
        if self.store is None:
            raise RuntimeError("ParquetCallback restored from Ray's pickle without a store")
        return self.store

    @timed
    def setup(self, **info):
        self.started = time.perf_counter()
        self._store()

    @timed
    def on_trial_start(self, iteration, trials, trial, **info):
        # Recorded once Ray's saved state knows the trial (a snapshot, or the trial's first
        # news): a driver killed in between leaves no trial that --resume cannot continue.
        config = resolve_trial_config(self.study, trial_values(trial.config))
        self.starting[trial.trial_id] = (config, trial_seed(self.study, trial.config))

    def _started(self, trial_id: str) -> None:
        """Record a trial's start if it is still held back: before anything else about it."""
        held = self.starting.pop(trial_id, None)
        if held is not None:
            config, seed = held
            self._store().start_trial(trial_id, config, stage=self.stage, seed=seed)

    @timed
    def on_trial_recover(self, iteration, trials, trial, **info):
        # Its retry starts from Ray's last registered checkpoint and reports the unsaved
        # epoch again: record it then, once.
        self._started(trial.trial_id)
        self.unsaved.pop(trial.trial_id, None)
        self._store().mark_running(trial.trial_id)

    @timed
    def on_trial_result(self, iteration, trials, trial, result, **info):
        self.results += 1
        self._started(trial.trial_id)
        store = self._store()
        if result.get(ALREADY_RECORDED):
            return  # a resumed trial's last epoch, told again for Tune's sake
        if result.get("failed"):
            store.record_failure(trial.trial_id, str(result["failed"]))
        elif result.get("should_checkpoint"):
            # Ray registers this epoch's checkpoint only after a second call to the trial's
            # worker (`save`); a worker killed before then is retried from the checkpoint
            # before. Written once registered (on_trial_save), an epoch in the results is
            # never run again.
            self.unsaved[trial.trial_id] = dict(result)
        elif "epoch" in result:
            self._record(trial.trial_id, result)

    @timed
    def on_trial_save(self, iteration, trials, trial, **info):
        self._started(trial.trial_id)
        result = self.unsaved.pop(trial.trial_id, None)
        if result is not None:
            self._record(trial.trial_id, result)
            if trial.checkpoint is not None:  # Ray's latest; the same folder when none came
                best = float(result.get(KEEP_SCORE) or 0.0) > 0  # the trainable's ranking
                self.retention.saved(trial.trial_id, trial.checkpoint.path, result["epoch"], best)

    def _record(self, trial_id: str, result: dict) -> None:
        # Journaled now (on the disk when this returns): Ray's experiment snapshot at the end
        # of this step may name this epoch's checkpoint, and after a kill --resume continues
        # after it. The Parquet files follow within seconds (on_step_end).
        self._store().record_epoch(trial_id, result)

    @timed
    def on_trial_complete(self, iteration, trials, trial, **info):
        self._started(trial.trial_id)
        store = self._store()
        result = self.unsaved.pop(trial.trial_id, None)
        if result is not None:  # finished before Ray saved its last checkpoint: it ran
            store.record_epoch(trial.trial_id, result)
        store.finish_trial(trial.trial_id, Status.TERMINATED)

    @timed
    def on_trial_error(self, iteration, trials, trial, **info):
        # An unsaved epoch is dropped: --resume retries the trial from Ray's last checkpoint.
        self._started(trial.trial_id)
        self.unsaved.pop(trial.trial_id, None)
        store = self._store()
        store.finish_trial(trial.trial_id, Status.ERROR, _error_text(trial))

    @timed
    def on_step_end(self, iteration, trials, **info):
        # Tune wrote its snapshot to its staging folder in this step, in this thread: keep a
        # whole copy, since its copy in tune/ is overwritten in place (see study.run.snapshot).
        if self._snapshot(trials):
            for trial_id in list(self.starting):  # Ray saved its state in this step: it knows them
                self._started(trial_id)
        self._store().flush(force=False, min_interval_s=PARQUET_EVERY_S)

    def _snapshot(self, trials) -> bool:
        """Keep a copy of the snapshot Tune wrote in this step, if it wrote one (whether it
        did), and tell the retention which snapshots were written and which one is in tune/."""
        staging = driver_staging_path(trials[0]) if trials else None
        if not staging:
            return False
        seen = self.keeper.generation
        try:
            kept = self.keeper.keep(Path(staging))
        finally:  # a snapshot Tune wrote counts even when our copy of it failed
            if self.keeper.generation != seen:
                self.retention.snapshot_taken(self.keeper.generation)
        durable = self.keeper.durable()
        if durable is not None:
            self.retention.snapshot_durable(durable)
        return kept

    @timed
    def on_experiment_end(self, trials, **info):
        for trial_id in list(self.starting):  # Ray saves its state at the end, whatever ended it
            self._started(trial_id)
        store = self._store()
        # After a killed driver, Ray's snapshot may predate a trial that had started: --resume
        # does not know it, so its row would say RUNNING forever. Say what happened instead.
        known = {t.trial_id for t in trials}
        for trial_id, row in store.trials.items():
            if trial_id not in known and row.get("status") in ("RUNNING", "PENDING"):
                store.record_failure(
                    trial_id, "lost: the sweep was killed before Ray saved this trial's state"
                )
        store.flush()  # whatever ended the search (its end, Ctrl-C, an error): up to date
        # Tune's last snapshot (written and copied into tune/ before this call when the loop
        # ended normally or by Ctrl-C) frees every superseded checkpoint.
        self._snapshot(trials)
        self.retention.drain()
        print(self.cost_line(time.perf_counter() - self.started))

    def cost_line(self, wall_s: float) -> str:
        """The driver's own cost, for the sweep's last lines."""
        per = 1000 * self.busy_s / max(1, self.results)
        share = 100 * self.busy_s / wall_s if wall_s > 0 else 0.0
        return (
            f"recording results: {self.busy_s:.1f} s of driver time for {self.results} results "
            f"({per:.2f} ms each, {share:.1f} % of the search's {wall_s:.0f} s)"
        )
