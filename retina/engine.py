"""One training epoch and one evaluation pass, returning `EpochMetrics`; optimizers and the loss.

Used by `python -m retina.train` and by the Ray trainable; no logic lives elsewhere. Typical use:

    seed_everything(0, deterministic=device.type == "cpu")
    model = build_model("resnet18", pretrained=False)
    # The caller places the model. On CUDA use channels_last: cuDNN's NHWC convolutions are the
    # fast path for bf16/fp16 tensor cores, and a channels_last weight makes conv outputs NHWC too.
    model = model.to(device, memory_format=torch.channels_last if device.type == "cuda" else
                     torch.contiguous_format)
    amp = autocast_dtype(device)
    scaler = torch.amp.GradScaler("cuda") if amp == torch.float16 else None
    train_m = train_one_epoch(model, train_loader, opt, loss_fn, device, amp_dtype=amp, scaler=scaler)
    val_m = evaluate(model, val_loader, loss_fn, device, amp_dtype=amp)

The loaders yield (x float32 [B,3,S,S], y int64 [B]) already on `device`. Losses and the
confusion matrix are accumulated on the device and read back once per epoch, so a GPU is never
stalled by a per-batch host sync (except the periodic non-finite check, see `NAN_CHECK_EVERY`).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterable, Sequence

import numpy as np
import torch
from torch import nn

from retina.errors import RetinaError
from retina.heads import grades_of, head_outputs, regress_loss, scores_of
from retina.metrics import NUM_CLASSES, EpochMetrics

# On CUDA, reading the loss on the host (`.item()`, `bool(...)`) waits for the GPU and empties
# its queue of launched kernels. We record the first non-finite batch on the device without a
# sync and look at it every NAN_CHECK_EVERY batches and at the end of the epoch: a diverged run
# stops within that many batches (its weights are garbage anyway), and the sync costs nothing
# measurable. On CPU there is no queue, so every batch is checked before its optimizer step.
NAN_CHECK_EVERY = 50


class NonFiniteLoss(Exception):
    """The training loss became NaN or inf ("loss is nan at batch k"); the run has diverged."""


def _sgd(params, lr: float, weight_decay: float, momentum: float) -> torch.optim.Optimizer:
    # The lab's optimizer: SGD with momentum and (coupled, L2) weight decay.
    return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)


def _adamw(params, lr: float, weight_decay: float, momentum: float) -> torch.optim.Optimizer:
    # `momentum` plays no role in AdamW (its betas are the defaults, 0.9/0.999).
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)


OPTIMIZERS: dict[str, Callable[..., torch.optim.Optimizer]] = {"sgd": _sgd, "adamw": _adamw}


def build_optimizer(
    name: str, params, lr: float, weight_decay: float, momentum: float = 0.9
) -> torch.optim.Optimizer:
    """ "sgd" (momentum + weight decay, as the lab) or "adamw"; an unknown name is a RetinaError."""
    try:
        factory = OPTIMIZERS[name]
    except KeyError:
        raise RetinaError(
            f"unknown optimizer {name!r}; choose one of: {', '.join(OPTIMIZERS)}"
        ) from None
    if not lr > 0:
        raise RetinaError(f"learning rate must be > 0, got {lr}")
    if weight_decay < 0:
        raise RetinaError(f"weight decay must be >= 0, got {weight_decay}")
    return factory(params, lr, weight_decay, momentum)


def build_loss(
    class_weighted: bool, train_counts: Sequence[int] | None = None, head: str = "classify"
) -> nn.Module:
    """Cross-entropy (head `classify`) or SmoothL1 on the grade (head `regress`, one output);
    with `class_weighted`, weight grade c by N / (K * n_c) (inverse frequency).

    The weights average to 1 over the training images, so the loss keeps the scale of the plain
    one and the same learning rates apply. Move the module to the device with `.to(device)`.
    """
    regress = head_outputs(head) == 1
    if not class_weighted:
        return regress_loss(None) if regress else nn.CrossEntropyLoss()
    counts = np.asarray(train_counts if train_counts is not None else [], dtype=np.float64)
    if counts.shape != (NUM_CLASSES,) or (counts <= 0).any():
        raise RetinaError(
            f"class-weighted loss needs a positive training count for each of the {NUM_CLASSES} "
            f"grades, got {list(counts.astype(int))}; add images of the missing grades or drop "
            f"--class-weighted"
        )
    weights = counts.sum() / (NUM_CLASSES * counts)
    if regress:
        return regress_loss(weights)
    return nn.CrossEntropyLoss(weight=torch.tensor(weights, dtype=torch.float32))


def seed_everything(seed: int, *, deterministic: bool = True) -> None:
    """Seed Python, NumPy and torch (all devices); optionally ask torch for deterministic kernels.

    With `deterministic` (the default; what CPU runs use) two runs with one seed give identical
    metrics on one machine. On CUDA pass deterministic=False: deterministic kernels are slower,
    and callers there enable cuDNN autotuning instead. warn_only: an op without a deterministic
    version warns instead of failing a run.
    """
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # seeds CUDA generators too
    torch.use_deterministic_algorithms(deterministic, warn_only=True)


def autocast_dtype(device: torch.device | str) -> torch.dtype | None:
    """Mixed precision for the device: CUDA bf16 (fp16 where bf16 is unsupported); CPU: None (fp32)."""
    device = torch.device(device)
    if device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


class _Tally:
    """Summed loss, confusion counts and the first non-finite loss, all kept on the device.
    A regress head's grades are its output cut by `thresholds` (None: 0.5/1.5/2.5/3.5)."""

    def __init__(self, device: torch.device, thresholds: Sequence[float] | None = None) -> None:
        self.device = device
        self.thresholds = thresholds
        self.loss_sum = torch.zeros((), dtype=torch.float64, device=device)
        self.conf = torch.zeros(NUM_CLASSES * NUM_CLASSES, dtype=torch.int64, device=device)
        self.bad_batch = torch.zeros((), dtype=torch.int64, device=device)  # 0 = none yet
        self.bad_value = torch.zeros((), dtype=torch.float32, device=device)
        self.n = 0

    def add(self, loss: torch.Tensor, logits: torch.Tensor, y: torch.Tensor) -> None:
        self.n += y.shape[0]  # a host-side shape: no sync
        self.loss_sum += loss.detach().double() * y.shape[0]
        pred = grades_of(logits.detach(), self.thresholds)
        # scatter_add_, not torch.bincount: CUDA bincount reads max() on the host (a sync) to size
        # its output; integer adds are exact, so the result does not depend on their order.
        self.conf.scatter_add_(0, y * NUM_CLASSES + pred, torch.ones_like(y))

    def note_finiteness(self, loss: torch.Tensor, batch: int) -> None:
        """Remember the first batch whose loss is not finite, without a host sync."""
        first = (self.bad_batch == 0) & ~torch.isfinite(loss.detach())
        # A Python scalar is passed to the kernel as an argument: no host-to-device copy.
        self.bad_batch = torch.where(first, batch, self.bad_batch)
        self.bad_value = torch.where(first, loss.detach().float(), self.bad_value)

    def raise_if_bad(self) -> None:
        batch = int(self.bad_batch.item())
        if batch:
            raise NonFiniteLoss(f"loss is {self.bad_value.item()} at batch {batch}")

    def finish(self, started: float) -> EpochMetrics:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)  # the clock must include the queued kernels
        seconds = time.perf_counter() - started
        conf = self.conf.cpu().numpy().reshape(NUM_CLASSES, NUM_CLASSES)
        return EpochMetrics.from_confusion(conf, float(self.loss_sum.item()), seconds)


