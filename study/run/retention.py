"""The driver deletes a trial's superseded checkpoints itself, once no snapshot needs them.

Why not Ray: with `CheckpointConfig(num_to_keep=N)` Ray 2.60 forces an experiment snapshot
whenever a trial has registered N checkpoints since the last one
(`TuneController._create_checkpoint_manager` passes `num_to_keep` as
`sync_every_n_trial_checkpoints`; `_ExperimentCheckpointManager.on_trial_checkpoint` then sets
`_should_force_sync_up`, tune/execution/experiment_state.py). With N=1 that is one snapshot of
every trial's state per result: O(trials) of Ray's time per result (150-190 ms at 1,024 small
trials). So Ray keeps every checkpoint (`num_to_keep=None`, study.run.keep: no forced
snapshot; Ray snapshots on its own clock, every 10 s or more) and this class deletes.

What a trial keeps at any moment:
- its latest checkpoint and its best so far by the one ranking (the trainable's `KEEP_SCORE`
  is > 0 exactly on a new best: `study.run.keep.BestSoFar`), as before;
- the latest checkpoint, and the best as of that one, named by every experiment snapshot that
  `--resume` may still read: the one in `tune/` (Tune restores from it) and each newer one
  that is not yet known to be there (Tune copies it in a background thread; `repair` may put
  back the newest kept copy). Once `tune/` holds snapshot g, older snapshots' names are free.

Everything else this session registered is deleted as soon as it is free: a checkpoint
superseded between two snapshots at once, one a snapshot named after the next one is in
`tune/`. A checkpoint this session did not register (one left by an interrupted session that
`--resume` continues) is never touched here: nothing says what it was; the end-of-study
clean-up (`study.conclude.checkpoints`) measures and deletes by trial.

    retention = Retention()
    retention.saved(trial_id, path, epoch=3, best=True)   # on_trial_save, in order
    retention.snapshot_taken(generation)                   # Tune wrote snapshot `generation`
    retention.snapshot_durable(generation)                 # tune/ holds it now
"""

from __future__ import annotations

import contextlib
import shutil
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field


@dataclass
class TrialCheckpoints:
    """One trial's registered checkpoints still on disk, and what holds them there."""

    epochs: dict[str, int] = field(default_factory=dict)  # path -> epoch, in registration order
    latest: str | None = None
    best: str | None = None  # by the one ranking; None before the first finite metric
    # (snapshot generation, the paths it named), oldest first; the first one is the snapshot
    # `tune/` holds (or an older one), the rest are not yet known to be there.
    pins: list[tuple[int, frozenset[str]]] = field(default_factory=list)

    def needed(self) -> set[str]:
        live = {p for p in (self.latest, self.best) if p is not None}
        return live.union(*(paths for _, paths in self.pins))


class Retention:
    """Per trial, which registered checkpoints stay; deletes the rest (see the module doc)."""

    def __init__(self, fs=None) -> None:
        self.fs = fs  # the storage's pyarrow file system (a bucket); None: the local disk
        self._deleter: ThreadPoolExecutor | None = None
        self.trials: dict[str, TrialCheckpoints] = {}
        self._changed: set[str] = set()  # trials with a checkpoint since the last snapshot
        self._waiting: set[str] = set()  # trials pinned by a snapshot not yet known in tune/
        self.deleted = 0  # checkpoint folders deleted (for the sweep's lines and the bench)

    def saved(self, trial_id: str, path: str, epoch: int, best: bool) -> None:
        """Ray registered `path` as the trial's latest checkpoint (`best`: its best so far)."""
        trial = self.trials.setdefault(trial_id, TrialCheckpoints())
        if path in trial.epochs:  # the same folder again (no new checkpoint): nothing changed
            return
        trial.epochs[path] = epoch
        trial.latest = path
        if best:
            trial.best = path
        self._changed.add(trial_id)
        self._prune(trial)

    def snapshot_taken(self, generation: int) -> None:
        """Tune wrote snapshot `generation` (to its staging folder) in this step: it names each
        trial's latest checkpoint now, and that checkpoint's best so far is the best now."""
        for trial_id in self._changed:
            trial = self.trials[trial_id]
            named = frozenset(p for p in (trial.latest, trial.best) if p is not None)
            trial.pins.append((generation, named))
            if len(trial.pins) > 1:
                self._waiting.add(trial_id)
        self._changed.clear()

    def snapshot_durable(self, generation: int) -> None:
        """`tune/` holds snapshot `generation`: what older snapshots named may go."""
        for trial_id in list(self._waiting):
            trial = self.trials[trial_id]
            # The newest pin at or before `generation` is what tune/ names for this trial.
            held = [i for i, (g, _) in enumerate(trial.pins) if g <= generation]
            if held:
                del trial.pins[: held[-1]]
            if len(trial.pins) <= 1:
                self._waiting.discard(trial_id)
            self._prune(trial)

    def kept(self, trial_id: str) -> dict[str, int]:
        """path -> epoch of the trial's registered checkpoints still on disk."""
        trial = self.trials.get(trial_id)
        return dict(trial.epochs) if trial else {}

    def _prune(self, trial: TrialCheckpoints) -> None:
        needed = trial.needed()
        for path in [p for p in trial.epochs if p not in needed]:
            self._delete(path)
            del trial.epochs[path]
            self.deleted += 1

    def _delete(self, path: str) -> None:
        # A folder already gone (deleted by hand) is as good as deleted.
        if self.fs is None:
            shutil.rmtree(path, ignore_errors=True)
            return
        # In a bucket a delete is several requests: a thread of its own does them, off the
        # driver's loop (a checkpoint deleted a moment later is as safe).
        if self._deleter is None:
            self._deleter = ThreadPoolExecutor(1, thread_name_prefix="checkpoint-delete")
        self._deleter.submit(self._delete_remote, path)

    def _delete_remote(self, path: str) -> None:
        with contextlib.suppress(OSError):
            self.fs.delete_dir(path)

    def drain(self) -> None:
        """Wait for the deletes still under way (the end of an experiment)."""
        if self._deleter is not None:
            self._deleter.shutdown(wait=True)
            self._deleter = None
