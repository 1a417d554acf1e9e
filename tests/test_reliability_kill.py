"""Processes killed under a running sweep: a trial's worker, then the driver itself.

    .venv/bin/pytest tests/test_reliability_kill.py

Each test runs a real `python -m study.sweep` (real Ray, real checkpoints, real Parquet) and
SIGKILLs one of its processes part-way; nothing is mocked.
"""

from __future__ import annotations

import time

import pandas as pd
import pytest

from tests.helpers.cli import run_cli
from tests.helpers.processes import (
    ParquetPoller,
    journal_epochs,
    journal_events,
    kill_driver_when,
    kill_tree,
    read_frame,
    running_sweep,
    sweep_args,
    trial_workers,
)

pytestmark = pytest.mark.slow


def epochs_of(folder, trial_id=None) -> pd.DataFrame:
    df = read_frame(folder, "epochs.parquet")
    if df is None:
        return pd.DataFrame(columns=["trial_id", "epoch"])
    return df if trial_id is None else df[df["trial_id"] == trial_id]


def test_killed_trial_worker_is_retried_from_its_checkpoint(tmp_path, synthetic_data):
    """SIGKILL the trial's Ray worker mid-run: Ray retries it from its last checkpoint."""
    folder, log, hold = tmp_path / "worker", tmp_path / "sweep.log", tmp_path / "hold"
    args = sweep_args(
        synthetic_data, tmp_path, "worker", "--set", "num_samples=1", "--set", "space.epochs=3",
        "--set", "max_failures=2",
    )  # fmt: skip
    # The trial is held after epoch 1 (its checkpoint registered, the epoch journaled), so the
    # kill lands mid-run on a fast idle machine and a slow loaded one alike.
    with running_sweep(args, log, hold=(1, hold)) as sweep:
        sweep.wait_for(lambda: hold.with_suffix(".held").exists(), 300, "the held trial")
        sweep.wait_for(lambda: journal_epochs(folder), 60, "epoch 1 in the journal")
        worker = int(hold.with_suffix(".held").read_text())
        assert worker in trial_workers(sweep.driver.pid)
        kill_tree([worker])
        hold.unlink()  # the retry runs on (it starts at epoch 2: never held again)
        killed_at = time.monotonic()
        sweep.driver.wait(timeout=300)
    driver, workers = sweep.driver, [worker]
    out = log.read_text(errors="replace")
    assert driver.returncode == 0, out[-4000:]
    assert time.monotonic() - killed_at < 300

    trials = read_frame(folder, "trials.parquet").set_index("trial_id")
    trial_id = trials.index[0]
    assert list(trials.index) == [trial_id]
    assert trials.loc[trial_id, "status"] == "TERMINATED", trials.loc[trial_id].to_dict()
    assert trials.loc[trial_id, "epochs_run"] == 3
    assert pd.isna(trials.loc[trial_id, "error"])

    epochs = epochs_of(folder)
    assert not epochs.duplicated(["trial_id", "epoch"]).any()  # every epoch exactly once
    assert sorted(epochs["epoch"]) == [1, 2, 3]
    # Retried from the checkpoint, not from scratch: epoch 1, finished before the kill, was
    # recorded once (a rerun would report it again) and epoch 2 ran after the kill, once.
    reported = [int(e["result"]["epoch"]) for e in journal_events(folder)]
    assert sorted(reported) == [1, 2, 3], reported
    # ...and Ray did see the worker we killed die (one failure, then the retry finished).
    errors = list((folder / "tune").glob(f"train_trial_{trial_id}_*/error.txt"))
    assert len(errors) == 1, out[-4000:]
    text = errors[0].read_text()
    assert "Failure # 1" in text and "Failure # 2" not in text
    assert f"pid: {workers[0]}" in text


