"""A store of real-shaped fingerprints for benchmarks/index.py and benchmarks/throughput.py.

Templates are real fingerprints: all-MiniLM-L6-v2 (the real checkpoint), and the Llama-2-7B- and
Grok-1-shaped sparse checkpoints of tests/bigmodels.py, whose sampled values (zeros on disk) are
replaced by realistic ones: matrices and embeddings N(0, 0.02), norm gains 1 + N(0, 0.05).
The mix is the Hub's: half small models, 40 % 1-8B, 10 % larger.

What every model costs is what the watcher stores: its ``models`` row, index keys, sketch and a
compact blob (``Fingerprint.compact()``); references and the models that matched keep full blobs.
Among them: one base (MiniLM, a reference) and a family of fine-tunes of it (uneven per-tensor
changes of 1-20 % like training; each matched the base, so each is stored in full, with its match
recorded as the watcher records it: the real comparison of the base with that fine-tune).

Reduced-cost paths, stated plainly:
- compact blobs: ``COMPACT_VARIANTS`` distinct blobs per template (source, digests and file hashes
  differ), reused round-robin. Sizes are real; computing a blob per model would cost ~10 ms each.
- full blobs of the family: ``--family-blobs`` distinct fine-tunes (default 100), reused
  round-robin; every member still has its own sketch, value digest and repo.
- sketches of the non-family models are drawn in sketch space (as the earlier synthetic benchmark
  did): unrelated models near cosine 0 (independent pairs measure -0.12 to 0.15 in the sketch
  kind new rows store, benchmarks/sketch.py) and derivative clusters around 40 % roots. The
  family's sketches are computed from its fine-tuned embeddings. Stores built before schema 6 drew
  a shared component per shape family giving unrelated models ~0.4, as the older sketch kind
  measures; migration 0006 labels their sketches with that kind.
"""

from __future__ import annotations

import dataclasses
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from multiprocessing import get_context
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from fingerprints.engine import fingerprint_model  # noqa: E402
from fingerprints.model import Fingerprint  # noqa: E402
from fingerprints.sketch import SKETCH_DIM, sketch_vector  # noqa: E402
from fingerprints.reader import LocalFolderReader, RangeRequest  # noqa: E402
from store import Store  # noqa: E402
from store.db import transaction  # noqa: E402
from store.records import ModelRecord  # noqa: E402
from store.rows import TIER_COMPACT, TIER_FULL, TIER_REFERENCE, FingerprintRow  # noqa: E402

# (template, share of models): half small, 40 % 1-8B, 10 % larger.
MIX = (("minilm", 0.5), ("llama7b", 0.4), ("grok1", 0.1))
COMPACT_VARIANTS = 64
BATCH = 5000
FAMILY_BASE = "sentence-transformers/all-MiniLM-L6-v2"
REFERENCES = {"meta-llama/Llama-2-7b-hf": "llama7b", "xai-org/grok-1": "grok1"}


def realistic(fp: Fingerprint, seed: int) -> Fingerprint:
    """``fp`` with every sampled value drawn as trained weights look (see the module docstring): an
    independent model of the same shape, with its own files and digests."""
    rng = np.random.default_rng(seed)
    w = replace(fp.weights, value_digest=f"values-{seed}", sample_digest=f"sample-{seed}",
                file_sha256={f: f"{seed:032x}{i:032x}" for i, f in enumerate(fp.weights.file_sha256)})
    samples = []
    for s in w.samples:
        if len(s.shape) == 1 and "norm" in s.role:
            values = 1.0 + rng.normal(0, 0.05, s.values.shape)
        else:
            values = rng.normal(0, 0.02, s.values.shape)
        samples.append(replace(s, values=values.astype(np.float32)))
    emb = w.embedding
    if emb is not None:
        emb = replace(emb, values=rng.normal(0, 0.02, emb.values.shape).astype(np.float32))
    return replace(fp, source=f"{fp.source}#{seed}", weights=replace(w, samples=samples, embedding=emb))


