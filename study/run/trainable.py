"""The Ray Tune trainable: thin glue from a trial's config to the retina core.

All training logic lives in `retina.engine`; this file builds the objects for one trial,
resumes from `tune.get_checkpoint()`, and reports each epoch with a checkpoint. The data
(`PreparedData`: the cache path of every size and the one split) arrives through
`tune.with_parameters`, so no trial decodes images or re-splits the data.
"""

from __future__ import annotations

import os
import socket
import tempfile
import time
from pathlib import Path

import ray
import torch
from ray import tune

from retina.engine import NonFiniteLoss
from retina.prepare import PreparedData
from retina.schedules import build_schedule
from retina.training import build_training, setup_process
from study.define.schema import StudyConfig, resolve_trial_config, study_to_dict
from study.define.space import trial_seed, trial_values
from study.record.finished import trial_finished
from study.record.layout import CHECKPOINT_FILE
from study.record.predictions import save_split, split_predictions
from study.record.published_cache import fetch
from study.record.storage import Storage
from study.run.keep import ALREADY_RECORDED, KEEP_SCORE, BestSoFar

# For the kill tests only (tests/helpers/processes.py): "<epoch>:<file>" holds each trial
# after it reported that epoch, for as long as <file> exists, and says so in <file>.held; a
# test then kills at a known point, whatever the machine's speed. Unset in every real study.
HOLD_ENV = "RETINA_TEST_HOLD"


def hold_if_asked(epoch: int) -> None:
    spec = os.environ.get(HOLD_ENV)
    if not spec:
        return
    at, path = spec.split(":", 1)
    if int(at) != epoch:
        return
    Path(f"{path}.held").write_text(str(os.getpid()))  # which worker holds (the one to kill)
    while Path(path).exists():
        time.sleep(0.05)


def checkpoint_state(checkpoint: tune.Checkpoint | None) -> dict | None:
    if checkpoint is None:
        return None
    with checkpoint.as_directory() as folder:
        return torch.load(Path(folder, CHECKPOINT_FILE), weights_only=True)


def told_again(metric: str, state: dict | None) -> None:
    """Report a finished trial's last result (its checkpoint `state`'s) once more, marked
    ALREADY_RECORDED: Tune requires a result with the metric from every trial it (re)starts."""
    metrics = {metric: float("nan"), **(state or {}).get("metrics", {})}
    tune.report({**metrics, ALREADY_RECORDED: True})


def cache_fetcher(study: StudyConfig, results: Path | None):
    """Fetches a missing cache from the study's bucket (None: storage on a disk, where a
    node without the cache builds it from the data), saying how many bytes this node got."""
    if study.storage is None or results is None:
        return None
    storage = Storage.resolve(study.storage, Path(results).parent)
    if storage.local:
        return None

    def fetch_here(folder: Path) -> None:
        got = fetch(storage, folder)
        if got:
            print(f"cache: fetched {got} bytes of {folder.name} from {storage.uri} onto "
                  f"node {ray.get_runtime_context().get_node_id()[:8]} ({socket.gethostname()})")  # fmt: skip

    return fetch_here


