"""The driver's own cost per result, at two study sizes: does it stay flat as a study grows?

    python -m study.bench_driver --work DIR [--trials 64 1024] [--epochs 30] [--json OUT]

Run by `python -m study.bench_trials` (so by `python -m retina.bench`) inside its Ray. A real
Ray Tune run of a no-op trainable (each trial reports `epochs` results shaped like the sweep's:
every epoch metric and a 5x5 confusion matrix) with the sweep's results callback
(`study.run.callback.ParquetCallback`) writing a real results folder. The callback is timed
from outside (`TimedCallback` wraps each of its methods), so the same code measures the
harness before and after a change to it:

- driver_ms_per_result: time inside our callback (results store, journal, Parquet rebuilds,
  the kept copy of Tune's snapshot) per reported result;
- ray_ms_per_result: the rest of the tuning loop's wall time (from the callback's setup to
  the experiment's end) per result - Ray Tune's own cost, not ours to fix.

Trials are packed onto the cores (a fraction of a CPU each, workers reused) so 1,024 trials
x 30 epochs take a few minutes.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from ray import tune

from study.define.schema import StudyConfig, hyperparameter_names, load_study
from study.define.space import tune_config, tune_param_space
from study.record.results import EPOCH_COLUMNS, ResultsStore
from study.run.callback import ParquetCallback

DEMO_SPACE = Path(__file__).resolve().parents[1] / "search_spaces" / "demo.yaml"
CONCURRENT = 4  # trials at once: Tune's loop in the driver is the bottleneck, not the workers
CALLBACK_METHODS = (
    "setup", "on_trial_start", "on_trial_result", "on_trial_save", "on_trial_complete",
    "on_trial_error", "on_trial_recover", "on_step_end", "on_experiment_end",
)  # fmt: skip


class TimedCallback(ParquetCallback):
    """The sweep's callback with a stopwatch around each of its methods."""

    def __init__(self, store: ResultsStore, study: StudyConfig):
        super().__init__(store, study)
        self.bench = {"busy_s": 0.0, "results": 0, "loop_started": None, "loop_ended": None}
        self.by_method: dict[str, list] = {}  # name -> [calls, seconds]


def _timed(name: str):
    def method(self, *args, **kwargs):
        if name == "setup":
            self.bench["loop_started"] = time.perf_counter()
        if name == "on_trial_result":
            self.bench["results"] += 1
        started = time.perf_counter()
        try:
            return getattr(ParquetCallback, name)(self, *args, **kwargs)
        finally:
            ended = time.perf_counter()
            self.bench["busy_s"] += ended - started
            tally = self.by_method.setdefault(name, [0, 0.0])
            tally[0] += 1
            tally[1] += ended - started
            if name == "on_experiment_end":
                self.bench["loop_ended"] = ended

    method.__name__ = name
    return method


for _name in CALLBACK_METHODS:
    setattr(TimedCallback, _name, _timed(_name))


def driver_study(trials: int, cpu: float) -> StudyConfig:
    """demo.yaml with every dimension fixed, random search, no early stopping."""
    return load_study(
        DEMO_SPACE,
        [
            "name=driver-bench",
            "space.arch=resnet18",
            "space.head=classify",
            "space.pretrained=false",
            "space.lr=0.01",
            "space.batch_size=16",
            "space.epochs=30",
            "space.weight_decay=0.0001",
            "search.algorithm=random",
            "scheduler.name=none",
            f"num_samples={trials}",
            f"max_concurrent={CONCURRENT}",
            f"resources.cpu={cpu}",
            "resources.gpu=0",
        ],
    )


def noop_trial(config: dict, epochs: int) -> None:
    """Reports `epochs` results shaped like a real trial's, and does nothing else."""
    metrics = {c: 0.5 for c in EPOCH_COLUMNS[2:] if c not in ("time_total_s",)}
    confusion = list(range(25))
    for epoch in range(1, epochs + 1):
        tune.report(
            {"epoch": epoch, **metrics, "val_confusion": confusion, "device": "cpu", "node": "n"}
        )


def measure(work: Path, trials: int, epochs: int) -> dict:
    """One Tune run of `trials` no-op trials x `epochs` results; the driver's cost per result."""
    cpu = max(0.01, (os.cpu_count() or 1) / CONCURRENT)
    study = driver_study(trials, cpu)
    run = work / f"driver-{trials}x{epochs}"
    callback = TimedCallback(
        ResultsStore(
            run / "results", hyperparameter_names(study), study.metric.name, study.metric.mode
        ),
        study,
    )
    tuner = tune.Tuner(
        tune.with_resources(
            tune.with_parameters(noop_trial, epochs=epochs), {"cpu": cpu, "gpu": 0}
        ),
        param_space=tune_param_space(study),
        tune_config=tune_config(study),
        run_config=tune.RunConfig(
            name="tune", storage_path=str(run), callbacks=[callback], verbose=0
        ),
    )
    started = time.perf_counter()
    grid = tuner.fit()
    wall = time.perf_counter() - started
    errors = [str(r.error) for r in grid if r.error]
    if errors:
        raise RuntimeError(f"driver benchmark trial failed: {errors[0]}")
    bench = callback.bench
    n = bench["results"]
    if n != trials * epochs or bench["loop_started"] is None:
        raise RuntimeError(f"the timed callback saw {n} results of {trials * epochs}")
    loop = bench["loop_ended"] - bench["loop_started"]
    return {
        "trials": trials,
        "epochs": epochs,
        "results": n,
        "driver_s": bench["busy_s"],
        "loop_s": loop,
        "fit_s": wall,
        "driver_ms_per_result": 1000 * bench["busy_s"] / n,
        "ray_ms_per_result": 1000 * (loop - bench["busy_s"]) / n,
        "by_method": {k: {"calls": c, "s": t} for k, (c, t) in callback.by_method.items()},
        "concurrent": CONCURRENT,
        "cpu_per_trial": cpu,
    }


def measure_sizes(work: Path, sizes: tuple[int, int], epochs: int) -> tuple[dict, dict]:
    """The keys for a small and a large study (named _64 and _1024 whatever the sizes: the
    quick run uses smaller ones), and every run's details."""
    small, large = (measure(work, n, epochs) for n in sizes)
    keys = {
        "driver_ms_per_result_64": small["driver_ms_per_result"],
        "driver_ms_per_result_1024": large["driver_ms_per_result"],
        "driver_cost_growth": large["driver_ms_per_result"] / small["driver_ms_per_result"],
        "ray_ms_per_result_64": small["ray_ms_per_result"],
        "ray_ms_per_result_1024": large["ray_ms_per_result"],
    }
    return keys, {"small": small, "large": large}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m study.bench_driver", description=__doc__)
    p.add_argument("--work", type=Path, required=True, help="folder for Ray's and our results")
    p.add_argument("--trials", type=int, nargs=2, default=(64, 1024), metavar=("SMALL", "LARGE"))
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--json", type=Path, help="where to write the numbers (default: print)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    import ray

    from study.run.tuner import start_ray

    args = parse_args(argv)
    os.environ["RAY_ADDRESS"] = "local"  # a Ray of our own, never a cluster left running
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    start_ray(None, "127.0.0.1")
    try:
        keys, details = measure_sizes(args.work, tuple(args.trials), args.epochs)
    finally:
        ray.shutdown()
    text = json.dumps({**keys, "details": details}, indent=1)
    if args.json:
        args.json.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    from retina.cli import run_main

    raise SystemExit(run_main(main))
