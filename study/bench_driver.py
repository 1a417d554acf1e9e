"""The driver's own cost per result, at two study sizes: does it stay flat as a study grows?

    python -m study.bench_driver --work DIR [--trials 64 1024] [--epochs 30] [--json OUT]
        [--compare-ray-retention]

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
- ray_ms_per_result_ckpt_64 / _1024: the same when each result carries a tiny checkpoint
  (one small file), kept as a sweep keeps them: Ray keeps every checkpoint and our callback
  deletes the superseded ones (study.run.retention). `ray_ckpt_ratio_1024` is that over the
  no-checkpoint figure at the large size (target <= 2), `ray_ckpt_growth` large over small
  (target <= 1.5). `--compare-ray-retention` also runs the retention before issue 17 (Ray
  deleting, `num_to_keep=1`, which forces an experiment snapshot per checkpoint) for the
  record; it costs O(trials) per result, so compare with few epochs.

Trials are packed onto the cores (a fraction of a CPU each, workers reused) so 1,024 trials
x 30 epochs take a few minutes.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from ray import tune

from study.define.schema import StudyConfig, hyperparameter_names, load_study
from study.define.space import tune_config, tune_param_space
from study.record.mirror import mirror_for
from study.record.results import EPOCH_COLUMNS, ResultsStore
from study.run.callback import ParquetCallback
from study.run.experiment import storage_of
from study.run.keep import KEEP_SCORE, BestSoFar, checkpoint_config

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


def driver_study(trials: int, cpu: float, concurrent: int = CONCURRENT) -> StudyConfig:
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
            f"max_concurrent={concurrent}",
            f"resources.cpu={cpu}",
            "resources.gpu=0",
        ],
    )


# How the checkpoints of a run are kept: none saved; the sweep's way (Ray keeps all, the
# driver deletes); the way before issue 17 (Ray deletes: num_to_keep=1, a forced snapshot each).
RETENTIONS = ("none", "ours", "ray")


class RayDeletes:
    """The callback's retention switched off: Ray's `num_to_keep=1` deletes, as before."""

    deleted = 0

    def saved(self, *args, **kwargs) -> None:
        pass

    def snapshot_taken(self, generation: int) -> None:
        pass

    def snapshot_durable(self, generation: int) -> None:
        pass


def noop_trial(config: dict, epochs: int, checkpoint: bool = False) -> None:
    """Reports `epochs` results shaped like a real trial's, and does nothing else; with
    `checkpoint`, each result carries a tiny checkpoint scored as the trainable scores it."""
    metrics = {c: 0.5 for c in EPOCH_COLUMNS[2:] if c not in ("time_total_s",)}
    confusion = list(range(25))
    best = BestSoFar("val_kappa", "max")
    for epoch in range(1, epochs + 1):
        result = {"epoch": epoch, **metrics, "val_confusion": confusion, "device": "cpu"}
        result["node"] = "n"
        if not checkpoint:
            tune.report(result)
            continue
        result[KEEP_SCORE] = best.update(result)  # every epoch ties: epoch 1 stays the best
        with tempfile.TemporaryDirectory() as folder:
            Path(folder, "checkpoint.pt").write_bytes(b"x" * 1024)
            tune.report(result, checkpoint=tune.Checkpoint.from_directory(folder))


def measure(
    work: Path,
    trials: int,
    epochs: int,
    retention: str = "none",
    concurrent: int = CONCURRENT,
    storage: str | None = None,
) -> dict:
    """One Tune run of `trials` no-op trials x `epochs` results, `concurrent` at once; the
    driver's cost per result. `retention` (one of RETENTIONS): whether results carry
    checkpoints, and who deletes them. `storage`: a study's --storage URI (Ray's files there,
    the results folder mirrored there, as the sweep does; study.bench_storage)."""
    cpu = max(0.01, (os.cpu_count() or 1) / concurrent)
    study = replace(driver_study(trials, cpu, concurrent), storage=storage)
    run = work / f"driver-{trials}x{epochs}-{retention}{'-stored' if storage else ''}"
    shutil.rmtree(run, ignore_errors=True)  # a kept workspace: a fresh experiment each time
    store = ResultsStore(
        run / "results", hyperparameter_names(study), study.metric.name, study.metric.mode
    )
    mirror = mirror_for(store.folder, storage)
    if mirror is not None:  # as study.sweep wires it
        store.after_flush, store.after_epoch = mirror.push_soon, mirror.push_journal
    callback = TimedCallback(store, study)
    where = storage_of(study, store.folder)
    kept = checkpoint_config()  # the sweep's: Ray keeps all, our callback deletes
    if retention == "ray":
        callback.retention = RayDeletes()
        kept = tune.CheckpointConfig(  # study.run.keep before issue 17
            num_to_keep=1, checkpoint_score_attribute=KEEP_SCORE, checkpoint_score_order="max"
        )
    trainable = tune.with_parameters(noop_trial, epochs=epochs, checkpoint=retention != "none")
    tuner = tune.Tuner(
        tune.with_resources(trainable, {"cpu": cpu, "gpu": 0}),
        param_space=tune_param_space(study),
        tune_config=tune_config(study),
        run_config=tune.RunConfig(
            name="tune",
            storage_path=str(run) if storage is None else where.study_path(store.folder.name),
            storage_filesystem=None if storage is None else where.fs,
            callbacks=[callback],
            verbose=0,
            checkpoint_config=kept,
        ),  # fmt: skip
    )
    started = time.perf_counter()
    grid = tuner.fit()
    wall = time.perf_counter() - started
    if mirror is not None:
        mirror.push()  # the last copy, after the loop (as at a sweep's exit)
    errors = [str(r.error) for r in grid if r.error]
    if errors:
        raise RuntimeError(f"driver benchmark trial failed: {errors[0]}")
    bench = callback.bench
    n = bench["results"]
    if n != trials * epochs or bench["loop_started"] is None:
        raise RuntimeError(f"the timed callback saw {n} results of {trials * epochs}")
    loop = bench["loop_ended"] - bench["loop_started"]
    checkpoints = sorted(run.glob("tune/*/checkpoint_*"))
    return {
        "trials": trials,
        "epochs": epochs,
        "retention": retention,
        "checkpoints_left": len(checkpoints),  # each trial's best (epoch 1: all tie) and latest
        "deleted_by_driver": callback.retention.deleted,
        "results": n,
        "driver_s": bench["busy_s"],
        "loop_s": loop,
        "fit_s": wall,
        "driver_ms_per_result": 1000 * bench["busy_s"] / n,
        "ray_ms_per_result": 1000 * (loop - bench["busy_s"]) / n,
        "by_method": {k: {"calls": c, "s": t} for k, (c, t) in callback.by_method.items()},
        "concurrent": concurrent,
        "cpu_per_trial": cpu,
    }


def measure_sizes(
    work: Path,
    sizes: tuple[int, int],
    epochs: int,
    compare: bool = False,
    concurrent: int = CONCURRENT,
) -> tuple[dict, dict]:
    """The keys for a small and a large study (named _64 and _1024 whatever the sizes: the
    quick run uses smaller ones), and every run's details. Each size's runs follow each other
    (no checkpoints, then ours, then Ray's with `compare`), so load drifts alike. Each run
    starts `concurrent` trial workers (a process each, ~2 CPU-s of imports)."""
    retentions = RETENTIONS if compare else RETENTIONS[:2]
    runs = {(n, r): measure(work, n, epochs, r, concurrent) for n in sizes for r in retentions}
    small, large = (runs[(n, "none")] for n in sizes)
    small_ckpt, large_ckpt = (runs[(n, "ours")] for n in sizes)
    keys = {
        "driver_ms_per_result_64": small["driver_ms_per_result"],
        "driver_ms_per_result_1024": large["driver_ms_per_result"],
        "driver_cost_growth": large["driver_ms_per_result"] / small["driver_ms_per_result"],
        "ray_ms_per_result_64": small["ray_ms_per_result"],
        "ray_ms_per_result_1024": large["ray_ms_per_result"],
        "ray_ms_per_result_ckpt_64": small_ckpt["ray_ms_per_result"],
        "ray_ms_per_result_ckpt_1024": large_ckpt["ray_ms_per_result"],
        "ray_ckpt_ratio_1024": large_ckpt["ray_ms_per_result"] / large["ray_ms_per_result"],
        "ray_ckpt_growth": large_ckpt["ray_ms_per_result"] / small_ckpt["ray_ms_per_result"],
    }
    details = {"small": small, "large": large, "small_ckpt": small_ckpt, "large_ckpt": large_ckpt}
    if compare:
        details |= {
            "small_ckpt_ray": runs[(sizes[0], "ray")],
            "large_ckpt_ray": runs[(sizes[1], "ray")],
        }
    return keys, details


def comparison(keys: dict, details: dict) -> str:
    """Ray's ms per result without checkpoints, with ours, with Ray's old retention."""
    lines = [f"{'trials':>7} {'none':>9} {'ours':>9} {'ray (before)':>13} {'ours/none':>10}"]
    for size in ("small", "large"):
        none, ours = details[size], details[f"{size}_ckpt"]
        ray = details.get(f"{size}_ckpt_ray")
        before = f"{ray['ray_ms_per_result']:13.2f}" if ray else f"{'-':>13}"
        lines.append(
            f"{none['trials']:>7} {none['ray_ms_per_result']:9.2f} {ours['ray_ms_per_result']:9.2f} "
            f"{before} {ours['ray_ms_per_result'] / none['ray_ms_per_result']:10.2f}"
        )
    lines.append(
        f"ray_ckpt_ratio_1024 {keys['ray_ckpt_ratio_1024']:.2f} (target <= 2), "
        f"ray_ckpt_growth {keys['ray_ckpt_growth']:.2f} (target <= 1.5)"
    )
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m study.bench_driver", description=__doc__)
    p.add_argument("--work", type=Path, required=True, help="folder for Ray's and our results")
    p.add_argument("--trials", type=int, nargs=2, default=(64, 1024), metavar=("SMALL", "LARGE"))
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--json", type=Path, help="where to write the numbers (default: print)")
    p.add_argument(
        "--compare-ray-retention",
        action="store_true",
        help="also run Ray's retention of before issue 17 (slow: use few --epochs)",
    )
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    import ray

    from study.run.tuner import start_ray

    args = parse_args(argv)
    os.environ["RAY_ADDRESS"] = "local"  # a Ray of our own, never a cluster left running
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    start_ray(None, "127.0.0.1")
    try:
        keys, details = measure_sizes(
            args.work, tuple(args.trials), args.epochs, args.compare_ray_retention
        )
    finally:
        ray.shutdown()
    text = json.dumps({**keys, "details": details}, indent=1)
    if args.json:
        args.json.write_text(text)
    print(text)
    print(comparison(keys, details))
    return 0


if __name__ == "__main__":
    from retina.cli import run_command

    run_command(main)
