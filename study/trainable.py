"""The Ray Tune trainable: thin glue from a trial's config to the retina core.

All training logic lives in `retina.engine`; this file builds the objects for one trial,
resumes from `tune.get_checkpoint()`, and reports each epoch with a checkpoint. The data
(`PreparedData`: cache path and the one split) arrives through `tune.with_parameters`, so no
trial decodes images or re-splits the data.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq
import ray
import torch
from ray import tune

from retina.engine import (
    NonFiniteLoss,
    autocast_dtype,
    build_loss,
    build_optimizer,
    evaluate,
    seed_everything,
    train_one_epoch,
)
from retina.models import build_model
from retina.prepare import PreparedData
from study.schema import StudyConfig, resolve_trial_config, study_to_dict

CHECKPOINT_FILE = "checkpoint.pt"


def trial_device() -> torch.device:
    # Ray sets CUDA_VISIBLE_DEVICES to the trial's share; no GPU assigned means CPU.
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def finished_before(results: Path | None, trial_id: str) -> bool:
    """Whether `results/trials.parquet` already records this trial as finished.

    Ray snapshots its experiment state every ~10 s; after the driver is killed, `--resume` can
    think a trial that finished is still running and restart it from an older checkpoint. The
    results folder is written when the trial finishes (its epochs first), so it knows better.
    """
    path = None if results is None else Path(results, "trials.parquet")
    if path is None or not path.exists():
        return False
    table = pq.read_table(path, columns=["trial_id", "status"]).to_pydict()
    return any(
        t == trial_id and s == "TERMINATED"
        for t, s in zip(table["trial_id"], table["status"], strict=True)
    )


def train_trial(
    config: dict, data: PreparedData, study: StudyConfig, results: Path | None = None
) -> None:
    if finished_before(results, tune.get_context().get_trial_id()):
        return  # its epochs are in the results already: nothing to run again
    hp = resolve_trial_config(study, config)
    data = data.on_this_machine()  # a node without the driver's cache builds it once
    device = trial_device()
    torch.set_num_threads(max(1, int(study.resources.cpu)))
    # Deterministic kernels on CPU; on CUDA they are slower, so cuDNN autotunes instead (as
    # retina.train does). Set per trial: a reused worker process keeps the last trial's values.
    seed_everything(study.seed, deterministic=device.type == "cpu")
    torch.backends.cudnn.benchmark = device.type == "cuda"
    model = build_model(hp["arch"], hp["pretrained"]).to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(
        hp["optimizer"], model.parameters(), hp["lr"], hp["weight_decay"], hp["momentum"]
    )
    loss_fn = build_loss(hp["class_weighted"], data.class_counts()["train"]).to(device)
    if study.compile:
        # A reused worker still holds the graphs compiled for earlier trials' models; past
        # dynamo's cache limit it would silently run this one uncompiled.
        torch.compiler.reset()
    step_model = torch.compile(model) if study.compile else model

    first_epoch = 1
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:  # a retried or resumed trial continues where it stopped
        with checkpoint.as_directory() as folder:
            state = torch.load(Path(folder, CHECKPOINT_FILE), weights_only=True)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        first_epoch = state["epoch"] + 1

    amp = autocast_dtype(device)
    # fp16 (GPUs without bf16) needs loss scaling, or small gradients underflow to zero.
    scaler = torch.amp.GradScaler("cuda") if amp == torch.float16 else None
    if scaler is not None and checkpoint is not None and "scaler" in state:
        scaler.load_state_dict(state["scaler"])
    train = data.loader("train", hp["batch_size"], device, train=True, seed=study.seed)
    val = data.loader("val", hp["batch_size"], device, train=False)
    resolved = {"trial": hp, "study": study_to_dict(study)}
    ctx = ray.get_runtime_context()  # which node ran it: nodes on one host share an IP
    node = f"{ray.util.get_node_ip_address()}/{ctx.get_node_id()[:8]}"
    for epoch in range(first_epoch, hp["epochs"] + 1):
        started = time.perf_counter()
        train.set_epoch(epoch)
        try:
            train_metrics = train_one_epoch(
                step_model, train, optimizer, loss_fn, device, amp_dtype=amp, scaler=scaler
            )
        except NonFiniteLoss as exc:  # ends this trial only; the study goes on
            tune.report(
                {
                    "epoch": epoch,
                    "failed": f"{exc} (epoch {epoch})",
                    study.metric.name: float("nan"),
                }
            )
            return
        val_metrics = evaluate(step_model, val, loss_fn, device, amp_dtype=amp)
        metrics = {
            "epoch": epoch,
            **train_metrics.as_dict("train"),
            **val_metrics.as_dict("val"),
            "val_confusion": val_metrics.confusion.reshape(-1).tolist(),
            "seconds": time.perf_counter() - started,
            "device": device.type,
            "node": node,
        }
        with tempfile.TemporaryDirectory() as folder:
            state = {
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "epoch": epoch,
                **({"scaler": scaler.state_dict()} if scaler is not None else {}),
                "config": resolved,
                "metrics": {k: v for k, v in metrics.items() if isinstance(v, int | float)},
            }
            torch.save(state, Path(folder, CHECKPOINT_FILE))
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(folder))
