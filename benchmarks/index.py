"""Index benchmark on real-shaped fingerprints: ingest rate, bytes per model, index load time,
nearest latency including exact re-ranking, peak memory.

    python benchmarks/index.py                       # 20,000 models, family of 1,000 (~2-3 min)
    python benchmarks/index.py --n 100000            # the issue's 100k figure
    python benchmarks/index.py --index-only 1000000  # the 1M reduced-cost path: sketches alone

The store is built by benchmarks/population.py (its docstring states the reduced-cost paths: reused
compact blobs, reused full blobs inside the family, sketch-space sketches outside it). Queries run
``store.nearest.nearest`` as the watcher does — candidates, the compact screen, comparisons in a
process pool of 2 — for four kinds of new model:

- ``fine-tune``: a new fine-tune of the family's base (candidates: base and siblings, all full);
- ``copy``: a noised copy of a stored compact model, re-read (here: handed back) in full;
- ``independent-small`` / ``independent-7b``: new independent models of the MiniLM / Llama-7B shape.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from multiprocessing import get_context
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import population  # noqa: E402  (puts the repository root on sys.path)
from store import Store  # noqa: E402
from store.nearest import nearest  # noqa: E402
from store.rows import TIER_COMPACT  # noqa: E402
from store.vectors import VectorIndex  # noqa: E402


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def noised(fp, seed: int, rel: float = 0.05):
    rng = np.random.default_rng(seed)
    w = fp.weights
    samples = [replace(s, values=(s.values + rel * s.values.std() * rng.standard_normal(s.values.shape)).astype(np.float32))
               for s in w.samples]
    emb = replace(w.embedding, values=(w.embedding.values + rel * w.embedding.values.std()
                                       * rng.standard_normal(w.embedding.values.shape)).astype(np.float32))
    return replace(fp, source=f"copy-{seed}", weights=replace(w, samples=samples, embedding=emb,
                                                              value_digest=f"copy-{seed}", sample_digest=f"copy-{seed}"))


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def worker_cpu_s(pool: ProcessPoolExecutor) -> float:
    """CPU seconds the pool's workers have used (Linux /proc; user + system)."""
    total = 0
    for pid in list(pool._processes):  # the executor exposes its workers only as this mapping
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def worker_peak_rss_mib(pool: ProcessPoolExecutor) -> float:
    peak = 0
    for pid in list(pool._processes):
        with open(f"/proc/{pid}/status") as f:
            peak = max([peak] + [int(line.split()[1]) for line in f if line.startswith("VmHWM:")])
    return peak / 1024


def run_queries(store: Store, pop: population.Population, per_kind: int, pool) -> dict[str, list[tuple[float, float, str]]]:
    tpl = pop.templates
    planted = {}
    for q in range(per_kind):  # stored compact models with real sketches, for the copy queries
        fp = population.realistic(tpl["minilm" if q % 2 else "llama7b"], seed=5000 + q)
        fid, _ = store.add_fingerprint(f"planted/m{q}", f"{q:040x}", fp, tier=TIER_COMPACT)
        planted[(f"planted/m{q}", f"{q:040x}")] = fp
    queries = {
        "fine-tune": [population.fine_tune(tpl["minilm"], 100_000 + q) for q in range(per_kind)],
        "copy": [noised(fp, q) for q, fp in enumerate(planted.values())],
        "independent-small": [population.realistic(tpl["minilm"], 7000 + q) for q in range(per_kind)],
        "independent-7b": [population.realistic(tpl["llama7b"], 8000 + q) for q in range(per_kind)],
    }

    def refetch(repo_id: str, sha: str):
        """The Hub's answer: the planted model, else the full template of a population model."""
        if (repo_id, sha) in planted:
            return planted[(repo_id, sha)]
        kind = repo_id.split("/")[1].rsplit("-", 1)[0]
        return tpl["minilm"] if kind == "minilm" or repo_id.startswith("family/") else tpl[kind]

    out: dict[str, list[tuple[float, float, str]]] = {}
    for kind, fps in queries.items():
        for fp in fps:
            t, cpu = time.perf_counter(), time.process_time() + worker_cpu_s(pool)
            found = nearest(store, fp, k=5, refetch=refetch, pool=pool)
            wall, cpu = time.perf_counter() - t, time.process_time() + worker_cpu_s(pool) - cpu
            out.setdefault(kind, []).append((wall, cpu, found[0].verdict if found else "none"))
            print(f"  {kind:18} {wall:6.2f} s wall {cpu:6.2f} s CPU  top: {found[0].repo_id if found else '-'} "
                  f"{found[0].verdict if found else ''}", file=sys.stderr, flush=True)
    return out


