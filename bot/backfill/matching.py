"""The backfill's comparisons and alert decisions: the watcher's ``Matcher`` over what it stored.

Where this runs, and why: in the driver, the store's one writer, on the comparison process pool
(``App.compare_pool``), draining states persisted in the work table (store/work.py) rather than
a list held in memory:

- a batch's fingerprints are stored with their revisions ``unmatched`` in one transaction, and a
  revision leaves that state, in one transaction, only once its copy relations are recorded; a
  SIGKILL at any point leaves every stored and uncompared fingerprint marked, and the next run
  compares it (``Matcher.ingest`` is idempotent: the same relations, the same suspects);
- suspects (the compared model when it copies an earlier one, and every stored model it is the
  original of) are marked ``undecided`` in that same transaction, and decided only when the
  backfill's listing is complete. The Hub is listed newest first, so a copy is fingerprinted
  before its original: judged earlier, it would name a fine-tune or a later copy as the original
  and alert again once the real one arrived. With every relation recorded, ``Matcher.decide``
  judges each suspect against its whole family, whatever order the backfill met it in;
- a decision's alert goes to the outbox before its revision is marked done; killed in between,
  the decision is made again and the outbox's dedupe key (suspect revision, original) refuses the
  second copy: exactly one alert, delivered by the normal path (``deliver_pending``).

Compared in the writer rather than on the Dask workers: ``nearest`` searches and writes the store,
which only the driver opens. Not drained by the watcher: it would judge suspects before the
backfill's listing is complete, and a store without a watcher would never be compared.

A fingerprint is stored in full until compared (the query needs its sampled values), then compact
unless it is in a match (store/rows.py), so the full detail of at most a batch or two is on disk
at a time.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from datetime import timedelta

from store.records import ModelRecord
from store.store import Store

from bot.alerts.delivery import deliver_pending
from bot.alerts.discord_webhook import AlertSender
from bot.ops.progress import Progress
from bot.watch.compare_pool import ComparePool
from bot.watch.matching import Matcher, plot_of
from bot.watch.watcher import failure_reason

log = logging.getLogger("hubwatch.backfill")

# Revisions read from the work table per query; each is compared or decided before the next query.
CHUNK = 64


@dataclass
class MatchCounts:
    compared: int = 0
    alerts: int = 0  # queued by this run's decisions
    failed: int = 0  # handed to the watcher's queue: failed, retried there from the Hub
    delivered: int = 0  # from the outbox, this run's alerts and any left there before
    seconds: float = 0.0  # spent comparing and deciding (the driver's loop waits meanwhile)


class BackfillMatching:
    def __init__(self, matcher: Matcher, compare_pool: ComparePool | None, sender: AlertSender,
                 delivery_lease: timedelta):
        self.matcher = matcher
        self.compare_pool = compare_pool
        self.sender = sender
        self.delivery_lease = delivery_lease
        self.counts = MatchCounts()

    def compare_pending(self, store: Store, advance: Callable[[str], None] | None = None) -> None:
        """Compare every unmatched revision (this run's and a killed run's)."""
        started = time.monotonic()
        while todo := store.revisions_awaiting("unmatched", CHUNK):
            for repo_id, sha in todo:
                self._compare(store, repo_id, sha)
                if advance:
                    advance(repo_id)
        self.counts.seconds += time.monotonic() - started

    def _compare(self, store: Store, repo_id: str, sha: str) -> None:
        stored = store.find_fingerprint(repo_id, sha)
        if stored is None:  # stored by an older fingerprint version: the watcher's queue fetches it again
            self._failed(store, repo_id, sha, "fingerprint version", "stored by an older fingerprint version")
            return
        record = store.get_model(repo_id) or ModelRecord(repo_id=repo_id)
        record.sha = sha
        fp = store.load_fingerprint(stored.id)
        try:
            got = self.matcher.ingest(store, record, sha, fp)
        except Exception as exc:  # one model must not stop the backfill (a MemoryError, a broken pool)
            self._crashed(store, repo_id, sha, exc, "comparison")
            return
        # In no match: kept compact like every other model (its full detail is re-read if needed).
        compact = None if store.matches_for(got.fingerprint_id) else fp
        store.finish_matching(repo_id, sha, sorted(got.suspects), compact)
        self.counts.compared += 1

    def decide_pending(self, store: Store, progress: Progress | None = None) -> None:
        """Judge every undecided suspect against its family, queueing its alert if any."""
        started = time.monotonic()
        while todo := store.revisions_awaiting("undecided", CHUNK):
            for repo_id, sha in todo:
                stored = store.find_fingerprint(repo_id, sha)
                try:
                    # No ``compared``: the comparisons made while ingesting are not held across a
                    # whole listing (nor a kill); an alert's evidence is compared once more.
                    alert = self.matcher.decide(store, stored.id) if stored is not None else None
                except Exception as exc:  # the evidence comparison or its re-reads failed
                    self._crashed(store, repo_id, sha, exc, "alert decision")
                    continue
                if alert is not None:
                    self.counts.alerts += 1
                    store.bump("alerts_enqueued")
                store.finish_decision(repo_id, sha)
                if progress:
                    progress.advance(note=repo_id)
        self.counts.seconds += time.monotonic() - started

    def deliver(self, store: Store) -> None:
        """Drain the outbox the way the watcher does, until nothing is due."""
        delivered = 0
        while True:
            report = deliver_pending(store, self.sender, load_plot=plot_of, lease=self.delivery_lease)
            delivered += report.delivered
            if not report.claimed:
                break
        if delivered:
            store.bump("alerts_delivered", delivered)
        self.counts.delivered += delivered

    def _crashed(self, store: Store, repo_id: str, sha: str, exc: Exception, what: str) -> None:
        if isinstance(exc, BrokenProcessPool) and self.compare_pool is not None:
            self.compare_pool.drop()  # the next model starts new workers
        log.exception(f"{what} failed", extra={"repo": repo_id, "sha": sha})
        self._failed(store, repo_id, sha, failure_reason(exc), f"{what} failed: {exc}")

    def _failed(self, store: Store, repo_id: str, sha: str, reason: str, detail: str) -> None:
        """Failed in the work table: the watcher retries it after the backoff, fetching, comparing
        and deciding it as any new revision."""
        store.fail_revision(repo_id, sha, reason, detail)
        store.set_status("last_error", f"{repo_id}@{sha}: {detail}")
        self.counts.failed += 1
