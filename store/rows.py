"""FingerprintRow: everything the store writes for one fingerprint, computed outside the write lock."""

from __future__ import annotations

import json
import zlib
from dataclasses import dataclass, field

import numpy as np

from fingerprints.model import Fingerprint
from fingerprints.sketch import SKETCH_DIM, SKETCH_KIND, SKETCH_KINDS, sketch_vector

from .errors import StoreError
from .lsh import band_buckets

# What a fingerprint row's blob holds (the ``tier`` column, migration 0003).
TIER_REFERENCE = "reference"  # a reference model: full detail, never compacted
TIER_FULL = "full"  # matched something: full detail kept as the evidence
TIER_COMPACT = "compact"  # Fingerprint.compact(): no sampled values; re-read from the Hub when needed
TIERS = (TIER_REFERENCE, TIER_FULL, TIER_COMPACT)


@dataclass
class IndexQuery:
    """What candidate search needs from a fingerprint (no blob, no vocabulary)."""

    keys: list[tuple[str, str]]
    shape_family: str
    # Sketch kind -> the fingerprint's sketch of that kind, for each kind it has one of: stored rows
    # are met in their own kind (a compact row cannot be sketched again).
    sketches: dict[str, np.ndarray]
    vocab_hash: str | None
    minhash: list[int]

    @classmethod
    def from_fingerprint(cls, fp: Fingerprint) -> IndexQuery:
        sketches = {kind: sketch_vector(fp, kind) for kind in SKETCH_KINDS}
        tok = fp.tokenizer
        return cls(keys=fp.index_keys(), shape_family=fp.shape_family(),
                   sketches={kind: v for kind, v in sketches.items() if v.any()},
                   vocab_hash=tok.vocab_hash if tok else None, minhash=list(tok.minhash) if tok else [])

    def cosine(self, kind: str, vector: np.ndarray) -> float | None:
        """Cosine of a stored sketch of ``kind`` with this query's sketch of that kind (None: none)."""
        mine = self.sketches.get(kind)
        return None if mine is None else float(np.asarray(vector, dtype=np.float32) @ mine)

    def lsh_buckets(self) -> list[tuple[int, int]]:
        return band_buckets(self.minhash) if self.minhash else []


@dataclass
class FingerprintRow:
    repo_id: str
    sha: str
    version: int
    blob: bytes
    bytes_read: int
    shape_family: str
    keys: list[tuple[str, str]]
    sketch: np.ndarray | None  # (SKETCH_DIM,) float32, unit norm, of SKETCH_KIND; None: nothing to sketch
    vocab_hash: str | None = None
    vocab_size: int = 0
    minhash: list[int] = field(default_factory=list)
    vocab_tokens: list[str] | None = None
    tier: str = TIER_FULL

    @classmethod
    def from_fingerprint(cls, repo_id: str, sha: str, fp: Fingerprint, tier: str = TIER_FULL) -> FingerprintRow:
        """The row of ``fp``; index keys and sketch always come from the full fingerprint, the blob
        is the compact one for TIER_COMPACT."""
        if not repo_id or not sha:
            raise StoreError("a fingerprint needs a repo id and a revision sha to be stored")
        if tier not in TIERS:
            raise StoreError(f"fingerprint tier must be one of {', '.join(TIERS)}, not {tier!r}")
        q = IndexQuery.from_fingerprint(fp)
        tok = fp.tokenizer
        blob = (fp.compact() if tier == TIER_COMPACT else fp).to_blob()
        return cls(
            repo_id=repo_id, sha=sha, version=fp.version, blob=blob, bytes_read=fp.bytes_read,
            shape_family=q.shape_family, keys=q.keys, sketch=q.sketches.get(SKETCH_KIND), vocab_hash=q.vocab_hash,
            vocab_size=tok.vocab_size if tok else 0, minhash=q.minhash, vocab_tokens=tok.vocab if tok else None,
            tier=tier,
        )

    def sketch_bytes(self) -> bytes | None:
        if self.sketch is None:
            return None
        if self.sketch.shape != (SKETCH_DIM,):
            raise StoreError(f"sketch has shape {self.sketch.shape}, expected ({SKETCH_DIM},)")
        return self.sketch.astype("<f4").tobytes()

    def lsh_buckets(self) -> list[tuple[int, int]]:
        return band_buckets(self.minhash) if self.minhash else []


def compress_tokens(tokens: list[str]) -> bytes:
    return zlib.compress(json.dumps(tokens, ensure_ascii=False, separators=(",", ":")).encode(), 6)


def decompress_tokens(raw: bytes) -> list[str]:
    return json.loads(zlib.decompress(raw))
