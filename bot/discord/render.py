"""Embeds for the bot's answers, kept inside Discord's documented limits.

Repo ids, evidence and error text come from strangers on the Hub: everything shown is escaped
(``escape_discord``) or, inside the code-block table, stripped of what could end the block.
"""

from __future__ import annotations

import re

import discord

from bot.alerts.escape import strip_controls
from bot.alerts.limits import DESCRIPTION_MAX, FIELD_VALUE_MAX, TITLE_MAX
from fingerprints.facts import Verdict

from bot.alerts.model import verdict_text
from bot.alerts.render import fit_lines, fit_text

from bot.discord.service import CompareResult, NearestRow, StatusInfo, WatchItem

PLOT_FILENAME = "comparison.png"
# Copy verdicts stand out; "independent" is the quiet default.
VERDICT_COLOURS = {
    Verdict.IDENTICAL: 0xD62828,
    Verdict.WEIGHTS_DERIVED: 0xF77F00,
    Verdict.TOKENIZER_COPIED: 0xFCBF49,
    Verdict.SAME_ARCHITECTURE: 0x4895EF,
    Verdict.INDEPENDENT: 0x6C757D,
}
NEUTRAL_COLOUR = 0x4895EF
ERROR_COLOUR = 0xD62828
# Table column widths: a Discord code block wraps past ~60-70 monospace characters on desktop, so
# the repo column takes what is left of that after verdict (17), score (5) and confidence (4).
TABLE_REPO_WIDTH = 38
TABLE_VERDICT_WIDTH = 17
# Half an embed description: room for a readable evidence list while the 6000-character message
# budget keeps space for title, fields and footer.
EVIDENCE_MAX = DESCRIPTION_MAX // 2
# One ephemeral error line; Discord's content limit is 2000 and a longer error is not read anyway.
ERROR_TEXT_MAX = 500
LIKELY_ORIGINAL_MARK = "*"
# Error and status text reaches every member: the endpoint, the database and other paths of the
# server running hubwatch are not theirs to see. URLs first (their paths are not file paths).
URL_RX = re.compile(r"\b[a-z][a-z0-9+.-]*://\S+", re.IGNORECASE)
PATH_RX = re.compile(r"(?<![\w.~/-])(?:~|\.{1,2})?(?:/[^\s/'\"`]+)+/?|\b[A-Za-z]:\\\S+")


def public_text(text: str) -> str:
    """``text`` without URLs and filesystem paths; Hub ids (org/name) are kept."""
    return PATH_RX.sub("[path]", URL_RX.sub("[url]", text))


def _table_cell(text: str, width: int) -> str:
    """``text`` cut to ``width`` for a code block: no backticks (they would close it), no controls."""
    clean = strip_controls(text).replace("`", "'")
    return clean if len(clean) <= width else clean[: width - 1] + "…"


def _fit_field(lines: list[str]) -> str:
    """Escaped lines for one embed field value, cut to its limit with a "…(N more)" line."""
    return fit_lines(lines, FIELD_VALUE_MAX, render=lambda line: fit_text(line, FIELD_VALUE_MAX))


def nearest_embed(repo: str, rows: list[NearestRow]) -> discord.Embed:
    embed = discord.Embed(title=fit_text(f"Nearest to {repo}", TITLE_MAX), colour=NEUTRAL_COLOUR)
    if not rows:
        embed.description = "No similar model in the store yet."
        return embed
    embed.colour = VERDICT_COLOURS.get(rows[0].verdict, NEUTRAL_COLOUR)
    header = f"  {'repo':{TABLE_REPO_WIDTH}} {'verdict':{TABLE_VERDICT_WIDTH}} score conf"
    lines = [header]
    for row in rows:
        mark = LIKELY_ORIGINAL_MARK if row.likely_original else " "
        repo_cell = _table_cell(row.repo_id, TABLE_REPO_WIDTH)
        verdict_cell = _table_cell(verdict_text(row.verdict, row.kinds), TABLE_VERDICT_WIDTH)
        lines.append(f"{mark} {repo_cell:{TABLE_REPO_WIDTH}} {verdict_cell:{TABLE_VERDICT_WIDTH}} "
                     f"{row.score:5.3f} {row.confidence:4.2f}")
    fence = "```"
    embed.description = fence + "\n" + fit_lines(lines, DESCRIPTION_MAX - 2 * len(fence) - 2) + "\n" + fence
    declared = [f"{row.repo_id}: {row.declared}" for row in rows if row.declared]
    if declared:
        embed.add_field(name="Declared relations", value=_fit_field(declared), inline=False)
    if any(row.likely_original for row in rows):
        embed.set_footer(text=f"{LIKELY_ORIGINAL_MARK} older than {strip_controls(repo)[:TITLE_MAX]}: "
                              "the likely original")
    return embed


def compare_embed(result: CompareResult) -> discord.Embed:
    embed = discord.Embed(title=fit_text(f"{result.a} vs {result.b}", TITLE_MAX),
                          colour=VERDICT_COLOURS.get(result.verdict, NEUTRAL_COLOUR))
    embed.add_field(name="Verdict", value=fit_text(result.verdict, FIELD_VALUE_MAX))
    embed.add_field(name="Weight similarity", value=f"{result.score:.3f}")
    embed.add_field(name="Confidence", value=f"{result.confidence:.2f}")
    if result.kinds:
        embed.add_field(name="Kinds", value=fit_text(", ".join(result.kinds), FIELD_VALUE_MAX), inline=False)
    if result.evidence:
        embed.description = fit_lines(result.evidence, EVIDENCE_MAX,
                                      render=lambda line: "• " + fit_text(line, FIELD_VALUE_MAX))
    if result.png is not None:
        embed.set_image(url=f"attachment://{PLOT_FILENAME}")
    return embed


def watch_list_embed(items: list[WatchItem]) -> discord.Embed:
    embed = discord.Embed(title="Watch list", colour=NEUTRAL_COLOUR)
    if not items:
        embed.description = "Nothing watched beyond the built-in references."
        return embed
    for kind, heading in (("reference", "Reference models"), ("author", "Watched authors")):
        lines = [f"{item.value} (by {item.added_by or 'config'}, {item.added_at[:10]})"
                 for item in items if item.kind == kind]
        if lines:
            embed.add_field(name=f"{heading} ({len(lines)})", value=_fit_field(lines), inline=False)
    return embed


def status_embed(info: StatusInfo) -> discord.Embed:
    embed = discord.Embed(title="hubwatch status", colour=ERROR_COLOUR if info.last_error else NEUTRAL_COLOUR)
    embed.add_field(name="Last poll", value=info.last_poll_at or "never")
    embed.add_field(name="Models fingerprinted", value=str(info.models_fingerprinted))
    embed.add_field(name="Alerts sent", value=str(info.alerts_sent))
    embed.add_field(name="Queue depth", value=str(info.queue_depth))
    embed.add_field(name="Revisions queued", value=str(info.revisions_queued))
    embed.add_field(name="Newest feed lag", value="caught up" if not info.feed_lag_s else f"{info.feed_lag_s / 60:,.0f} min")
    embed.add_field(name="Errors", value=str(info.errors))
    if info.not_fingerprinted:
        lines = [f"{reason}: {n}" for reason, n in info.not_fingerprinted.items()]
        embed.add_field(name="Not fingerprinted", value=_fit_field(lines), inline=False)
    if info.last_error:
        embed.add_field(name="Last error", value=fit_text(public_text(info.last_error), FIELD_VALUE_MAX), inline=False)
    return embed


def error_text(message: str) -> str:
    return fit_text(public_text(message), ERROR_TEXT_MAX)
