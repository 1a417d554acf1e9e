"""The benchmark's inputs: generated fundus JPEGs, data folders, caches, and timing helpers.

No command of its own; `python -m retina.bench` uses it. A data set of N images is built from a
few distinct synthetic renders (`retina.synthetic`), hard-linked under N names in the Kaggle
layout: decoding cost per file is that of a real render, while generating thousands of large
renders on 2 cores would take longer than the benchmark itself. Labels cycle through the five
grades by patient, so every split holds every grade whatever the size.
"""

from __future__ import annotations

import os
import shutil
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from retina.cache import ImageCache, build_cache
from retina.manifest import KAGGLE_CSV, Manifest, read_manifest
from retina.synthetic import generate

LARGE_DISTINCT = 4  # distinct EyePACS-sized renders: each takes seconds to draw


@dataclass(frozen=True)
class Sizes:
    """Everything that differs between `--quick` (seconds, checks the code) and a full run."""

    source_px: int  # side of the generated JPEGs (real EyePACS photos are ~3-4x larger)
    distinct: int  # distinct renders behind the data set
    images: int  # images of the loader and cache-build data set
    loader_px: tuple[int, int]  # reported as ..._128 and ..._512
    batch: int
    repeats: int  # timed repeats after one warm-up; the median is reported
    min_seconds: float  # a timed repeat runs whole passes for at least this long
    build_images: int  # images per timed cache build
    build_px: int
    train_px: int  # training-epoch benchmark (resnet18)
    train_images: int
    trials: int  # Ray Tune trials of fixed tiny work
    rss_images: int  # base data set of the trial-memory benchmark (the large one is 8x)
    rss_px: int
    map_px: int  # loader-only check of RSS: one epoch through the map vs positioned reads
    map_images: int
    gpu_px: int
    gpu_images: int
    gpu_batch: int
    gpu_seconds: float  # a timed GPU repeat runs whole passes for at least this long
    threads: int  # torch threads, 0 = one per core; --quick uses 1, which on a busy machine
    # avoids waking a thread pool for every tiny op (that wait would dominate tiny sizes)
    large_source: tuple[int, int]  # (width, height) of the EyePACS-like JPEGs (~3000 x 2000)
    large_images: int  # images of the large-source loader data set (a few distinct renders)
    checkpoint_set: tuple[str, ...]  # --set items on demo.yaml for the checkpoint study
    spin: int  # loop length of one parallel-capacity probe (report.parallel_capacity)
    # The fundus augmentation's share of a resnet18 epoch (bench/augment.py): a few batches.
    augment_px: int = 512
    augment_images: int = 8
    augment_batch: int = 4
    augment_repeats: int = 3


FULL = Sizes(
    source_px=1024, distinct=16, images=384, loader_px=(128, 512), batch=32, repeats=5,
    min_seconds=1.0, build_images=256, build_px=512, train_px=128, train_images=160, trials=8,
    rss_images=300, rss_px=64, map_px=256, map_images=2048, gpu_px=512, gpu_images=2048,
    gpu_batch=32, gpu_seconds=2.0, threads=0, large_source=(3000, 2000), large_images=96,
    checkpoint_set=(),  # the demo space as it ships: 8 trials and its confirm stage
    spin=2_000_000,
)  # fmt: skip
QUICK = Sizes(
    source_px=96, distinct=4, images=48, loader_px=(32, 64), batch=8, repeats=1,
    min_seconds=0.05, build_images=32, build_px=32, train_px=32, train_images=16, trials=2,
    rss_images=40, rss_px=32, map_px=32, map_images=64, gpu_px=32, gpu_images=16, gpu_batch=4,
    gpu_seconds=0.0, threads=1, large_source=(450, 300), large_images=8,
    checkpoint_set=("num_samples=2", "space.arch=resnet18", "space.head=classify",
                    "space.epochs=1", "space.warmup_epochs=0", "scheduler.grace_period=1",
                    "test_top_k=1",
                    "confirm.seeds=0"),
    spin=300_000, augment_px=64, augment_repeats=1,
)  # fmt: skip


