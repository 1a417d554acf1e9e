"""report.html is rewritten while a real sweep runs, survives failed renders, and ends final."""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest

from tests.helpers.cli import ROOT
from tests.helpers.processes import NO_DASHBOARD, journal_epochs

# 2 scratch trials of resnet18 at 32 px, one at a time. Each is held after its first epoch
# (study.run.trainable.HOLD_ENV) until the test has seen a live render of it: two live versions
# on a fast idle machine and a slow loaded one alike, without a longer sweep.
LIVE_SWEEP = [*NO_DASHBOARD,
    "--set", "num_samples=2", "--set", "space.pretrained=false", "--set", "space.arch=resnet18",
    "--set", "space.head=classify", "--set", "data.image_size=32", "--set", "space.epochs=2", "--set", "space.batch_size=16",
    "--set", "test_top_k=1", "--set", "max_concurrent=1", "--set", "scheduler.name=none",
    "--set", "confirm.seeds=0", "--set", "export=false",
]  # fmt: skip


def _read(path):
    try:
        return path.read_text() if path.is_file() else None
    except FileNotFoundError:  # replaced between is_file() and the read
        return None


@pytest.mark.slow
def test_report_is_live_while_the_sweep_runs_and_final_at_the_end(synthetic_data, tmp_path):
    from study.run.trainable import HOLD_ENV  # torch and Ray: not at the quick suite's collection

    folder = tmp_path / "results" / "live"
    # A render that fails: report.html is a folder, so writing it raises. The sweep must go on,
    # log it, and retry once the obstacle is gone.
    (folder / "report.html").mkdir(parents=True)
    (folder / "report.html" / "in-the-way").write_text("x")
    log, out_file, hold = tmp_path / "sweep.err", tmp_path / "sweep.out", tmp_path / "hold"
    hold.touch()
    # Output to files, not a pipe read only at the end: on a slow machine Tune's status tables
    # would fill the pipe and block the driver mid-study.
    with open(log, "w") as err, open(out_file, "w") as stdout:
        sweep = subprocess.Popen(
            [sys.executable, "-m", "study.sweep", "search_spaces/demo.yaml",
             "--data", str(synthetic_data), "--results", str(tmp_path / "results"),
             "--name", "live", "--report-every", "1", "--report-cpu", "100", *LIVE_SWEEP],
            cwd=ROOT, stdout=stdout, stderr=err, text=True,
            env={**os.environ, HOLD_ENV: f"1:{hold}"},
        )  # fmt: skip
        live_versions: set[str] = set()
        removed = False
        released: set[str] = set()  # trials let go after a live render that shows them
        deadline = time.monotonic() + 900
        while sweep.poll() is None and time.monotonic() < deadline:
            time.sleep(0.5)
            if not removed and "live report not updated" in log.read_text():
                shutil.rmtree(folder / "report.html")
                removed = True
            text = _read(folder / "report.html")
            if text and "id='live-banner'" in text:
                live_versions.add(hashlib.sha256(text.encode()).hexdigest())
            epochs = journal_epochs(folder)
            journaled = {trial for trial, _ in epochs}
            if hold.exists() and len(live_versions) > len(released) and journaled - released:
                hold.unlink()  # a version with the held trial's epoch 1 is out: let it go
                released |= journaled
            elif not hold.exists() and len(released) == 1 and max(e for _, e in epochs) >= 2:
                hold.touch()  # the first trial is past its hold: the second waits at epoch 1
        hold.unlink(missing_ok=True)
        sweep.wait(timeout=60)
    out, errors = out_file.read_text(), log.read_text()
    assert sweep.returncode == 0, out[-3000:] + errors[-3000:]
    assert removed, errors[-3000:]  # the failed render was logged (and did not stop the sweep)
    assert f"live report: {folder / 'report.html'}" in out
    assert out.index("Ray dashboard:") < out.index("live report:")  # printed next to each other
    assert len(live_versions) >= 2, f"{len(live_versions)} live versions seen"

    final = (folder / "report.html").read_text()
    assert "live-banner" not in final and "live-reload" not in final
    trials = pd.read_parquet(folder / "trials.parquet")
    assert len(trials) == 2 and set(trials["status"]) == {"TERMINATED"}
    assert not list(folder.glob(".report.html.*"))  # no render left a temp file behind


def test_the_banner_counts_finished_trials_and_reloads_the_page():
    import datetime as dt

    from study.analyze.banners import LiveStatus, running_banner

    trials = pd.DataFrame({"status": ["TERMINATED"] * 4 + ["ERROR"] + ["RUNNING"] * 2})
    html = running_banner(trials, LiveStatus(total=8, reload_s=30), dt.datetime(2026, 1, 1, 14, 2))
    assert "running: 5 of 8 trials finished, updated 14:02" in html
    assert "location.reload()},30000)" in html
    trials["stage"] = ["search"] * 4 + ["confirm"] * 3  # the search ended, the confirm runs
    trials.loc[3, "status"] = "TERMINATED"
    html = running_banner(trials, LiveStatus(total=4, reload_s=30), dt.datetime(2026, 1, 1, 9, 5))
    assert "running: 4 of 4 trials finished; confirm stage: 1 runs finished, 2 running" in html
    told = LiveStatus(total=4, reload_s=30, confirm_total=6)  # the sweep knows the stage's size
    html = running_banner(trials, told, dt.datetime(2026, 1, 1, 9, 5))
    assert "running: 4 of 4 trials finished; confirm stage: 1 of 6 runs finished, 2 running" in html


