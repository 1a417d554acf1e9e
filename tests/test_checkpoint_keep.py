"""While a trial runs, the driver keeps exactly its latest checkpoint and its best so far by the
one ranking, whatever ties the metric and the loss have, plus what an experiment snapshot that
`--resume` may still read names (study.run.keep, study.run.retention).

Real checkpoint folders on disk, scored by the trainable's own `BestSoFar`; Ray itself keeps
every checkpoint (`num_to_keep=None`), so nothing of Ray's deletes here.
"""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from study.record.ranking import best_epoch
from study.run.keep import KEEP_SCORE, BestSoFar, checkpoint_config
from study.run.retention import Retention


def on_disk(folder) -> set[int]:
    return {int(p.name.split("_")[1]) for p in folder.glob("checkpoint_*")}


def save(folder, retention, keeper, epoch, value, loss, trial="t", metric="val_kappa"):
    """One epoch as the trainable reports it and the driver registers it; its row."""
    path = folder / f"checkpoint_{epoch:06d}"
    path.mkdir()
    (path / "epoch").write_text(str(epoch))
    row = {"epoch": epoch, metric: value, "val_loss": loss}
    score = keeper.update(row)
    retention.saved(trial, str(path), epoch, best=score > 0)
    return {**row, KEEP_SCORE: score}


def kept_epochs(tmp_path, epochs: list[tuple[float, float]], metric="val_kappa", mode="max"):
    """Report (metric, val_loss) per epoch; after each, check the kept set (no snapshots)."""
    retention, keeper, rows = Retention(), BestSoFar(metric, mode), []
    for epoch, (value, loss) in enumerate(epochs, start=1):
        rows.append(save(tmp_path, retention, keeper, epoch, value, loss, metric=metric))
        best = best_epoch(rows, metric, mode)
        expected = {epoch} | ({int(best["epoch"])} if best else set())
        assert on_disk(tmp_path) == expected, (rows, on_disk(tmp_path))
        assert set(retention.kept("t").values()) == expected
        assert keeper.epoch == (int(best["epoch"]) if best else None)
    return on_disk(tmp_path)


def test_ray_keeps_every_checkpoint_and_ranks_by_our_score():
    config = checkpoint_config()
    assert config.num_to_keep is None  # no forced experiment snapshot per checkpoint
    assert (config.checkpoint_score_attribute, config.checkpoint_score_order) == (KEEP_SCORE, "max")


def test_every_epoch_tied_keeps_the_first_and_the_latest(tmp_path):
    # lab3's resnet50 scratch run: val kappa 0 every epoch; here the loss ties too.
    assert kept_epochs(tmp_path, [(0.0, 1.5)] * 5) == {1, 5}


def test_a_metric_tie_is_broken_by_the_val_loss(tmp_path):
    kept = kept_epochs(tmp_path, [(0.0, 1.6), (0.0, 1.4), (0.0, 1.5), (0.0, 1.45)])
    assert kept == {2, 4}


def test_a_later_best_replaces_the_earlier_one(tmp_path):
    assert kept_epochs(tmp_path, [(0.1, 1.0), (0.3, 1.2), (0.2, 0.9), (0.3, 1.1)]) == {4}


def test_a_minimised_metric_and_nan_epochs(tmp_path):
    nan = math.nan
    epochs = [(nan, nan), (1.2, 1.2), (nan, nan), (1.3, 1.3), (1.2, 1.2)]
    assert kept_epochs(tmp_path, epochs, "val_loss", "min") == {2, 5}


def test_a_snapshot_keeps_what_it_names_until_a_newer_one_is_in_tune(tmp_path):
    """Snapshot 1 names epoch 3 (and its best, epoch 2): both stay while later epochs come and
    go, until `tune/` is known to hold a snapshot that names a later epoch."""
    retention, keeper = Retention(), BestSoFar("val_kappa", "max")
    for epoch, value in ((1, 0.1), (2, 0.5), (3, 0.2)):
        save(tmp_path, retention, keeper, epoch, value, 1.0)
    assert on_disk(tmp_path) == {2, 3}
    retention.snapshot_taken(1)
    for epoch in (4, 5, 6):  # none better than epoch 2
        save(tmp_path, retention, keeper, epoch, 0.1, 1.0)
    assert on_disk(tmp_path) == {2, 3, 6}  # 4 and 5 were never named: gone at once
    retention.snapshot_taken(2)  # names epoch 6
    save(tmp_path, retention, keeper, 7, 0.9, 1.0)  # a new best
    assert on_disk(tmp_path) == {2, 3, 6, 7}  # tune/ may hold snapshot 1 or 2: both named
    retention.snapshot_durable(1)
    assert on_disk(tmp_path) == {2, 3, 6, 7}  # tune/ holds 1: snapshot 2 is not there yet
    retention.snapshot_durable(2)
    assert on_disk(tmp_path) == {2, 6, 7}  # 2 is the best as of 6, which snapshot 2 names
    retention.snapshot_taken(3)
    retention.snapshot_durable(3)
    assert on_disk(tmp_path) == {7}  # latest and best, named by the snapshot in tune/
    assert retention.deleted == 6


def test_trials_are_pinned_apart_and_a_snapshot_without_news_changes_nothing(tmp_path):
    retention = Retention()
    keepers = {t: BestSoFar("val_kappa", "max") for t in "ab"}
    for t in "ab":
        (tmp_path / t).mkdir()
        save(tmp_path / t, retention, keepers[t], 1, 0.5, 1.0, trial=t)
    retention.snapshot_taken(1)
    save(tmp_path / "a", retention, keepers["a"], 2, 0.1, 1.0, trial="a")
    retention.snapshot_taken(2)  # names a's epoch 2, b's epoch 1 still
    retention.snapshot_taken(3)
    retention.snapshot_durable(3)
    save(tmp_path / "a", retention, keepers["a"], 3, 0.1, 1.0, trial="a")
    save(tmp_path / "b", retention, keepers["b"], 2, 0.1, 1.0, trial="b")
    # Snapshot 3, the one in tune/, names a's epoch 2 (its latest then) and b's epoch 1.
    assert on_disk(tmp_path / "a") == {1, 2, 3}
    assert on_disk(tmp_path / "b") == {1, 2}
    retention.snapshot_taken(4)
    retention.snapshot_durable(4)
    assert on_disk(tmp_path / "a") == {1, 3} and on_disk(tmp_path / "b") == {1, 2}


def test_the_best_so_far_survives_a_checkpoint_round_trip():
    keeper = BestSoFar("val_kappa", "max")
    keeper.update({"epoch": 1, "val_kappa": 0.0, "val_loss": 1.0})
    keeper.update({"epoch": 2, "val_kappa": 0.0, "val_loss": 1.1})
    resumed = BestSoFar("val_kappa", "max", keeper.state())
    assert resumed.update({"epoch": 3, "val_kappa": 0.0, "val_loss": 1.05}) == 0.0
    assert resumed.epoch == 1
    assert resumed.update({"epoch": 4, "val_kappa": 0.0, "val_loss": 0.9}) == 4.0


values = st.sampled_from([0.0, 0.0, 0.5, 1.0, math.nan])  # few values: many ties


@settings(max_examples=200, deadline=None)
@given(epochs=st.lists(st.tuples(values, st.sampled_from([1.0, 2.0, math.nan])), max_size=8))
def test_any_sequence_keeps_the_latest_and_the_ranked_best(tmp_path_factory, epochs):
    kept_epochs(tmp_path_factory.mktemp("ckpt"), epochs)
