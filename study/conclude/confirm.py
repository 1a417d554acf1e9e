"""The confirmation stage: the best configuration of every compared cell, retrained with new
seeds and tested once, so a comparison (pretrained vs scratch, ...) rests on several runs.

    confirm: {compare: [arch, pretrained], seeds: 3}     # in the study's YAML; seeds 0 = off

For every cell of the compared dimensions (e.g. resnet18 x pretrained, resnet18 x scratch) the
best finished search trial by the one ranking (`study.record.ranking`) gives the
configuration; it is trained again with `seeds` new training seeds (`study.seed + 1000 + i`),
all its epochs (no scheduler), as Ray trials of a second Tuner experiment in
`results/<study>/tune-confirm/` (same resources, retries, checkpoints and results callback as
the search; `trials.parquet` says `stage` = confirm and the `seed`). Each finished run is then
evaluated once on test from its best epoch's checkpoint, and its per-image predictions are
written. A study killed here continues with `--resume`: Tune restores `tune-confirm/`, runs
that finished are neither trained nor tested again.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from retina.prepare import PreparedData
from study.conclude.holdout import evaluate_on_test, find_checkpoint, predictions_on_test
from study.conclude.per_image import val_predictions, write_trial_predictions
from study.define.dimensions import key_text
from study.define.schema import StudyConfig, finite_values
from study.define.space import confirm_seeds
from study.record.ranking import best_trial_ids
from study.record.results import ResultsStore
from study.run.experiment import experiment_finished, fit, results_by_trial
from study.run.tuner import build_confirm_tuner


def _plain(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else value  # numpy scalars from Parquet


def cell_name(cell: dict[str, Any]) -> str:
    return ", ".join(f"{k}={key_text(v)}" for k, v in cell.items()) or "all trials"


def confirm_cells(
    study: StudyConfig, trials: pd.DataFrame, hyperparameters: list[str]
) -> tuple[list[dict[str, Any]], list[str]]:
    """(the configuration of the best search trial of every cell that has one, notes).

    A cell is one combination of the values of the compared dimensions; its configuration is
    that trial's hyperparameters. The notes name the cells no search trial finished in.
    """
    search = trials[trials["stage"] == "search"]
    ranked = search.set_index("trial_id").loc[
        best_trial_ids(search, f"best_{study.metric.name}", study.metric.mode)
    ]
    compare = list(study.confirm.compare)
    cells, notes = [], []
    for values in itertools.product(*(finite_values(study.space[d]) for d in compare)):
        key = dict(zip(compare, values, strict=True))
        # type() too: True == 1 in Python, and a cell of pretrained=true is not one of epochs=1.
        match = [
            all(type(_plain(row[d])) is type(v) and _plain(row[d]) == v for d, v in key.items())
            for _, row in ranked.iterrows()
        ]
        chosen = ranked[match]
        if chosen.empty:
            notes.append(f"{cell_name(key)}: no finished search trial; not confirmed")
            continue
        best = chosen.iloc[0]
        cells.append({name: _plain(best[name]) for name in hyperparameters})
        notes.append(f"{cell_name(key)}: best search trial {chosen.index[0]}")
    return cells, notes


def evaluate_confirm_runs(
    store: ResultsStore, results_by_id: dict, data: PreparedData, folder: Path, views: int = 1
) -> list[str]:
    """Evaluate each finished confirm run not yet tested on test, once, over `views` dihedral
    views (the study's `tta`, as the held-out test); write its predictions."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    trials, best = store.trials_frame(), store.best_epochs()
    runs = trials[(trials["stage"] == "confirm") & (trials["status"] == "TERMINATED")]
    lines = []
    for trial_id in runs.loc[runs["test_acc"].isna(), "trial_id"].astype(str):
        if trial_id not in best:
            continue
        epoch, result = int(best[trial_id]["epoch"]), results_by_id.get(trial_id)
        checkpoint = find_checkpoint(result, epoch) if result is not None else None
        if checkpoint is None:
            lines.append(f"{trial_id}: no checkpoint of epoch {epoch} kept; not tested")
            continue
        test = evaluate_on_test(checkpoint, data, device, views)
        parts = [val_predictions(result, epoch), predictions_on_test(data, test.metrics)]
        write_trial_predictions(folder, trial_id, data, parts)
        # Recorded after its file: a kill in between tests it again, never leaves it untested.
        store.record_test(trial_id, test.epoch, test.record(), test.metrics.confusion.reshape(-1))
        store.flush()
        seed = trials.set_index("trial_id").loc[trial_id, "seed"]
        lines.append(f"{trial_id} (seed {seed}, epoch {test.epoch}): {test.line()}")
    return lines


def run_confirm(
    study: StudyConfig,
    data: PreparedData,
    folder: Path,
    store: ResultsStore,
    callbacks: Sequence = (),
    on_plan: Callable[[int], None] | None = None,
) -> dict | None:
    """The whole stage; Ray's results of its runs by trial id when every run finished ({}: no
    run; None: interrupted, --resume continues). `callbacks`: more Tune callbacks, as the
    search's (e.g. MLflow's); `on_plan(runs)` is told how many runs it trains, once it knows
    (the live report's banner)."""
    seeds = confirm_seeds(study)
    if not seeds:
        return {}
    cells, notes = confirm_cells(study, store.trials_frame(), store.hyperparameters)
    print(f"confirmation: {len(cells)} cells x {len(seeds)} seeds {seeds}")
    for line in notes:
        print(f"  {line}")
    if not cells:
        return {}
    if on_plan is not None:
        on_plan(len(cells) * len(seeds))
    grid = fit(build_confirm_tuner(study, data, store, cells, seeds, callbacks), folder)
    finished = experiment_finished(grid, len(cells) * len(seeds), store)
    if not finished:
        return None
    by_id = results_by_trial(grid)
    print("test of the confirmation runs (each once, from its best epoch on val):")
    for line in evaluate_confirm_runs(store, by_id, data, folder, study.tta):
        print(f"  {line}")
    return by_id
