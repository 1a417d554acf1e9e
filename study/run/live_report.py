"""Keep results/<study>/report.html current while a sweep runs, at a cost the trials do not feel.

    with LiveReport(folder, total=8, every_s=30) as live:   # study.sweep.sweep
        tuner.fit()
    live.final()                                             # the report without banner/reload

A thread of the driver (never Ray's event loop, never a Tune callback) looks every few seconds
at the Parquet files. A render is due when they changed, `every_s` has passed since the last
one started, and the renders so far used at most `cpu_share` of this machine's CPU time since
the sweep began. It is asked of one render process, `python -m study.analyze FOLDER --running
TOTAL --serve`, started at the first render and kept: its imports (pandas, Plotly, SciPy: ~2
CPU-s, twice a whole render of the demo) are paid once per sweep, not once per render.

That process runs at nice 19 from its start, so it mostly gets CPU the trials leave idle; the
budget bounds what it can take from them where priority cannot help (shared caches, memory
bandwidth). A render's cost grows with the study, so a larger study gets rarer renders, not a
larger share. A failed render is logged on one line and retried at the next update; a render
process that dies is started again at the next update; neither stops the sweep. `final()`
writes the report once more, without the live banner and reload, by the same render process
(its imports already paid: ~2 s less at the end of every sweep), or by one of its own where
no live render ran.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from study.record.layout import EPOCHS_FILE, REPORT_FILE, TRIALS_FILE

POLL_S = 2.0  # how often the thread looks at the Parquet files (a stat() each)
NICE = 19  # the lowest priority: a render mostly gets CPU the trials leave idle
CPU_SHARE = 0.01  # the renders' share of this machine's CPU time: trials lose at most ~1 %
WATCHED = (TRIALS_FILE, EPOCHS_FILE)
FINAL_WAIT_S = 120  # a render in flight at the end is let finish (it writes atomically)


def lower_priority(pid: int) -> None:
    """Give a process the lowest CPU priority; where it cannot be done, it runs as it is."""
    try:
        os.setpriority(os.PRIO_PROCESS, pid, NICE)
    except (AttributeError, OSError):  # not POSIX, or the render already ended
        pass


def machine_cores() -> int:
    """The cores this process may run on: the trials' and the renders' common CPU."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


