"""Index benchmark on real-shaped fingerprints, at 100k and 1M models: ingest rate, bytes per model,
index load time, nearest latency including exact re-ranking, peak memory.

    python benchmarks/index.py                        # 20,000 models, family of 1,000 (a few minutes)
    python benchmarks/index.py --n 100000             # the issue's 100k figure (build 9 min at load ~16)
    python benchmarks/index.py --n 1000000 --db ~/.cache/hubwatch/bench/population-1000000-1000.db
        # 1M: the 7.6 GB store is built once (58 min on the shared 2-core machine at load ~15), then
        # each run measures on it (3 min at load 2.5; figures in the README)

The store is built by benchmarks/population.py (its docstring states the reduced-cost paths: reused
compact blobs, reused full blobs inside the family, sketch-space sketches outside it) through the
store's own bulk write path, ``Store.upsert_models`` and ``Store.add_rows`` in batches of 5,000
(what ``hubwatch backfill`` writes), in a child process: the figures of this process are then those
of a process that loads the index and serves queries, not of the generator. A store given with
``--db`` that already holds the population is reused, and the build's figures are read back from
``<db>.build.json``, written when it was built.

Then, in this process, on the built store:

- ``ingest``: ``--ingest-sample`` new models of the mix, each written the way the watcher stores a
  model that matched nothing, one transaction at a time: listed (``upsert_models``,
  ``list_revisions``), its row prepared (``FingerprintRow.from_fingerprint``: compact blob, sketch,
  keys) and stored compact (``add_rows``, as ``add_fingerprint`` does), its revision finished. Fingerprints: the templates with every sampled value redrawn
  (``population.realistic``), generated outside the clock.
- ``bytes per model``: the SQLite file over the models in it, as built.
- ``index load``: a fresh ``VectorIndex`` loading every partition from the ``sketches`` table.
- ``nearest``: ``store.nearest.nearest`` as the watcher runs it -- candidates, the compact screen,
  comparisons in a process pool of 2 -- for four kinds of new model:

  - ``fine-tune``: a new fine-tune of the family's base (candidates: base and siblings, all full);
  - ``copy``: a noised copy of a stored compact model, re-read (here: handed back) in full;
  - ``independent-small`` / ``independent-7b``: new independent models of the MiniLM / Llama-7B shape.
"""

from __future__ import annotations

import argparse
import json
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
from store.records import ModelRecord  # noqa: E402
from store.rows import TIER_COMPACT, FingerprintRow  # noqa: E402
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


def real_ingest(store: Store, tpl: dict, n: int) -> dict[str, float]:
    """Write ``n`` new models of the mix the watcher's way (module docstring); wall and CPU seconds
    spent preparing their rows (compact blob, sketch, keys) and writing them. Fingerprints are
    generated outside the clock."""
    rng = np.random.default_rng(1)
    names = [name for name, _ in population.MIX]
    kinds = rng.choice(len(names), size=n, p=[share for _, share in population.MIX])
    run = time.strftime("%Y%m%d%H%M%S")
    spent = dict.fromkeys(("prepare_wall", "prepare_cpu", "write_wall", "write_cpu"), 0.0)
    written: list[tuple[int, list[tuple[str, str]], str, str]] = []

    def clocks() -> tuple[float, float]:
        return time.perf_counter(), time.process_time()

    for i in range(n):
        fp = population.realistic(tpl[names[kinds[i]]], seed=2_000_000 + i)
        repo, sha = f"sample{i % 97}/{names[kinds[i]]}-{i}", f"{run}{i:026x}"  # a new revision each run
        record = ModelRecord(repo, sha=sha, author=repo.split("/")[0], created_at=f"2026-01-01T00:00:{i % 60:02d}.000Z",
                             tags=["transformers", "safetensors"], library_name="transformers")
        wall, cpu = clocks()
        row = FingerprintRow.from_fingerprint(repo, sha, fp, TIER_COMPACT)  # what add_fingerprint does first
        wall2, cpu2 = clocks()
        store.upsert_models([record])
        store.list_revisions([(repo, sha)], feed="newest")
        [(fid, _)] = store.add_rows([row])
        store.finish_revision(repo, sha)
        wall3, cpu3 = clocks()
        written.append((fid, row.keys, repo, sha))
        spent["prepare_wall"] += wall2 - wall
        spent["prepare_cpu"] += cpu2 - cpu
        spent["write_wall"] += wall3 - wall2
        spent["write_cpu"] += cpu3 - cpu2
    forget(store, written)
    return spent


