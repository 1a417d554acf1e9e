"""Ray Tune's cost per trial, a trial's peak RSS and the driver's cost per result, measured in
a separate process.

No command of its own; `python -m retina.bench` runs `bench_trials`, which prepares the two
data sets (base, and 8x the images) and runs `python -m study.bench_trials` on them; it also
runs the demo space as a real small study and measures its checkpoints before and after the
end-of-study clean-up (`Sizes.checkpoint_set` sizes it).

A trial's RSS is mostly torch and Ray (over a GB), so on data sets small enough to train on
here the ratio says little about the mechanism. `map_rss_growth` adds the direct check: one
training epoch of `BatchLoader` over a larger cache file in a fresh process, RSS before and
after, with rows read by positioned reads (what the loader does for a cache file) and through
the memory map (what it does for any other array).

Why a subprocess and not a lazy `import ray` here: `retina/` never imports Ray or `study/`
(the layers import downward only), and the quantities measured belong to `study/` - the sweep's
Ray start, its TuneConfig and its trainable. A child process keeps that rule without an
exception, gives Ray a clean start (no torch thread pools or forked workers inherited from the
loader benchmarks), and keeps Ray's driver memory out of this process.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import subprocess
import sys

import numpy as np
import torch

from retina.bench.workspace import Workspace
from retina.errors import RetinaError
from retina.loader import BatchLoader

LARGER = 8  # the large data set has this many times the images of the base one
TAIL = 3000  # characters of the child's output shown when it fails
QUICK_DRIVER = ["--driver-trials", "2", "4", "--driver-epochs", "2", "--driver-concurrent", "2"]


def command(ws: Workspace) -> list[str]:
    """The `python -m study.bench_trials` command line for this workspace."""
    s = ws.sizes
    base = ws.dataset("rss-base", s.rss_images)
    large = ws.dataset(f"rss-{LARGER}x", LARGER * s.rss_images)
    return [
        sys.executable,
        "-m",
        "study.bench_trials",
        "--work",
        str(ws.root / "ray"),
        "--json",
        str(ws.root / "trials.json"),
        "--base",
        str(base.root),
        "--large",
        str(large.root),
        "--image-size",
        str(s.rss_px),
        "--trials",
        str(s.trials),
        "--steps",
        "2" if s.trials <= 2 else "5",
        "--batch-size",
        str(s.batch),
        "--cache-dir",
        str(ws.cache_root),
        # The driver's cost per result: 64 and 1,024 trials x 30 epochs, 4 at once. Quick: 2
        # and 4 x 2, 2 at once (each of its 4 Tune runs starts that many worker processes).
        *(QUICK_DRIVER if s.trials <= 2 else []),
        *(arg for item in s.checkpoint_set for arg in ("--checkpoint-set", item)),
    ]


def _rss_bytes() -> int:
    with open("/proc/self/statm") as fh:  # Linux: resident pages are the second field
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _epoch_rss_growth(path: str, through_map: bool, batch: int) -> int:
    """RSS growth (bytes) over one training epoch of BatchLoader on the .npy file `path`."""
    images = np.load(path, mmap_mode="r")
    if through_map:
        images = np.asarray(images)  # a plain view of the same map: rows are gathered from it
    n = len(images)
    loader = BatchLoader(images, np.zeros(n, np.int64), np.arange(n), batch, "cpu", train=True)
    batches = iter(loader)
    next(batches)  # the loader's buffers exist from here on
    before = _rss_bytes()
    for _ in batches:
        pass
    return _rss_bytes() - before


def map_rss_growth(ws: Workspace) -> dict[str, float]:
    """MB of RSS one epoch adds, rows read with preadv vs through the map, and the file's MB."""
    s = ws.sizes
    images = ws.tiled_cache(s.map_px, s.map_images)
    path, mb = str(images.filename), 2**20
    out = {"cache_mb": images.nbytes / mb, "px": s.map_px, "images": s.map_images}
    ctx = multiprocessing.get_context("spawn")  # a fresh process: nothing mapped or cached yet
    for name, through_map in (("preadv", False), ("mmap", True)):
        with ctx.Pool(1, initializer=torch.set_num_threads, initargs=(1,)) as pool:
            out[f"{name}_growth_mb"] = (
                pool.apply(_epoch_rss_growth, (path, through_map, s.batch)) / mb
            )
    return out


def bench_trials(ws: Workspace) -> tuple[dict[str, float], dict]:
    """trial_overhead_s, trial_peak_rss_ratio and the demo study's checkpoint bytes before
    and after its clean-up, plus the child's details."""
    cmd = command(ws)
    env = dict(os.environ, RAY_AIR_NEW_OUTPUT="0")  # as study.sweep runs Tune
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    out = ws.root / "trials.json"
    if proc.returncode != 0 or not out.exists():
        tail = (proc.stdout + proc.stderr)[-TAIL:]
        raise RetinaError(
            f"the trial benchmark (python -m study.bench_trials) failed with exit code "
            f"{proc.returncode}:\n{tail}\nrun it alone to see everything: {' '.join(cmd)} "
            f"(with --keep DIR on retina.bench so its data stays)"
        )
    result = json.loads(out.read_text())
    keys = {k: float(v) for k, v in result.items() if k != "details"}
    details = result["details"]
    details["loader_epoch_rss"] = map_rss_growth(ws)
    return keys, details
