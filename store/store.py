"""Store: the one object through which hubwatch reads and writes its SQLite database."""

from __future__ import annotations

import functools
import json
import os
import sqlite3
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any, Protocol

import numpy as np
import sqlite_utils

from fingerprints.model import FINGERPRINT_VERSION, Fingerprint
from fingerprints.sketch import SKETCH_KIND, SKETCH_SCREEN_MIN, sketch_vector

from . import outbox, work
from .db import DEFAULT_BUSY_TIMEOUT_S, closing_on_error, connect, transaction, translating
from .errors import StoreError
from .lsh import estimated_jaccard, minhash_from_bytes, minhash_to_bytes
from .migrations import latest_version, migrate
from .records import OutboxRow, Candidate, MatchRecord, ModelRecord, StoredFingerprint, WatchEntry, utc_iso
from .rows import TIER_COMPACT, TIER_FULL, TIERS, FingerprintRow, IndexQuery, compress_tokens, decompress_tokens
from .vectors import shared_index

# Exact keys shared by thousands of models (one popular vocabulary, one architecture) say little;
# the earliest 50 holders are enough for re-ranking (references are indexed first, and the
# earliest holder of a key is the likely original), and the bound keeps a query in milliseconds.
KEY_FANOUT_LIMIT = 50
# Vocabularies proposed by LSH below this estimated Jaccard are chance collisions of the S-curve's
# tail (see lsh.py); re-ranking them would only cost time.
LSH_MIN_JACCARD = 0.3
# Most similar vocabularies followed from one query (each brings up to KEY_FANOUT_LIMIT fingerprints).
LSH_VOCAB_LIMIT = 20
# Sketch neighbours taken per query before merging with the exact and LSH candidates.
VECTOR_NEIGHBOURS = 32
DEFAULT_CANDIDATES = 20

# Decoded vocabularies kept per process: the candidates of one query are mostly one family sharing
# one vocabulary, and decoding it again for each (zlib + JSON of 30k-130k tokens, ~0.1 s) was a
# tenth of the watcher's own CPU in benchmarks/throughput.py. Content-addressed (the hash names the
# tokens), so a kept entry is never stale; the list is shared, and nothing mutates a stored vocabulary.
VOCABULARIES_KEPT = 8
# Larger stored vocabularies (compressed bytes; 2 MiB is ~500k tokens) are decoded each time rather
# than held: a hostile vocabulary must not stay in memory.
VOCABULARY_KEPT_MAX_BYTES = 2 << 20


@functools.lru_cache(maxsize=VOCABULARIES_KEPT)
def _kept_vocabulary(vocab_hash: str, compressed: bytes) -> list[str]:
    return decompress_tokens(compressed)


_FP_COLUMNS = "id, repo_id, sha, version, created_at, bytes_read, vocab_hash, shape_family, tier"
_MODEL_COLUMNS = [
    "repo_id", "model_id", "sha", "author", "created_at", "last_modified", "downloads", "likes",
    "trending_score", "license", "base_models", "tags", "library_name", "pipeline_tag", "first_seen", "last_seen",
]
WATCH_KINDS = ("reference", "author")
# The watch list of entries added from the command line and from before per-server lists (0004):
# the configured Discord server sees them beside its own.
OPERATOR_GUILD = 0

_translated = translating(lambda self, *args, **kwargs: self.path)


class Comparable(Protocol):
    """What record_match needs from fingerprints.compare.Comparison."""

    verdict: str
    confidence: float
    score: float
    kinds: list[str]

    def to_dict(self) -> dict[str, Any]: ...


