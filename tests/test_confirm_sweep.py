"""The confirmation stage in real sweeps: its rows, its per-image predictions, and a driver
killed during it that `--resume` finishes with every (trial, epoch) exactly once. Each sweep
samples every value of head, augment and schedule (issue 18: a new dimension is tested in a
real sweep), and confirms both heads.

    .venv/bin/pytest tests/test_confirm_sweep.py
"""

from __future__ import annotations

import json

import pandas as pd
import pytest

from study.analyze.section_comparison import comparison_section
from study.define.values import AUGMENTS, HEADS, SCHEDULES
from study.record.predictions import COLUMNS
from tests.helpers.cli import run_cli
from tests.helpers.processes import kill_driver_when, read_frame
from tests.helpers.processes import sweep_args as tiny_sweep_args

pytestmark = pytest.mark.slow

# Random search over a head grid: one search trial per head (num_samples=1), each with its own
# augment and schedule (depends_on), so two trials hold every value of the three dimensions.
# The confirm stage compares the heads: two cells (resnet18 from scratch: no ImageNet weights
# offline) x one new seed, as many runs as one cell x two seeds.
RECIPES = {"classify": ("flips", "constant"), "regress": ("fundus", "cosine")}
CONFIRM = ["--set", "search.algorithm=random",
           "--set", "space.head={grid: [classify, regress]}",
           "--set", "space.augment={depends_on: head, values: {classify: flips, regress: fundus}}",
           "--set", "space.schedule={depends_on: head, values: {classify: constant, regress: cosine}}",
           "--set", "num_samples=1",
           "--set", "confirm.compare=[head]", "--set", "confirm.seeds=1"]  # fmt: skip
PROBABILITIES = [f"p{c}" for c in range(5)]
SIZES = {"classify": 32, "regress": 48}  # the first test's image_size, by head


def sweep_args(data, results, name, *extra):
    return tiny_sweep_args(data, results, name, *CONFIRM, *extra)


def check_contract(folder) -> pd.DataFrame:
    """What every study with a finished confirmation stage holds; returns trials.parquet."""
    record = json.loads((folder / "study.json").read_text())
    sizes = record["data"]["n_images"]
    trials = read_frame(folder, "trials.parquet").set_index("trial_id")
    assert trials["stage"].dtype == "string" and str(trials["seed"].dtype) == "Int64"
    search, confirm = trials[trials["stage"] == "search"], trials[trials["stage"] == "confirm"]
    assert (search["seed"] == record["config"]["seed"]).all()
    # The search sampled every value of the new dimensions, each head with its own recipe.
    assert sorted(search["head"]) == sorted(HEADS)  # one trial per head
    assert set(search["augment"]) == set(AUGMENTS) and set(search["schedule"]) == set(SCHEDULES)
    recipes = {h: (a, s) for h, a, s in search[["head", "augment", "schedule"]].itertuples(False)}
    assert recipes == RECIPES
    # One cell per head, each run once per confirm seed, from the cell's own best search trial.
    assert sorted(confirm["head"]) == sorted(HEADS)
    assert (confirm["seed"] == 1000).all() and record["seeds"]["confirm"] == [1000]
    assert (confirm["status"] == "TERMINATED").all(), confirm[["status", "error"]]
    assert confirm["test_acc"].notna().all()  # every confirm run tested once
    # ...over the demo's 2 views (tta: 2), and with one view beside it
    assert record["config"]["tta"] == 2 and confirm["test_kappa_1view"].notna().all()
    # ...as the cell's best search trial: the same configuration, all its epochs.
    keys = ["best_val_kappa", "best_val_loss", "trial_id"]  # the one ranking's order
    best = search.reset_index().sort_values(keys, ascending=[False, True, True])
    best = best.set_index("trial_id")
    for _, run in confirm.iterrows():
        cell_best = best[best["head"] == run["head"]].iloc[0]
        for name in record["hyperparameters"]:
            assert run[name] == cell_best[name], (run["head"], name)
    assert (confirm["epochs_run"] == confirm["epochs"]).all()
    assert search.loc[search["test_acc"].notna()].index.tolist() == [best.index[0]]

    epochs = read_frame(folder, "epochs.parquet")
    assert not epochs.duplicated(["trial_id", "epoch"]).any()
    assert (epochs.groupby("trial_id")["epoch"].max() == trials["epochs_run"]).all()

    table = pd.read_parquet(folder / "predictions")
    assert list(table.columns) == COLUMNS
    # A regress head gives one score per image and no probabilities; a classify head both.
    heads = table["trial_id"].map(trials["head"])
    assert set(heads) == set(HEADS)
    assert table["score"].notna().all()
    assert table.loc[heads == "regress", PROBABILITIES].isna().all().all()
    assert table.loc[heads == "classify", PROBABILITIES].notna().all().all()
    files = sorted(p.stem for p in (folder / "predictions").glob("*.parquet"))
    assert files == sorted(trials.index[trials["status"] == "TERMINATED"])
    rows = table.groupby(["trial_id", "split"]).size().unstack(fill_value=0)
    assert (rows["val"] == sizes["val"]).all()
    tested = trials.index[trials["test_acc"].notna()]
    assert sorted(rows.index[rows["test"] > 0]) == sorted(tested)
    assert (rows.loc[tested, "test"] == sizes["test"]).all()
    # The rows are the ones the metrics came from: test accuracy, and the confusion counts.
    conf = read_frame(folder, "confusion.parquet")
    for trial_id in tested:
        test = table[(table["trial_id"] == trial_id) & (table["split"] == "test")]
        acc = (test["true"] == test["predicted"]).mean()
        assert acc == pytest.approx(trials.loc[trial_id, "test_acc"])
        counts = conf[(conf["trial_id"] == trial_id) & (conf["split"] == "test")]
        pairs = test.groupby(["true", "predicted"]).size()
        nonzero = counts[counts["count"] > 0].set_index(["true", "predicted"])["count"]
        assert pairs.sort_index().tolist() == nonzero.sort_index().tolist()
    val = table[table["split"] == "val"]
    assert val.groupby("trial_id")["image"].nunique().eq(sizes["val"]).all()
    return trials


