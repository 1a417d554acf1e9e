"""The last step of a study: delete the checkpoints it no longer needs, so disk does not grow
with the number of trials.

While a trial runs the driver keeps its latest checkpoint and its best so far
(study.run.retention). Once the study has ended, it still needs the checkpoints of the best
`test_top_k` trials by the one ranking (the tested ones) and of the winner (rank 1, which is
exported); those of a trial Ray would run again on `--resume` (it ended with an error) stay
too. Everything else under `results/<study>/tune*/*/checkpoint_*` is deleted, unless the YAML
says `keep_checkpoints: all`. Later steps that need more (e.g. a confirm stage's trials) add
their ids to `keep_ids`.

    from study.conclude.checkpoints import clean_checkpoints, needed_trials
    kept = clean_checkpoints(folder, needed_trials(store.trials_frame(), "val_kappa", "max", 3))
    print(kept.line())   # checkpoints: 2.3 GB -> 180 MB (kept 3 of 8 trials)
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from study.define.schema import StudyConfig
from study.record.layout import TUNE_DIR
from study.record.ranking import best_trial_ids
from study.record.results import ResultsStore

CHECKPOINT_GLOB = "checkpoint_*"


@dataclass(frozen=True)
class Footprint:
    """Checkpoint bytes of a study before and after the clean-up, and trials with checkpoints."""

    bytes_before: int
    bytes_after: int
    trials_before: int
    trials_after: int
    deleted: bool  # False: keep_checkpoints: all (nothing was deleted)

    def line(self) -> str:
        size = f"{human_bytes(self.bytes_before)} -> {human_bytes(self.bytes_after)}"
        if not self.deleted:
            return f"checkpoints: {human_bytes(self.bytes_before)} (keep_checkpoints: all)"
        return f"checkpoints: {size} (kept {self.trials_after} of {self.trials_before} trials)"


def human_bytes(n: int) -> str:
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= size:
            return f"{n / size:.1f} {unit}" if n < 10 * size else f"{n / size:.0f} {unit}"
    return f"{n} B"


def needed_trials(trials: pd.DataFrame, metric: str, mode: str, test_top_k: int) -> set[str]:
    """Trial ids whose checkpoints the finished study still needs: the best `test_top_k` by
    the one ranking (they are tested) and the winner (rank 1, exported) even when k is 0.

    `trials` is `ResultsStore.trials_frame()`; `metric` the study metric (e.g. val_kappa).
    """
    if trials.empty:
        return set()
    if "stage" in trials.columns:  # confirm runs are tested as they end: none is needed after
        trials = trials[trials["stage"].fillna("search") == "search"]
    ranked = best_trial_ids(trials, f"best_{metric}", mode)
    return set(ranked[: max(1, test_top_k)])


def _size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def _trial_id(trial_dir: Path) -> str | None:
    """The Ray trial id of a trial folder, from the first line of its result.json."""
    try:
        with open(trial_dir / "result.json") as fh:
            return str(json.loads(fh.readline())["trial_id"])
    except (OSError, ValueError, KeyError, TypeError):
        return None  # unreadable: its checkpoints are kept (never delete what we cannot name)


def checkpoint_folders(folder: Path) -> dict[Path, list[Path]]:
    """Each trial folder that holds checkpoints, with its checkpoints, in every Tune experiment
    of the study (`tune/` of the search, `tune-confirm/` of the confirmation stage)."""
    found: dict[Path, list[Path]] = {}
    trial_dirs = (p for p in Path(folder).glob(f"{TUNE_DIR}*/*") if p.is_dir())
    for trial_dir in sorted(trial_dirs):
        checkpoints = sorted(p for p in trial_dir.glob(CHECKPOINT_GLOB) if p.is_dir())
        if checkpoints:
            found[trial_dir] = checkpoints
    return found


def checkpoint_bytes(folder: Path) -> int:
    """Bytes of every checkpoint a study holds (results/<study>/tune/*/checkpoint_*)."""
    return sum(_size(c) for checkpoints in checkpoint_folders(folder).values() for c in checkpoints)


def clean_checkpoints(folder: Path, keep_ids: Iterable[str], delete: bool = True) -> Footprint:
    """Delete the checkpoints of every trial of `folder` (results/<study>) not in `keep_ids`.

    With `delete=False` (keep_checkpoints: all) only measures. Each checkpoint folder goes
    whole (`shutil.rmtree`); a failure part-way leaves the others, and rerunning finishes it.
    """
    keep = {str(t) for t in keep_ids}
    found = checkpoint_folders(folder)
    before = {trial: sum(_size(c) for c in cps) for trial, cps in found.items()}
    after = dict(before)
    if delete:
        for trial_dir, checkpoints in found.items():
            trial_id = _trial_id(trial_dir)
            if trial_id is None or trial_id in keep:
                continue
            for checkpoint in checkpoints:
                shutil.rmtree(checkpoint)
            after.pop(trial_dir)
    return Footprint(
        bytes_before=sum(before.values()),
        bytes_after=sum(after.values()),
        trials_before=len(before),
        trials_after=len(after),
        deleted=delete,
    )


def drop_unneeded_checkpoints(
    study: StudyConfig, folder: Path, store: ResultsStore, results_by_id: dict
) -> Footprint:
    """The pipeline's last step: keep the needed trials' checkpoints (and those of trials that
    ended in an error: --resume runs them again from their latest checkpoint), delete the rest
    unless `keep_checkpoints: all`. `results_by_id` maps trial id to Ray's `Result`."""
    metric = study.metric
    keep = needed_trials(store.trials_frame(), metric.name, metric.mode, study.test_top_k)
    keep |= {trial_id for trial_id, result in results_by_id.items() if result.error is not None}
    return clean_checkpoints(folder, keep, delete=study.keep_checkpoints != "all")
