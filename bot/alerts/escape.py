"""Make hostile text (repo names, card text, evidence quoting them) inert where it is shown.

Repo ids and card fields come from strangers on the Hub. In Discord they must not format
(markdown), link (masked links), or ping (@everyone, <@id>): ``allowed_mentions={"parse": []}``
already stops pings, and the escaping below also keeps the text looking like what it is. On a
terminal they must not move the cursor or recolour it (ANSI escape sequences).
"""

from __future__ import annotations

import re
import unicodedata

# Characters Discord markdown gives meaning to: emphasis * _ ~, code `, spoiler |, quote >,
# heading #, masked links [ ] ( ), mention/emoji/timestamp tags < >, escape \, and ":" (emoji
# shortcodes, and it stops "http://..." in card text from becoming a clickable link).
_MARKDOWN_CHARS = re.compile(r"([\\*_~`|>#\[\]()<:])")
# "-" only makes a list at the start of a line; escaping it everywhere would litter every repo id.
_LEADING_DASH = re.compile(r"^(\s*)-")
# What would still read as a mention after markdown escaping; a zero-width space after "@"
# breaks it (the same trick as discord.utils.escape_mentions).
_MENTION = re.compile(r"@(everyone|here|[!&]?[0-9]{17,20})", re.IGNORECASE)
ZERO_WIDTH_SPACE = "\u200b"


def strip_controls(text: str) -> str:
    """Remove control and format characters (newlines, ANSI escapes, bidi overrides, NUL); tabs become spaces."""
    out = []
    for ch in text:
        if ch == "\t":
            out.append(" ")
        elif unicodedata.category(ch) not in ("Cc", "Cf"):
            out.append(ch)
    return "".join(out)


def escape_discord(text: str) -> str:
    """``text`` shown literally in a Discord embed: no formatting, no links, no pings, one line."""
    text = strip_controls(text.replace("\n", " "))
    text = _LEADING_DASH.sub(r"\1\\-", _MARKDOWN_CHARS.sub(r"\\\1", text))
    return _MENTION.sub("@" + ZERO_WIDTH_SPACE + r"\1", text)

