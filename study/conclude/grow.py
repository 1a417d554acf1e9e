"""More seeds for a finished study's confirm cells, keeping every earlier run:

    python -m study.sweep search_spaces/demo.yaml --more-seeds 2 [--cells head=classify]

Each confirm cell (those `--cells KEY=VALUE,...` names, else all) is trained again with K new
seeds, its best search trial's configuration as before, in a Tune experiment of its own
(`tune-confirm-<first run index>/`); the seeds continue the study's run index
(`study.seed + 1000 + i`, i from the number of confirm seeds the study already planned), so they
never repeat an earlier one. Each new run is tested once, then summary.json (and with it the
sentences and the seeds-needed advice) is recomputed over all runs; the lifecycle (study.sweep)
then writes the report. study.json records each batch (`confirm_added`: seeds, cells, time),
which the report's cell table shows. A batch killed part-way continues by giving the same
command again: its seeds, and so its experiment folder, come out the same until it finished.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import yaml

from retina.errors import RetinaError
from study.conclude.checkpoints import drop_unneeded_checkpoints
from study.conclude.confirm import _plain, cell_name, confirm_cells, evaluate_confirm_runs
from study.conclude.pipeline import StudyRun
from study.conclude.summary_file import write_summary
from study.define.schema import StudyConfig
from study.define.space import confirm_seeds
from study.record.disk import write_json_atomic
from study.record.layout import STUDY_JSON, confirm_dir
from study.record.results import ResultsStore
from study.run.experiment import experiment_finished, fit, results_by_trial
from study.run.tuner import build_confirm_tuner

ADDED_KEY = "confirm_added"  # study.json: one entry per batch of seeds added


def parse_cells(text: str | None, compare: tuple[str, ...]) -> dict[str, Any]:
    """`--cells head=classify,arch=resnet18` -> {"head": "classify", "arch": "resnet18"};
    values read as YAML (true, 18), keys among the compared dimensions."""
    if not text:
        return {}
    out = {}
    for item in text.split(","):
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or key not in compare:
            raise RetinaError(
                f"--cells {text}: {item!r} is not KEY=VALUE with KEY a compared dimension "
                f"({', '.join(compare)}); e.g. --cells {compare[0]}=VALUE"
            )
        out[key] = yaml.safe_load(value.strip())
    return out


def check_growable(study: StudyConfig, folder: Path, store: ResultsStore) -> None:
    """Refuse a study without confirm cells or whose confirm stage has not finished (before
    Ray starts: the lifecycle calls it once the store is loaded)."""
    if study.confirm.seeds == 0:
        raise RetinaError(
            f"--more-seeds: {study.name} has no confirm stage (confirm.seeds: 0), so no cells "
            "to add seeds to; give the YAML `confirm: {compare: [arch, pretrained], seeds: 3}` "
            "and run it as a new study (--name NEW_NAME)"
        )
    trials = store.trials_frame()
    confirm = trials[trials["stage"] == "confirm"] if "stage" in trials else trials.iloc[:0]
    if confirm.empty or confirm["test_acc"].isna().any():
        raise RetinaError(
            f"--more-seeds: the study in {folder} has not finished its confirm stage; "
            "finish it first with --resume, then add seeds"
        )


def _chosen(cells: list[dict], wanted: dict[str, Any], compare: tuple[str, ...]) -> list[dict]:
    # type() too, as confirm_cells: pretrained=true is not epochs=1
    chosen = [
        c
        for c in cells
        if all(type(_plain(c[k])) is type(v) and _plain(c[k]) == v for k, v in wanted.items())
    ]
    if not chosen:
        names = "; ".join(cell_name({k: c[k] for k in compare}) for c in cells)
        raise RetinaError(f"--cells: no confirm cell has {cell_name(wanted)}; the cells: {names}")
    return chosen


def grow_seeds(run: StudyRun, more: int, wanted: dict[str, Any]) -> bool:
    """Add `more` seeds to the chosen confirm cells, test the new runs, recompute summary.json
    and drop the checkpoints no longer needed; False when interrupted (the same command again
    continues it)."""
    study, folder, store = run.study, run.folder, run.store
    check_growable(study, folder, store)
    record = json.loads((folder / STUDY_JSON).read_text())
    planned = list(record["seeds"]["confirm"])
    seeds = confirm_seeds(study, start=len(planned), count=more)
    cells, _ = confirm_cells(study, store.trials_frame(), store.hyperparameters)
    compare = study.confirm.compare
    cells = _chosen(cells, wanted, compare)
    names = [cell_name({k: c[k] for k in compare}) for c in cells]
    print(f"more seeds: {len(cells)} cells x {more} seeds {seeds} (cells: {'; '.join(names)})")
    if run.on_confirm_plan is not None:
        run.on_confirm_plan(len(cells) * more)
    experiment = confirm_dir(len(planned))
    tuner = build_confirm_tuner(study, run.data, store, cells, seeds, run.callbacks, experiment)
    grid = fit(tuner, folder)
    if not experiment_finished(grid, len(cells) * more, store):
        run.interrupted = True
        return False
    print("test of the new confirmation runs (each once, from its best epoch on val):")
    for line in evaluate_confirm_runs(store, results_by_trial(grid), run.data, folder, study.tta):
        print(f"  {line}")
    # Recorded once the batch is tested: a kill before this plans the same seeds again.
    record["seeds"]["confirm"] = planned + seeds
    now = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    record.setdefault(ADDED_KEY, []).append({"seeds": seeds, "cells": names, "at": now})
    write_json_atomic(folder / STUDY_JSON, record)
    print(write_summary(folder, store))
    print(drop_unneeded_checkpoints(study, folder, store, results_by_trial(grid)).line())
    return True
