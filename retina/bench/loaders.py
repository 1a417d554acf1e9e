"""Data loading alone, the course pipeline against ours, up to a normalised float batch.

No command of its own; `python -m retina.bench` runs `bench_loaders`. The course pipeline is
reproduced as the lab wrote it: a torch `Dataset` whose `__getitem__` opens the JPEG with PIL
and builds `transforms.Compose([Resize, RandomHorizontalFlip, RandomVerticalFlip, ToTensor,
Normalize])` for every image, under a `DataLoader` (shuffled, no persistent workers, so each
epoch starts its workers again) with 0 workers and with one per core; the better of the two
counts. Ours is `BatchLoader` over the decode-once cache of the same JPEGs. The rates are
medians over rounds; the speedup is the median of each round's ours / the better course run.
The course's cost grows with the source JPEG and the cache's does not, so the 512 px
comparison runs twice: from 1,024 px renders and from EyePACS-sized ~3000 x 2000 px photos.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms

from retina.bench.workspace import Workspace, median_rates, paired_ratio, timed
from retina.loader import IMAGENET_MEAN, IMAGENET_STD, BatchLoader
from retina.manifest import Manifest

CPU = torch.device("cpu")


class CourseDataset(Dataset):
    """The course lab's Dataset: PIL decode and a fresh `Compose` per image, every epoch."""

    def __init__(self, paths: list[Path], labels: np.ndarray, size: int) -> None:
        self.paths = [str(p) for p in paths]
        self.labels = [int(v) for v in labels]
        self.size = size

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        image = Image.open(self.paths[i]).convert("RGB")
        transform = transforms.Compose(
            [
                transforms.Resize((self.size, self.size)),
                transforms.RandomHorizontalFlip(),
                transforms.RandomVerticalFlip(),
                transforms.ToTensor(),
                transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD),
            ]
        )
        return transform(image), self.labels[i]


def course_loader(
    paths: list[Path], labels: np.ndarray, size: int, batch: int, workers: int
) -> DataLoader:
    """The lab's DataLoader over `paths`: shuffled batches of `batch`, `workers` processes."""
    return DataLoader(
        CourseDataset(paths, labels, size), batch_size=batch, shuffle=True, num_workers=workers
    )


def course_pass(loader: DataLoader, device: torch.device) -> Callable[[], int]:
    def run() -> int:
        n = 0
        for x, y in loader:
            x, y = x.to(device), y.to(device)  # the lab's loop moved each batch to the device
            n += len(y)
        return n

    return run


def our_pass(loader: BatchLoader) -> Callable[[], int]:
    epoch = iter(range(1, 1 << 30))

    def run() -> int:
        loader.set_epoch(next(epoch))
        n = 0
        for _x, y in loader:
            n += len(y)
        return n

    return run


def worker_counts() -> tuple[int, ...]:
    """0 (load in the training process) and one worker per core."""
    return (0, os.cpu_count() or 1)


def compare(
    ws: Workspace, manifest: Manifest, size: int, device: torch.device
) -> tuple[dict, dict, str]:
    """Ours against the course's loader (each worker count) on `manifest` at `size` px.

    Returns (median rates by run, every timed rate by run, the course's better run's name).
    """
    s = ws.sizes
    images = ws.cache(manifest, size).open()
    ours = BatchLoader(
        images, manifest.labels, np.arange(len(manifest)), s.batch, device, train=True
    )
    runs = {"ours": timed(our_pass(ours), s.min_seconds)}
    for workers in worker_counts():
        loader = course_loader(list(manifest.paths), manifest.labels, size, s.batch, workers)
        runs[f"lab_{workers}w"] = timed(course_pass(loader, device), s.min_seconds)
    raw: dict[str, list[float]] = {}
    rates = median_rates(runs, s.repeats, raw=raw)
    best = max((r for r in rates if r.startswith("lab_")), key=rates.__getitem__)
    return rates, raw, best


def bench_loaders(ws: Workspace, device: torch.device = CPU) -> tuple[dict[str, float], dict]:
    """loader_lab/cache_images_per_s and loader_speedup at both sizes from the 1,024 px JPEGs,
    and at the second size from EyePACS-sized ones (`_512_large`); details per worker count.

    Returns (keys, details); details["best_workers_128"] is the course's better worker count at
    the first size, which the training benchmark reuses.
    """
    s = ws.sizes
    manifest = ws.dataset("loader", s.images)
    large = ws.dataset("loader", s.large_images, large=True)
    keys: dict[str, float] = {}
    details: dict = {}
    cases = ((manifest, s.loader_px[0], "128"), (manifest, s.loader_px[1], "512"))
    for source, size, suffix in (*cases, (large, s.loader_px[1], "512_large")):
        rates, raw, best = compare(ws, source, size, device)
        labs = [r for r in rates if r.startswith("lab_")]
        keys[f"loader_lab_images_per_s_{suffix}"] = rates[best]
        keys[f"loader_cache_images_per_s_{suffix}"] = rates["ours"]
        keys[f"loader_speedup_{suffix}"] = paired_ratio(raw, "ours", labs)
        details[f"loader_{suffix}"] = {"px": size, "images": len(source), **rates, "runs": raw}
        details[f"loader_{suffix}"]["source"] = str(source.root)
        details[f"best_workers_{suffix}"] = int(best[len("lab_") : -1])
    return keys, details
