"""Nearest matches of a fingerprint: index candidates, then exact re-ranking by comparison."""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import asdict, dataclass, field
from typing import Any

from fingerprints.compare import compare_fingerprints
from fingerprints.facts import DERIVED_VERDICTS, Verdict
from fingerprints.model import Fingerprint
from fingerprints.sketch import SKETCH_ORDERED, SKETCH_PAIRS, SKETCH_SCREEN_MIN

from .errors import RefetchError
from .records import Candidate, ModelRecord
from .rows import TIER_COMPACT, TIER_FULL, IndexQuery
from .store import Store

# Exact comparison costs ~0.1-0.5 s per pair (embedding alignment), so only the best candidates
# are compared: three per requested result, and never fewer than ten. They are compared in index
# order, and once ``k`` of them are copies the rest are left: a later one can only tie them in
# verdict (any candidate that could be identical, with identical files or sampled values, is
# compared anyway) and at best reorder them by score. A new fine-tune in a family of 1,000 stored
# fine-tunes took 15 comparisons for its 5 neighbours (benchmarks/index.py); it now takes 5.
RERANK_PER_RESULT = 3
MIN_RERANK = 10
# Strongest relation first (Verdict's own order): the order in which re-ranked neighbours are listed.
VERDICT_ORDER = tuple(Verdict)
# Verdicts under which one model is a copy of the other, so the earlier one is the likely original.
COPY_VERDICTS = DERIVED_VERDICTS
# A compact candidate (no stored samples) is re-read from the Hub for a weight comparison only when
# something says it may share weights with the query: a sketch cosine at or above its kind's
# SKETCH_SCREEN_MIN (fingerprints/sketch.py, with how it was measured), identity keys, or the
# config-and-tokenizer comparison (SCREEN_VERDICTS).
# What a cosine under each kind's screen says, as evidence (the measurements: fingerprints/sketch.py).
UNDER_SCREEN = {
    SKETCH_PAIRS: "where no measured copy falls",
    SKETCH_ORDERED: "where no measured copy under its source's vocabulary falls (a row's older sketch kind)",
}
# Verdicts a config-and-tokenizer comparison can reach that need the weights to be confirmed.
# Not "tokenizer-copied": it says the weights are independent, which a sketch cosine under the
# screen already shows, and siblings sharing an uncommon vocabulary would all be re-read.
SCREEN_VERDICTS = DERIVED_VERDICTS
# Compact candidates re-read per query at most (each costs ~0.7 s of Hub reads at 50 ms per
# request); the strongest by identity evidence and sketch cosine go first. A model uploaded into
# a family of many fine-tunes otherwise re-reads the whole family.
REFETCH_PER_QUERY = 3
# Verdicts that make a stored compact fingerprint worth keeping in full (it is evidence now).
KEEP_FULL_VERDICTS = DERIVED_VERDICTS | {Verdict.TOKENIZER_COPIED}
# A family of recorded copies among the candidates (the store's matches: fine-tunes of one base,
# copies of those) is compared through its representatives: its original (the recorded ancestor
# with no recorded parent) when that is a candidate, and its FAMILY_NEAREST members first in index
# order (nearest by sketch). When they agree -- all copies of the query, or none -- the other
# members are not compared. Near 1,000 stored fine-tunes of one base (benchmarks/throughput.py,
# ~0.45 s a comparison) a new fine-tune takes 3 comparisons (5 with the early stop above alone),
# and an unrelated model of the same shape, with no copies to stop at, 3 instead of 15. Two
# members, so that one odd member cannot speak for the family alone and an alert's lineage still
# names the closest siblings; any disagreement, or a pair that needs the deep comparison, sends
# the other members to the comparisons (until k copies, as above).
FAMILY_NEAREST = 2
# Recorded copy relations followed upwards to find a candidate's original.
FAMILY_DEPTH = 4


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


@dataclass
class _Pairing:
    """One candidate on its way to a comparison: which fingerprint stands for it and why."""

    cand: Candidate
    reference: Fingerprint | None  # None: stored in full, read from the store when it is compared
    tier: str
    note: str | None = None  # evidence line when its weights are not compared
    refetched: bool = False
    # Its comparison when already made: the screen's config-and-tokenizer one, kept when the
    # screen let the candidate go (the same pair would otherwise be compared again).
    result: Any = None
    family: str | None = None  # evidence line when it stood for family members left uncompared


