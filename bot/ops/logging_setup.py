"""Structured logging for the long-running watcher: text or JSON lines, secrets always redacted.

``configure_logging`` installs one handler on the root logger. Every record passing through it is
redacted first (message, arguments, extra fields, exception and stack text): Hub tokens, Discord
webhook tokens inside URLs, Discord bot tokens, Bearer credentials and any configured secret value
become ``[REDACTED]``. ``redact`` is the same function for text that leaves by other paths
(alerts, error messages shown in Discord).

``log_cycle_summary`` writes the one line per feed poll that an operator greps for.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import IO, Any

MASK = "[REDACTED]"
# A configured secret shorter than this is replaced only where it stands alone (not inside a
# longer word): masking every "abc" inside other words would hide more than it protects, but a short
# secret is still a secret. Real tokens are 37+ characters.
MIN_LITERAL_SECRET_CHARS = 8

# Token shapes that are redacted even when not configured (a token pasted into a model card, an
# exception that echoes a URL). HF user tokens are "hf_" + 34 letters/digits; requiring 20+ keeps
# identifiers like hf_hub_download intact.
SECRET_PATTERNS = (
    # Discord Execute Webhook URL: keep the webhook id (useful when debugging), drop the token.
    (re.compile(r"(/api(?:/v\d+)?/webhooks/\d+/)[A-Za-z0-9._\-]+"), r"\1" + MASK),
    # The same URL percent-encoded (inside a query string, a redirect target, a logged form).
    (re.compile(r"(?i)(%2Fapi(?:%2Fv\d+)?%2Fwebhooks%2F\d+%2F)[A-Za-z0-9._\-%]+"), r"\1" + MASK),
    # Signed CDN URLs (the Hub's LFS/Xet redirects): the signature and policy grant the download.
    (re.compile(r"(?i)([?&](?:x-amz-signature|x-amz-credential|x-amz-security-token|signature|policy|"
                r"key-pair-id|x-goog-signature)=)[^&\s\"'#]+"), r"\1" + MASK),
    (re.compile(r"\bhf_[A-Za-z0-9]{20,}"), MASK),
    # Discord bot tokens (and JWT-like triples): base64 user id . timestamp . HMAC.
    (re.compile(r"\b[A-Za-z0-9_\-]{23,28}\.[A-Za-z0-9_\-]{6,7}\.[A-Za-z0-9_\-]{27,}"), MASK),
    # Credentials in an Authorization header however it is printed, and bare "Bearer <token>".
    (re.compile(r"(?i)(authorization[\"']?\s*[:=]\s*[\"']?(?:bot\s+|bearer\s+)?)[^\s\"',}]+"), r"\1" + MASK),
    (re.compile(r"(?i)\b(bearer\s+)[A-Za-z0-9._\-~+/]{8,}=*"), r"\1" + MASK),
)

# Attributes every LogRecord has; anything else on a record came from ``extra=``.
STANDARD_RECORD_ATTRS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
CYCLE_LOGGER = "hubwatch.cycle"


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` with every known token shape and every given secret value replaced by [REDACTED]."""
    for secret in sorted((s for s in secrets if s), key=len, reverse=True):
        if len(secret) >= MIN_LITERAL_SECRET_CHARS:
            text = text.replace(secret, MASK)
        else:
            text = re.sub(rf"(?<![\w-]){re.escape(secret)}(?![\w-])", MASK, text)
    for pattern, replacement in SECRET_PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def extra_fields(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in vars(record).items() if k not in STANDARD_RECORD_ATTRS and not k.startswith("_")}


class RedactingFilter(logging.Filter):
    """Rewrites each record in place so no formatter or later handler can see a secret."""

    def __init__(self, secrets: Iterable[str] = ()):
        super().__init__()
        self.secrets = tuple(secrets)

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = redact(record.getMessage(), self.secrets)
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text, self.secrets)
        if record.stack_info:
            record.stack_info = redact(record.stack_info, self.secrets)
        for key, value in extra_fields(record).items():
            if isinstance(value, str):
                setattr(record, key, redact(value, self.secrets))
            elif not isinstance(value, (int, float, bool, type(None))):
                setattr(record, key, redact(str(value), self.secrets))
        return True


def _field_text(value: Any) -> str:
    text = str(value)
    return json.dumps(text) if (not text or any(c.isspace() or c in '"=' for c in text)) else text


class TextFormatter(logging.Formatter):
    """The classic one-line format, followed by the record's extra fields as key=value pairs."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        extras = extra_fields(record)
        if not extras:
            return line
        head, sep, tail = line.partition("\n")  # fields go on the message line, before any traceback
        pairs = " ".join(f"{k}={_field_text(v)}" for k, v in extras.items())
        return f"{head} {pairs}{sep}{tail}"


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, msg, the extra fields, and exc when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in extra_fields(record).items():
            entry[key] = value if isinstance(value, (int, float, bool, str, type(None))) else str(value)
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["exc"] = record.exc_text
        if record.stack_info:
            entry["stack"] = record.stack_info
        return json.dumps(entry, ensure_ascii=False)


def configure_logging(format: str = "text", level: str | int = "INFO", secrets: Iterable[str] = (),
                      stream: IO[str] | None = None) -> logging.Handler:
    """Route all logging to one redacting handler on ``stream`` (stderr) in ``format`` (text|json).

    Calling it again replaces the handler it installed before; other handlers are left alone.
    """
    if format not in ("text", "json"):
        raise ValueError(f"log format must be text or json, not {format!r}")
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, "_hubwatch", False)]:
        root.removeHandler(old)
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler._hubwatch = True  # type: ignore[attr-defined]  # marks it as ours for the next call
    handler.addFilter(RedactingFilter(secrets))
    handler.setFormatter(JsonFormatter() if format == "json" else TextFormatter())
    root.addHandler(handler)
    root.setLevel(level)
    # httpx logs every request URL at INFO; a webhook URL is a credential and the volume drowns the
    # cycle lines, so its chatter is kept to warnings.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    # APScheduler writes two INFO lines per job run ("Running job", "executed successfully"), ~11.5k
    # a day at the default intervals, saying nothing the cycle line does not. Its warnings (missed
    # runs, job errors) still show; --debug shows everything.
    logging.getLogger("apscheduler").setLevel(logging.NOTSET if root.level <= logging.DEBUG else logging.WARNING)
    return handler


@dataclass
class CycleSummary:
    """What one poll of one feed did. The watcher fills it in and hands it to log_cycle_summary."""

    feed: str
    models_seen: int = 0
    new_revisions: int = 0
    fingerprinted: int = 0
    bytes_read: int = 0
    alerts_enqueued: int = 0
    alerts_delivered: int = 0
    errors: int = 0
    hub_429s: int = 0
    rate_limit_wait_s: float = 0.0  # waited for the Hub's rate-limit windows to reset
    duration_s: float = 0.0
    # Why the feed could not be polled at all (an unreachable Hub): said on the cycle line itself,
    # so a Hub outage is one line per cycle.
    error: str | None = None


def log_cycle_summary(summary: CycleSummary, logger: logging.Logger | None = None) -> None:
    """One INFO line ``cycle done feed=... models_seen=...`` (or one JSON object with those fields)."""
    fields = dataclasses.asdict(summary)
    fields["duration_s"] = round(summary.duration_s, 3)
    if summary.error is None:
        del fields["error"]
    level = logging.WARNING if summary.errors else logging.INFO
    (logger or logging.getLogger(CYCLE_LOGGER)).log(level, "cycle done", extra=fields)
