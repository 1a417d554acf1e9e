"""Both leaderboards, the sweep's printed one and the report's, show a tested trial's test kappa
with one view beside its test kappa over the study's views when its tta is above 1 (issue 18:
what the views brought, for the best trial). Fed by the sweep's own writer, with no Ray.

    .venv/bin/pytest tests/test_leaderboard.py
"""

from __future__ import annotations

import json
import re

import pytest

from study.analyze import tables
from study.analyze.load import load_study
from study.analyze.report import build_report
from study.conclude.leaderboard import leaderboard
from study.record.results import ResultsStore
from tests.helpers.analyze_fixtures import CLASS_COUNTS, confusion_counts, study_json

HP = ["arch", "pretrained", "lr", "batch_size", "epochs", "weight_decay"]
CONFIG = dict(arch="resnet18", pretrained=False, lr=1e-2, batch_size=8, epochs=2, weight_decay=1e-4)


def _epoch(epoch: int, kappa: float) -> dict:
    row = {"epoch": epoch, "train_loss": 1.0, "train_acc": 0.7, "train_kappa": kappa}
    row |= {"val_loss": 1.0 / epoch, "val_acc": 0.7, "val_kappa": kappa, "time_total_s": epoch}
    row |= {"val_balanced_acc": 0.3, "val_referable_sensitivity": 0.5}
    row |= {"val_referable_specificity": 0.8, **{f"val_recall_{c}": 0.5 for c in range(5)}}
    matrix = confusion_counts(CLASS_COUNTS["val"], 0.7)
    return row | {"val_confusion": [c for r in matrix for c in r], "device": "cpu", "node": "n1"}


def _study(folder, views: int) -> ResultsStore:
    """Two finished search trials; the better one (a) tested: kappa 0.612 over the views,
    0.547 with one view."""
    store = ResultsStore(folder, HP, "val_kappa", "max")
    for trial_id, kappa in (("a", 0.5), ("b", 0.2)):
        store.start_trial(trial_id, CONFIG)
        for epoch in (1, 2):
            store.record_epoch(trial_id, _epoch(epoch, kappa))
        store.finish_trial(trial_id, "TERMINATED")
    test = dict(zip(tables.REPORTED_METRICS, (0.79, 0.612, 0.3, 0.5, 0.8), strict=True))
    test = {f"test_{k}": v for k, v in test.items()} | {"test_loss": 0.9, "test_kappa_1view": 0.547}
    matrix = confusion_counts(CLASS_COUNTS["test"], 0.79)
    store.record_test("a", 2, test, [c for r in matrix for c in r])
    store.flush()
    meta = study_json(folder.name, "val_kappa", "max", CLASS_COUNTS, 2)
    meta["config"]["tta"] = views
    (folder / "study.json").write_text(json.dumps(meta))
    return store


def _header(text: str) -> list[str]:
    return text.splitlines()[0].split()


@pytest.mark.parametrize("views", [2, 8])
def test_printed_leaderboard_shows_the_one_view_kappa_beside_the_test_kappa(tmp_path, views):
    printed = leaderboard(_study(tmp_path / "demo", views), views)
    header = _header(printed)
    assert header[-3:] == ["test_acc", "test_kappa", "test_kappa_1view"]
    best, untested = printed.splitlines()[1].split(), printed.splitlines()[2].split()
    assert best[0] == "a" and best[-2:] == ["0.612", "0.547"]
    assert untested[0] == "b" and untested[-3:] == ["NaN", "NaN", "NaN"]


def test_printed_leaderboard_of_a_one_view_study_has_no_second_kappa(tmp_path):
    printed = leaderboard(_study(tmp_path / "demo", 1), 1)
    assert _header(printed)[-2:] == ["test_acc", "test_kappa"]
    assert "0.547" not in printed


def _leaderboard_section(html: str) -> str:
    return re.search(r'<section id="leaderboard">.*?</section>', html, re.S).group(0)


def test_report_leaderboard_shows_the_one_view_kappa_beside_the_test_kappa(tmp_path):
    _study(tmp_path / "demo", 8)
    study = load_study(tmp_path / "demo")
    board = tables.leaderboard(study.trials, study.hyperparameters, study.metric, study.mode, 8)
    columns = list(board.columns)
    assert columns[columns.index("test_kappa") + 1] == "test_kappa_1view"
    assert board.iloc[0]["test_kappa_1view"] == pytest.approx(0.547)
    section = _leaderboard_section(build_report(study, top_k=1))
    cols = re.findall(r'<th[^>]*data-col="([^"]+)"', section)
    assert cols[cols.index("test_kappa") + 1] == "test_kappa_1view"
    assert ">test kappa, 1 view</th>" in section and ">0.547</td>" in section


def test_report_leaderboard_of_a_one_view_study_or_one_tested_before_the_column(tmp_path):
    _study(tmp_path / "one", 1)
    study = load_study(tmp_path / "one")
    assert "test_kappa_1view" not in _leaderboard_section(build_report(study, top_k=1))
    # A study tested before the one-view kappa was recorded: the column is left out, no error.
    trials = study.trials.drop(columns="test_kappa_1view")
    board = tables.leaderboard(trials, study.hyperparameters, study.metric, study.mode, 8)
    assert "test_kappa_1view" not in board.columns and "test_kappa" in board.columns