def index_only(n: int, queries: int = 50) -> None:
    """The reduced-cost path for 1M: only the ``sketches`` table is written (the mix's sketches, in
    one transaction), then a fresh index is loaded from it and searched; no blobs, keys or models
    rows, so ingest and bytes per model are not measured here."""
    rng = np.random.default_rng(0)
    kinds = rng.choice(len(population.MIX), size=n, p=[share for _, share in population.MIX])
    families = np.array([f"d{h}" for h in (384, 4096, 6144)], dtype=object)[kinds]
    sketches = population._sketches(kinds, rng)
    with tempfile.TemporaryDirectory() as tmp, Store.open(os.path.join(tmp, "sketches.db")) as store:
        with store.conn:
            store.conn.execute("BEGIN")
            store.conn.executemany("INSERT INTO sketches (fingerprint_id, shape_family, vector) VALUES (?, ?, ?)",
                                   ((i + 1, str(families[i]), sketches[i].tobytes()) for i in range(n)))
        rss0 = peak_rss_mib()
        index = VectorIndex()
        t = time.perf_counter()
        for family in sorted(set(families)):
            index.refresh(store.conn, family)
        load_s = time.perf_counter() - t
        largest = max(index.sizes(), key=index.sizes().get)
        lat = []
        for q in rng.choice(np.flatnonzero(families == largest), size=queries, replace=False):
            t = time.perf_counter()
            index.search(store.conn, largest, sketches[q], 32)
            lat.append(time.perf_counter() - t)
    print(f"index only, {n:,} sketches: load {load_s:.1f} s (partitions {index.sizes()}); vector search in the "
          f"largest: p50 {percentile(lat, 50) * 1e3:.1f} ms, p99 {percentile(lat, 99) * 1e3:.1f} ms; peak RSS "
          f"{peak_rss_mib():,.0f} MiB ({rss0:,.0f} before the load); load average {os.getloadavg()[0]:.1f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=20_000, help="models in the store (default 20,000)")
    ap.add_argument("--family", type=int, default=1000, help="fine-tunes of one base among them (default 1,000)")
    ap.add_argument("--family-blobs", type=int, default=100, help="distinct full blobs in the family (default 100)")
    ap.add_argument("--queries", type=int, default=4, help="queries of each kind (default 4)")
    ap.add_argument("--db", default=None, help="database file; an existing one is reused (default: temporary)")
    ap.add_argument("--index-only", type=int, default=0, metavar="N",
                    help="only load and search an index of N sketches (the reduced-cost path for 1M)")
    args = ap.parse_args()
    if args.index_only:
        index_only(args.index_only)
        return
    tmp = None
    if args.db is None:
        tmp = tempfile.TemporaryDirectory()
        args.db = os.path.join(tmp.name, "bench.db")
    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    pop = population.build(args.db, args.n, args.family, args.family_blobs, log=log)
    size = os.path.getsize(args.db)
    rss_after_ingest = peak_rss_mib()
    with Store.open(args.db) as store:
        stats = store.stats()
        index = VectorIndex()  # what a fresh process does: load every partition from the sketch table
        t = time.perf_counter()
        for family in stats["shape_families"]:
            index.refresh(store.conn, family)
        load_s = time.perf_counter() - t
        store.vectors = index
        with ProcessPoolExecutor(2, mp_context=get_context("spawn")) as pool:
            pool.submit(int).result()  # workers started before the clock runs
            results = run_queries(store, pop, args.queries, pool)
            rss_child = worker_peak_rss_mib(pool)
    rss_self = peak_rss_mib()
    n_rows = stats["fingerprints"]
    print(f"models:               {n_rows:,} ({', '.join(f'{k} {v:,}' for k, v in stats['tiers'].items())}); mix "
          + ", ".join(f"{name} {share:.0%}" for name, share in population.MIX)
          + f"; family of {args.family:,} fine-tunes of {population.FAMILY_BASE}")
    print(f"ingest:               {(n_rows - args.family - 1) / pop.ingest_s:,.0f} models/s (compact tier, with "
          f"their models rows; batches of {population.BATCH:,}); family {args.family / pop.family_s:,.0f}/s (full tier)")
    print(f"db size:              {size / 1e6:,.0f} MB = {size / n_rows:,.0f} bytes/model; blobs "
          f"{stats['blob_bytes'] / n_rows:,.0f} bytes/model on average")
    print(f"index load:           {load_s:.2f} s for {sum(index.sizes().values()):,} sketches in "
          f"{len(index.sizes())} partitions (largest {max(index.sizes().values()):,}), blobs never read")
    every = [r for kind in results.values() for r in kind]
    walls, cpus = [r[0] for r in every], [r[1] for r in every]
    print(f"nearest, k=5, re-ranking in a pool of 2, {len(every)} queries: wall p50 {percentile(walls, 50):.2f} s, "
          f"p99 {percentile(walls, 99):.2f} s; CPU p50 {percentile(cpus, 50):.2f} s, p99 {percentile(cpus, 99):.2f} s")
    for kind, rows in results.items():
        walls, cpus = [r[0] for r in rows], [r[1] for r in rows]
        verdicts = sorted({r[2] for r in rows})
        print(f"  {kind:18} wall p50 {percentile(walls, 50):6.2f} s p99 {percentile(walls, 99):6.2f} s   CPU p50 "
              f"{percentile(cpus, 50):6.2f} s p99 {percentile(cpus, 99):6.2f} s   top verdicts: " + ", ".join(verdicts))
    print(f"peak RSS:             {rss_self:,.0f} MiB this process ({rss_after_ingest:,.0f} after ingest), "
          f"{rss_child:,.0f} MiB largest pool worker")
    print(f"machine:              {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} "
          "(shared with other jobs)")
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
