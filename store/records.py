"""Typed records the store reads and writes."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any



def utc_iso(moment: datetime | None = None) -> str:
    """One timestamp format everywhere, so that string order is time order in SQL."""
    moment = moment or datetime.now(timezone.utc)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc).isoformat(timespec="microseconds")


@dataclass
class ModelRecord:
    """A Hub repo's listing metadata, as the store keeps it (bot.watch.records.model_record builds it)."""

    repo_id: str
    model_id: str | None = None
    sha: str | None = None
    author: str | None = None
    created_at: str | None = None
    last_modified: str | None = None
    downloads: int | None = None
    likes: int | None = None
    trending_score: float | None = None
    license: str | None = None
    base_models: list[str] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)
    library_name: str | None = None
    pipeline_tag: str | None = None
    first_seen: str | None = None  # set by the store
    last_seen: str | None = None  # set by the store

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> ModelRecord:
        return cls(**{**row, "base_models": json.loads(row["base_models"]), "tags": json.loads(row["tags"])})


@dataclass(frozen=True)
class StoredFingerprint:
    """A fingerprints row without its blob."""

    id: int
    repo_id: str
    sha: str
    version: int
    created_at: str
    bytes_read: int
    vocab_hash: str | None
    shape_family: str
    tier: str = "full"  # store/rows.py TIERS


@dataclass
class Candidate:
    """A fingerprint worth comparing exactly, and why the index proposed it."""

    fingerprint_id: int
    repo_id: str
    sha: str
    reasons: list[str] = field(default_factory=list)  # "key:vocab", "lsh", "vector", ...
    cosine: float | None = None  # sketch cosine with the query, when both have a sketch
    sketch_kind: str | None = None  # the kind of the stored sketch that cosine is in (fingerprints/sketch.py)
    vocab_jaccard: float | None = None  # MinHash estimate, when proposed by LSH

    @property
    def identity_evidence(self) -> bool:
        return any(r in ("key:file_sha256", "key:values") for r in self.reasons)


@dataclass(frozen=True)
class MatchRecord:
    id: int
    fingerprint_a: int
    fingerprint_b: int
    verdict: str
    confidence: float
    score: float
    kinds: list[str]
    evidence: dict[str, Any]
    found_at: str


@dataclass(frozen=True)
class OutboxRow:
    """An outbox row as claimed by a sender; ``payload`` is the alert (``bot.alerts.model.Alert.to_dict``)."""

    id: int
    dedupe_key: str
    nonce: str
    payload: dict[str, Any]
    status: str
    attempts: int
    claim_token: str | None
    lease_until: str | None
    next_attempt_at: str
    last_error: str | None
    delivery_ref: str | None
    created_at: str
    delivered_at: str | None
    # True when this claim took over a 'sending' row whose lease expired: a previous sender may
    # have posted it before dying, so the sender must look for ``nonce`` before posting again.
    resumed: bool = False


@dataclass(frozen=True)
class WatchEntry:
    kind: str  # "reference" | "author"
    value: str
    added_by: str | None
    note: str | None
    added_at: str
