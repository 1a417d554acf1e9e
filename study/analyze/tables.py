"""The report's tables as pure dataframe functions: summary numbers, the course-report table,
the leaderboard and the early-stopping account. Columns keep machine names; `report` labels
and formats them."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from study.analyze.load import STATUSES
from study.record.ranking import rank_trials

# Test accuracy of the course report's four runs (EyePACS, 512 px; see shared/design.md).
COURSE_REPORT_TEST_ACC = {
    ("resnet18", "pretrained"): 0.808,
    ("resnet50", "pretrained"): 0.820,
    ("resnet18", "scratch"): 0.734,
    ("resnet50", "scratch"): 0.733,
}
REPORTED_METRICS = (
    "acc",
    "kappa",
    "balanced_acc",
    "referable_sensitivity",
    "referable_specificity",
)
INITS = ("pretrained", "scratch")


def majority_share(class_counts: dict[str, list[int]], split: str) -> float:
    """Share of grade 0 in `split`: the accuracy of predicting grade 0 for every image."""
    counts = class_counts.get(split) or []
    total = sum(counts)
    return counts[0] / total if total else math.nan


def finished_trials(trials: pd.DataFrame, score: str) -> pd.DataFrame:
    """TERMINATED trials (run out or stopped by the scheduler) with a finite study metric."""
    keep = (trials["status"] == "TERMINATED") & trials[score].notna()
    return trials[keep].reset_index(drop=True)


def status_counts(trials: pd.DataFrame) -> dict[str, int]:
    counts = {s: int((trials["status"] == s).sum()) for s in STATUSES}
    for other in sorted(set(trials["status"]) - set(STATUSES)):
        counts[other] = int((trials["status"] == other).sum())
    return {k: v for k, v in counts.items() if v}


def data_table(class_counts: dict[str, list[int]]) -> pd.DataFrame:
    """Images per split and grade, with the split's size and its majority-class share."""
    rows = []
    for split in ("train", "val", "test"):
        counts = class_counts.get(split)
        if counts is None:
            continue
        row = {"split": split} | {f"grade_{g}": int(c) for g, c in enumerate(counts)}
        row |= {"images": int(sum(counts)), "majority_share": majority_share(class_counts, split)}
        rows.append(row)
    return pd.DataFrame(rows)


def compute_totals(trials: pd.DataFrame, epochs: pd.DataFrame) -> dict[str, float]:
    """Trial-epochs run and trial wall-hours, split by where the trials ran."""
    device = trials["device"].astype(object).where(trials["device"].notna(), "")
    on_gpu = device.astype(str).str.startswith(("cuda", "gpu"))
    on_cpu = device.astype(str).str.startswith("cpu")
    seconds = trials["seconds"].fillna(0.0)
    return {
        "trial_epochs": int(len(epochs)),
        "gpu_hours": float(seconds[on_gpu].sum() / 3600),
        "cpu_hours": float(seconds[on_cpu].sum() / 3600),
        "other_hours": float(seconds[~on_gpu & ~on_cpu].sum() / 3600),
    }


def _best_in(group: pd.DataFrame, column: str, mode: str) -> pd.Series | None:
    """The row with the best `column` (ties: first trial id), or None if none is finite."""
    scored = group[group[column].notna()]
    if scored.empty:
        return None
    return rank_trials(scored, column, mode).iloc[0]


def course_table(
    trials: pd.DataFrame, score: str, mode: str, class_counts: dict[str, list[int]]
) -> pd.DataFrame:
    """Per arch x {pretrained, scratch}: the best trial by the study metric on val, its val
    acc/kappa, and the test acc/kappa of the best (by val) trial of the group that was evaluated
    on test; beside the majority-class baseline and the course report's test accuracy.
    The last row is the baseline itself (predict grade 0 everywhere: kappa 0)."""
    maj_val, maj_test = majority_share(class_counts, "val"), majority_share(class_counts, "test")
    rows = []
    for arch in sorted(set(trials["arch"])):
        for init in INITS:
            group = trials[(trials["arch"] == arch) & (trials["init"] == init)]
            best = _best_in(group, score, mode)
            tested = _best_in(group[group["test_acc"].notna()], score, mode)
            row = {"arch": arch, "init": init, "trials": int(group[score].notna().sum())}
            row["val_trial"] = None if best is None else best["trial_id"]
            row["val_acc"] = math.nan if best is None else best["best_val_acc"]
            row["val_kappa"] = math.nan if best is None else best["best_val_kappa"]
            row["val_vs_majority"] = row["val_acc"] - maj_val
            row["test_trial"] = None if tested is None else tested["trial_id"]
            row["test_acc"] = math.nan if tested is None else tested["test_acc"]
            row["test_kappa"] = math.nan if tested is None else tested["test_kappa"]
            row["test_vs_majority"] = row["test_acc"] - maj_test
            row["course_test_acc"] = COURSE_REPORT_TEST_ACC.get((arch, init), math.nan)
            # within 1 point of the baseline with kappa near 0: it learned to say "grade 0"
            near = row["val_vs_majority"] < 0.01 and abs(row["val_kappa"]) < 0.05
            row["like_majority"] = None if best is None else bool(near)
            rows.append(row)
    rows.append(
        {"arch": "majority class", "init": "grade 0 for every image", "trials": 0}
        | {"val_trial": None, "val_acc": maj_val, "val_kappa": 0.0, "val_vs_majority": 0.0}
        | {"test_trial": None, "test_acc": maj_test, "test_kappa": 0.0, "test_vs_majority": 0.0}
        | {"course_test_acc": math.nan, "like_majority": True}
    )
    return pd.DataFrame(rows)