def test_sweep_with_confirmation_writes_stage_seed_and_predictions(
    tmp_path, synthetic_data, monkeypatch
):
    folder = tmp_path / "confirm"
    args = sweep_args(synthetic_data, tmp_path, "confirm",
                      "--set", "space.epochs=1", "--set", "space.warmup_epochs=0",
                      "--set", "max_concurrent=2",
                      # a size per head: each confirm run takes its own cell's best's size
                      "--set", "data.image_size={depends_on: head, values: {classify: 32, regress: 48}}")  # fmt: skip
    proc = run_cli(*args, "--mlflow", str(tmp_path / "mlruns"), timeout=600)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert "confirmation: 2 cells x 1 seeds [1000]" in proc.stdout
    # the printed leaderboard: the one-view kappa beside the kappa over the demo's 2 views
    assert "test_kappa test_kappa_1view" in " ".join(proc.stdout.split())
    trials = check_contract(folder)
    assert (trials["stage"] == "search").sum() == 2 and (trials["stage"] == "confirm").sum() == 2
    # check_contract: each confirm run has its cell's best search trial's image_size, and its
    # test rows (read from that size's cache) give its test accuracy
    for stage in ("search", "confirm"):
        rows = trials[trials["stage"] == stage]
        assert dict(zip(rows["head"], rows["image_size"], strict=True)) == SIZES, stage
    assert (folder / "tune-confirm").is_dir()
    from mlflow.tracking import MlflowClient  # the confirm runs are tracked as the search's

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    client = MlflowClient(tracking_uri=(tmp_path / "mlruns").as_uri())
    runs = client.search_runs([client.get_experiment_by_name("confirm").experiment_id])
    assert len(runs) == 4 and all(r.info.status == "FINISHED" for r in runs)
    check_more_seeds(folder, args, trials)


