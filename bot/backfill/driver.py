"""The backfill driver: list the work, run the fingerprint jobs on a Dask cluster, write the store.

Why Dask distributed and not Ray (``python benchmarks/engines.py``, local cluster of 2 worker
processes on a 2-core machine; README "Backfill"): the job is ~0.5-1 s of Hub reads and parsing
per model, so per-task overhead (Dask 11.8 ms, Ray 1.3 ms) is 1-2 % either way; what differs is
the cost of having the engine at all: start-up 5.4 s vs 19.4 s, 243 vs 826 MiB resident for the
driver and cluster, 45 vs 260 MB installed, and a cluster joined by two commands with one port
(``dask scheduler`` / ``dask worker tcp://host:8786``) against Ray's head with its GCS, raylet,
object-manager and worker port ranges and a cluster token to hand out. Both re-ran the task of a
SIGKILLed worker on another worker (~5 s later).

The driver is the store's one writer. Results are written in batches (``backfill.batch_size``
fingerprints per transaction). The source's resume point is saved after a batch is written, and
only past pages whose every item is written, so a killed backfill restarts at the oldest page it
had not finished and skips what that page already stored.

After each batch the driver compares what it wrote with the store, and once the listing is
complete it decides the alerts, through the watcher's matcher (bot/backfill/matching.py says where
and why). Comparisons hold up the loop while they run; the jobs already submitted
(``QUEUED_PER_THREAD`` per worker thread) keep the cluster busy meanwhile.
"""

from __future__ import annotations

import logging
import sys
import time
from collections import deque
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Iterator, Protocol, TextIO


from datetime import timedelta

from store.store import Store

from bot.errors import HubwatchError
from bot.app import App
from bot.backfill.job import Outcome, WorkItem, fingerprint_revision
from bot.backfill.matching import BackfillMatching, MatchCounts
from bot.backfill.sources import Page
from bot.hub.models import COMMIT_RX
from bot.ops.progress import Progress
from bot.settings import BackfillSettings, ConfigError, Settings

log = logging.getLogger("hubwatch.backfill")

# The work table's feed name for what the backfill listed, and the owner of its claims: one
# backfill per store, so at start every claim under this name is from a killed earlier run.
FEED = BACKFILL_OWNER = "backfill"
# Jobs submitted ahead per worker thread: enough that a thread never waits for the driver, few
# enough that a stopped backfill has little in flight to redo.
QUEUED_PER_THREAD = 2
# How long the driver waits for a remote scheduler to answer before giving up.
CONNECT_TIMEOUT_S = 30
# A batch is written at least this often, so a slow trickle of results still reaches the store.
FLUSH_INTERVAL_S = 10.0
# How often the cluster's thread count is read again (workers may join or leave a remote cluster).
THREADS_REFRESH_S = 10.0


class Source(Protocol):
    key: str
    description: str

    def pages(self, resume: str | None) -> Iterator[Page]: ...


@dataclass
class Summary:
    listed: int = 0
    already_done: int = 0  # stored, recorded done or skipped, or in flight elsewhere
    waiting: int = 0  # failed earlier, its retry not due yet
    fingerprinted: int = 0
    failed: int = 0
    matching: MatchCounts = field(default_factory=MatchCounts)  # the comparisons and decisions
    undecided: int = 0  # suspects whose alert decision waits for a complete listing
    bytes_read: int = 0
    in_flight: int = 0
    complete: bool = False
    started: float = field(default_factory=time.monotonic)
    first_result: float | None = None  # when the first job came back (workers warm)
    finished: float | None = None

    @property
    def elapsed_s(self) -> float:
        return (self.finished or time.monotonic()) - self.started

    @property
    def models_per_hour(self) -> float:
        return self.fingerprinted / self.elapsed_s * 3600 if self.elapsed_s > 0 else 0.0

    def line(self) -> str:
        return (f"{self.fingerprinted:,} fingerprinted, {self.already_done:,} already done, {self.failed:,} failed, "
                f"{self.waiting:,} waiting for a retry, {self.in_flight:,} in flight, {self.listed:,} listed; "
                f"{self.models_per_hour:,.0f} models/h; {self.matching.compared:,} compared "
                f"({self.matching.seconds:,.1f} s comparing and deciding), "
                f"{self.matching.alerts:,} alerts ({self.matching.delivered:,} delivered), "
                f"{self.matching.failed:,} comparisons failed"
                + (f", {self.undecided:,} suspects to decide once the listing is complete" if self.undecided else ""))


@dataclass
class _OpenPage:
    page: Page
    outstanding: int  # items admitted and not yet written