def _screen(pairing: _Pairing, fp: Fingerprint, compare: Callable[[Fingerprint, Fingerprint], Any]) -> str | None:
    """Why a compact candidate's weights must be compared, or None when they need not be (its
    config-and-tokenizer comparison is then kept on the pairing)."""
    cand = pairing.cand
    if cand.identity_evidence:
        return "identical files or sampled values"
    if cand.cosine is None:
        return "no sketch to screen with"
    if cand.cosine >= SKETCH_SCREEN_MIN[cand.sketch_kind]:
        return f"sketch cosine {cand.cosine:.2f}"
    light = compare(pairing.reference, fp)  # the compact reference: config and tokenizer only
    if light.verdict in SCREEN_VERDICTS:
        return f"config and tokenizer say {light.verdict}"
    pairing.result = light
    return None


def _pairings(store: Store, fp: Fingerprint, cands: list[Candidate], refetch, compare,
              refetches: int = REFETCH_PER_QUERY) -> list[_Pairing]:
    """The fingerprint each candidate is compared with: the stored one, or for a compact one that
    passes the screen the full one re-read from the Hub (strongest first, ``refetches`` at most);
    a compact one that does not is compared without weights, saying why. A full one is read from
    the store only if it is compared (``_rerank`` may stop before it)."""
    out: list[_Pairing] = []
    screened: list[tuple[float, _Pairing, str]] = []
    for cand in cands:
        stored = store.get_fingerprint(cand.fingerprint_id)
        if stored.tier != TIER_COMPACT:
            out.append(_Pairing(cand, None, stored.tier))
            continue
        pairing = _Pairing(cand, store.load_fingerprint(cand.fingerprint_id), stored.tier)
        out.append(pairing)
        cosine = cand.cosine
        why = _screen(pairing, fp, compare)
        if why is None:
            pairing.note = (f"weights: not compared (stored compact); sketch cosine {cosine:.2f} is below "
                            f"{SKETCH_SCREEN_MIN[cand.sketch_kind]}, {UNDER_SCREEN[cand.sketch_kind]}")
        else:
            pairing.note = f"weights: not compared (stored compact; {why}): no Hub access to re-read them"
            # Cosines of the two sketch kinds compared by their distance above their screens.
            strength = (3.0 if cand.identity_evidence
                        else cosine - SKETCH_SCREEN_MIN[cand.sketch_kind] if cosine is not None else 2.0)
            screened.append((strength, pairing, why))
    screened.sort(key=lambda item: -item[0])
    for rank, (_, pairing, why) in enumerate(screened):
        if refetch is None:
            continue
        if rank >= refetches:
            pairing.note = f"weights: not compared (stored compact; {why}): over {REFETCH_PER_QUERY} re-reads per query"
            continue
        try:
            pairing.reference = refetch(pairing.cand.repo_id, pairing.cand.sha)
        except RefetchError as exc:
            pairing.note = f"weights: not compared (stored compact; {why}): re-reading failed: {exc}"
            continue
        pairing.note, pairing.refetched = None, True
    return out


@dataclass
class _Family:
    """Candidates recorded as copies of the same original(s): the ones compared first, the rest."""

    roots: frozenset[int]
    representatives: list[Candidate]
    deferred: list[Candidate]


def _roots(fid: int, parents: dict[int, set[int]]) -> frozenset[int]:
    """The recorded ancestors of ``fid`` (itself included) without a recorded parent, as far as
    ``parents`` reaches."""
    seen, stack, roots = {fid}, [fid], set()
    while stack:
        node = stack.pop()
        above = parents.get(node) or set()
        if not above:
            roots.add(node)
        for parent in above - seen:
            seen.add(parent)
            stack.append(parent)
    return frozenset(roots)


