"""Two drivers resuming one stale study at once: exactly one runs, every time (real processes).

A driver holds the lock and is SIGKILLed (its lock is stale), then two processes start
`StudyLock(folder).acquire()` at the same instant; the one that gets it holds it for a while
and logs its interval. Run: `pytest tests/test_study_lock_race.py`.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

ROUNDS = 20
HOLD_S = 0.6  # the winner holds this long: a loser that got in after it would overlap

# A driver that takes the lock, says so and waits to be killed.
HOLDER = textwrap.dedent("""
    import sys, time
    from study.run.lock import StudyLock
    StudyLock(sys.argv[1]).acquire()
    print("held", flush=True)
    time.sleep(600)
""")

# A resuming driver: waits for the common start instant, then tries the lock.
RACER = textwrap.dedent("""
    import sys, time
    from retina.errors import RetinaError
    from study.run.lock import StudyLock
    folder, start, hold, log = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
    lock = StudyLock(folder)
    time.sleep(max(0.0, start - time.time()))
    try:
        lock.acquire()
    except RetinaError as exc:
        print("refused:", exc, flush=True)
        sys.exit(0)
    began = time.time()
    time.sleep(hold)
    with open(log, "a") as f:
        f.write(f"{began} {time.time()}\\n")
    lock.release()
    print("ran", flush=True)
""")


def _env():
    return {**os.environ, "PYTHONPATH": os.getcwd()}


def _stale_study(folder) -> None:
    """A driver that took the lock of `folder` and was SIGKILLed: its lock is left behind."""
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(folder)], env=_env(),
                              stdout=subprocess.PIPE, text=True)  # fmt: skip
    assert holder.stdout.readline().strip() == "held"
    holder.send_signal(signal.SIGKILL)
    holder.wait()


@pytest.mark.slow
def test_two_drivers_resuming_a_stale_study_at_once_exactly_one_runs(tmp_path):
    outcomes = []
    for round_ in range(ROUNDS):
        folder, log = tmp_path / f"study{round_}", tmp_path / f"ran{round_}.log"
        folder.mkdir()
        _stale_study(folder)
        start = time.time() + 1.0  # both have imported everything by then
        racers = [
            subprocess.Popen(
                [sys.executable, "-c", RACER, str(folder), str(start), str(HOLD_S), str(log)],
                env=_env(),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )  # fmt: skip
            for _ in range(2)
        ]
        outs = [r.communicate(timeout=120) for r in racers]
        assert all(r.returncode == 0 for r in racers), outs
        ran = sum(out.splitlines().count("ran") for out, _ in outs)
        outcomes.append(ran)
    assert outcomes == [1] * ROUNDS, f"drivers that ran, per round: {outcomes}"