@contextmanager
def dask_client(settings: BackfillSettings) -> Iterator:
    """A client of the scheduler at ``settings.scheduler``, or of a loopback cluster of
    ``settings.workers`` processes started here (stopped on exit)."""
    try:
        import distributed
    except ImportError:
        raise ConfigError("hubwatch backfill runs on Dask: pip install 'hubwatch[scale]'") from None
    for name in ("distributed", "tornado"):
        logging.getLogger(name).setLevel(logging.ERROR)  # their INFO lines would drown the progress
    if settings.scheduler:
        try:
            client = distributed.Client(settings.scheduler, timeout=CONNECT_TIMEOUT_S)
        except (OSError, TimeoutError, ValueError) as exc:
            raise HubwatchError(f"cannot reach the Dask scheduler at {settings.scheduler}: {exc}") from None
        try:
            yield client
        finally:
            client.close()
        return
    # Every socket on loopback, the scheduler's HTTP server (dashboard, health) on a free port.
    with distributed.LocalCluster(n_workers=settings.workers, threads_per_worker=settings.threads_per_worker,
                                  processes=True, host="127.0.0.1", dashboard_address="127.0.0.1:0") as cluster:
        with distributed.Client(cluster) as client:
            yield client


class Backfill:
    def __init__(self, settings: Settings, store: Store, client, source: Source, matching: BackfillMatching,
                 phase_progress: Callable[[str, int], Progress], *, limit: int | None = None,
                 progress: Progress | None = None):
        """``progress``: the fingerprinting's; ``phase_progress(what, total)``: one for each later
        phase (comparing a killed run's leftovers, deciding the alerts)."""
        self.settings = settings
        self.store = store
        self.client = client
        self.source = source
        self.matching = matching
        self.limit = limit
        self.progress = progress
        self.phase_progress = phase_progress
        self.summary = Summary(matching=matching.counts)
        self._pages: deque[_OpenPage] = deque()
        self._queue: deque[tuple[_OpenPage, WorkItem]] = deque()
        self._batch: list[tuple[_OpenPage, Outcome]] = []
        self._resume_after: str | None = None  # where the listing goes on once every open page is written
        self._submitted = 0
        self._threads = 0
        self._threads_read = 0.0

    def run(self) -> Summary:
        import distributed

        if released := self.store.release_claims(BACKFILL_OWNER):
            log.info("revisions claimed by a stopped backfill handed back", extra={"count": released})
        saved = self.store.get_cursor(self.source.key)
        resume = saved["cursor"] if saved else None
        if resume:
            log.info("resuming", extra={"source": self.source.description, "at": resume})
        self._compare_leftovers()
        pages = self.source.pages(resume)
        futures: dict = {}
        done = distributed.as_completed()
        listing_done = False
        last_flush = time.monotonic()
        try:
            while True:
                while len(futures) < self._max_in_flight():
                    if self._queue:
                        page, item = self._queue.popleft()
                        future = self.client.submit(fingerprint_revision, self.settings, item, pure=False)
                        futures[future] = (page, item)
                        done.add(future)
                        self._submitted += 1
                    elif listing_done or self._limit_reached():
                        break
                    else:
                        page = next(pages, None)
                        if page is None:
                            listing_done = True
                        else:
                            self._admit(page)
                self.summary.in_flight = len(futures)
                if not futures:
                    break
                future = next(done)
                self.summary.first_result = self.summary.first_result or time.monotonic()
                page, item = futures.pop(future)
                self._batch.append((page, self._result(future, item)))
                if len(self._batch) >= self.settings.backfill.batch_size or time.monotonic() - last_flush > FLUSH_INTERVAL_S:
                    self._flush()
                    self._compare()
                    last_flush = time.monotonic()
                self.summary.in_flight = len(futures)
                self._advance_progress()
            self._flush()
            self._compare()
            self.summary.complete = listing_done and not self._queue and not self._pages
            if self.summary.complete:
                self._decide()
                # Only now: killed while deciding, the next run lists the last page again (all
                # stored) and decides what is left, instead of a whole new pass.
                self.store.set_cursor(self.source.key, None)  # the next run is a new pass from the top
            self.summary.undecided = self.store.revision_counts()["undecided"]
        finally:
            # Stopped (Ctrl-C, an error): write what came back, hand the rest back to the cluster.
            self.client.cancel(list(futures))
            self._flush()
            self.summary.finished = time.monotonic()
        return self.summary

    def _advance_progress(self, n: int = 1) -> None:
        if self.progress:
            self.progress.advance(n, note=f"{self.summary.failed:,} failed, {self.summary.matching.compared:,} compared, "
                                          f"{self.summary.models_per_hour:,.0f} models/h")

    # ---- comparisons and alerts ------------------------------------------------------------

    def _compare(self) -> None:
        """Compare what the batches wrote; the fingerprinting bar's note counts them."""
        self.matching.compare_pending(self.store, lambda _: self._advance_progress(0))

    def _compare_leftovers(self) -> None:
        """Fingerprints a killed run stored and never compared, before anything new."""
        left = self.store.revision_counts()["unmatched"]
        if left:
            log.info("comparing what a stopped backfill stored", extra={"count": left})
            with self.phase_progress("backfill: comparing", left) as bar:
                self.matching.compare_pending(self.store, lambda repo_id: bar.advance(note=repo_id))

    def _decide(self) -> None:
        """The listing is complete: judge every suspect, queue and deliver the alerts."""
        with self.phase_progress("backfill: deciding alerts", self.store.revision_counts()["undecided"]) as bar:
            self.matching.decide_pending(self.store, bar)
        self.matching.deliver(self.store)

    # ---- listing ---------------------------------------------------------------------------

    def _admit(self, page: Page) -> None:
        """Store the page's listing metadata; claim and queue its revisions that are still to do."""
        if page.records:
            self.store.upsert_models(page.records)
        open_page = _OpenPage(page, 0)
        for item in page.items:
            self.summary.listed += 1
            if item.revision is None or not COMMIT_RX.match(item.revision):  # from a file: resolved by the job
                newest = self.store.find_fingerprint(item.repo_id)
                item = WorkItem(item.repo_id, item.revision, (newest.sha,) if newest else ())
            elif self.store.find_fingerprint(item.repo_id, item.revision) is not None or \
                    not self.store.claim_revision(item.repo_id, item.revision, BACKFILL_OWNER):
                revision = self.store.get_revision(item.repo_id, item.revision)
                if revision is not None and revision.state == "failed":
                    self.summary.waiting += 1
                else:
                    self.summary.already_done += 1
                self._advance_progress()
                continue
            open_page.outstanding += 1
            self._queue.append((open_page, item))
        self._pages.append(open_page)
        self._advance()

    def _limit_reached(self) -> bool:
        return self.limit is not None and self._submitted >= self.limit

    def _max_in_flight(self) -> int:
        if time.monotonic() - self._threads_read > THREADS_REFRESH_S:
            self._threads = sum(self.client.nthreads().values())
            self._threads_read = time.monotonic()
        return max(1, self._threads) * QUEUED_PER_THREAD

    # ---- results ---------------------------------------------------------------------------

    @staticmethod
    def _result(future, item: WorkItem) -> Outcome:
        try:
            return future.result()
        except Exception as exc:  # the job crashed its workers (KilledWorker) or hit a bug: one repo's failure
            return Outcome(item.repo_id, item.revision, reason="error",
                           error=f"the fingerprint job failed on the cluster: {type(exc).__name__}: {exc}")

    def _flush(self) -> None:
        if not self._batch:
            return
        batch, self._batch = self._batch, []
        self.store.upsert_models([o.record for _, o in batch if o.record is not None])
        rows = [o.row for _, o in batch if o.row is not None]
        known = [(o.repo_id, o.sha) for _, o in batch if o.sha and o.already_stored]
        created = 0
        for (_, new), row in zip(self.store.add_backfilled(rows, known, FEED), rows):
            created += new
            self.summary.bytes_read += row.bytes_read if new else 0
        self.summary.fingerprinted += created
        self.summary.already_done += len(rows) - created
        for page, outcome in batch:
            page.outstanding -= 1
            if outcome.already_stored:
                self.summary.already_done += 1
            elif outcome.error is not None:
                self._record_failure(outcome)
        if created:
            self.store.bump("models_fingerprinted", created)
        self._advance()

    def _record_failure(self, outcome: Outcome) -> None:
        """In the work table: skipped when only a new revision can change it, else failed (retried
        after a backoff). A repo that could not even be resolved to a revision has no row; its
        error goes to the log and the store's last_error."""
        self.summary.failed += 1
        what = f"{outcome.repo_id}@{outcome.sha or 'main'}"
        if outcome.sha:
            self.store.list_revisions([(outcome.repo_id, outcome.sha)], FEED)
            if outcome.permanent:
                self.store.skip_revision(outcome.repo_id, outcome.sha, outcome.reason, outcome.error, FEED)
            else:
                self.store.fail_revision(outcome.repo_id, outcome.sha, outcome.reason, outcome.error)
        self.store.set_status("last_error", f"{what}: {outcome.error}")
        log.warning("fingerprint failed", extra={"repo": outcome.repo_id, "sha": outcome.sha,
                                                 "reason": outcome.reason, "error": outcome.error})

    def _advance(self) -> None:
        """Save the resume point: the oldest page with unwritten items, else the page after the last."""
        while self._pages and self._pages[0].outstanding == 0:
            self._resume_after = self._pages.popleft().page.next_resume
        cursor = self._pages[0].page.resume if self._pages else self._resume_after
        if cursor is not None:
            self.store.set_cursor(self.source.key, cursor)


def run_backfill(app: App, settings: Settings, store: Store, source: Source, *, limit: int | None = None,
                 stream: TextIO = sys.stderr, total: int | None = None) -> Summary:
    """``settings``: the app's, with the command's backfill options; comparisons, alert decisions
    and their delivery are the app's (``App.matcher``, its compare pool and alert sender)."""
    interval = settings.backfill.progress_interval_s

    def phase_progress(what: str, phase_total: int) -> Progress:
        return Progress(what, phase_total, stream, interval_s=interval)

    matching = BackfillMatching(app.matcher(), app.compare_pool, app.sender,
                                timedelta(seconds=settings.alerts.delivery_lease_s))
    with dask_client(settings.backfill) as client, Progress("backfill", total, stream, interval_s=interval) as progress:
        return Backfill(settings, store, client, source, matching, phase_progress, limit=limit,
                        progress=progress).run()
