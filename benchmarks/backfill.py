"""Backfill throughput: models/h with 1 and 2 Dask worker processes against the fake Hub at 50 ms/request.

The fake Hub (in a child process, as the real one runs elsewhere) serves copies of the real
all-MiniLM-L6-v2 under distinct names, listed 10 per page; each run fingerprints all of them into
a fresh store on a fresh loopback cluster (``backfill.threads_per_worker`` models at once per
process), compares them with the store and decides the alerts, as every backfill does (copies of
one model: every comparison finds a match). models/h is printed end to end (first job submitted
to the alerts delivered) and warm (from the first result on, once the workers have imported
hubwatch); cluster start-up apart. On a shared 2-core machine the ratio between the rows says more
than the figures.

    python benchmarks/backfill.py [--models 16]
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from bot.app import App  # noqa: E402
from bot.backfill.driver import Summary, run_backfill  # noqa: E402
from bot.backfill.sources import HubListing  # noqa: E402
from bot.settings import load_settings  # noqa: E402
from fake_world import FakeWorld  # noqa: E402
from hubfixtures import link_minilm  # noqa: E402
from store.store import Store  # noqa: E402
from variants import minilm_dir  # noqa: E402

LATENCY_MS = 50
WORKER_COUNTS = (1, 2)
PAGE_SIZE = 10


def run(endpoint: str, workers: int, db: Path) -> tuple[float, Summary]:
    """(cluster start-up s, summary) of one backfill with ``workers`` processes."""
    settings = load_settings(env={"HF_ENDPOINT": endpoint, "HUBWATCH_DB": str(db),
                                  "HUBWATCH_BACKFILL_WORKERS": str(workers)})
    with App.of(settings) as app, Store.open(db) as store:
        started = time.monotonic()
        summary = run_backfill(app, settings, store, HubListing(app.hub, page_size=PAGE_SIZE), stream=io.StringIO())
        total = time.monotonic() - started
    return total - summary.elapsed_s, summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=int, default=16)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        hub_root = Path(tmp) / "hub"
        for i in range(args.models):
            link_minilm(hub_root / f"org{i % 7}/minilm-copy-{i}", minilm_dir())
        with FakeWorld(str(hub_root)) as world:
            world.hub_faults(latency_ms=LATENCY_MS)
            print(f"{args.models} models (all-MiniLM-L6-v2 copies, ~138 requests each), fake Hub at {LATENCY_MS} ms/request")
            for workers in WORKER_COUNTS:
                startup, s = run(world.endpoint, workers, Path(tmp) / f"w{workers}.db")
                warm = (s.fingerprinted - 1) / (s.finished - s.first_result) * 3600
                print(f"workers={workers}: {s.models_per_hour:,.0f} models/h end to end, {warm:,.0f} models/h warm "
                      f"({s.fingerprinted} fingerprinted; first result after {s.first_result - s.started:.1f} s; "
                      f"cluster start-up {startup:.1f} s; {s.matching.compared} compared, {s.matching.alerts} alerts, "
                      f"{s.matching.seconds:.1f} s of {s.elapsed_s:.1f} s comparing and deciding)")


if __name__ == "__main__":
    main()
