"""The incremental rebuild of the results tables writes what a whole rebuild would."""

from __future__ import annotations

import pandas as pd

from study.record.results import METRIC_KEYS, ResultsStore

HP = ["arch", "lr", "epochs"]
CFG = {"arch": "resnet18", "lr": 0.01, "epochs": 3}


def result(epoch: int, kappa: float) -> dict:
    out = {"epoch": epoch, "val_kappa": kappa, "val_acc": 0.7, "time_total_s": 2.0 * epoch}
    return out | {"device": "cpu", "node": "n1", "val_confusion": [epoch + kappa > 1] * 25}


def on_disk(folder) -> list[pd.DataFrame]:
    return [pd.read_parquet(folder / f"{n}.parquet") for n in ("trials", "epochs", "confusion")]


def assert_files_are_a_whole_rebuild(store: ResultsStore) -> None:
    whole = [store.trials_frame(), store.epochs_frame(), store.confusion_frame()]
    for disk, built in zip(on_disk(store.folder), whole, strict=True):
        pd.testing.assert_frame_equal(disk, built)


def test_each_write_equals_a_whole_rebuild_as_trials_change(tmp_path):
    store = ResultsStore(tmp_path, HP, "val_kappa", "max")
    for t in ("t2", "t0", "t1"):  # ids out of order: the files stay sorted by trial
        store.start_trial(t, CFG)
        store.record_epoch(t, result(1, 0.1))
    store.flush()
    assert_files_are_a_whole_rebuild(store)
    store.record_epoch("t0", result(2, 0.9))  # a cached trial changes: its rows are rebuilt
    store.record_epoch("t1", result(1, 0.5))  # an epoch reported again replaces its row
    store.finish_trial("t2", "TERMINATED")
    store.start_trial("t10", CFG)  # a new trial between cached ones
    store.record_epoch("t10", result(1, 0.3))
    store.flush()
    assert_files_are_a_whole_rebuild(store)
    trials = on_disk(tmp_path)[0].set_index("trial_id")
    assert trials.loc["t0", "best_epoch"] == 2 and trials.loc["t1", "best_val_kappa"] == 0.5
    store.record_test("t0", 2, {f"test_{k}": 0.5 for k in METRIC_KEYS}, [1] * 25)
    store.flush()
    assert_files_are_a_whole_rebuild(store)
    later = ResultsStore(tmp_path, HP, "val_kappa", "max")
    later.load()  # from the journal: all parts built again
    later.flush()
    assert_files_are_a_whole_rebuild(later)
    assert len(on_disk(tmp_path)[2]) == 25 * 6  # 5 val epochs + 1 test, 25 counts each
