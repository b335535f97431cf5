"""The per-revision work table: what happened to every listed (repo, sha), and what is due.

State machine of a ``revisions`` row::

    list ──► pending ──claim──► in_flight ──finish──► done
               ▲  ▲                 │ │
               │  └── release ──────┘ └── fail ──► failed ──(next_attempt_at passed) claim──► in_flight
               │      (stop, or abandoned by a dead process: requeue_abandoned at start)
    list / skip ──► skipped  (gated or disabled in the listing: never fetched; a new sha is a new row)

    backfill:  in_flight ──store──► unmatched ──compare──► done
                                        │                 │  ▲
                                        │    a suspect of │  │ decide (once the backfill's
                                        │    a comparison ▼  │ listing is complete)
                                        └──compare──► undecided

- A revision is fingerprinted by whoever claims it: ``claim`` is one UPDATE that only a pending
  row, or a failed row whose retry time has come, passes; two feeds (or two processes) listing
  the same revision never both fingerprint it.
- ``fail`` records the reason and the error, and puts the next attempt ``retry_delay(attempts)``
  away: a repo whose files are broken costs one fetch per backoff step, not one per cycle.
- ``done`` is written after the revision's fingerprint, matches and alerts are stored: a crash in
  between leaves the row in_flight, requeued at the next start, and the outbox dedupes the alert.
- ``unmatched``: the backfill stored the fingerprint (in the same transaction) but has not
  compared it yet; ``undecided``: its copy relations, or a later one's with it, are recorded and
  its alert decision waits for the backfill's whole listing (see bot/backfill/matching.py). Both
  outlive a killed backfill, which drains them when it runs again; no feed claims them.
- ``due`` lists claimable rows oldest first (``listed_at``): the queue a poller drains; its
  ``claimed_at - listed_at`` is the queue lag.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from .records import utc_iso

STATES = ("pending", "in_flight", "unmatched", "undecided", "done", "failed", "skipped")
# A backfilled revision still to be compared or judged: nothing but the backfill moves it on.
AWAITING = ("unmatched", "undecided")
# A failed revision waits RETRY_BASE, then twice as long after each further failure, up to
# RETRY_CAP: a Hub outage of minutes is retried within the hour, a repo with broken files costs
# one fetch a day.
RETRY_BASE = timedelta(minutes=10)
RETRY_CAP = timedelta(days=1)
# An error message is for a human; a full HTML error page would bloat the row.
MAX_DETAIL_CHARS = 500

_COLUMNS = ["repo_id", "sha", "state", "reason", "detail", "attempts", "feed", "listed_at", "claimed_at",
            "claim_owner", "next_attempt_at", "finished_at"]
# Which rows ``claim`` may take: a pending one, or a failed one whose retry time has come.
_CLAIMABLE = "(state = 'pending' OR (state = 'failed' AND next_attempt_at <= :now))"


@dataclass(frozen=True)
class Revision:
    repo_id: str
    sha: str
    state: str
    reason: str | None
    detail: str | None
    attempts: int
    feed: str | None
    listed_at: str
    claimed_at: str | None
    claim_owner: str | None
    next_attempt_at: str | None
    finished_at: str | None


def _stamp(now: datetime | None) -> str:
    return utc_iso(now or datetime.now(timezone.utc))


def retry_delay(attempts: int) -> timedelta:
    """How long a revision that failed ``attempts`` times waits before its next attempt."""
    # 2**30 steps are far past the cap; more would only overflow timedelta.
    return min(RETRY_CAP, RETRY_BASE * 2 ** min(max(0, attempts - 1), 30))


def list_revisions(conn: sqlite3.Connection, revisions: list[tuple[str, str]], feed: str | None = None,
                   now: datetime | None = None, version: int | None = None) -> None:
    """Record listed revisions as pending (done when a fingerprint of ``version`` is stored already,
    say by `index add`); a revision already known keeps its row, except that one done with only
    fingerprints of an older version is pending again: its fingerprint is made anew."""
    stamp = _stamp(now)
    rows = [{"repo": repo, "sha": sha, "feed": feed, "now": stamp, "version": version} for repo, sha in revisions]
    conn.executemany(
        "INSERT OR IGNORE INTO revisions (repo_id, sha, state, feed, listed_at, next_attempt_at) "
        "SELECT :repo, :sha, CASE WHEN EXISTS (SELECT 1 FROM fingerprints WHERE repo_id = :repo AND sha = :sha "
        "AND version = :version) THEN 'done' ELSE 'pending' END, :feed, :now, :now", rows)
    if version is not None:
        conn.executemany(
            "UPDATE revisions SET state = 'pending', next_attempt_at = :now WHERE repo_id = :repo AND sha = :sha "
            "AND state = 'done' AND EXISTS (SELECT 1 FROM fingerprints WHERE repo_id = :repo AND sha = :sha "
            "AND version < :version) AND NOT EXISTS (SELECT 1 FROM fingerprints WHERE repo_id = :repo "
            "AND sha = :sha AND version = :version)", rows)


def claim(conn: sqlite3.Connection, repo_id: str, sha: str, owner: str, now: datetime | None = None,
          version: int | None = None) -> bool:
    """Take the revision to fingerprint it (listing it first if new); False when it is done,
    skipped, in flight elsewhere, or failed and not due yet."""
    stamp = _stamp(now)
    list_revisions(conn, [(repo_id, sha)], None, now, version)
    cur = conn.execute(
        f"UPDATE revisions SET state = 'in_flight', attempts = attempts + 1, claimed_at = :now, claim_owner = :owner "
        f"WHERE repo_id = :repo AND sha = :sha AND {_CLAIMABLE}",
        {"now": stamp, "owner": owner, "repo": repo_id, "sha": sha})
    return cur.rowcount == 1


def finish(conn: sqlite3.Connection, repo_id: str, sha: str, now: datetime | None = None) -> None:
    """The revision's fingerprint, matches and alerts are stored."""
    conn.execute(
        "UPDATE revisions SET state = 'done', reason = NULL, detail = NULL, claim_owner = NULL, next_attempt_at = NULL, "
        "finished_at = ? WHERE repo_id = ? AND sha = ?", (_stamp(now), repo_id, sha))


