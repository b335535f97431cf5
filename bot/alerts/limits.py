"""Discord's documented message limits, as the renderer keeps to them (the fake Discord keeps its own copy).

Sources (discord/discord-api-docs): developers/resources/message.mdx "Embed Limits";
developers/resources/webhook.mdx "Execute Webhook" (content 2000, embeds up to 10);
developers/reference.mdx "Uploading Files" (10 MiB default per-file upload limit).
"""

from __future__ import annotations

from typing import Any

TITLE_MAX = 256
DESCRIPTION_MAX = 4096
FIELD_VALUE_MAX = 1024
# Sum of title, description, field names and values, footer text and author name over every
# embed of one message.
EMBEDS_TOTAL_MAX = 6000
FILE_MAX_BYTES = 10 * 1024 * 1024


def discord_len(text: str) -> int:
    """Length as Discord counts it: Discord's limits are JavaScript string lengths (UTF-16 code
    units), after trimming leading and trailing whitespace. An emoji outside the BMP counts 2."""
    return len(text.strip().encode("utf-16-le")) // 2


def embed_text_length(embed: dict[str, Any]) -> int:
    """The characters of ``embed`` that count towards EMBEDS_TOTAL_MAX."""
    total = discord_len(str(embed.get("title") or "")) + discord_len(str(embed.get("description") or ""))
    for f in embed.get("fields") or []:
        if isinstance(f, dict):
            total += discord_len(str(f.get("name") or "")) + discord_len(str(f.get("value") or ""))
    footer, author = embed.get("footer"), embed.get("author")
    if isinstance(footer, dict):
        total += discord_len(str(footer.get("text") or ""))
    if isinstance(author, dict):
        total += discord_len(str(author.get("name") or ""))
    return total
