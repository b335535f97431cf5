"""The process pool comparisons run in: re-ranking is CPU-bound numpy/scipy work that holds the GIL
for most of a comparison, so threads would leave one core idle and stall the bot's event loop."""

from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import Executor, ProcessPoolExecutor


def compare_pool(workers: int) -> Executor | None:
    """A pool of ``workers`` processes (0: one per CPU core); None for one, comparisons then run in
    the caller's thread. Workers are spawned, not forked: the watcher forks from a process with
    running threads (scheduler, HTTP pool), whose held locks a fork would copy."""
    count = workers or os.cpu_count() or 1
    if count <= 1:
        return None
    return ProcessPoolExecutor(count, mp_context=multiprocessing.get_context("spawn"))