def _autocast(device: torch.device, amp_dtype: torch.dtype | None):
    return torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None)


def train_one_epoch(
    model: nn.Module,
    loader: Iterable,
    optimizer: torch.optim.Optimizer,
    loss_fn: nn.Module,
    device: torch.device | str,
    *,
    amp_dtype: torch.dtype | None = None,
    scaler: torch.amp.GradScaler | None = None,
    thresholds: Sequence[float] | None = None,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
) -> EpochMetrics:
    """One pass over `loader` with an optimizer step per batch; metrics on the training batches.

    Raises NonFiniteLoss when the loss is NaN/inf (CPU: before that batch's step; CUDA: within
    NAN_CHECK_EVERY batches). `scaler` (a GradScaler) is needed for fp16 autocast only.
    `thresholds`: a regress head's cuts for its grades (None: 0.5/1.5/2.5/3.5).
    `scheduler` (built by `retina.schedules.build_schedule`, never here) is stepped after every
    optimizer step: schedules are per batch. images_per_s counts the whole epoch, data loading
    included.
    """
    device = torch.device(device)
    model.train()
    tally = _Tally(device, thresholds)
    per_batch_check = device.type != "cuda"
    started = time.perf_counter()
    for batch, (x, y) in enumerate(loader, start=1):
        # No-ops when the loader already yields device tensors (our BatchLoader does).
        x = x.to(device, non_blocking=True)
        y = y.to(device, non_blocking=True)
        optimizer.zero_grad(set_to_none=True)
        with _autocast(device, amp_dtype):
            logits = model(x)
            loss = loss_fn(logits, y)  # autocast runs cross-entropy in fp32
        if per_batch_check:
            if not torch.isfinite(loss):
                raise NonFiniteLoss(f"loss is {loss.item()} at batch {batch}")
        else:
            tally.note_finiteness(loss, batch)
            if batch % NAN_CHECK_EVERY == 0:
                tally.raise_if_bad()
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            optimizer.step()
        if scheduler is not None:
            scheduler.step()
        tally.add(loss, logits, y)
    if not per_batch_check:
        tally.raise_if_bad()
    return tally.finish(started)


