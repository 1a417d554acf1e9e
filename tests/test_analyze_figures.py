"""Each report figure has the expected traces and points; importances come out or are skipped."""

from __future__ import annotations

import math

import numpy as np
import pytest

from study.analyze import figures, figures_hparams, tables
from study.analyze.importance import METHOD, param_importances
from study.analyze.load import load_study
from tests.helpers.analyze_fixtures import DEFAULT_TRIALS, HYPERPARAMETERS, TrialSpec, make_results

BASELINES = {"train": 0.7, "val": 0.7, "test": 0.72}


@pytest.fixture()
def study(tmp_path):
    return load_study(make_results(tmp_path))


def test_learning_curves_draw_train_and_val_per_trial_and_the_baseline(study):
    fig = figures.learning_curves(study.epochs, study.trials, HYPERPARAMETERS, BASELINES)
    assert len(fig.data) == 2 * 6 + 2
    curves, base = fig.data[:12], fig.data[12:]
    # ordered by arch, init, trial: t00 t04 | t02 | t01 | t03 t05, train then val each
    assert [len(t.x) for t in curves[::2]] == [3, 2, 3, 3, 1, 3]
    assert list(curves[0].y) == pytest.approx([0.77, 0.83, 0.85])
    assert list(curves[1].y) == [0.72, 0.78, 0.80]
    assert {t.xaxis for t in curves[::2]} == {"x"} and {t.xaxis for t in curves[1::2]} == {"x2"}
    colours = {t.legendgroup: t.line.color for t in curves}
    assert colours["resnet18 pretrained"] == colours["resnet18 scratch"]
    assert colours["resnet18 pretrained"] != colours["resnet50 pretrained"]
    dashes = {t.legendgroup: t.line.dash for t in curves}
    assert dashes["resnet50 scratch"] == "dash" and dashes["resnet50 pretrained"] == "solid"
    assert sum(bool(t.showlegend) for t in curves) == 4  # one legend entry per group
    assert "lr=0.001" in curves[0].hovertemplate and "t00" in curves[0].hovertemplate
    assert [list(b.y) for b in base] == [[0.7, 0.7], [0.7, 0.7]]
    buttons = fig.layout.updatemenus[0].buttons
    assert [b.label for b in buttons] == ["accuracy", "loss", "quadratic weighted kappa"]
    loss_y = buttons[1].args[0]["y"]
    assert len(loss_y) == 14 and loss_y[1] == pytest.approx([0.66, 0.54, 0.5])
    assert loss_y[-1] == [None, None] and buttons[2].args[0]["y"][-1] == [0.0, 0.0]


def test_learning_curves_leave_gaps_for_nan(study):
    epochs = study.epochs.copy()
    epochs.loc[epochs["trial_id"] == "t00", "val_loss"] = [0.5, math.nan, 0.4]
    fig = figures.learning_curves(epochs, study.trials, HYPERPARAMETERS, BASELINES)
    assert fig.layout.updatemenus[0].buttons[1].args[0]["y"][1] == [0.5, None, 0.4]


def test_pretrained_vs_scratch_has_a_point_per_trial(study):
    fig = figures.pretrained_vs_scratch(study.trials, study.metric, BASELINES)
    assert [(t.name, len(t.y)) for t in fig.data] == [("pretrained", 3), ("scratch", 3)] * 2
    kappa_pre = fig.data[0]
    assert sorted(kappa_pre.y) == [0.25, 0.6, 0.65] and kappa_pre.boxpoints == "all"
    assert sorted(fig.data[2].y) == [0.75, 0.8, 0.82]  # val acc at the best epoch
    assert [s.y0 for s in fig.layout.shapes] == [0.0, 0.7]  # kappa 0 and the majority class


def test_parallel_coordinates_code_categories(study):
    finished = tables.finished_trials(study.trials, study.score_column)
    space = study.meta["config"]["space"]
    fig = figures_hparams.parallel_coordinates(finished, HYPERPARAMETERS, study.metric, space)
    (trace,) = fig.data
    dims = {d.label: d for d in trace.dimensions}
    assert list(dims) == ["arch", "pretrained", "lr (log)", "batch_size", "epochs"] + [
        "weight_decay (log)",
        "val_kappa",
    ]
    assert all(len(d.values) == 5 for d in trace.dimensions)
    assert list(dims["arch"].ticktext) == ["resnet18", "resnet50"]
    assert list(dims["pretrained"].ticktext) == ["false", "true"]
    order = list(finished["trial_id"])
    assert dims["arch"].values[order.index("t01")] == 1
    assert dims["lr (log)"].values[order.index("t00")] == pytest.approx(-3)
    assert list(dims["batch_size"].ticktext) == ["8", "16", "32"]
    assert list(trace.line.color) == list(finished["best_val_kappa"])


