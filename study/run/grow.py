"""A study that grows: a finished study run again, and `--more N` search trials.

    python -m study.sweep search_spaces/demo.yaml            # finished: says so, exits 0
    python -m study.sweep search_spaces/demo.yaml --more 4   # 4 more search trials, then the
                                                             # conclusion again over all trials

A finished study (`finished` in study.json, study.record.study_state) is never run again by
the same command: `finished_note` says where its report is and how to grow it. `--more N`
checks the space is the one the study ran with (only `num_samples` may differ: the trials are
counted by --more), records the growth in study.json, and runs it as a Tune experiment of its
own (`tune-more-K/`, new trial ids) whose searcher and scheduler have seen every earlier trial
(study.run.warm_start); `--resume` after a kill continues the same experiment.
"""

from __future__ import annotations

import argparse
import dataclasses
import shlex
from pathlib import Path

from retina.errors import RetinaError
from study.define.schema import StudyConfig, study_to_dict
from study.record.layout import REPORT_FILE
from study.record.study_state import finished_at, read_record
from study.run.preflight import space_changes

GROWS = "num_samples"  # the one key that may differ: --more counts the trials instead


def sweep_command(args: argparse.Namespace, *extra: str) -> str:
    """This sweep's command line again, with `extra` (--resume, --more N, ...): the same space,
    data, cache, overrides and places (a --data, --set or --skip-bad left out would read as a
    changed space and be refused)."""
    words = ["python -m study.sweep", args.space, *extra]
    words += [f"--set {shlex.quote(o)}" for o in args.overrides]
    for flag, value in (("--data", args.data), ("--name", args.name),
                        ("--cache-dir", args.cache_dir), ("--address", args.address)):  # fmt: skip
        if value:
            words.append(f"{flag} {shlex.quote(str(value))}")
    if args.skip_bad:
        words.append("--skip-bad")
    words += [f"--external {shlex.quote(e)}" for e in args.external]
    if args.storage:
        words.append(f"--storage {shlex.quote(args.storage)}")
    if args.results != "results":
        words.append(f"--results {shlex.quote(args.results)}")
    return " ".join(words)


def _changes(folder: Path, study: StudyConfig, flag: str) -> list[str]:
    """The keys whose values differ from the space the study ran with, but num_samples."""
    return [
        c for c in space_changes(folder, study_to_dict(study), flag) if c.split(":")[0] != GROWS
    ]


def finished_note(args: argparse.Namespace, study: StudyConfig, folder: Path) -> str | None:
    """What to tell a user who runs a finished study again (None: it is not finished).

    The same space: the study is finished, here is its report, this is how to grow it. A
    different one: refused with the keys that differ (this folder holds another study)."""
    when = finished_at(folder)
    if when is None:
        return None
    changes = space_changes(folder, study_to_dict(study), "study.json")
    grows = [c for c in changes if c.split(":")[0] == GROWS]
    others = [c for c in changes if c not in grows]
    if others:
        raise RetinaError(
            f"{folder} already holds a finished study, run with a different space; changed: "
            + "; ".join(others[:10])
            + ". Run it with the original settings, or start a new study with --name NEW_NAME"
        )
    lines = [
        f"study {study.name} is finished ({when}); its report: {folder / REPORT_FILE}",
        "grow it by N more search trials (warm-started from these) or K more seeds in every "
        "confirm cell:",
        f"  {sweep_command(args, '--more N')}",
        f"  {sweep_command(args, '--more-seeds K')}",
    ]
    if grows:
        lines.insert(1, f"(num_samples differs from the study's: {grows[0].split(': ', 1)[1]}; "
                        "trials are added with --more N)")  # fmt: skip
    return "\n".join(lines)


def growth_study(study: StudyConfig, folder: Path, more: int) -> StudyConfig:
    """The study to grow by `more` trials: refused unless `folder` holds a finished study of
    the same space (num_samples aside); its num_samples the one it ran with."""
    if more < 1:
        raise RetinaError(f"--more {more}: give a number of trials >= 1")
    record = read_record(folder)
    if record is None:
        raise RetinaError(f"--more: {folder} holds no study (no study.json); run it without --more")
    if finished_at(folder) is None:
        raise RetinaError(
            f"--more: the study in {folder} has not finished; continue it with --resume first"
        )
    changes = _changes(folder, study, "--more")
    if changes:
        raise RetinaError(
            f"--more: the study in {folder} was run with a different space; changed: "
            + "; ".join(changes[:10])
            + ". Grow it with the original settings, or start a new study with --name NEW_NAME"
        )
    ran = int(record["config"].get(GROWS, study.num_samples))
    return dataclasses.replace(study, num_samples=ran)


def optuna_log(study: StudyConfig, folder: Path):
    """The study's `optuna.log`, kept current from the results store it is added to."""
    from study.define.optuna_space import optuna_distributions
    from study.record.optuna_log import OptunaLog

    return OptunaLog(folder, study.name, optuna_distributions(study), study.metric.mode)


def grow_search(study, data, store, grown: list[dict], results: dict, callbacks=()) -> bool:
    """Each `--more` of the study in turn (study.json's `grown`), its Ray results added to
    `results`; False when one stopped before its end (--resume continues it)."""
    from study.run.experiment import experiment_finished, fit, results_by_trial
    from study.run.tuner import build_growth_tuner

    for growth, step in enumerate(grown, start=1):
        grid = fit(build_growth_tuner(study, data, store, step, growth, callbacks), store.folder)
        results.update(results_by_trial(grid))
        if not experiment_finished(grid, step["trials"], store):
            return False
    return True
