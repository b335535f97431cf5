"""Watcher throughput for the Hub's mix: models per hour and stored bytes per model.

One poll of the newest feed by the real watcher (``App.watcher``: fingerprinting over HTTP, the
candidate search, the compact screen, comparisons in a process pool of 2, the outbox) against the
fake Hub in a child process at 50 ms per request, over a store of ``--store-models`` real-shaped
models (benchmarks/population.py; built once and cached, each run works on a copy). The new models
are the mix: half MiniLM-sized (the real MiniLM variants of tests/variants.py: copies, fine-tunes,
independent models), 40 % Llama-2-7B-shaped, 10 % Grok-1-shaped; the big ones are sparse
checkpoints with realistic bf16 values written into every range a fingerprint reads (not zeros).

    python benchmarks/throughput.py                         # 20 new models, 100k-model store
    python benchmarks/throughput.py --models 10 --store-models 20000

Prints ``models_per_hour=N`` (new models over this run's wall-clock time) and ``bytes_per_model=N``
(store growth per new model: its rows, compact or full blob, index rows, matches, alerts), what
the new rows hold, then what the time went to. The machine is shared: the load average is printed with them.
"""

from __future__ import annotations

import contextlib
import io
import json
import os

os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
import argparse
import shutil
import sqlite3
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import population  # noqa: E402  (puts the repository root and tests/ on sys.path)
from index import peak_rss_mib, worker_cpu_s, worker_peak_rss_mib  # noqa: E402

import bigmodels  # noqa: E402
import variants  # noqa: E402
from fake_world import FakeWorld  # noqa: E402

from bot.app import App  # noqa: E402
from bot.settings import load_settings  # noqa: E402

LATENCY_MS = 50
SMALL_VARIANTS = ("noise-0.05", "finetune-light", "fresh-init-seed1", "reupload-renamed", "independent-trained",
                  "finetune-heavy", "permute-hidden", "fresh-init-seed2", "cast-bf16", "vocab-extend")
CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "hubwatch" / "bench"


def publish(root: Path, models: int, log) -> int:
    """Put ``models`` new repos of the mix on the fake Hub; returns the bytes a full download would take."""
    small, large = models // 2, max(1, models // 10)
    mid = models - small - large
    cache = variants.default_cache_dir()
    built = variants.build_all(cache)
    now = datetime.now(timezone.utc)
    total = 0

    def meta(folder: Path, i: int) -> None:
        created = (now - timedelta(seconds=i)).strftime("%Y-%m-%dT%H:%M:%S.000Z")
        (folder / "_hub.json").write_text(json.dumps({"createdAt": created, "lastModified": created}))

    i = 0
    for n in range(small):
        folder = root / "small" / f"model-{n}"
        folder.mkdir(parents=True)
        source = built[SMALL_VARIANTS[n % len(SMALL_VARIANTS)]]
        for f in source.iterdir():
            if f.is_file():
                os.symlink(f, folder / f.name)
                total += f.stat().st_size
        meta(folder, i)
        i += 1
    for label, count, build in (("mid", mid, bigmodels.build_llama7b_sharded), ("large", large, bigmodels.build_grok1_314b)):
        for n in range(count):
            folder = root / label / f"model-{n}"
            _, size = build(folder)
            population.fill_read_ranges(folder, seed=1000 * len(label) + n)
            meta(folder, i)
            total += size
            i += 1
    log(f"published {small} small, {mid} 7B-shaped, {large} Grok-shaped models")
    return total


def store_bytes(path: str) -> int:
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    size = conn.execute("PRAGMA page_count").fetchone()[0] * conn.execute("PRAGMA page_size").fetchone()[0]
    free = conn.execute("PRAGMA freelist_count").fetchone()[0] * conn.execute("PRAGMA page_size").fetchone()[0]
    conn.close()
    return size - free


def growth(path: str, first_fingerprint: int, first_match: int, first_alert: int) -> str:
    """What the new rows hold: fingerprint blobs by tier, match evidence, alert payloads (plots)."""
    conn = sqlite3.connect(path)
    tiers = conn.execute("SELECT tier, count(*), sum(length(blob)) FROM fingerprints WHERE id >= ? GROUP BY tier",
                         (first_fingerprint,)).fetchall()
    matches = conn.execute("SELECT count(*), coalesce(sum(length(evidence)), 0) FROM matches WHERE id >= ?",
                           (first_match,)).fetchone()
    alerts = conn.execute("SELECT count(*), coalesce(sum(length(payload)), 0) FROM alerts WHERE id >= ?",
                          (first_alert,)).fetchone()
    conn.close()
    blobs = ", ".join(f"{n} {tier} ({total // n:,} B each)" for tier, n, total in tiers)
    return (f"# new rows: fingerprint blobs {blobs}; {matches[0]} matches ({matches[1]:,} B of evidence); "
            f"{alerts[0]} alerts ({alerts[1]:,} B, the evidence plot included). Compact: a model in no copy "
            f"relation; full: one in a relation (weights or tokenizer copied), kept as evidence")


