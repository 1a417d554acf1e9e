"""Keep results/<study>/report.html current while a sweep runs, at a cost the trials do not feel.

    with LiveReport(folder, total=8, every_s=30) as live:   # study.run.tuner.run_study
        tuner.fit()
    live.final()                                             # the report without banner/reload

A thread of the driver (never Ray's event loop, never a Tune callback) looks every few seconds
at the Parquet files; when they changed and `every_s` has passed since the last render started,
it starts `python -m study.analyze FOLDER --running TOTAL --nice 19` as its own process and
lowers its priority at once (before its imports): at nice 19 it runs on CPU time the trials
leave idle, and the analysis imports neither torch nor Ray. One render at a time; a render
that fails is logged on one line and retried at the next update, and never stops the sweep.
`final()` waits for a render in flight and writes the report once more without the live
banner and the browser reload.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

POLL_S = 2.0  # how often the thread looks at the Parquet files (a stat() each)
NICE = 19  # the lowest priority: a render only gets CPU the trials leave idle
WATCHED = ("trials.parquet", "epochs.parquet")
FINAL_WAIT_S = 120  # a render in flight at the end is let finish (it writes atomically)


def lower_priority(pid: int) -> None:
    """Give a process the lowest CPU priority; where it cannot be done, it runs as it is."""
    try:
        os.setpriority(os.PRIO_PROCESS, pid, NICE)
    except (AttributeError, OSError):  # not POSIX, or the render already ended
        pass


class LiveReport:
    """The background renderer of one study's report; see the module docstring."""

    def __init__(self, folder: Path, total: int, every_s: float, log=None):
        self.folder, self.total, self.every_s = folder, total, every_s
        self.log = log or sys.stderr
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._proc: subprocess.Popen | None = None
        self._errors = None  # the running render's stderr (a temporary file)
        self._started_at = -float("inf")  # monotonic time the last render started
        self._launched: tuple | None = None  # Parquet stamp the running render reads
        self._rendered: tuple | None = None  # Parquet stamp of the last render that worked
        self._last_error = ""
        self.renders = self.failures = 0

    @property
    def path(self) -> Path:
        return self.folder / "report.html"

    def __enter__(self) -> LiveReport:
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
            if pq.ParquetFile(self.folder / "epochs.parquet").metadata.num_rows == 0:
                return None
        except (OSError, pa.ArrowException):  # not written yet, or replaced while we looked
            return None
        return tuple((s.st_mtime_ns, s.st_size) for s in stats)

    def tick(self) -> None:
        """One step: collect a finished render, start the next one when it is due."""
        if self._proc is not None:
            if self._proc.poll() is None:
                return
            self._collect()
        stamp = self._stamp()
        if stamp is None or stamp == self._rendered:
            return
        if time.monotonic() - self._started_at < self.every_s:
            return
        self._launch(stamp)

    def command(self, live: bool) -> list[str]:
        cmd = [sys.executable, "-m", "study.analyze", str(self.folder)]
        if live:
            reload_s = str(max(1, round(self.every_s)))
            cmd += ["--running", str(self.total), "--reload", reload_s, "--nice", str(NICE)]
        return cmd

    def _launch(self, stamp: tuple) -> None:
        self._started_at = time.monotonic()  # also when Popen fails: retried after every_s
        self._errors = tempfile.TemporaryFile()
        self._proc = subprocess.Popen(
            self.command(live=True), stdout=subprocess.DEVNULL, stderr=self._errors
        )
        # Lowered now, not by the render itself: its own `--nice` comes after ~1 CPU-s of
        # imports (pandas, Plotly, SciPy), which ran at the trials' priority and slowed them.
        lower_priority(self._proc.pid)
        self._launched = stamp

    def _collect(self) -> None:
        proc, errors = self._proc, self._errors
        self._proc = self._errors = None
        assert proc is not None and errors is not None
        errors.seek(0)
        text = errors.read().decode(errors="replace").strip()
        errors.close()
        if proc.returncode == 0:
            self._rendered = self._launched  # a failed one leaves this: retried next update
            self.renders += 1
            self._last_error = ""
        else:
            self.failures += 1
            self._warn(text.splitlines()[-1] if text else f"exit status {proc.returncode}")

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
        """Stop the thread; a render in flight is let finish, so no temp file is left behind."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._proc is not None:
            try:
                self._proc.wait(timeout=FINAL_WAIT_S)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
            self._collect()

    def final(self) -> None:
        """The report at the end, without the live banner and reload; a failure is logged."""
        if self.every_s <= 0 or self._stamp() is None:
            return  # live reports off, or nothing to report (no epoch finished)
        proc = subprocess.run(self.command(live=False), capture_output=True, text=True)
        if proc.returncode == 0:
            failed = f", {self.failures} failed" if self.failures else ""
            print(f"report: {self.path} ({self.renders} live updates during the sweep{failed})")
        else:
            lines = proc.stderr.strip().splitlines()
            reason = lines[-1] if lines else f"exit status {proc.returncode}"
            print(f"warning: final report not written ({reason}); run python -m study.analyze "
                  f"{self.folder}", file=self.log)  # fmt: skip
