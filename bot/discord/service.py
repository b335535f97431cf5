"""What the Discord bot asks of hubwatch: the ``HubwatchService`` protocol and its result types.

The bot is plumbing between Discord and this protocol; the implementation over the store and the
fingerprint engine lives elsewhere. Every method is blocking (SQLite, HTTP range reads): the bot
calls them in a worker thread. Bad input is reported by raising a ``HubwatchError`` whose message
is shown to the user as is.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Protocol

WatchKind = Literal["reference", "author"]
WATCH_KINDS: tuple[WatchKind, ...] = ("reference", "author")


@dataclass(frozen=True)
class NearestRow:
    """One neighbour of the queried model, best first."""

    repo_id: str
    verdict: str  # a fingerprints.facts.Verdict
    score: float  # overall weight similarity, 0..1
    confidence: float  # 0..1
    kinds: list[str] = field(default_factory=list)  # how it was derived, e.g. ["noise", "rename"]
    declared: str = ""  # declared relation from card metadata, "" when none
    likely_original: bool = False  # this neighbour is older than the query and a copy relation holds


@dataclass(frozen=True)
class CompareResult:
    a: str
    b: str
    verdict: str
    confidence: float
    score: float
    kinds: list[str]
    evidence: list[str]
    png: bytes | None = None  # the evidence plot, when one could be drawn


@dataclass(frozen=True)
class WatchItem:
    kind: WatchKind
    value: str  # "org/name" for a reference model, "org" for an author
    added_by: str | None
    added_at: str  # ISO-8601 UTC


@dataclass(frozen=True)
class StatusInfo:
    last_poll_at: str | None  # ISO-8601 UTC, None before the first poll
    models_fingerprinted: int
    alerts_sent: int
    queue_depth: int  # alerts waiting in the outbox
    errors: int  # failures since start (polls, fingerprints, deliveries)
    last_error: str | None = None  # one line
    # The newest feed's lag: creation time of the newest model seen minus the time down to which every
    # model is listed and processed (bot/watch/backlog.py); 0 once it has caught up.
    feed_lag_s: float = 0.0
    # Listed revisions still to fingerprint (pending, in flight, failed awaiting a retry).
    revisions_queued: int = 0
    # Revisions not fingerprinted, by "state: reason" (failed: timeout, skipped: gated, ...).
    not_fingerprinted: dict[str, int] = field(default_factory=dict)


class HubwatchService(Protocol):
    def nearest(self, repo: str, k: int) -> list[NearestRow]:
        """The ``k`` stored models closest to ``repo``, fingerprinting it first when unknown."""
        ...

    def compare(self, a: str, b: str) -> CompareResult: ...

    def watch_add(self, kind: WatchKind, value: str, by_user: str, guild_id: int) -> bool:
        """Add a reference model or watched author to the server's list; False when it was already listed."""
        ...

    def watch_remove(self, kind: WatchKind, value: str, by_user: str, guild_id: int) -> bool:
        """Remove an entry from the server's list; False when it was not listed."""
        ...

    def watch_list(self, guild_id: int) -> list[WatchItem]: ...

    def status(self) -> StatusInfo: ...

    def known_repo_ids(self, prefix: str, limit: int) -> list[str]:
        """Stored repo ids matching ``prefix`` (prefix matches first, then substring), at most ``limit``."""
        ...
