"""External test sets: after the held-out test and the confirm stage, the best search trial and
every confirm run are tested once on each set of `external:` (study.define.config.ExternalSet).

    external: [{name: messidor2, path: /data/messidor2}]     # or --external messidor2=DIR

Each test is the held-out test's (`holdout.evaluate_on_test`): the checkpoint of the run's best
epoch on val, at the size it trained at, the study's preprocessing and `tta` views, a regress
head cut by its thresholds fitted on val. Nothing is fitted on an external set: the
temperature and the referable threshold summary.json applies come from the development val.
Each (run, set) writes `predictions/<trial_id>.external.<name>.parquet` (split
`external:<name>`) once; a resumed study tests only what has no file yet.
"""

from __future__ import annotations

from pathlib import Path

import torch

from retina.prepare import PreparedData
from study.conclude.holdout import evaluate_on_test, find_checkpoint, top_trials
from study.define.schema import StudyConfig
from study.record.predictions import (
    external_split,
    predictions_frame,
    predictions_path,
    split_predictions,
    write_predictions,
)
from study.record.results import ResultsStore


def external_runs(store: ResultsStore) -> list[tuple[str, int]]:
    """(trial id, best epoch): the best search trial, then each finished confirm run."""
    runs = top_trials(store, 1)
    trials, best = store.trials_frame(), store.best_epochs()
    if "stage" in trials.columns:
        done = trials[(trials["stage"] == "confirm") & (trials["status"] == "TERMINATED")]
        runs += [(t, int(best[t]["epoch"])) for t in done["trial_id"].astype(str) if t in best]
    return runs


def test_external_sets(
    study: StudyConfig,
    data: PreparedData,
    external: dict[str, PreparedData],
    folder: Path,
    store: ResultsStore,
    results_by_id: dict,
) -> list[str]:
    """Test each run of `external_runs` once on each external set; the lines to print."""
    if not external:
        return []
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    lines = ["external test sets (each run once; thresholds and temperature from val):"]
    for trial_id, epoch in external_runs(store):
        result = results_by_id.get(trial_id)
        checkpoint = find_checkpoint(result, epoch) if result is not None else None
        for name, ext in external.items():
            if predictions_path(folder, trial_id, name).exists():
                continue  # tested before a kill: --resume does not test it again
            if checkpoint is None:
                lines.append(f"  {trial_id} on {name}: no checkpoint of epoch {epoch} kept")
                continue
            test = evaluate_on_test(checkpoint, data, device, study.tta, tested_on=ext)
            part = split_predictions(external_split(name), ext.split.test, test.metrics)
            frame = predictions_frame(trial_id, [part], ext.labels, ext.image_ids, ext.patient_ids)
            write_predictions(folder, trial_id, frame, external=name)
            result_text = test.line().removeprefix("test ")  # "acc 0.71, kappa 0.40 ..."
            lines.append(f"  {trial_id} on {name} ({len(part.index)} images): {result_text}")
    return lines
