"""Learning-rate schedules per batch: the curve, its validation, and resuming on the same curve."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
import torch

from retina.errors import RetinaError
from retina.loader import BatchLoader
from retina.schedules import build_schedule, current_lr
from retina.training import Training, build_training, setup_process

CPU = torch.device("cpu")
LR, EPOCHS = 0.05, 3


def loader() -> BatchLoader:
    """24 tiny images in batches of 8: 3 optimizer steps per epoch."""
    images = np.random.default_rng(0).integers(0, 256, size=(24, 3, 16, 16), dtype=np.uint8)
    return BatchLoader(images, np.arange(24) % 5, np.arange(24), 8, CPU, train=True, seed=0)


def run(batches: BatchLoader, schedule: str | None, warmup: int = 1) -> Training:
    setup_process(CPU, seed=0)
    r = build_training(
        "resnet18", False, optimizer="sgd", lr=LR, weight_decay=1e-4, momentum=0.9,
        class_weighted=False, train_counts=[5, 5, 5, 5, 4], device=CPU,
    )  # fmt: skip
    if schedule is not None:
        r.scheduler = build_schedule(
            schedule, r.optimizer, epochs=EPOCHS, steps_per_epoch=len(batches),
            warmup_epochs=warmup,
        )  # fmt: skip
    return r


def train_epochs(r: Training, batches: BatchLoader, epochs, lrs: list[float]) -> None:
    """Train `epochs`, appending the lr each optimizer step uses (read as its batch is drawn)."""

    def recorded():
        for batch in batches:
            lrs.append(current_lr(r.optimizer))
            yield batch

    for epoch in epochs:
        batches.set_epoch(epoch)
        r.train_epoch(recorded())


def test_cosine_warms_up_linearly_then_decays_to_about_zero():
    batches = loader()
    lrs: list[float] = []
    train_epochs(run(batches, "cosine", warmup=1), batches, range(1, EPOCHS + 1), lrs)
    assert len(lrs) == 9  # 3 epochs x 3 batches
    np.testing.assert_allclose(lrs[:3], [LR / 3, 2 * LR / 3, LR])  # warm-up over epoch 1
    decay = lrs[3:]  # cosine over the 6 remaining steps: from the base lr down
    expected = [LR * 0.5 * (1 + math.cos(math.pi * s / 6)) for s in range(6)]
    np.testing.assert_allclose(decay, expected)
    assert all(a > b for a, b in zip(decay, decay[1:], strict=False))
    assert decay[-1] < 0.1 * LR  # the last step is close to zero


def test_constant_without_warmup_is_the_unscheduled_run():
    batches = loader()
    plain, scheduled = run(batches, None), run(batches, "constant", warmup=0)
    lrs: list[float] = []
    train_epochs(scheduled, batches, (1, 2), lrs)
    train_epochs(plain, batches, (1, 2), [])
    assert lrs == [LR] * 6
    for a, b in zip(plain.model.state_dict().values(), scheduled.model.state_dict().values(), strict=True):  # fmt: skip
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_constant_with_warmup_holds_the_base_lr_after_it():
    batches = loader()
    lrs: list[float] = []
    train_epochs(run(batches, "constant", warmup=1), batches, range(1, EPOCHS + 1), lrs)
    np.testing.assert_allclose(lrs, [LR / 3, 2 * LR / 3] + [LR] * 7)


def test_resumed_run_continues_the_same_lr_per_step():
    schedule = "cosine"  # warm-up in epoch 1, then the decay: the resume crosses the join
    batches = loader()
    straight: list[float] = []
    uninterrupted = run(batches, schedule)
    train_epochs(uninterrupted, batches, range(1, EPOCHS + 1), straight)

    first: list[float] = []
    stopped = run(batches, schedule)
    train_epochs(stopped, batches, (1,), first)  # k = 1 epoch, then the process "dies"
    buffer = io.BytesIO()  # through torch.save/load, as a checkpoint file would be
    torch.save(stopped.state(), buffer)
    buffer.seek(0)
    resumed = run(batches, schedule)  # fresh objects, as in a new process
    resumed.load_state(torch.load(buffer, weights_only=True))
    rest: list[float] = []
    train_epochs(resumed, batches, range(2, EPOCHS + 1), rest)

    assert "scheduler" in stopped.state()
    assert first + rest == straight  # the same lr at every one of the 9 steps, exactly
    for a, b in zip(uninterrupted.model.state_dict().values(), resumed.model.state_dict().values(), strict=True):  # fmt: skip
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_unknown_schedule_and_too_long_warmup_are_user_errors():
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
    with pytest.raises(
        RetinaError, match="unknown schedule 'step'; choose one of: constant, cosine"
    ):
        build_schedule("step", optimizer, epochs=3, steps_per_epoch=2)
    with pytest.raises(RetinaError, match="warmup_epochs 3 .* use at most 2"):
        build_schedule("cosine", optimizer, epochs=3, steps_per_epoch=2, warmup_epochs=3)
