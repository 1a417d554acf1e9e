"""One configuration's training objects, built once: model, optimizer, loss and precision.

`python -m retina.train` and the study's Ray trainable both build their run here, so a
trial trains exactly as the one-config CLI does. The per-epoch work stays in
`retina.engine`; this file only wires the objects and their checkpoint state.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.optim.lr_scheduler import LRScheduler

from retina.engine import (
    autocast_dtype,
    build_loss,
    build_optimizer,
    evaluate,
    seed_everything,
    train_one_epoch,
)
from retina.heads import head_outputs
from retina.loader import BatchLoader
from retina.metrics import EpochMetrics
from retina.models import build_model
from retina.thresholds import fit_thresholds
from retina.tta import with_views


def setup_process(device: torch.device, seed: int) -> None:
    """Seed everything; deterministic kernels on CPU, cuDNN autotuning on CUDA.

    Set at the start of every run: a reused worker process keeps the last run's settings.
    """
    seed_everything(seed, deterministic=device.type == "cpu")
    torch.backends.cudnn.benchmark = device.type == "cuda"


@dataclass
class Training:
    model: nn.Module
    step_model: nn.Module  # `model` itself, or its torch.compile wrapper
    optimizer: torch.optim.Optimizer
    loss_fn: nn.Module
    device: torch.device
    amp_dtype: torch.dtype | None
    scaler: torch.amp.GradScaler | None
    head: str = "classify"
    # Set by the caller once the batches per epoch are known (retina.schedules.build_schedule);
    # None: the optimizer's lr throughout.
    scheduler: LRScheduler | None = None

    def train_epoch(self, loader: BatchLoader) -> EpochMetrics:
        return train_one_epoch(
            self.step_model, loader, self.optimizer, self.loss_fn, self.device,
            amp_dtype=self.amp_dtype, scaler=self.scaler, scheduler=self.scheduler,
        )  # fmt: skip

    def evaluate(
        self,
        loader: BatchLoader,
        keep_probabilities: bool = False,
        thresholds: Sequence[float] | None = None,
        views: int = 1,
    ) -> EpochMetrics:
        """`thresholds`: a regress head's cuts; None, the fixed 0.5/1.5/2.5/3.5 (the search's).
        `views`: dihedral views averaged (`retina.tta`; tests only: val stays one view)."""
        return evaluate(
            with_views(self.step_model, views), loader, self.loss_fn, self.device, amp_dtype=self.amp_dtype,
            keep_probabilities=keep_probabilities, thresholds=thresholds,
        )  # fmt: skip

    def fit_thresholds(self, metrics: EpochMetrics, labels: Sequence[int]) -> list[float] | None:
        """A regress head's cuts fitted to maximise kappa on this evaluation's scores (kept
        with `keep_probabilities`) against `labels` in the loader's order; None for classify."""
        if self.head != "regress" or metrics.scores is None:
            return None
        return list(fit_thresholds(metrics.scores, labels))

    def state(self) -> dict[str, Any]:
        """What a checkpoint needs to continue training: weights, optimizer, loss scaler and
        the lr schedule (its step and curve: a resumed run continues the same lr per batch)."""
        out = {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict()}
        if self.scaler is not None:
            out["scaler"] = self.scaler.state_dict()
        if self.scheduler is not None:
            out["scheduler"] = self.scheduler.state_dict()
        return out

    def load_state(self, state: dict[str, Any]) -> None:
        """Continue from `state`; attach the scheduler first, or its step is not restored."""
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scaler is not None and "scaler" in state:
            self.scaler.load_state_dict(state["scaler"])
        if self.scheduler is not None and "scheduler" in state:
            self.scheduler.load_state_dict(state["scheduler"])


def build_training(
    arch: str,
    pretrained: bool,
    *,
    optimizer: str,
    lr: float,
    weight_decay: float,
    momentum: float,
    class_weighted: bool,
    train_counts: Sequence[int],
    device: torch.device,
    compile: bool = False,
    head: str = "classify",
) -> Training:
    model = build_model(arch, pretrained, num_classes=head_outputs(head))
    # channels_last on CUDA: NHWC is cuDNN's fast layout for bf16/fp16 convolutions.
    layout = torch.channels_last if device.type == "cuda" else torch.contiguous_format
    model = model.to(device, memory_format=layout)
    opt = build_optimizer(optimizer, model.parameters(), lr, weight_decay, momentum)
    loss_fn = build_loss(class_weighted, train_counts, head).to(device)
    if compile:
        # A reused worker still holds graphs compiled for earlier models; past dynamo's
        # cache limit it would silently run this one uncompiled.
        torch.compiler.reset()
    amp = autocast_dtype(device)
    # fp16 (GPUs without bf16) needs loss scaling, or small gradients underflow to zero.
    scaler = torch.amp.GradScaler("cuda") if amp == torch.float16 else None
    return Training(
        model=model,
        step_model=torch.compile(model) if compile else model,
        optimizer=opt,
        loss_fn=loss_fn,
        device=device,
        amp_dtype=amp,
        scaler=scaler,
        head=head,
    )
