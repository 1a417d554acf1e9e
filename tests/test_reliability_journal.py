"""A second driver on a running study, then the driver killed between a result's journal
append and the next Parquet rebuild (one sweep for both: each fault is checked on its own).

    .venv/bin/pytest tests/test_reliability_journal.py

Real sweeps (real Ray, real checkpoints, real files); processes are SIGKILLed or SIGSTOPped
part-way, nothing is mocked.
"""

from __future__ import annotations

import signal
import socket

import pytest

from study.record.layout import JOURNAL_FILE
from tests.helpers.cli import run_cli
from tests.helpers.processes import (
    PARQUET_FILES,
    journal_epochs,
    read_frame,
    running_sweep,
    sweep_args,
)

pytestmark = pytest.mark.slow


def parquet_epochs(folder) -> set[tuple[str, int]]:
    df = read_frame(folder, "epochs.parquet")
    return set() if df is None else set(zip(df["trial_id"], df["epoch"].astype(int), strict=True))


def results_files(folder) -> dict[str, bytes]:
    names = [*PARQUET_FILES, JOURNAL_FILE, "study.json", ".driver.lock"]
    return {n: (folder / n).read_bytes() for n in names if (folder / n).exists()}


def refused_while_it_runs(args: list[str], driver_pid: int) -> None:
    """A second driver on the running study, with and without --resume: refused before Ray."""
    for extra in ([], ["--resume"]):
        proc = run_cli(*args, *extra, timeout=120)
        assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
        assert "Traceback" not in proc.stderr
        errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error: ")]
        assert len(errors) == 1, proc.stderr[-2000:]
        line = errors[0]
        assert f"PID {driver_pid}" in line and socket.gethostname() in line, line
        assert "since" in line
        assert "Ray dashboard" not in proc.stdout  # refused before Ray


def test_a_second_driver_is_refused_and_a_kill_before_the_parquet_rebuild_loses_nothing(
    tmp_path, synthetic_data
):
    """One run, two faults: a second driver while the study runs, then SIGKILL between an
    epoch's journal append and the next Parquet rebuild (every ~5 s); --resume takes over the
    lock and loses nothing."""
    folder, log = tmp_path / "journal", tmp_path / "sweep.log"
    args = sweep_args(
        synthetic_data, tmp_path, "journal", "--set", "num_samples=2", "--set", "space.epochs=3",
        "--set", "max_concurrent=1",
    )  # fmt: skip

    def journal_ahead():
        journaled = journal_epochs(folder)
        # An epoch is on the disk in the journal, not yet in the Parquet files: stop it now.
        return len(journaled) >= 2 and set(journaled) - parquet_epochs(folder)

    with running_sweep(args, log) as sweep:
        driver = sweep.driver

        def stopped_with_the_journal_ahead():
            if not journal_ahead():
                return False
            driver.send_signal(signal.SIGSTOP)  # frozen mid-study: its lock held, files still
            if journal_ahead():  # the rebuild did not land between the two looks
                return True
            driver.send_signal(signal.SIGCONT)
            return False

        sweep.wait_for(stopped_with_the_journal_ahead, 300, "an epoch journaled, not in Parquet")
        before = results_files(folder)
        journaled = journal_epochs(folder)
        only_journaled = set(journaled) - parquet_epochs(folder)
        try:
            refused_while_it_runs(args, driver.pid)
            assert results_files(folder) == before  # nothing of the first's changed
        finally:
            sweep.kill()  # SIGKILL works on a stopped process: no handler, no last flush
    assert driver.returncode == -signal.SIGKILL
    assert only_journaled, "the Parquet files caught up before the driver was stopped"
    assert (folder / ".driver.lock").exists()  # left behind by the killed driver

    proc = run_cli(*args, "--resume", timeout=400)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert "warning: taking over the lock" in proc.stderr
    assert f"PID {driver.pid}" in proc.stderr
    epochs = read_frame(folder, "epochs.parquet")
    assert not epochs.duplicated(["trial_id", "epoch"]).any()  # every epoch exactly once
    trials = read_frame(folder, "trials.parquet").set_index("trial_id")
    done = trials[trials["status"] == "TERMINATED"]
    assert len(done) == 2 and (done["epochs_run"] == 3).all(), trials[["status", "error"]]
    final = set(zip(epochs["trial_id"], epochs["epoch"].astype(int), strict=True))
    assert set(journaled) <= final  # nothing journaled before the kill was lost
    assert len(epochs[epochs["trial_id"].isin(done.index)]) == 6
    assert journal_epochs(folder).keys() == final  # the journal and the Parquet agree
    assert not (folder / ".driver.lock").exists()  # released at the end