def check_more_seeds(folder, args, before: pd.DataFrame) -> None:
    """`--more-seeds 2` on the finished study: every cell gets 2 new seeds (1 run -> 3), the
    earlier rows unchanged, each new run tested, summary.json and the report recomputed."""
    epochs_before = read_frame(folder, "epochs.parquet")
    summary_before = json.loads((folder / "summary.json").read_text())
    proc = run_cli(*args, "--more-seeds", "2", timeout=600)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert "more seeds: 2 cells x 2 seeds [1001, 1002]" in proc.stdout
    trials = read_frame(folder, "trials.parquet").set_index("trial_id")
    confirm = trials[trials["stage"] == "confirm"]
    assert confirm.groupby("head").size().to_dict() == {"classify": 3, "regress": 3}
    assert sorted(confirm["seed"]) == [1000, 1000, 1001, 1001, 1002, 1002]
    assert confirm["test_acc"].notna().all() and (confirm["status"] == "TERMINATED").all()
    old = before.index
    pd.testing.assert_frame_equal(trials.loc[old, before.columns], before, check_like=True)
    epochs = read_frame(folder, "epochs.parquet")
    kept = epochs[epochs["trial_id"].isin(old)].reset_index(drop=True)
    pd.testing.assert_frame_equal(kept, epochs_before.reset_index(drop=True))
    assert (folder / "tune-confirm-1").is_dir()  # the batch's own experiment, beside the first
    record = json.loads((folder / "study.json").read_text())
    assert record["seeds"]["confirm"] == [1000, 1001, 1002]
    assert [b["seeds"] for b in record["confirm_added"]] == [[1001, 1002]]
    summary = json.loads((folder / "summary.json").read_text())
    assert [c["n_runs"] for c in summary["cells"]] == [3, 3]  # was 1 + 1
    assert [c["n_runs"] for c in summary_before["cells"]] == [1, 1]
    assert [len(b["seeds"]) for b in summary["confirm"]["batches"]] == [1, 2]
    section = comparison_section(summary, lambda figure: "")  # the report's, from the summary
    assert "1000 (with the study, " in section and "1001, 1002 (added, " in section


def test_driver_killed_during_confirmation_then_resume(tmp_path, synthetic_data, monkeypatch):
    """SIGKILL the driver once the first confirm run finished; --resume runs only the rest."""
    folder, log = tmp_path / "killed", tmp_path / "sweep.log"
    args = sweep_args(synthetic_data, tmp_path, "killed",
                      "--set", "space.epochs=2", "--set", "max_concurrent=1")  # fmt: skip

    def first_confirm_run_done():
        trials = read_frame(folder, "trials.parquet")
        if trials is None or "stage" not in trials:
            return False
        return ((trials["stage"] == "confirm") & (trials["status"] == "TERMINATED")).any()

    kill_driver_when(args, log, first_confirm_run_done, 500, "a finished confirm run")
    before = read_frame(folder, "trials.parquet").set_index("trial_id")
    done = before.index[(before["stage"] == "confirm") & (before["status"] == "TERMINATED")]
    assert len(done) == 1
    epochs_before = read_frame(folder, "epochs.parquet")

    mlruns = tmp_path / "mlruns"  # given on --resume only: it tracks what this session runs
    proc = run_cli(*args, "--resume", "--mlflow", str(mlruns), timeout=500)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert "not tested" not in proc.stdout
    trials = check_contract(folder)
    assert len(trials) == 4  # two search trials, two confirm runs: nothing ran twice
    epochs = read_frame(folder, "epochs.parquet")
    assert len(epochs) == 2 * 4
    # The run that finished before the kill kept its rows: it was not trained again.
    old = epochs_before[epochs_before["trial_id"].isin(done)].reset_index(drop=True)
    new = epochs[epochs["trial_id"].isin(done)].reset_index(drop=True)
    pd.testing.assert_frame_equal(old, new)
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    client = MlflowClient(tracking_uri=mlruns.as_uri())
    runs = client.search_runs([client.get_experiment_by_name("killed").experiment_id])
    # The run left to do is tracked with its epochs. (Ray may also restart the finished run,
    # if its snapshot predates the end: that one ends at once, training nothing, as checked.)
    histories = [client.get_metric_history(r.info.run_id, "val_kappa") for r in runs]
    assert 1 <= len(runs) <= 2 and any(histories)