def with_one_view(columns: list[str], views: int) -> list[str]:
    """`columns` with `test_kappa_1view` right after `test_kappa` when the study tests over
    `views` > 1 dihedral views (its `tta`): what the views brought, read beside them. The
    sweep's printed leaderboard and the report's use this one rule."""
    if views <= 1 or "test_kappa" not in columns:
        return list(columns)
    at = columns.index("test_kappa") + 1
    return [*columns[:at], "test_kappa_1view", *columns[at:]]


def leaderboard_columns(hyperparameters: list[str], metric: str, views: int = 1) -> list[str]:
    metrics = list(REPORTED_METRICS)
    if metric.startswith("val_") and metric[4:] not in metrics:  # e.g. val_loss as the metric
        metrics.insert(0, metric[4:])
    return (
        ["rank", "trial_id", "status", *hyperparameters, "best_epoch"]
        + [f"best_val_{m}" for m in metrics]
        + with_one_view([f"test_{m}" for m in metrics], views)
        + ["epochs_run", "stopped_early", "seconds", "error"]
    )


def leaderboard(
    trials: pd.DataFrame, hyperparameters: list[str], metric: str, mode: str, views: int = 1
) -> pd.DataFrame:
    """Every trial, best first by the study metric; unscored ones (no epoch yet) last.
    `views`: the study's tta (above 1, the one-view test kappa stands beside the test kappa)."""
    ranked = rank_trials(trials, f"best_{metric}", mode)
    columns = leaderboard_columns(hyperparameters, metric, views)
    # test_kappa_1view is optional in the contract: a study tested before it was recorded
    return ranked[[c for c in columns if c in ranked.columns or c != "test_kappa_1view"]]


def early_stopping(trials: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, float]]:
    """Per trial: planned and run epochs, the rung a scheduler stop happened at, epochs saved.

    Saved compute counts only scheduler stops (`stopped_early`); epochs that failed or
    still-running trials did not run are counted apart as `unfinished`."""
    per = trials[["trial_id", "arch", "init", "status", "planned_epochs", "epochs_run"]].copy()
    per["stopped_early"] = trials["stopped_early"].astype(bool)
    remaining = (per["planned_epochs"] - per["epochs_run"]).clip(lower=0)
    per["stop_rung"] = np.where(per["stopped_early"], per["epochs_run"], np.nan)
    per["saved_epochs"] = np.where(per["stopped_early"], remaining, 0).astype(int)
    unfinished = np.where(~per["stopped_early"] & (per["status"] != "TERMINATED"), remaining, 0)
    planned = int(per["planned_epochs"].sum())
    saved = int(per["saved_epochs"].sum())
    totals = {
        "trials": int(len(per)),
        "stopped": int(per["stopped_early"].sum()),
        "planned_epochs": planned,
        "run_epochs": int(per["epochs_run"].sum()),
        "saved_epochs": saved,
        "saved_share": saved / planned if planned else math.nan,
        "unfinished_epochs": int(unfinished.sum()),
    }
    return per.sort_values("trial_id").reset_index(drop=True), totals


def rung_counts(per_trial: pd.DataFrame) -> pd.DataFrame:
    """How many trials the scheduler stopped at each rung (epochs run when stopped)."""
    stops = per_trial.loc[per_trial["stopped_early"], "stop_rung"].astype(int)
    counts = stops.value_counts().sort_index()
    return pd.DataFrame({"rung": counts.index.astype(int), "stopped_trials": counts.to_numpy()})


def confusion_matrix(
    confusion: pd.DataFrame, trial_id: str, split: str, epoch: int, num_classes: int = 5
) -> np.ndarray | None:
    """The [true, predicted] count matrix from the tidy rows, or None if none were written."""
    rows = confusion[
        (confusion["trial_id"] == trial_id)
        & (confusion["split"] == split)
        & (confusion["epoch"] == epoch)
    ]
    if rows.empty:
        return None
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    for t, p, c in zip(rows["true"], rows["predicted"], rows["count"], strict=True):
        if 0 <= t < num_classes and 0 <= p < num_classes:
            matrix[int(t), int(p)] += int(c)
    return matrix


def tested_epoch(confusion: pd.DataFrame, trial_id: str) -> int | None:
    """The epoch the trial's test matrix came from (its best checkpoint), if it was tested."""
    rows = confusion[(confusion["trial_id"] == trial_id) & (confusion["split"] == "test")]
    return None if rows.empty else int(rows["epoch"].max())


def test_time_views(best: pd.Series, views: int) -> str:
    """The best trial's test kappa over the study's `tta` dihedral views and with one view
    (`test_kappa_1view`), in words: what test-time augmentation brought."""
    if views == 1:
        return "none (tta: 1): the test grades each image as is"
    over = f"{views} dihedral views (tta: {views})"
    with_views, one = best.get("test_kappa", math.nan), best.get("test_kappa_1view", math.nan)
    if pd.isna(with_views):
        return f"{over}; this trial was not tested"
    if pd.isna(one):  # a study tested before the one-view kappa was recorded
        return f"test kappa {with_views:.3f} over {over}; one view not recorded"
    return (
        f"test kappa {with_views:.3f} over {over}, {one:.3f} with one view "
        f"({with_views - one:+.3f} from the views)"
    )
