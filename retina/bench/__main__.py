"""Benchmark the course pipeline against this harness, side by side, on generated fundus JPEGs.

    python -m retina.bench [--quick] [--json bench.json] [--keep DIR]     # make bench
    python -m retina.bench --gpu [--quick] [--json bench-gpu.json]        # make bench-gpu
    python -m retina.bench --only augment|predict [--quick] [--json x.json]  # one section

CPU suite: data loading at two sizes, a resnet18 training epoch against a bare loop, building
the cache on one and on all cores, predict's images/s (JPEG files in) against a bare forward
pass, Ray Tune's cost per trial and a trial's peak RSS on an 8x larger data set. `--gpu`:
resnet18 and resnet50 at 512 px, alone and four trials sharing one GPU. The CPU suite ends
with the fundus augmentation's share of a 512 px resnet18 epoch (`--only augment`: just that).
Every number is the median of timed repeats after a warm-up. `--quick` uses tiny sizes (under a minute on 2 cores)
to check that every path runs; its numbers are not comparable.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

from retina.bench import report
from retina.bench.workspace import FULL, QUICK, Workspace, time_cache_builds
from retina.cli import run_command
from retina.errors import RetinaError


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m retina.bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--quick", action="store_true", help="tiny sizes: checks every path runs")
    p.add_argument("--gpu", action="store_true", help="the GPU benchmark (CPU only with --quick)")
    p.add_argument(
        "--only",
        choices=list(SECTIONS),
        help="run one CPU section alone: augment (fundus augmentation's share of an epoch), "
        "predict (predict_efficiency)",
    )
    p.add_argument("--json", type=Path, help="write the results to this JSON file")
    p.add_argument("--keep", type=Path, help="work in this folder and keep it (default: temp)")
    p.add_argument(
        "--source-px",
        type=int,
        help="side of the generated JPEGs (default 1024; real EyePACS photos are ~3000-4000)",
    )
    return p.parse_args(argv)


def _section(name: str) -> float:
    print(f"[retina.bench] {name} ...", file=sys.stderr, flush=True)
    return time.perf_counter()


def _done(started: float) -> None:
    print(f"[retina.bench]   {time.perf_counter() - started:.1f} s", file=sys.stderr, flush=True)


def run_augment(ws: Workspace) -> tuple[dict, dict]:
    """The fundus augmentation's share of a training epoch at 512 px (resnet18, CPU)."""
    from retina.bench.augment import bench_augment

    started = _section("augmentation: flips vs fundus epoch, resnet18 at 512 px")
    keys, details = bench_augment(ws)
    _done(started)
    return keys, {"augment": details}


def run_predict(ws: Workspace) -> tuple[dict, dict]:
    """predict's images/s (JPEG files in) against a bare forward pass: predict_efficiency."""
    from retina.bench.predict import DECODE_WORKERS, bench_predict

    started = _section(f"predict: JPEG files in ({DECODE_WORKERS} lanes) vs a bare forward pass")
    keys, details = bench_predict(ws)
    _done(started)
    return keys, {"predict": details}


SECTIONS = {"augment": run_augment, "predict": run_predict}  # --only: sections that run alone


def run_cpu(ws: Workspace) -> tuple[dict, dict]:
    """The CPU suite: (results by the issue's keys, details)."""
    from retina.bench.loaders import bench_loaders
    from retina.bench.training import bench_training
    from retina.bench.trials import bench_trials

    results: dict = {}
    details: dict = {}
    # The machine's parallel capacity between sections: a section's ratios are compared with
    # their targets only if it stayed quiet before and after (report.check_targets).
    probe = [report.parallel_capacity(ws.workers, ws.sizes.spin)]

    def measured(section: str) -> None:
        probe.append(report.parallel_capacity(ws.workers, ws.sizes.spin))
        details.setdefault("capacity", {})[section] = probe[-2:]

    started = _section("loaders: course pipeline vs cache")
    keys, loader_details = bench_loaders(ws)
    results.update(keys)
    details["loaders"] = loader_details
    measured("loaders")
    _done(started)
    started = _section("training epoch: bare vs ours vs course")
    keys, details["training"] = bench_training(ws, loader_details["best_workers_128"])
    results.update(keys)
    if ws.sizes.train_px == ws.sizes.loader_px[0]:
        # The loader's own time per image over the epoch's: what it can cost at most.
        share = results["epoch_images_per_s"] / results["loader_cache_images_per_s_128"]
        details["training"]["loader_share_of_epoch"] = share
    measured("training")
    _done(started)
    started = _section("cache build: 1 core vs all")
    results.update(time_cache_builds(ws))
    measured("cache_build")
    _done(started)
    keys, more = run_predict(ws)
    results.update(keys)
    details.update(more)
    measured("predict")
    started = _section(
        "Ray Tune trials: overhead, peak RSS, driver cost per result, a demo study's checkpoints "
        "(python -m study.bench_trials)"
    )
    keys, details["trials"] = bench_trials(ws)
    results.update(keys)
    measured("trials")
    _done(started)
    keys, more = run_augment(ws)
    results.update(keys)
    details.update(more)
    measured("augment")
    return results, details


def run_gpu(ws: Workspace, quick: bool) -> tuple[dict, dict, torch.device]:
    from retina.bench.gpu import ARCHS, SHARED, bench_gpu

    if not torch.cuda.is_available() and not quick:
        raise RetinaError(
            "--gpu needs a CUDA device and none is visible to torch; run it on a GPU machine "
            "(make bench-gpu), or add --quick to check the code path on the CPU"
        )
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    started = _section(f"GPU: {', '.join(ARCHS)} alone and {SHARED} trials sharing ({device})")
    results, details = bench_gpu(ws, device)
    _done(started)
    return results, details, device


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    load_start = report.load_average()
    capacity_start = report.parallel_capacity(os.cpu_count() or 1)
    sizes = QUICK if args.quick else FULL
    if args.source_px is not None:
        if not 64 <= args.source_px <= 4096:
            raise RetinaError(f"--source-px {args.source_px} is out of range: pass 64 to 4096")
        sizes = dataclasses.replace(sizes, source_px=args.source_px)
    workers = os.cpu_count() or 1
    torch.set_num_threads(sizes.threads or workers)  # the full run uses the whole machine
    root = args.keep or Path(tempfile.mkdtemp(prefix="retina-bench-"))
    root.mkdir(parents=True, exist_ok=True)
    ws = Workspace(root=root.resolve(), sizes=sizes, workers=workers)
    try:
        if args.gpu:
            from retina.bench.gpu import ARCHS, SHARED

            results, details, device = run_gpu(ws, args.quick)
            keys, targets = report.gpu_keys(ARCHS, SHARED), report.GPU_TARGETS
        elif args.only:
            device = torch.device("cpu")
            results, details = SECTIONS[args.only](ws)
            keys = tuple(k for k in report.CPU_KEYS if k in results)
            targets = report.CPU_TARGETS
        else:
            device = torch.device("cpu")
            results, details = run_cpu(ws)
            keys, targets = report.CPU_KEYS, report.CPU_TARGETS
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)
    machine = report.machine_info(device)
    machine["load_average_start"] = load_start
    machine["load_average_end"] = report.load_average()
    machine["parallel_capacity"] = [capacity_start, report.parallel_capacity(workers)]
    machine["quick"] = args.quick
    capacity = {**details.get("capacity", {}), "run": machine["parallel_capacity"]}
    checks = {} if args.quick else report.check_targets(results, targets, capacity)
    report.print_table(results, keys, machine, checks)
    if args.json:
        report.write_json(args.json, results, machine, sizes, details, checks)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    run_command(main)
