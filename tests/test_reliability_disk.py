"""The results folder under attack: not writable, a full disk, a disk that fills mid-run,
another study in the folder, and `--resume` with a changed space.

    .venv/bin/pytest tests/test_reliability_disk.py

Full and read-only disks are real tmpfs mounts (root only: skipped elsewhere, except the
non-root permission check, which needs no mount).
"""

from __future__ import annotations

import json
import os
import pickle
import shutil

import pandas as pd
import pytest

from retina.errors import RetinaError
from study.run.snapshot import SnapshotKeeper, repair
from tests.conftest import SMALL_SWEEP
from tests.helpers.cli import run_cli
from tests.helpers.processes import (
    PARQUET_FILES,
    fill,
    read_frame,
    running_sweep,
    sweep_args,
    tmpfs,
)


def refused_before_work(proc, *phrases: str) -> str:
    """A clean refusal: exit 2, one `error:` line naming the problem, no traceback, no Ray."""
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, proc.stderr[-2000:]
    for phrase in phrases:
        assert phrase in lines[0], lines[0]
    assert "Ray dashboard" not in proc.stdout  # nothing started
    return lines[0]


def test_results_path_under_a_file_is_refused(tmp_path, synthetic_data):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    proc = run_cli(*sweep_args(synthetic_data, blocker / "results", "x"), timeout=120)
    refused_before_work(proc, "not writable", str(blocker))
    assert blocker.read_text() == "not a folder"


def test_read_only_results_folder_is_refused(tmp_path, synthetic_data):
    folder = tmp_path / "ro"
    if os.geteuid() != 0:  # permissions bind a normal user
        folder.mkdir()
        folder.chmod(0o555)
        proc = run_cli(*sweep_args(synthetic_data, folder, "x"), timeout=120)
        refused_before_work(proc, "not writable", "Permission denied")
        return
    # root ignores permissions: a read-only file system binds everyone.
    with tmpfs(folder, "1m", read_only=True):
        proc = run_cli(*sweep_args(synthetic_data, folder, "x"), timeout=120)
        refused_before_work(proc, "not writable", "Read-only file system")
        assert os.listdir(folder) == []


def test_full_disk_is_refused_before_work(tmp_path, synthetic_data):
    folder = tmp_path / "full"
    with tmpfs(folder, "2m"):
        fill(folder)
        proc = run_cli(*sweep_args(synthetic_data, folder, "x"), timeout=120)
        refused_before_work(proc, "full disk", "--results")
        assert sorted(os.listdir(folder)) == ["filler"]  # no half-made study folder


def test_another_study_in_the_folder_and_a_changed_space_on_resume(small_study):
    """Fails before Ray starts and leaves the study as it was (no Ray: seconds)."""
    before = {name: (small_study / name).read_bytes() for name in PARQUET_FILES}
    base = ["study.sweep", "search_spaces/demo.yaml", "--results", str(small_study.parent),
            "--name", "small"]  # fmt: skip
    record = json.loads((small_study / "study.json").read_text())
    data = record["config"]["data"]["path"]

    other = run_cli(*base, "--data", data, "--set", "space.pretrained=false",
                    "--set", "space.arch=resnet34", "--set", "num_samples=5")  # fmt: skip
    refused_before_work(other, "already holds a finished study", "different space", "--name")

    changed = [*SMALL_SWEEP]
    changed[changed.index("num_samples=2")] = "num_samples=3"
    changed[changed.index("space.epochs=2")] = "space.epochs=3"
    proc = run_cli(*base, "--data", data, *changed, "--resume")
    line = refused_before_work(proc, "--resume", "different space")
    assert "num_samples: 2 -> 3" in line and "space.epochs: 2 -> 3" in line
    for name, content in before.items():
        assert (small_study / name).read_bytes() == content


