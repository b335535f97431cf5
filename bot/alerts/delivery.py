"""Drain the alert outbox: claim one alert, send it, record the outcome, repeat.

Guarantees, given the outbox's state machine (store/outbox.py):
- never lost: an alert leaves the outbox only as ``delivered`` (after a 2xx) or ``failed``
  (permanent error, or out of attempts), both visible in the store;
- never posted twice by this loop: each claimed alert is sent once per claim; a new claim happens
  only after a recorded failure, or after a sender died holding the claim.

The residual window (documented, not closable with a webhook): Discord has posted the message
and the process dies before ``mark_delivered`` commits (kill -9 while the 2xx is in flight or
between the 2xx and the commit), or the 2xx is lost (timeout after Discord posted). The alert is
then claimed again (``resumed``) once its lease expires and posted a second time, with the same
nonce in its footer. To keep that window small:
- ``mark_delivered`` is the first thing done after a 2xx: no logging, rendering or other I/O first;
- alerts are claimed ONE at a time, so at most one alert is ever in flight; a batch claim would
  leave the rest of the batch ``sending`` and make every one of them look ambiguous after a crash;
- a claimed-but-resumed alert is logged with its nonce so a duplicate can be traced.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Protocol

from fingerprints.errors import HubwatchError

from .discord_webhook import AlertSender
from .model import Alert

log = logging.getLogger("hubwatch.alerts")

# Alerts are rare (a handful per day); 20 per call drains a backlog in a few cycles while a
# Discord outage cannot pin one cycle for long (each send is bounded by the sender's attempts).
DEFAULT_BATCH = 20
# Backoff between outbox attempts of one alert after a transient failure: 30 s doubling, capped at
# 1 h, so the outbox's 10 attempts (store/outbox.py MAX_ATTEMPTS) span ~5 h of Discord outage.
RETRY_BASE = timedelta(seconds=30)
RETRY_CAP = timedelta(hours=1)


class OutboxRow(Protocol):
    """A claimed outbox row (store.records.Alert has these)."""

    id: int
    nonce: str
    payload: dict[str, Any]
    attempts: int
    claim_token: str | None
    resumed: bool


class Outbox(Protocol):
    """The part of the store the delivery loop needs (store.Store implements it)."""

    def claim_pending_alerts(self, limit: int, now: datetime | None = None) -> list[OutboxRow]: ...

    def mark_delivered(self, alert_id: int, delivery_ref: str | None = None, now: datetime | None = None) -> bool: ...

    def mark_failed(self, alert_id: int, claim_token: str, error: str, retry_at: datetime | None) -> str | None: ...


@dataclass
class DeliveryReport:
    claimed: int = 0
    delivered: int = 0
    retrying: int = 0
    failed: int = 0
    # Claims that took over a dead sender's alert: these may have been posted already.
    resumed: int = 0
    errors: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"claimed": self.claimed, "delivered": self.delivered, "retrying": self.retrying,
                "failed": self.failed, "resumed": self.resumed, "errors": list(self.errors)}


def retry_delay(attempts: int, retry_after: float | None = None) -> timedelta:
    """When to try an alert again after its ``attempts``-th transient failure."""
    backoff = min(RETRY_CAP, RETRY_BASE * 2 ** max(0, attempts - 1))
    return max(backoff, timedelta(seconds=retry_after or 0))


def deliver_pending(outbox: Outbox, sender: AlertSender, now: datetime | None = None, limit: int = DEFAULT_BATCH,
                    load_plot: Callable[[OutboxRow], bytes | None] | None = None) -> DeliveryReport:
    """Deliver up to ``limit`` due alerts, one claim at a time. ``load_plot`` returns the PNG kept
    beside an alert (not in its JSON payload), or None."""
    report = DeliveryReport()
    for _ in range(limit):
        moment = now or datetime.now(timezone.utc)
        rows = outbox.claim_pending_alerts(1, moment)
        if not rows:
            break
        row = rows[0]
        report.claimed += 1
        _deliver_one(outbox, sender, row, moment, load_plot, report)
    return report


def _deliver_one(outbox: Outbox, sender: AlertSender, row: OutboxRow, moment: datetime,
                 load_plot: Callable[[OutboxRow], bytes | None] | None, report: DeliveryReport) -> None:
    token = row.claim_token or ""
    try:
        alert = Alert.from_dict(row.payload)
    except HubwatchError as exc:
        # A payload this hubwatch cannot read will not become readable by retrying.
        outbox.mark_failed(row.id, token, str(exc), None)
        report.failed += 1
        report.errors.append(f"alert {row.id}: {exc}")
        return
    if load_plot is not None:
        try:
            alert = alert.with_plot(load_plot(row))
        except (HubwatchError, ValueError) as exc:
            # The plot is illustration; the alert itself must still go out.
            log.warning("evidence plot unreadable; sending the alert without it",
                        extra={"alert_id": row.id, "error": str(exc)})
    if row.resumed:
        report.resumed += 1
        log.warning("re-sending an alert whose previous sender died mid-delivery; it may already be posted",
                    extra={"alert_id": row.id, "nonce": row.nonce, "key": alert.key})
    result = sender.send(alert, nonce=row.nonce)
    if result.delivered:
        outbox.mark_delivered(row.id, result.message_id)
        report.delivered += 1
        log.info("alert delivered", extra={"alert_id": row.id, "key": alert.key, "message_id": result.message_id})
        return
    error = result.error or "delivery failed"
    retry_at = None if result.permanent else moment + retry_delay(row.attempts, result.retry_after)
    status = outbox.mark_failed(row.id, token, error, retry_at)
    if status == "failed":
        report.failed += 1
    elif status == "pending":
        report.retrying += 1
    report.errors.append(f"alert {row.id}: {error}")
    log.warning("alert not delivered", extra={"alert_id": row.id, "key": alert.key, "error": error,
                                              "permanent": result.permanent, "status": status})
