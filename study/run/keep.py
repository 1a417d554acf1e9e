"""Which checkpoints Ray keeps while a trial runs: its latest, and its best so far by the one
ranking (`study.record.ranking.best_epoch`) when that is another epoch.

Ray's checkpoint manager (ray/train/_internal/checkpoint_manager.py, Ray 2.60) sorts a trial's
checkpoints by `(score is not NaN, score)` ascending, puts a new checkpoint after those of an
equal score, deletes all but the last `num_to_keep`, and never deletes the latest one. Scored
by the study metric, ties (every epoch at val kappa 0.000) kept the *latest* epochs while the
results named the earliest the best, and that epoch could not be tested. So the trainable
reports its own score, `KEEP_SCORE`, and Ray keeps exactly one checkpoint by score:

- the epoch that is now the best so far scores its own epoch number (1, 2, ...: each new best
  scores more than every earlier one, so no tie is ever left to Ray's order),
- any other epoch scores 0 (below every best), as does every epoch before the first with a
  finite metric (the ranking names no best epoch then; Ray keeps the latest).

With `num_to_keep=1` Ray then holds the best so far (the top score) and the latest (never
deleted): two checkpoints at most, one when the latest is the best. The best-so-far record
travels in the checkpoint, so a retried or resumed trial goes on ranking where it stopped.
Ray also forces an experiment snapshot once a trial has registered `num_to_keep` checkpoints
since the last one: with 1, after each, so the snapshot `--resume` reads never names a
checkpoint already deleted. The price is one snapshot per trial-epoch (Ray warns when they
come less than 5 s apart, as only tiny demo epochs do).

    keeper = BestSoFar("val_kappa", "max")
    metrics[KEEP_SCORE] = keeper.update(metrics)   # then tune.report(metrics, checkpoint=...)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ray import tune

from study.record.ranking import best_epoch

KEEP_SCORE = "checkpoint_keep"  # reported with every checkpoint; Ray ranks checkpoints by it


def checkpoint_config() -> tune.CheckpointConfig:
    """Ray keeps the best-so-far checkpoint by `KEEP_SCORE`, plus always the latest."""
    return tune.CheckpointConfig(
        num_to_keep=1, checkpoint_score_attribute=KEEP_SCORE, checkpoint_score_order="max"
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