def forget(store: Store, written: list[tuple[int, list[tuple[str, str]], str, str]]) -> None:
    """Delete the sample's rows again, so that a store reused by the next run is the one built (the
    sample's sketches, nearly orthogonal to everything, would change what its queries find). Only
    a benchmark does this: the store itself never deletes a fingerprint."""
    conn = store.conn
    with conn:
        for fid, keys, repo, sha in written:
            conn.execute("DELETE FROM sketches WHERE fingerprint_id = ?", (fid,))
            conn.executemany("DELETE FROM index_keys WHERE kind = ? AND value = ? AND fingerprint_id = ?",
                             [(kind, value, fid) for kind, value in keys])
            conn.execute("DELETE FROM fingerprints WHERE id = ?", (fid,))
            conn.execute("DELETE FROM revisions WHERE repo_id = ? AND sha = ?", (repo, sha))
            conn.execute("DELETE FROM models WHERE repo_id = ?", (repo,))


def _build(db: str, n: int, family: int, family_blobs: int) -> dict:
    """population.build in this (child) process; its figures."""
    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    t = time.perf_counter()
    pop = population.build(db, n, family, family_blobs, log=log)
    return {"models": n, "family": family, "bulk_s": pop.ingest_s, "bulk_models": n - family - 1 - len(population.REFERENCES),
            "family_s": pop.family_s, "build_s": time.perf_counter() - t, "peak_rss_mib": peak_rss_mib(),
            "built_at": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}


def build_figures(db: str, n: int, family: int, family_blobs: int) -> dict:
    """Build the population at ``db`` in a child process unless it is there; the build's figures."""
    sidecar = Path(f"{db}.build.json")
    if sidecar.exists():
        figures = json.loads(sidecar.read_text())
        if figures["models"] == n and figures["family"] == family:
            return figures
    with ProcessPoolExecutor(1, mp_context=get_context("spawn")) as builder:
        figures = builder.submit(_build, db, n, family, family_blobs).result()
    if figures["bulk_s"] == figures["bulk_s"]:  # NaN: the store held the population already
        sidecar.write_text(json.dumps(figures))
    return figures


