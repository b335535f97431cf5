"""The watcher: poll Hub feeds, fingerprint new revisions, alert on undeclared copies.

One cycle of a feed:
1. list the feed's models (newest by creation time, trending, recently modified);
2. record every listed (repo, sha) in the revisions table (store/work.py) and claim the ones to
   do: a revision done, skipped (gated, disabled), failed and not due for retry, or claimed by
   another feed is left alone, so restarts and overlapping feeds never redo work; failed revisions
   whose backoff has passed are claimed too;
3. fingerprint the claimed ones concurrently (network-bound; ``feeds.concurrency`` at a time, one
   fetch per revision in the process);
4. ingest each (``bot.watch.matching``): search its nearest stored models as soon as it is
   fingerprinted (a few at once, in threads), then in this thread, in arrival order, store it and
   record its copy relations, earlier model first, as if the models had come one at a time; then
   decide every suspect the cycle touched against its whole family, so the arrival order does not
   matter; alerts go to the SQLite outbox, never straight to Discord;
5. drain the outbox (``bot.alerts.delivery``): delivered exactly once across retries and restarts.

SQLite connections are not shared across threads: every job opens its own ``Store``.
All durable state (seen revisions, cursors, outbox, counters) lives in the store; the scheduler's
job store is in memory and rebuilt at start with fixed ids.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
import threading
import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Iterable, Protocol

from fingerprints.errors import BudgetExceededError, InvalidModelError, UninspectableWeightsError
from fingerprints.model import Fingerprint
from fingerprints.reader import RangeReader
from fingerprints.tokenizer_cache import TokenizerCache
from store.errors import RefetchError
from store.records import ModelRecord
from store.rows import TIER_REFERENCE
from store.store import Store

from bot.errors import USER_ERRORS, HubwatchError
from bot.alerts.delivery import deliver_pending
from bot.hub.client import ListingPage
from bot.hub.ratelimit import HubRateBudget
from bot.alerts.discord_webhook import AlertSender
from bot.hub.errors import (EntryNotFoundError, GatedRepoError, HubError, HubUnavailableError, RateLimitedError,
                            RepoNotFoundError, RevisionNotFoundError)
from bot.hub.models import HubModel
from bot.ops.logging_setup import CycleSummary, log_cycle_summary
from bot.ops.metrics import Metrics
from bot.ops.progress import progress
from bot.watch.backlog import NEWEST_FEED, FeedCursor, walk_newest
from bot.watch.compare_pool import ComparePool
from bot.settings import Settings
from bot.watch.matching import PLOT_KEY, Deepen, Matcher, Searched, plot_of
from bot.watch.records import model_record

log = logging.getLogger("hubwatch.watcher")

# Feed name -> the Hub's sort key for /api/models (always descending).
FEED_SORTS = {"newest": "createdAt", "trending": "trendingScore", "last_modified": "lastModified"}
# Authors and reference models people added with /watch; polled at the trending interval.
WATCHED_FEED = "watched"
# What a listing entry must carry to skip a model_info call: the commit, dates, card lineage.
LIST_EXPAND = ["author", "sha", "createdAt", "lastModified", "downloads", "likes", "trendingScore", "tags",
               "library_name", "pipeline_tag", "cardData", "gated", "private", "disabled"]
# How often a feed waiting for fingerprints checks whether the process is stopping.
STOP_POLL_S = 0.2
# Models searched at once (Watcher.process). A search mostly waits, for the two comparison
# workers and for Hub re-reads of compact candidates (~0.7 s each), while the polling thread records
# the oldest; each holds its fingerprint, its neighbours' comparisons and at most one deep
# comparison's reads (2 x 64 MiB), so memory stays bounded. 3: one per comparison worker, and one
# waiting on the Hub; shared by the feeds, as many as three feeds searching in their own threads
# used to be. Within one listing the overlap has not paid on benchmarks/throughput.py's mix, whose
# models copy each other (their comparisons happen in the catch-ups, one after another) and need no
# Hub re-reads: 20 models, alternated on a quiet machine (load 1.5-2.2), 3,425-3,649 models/h with
# 3 at once and 3,604-3,779 with 1, and 28.7-30.1 s of CPU against 25.2-25.3 s (the catch-ups).
SEARCHES_IN_FLIGHT = 3
# The outbox is drained this often between polls, so a Discord outage retry does not wait for
# the next poll of a slow feed.
DELIVERY_INTERVAL_S = 15


class Hub(Protocol):
    """What the watcher needs from the Hub (bot.hub.HubClient)."""

    def list_models(self, *, sort: str, limit: int, expand: list[str], author: str | None = None) -> Iterable[HubModel]: ...

    def model_info(self, repo_id: str, revision: str | None = None) -> HubModel: ...

    def reader(self, repo_id: str, sha: str | None = None) -> RangeReader: ...

    def take_rate_limited_count(self) -> int: ...

    def list_models_page(self, url: str | None, *, sort: str, page_size: int, expand: list[str]) -> ListingPage: ...

    rate_budget: HubRateBudget  # the process's one Hub rate-limit budget (bot/hub/ratelimit.py)


@dataclass
class PolledFingerprint:
    record: ModelRecord
    fingerprint: Fingerprint | None
    error: Exception | None = None


# Why a revision failed, as `index stats` and /status count it: the first class that matches.
FAILURE_REASONS: tuple[tuple[type[BaseException], str], ...] = (
    (GatedRepoError, "gated"), (RepoNotFoundError, "not found"), (RevisionNotFoundError, "not found"),
    (EntryNotFoundError, "missing file"), (UninspectableWeightsError, "no readable weights"),
    (BudgetExceededError, "over budget"), (InvalidModelError, "invalid or hostile files"),
    (RateLimitedError, "rate limited"), (HubUnavailableError, "hub unavailable"), (HubError, "hub error"),
    (HubwatchError, "error"),
)


def failure_reason(exc: BaseException) -> str:
    return next((reason for cls, reason in FAILURE_REASONS if isinstance(exc, cls)), type(exc).__name__)


@dataclass
class Search:
    """A fingerprinted model whose nearest stored models are being searched (``Matcher.search``)."""

    item: PolledFingerprint
    future: Future[Searched]


@dataclass
class WorkFailure:
    """What failed in a cycle, for the last line of `watch --once`: the feed or repo, and the error."""

    what: str
    error: BaseException


class Watcher:
    def __init__(self, settings: Settings, hub: Hub, sender: AlertSender,
                 fingerprint: Callable[[RangeReader, TokenizerCache], Fingerprint], metrics: Metrics | None = None,
                 open_store: Callable[[], Store] | None = None, compare_pool: ComparePool | None = None,
                 deepen: Deepen | None = None):
        """``fingerprint``: one model's fingerprint under the configured limits, the composition
        root's (``bot.app.App.fingerprint``) that every command and the bot use too. ``compare_pool``:
        where comparisons run (both cores), else in the polling thread. ``deepen``: the deep
        comparison for pairs the standard one cannot decide (``bot.app.App.deepen``)."""
        self.settings = settings
        self.fingerprint_with_limits = fingerprint
        self.hub = hub
        self.sender = sender
        self.metrics = metrics or Metrics()
        self.open_store = open_store or (lambda: Store.open(settings.store.path))
        self.compare_pool = compare_pool
        self.matcher = Matcher(settings, refetch=self._refetch, compare_pool=compare_pool, deepen=deepen)
        # Shared by every cycle and fingerprinting thread: fine-tunes reuse their base's tokenizer files.
        self.tokenizers = TokenizerCache()
        self._delivering = threading.Lock()
        # Claims in the revisions table carry this; claims of any other owner found at start were
        # left by a process that died, and are requeued.
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        self._requeued = False
        # Watch-list references being fingerprinted: stored in the reference tier (store/rows.py).
        self._references: set[str] = set()
        # Set by stop(): feeds stop taking new work, unfinished claims go back to pending.
        self.stopping = threading.Event()
        # One fetch per (repo, sha) in this process: a second feed asking for a revision in
        # flight waits for the same Future instead of fetching it again.
        self._fetches: dict[tuple[str, str], Future[PolledFingerprint]] = {}
        self._fetches_lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=settings.feeds.concurrency, thread_name_prefix="hubwatch-fp")
        # The full fingerprints of the revisions being processed, by (repo, sha): stored compact, one
        # of them is re-read from here, not from the Hub, when a later model's search compares it.
        self._processing: dict[tuple[str, str], Fingerprint] = {}
        # Shared by the feeds, so that all of them together search SEARCHES_IN_FLIGHT models at most.
        self._searches = ThreadPoolExecutor(max_workers=SEARCHES_IN_FLIGHT, thread_name_prefix="hubwatch-search")
        self.failures: list[WorkFailure] = []

    def stop(self) -> None:
        self.stopping.set()
        self.close()

    def close(self) -> None:
        """Let the fingerprinting and search threads go (the Hub client is its builder's to close)."""
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._searches.shutdown(wait=False, cancel_futures=True)

    # ---- one feed --------------------------------------------------------------------------

    def poll_feed(self, feed: str) -> CycleSummary:
        started = time.monotonic()
        summary = CycleSummary(feed=feed)
        store = self.open_store()
        try:
            self._requeue_abandoned(store)
            walked: FeedCursor | None = None
            try:
                if feed == NEWEST_FEED:
                    models, walked = self._walk_newest(store)
                else:
                    models = self._listing(store, feed, summary)
            except USER_ERRORS as exc:
                summary.errors += 1
                self._record_failure(store, f"feed {feed}", exc)
                self.metrics.listing_failed(feed, f"{feed} listing from {self.settings.hub.host}: {exc}")
                summary.error = str(exc)
                return self._finish(store, summary, started)
            records = self._record_listing(store, feed, models)
            summary.models_seen = len(models)
            claimed = [r for r in records if store.claim_revision(r.repo_id, r.sha, self.owner)]
            claimed += self._due_retries(store, {(r.repo_id, r.sha) for r in records})
            summary.new_revisions = len(claimed)
            self.process(store, claimed, summary)
            if self.stopping.is_set():
                return self._finish(store, summary, started)
            newest = max((r.created_at for r in records if r.created_at), default=None)
            if walked is not None:  # saved once the walk's models are processed: a crash re-walks them
                store.set_cursor(feed, *walked.dump())
                self.metrics.feed_lag.set(walked.lag_s(), feed=feed)
            elif newest:
                store.set_cursor(feed, None, newest)
            summary.alerts_delivered = self.deliver(store)
            self._prune(store)
            # A poll counts as successful for health only when its listing was read.
            self.metrics.listing_succeeded(feed)
            store.set_status(f"last_poll:{feed}", datetime.now(timezone.utc).isoformat())
            return self._finish(store, summary, started)
        finally:
            store.close()

    def _requeue_abandoned(self, store: Store) -> None:
        if not self._requeued:
            self._requeued = True
            if n := store.requeue_abandoned(self.owner):
                log.info("revisions left in flight by an earlier run requeued", extra={"count": n})

    def _walk_newest(self, store: Store) -> tuple[list[HubModel], FeedCursor]:
        """The newest models back to the last walk's floor, at most ``max_models_per_cycle`` (backlog.py)."""
        limit = self.settings.feeds.max_models_per_cycle
        fetch = lambda url: self.hub.list_models_page(  # noqa: E731
            url, sort=FEED_SORTS[NEWEST_FEED], page_size=limit, expand=LIST_EXPAND)
        return walk_newest(fetch, FeedCursor.load(store.get_cursor(NEWEST_FEED)), limit)

    def _listing(self, store: Store, feed: str, summary: CycleSummary) -> list[HubModel]:
        limit = self.settings.feeds.max_models_per_cycle
        if feed != WATCHED_FEED:
            return list(self.hub.list_models(sort=FEED_SORTS[feed], expand=LIST_EXPAND, limit=limit))
        # Watch list entries added with /watch: new uploads of watched authors, and reference
        # models that are not in the index yet. One unreachable entry must not hide the others.
        listing: list[HubModel] = []
        self._references = set()
        for entry in store.watch_list():
            try:
                if entry.kind == "author":
                    listing += self.hub.list_models(sort=FEED_SORTS["newest"], expand=LIST_EXPAND, limit=limit,
                                                    author=entry.value)
                elif store.find_fingerprint(entry.value) is None:
                    listing.append(self.hub.model_info(entry.value))
                    self._references.add(entry.value)
            except Exception as exc:  # one hostile entry (a MemoryError included) must not hide the others
                summary.errors += 1
                self._record_failure(store, f"watched {entry.kind} {entry.value}", exc)
                log.warning("watched entry failed", extra={"kind": entry.kind, "value": entry.value, "error": str(exc)},
                            exc_info=not isinstance(exc, USER_ERRORS))
        return listing

    def _record_listing(self, store: Store, feed: str, models: list[HubModel]) -> list[ModelRecord]:
        """Store the listing's metadata and revisions; the records worth fetching (gated and
        disabled repos are recorded as skipped, never fetched)."""
        records = [model_record(m) for m in models if m.sha]
        store.upsert_models(records)
        store.list_revisions([(r.repo_id, r.sha) for r in records], feed)
        fetchable = []
        for model, record in zip([m for m in models if m.sha], records):
            if model.gated or model.disabled:
                why = f"gated ({model.gated})" if model.gated else "disabled"
                store.skip_revision(record.repo_id, record.sha, "gated" if model.gated else "disabled",
                                    f"{why} in the {feed} listing", feed)
            else:
                fetchable.append(record)
        return fetchable

    def _due_retries(self, store: Store, listed: set[tuple[str, str]]) -> list[ModelRecord]:
        """Revisions whose retry time has come (or left pending by a stopped run), not in this listing."""
        out = []
        for rev in store.due_revisions(self.settings.feeds.max_models_per_cycle):
            if (rev.repo_id, rev.sha) in listed or not store.claim_revision(rev.repo_id, rev.sha, self.owner):
                continue
            record = store.get_model(rev.repo_id) or ModelRecord(repo_id=rev.repo_id)
            record.sha = rev.sha
            out.append(record)
        return out

    def _record_failure(self, store: Store, what: str, exc: BaseException) -> None:
        self.metrics.record_error(exc)
        self.failures.append(WorkFailure(what, exc))
        store.set_status("last_error", f"{what}: {exc}")

    def _finish(self, store: Store, summary: CycleSummary, started: float) -> CycleSummary:
        summary.duration_s = round(time.monotonic() - started, 3)
        summary.hub_429s = self.hub.take_rate_limited_count()
        summary.rate_limit_wait_s = round(self.hub.rate_budget.take_waited_s(), 1)
        self.metrics.observe_cycle(summary)
        counts = store.alert_counts()  # 'sending' between claims: in doubt, waiting for its retry
        self.metrics.outbox_depth.set(counts.get("pending", 0) + counts.get("sending", 0))
        self.metrics.revisions_queued.set(store.revisions_queued())
        log_cycle_summary(summary)
        return summary

    # ---- claimed revisions ---------------------------------------------------------------

    def process(self, store: Store, claimed: list[ModelRecord], summary: CycleSummary) -> None:
        """Fingerprint and ingest the claimed revisions, then decide every suspect they touched:
        models of one listing are judged together, whatever order they arrived in. A revision is
        marked done only after its alerts are queued; on stop, unfinished claims are handed back.

        A model is searched (``Matcher.search``) as soon as it is fingerprinted, up to
        SEARCHES_IN_FLIGHT at once, and recorded (``Matcher.record``) here in the order the
        searches began: the record catches up with the models stored since its search, so the
        relations found are those of ingesting one model at a time."""
        suspects: dict[int, str] = {}  # fingerprint id -> the repo whose arrival made it a suspect
        ingested: list[ModelRecord] = []
        compared: dict[tuple[int, int], Any] = {}  # the cycle's recorded comparisons, for its alerts
        searches: deque[Search] = deque()  # oldest first
        try:
            with progress(f"{summary.feed}: fingerprinting and comparing", len(claimed)) as bar:

                def record_oldest() -> None:
                    search = searches.popleft()
                    self._ingest(store, search, searches, summary, suspects, ingested, compared)
                    bar.advance(note=search.item.record.repo_id)

                for item in self._fingerprint_all(claimed):
                    if item.fingerprint is None:
                        self._fingerprint_failed(store, item, summary)
                        bar.advance(note=item.record.repo_id)
                        continue
                    self._processing[(item.record.repo_id, item.record.sha)] = item.fingerprint
                    try:
                        searches.append(self._search(item))
                    except RuntimeError:  # the search threads were shut down by stop() meanwhile
                        break
                    if len(searches) == SEARCHES_IN_FLIGHT:
                        record_oldest()
                while searches and not self.stopping.is_set():
                    record_oldest()
            queued = len(self.matcher.decide_all(store, suspects, compared))
            if queued:
                summary.alerts_enqueued += queued
                store.bump("alerts_enqueued", queued)
            for record in ingested:
                store.finish_revision(record.repo_id, record.sha)
        finally:
            for record in claimed:
                store.release_revision(record.repo_id, record.sha)  # only rows still in flight move
                self._processing.pop((record.repo_id, record.sha), None)

    def _search(self, item: PolledFingerprint) -> Search:
        """Start searching ``item``'s nearest stored models in a search thread, with its own store."""

        def search() -> Searched:
            with self.open_store() as store:
                return self.matcher.search(store, item.record, item.record.sha, item.fingerprint)

        return Search(item, self._searches.submit(search))

    def _ingest(self, store: Store, search: Search, others: Iterable[Search], summary: CycleSummary,
                suspects: dict[int, str], ingested: list[ModelRecord], compared: dict[tuple[int, int], Any]) -> None:
        """Record a searched model and its copy relations; collect the suspects it touched.
        ``others``: the searches still in flight."""
        record = search.item.record
        tier = TIER_REFERENCE if record.repo_id in self._references else None
        try:
            got = self.matcher.record(store, self._searched(store, search, others), tier=tier)
        except Exception as exc:  # one model must not stop the feed: record it, go on
            if self.stopping.is_set():
                return  # abandoned (a search cancelled by stop): its claim is handed back
            if isinstance(exc, BrokenProcessPool) and self.compare_pool is not None:
                self.compare_pool.renew_if_broken()  # the next model starts new workers
            summary.errors += 1
            self._record_failure(store, f"repo {record.repo_id}@{record.sha}", exc)
            store.fail_revision(record.repo_id, record.sha, failure_reason(exc), str(exc))
            log.exception("processing failed", extra={"repo": record.repo_id, "sha": record.sha})
            return
        summary.fingerprinted += 1
        summary.bytes_read += search.item.fingerprint.bytes_read
        store.bump("models_fingerprinted")
        ingested.append(record)
        for fid in got.suspects:
            suspects.setdefault(fid, record.repo_id)
        compared.update(got.comparisons)

    def _searched(self, store: Store, search: Search, others: Iterable[Search]) -> Searched:
        """The search's result. When a comparison worker died under it (out of memory, say), every
        search then on the pool failed, whichever model killed it: the others in flight are let
        finish, new workers started, and this model searched again alone, here, so that only a
        model that breaks the pool by itself fails."""
        try:
            return search.future.result()
        except BrokenProcessPool:
            if self.compare_pool is None:
                raise
            wait([other.future for other in others])
            self.compare_pool.renew_if_broken()
            item = search.item
            return self.matcher.search(store, item.record, item.record.sha, item.fingerprint)

    def _fingerprint_failed(self, store: Store, item: PolledFingerprint, summary: CycleSummary) -> None:
        record, exc = item.record, item.error
        summary.errors += 1
        store.bump("fingerprint_errors")
        self._record_failure(store, f"repo {record.repo_id}@{record.sha}", exc)
        retry_at = store.fail_revision(record.repo_id, record.sha, failure_reason(exc), str(exc))
        log.warning("fingerprint failed", extra={"repo": record.repo_id, "sha": record.sha, "error": str(exc),
                                                 "retry_at": retry_at.isoformat()})

    def _fingerprint(self, reader: RangeReader) -> Fingerprint:
        return self.fingerprint_with_limits(reader, self.tokenizers)

    def _refetch(self, repo_id: str, sha: str) -> Fingerprint:
        """The full fingerprint of a stored compact revision, read from the Hub again; any failure is
        the store's ``RefetchError``."""
        if (fp := self._processing.get((repo_id, sha))) is not None:
            return fp
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
            return PolledFingerprint(record, None, exc)
        except Exception as exc:
            if self.stopping.is_set():  # the Hub client was closed under it: abandoned, not a crash
                return PolledFingerprint(record, None, HubwatchError("abandoned: the watcher is stopping"))
            log.exception("fingerprint crashed", extra={"repo": record.repo_id, "sha": record.sha})
            return PolledFingerprint(record, None, HubwatchError(f"internal error ({type(exc).__name__}); logged"))

    def _fetch(self, record: ModelRecord) -> Future[PolledFingerprint]:
        key = (record.repo_id, record.sha)
        with self._fetches_lock:
            future = self._fetches.get(key)
            if future is not None:
                return future
            future = self._fetches[key] = self._pool.submit(self._fingerprint_one, record)
        future.add_done_callback(lambda _: self._forget(key))  # outside the lock: may run at once
        return future

    def _forget(self, key: tuple[str, str]) -> None:
        with self._fetches_lock:
            self._fetches.pop(key, None)

    def _fingerprint_all(self, records: list[ModelRecord]) -> Iterator[PolledFingerprint]:
        """Fingerprints as they complete (``feeds.concurrency`` at a time); stops early on stop()."""
        if not records or self.stopping.is_set():
            return
        try:
            futures = [self._fetch(r) for r in records]
        except RuntimeError:  # the pool was shut down by stop() meanwhile
            return
        pending = set(futures)
        while pending:
            # Not as_completed: a future cancelled by stop() never wakes its waiters, and a stop
            # must not wait for the fetches still running.
            done, pending = wait(pending, timeout=STOP_POLL_S, return_when=FIRST_COMPLETED)
            if self.stopping.is_set():
                return
            yield from (f.result() for f in done)

    # ---- delivery --------------------------------------------------------------------------

    def deliver(self, store: Store | None = None) -> int:
        """Drain the outbox; 0 at once when another job (a poll, the deliver job) is draining it:
        the sender is not thread-safe, and that job delivers what is due anyway."""
        if not self._delivering.acquire(blocking=False):
            return 0
        own = store is None
        try:
            store = store or self.open_store()
            report = deliver_pending(store, self.sender, load_plot=plot_of,
                                     lease=timedelta(seconds=self.settings.alerts.delivery_lease_s),
                                     keep_going=lambda: not self.stopping.is_set())
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
        summaries = []
        for feed, _ in self.enabled_feeds():
            if self.stopping.is_set():
                break
            summaries.append(self.poll_feed(feed))
        return summaries

    async def run_forever(self, stop: asyncio.Event | None = None) -> None:
        # APScheduler 3.11's AsyncIOScheduler must start inside the running loop.
        from apscheduler.executors.pool import ThreadPoolExecutor as JobThreads
        from apscheduler.schedulers.asyncio import AsyncIOScheduler
        from apscheduler.triggers.interval import IntervalTrigger

        stop = stop or asyncio.Event()
        # Jobs run in threads of their own, not the loop's default executor: at a stop the loop ends
        # without cancelling (and logging) a poll that is still handing its claims back.
        jobs = len(self.enabled_feeds()) + 1
        scheduler = AsyncIOScheduler(executors={"default": JobThreads(jobs)},
                                     job_defaults={"coalesce": True, "max_instances": 1})
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
            self.stop()
            scheduler.shutdown(wait=False)

