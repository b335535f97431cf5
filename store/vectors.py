"""Exact nearest-neighbour search over sketch vectors, one in-memory matrix per shape family.

Why brute force in numpy (measured with benchmarks/index.py, see the README): a float32 matrix
product over a partition of 200,000 sketches takes ~10-20 ms on one core, recall is exact by
construction, and the index needs no new dependency and no persisted file to keep in step with the
database. There is one partition per (shape family, sketch kind): a query is compared with each
stored sketch in that sketch's own kind (fingerprints/sketch.py). Partitions load lazily from the
``sketches`` table (never from the fingerprint blobs) and refresh incrementally: every written
sketch takes a new, larger ``seq``, so "rows of this partition with seq > the last one loaded" is
all a refresh reads, including rows other processes wrote. A row sketched again in another kind
stays in its old partition too until the process restarts: it is then proposed by either, and
candidates read their cosine from the table (Store.search), never from a partition.

One index per database per process (``shared_index``): the watcher's polls, the bot's commands
and every ``Store`` opened on the same file share it, so it is loaded once and then kept up to date
in place instead of being rebuilt by each command or poll.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from dataclasses import dataclass, field

import numpy as np

from fingerprints.sketch import SKETCH_DIM

# First allocation of a partition; it doubles as it fills, so appends are amortised O(1).
INITIAL_CAPACITY = 1024


@dataclass
class Partition:
    ids: np.ndarray = field(default_factory=lambda: np.empty(INITIAL_CAPACITY, dtype=np.int64))
    matrix: np.ndarray = field(default_factory=lambda: np.empty((INITIAL_CAPACITY, SKETCH_DIM), dtype=np.float32))
    size: int = 0
    last_seq: int = 0

    def append(self, ids: np.ndarray, vectors: np.ndarray, last_seq: int) -> None:
        need = self.size + len(ids)
        if need > len(self.ids):
            capacity = max(need, 2 * len(self.ids))
            self.ids = np.resize(self.ids, capacity)
            grown = np.empty((capacity, SKETCH_DIM), dtype=np.float32)
            grown[: self.size] = self.matrix[: self.size]
            self.matrix = grown
        self.ids[self.size:need] = ids
        self.matrix[self.size:need] = vectors
        self.size = need
        self.last_seq = last_seq


class VectorIndex:
    """Thread-safe: the watcher's poll threads and the bot's command threads search one index."""

    def __init__(self) -> None:
        self._partitions: dict[tuple[str, str], Partition] = {}
        self._lock = threading.Lock()

    def refresh(self, conn: sqlite3.Connection, family: str, kind: str) -> Partition:
        with self._lock:
            return self._refresh(conn, family, kind)

    def _refresh(self, conn: sqlite3.Connection, family: str, kind: str) -> Partition:
        part = self._partitions.setdefault((family, kind), Partition())
        rows = conn.execute(
            "SELECT seq, fingerprint_id, vector FROM sketches WHERE shape_family = ? AND kind = ? AND seq > ? "
            "ORDER BY seq", (family, kind, part.last_seq),
        ).fetchall()
        if rows:
            ids = np.fromiter((r[1] for r in rows), dtype=np.int64, count=len(rows))
            vectors = np.frombuffer(b"".join(r[2] for r in rows), dtype="<f4").reshape(len(rows), SKETCH_DIM)
            part.append(ids, vectors, rows[-1][0])
        return part

    def search(self, conn: sqlite3.Connection, family: str, kind: str, query: np.ndarray,
               k: int) -> list[tuple[int, float]]:
        """The ``k`` fingerprint ids of ``family`` whose ``kind`` sketches have the highest cosine with
        ``query`` (a sketch of that kind)."""
        with self._lock:
            part = self._refresh(conn, family, kind)
            if part.size == 0 or k <= 0:
                return []
            scores = part.matrix[: part.size] @ np.asarray(query, dtype=np.float32)
            ids = part.ids[: part.size]
        if len(scores) > k:
            top = np.argpartition(-scores, k - 1)[:k]
        else:
            top = np.arange(len(scores))
        top = top[np.argsort(-scores[top], kind="stable")]
        return [(int(ids[i]), float(scores[i])) for i in top]

    def sizes(self) -> dict[str, int]:
        """Sketches loaded per partition, named "family/kind"."""
        with self._lock:
            return {f"{family}/{kind}": part.size for (family, kind), part in self._partitions.items() if part.size}


_shared: dict[tuple[str, str], VectorIndex] = {}
_shared_lock = threading.Lock()


def shared_index(path: str, store_id: str | None) -> VectorIndex:
    """The process's index of the database at ``path`` named ``store_id`` (a private one for an
    in-memory database, which no other connection can see)."""
    if path == ":memory:" or not store_id:
        return VectorIndex()
    key = (os.path.realpath(path), store_id)
    with _shared_lock:
        return _shared.setdefault(key, VectorIndex())
