"""A short soak (tests/soak.py): the real watcher through one round of Hub fault waves loses nothing.

The long run with memory figures is benchmarks/soak.py; this one proves, in ~20 s, that a 429
storm the client gives up on, a 5xx burst and slow, truncated answers cost no repo and no alert,
and that every alert is posted exactly once across webhook 429s and 502s.
"""

from __future__ import annotations

import pytest

from soak import FAULT_WAVES, run_soak

pytestmark = pytest.mark.slow  # a watcher under fault storms against the fake Hub in a child process

# FAULT_WAVES with a shorter 5xx burst: 2 answers (1 s + 2 s of backoff) instead of 4 (15 s).
QUICK_WAVES = tuple((name, {**faults, "errors_5xx": 2} if "errors_5xx" in faults else faults)
                    for name, faults in FAULT_WAVES)


@pytest.mark.timeout(180)
def test_one_round_of_fault_waves_loses_nothing(tmp_path, minilm_dir):
    report = run_soak(tmp_path, minilm_dir, duration_s=0, min_cycles=len(QUICK_WAVES), waves=QUICK_WAVES)
    assert [c.wave for c in report.cycles] == ["429 storm", "5xx burst", "slow + truncated", "429s on resolves",
                                               "calm"]
    storm = report.cycles[0]
    assert storm.hub_429 >= 6 and storm.errors >= 1 and storm.fingerprinted == 0  # gave up, polled on
    assert report.cycles[1].hub_5xx == 2
    resolves = report.cycles[3]
    assert resolves.hub_429 == 3 and resolves.errors == 0 and resolves.fingerprinted == 2  # waited, read on
    assert len(report.published) == 10 and report.copies == 5
    assert report.problems(max_slope_kib=float("inf")) == []  # memory is judged by the long run
    assert report.copies_alerted == 5 and sorted(report.posts_per_alert.values()) == [1] * 5
