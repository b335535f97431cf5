"""From a stored fingerprint to alerts: the pair decides, not the arrival order.

``Matcher.ingest`` stores a model's fingerprint, compares it with its nearest stored models and
records every copy relation oriented from the earlier model (A) to the later one (B), whichever
side was just fingerprinted. It returns the suspects whose verdict may have changed: the new model
when it copies an earlier one, and every stored model it turns out to be the original of.

``Matcher.decide`` then judges one suspect against its whole family (every recorded earlier copy
relation, plus the declared bases the store holds): ``lineage.pick_root`` names the original,
``policy.decide_alert`` says whether to alert, and the alert goes to the outbox once per (suspect
revision, original) under the outbox's dedupe key. The watcher decides after a whole listing is
ingested, so models listed in one cycle are judged with each other whatever their order; ``index
add``/``index seed`` and the watched feed go through the same two calls.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from fingerprints.model import Fingerprint
from fingerprints.plot import render_comparison_png
from store.nearest import Neighbour, best, nearest
from store.records import ModelRecord
from store.rows import TIER_COMPACT, TIER_FULL
from store.store import Store

from bot.alerts.model import Alert, build_alert, dedupe_key
from bot.hub.sources import SpecFingerprint
from bot.watch.compare_pool import ComparePool
from bot.settings import Settings
from bot.watch.lineage import Member, is_older, pick_root
from bot.watch.policy import ALERTING_VERDICTS, ModelFacts, Severity, decide_alert
from bot.watch.records import spec_record

log = logging.getLogger("hubwatch.matching")

# A stored or new model as the deep comparison needs it: repo id (or folder), revision, fingerprint.
Side = tuple[str, str, Fingerprint]
Deepen = Callable[[Side, Side, Any], Any]

NEIGHBOURS = 5
# Declared lineage is followed this many hops through the store (a card declaring a fine-tune of
# X declares X too).
ANCESTOR_DEPTH = 3
# Siblings named in an alert's evidence; the rest are counted.
SIBLINGS_SHOWN = 5
# Payload key of the evidence PNG (kept beside the alert JSON, which excludes it).
PLOT_KEY = "plot_png_base64"


def parse_time(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


def facts(record: ModelRecord) -> ModelFacts:
    return ModelFacts(repo_id=record.repo_id, sha=record.sha, author=record.author,
                      created_at=parse_time(record.created_at), license=record.license,
                      declared_base_models=tuple(record.base_models))


def ancestors(store: Store, bases: Iterable[str]) -> set[str]:
    """The declared bases and, through the store's records, their declared bases (ANCESTOR_DEPTH hops)."""
    seen = set(bases)
    frontier = list(seen)
    for _ in range(ANCESTOR_DEPTH):
        nxt = []
        for repo in frontier:
            rec = store.get_model(repo)
            for parent in rec.base_models if rec else []:
                if parent not in seen:
                    seen.add(parent)
                    nxt.append(parent)
        frontier = nxt
    return seen


@dataclass
class Searched:
    """A model's nearest stored models (``Matcher.search``), waiting to be recorded (``Matcher.record``)."""

    record: ModelRecord
    sha: str
    fp: Fingerprint
    watermark: int  # the highest fingerprint id stored when it searched: later ones were not searched
    neighbours: list[Neighbour]
    # Neighbour fingerprint id -> its comparison in its own direction, for the copies later by date.
    reverse: dict[int, Any]


@dataclass
class _Judged:
    """An alert decided and not yet queued, with the comparison its evidence plot is drawn from."""

    alert: Alert
    comparison: Any


