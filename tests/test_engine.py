"""train_one_epoch / evaluate on real tensors and real torch models; optimizers and losses."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from retina.engine import (
    NonFiniteLoss,
    autocast_dtype,
    build_loss,
    build_optimizer,
    evaluate,
    seed_everything,
    train_one_epoch,
)
from retina.errors import RetinaError
from retina.models import build_model

CPU = torch.device("cpu")


def _batches(n_batches: int, batch_size: int, size: int, seed: int) -> list[tuple]:
    """A loader-like iterable: (x float32 [B,3,S,S], y int64 [B]) where grade = brightness level."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n_batches):
        y = torch.randint(0, 5, (batch_size,), generator=g)
        x = (
            y.float().view(-1, 1, 1, 1) / 2
            - 1
            + 0.3 * torch.randn(batch_size, 3, size, size, generator=g)
        )
        out.append((x, y))
    return out


def _tiny_net() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 5),
    )


def test_build_optimizer_by_name():
    params = list(_tiny_net().parameters())
    sgd = build_optimizer("sgd", params, lr=0.1, weight_decay=5e-4, momentum=0.8)
    assert isinstance(sgd, torch.optim.SGD)
    group = sgd.param_groups[0]
    assert (group["lr"], group["weight_decay"], group["momentum"]) == (0.1, 5e-4, 0.8)
    adamw = build_optimizer("adamw", params, lr=1e-3, weight_decay=0.01)
    assert isinstance(adamw, torch.optim.AdamW)
    assert adamw.param_groups[0]["weight_decay"] == 0.01


def test_unknown_optimizer_and_bad_lr_are_user_errors():
    params = list(_tiny_net().parameters())
    with pytest.raises(RetinaError, match="adam.*choose one of: sgd, adamw"):
        build_optimizer("adam", params, lr=0.1, weight_decay=0.0)
    with pytest.raises(RetinaError, match="learning rate"):
        build_optimizer("sgd", params, lr=0.0, weight_decay=0.0)


def test_build_loss_plain_and_inverse_frequency():
    assert build_loss(False, [10, 1, 1, 1, 1]).weight is None
    counts = [70, 10, 15, 3, 2]
    weights = build_loss(True, counts).weight
    expected = torch.tensor([100 / (5 * c) for c in counts])
    torch.testing.assert_close(weights, expected)
    # The weights average to 1 over the training images: the loss keeps its scale.
    assert float((weights * torch.tensor(counts, dtype=torch.float32)).sum()) == pytest.approx(100)
    with pytest.raises(RetinaError, match="class-weighted"):
        build_loss(True, [10, 0, 3, 1, 1])


def test_autocast_is_off_on_cpu():
    assert autocast_dtype(CPU) is None
    assert autocast_dtype("cpu") is None


def test_training_learns_an_easy_task_and_metrics_add_up():
    seed_everything(0)
    model = _tiny_net()
    optimizer = build_optimizer("adamw", model.parameters(), lr=0.05, weight_decay=0.0)
    loss_fn = build_loss(False)
    train = _batches(8, 16, 8, seed=1)
    val = _batches(4, 16, 8, seed=2)
    before = evaluate(model, val, loss_fn, CPU)
    first = train_one_epoch(model, train, optimizer, loss_fn, CPU)
    for _ in range(5):
        last = train_one_epoch(model, train, optimizer, loss_fn, CPU)
    after = evaluate(model, val, loss_fn, CPU)
    assert first.n_images == 128 and int(first.confusion.sum()) == 128
    assert after.n_images == 64 and after.confusion.shape == (5, 5)
    assert last.loss < first.loss
    assert after.loss < before.loss
    assert after.kappa > 0.8  # grade is the brightness: near-perfect ordinal agreement
    assert after.images_per_s > 0 and after.seconds > 0


def test_evaluate_changes_nothing_and_reports_nan_instead_of_raising():
    seed_everything(0)
    model = _tiny_net()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    batches = _batches(2, 4, 8, seed=3)
    batches[1][0][0, 0, 0, 0] = float("nan")
    m = evaluate(model, batches, build_loss(False), CPU)
    assert np.isnan(m.loss) and m.n_images == 8
    assert not model.training
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k])


def test_nan_input_raises_non_finite_loss_with_the_batch():
    seed_everything(0)
    model = _tiny_net()
    optimizer = build_optimizer("sgd", model.parameters(), lr=0.01, weight_decay=0.0)
    batches = _batches(4, 4, 8, seed=4)
    batches[2][0][1] = float("nan")  # the third batch carries a NaN image
    with pytest.raises(NonFiniteLoss, match=r"^loss is nan at batch 3$"):
        train_one_epoch(model, batches, optimizer, build_loss(False), CPU)


