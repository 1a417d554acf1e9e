"""Real sweeps under faults: a NaN trial, Ctrl-C then --resume. (A two-node cluster, trials on
both nodes and one node lost: test_reliability_cluster.py.)"""

from __future__ import annotations

import signal

import pandas as pd
import pytest

from study.record.layout import EPOCHS_FILE, TRIALS_FILE
from tests.helpers.cli import run_cli
from tests.helpers.processes import NO_DASHBOARD, NO_REPORT, read_frame, running_sweep

pytestmark = pytest.mark.slow

TINY = [*NO_DASHBOARD, "--set", "data.image_size=32", "--set", "space.arch=resnet18", "--set", "space.head=classify",
        "--set", "space.pretrained=false", "--set", "space.batch_size=16",
        "--set", "test_top_k=1", "--set", "confirm.seeds=0", "--set", "export=false"]  # fmt: skip


def read_trials(folder):
    return pd.read_parquet(folder / "trials.parquet").set_index("trial_id")


def test_nan_trial_is_recorded_and_the_study_finishes(tmp_path, synthetic_data):
    proc = run_cli(
        "study.sweep", "search_spaces/demo.yaml", "--data", str(synthetic_data),
        "--results", str(tmp_path), "--name", "nan", *TINY, *NO_REPORT,
        "--set", "search.algorithm=random", "--set", "scheduler.name=none",
        "--set", "space.lr={grid: [0.01, 1.0e+12]}", "--set", "space.epochs=2",
        "--set", "num_samples=1",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "Ray dashboard: off (--dashboard-host off)" in proc.stdout  # a Ray without it
    # export: false (TINY): no best/, and the line says how to make it later
    assert f"export: off (export: false); python -m study.export {tmp_path / 'nan'}" in proc.stdout
    assert not (tmp_path / "nan" / "best").exists()
    trials = read_trials(tmp_path / "nan")
    assert len(trials) == 2
    bad = trials[trials["lr"] > 1]
    good = trials[trials["lr"] < 1]
    assert bad["status"].item() == "ERROR"
    assert "loss is" in bad["error"].item() and "epoch 1" in bad["error"].item()
    assert good["status"].item() == "TERMINATED" and good["epochs_run"].item() == 2
    assert good["test_acc"].notna().item()  # only the healthy trial was tested
    epochs = pd.read_parquet(tmp_path / "nan" / "epochs.parquet")
    assert set(epochs["trial_id"]) == set(good.index)  # no fake epoch for the NaN trial


def test_ctrl_c_then_resume_finishes_without_rerunning_finished_trials(tmp_path, synthetic_data):
    args = [
        "study.sweep", "search_spaces/demo.yaml", "--data", str(synthetic_data),
        "--results", str(tmp_path), "--name", "resume", *TINY,
        "--set", "scheduler.name=none", "--set", "num_samples=3", "--set", "max_concurrent=1",
        "--set", "space.epochs=3",
    ]  # fmt: skip
    folder, log = tmp_path / "resume", tmp_path / "sweep.log"
    # Output to a file, not a pipe nobody reads while the test waits: on a slow machine Tune's
    # status tables would fill a pipe and block the driver mid-study.
    with running_sweep(args, log) as sweep:

        def finished_and_next_part_way():  # one trial finished and the next one is part-way
            trials, epochs = read_frame(folder, TRIALS_FILE), read_frame(folder, EPOCHS_FILE)
            done = trials is not None and (trials["status"] == "TERMINATED").sum() >= 1
            return done and epochs is not None and len(epochs) >= 4

        sweep.wait_for(finished_and_next_part_way, 600, "one finished trial and a 4th epoch")
        sweep.driver.send_signal(signal.SIGINT)
        sweep.driver.wait(timeout=400)  # Tune stops, the results are flushed, Ray shuts down
    out = sweep.output()
    assert sweep.driver.returncode == 130, out[-3000:]
    assert "--resume" in out
    before = read_trials(folder)
    finished = before.index[before["status"] == "TERMINATED"]
    assert 1 <= len(finished) < 3
    epochs_before = pd.read_parquet(folder / "epochs.parquet")

    proc = run_cli(*args, "--resume")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    after = read_trials(folder)
    assert len(after) == 3 and (after["status"] == "TERMINATED").all()
    assert (after["epochs_run"] == 3).all()
    epochs_after = pd.read_parquet(folder / "epochs.parquet")
    assert not epochs_after.duplicated(["trial_id", "epoch"]).any()
    assert len(epochs_after) == 9
    # A finished trial is not run again: its rows are byte-for-byte what they were.
    old = epochs_before[epochs_before["trial_id"].isin(finished)].reset_index(drop=True)
    new = epochs_after[epochs_after["trial_id"].isin(finished)].reset_index(drop=True)
    pd.testing.assert_frame_equal(old, new)
