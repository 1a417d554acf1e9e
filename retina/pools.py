"""Worker processes for the CPU-bound loops (cache build, synthetic renders, grading).

from retina.pools import worker_pool
with worker_pool(4) as pool:
    results = list(pool.imap(work, tasks))
"""

from __future__ import annotations

import multiprocessing
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from multiprocessing.pool import Pool


def pool_context():
    """fork where the OS has it, as torch's DataLoader does: workers only run PIL and numpy
    (never CUDA), and unlike spawn it does not re-run a caller's script that lacks an
    `if __name__ == "__main__"` guard (spawn would respawn failing workers forever)."""
    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("fork" if "fork" in methods else "spawn")


def _default_sigterm() -> None:
    # A forked worker inherits the caller's SIGTERM handler, which may return (asyncio's no-op
    # handler, a library's "stop gracefully" flag): Pool.terminate() holds the task queue's
    # lock and SIGTERMs the workers, and one that survives waits for that lock forever. The
    # worker was started with SIGTERM blocked (worker_pool), so a SIGTERM sent before this
    # line is held back until the default action is in place.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})


@contextmanager
def worker_pool(workers: int) -> Iterator[Pool]:
    """A process pool that always ends: closed and joined after the block (the workers leave
    on their sentinel, no signal needed), terminated on an error, its workers dying on SIGTERM
    whatever handler the caller has. Seen in the test suite: a cache build whose just-forked
    worker swallowed terminate()'s SIGTERM in the inherited handler hung for minutes."""
    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})  # inherited by forks
    try:
        pool = pool_context().Pool(workers, initializer=_default_sigterm)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
    try:
        yield pool
        pool.close()
    except BaseException:
        pool.terminate()
        raise
    finally:
        pool.join()
