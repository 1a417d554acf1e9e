"""Ray Tune's cost per trial, and a trial's peak memory against the size of its data set.

    python -m study.bench_trials --work DIR --json OUT --base DATA --large DATA8X \
        --image-size 64 [--trials 8] [--steps 5] [--batch-size 32] [--cache-dir DIR]

Started by `python -m retina.bench` as a separate process rather than imported: `retina/` never
imports Ray or `study/`, and what is measured here is the sweep's own Ray start, TuneConfig and
trainable, which live in `study/`. Its own process also gives Ray a clean start and keeps Ray's
processes and memory out of the benchmark's.

- trial_overhead_s: N trials of fixed tiny work (build a resnet18, a few SGD steps on a 32 px
  batch made once and shipped with `tune.with_parameters`) as a Tune sweep, against the same N
  run one after another in this process (before Ray starts and again after it stops; the mean):
  (sweep - plain) / N. Ray is started as the sweep starts it (`study.run.tuner.start_ray`, dashboard
  included; its start-up is reported apart, a study pays it once), in a Ray of its own, and the
  Tuner gets the sweep's `study.define.space.tune_config` (trial workers reused); one trial runs at a
  time on all cores, as the plain loop does.
- trial_peak_rss_ratio: peak RSS (ru_maxrss) of one real trial - `study.run.trainable.train_trial`,
  one epoch of resnet18 run by Tune - on the large data set (8x the images) divided by that on
  the base one. The two trials run side by side, each in a fresh worker process (no reuse: a
  process's peak would carry over), on caches built beforehand, so the trials only map them.
- driver_ms_per_result_64 / _1024, driver_cost_growth, ray_ms_per_result_64 / _1024: the
  driver's own cost per reported result in a Tune run of no-op trials, 64 and 1,024 trials x
  30 epochs, 4 at once (`--driver-trials`, `--driver-epochs`, `--driver-concurrent`), and
  Ray Tune's; ray_ms_per_result_ckpt_64 / _1024, ray_ckpt_ratio_1024, ray_ckpt_growth: Ray's
  with a tiny checkpoint per result, kept as the sweep keeps them; see `study.bench_driver`.
- checkpoint_bytes_after_study: the demo space (`--checkpoint-set` overrides, e.g. fewer
  trials for --quick) run as a real sweep (`python -m study.sweep`) on the base data set
  with `keep_checkpoints: all`; the checkpoint bytes it leaves (checkpoint_bytes_before_cleanup)
  and those left once the end-of-study clean-up (`study.conclude.checkpoints`) has deleted
  what the study no longer needs.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import ray
import torch
import torch.nn.functional as F
from ray import tune

from retina.cli import run_command
from retina.models import build_model
from retina.prepare import PreparedData, prepare_data
from study.bench_driver import CONCURRENT, measure_sizes
from study.conclude.checkpoints import clean_checkpoints, needed_trials
from study.define.schema import StudyConfig, load_study
from study.define.space import tune_config, tune_param_space
from study.record.layout import STUDY_JSON
from study.record.results import ResultsStore
from study.run.trainable import train_trial
from study.run.tuner import start_ray

DEMO_SPACE = Path(__file__).resolve().parents[1] / "search_spaces" / "demo.yaml"
LOCAL_DASHBOARD = "127.0.0.1"


def bench_study(data: Path, image_size: int, trials: int, batch: int, cpus: int) -> StudyConfig:
    """demo.yaml with every dimension fixed, `cpus` cores per trial, no early stopping."""
    return load_study(
        DEMO_SPACE,
        [
            "name=bench",
            f"data.path={data}",
            f"data.image_size={image_size}",
            "space.arch=resnet18",
            "space.head=classify",
            "space.pretrained=false",
            "space.lr=0.01",
            f"space.batch_size={batch}",
            "space.epochs=1",
            "space.warmup_epochs=0",  # demo.yaml warms up for 1 epoch: none in a 1-epoch run
            "space.weight_decay=0.0001",
            f"num_samples={trials}",
            f"resources.cpu={cpus}",
            "resources.gpu=0",
            "scheduler.name=none",  # the RSS trial must run to its end, past its last report
        ],
    )


def tiny_work(x: torch.Tensor, y: torch.Tensor, steps: int) -> None:
    """Fixed work of one benchmark trial: a fresh resnet18 and `steps` SGD steps.

    On one thread: ops this small only pay for waking a thread pool, which on a busy machine
    costs more than the ops and would make the measurement one of the machine's load.
    """
    torch.set_num_threads(1)
    model = build_model("resnet18", pretrained=False)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    for _ in range(steps):
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        optimizer.step()


def overhead_trial(config: dict, batch: tuple, steps: int, metric: str) -> None:
    tiny_work(*batch, steps)
    tune.report({metric: 0.0})


def peak_rss_trial(
    config: dict, datasets: dict[str, PreparedData], study: StudyConfig, out: str
) -> None:
    """The sweep's trainable on config["dataset"], then this process's peak RSS (ru_maxrss)."""
    name = config["dataset"]
    train_trial(config, datasets[name], study)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
    Path(out, f"{name}.json").write_text(json.dumps({"peak_rss_bytes": peak}))


def _tuner(
    trainable, study: StudyConfig, work: Path, name: str, extra: dict | None = None, **changes
) -> tune.Tuner:
    return tune.Tuner(
        tune.with_resources(trainable, {"cpu": study.resources.cpu, "gpu": 0}),
        param_space={**tune_param_space(study), **(extra or {})},
        tune_config=dataclasses.replace(tune_config(study), **changes),
        run_config=tune.RunConfig(name=name, storage_path=str(work), verbose=0),
    )


def plain_seconds(batch: tuple, steps: int, n: int) -> float:
    """The tiny work n times, one after another, in this plain process (no Ray running)."""
    tiny_work(*batch, steps)  # warm-up: a Tune worker has torch loaded, too
    started = time.perf_counter()
    for _ in range(n):
        tiny_work(*batch, steps)
    return time.perf_counter() - started


def tiny_batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.randn(8, 3, 32, 32, generator=g), torch.randint(0, 5, (8,), generator=g)


def measure_overhead(study: StudyConfig, work: Path, steps: int) -> dict:
    """Tune's wall time for the study's trials of tiny work (one at a time, all cores each)."""
    trainable = tune.with_parameters(
        overhead_trial, batch=tiny_batch(), steps=steps, metric=study.metric.name
    )
    started = time.perf_counter()
    grid = _tuner(trainable, study, work, "overhead").fit()
    swept = time.perf_counter() - started
    errors = [str(r.error) for r in grid if r.error]
    if errors:
        raise RuntimeError(f"benchmark trial failed: {errors[0]}")
    return {
        "trials": study.num_samples,
        "steps": steps,
        "tune_s": swept,
        "reuse_actors": bool(tune_config(study).reuse_actors),
    }


def measure_peak_rss(
    datasets: dict[str, PreparedData], image_size: int, batch: int, work: Path
) -> dict[str, int]:
    """One real trial per data set, side by side, each in a fresh worker process (actors are
    not reused here: a process's peak would carry over to the next trial)."""
    cpus = max(1, (os.cpu_count() or 1) // len(datasets))
    study = bench_study(next(iter(datasets.values())).data_dir, image_size, 1, batch, cpus)
    out = work / "peak-rss"
    out.mkdir(parents=True, exist_ok=True)
    trainable = tune.with_parameters(peak_rss_trial, datasets=datasets, study=study, out=str(out))
    extra = {"dataset": tune.grid_search(list(datasets))}
    grid = _tuner(trainable, study, work, "peak-rss", extra, reuse_actors=False).fit()
    errors = [str(r.error) for r in grid if r.error]
    files = {name: out / f"{name}.json" for name in datasets}
    if errors or not all(f.exists() for f in files.values()):
        raise RuntimeError(f"peak-RSS trial failed: {errors[:1]}")
    return {name: int(json.loads(f.read_text())["peak_rss_bytes"]) for name, f in files.items()}


def measure_checkpoints(
    data: Path, image_size: int, work: Path, sets: list[str], cache_dir: Path | None
) -> dict:
    """Checkpoint bytes of a demo study when it ends, before and after the clean-up.

    The study runs as a user runs it, `python -m study.sweep`, in a process (and a Ray) of its
    own, with keep_checkpoints: all (and without its dashboard, live report and export, which
    write no checkpoint); the end-of-study clean-up is then applied here.
    """
    results = work / "checkpoint-study"
    shutil.rmtree(results, ignore_errors=True)  # a kept workspace: measure a fresh study
    overrides = [
        f"data.image_size={image_size}",
        "space.pretrained=false",  # no ImageNet weights offline; the checkpoint is as large
        "keep_checkpoints=all",  # measured before the clean-up, then cleaned below
        "resources.gpu=0",
        "export=false",  # best/ holds no checkpoint: ~6 CPU-s of ONNX tracing measure nothing
        *sets,
    ]
    cmd = [sys.executable, "-m", "study.sweep", str(DEMO_SPACE), "--data", str(data)]
    cmd += ["--results", str(results), "--name", "checkpoints"]
    cmd += ["--dashboard-host", "off", "--report-every", "0"]  # nor do its dashboard and report
    cmd += [arg for item in overrides for arg in ("--set", item)]
    cmd += ["--cache-dir", str(cache_dir)] if cache_dir else []
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        tail = (proc.stdout + proc.stderr)[-3000:]
        raise RuntimeError(f"the checkpoint study failed ({proc.returncode}):\n{tail}")
    folder = results / "checkpoints"
    record = json.loads((folder / STUDY_JSON).read_text())
    metric = record["metric"]
    store = ResultsStore(folder, record["hyperparameters"], metric["name"], metric["mode"])
    store.load()
    top_k = record["config"]["test_top_k"]
    keep = needed_trials(store.trials_frame(), metric["name"], metric["mode"], top_k)
    footprint = clean_checkpoints(folder, keep)
    return {
        "checkpoint_bytes_before_cleanup": footprint.bytes_before,
        "checkpoint_bytes_after_study": footprint.bytes_after,
        "details": {
            "trials_with_checkpoints": [footprint.trials_before, footprint.trials_after],
            "line": footprint.line(),
            "overrides": overrides,
        },
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m study.bench_trials", description=__doc__)
    p.add_argument("--work", type=Path, required=True, help="folder for Ray's results")
    p.add_argument("--json", type=Path, required=True, help="where to write the numbers")
    p.add_argument("--base", type=Path, required=True, help="base data folder (Kaggle layout)")
    p.add_argument("--large", type=Path, required=True, help="the data set with 8x the images")
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--trials", type=int, default=8)
    p.add_argument("--steps", type=int, default=5, help="SGD steps of one tiny trial")
    p.add_argument("--batch-size", type=int, default=32, help="of the peak-RSS trial")
    p.add_argument("--cache-dir", type=Path, help="cache root (default $RETINA_CACHE)")
    p.add_argument(
        "--driver-trials", type=int, nargs=2, default=(64, 1024), metavar=("SMALL", "LARGE")
    )
    p.add_argument("--driver-epochs", type=int, default=30, help="results per driver trial")
    p.add_argument(
        "--driver-concurrent", type=int, default=CONCURRENT, help="driver trials at once"
    )
    p.add_argument(
        "--checkpoint-set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override of the demo space in the checkpoint study, e.g. num_samples=2",
    )
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    clock = {"start": time.perf_counter()}
    datasets = {
        name: prepare_data(folder, args.image_size, cache_root=args.cache_dir, progress=False)
        for name, folder in (("base", args.base), ("large", args.large))
    }
    clock["prepared"] = time.perf_counter()
    cpus = os.cpu_count() or 1  # every core per trial: one at a time, as the plain loop runs
    study = bench_study(args.base, args.image_size, args.trials, args.batch_size, cpus)
    before = plain_seconds(tiny_batch(), args.steps, args.trials)
    clock["plain"] = time.perf_counter()
    # The sweep's own start (a local Ray with its dashboard), in a Ray of our own: without an
    # address Ray would join any cluster already running on this machine.
    os.environ["RAY_ADDRESS"] = "local"
    start_ray(None, LOCAL_DASHBOARD)
    clock["ray_started"] = time.perf_counter()
    try:
        details = measure_overhead(study, args.work, args.steps)
        clock["swept"] = time.perf_counter()
        peaks = measure_peak_rss(datasets, args.image_size, args.batch_size, args.work)
        clock["rss"] = time.perf_counter()
        driver_keys, details["driver"] = measure_sizes(
            args.work, tuple(args.driver_trials), args.driver_epochs,
            concurrent=args.driver_concurrent,
        )  # fmt: skip
        clock["driver"] = time.perf_counter()
    finally:
        ray.shutdown()
    clock["ray_stopped"] = time.perf_counter()
    # The plain loop again, after Ray: load on a shared machine drifts, the mean of the two
    # runs brackets the sweep in time.
    after = plain_seconds(tiny_batch(), args.steps, args.trials)
    clock["plain_again"] = time.perf_counter()
    checkpoints = measure_checkpoints(
        args.base, args.image_size, args.work, args.checkpoint_set, args.cache_dir
    )
    clock["checkpoints"] = time.perf_counter()
    plain = (before + after) / 2
    n = args.trials
    details.update(plain_s=plain, plain_s_runs=[before, after])
    details["trial_overhead_s"] = (details["tune_s"] - plain) / n
    steps = list(clock)
    details["seconds"] = {b: clock[b] - clock[a] for a, b in zip(steps, steps[1:], strict=False)}
    cache_bytes = {name: d.cache.path.stat().st_size for name, d in datasets.items()}
    mib = 2**20
    growth = (peaks["large"] - peaks["base"]) / max(1, cache_bytes["large"] - cache_bytes["base"])
    details.update(
        ray_init_s=details["seconds"]["ray_started"],
        peak_rss_mb={k: v / mib for k, v in peaks.items()},
        cache_mb={k: v / mib for k, v in cache_bytes.items()},
        images={k: len(d.labels) for k, d in datasets.items()},
        image_size=args.image_size,
        rss_growth_per_cache_byte=growth,  # ~1 if every page read stayed resident, ~0 if none
    )
    details["checkpoints"] = checkpoints.pop("details")
    result = {
        "trial_overhead_s": details.pop("trial_overhead_s"),
        "trial_peak_rss_ratio": peaks["large"] / peaks["base"],
        **driver_keys,
        **checkpoints,
        "details": details,
    }
    args.json.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    run_command(main)