def test_metric_against_each_hyperparameter(study):
    finished = tables.finished_trials(study.trials, study.score_column)
    space = study.meta["config"]["space"]
    fig = figures_hparams.metric_vs_hyperparameters(finished, HYPERPARAMETERS, "val_kappa", space)
    panels = [t for t in fig.data if t.showlegend is False]
    assert [t.name for t in panels] == HYPERPARAMETERS
    assert all(len(t.x) == 5 and len(t.y) == 5 for t in panels)
    axis = {t.name: t.xaxis.replace("x", "xaxis") for t in panels}
    assert fig.layout[axis["lr"]].type == "log" and fig.layout[axis["weight_decay"]].type == "log"
    for name in ("arch", "pretrained", "batch_size"):
        assert fig.layout[axis[name]].type == "category"
    assert list(fig.layout[axis["batch_size"]].categoryarray) == ["8", "16", "32"]
    assert sorted(t.name for t in fig.data if t.showlegend is not False) == ["resnet18", "resnet50"]


def test_importances_with_enough_trials(study):
    finished = tables.finished_trials(study.trials, study.score_column)
    imp = param_importances(finished, HYPERPARAMETERS, "val_kappa", "max")
    assert imp.method == METHOD and "PED-ANOVA" in imp.method
    assert set(imp.values) == {"arch", "pretrained", "lr", "batch_size", "weight_decay"}
    assert sum(imp.values.values()) == pytest.approx(1.0)
    assert "5 finished trials" in imp.note
    fig = figures_hparams.importance_figure(imp.values, imp.method)
    assert len(fig.data) == 1 and len(fig.data[0].x) == 5 and "PED-ANOVA" in fig.layout.title.text


def test_importances_skipped_with_too_few_trials(tmp_path):
    study = load_study(make_results(tmp_path, DEFAULT_TRIALS[:3]))
    finished = tables.finished_trials(study.trials, study.score_column)
    imp = param_importances(finished, HYPERPARAMETERS, "val_kappa", "max")
    assert imp.values == {} and "needs at least 4 finished trials" in imp.note


def test_importances_skipped_when_nothing_varies(tmp_path):
    same = [
        TrialSpec(f"s{i}", "resnet18", True, 1e-3, 16, [0.7, 0.7 + i / 100], [0.1, 0.1 + i / 10])
        for i in range(5)
    ]
    study = load_study(make_results(tmp_path, same))
    finished = tables.finished_trials(study.trials, study.score_column)
    imp = param_importances(finished, HYPERPARAMETERS, "val_kappa", "max")
    assert imp.values == {} and "no hyperparameter varies" in imp.note


def test_confusion_figure_counts_shares_and_recall(study):
    matrix = tables.confusion_matrix(study.confusion, "t01", "val", 3)
    fig = figures.confusion_figure(matrix, "t01 val")
    counts, shares = fig.data
    assert np.array_equal(np.asarray(counts.z), matrix)
    assert np.allclose(np.asarray(shares.z).sum(axis=1), 1.0)
    assert shares.y[0] == f"0 · recall {matrix[0, 0] / 70:.0%}" and shares.y[4].startswith("4 ·")
    assert counts.texttemplate == "%{text}" and np.asarray(counts.text)[0, 0] == matrix[0, 0]


def test_confusion_figure_with_an_empty_row():
    matrix = np.diag([5, 0, 3, 0, 1])
    fig = figures.confusion_figure(matrix, "sparse")
    assert fig.data[1].y[1] == "1 · recall —"


def test_early_stopping_figure(study):
    per, _ = tables.early_stopping(study.trials)
    fig = figures.early_stopping_figure(per)
    assert [t.name for t in fig.data] == [
        "epochs run",
        "saved by the scheduler",
        "not run (failed / running)",
    ]
    assert all(len(t.x) == 6 for t in fig.data)
    assert [sum(t.y) for t in fig.data] == [15, 2, 1]
    assert "t04 (ERROR)" in fig.data[0].x


def test_importances_leave_out_a_conditional_hyperparameter(study):
    finished = tables.finished_trials(study.trials, study.score_column)
    finished["momentum"] = [0.9, None, 0.8, None, 0.9]  # set only for some trials
    imp = param_importances(finished, [*HYPERPARAMETERS, "momentum"], "val_kappa", "max")
    assert "momentum" not in imp.values and len(imp.values) == 5
    assert "left out, not set in every trial: momentum" in imp.note


def test_pretrained_vs_scratch_for_an_accuracy_metric(study):
    fig = figures.pretrained_vs_scratch(study.trials, "val_acc", BASELINES)
    assert [(t.name, len(t.y)) for t in fig.data] == [("pretrained", 3), ("scratch", 3)]
    assert [s.y0 for s in fig.layout.shapes] == [0.7]