@dataclass
class Ingested:
    fingerprint_id: int
    created: bool
    suspects: set[int] = field(default_factory=set)  # fingerprint ids to decide again
    # (A, B) fingerprint ids -> the comparison recorded for the pair, when it read both sides'
    # weights: ``decide`` reuses it for the alert instead of comparing the pair again.
    comparisons: dict[tuple[int, int], Any] = field(default_factory=dict)

    def recorded(self, store: Store, a: int, b: int, comparison) -> None:
        """Record B as a copy of A: B is a suspect to decide again."""
        store.record_match(a, b, comparison)
        self.suspects.add(b)
        weights = getattr(comparison, "weights", None)  # Comparison.weights: {"available": False} when unread
        if isinstance(weights, dict) and weights.get("available", True):
            self.comparisons[(a, b)] = comparison


class Matcher:
    def __init__(self, settings: Settings, compare: Callable[[Fingerprint, Fingerprint], Any] | None = None,
                 refetch: Callable[[str, str], Fingerprint] | None = None, compare_pool: ComparePool | None = None,
                 deepen: Deepen | None = None):
        """``refetch`` re-reads compact stored candidates from the Hub; ``compare_pool`` runs the
        nearest-match comparisons on every core (both as ``store.nearest.nearest`` takes them);
        ``deepen`` decides a comparison the standard budget left undecided (``needs_deep``) with the
        deep comparison, before anything is recorded or alerted (``bot.app.App.deepen``)."""
        if compare is None:
            from fingerprints.compare import compare_fingerprints as compare
        self.compare = compare
        self.refetch = refetch
        self.compare_pool = compare_pool
        self.deepen = deepen
        self.hub_url = settings.hub.endpoint
        self.alert_on_declared = settings.alerts.on_declared_derivatives
        self.min_severity = Severity(settings.alerts.min_severity).rank

    # ---- ingest ----------------------------------------------------------------------------

    def ingest(self, store: Store, record: ModelRecord, sha: str, fp: Fingerprint, tier: str | None = None) -> Ingested:
        """Store ``fp`` as ``record.repo_id`` at ``sha`` and record its copy relations, earlier model first.
        ``tier``: how much of it to keep (store/rows.py); by default full when it has a copy relation,
        else compact. Idempotent: ingesting a revision again records nothing new, same suspects."""
        return self.record(store, self.search(store, record, sha, fp), tier)

    def search(self, store: Store, record: ModelRecord, sha: str, fp: Fingerprint) -> Searched:
        """The first half of ``ingest``, which several models may run at once, each in a thread with
        its own ``store``: ``fp``'s nearest models among those stored now, compared (deeply when
        needed). It stores nothing of ``fp``. Its only writes keep compact neighbours re-read from
        the Hub in full (``store.set_tier``): single autocommit statements, which wait for the other
        writers on the busy timeout; two searches re-reading one neighbour write the same bytes."""
        watermark = store.last_fingerprint_id()
        neighbours = self._nearest(store, record, sha, fp, range(watermark + 1))
        # The copies that ``record`` compares again in their direction, compared here already: which
        # of a pair is earlier is known now, the id of a row stored later being above all of these.
        stored = store.find_fingerprint(record.repo_id, sha, fp.version)
        mine = (parse_time(record.created_at), stored.id if stored else watermark + 1)
        reverse = {n.fingerprint_id: self._reversed(store, (record.repo_id, sha, fp), n) for n in neighbours
                   if n.verdict in ALERTING_VERDICTS and not is_older(parse_time(n.created_at), n.fingerprint_id, *mine)}
        return Searched(record, sha, fp, watermark, neighbours, reverse)

    def record(self, store: Store, searched: Searched, tier: str | None = None) -> Ingested:
        """The second half of ``ingest``, in arrival order: catch up with the models stored since
        the search, then store the model and its copy relations."""
        record, sha, fp = searched.record, searched.sha, searched.fp
        neighbours = searched.neighbours
        latest = store.last_fingerprint_id()
        if latest > searched.watermark:
            # Models stored since the search (the cycle's others, recorded meanwhile): the ones the
            # same search proposes now are compared too, as if this model had been searched after
            # them. Two copies of one model in one listing otherwise never see each other.
            since = self._nearest(store, record, sha, fp, range(searched.watermark + 1, latest + 1))
            neighbours = best(neighbours + since, NEIGHBOURS)
        copies = [n for n in neighbours if n.verdict in ALERTING_VERDICTS]
        fid, created = store.add_fingerprint(record.repo_id, sha, fp,
                                             tier=tier or (TIER_FULL if copies else TIER_COMPACT))
        done = Ingested(fid, created)
        mine = parse_time(record.created_at)
        for n in copies:
            if is_older(parse_time(n.created_at), n.fingerprint_id, mine, fid):
                done.recorded(store, n.fingerprint_id, fid, n.result)
                continue
            result = searched.reverse.get(n.fingerprint_id)
            if result is None:  # a copy found by the catch-up
                result = self._reversed(store, (record.repo_id, sha, fp), n)
            if result.verdict in ALERTING_VERDICTS:
                done.recorded(store, fid, n.fingerprint_id, result)
        return done

    def _reversed(self, store: Store, new: Side, n: Neighbour):
        """A copy stored before the new model but later by date, compared in its direction (kinds
        such as vocab-extend or prune say what B did to A)."""
        return self._compared(new, (n.repo_id, n.sha, store.load_fingerprint(n.fingerprint_id)))

    def _nearest(self, store: Store, record: ModelRecord, sha: str, fp: Fingerprint, ids: range) -> list[Neighbour]:
        """The nearest models among the stored ``ids``, those the standard comparison left undecided deepened."""
        neighbours = nearest(store, fp, k=NEIGHBOURS, exclude_repo=record.repo_id, query_record=record,
                             compare=self.compare, refetch=self.refetch,
                             pool=self.compare_pool.get() if self.compare_pool else None, ids=ids)
        return [self._deepened(store, n, (record.repo_id, sha, fp)) for n in neighbours]

    # ---- decide ----------------------------------------------------------------------------

    def decide(self, store: Store, suspect_id: int, trigger: str | None = None,
               compared: Mapping[tuple[int, int], Any] | None = None) -> Alert | None:
        """Judge the stored model ``suspect_id`` against its family; the alert queued now, if any.
        ``trigger`` is the repo whose arrival caused this decision (named when it is the original);
        ``compared``: comparisons made while ingesting (``Ingested.comparisons``), reused for the alert."""
        alerts = self.decide_all(store, {suspect_id: trigger}, compared)
        return alerts[0] if alerts else None

    def decide_all(self, store: Store, suspects: Mapping[int, str | None],
                   compared: Mapping[tuple[int, int], Any] | None = None) -> list[Alert]:
        """``decide`` for every suspect (fingerprint id -> trigger); the alerts queued now. The
        evidence plots are drawn together on the compare pool: a plot is ~0.5 s of matplotlib, the
        largest CPU cost left in the watcher's own process (benchmarks/throughput.py)."""
        judged = [j for fid, trigger in suspects.items() if (j := self._judge(store, fid, trigger, compared))]
        plots = self._on_pool(render_comparison_png, [j.comparison for j in judged])
        queued = []
        for j, plot in zip(judged, plots):
            payload = j.alert.to_dict()
            payload[PLOT_KEY] = base64.b64encode(plot).decode("ascii")
            if store.enqueue_alert(j.alert.key, payload):
                queued.append(j.alert)
        return queued

    def _judge(self, store: Store, suspect_id: int, trigger: str | None,
               compared: Mapping[tuple[int, int], Any] | None) -> _Judged | None:
        """The alert ``suspect_id`` deserves now, with the comparison its plot is drawn from; None
        when its family does not call for one, or that alert is already queued."""
        row = store.get_fingerprint(suspect_id)
        suspect = store.get_model(row.repo_id) or ModelRecord(repo_id=row.repo_id)
        suspect.sha = row.sha
        declared = ancestors(store, suspect.base_models)
        family = self._family(store, suspect_id, suspect, declared)
        if not family:
            return None
        root = pick_root(family)
        source = store.get_model(root.repo_id) or ModelRecord(repo_id=root.repo_id)
        source.sha = store.get_fingerprint(root.fingerprint_id).sha
        unindexed = frozenset(b for b in suspect.base_models if store.find_fingerprint(b) is None)
        suspect_facts, source_facts = facts(suspect), facts(source)
        decision = decide_alert(suspect_facts, source_facts, root.verdict, root.confidence,
                                declared_ancestors=frozenset(declared), alert_on_declared=self.alert_on_declared,
                                unindexed_declared=unindexed)
        log.info("match", extra={"repo": suspect.repo_id, "source": source.repo_id, "verdict": root.verdict,
                                 "alert": decision.alert, "reason": decision.reason, "family": len(family)})
        if not decision.alert or decision.severity.rank < self.min_severity:
            return None
        if store.alert_queued(dedupe_key(suspect.repo_id, suspect.sha, source.repo_id)):
            return None  # exactly once per (suspect revision, original): skip the comparison and plot
        comparison = (compared or {}).get((root.fingerprint_id, suspect_id)) or self._compared(
            self._side(store, root.fingerprint_id), self._side(store, suspect_id))
        if trigger and trigger == source.repo_id and trigger != suspect.repo_id:
            decision = replace(decision, reason=f"{decision.reason}; found when {source.repo_id} was indexed")
        alert = build_alert(suspect_facts, source_facts, decision, comparison, hub_url=self.hub_url)
        return _Judged(replace(alert, evidence=alert.evidence + _siblings_line(family, root)), comparison)

    def _on_pool(self, fn: Callable[..., Any], *args: list) -> list:
        """``map(fn, *args)`` on the compare pool when it is running, else here. A pool whose worker
        died (killed under another task, out of memory say) is replaced for the next task and this
        work done here, as it was before the pool ran it: a plot or one comparison lost to it would
        fail the model, or the whole cycle with a traceback."""
        pool = self.compare_pool.running() if self.compare_pool else None
        if pool is not None and args[0]:
            try:
                return list(pool.map(fn, *args))
            except BrokenProcessPool:
                self.compare_pool.renew_if_broken()
        return list(map(fn, *args))

    def _family(self, store: Store, suspect_id: int, suspect: ModelRecord, declared: set[str]) -> list[Member]:
        """Every stored earlier model the suspect copies: its recorded matches, plus the declared bases
        (its own and its family's) that the store holds, compared now if never compared."""
        found: dict[int, tuple[str, float, float]] = {
            m.fingerprint_a: (m.verdict, m.score, m.confidence) for m in store.matches_for(suspect_id)
            if m.fingerprint_b == suspect_id and m.verdict in ALERTING_VERDICTS}
        bases = set(declared)
        for fid in list(found):
            rec = store.get_model(store.get_fingerprint(fid).repo_id)
            bases |= ancestors(store, rec.base_models) if rec else set()
        mine = parse_time(suspect.created_at)
        for base in sorted(bases - {suspect.repo_id}):
            stored = store.find_fingerprint(base)
            if stored is None or stored.id in found or stored.id == suspect_id:
                continue
            rec = store.get_model(base)
            if not is_older(parse_time(rec.created_at if rec else None), stored.id, mine, suspect_id):
                continue
            result = self._compared(self._side(store, stored.id), self._side(store, suspect_id))
            if result.verdict in ALERTING_VERDICTS:
                store.record_match(stored.id, suspect_id, result)
                found[stored.id] = (result.verdict, float(result.score), float(result.confidence))
        return [self._member(store, fid, *relation) for fid, relation in found.items()]

    def _compared(self, a: Side, b: Side):
        """compare(a, b) on the compare pool, decided by the deep comparison (here: it reads the Hub)
        when the standard one could not decide."""
        result = self._on_pool(self.compare, [a[2]], [b[2]])[0]
        if self.deepen is not None and getattr(result, "needs_deep", False):
            result = self.deepen(a, b, result)
        return result

    def _deepened(self, store: Store, n, new: Side):
        """A nearest neighbour whose comparison needs the deep one, with the deep result folded in."""
        if self.deepen is None or not getattr(n.result, "needs_deep", False):
            return n
        result = self.deepen((n.repo_id, n.sha, self._full(store, n.fingerprint_id)), new, n.result)
        return replace(n, verdict=str(result.verdict), score=float(result.score), confidence=float(result.confidence),
                       kinds=[str(k) for k in result.kinds], evidence=list(result.evidence),
                       comparison=result.to_dict(), result=result)

    def _side(self, store: Store, fingerprint_id: int) -> Side:
        row = store.get_fingerprint(fingerprint_id)
        return row.repo_id, row.sha, self._full(store, fingerprint_id)

    def _full(self, store: Store, fingerprint_id: int) -> Fingerprint:
        """A stored fingerprint with its weight samples: a compact one is read from the Hub again
        (and kept in full from then on) when a refetch is configured."""
        row = store.get_fingerprint(fingerprint_id)
        if row.tier != TIER_COMPACT or self.refetch is None:
            return store.load_fingerprint(fingerprint_id)
        fp = self.refetch(row.repo_id, row.sha)
        store.set_tier(fingerprint_id, fp, TIER_FULL)
        return fp

    @staticmethod
    def _member(store: Store, fid: int, verdict: str, score: float, confidence: float) -> Member:
        repo_id = store.get_fingerprint(fid).repo_id
        rec = store.get_model(repo_id)
        return Member(repo_id=repo_id, fingerprint_id=fid, created_at=parse_time(rec.created_at if rec else None),
                      declared_ancestors=frozenset(ancestors(store, rec.base_models) if rec else ()),
                      shared=store.match_count(fid, ALERTING_VERDICTS), verdict=verdict, score=score,
                      confidence=confidence)


