"""Soak benchmark: the real watcher for minutes against the fake Hub under waves of faults.

Each cycle publishes an undeclared copy and an independent model, then runs one watcher cycle
while the Hub storms 429s, bursts 5xx, answers slowly or truncates bodies (tests/soak.py has the
details). Prints one line per cycle, then the totals: what was published and fingerprinted (lost
must be 0), alerts (every copy once, no independent model), Hub errors survived, and this
process's resident memory — start, after warm-up, end, and the slope over the second half.
Exits 1 when anything was lost or posted twice, or memory grew faster than --max-slope-kib.

    python benchmarks/soak.py               # 10 minutes
    python benchmarks/soak.py --minutes 1   # a quick look
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from soak import CycleFigures, rss_kib, run_soak  # noqa: E402
from variants import minilm_dir  # noqa: E402

# Growth allowed over the second half of the run. The store grows by two models a cycle and is
# reopened every cycle, so nothing should accumulate; 64 KiB/cycle is ~40 MB over a day of
# 2-minute cycles, far more than any bounded cache and far less than a fingerprint kept per cycle
# (~0.25 MB for these models).
DEFAULT_MAX_SLOPE_KIB = 64.0
# The resident set is also reported "after warm-up": once every fault wave has run twice.
WARM_UP_CYCLES = 8


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="how long to keep publishing (default 10)")
    parser.add_argument("--max-slope-kib", type=float, default=DEFAULT_MAX_SLOPE_KIB,
                        help=f"allowed memory growth per cycle over the second half (default {DEFAULT_MAX_SLOPE_KIB:g})")
    args = parser.parse_args(argv)

    started_rss = rss_kib()
    started = time.monotonic()

    def progress(c: CycleFigures) -> None:
        print(f"cycle {c.cycle:4d} {c.wave:<17} {c.seconds:6.1f} s  fingerprinted {c.fingerprinted}  "
              f"alerts {c.alerts_enqueued}  errors {c.errors}  429s {c.hub_429}  5xx {c.hub_5xx}  "
              f"rss {c.rss_kib / 1024:.1f} MiB  objects {c.objects:,}", flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        report = run_soak(Path(tmp), minilm_dir(), duration_s=args.minutes * 60, min_cycles=2 * WARM_UP_CYCLES,
                          progress=progress)
    cycles = report.cycles
    warm = cycles[min(WARM_UP_CYCLES, len(cycles)) - 1]
    published = len(report.published)
    print()
    print(f"duration:              {(time.monotonic() - started) / 60:.1f} min, {len(cycles)} cycles")
    print(f"published:             {published} repos ({report.copies} undeclared copies, "
          f"{published - report.copies} independent)")
    print(f"fingerprinted:         {published - len(report.lost)}, lost {len(report.lost)}")
    print(f"alerts:                {report.copies_alerted}/{report.copies} copies alerted, "
          f"{len(report.independents_alerted)} independent alerted, {report.alerts_in_store} in the outbox, "
          f"{report.alerts_undelivered} undelivered, {report.duplicate_posts} posted twice")
    print(f"Hub faults survived:   {sum(c.hub_429 for c in cycles)} 429s, {sum(c.hub_5xx for c in cycles)} 5xx; "
          f"cycle errors {sum(c.errors for c in cycles)} (retried next cycle)")
    print(f"resident memory:       start {started_rss / 1024:.1f} MiB, after {warm.cycle} cycles "
          f"{warm.rss_kib / 1024:.1f} MiB, end {cycles[-1].rss_kib / 1024:.1f} MiB, "
          f"slope over the second half {report.rss_slope_kib_per_cycle():+.1f} KiB/cycle")
    print(f"live Python objects:   after {warm.cycle} cycles {warm.objects:,}, end {cycles[-1].objects:,}")
    problems = report.problems(args.max_slope_kib)
    for problem in problems:
        print(f"PROBLEM: {problem}")
    print("OK" if not problems else f"{len(problems)} problem(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
