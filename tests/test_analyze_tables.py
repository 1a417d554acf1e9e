"""The analysis tables hold the known numbers of a hand-built results folder."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from study.analyze import tables
from study.analyze.load import load_study
from tests.helpers.analyze_fixtures import (
    CLASS_COUNTS,
    DEFAULT_TRIALS,
    HYPERPARAMETERS,
    TrialSpec,
    make_results,
)


@pytest.fixture()
def study(tmp_path):
    return load_study(make_results(tmp_path))


def test_load_normalises_the_trials(study):
    trials = study.trials.set_index("trial_id")
    assert study.metric == "val_kappa" and study.mode == "max" and study.max_epochs == 3
    assert study.hyperparameters == HYPERPARAMETERS
    assert list(trials["init"]) == ["pretrained", "pretrained", "scratch", "scratch"] + [
        "pretrained",
        "scratch",
    ]
    assert list(trials["planned_epochs"]) == [3] * 6
    assert trials.loc["t04", "error"] == "loss is nan at epoch 3"
    assert trials.loc["t00", "error"] is None
    assert len(study.epochs) == 15 and len(study.confusion) == (15 + 2) * 25


def test_majority_baseline_is_the_share_of_grade_0():
    assert tables.majority_share(CLASS_COUNTS, "val") == pytest.approx(70 / 100)
    assert tables.majority_share(CLASS_COUNTS, "test") == pytest.approx(72 / 100)
    assert tables.majority_share(CLASS_COUNTS, "train") == pytest.approx(700 / 1000)
    assert math.isnan(tables.majority_share({"val": [0, 0, 0, 0, 0]}, "val"))
    data = tables.data_table(CLASS_COUNTS).set_index("split")
    assert data.loc["val", "images"] == 100 and data.loc["val", "grade_2"] == 12
    assert data.loc["test", "majority_share"] == pytest.approx(0.72)


def test_course_table_holds_the_best_trial_per_arch_and_init(study):
    course = tables.course_table(study.trials, study.score_column, study.mode, study.class_counts)
    rows = {(r.arch, r.init): r for r in course.itertuples()}
    r18p, r50p = rows[("resnet18", "pretrained")], rows[("resnet50", "pretrained")]
    # t00 (kappa .60) beats the errored t04 (.25) among resnet18 pretrained
    assert (r18p.val_trial, r18p.val_acc, r18p.val_kappa) == ("t00", 0.80, 0.60)
    assert (r18p.test_trial, r18p.test_acc, r18p.test_kappa) == ("t00", 0.79, 0.58)
    assert r18p.trials == 2 and r18p.course_test_acc == pytest.approx(0.808)
    assert r18p.val_vs_majority == pytest.approx(0.10)
    assert r18p.test_vs_majority == pytest.approx(0.79 - 0.72)
    assert (r50p.val_trial, r50p.val_acc, r50p.test_acc) == ("t01", 0.82, 0.81)
    assert r50p.course_test_acc == pytest.approx(0.820)
    r50s = rows[("resnet50", "scratch")]  # t05 best at epoch 2 (kappa .15, acc .73) beats t03
    assert (r50s.val_trial, r50s.val_acc, r50s.val_kappa) == ("t05", 0.73, 0.15)
    assert pd.isna(r50s.test_trial) and math.isnan(r50s.test_acc)
    assert rows[("resnet18", "scratch")].val_acc == 0.74
    assert rows[("resnet50", "scratch")].course_test_acc == pytest.approx(0.733)
    base = rows[("majority class", "grade 0 for every image")]
    assert (base.val_acc, base.test_acc, base.val_kappa) == (0.70, 0.72, 0.0)
    assert list(course["arch"])[-1] == "majority class" and len(course) == 5


def test_leaderboard_ranks_every_trial_with_its_numbers(study):
    board = tables.leaderboard(study.trials, study.hyperparameters, study.metric, study.mode)
    assert list(board["trial_id"]) == ["t01", "t00", "t04", "t02", "t05", "t03"]
    assert list(board["rank"]) == [1, 2, 3, 4, 5, 6]
    for col in HYPERPARAMETERS + ["best_val_referable_sensitivity", "test_balanced_acc"]:
        assert col in board.columns
    top = board.iloc[0]
    assert (top["lr"], top["batch_size"], top["weight_decay"]) == (3e-3, 32, 1e-3)
    assert (top["best_val_acc"], top["best_val_kappa"], top["best_epoch"]) == (0.82, 0.65, 3)
    assert top["best_val_balanced_acc"] == pytest.approx(0.2 + 0.5 * 0.65)
    assert top["test_acc"] == 0.81 and top["test_referable_specificity"] == 0.9
    errored = board.set_index("trial_id").loc["t04"]
    assert errored["status"] == "ERROR" and errored["error"] == "loss is nan at epoch 3"
    assert errored["epochs_run"] == 2 and math.isnan(errored["test_acc"])
    assert board.set_index("trial_id").loc["t03", "stopped_early"]


def test_leaderboard_puts_trials_without_an_epoch_last(tmp_path):
    specs = DEFAULT_TRIALS[:2] + [
        TrialSpec("t09", "resnet18", True, 1e-3, 8, [], [], status="PENDING")
    ]
    study = load_study(make_results(tmp_path, specs))
    board = tables.leaderboard(study.trials, study.hyperparameters, study.metric, study.mode)
    assert list(board["trial_id"]) == ["t01", "t00", "t09"]
    assert math.isnan(board["rank"].iloc[-1])


def test_minimised_metric_ranks_lowest_first(tmp_path):
    study = load_study(make_results(tmp_path, metric="val_loss", mode="min"))
    board = tables.leaderboard(study.trials, study.hyperparameters, study.metric, study.mode)
    assert "best_val_loss" in board.columns
    assert board["best_val_loss"].is_monotonic_increasing


def test_early_stopping_counts_saved_compute(study):
    per, totals = tables.early_stopping(study.trials)
    assert totals == {
        "trials": 6,
        "stopped": 1,
        "planned_epochs": 18,
        "run_epochs": 15,
        "saved_epochs": 2,
        "saved_share": pytest.approx(2 / 18),
        "unfinished_epochs": 1,  # t04 failed at epoch 3: not a scheduler saving
    }
    t03 = per.set_index("trial_id").loc["t03"]
    assert t03["stop_rung"] == 1 and t03["saved_epochs"] == 2
    rungs = tables.rung_counts(per)
    assert rungs.to_dict("list") == {"rung": [1], "stopped_trials": [1]}


def test_totals_and_statuses(study):
    assert tables.status_counts(study.trials) == {"TERMINATED": 5, "ERROR": 1}
    totals = tables.compute_totals(study.trials, study.epochs)
    assert totals["trial_epochs"] == 15
    assert totals["gpu_hours"] == pytest.approx((30 + 90) / 3600)
    assert totals["cpu_hours"] == pytest.approx((60 + 20 + 40 + 60) / 3600)
    finished = tables.finished_trials(study.trials, study.score_column)
    assert sorted(finished["trial_id"]) == ["t00", "t01", "t02", "t03", "t05"]


def test_confusion_matrix_from_tidy_rows(study):
    val = tables.confusion_matrix(study.confusion, "t01", "val", 3)
    assert val.sum(axis=1).tolist() == CLASS_COUNTS["val"]
    assert val[0, 0] == round(0.82 * 70) and val[0, 1] == 70 - round(0.82 * 70)
    assert tables.tested_epoch(study.confusion, "t01") == 3
    assert tables.tested_epoch(study.confusion, "t02") is None
    assert tables.confusion_matrix(study.confusion, "t02", "test", 3) is None


def test_course_table_flags_a_model_that_only_predicts_grade_0(tmp_path):
    specs = DEFAULT_TRIALS[:2] + [
        TrialSpec("z", "resnet18", False, 1e-3, 8, [0.70, 0.705], [0.0, 0.01]),
    ]
    study = load_study(make_results(tmp_path, specs))
    course = tables.course_table(study.trials, study.score_column, study.mode, study.class_counts)
    flags = {(r.arch, r.init): r.like_majority for r in course.itertuples()}
    assert flags[("resnet18", "scratch")] is True and flags[("resnet18", "pretrained")] is False
    assert flags[("resnet50", "scratch")] is None  # no trial in that group


def test_the_best_trials_test_kappa_with_one_view_and_with_the_studys_views():
    best = pd.Series({"test_kappa": 0.61, "test_kappa_1view": 0.55})
    assert tables.test_time_views(best, 8) == (
        "test kappa 0.610 over 8 dihedral views (tta: 8), 0.550 with one view (+0.060 from the views)"
    )
    assert tables.test_time_views(best, 1).startswith("none (tta: 1)")
    assert "not tested" in tables.test_time_views(pd.Series({"test_kappa": math.nan}), 4)
    assert "one view not recorded" in tables.test_time_views(pd.Series({"test_kappa": 0.6}), 2)
