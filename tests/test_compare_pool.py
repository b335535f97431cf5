"""The comparison process pool: started on first use, replaced after a worker died."""

from __future__ import annotations

import os
from concurrent.futures.process import BrokenProcessPool

import pytest

from bot.watch.compare_pool import ComparePool


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