@dataclass(frozen=True)
class Workspace:
    """A folder for one benchmark run: distinct renders, data sets and caches."""

    root: Path
    sizes: Sizes
    workers: int  # all cores

    @property
    def cache_root(self) -> Path:
        return self.root / "cache"

    def renders(self) -> list[Path]:
        """The distinct synthetic JPEGs, rendered once per run with all cores."""
        folder = self.root / f"renders-{self.sizes.source_px}px"
        if not (folder / KAGGLE_CSV).exists():
            generate(folder, self.sizes.distinct, self.sizes.source_px, 0, self.workers)
        return sorted((folder / "train").glob("*.jpeg"))

    def large_renders(self) -> list[Path]:
        """A few EyePACS-like JPEGs: a render of the photo's height, centred on a black frame
        of `sizes.large_source` (real photos are ~3000 x 2000 px, the disc cut at the sides)."""
        width, height = self.sizes.large_source
        folder = self.root / f"renders-{width}x{height}"
        if not (folder / KAGGLE_CSV).exists():
            square = self.root / f"renders-{height}px-square"
            generate(square, LARGE_DISTINCT, height, 0, self.workers, overwrite=True)
            (folder / "train").mkdir(parents=True, exist_ok=True)
            for path in sorted((square / "train").glob("*.jpeg")):
                frame = Image.new("RGB", (width, height))
                with Image.open(path) as disc:
                    frame.paste(disc, ((width - height) // 2, 0))
                frame.save(folder / "train" / path.name, format="JPEG", quality=90)
            shutil.copyfile(square / KAGGLE_CSV, folder / KAGGLE_CSV)  # last: marks it whole
            shutil.rmtree(square, ignore_errors=True)
        return sorted((folder / "train").glob("*.jpeg"))

    def dataset(self, name: str, n: int, large: bool = False) -> Manifest:
        """A Kaggle-layout folder of n images, hard links to the renders (`large`: to the
        EyePACS-sized ones)."""
        width, height = self.sizes.large_source
        source = f"{width}x{height}" if large else f"{self.sizes.source_px}px"
        folder = self.root / f"{name}-{source}"
        if not (folder / KAGGLE_CSV).exists():
            sources = self.large_renders() if large else self.renders()
            (folder / "train").mkdir(parents=True, exist_ok=True)
            rows = []
            for i in range(n):
                patient, side = i // 2 + 1, ("left", "right")[i % 2]
                target = folder / "train" / f"{patient}_{side}.jpeg"
                _link(sources[i % len(sources)], target)
                rows.append(f"{patient}_{side},{patient % 5}\n")
            (folder / KAGGLE_CSV).write_text("image,level\n" + "".join(rows))
        return read_manifest(folder)

    def cache(self, manifest: Manifest, size: int) -> ImageCache:
        """The decode-once cache of `manifest` at `size` px, built with all cores."""
        return build_cache(
            manifest, size, cache_root=self.cache_root, workers=self.workers, progress=False
        )

    def tiled_cache(self, size: int, n: int) -> np.ndarray:
        """A cache-like .npy of n rows at `size` px (the distinct renders, repeated), mapped."""
        path = self.root / f"tiled-{size}px-{n}-from-{self.sizes.source_px}px.npy"
        if not path.exists():
            small = self.cache(self.dataset("distinct", len(self.renders())), size).open()
            out = np.lib.format.open_memmap(path, "w+", np.uint8, (n, 3, size, size))
            for start in range(0, n, len(small)):
                out[start : start + len(small)] = small[: n - start]
            out.flush()
            del out
        return np.load(path, mmap_mode="r")


def _link(source: Path, target: Path) -> None:
    try:
        os.link(source, target)
    except OSError:  # another file system, or links not allowed: a copy decodes the same
        shutil.copyfile(source, target)


def time_cache_builds(ws: Workspace) -> dict[str, float]:
    """Images/s building the cache from JPEGs on one core and on all cores (median of repeats).

    Wall clock of `build_cache` into a fresh cache folder (decode, crop, resize, write, fsync):
    what a user waits for. The runs alternate between 1 and all cores so drifting load hits
    both alike.
    """
    s = ws.sizes
    manifest = ws.dataset("build", s.build_images)
    ws.cache(manifest, s.build_px)  # warm-up: the JPEGs are in the page cache from now on
    rates: dict[int, list[float]] = {1: [], ws.workers: []}
    for r in range(s.repeats):
        for workers in rates:
            root = ws.root / "builds" / f"{workers}-{r}"
            started = time.perf_counter()
            build_cache(manifest, s.build_px, cache_root=root, workers=workers, progress=False)
            rates[workers].append(len(manifest) / (time.perf_counter() - started))
            shutil.rmtree(root, ignore_errors=True)
    return {
        "cache_build_images_per_s_1core": statistics.median(rates[1]),
        "cache_build_images_per_s_all": statistics.median(rates[ws.workers]),
    }


def rate(run_pass: Callable[[], int], min_seconds: float) -> float:
    """Images/s of whole passes of `run_pass` (returns the images it yielded), >= min_seconds."""
    images, started = 0, time.perf_counter()
    while True:
        images += run_pass()
        elapsed = time.perf_counter() - started
        if elapsed >= min_seconds:
            return images / elapsed


def paired_ratio(raw: dict[str, list[float]], numerator: str, denominators: list[str]) -> float:
    """Median over rounds of raw[numerator] / the best of raw[denominators] in that round.

    The runs of one round are adjacent in time, so on a machine whose load drifts (shared by
    others) their ratio is far steadier than the ratio of the separate medians.
    """
    rounds = range(len(raw[numerator]))
    return statistics.median(
        raw[numerator][i] / max(raw[d][i] for d in denominators) for i in rounds
    )


def timed(run_pass: Callable[[], int], min_seconds: float) -> Callable[[], float]:
    """A run for `median_rates`: the rate of `run_pass` over at least `min_seconds`."""
    return lambda: rate(run_pass, min_seconds)


def median_rates(
    runs: dict[str, Callable[[], float]],
    repeats: int,
    warmup: int = 1,
    raw: dict[str, list[float]] | None = None,
) -> dict[str, float]:
    """Median of each run's rate over `repeats`, after `warmup` untimed rounds (every timed
    rate goes into `raw` when given).

    The runs are interleaved (and their order reversed every other round), so a change in the
    machine's load shows in all of them rather than in whichever ran last.
    """
    results: dict[str, list[float]] = {name: [] for name in runs}
    names = list(runs)
    for round_ in range(warmup + repeats):
        for name in names if round_ % 2 == 0 else reversed(names):
            value = runs[name]()
            if round_ >= warmup:
                results[name].append(value)
    if raw is not None:
        raw.update(results)
    return {name: statistics.median(values) for name, values in results.items()}