def test_absurd_learning_rate_diverges_with_non_finite_loss():
    seed_everything(0)
    model = _tiny_net()
    optimizer = build_optimizer("sgd", model.parameters(), lr=1e30, weight_decay=0.0)
    with pytest.raises(NonFiniteLoss, match=r"^loss is (nan|inf) at batch \d+$"):
        train_one_epoch(model, _batches(10, 8, 8, seed=5), optimizer, build_loss(False), CPU)


def _seeded_run(seed: int) -> tuple[list[dict], dict]:
    seed_everything(seed)
    model = build_model("resnet18", pretrained=False)
    optimizer = build_optimizer("sgd", model.parameters(), lr=0.05, weight_decay=5e-4)
    loss_fn = build_loss(True, [40, 10, 10, 10, 10])
    # Shuffled batch order from a seeded generator, as a loader's set_epoch would.
    data = _batches(4, 8, 32, seed=6)
    history = []
    for epoch in range(2):
        order = torch.randperm(len(data), generator=torch.Generator().manual_seed(epoch))
        tm = train_one_epoch(model, [data[i] for i in order], optimizer, loss_fn, CPU)
        vm = evaluate(model, data[:2], loss_fn, CPU)
        history.append({**tm.as_dict("train"), **vm.as_dict("val"), "conf": tm.confusion.tolist()})
    for row in history:  # wall-clock rates differ between runs by nature
        row.pop("train_images_per_s")
        row.pop("val_images_per_s")
    return history, model.state_dict()


def test_training_is_deterministic_on_cpu_for_a_seed():
    h1, s1 = _seeded_run(7)
    h2, s2 = _seeded_run(7)
    np.testing.assert_equal(h1, h2)  # NaN-aware equality of every metric
    for key in s1:
        assert torch.equal(s1[key], s2[key]), key
    h3, _ = _seeded_run(8)
    assert [r["train_loss"] for r in h3] != [r["train_loss"] for r in h1]  # the seed matters


def _tiny_regressor() -> nn.Module:
    net = _tiny_net()
    net[-1] = nn.Linear(8, 1)
    return net


def test_a_regress_head_learns_the_grade_and_is_graded_by_its_thresholds():
    seed_everything(0)
    model = _tiny_regressor()
    loss_fn = build_loss(False, head="regress")
    opt = build_optimizer("adamw", model.parameters(), lr=3e-2, weight_decay=0.0)
    train = _batches(20, 16, 8, seed=1)
    val = _batches(4, 16, 8, seed=2)
    for _ in range(4):
        metrics = train_one_epoch(model, train, opt, loss_fn, CPU)
    assert metrics.n_images == 320 and np.isfinite(metrics.loss)
    kept = evaluate(model, val, loss_fn, CPU, keep_probabilities=True)
    assert kept.probabilities is None and kept.scores.shape == (64,) and kept.kappa > 0.8
    # The grades are the scores cut at 0.5/1.5/2.5/3.5: the confusion matrix counts them.
    labels = torch.cat([y for _, y in val]).numpy()
    assert np.array_equal(kept.grades, np.digitize(kept.scores, [0.5, 1.5, 2.5, 3.5]))
    assert kept.accuracy == pytest.approx((kept.grades == labels).mean())
    # Other cuts give other grades; all-high cuts put every image in grade 0.
    low = evaluate(model, val, loss_fn, CPU, keep_probabilities=True, thresholds=[9, 10, 11, 12])
    assert (low.grades == 0).all() and low.confusion[:, 0].sum() == 64
    assert low.loss == pytest.approx(kept.loss)  # the loss does not depend on the cuts


def test_the_regression_loss_is_smooth_l1_on_the_grade_and_weights_grades():
    outputs = torch.tensor([[0.0], [2.5], [4.0]])
    y = torch.tensor([0, 1, 4])
    plain = build_loss(False, head="regress")(outputs, y)
    assert plain.item() == pytest.approx((0 + 1.0 + 0) / 3)  # |1.5| - 0.5 = 1.0, others 0
    weighted = build_loss(True, [10, 10, 10, 10, 10], head="regress")(outputs, y)
    assert weighted.item() == pytest.approx(plain.item())  # equal counts: equal weights
    with pytest.raises(RetinaError, match="unknown head"):
        build_loss(False, head="ordinal")


def test_a_classify_evaluation_keeps_expected_grades_as_scores():
    seed_everything(0)
    model = _tiny_net()
    val = _batches(2, 8, 8, seed=2)
    kept = evaluate(model, val, build_loss(False), CPU, keep_probabilities=True)
    assert kept.scores == pytest.approx(kept.probabilities @ np.arange(5), abs=1e-5)
    assert np.array_equal(kept.grades, kept.probabilities.argmax(axis=1))
