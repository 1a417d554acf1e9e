"""A small real Tune experiment with the sweep's run config, for the checkpoint retention tests.

    python -m tests.helpers.retention_driver WORK [--trials 2] [--epochs 8] [--resume]

Tiny trials (no model: a JSON state per checkpoint, `EPOCH_S` per epoch) scored as the
trainable scores them (`BestSoFar`, `KEEP_SCORE`), run by `study.run.experiment.run_config`
(the results callback and its retention, the sweep's checkpoint config) or continued by
`study.run.experiment.restore`. Each trial appends where it started to WORK/starts.jsonl; at
the end WORK/summary.json says each trial's status and which checkpoint epochs are on disk.
Set TUNE_GLOBAL_CHECKPOINT_S to make Tune snapshot more often than every 10 s.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

from ray import tune

from study.define.schema import hyperparameter_names, load_study
from study.define.space import tune_config, tune_param_space
from study.record.layout import TUNE_DIR
from study.record.results import ResultsStore
from study.run.experiment import callbacks_for, fit, restore, run_config
from study.run.keep import KEEP_SCORE, BestSoFar

DEMO_SPACE = Path(__file__).resolve().parents[2] / "search_spaces" / "demo.yaml"
EPOCH_S = 0.3
# val kappa by epoch: epoch 2 is the best until epoch 7 beats it.
KAPPAS = [0.1, 0.6, 0.2, 0.3, 0.2, 0.1, 0.8, 0.4, 0.3, 0.2, 0.1, 0.1]
STATE = "state.json"


def tiny_trial(config: dict, epochs: int, starts: str) -> None:
    best, first = BestSoFar("val_kappa", "max"), 1
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:  # a missing folder fails here: Ray cannot restore the trial
        with checkpoint.as_directory() as folder:
            state = json.loads(Path(folder, STATE).read_text())
        best, first = BestSoFar("val_kappa", "max", state["best"]), state["epoch"] + 1
    trial_id = tune.get_context().get_trial_id()
    with open(starts, "a") as fh:
        fh.write(json.dumps({"trial": trial_id, "first": first}) + "\n")
    for epoch in range(first, epochs + 1):
        time.sleep(EPOCH_S)
        metrics = {"epoch": epoch, "val_kappa": KAPPAS[epoch - 1], "val_loss": 1.0}
        metrics[KEEP_SCORE] = best.update(metrics)
        with tempfile.TemporaryDirectory() as folder:
            Path(folder, STATE).write_text(json.dumps({"epoch": epoch, "best": best.state()}))
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(folder))


def checkpoint_epochs(experiment: Path) -> dict[str, list[int]]:
    """Trial id -> the epochs of its checkpoint folders on disk."""
    out: dict[str, list[int]] = {}
    for trial_dir in sorted(p for p in experiment.iterdir() if p.is_dir()):
        states = [json.loads((c / STATE).read_text()) for c in trial_dir.glob("checkpoint_*")]
        if (trial_dir / "result.json").exists():
            trial_id = json.loads((trial_dir / "result.json").read_text().splitlines()[0])
            out[trial_id["trial_id"]] = sorted(s["epoch"] for s in states)
    return out


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("work", type=Path)
    p.add_argument("--trials", type=int, default=2)
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--resume", action="store_true")
    args = p.parse_args()
    study = load_study(DEMO_SPACE, [
        "name=retention", "space.arch=resnet18", "space.pretrained=false", "space.lr=0.01",
        "space.batch_size=16", f"space.epochs={args.epochs}", "space.weight_decay=0.0001",
        "search.algorithm=random", "scheduler.name=none", f"num_samples={args.trials}",
        f"max_concurrent={args.trials}", "resources.cpu=0.1", "resources.gpu=0",
    ])  # fmt: skip
    folder = args.work / "results"
    store = ResultsStore(folder, hyperparameter_names(study), "val_kappa", "max")
    store.load()
    trainable = tune.with_resources(
        tune.with_parameters(
            tiny_trial, epochs=args.epochs, starts=str(args.work / "starts.jsonl")
        ),
        {"cpu": 0.1, "gpu": 0},
    )
    import ray

    from study.run.tuner import start_ray

    os.environ["RAY_ADDRESS"] = "local"
    start_ray(None, "127.0.0.1")
    try:
        tuner = None
        if args.resume:
            callbacks = callbacks_for(study, store, TUNE_DIR, "search")
            tuner = restore(folder / TUNE_DIR, trainable, tune_param_space(study), callbacks)
        if tuner is None:
            tuner = tune.Tuner(
                trainable,
                param_space=tune_param_space(study),
                tune_config=tune_config(study),
                run_config=run_config(study, store, TUNE_DIR, "search"),
            )
        grid = fit(tuner, folder)
    finally:
        ray.shutdown()
    trials = store.trials_frame()
    summary = {
        "errors": [str(r.error) for r in grid if r.error],
        "status": dict(zip(trials["trial_id"], trials["status"], strict=True)),
        "epochs_run": dict(zip(trials["trial_id"], trials["epochs_run"].tolist(), strict=True)),
        "checkpoints": checkpoint_epochs(folder / TUNE_DIR),
    }
    (args.work / "summary.json").write_text(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
