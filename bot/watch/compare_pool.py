"""The process pool comparisons run in: re-ranking is CPU-bound numpy/scipy work that holds the GIL
for much of a comparison, so threads would leave one core idle and stall the bot's event loop."""

from __future__ import annotations

import multiprocessing
import os
import threading
from concurrent.futures import Executor, ProcessPoolExecutor


class ComparePool:
    """``workers`` processes (0: one per CPU core), started on first use (spawning costs seconds);
    with one, ``get`` is None and comparisons run in the caller's thread. Workers are spawned, not
    forked: the watcher forks from a process with running threads (scheduler, HTTP pool), whose
    held locks a fork would copy."""

    def __init__(self, workers: int):
        self.workers = workers or os.cpu_count() or 1
        self._pool: ProcessPoolExecutor | None = None
        self._lock = threading.Lock()

    def get(self) -> Executor | None:
        if self.workers <= 1:
            return None
        with self._lock:
            if self._pool is None:
                self._pool = ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("spawn"))
            return self._pool

    def drop(self) -> None:
        """Stop the workers; after a broken pool (a worker killed, e.g. out of memory) the next
        ``get`` starts new ones."""
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)

    close = drop