def rss_mib() -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:")) / 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=20_000, help="models in the store (default 20,000)")
    ap.add_argument("--family", type=int, default=1000, help="fine-tunes of one base among them (default 1,000)")
    ap.add_argument("--family-blobs", type=int, default=100, help="distinct full blobs in the family (default 100)")
    ap.add_argument("--queries", type=int, default=3, help="queries of each kind (default 3)")
    ap.add_argument("--ingest-sample", type=int, default=200,
                    help="models written one at a time the watcher's way to measure ingest (default 200)")
    ap.add_argument("--db", default=None, help="database file; one holding the population is reused (default: temporary)")
    args = ap.parse_args()
    tmp = None
    if args.db is None:
        tmp = tempfile.TemporaryDirectory()
        args.db = os.path.join(tmp.name, "bench.db")
    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    built = build_figures(args.db, args.n, args.family, args.family_blobs)
    size = os.path.getsize(args.db)
    pop = population.build(args.db, args.n, args.family, args.family_blobs, log=log)  # reused: the templates
    rss_templates = rss_mib()
    with Store.open(args.db) as store:
        stats = store.stats()
        versions = store.conn.execute("SELECT version, count(*) FROM fingerprints GROUP BY version").fetchall()
        index = VectorIndex()  # what a fresh process does: load every partition from the sketch table
        partitions = store.conn.execute("SELECT DISTINCT shape_family, kind FROM sketches").fetchall()
        t = time.perf_counter()
        for family, kind in partitions:
            index.refresh(store.conn, family, kind)
        load_s = time.perf_counter() - t
        rss_index = rss_mib()
        store.vectors = index
        log(f"index loaded in {load_s:.1f} s")
        with ProcessPoolExecutor(2, mp_context=get_context("spawn")) as pool:
            pool.submit(int).result()  # workers started before the clock runs
            results = run_queries(store, pop, args.queries, pool)
            rss_child = worker_peak_rss_mib(pool)
        rss_queries = peak_rss_mib()
        # After the queries: the sample's redrawn values give sketches unlike real models' (nearly
        # orthogonal to everything), which would change what the queries find.
        log(f"writing {args.ingest_sample} models the watcher's way")
        ingest = real_ingest(store, pop.templates, args.ingest_sample)
    rss_self = peak_rss_mib()
    n_rows = stats["fingerprints"]
    cached = f"; built {built['built_at']}, reused" if tmp is None else ""
    print(f"models:               {n_rows:,} ({', '.join(f'{k} {v:,}' for k, v in stats['tiers'].items())}); mix "
          + ", ".join(f"{name} {share:.0%}" for name, share in population.MIX)
          + f"; family of {args.family:,} fine-tunes of {population.FAMILY_BASE}; fingerprint version "
          + ", ".join(f"{v} {c:,}" for v, c in versions))
    per_model = {k: v / args.ingest_sample * 1e3 for k, v in ingest.items()}
    print(f"ingest, watcher's way: {args.ingest_sample / (ingest['prepare_wall'] + ingest['write_wall']):,.0f} models/s "
          f"wall ({args.ingest_sample} new models of the mix into the {n_rows:,}-model store, one transaction each); "
          f"per model: row prepared {per_model['prepare_wall']:.1f} ms wall / {per_model['prepare_cpu']:.1f} ms CPU, "
          f"listed, stored compact and finished {per_model['write_wall']:.1f} ms wall / {per_model['write_cpu']:.1f} ms CPU")
    if built["bulk_s"] == built["bulk_s"]:
        print(f"ingest, bulk build:   {built['bulk_models'] / built['bulk_s']:,.0f} models/s (compact tier with models "
              f"rows, Store.add_rows in batches of {population.BATCH:,}); family {built['family'] / built['family_s']:,.0f}/s "
              f"(full tier); whole build {built['build_s'] / 60:,.1f} min{cached}")
    else:  # NaN: a store that held the population, without the figures of its build
        print("ingest, bulk build:   not measured (the store held the population already, with no <db>.build.json)")
    print(f"db size:              {size / 1e6:,.0f} MB = {size / n_rows:,.0f} bytes/model; blobs "
          f"{stats['blob_bytes'] / n_rows:,.0f} bytes/model on average")
    print(f"index load:           {load_s:.2f} s for {sum(index.sizes().values()):,} sketches in "
          f"{len(index.sizes())} partitions (largest {max(index.sizes().values()):,}), blobs never read; "
          f"+{rss_index - rss_templates:,.0f} MiB resident")
    every = [r for kind in results.values() for r in kind]
    walls, cpus = [r[0] for r in every], [r[1] for r in every]
    print(f"nearest, k=5, re-ranking in a pool of 2, {len(every)} queries: wall p50 {percentile(walls, 50):.2f} s, "
          f"p99 {percentile(walls, 99):.2f} s; CPU p50 {percentile(cpus, 50):.2f} s, p99 {percentile(cpus, 99):.2f} s")
    for kind, rows in results.items():
        walls, cpus = [r[0] for r in rows], [r[1] for r in rows]
        verdicts = sorted({r[2] for r in rows})
        print(f"  {kind:18} wall p50 {percentile(walls, 50):6.2f} s p99 {percentile(walls, 99):6.2f} s   CPU p50 "
              f"{percentile(cpus, 50):6.2f} s p99 {percentile(cpus, 99):6.2f} s   top verdicts: " + ", ".join(verdicts))
    print(f"peak RSS:             {rss_self:,.0f} MiB this process ({rss_templates:,.0f} MiB with the benchmark's "
          f"templates before the index load, {rss_index:,.0f} MiB after it, peak {rss_queries:,.0f} MiB by the end of "
          f"the queries), {rss_child:,.0f} MiB largest pool worker"
          + (f"; the builder {built['peak_rss_mib']:,.0f} MiB (it holds the generated population)"
             if built["bulk_s"] == built["bulk_s"] else ""))
    print(f"machine:              {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} "
          "(shared with other jobs)")
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