class Store:
    """A hubwatch database. Open with ``Store.open(path)``; close (or use ``with``) when done.

    One Store per thread: it holds one SQLite connection. Several processes may share the file
    (WAL mode: readers never block; writers queue on the busy timeout).
    """

    def __init__(self, path: str, conn: sqlite3.Connection, vocabulary_quota_bytes: int = 0):
        self.path = path
        self.conn = conn
        # Stored token lists (zlib) may take this many bytes in all; 0: no quota. Past it a new
        # vocabulary keeps its hash, size and MinHash (exact keys and LSH still find it) but not its
        # tokens: a flood of distinct hostile vocabularies cannot grow the database without bound.
        self.vocabulary_quota_bytes = vocabulary_quota_bytes
        self.db = sqlite_utils.Database(conn)
        store_id = conn.execute("SELECT text_value FROM counters WHERE name = 'store_id'").fetchone()
        self.vectors = shared_index(path, store_id[0] if store_id else None)

    # ---- lifecycle -----------------------------------------------------------------------

    @classmethod
    def open(cls, path: str | os.PathLike[str], busy_timeout_s: float = DEFAULT_BUSY_TIMEOUT_S,
             vocabulary_quota_bytes: int = 0) -> Store:
        """Open (creating if needed) and migrate the database at ``path``."""
        path = os.fspath(path)
        conn = connect(path, busy_timeout_s)
        with closing_on_error(conn, path):
            migrate(conn, path)
        return cls(path, conn, vocabulary_quota_bytes)

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @_translated
    def schema_version(self) -> int:
        return int(self.conn.execute("SELECT max(version) FROM schema_migrations").fetchone()[0] or 0)

    # ---- models --------------------------------------------------------------------------

    @_translated
    def upsert_model(self, record: ModelRecord, now: datetime | None = None) -> None:
        """Insert or refresh a repo's metadata; ``first_seen`` is kept from the first sighting."""
        if not record.repo_id:
            raise StoreError("a model record needs a repo id")
        stamp = utc_iso(now)
        values = {c: getattr(record, c) for c in _MODEL_COLUMNS}
        values.update(base_models=json.dumps(record.base_models), tags=json.dumps(record.tags),
                      first_seen=stamp, last_seen=stamp)
        updates = ", ".join(f"{c} = excluded.{c}" for c in _MODEL_COLUMNS if c not in ("repo_id", "first_seen"))
        self.conn.execute(
            f"INSERT INTO models ({', '.join(_MODEL_COLUMNS)}) VALUES ({', '.join('?' * len(_MODEL_COLUMNS))}) "
            f"ON CONFLICT (repo_id) DO UPDATE SET {updates}",
            [values[c] for c in _MODEL_COLUMNS],
        )

    @_translated
    def upsert_models(self, records: list[ModelRecord], now: datetime | None = None) -> None:
        """upsert_model for a whole feed listing in one transaction: one commit (and fsync) per poll
        instead of one per listed model, and no half-written listing after a crash."""
        with transaction(self.conn):
            for record in records:
                self.upsert_model(record, now)

    @_translated
    def get_model(self, repo_id: str) -> ModelRecord | None:
        rows = list(self.db.query("SELECT * FROM models WHERE repo_id = ?", [repo_id]))
        return ModelRecord.from_row(rows[0]) if rows else None

    # ---- fingerprints --------------------------------------------------------------------

    def add_fingerprint(self, repo_id: str, sha: str, fp: Fingerprint, tier: str = TIER_FULL) -> tuple[int, bool]:
        """Store ``fp`` as (repo_id, sha, fp.version) in ``tier`` (store/rows.py); returns (id, created).
        Same triple again: no-op, except that a fuller tier replaces a compact blob."""
        row = FingerprintRow.from_fingerprint(repo_id, sha, fp, tier)
        fid, created = self.add_rows([row])[0]
        if not created and tier != TIER_COMPACT:
            self.set_tier(fid, fp, tier)
        return fid, created

    @_translated
    def add_rows(self, rows: list[FingerprintRow], now: datetime | None = None) -> list[tuple[int, bool]]:
        """Store prepared rows in one transaction; (id, created) per row, in order."""
        with transaction(self.conn):
            return self._insert_rows(rows, utc_iso(now))

    def _insert_rows(self, rows: list[FingerprintRow], stamp: str) -> list[tuple[int, bool]]:
        out: list[tuple[int, bool]] = []
        for row in rows:
            cur = self.conn.execute(
                "INSERT OR IGNORE INTO fingerprints (repo_id, sha, version, created_at, blob, bytes_read, "
                "vocab_hash, shape_family, tier) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (row.repo_id, row.sha, row.version, stamp, row.blob, row.bytes_read, row.vocab_hash,
                 row.shape_family, row.tier),
            )
            if cur.rowcount == 0:
                existing = self.conn.execute(
                    "SELECT id FROM fingerprints WHERE repo_id = ? AND sha = ? AND version = ?",
                    (row.repo_id, row.sha, row.version),
                ).fetchone()
                out.append((existing[0], False))
                continue
            fid = cur.lastrowid
            sketch = row.sketch_bytes()
            if sketch is not None:
                self.conn.execute("INSERT INTO sketches (fingerprint_id, shape_family, kind, vector) VALUES (?, ?, ?, ?)",
                                  (fid, row.shape_family, SKETCH_KIND, sketch))
            self.conn.executemany(
                "INSERT OR IGNORE INTO index_keys (kind, value, fingerprint_id) VALUES (?, ?, ?)",
                [(kind, value, fid) for kind, value in row.keys],
            )
            if row.vocab_hash:
                self._add_vocabulary(row)
            out.append((fid, True))
        return out

    def _add_vocabulary(self, row: FingerprintRow) -> None:
        known = self.conn.execute("SELECT tokens IS NULL FROM vocabularies WHERE vocab_hash = ?", (row.vocab_hash,)).fetchone()
        tokens = compress_tokens(row.vocab_tokens) if row.vocab_tokens and (known is None or known[0]) else None
        if tokens is not None and self.vocabulary_quota_bytes:
            used = self.conn.execute("SELECT coalesce(sum(length(tokens)), 0) FROM vocabularies").fetchone()[0]
            if used + len(tokens) > self.vocabulary_quota_bytes:
                self.bump("vocabularies_over_quota")
                tokens = None
        if known is None:
            self.conn.execute(
                "INSERT INTO vocabularies (vocab_hash, size, minhash, tokens) VALUES (?, ?, ?, ?)",
                (row.vocab_hash, row.vocab_size, minhash_to_bytes(row.minhash), tokens),
            )
            self.conn.executemany(
                "INSERT OR IGNORE INTO lsh_bands (band, bucket, vocab_hash) VALUES (?, ?, ?)",
                [(band, bucket, row.vocab_hash) for band, bucket in row.lsh_buckets()],
            )
        elif tokens is not None:
            self.conn.execute("UPDATE vocabularies SET tokens = ? WHERE vocab_hash = ?", (tokens, row.vocab_hash))

    @_translated
    def find_fingerprint(self, repo_id: str, sha: str | None = None,
                         version: int = FINGERPRINT_VERSION) -> StoredFingerprint | None:
        """The fingerprint of ``repo_id`` at ``sha`` (the newest stored revision when sha is None)."""
        if sha is None:
            row = self.conn.execute(
                f"SELECT {_FP_COLUMNS} FROM fingerprints WHERE repo_id = ? AND version = ? ORDER BY id DESC LIMIT 1",
                (repo_id, version),
            ).fetchone()
        else:
            row = self.conn.execute(
                f"SELECT {_FP_COLUMNS} FROM fingerprints WHERE repo_id = ? AND sha = ? AND version = ?",
                (repo_id, sha, version),
            ).fetchone()
        return StoredFingerprint(*row) if row else None

    @_translated
    def last_fingerprint_id(self) -> int:
        """The highest fingerprint id stored (0 when none): ids only grow, so a watermark."""
        return int(self.conn.execute("SELECT coalesce(max(id), 0) FROM fingerprints").fetchone()[0])

    @_translated
    def get_fingerprint(self, fingerprint_id: int) -> StoredFingerprint:
        row = self.conn.execute(f"SELECT {_FP_COLUMNS} FROM fingerprints WHERE id = ?", (fingerprint_id,)).fetchone()
        if row is None:
            raise StoreError(f"database {self.path} has no fingerprint with id {fingerprint_id}")
        return StoredFingerprint(*row)

    @_translated
    def load_fingerprint(self, fingerprint_id: int) -> Fingerprint:
        """The full Fingerprint (vocabulary included when stored), for exact comparison."""
        row = self.conn.execute("SELECT blob, vocab_hash FROM fingerprints WHERE id = ?", (fingerprint_id,)).fetchone()
        if row is None:
            raise StoreError(f"database {self.path} has no fingerprint with id {fingerprint_id}")
        vocab = self.vocabulary(row[1]) if row[1] else None
        return Fingerprint.from_blob(row[0], vocab=vocab)

    @_translated
    def set_tier(self, fingerprint_id: int, fp: Fingerprint, tier: str) -> None:
        """Keep ``fp`` (the same revision, e.g. re-read from the Hub) in ``tier`` for this row: a
        compact row that matched gets its full detail back; a full one that matched nothing is shrunk.
        A reference stays a reference."""
        if tier not in TIERS:
            raise StoreError(f"fingerprint tier must be one of {', '.join(TIERS)}, not {tier!r}")
        blob = (fp.compact() if tier == TIER_COMPACT else fp).to_blob()
        self.conn.execute(
            "UPDATE fingerprints SET blob = ?, tier = ? WHERE id = ? AND tier != 'reference'", (blob, tier, fingerprint_id))
        self._sketch_again(fingerprint_id, fp)

    @_translated
    def compact_unmatched(self, keep_repos: set[str], limit: int = 1000) -> int:
        """Shrink up to ``limit`` full fingerprints that are in no match and not of ``keep_repos``
        (the shipped reference list) to the compact tier; the number shrunk. Stores written before
        schema 3 hold every model in full."""
        rows = self.conn.execute(
            "SELECT id, repo_id FROM fingerprints f WHERE tier = 'full' AND NOT EXISTS "
            "(SELECT 1 FROM matches m WHERE m.fingerprint_a = f.id OR m.fingerprint_b = f.id) ORDER BY id",
        )
        todo = [fid for fid, repo_id in rows if repo_id not in keep_repos][:limit]
        for fid in todo:
            fp = self.load_fingerprint(fid)
            with transaction(self.conn):
                self.set_tier(fid, fp, TIER_COMPACT)
        return len(todo)

    @_translated
    def sketch_full_rows_again(self, limit: int = 100_000) -> int:
        """Give up to ``limit`` rows stored in full (references, models in a match) that still hold
        an older sketch kind the current one, from their stored fingerprints; the number done.
        Compact rows cannot be: they get it when a comparison re-reads and keeps them."""
        ids = [fid for (fid,) in self.conn.execute(
            "SELECT s.fingerprint_id FROM sketches s JOIN fingerprints f ON f.id = s.fingerprint_id "
            "WHERE s.kind != ? AND f.tier != 'compact' ORDER BY s.fingerprint_id LIMIT ?", (SKETCH_KIND, limit))]
        for fid in ids:
            fp = self.load_fingerprint(fid)
            with transaction(self.conn):
                self._sketch_again(fid, fp)
        return len(ids)

    @_translated
    def load_index(self) -> int:
        """Every partition's sketches (shape family and sketch kind) into the process's vector index
        now (one is otherwise loaded by its first search, inside a poll); the number it then holds."""
        for family, kind in self.conn.execute("SELECT DISTINCT shape_family, kind FROM sketches").fetchall():
            self.vectors.refresh(self.conn, family, kind)
        return sum(self.vectors.sizes().values())

    def sketches_of(self, fingerprint_ids: list[int]) -> dict[int, tuple[str, np.ndarray]]:
        """Stored sketches by fingerprint id, as (kind, vector) (ids without one are absent)."""
        out: dict[int, tuple[str, np.ndarray]] = {}
        for start in range(0, len(fingerprint_ids), 500):  # SQLite's default limit on host parameters is 999+
            chunk = fingerprint_ids[start:start + 500]
            for fid, kind, raw in self.conn.execute(
                f"SELECT fingerprint_id, kind, vector FROM sketches WHERE fingerprint_id IN ({', '.join('?' * len(chunk))})",
                chunk,
            ):
                out[fid] = (kind, np.frombuffer(raw, dtype="<f4"))
        return out

    def _sketch_again(self, fingerprint_id: int, fp: Fingerprint) -> None:
        """Give a row stored with an older sketch kind the current one, from its full fingerprint ``fp``
        (a compact row cannot be sketched again; its full fingerprint re-read from the Hub can). The
        row takes a new seq, so every process's index refresh reads it into the new kind's partition.
        The update checks the kind again: another thread or process may have moved the row since the
        read above, and moving it twice would read it into that partition twice."""
        row = self.conn.execute("SELECT kind FROM sketches WHERE fingerprint_id = ?", (fingerprint_id,)).fetchone()
        if row is None or row[0] == SKETCH_KIND:
            return
        sketch = sketch_vector(fp, SKETCH_KIND)
        if sketch.any():
            self.conn.execute(
                "UPDATE sketches SET kind = ?, vector = ?, seq = (SELECT max(seq) + 1 FROM sketches) "
                "WHERE fingerprint_id = ? AND kind != ?",
                (SKETCH_KIND, sketch.astype("<f4").tobytes(), fingerprint_id, SKETCH_KIND))

    @_translated
    def vocabulary(self, vocab_hash: str) -> list[str] | None:
        row = self.conn.execute("SELECT tokens FROM vocabularies WHERE vocab_hash = ?", (vocab_hash,)).fetchone()
        if not row or row[0] is None:
            return None
        if len(row[0]) > VOCABULARY_KEPT_MAX_BYTES:
            return decompress_tokens(row[0])
        return _kept_vocabulary(vocab_hash, row[0])

    # ---- candidate search ----------------------------------------------------------------

    def candidates(self, fp: Fingerprint, limit: int = DEFAULT_CANDIDATES,
                   exclude_repo: str | None = None) -> list[Candidate]:
        """Stored fingerprints worth comparing exactly with ``fp``, best first, one per repo."""
        return self.search(IndexQuery.from_fingerprint(fp), limit, exclude_repo)

    @_translated
    def search(self, query: IndexQuery, limit: int = DEFAULT_CANDIDATES,
               exclude_repo: str | None = None) -> list[Candidate]:
        """Candidates for ``query``, best first, one per repo.

        Sources: exact index keys (identical files or sampled values, tokenizer, rare special
        tokens, structure, architecture), MinHash LSH over vocabularies, and the nearest sketch
        vectors in the query's shape family, in each sketch kind. Order: identity evidence first,
        then how far the sketch cosine is above its kind's screen (``_candidate_rank``), then
        vocabulary similarity.
        """
        found: dict[int, Candidate] = {}
        jaccards: dict[int, float] = {}

        def propose(fid: int, reason: str) -> None:
            cand = found.setdefault(fid, Candidate(fid, "", ""))
            if reason not in cand.reasons:
                cand.reasons.append(reason)

        for kind, value in query.keys:
            for (fid,) in self.conn.execute(
                "SELECT fingerprint_id FROM index_keys WHERE kind = ? AND value = ? ORDER BY fingerprint_id LIMIT ?",
                (kind, value, KEY_FANOUT_LIMIT),
            ):
                propose(fid, f"key:{kind}")
        for vocab_hash, jaccard in self._similar_vocabularies(query):
            for (fid,) in self.conn.execute(
                "SELECT id FROM fingerprints WHERE vocab_hash = ? ORDER BY id LIMIT ?", (vocab_hash, KEY_FANOUT_LIMIT),
            ):
                propose(fid, "lsh")
                jaccards[fid] = max(jaccard, jaccards.get(fid, 0.0))
        family = query.shape_family
        if family != "none":
            for kind, sketch in query.sketches.items():
                for fid, _ in self.vectors.search(self.conn, family, kind, sketch, max(VECTOR_NEIGHBOURS, 2 * limit)):
                    propose(fid, "vector")
        if not found:
            return []
        self._fill_candidates(found, query, jaccards)
        best: dict[str, Candidate] = {}
        for cand in sorted(found.values(), key=_candidate_rank):
            if cand.repo_id == exclude_repo:
                continue
            if cand.repo_id in best:
                merged = best[cand.repo_id]
                merged.reasons += [r for r in cand.reasons if r not in merged.reasons]
            else:
                best[cand.repo_id] = cand
        return list(best.values())[:limit]

    def _similar_vocabularies(self, query: IndexQuery) -> list[tuple[str, float]]:
        buckets = query.lsh_buckets()
        if not buckets:
            return []
        clause = " OR ".join("(band = ? AND bucket = ?)" for _ in buckets)
        params = [v for pair in buckets for v in pair]
        hashes = {r[0] for r in self.conn.execute(f"SELECT DISTINCT vocab_hash FROM lsh_bands WHERE {clause}", params)}
        hashes.discard(query.vocab_hash)  # identical vocabularies already came through the exact key
        if not hashes:
            return []
        mine = np.asarray(query.minhash, dtype=np.uint64)
        scored = []
        for vocab_hash, raw in self.conn.execute(
            f"SELECT vocab_hash, minhash FROM vocabularies WHERE vocab_hash IN ({', '.join('?' * len(hashes))})",
            sorted(hashes),
        ):
            jaccard = estimated_jaccard(mine, minhash_from_bytes(raw))
            if jaccard >= LSH_MIN_JACCARD:
                scored.append((vocab_hash, jaccard))
        scored.sort(key=lambda item: -item[1])
        return scored[:LSH_VOCAB_LIMIT]

    def _fill_candidates(self, found: dict[int, Candidate], query: IndexQuery, jaccards: dict[int, float]) -> None:
        """Repo, revision, vocabulary similarity and sketch cosine of each candidate. The cosine is
        taken in the candidate's own sketch kind, read from the table (the index may still hold a row
        sketched again under its old kind)."""
        ids = sorted(found)
        sketches = self.sketches_of(ids)
        for start in range(0, len(ids), 500):  # SQLite's default limit on host parameters is 999+
            chunk = ids[start:start + 500]
            for fid, repo_id, sha in self.conn.execute(
                f"SELECT id, repo_id, sha FROM fingerprints WHERE id IN ({', '.join('?' * len(chunk))})", chunk,
            ):
                cand = found[fid]
                cand.repo_id, cand.sha = repo_id, sha
                cand.vocab_jaccard = jaccards.get(fid)
                if fid in sketches:
                    cand.sketch_kind, vector = sketches[fid]
                    cand.cosine = query.cosine(cand.sketch_kind, vector)

    # ---- matches -------------------------------------------------------------------------

    @_translated
    def record_match(self, fingerprint_a: int, fingerprint_b: int, comparison: Comparable,
                     now: datetime | None = None) -> int:
        """Record (or refresh) the comparison of A (earlier/reference) with B; ``found_at`` stays the first time."""
        evidence = json.dumps(comparison.to_dict(), ensure_ascii=False, default=str)
        self.conn.execute(
            "INSERT INTO matches (fingerprint_a, fingerprint_b, verdict, confidence, score, kinds, evidence, found_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (fingerprint_a, fingerprint_b) DO UPDATE SET "
            "verdict = excluded.verdict, confidence = excluded.confidence, score = excluded.score, "
            "kinds = excluded.kinds, evidence = excluded.evidence",
            (fingerprint_a, fingerprint_b, comparison.verdict, float(comparison.confidence), float(comparison.score),
             json.dumps(list(comparison.kinds)), evidence, utc_iso(now)),
        )
        return self.conn.execute(
            "SELECT id FROM matches WHERE fingerprint_a = ? AND fingerprint_b = ?", (fingerprint_a, fingerprint_b),
        ).fetchone()[0]

    @_translated
    def matches_for(self, fingerprint_id: int) -> list[MatchRecord]:
        rows = self.conn.execute(
            "SELECT id, fingerprint_a, fingerprint_b, verdict, confidence, score, kinds, evidence, found_at FROM matches "
            "WHERE fingerprint_a = ? OR fingerprint_b = ? ORDER BY id", (fingerprint_id, fingerprint_id),
        ).fetchall()
        return [MatchRecord(r[0], r[1], r[2], r[3], r[4], r[5], json.loads(r[6]), json.loads(r[7]), r[8]) for r in rows]

    @_translated
    def recorded_parents(self, fingerprint_ids: Iterable[int], verdicts: Iterable[str]) -> dict[int, set[int]]:
        """For each of ``fingerprint_ids``, the earlier models (A) its recorded matches (as B) with
        one of ``verdicts`` name; an id with none maps to an empty set."""
        ids, verdicts = sorted(set(fingerprint_ids)), sorted(str(v) for v in verdicts)
        out: dict[int, set[int]] = {fid: set() for fid in ids}
        for a, b in self.conn.execute(
            f"SELECT fingerprint_a, fingerprint_b FROM matches WHERE fingerprint_b IN ({', '.join('?' * len(ids))}) "
            f"AND verdict IN ({', '.join('?' * len(verdicts))})", (*ids, *verdicts),
        ):
            out[b].add(a)
        return out

    @_translated
    def match_count(self, fingerprint_id: int, verdicts: tuple[str, ...]) -> int:
        """How many stored matches with one of ``verdicts`` involve the fingerprint (either side)."""
        return self.conn.execute(
            f"SELECT count(*) FROM matches WHERE (fingerprint_a = ? OR fingerprint_b = ?) "
            f"AND verdict IN ({', '.join('?' * len(verdicts))})", (fingerprint_id, fingerprint_id, *verdicts),
        ).fetchone()[0]

    # ---- alert outbox (state machine in store/outbox.py) ---------------------------------

    @_translated
    def enqueue_alert(self, dedupe_key: str, payload: dict, now: datetime | None = None) -> bool:
        return outbox.enqueue_alert(self.conn, dedupe_key, payload, now)

    @_translated
    def alert_queued(self, dedupe_key: str) -> bool:
        return outbox.is_queued(self.conn, dedupe_key)

    @_translated
    def claim_pending_alerts(self, limit: int, now: datetime | None = None,
                             lease: timedelta = outbox.DEFAULT_LEASE) -> list[OutboxRow]:
        return outbox.claim_pending_alerts(self.conn, limit, now, lease)

    @_translated
    def mark_delivered(self, alert_id: int, delivery_ref: str | None = None, now: datetime | None = None) -> bool:
        return outbox.mark_delivered(self.conn, alert_id, delivery_ref, now)

    @_translated
    def mark_failed(self, alert_id: int, claim_token: str, error: str, retry_at: datetime | None,
                    max_attempts: int = outbox.MAX_ATTEMPTS, in_doubt: bool = False) -> str | None:
        return outbox.mark_failed(self.conn, alert_id, claim_token, error, retry_at, max_attempts, in_doubt)

    @_translated
    def get_alert(self, alert_id: int) -> OutboxRow | None:
        return outbox.get_alert(self.conn, alert_id)

    @_translated
    def alert_counts(self) -> dict[str, int]:
        return outbox.alert_counts(self.conn)

    # ---- revision work table (state machine in store/work.py) -----------------------------

    @_translated
    def list_revisions(self, revisions: list[tuple[str, str]], feed: str | None = None,
                       now: datetime | None = None) -> None:
        with transaction(self.conn):
            work.list_revisions(self.conn, revisions, feed, now, FINGERPRINT_VERSION)

    @_translated
    def claim_revision(self, repo_id: str, sha: str, owner: str, now: datetime | None = None) -> bool:
        with transaction(self.conn):
            return work.claim(self.conn, repo_id, sha, owner, now, FINGERPRINT_VERSION)

    @_translated
    def finish_revision(self, repo_id: str, sha: str, now: datetime | None = None) -> None:
        work.finish(self.conn, repo_id, sha, now)

    @_translated
    def fail_revision(self, repo_id: str, sha: str, reason: str, detail: str, now: datetime | None = None) -> datetime:
        with transaction(self.conn):
            return work.fail(self.conn, repo_id, sha, reason, detail, now)

    @_translated
    def skip_revision(self, repo_id: str, sha: str, reason: str, detail: str, feed: str | None = None,
                      now: datetime | None = None) -> None:
        work.skip(self.conn, repo_id, sha, reason, detail, feed, now)

    @_translated
    def release_revision(self, repo_id: str, sha: str) -> None:
        work.release(self.conn, repo_id, sha)

    @_translated
    def add_backfilled(self, rows: list[FingerprintRow], known: list[tuple[str, str]], feed: str | None = None,
                       now: datetime | None = None) -> list[tuple[int, bool]]:
        """A backfill batch in one transaction: store ``rows``, each new one's revision unmatched
        (to be compared), and finish the revisions whose fingerprint was stored already (``known``,
        and rows stored meanwhile by someone else) unless they still await the backfill. One
        transaction, so a kill never leaves a stored fingerprint that nothing will compare."""
        with transaction(self.conn):
            added = self._insert_rows(rows, utc_iso(now))
            work.list_revisions(self.conn, [(r.repo_id, r.sha) for r in rows] + known, feed, now, FINGERPRINT_VERSION)
            for row, (_, created) in zip(rows, added):
                if created:
                    work.await_matching(self.conn, row.repo_id, row.sha)
                else:
                    work.finish_listed(self.conn, row.repo_id, row.sha, now)
            for repo_id, sha in known:
                work.finish_listed(self.conn, repo_id, sha, now)
        return added

    @_translated
    def revisions_awaiting(self, state: str, limit: int) -> list[tuple[str, str]]:
        """Backfilled revisions still to compare ("unmatched") or to judge ("undecided")."""
        if state not in work.AWAITING:
            raise StoreError(f"revisions await one of {', '.join(work.AWAITING)}, not {state!r}")
        return work.awaiting(self.conn, state, limit)

    @_translated
    def finish_matching(self, repo_id: str, sha: str, suspects: list[int], compact: Fingerprint | None = None,
                        now: datetime | None = None) -> None:
        """A backfilled revision is compared: done, its ``suspects`` (fingerprint ids, itself
        included when it copies an earlier model) await their decision; ``compact``: keep its
        fingerprint in the compact tier from now on (it matched nothing). One transaction."""
        with transaction(self.conn):
            work.finish(self.conn, repo_id, sha, now)
            found = self.find_fingerprint(repo_id, sha)
            if compact is not None and found is not None:
                self.set_tier(found.id, compact, TIER_COMPACT)
            for fid in suspects:
                suspect = self.get_fingerprint(fid)
                work.await_decision(self.conn, suspect.repo_id, suspect.sha, now)

    @_translated
    def finish_decision(self, repo_id: str, sha: str, now: datetime | None = None) -> None:
        """A suspect's alert decision is made (its alert, if any, is in the outbox)."""
        with transaction(self.conn):
            work.finish(self.conn, repo_id, sha, now)

    @_translated
    def release_claims(self, owner: str) -> int:
        return work.release_all(self.conn, owner)

    @_translated
    def requeue_abandoned(self, owner: str) -> int:
        return work.requeue_abandoned(self.conn, owner)

    @_translated
    def due_revisions(self, limit: int, now: datetime | None = None) -> list[work.Revision]:
        return work.due(self.conn, limit, now)

    @_translated
    def get_revision(self, repo_id: str, sha: str) -> work.Revision | None:
        return work.get(self.conn, repo_id, sha)

    @_translated
    def revision_counts(self) -> dict[str, int]:
        """Revisions by state (store/work.py), every state present."""
        return work.counts(self.conn)

    @_translated
    def revisions_queued(self) -> int:
        """Listed revisions still to fingerprint: pending, in flight, or failed and due again later."""
        counts = work.counts(self.conn)
        return counts["pending"] + counts["in_flight"] + counts["failed"]

    @_translated
    def revisions_not_done(self) -> dict[str, int]:
        """Failed and skipped revisions by "state: reason"."""
        return work.reasons(self.conn)

    # ---- retention -----------------------------------------------------------------------

    @_translated
    def prune(self, older_than: datetime | None, plots_older_than: datetime | None, plot_key: str) -> dict[str, int]:
        """Delete matches and delivered alerts from before ``older_than``, and drop ``plot_key`` from
        the payload of delivered alerts from before ``plots_older_than`` (None: keep). Alerts not
        yet delivered are never touched: deleting one would lose it."""
        out = {"matches": 0, "alerts": 0, "plots": 0}
        with transaction(self.conn):
            if older_than is not None:
                cutoff = utc_iso(older_than)
                out["matches"] = self.conn.execute("DELETE FROM matches WHERE found_at < ?", (cutoff,)).rowcount
                out["alerts"] = self.conn.execute(
                    "DELETE FROM alerts WHERE status = 'delivered' AND created_at < ?", (cutoff,)).rowcount
            if plots_older_than is not None:
                path = f"$.{plot_key}"
                out["plots"] = self.conn.execute(
                    "UPDATE alerts SET payload = json_remove(payload, ?) WHERE status = 'delivered' AND created_at < ? "
                    "AND json_extract(payload, ?) IS NOT NULL", (path, utc_iso(plots_older_than), path)).rowcount
        return out

    # ---- poll cursors --------------------------------------------------------------------

    @_translated
    def get_cursor(self, feed: str) -> dict[str, str | None] | None:
        """{"cursor", "last_seen", "updated_at"} of ``feed``, or None before its first poll."""
        row = self.conn.execute("SELECT cursor, last_seen, updated_at FROM poll_cursors WHERE feed = ?", (feed,)).fetchone()
        return {"cursor": row[0], "last_seen": row[1], "updated_at": row[2]} if row else None

    @_translated
    def set_cursor(self, feed: str, cursor: str | None, last_seen: str | None = None,
                   now: datetime | None = None) -> None:
        self.conn.execute(
            "INSERT INTO poll_cursors (feed, cursor, last_seen, updated_at) VALUES (?, ?, ?, ?) ON CONFLICT (feed) "
            "DO UPDATE SET cursor = excluded.cursor, last_seen = excluded.last_seen, updated_at = excluded.updated_at",
            (feed, cursor, last_seen, utc_iso(now)),
        )

    # ---- watch list ----------------------------------------------------------------------

    @_translated
    def add_watch(self, kind: str, value: str, added_by: str | None = None, note: str | None = None,
                  now: datetime | None = None, guild_id: int = OPERATOR_GUILD) -> bool:
        """Add a reference repo or a watched author to ``guild_id``'s list (OPERATOR_GUILD: the
        command line's); False when already listed there."""
        if kind not in WATCH_KINDS:
            raise StoreError(f"watch list kind must be one of {', '.join(WATCH_KINDS)}, not {kind!r}")
        cur = self.conn.execute(
            "INSERT OR IGNORE INTO watch_list (guild_id, kind, value, added_by, note, added_at) VALUES (?, ?, ?, ?, ?, ?)",
            (guild_id, kind, value, added_by, note, utc_iso(now)),
        )
        return cur.rowcount == 1

    @_translated
    def remove_watch(self, kind: str, value: str, guild_ids: tuple[int, ...] = (OPERATOR_GUILD,)) -> bool:
        """Remove the entry from the lists of ``guild_ids``; False when none of them had it."""
        marks = ",".join("?" * len(guild_ids))
        return self.conn.execute(f"DELETE FROM watch_list WHERE kind = ? AND value = ? AND guild_id IN ({marks})",
                                 (kind, value, *guild_ids)).rowcount >= 1

    @_translated
    def watch_list(self, kind: str | None = None, guild_ids: tuple[int, ...] | None = None) -> list[WatchEntry]:
        """The lists of ``guild_ids``, or (None) what any list watches, each entry once (its first adding)."""
        where, args = [], []
        if kind:
            where.append("kind = ?")
            args.append(kind)
        if guild_ids is not None:
            where.append(f"guild_id IN ({','.join('?' * len(guild_ids))})")
            args += guild_ids
        sql = ("SELECT kind, value, added_by, note, MIN(added_at) FROM watch_list"
               + (" WHERE " + " AND ".join(where) if where else "") + " GROUP BY kind, value ORDER BY kind, value")
        return [WatchEntry(*r) for r in self.conn.execute(sql, args).fetchall()]

    # ---- counters and status -------------------------------------------------------------

    @_translated
    def bump(self, name: str, by: int = 1, now: datetime | None = None) -> int:
        self.conn.execute(
            "INSERT INTO counters (name, value, updated_at) VALUES (?, ?, ?) ON CONFLICT (name) "
            "DO UPDATE SET value = value + excluded.value, updated_at = excluded.updated_at",
            (name, by, utc_iso(now)),
        )
        return self.conn.execute("SELECT value FROM counters WHERE name = ?", (name,)).fetchone()[0]

    @_translated
    def set_status(self, name: str, text: str, now: datetime | None = None) -> None:
        """A status value such as the time of the last poll or the last error message."""
        self.conn.execute(
            "INSERT INTO counters (name, text_value, updated_at) VALUES (?, ?, ?) ON CONFLICT (name) "
            "DO UPDATE SET text_value = excluded.text_value, updated_at = excluded.updated_at",
            (name, text, utc_iso(now)),
        )

    @_translated
    def counters(self) -> dict[str, dict[str, Any]]:
        return {r["name"]: r for r in self.db.query("SELECT name, value, text_value, updated_at FROM counters ORDER BY name")}

    def _scalar(self, sql: str) -> Any:
        return self.conn.execute(sql).fetchone()[0]

    # ---- stats ---------------------------------------------------------------------------

    @_translated
    def stats(self) -> dict[str, Any]:
        families = self.conn.execute(
            "SELECT shape_family, count(*) FROM fingerprints GROUP BY shape_family ORDER BY count(*) DESC, shape_family"
        ).fetchall()
        count = self._scalar
        page_size = count("PRAGMA page_size")
        return {
            "path": self.path,
            "schema_version": self.schema_version(),
            "latest_schema_version": latest_version(),
            "bytes": count("PRAGMA page_count") * page_size,
            "models": self.db["models"].count,
            "fingerprints": count("SELECT count(*) FROM fingerprints"),
            "repos_fingerprinted": count("SELECT count(DISTINCT repo_id) FROM fingerprints"),
            "vocabularies": count("SELECT count(*) FROM vocabularies"),
            "vocabulary_token_bytes": count("SELECT coalesce(sum(length(tokens)), 0) FROM vocabularies"),
            "vocabularies_over_quota": count("SELECT coalesce(max(value), 0) FROM counters "
                                             "WHERE name = 'vocabularies_over_quota'"),
            "index_keys": count("SELECT count(*) FROM index_keys"),
            "lsh_bands": count("SELECT count(*) FROM lsh_bands"),
            "tiers": dict(self.conn.execute("SELECT tier, count(*) FROM fingerprints GROUP BY tier ORDER BY tier").fetchall()),
            # length() of a blob is read from the record header, not by loading the blob.
            "blob_bytes": count("SELECT coalesce(sum(length(blob)), 0) FROM fingerprints"),
            "index_loaded": self.vectors.sizes(),
            "matches": count("SELECT count(*) FROM matches"),
            "alerts": self.alert_counts(),
            "revisions": self.revision_counts(),
            "revisions_not_done": self.revisions_not_done(),
            "watch_list": count("SELECT count(*) FROM watch_list"),
            "shape_families": dict(families),
        }


def _candidate_rank(cand: Candidate) -> tuple:
    # Cosines of different sketch kinds are on different scales (independent pairs near 0.5 in the
    # ordered kind, near 0 in the pairs kind): ranked by how far above their kind's screen they are.
    return (
        not cand.identity_evidence,
        -(cand.cosine - SKETCH_SCREEN_MIN[cand.sketch_kind] if cand.cosine is not None else -3.0),
        -(cand.vocab_jaccard or 0.0),
        cand.fingerprint_id,
    )