def _siblings_line(family: list[Member], root: Member) -> tuple[str, ...]:
    siblings = sorted((m for m in family if m is not root), key=lambda m: -m.score)
    if not siblings:
        return ()
    shown = ", ".join(f"{m.repo_id} ({m.verdict} {m.score:.4f})" for m in siblings[:SIBLINGS_SHOWN])
    more = f" and {len(siblings) - SIBLINGS_SHOWN} more" if len(siblings) > SIBLINGS_SHOWN else ""
    return (f"lineage: {root.repo_id} is the family's original ({root.verdict} {root.score:.4f}); "
            f"also matching, its descendants or siblings: {shown}{more}",)


def plot_of(row) -> bytes | None:
    """The evidence PNG kept beside an outbox row's alert (``load_plot`` of deliver_pending)."""
    encoded = row.payload.get(PLOT_KEY) if isinstance(row.payload, dict) else None
    return base64.b64decode(encoded) if encoded else None


@dataclass
class Indexed:
    spec: SpecFingerprint
    ingested: Ingested
    alerts: list[Alert]


def index_spec(store: Store, got: SpecFingerprint, matcher: Matcher, tier: str | None = None) -> Indexed:
    """``index add``/``index seed``/``/nearest``: store a fingerprinted folder or repo with its Hub
    metadata, and alert on every undeclared copy it reveals (itself, or stored models it is the
    original of) exactly as the watcher would."""
    record = spec_record(got)
    if record is not None:
        store.upsert_model(record)
    record = record or ModelRecord(repo_id=got.repo_id)
    record.sha = got.sha
    ingested = matcher.ingest(store, record, got.sha, got.fp, tier=tier)
    alerts = matcher.decide_all(store, dict.fromkeys(sorted(ingested.suspects), got.repo_id), ingested.comparisons)
    store.list_revisions([(got.repo_id, got.sha)], feed="index")
    store.finish_revision(got.repo_id, got.sha)
    return Indexed(got, ingested, alerts)
