"""What a study does after its search, in order, in the driver (Ray still up).

    search (study.run.tuner) -> held-out test of the best K on val -> per-image predictions
    -> confirmation runs (study.conclude.confirm) -> summary.json (the comparison)
    -> export the best (results/<study>/best/)
    -> gallery of the best trial's errors -> delete the checkpoints no longer needed (last)
    -> leaderboard

Each step is one call here, so the flow of the end of a study reads top to bottom. Every step
takes the study's objects (no YAML, no argv) and may be rerun by `--resume` after a kill.
"""

from __future__ import annotations

from pathlib import Path

from retina.prepare import PreparedData
from study.conclude.checkpoints import drop_unneeded_checkpoints
from study.conclude.confirm import run_confirm
from study.conclude.export import export_winner
from study.conclude.gallery import make_gallery
from study.conclude.holdout import evaluate_best_trials
from study.conclude.per_image import write_search_predictions
from study.conclude.summary_file import write_summary
from study.define.schema import StudyConfig
from study.record.results import ResultsStore


def conclude_study(
    study: StudyConfig,
    data: PreparedData,
    folder: Path,
    store: ResultsStore,
    results_by_id: dict,
    callbacks=(),
    on_confirm_plan=None,
) -> bool:
    """Steps after a finished search; `results_by_id` maps trial id to Ray's `Result`;
    `callbacks`: the search's extra Tune callbacks, for the confirm stage's runs too;
    `on_confirm_plan(runs)`: told how many runs the confirm stage trains.

    Returns False when a step was interrupted (the study is then continued by --resume).
    """
    tested = {}
    if study.test_top_k > 0:
        print("held-out test of the best trials (chosen on val):")
        lines, tested = evaluate_best_trials(store, results_by_id, data, study)
        for line in lines:
            print(f"  {line}")
    for line in write_search_predictions(store, results_by_id, data, folder, tested):
        print(line)
    if not run_confirm(study, data, folder, store, callbacks, on_confirm_plan):
        return False  # interrupted: --resume continues the confirm stage, then the rest
    # Before the export: the model card states the comparison's intervals.
    print(write_summary(folder, store))
    print("export of the best trial:")
    for line in export_winner(folder, data, store.trials_frame()):
        print(f"  {line}")
    # After the held-out test: the gallery shows test images when the best trial was tested.
    print(make_gallery(study, data, folder, store, results_by_id))
    # Last: every step before may read checkpoints.
    print(drop_unneeded_checkpoints(study, folder, store, results_by_id).line())
    return True
