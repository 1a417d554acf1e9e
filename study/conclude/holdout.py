"""Held-out test of the best trials, once, after the search has chosen them on val.

The best K trials by the study metric on val are re-evaluated from the checkpoint of their
best epoch on the test split. The test split never picks anything: it is read here only.
Every test averages the study's `tta` dihedral views (`retina.tta`), as `retina.predict` does
by default with the exported model; with more than one view the test is also run on the image
as is, so the study shows what the views bring (`test_kappa_1view`).
Each tested trial's line says its test per image, and per patient (both eyes, `retina.patients`;
summary.json's `patients` key states the same with intervals).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pyarrow.fs as pafs
import torch

from retina.engine import autocast_dtype, build_loss, evaluate
from retina.heads import head_outputs
from retina.metrics import EpochMetrics
from retina.models import build_model
from retina.patients import grading_view
from retina.prepare import PreparedData
from retina.tta import with_views
from study.define.schema import StudyConfig
from study.record.layout import CHECKPOINT_FILE
from study.record.predictions import SplitPredictions, split_predictions
from study.record.ranking import best_trial_ids
from study.record.results import ResultsStore
from study.record.storage import checkpoint_dirs, is_dir, local_copy


def top_trials(store: ResultsStore, k: int) -> list[tuple[str, int]]:
    """(trial id, best epoch) of the best `k` search trials that finished cleanly, best first."""
    trials = store.trials_frame()
    trials = trials[trials["stage"] == "search"]  # confirm reruns are tested by their stage
    best = store.best_epochs()
    ids = best_trial_ids(trials, f"best_{store.metric}", store.mode, k)
    return [(trial_id, int(best[trial_id]["epoch"])) for trial_id in ids]


def find_checkpoint(result, epoch: int) -> Path | None:
    """The checkpoint folder that a Ray `Result` kept for `epoch`, if any: a local folder,
    downloaded first where the study's storage is a bucket (`study.record.storage`)."""
    for checkpoint, metrics in result.best_checkpoints or []:
        # Ray lists every checkpoint it registered; the driver deleted the superseded ones.
        fs = checkpoint.filesystem or pafs.LocalFileSystem()
        if int(metrics.get("epoch", -1)) == epoch and is_dir(fs, checkpoint.path):
            return local_copy(fs, checkpoint.path)
    # A trial that finished before the driver was killed keeps Ray's older view of its
    # checkpoints after --resume; the checkpoint folders on disk still hold every epoch kept.
    if not result.path:
        return None
    return checkpoint_on_disk(result.path, epoch, getattr(result, "filesystem", None))


def checkpoint_on_disk(trial_dir, epoch: int, fs: pafs.FileSystem | None = None) -> Path | None:
    """The folder `trial_dir/checkpoint_*` (in `fs`, default the local disk) whose checkpoint
    is of `epoch`, if one was kept, as a local folder."""
    fs = fs or pafs.LocalFileSystem()
    for path in sorted(checkpoint_dirs(fs, str(trial_dir)), reverse=True):
        try:
            folder = local_copy(fs, path)
            state = torch.load(folder / CHECKPOINT_FILE, map_location="cpu", weights_only=True)
        except Exception:  # noqa: BLE001 - a half-written folder from the kill: skip it
            continue
        if int(state.get("epoch", -1)) == epoch:
            return folder
    return None


@dataclass(frozen=True)
class Tested:
    """One checkpoint's test: its epoch, the metrics over `views` views (with per-image
    `.probabilities`, `.scores`, `.grades`) and the metrics of the image as is."""

    epoch: int
    metrics: EpochMetrics
    one_view: EpochMetrics  # `metrics` itself when views is 1
    views: int

    def record(self) -> dict[str, float]:
        """The test metrics as `ResultsStore.record_test` takes them (`test_*`)."""
        return self.metrics.as_dict("test") | {"test_kappa_1view": self.one_view.kappa}

    def line(self) -> str:
        text = f"test acc {self.metrics.accuracy:.3f}, kappa {self.metrics.kappa:.3f}"
        if self.views > 1:
            text += f" ({self.views} views; 1 view: kappa {self.one_view.kappa:.3f})"
        return text


def evaluate_on_test(
    checkpoint_dir: Path, data: PreparedData, device: torch.device, views: int = 1,
    batch_size: int = 64, tested_on: PreparedData | None = None,
) -> Tested:  # fmt: skip
    """The checkpoint's test over `views` dihedral views (`retina.tta`), and over one. A
    regress head is graded with its cuts fitted on val at that epoch. `tested_on`: an
    external set (`retina.external`) tested instead of `data`'s test split, as it is."""
    state = torch.load(checkpoint_dir / CHECKPOINT_FILE, map_location="cpu", weights_only=True)
    trial = state["config"]["trial"]
    counts = data.class_counts()["train"]  # the loss the model trained with, whatever is tested
    data = (tested_on or data).at_size(trial.get("image_size", data.image_size))  # its size
    head = trial.get("head", "classify")  # a checkpoint from before heads: classify
    # The weights come from the checkpoint: the ImageNet file is not needed here.
    model = build_model(trial["arch"], pretrained=False, num_classes=head_outputs(head))
    model.load_state_dict(state["model"])
    model.to(device)
    loss_fn = build_loss(trial["class_weighted"], counts, head).to(device)

    def test(network: torch.nn.Module, keep: bool) -> EpochMetrics:
        loader = data.loader("test", batch_size, device, train=False)
        return evaluate(
            network, loader, loss_fn, device, amp_dtype=autocast_dtype(device),
            keep_probabilities=keep, thresholds=state.get("thresholds"),
        )  # fmt: skip

    metrics = test(with_views(model, views), keep=True)
    # 1/views of the cost again: the per-image rows are those of the views (what predict gives)
    one_view = metrics if views == 1 else test(model, keep=False)
    return Tested(int(state["epoch"]), metrics, one_view, views)


def predictions_on_test(data: PreparedData, metrics) -> SplitPredictions:
    """The per-image rows of a test evaluation (the test loader keeps the split's order)."""
    return split_predictions("test", data.split.indices("test"), metrics)


def patient_line(data: PreparedData, test: SplitPredictions) -> str:
    """The held-out test per patient: both eyes' max grade, referable if either eye >= 2."""
    if not data.image_ids:  # a PreparedData built without the manifest's names
        return "no image names: no patient-level view"
    view = grading_view(
        [data.image_ids[i] for i in test.index], data.labels[test.index], test.predicted
    )
    if not view.n_patients:
        return "no test image name pairs eyes (<patient>_left/_right): no patient-level view"
    return view.sentence()


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
        test = evaluate_on_test(folder, data, device, study.tta)
        store.record_test(trial_id, test.epoch, test.record(), test.metrics.confusion.reshape(-1))
        tested[trial_id] = predictions_on_test(data, test.metrics)
        lines.append(f"{trial_id} (epoch {test.epoch}): {test.line()}")
        lines.append(f"  per patient: {patient_line(data, tested[trial_id])}")
    store.flush()
    return lines, tested
