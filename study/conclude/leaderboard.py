"""The sweep's last table: the search's trials in the study's one ranking, best first.

print(leaderboard(store, study.tta))
"""

from __future__ import annotations

import pandas as pd

from study.analyze.tables import with_one_view
from study.record.ranking import rank_trials
from study.record.results import ResultsStore


def leaderboard(store: ResultsStore, views: int = 1, top: int = 10) -> str:
    """`views`: the study's tta; above 1, each tested trial's one-view test kappa stands
    beside its test kappa over the views (what the views brought)."""
    df = store.trials_frame()
    df = df[df["stage"] == "search"]  # the search's ranking; confirm runs are summarised apart
    if df.empty:
        return "no trial finished an epoch"
    df = rank_trials(df, f"best_{store.metric}", store.mode).head(top)
    cols = [
        "trial_id",
        "status",
        *[h for h in store.hyperparameters if h in df.columns],
        "epochs_run",
        "best_val_acc",
        "best_val_kappa",
        *with_one_view(["test_acc", "test_kappa"], views),
    ]
    with pd.option_context(
        "display.width", 200, "display.max_columns", 30, "display.float_format", "{:.4g}".format
    ):
        return df[cols].to_string(index=False)
