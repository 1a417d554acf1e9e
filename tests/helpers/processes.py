"""Helpers for the reliability tests: real sweeps as processes, their process trees, polling
the Parquet files, listening sockets and small tmpfs mounts.

No psutil: processes and sockets are read from /proc, so these helpers need nothing beyond
the project's own dependencies.
"""

from __future__ import annotations

import contextlib
import io
import ipaddress
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pandas as pd

from tests.helpers.cli import ROOT

# A sweep small enough for 2 cores: resnet18 from scratch at 32 px, no ASHA (every trial runs
# all its epochs), random search (configs fixed by the seed, whatever order trials finish in).
TINY = [
    "--set",
    "data.image_size=32",
    "--set",
    "space.arch=resnet18",
    "--set",
    "space.head=classify",
    "--set",
    "space.pretrained=false",
    "--set",
    "space.batch_size=16",
    "--set",
    "scheduler.name=none",
    "--set",
    "test_top_k=1",
    "--set",
    "confirm.seeds=0",
    "--set",
    "export=false",
]  # fmt: skip  (a test that kills in confirm sets it; export: test_export.py, ~6 CPU-s a sweep)
PARQUET_FILES = ("trials.parquet", "epochs.parquet", "confusion.parquet")


# Sweeps that do not look at the dashboard start Ray without it: ~4 CPU-s less per start (the
# shared small sweep and the security tests keep the default, 127.0.0.1).
NO_DASHBOARD = ["--dashboard-host", "off"]
# Nor the live report: its render process costs ~2-4 CPU-s a sweep (study.run.live_report; its
# own tests: test_live_report.py; the Ctrl-C, disk-full and umask tests keep it).
NO_REPORT = ["--report-every", "0"]


def sweep_args(
    data: Path, results: Path, name: str, *extra: str, dashboard: bool = False,
    report: bool = False,
) -> list[str]:  # fmt: skip
    """A TINY sweep's command line; without the dashboard and the live report unless asked
    (their own tests, and those that check what they write, ask for them)."""
    return ["study.sweep", "search_spaces/demo.yaml", "--data", str(data),
            "--results", str(results), "--name", name, *TINY,
            *([] if dashboard else NO_DASHBOARD), *([] if report else NO_REPORT), *extra]  # fmt: skip


def start_sweep(args: list[str], log: Path, **kwargs) -> subprocess.Popen:
    """`python -m <args>` in the background, output to `log`, in its own process group."""
    with open(log, "wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", *args], cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True, **kwargs,
        )  # fmt: skip


class Sweep:
    """A sweep started by `running_sweep`: its driver, its log, and every process it started
    (gathered at each poll, so they can be killed after the driver is)."""

    def __init__(self, driver: subprocess.Popen, log: Path):
        self.driver, self.log = driver, Path(log)
        self.tree: dict[int, str] = {}

    def wait_for(self, condition: Callable[[], object], timeout: float, what: str):
        def polled():
            self.tree.update(descendants(self.driver.pid))  # Ray's processes, for the clean-up
            return condition()

        return wait_for(polled, timeout, what, self.driver, self.log)

    def kill(self) -> None:
        """SIGKILL the driver: no handler, no clean-up (a crash or an OOM kill)."""
        self.driver.send_signal(signal.SIGKILL)
        self.driver.wait(timeout=30)

    def output(self) -> str:
        return self.log.read_text(errors="replace")


@contextlib.contextmanager
def running_sweep(args: list[str], log: Path, hold: tuple[int, Path] | None = None, **kwargs):
    """`python -m <args>` in the background (`start_sweep`); on leaving, the driver and every
    process it started are killed, whatever the test did.

    `hold=(epoch, file)`: each trial stops after it reported `epoch` until `file` is deleted
    (study.run.trainable.HOLD_ENV), so a test acts at a known point on any machine.
    """
    if hold is not None:
        epoch, file = hold
        Path(file).touch()
        env = {**os.environ, **kwargs.pop("env", {}), "RETINA_TEST_HOLD": f"{epoch}:{file}"}
        kwargs["env"] = env
    sweep = Sweep(start_sweep(args, log, **kwargs), log)
    try:
        yield sweep
    finally:
        if hold is not None:
            Path(hold[1]).unlink(missing_ok=True)
        sweep.driver.kill()
        kill_tree(list(sweep.tree | descendants(sweep.driver.pid)))


def kill_driver_when(
    args: list[str], log: Path, condition: Callable[[], object], timeout: float, what: str
) -> subprocess.Popen:
    """Start a sweep, SIGKILL its driver once `condition()` holds, clean up every process it
    started; returns the killed driver (its returncode is -SIGKILL)."""
    with running_sweep(args, log) as sweep:
        sweep.wait_for(condition, timeout, what)
        sweep.kill()
    assert sweep.driver.returncode == -signal.SIGKILL, sweep.output()[-3000:]
    return sweep.driver