class LiveReport:
    """The background renderer of one study's report; see the module docstring.

    `clock` (seconds, monotonic) is the time the budget is measured in; tests pass their own.
    `final_wait_s`: the longest the sweep's end waits for a render, then it goes on without."""

    def __init__(
        self, folder: Path, total: int, every_s: float, cpu_share: float = CPU_SHARE,
        log=None, clock=time.monotonic, final_wait_s: float = FINAL_WAIT_S,
    ):  # fmt: skip
        self.folder, self.total, self.every_s, self.cpu_share = folder, total, every_s, cpu_share
        self.final_wait_s = final_wait_s
        self.log, self.clock = log or sys.stderr, clock
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._proc: subprocess.Popen | None = None  # the render process, once started
        self._errors = None  # its stderr (a temporary file): the reason if it dies
        self._born = clock()  # the budget accrues from here
        self._started_at = -float("inf")  # when the last render started
        self._rendered: tuple | None = None  # Parquet stamp of the last render that worked
        self._last_error = ""
        self.renders = self.failures = 0
        self.cpu_s = 0.0  # CPU time of every render process so far (their own account)
        self.confirm_total: int | None = None  # the confirm stage's runs, once it is planned
        self._cpu_ended = 0.0  # that of render processes that have ended

    @property
    def path(self) -> Path:
        return self.folder / REPORT_FILE

    def __enter__(self) -> LiveReport:
        self._born = self.clock()
        if self.every_s > 0:
            self._thread = threading.Thread(target=self._loop, name="live-report", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def _loop(self) -> None:
        while not self._stop.wait(POLL_S):
            try:
                self.tick()
            except Exception as exc:  # the sweep goes on whatever happens to its report
                self._warn(f"{type(exc).__name__}: {exc}")

    def _stamp(self) -> tuple | None:
        """(mtime_ns, size) of the watched files; None before the first epoch is written."""
        try:
            stats = [(self.folder / name).stat() for name in WATCHED]
            # The sweep writes empty files when trials start; the analysis needs an epoch.
            if pq.ParquetFile(self.folder / EPOCHS_FILE).metadata.num_rows == 0:
                return None
        except (OSError, pa.ArrowException):  # not written yet, or replaced while we looked
            return None
        return tuple((s.st_mtime_ns, s.st_size) for s in stats)

    def within_budget(self) -> bool:
        """Whether the renders so far used at most their share of the CPU time since the start."""
        return self.cpu_s <= self.cpu_share * machine_cores() * (self.clock() - self._born)

    def tick(self) -> None:
        """One step: render once (waiting for it) when the files changed and a render is due."""
        stamp = self._stamp()
        if stamp is None or stamp == self._rendered:
            return
        if self.clock() - self._started_at < self.every_s or not self.within_budget():
            return
        self._started_at = self.clock()  # also when the start fails: retried after every_s
        if self._proc is None:
            self._start()
        reply = self._ask({"confirm_total": self.confirm_total})
        if reply is None:
            return
        if reply["ok"]:
            self._rendered = stamp  # a failed render leaves this: retried next update
            self.renders += 1
            self._last_error = ""
        else:
            self.failures += 1
            self._warn(reply["error"])

    def expect_confirm(self, runs: int) -> None:
        """The confirm stage will train `runs` runs: the banner counts them out of that."""
        self.confirm_total = runs

    def command(self, live: bool) -> list[str]:
        cmd = [sys.executable, "-m", "study.analyze", str(self.folder)]
        if live:
            reload_s = str(max(1, round(self.every_s)))
            cmd += ["--running", str(self.total), "--reload", reload_s, "--serve"]
        return cmd

    def _start(self) -> None:
        self._errors = tempfile.TemporaryFile()
        self._proc = subprocess.Popen(
            self.command(live=True), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=self._errors, text=True,
        )  # fmt: skip
        # Lowered now, not by the process itself: its ~2 CPU-s of imports would otherwise run
        # at the trials' priority and slow them.
        lower_priority(self._proc.pid)

    def _ask(self, request: dict, timeout: float | None = None) -> dict | None:
        """One render by the render process: its reply, or None if it had died (then ended) or,
        with `timeout`, had not answered within it (then killed)."""
        proc = self._proc
        assert proc is not None and proc.stdin is not None and proc.stdout is not None
        # A render that hangs must not hold the sweep's end: killed, its answer ends empty.
        watchdog = threading.Timer(timeout, proc.kill) if timeout else None
        try:
            proc.stdin.write(json.dumps(request) + "\n")
            proc.stdin.flush()
            if watchdog:
                watchdog.start()
            line = proc.stdout.readline()  # blocks this thread only, for one render
        except OSError:  # the process had died: a broken pipe
            line = ""
        finally:
            if watchdog:
                watchdog.cancel()
        if not line:
            self._end_process(died=True)
            return None
        reply = json.loads(line)
        self.cpu_s = self._cpu_ended + reply["cpu_s"]
        return reply

    def _end_process(self, died: bool) -> None:
        """Close the render process (it exits at the end of its input); say why if it died."""
        proc, errors = self._proc, self._errors
        self._proc = self._errors = None
        assert proc is not None and errors is not None
        self._cpu_ended = self.cpu_s  # a dead process's last, unanswered render is not known
        try:
            proc.stdin.close()  # type: ignore[union-attr]
        except OSError:
            pass
        try:
            proc.wait(timeout=self.final_wait_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        errors.seek(0)
        text = errors.read().decode(errors="replace").strip()
        errors.close()
        if died:
            self.failures += 1
            self._warn(text.splitlines()[-1] if text else f"exit status {proc.returncode}")

    def _render_alone(self) -> dict:
        """The final report by a `python -m study.analyze` of its own: {"ok", "error"}."""
        try:
            proc = subprocess.run(
                self.command(live=False), capture_output=True, text=True,
                timeout=self.final_wait_s,
            )  # fmt: skip
        except subprocess.TimeoutExpired:
            return {"ok": False, "error": f"no report after {self.final_wait_s:g} s"}
        lines = proc.stderr.strip().splitlines()  # the reason, if it failed
        reason = lines[-1] if lines else f"exit status {proc.returncode}"
        return {"ok": proc.returncode == 0, "error": reason}

    def _warn(self, reason: str) -> None:
        if reason == self._last_error:  # a render failing the same way every time: say it once
            return
        self._last_error = reason
        print(
            f"warning: live report not updated ({reason}); the sweep goes on and retries at "
            "the next update",
            file=self.log,
            flush=True,
        )

    def stop(self) -> None:
        """Stop the thread (a render in flight is let finish) and the render process."""
        self._stop_thread()
        if self._proc is not None:
            self._end_process(died=False)

    def _stop_thread(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(self.final_wait_s)
            proc = self._proc
            if self._thread.is_alive() and proc is not None:  # a render that hangs
                proc.kill()  # its answer ends empty: the thread closes it and returns
            self._thread.join()
            self._thread = None

    def final(self) -> None:
        """The report at the end, without the live banner and reload, then the render process
        is ended; a failure is logged. Called inside `with live:` (its exit ends what is left)."""
        self._stop_thread()  # no live render after this one
        if self.every_s <= 0 or self._stamp() is None:
            return  # live reports off, or nothing to report (no epoch finished)
        share = self.cpu_s / max(1e-9, machine_cores() * (self.clock() - self._born))
        live_cpu_s = self.cpu_s  # what the live renders used, without this one
        reply = self._ask({"final": True}, self.final_wait_s) if self._proc is not None else None
        if reply is None:  # no live render ran, or its process died: a process of its own
            reply = self._render_alone()
        self.stop()
        if reply["ok"]:
            failed = f", {self.failures} failed" if self.failures else ""
            print(f"report: {self.path} ({self.renders} live updates during the sweep{failed}; "
                  f"their CPU {live_cpu_s:.1f} s, {share:.2%} of this machine's)")  # fmt: skip
        else:
            print(f"warning: final report not written ({reply['error']}); run python -m "
                  f"study.analyze {self.folder}", file=self.log)  # fmt: skip
