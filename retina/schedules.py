"""Learning-rate schedules, stepped once per batch: `constant` and `cosine`, each after an
optional linear warm-up.

    run = build_training(...)                                   # retina.training
    train = data.loader("train", batch_size, device, train=True, seed=seed)
    run.scheduler = build_schedule("cosine", run.optimizer, epochs=10,
                                   steps_per_epoch=len(train), warmup_epochs=1)
    run.train_epoch(train)     # retina.engine.train_one_epoch steps it after each optimizer step

The schedule is a `torch.optim.lr_scheduler.LambdaLR` whose multiplier is a small picklable
object (`WarmupCosine`), so its whole state - the step it is at and the curve it follows - is
in `scheduler.state_dict()`, which `retina.training.Training.state` puts in every checkpoint: a
resumed trial continues the same curve. The lr of batch s (0-based) over a run of T batches with
W warm-up batches is base_lr times

    (s + 1) / W                                  for s < W     (linear warm-up to the base lr)
    1                                            constant, s >= W
    (1 + cos(pi * (s - W) / (T - W))) / 2        cosine, s >= W (from the base lr down to ~0)

`constant` without warm-up multiplies by 1 at every step: exactly the lr of a run without a
schedule. Warm-up applies to both, so a constant-vs-cosine comparison differs in the decay only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch.optim.lr_scheduler import LambdaLR, LRScheduler

from retina.errors import RetinaError

SCHEDULES = ("constant", "cosine")


@dataclass
class WarmupCosine:
    """The lr multiplier of batch `step` (0-based); LambdaLR saves this object's fields.

    Not frozen: `LambdaLR.load_state_dict` restores the fields by updating `__dict__`.
    """

    warmup_steps: int
    total_steps: int
    cosine: bool

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        if not self.cosine:
            return 1.0
        progress = (step - self.warmup_steps) / max(1, self.total_steps - self.warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def build_schedule(
    name: str,
    optimizer: torch.optim.Optimizer,
    *,
    epochs: int,
    steps_per_epoch: int,
    warmup_epochs: int = 0,
) -> LRScheduler:
    """A per-batch schedule over the run's planned `epochs` x `steps_per_epoch` batches.

    `warmup_epochs` must leave at least one epoch after the warm-up. Bad names and numbers are
    RetinaErrors that name the known schedules or the limit.
    """
    if name not in SCHEDULES:
        raise RetinaError(f"unknown schedule {name!r}; choose one of: {', '.join(SCHEDULES)}")
    if epochs < 1:
        raise RetinaError(f"a schedule needs at least one epoch, got {epochs}; use 1 or more")
    steps_per_epoch = max(1, steps_per_epoch)  # a loader of no batches never steps it anyway
    if not 0 <= warmup_epochs < epochs:
        raise RetinaError(
            f"warmup_epochs {warmup_epochs} must be >= 0 and fewer than the run's {epochs} "
            f"epochs; use at most {epochs - 1} (0 for no warm-up)"
        )
    curve = WarmupCosine(
        warmup_steps=warmup_epochs * steps_per_epoch,
        total_steps=epochs * steps_per_epoch,
        cosine=name == "cosine",
    )
    return LambdaLR(optimizer, curve)


def current_lr(optimizer: torch.optim.Optimizer) -> float:
    """The learning rate the next optimizer step uses (of the first parameter group)."""
    return float(optimizer.param_groups[0]["lr"])