def _families(store: Store, cands: list[Candidate]) -> list[_Family]:
    """The candidates' families of recorded copies that have members to leave for later (see
    FAMILY_NEAREST). A candidate with identical files or sampled values is always compared."""
    parents: dict[int, set[int]] = {}
    frontier = {c.fingerprint_id for c in cands}
    for _ in range(FAMILY_DEPTH):
        found = store.recorded_parents(frontier, COPY_VERDICTS)
        parents.update(found)
        frontier = {p for above in found.values() for p in above} - parents.keys()
        if not frontier:
            break
    groups: dict[frozenset[int], list[Candidate]] = {}
    for cand in cands:
        groups.setdefault(_roots(cand.fingerprint_id, parents), []).append(cand)
    out = []
    for roots, members in groups.items():
        representatives, deferred, nearest_taken = [], [], 0
        for cand in members:  # index order: nearest by sketch first
            if cand.fingerprint_id in roots or cand.identity_evidence:
                representatives.append(cand)
            elif nearest_taken < FAMILY_NEAREST:
                representatives.append(cand)
                nearest_taken += 1
            else:
                deferred.append(cand)
        if deferred:
            out.append(_Family(roots, representatives, deferred))
    return out


def _decides(speakers: list[_Pairing]) -> bool:
    """Do a family's representatives speak for it: compared on their weights, none needing the
    deep comparison, all copies of the query or none?"""
    if not speakers or any(p.note or getattr(p.result, "needs_deep", False) for p in speakers):
        return False
    return len({p.result.verdict in COPY_VERDICTS for p in speakers}) == 1


# Stores opened by a compare worker, by path: one read connection per database for the worker's life.
_worker_stores: dict[str, Store] = {}


def compare_stored(path: str, compare: Callable[[Fingerprint, Fingerprint], Any], fingerprint_id: int | None,
                   reference: Fingerprint | None, fp: Fingerprint):
    """``compare(reference, fp)`` in a compare worker; a ``reference`` of None is the stored
    fingerprint ``fingerprint_id`` of the database at ``path``, read here."""
    if reference is None:
        store = _worker_stores.get(path)
        if store is None:
            store = _worker_stores[path] = Store.open(path)
        reference = store.load_fingerprint(fingerprint_id)
    return compare(reference, fp)


def _rerank(store: Store, pairings: list[_Pairing], fp: Fingerprint, k: int,
            compare: Callable[[Fingerprint, Fingerprint], Any], pool: Executor | None) -> None:
    """Compare the pairings that still need it, setting each one's ``result``: the ones compared
    without weights (cheap) and those with identical files or sampled values all; the others in
    index order, in rounds as large as the copies still missing, until ``k`` copies are found."""

    def run(batch: list[_Pairing]) -> None:
        if pool is not None and len(batch) > 1 and os.path.isfile(store.path):
            # Each worker reads the stored candidates itself: decoding them here and pickling them
            # over cost the watcher's own process (one core, shared with fingerprinting) ~0.1 s a
            # candidate (benchmarks/throughput.py).
            ids = [None if p.reference is not None else p.cand.fingerprint_id for p in batch]
            results = pool.map(functools.partial(compare_stored, store.path, compare), ids,
                               [p.reference for p in batch], [fp] * len(batch))
        else:
            results = [compare(p.reference or store.load_fingerprint(p.cand.fingerprint_id), fp) for p in batch]
        for pairing, result in zip(batch, results):
            pairing.result = result

    todo = [p for p in pairings if p.result is None]
    run([p for p in todo if p.note is not None or p.cand.identity_evidence])
    copies = sum(p.result is not None and p.result.verdict in COPY_VERDICTS for p in pairings)
    rest = [p for p in todo if p.result is None]
    while rest and copies < k:
        batch, rest = rest[:k - copies], rest[k - copies:]
        run(batch)
        copies += sum(p.result.verdict in COPY_VERDICTS for p in batch)


