"""The study lock without Ray: one holder, a lock left by a dead driver or a silent host."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import pytest

from retina.errors import RetinaError
from study.run.lock import LOCK_FILE, STALE_S, StudyLock


def test_a_second_holder_is_refused_naming_the_first(tmp_path):
    folder = tmp_path / "study"
    with StudyLock(folder):
        record = json.loads((folder / LOCK_FILE).read_text())
        assert record["pid"] == os.getpid() and record["host"] == socket.gethostname()
        with pytest.raises(RetinaError) as caught:
            StudyLock(folder).acquire()
        text = str(caught.value)
        assert f"PID {os.getpid()}" in text and socket.gethostname() in text
        assert "since" in text and "only one driver" in text
    assert not folder.exists()  # made by the lock, left empty: removed with it
    with StudyLock(folder):  # released: the next driver takes it
        pass


def test_a_lock_of_a_dead_process_on_this_host_is_taken_over(tmp_path, capsys):
    folder = tmp_path / "study"
    folder.mkdir()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout  # fmt: skip
    record = {"host": socket.gethostname(), "pid": int(dead), "process_start": "1",
              "since": time.time()}  # fmt: skip
    (folder / LOCK_FILE).write_text(json.dumps(record))
    with StudyLock(folder) as lock:
        assert json.loads((folder / LOCK_FILE).read_text()) == lock.owner
    err = capsys.readouterr().err
    assert err.startswith("warning: taking over the lock") and "process has ended" in err
    assert folder.exists()  # not made by the lock: kept


def test_a_lock_from_another_host_is_taken_over_only_once_its_heartbeat_is_stale(tmp_path):
    folder = tmp_path / "study"
    folder.mkdir()
    path = folder / LOCK_FILE
    record = {"host": "other-node", "pid": 1, "process_start": "1", "since": time.time()}
    path.write_text(json.dumps(record))
    with pytest.raises(RetinaError, match="host other-node, PID 1"):
        StudyLock(folder).acquire()  # its heartbeat is fresh: that driver is running
    old = time.time() - STALE_S - 5
    os.utime(path, (old, old))
    with StudyLock(folder):
        assert json.loads(path.read_text())["pid"] == os.getpid()
