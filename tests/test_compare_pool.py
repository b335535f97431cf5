"""The comparison process pool: started on first use, replaced after a worker died."""

from __future__ import annotations

import os
from concurrent.futures.process import BrokenProcessPool

import pytest

from bot.watch.compare_pool import BLAS_THREADS, ComparePool


def test_one_worker_means_no_pool():
    assert ComparePool(1).get() is None


@pytest.mark.slow
def test_a_pool_whose_worker_died_is_replaced_on_the_next_use():
    pool = ComparePool(2)
    try:
        first = pool.get()
        assert pool.get() is first  # started once
        with pytest.raises(BrokenProcessPool):
            first.submit(os._exit, 1).result()
        pool.drop()
        second = pool.get()
        assert second is not first and second.submit(abs, -3).result() == 3
    finally:
        pool.close()


def blas_threads() -> list[int]:
    from threadpoolctl import threadpool_info

    return [lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"]


@pytest.mark.slow
def test_the_owning_process_and_the_workers_use_one_blas_thread_each():
    """One worker per core already, and the owner fingerprints in threads beside them: BLAS threads
    of their own would only contend with each other."""
    pool = ComparePool(2)
    try:
        assert set(blas_threads()) == {BLAS_THREADS}
        threads = pool.get().submit(blas_threads).result()
        assert threads and set(threads) == {BLAS_THREADS}
    finally:
        pool.close()


def plotting_loaded() -> bool:
    import sys

    return "matplotlib.pyplot" in sys.modules


@pytest.mark.slow
def test_start_spawns_every_worker_and_loads_plotting_when_asked():
    pool = ComparePool(2)
    try:
        assert pool.running() is None  # not started by asking whether it runs
        pool.start(draws_plots=True)
        executor = pool.running()
        assert executor is not None and len(executor._processes) == 2  # both spawned, not on demand
        assert all(executor.submit(plotting_loaded).result() for _ in range(4))
    finally:
        pool.close()