def fail(conn: sqlite3.Connection, repo_id: str, sha: str, reason: str, detail: str,
         now: datetime | None = None) -> datetime:
    """Record a failed attempt; returns when the revision is due again."""
    moment = now or datetime.now(timezone.utc)
    row = conn.execute("SELECT attempts FROM revisions WHERE repo_id = ? AND sha = ?", (repo_id, sha)).fetchone()
    retry_at = moment + retry_delay(row[0] if row else 1)
    conn.execute(
        "UPDATE revisions SET state = 'failed', reason = ?, detail = ?, claim_owner = NULL, next_attempt_at = ?, "
        "finished_at = ? WHERE repo_id = ? AND sha = ?",
        (reason, detail[:MAX_DETAIL_CHARS], utc_iso(retry_at), utc_iso(moment), repo_id, sha))
    return retry_at


def skip(conn: sqlite3.Connection, repo_id: str, sha: str, reason: str, detail: str, feed: str | None = None,
         now: datetime | None = None) -> None:
    """Record a revision that will not be fetched (gated, disabled); a stored one keeps its state."""
    stamp = _stamp(now)
    conn.execute(
        "INSERT INTO revisions (repo_id, sha, state, reason, detail, feed, listed_at, finished_at) "
        "VALUES (?, ?, 'skipped', ?, ?, ?, ?, ?) ON CONFLICT (repo_id, sha) DO UPDATE SET state = 'skipped', "
        "reason = excluded.reason, detail = excluded.detail, claim_owner = NULL, next_attempt_at = NULL, "
        "finished_at = excluded.finished_at WHERE state NOT IN ('done', 'unmatched', 'undecided')",
        (repo_id, sha, reason, detail[:MAX_DETAIL_CHARS], feed, stamp, stamp))


def finish_listed(conn: sqlite3.Connection, repo_id: str, sha: str, now: datetime | None = None) -> None:
    """``finish`` a revision whose fingerprint someone else stored, unless it still awaits the
    backfill's comparison or decision."""
    conn.execute(
        "UPDATE revisions SET state = 'done', reason = NULL, detail = NULL, claim_owner = NULL, next_attempt_at = NULL, "
        "finished_at = ? WHERE repo_id = ? AND sha = ? AND state NOT IN ('unmatched', 'undecided')",
        (_stamp(now), repo_id, sha))


