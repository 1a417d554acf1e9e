"""What the `fundus` augmentation adds to a resnet18 training epoch at 512 px, side by side.

No command of its own; `python -m retina.bench` runs `bench_augment` (alone: `--only augment`,
under a minute on 2 cores). Two `BatchLoader`s over the same 512 px cache, seed and model -
`augment="flips"` (today's default) and `augment="fundus"` (flips + one affine_grid/grid_sample
per batch + colour) - each drive `retina.engine.train_one_epoch`, interleaved round by round.

    augment_overhead_512 = (fundus epoch time / flips epoch time) - 1     (target <= 0.05)

the median over rounds of the ratio within a round (adjacent in time, so a shared machine's
drifting load hits both). On a machine shared with other jobs two epochs can differ by far
more than the augmentation costs (rounds at 128 px ranged from -80 % to +246 % under a load of
~5 on 2 cores), so `augment_alone_share_512` times the augmentation itself: its seconds over
the same epoch's batches divided by the flips epoch's seconds. It leaves out only what the
augmentation could cost the model indirectly (nothing measurable: a training step takes the
same time on augmented and plain batches).
"""

from __future__ import annotations

import time

import numpy as np
import torch

from retina.augment import FundusAugment
from retina.bench.training import epoch_pass
from retina.bench.workspace import Workspace, median_rates, paired_ratio, timed
from retina.engine import build_loss, build_optimizer, seed_everything
from retina.loader import BatchLoader, normalisation_affine
from retina.models import build_model

CPU = torch.device("cpu")
ARCH = "resnet18"


def _augmentation_seconds(loader: BatchLoader, epoch: int) -> float:
    """Seconds the fundus augmentation alone takes on one epoch of `loader`'s batches (the
    call a fundus loader makes per batch, on the flips loader's output)."""
    augment = FundusAugment()
    scale, shift = (t.to(loader.device) for t in normalisation_affine())
    plan = augment.draw(loader.seed, epoch, len(loader) * loader.batch_size, loader.device)
    loader.set_epoch(epoch)
    total = 0.0
    for k, (x, _y) in enumerate(loader):
        rows = plan[k * loader.batch_size : k * loader.batch_size + len(x)]
        started = time.perf_counter()
        augment(x, rows, scale, shift)
        total += time.perf_counter() - started
    return total


def bench_augment(ws: Workspace, device: torch.device = CPU) -> tuple[dict[str, float], dict]:
    """augment_overhead_512 and the two epochs' images/s; details: every round, the
    augmentation timed alone."""
    s = ws.sizes
    manifest = ws.dataset("augment", s.augment_images)
    images = ws.cache(manifest, s.augment_px).open()
    indices = np.arange(len(manifest))
    loaders = {
        name: BatchLoader(images, manifest.labels, indices, s.augment_batch, device,
                          train=True, augment=name)
        for name in ("flips", "fundus")
    }  # fmt: skip
    seed_everything(0, deterministic=False)  # the same kernels in both loops
    model = build_model(ARCH, pretrained=False).to(device)
    optimizer = build_optimizer("sgd", model.parameters(), lr=0.01, weight_decay=5e-4)
    loss_fn = build_loss(False).to(device)
    runs = {
        name: timed(epoch_pass(model, loader, optimizer, loss_fn, device), 0.0)
        for name, loader in loaders.items()
    }
    raw: dict[str, list[float]] = {}
    rates = median_rates(runs, s.augment_repeats, raw=raw)
    # rates are images/s: flips rate / fundus rate = fundus time / flips time.
    overhead = paired_ratio(raw, "flips", ["fundus"]) - 1.0
    flips_seconds = loaders["flips"].num_images / rates["flips"]
    alone = _augmentation_seconds(loaders["flips"], epoch=1)
    keys = {
        "augment_flips_images_per_s_512": rates["flips"],
        "augment_fundus_images_per_s_512": rates["fundus"],
        "augment_overhead_512": overhead,
        "augment_alone_share_512": alone / flips_seconds,
    }
    details = {
        "arch": ARCH,
        "px": s.augment_px,
        "batch": s.augment_batch,
        "images_per_epoch": loaders["flips"].num_images,
        "threads": torch.get_num_threads(),
        "runs": raw,
        "augment_alone_seconds_per_epoch": alone,
    }
    return keys, details