def nearest(store: Store, fp: Fingerprint, k: int = 5, exclude_repo: str | None = None,
            query_record: ModelRecord | None = None,
            compare: Callable[[Fingerprint, Fingerprint], Any] = compare_fingerprints,
            refetch: Callable[[str, str], Fingerprint] | None = None,
            pool: Executor | None = None, ids: range | None = None) -> list[Neighbour]:
    """The ``k`` stored models closest to ``fp``: strongest verdict first, then weight score; once
    ``k`` copies are found, candidates later in index order are not compared (``_rerank``).

    ``compare(reference, suspect)`` gets the stored model as the reference (A) and ``fp`` as the
    suspect (B); with ``pool`` (a process pool) the comparisons run there, in parallel, while this
    thread waits. ``refetch(repo_id, sha)`` re-reads a full fingerprint from the Hub for compact
    candidates that pass the screen; a refetched one that turns out to be a copy or to share the
    tokenizer is kept in full from then on. A family of recorded copies among the candidates is
    compared through its original and nearest members (FAMILY_NEAREST), the rest only when those
    disagree; the representatives' evidence says how many were left and why.

    ``ids``: only the candidates whose fingerprint id is in that range, among those the search
    proposes (what was stored up to a watermark, or since: ``bot.watch.matching.Matcher.search``).
    """
    query = IndexQuery.from_fingerprint(fp)
    cands = store.search(query, limit=max(MIN_RERANK, RERANK_PER_RESULT * k), exclude_repo=exclude_repo)
    cands = [c for c in cands if ids is None or c.fingerprint_id in ids]
    families = _families(store, cands)
    later = {c.fingerprint_id for family in families for c in family.deferred}
    pairings = _pairings(store, fp, [c for c in cands if c.fingerprint_id not in later], refetch, compare)
    _rerank(store, pairings, fp, k, compare, pool)
    by_id = {p.cand.fingerprint_id: p for p in pairings}
    refetched = sum(p.refetched for p in pairings)
    for family in families:
        speakers = [by_id[c.fingerprint_id] for c in family.representatives]
        copies = sum(p.result is not None and p.result.verdict in COPY_VERDICTS for p in pairings)
        if copies >= k or any(p.result is None for p in speakers):
            continue  # k copies came first: the family's other members could only tie them
        if _decides(speakers):
            names = ", ".join(sorted(store.get_fingerprint(r).repo_id for r in family.roots))
            who = "original and nearest members" if family.roots & by_id.keys() else "nearest members"
            verdict = ("shares their weights" if speakers[0].result.verdict in COPY_VERDICTS
                       else "shares no weights with them")
            for pairing in speakers:
                pairing.family = (f"family: {len(family.deferred)} more candidates recorded as copies of {names} "
                                  f"not compared: its {len(speakers)} compared ({who}) agree the query {verdict}")
            continue
        more = _pairings(store, fp, family.deferred, refetch, compare, REFETCH_PER_QUERY - refetched)
        refetched += sum(p.refetched for p in more)
        _rerank(store, more, fp, k - copies, compare, pool)
        pairings += more
    out = []
    for pairing in pairings:
        cand, result = pairing.cand, pairing.result
        if result is None:  # left uncompared: k copies came before it
            continue
        if pairing.refetched and result.verdict in KEEP_FULL_VERDICTS:
            store.set_tier(cand.fingerprint_id, pairing.reference, TIER_FULL)
        evidence = list(result.evidence)
        if pairing.note:
            # In place of the comparison's generic "weights: not compared (...)" line, which
            # cannot know that the samples were left out on purpose and why.
            generic = next((i for i, line in enumerate(evidence) if line.startswith("weights: not compared")), None)
            if generic is None:
                evidence.append(pairing.note)
            else:
                evidence[generic] = pairing.note
        if pairing.family:
            evidence.append(pairing.family)
        other = store.get_model(cand.repo_id)
        out.append(Neighbour(
            repo_id=cand.repo_id, sha=cand.sha, fingerprint_id=cand.fingerprint_id, verdict=result.verdict,
            confidence=float(result.confidence), score=float(result.score), kinds=list(result.kinds),
            evidence=evidence, reasons=list(cand.reasons),
            declared=declared_relation(query_record, other, cand.repo_id),
            created_at=other.created_at if other else None,
            likely_original=likely_original(result.verdict, query_record, other),
            comparison=result.to_dict(), result=result,
        ))
    return best(out, k)


def best(neighbours: list[Neighbour], k: int) -> list[Neighbour]:
    """The ``k`` strongest of ``neighbours``: strongest verdict first, then weight score."""
    return sorted(neighbours, key=_rank)[:k]