def await_matching(conn: sqlite3.Connection, repo_id: str, sha: str) -> None:
    """The backfill stored the revision's fingerprint; its comparison is still to come."""
    conn.execute("UPDATE revisions SET state = 'unmatched', reason = NULL, detail = NULL, claim_owner = NULL, "
                 "next_attempt_at = NULL WHERE repo_id = ? AND sha = ?", (repo_id, sha))


def await_decision(conn: sqlite3.Connection, repo_id: str, sha: str, now: datetime | None = None) -> None:
    """The revision is a suspect whose alert decision waits (listed first if unknown, as a model
    stored by `index add` may be); one not compared yet stays unmatched: its own comparison
    comes first and makes it a suspect again."""
    stamp = _stamp(now)
    conn.execute(
        "INSERT INTO revisions (repo_id, sha, state, listed_at) VALUES (?, ?, 'undecided', ?) "
        "ON CONFLICT (repo_id, sha) DO UPDATE SET state = 'undecided', claim_owner = NULL, next_attempt_at = NULL "
        "WHERE state != 'unmatched'", (repo_id, sha, stamp))


def awaiting(conn: sqlite3.Connection, state: str, limit: int) -> list[tuple[str, str]]:
    """(repo_id, sha) of up to ``limit`` revisions in ``state`` (one of AWAITING), first listed first."""
    return [tuple(r) for r in conn.execute(
        "SELECT repo_id, sha FROM revisions WHERE state = ? ORDER BY listed_at, repo_id, sha LIMIT ?",
        (state, limit)).fetchall()]


def release(conn: sqlite3.Connection, repo_id: str, sha: str) -> None:
    """Hand an unfinished claim back (the process is stopping): pending again, due at once."""
    conn.execute(
        "UPDATE revisions SET state = 'pending', claim_owner = NULL, next_attempt_at = claimed_at "
        "WHERE repo_id = ? AND sha = ? AND state = 'in_flight'", (repo_id, sha))


def release_all(conn: sqlite3.Connection, owner: str) -> int:
    """Hand back every claim ``owner`` holds (a backfill restarting after it was killed claims its
    revisions under one fixed name): pending again, due at once."""
    return conn.execute(
        "UPDATE revisions SET state = 'pending', claim_owner = NULL, next_attempt_at = claimed_at "
        "WHERE state = 'in_flight' AND claim_owner = ?", (owner,)).rowcount


def requeue_abandoned(conn: sqlite3.Connection, owner: str) -> int:
    """At start: claims of other processes (killed mid-work) become pending again. One watcher per
    store: a second live one would only see its claims redone, never an alert doubled (the outbox
    dedupes)."""
    return conn.execute(
        "UPDATE revisions SET state = 'pending', claim_owner = NULL, next_attempt_at = claimed_at "
        "WHERE state = 'in_flight' AND claim_owner IS NOT ?", (owner,)).rowcount


def due(conn: sqlite3.Connection, limit: int, now: datetime | None = None) -> list[Revision]:
    """Claimable revisions, longest waiting first."""
    rows = conn.execute(
        f"SELECT {', '.join(_COLUMNS)} FROM revisions WHERE {_CLAIMABLE} ORDER BY listed_at, repo_id LIMIT :limit",
        {"now": _stamp(now), "limit": limit}).fetchall()
    return [Revision(*r) for r in rows]


def get(conn: sqlite3.Connection, repo_id: str, sha: str) -> Revision | None:
    row = conn.execute(f"SELECT {', '.join(_COLUMNS)} FROM revisions WHERE repo_id = ? AND sha = ?",
                       (repo_id, sha)).fetchone()
    return Revision(*row) if row else None


def counts(conn: sqlite3.Connection) -> dict[str, int]:
    """Revisions by state, every state present."""
    out = dict.fromkeys(STATES, 0)
    out.update(dict(conn.execute("SELECT state, count(*) FROM revisions GROUP BY state").fetchall()))
    return out


def reasons(conn: sqlite3.Connection) -> dict[str, int]:
    """Failed and skipped revisions by "state: reason", most first."""
    rows = conn.execute(
        "SELECT state || ': ' || coalesce(reason, 'unknown'), count(*) FROM revisions "
        "WHERE state IN ('failed', 'skipped') GROUP BY 1 ORDER BY 2 DESC, 1").fetchall()
    return dict(rows)