class RecordingReader(LocalFolderReader):
    """A folder reader that remembers every range it read."""

    def __init__(self, folder):
        super().__init__(folder)
        self.seen: list[RangeRequest] = []

    def read_ranges(self, requests):
        self.seen += list(requests)
        return super().read_ranges(requests)


def fill_read_ranges(folder: Path, seed: int) -> None:
    """Write realistic bf16 values (N(0, 0.02)) into every tensor-data range a fingerprint of the
    sparse checkpoint in ``folder`` reads: its samples then carry values, not zeros, while the
    files stay sparse. Sampling is placed by shape, so a second fingerprint reads the same ranges."""
    reader = RecordingReader(folder)
    fingerprint_model(reader)
    rng = np.random.default_rng(seed)
    for req in reader.seen:
        if not req.path.endswith(".safetensors"):
            continue
        path = folder / req.path
        with open(path, "r+b") as f:
            data_start = 8 + int.from_bytes(f.read(8), "little")
            start = max(req.offset, data_start)
            end = req.offset + req.length
            if end - start < 2:
                continue
            values = (rng.normal(0, 0.02, (end - start) // 2).astype(np.float32).view(np.uint32) >> 16).astype("<u2")
            f.seek(start)
            f.write(values.tobytes())


def templates(work: Path) -> dict[str, Fingerprint]:
    import bigmodels
    import variants

    out = {"minilm": fingerprint_model(LocalFolderReader(variants.minilm_dir()))}
    for name, build in (("llama7b", bigmodels.build_llama7b_sharded), ("grok1", bigmodels.build_grok1_314b)):
        folder, _ = build(work / name)
        out[name] = realistic(fingerprint_model(LocalFolderReader(folder)), seed=len(out))
    return out


def fine_tune(base: Fingerprint, seed: int) -> Fingerprint:
    """Training-like change: each tensor moves by its own 1-20 % of its spread."""
    rng = np.random.default_rng(seed)
    w = base.weights

    def moved(values: np.ndarray) -> np.ndarray:
        rel = rng.uniform(0.01, 0.2)
        return (values + rel * values.std() * rng.standard_normal(values.shape)).astype(np.float32)

    samples = [replace(s, values=moved(s.values)) for s in w.samples]
    emb = replace(w.embedding, values=moved(w.embedding.values))
    weights = replace(w, samples=samples, embedding=emb, value_digest=f"ft-values-{seed}",
                      sample_digest=f"ft-sample-{seed}", file_sha256={"model.safetensors": f"{seed:064x}"})
    return replace(base, source=f"family/ft-{seed}", weights=weights)


def _fine_tune_row(args: tuple[Fingerprint, int]) -> FingerprintRow:
    base, seed = args
    row = FingerprintRow.from_fingerprint(f"family/ft-{seed}", f"{seed:040x}", fine_tune(base, seed), TIER_FULL)
    row.vocab_tokens = None  # the base stored the vocabulary
    return row


@dataclass
class Population:
    n: int
    family: int
    templates: dict[str, Fingerprint]
    base_id: int
    family_ids: list[int]
    ingest_s: float
    family_s: float


def _compact_blobs(fp: Fingerprint, name: str) -> list[bytes]:
    compact = fp.compact()
    blobs = []
    for v in range(COMPACT_VARIANTS):
        w = replace(compact.weights, value_digest=f"{name}-values-{v}", sample_digest=f"{name}-sample-{v}",
                    file_sha256={f: f"{v:032x}{i:032x}" for i, f in enumerate(compact.weights.file_sha256 or ["m"])})
        blobs.append(replace(compact, source=f"{name}/variant-{v}", weights=w).to_blob())
    return blobs


def _sketches(kinds: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Sketch-space population (module docstring): 40 % roots, the rest derivatives of a root."""
    n = len(kinds)
    sketches = np.empty((n, SKETCH_DIM), dtype=np.float32)
    for kind in np.unique(kinds):
        members = np.flatnonzero(kinds == kind)
        roots = rng.standard_normal((len(members), SKETCH_DIM))
        is_root = rng.random(len(members)) < 0.4
        is_root[0] = True
        root_idx = np.flatnonzero(is_root)
        derived = np.flatnonzero(~is_root)
        parent = root_idx[rng.zipf(1.6, size=len(derived)) % len(root_idx)]
        noise = rng.standard_normal((len(derived), SKETCH_DIM))
        noise /= np.linalg.norm(noise, axis=1, keepdims=True)
        base = roots / np.linalg.norm(roots, axis=1, keepdims=True)
        vecs = base.copy()
        vecs[derived] = base[parent] + rng.uniform(0.02, 0.5, (len(derived), 1)) * noise
        sketches[members] = vecs / np.linalg.norm(vecs, axis=1, keepdims=True)
    return sketches


def build(path: str, n: int, family: int = 1000, family_blobs: int = 100, seed: int = 0,
          work: Path | None = None, log=print) -> Population:
    """Fill the store at ``path`` with ``n`` models (``family`` + 1 of them the MiniLM family)."""
    work = work or Path(tempfile.mkdtemp(prefix="hubwatch-population-"))
    t0 = time.perf_counter()
    tpl = templates(work)
    log(f"templates ready in {time.perf_counter() - t0:.1f} s: " + ", ".join(
        f"{k} {len(v.to_blob()):,} B full / {len(v.compact().to_blob()):,} B compact" for k, v in tpl.items()))
    with Store.open(path) as store:
        base = tpl["minilm"]
        # Whatever FINGERPRINT_VERSION built it (index.py prints the stored versions): a 1M build
        # takes most of an hour on the shared machine.
        existing = store.conn.execute("SELECT id, version FROM fingerprints WHERE repo_id = ? ORDER BY id LIMIT 1",
                                      (FAMILY_BASE,)).fetchone()
        if existing is not None and store.conn.execute("SELECT count(*) FROM fingerprints").fetchone()[0] >= n:
            log(f"reusing the population in {path} (fingerprint version {existing[1]})")
            family_ids = [r[0] for r in store.conn.execute("SELECT id FROM fingerprints WHERE repo_id LIKE 'family/%'")]
            if family_ids and not store.matches_for(family_ids[0]):  # built before the matches were recorded
                record_family_matches(store, base, existing[0], family_blobs, log)
            return Population(n, len(family_ids), tpl, existing[0], family_ids, float("nan"), float("nan"))
        rng = np.random.default_rng(seed)
        rest = n - family - 1 - len(REFERENCES)
        names = [name for name, _ in MIX]
        kinds = rng.choice(len(MIX), size=rest, p=[share for _, share in MIX])
        sketches = _sketches(kinds, rng)
        blobs = {name: _compact_blobs(fp, name) for name, fp in tpl.items()}
        first_vocab = {name: True for name in names}
        # Per template, the keys every copy shares (structure, architecture, vocabulary); values and
        # file hashes are each model's own.
        shared_keys = {name: [(k, v) for k, v in fp.index_keys() if k not in ("file_sha256", "values")]
                       for name, fp in tpl.items()}
        store.upsert_model(ModelRecord(FAMILY_BASE, sha="b" * 40, author="sentence-transformers",
                                       created_at="2021-08-30T00:00:00.000Z"))
        base_id, _ = store.add_fingerprint(FAMILY_BASE, "b" * 40, base, tier=TIER_REFERENCE)
        for repo, name in REFERENCES.items():  # the other shapes' base models are references too
            store.upsert_model(ModelRecord(repo, sha="c" * 40, author=repo.split("/")[0],
                                           created_at="2023-07-18T00:00:00.000Z"))
            store.add_fingerprint(repo, "c" * 40, tpl[name], tier=TIER_REFERENCE)
        first_vocab["minilm"] = False
        t0 = time.perf_counter()
        for lo in range(0, rest, BATCH):
            rows, records = [], []
            for i in range(lo, min(lo + BATCH, rest)):
                name = names[kinds[i]]
                fp = tpl[name]
                tok = fp.tokenizer
                keys = shared_keys[name] + [("values", f"val{i:x}"), ("file_sha256", f"{i:064x}")]
                repo = f"org{i % 9973}/{name}-{i}"
                rows.append(FingerprintRow(
                    repo_id=repo, sha=f"{i:040x}", version=fp.version, blob=blobs[name][i % COMPACT_VARIANTS],
                    bytes_read=fp.bytes_read, shape_family=fp.shape_family(), keys=keys, sketch=sketches[i],
                    vocab_hash=tok.vocab_hash, vocab_size=tok.vocab_size, minhash=list(tok.minhash),
                    vocab_tokens=tok.vocab if first_vocab[name] else None, tier=TIER_COMPACT))
                first_vocab[name] = False
                records.append(ModelRecord(repo, sha=f"{i:040x}", author=repo.split("/")[0],
                                           created_at=f"2025-{1 + i % 12:02d}-01T00:00:00.000Z", downloads=i % 1000,
                                           tags=["transformers", "safetensors"], library_name="transformers"))
            store.upsert_models(records)
            store.add_rows(rows)
            done = min(lo + BATCH, rest)
            if done % 100_000 < BATCH or done == rest:
                log(f"  ingested {done:,} ({done / (time.perf_counter() - t0):,.0f}/s)")
        ingest_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        distinct = max(1, min(family, family_blobs))
        with get_context("spawn").Pool(2) as pool:
            made = pool.map(_fine_tune_row, [(base, s) for s in range(distinct)], chunksize=4)
        rows = []
        for member in range(family):
            made_row = made[member % distinct]
            tuned = fine_tune_sketch(base, member)
            rows.append(dataclasses.replace(made_row, repo_id=f"family/ft-{member}", sha=f"{member:040x}", sketch=tuned,
                                            keys=[(k, v) for k, v in made_row.keys if k != "values"]
                                            + [("values", f"ft-values-{member}")]))
        store.upsert_models([ModelRecord(r.repo_id, sha=r.sha, base_models=[FAMILY_BASE]) for r in rows])
        family_ids = [fid for fid, _ in store.add_rows(rows)]
        record_family_matches(store, base, base_id, family_blobs, log)
        family_s = time.perf_counter() - t0
        store.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return Population(n, family, tpl, base_id, family_ids, ingest_s, family_s)


def _family_comparison(args: tuple[Fingerprint, int]):
    from fingerprints.compare import compare_fingerprints

    base, seed = args
    return compare_fingerprints(base, fine_tune(base, seed))


def record_family_matches(store: Store, base: Fingerprint, base_id: int, family_blobs: int, log=print) -> None:
    """Record each family member's match with the base, as the watcher did when it stored them:
    the comparison of the base with the member's fine-tune (one per distinct blob, on 2 cores)."""
    members = [(fid, int(repo.rsplit("-", 1)[1])) for fid, repo in
               store.conn.execute("SELECT id, repo_id FROM fingerprints WHERE repo_id LIKE 'family/ft-%'")]
    distinct = max(1, min(len(members), family_blobs))
    t0 = time.perf_counter()
    with get_context("spawn").Pool(2) as pool:
        results = pool.map(_family_comparison, [(base, s) for s in range(distinct)], chunksize=4)
    with transaction(store.conn):
        for fid, member in members:
            store.record_match(base_id, fid, results[member % distinct])
    log(f"recorded {len(members):,} family matches with the base ({distinct} comparisons, "
        f"{time.perf_counter() - t0:.1f} s)")


def fine_tune_sketch(base: Fingerprint, seed: int) -> np.ndarray:
    """The sketch of fine-tune ``seed``, computed from its fine-tuned embedding rows (the blob may be
    a shared one, see the module docstring)."""
    return sketch_vector(fine_tune(base, seed))
