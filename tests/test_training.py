"""A run's objects and their checkpoint state: resuming continues exactly where it stopped."""

from __future__ import annotations

import io

import numpy as np
import torch

from retina.loader import BatchLoader
from retina.training import build_training, setup_process

CPU = torch.device("cpu")


def loader(seed: int = 0) -> BatchLoader:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(24, 3, 16, 16), dtype=np.uint8)
    labels = np.arange(24) % 5
    return BatchLoader(images, labels, np.arange(24), 8, CPU, train=True, seed=seed)


def run():
    setup_process(CPU, seed=0)
    return build_training(
        "resnet18", False, optimizer="sgd", lr=0.05, weight_decay=1e-4, momentum=0.9,
        class_weighted=True, train_counts=[5, 5, 5, 5, 4], device=CPU,
    )  # fmt: skip


def test_resuming_from_state_trains_the_next_epoch_identically():
    batches = loader()
    straight = run()
    for epoch in (1, 2):
        batches.set_epoch(epoch)
        last = straight.train_epoch(batches)

    first = run()
    batches.set_epoch(1)
    first.train_epoch(batches)
    buffer = io.BytesIO()  # through torch.save/load, as a checkpoint file would be
    torch.save(first.state(), buffer)
    buffer.seek(0)
    resumed = run()  # a new process would build fresh objects, then load the checkpoint
    resumed.load_state(torch.load(buffer, weights_only=True))
    batches.set_epoch(2)
    again = resumed.train_epoch(batches)

    assert again.loss == last.loss
    for a, b in zip(
        straight.model.state_dict().values(), resumed.model.state_dict().values(), strict=True
    ):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_state_holds_what_training_needs_and_no_scaler_on_cpu():
    r = run()
    assert r.scaler is None and r.amp_dtype is None and r.step_model is r.model
    assert set(r.state()) == {"model", "optimizer"}
    assert r.model.fc.out_features == 5
    assert r.loss_fn.weight is not None  # class-weighted cross-entropy
