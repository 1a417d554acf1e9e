"""The last step of a study: delete the checkpoints it no longer needs, so disk does not grow
with the number of trials.

While a trial runs the driver keeps its latest checkpoint and its best so far
(study.run.retention). Once the study has ended, it still needs the checkpoints of the best
`test_top_k` trials by the one ranking (the tested ones) and of the winner (rank 1, which is
exported); those of a trial Ray would run again on `--resume` (it ended with an error) stay
too. Everything else under `results/<study>/tune*/*/checkpoint_*` is deleted (through the
storage's file system: the same rule in a bucket, study.record.storage), unless the YAML
says `keep_checkpoints: all`. Later steps that need more (e.g. a confirm stage's trials) add
their ids to `keep_ids`.

    from study.conclude.checkpoints import clean_checkpoints, needed_trials
    kept = clean_checkpoints(folder, needed_trials(store.trials_frame(), "val_kappa", "max", 3))
    print(kept.line())   # checkpoints: 2.3 GB -> 180 MB (kept 3 of 8 trials)
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from fnmatch import fnmatch
from pathlib import Path

import pandas as pd
import pyarrow.fs as pafs

from study.define.schema import StudyConfig
from study.record.layout import TUNE_DIR
from study.record.ranking import best_trial_ids
from study.record.results import ResultsStore
from study.record.storage import Storage, checkpoint_dirs

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


def _size(fs: pafs.FileSystem, path: str) -> int:
    infos = fs.get_file_info(pafs.FileSelector(path, recursive=True, allow_not_found=True))
    return sum(i.size or 0 for i in infos if i.type == pafs.FileType.File)


def _trial_id(fs: pafs.FileSystem, trial_dir: str) -> str | None:
    """The Ray trial id of a trial folder, from the first line of its result.json."""
    try:
        with fs.open_input_stream(f"{trial_dir}/result.json") as fh:
            first = fh.read(1 << 16).split(b"\n", 1)[0]
        return str(json.loads(first)["trial_id"])
    except (OSError, ValueError, KeyError, TypeError):
        return None  # unreadable: its checkpoints are kept (never delete what we cannot name)


def _where(folder, fs: pafs.FileSystem | None) -> tuple[pafs.FileSystem, str]:
    return (fs, str(folder)) if fs is not None else (pafs.LocalFileSystem(), str(Path(folder)))


def checkpoint_folders(folder, fs: pafs.FileSystem | None = None) -> dict:
    """Each trial folder that holds checkpoints, with its checkpoints, in every Tune experiment
    of the study (`tune/` of the search, `tune-confirm/` of the confirmation stage).

    `folder`: the study's folder in its storage `fs` (default: results/<study> on this disk,
    and the paths come back as `Path`s)."""
    local = fs is None
    fs, root = _where(folder, fs)
    found: dict = {}
    experiments = fs.get_file_info(pafs.FileSelector(root, allow_not_found=True))
    for experiment in sorted(e.path for e in experiments if e.type == pafs.FileType.Directory
                             and fnmatch(e.base_name, f"{TUNE_DIR}*")):  # fmt: skip
        trials = fs.get_file_info(pafs.FileSelector(experiment, allow_not_found=True))
        for trial_dir in sorted(t.path for t in trials if t.type == pafs.FileType.Directory):
            checkpoints = checkpoint_dirs(fs, trial_dir)
            if checkpoints:
                found[Path(trial_dir) if local else trial_dir] = (
                    [Path(c) for c in checkpoints] if local else checkpoints
                )
    return found


def checkpoint_bytes(folder, fs: pafs.FileSystem | None = None) -> int:
    """Bytes of every checkpoint a study holds (<study>/tune*/*/checkpoint_*)."""
    found = checkpoint_folders(folder, fs)
    fs, _ = _where(folder, fs)
    return sum(_size(fs, str(c)) for checkpoints in found.values() for c in checkpoints)


def clean_checkpoints(
    folder, keep_ids: Iterable[str], delete: bool = True, fs: pafs.FileSystem | None = None
) -> Footprint:
    """Delete the checkpoints of every trial of `folder` (results/<study>, or the study's
    folder in its storage `fs`) not in `keep_ids`.

    With `delete=False` (keep_checkpoints: all) only measures. Each checkpoint folder goes
    whole; a failure part-way leaves the others, and rerunning finishes it.
    """
    keep = {str(t) for t in keep_ids}
    found = checkpoint_folders(folder, fs)
    fs, _ = _where(folder, fs)
    before = {trial: sum(_size(fs, str(c)) for c in cps) for trial, cps in found.items()}
    after = dict(before)
    if delete:
        for trial_dir, checkpoints in found.items():
            trial_id = _trial_id(fs, str(trial_dir))
            if trial_id is None or trial_id in keep:
                continue
            for checkpoint in checkpoints:
                fs.delete_dir(str(checkpoint))
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
    storage = Storage.resolve(study.storage, Path(folder).parent)
    if storage.local and study.storage is None:
        return clean_checkpoints(folder, keep, delete=study.keep_checkpoints != "all")
    where = storage.study_path(Path(folder).name)
    return clean_checkpoints(where, keep, delete=study.keep_checkpoints != "all", fs=storage.fs)
