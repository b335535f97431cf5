"""Drain the alert outbox: claim one alert, send it, record the outcome, repeat.

Guarantees, given the outbox's state machine (store/outbox.py):
- never lost: an alert leaves the outbox only as ``delivered`` (after a 2xx, or found posted) or
  ``failed`` (permanent error, or out of attempts), both visible in the store;
- posted once per claim: each claimed alert is sent at most once per claim; a new claim happens
  only after a recorded failure, or after a sender died holding the claim.

An attempt is *in doubt* when Discord may have posted it without the outbox knowing: the process
died between sending the request and ``mark_delivered`` committing (kill -9 while the 2xx is in
flight or before the commit), or the answer was lost (a timeout or 5xx after the body was sent).
Such a row is claimed again ``resumed`` (after its lease, or its retry delay), and then:
- with a bot token (``posted_checker(sender)``): the alert's nonce is looked up in the webhook's
  channel first. Found: recorded delivered with that message, not posted again. Not found:
  posted. Lookup failed: not posted; the row stays in doubt and is retried later. Exactly once,
  provided Discord does not act on a request after the lease / retry delay (>= 30 s) has passed;
- without one (a webhook cannot read its channel): posted again, logged with its nonce, which the
  footer carries too, so the duplicate is traceable: at-least-once.
To keep the in-doubt window small:
- ``mark_delivered`` is the first thing done after a 2xx: no logging, rendering or other I/O first;
- alerts are claimed ONE at a time, so at most one alert is ever in flight; a batch claim would
  leave the rest of the batch ``sending`` and make every one of them look ambiguous after a crash.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Protocol


from store.outbox import DEFAULT_LEASE

from bot.errors import USER_ERRORS
from bot.alerts.discord_webhook import AlertSender, PostedLookupError, posted_checker
from bot.alerts.model import Alert

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
    created_at: str


class Outbox(Protocol):
    """The part of the store the delivery loop needs (store.Store implements it)."""

    def claim_pending_alerts(self, limit: int, now: datetime | None = None,
                             lease: timedelta = DEFAULT_LEASE) -> list[OutboxRow]: ...

    def mark_delivered(self, alert_id: int, delivery_ref: str | None = None, now: datetime | None = None) -> bool: ...

    def mark_failed(self, alert_id: int, claim_token: str, error: str, retry_at: datetime | None,
                    in_doubt: bool = False) -> str | None: ...


@dataclass
class DeliveryReport:
    claimed: int = 0
    delivered: int = 0
    retrying: int = 0
    failed: int = 0
    # Claims of in-doubt alerts (a dead sender's, or after an ambiguous failure): maybe posted already.
    resumed: int = 0
    # Of those, the ones found posted in the channel and recorded delivered without a new post.
    found_posted: int = 0
    errors: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"claimed": self.claimed, "delivered": self.delivered, "retrying": self.retrying,
                "failed": self.failed, "resumed": self.resumed, "found_posted": self.found_posted,
                "errors": list(self.errors)}


def retry_delay(attempts: int, retry_after: float | None = None) -> timedelta:
    """When to try an alert again after its ``attempts``-th transient failure."""
    backoff = min(RETRY_CAP, RETRY_BASE * 2 ** max(0, attempts - 1))
    return max(backoff, timedelta(seconds=retry_after or 0))


def deliver_pending(outbox: Outbox, sender: AlertSender, now: datetime | None = None, limit: int = DEFAULT_BATCH,
                    load_plot: Callable[[OutboxRow], bytes | None] | None = None,
                    lease: timedelta = DEFAULT_LEASE,
                    keep_going: Callable[[], bool] = lambda: True) -> DeliveryReport:
    """Deliver up to ``limit`` due alerts, one claim at a time, each claim held for ``lease``.
    ``load_plot`` returns the PNG kept beside an alert (not in its JSON payload), or None.
    ``keep_going`` is asked before each claim (False once the process is stopping)."""
    report = DeliveryReport()
    for _ in range(limit):
        if not keep_going():
            break
        moment = now or datetime.now(timezone.utc)
        rows = outbox.claim_pending_alerts(1, moment, lease)
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
    except USER_ERRORS as exc:
        # A payload this hubwatch cannot read will not become readable by retrying.
        outbox.mark_failed(row.id, token, str(exc), None)
        report.failed += 1
        report.errors.append(f"alert {row.id}: {exc}")
        return
    if load_plot is not None:
        try:
            alert = alert.with_plot(load_plot(row))
        except (*USER_ERRORS, ValueError) as exc:
            # The plot is illustration; the alert itself must still go out.
            log.warning("evidence plot unreadable; sending the alert without it",
                        extra={"alert_id": row.id, "error": str(exc)})
    if row.resumed:
        report.resumed += 1
        if _settle_in_doubt(outbox, sender, row, alert, moment, report):
            return
    result = sender.send(alert, nonce=row.nonce)
    if result.delivered:
        outbox.mark_delivered(row.id, result.message_id)
        report.delivered += 1
        log.info("alert delivered", extra={"alert_id": row.id, "key": alert.key, "message_id": result.message_id})
        return
    retry_at = None if result.permanent else moment + retry_delay(row.attempts, result.retry_after)
    _record_failure(outbox, row, alert, result.error or "delivery failed", retry_at, result.ambiguous, report)


def _settle_in_doubt(outbox: Outbox, sender: AlertSender, row: OutboxRow, alert: Alert, moment: datetime,
                     report: DeliveryReport) -> bool:
    """Before re-posting an alert that may have been posted: look for it. True when that settled
    the claim (found and recorded, or the lookup failed and the row stays in doubt)."""
    extra = {"alert_id": row.id, "nonce": row.nonce, "key": alert.key}
    checker = posted_checker(sender)
    if checker is None:
        log.warning("re-sending an alert whose previous attempt may have been posted (no bot token to check)",
                    extra=extra)
        return False
    try:
        message_id = checker.find_posted(row.nonce, since=datetime.fromisoformat(row.created_at))
    except PostedLookupError as exc:
        retry_at = moment + retry_delay(row.attempts, exc.retry_after)
        _record_failure(outbox, row, alert, f"cannot tell whether it was posted: {exc}", retry_at, True, report)
        return True
    if message_id is None:
        log.info("in-doubt alert was not posted; posting it", extra=extra)
        return False
    # Logged before the commit (no post is at stake here): a kill in between only repeats the lookup.
    log.info("in-doubt alert was already posted; recording it, not posting again",
             extra={**extra, "message_id": message_id})
    outbox.mark_delivered(row.id, message_id)
    report.delivered += 1
    report.found_posted += 1
    return True


def _record_failure(outbox: Outbox, row: OutboxRow, alert: Alert, error: str, retry_at: datetime | None,
                    in_doubt: bool, report: DeliveryReport) -> None:
    status = outbox.mark_failed(row.id, row.claim_token or "", error, retry_at, in_doubt=in_doubt)
    if status == "failed":
        report.failed += 1
    elif status in ("pending", "sending"):
        report.retrying += 1
    report.errors.append(f"alert {row.id}: {error}")
    log.warning("alert not delivered", extra={"alert_id": row.id, "key": alert.key, "error": error,
                                              "permanent": retry_at is None, "in_doubt": in_doubt, "status": status})
