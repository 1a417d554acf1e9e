"""The rules of a growing study without Ray: when --more is refused, what a finished study run
again says, and which confirm cells a new best leaves behind."""

from __future__ import annotations

import argparse
import json

import pytest

from retina.errors import RetinaError
from study.conclude.replan import stale_cells
from study.define.schema import hyperparameter_names, load_study, study_to_dict
from study.record.layout import STUDY_JSON, Stage
from study.record.results import ResultsStore
from study.record.study_state import add_growth, finished_at, growth, mark_finished
from study.run.grow import finished_note, growth_study
from study.sweep import parse_args
from tests.test_results_store import epoch_result

SPACE = "search_spaces/demo.yaml"


def write_study(folder, overrides=(), finished=True):
    study = load_study(SPACE, list(overrides))
    folder.mkdir(parents=True, exist_ok=True)
    (folder / STUDY_JSON).write_text(json.dumps({"config": study_to_dict(study)}))
    if finished:
        mark_finished(folder)
    return study


def args(*overrides: str) -> argparse.Namespace:
    return parse_args([SPACE, *(w for o in overrides for w in ("--set", o))])


def test_more_grows_only_a_finished_study_of_the_same_space(tmp_path):
    folder = tmp_path / "demo"
    write_study(folder, finished=False)
    with pytest.raises(RetinaError, match="has not finished; continue it with --resume"):
        growth_study(load_study(SPACE, []), folder, 4)
    mark_finished(folder)
    with pytest.raises(RetinaError, match=r"space\.lr"):
        growth_study(load_study(SPACE, ["space.lr=0.01"]), folder, 4)
    # num_samples may differ (--more counts the trials): the study keeps the one it ran with.
    grown = growth_study(load_study(SPACE, ["num_samples=12"]), folder, 4)
    assert grown.num_samples == 8
    with pytest.raises(RetinaError, match="--more 0"):
        growth_study(grown, folder, 0)
    step = add_growth(folder, 4)
    assert step["experiment"] == "tune-more-1" and finished_at(folder) is None
    assert [g["trials"] for g in growth(folder)] == [4]


def test_a_finished_study_run_again_is_said_and_a_changed_one_refused(tmp_path):
    folder = tmp_path / "demo"
    study = write_study(folder)
    note = finished_note(args(), study, folder)
    assert "is finished" in note and str(folder / "report.html") in note
    assert f"python -m study.sweep {SPACE} --more N" in note and "--more-seeds K" in note
    with pytest.raises(RetinaError, match=r"already holds a finished study.*space\.lr"):
        finished_note(args(), load_study(SPACE, ["space.lr=0.01"]), folder)
    assert finished_note(args(), study, tmp_path / "none") is None


def test_a_cell_with_a_new_best_is_named_after_more(tmp_path):
    study = load_study(SPACE, ["space.pretrained=false"])
    store = ResultsStore(tmp_path, hyperparameter_names(study), "val_kappa", "max", journal=False)
    base = {"arch": "resnet18", "pretrained": False, "lr": 0.01, "batch_size": 8, "epochs": 2,
            "weight_decay": 1e-4, "image_size": 64}  # fmt: skip
    runs = {"c": base | {"head": "classify"}, "r": base | {"head": "regress"}}
    for trial_id, config in runs.items():
        store.start_trial(trial_id, config)
        store.record_epoch(trial_id, epoch_result(2, 0.3))
        store.finish_trial(trial_id, "TERMINATED")
        store.start_trial(f"{trial_id}-seed", config, stage=Stage.CONFIRM, seed=1000)
    assert stale_cells(study, store) == []
    store.start_trial("c2", runs["c"] | {"lr": 0.02})  # --more found a better classify
    store.record_epoch("c2", epoch_result(2, 0.6))
    store.finish_trial("c2", "TERMINATED")
    (line,) = stale_cells(study, store)
    assert "head=classify has a new best" in line
