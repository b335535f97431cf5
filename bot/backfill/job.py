"""What a backfill worker runs: one repo revision in, its fingerprint (or why not) out.

``fingerprint_revision`` is a pure function of (settings, work item) as far as the store is
concerned: it reads the Hub and returns a picklable ``Outcome``; it never touches the database,
which only the driver writes. The store row is prepared here (``FingerprintRow``: full blob,
index keys, sketch), so the single writer only inserts.

Each worker process keeps one Hub client and one tokenizer cache for the whole run (built on its
first job): connections and cached CDN locations are reused, and fine-tunes that ship their base
model's tokenizer files skip reading them again.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from dataclasses import dataclass

from fingerprints.tokenizer_cache import TokenizerCache
from store.records import ModelRecord
from store.rows import TIER_FULL, FingerprintRow

from bot.errors import USER_ERRORS
from bot.app import App
from bot.hub.client import HubClient
from bot.settings import Settings
from bot.watch.records import model_record
from bot.watch.watcher import failure_reason

log = logging.getLogger("hubwatch.backfill")

# Failures of the revision itself, not of the Hub at the time: recorded as skipped in the work
# table, not failed. A failed revision is retried by the watcher's queue after a backoff capped at
# a day; the few percent of the Hub's millions that are gated or hold only pickles would otherwise
# come back to the one watcher every day, for ever.
PERMANENT_REASONS = frozenset({"gated", "not found", "missing file", "no readable weights", "over budget",
                               "invalid or hostile files"})


@dataclass(frozen=True)
class WorkItem:
    repo_id: str
    revision: str | None  # the listed commit sha, a file's @revision, or None for main
    # Revisions of this repo the store holds already: an item listed without its sha is resolved
    # first and, when it is one of these, not read further.
    known_shas: tuple[str, ...] = ()


@dataclass
class Outcome:
    repo_id: str
    sha: str | None
    record: ModelRecord | None = None
    row: FingerprintRow | None = None
    reason: str | None = None  # a failure's kind (bot.watch.watcher.failure_reason)
    error: str | None = None  # a failure's one-line message
    already_stored: bool = False

    @property
    def permanent(self) -> bool:
        """A failure that only a new revision can change (see PERMANENT_REASONS)."""
        return self.reason in PERMANENT_REASONS


@dataclass
class WorkerTools:
    app: App
    hub: HubClient
    tokenizers: TokenizerCache


@functools.lru_cache(maxsize=1)
def worker_tools(settings: Settings) -> WorkerTools:
    """This worker process's composition root, Hub client and tokenizer cache for ``settings`` (one
    backfill at a time). The Hub client waits for spent rate-limit windows (bot/hub/ratelimit.py):
    on a backfill worker that wait is the pacing to its IP's quota, not the model's fault, so one
    full request deadline is added to the model's time limit."""
    limits = dataclasses.replace(settings.limits,
                                 model_seconds=settings.limits.model_seconds + settings.hub.request_deadline_s)
    app = App.of(dataclasses.replace(settings, limits=limits))
    return WorkerTools(app, app.hub, TokenizerCache())


def fingerprint_revision(settings: Settings, item: WorkItem) -> Outcome:
    tools = worker_tools(settings)
    sha = item.revision
    try:
        reader = tools.hub.reader(item.repo_id, item.revision)
        sha = reader.sha
        record = model_record(reader.model)
        if reader.sha in item.known_shas:
            return Outcome(item.repo_id, reader.sha, record, already_stored=True)
        fp = tools.app.fingerprint(reader, tools.tokenizers)
        # Full: the driver compares it with its sampled values, then keeps it compact unless it
        # matched (bot/backfill/matching.py).
        row = FingerprintRow.from_fingerprint(item.repo_id, reader.sha, fp, TIER_FULL)
        return Outcome(item.repo_id, reader.sha, record, row)
    except USER_ERRORS as exc:
        return Outcome(item.repo_id, sha, reason=failure_reason(exc), error=str(exc))
    except Exception as exc:  # a MemoryError or a bug met on one repo's bytes fails that repo alone
        log.exception("fingerprint crashed", extra={"repo": item.repo_id, "revision": item.revision})
        return Outcome(item.repo_id, sha, reason=failure_reason(exc),
                       error=f"internal error ({type(exc).__name__}); logged on the worker")