@pytest.mark.slow
def test_disk_filling_mid_run_stops_cleanly_and_resume_finishes(tmp_path, synthetic_data):
    """The disk fills while a trial trains: a clear stop, readable files, then --resume."""
    mount, log = tmp_path / "disk", tmp_path / "sweep.log"
    with tmpfs(mount, "600m"):
        args = sweep_args(synthetic_data, mount, "fills", "--set", "num_samples=1",
                          "--set", "space.epochs=4", report=True)  # fmt: skip
        folder = mount / "fills"
        # The trial waits after epoch 1 (whatever the machine's speed) until the disk is full.
        release = tmp_path / "hold"
        with running_sweep(args, log, hold=(1, release)) as sweep:

            def epoch_one():  # in the Parquet files too (rebuilt every few seconds): held, no race
                epochs = read_frame(folder, "epochs.parquet")
                return epochs is not None and len(epochs) >= 1

            sweep.wait_for(epoch_one, 240, "epoch 1")
            fill(mount)  # everything left on the disk, before epoch 2 trains
            release.unlink()
            sweep.driver.wait(timeout=300)
        driver = sweep.driver
        out = log.read_text(errors="replace")
        assert driver.returncode == 2, out[-4000:]
        last = out.strip().splitlines()[-1]
        assert last.startswith("error: no space left on the disk of"), out[-4000:]
        assert "--resume" in last
        # What was written is intact: every file reads, no temp file is left behind.
        json.loads((folder / "study.json").read_text())
        for name in PARQUET_FILES:
            pd.read_parquet(folder / name)
        assert read_frame(folder, "epochs.parquet")["epoch"].min() == 1
        trial_id = read_frame(folder, "trials.parquet")["trial_id"].item()
        assert not [p.name for p in folder.iterdir() if p.name.endswith(".tmp")]

        (mount / "filler").unlink()  # the user frees space and continues
        proc = run_cli(*args, "--resume", timeout=400)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        trials = read_frame(folder, "trials.parquet")
        # The same trial went on: Ray did not start the study over (its own snapshot may have
        # been cut short by the full disk; the sweep's kept copy replaced it).
        assert trials["trial_id"].tolist() == [trial_id], trials[["trial_id", "status", "error"]]
        assert trials["status"].tolist() == ["TERMINATED"]
        epochs = read_frame(folder, "epochs.parquet")
        assert sorted(epochs["epoch"]) == [1, 2, 3, 4]  # each epoch exactly once
        shutil.rmtree(folder)  # before the unmount: nothing of it outlives the test


def test_ray_snapshot_truncated_by_a_full_disk_is_put_back_from_the_kept_copy(tmp_path):
    """Tune copies its snapshot over the files in tune/ in place: on a full disk they are left
    truncated, and Tune would silently start the study over on --resume (new trial ids). The
    sweep keeps a whole copy of each snapshot; --resume puts it back. No Ray: milliseconds."""
    staging, experiment = tmp_path / "staging", tmp_path / "tune"
    staging.mkdir()
    experiment.mkdir()
    session = "2026-01-31_12-00-00"
    snapshot = {
        f"experiment_state-{session}.json": json.dumps({"trial_data": ["x" * 5000]}).encode(),
        f"search_gen_state-{session}.json": pickle.dumps({"counter": 1}),  # sic: a pickle
        f"searcher-state-{session}.pkl": pickle.dumps({"trials": list(range(1000))}),
    }

    def tune_writes(folder, cut=False):  # Tune's snapshot, cut short as on a full disk
        for name, data in snapshot.items():
            (folder / name).write_bytes(data[: len(data) // 2] if cut else data)

    tune_writes(staging)
    tune_writes(experiment)
    assert repair(experiment) is None  # whole: nothing to do
    (experiment / f"searcher-state-{session}.pkl").write_bytes(b"\x80\x05")
    with pytest.raises(RetinaError, match="no good copy was kept"):
        repair(experiment)  # a cut pickle is found (scanned to its end, never loaded)

    keeper = SnapshotKeeper(experiment)
    keeper.keep(staging)
    keeper.keep(staging)  # an unchanged snapshot is not copied again
    assert len(list((experiment / ".kept-state").iterdir())) == 1
    note = repair(experiment)
    assert note.startswith("warning: Ray's saved state of this study is damaged"), note
    assert {p.name: p.read_bytes() for p in experiment.iterdir() if p.is_file()} == snapshot
    assert repair(experiment) is None

    # A later snapshot replaces the kept one; then the disk fills while Tune copies it.
    snapshot[f"search_gen_state-{session}.json"] = pickle.dumps({"counter": 2})
    tune_writes(staging)
    os.utime(staging / f"experiment_state-{session}.json", ns=(1, 2))  # Tune rewrote it
    keeper.keep(staging)
    assert len(list((experiment / ".kept-state").iterdir())) == 1
    tune_writes(experiment, cut=True)
    assert repair(experiment) is not None
    assert {p.name: p.read_bytes() for p in experiment.iterdir() if p.is_file()} == snapshot
