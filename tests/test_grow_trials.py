"""A finished study grows: run again it says so, `--more N` adds warm-started trials, and its
optuna.log opens in Optuna and in optuna-dashboard. One real small sweep (`small_study`,
tests/conftest.py) is shared; the `--more` run works on a copy of it.

    .venv/bin/pytest tests/test_grow_trials.py
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import optuna
import pandas as pd
import pytest

from study.record.layout import OPTUNA_LOG
from study.record.ranking import best_trial_ids
from tests.conftest import SMALL_SWEEP
from tests.helpers.cli import ROOT, run_cli
from tests.helpers.processes import journal_epochs, kill_driver_when

pytestmark = pytest.mark.slow


def same_command(folder: Path, data: Path, *extra: str) -> list[str]:
    """The command that made `small_study` (tests/conftest.py), with `extra`."""
    return ["study.sweep", "search_spaces/demo.yaml", "--data", str(data),
            "--results", str(folder.parent), "--name", "small", *SMALL_SWEEP, *extra]  # fmt: skip


def files_of(folder: Path) -> dict[str, tuple[int, bytes]]:
    return {
        str(p.relative_to(folder)): (p.stat().st_mtime_ns, p.read_bytes())
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def open_log(folder: Path, name: str) -> optuna.Study:
    backend = optuna.storages.journal.JournalFileBackend(str(folder / OPTUNA_LOG))
    return optuna.load_study(study_name=name, storage=optuna.storages.JournalStorage(backend))


def test_a_finished_study_run_again_says_so_and_touches_nothing(small_study, synthetic_data):
    before = files_of(small_study)
    proc = run_cli(*same_command(small_study, synthetic_data))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "is finished" in proc.stdout and str(small_study / "report.html") in proc.stdout
    assert "--more N" in proc.stdout and "--more-seeds K" in proc.stdout
    assert files_of(small_study) == before


def test_the_optuna_log_holds_every_trial_of_the_sweep(small_study):
    trials = pd.read_parquet(small_study / "trials.parquet").set_index("trial_id")
    epochs = pd.read_parquet(small_study / "epochs.parquet")
    study = open_log(small_study, "small")
    assert {t.user_attrs["trial_id"] for t in study.trials} == set(trials.index)
    for t in study.trials:
        row = trials.loc[t.user_attrs["trial_id"]]
        assert t.params["image_size"] == row["image_size"] and t.params["lr"] == row["lr"]
        mine = epochs[epochs["trial_id"] == row.name].set_index("epoch")["val_kappa"]
        assert t.intermediate_values == pytest.approx(mine.to_dict())
        pruned = bool(row["stopped_early"])
        assert t.state == (optuna.trial.TrialState.PRUNED if pruned else
                           optuna.trial.TrialState.COMPLETE)  # fmt: skip
        assert t.datetime_start < t.datetime_complete
    tested = trials["test_kappa"].notna()
    for t in study.trials:
        assert ("test_kappa" in t.user_attrs) == tested[t.user_attrs["trial_id"]]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get_json(url: str):
    with urllib.request.urlopen(url, timeout=5) as reply:
        return json.loads(reply.read())


def test_optuna_dashboard_serves_the_study(small_study):
    port = free_port()
    server = subprocess.Popen(
        [str(Path(sys.executable).parent / "optuna-dashboard"), str(small_study / OPTUNA_LOG),
         "--host", "127.0.0.1", "--port", str(port)],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        deadline, studies = time.monotonic() + 60, None
        while studies is None:
            try:
                studies = get_json(f"http://127.0.0.1:{port}/api/studies")["study_summaries"]
            except OSError:
                assert server.poll() is None, server.stderr.read().decode()[-2000:]
                assert time.monotonic() < deadline, "optuna-dashboard did not answer in 60 s"
                time.sleep(0.5)
        (study,) = [s for s in studies if s["study_name"] == "small"]
        detail = get_json(f"http://127.0.0.1:{port}/api/studies/{study['study_id']}")
        ids = {
            a["value"] for t in detail["trials"] for a in t["user_attrs"] if a["key"] == "trial_id"
        }
        assert ids == set(pd.read_parquet(small_study / "trials.parquet")["trial_id"])
        assert all(t["intermediate_values"] and t["params"] for t in detail["trials"])
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_more_adds_warm_started_trials_and_a_kill_during_it_loses_nothing(
    small_study, synthetic_data, tmp_path
):
    folder = tmp_path / "results" / "small"
    shutil.copytree(small_study, folder, symlinks=True)
    trials_before = pd.read_parquet(folder / "trials.parquet").set_index("trial_id")
    epochs_before = pd.read_parquet(folder / "epochs.parquet")
    log = tmp_path / "more.log"

    def a_new_trial_reported():
        return any(t not in trials_before.index for t, _ in journal_epochs(folder))

    # Killed once a new trial has an epoch in the results: --resume must finish the growth.
    args = same_command(folder, synthetic_data, "--report-every", "0")
    kill_driver_when([*args, "--more", "2"], log, a_new_trial_reported, 400, "a new trial")
    # The searcher was given both earlier trials (and ASHA their rungs) before it suggested.
    said = log.read_text()
    assert f"the searcher saw {len(trials_before)} earlier trials" in said, said[-3000:]
    assert "ASHA's rungs hold" in said
    proc = run_cli(*args, "--resume")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    trials = pd.read_parquet(folder / "trials.parquet").set_index("trial_id")
    assert len(trials) == len(trials_before) + 2, trials[["status", "stage"]]
    new = trials.index.difference(trials_before.index)
    assert (trials.loc[new, "stage"] == "search").all()
    assert (trials.loc[new, "status"] == "TERMINATED").all(), trials.loc[new, "error"]
    hp = ["lr", "batch_size", "epochs", "image_size", "weight_decay", "best_val_kappa"]
    pd.testing.assert_frame_equal(trials.loc[trials_before.index, hp], trials_before[hp])
    epochs = pd.read_parquet(folder / "epochs.parquet")
    assert not epochs.duplicated(["trial_id", "epoch"]).any()
    earlier = epochs[epochs["trial_id"].isin(trials_before.index)].reset_index(drop=True)
    pd.testing.assert_frame_equal(earlier, epochs_before.reset_index(drop=True))
    record = json.loads((folder / "study.json").read_text())
    assert record["finished"] and [g["trials"] for g in record["grown"]] == [2]
    logged = {t.user_attrs["trial_id"] for t in open_log(folder, "small").trials}
    assert logged == set(trials.index)
    # The conclusion reran over all trials: the best of all 4 was tested, the report reads 4.
    best = best_trial_ids(trials.reset_index(), "best_val_kappa", "max")[0]
    assert trials["test_kappa"].notna().any() and not pd.isna(trials.loc[best, "test_kappa"])
    again = run_cli(*same_command(folder, synthetic_data))
    assert again.returncode == 0 and "is finished" in again.stdout