def evaluate(
    model: nn.Module,
    loader: Iterable,
    loss_fn: nn.Module,
    device: torch.device | str,
    *,
    amp_dtype: torch.dtype | None = None,
    keep_probabilities: bool = False,
    thresholds: Sequence[float] | None = None,
) -> EpochMetrics:
    """Metrics of `model` (in eval mode, no gradients) on every batch of `loader`.

    A NaN loss here is reported as the metric's value, not raised: evaluating a bad model is
    legitimate, and the caller decides. `keep_probabilities`: also return each image's softmax
    (float32 [N, 5], in the loader's order) as `.probabilities`, for per-image statistics,
    with its `.scores` and `.grades` (`retina.heads`); a regress head has no probabilities
    (None), its scores are its output. `thresholds`: a regress head's cuts (None: fixed).
    """
    device = torch.device(device)
    model.eval()
    tally = _Tally(device, thresholds)
    kept: list[torch.Tensor] = []
    kept_scores: list[torch.Tensor] = []
    started = time.perf_counter()
    with torch.inference_mode():
        for x, y in loader:
            x = x.to(device, non_blocking=True)
            y = y.to(device, non_blocking=True)
            with _autocast(device, amp_dtype):
                logits = model(x)
                loss = loss_fn(logits, y)
            tally.add(loss, logits, y)
            if keep_probabilities:  # stays on the device: read back once, with the tally
                kept_scores.append(scores_of(logits))
                if logits.shape[1] > 1:
                    kept.append(torch.softmax(logits.float(), dim=1))
    metrics = tally.finish(started)
    if keep_probabilities:
        keep_outputs(metrics, kept, kept_scores, thresholds)
    return metrics


def keep_outputs(
    metrics: EpochMetrics,
    probabilities: list[torch.Tensor],
    scores: list[torch.Tensor],
    thresholds: Sequence[float] | None,
) -> None:
    """Per image, in the loader's order: softmax (classify only), score and grade."""
    score = torch.cat(scores).cpu() if scores else torch.empty(0)
    metrics.scores = score.numpy().astype(np.float32, copy=False)
    if probabilities or not scores:  # classify (or nothing evaluated): the softmax too
        probs = torch.cat(probabilities).cpu() if probabilities else torch.empty(0, NUM_CLASSES)
        metrics.probabilities = probs.numpy().astype(np.float32, copy=False)
        metrics.grades = probs.argmax(dim=1).numpy()
    else:
        metrics.grades = grades_of(score[:, None], thresholds).numpy()
