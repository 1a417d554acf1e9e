"""The study lock without Ray: one holder, a lock left by a dead driver or a silent host, a
stopped driver that keeps its lock, and a driver that stops its study when its lock is taken."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time

import pytest

from retina.errors import RetinaError
from study.run.lock import HOLDER_FILE, LOCK_FILE, StudyLock

SHORT_LEASE = 1.5  # seconds: every test's holder and contender agree on it


def _marker(pid: int, host: str) -> str:
    """A lease marker as filelock writes it, of a driver on `host`."""
    return f"filelock/2\npid={pid}\nhost={host}\nmode=lease\ntoken=ab12\nduration={SHORT_LEASE!r}\n"


def _holder(folder, lease: float = SHORT_LEASE) -> subprocess.Popen:
    """A real driver process holding the lock of `folder` until killed."""
    code = textwrap.dedent(f"""
        import sys, time
        from study.run.lock import StudyLock
        StudyLock(sys.argv[1], lease_s={lease!r}).acquire()
        print("held", flush=True)
        time.sleep(120)
    """)
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    proc = subprocess.Popen([sys.executable, "-c", code, str(folder)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_second_holder_is_refused_naming_the_first(tmp_path):
    folder = tmp_path / "study"
    with StudyLock(folder):
        record = json.loads((folder / HOLDER_FILE).read_text())
        assert record["pid"] == os.getpid() and record["host"] == socket.gethostname()
        with pytest.raises(RetinaError) as caught:
            StudyLock(folder).acquire()
        text = str(caught.value)
        assert f"PID {os.getpid()}" in text and socket.gethostname() in text
        assert "since 2" in text and "only one driver" in text  # since <the date it took it>
    assert not folder.exists()  # made by the lock, left empty: removed with it
    with StudyLock(folder):  # released: the next driver takes it
        pass


def test_a_lock_of_a_dead_process_on_this_host_is_taken_over(tmp_path, capsys):
    folder = tmp_path / "study"
    folder.mkdir()
    holder = _holder(folder)
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    with StudyLock(folder, lease_s=SHORT_LEASE) as lock:
        assert json.loads((folder / HOLDER_FILE).read_text()) == lock.owner
    err = capsys.readouterr().err
    assert err.startswith("warning: taking over the lock") and "process has ended" in err
    assert f"PID {holder.pid}" in err
    assert folder.exists()  # not made by the lock: kept


def test_a_stopped_driver_on_this_host_keeps_its_lock_past_its_lease(tmp_path):
    folder = tmp_path / "study"
    holder = _holder(folder)
    try:
        holder.send_signal(signal.SIGSTOP)  # its heartbeat stops with it
        time.sleep(SHORT_LEASE * 2)
        with pytest.raises(RetinaError, match=f"PID {holder.pid}, since 2"):
            StudyLock(folder, lease_s=SHORT_LEASE).acquire()
    finally:
        holder.send_signal(signal.SIGCONT)
        holder.kill()
        holder.wait()


def test_a_lock_from_another_host_is_taken_over_only_once_its_lease_is_stale(tmp_path):
    folder = tmp_path / "study"
    folder.mkdir()
    path = folder / LOCK_FILE
    path.write_text(_marker(1, "other-node"))
    (folder / HOLDER_FILE).write_text(json.dumps({"host": "other-node", "pid": 1, "since": 0}))
    with pytest.raises(RetinaError, match="host other-node, PID 1, since 19"):
        StudyLock(folder, lease_s=SHORT_LEASE).acquire()  # renewed just now: that driver runs
    old = time.time() - SHORT_LEASE - 5
    os.utime(path, (old, old))
    began = time.monotonic()
    with StudyLock(folder, lease_s=SHORT_LEASE):  # after watching it unrenewed for a lease
        assert json.loads((folder / HOLDER_FILE).read_text())["pid"] == os.getpid()
        assert f"pid={os.getpid()}\n" in path.read_text()
    assert time.monotonic() - began >= SHORT_LEASE


def test_a_driver_whose_lock_is_taken_stops_itself(tmp_path):
    folder = tmp_path / "study"
    holder = _holder(folder)
    taker = folder / "taker"
    taker.write_text(_marker(1, "other-node"))
    os.replace(taker, folder / LOCK_FILE)  # another host's driver took it over
    try:
        _, err = holder.communicate(timeout=30)  # stopped as by Ctrl-C, not after its sleep
    finally:
        holder.kill()
    assert holder.returncode != 0 and "KeyboardInterrupt" in err
    assert "was taken by another driver (host other-node, PID 1" in err
    assert "this driver stopped its study" in err
