"""The process pool comparisons run in: re-ranking is CPU-bound numpy/scipy work that holds the GIL
for much of a comparison, so threads would leave one core idle and stall the bot's event loop."""

from __future__ import annotations

import multiprocessing
import os
import threading
from concurrent.futures import Executor, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from threadpoolctl import threadpool_limits

# BLAS threads in every process that compares: the pool's workers, one per core, and the process
# that owns the pool (its fingerprinting threads, and its comparisons when there is no pool). Each
# is already one of several busy threads or processes, so OpenBLAS's own threads (one per core by
# default) only contend, spinning while they wait: on this shared 2-core machine a Llama-7B-shaped
# comparison cost 0.31 s of CPU with 2 BLAS threads and 0.10 s with 1 (the Gram of its 64 x 4096
# embedding rows 0.19 s and 0.01 s), the verdict the same; a watcher poll of 20 new models of the
# mix (benchmarks/throughput.py) 65.4 s of CPU with one BLAS thread in the workers only, 56.1 s with
# one everywhere.
BLAS_THREADS = 1


def _start_worker(draws_plots: bool) -> None:
    limit_blas_threads()
    if draws_plots:
        from fingerprints.plot import load_matplotlib

        load_matplotlib()


def _started() -> None:
    """A task that only proves its worker is up."""


def limit_blas_threads() -> None:
    """This process's BLAS libraries to BLAS_THREADS. The comparison's modules are imported first:
    threadpoolctl limits the libraries loaded when it is called."""
    import fingerprints.compare  # noqa: F401

    threadpool_limits(BLAS_THREADS)


class ComparePool:
    """``workers`` processes (0: one per CPU core), started on first use (spawning costs seconds);
    with one, ``get`` is None and comparisons run in the caller's thread. Workers are spawned, not
    forked: the watcher forks from a process with running threads (scheduler, HTTP pool), whose
    held locks a fork would copy."""

    def __init__(self, workers: int):
        limit_blas_threads()  # in this process, which fingerprints and may compare beside the workers
        self.workers = workers or os.cpu_count() or 1
        self._pool: ProcessPoolExecutor | None = None
        self._lock = threading.Lock()

    def get(self, draws_plots: bool = False) -> Executor | None:
        """The pool, started now if it is not running (workers spawn as tasks arrive). ``draws_plots``:
        a pool started now has its workers load matplotlib too (~1 s each), for alerts' plots."""
        if self.workers <= 1:
            return None
        with self._lock:
            if self._pool is None:
                self._pool = ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("spawn"),
                                                 initializer=_start_worker, initargs=(draws_plots,))
            return self._pool

    def running(self) -> Executor | None:
        """The pool if it is started, else None: one comparison or one plot is not worth spawning
        workers for (each costs ~1 s of CPU to import numpy, scipy and the comparison)."""
        with self._lock:
            return self._pool

    def start(self, draws_plots: bool = False) -> None:
        """Spawn every worker now, not as tasks arrive, and wait for them: the state of a watcher
        that has run for a while (benchmarks/throughput.py measures a poll in it). ``draws_plots``:
        each loads matplotlib too, as it would for the first alert plot it draws."""
        pool = self.get(draws_plots)
        if pool is not None:
            for ready in [pool.submit(_started) for _ in range(self.workers)]:
                ready.result()

    def drop(self) -> None:
        """Stop the workers; after a broken pool (a worker killed, e.g. out of memory) the next
        ``get`` starts new ones."""
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)

    def renew_if_broken(self) -> None:
        """Stop the workers when one died (a broken pool refuses new work), so that the next ``get``
        starts new ones; a working pool, which other threads may be using, is left alone."""
        with self._lock:
            pool = self._pool
            try:
                if pool is not None:
                    pool.submit(int).cancel()  # nothing to run: only the refusal tells
                return
            except BrokenProcessPool:
                self._pool = None
        pool.shutdown(wait=False, cancel_futures=True)

    close = drop
