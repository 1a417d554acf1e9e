"""Checkpoints follow the one ranking in a real sweep where everything ties, and the finished
study deletes the checkpoints it no longer needs (study.run.keep, study.conclude.checkpoints).

The tie is made deterministic: every image is the same flat colour and the learning rate is
1e-30 (the weights never move), so every prediction is one grade and val kappa is exactly 0 at
every epoch, while BatchNorm's running statistics make the val loss grow epoch by epoch: by the
ranking epoch 1 is each trial's best, as in lab3's resnet50 scratch run, whose best epoch Ray
deleted. Both trials start from the same seed, so they tie exactly too: the earlier trial id
wins, in the results, the leaderboard and the held-out test alike.
"""

from __future__ import annotations

import json
import shutil

import pandas as pd
import pytest
import torch
from PIL import Image

from study.conclude.checkpoints import checkpoint_folders, clean_checkpoints, needed_trials
from study.record.layout import CHECKPOINT_FILE
from study.record.ranking import best_epoch, rank_trials
from tests.helpers.cli import run_cli
from tests.helpers.processes import NO_DASHBOARD, NO_REPORT

TIED_SWEEP = [*NO_DASHBOARD, *NO_REPORT,
    "--set", "num_samples=2", "--set", "space.pretrained=false", "--set", "space.arch=resnet18",
    "--set", "space.head=classify", "--set", "data.image_size=32", "--set", "space.epochs=3", "--set", "space.batch_size=16",
    "--set", "space.lr=1.0e-30", "--set", "scheduler.name=none", "--set", "test_top_k=1",
    "--set", "max_concurrent=1", "--set", "confirm.seeds=0", "--set", "export=false",
]  # fmt: skip


def flat_copy(source, target):
    """`source`'s labels with every image replaced by one flat-coloured JPEG."""
    (target / "train").mkdir(parents=True)
    shutil.copy(source / "trainLabels.csv", target / "trainLabels.csv")
    flat = Image.new("RGB", (64, 64), (150, 80, 40))
    for path in (source / "train").glob("*.jpeg"):
        flat.save(target / "train" / path.name)
    return target


def leaderboard_first(stdout: str) -> str:
    lines = stdout.splitlines()
    header = max(i for i, line in enumerate(lines) if line.split()[:2] == ["trial_id", "status"])
    return lines[header + 1].split()[0]


@pytest.mark.slow
def test_tied_epochs_and_trials_keep_the_ranked_best(tmp_path, synthetic_data):
    data = flat_copy(synthetic_data, tmp_path / "flat")
    results = tmp_path / "results"
    args = ["study.sweep", "search_spaces/demo.yaml", "--data", str(data)]
    args += ["--results", str(results), "--name", "tied", *TIED_SWEEP]
    proc = run_cli(*args)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    folder = results / "tied"
    epochs = pd.read_parquet(folder / "epochs.parquet")
    trials = pd.read_parquet(folder / "trials.parquet")

    # The setup ties as described: kappa 0 at every epoch, and an earlier epoch is the best.
    assert (epochs["val_kappa"] == 0.0).all() and len(epochs) == 6
    for _, rows in epochs.groupby("trial_id"):
        best = best_epoch(rows.to_dict("records"), "val_kappa", "max")
        assert best["epoch"] < rows["epoch"].max(), rows
    assert (trials["best_epoch"] == best["epoch"]).all()
    a, b = (epochs[epochs["trial_id"] == t].drop(columns="trial_id") for t in trials["trial_id"])
    cols = ["epoch", "val_kappa", "val_loss"]
    assert a[cols].reset_index(drop=True).equals(b[cols].reset_index(drop=True))

    # One ranking: the winner is the earlier trial id, in the store, on the leaderboard and on
    # test; it was tested from its best epoch's checkpoint.
    winner = min(trials["trial_id"])
    assert rank_trials(trials, "best_val_kappa", "max")["trial_id"].iloc[0] == winner
    assert leaderboard_first(proc.stdout) == winner
    tested = trials[trials["test_acc"].notna()]
    assert tested["trial_id"].tolist() == [winner]
    confusion = pd.read_parquet(folder / "confusion.parquet")
    assert set(confusion[confusion["split"] == "test"]["epoch"]) == {best["epoch"]}
    assert "not tested" not in proc.stdout

    # The finished study kept only the winner's checkpoints, its best epoch's among them.
    assert "(kept 1 of 2 trials)" in proc.stdout
    kept = checkpoint_folders(folder)
    assert len(kept) == 1
    ((trial_dir, checkpoints),) = kept.items()
    assert json.loads((trial_dir / "result.json").read_text().splitlines()[0])["trial_id"] == winner
    saved = {
        torch.load(c / CHECKPOINT_FILE, map_location="cpu", weights_only=True)["epoch"]
        for c in checkpoints
    }
    assert saved == {best["epoch"], 3}  # its best and its latest, nothing else

    # --resume of the finished study still concludes it (the tested checkpoint is there).
    again = run_cli(*args, "--resume")
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert "not tested" not in again.stdout and "(kept 1 of 1 trials)" in again.stdout
    after = pd.read_parquet(folder / "trials.parquet").set_index("trial_id")
    assert after.loc[winner, "test_acc"] == tested.set_index("trial_id").loc[winner, "test_acc"]


