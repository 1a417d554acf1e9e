"""The driver's checkpoint retention under real Ray: after an experiment only each trial's
best and latest checkpoints remain, and a driver killed mid-run resumes from the checkpoints
that Tune's saved snapshot names (study.run.retention, study.run.snapshot).

    .venv/bin/pytest tests/test_checkpoint_retention.py

Tiny trials (no model) run by the sweep's own run config, in a process of their own
(tests/helpers/retention_driver.py); Tune is made to snapshot every second, so several
checkpoints come and go between two snapshots, as an hour-long epoch's would between minutes.
"""

from __future__ import annotations

import json
import os
import signal

import pytest

from tests.helpers.cli import run_cli
from tests.helpers.processes import (
    descendants,
    journal_events,
    kill_tree,
    start_sweep,
    wait_for,
)

pytestmark = pytest.mark.slow

FAST_SNAPSHOTS = {**os.environ, "TUNE_GLOBAL_CHECKPOINT_S": "1"}


def summary(work) -> dict:
    return json.loads((work / "summary.json").read_text())


def starts(work) -> list[dict]:
    return [json.loads(line) for line in (work / "starts.jsonl").read_text().splitlines()]


def test_only_the_best_and_the_latest_checkpoint_remain(tmp_path):
    proc = run_cli(
        "tests.helpers.retention_driver", str(tmp_path), "--epochs", "8",
        env=FAST_SNAPSHOTS, timeout=400,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = summary(tmp_path)
    assert result["errors"] == []
    assert set(result["status"].values()) == {"TERMINATED"}
    # Epoch 7 is the best (kappa 0.8) and 8 the latest; 1-6 were deleted by the driver.
    assert result["checkpoints"] == {t: [7, 8] for t in result["status"]}, result


def test_killed_driver_resumes_from_the_checkpoints_its_snapshot_names(tmp_path):
    log, work = tmp_path / "driver.log", tmp_path / "work"
    work.mkdir()
    args = ["tests.helpers.retention_driver", str(work), "--epochs", "12"]
    driver = start_sweep(args, log, env=FAST_SNAPSHOTS)
    tree: dict[int, str] = {}
    try:

        def part_way():  # both trials past epoch 5: several snapshots and deletions behind
            tree.update(descendants(driver.pid))
            return len(journal_events(work / "results")) >= 11

        wait_for(part_way, 300, "epochs 1-5 of both trials", driver, log)
        driver.send_signal(signal.SIGKILL)  # no handler, no clean-up, no last snapshot
        driver.wait(timeout=30)
    finally:
        driver.kill()
        kill_tree(list(tree | descendants(driver.pid)))
    assert not (work / "summary.json").exists()

    proc = run_cli(*args, "--resume", env=FAST_SNAPSHOTS, timeout=400)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = summary(work)
    # Every trial restored from the checkpoint the snapshot named (a deleted one fails the
    # restore: an error here) and ran to its end.
    assert result["errors"] == [], result
    assert set(result["status"].values()) == {"TERMINATED"}, result
    assert set(result["epochs_run"].values()) == {12}, result
    resumed = [s for s in starts(work) if s["first"] > 1]
    assert {s["trial"] for s in resumed} == set(result["status"]), starts(work)
    for trial, epochs in result["checkpoints"].items():
        # The best and the latest; and what the killed session's snapshot named (the epoch
        # resumed from and its best so far): this session never registered those, so it
        # leaves them to the end-of-study clean-up.
        assert {7, 12} <= set(epochs) and len(epochs) <= 4, (trial, epochs)