# ---- processes ---------------------------------------------------------------------------
def _ppid_and_cmdline(pid: int) -> tuple[int, str] | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    ppid = int(stat.rsplit(")", 1)[1].split()[1])  # the command in (...) may hold spaces
    return ppid, cmdline.replace(b"\0", b" ").decode(errors="replace").strip()


def descendants(pid: int) -> dict[int, str]:
    """Every living descendant of `pid`: {pid: command line (Ray's process titles)}."""
    table = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (info := _ppid_and_cmdline(int(entry))) is not None:
            table[int(entry)] = info
    out, frontier = {}, {pid}
    while frontier:
        children = {p for p, (ppid, _) in table.items() if ppid in frontier and p not in out}
        out |= {p: table[p][1] for p in children}
        frontier = children
    return out


def kill_tree(pids: Iterator[int] | list[int]) -> None:
    """SIGKILL each pid that is still alive (our own processes only: passed in explicitly)."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def trial_workers(driver_pid: int) -> list[int]:
    """Pids of the Ray workers running a trial: Tune's function-trainable actor sets the
    process title `ray::ImplicitFunc` (`.train` while it trains)."""
    return [p for p, cmd in descendants(driver_pid).items() if cmd.startswith("ray::ImplicitFunc")]


def wait_for(condition: Callable[[], object], timeout: float, what: str, proc=None, log=None):
    """Poll `condition` until it returns something truthy; fail with the log after `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            break
        time.sleep(0.25)
    tail = Path(log).read_text(errors="replace")[-4000:] if log else ""
    raise AssertionError(f"timed out waiting for {what}\n{tail}")


# ---- results -----------------------------------------------------------------------------
def journal_events(folder: Path, name: str = "epoch") -> list[dict]:
    """The journal's whole lines of one kind of event (the driver writes it before Parquet)."""
    path = Path(folder) / "journal.jsonl"
    data = path.read_bytes() if path.exists() else b""
    events = [json.loads(line) for line in data[: data.rfind(b"\n") + 1].splitlines()]
    return [e for e in events if e.get("event") == name]


def journal_epochs(folder: Path) -> dict[tuple[str, int], float]:
    """(trial, epoch) -> time_total_s of each epoch the journal holds (whole lines only)."""
    return {
        (e["trial"], int(e["result"]["epoch"])): e["result"].get("time_total_s")
        for e in journal_events(folder)
    }


def read_frame(folder: Path, name: str) -> pd.DataFrame | None:
    """A results table, or None while the sweep has not written it yet. Read in one open, as
    a poller would: the sweep may replace the file between a check and a second open."""
    try:
        return pd.read_parquet(io.BytesIO((folder / name).read_bytes()))
    except FileNotFoundError:
        return None


class ParquetPoller(threading.Thread):
    """Reads every results file in a loop while a sweep runs; remembers any failed read."""

    def __init__(self, folder: Path, interval: float = 0.02):
        super().__init__(daemon=True)
        self.folder, self.interval = folder, interval
        self.stop = threading.Event()
        self.reads, self.failures = 0, []

    def run(self) -> None:
        while not self.stop.is_set():
            for name in PARQUET_FILES:
                path = self.folder / name
                try:
                    data = path.read_bytes()  # one open: what a reader sees at this moment
                except FileNotFoundError:
                    continue
                try:
                    pd.read_parquet(io.BytesIO(data))
                    self.reads += 1
                except Exception as exc:  # any failed read is the finding
                    self.failures.append(f"{name}: {type(exc).__name__}: {exc}")
            time.sleep(self.interval)


# ---- sockets -----------------------------------------------------------------------------
def listening_addresses(port: int) -> set[str]:
    """Local addresses (IPv4 and IPv6, as text) with a socket listening on `port`."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table) as fh:
            next(fh)
            for line in fh:
                local, state = line.split()[1], line.split()[3]
                addr, hexport = local.split(":")
                if state != "0A" or int(hexport, 16) != port:  # 0A: TCP_LISTEN
                    continue
                found.add(_address(addr))
    return found


def _address(hexaddr: str) -> str:
    raw = bytes.fromhex(hexaddr)
    # /proc/net/tcp* prints each 32-bit word in host (little-endian) order.
    raw = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
    return str(ipaddress.ip_address(raw))


# ---- file systems ------------------------------------------------------------------------
@contextlib.contextmanager
def tmpfs(folder: Path, size: str, read_only: bool = False):
    """A small tmpfs mounted at `folder` (root only); skips the test where mounting is refused."""
    import pytest

    folder.mkdir(parents=True, exist_ok=True)
    options = f"size={size},mode=0755" + (",ro" if read_only else "")
    proc = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)],
        capture_output=True, text=True,
    )  # fmt: skip
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({proc.stderr.strip()}); needs root")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)


def fill(folder: Path) -> None:
    """Write into `folder` until its file system has no byte left (unbuffered: nothing is
    held back to fail at close)."""
    with open(folder / "filler", "wb", buffering=0) as fh:
        for size in (1 << 20, 4096, 1):
            with contextlib.suppress(OSError):
                while True:
                    fh.write(bytes(size))
