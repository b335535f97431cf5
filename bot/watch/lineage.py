"""Lineage: which of the stored models that a suspect copies is the family's original.

A fine-tuned family is a crowd of near-identical models: with 1,000 fine-tunes of one base stored,
the best sibling of a new copy scored 0.9987 against the base's 0.9988, so "the best score" names a
sibling by a 1e-4 margin. The original is chosen by what scores cannot tell:
1. a model that declares (directly or through its declared bases) another family member as its
   base is a descendant, never the root;
2. of the rest, the earliest created (a model without a Hub date, such as a local reference
   folder, counts as earliest: it was added by hand as a reference);
3. ties: the model the others share most with (most copy matches in the store), then the
   first stored.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True)
class Member:
    """One stored model that the suspect copies (or the suspect's own declared base)."""

    repo_id: str
    fingerprint_id: int
    created_at: datetime | None
    declared_ancestors: frozenset[str]  # its declared bases, and theirs, as far as the store knows
    shared: int  # copy matches of this model with other stored models
    verdict: str  # of the suspect against this model
    score: float
    confidence: float


def _norm(repo_id: str) -> str:
    return repo_id.strip().lower()


def is_older(a_created: datetime | None, a_id: int, b_created: datetime | None, b_id: int) -> bool:
    """Is A the earlier of two models? Creation dates first (no date counts as earliest), then the
    first stored."""
    if a_created is not None and b_created is not None and a_created != b_created:
        return a_created < b_created
    if (a_created is None) != (b_created is None):
        return a_created is None
    return a_id < b_id


def pick_root(members: list[Member]) -> Member:
    """The family's original among ``members`` (not empty): see the module docstring."""
    names = {_norm(m.repo_id) for m in members}
    roots = [m for m in members if not ({_norm(a) for a in m.declared_ancestors} & (names - {_norm(m.repo_id)}))]
    pool = roots or members  # a declaration cycle leaves none: fall back to dates alone

    def key(m: Member) -> tuple:
        return (m.created_at is not None, m.created_at.timestamp() if m.created_at else 0.0, -m.shared,
                m.fingerprint_id)

    return min(pool, key=key)
