"""Nearest matches of a fingerprint: index candidates, then exact re-ranking by comparison."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from fingerprints.facts import DERIVED_VERDICTS, Verdict
from fingerprints.model import Fingerprint

from .records import ModelRecord
from .store import Store

# Exact comparison costs ~0.1-0.5 s per pair (embedding alignment), so only the best candidates
# are compared: three per requested result, and never fewer than ten.
RERANK_PER_RESULT = 3
MIN_RERANK = 10
# Strongest relation first (Verdict's own order): the order in which re-ranked neighbours are listed.
VERDICT_ORDER = tuple(Verdict)
# Verdicts under which one model is a copy of the other, so the earlier one is the likely original.
COPY_VERDICTS = DERIVED_VERDICTS


@dataclass
class Neighbour:
    repo_id: str
    sha: str
    fingerprint_id: int
    verdict: str
    confidence: float
    score: float
    kinds: list[str]
    evidence: list[str]
    reasons: list[str]  # why the index proposed it
    declared: str  # declared relation between the query and this model, from card metadata
    created_at: str | None
    likely_original: str | None  # "neighbour" | "query" | None (not a copy, or dates unknown)
    comparison: dict[str, Any] = field(default_factory=dict, repr=False)
    # The comparison object itself (for plots), kept out of to_dict and equality.
    result: Any = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("result")
        return d


def declared_relation(query: ModelRecord | None, other: ModelRecord | None, other_repo: str) -> str:
    query_bases = set(query.base_models) if query else set()
    other_bases = set(other.base_models) if other else set()
    if other_repo in query_bases:
        return "query declares it as base"
    if query is not None and query.repo_id in other_bases:
        return "declares the query as base"
    shared = sorted(query_bases & other_bases)
    if shared:
        return f"both declare {shared[0]}"
    return "none"


def likely_original(verdict: str, query: ModelRecord | None, other: ModelRecord | None) -> str | None:
    """The earlier of two copies is the likely original (Hub creation dates; unknown without both)."""
    if verdict not in COPY_VERDICTS or not (query and query.created_at and other and other.created_at):
        return None
    return "neighbour" if other.created_at <= query.created_at else "query"


def _rank(n: Neighbour) -> tuple:
    order = VERDICT_ORDER.index(n.verdict) if n.verdict in VERDICT_ORDER else len(VERDICT_ORDER)
    return (order, -n.score, -n.confidence, n.fingerprint_id)


def nearest(store: Store, fp: Fingerprint, k: int = 5, exclude_repo: str | None = None,
            query_record: ModelRecord | None = None,
            compare: Callable[[Fingerprint, Fingerprint], Any] | None = None) -> list[Neighbour]:
    """The ``k`` stored models closest to ``fp``: strongest verdict first, then weight score.

    ``compare(reference, suspect)`` defaults to ``fingerprints.compare.compare_fingerprints``; the
    stored model is passed as the reference (A) and ``fp`` as the suspect (B).
    """
    if compare is None:
        from fingerprints.compare import compare_fingerprints as compare
    cands = store.candidates(fp, limit=max(MIN_RERANK, RERANK_PER_RESULT * k), exclude_repo=exclude_repo)
    out = []
    for cand in cands:
        result = compare(store.load_fingerprint(cand.fingerprint_id), fp)
        other = store.get_model(cand.repo_id)
        out.append(Neighbour(
            repo_id=cand.repo_id, sha=cand.sha, fingerprint_id=cand.fingerprint_id, verdict=result.verdict,
            confidence=float(result.confidence), score=float(result.score), kinds=list(result.kinds),
            evidence=list(result.evidence), reasons=list(cand.reasons),
            declared=declared_relation(query_record, other, cand.repo_id),
            created_at=other.created_at if other else None,
            likely_original=likely_original(result.verdict, query_record, other),
            comparison=result.to_dict(), result=result,
        ))
    out.sort(key=_rank)
    return out[:k]
