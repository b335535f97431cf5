"""How an alert reads: on the console (complete, plain text) and as one Discord embed.

The embed always fits Discord's documented limits (bot/alerts/limits.py). What does not fit is cut
with a visible marker ("…(N more)" for lines, "…(N more chars)" for text), never silently.
Everything that came from the Hub is escaped (bot/alerts/escape.py) and the payload sets
``allowed_mentions`` to parse nothing, so a repo named "@everyone" pings nobody.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from bot.alerts.escape import escape_discord, strip_controls
from bot.alerts.limits import DESCRIPTION_MAX, EMBEDS_TOTAL_MAX, TITLE_MAX, discord_len, embed_text_length
from bot.alerts.model import Alert, RepoRef

PLOT_FILENAME = "evidence.png"
WEBHOOK_USERNAME = "hubwatch"
SEVERITY_COLOURS = {"high": 0xD62828, "medium": 0xF77F00, "low": 0xFCBF49}
# Budgets below the hard limits, chosen so that title + fields + footer stay under ~3000 of the
# 6000 total however hostile the input, leaving the description (the evidence) at least half.
# Hub repo ids are at most 96 characters; 200 leaves room for escaping.
REPO_ID_DISPLAY_MAX = 200
# One evidence line is a sentence; a longer one is a pathological input, not more evidence.
EVIDENCE_LINE_MAX = 300
LIST_FIELD_MAX = 600
TEXT_FIELD_MAX = 400
FOOTER_BUDGET = 120
EMPTY_TEXT = "(empty)"
# A real repo URL is ~130 characters; a longer one (a hostile id, percent-quoted) is shown unlinked
# so that a field stays under FIELD_VALUE_MAX.
URL_MAX = 512


def _marker(n: int, unit: str = "") -> str:
    return f"…({n} more{unit})"


def fit_text(raw: str, limit: int, escape: Callable[[str], str] = escape_discord) -> str:
    """``escape(raw)`` if it fits ``limit``; else the longest escaped prefix of ``raw`` followed by
    "…(N more chars)", N counted in ``raw``."""
    full = escape(raw)
    if discord_len(full) <= limit:
        return full
    lo, hi = 0, len(raw)
    # Largest k with escape(raw[:k]) + marker fitting; binary search because escaping grows text.
    while lo < hi:
        k = (lo + hi + 1) // 2
        if discord_len(escape(raw[:k]) + _marker(len(raw) - k, " chars")) <= limit:
            lo = k
        else:
            hi = k - 1
    return escape(raw[:lo]) + _marker(len(raw) - lo, " chars")


def _units(text: str) -> int:
    """UTF-16 length without trimming: an upper bound of discord_len, cheap to add up."""
    return len(text.encode("utf-16-le")) // 2


def fit_lines(lines: Sequence[str], limit: int, render: Callable[[str], str] = str, sep: str = "\n") -> str:
    """As many whole lines as fit in ``limit``, then a final "…(N more)" line. ``render`` (e.g.
    escaping) is applied to each line as it is taken, so a 100,000-line list costs what fits."""
    kept: list[str] = []
    used = 0
    for i, raw in enumerate(lines):
        line = render(raw)
        cost = _units(line) + (_units(sep) if kept else 0)
        rest = len(lines) - i - 1
        marker_cost = _units(sep) + _units(_marker(rest)) if rest else 0
        if used + cost + marker_cost > limit:
            return sep.join([*kept, _marker(len(lines) - len(kept))])
        kept.append(line)
        used += cost
    return sep.join(kept)


def _safe_url(url: str) -> str | None:
    """An http(s) URL fit for a markdown link and the embed ``url``, or None: Discord rejects an
    embed whose url is not http(s), and ")" or a space would end a markdown link early."""
    if urlsplit(url).scheme not in ("http", "https") or len(url) > URL_MAX:
        return None
    return strip_controls(url).replace(" ", "%20").replace("(", "%28").replace(")", "%29")


def _repo_link(repo: RepoRef) -> str:
    name = fit_text(repo.repo_id, REPO_ID_DISPLAY_MAX).strip() or EMPTY_TEXT
    url = _safe_url(repo.url)
    return f"[{name}]({url})" if url else name


def _when(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%d %H:%M UTC") if moment else "unknown"


def _headline(alert: Alert) -> str:
    lineage = "declared" if alert.lineage_declared else "undeclared"
    return f"{alert.severity.upper()}: {alert.suspect.repo_id} is an {lineage} {alert.verdict} copy of {alert.source.repo_id}"


def _verdict_line(alert: Alert) -> str:
    return f"{alert.kind}; confidence {alert.confidence:.0%}; weight similarity {alert.score:.3f}"


def _repo_field(repo: RepoRef, with_sha: bool) -> str:
    parts = [_repo_link(repo)]
    if with_sha and repo.sha:
        parts.append(f"revision {fit_text(repo.sha[:12], 40)}")
    parts.append(f"created {_when(repo.created_at)}")
    return "\n".join(parts)


def _fields(alert: Alert, notes: Iterable[str]) -> list[dict[str, Any]]:
    declared = (fit_lines(alert.declared_base_models, LIST_FIELD_MAX, escape_discord)
                if alert.declared_base_models else "none: the card names no base model")
    fields = [
        {"name": "Suspect", "value": _repo_field(alert.suspect, with_sha=True), "inline": True},
        {"name": "Source", "value": _repo_field(alert.source, with_sha=False), "inline": True},
        {"name": "Verdict", "value": fit_text(_verdict_line(alert), TEXT_FIELD_MAX), "inline": False},
        {"name": "Declared base models", "value": declared, "inline": False},
    ]
    if alert.license_conflict:
        fields.append({"name": "License conflict", "value": fit_text(alert.license_conflict, TEXT_FIELD_MAX),
                       "inline": False})
    notes = list(notes)
    if notes:
        fields.append({"name": "Note", "value": fit_lines(notes, TEXT_FIELD_MAX, escape_discord), "inline": False})
    for f in fields:
        # Discord refuses an empty (or whitespace-only) field value; hostile text can be all
        # control characters, which escaping removes.
        if not f["value"].strip():
            f["value"] = EMPTY_TEXT
    return fields


def _description(alert: Alert, limit: int) -> str:
    head = fit_text(alert.reason or _headline(alert), min(limit // 2, TEXT_FIELD_MAX))
    if not alert.evidence:
        return head
    prefix = f"{head}\n\n**Evidence**\n"
    return prefix + fit_lines(alert.evidence, limit - _units(prefix), lambda line: f"• {fit_text(line, EVIDENCE_LINE_MAX)}")


def render_discord_payload(alert: Alert, *, nonce: str | None = None, plot_attached: bool | None = None,
                           notes: Iterable[str] = ()) -> dict[str, Any]:
    """The Execute Webhook body for ``alert``: one embed within Discord's limits.

    ``nonce`` (the outbox row's) goes in the footer so a posted message can be matched to its
    row by a human or a channel search. ``plot_attached`` defaults to "the alert has a plot";
    the sender passes False when it had to drop the image, with a ``notes`` line saying why.
    """
    attach = alert.plot_png is not None if plot_attached is None else plot_attached
    footer = fit_text(f"hubwatch alert {nonce}" if nonce else "hubwatch alert", FOOTER_BUDGET, strip_controls)
    embed: dict[str, Any] = {
        "title": fit_text(_headline(alert), TITLE_MAX),
        "color": SEVERITY_COLOURS[alert.severity],
        "fields": _fields(alert, notes),
        "footer": {"text": footer},
        "timestamp": alert.created_at.isoformat(),
    }
    url = _safe_url(alert.suspect.url)
    if url:
        embed["url"] = url
    budget = min(DESCRIPTION_MAX, EMBEDS_TOTAL_MAX - embed_text_length(embed))
    embed["description"] = _description(alert, budget)
    payload: dict[str, Any] = {
        "username": WEBHOOK_USERNAME,
        "embeds": [embed],
        "allowed_mentions": {"parse": []},
    }
    if attach:
        embed["image"] = {"url": f"attachment://{PLOT_FILENAME}"}
        payload["attachments"] = [{"id": 0, "filename": PLOT_FILENAME,
                                   "description": "layer-by-layer weight similarity, suspect vs source"}]
    return payload


def render_console(alert: Alert, notes: Iterable[str] = (), plot_file: str | None = None) -> str:
    """The whole alert as plain text for a terminal or a log file; nothing truncated. ``plot_file``:
    where the evidence plot was saved."""
    s, src = alert.suspect, alert.source
    lines = [
        _headline(alert),
        f"  why:      {alert.reason}" if alert.reason else None,
        f"  suspect:  {s.repo_id}" + (f" @ {s.sha}" if s.sha else "") + f" (created {_when(s.created_at)})  {s.url}",
        f"  source:   {src.repo_id} (created {_when(src.created_at)})  {src.url}",
        f"  verdict:  {_verdict_line(alert)}",
        "  declared base models: " + (", ".join(alert.declared_base_models) or "none"),
        f"  license conflict: {alert.license_conflict}" if alert.license_conflict else None,
        f"  evidence plot: {plot_file}" if plot_file else None,
        *(f"  note: {n}" for n in notes),
    ]
    if alert.evidence:
        lines.append("  evidence:")
        lines.extend(f"    - {e}" for e in alert.evidence)
    # Per line: a newline inside a repo id must not forge a line of its own.
    return "\n".join(strip_controls(line) for line in lines if line is not None)