def fake_trial(experiment, name, trial_id, checkpoints, size=1000):
    folder = experiment / name
    folder.mkdir(parents=True)
    if trial_id is not None:
        (folder / "result.json").write_text(json.dumps({"trial_id": trial_id, "epoch": 1}) + "\n")
    for i in range(checkpoints):
        (folder / f"checkpoint_{i:06d}").mkdir()
        (folder / f"checkpoint_{i:06d}" / CHECKPOINT_FILE).write_bytes(b"x" * size)
    return folder


def test_clean_checkpoints_deletes_only_what_is_not_kept(tmp_path):
    experiment = tmp_path / "tune"
    keep = fake_trial(experiment, "train_trial_a_0", "a", 2)
    drop = fake_trial(experiment, "train_trial_b_1", "b", 2)
    nameless = fake_trial(experiment, "train_trial_c_2", None, 1)  # no result.json: kept
    fake_trial(experiment, "train_trial_d_3", "d", 0)  # no checkpoints: not counted

    measured = clean_checkpoints(tmp_path, ["a"], delete=False)
    assert (measured.bytes_before, measured.bytes_after) == (5000, 5000)
    assert measured.line() == "checkpoints: 5.0 kB (keep_checkpoints: all)"
    assert len(list(drop.glob("checkpoint_*"))) == 2

    footprint = clean_checkpoints(tmp_path, ["a"])
    assert not list(drop.glob("checkpoint_*")) and (drop / "result.json").exists()
    assert len(list(keep.glob("checkpoint_*"))) == 2 and list(nameless.glob("checkpoint_*"))
    assert (footprint.bytes_before, footprint.bytes_after) == (5000, 3000)
    assert footprint.line() == "checkpoints: 5.0 kB -> 3.0 kB (kept 2 of 3 trials)"
    assert clean_checkpoints(tmp_path, ["a"]).bytes_after == 3000  # again: nothing changes


def test_needed_trials_are_the_tested_ones_and_the_winner():
    trials = pd.DataFrame(
        {
            "trial_id": ["t1", "t2", "t3", "t4"],
            "status": ["TERMINATED", "TERMINATED", "ERROR", "TERMINATED"],
            "best_val_kappa": [0.2, 0.5, 0.9, 0.5],
            "best_val_loss": [1.0, 1.2, 0.5, 1.1],
        }
    )
    assert needed_trials(trials, "val_kappa", "max", 2) == {"t4", "t2"}  # t3 failed
    assert needed_trials(trials, "val_kappa", "max", 0) == {"t4"}  # the winner, always
    assert needed_trials(trials.iloc[:0], "val_kappa", "max", 3) == set()
