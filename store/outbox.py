"""The alert outbox: every alert is delivered, and recorded delivered, exactly once.

State machine of an ``alerts`` row::

    enqueue ──► pending ──claim──► sending ──mark_delivered (a 2xx, or found posted)──► delivered
                   ▲                 │ ▲ │
                   └── mark_failed ──┘ │ └── mark_failed after MAX_ATTEMPTS, or permanent ──► failed
                       (retry_at)      │
    sending, lease expired ──claim─────┘ (resumed=True)
      - the sender died holding the claim (kill -9, OOM, power), or
      - mark_failed(in_doubt=True) put the lease at retry_at: the attempt may have been posted
        (a timeout or 5xx after the body was sent), or checking whether it was posted failed.

- ``enqueue_alert`` inserts once per ``dedupe_key`` (a re-detected copy does not alert twice) and
  fixes a random ``nonce`` for the row's whole life.
- ``claim_pending_alerts`` moves due rows to ``sending`` inside one IMMEDIATE transaction, bumps
  ``attempts``, and gives the claim a fresh ``claim_token`` and a lease. Two senders never hold
  the same row: the second sees it ``sending`` with a live lease.
- The sender posts, and only after a 2xx calls ``mark_delivered``. A 2xx is the truth, so
  ``mark_delivered`` succeeds whatever the claim token; it reports whether it was first.
- ``mark_failed`` (timeouts, 5xx, 429 with ``retry_at`` from retry_after) needs the current
  claim token: a sender whose lease expired and was re-claimed cannot push the row back. A failure
  that leaves the alert *in doubt* keeps the row ``sending`` (no claim token, lease until
  ``retry_at``) instead of ``pending``, so its next claim says ``resumed`` too.
- A ``resumed`` claim means an earlier attempt may have been posted. Execute Webhook has no
  idempotency key, so the sender looks the alert's ``nonce`` up in the webhook's channel before
  posting again (bot/alerts/delivery.py; needs the bot token): found, the row is recorded
  delivered with that message; lookup failed, the row stays in doubt and is tried later. Without
  a bot token the alert is posted again, carrying the same ``nonce`` in its footer so the
  duplicate is traceable: at-least-once. The lease must outlast the longest send, or a live sender's
  row could be resumed while its request is still in flight.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
from datetime import datetime, timedelta, timezone

from .db import transaction
from .errors import StoreError
from .records import OutboxRow, utc_iso

# A send is at most 5 webhook POSTs of 10 s with 1-8 s backoffs between them (~65 s), plus the
# lookup of a resumed alert (a few GETs); 120 s covers that and a short retry_after without letting
# a dead sender's alert wait long. The watcher takes it from settings.alerts.delivery_lease_s.
DEFAULT_LEASE = timedelta(seconds=120)
# Ten attempts with the sender's backoff span hours of Discord outage before giving up.
MAX_ATTEMPTS = 10
# last_error is for a human; a full HTML error page would bloat the row.
MAX_ERROR_CHARS = 500

STATUSES = ("pending", "sending", "delivered", "failed")


def _now(now: datetime | None) -> str:
    return utc_iso(now or datetime.now(timezone.utc))


def _alert(row: sqlite3.Row | tuple, columns: list[str], resumed: bool = False) -> OutboxRow:
    d = dict(zip(columns, row))
    d["payload"] = json.loads(d["payload"])
    return OutboxRow(**d, resumed=resumed)


ALERT_COLUMNS = [
    "id", "dedupe_key", "nonce", "payload", "status", "attempts", "claim_token", "lease_until",
    "next_attempt_at", "last_error", "delivery_ref", "created_at", "delivered_at",
]
_SELECT = f"SELECT {', '.join(ALERT_COLUMNS)} FROM alerts"


def enqueue_alert(conn: sqlite3.Connection, dedupe_key: str, payload: dict, now: datetime | None = None) -> bool:
    """Queue an alert; False (and nothing written) when ``dedupe_key`` was queued before."""
    try:
        body = json.dumps(payload, sort_keys=True, ensure_ascii=False)
    except (TypeError, ValueError) as exc:
        raise StoreError(f"alert payload is not JSON-serialisable: {exc}") from exc
    stamp = _now(now)
    cur = conn.execute(
        "INSERT OR IGNORE INTO alerts (dedupe_key, nonce, payload, next_attempt_at, created_at) VALUES (?, ?, ?, ?, ?)",
        (dedupe_key, secrets.token_hex(16), body, stamp, stamp),
    )
    return cur.rowcount == 1


def is_queued(conn: sqlite3.Connection, dedupe_key: str) -> bool:
    """Was an alert with ``dedupe_key`` queued before (whatever became of it)?"""
    return conn.execute("SELECT 1 FROM alerts WHERE dedupe_key = ?", (dedupe_key,)).fetchone() is not None


def claim_pending_alerts(conn: sqlite3.Connection, limit: int, now: datetime | None = None,
                         lease: timedelta = DEFAULT_LEASE) -> list[OutboxRow]:
    """Claim up to ``limit`` due alerts: pending ones whose retry time has come, and sending ones
    whose lease expired. Each comes back with a fresh ``claim_token``."""
    moment = now or datetime.now(timezone.utc)
    stamp, lease_until = utc_iso(moment), utc_iso(moment + lease)
    claimed = []
    with transaction(conn):
        rows = conn.execute(
            f"{_SELECT} WHERE (status = 'pending' AND next_attempt_at <= ?) OR (status = 'sending' AND lease_until <= ?) "
            "ORDER BY next_attempt_at, id LIMIT ?",
            (stamp, stamp, limit),
        ).fetchall()
        for row in rows:
            old = dict(zip(ALERT_COLUMNS, row))
            token = secrets.token_hex(8)
            conn.execute(
                "UPDATE alerts SET status = 'sending', attempts = attempts + 1, claim_token = ?, lease_until = ? WHERE id = ?",
                (token, lease_until, old["id"]),
            )
            claimed.append((old["id"], old["status"] == "sending"))
        result = []
        for alert_id, resumed in claimed:
            row = conn.execute(f"{_SELECT} WHERE id = ?", (alert_id,)).fetchone()
            result.append(_alert(row, ALERT_COLUMNS, resumed=resumed))
    return result


def mark_delivered(conn: sqlite3.Connection, alert_id: int, delivery_ref: str | None = None,
                   now: datetime | None = None) -> bool:
    """Record a 2xx. True if this call recorded it, False if it was already delivered."""
    with transaction(conn):
        row = conn.execute("SELECT status FROM alerts WHERE id = ?", (alert_id,)).fetchone()
        if row is None:
            raise StoreError(f"no alert with id {alert_id}")
        if row[0] == "delivered":
            return False
        conn.execute(
            "UPDATE alerts SET status = 'delivered', delivered_at = ?, delivery_ref = ?, claim_token = NULL, "
            "lease_until = NULL, last_error = NULL WHERE id = ?",
            (_now(now), delivery_ref, alert_id),
        )
    return True


def mark_failed(conn: sqlite3.Connection, alert_id: int, claim_token: str, error: str,
                retry_at: datetime | None, max_attempts: int = MAX_ATTEMPTS, in_doubt: bool = False) -> str | None:
    """Record a failed attempt by the holder of ``claim_token``.

    The row goes back to ``pending`` until ``retry_at`` (with ``in_doubt``: stays ``sending``,
    unclaimed, its lease ending at ``retry_at``, so the next claim is ``resumed``), or to ``failed``
    when ``retry_at`` is None (a permanent error such as a deleted webhook) or ``max_attempts``
    were made. Returns the new status, or None when the claim is stale (another sender re-claimed
    the row, or it was delivered).
    """
    error = error[:MAX_ERROR_CHARS]
    with transaction(conn):
        row = conn.execute(
            "SELECT attempts FROM alerts WHERE id = ? AND status = 'sending' AND claim_token = ?",
            (alert_id, claim_token),
        ).fetchone()
        if row is None:
            return None
        retry = utc_iso(retry_at) if retry_at else None
        status = "failed" if retry is None or row[0] >= max_attempts else "sending" if in_doubt else "pending"
        conn.execute(
            "UPDATE alerts SET status = ?, last_error = ?, next_attempt_at = COALESCE(?, next_attempt_at), "
            "claim_token = NULL, lease_until = ? WHERE id = ?",
            (status, error, retry, retry if status == "sending" else None, alert_id),
        )
    return status


def get_alert(conn: sqlite3.Connection, alert_id: int) -> OutboxRow | None:
    row = conn.execute(f"{_SELECT} WHERE id = ?", (alert_id,)).fetchone()
    return _alert(row, ALERT_COLUMNS) if row else None


def alert_counts(conn: sqlite3.Connection) -> dict[str, int]:
    counts = dict.fromkeys(STATUSES, 0)
    counts.update(dict(conn.execute("SELECT status, count(*) FROM alerts GROUP BY status").fetchall()))
    return counts