def next_ids(path: str) -> tuple[int, int, int]:
    conn = sqlite3.connect(path)
    ids = tuple(conn.execute(f"SELECT coalesce(max(id), 0) + 1 FROM {table}").fetchone()[0]
                for table in ("fingerprints", "matches", "alerts"))
    conn.close()
    return ids


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", type=int, default=20, help="new models in the poll (default 20)")
    ap.add_argument("--store-models", type=int, default=100_000, help="models already stored (default 100,000)")
    ap.add_argument("--family", type=int, default=1000, help="fine-tunes of one base among them (default 1,000)")
    args = ap.parse_args()
    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    CACHE.mkdir(parents=True, exist_ok=True)
    cached = CACHE / f"population-{args.store_models}-{args.family}.db"
    population.build(str(cached), args.store_models, args.family, log=log)
    with tempfile.TemporaryDirectory() as tmp:
        db = os.path.join(tmp, "store.db")
        shutil.copy(cached, db)
        # Written back before the clock starts: the poll's first WAL checkpoint fsyncs the database and
        # would wait for the whole copy to reach the disk (4.9 s for the 2.7 GB 100k store, measured),
        # which a watcher on its own long-lived store never does.
        with open(db, "rb") as copied:
            os.fsync(copied.fileno())
        first_ids = next_ids(db)
        root = Path(tmp) / "hub"
        publish(root, args.models, log)
        with FakeWorld(str(root)) as hub:
            hub.hub_faults(latency_ms=LATENCY_MS)
            env = {"HF_ENDPOINT": hub.endpoint, "HF_TOKEN": "", "HUBWATCH_DB": db,
                   "HUBWATCH_FEEDS_TRENDING_ENABLED": "false", "HUBWATCH_FEEDS_LAST_MODIFIED_ENABLED": "false",
                   "HUBWATCH_FEEDS_MAX_MODELS_PER_CYCLE": str(args.models), "HUBWATCH_COMPARE_WORKERS": "2"}
            with App.of(load_settings(env=env)) as app:
                watcher = app.watcher()
                # Workers up with matplotlib loaded, as in a watcher past its first alerts.
                app.compare_pool.start(draws_plots=True)
                pool = app.compare_pool.get()
                before = store_bytes(db)
                workers0 = worker_cpu_s(pool)
                cpu0, t0 = time.process_time() + workers0, time.perf_counter()
                with contextlib.redirect_stdout(io.StringIO()):  # the console alert sender's output
                    summary = watcher.poll_feed("newest")
                wall = time.perf_counter() - t0
                workers_cpu = worker_cpu_s(pool) - workers0
                cpu = time.process_time() + workers0 + workers_cpu - cpu0
                worker_rss = worker_peak_rss_mib(pool)
        after = store_bytes(db)
        grown = growth(db, *first_ids)
    done = summary.fingerprinted
    print(f"models_per_hour={round(done / wall * 3600)}")
    print(f"bytes_per_model={round((after - before) / max(1, done))}")
    print(f"# {done} of {args.models} new models fingerprinted and matched in {wall:.1f} s wall, {cpu:.1f} s CPU "
          f"(this process and the 2 comparison workers, {workers_cpu:.1f} s of it in the workers; fingerprinting "
          f"threads included); "
          f"{summary.alerts_enqueued} alerts, {summary.errors} errors; store of {args.store_models:,} models; "
          f"{LATENCY_MS} ms per request")
    print(grown)
    print(f"# on 2 idle cores the CPU alone would allow {round(done / (cpu / 2) * 3600)} models/h; load average "
          f"{os.getloadavg()[0]:.1f} during this run (shared machine)")
    print(f"# peak RSS {peak_rss_mib():,.0f} MiB in the watcher's process (the population's templates included), "
          f"{worker_rss:,.0f} MiB per comparison worker")
    return 0


if __name__ == "__main__":
    sys.exit(main())
