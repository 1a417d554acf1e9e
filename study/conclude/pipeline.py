"""What a study does after its search, in order, in the driver (Ray still up).

    search (study.run.tuner) -> held-out test of the best K on val -> ... -> gallery of the
    best trial's errors -> leaderboard

Each step is one call here, so the flow of the end of a study reads top to bottom. Every step
takes the study's objects (no YAML, no argv) and may be rerun by `--resume` after a kill.
"""

from __future__ import annotations

from pathlib import Path

from retina.prepare import PreparedData
from study.conclude.gallery import make_gallery
from study.conclude.holdout import evaluate_best_trials
from study.define.schema import StudyConfig
from study.record.results import ResultsStore


def conclude_study(
    study: StudyConfig, data: PreparedData, folder: Path, store: ResultsStore, results_by_id: dict
) -> None:
    """Steps after a finished search; `results_by_id` maps trial id to Ray's `Result`."""
    if study.test_top_k > 0:
        print("held-out test of the best trials (chosen on val):")
        for line in evaluate_best_trials(store, results_by_id, data, study):
            print(f"  {line}")
    # After the held-out test: the gallery shows test images when the best trial was tested.
    print(make_gallery(study, data, folder, store, results_by_id))
