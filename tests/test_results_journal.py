"""The results journal without Ray: replay equals the live store, a torn last line after a
kill, a study folder written before the journal, and `trial_finished` reading the truth."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pandas as pd
import pytest

from retina.errors import RetinaError
from study.record import results
from study.record.finished import trial_finished
from study.record.journal import encode, event, read_events
from study.record.layout import JOURNAL_FILE
from study.record.results import ResultsStore

HP = ["arch", "lr", "epochs"]
CFG = {"arch": "resnet18", "lr": 0.01, "epochs": 3}


def result(epoch: int, kappa: float) -> dict:
    out = {"epoch": epoch, "val_kappa": kappa, "val_acc": 0.7, "time_total_s": 2.0 * epoch}
    out |= {"device": "cpu", "node": "n1", "val_confusion": [epoch] * 25}
    out["config"] = {"arch": "resnet18", "opaque": object()}  # Tune's results hold objects
    return out


def frames(store: ResultsStore) -> list[pd.DataFrame]:
    return [store.trials_frame(), store.epochs_frame(), store.confusion_frame()]


def assert_same(a: ResultsStore, b: ResultsStore) -> None:
    for x, y in zip(frames(a), frames(b), strict=True):
        pd.testing.assert_frame_equal(x, y)


def fed(folder) -> ResultsStore:
    store = ResultsStore(folder, HP, "val_kappa", "max")
    store.start_trial("t1", CFG)
    store.start_trial("t2", CFG)
    for e, k in [(1, 0.1), (2, 0.5), (3, 0.4)]:
        store.record_epoch("t1", result(e, k))
    store.record_epoch("t2", result(1, 0.2))
    store.record_epoch("t2", result(1, 0.3))  # re-reported after a retry: replaces
    store.finish_trial("t1", "TERMINATED")
    store.record_failure("t2", "loss is nan at epoch 2")
    store.record_test("t1", 2, {f"test_{k}": 0.5 for k in ("loss", "acc", "kappa",
        "balanced_acc", "referable_sensitivity", "referable_specificity")}, [1] * 25)  # fmt: skip
    return store


def test_replaying_the_journal_rebuilds_the_store_without_any_parquet(tmp_path):
    store = fed(tmp_path)
    assert not list(tmp_path.glob("*.parquet"))  # nothing flushed: the journal alone holds it
    again = ResultsStore(tmp_path, HP, "val_kappa", "max")
    again.load()
    assert_same(store, again)
    assert trial_finished(tmp_path, "t1") and not trial_finished(tmp_path, "t2")


def test_a_torn_last_line_is_skipped_and_cut_off_before_the_next_append(tmp_path):
    store = fed(tmp_path)
    store.close()
    whole = (tmp_path / JOURNAL_FILE).read_bytes()
    torn = encode(event("epoch", trial="t2", result=result(2, 0.9)))
    (tmp_path / JOURNAL_FILE).write_bytes(whole + torn[: len(torn) // 2])  # SIGKILL mid-write
    assert not trial_finished(tmp_path, "t2")  # a reader skips it
    again = ResultsStore(tmp_path, HP, "val_kappa", "max")
    again.load()
    assert_same(store, again)
    assert (tmp_path / JOURNAL_FILE).read_bytes() == whole  # cut off by the driver
    again.record_epoch("t2", result(2, 0.9))
    third = ResultsStore(tmp_path, HP, "val_kappa", "max")
    third.load()
    assert (third.epochs[("t2", 2)]["val_kappa"]) == pytest.approx(0.9)


def test_a_damaged_line_before_the_end_is_refused_with_the_fix(tmp_path):
    fed(tmp_path).close()
    lines = (tmp_path / JOURNAL_FILE).read_bytes().splitlines(keepends=True)
    lines[2] = b"{not json\n"
    (tmp_path / JOURNAL_FILE).write_bytes(b"".join(lines))
    with pytest.raises(RetinaError, match="line 3 is damaged.*--resume"):
        read_events(tmp_path / JOURNAL_FILE)


def test_a_study_from_before_the_journal_loads_from_parquet_and_is_journaled(tmp_path):
    old = ResultsStore(tmp_path, HP, "val_kappa", "max", journal=False)  # as the old code did
    for name in ("start_trial", "record_epoch", "finish_trial"):
        assert hasattr(old, name)
    old.start_trial("t1", CFG)
    old.record_epoch("t1", result(1, 0.4))
    old.finish_trial("t1", "TERMINATED")
    old.flush()
    assert not (tmp_path / JOURNAL_FILE).exists()
    assert trial_finished(tmp_path, "t1")  # from trials.parquet
    resumed = ResultsStore(tmp_path, HP, "val_kappa", "max")
    resumed.load()
    assert (tmp_path / JOURNAL_FILE).exists()
    resumed.start_trial("t2", CFG)
    resumed.record_epoch("t2", result(1, 0.6))
    later = ResultsStore(tmp_path, HP, "val_kappa", "max")
    later.load()  # from the journal alone: the Parquet rows and the new ones
    assert set(later.epochs) == {("t1", 1), ("t2", 1)}
    assert later.trials["t1"]["status"] == "TERMINATED"
    assert trial_finished(tmp_path, "t1") and not trial_finished(tmp_path, "t2")


def test_throttled_rebuild_writes_only_after_a_change_and_the_interval(tmp_path):
    store = fed(tmp_path)
    store.flush(force=False, min_interval_s=0.0)
    first = (tmp_path / "epochs.parquet").stat().st_mtime_ns
    store.flush(force=False, min_interval_s=0.0)  # nothing changed: not rewritten
    assert (tmp_path / "epochs.parquet").stat().st_mtime_ns == first
    store.record_epoch("t1", result(3, 0.45))
    store.flush(force=False, min_interval_s=3600)  # changed, but too soon
    assert pd.read_parquet(tmp_path / "epochs.parquet").query("trial_id == 't1'")["val_kappa"].iloc[
        -1
    ] == pytest.approx(0.4)
    store.flush()  # forced (the study ends): up to date
    assert pd.read_parquet(tmp_path / "epochs.parquet").query("trial_id == 't1'")["val_kappa"].iloc[
        -1
    ] == pytest.approx(0.45)


def test_a_trial_that_starts_or_ends_is_written_before_the_periodic_rebuild(tmp_path, monkeypatch):
    monkeypatch.setattr(results, "EVENT_SHARE", 1e9)  # the budget for early rebuilds: ample
    store = fed(tmp_path)
    store.flush()
    store.record_epoch("t1", result(4, 0.45))  # an epoch alone waits for the periodic rebuild
    store.flush(force=False, min_interval_s=3600)
    assert len(pd.read_parquet(tmp_path / "epochs.parquet").query("trial_id == 't1'")) == 3
    store.start_trial("t3", CFG)  # a trial starts: all three files, consistent, now
    time.sleep(0.01)  # the budget grows with the time since the store was made
    store.flush(force=False, min_interval_s=3600)
    trials = pd.read_parquet(tmp_path / "trials.parquet").set_index("trial_id")
    assert trials.loc["t3", "status"] == "RUNNING"
    assert len(pd.read_parquet(tmp_path / "epochs.parquet").query("trial_id == 't1'")) == 4
    monkeypatch.setattr(results, "EVENT_SHARE", 0.0)  # no budget: the periodic rebuild only
    store.finish_trial("t3", "TERMINATED")
    store.flush(force=False, min_interval_s=3600)
    trials = pd.read_parquet(tmp_path / "trials.parquet").set_index("trial_id")
    assert trials.loc["t3", "status"] == "RUNNING"


FIXTURES = Path(__file__).parent / "fixtures"


def test_a_journal_of_the_format_before_events_loads_and_is_converted_once(tmp_path, capsys):
    # Written by the harness of 2026-11 (49955b4), whose records named the store's methods.
    shutil.copy(FIXTURES / "journal-v0.jsonl", tmp_path / JOURNAL_FILE)
    reader = ResultsStore(tmp_path, ["arch", "lr"], "val_kappa", "max", journal=False)
    reader.load()  # a reader converts in memory and leaves the file as it is
    assert (tmp_path / JOURNAL_FILE).read_bytes() == (FIXTURES / "journal-v0.jsonl").read_bytes()
    assert trial_finished(tmp_path, "t_00000") and not trial_finished(tmp_path, "t_00001")
    driver = ResultsStore(tmp_path, ["arch", "lr"], "val_kappa", "max")
    driver.load()
    assert "converted 11 records" in capsys.readouterr().out
    events = read_events(tmp_path / JOURNAL_FILE)
    assert [e["v"] for e in events] == [1] * 11 and events[1]["event"] == "epoch"
    for store in (reader, driver):
        trials = store.trials_frame().set_index("trial_id")
        assert list(trials["status"]) == ["TERMINATED", "ERROR", "RUNNING"]
        assert list(trials["stage"]) == ["search", "search", "confirm"]
        assert trials.loc["t_00000", "best_epoch"] == 2
        assert trials.loc["t_00000", "test_kappa"] == pytest.approx(0.52)
        assert trials.loc["t_00001", "error"] == "loss is nan at batch 3"
        assert len(store.epochs_frame()) == 3 and len(store.confusion_frame()) > 0
    driver.load()  # again: nothing left to convert
    assert "converted" not in capsys.readouterr().out


def test_a_journal_of_a_newer_version_is_refused_by_name(tmp_path):
    (tmp_path / JOURNAL_FILE).write_bytes(encode({"v": 2, "event": "epoch", "trial": "t1"}))
    with pytest.raises(RetinaError, match=r"journal.jsonl: a journal record of version 2"):
        ResultsStore(tmp_path, HP, "val_kappa", "max").load()
