"""Alerts for the delivery tests (webhook, crash, watcher): numbered, so each has its own key."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from bot.alerts.model import Alert, RepoRef

NOW = datetime(2024, 6, 1, 12, 0, tzinfo=timezone.utc)


def make_alert(n: int = 0, plot: bytes | None = None) -> Alert:
    return Alert(
        suspect=RepoRef.on_hub(f"copier/model-{n}", "http://hub.test", sha=f"{n:040x}", created_at=NOW),
        source=RepoRef.on_hub("org/original", "http://hub.test", created_at=NOW - timedelta(days=300)),
        severity="high", verdict="identical", confidence=1.0, score=1.0,
        reason="undeclared identical from org/original", evidence=("same sha256 for every weight file",),
        created_at=NOW, plot_png=plot,
    )


def footer(message) -> str:
    """The footer text of a received message's first embed (it carries the alert's nonce)."""
    return message.embeds[0]["footer"]["text"]
