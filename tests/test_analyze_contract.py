"""The analysis reads what the sweep's own writer (`study.record.results.ResultsStore`) writes: the
results contract checked from both sides, with no Ray (the store is fed directly)."""

from __future__ import annotations

import json

from study.analyze import tables
from study.analyze.load import load_study
from study.analyze.report import build_report
from study.record.results import ResultsStore
from tests.helpers.analyze_fixtures import CLASS_COUNTS, confusion_counts, study_json

HP = ["arch", "pretrained", "lr", "batch_size", "epochs", "weight_decay"]


def _epoch(epoch: int, acc: float, kappa: float) -> dict:
    row = {"epoch": epoch, "train_loss": 1.0 / epoch, "train_acc": acc + 0.02}
    row |= {"train_kappa": kappa, "train_images_per_s": 50.0, "val_loss": 1.2 / epoch}
    row |= {"val_acc": acc, "val_kappa": kappa, "val_balanced_acc": 0.3}
    row |= {"val_referable_sensitivity": 0.5, "val_referable_specificity": 0.8}
    row |= {f"val_recall_{c}": 0.5 for c in range(5)}
    row |= {"val_images_per_s": 90.0, "seconds": 5.0, "time_total_s": 5.0 * epoch}
    matrix = confusion_counts(CLASS_COUNTS["val"], acc)
    return row | {"val_confusion": [c for r in matrix for c in r], "device": "cpu", "node": "n1"}


def test_report_from_the_sweep_writer(tmp_path):
    folder = tmp_path / "demo"
    store = ResultsStore(folder, HP, "val_kappa", "max")
    configs = {
        "a": dict(arch="resnet18", pretrained=True, lr=1e-3, batch_size=8, epochs=3, weight_decay=1e-4),
        "b": dict(arch="resnet50", pretrained=False, lr=1e-2, batch_size=16, epochs=3, weight_decay=1e-3),
        "c": dict(arch="resnet18", pretrained=False, lr=1e-1, batch_size=8, epochs=3, weight_decay=1e-5),
    }  # fmt: skip
    curves = {"a": [(0.72, 0.3), (0.8, 0.5), (0.81, 0.45)], "b": [(0.7, 0.1)], "c": [(0.7, 0.0)]}
    for tid, cfg in configs.items():
        store.start_trial(tid, cfg)
        for e, (acc, kappa) in enumerate(curves[tid], start=1):
            store.record_epoch(tid, _epoch(e, acc, kappa))
    store.finish_trial("a", "TERMINATED")
    store.finish_trial("b", "TERMINATED")  # 1 of 3 epochs: stopped by the scheduler
    store.record_failure("c", "loss is nan at batch 3")
    test = {
        f"test_{k}": v
        for k, v in zip(tables.REPORTED_METRICS, (0.79, 0.4, 0.3, 0.5, 0.8), strict=True)
    }
    matrix = confusion_counts(CLASS_COUNTS["test"], 0.79)
    store.record_test("a", 2, test | {"test_loss": 0.9}, [c for r in matrix for c in r])
    store.flush()
    (folder / "study.json").write_text(
        json.dumps(study_json("demo", "val_kappa", "max", CLASS_COUNTS, 3))
    )

    study = load_study(folder)
    board = tables.leaderboard(study.trials, study.hyperparameters, study.metric, study.mode)
    assert list(board["trial_id"]) == ["a", "b", "c"]
    a = board.iloc[0]
    assert (a["best_epoch"], a["best_val_kappa"], a["best_val_acc"]) == (2, 0.5, 0.8)
    assert a["test_acc"] == 0.79 and bool(a["pretrained"]) is True
    assert board.iloc[2]["status"] == "ERROR" and "nan" in board.iloc[2]["error"]
    _, totals = tables.early_stopping(study.trials)
    assert totals["stopped"] == 1 and totals["saved_epochs"] == 2
    assert tables.tested_epoch(study.confusion, "a") == 2
    html = build_report(study, top_k=2)
    assert html.count("Plotly.newPlot(") >= 6 and "loss is nan at batch 3" in html
