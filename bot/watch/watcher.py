"""The watcher: poll Hub feeds, fingerprint new revisions, alert on undeclared copies.

One cycle of a feed:
1. list the feed's models (newest by creation time, trending, recently modified);
2. skip every (repo, sha) already fingerprinted — the store is the dedupe memory, so restarts
   and overlapping feeds never redo work;
3. fingerprint the rest concurrently (network-bound; ``feeds.concurrency`` at a time);
4. in this thread, store each model and fingerprint, find its nearest stored models, and for the
   strongest match decide with ``bot.watch.policy`` whether it is an undeclared copy; alerts go to the
   SQLite outbox, never straight to Discord;
5. drain the outbox (``bot.alerts.delivery``): delivered exactly once across retries and restarts.

SQLite connections are not shared across threads: every job opens its own ``Store``.
All durable state (seen revisions, cursors, outbox, counters) lives in the store; the scheduler's
job store is in memory and rebuilt at start with fixed ids.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Iterable, Protocol


from fingerprints.model import Fingerprint
from fingerprints.plot import render_comparison_png
from fingerprints.reader import RangeReader
from fingerprints.tokenizer_cache import TokenizerCache
from store.errors import RefetchError
from store.nearest import nearest
from store.records import ModelRecord
from store.rows import TIER_COMPACT, TIER_FULL, TIER_REFERENCE
from store.store import Store

from bot.errors import USER_ERRORS
from bot.alerts.delivery import deliver_pending
from bot.hub.models import HubModel
from bot.hub.ratelimit import HubRateBudget
from bot.alerts.discord_webhook import AlertSender
from bot.alerts.model import build_alert
from bot.ops.logging_setup import CycleSummary, log_cycle_summary
from bot.ops.metrics import Metrics
from bot.ops.progress import Progress, progress
from bot.watch.backlog import NEWEST_FEED, FeedCursor, walk_newest
from bot.watch.compare_pool import ComparePool
from bot.watch.policy import ALERTING_VERDICTS, ModelFacts, Severity, decide_alert
from bot.settings import Settings

log = logging.getLogger("hubwatch.watcher")

# Feed name -> the Hub's sort key for /api/models (always descending).
FEED_SORTS = {"newest": "createdAt", "trending": "trendingScore", "last_modified": "lastModified"}
# Authors and reference models people added with /watch; polled at the trending interval.
WATCHED_FEED = "watched"
# What a listing entry must carry to skip a model_info call: the commit, dates, card lineage.
LIST_EXPAND = ["author", "sha", "createdAt", "lastModified", "downloads", "likes", "trendingScore", "tags",
               "library_name", "pipeline_tag", "cardData", "gated", "private", "disabled"]
NEIGHBOURS = 5
# Declared lineage is followed this many hops through the store (a card declaring a fine-tune of
# X declares X too).
ANCESTOR_DEPTH = 3
# The outbox is drained this often between polls, so a Discord outage retry does not wait for
# the next poll of a slow feed.
DELIVERY_INTERVAL_S = 15
# Payload key of the evidence PNG (kept beside the alert JSON, which excludes it).
PLOT_KEY = "plot_png_base64"


class Hub(Protocol):
    """What the watcher needs from the Hub (bot.hub.HubClient through HubFeedAdapter)."""

    def list_models(self, *, sort: str, limit: int, expand: list[str], author: str | None = None) -> Iterable[dict[str, Any]]: ...

    def reader(self, repo_id: str, sha: str | None = None) -> RangeReader: ...

    def take_rate_limited_count(self) -> int: ...

    def listing_url(self, sort: str = "createdAt", page_size: int = 1000, expand: list[str] | None = None) -> str: ...

    def list_models_page(self, url: str, what: str = "listing models") -> tuple[list[dict[str, Any]], str | None]: ...

    rate_budget: HubRateBudget  # the process's one Hub rate-limit budget (bot/hub/ratelimit.py)


@dataclass
class PolledFingerprint:
    record: ModelRecord
    fingerprint: Fingerprint | None
    error: str | None = None


def _parse_time(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


def _facts(record: ModelRecord) -> ModelFacts:
    return ModelFacts(repo_id=record.repo_id, sha=record.sha, author=record.author,
                      created_at=_parse_time(record.created_at), license=record.license,
                      declared_base_models=tuple(record.base_models))


class Watcher:
    def __init__(self, settings: Settings, hub: Hub, sender: AlertSender,
                 fingerprint: Callable[[RangeReader, TokenizerCache], Fingerprint], metrics: Metrics | None = None,
                 open_store: Callable[[], Store] | None = None, compare_pool: ComparePool | None = None):
        """``fingerprint``: one model's fingerprint under the configured limits, the composition
        root's (``bot.app.App.fingerprint``) that every command and the bot use too. ``compare_pool``:
        where comparisons run (both cores), else in the polling thread."""
        self.settings = settings
        self.fingerprint_with_limits = fingerprint
        self.hub = hub
        self.sender = sender
        self.metrics = metrics or Metrics()
        self.open_store = open_store or (lambda: Store.open(settings.store.path))
        self.min_severity = Severity(settings.alerts.min_severity).rank
        # Shared by every cycle and fingerprinting thread: fine-tunes reuse their base's tokenizer files.
        self.tokenizers = TokenizerCache()
        self._delivering = threading.Lock()
        self.compare_pool = compare_pool

    # ---- one feed --------------------------------------------------------------------------

    def poll_feed(self, feed: str) -> CycleSummary:
        started = time.monotonic()
        summary = CycleSummary(feed=feed)
        store = self.open_store()
        try:
            walked: FeedCursor | None = None
            try:
                if feed == NEWEST_FEED:
                    listing, walked = self._walk_newest(store)
                else:
                    listing = self._listing(store, feed, summary)
            except USER_ERRORS as exc:
                summary.errors += 1
                self.metrics.record_error(exc)
                store.set_status("last_error", f"{feed}: {exc}")
                summary.error = str(exc)
                return self._finish(store, summary, started)
            records = [r for r in (HubModel.from_api(d).to_record() for d in listing) if r.sha]
            summary.models_seen = len(records)
            new = [r for r in records if store.find_fingerprint(r.repo_id, r.sha) is None]
            summary.new_revisions = len(new)
            store.upsert_models(records)
            with progress(f"{feed}: fingerprinting", len(new)) as bar:
                fingerprinted = self._fingerprint_all(new, bar)
            with progress(f"{feed}: comparing", len(new)) as bar:
                for item in fingerprinted:
                    try:
                        self._ingest(store, item, summary)
                    except Exception as exc:  # one model must not stop the feed: log it, go on
                        summary.errors += 1
                        self.metrics.record_error(exc)
                        store.set_status("last_error", f"{item.record.repo_id}@{item.record.sha}: {exc}")
                        log.exception("processing failed", extra={"repo": item.record.repo_id, "sha": item.record.sha})
                    bar.advance(note=item.record.repo_id)
            newest = max((r.created_at for r in records if r.created_at), default=None)
            if walked is not None:  # saved once the walk's models are processed: a crash re-walks them
                store.set_cursor(feed, *walked.dump())
                self.metrics.feed_lag.set(walked.lag_s(), feed=feed)
            elif newest:
                store.set_cursor(feed, None, newest)
            delivered = self.deliver(store)
            summary.alerts_delivered = delivered
            self._prune(store)
            store.set_status(f"last_poll:{feed}", datetime.now(timezone.utc).isoformat())
            return self._finish(store, summary, started)
        finally:
            store.close()

    def _walk_newest(self, store: Store) -> tuple[list[dict[str, Any]], FeedCursor]:
        """The newest models back to the last walk's floor, at most ``max_models_per_cycle`` (backlog.py)."""
        limit = self.settings.feeds.max_models_per_cycle
        first = self.hub.listing_url(sort=FEED_SORTS[NEWEST_FEED], page_size=limit, expand=LIST_EXPAND)
        what = f"listing models by {FEED_SORTS[NEWEST_FEED]}"  # as the Hub client names a listing in errors
        fetch = lambda url: self.hub.list_models_page(url, what)  # noqa: E731
        return walk_newest(fetch, first, FeedCursor.load(store.get_cursor(NEWEST_FEED)), limit)

    def _listing(self, store: Store, feed: str, summary: CycleSummary) -> list[dict[str, Any]]:
        limit = self.settings.feeds.max_models_per_cycle
        if feed != WATCHED_FEED:
            return list(self.hub.list_models(sort=FEED_SORTS[feed], expand=LIST_EXPAND, limit=limit))
        # Watch list entries added with /watch: new uploads of watched authors, and reference
        # models that are not in the index yet. One unreachable entry must not hide the others.
        listing: list[dict[str, Any]] = []
        for entry in store.watch_list():
            try:
                if entry.kind == "author":
                    listing += self.hub.list_models(sort=FEED_SORTS["newest"], expand=LIST_EXPAND, limit=limit,
                                                    author=entry.value)
                elif store.find_fingerprint(entry.value) is None:
                    reader = self.hub.reader(entry.value)
                    fp = self._fingerprint(reader)
                    store.upsert_model(reader.model.to_record())
                    store.add_fingerprint(entry.value, reader.sha, fp, tier=TIER_REFERENCE)
            except Exception as exc:  # one hostile entry (a MemoryError included) must not hide the others
                summary.errors += 1
                reason = str(exc) if isinstance(exc, USER_ERRORS) else f"internal error ({type(exc).__name__}); logged"
                store.set_status("last_error", f"watched {entry.kind} {entry.value}: {reason}")
                log.warning("watched entry failed", extra={"kind": entry.kind, "value": entry.value, "error": reason},
                            exc_info=not isinstance(exc, USER_ERRORS))
        return listing

    def _finish(self, store: Store, summary: CycleSummary, started: float) -> CycleSummary:
        summary.duration_s = round(time.monotonic() - started, 3)
        summary.hub_429s = self.hub.take_rate_limited_count()
        summary.rate_limit_wait_s = round(self.hub.rate_budget.take_waited_s(), 1)
        self.metrics.observe_cycle(summary)
        counts = store.alert_counts()  # 'sending' between claims: in doubt, waiting for its retry
        self.metrics.outbox_depth.set(counts.get("pending", 0) + counts.get("sending", 0))
        log_cycle_summary(summary)
        return summary

    def _fingerprint(self, reader: RangeReader) -> Fingerprint:
        return self.fingerprint_with_limits(reader, self.tokenizers)

    def _refetch(self, repo_id: str, sha: str) -> Fingerprint:
        """The full fingerprint of a stored compact revision, read from the Hub again; any failure is
        the store's ``RefetchError``."""
        try:
            return self._fingerprint(self.hub.reader(repo_id, sha))
        except USER_ERRORS as exc:
            raise RefetchError(str(exc)) from exc

    def _prune(self, store: Store) -> None:
        days, plot_days = self.settings.store.retention_days, self.settings.store.plot_retention_days
        if not (days or plot_days):
            return
        now = datetime.now(timezone.utc)
        pruned = store.prune(now - timedelta(days=days) if days else None,
                             now - timedelta(days=plot_days) if plot_days else None, PLOT_KEY)
        if any(pruned.values()):
            log.info("retention", extra=pruned)

    def _fingerprint_one(self, record: ModelRecord) -> PolledFingerprint:
        """One model's fingerprint or its failure; whatever one hostile repo raises (a MemoryError,
        a bug met on its bytes) fails that repo alone, never the feed's cycle."""
        try:
            return PolledFingerprint(record, self._fingerprint(self.hub.reader(record.repo_id, record.sha)))
        except USER_ERRORS as exc:
            return PolledFingerprint(record, None, str(exc))
        except Exception as exc:
            log.exception("fingerprint crashed", extra={"repo": record.repo_id, "sha": record.sha})
            return PolledFingerprint(record, None, f"internal error ({type(exc).__name__}); logged")

    def _fingerprint_all(self, records: list[ModelRecord], bar: Progress) -> list[PolledFingerprint]:
        if not records:
            return []

        def one(record: ModelRecord) -> PolledFingerprint:
            polled = self._fingerprint_one(record)
            bar.advance(note=record.repo_id)
            return polled

        with ThreadPoolExecutor(max_workers=self.settings.feeds.concurrency) as pool:
            return list(pool.map(one, records))

    # ---- one model -------------------------------------------------------------------------

    def _ingest(self, store: Store, item: PolledFingerprint, summary: CycleSummary) -> None:
        """Match, alert, then store the fingerprint — in that order.

        The stored fingerprint is what marks a revision as done. Enqueuing first means a crash
        between the two steps re-processes the revision next cycle (the outbox dedupes the alert)
        instead of skipping it with its alert never raised.
        """
        record, fp = item.record, item.fingerprint
        if fp is None:
            summary.errors += 1
            store.bump("fingerprint_errors")
            store.set_status("last_error", f"{record.repo_id}@{record.sha}: {item.error}")
            log.warning("fingerprint failed", extra={"repo": record.repo_id, "sha": record.sha, "error": item.error})
            return
        try:
            neighbours = nearest(store, fp, k=NEIGHBOURS, exclude_repo=record.repo_id, query_record=record,
                                 refetch=self._refetch, pool=self.compare_pool.get() if self.compare_pool else None)
        except BrokenProcessPool:
            self.compare_pool.drop()  # the next model starts new workers
            raise
        match = next((n for n in neighbours if n.verdict in ALERTING_VERDICTS), None)
        if match is not None:
            self._maybe_alert(store, record, match, summary)
        # Every model gets the compact tier; one that matched keeps its full detail as evidence.
        tier = TIER_COMPACT if match is None else TIER_FULL
        fid, created = store.add_fingerprint(record.repo_id, record.sha, fp, tier=tier)
        if not created:
            return
        summary.fingerprinted += 1
        summary.bytes_read += fp.bytes_read
        store.bump("models_fingerprinted")
        if match is not None:
            store.record_match(match.fingerprint_id, fid, match.result)

    def _maybe_alert(self, store: Store, record: ModelRecord, match, summary: CycleSummary) -> None:
        comparison = match.result
        source = store.get_model(match.repo_id) or ModelRecord(repo_id=match.repo_id, sha=match.sha)
        suspect_facts, source_facts = _facts(record), _facts(source)
        decision = decide_alert(
            suspect_facts, source_facts, comparison.verdict, comparison.confidence,
            declared_ancestors=frozenset(self._ancestors(store, record.base_models)),
            alert_on_declared=self.settings.alerts.on_declared_derivatives,
        )
        log.info("match", extra={"repo": record.repo_id, "source": source.repo_id, "verdict": comparison.verdict,
                                 "alert": decision.alert, "reason": decision.reason})
        if not decision.alert or decision.severity.rank < self.min_severity:
            return
        alert = build_alert(suspect_facts, source_facts, decision, comparison, hub_url=self.settings.hub.endpoint)
        payload = alert.to_dict()
        payload[PLOT_KEY] = base64.b64encode(render_comparison_png(comparison)).decode("ascii")
        if store.enqueue_alert(alert.key, payload):
            summary.alerts_enqueued += 1
            store.bump("alerts_enqueued")

    @staticmethod
    def _ancestors(store: Store, bases: list[str]) -> set[str]:
        seen: set[str] = set()
        frontier = list(bases)
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

    # ---- delivery --------------------------------------------------------------------------

    def deliver(self, store: Store | None = None) -> int:
        """Drain the outbox; 0 at once when another job (a poll, the deliver job) is draining it:
        the sender is not thread-safe, and that job delivers what is due anyway."""
        if not self._delivering.acquire(blocking=False):
            return 0
        own = store is None
        try:
            store = store or self.open_store()
            report = deliver_pending(store, self.sender, load_plot=_plot_of,
                                     lease=timedelta(seconds=self.settings.alerts.delivery_lease_s))
            if report.delivered:
                store.bump("alerts_delivered", report.delivered)
            self.metrics.alerts_failed.inc(report.failed)
            return report.delivered
        finally:
            if own and store is not None:
                store.close()
            self._delivering.release()

    def deliver_job(self) -> None:
        try:
            self.metrics.alerts_delivered.inc(self.deliver())
        except USER_ERRORS as exc:
            self.metrics.record_error(exc)
            log.warning("alert delivery failed", extra={"error": str(exc)})

    def poll_job(self, feed: str) -> None:
        try:
            self.poll_feed(feed)
        except USER_ERRORS as exc:  # a store failure: report, keep the schedule alive
            self.metrics.record_error(exc)
            log.error("poll failed", extra={"feed": feed, "error": str(exc)})

    # ---- scheduling ------------------------------------------------------------------------

    def enabled_feeds(self) -> list[tuple[str, int]]:
        f = self.settings.feeds
        feeds = [("newest", f.newest_enabled, f.newest_interval_s), ("trending", f.trending_enabled, f.trending_interval_s),
                 ("last_modified", f.last_modified_enabled, f.last_modified_interval_s)]
        enabled = [(name, interval) for name, enabled, interval in feeds if enabled]
        return enabled + [(WATCHED_FEED, f.trending_interval_s)]

    def run_once(self) -> list[CycleSummary]:
        return [self.poll_feed(feed) for feed, _ in self.enabled_feeds()]

    async def run_forever(self, stop: asyncio.Event | None = None) -> None:
        # APScheduler 3.11's AsyncIOScheduler must start inside the running loop.
        from apscheduler.schedulers.asyncio import AsyncIOScheduler
        from apscheduler.triggers.interval import IntervalTrigger

        stop = stop or asyncio.Event()
        loop = asyncio.get_running_loop()
        if threading.current_thread() is threading.main_thread():  # signals reach the main thread only
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, stop.set)
        scheduler = AsyncIOScheduler(job_defaults={"coalesce": True, "max_instances": 1})
        now = datetime.now(timezone.utc)
        for feed, interval in self.enabled_feeds():
            scheduler.add_job(self.poll_job, IntervalTrigger(seconds=interval, jitter=self.settings.feeds.jitter_s),
                              args=[feed], id=f"poll-{feed}", replace_existing=True, misfire_grace_time=interval,
                              next_run_time=now)
        scheduler.add_job(self.deliver_job, IntervalTrigger(seconds=DELIVERY_INTERVAL_S), id="deliver",
                          replace_existing=True, misfire_grace_time=DELIVERY_INTERVAL_S)
        scheduler.start()
        log.info("watching", extra={"feeds": ",".join(f for f, _ in self.enabled_feeds()),
                                    "store": self.settings.store.path, "hub": self.settings.hub.endpoint})
        try:
            await stop.wait()
        finally:
            scheduler.shutdown(wait=False)


def _plot_of(row) -> bytes | None:
    encoded = row.payload.get(PLOT_KEY) if isinstance(row.payload, dict) else None
    return base64.b64decode(encoded) if encoded else None
