"""The Parquet results writer without Ray: columns, dedup of re-reported epochs, atomic files."""

from __future__ import annotations

import math
import os
import stat

import pandas as pd
import pytest

from retina.errors import RetinaError
from study.record.results import (
    EPOCH_COLUMNS,
    METRIC_KEYS,
    ResultsStore,
    write_atomic,
    write_parquet_atomic,
)

HP = ["arch", "pretrained", "lr", "batch_size", "epochs"]


def epoch_result(epoch: int, kappa: float, acc: float = 0.7) -> dict:
    result = {"epoch": epoch, "val_kappa": kappa, "val_acc": acc, "val_loss": 1.0 / epoch}
    result |= {"train_loss": 1.5, "train_acc": 0.6, "time_total_s": 10.0 * epoch}
    result |= {"device": "cpu", "node": "127.0.0.1"}
    result["val_confusion"] = [epoch] * 25
    return result


@pytest.fixture
def store(tmp_path):
    s = ResultsStore(tmp_path, HP, "val_kappa", "max")
    cfg = {"arch": "resnet18", "pretrained": False, "lr": 0.01, "batch_size": 8, "epochs": 3}
    s.start_trial("t1", cfg)
    s.start_trial("t2", cfg | {"arch": "resnet50", "epochs": 4})
    for e, k in [(1, 0.1), (2, 0.5), (3, 0.4)]:
        s.record_epoch("t1", epoch_result(e, k))
    s.record_epoch("t2", epoch_result(1, 0.2))
    s.finish_trial("t1", "TERMINATED")
    s.finish_trial("t2", "TERMINATED")  # stopped by the scheduler after 1 of 4 epochs
    return s


def test_tables_have_documented_columns_and_best_epoch(store, tmp_path):
    store.flush()
    epochs = pd.read_parquet(tmp_path / "epochs.parquet")
    assert list(epochs.columns) == EPOCH_COLUMNS
    assert len(epochs) == 4
    trials = pd.read_parquet(tmp_path / "trials.parquet").set_index("trial_id")
    assert trials.loc["t1", "best_epoch"] == 2
    assert trials.loc["t1", "best_val_kappa"] == pytest.approx(0.5)
    assert trials.loc["t1", "epochs_run"] == 3
    assert not trials.loc["t1", "stopped_early"]
    assert trials.loc["t2", "stopped_early"]
    assert trials.loc["t2", "arch"] == "resnet50"
    assert math.isnan(trials.loc["t1", "test_acc"])
    conf = pd.read_parquet(tmp_path / "confusion.parquet")
    assert set(conf.columns) == {"trial_id", "split", "epoch", "true", "predicted", "count"}
    assert len(conf) == 4 * 25
    assert conf[(conf.trial_id == "t1") & (conf.epoch == 3)]["count"].eq(3).all()


def test_re_reported_epoch_replaces_the_old_row(store, tmp_path):
    store.record_epoch("t1", epoch_result(2, 0.9))  # a retried trial reports epoch 2 again
    store.flush()
    epochs = pd.read_parquet(tmp_path / "epochs.parquet")
    assert not epochs.duplicated(["trial_id", "epoch"]).any()
    row = epochs[(epochs.trial_id == "t1") & (epochs.epoch == 2)]
    assert row["val_kappa"].item() == pytest.approx(0.9)


def test_failure_reason_survives_ray_reporting_a_clean_end(store, tmp_path):
    store.record_failure("t2", "loss is nan at batch 3 (epoch 2)")
    store.finish_trial("t2", "TERMINATED")
    store.flush()
    trials = pd.read_parquet(tmp_path / "trials.parquet").set_index("trial_id")
    assert trials.loc["t2", "status"] == "ERROR"
    assert "nan" in trials.loc["t2", "error"]


def test_errored_trial_that_resume_retries_ends_terminated(store, tmp_path):
    """Ray errored t2 (e.g. its worker killed too often); --resume retries it and it ends."""
    store.finish_trial("t2", "ERROR", "ActorDiedError: the actor died")
    store.flush()
    again = ResultsStore(tmp_path, HP, "val_kappa", "max")
    again.load()
    again.start_trial("t2", {"arch": "resnet50", "epochs": 4})
    for e in (2, 3, 4):
        again.record_epoch("t2", epoch_result(e, 0.3))
    again.finish_trial("t2", "TERMINATED")
    again.flush()
    trials = pd.read_parquet(tmp_path / "trials.parquet").set_index("trial_id")
    assert trials.loc["t2", "status"] == "TERMINATED"
    assert pd.isna(trials.loc["t2", "error"]) and trials.loc["t2", "epochs_run"] == 4


def test_load_takes_back_everything_written(store, tmp_path):
    store.record_test(
        "t1",
        2,
        {f"test_{k}": 0.5 for k in METRIC_KEYS},
        [1] * 25,
    )
    store.flush()
    again = ResultsStore(tmp_path, HP, "val_kappa", "max")
    again.load()
    again.flush()
    for name in ("trials", "epochs", "confusion"):
        before = store.__getattribute__(f"{name}_frame")()
        after = pd.read_parquet(tmp_path / f"{name}.parquet")
        pd.testing.assert_frame_equal(
            before.reset_index(drop=True), after.reset_index(drop=True), check_dtype=False
        )


def test_the_one_view_test_kappa_is_kept_beside_the_test_over_the_views(store, tmp_path):
    views = {f"test_{k}": 0.5 for k in METRIC_KEYS} | {"test_kappa_1view": 0.42}
    store.record_test("t1", 2, views, [1] * 25)
    store.record_test("t2", 2, {f"test_{k}": 0.5 for k in METRIC_KEYS}, [1] * 25)  # without
    store.flush()
    for source in ("journal", "parquet"):
        if source == "parquet":
            (tmp_path / "journal.jsonl").unlink()  # a study stored before the journal
        again = ResultsStore(tmp_path, HP, "val_kappa", "max", journal=False)
        again.load()
        trials = again.trials_frame().set_index("trial_id")
        assert trials.loc["t1", "test_kappa_1view"] == 0.42, source
        assert trials.loc["t1", "test_kappa"] == 0.5 and pd.isna(
            trials.loc["t2", "test_kappa_1view"]
        )


def test_atomic_write_leaves_no_temp_and_is_not_world_writable(tmp_path):
    df = pd.DataFrame({"a": [1, 2]})
    write_parquet_atomic(tmp_path / "x.parquet", df)

    def half_write(path):  # a writer that dies mid-file (disk full, kill) leaves nothing
        path.write_bytes(b"PAR1 half")
        raise OSError(28, "No space left on device")

    with pytest.raises(RetinaError, match="no space left"):  # said once, clearly, by the sweep
        write_atomic(tmp_path / "x.parquet", half_write)
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "x.parquet"), df)
    assert sorted(os.listdir(tmp_path)) == ["x.parquet"]
    mode = (tmp_path / "x.parquet").stat().st_mode
    assert not mode & stat.S_IWOTH
