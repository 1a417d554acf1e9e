"""Held-out test of the best trials, once, after the search has chosen them on val.

The best K trials by the study metric on val are re-evaluated from the checkpoint of their
best epoch on the test split. The test split never picks anything: it is read here only.
"""

from __future__ import annotations

from pathlib import Path

import torch

from retina.engine import autocast_dtype, build_loss, evaluate
from retina.heads import head_outputs
from retina.models import build_model
from retina.prepare import PreparedData
from study.define.schema import StudyConfig
from study.record.layout import CHECKPOINT_FILE
from study.record.predictions import SplitPredictions, split_predictions
from study.record.ranking import best_trial_ids
from study.record.results import ResultsStore


def top_trials(store: ResultsStore, k: int) -> list[tuple[str, int]]:
    """(trial id, best epoch) of the best `k` search trials that finished cleanly, best first."""
    trials = store.trials_frame()
    trials = trials[trials["stage"] == "search"]  # confirm reruns are tested by their stage
    best = store.best_epochs()
    ids = best_trial_ids(trials, f"best_{store.metric}", store.mode, k)
    return [(trial_id, int(best[trial_id]["epoch"])) for trial_id in ids]


def find_checkpoint(result, epoch: int) -> Path | None:
    """The checkpoint folder that a Ray `Result` kept for `epoch`, if any."""
    for checkpoint, metrics in result.best_checkpoints or []:
        # Ray lists every checkpoint it registered; the driver deleted the superseded ones.
        if int(metrics.get("epoch", -1)) == epoch and Path(checkpoint.path).is_dir():
            return Path(checkpoint.path)
    # A trial that finished before the driver was killed keeps Ray's older view of its
    # checkpoints after --resume; the checkpoint folders on disk still hold every epoch kept.
    return checkpoint_on_disk(Path(result.path), epoch) if result.path else None


def checkpoint_on_disk(trial_dir: Path, epoch: int) -> Path | None:
    """The folder `trial_dir/checkpoint_*` whose checkpoint is of `epoch`, if one was kept."""
    for folder in sorted(trial_dir.glob("checkpoint_*"), reverse=True):
        try:
            state = torch.load(folder / CHECKPOINT_FILE, map_location="cpu", weights_only=True)
        except Exception:  # noqa: BLE001 - a half-written folder from the kill: skip it
            continue
        if int(state.get("epoch", -1)) == epoch:
            return folder
    return None


def evaluate_on_test(
    checkpoint_dir: Path, data: PreparedData, device: torch.device, batch_size: int = 64
):
    """(the checkpoint's epoch, its test metrics with per-image `.probabilities`, `.scores`
    and `.grades`). A regress head is graded with its cuts fitted on val at that epoch."""
    state = torch.load(checkpoint_dir / CHECKPOINT_FILE, map_location="cpu", weights_only=True)
    trial = state["config"]["trial"]
    head = trial.get("head", "classify")  # a checkpoint from before heads: classify
    # The weights come from the checkpoint: the ImageNet file is not needed here.
    model = build_model(trial["arch"], pretrained=False, num_classes=head_outputs(head))
    model.load_state_dict(state["model"])
    model.to(device)
    counts = data.class_counts()["train"]
    loss_fn = build_loss(trial["class_weighted"], counts, head).to(device)
    loader = data.loader("test", batch_size, device, train=False)
    return state["epoch"], evaluate(
        model, loader, loss_fn, device, amp_dtype=autocast_dtype(device), keep_probabilities=True,
        thresholds=state.get("thresholds"),
    )  # fmt: skip


def predictions_on_test(data: PreparedData, metrics) -> SplitPredictions:
    """The per-image rows of a test evaluation (the test loader keeps the split's order)."""
    return split_predictions("test", data.split.indices("test"), metrics)


def evaluate_best_trials(
    store: ResultsStore, results_by_id: dict, data: PreparedData, study: StudyConfig
) -> tuple[list[str], dict[str, SplitPredictions]]:
    """Evaluate the best `study.test_top_k` trials on test.

    Returns the messages to print and the per-image test predictions by trial id.
    """
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    lines, tested = [], {}
    for trial_id, epoch in top_trials(store, study.test_top_k):
        result = results_by_id.get(trial_id)
        folder = find_checkpoint(result, epoch) if result is not None else None
        if folder is None:
            lines.append(f"{trial_id}: no checkpoint of epoch {epoch} kept; not tested")
            continue
        ckpt_epoch, metrics = evaluate_on_test(folder, data, device)
        store.record_test(
            trial_id, ckpt_epoch, metrics.as_dict("test"), metrics.confusion.reshape(-1)
        )
        tested[trial_id] = predictions_on_test(data, metrics)
        lines.append(
            f"{trial_id} (epoch {ckpt_epoch}): test acc {metrics.accuracy:.3f}, kappa {metrics.kappa:.3f}"
        )
    store.flush()
    return lines, tested