def test_the_render_process_runs_at_the_lowest_priority_from_its_start(tmp_path, monkeypatch):
    """Lowered by the sweep right after the start: the render's own imports must not compete."""
    from study.run import live_report

    live = live_report.LiveReport(tmp_path, total=2, every_s=1)
    monkeypatch.setattr(
        live, "command", lambda live: [sys.executable, "-c", "import time; time.sleep(60)"]
    )
    live._start()  # as `tick` does at the first render
    try:
        assert os.getpriority(os.PRIO_PROCESS, live._proc.pid) == live_report.NICE
    finally:
        live._proc.kill()
        live.stop()


class FakeClock:
    """Seconds that pass only when the test says: the CPU budget, checked without waiting."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _touch_epochs(folder) -> None:
    """A new epoch as the sweep writes one: the same rows, a new mtime and size."""
    from tests.helpers.analyze_fixtures import write_parquet

    epochs = pd.read_parquet(folder / "epochs.parquet")
    write_parquet(folder / "epochs.parquet", pd.concat([epochs, epochs.tail(1)]))


def test_renders_keep_to_their_share_of_the_cpu_in_one_kept_process(tmp_path, monkeypatch):
    """The real render process (python -m study.analyze --serve) on a real results folder."""
    from study.run import live_report
    from study.run.live_report import LiveReport, machine_cores
    from tests.helpers.analyze_fixtures import make_results

    folder = make_results(tmp_path)
    clock, share = FakeClock(), 0.01
    live = LiveReport(folder, total=6, every_s=1, cpu_share=share, clock=clock)
    try:
        live.tick()  # the first render is free: nothing spent yet
        assert live.renders == 1 and "id='live-banner'" in (folder / "report.html").read_text()
        first_pid, spent = live._proc.pid, live.cpu_s
        assert spent > 0.5  # the process's own CPU account, imports included

        _touch_epochs(folder)
        clock.now += 5  # past every_s, but far inside the CPU the first render took
        live.tick()
        assert live.renders == 1
        due = live._born + spent / (share * machine_cores())
        clock.now = due - 0.01
        live.tick()
        assert live.renders == 1
        clock.now = due + 0.01
        os.kill(first_pid, signal.SIGINT)  # Ctrl-C in the sweep's terminal reaches it too
        live.expect_confirm(4)  # the search ended: the banner counts the stage out of 4
        live.tick()
        assert live.renders == 2 and live._proc.pid == first_pid  # the same process, kept
        assert "confirm stage: 0 of 4 runs finished" in (folder / "report.html").read_text()
        assert live.cpu_s - spent < spent  # no second start-up: the imports were paid once
        assert live.within_budget() is False  # so the next render waits again

        # A render process that dies is said once and started again at the next update.
        live._proc.kill()
        live._proc.wait()
        _touch_epochs(folder)
        clock.now += 10_000
        live.tick()
        assert (live.renders, live.failures, live._proc) == (2, 1, None)
        clock.now += 10_000
        live.tick()
        assert live.renders == 3 and live._proc.pid != first_pid

        # The final report comes from the same kept process (no start of its own), which ends.
        kept = live._proc
        monkeypatch.setattr(live_report.subprocess, "run", _no_new_process)
        live.final()
        assert kept.poll() is not None and live._proc is None
        final = (folder / "report.html").read_text()
        assert "live-banner" not in final and "live-reload" not in final
    finally:
        live.stop()
    assert live._proc is None  # stop() ends the render process


def _no_new_process(*args, **kwargs):
    raise AssertionError(f"a process was started for the final report: {args}")


def test_without_a_live_render_the_final_report_has_a_process_of_its_own(tmp_path, capsys):
    from study.run.live_report import LiveReport
    from tests.helpers.analyze_fixtures import make_results

    folder = make_results(tmp_path)
    with LiveReport(folder, total=6, every_s=1e9) as live:  # no render before the end
        live.final()
    final = (folder / "report.html").read_text()
    assert "live-banner" not in final and '<section id="summary"' in final
    assert "report: " in capsys.readouterr().out


def test_a_final_render_that_hangs_does_not_hold_the_sweeps_end(tmp_path, monkeypatch, capsys):
    """The kept process takes the request and never answers, and so does a process of its own:
    each is killed after `final_wait_s`, the sweep says the report is missing and goes on."""
    from study.run import live_report
    from tests.helpers.analyze_fixtures import make_results

    folder = make_results(tmp_path)
    hangs = [sys.executable, "-c", "import sys, time; sys.stdin.readline(); time.sleep(600)"]
    live = live_report.LiveReport(folder, total=6, every_s=1, log=sys.stdout, final_wait_s=1)
    monkeypatch.setattr(live, "command", lambda live: hangs)
    with live:
        live._start()  # as `tick` does at the first render
        kept = live._proc
        started = time.monotonic()
        live.final()
    assert time.monotonic() - started < 30  # two waits of 1 s, not 600
    assert kept.poll() is not None and live._proc is None
    out = capsys.readouterr().out
    assert "warning: final report not written (no report after 1 s)" in out
    assert f"python -m study.analyze {folder}" in out