def trial_device() -> torch.device:
    # Ray sets CUDA_VISIBLE_DEVICES to the trial's share; no GPU assigned means CPU.
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def train_trial(
    config: dict, data: PreparedData, study: StudyConfig, results: Path | None = None
) -> None:
    if results is not None and trial_finished(results, tune.get_context().get_trial_id()):
        # Its epochs are in the results already: nothing to run again. Tune still wants one
        # result with the metric (Ray's snapshot, no longer forced per checkpoint, may
        # predate the trial's end): its last checkpoint's, which the driver ignores.
        told_again(study.metric.name, checkpoint_state(tune.get_checkpoint()))
        return
    hp = resolve_trial_config(study, trial_values(config))
    seed = trial_seed(study, config)  # a confirm trial carries its own; search trials: study.seed
    # The cache of this trial's size (the preflight built one per size); a node without the
    # driver's cache builds that one once.
    data = data.at_size(hp["image_size"]).on_this_machine(cache_fetcher(study, results))
    device = trial_device()
    torch.set_num_threads(max(1, int(study.resources.cpu)))
    setup_process(device, seed)  # per trial: a reused worker keeps the last one's settings
    run = build_training(
        hp["arch"], hp["pretrained"], optimizer=hp["optimizer"], lr=hp["lr"],
        weight_decay=hp["weight_decay"], momentum=hp["momentum"],
        class_weighted=hp["class_weighted"], train_counts=data.class_counts()["train"],
        device=device, compile=study.compile, head=hp["head"],
    )  # fmt: skip
    train = data.loader(
        "train", hp["batch_size"], device, train=True, seed=seed, augment=hp["augment"]
    )
    # Before the checkpoint is loaded: loading restores the schedule's step on its curve.
    run.scheduler = build_schedule(
        hp["schedule"], run.optimizer, epochs=hp["epochs"], steps_per_epoch=len(train),
        warmup_epochs=hp["warmup_epochs"],
    )  # fmt: skip
    first_epoch = 1
    best = BestSoFar(study.metric.name, study.metric.mode)
    state = checkpoint_state(tune.get_checkpoint())
    if state is not None:  # a retried or resumed trial continues where it stopped
        run.load_state(state)
        first_epoch = state["epoch"] + 1
        best = BestSoFar(study.metric.name, study.metric.mode, state.get("best_so_far"))
        if first_epoch > hp["epochs"]:  # resumed at its last checkpoint: nothing to train
            told_again(study.metric.name, state)
            return
    val_index = data.split.indices("val")  # the val loader's order: the rows of the softmax
    val = data.loader("val", hp["batch_size"], device, train=False)
    val_labels = data.labels[val_index]
    resolved = {"trial": hp, "study": study_to_dict(study)}
    ctx = ray.get_runtime_context()  # which node ran it: nodes on one host share an IP
    node = f"{ray.util.get_node_ip_address()}/{ctx.get_node_id()[:8]}"
    for epoch in range(first_epoch, hp["epochs"] + 1):
        started = time.perf_counter()
        train.set_epoch(epoch)
        try:
            train_metrics = run.train_epoch(train)
        except NonFiniteLoss as exc:  # ends this trial only; the study goes on
            tune.report(
                {
                    "epoch": epoch,
                    "failed": f"{exc} (epoch {epoch})",
                    study.metric.name: float("nan"),
                }
            )
            return
        # A regress head's val metrics cut its scores at the FIXED 0.5/1.5/2.5/3.5: the search
        # ranks epochs and trials on them without fitting anything to val. Its cuts fitted on
        # val are kept with this epoch's weights, for the held-out test and the export.
        val_metrics = run.evaluate(val, keep_probabilities=True)
        thresholds = run.fit_thresholds(val_metrics, val_labels)
        metrics = {
            "epoch": epoch,
            **train_metrics.as_dict("train"),
            **val_metrics.as_dict("val"),
            "val_confusion": val_metrics.confusion.reshape(-1).tolist(),
            "seconds": time.perf_counter() - started,
            "device": device.type,
            "node": node,
        }
        metrics[KEEP_SCORE] = best.update(metrics)  # Ray keeps this epoch's checkpoint if > 0
        with tempfile.TemporaryDirectory() as folder:
            state = {
                **run.state(),
                "epoch": epoch,
                "config": resolved,
                "best_so_far": best.state(),
                "thresholds": thresholds,  # None for classify
                "metrics": {k: v for k, v in metrics.items() if isinstance(v, int | float)},
            }
            torch.save(state, Path(folder, CHECKPOINT_FILE))
            # The driver writes the best epoch's per-image val rows from this file.
            save_split(folder, split_predictions("val", val_index, val_metrics))
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(folder))
        # report() returned: the driver took this epoch and its checkpoint is registered.
        hold_if_asked(epoch)
