"""Helpers for the reliability tests: real sweeps as processes, their process trees, polling
the Parquet files, listening sockets and small tmpfs mounts.

No psutil: processes and sockets are read from /proc, so these helpers need nothing beyond
the project's own dependencies.
"""

from __future__ import annotations

import contextlib
import io
import ipaddress
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pandas as pd
from cli_helpers import ROOT

# A sweep small enough for 2 cores: resnet18 from scratch at 32 px, no ASHA (every trial runs
# all its epochs), random search (configs fixed by the seed, whatever order trials finish in).
TINY = [
    "--set",
    "data.image_size=32",
    "--set",
    "space.arch=resnet18",
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
]  # fmt: skip  (a test that kills in confirm sets it)
PARQUET_FILES = ("trials.parquet", "epochs.parquet", "confusion.parquet")


def sweep_args(data: Path, results: Path, name: str, *extra: str) -> list[str]:
    return ["study.sweep", "search_spaces/demo.yaml", "--data", str(data),
            "--results", str(results), "--name", name, *TINY, *extra]  # fmt: skip


def start_sweep(args: list[str], log: Path, **kwargs) -> subprocess.Popen:
    """`python -m <args>` in the background, output to `log`, in its own process group."""
    with open(log, "wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", *args], cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True, **kwargs,
        )  # fmt: skip


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
