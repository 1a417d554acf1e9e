"""A training epoch of resnet18: a bare loop over tensors in memory, our epoch, the course epoch.

No command of its own; `python -m retina.bench` runs `bench_training`. The same model, batch
size, images and torch threads in all three:
- bare: zero_grad / forward / loss / backward / step over normalised batches already in memory
  (what the model costs with no data loading at all);
- ours: `retina.engine.train_one_epoch` over `BatchLoader` on the decode-once cache (the loop a
  trial runs: flips, normalisation, metrics, the non-finite check included);
- lab: `train_one_epoch` over the course DataLoader (PIL + Compose per image), with the worker
  count that loaded fastest in the loader benchmark.
epoch_efficiency = ours / bare: the share of the model's speed that survives our harness (the
median over rounds of the ratio within a round: the runs of a round are adjacent in time).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from retina.bench.loaders import course_loader
from retina.bench.workspace import Workspace, median_rates, paired_ratio, timed
from retina.engine import build_loss, build_optimizer, seed_everything, train_one_epoch
from retina.loader import BatchLoader
from retina.models import build_model

CPU = torch.device("cpu")
ARCH = "resnet18"


def bare_pass(
    model: nn.Module,
    batches: list[tuple[torch.Tensor, torch.Tensor]],
    optimizer: torch.optim.Optimizer,
    loss_fn: nn.Module,
    amp_dtype: torch.dtype | None = None,
    scaler: torch.amp.GradScaler | None = None,
) -> Callable[[], int]:
    """One optimizer step per in-memory batch: the floor any loader is measured against.

    The same step as `train_one_epoch` (autocast, optional GradScaler), without its metrics.
    """
    device_type = batches[0][0].device.type

    def run() -> int:
        model.train()
        n = 0
        for x, y in batches:
            optimizer.zero_grad(set_to_none=True)
            with torch.autocast(device_type, dtype=amp_dtype, enabled=amp_dtype is not None):
                loss = loss_fn(model(x), y)
            if scaler is not None:
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
            else:
                loss.backward()
                optimizer.step()
            n += len(y)
        if device_type == "cuda":
            torch.cuda.synchronize()  # the clock must include the queued kernels
        return n

    return run


def epoch_pass(
    model: nn.Module,
    loader,
    optimizer: torch.optim.Optimizer,
    loss_fn: nn.Module,
    device: torch.device,
    amp_dtype: torch.dtype | None = None,
    scaler: torch.amp.GradScaler | None = None,
) -> Callable[[], int]:
    """One `train_one_epoch` over `loader` (reshuffled each pass when it is a BatchLoader)."""
    epochs = iter(range(1, 1 << 30))

    def run() -> int:
        if isinstance(loader, BatchLoader):
            loader.set_epoch(next(epochs))
        metrics = train_one_epoch(
            model, loader, optimizer, loss_fn, device, amp_dtype=amp_dtype, scaler=scaler
        )
        return metrics.n_images

    return run


def in_memory_batches(loader: BatchLoader) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The loader's first epoch, cloned out of its reused buffers (real images, real flips)."""
    loader.set_epoch(0)
    return [(x.clone(), y.clone()) for x, y in loader]


def bench_training(
    ws: Workspace, lab_workers: int, device: torch.device = CPU
) -> tuple[dict[str, float], dict]:
    """bare/epoch/epoch_lab images/s and the two efficiencies, medians of interleaved repeats."""
    s = ws.sizes
    manifest = ws.dataset("loader", s.images)
    n = min(s.train_images, len(manifest))
    indices = np.arange(n)
    images = ws.cache(manifest, s.train_px).open()
    ours = BatchLoader(images, manifest.labels, indices, s.batch, device, train=True)
    lab = course_loader(list(manifest.paths[:n]), manifest.labels[:n], s.train_px, s.batch, lab_workers)  # fmt: skip
    batches = in_memory_batches(ours)

    seed_everything(0, deterministic=False)  # the same kernels in all three loops
    model = build_model(ARCH, pretrained=False).to(device)
    optimizer = build_optimizer("sgd", model.parameters(), lr=0.01, weight_decay=5e-4)
    loss_fn = build_loss(False).to(device)
    # Each timed repeat is one epoch: every loop sees the same images once per repeat.
    runs = {
        "bare": timed(bare_pass(model, batches, optimizer, loss_fn), 0.0),
        "ours": timed(epoch_pass(model, ours, optimizer, loss_fn, device), 0.0),
        "lab": timed(epoch_pass(model, lab, optimizer, loss_fn, device), 0.0),
    }
    raw: dict[str, list[float]] = {}
    rates = median_rates(runs, s.repeats, raw=raw)
    keys = {
        "bare_images_per_s": rates["bare"],
        "epoch_images_per_s": rates["ours"],
        "epoch_lab_images_per_s": rates["lab"],
        "epoch_efficiency": paired_ratio(raw, "ours", ["bare"]),
        "epoch_efficiency_lab": paired_ratio(raw, "lab", ["bare"]),
    }
    details = {
        "arch": ARCH,
        "px": s.train_px,
        "batch": s.batch,
        "images_per_epoch": n,
        "lab_workers": lab_workers,
        "threads": torch.get_num_threads(),
        "runs": raw,
    }
    return keys, details
