"""Worker processes for the CPU-bound loops (cache build, synthetic renders, grading).

from retina.pools import worker_pool
with worker_pool(4) as pool:
    results = list(pool.imap(work, tasks))
"""

from __future__ import annotations

import multiprocessing
import signal
from multiprocessing.pool import Pool


def pool_context():
    """fork where the OS has it, as torch's DataLoader does: workers only run PIL and numpy
    (never CUDA), and unlike spawn it does not re-run a caller's script that lacks an
    `if __name__ == "__main__"` guard (spawn would respawn failing workers forever)."""
    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("fork" if "fork" in methods else "spawn")


def _default_sigterm() -> None:
    # A forked worker inherits the caller's SIGTERM handler. Leaving the `with` block calls
    # Pool.terminate(), which holds the task queue's lock and SIGTERMs the workers: a worker
    # waiting for that lock under a handler that returns (asyncio's no-op handler, a
    # library's "shut down gracefully" flag) never exits, and the caller waits on it forever.
    # Seen in the test suite after an in-process Ray cluster: a cache build hung for minutes.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def worker_pool(workers: int) -> Pool:
    """A process pool whose workers always die on Pool.terminate()."""
    return pool_context().Pool(workers, initializer=_default_sigterm)
