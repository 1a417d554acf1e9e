"""Which checkpoints a trial keeps while it runs: its latest, and its best so far by the one
ranking (`study.record.ranking.best_epoch`) when that is another epoch.

The trainable scores each checkpoint with `KEEP_SCORE`, reported with it:

- the epoch that is now the best so far scores its own epoch number (1, 2, ...: each new best
  scores more than every earlier one, so Ray's `best_checkpoints` order is the ranking's),
- any other epoch scores 0, as does every epoch before the first with a finite metric (the
  ranking names no best epoch then).

The driver reads the score (> 0: a new best) and deletes the superseded checkpoints itself,
once no experiment snapshot that `--resume` may read names them (study.run.retention). Ray
deletes nothing (`num_to_keep=None`): given a `num_to_keep`, Ray 2.60 forces an experiment
snapshot after every `num_to_keep` checkpoints of a trial, which costs O(trials) per result.
Scoring by the study metric instead would not do either: Ray sorts ties (every epoch at val
kappa 0.000) after each other, so its best was the *latest* tied epoch while the results named
the earliest. The best-so-far record travels in the checkpoint, so a retried or resumed trial
goes on ranking where it stopped.

    keeper = BestSoFar("val_kappa", "max")
    metrics[KEEP_SCORE] = keeper.update(metrics)   # then tune.report(metrics, checkpoint=...)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ray import tune

from study.record.ranking import best_epoch

KEEP_SCORE = "checkpoint_keep"  # reported with every checkpoint; > 0 on a new best so far
# Set on the one result a trial resumed at its last checkpoint reports: its epochs are recorded.
ALREADY_RECORDED = "already_recorded"


def checkpoint_config() -> tune.CheckpointConfig:
    """Ray keeps every checkpoint (the driver deletes, study.run.retention), ranked by
    `KEEP_SCORE` so `Result.best_checkpoints` ends with the best by the one ranking."""
    # num_to_keep=None: no forced experiment snapshot per checkpoint (see the module doc).
    return tune.CheckpointConfig(
        num_to_keep=None, checkpoint_score_attribute=KEEP_SCORE, checkpoint_score_order="max"
    )


class BestSoFar:
    """A trial's best epoch so far, by the study's one ranking; `state()` goes in checkpoints."""

    def __init__(self, metric: str, mode: str, best: Mapping[str, Any] | None = None):
        self.metric, self.mode = metric, mode
        self.best: dict[str, Any] | None = dict(best) if best else None

    def update(self, metrics: Mapping[str, Any]) -> float:
        """Take one epoch's metrics (with `epoch`); return its `KEEP_SCORE`."""
        row = {
            "epoch": int(metrics["epoch"]),
            self.metric: metrics.get(self.metric),
            "val_loss": metrics.get("val_loss"),
        }
        # The ranking itself decides (an epoch without a finite metric is never the best).
        rows = [row] if self.best is None else [self.best, row]
        if best_epoch(rows, self.metric, self.mode) is row:
            self.best = row
            return float(row["epoch"])
        return 0.0

    @property
    def epoch(self) -> int | None:
        return None if self.best is None else int(self.best["epoch"])

    def state(self) -> dict[str, Any] | None:
        # Plain numbers only: checkpoints are loaded with torch.load(weights_only=True).
        if self.best is None:
            return None
        return {k: (None if v is None else float(v)) for k, v in self.best.items()} | {
            "epoch": int(self.best["epoch"])
        }
