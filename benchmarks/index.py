"""Index benchmark: ingest rate, DB bytes per model, nearest-query latency and recall at scale.

    python benchmarks/index.py              # 1,000,000 synthetic fingerprints (several minutes)
    python benchmarks/index.py --n 20000    # quick
    PYTHONPATH=/path/with/usearch:/path/with/faiss python benchmarks/index.py --n 200000 --compare

Fast path, stated plainly: the rows are synthetic ``FingerprintRow`` objects written through the
store's real ingest (``Store.add_rows``), not Fingerprints computed from weights. A real blob is
~0.9 MB for MiniLM (float16 samples do not compress), which at a million models is ~1 TB; the
benchmark uses ``--blob-bytes`` of random bytes (default 2 KiB) and reports bytes per model
without the blob so the real size can be added. Queries go through ``Store.search`` (exact keys,
vocabulary LSH, sketch vectors: the whole candidate stage); exact re-ranking by comparison is
per-pair work (~0.1-0.5 s) that this benchmark does not time.

The mix: ``--families`` shape families (distinct hidden sizes) with Zipf-like popularity, the
biggest near a fifth of all models as d=4096 is on the Hub; in each family, root models and
derivative clusters (root sketch + noise of relative size 0.02-0.5: re-uploads, fine-tunes), and
independent same-shape models that share a family component (cosine ~0.25 between them, as
unrelated models of one architecture are not orthogonal); vocabularies shared Zipf-wise (a few
tokenizers used by most models) plus extended copies.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from fingerprints.model import SKETCH_DIM  # noqa: E402
from store import Store  # noqa: E402
from store.rows import FingerprintRow, IndexQuery  # noqa: E402

HIDDEN_SIZES = [64, 128, 256, 384, 512, 576, 640, 768, 896, 960, 1024, 1152, 1280, 1536, 1600, 1792, 2048, 2304,
                2560, 2816, 3072, 3200, 3584, 4096, 4608, 5120, 5376, 6144, 6656, 7168, 8192, 9216, 10240, 12288,
                14336, 16384, 18432, 20480, 24576, 320, 448, 704, 832, 1408, 1664, 1920, 2176, 2432, 2688, 2944]
BATCH = 5000


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


class Synthetic:
    """Deterministic synthetic population; model i's sketch, family, vocabulary and keys."""

    def __init__(self, n: int, families: int, seed: int = 0):
        rng = np.random.default_rng(seed)
        self.n = n
        weights = 1.0 / np.arange(1, families + 1) ** 0.9
        weights /= weights.sum()
        self.family = rng.choice(families, size=n, p=weights)
        family_mean = unit(rng.standard_normal((families, SKETCH_DIM)))
        # Roles: 40% roots (bases and independent same-shape models), 60% derivatives of a root.
        is_root = rng.random(n) < 0.4
        is_root[0] = True
        own = unit(rng.standard_normal((n, SKETCH_DIM)))
        base = unit(0.5 * family_mean[self.family] + own)
        root_of = np.arange(n)
        sketches = base.copy()
        vocab_count = max(50, n // 500)
        vocab_weights = 1.0 / np.arange(1, vocab_count + 1) ** 1.1
        vocab_weights /= vocab_weights.sum()
        self.vocab = rng.choice(vocab_count, size=n, p=vocab_weights)
        for fam in range(families):
            members = np.flatnonzero(self.family == fam)
            roots = members[is_root[members]]
            if roots.size == 0:
                roots = members[:1]
                is_root[members[0]] = True
            derived = members[~is_root[members]]
            # Popular bases get many derivatives (Zipf over roots).
            pick = rng.zipf(1.6, size=derived.size) % roots.size
            root_of[derived] = roots[pick]
            noise = rng.uniform(0.02, 0.5, size=(derived.size, 1)).astype(np.float32)
            sketches[derived] = unit(base[root_of[derived]] + noise * unit(rng.standard_normal((derived.size, SKETCH_DIM))))
            self.vocab[derived] = self.vocab[root_of[derived]]
        self.root_of = root_of
        self.sketch = sketches
        self.exact_copy = (~is_root) & (rng.random(n) < 0.05)  # re-uploads share the values digest
        self.vocab_minhash = rng.integers(1, 2**63, size=(vocab_count, 128), dtype=np.int64).astype(np.uint64)
        extended = rng.random(vocab_count) < 0.2  # a fifth of vocabularies extend vocabulary 0..9
        keep = rng.random((vocab_count, 128)) < 0.64
        parent = rng.integers(0, 10, size=vocab_count)
        for v in np.flatnonzero(extended):
            self.vocab_minhash[v, keep[v]] = self.vocab_minhash[parent[v], keep[v]]

    def query_of(self, i: int, sketch: np.ndarray | None = None) -> IndexQuery:
        fam, root = int(self.family[i]), int(self.root_of[i])
        values = root if self.exact_copy[i] else i
        return IndexQuery(
            keys=[("values", f"val{values:x}"), ("structure", f"st{fam}-{root % 3}"), ("arch", f"ar{fam}-{root % 5}"),
                  ("vocab", f"vo{self.vocab[i]}")],
            shape_family=f"d{HIDDEN_SIZES[fam]}",
            sketch=self.sketch[i] if sketch is None else sketch,
            vocab_hash=f"vo{self.vocab[i]}",
            minhash=[int(x) for x in self.vocab_minhash[self.vocab[i]]],
        )

    def row(self, i: int, blob: bytes) -> FingerprintRow:
        q = self.query_of(i)
        return FingerprintRow(repo_id=f"org{i % 9973}/model-{i}", sha=f"{i:040x}", version=1, blob=blob,
                              bytes_read=2_000_000, shape_family=q.shape_family, keys=q.keys, sketch=q.sketch,
                              vocab_hash=q.vocab_hash, vocab_size=32000, minhash=q.minhash)


def ingest(store: Store, syn: Synthetic, blob_bytes: int) -> float:
    rng = np.random.default_rng(1)
    blobs = [rng.bytes(blob_bytes) for _ in range(64)]
    start = time.perf_counter()
    for lo in range(0, syn.n, BATCH):
        rows = [syn.row(i, blobs[i % 64]) for i in range(lo, min(lo + BATCH, syn.n))]
        store.add_rows(rows)
        done = min(lo + BATCH, syn.n)
        if done % 100_000 == 0 or done == syn.n:
            rate = done / (time.perf_counter() - start)
            print(f"  ingested {done:,} ({rate:,.0f}/s)", file=sys.stderr, flush=True)
    return syn.n / (time.perf_counter() - start)


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def brute_force_top(syn: Synthetic, family: str, query: np.ndarray, k: int, ids_of_family: dict) -> set[int]:
    ids, mat = ids_of_family[family]
    scores = mat.astype(np.float64) @ query.astype(np.float64)
    top = np.argpartition(-scores, k - 1)[:k] if len(ids) > k else np.arange(len(ids))
    return {int(ids[j]) for j in top}


def run_queries(store: Store, syn: Synthetic, queries: int, k: int, seed: int = 2):
    """New models that derive from stored ones: a stored sketch plus fresh noise."""
    rng = np.random.default_rng(seed)
    picks = rng.choice(syn.n, size=queries, replace=False)
    # fingerprint id = i + 1 (rows were inserted in order into an empty table)
    fam_names = np.array([f"d{HIDDEN_SIZES[f]}" for f in syn.family])
    ids_of_family = {}
    for fam in set(fam_names[picks]):
        members = np.flatnonzero(fam_names == fam)
        ids_of_family[fam] = (members + 1, syn.sketch[members])
    store.search(syn.query_of(int(picks[0])))  # the first query of a partition loads it: timed separately
    for fam in ids_of_family:
        store.vectors.refresh(store.conn, fam)
    latencies, vector_latencies, hits, total, found_root = [], [], 0, 0, 0
    for i in picks:
        i = int(i)
        sketch = unit(syn.sketch[i] + 0.05 * unit(rng.standard_normal(SKETCH_DIM)))
        q = syn.query_of(i, sketch)
        t = time.perf_counter()
        cands = store.search(q, limit=20)
        latencies.append(time.perf_counter() - t)
        t = time.perf_counter()
        got = {fid for fid, _ in store.vectors.search(store.conn, q.shape_family, sketch, k)}
        vector_latencies.append(time.perf_counter() - t)
        truth = brute_force_top(syn, q.shape_family, sketch, k, ids_of_family)
        hits += len(got & truth)
        total += len(truth)
        found_root += int(any(c.fingerprint_id == i + 1 for c in cands))
    return latencies, vector_latencies, hits / max(total, 1), found_root / queries, ids_of_family, picks


def compare_libraries(syn: Synthetic, ids_of_family: dict, picks, k: int) -> None:
    """Optional: the same queries against usearch (HNSW) and faiss (flat), when importable."""
    biggest = max(ids_of_family, key=lambda f: len(ids_of_family[f][0]))
    ids, mat = ids_of_family[biggest]
    rng = np.random.default_rng(3)
    members = [int(i) for i in picks if f"d{HIDDEN_SIZES[syn.family[int(i)]]}" == biggest][:200] or [int(ids[0] - 1)]
    qs = np.stack([unit(syn.sketch[i] + 0.05 * unit(rng.standard_normal(SKETCH_DIM))) for i in members])
    truth = [set((np.argsort(-(mat.astype(np.float64) @ q))[:k]).tolist()) for q in qs]
    print(f"library comparison on the largest partition ({biggest}, {len(ids):,} vectors, {len(qs)} queries):")

    def report(name, build_s, search, mem_bytes):
        lat, hits = [], 0
        for q, t in zip(qs, truth):
            t0 = time.perf_counter()
            got = search(q)
            lat.append(time.perf_counter() - t0)
            hits += len(set(got) & t)
        print(f"  {name:28} build {build_s:6.1f} s  p50 {percentile(lat, 50) * 1e3:6.2f} ms  "
              f"p99 {percentile(lat, 99) * 1e3:6.2f} ms  recall@{k} {hits / (len(qs) * k):.4f}  memory {mem_bytes / 1e6:,.0f} MB")

    t0 = time.perf_counter()
    m32 = np.ascontiguousarray(mat, dtype=np.float32)
    report("numpy float32 brute force", time.perf_counter() - t0,
           lambda q: np.argpartition(-(m32 @ q), k - 1)[:k].tolist(), m32.nbytes)
    try:
        import usearch
        from usearch.index import Index

        for dtype in ("f16", "i8"):
            t0 = time.perf_counter()
            index = Index(ndim=SKETCH_DIM, metric="cos", dtype=dtype)
            index.add(np.arange(len(m32)), m32)
            build = time.perf_counter() - t0
            report(f"usearch {usearch.__version__} HNSW {dtype}", build,
                   lambda q, index=index: index.search(q, k).keys.tolist(), index.memory_usage)
    except ImportError as exc:
        print(f"  usearch not importable ({exc})")
    try:
        import faiss

        faiss.omp_set_num_threads(1)
        t0 = time.perf_counter()
        flat = faiss.IndexFlatIP(SKETCH_DIM)
        flat.add(m32)
        report(f"faiss {faiss.__version__} IndexFlatIP", time.perf_counter() - t0,
               lambda q: flat.search(q[None, :], k)[1][0].tolist(), m32.nbytes)
        t0 = time.perf_counter()
        hnsw = faiss.IndexHNSWFlat(SKETCH_DIM, 32, faiss.METRIC_INNER_PRODUCT)
        hnsw.hnsw.efSearch = 64
        hnsw.add(m32)
        report(f"faiss {faiss.__version__} HNSWFlat M=32", time.perf_counter() - t0,
               lambda q: hnsw.search(q[None, :], k)[1][0].tolist(), m32.nbytes * 1.3)
    except ImportError as exc:
        print(f"  faiss not importable ({exc})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1_000_000, help="synthetic fingerprints to index")
    ap.add_argument("--families", type=int, default=50, help="shape families (distinct hidden sizes)")
    ap.add_argument("--queries", type=int, default=300)
    ap.add_argument("--k", type=int, default=10, help="neighbours for recall@k")
    ap.add_argument("--blob-bytes", type=int, default=2048, help="stand-in blob size per fingerprint")
    ap.add_argument("--db", default=None, help="database file (default: a temporary file, deleted)")
    ap.add_argument("--compare", action="store_true", help="also time usearch and faiss when importable")
    args = ap.parse_args()
    if not 1 <= args.families <= len(HIDDEN_SIZES):
        ap.error(f"--families must be 1..{len(HIDDEN_SIZES)}")
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:
        pass
    tmp = None
    if args.db is None:
        tmp = tempfile.TemporaryDirectory()
        args.db = os.path.join(tmp.name, "bench.db")
    t0 = time.perf_counter()
    syn = Synthetic(args.n, args.families)
    print(f"generated {args.n:,} synthetic fingerprints in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    with Store.open(args.db) as store:
        rate = ingest(store, syn, args.blob_bytes)
        store.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        size = os.path.getsize(args.db)
        blob_total = store.conn.execute("SELECT sum(length(blob)) FROM fingerprints").fetchone()[0]
        sizes = store.stats()["shape_families"]
        t0 = time.perf_counter()
        fresh = Store.open(args.db)
        fresh.vectors.refresh(fresh.conn, max(sizes, key=sizes.get))
        load_s = time.perf_counter() - t0
        fresh.close()
        lat, vlat, recall, found_root, ids_of_family, picks = run_queries(store, syn, args.queries, args.k)
    print(f"fingerprints:         {args.n:,} in {len(sizes)} shape families; largest partition "
          f"{max(sizes.values()):,} ({max(sizes, key=sizes.get)})")
    print(f"ingest:               {rate:,.0f} fingerprints/s (batches of {BATCH:,}, one transaction each)")
    print(f"db size:              {size / 1e6:,.0f} MB = {size / args.n:,.0f} bytes/model, of which blob "
          f"{blob_total / args.n:,.0f} (synthetic) -> {(size - blob_total) / args.n:,.0f} bytes/model for the index")
    print(f"partition load:       {load_s * 1e3:,.0f} ms for the largest partition from a fresh open")
    print(f"nearest query (candidate stage, {args.queries} queries): p50 {percentile(lat, 50) * 1e3:.1f} ms, "
          f"p99 {percentile(lat, 99) * 1e3:.1f} ms, max {max(lat) * 1e3:.1f} ms")
    print(f"vector stage alone:   p50 {percentile(vlat, 50) * 1e3:.1f} ms, p99 {percentile(vlat, 99) * 1e3:.1f} ms")
    print(f"recall@{args.k} vs brute force: {recall:.4f}")
    print(f"source model among the 20 candidates: {found_root:.3f}")
    print(f"machine:              {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} during the run "
          "(shared with other jobs)")
    if args.compare:
        compare_libraries(syn, ids_of_family, picks, args.k)
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
