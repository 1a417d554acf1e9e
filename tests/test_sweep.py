"""A real Ray Tune sweep through the CLI: the four results files and the held-out test."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import torch

from study.record.ranking import best_trial_ids
from study.record.results import CONFUSION_COLUMNS, EPOCH_COLUMNS, TRIAL_TAIL_COLUMNS
from tests.helpers.cli import run_cli


def test_small_sweep_writes_the_results_contract(small_study):
    record = json.loads((small_study / "study.json").read_text())
    assert record["name"] == "small"
    assert record["metric"] == {"name": "val_kappa", "mode": "max"}
    assert sum(record["data"]["class_counts"]["val"]) == record["data"]["n_images"]["val"] > 0
    assert record["seeds"]["split"] == 0 and record["versions"]["ray"]
    assert record["seeds"]["confirm"] == []  # the shared sweep arguments turn it off
    assert record["config"]["space"]

    trials = pd.read_parquet(small_study / "trials.parquet")
    assert len(trials) == 2
    for col in ["trial_id", "status", *record["hyperparameters"], *TRIAL_TAIL_COLUMNS]:
        assert col in trials.columns, col
    assert set(trials["status"]) == {"TERMINATED"}
    assert (trials["arch"] == "resnet18").all() and not trials["pretrained"].any()
    assert trials["lr"].dtype == "float64" and trials["batch_size"].dtype == "int64"
    # demo.yaml's recipe: cosine after a 1-epoch warm-up, flips; the trainable saved the
    # schedule's state beside the optimizer's, so a resumed trial continues its curve.
    recipe = trials[["schedule", "warmup_epochs", "augment"]].drop_duplicates()
    assert recipe.values.tolist() == [["cosine", 1, "flips"]]
    state = torch.load(next(small_study.glob("tune/**/checkpoint.pt")), weights_only=True)
    assert state["scheduler"]["last_epoch"] > 0 and state["config"]["trial"]["schedule"] == "cosine"
    # data.image_size {choice: [32, 48]}: both sampled, a column like any hyperparameter, and
    # a cache per size built by the preflight (each trial mapped the one its config names).
    assert trials["image_size"].dtype == "int64" and set(trials["image_size"]) == {32, 48}
    assert record["data"]["image_size"] == [32, 48]
    assert list(record["data"]["caches"]) == ["32", "48"]
    for size, cache in record["data"]["caches"].items():
        assert np.load(cache, mmap_mode="r").shape[-2:] == (int(size), int(size))
    for path in small_study.glob("tune/**/checkpoint.pt"):
        trial = torch.load(path, weights_only=True)["config"]["trial"]
        row = trials[[f"_{tid}_" in str(path) for tid in trials["trial_id"]]]
        assert len(row) == 1 and row["image_size"].item() == trial["image_size"]

    epochs = pd.read_parquet(small_study / "epochs.parquet")
    assert list(epochs.columns) == EPOCH_COLUMNS
    assert not epochs.duplicated(["trial_id", "epoch"]).any()
    runs = epochs.groupby("trial_id")["epoch"].max()
    assert (runs == trials.set_index("trial_id")["epochs_run"]).all()
    assert epochs["val_acc"].between(0, 1).all()

    # The best trial (on val) was evaluated once on test; the other was not.
    tested = trials[trials["test_acc"].notna()]
    assert len(tested) == 1
    # The study's one ranking: val kappa, then val loss (2-epoch trials often tie at kappa 0).
    best = trials.set_index("trial_id").loc[best_trial_ids(trials, "best_val_kappa", "max")[0]]
    assert tested["trial_id"].item() == best.name

    conf = pd.read_parquet(small_study / "confusion.parquet")
    assert list(conf.columns) == CONFUSION_COLUMNS
    test_conf = conf[conf["split"] == "test"]
    assert test_conf["count"].sum() == record["data"]["n_images"]["test"]
    val_conf = conf[(conf["split"] == "val") & (conf["trial_id"] == best.name)]
    per_epoch = val_conf.groupby("epoch")["count"].sum()
    assert (per_epoch == record["data"]["n_images"]["val"]).all()


def test_the_driver_makes_one_results_store_and_hands_it_on(small_study):
    # The lifecycle (study.sweep) makes the store; the search's callback, the held-out test,
    # the predictions, the summary and the export use it: nothing re-reads the journal.
    log = (small_study.parent.parent / "small-sweep.log").read_text()
    assert log.strip().splitlines()[-1] == "results stores made by the driver: 1", log[-2000:]


def test_existing_study_is_not_overwritten_without_resume(small_study):
    before = (small_study / "trials.parquet").read_bytes()
    proc = run_cli(
        "study.sweep", "search_spaces/demo.yaml", "--results", str(small_study.parent),
        "--name", "small", "--set", "space.pretrained=false",
    )  # fmt: skip
    assert proc.returncode == 2
    assert "already holds a finished study" in proc.stderr and "--name" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert (small_study / "trials.parquet").read_bytes() == before


def test_bad_override_fails_before_ray_starts(tmp_path):
    proc = run_cli("study.sweep", "search_spaces/demo.yaml", "--results", str(tmp_path),
                   "--set", "space.lr=-1")  # fmt: skip
    assert proc.returncode == 2
    assert "space.lr" in proc.stderr and "Traceback" not in proc.stderr
    assert not any(tmp_path.iterdir())