def test_killed_driver_then_resume_finishes_and_readers_never_fail(tmp_path, synthetic_data):
    """SIGKILL the driver mid-sweep; `--resume` completes it; Parquet stays readable throughout."""
    folder, log = tmp_path / "driver", tmp_path / "sweep.log"
    args = sweep_args(
        synthetic_data, tmp_path, "driver", "--set", "num_samples=3", "--set", "space.epochs=3",
        "--set", "max_concurrent=1",
    )  # fmt: skip
    poller = ParquetPoller(folder)
    poller.start()
    try:

        def first_trial_done():
            trials = read_frame(folder, "trials.parquet")
            return trials is not None and (trials["status"] == "TERMINATED").any()

        # Kill the moment a trial has finished: Ray's own experiment snapshot (every ~10 s)
        # most likely still calls it RUNNING, the hardest case for "not run again".
        kill_driver_when(args, log, first_trial_done, 300, "one finished trial")
        before = read_frame(folder, "trials.parquet").set_index("trial_id")
        finished = before.index[before["status"] == "TERMINATED"]
        assert 1 <= len(finished) < 3
        epochs_before = epochs_of(folder)

        proc = run_cli(*args, "--resume", timeout=400)
    finally:
        poller.stop.set()
        poller.join()
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert poller.failures == [], poller.failures[:5]
    assert poller.reads > 50  # the poller really read the files throughout

    after = read_frame(folder, "trials.parquet").set_index("trial_id")
    assert len(after) == 3, after[["status", "epochs_run"]]
    assert (after["status"] == "TERMINATED").all(), after[["status", "error"]]
    assert (after["epochs_run"] == 3).all()
    # The best trial was tested, even one that --resume skipped (its checkpoint is on disk).
    assert after["test_acc"].notna().sum() == 1, proc.stdout[-3000:]
    assert "not tested" not in proc.stdout
    epochs_after = epochs_of(folder)
    assert not epochs_after.duplicated(["trial_id", "epoch"]).any()
    assert len(epochs_after) == 9
    # Finished trials were not run again: their rows are exactly what they were.
    old = epochs_before[epochs_before["trial_id"].isin(finished)].reset_index(drop=True)
    new = epochs_after[epochs_after["trial_id"].isin(finished)].reset_index(drop=True)
    pd.testing.assert_frame_equal(old, new)


def test_driver_killed_as_a_trial_starts_leaves_no_trial_running_forever(tmp_path, synthetic_data):
    """Killed the moment a trial starts: Ray's snapshot may not know that trial at all."""
    folder, log = tmp_path / "starts", tmp_path / "sweep.log"
    args = sweep_args(
        synthetic_data, tmp_path, "starts", "--set", "num_samples=2", "--set", "space.epochs=2",
        "--set", "max_concurrent=1",
    )  # fmt: skip

    def second_trial_started():
        trials = read_frame(folder, "trials.parquet")
        return trials is not None and len(trials) == 2 and (trials["status"] == "RUNNING").any()

    kill_driver_when(args, log, second_trial_started, 300, "the second trial")
    started = read_frame(folder, "trials.parquet")
    running = started.loc[started["status"] == "RUNNING", "trial_id"].item()

    proc = run_cli(*args, "--resume", timeout=400)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    trials = read_frame(folder, "trials.parquet").set_index("trial_id")
    assert not trials["status"].isin(["RUNNING", "PENDING"]).any(), trials[["status", "error"]]
    done = trials[trials["status"] == "TERMINATED"]
    assert len(done) == 2 and (done["epochs_run"] == 2).all()  # the study is complete
    if running not in done.index:  # Ray had not saved it: it says so, and nothing else
        assert trials.loc[running, "status"] == "ERROR"
        assert trials.loc[running, "error"].startswith("lost: the sweep was killed")
        assert len(trials) == 3
    epochs = epochs_of(folder)
    assert not epochs.duplicated(["trial_id", "epoch"]).any()
    assert set(epochs["trial_id"]) >= set(done.index)
