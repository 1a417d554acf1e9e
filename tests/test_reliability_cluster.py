"""A node lost mid-sweep: on a two-node Ray cluster with the results on a shared folder, a
sweep joined with --address trains one trial on each node; the worker node is removed while it
trains its trial; the study still finishes, every epoch once.

    .venv/bin/pytest tests/test_reliability_cluster.py

The cluster is `ray.cluster_utils.Cluster` (real raylets, one machine); the sweep joins it
with `--address` like on a real cluster, and its results folder (a tmp folder every node
sees) plays the shared file system.
"""

from __future__ import annotations

import pandas as pd
import pytest

from tests.helpers.processes import (
    read_frame,
    running_sweep,
    sweep_args,
)

pytestmark = pytest.mark.slow
EPOCHS = 3  # held after epoch 1: the lost trial has 2 epochs left to run on the survivor


def test_trials_of_a_lost_node_finish_on_the_survivor_from_their_checkpoints(
    tmp_path, synthetic_data, monkeypatch
):
    from ray.cluster_utils import Cluster

    from study.run.trainable import HOLD_ENV

    folder, log, release = tmp_path / "lost", tmp_path / "sweep.log", tmp_path / "hold"
    # Each trial waits after epoch 1 until the node is gone, however fast the machine: the
    # cluster's workers are started by this process's raylets, so they read this environment.
    release.touch()
    monkeypatch.setenv(HOLD_ENV, f"1:{release}")
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    try:
        worker = cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        args = sweep_args(
            synthetic_data, tmp_path, "lost", "--address", cluster.address,
            "--set", "num_samples=2", "--set", "max_concurrent=2",
            "--set", f"space.epochs={EPOCHS}", "--set", "max_failures=2",
        )  # fmt: skip
        with running_sweep(args, log) as sweep:

            def trial_on_worker():
                trials = read_frame(folder, "trials.parquet")
                epochs = read_frame(folder, "epochs.parquet")
                if trials is None or epochs is None or epochs["trial_id"].nunique() < 2:
                    return None
                # trials.parquet is rebuilt on its own cadence, after epochs.parquet: wait
                # until it too names a node for both trials, or the check below races it.
                if trials["node"].notna().sum() < 2:
                    return None
                on_worker = trials[trials["node"].str.endswith(worker.node_id[:8], na=False)]
                return on_worker["trial_id"].iloc[0] if len(on_worker) else None

            lost = sweep.wait_for(trial_on_worker, 300, "a trial training on the worker node")
            # One trial per node (1 CPU each): the sweep joined with --address uses both.
            assert read_frame(folder, "trials.parquet")["node"].nunique() == 2
            seen = read_frame(folder, "epochs.parquet")
            seen = seen[seen["trial_id"] == lost].set_index("epoch").sort_index()
            assert len(seen) < EPOCHS  # still training when its node goes
            cluster.remove_node(worker, allow_graceful=False)  # SIGKILL: no goodbye to Ray
            release.unlink()  # the survivor's trial goes on; the lost one restarts there
            sweep.driver.wait(timeout=400)
        driver = sweep.driver
    finally:
        cluster.shutdown()
    out = log.read_text(errors="replace")
    assert driver.returncode == 0, out[-4000:]

    trials = read_frame(folder, "trials.parquet").set_index("trial_id")
    assert (trials["status"] == "TERMINATED").all(), trials[["status", "error"]]
    assert (trials["epochs_run"] == EPOCHS).all()
    epochs = read_frame(folder, "epochs.parquet")
    assert not epochs.duplicated(["trial_id", "epoch"]).any()
    assert len(epochs) == 2 * EPOCHS
    # The lost trial finished on the surviving (head) node...
    assert not trials.loc[lost, "node"].endswith(worker.node_id[:8])
    # ...continuing from its checkpoint: the epochs done on the lost node were not redone.
    after = epochs[epochs["trial_id"] == lost].set_index("epoch").loc[seen.index]
    pd.testing.assert_frame_equal(seen, after, check_dtype=False)
    errors = list((folder / "tune").glob(f"train_trial_{lost}_*/error.txt"))
    assert len(errors) == 1 and "Failure # 1" in errors[0].read_text()
