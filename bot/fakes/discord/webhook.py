"""A fake Discord Execute Webhook endpoint on loopback, for tests and demos, with the channel it
posts to.

What it reproduces (discord-api-docs webhook.mdx, message.mdx, channel.mdx, reference.mdx,
topics/rate-limits.mdx, events/gateway.mdx "Message Content Intent"):
- ``POST /api/webhooks/{id}/{token}`` and ``/api/v{n}/webhooks/{id}/{token}``, JSON or
  multipart (``payload_json`` + ``files[n]``); 204 without ``wait``, 200 + message with ``wait=true``;
- ``GET`` of the same URL (Get Webhook with Token): the webhook object, no auth, no ``user``;
- ``GET /api/v{n}/channels/{channel_id}/messages`` (Get Channel Messages): ``Authorization: Bot
  <token>`` required (401 ``{"message": "401: Unauthorized", "code": 0}``), ``limit`` 1-100
  (default 50; 50035 outside), ``before`` or ``after`` paging (``around`` is not modelled), newest first;
  403 50001 "Missing Access" without VIEW_CHANNEL (``can_view_channel``), an empty list without
  READ_MESSAGE_HISTORY (``read_history``), and empty ``content``/``embeds``/``attachments``/
  ``components`` in webhook messages when the bot lacks the Message Content intent
  (``message_content``); 404 10003 "Unknown Channel" for another channel;
- ``GET /api/v{n}/channels/{channel_id}`` (Get Channel): the channel object with ``last_message_id``;
- 404 ``{"message": "Unknown Webhook", "code": 10015}`` for a wrong id or token;
- 400 ``{"code": 50035, "message": "Invalid Form Body", "errors": {...}}`` when a payload breaks a
  documented limit (content 2000, 10 embeds, title 256, description 4096, 25 fields, field name
  256 / value 1024, footer 2048, author 256, 6000 in total; allowed_mentions types; attachment
  references); 50006 for an empty message; 50109 for invalid JSON; 413 (40005) for a file over 10 MiB;
- ``X-RateLimit-Limit/Remaining/Reset/Reset-After/Bucket`` on every answer and a per-webhook
  fixed-window limit (5 requests / 2 s by default, the community-reported webhook limit);
  a 429 carries ``retry_after`` in the body, ``Retry-After``, ``X-RateLimit-Scope`` and ``Via``;
- scripted failures: the next N requests answer 429, or another status (5xx, 401...), or hang past the client's timeout
  (before or after the message is posted); ``latency`` delays every answer, half before the fake
  acts on the request and half after (a client killed mid-request may die before or after Discord
  posted). GETs are not rate limited.
Accepted messages are recorded (payload, attachments) for assertions; ``add_channel_message`` puts
someone else's message in the channel.
"""

from __future__ import annotations

import email.parser
import email.policy
import hashlib
import itertools
import json
import math
import re
import threading
import time
from collections import deque
from dataclasses import dataclass
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from bot.fakes.discord.limits import (ATTACHMENT_IMAGE_SUFFIXES, AUTHOR_NAME_MAX, CONTENT_MAX, DESCRIPTION_MAX, EMBEDS_MAX,
                                      EMBEDS_TOTAL_MAX, FIELD_NAME_MAX, FIELD_VALUE_MAX, FIELDS_MAX, FILE_MAX_BYTES,
                                      FOOTER_TEXT_MAX, MENTION_TYPES, TITLE_MAX, discord_len, embed_text_length)

WEBHOOK_PATH = re.compile(r"^/api(?:/v\d+)?/webhooks/(?P<id>\d+)/(?P<token>[^/]+)/?$")
CHANNEL_PATH = re.compile(r"^/api(?:/v\d+)?/channels/(?P<id>\d+)(?P<messages>/messages)?/?$")
# Same shape as real ones (discord.py's Webhook.from_url regex: 17-20 digit id, 60+ char token).
DEFAULT_WEBHOOK_ID = "112233445566778899"
DEFAULT_TOKEN = "fake-token-" + "x" * 60
DEFAULT_BOT_TOKEN = "fake-webhook-bot-token." + "y" * 40
DEFAULT_CHANNEL_ID = "998877665544332211"
DEFAULT_GUILD_ID = "887766554433221100"
WEBHOOK_NAME = "Captain Hook"
# Get Channel Messages: "Max number of messages to return (1-100)", default 50 (message.mdx).
MESSAGES_LIMIT_MAX = 100
MESSAGES_LIMIT_DEFAULT = 50
# Message fields that the Message Content intent gates (gateway.mdx).
CONTENT_FIELDS = {"content": "", "embeds": [], "attachments": [], "components": []}
UNAUTHORIZED = (401, {"message": "401: Unauthorized", "code": 0})
MISSING_ACCESS = (403, {"message": "Missing Access", "code": 50001})
UNKNOWN_CHANNEL = (404, {"message": "Unknown Channel", "code": 10003})
UNKNOWN_WEBHOOK = (404, {"message": "Unknown Webhook", "code": 10015})
# Execute Webhook into a forum channel without thread_id or thread_name (webhook.mdx, error 220001).
FORUM_NEEDS_THREAD = {"message": "Webhooks posted to forum channels must have a thread_name or thread_id",
                      "code": 220001}
# Community-reported per-webhook limit (discord-api-docs issue #367): 5 requests per 2 s.
DEFAULT_RATE_LIMIT = 5
DEFAULT_RATE_WINDOW_S = 2.0
# Discord's epoch for snowflakes (reference.mdx "Snowflakes").
DISCORD_EPOCH_MS = 1420070400000
# A request body larger than this is refused unread; 10 MiB per file plus the JSON part.
MAX_BODY_BYTES = 2 * FILE_MAX_BYTES
# reference.mdx "User Agent": every HTTP API request names its library, "DiscordBot ($url,
# $versionNumber)"; discord.py sends "DiscordBot (https://github.com/Rapptz/discord.py 2.7.1) Python/...".
# Discord's edge (Cloudflare) refuses the others before the API sees them: a 403 whose body is a
# plain-text "error code: 1010" page, no JSON error object.
DISCORD_USER_AGENT_RX = re.compile(r"^DiscordBot \(\S+[ ,]+[^)\s]+\)")
EDGE_REFUSAL_BODY = b"error code: 1010"


def valid_user_agent(user_agent: str | None) -> bool:
    return bool(DISCORD_USER_AGENT_RX.match(user_agent or ""))


@dataclass
class ReceivedMessage:
    id: str
    payload: dict[str, Any]
    # files[n] field name -> (filename, content type, bytes)
    attachments: dict[str, tuple[str, str, bytes]]
    wait: bool
    thread_id: str | None = None  # the forum post (thread) it went to

    @property
    def embeds(self) -> list[dict[str, Any]]:
        return self.payload.get("embeds") or []


@dataclass
class ScriptedFailure:
    kind: str  # "429" | "status" | "hang"
    status: int = 429
    body: dict[str, Any] | None = None
    retry_after: float = 0.2
    scope: str = "user"
    seconds: float = 0.0
    # For "hang": post the message first, then stall (Discord did the work; the answer is lost).
    after_accept: bool = False


@dataclass
class RequestRecord:
    path: str
    status: int
    at: float
    method: str = "POST"


@dataclass
class _Bucket:
    window_start: float = 0.0
    used: int = 0


class _InvalidBody(Exception):
    def __init__(self, status: int, body: dict[str, Any]):
        super().__init__(body.get("message"))
        self.status = status
        self.body = body


def _form_error(errors: dict[str, Any]) -> _InvalidBody:
    return _InvalidBody(400, {"code": 50035, "message": "Invalid Form Body", "errors": errors})


def _leaf(code: str, message: str) -> dict[str, Any]:
    return {"_errors": [{"code": code, "message": message}]}


def _nest(path: list[str], leaf: dict[str, Any]) -> dict[str, Any]:
    for key in reversed(path):
        leaf = {key: leaf}
    return leaf


def _max_len(path: list[str], limit: int) -> _InvalidBody:
    return _form_error(_nest(path, _leaf("BASE_TYPE_MAX_LENGTH", f"Must be {limit} or fewer in length.")))


def _check_text(value: Any, path: list[str], limit: int) -> None:
    if value is None:
        return
    if not isinstance(value, str):
        raise _form_error(_nest(path, _leaf("BASE_TYPE_STRING", "Must be a string.")))
    if discord_len(value) > limit:
        raise _max_len(path, limit)


def _check_url(value: Any, path: list[str], attachments: set[str]) -> None:
    if value is None:
        return
    if not isinstance(value, str):
        raise _form_error(_nest(path, _leaf("BASE_TYPE_STRING", "Must be a string.")))
    if value.startswith("attachment://"):
        name = value.removeprefix("attachment://")
        if not name.lower().endswith(ATTACHMENT_IMAGE_SUFFIXES) or name not in attachments:
            raise _form_error(_nest(path, _leaf("URL_TYPE_INVALID_URL", "Not a well formed URL.")))
        return
    if urlsplit(value).scheme not in ("http", "https") or any(c.isspace() for c in value):
        raise _form_error(_nest(path, _leaf("URL_TYPE_INVALID_URL", "Not a well formed URL.")))


def _check_embed(embed: Any, i: int, attachments: set[str]) -> None:
    at = ["embeds", str(i)]
    if not isinstance(embed, dict):
        raise _form_error(_nest(at, _leaf("MODEL_TYPE_CONVERT", "Only dictionaries may be used in a ModelType")))
    _check_text(embed.get("title"), [*at, "title"], TITLE_MAX)
    _check_text(embed.get("description"), [*at, "description"], DESCRIPTION_MAX)
    _check_url(embed.get("url"), [*at, "url"], attachments)
    fields = embed.get("fields") or []
    if not isinstance(fields, list) or len(fields) > FIELDS_MAX:
        raise _form_error(_nest([*at, "fields"], _leaf("BASE_TYPE_MAX_LENGTH", f"Must be {FIELDS_MAX} or fewer in length.")))
    for j, f in enumerate(fields):
        fat = [*at, "fields", str(j)]
        # Discord trims whitespace before checking, so "  " is as empty as "".
        if not isinstance(f, dict) or not str(f.get("name") or "").strip() or not str(f.get("value") or "").strip():
            raise _form_error(_nest(fat, _leaf("BASE_TYPE_REQUIRED", "This field is required")))
        _check_text(f.get("name"), [*fat, "name"], FIELD_NAME_MAX)
        _check_text(f.get("value"), [*fat, "value"], FIELD_VALUE_MAX)
    for part, key, limit in (("footer", "text", FOOTER_TEXT_MAX), ("author", "name", AUTHOR_NAME_MAX)):
        sub = embed.get(part)
        if sub is not None:
            if not isinstance(sub, dict):
                raise _form_error(_nest([*at, part], _leaf("MODEL_TYPE_CONVERT", "Only dictionaries may be used in a ModelType")))
            _check_text(sub.get(key), [*at, part, key], limit)
    for part in ("image", "thumbnail"):
        sub = embed.get(part)
        if isinstance(sub, dict):
            _check_url(sub.get("url"), [*at, part, "url"], attachments)


def validate_payload(payload: Any, attachments: dict[str, tuple[str, str, bytes]]) -> None:
    """Raise _InvalidBody unless ``payload`` (+ uploaded files) is a message Discord would accept."""
    if not isinstance(payload, dict):
        raise _InvalidBody(400, {"code": 50109, "message": "The request body contains invalid JSON."})
    for _, _, data in attachments.values():
        if len(data) > FILE_MAX_BYTES:
            raise _InvalidBody(413, {"code": 40005, "message": "Request entity too large"})
    filenames = {filename for filename, _, _ in attachments.values()}
    _check_text(payload.get("content"), ["content"], CONTENT_MAX)
    embeds = payload.get("embeds") or []
    if not isinstance(embeds, list) or len(embeds) > EMBEDS_MAX:
        raise _form_error({"embeds": _leaf("BASE_TYPE_MAX_LENGTH", f"Must be {EMBEDS_MAX} or fewer in length.")})
    for i, embed in enumerate(embeds):
        _check_embed(embed, i, filenames)
    total = sum(embed_text_length(e) for e in embeds)
    if total > EMBEDS_TOTAL_MAX:
        raise _form_error({"embeds": _leaf("MAX_EMBED_SIZE_EXCEEDED",
                                           f"Embed size exceeds maximum size of {EMBEDS_TOTAL_MAX}")})
    mentions = payload.get("allowed_mentions")
    if mentions is not None:
        parse = mentions.get("parse", []) if isinstance(mentions, dict) else None
        if not isinstance(parse, list) or any(p not in MENTION_TYPES for p in parse):
            raise _form_error({"allowed_mentions": {"parse": _leaf("ENUM_TYPE_COERCE", "Value must be one of "
                                                                   f"{', '.join(MENTION_TYPES)}.")}})
    if not (payload.get("content") or embeds or attachments or payload.get("components") or payload.get("poll")):
        raise _InvalidBody(400, {"code": 50006, "message": "Cannot send an empty message"})


def _parse_multipart(content_type: str, body: bytes) -> tuple[Any, dict[str, tuple[str, str, bytes]]]:
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        b"Content-Type: " + content_type.encode("latin-1") + b"\r\n\r\n" + body)
    if not message.is_multipart():
        raise _InvalidBody(400, {"code": 50109, "message": "The request body contains invalid JSON."})
    payload: Any = {}
    files: dict[str, tuple[str, str, bytes]] = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        data = part.get_payload(decode=True) or b""
        if name == "payload_json":
            payload = _json(data)
        elif isinstance(name, str) and re.fullmatch(r"files\[\d+\]", name):
            files[name] = (part.get_filename() or name, part.get_content_type(), data)
    return payload, files


def _json(data: bytes) -> Any:
    try:
        return json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise _InvalidBody(400, {"code": 50109, "message": "The request body contains invalid JSON."}) from exc


class FakeDiscordWebhook:
    """Run with ``with FakeDiscordWebhook() as fake: ... fake.url ...``."""

    def __init__(self, webhook_id: str = DEFAULT_WEBHOOK_ID, token: str = DEFAULT_TOKEN,
                 rate_limit: int = DEFAULT_RATE_LIMIT, rate_window: float = DEFAULT_RATE_WINDOW_S,
                 host: str = "127.0.0.1", bot_token: str = DEFAULT_BOT_TOKEN, channel_id: str = DEFAULT_CHANNEL_ID,
                 guild_id: str = DEFAULT_GUILD_ID, latency: float = 0.0, forum: bool = False):
        """``forum``: the webhook's channel is a forum channel, where a message must name the post
        (``thread_id`` query parameter) or start one (``thread_name``)."""
        self.forum = forum
        self.webhook_id = webhook_id
        self.token = token
        self.rate_limit = rate_limit
        self.rate_window = rate_window
        self.host = host
        self.bot_token = bot_token
        self.channel_id = channel_id
        self.guild_id = guild_id
        self.latency = latency
        # What the bot may see in the webhook's channel (permissions.mdx, gateway.mdx).
        self.can_view_channel = True
        self.read_history = True
        self.message_content = True
        self.messages: list[ReceivedMessage] = []
        # Every message in the channel as Discord stores it, oldest first: the webhook's and others'.
        self.channel_messages: list[dict[str, Any]] = []
        self.requests: list[RequestRecord] = []
        self._script: deque[ScriptedFailure] = deque()
        self._bucket = _Bucket()
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ---- lifecycle -------------------------------------------------------------------------

    def start(self) -> FakeDiscordWebhook:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                fake._handle(self)

            def do_GET(self) -> None:  # noqa: N802
                fake._handle_get(self)

            def log_message(self, format: str, *args: Any) -> None:
                """Quiet: tests assert on ``fake.requests`` instead of stderr."""

        self._server = ThreadingHTTPServer((self.host, 0), Handler)
        self._server.daemon_threads = True
        # A short poll interval makes stop() (and so each test) fast; the default is 0.5 s.
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="fake-discord", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> FakeDiscordWebhook:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        if self._server is None:
            raise RuntimeError("the fake Discord webhook is not running")
        return f"http://{self.host}:{self._server.server_address[1]}"

    @property
    def url(self) -> str:
        return f"{self.base_url}/api/webhooks/{self.webhook_id}/{self.token}"

    # ---- scripting -------------------------------------------------------------------------

    def respond_429(self, count: int = 1, retry_after: float = 0.2, scope: str = "user") -> None:
        with self._lock:
            self._script.extend(ScriptedFailure("429", 429, retry_after=retry_after, scope=scope) for _ in range(count))

    def fail_next(self, count: int = 1, status: int = 502, body: dict[str, Any] | None = None) -> None:
        """The next ``count`` requests answer ``status`` (a 5xx outage, or a 4xx such as 401/403)."""
        with self._lock:
            self._script.extend(ScriptedFailure("status", status, body=body) for _ in range(count))

    def hang(self, count: int = 1, seconds: float = 1.0, after_accept: bool = False) -> None:
        with self._lock:
            self._script.extend(ScriptedFailure("hang", 504, seconds=seconds, after_accept=after_accept)
                                for _ in range(count))

    def statuses(self) -> list[int]:
        with self._lock:
            return [r.status for r in self.requests]

    def add_channel_message(self, content: str, author_id: str = "445566778899001122") -> dict[str, Any]:
        """Someone else (a user, another bot) posts ``content`` in the webhook's channel."""
        with self._lock:
            message = self._message({"content": content}, {}, {"id": author_id, "username": "someone",
                                                               "discriminator": "0", "avatar": None})
            self.channel_messages.append(message)
            return message

    # ---- request handling ------------------------------------------------------------------

    def _rate_headers(self, now: float) -> dict[str, str]:
        b = self._bucket
        reset_after = max(0.0, b.window_start + self.rate_window - now)
        return {
            "X-RateLimit-Limit": str(self.rate_limit),
            "X-RateLimit-Remaining": str(max(0, self.rate_limit - b.used)),
            "X-RateLimit-Reset": f"{time.time() + reset_after:.3f}",
            "X-RateLimit-Reset-After": f"{reset_after:.3f}",
            "X-RateLimit-Bucket": hashlib.sha1(self.webhook_id.encode()).hexdigest()[:16],
        }

    def _take_token(self, now: float) -> bool:
        b = self._bucket
        if now >= b.window_start + self.rate_window:
            b.window_start, b.used = now, 0
        if b.used >= self.rate_limit:
            return False
        b.used += 1
        return True

    def _record(self, handler: BaseHTTPRequestHandler, status: int) -> None:
        self.requests.append(RequestRecord(urlsplit(handler.path).path, status, time.monotonic(), handler.command))

    def _send(self, handler: BaseHTTPRequestHandler, status: int, body: dict[str, Any] | None,
              headers: dict[str, str]) -> None:
        data = json.dumps(body).encode() if body is not None else b""
        self._write(handler, status, data, {**headers, "Content-Type": "application/json"} if body is not None else headers)

    @staticmethod
    def _write(handler: BaseHTTPRequestHandler, status: int, data: bytes, headers: dict[str, str]) -> None:
        try:
            handler.send_response(status)
            for k, v in headers.items():
                handler.send_header(k, v)
            handler.send_header("Content-Length", str(len(data)))
            handler.end_headers()
            handler.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            # The client gave up (its timeout) before we answered: exactly what a hang simulates.
            pass

    def _refused_at_the_edge(self, handler: BaseHTTPRequestHandler) -> bool:
        if valid_user_agent(handler.headers.get("User-Agent")):
            return False
        with self._lock:
            self._record(handler, 403)
        self._write(handler, 403, EDGE_REFUSAL_BODY, {"Content-Type": "text/plain; charset=UTF-8"})
        return True

    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        if self._refused_at_the_edge(handler):
            return
        parts = urlsplit(handler.path)
        length = int(handler.headers.get("Content-Length") or 0)
        if length > MAX_BODY_BYTES:
            with self._lock:
                self._record(handler, 413)
            self._send(handler, 413, {"code": 40005, "message": "Request entity too large"}, {})
            return
        body = handler.rfile.read(length)
        match = WEBHOOK_PATH.match(parts.path)
        time.sleep(self.latency / 2)
        with self._lock:
            now = time.monotonic()
            if not self._is_webhook(match):
                self._record(handler, 404)
                (status, answer), headers, failure = UNKNOWN_WEBHOOK, {}, None
            else:
                failure = self._script.popleft() if self._script else None
                status, answer, headers = self._answer(handler, body, parts.query, now, failure)
        time.sleep(self.latency / 2 + (failure.seconds if failure is not None and failure.kind == "hang" else 0))
        self._send(handler, status, answer, headers)

    def _is_webhook(self, match: re.Match[str] | None) -> bool:
        return bool(match) and match["id"] == self.webhook_id and match["token"] == self.token

    def _handle_get(self, handler: BaseHTTPRequestHandler) -> None:
        if self._refused_at_the_edge(handler):
            return
        parts = urlsplit(handler.path)
        time.sleep(self.latency / 2)
        with self._lock:
            status, answer = self._answer_get(handler, parts.path, parse_qs(parts.query))
            self._record(handler, status)
        time.sleep(self.latency / 2)
        self._send(handler, status, answer, {})

    def _answer_get(self, handler: BaseHTTPRequestHandler, path: str,
                    query: dict[str, list[str]]) -> tuple[int, Any]:
        """Get Webhook with Token, Get Channel, Get Channel Messages (called with the lock held)."""
        webhook = WEBHOOK_PATH.match(path)
        if webhook:
            return (200, self._webhook_object()) if self._is_webhook(webhook) else UNKNOWN_WEBHOOK
        channel = CHANNEL_PATH.match(path)
        if not channel:
            return 404, {"message": "404: Not Found", "code": 0}
        if handler.headers.get("Authorization") != f"Bot {self.bot_token}":
            return UNAUTHORIZED
        if channel["id"] != self.channel_id:
            return UNKNOWN_CHANNEL
        if not self.can_view_channel:
            return MISSING_ACCESS
        if not channel["messages"]:
            return 200, self._channel_object()
        try:
            return 200, self._history(query)
        except _InvalidBody as exc:
            return exc.status, exc.body

    def _webhook_object(self) -> dict[str, Any]:
        # Get Webhook with Token: "does not require authentication and returns no user".
        return {"id": self.webhook_id, "type": 1, "guild_id": self.guild_id, "channel_id": self.channel_id,
                "name": WEBHOOK_NAME, "avatar": None, "application_id": None, "token": self.token}

    def _channel_object(self) -> dict[str, Any]:
        last = self.channel_messages[-1]["id"] if self.channel_messages else None
        return {"id": self.channel_id, "type": 0, "guild_id": self.guild_id, "name": "alerts", "position": 0,
                "permission_overwrites": [], "nsfw": False, "topic": None, "last_message_id": last,
                "rate_limit_per_user": 0, "parent_id": None}

    def _history(self, query: dict[str, list[str]]) -> list[dict[str, Any]]:
        raw_limit = query.get("limit", [str(MESSAGES_LIMIT_DEFAULT)])[-1]
        if not raw_limit.isdigit():
            raise _form_error({"limit": _leaf("NUMBER_TYPE_COERCE", f"Value \"{raw_limit}\" is not int.")})
        limit = int(raw_limit)
        if not 1 <= limit <= MESSAGES_LIMIT_MAX:
            code, bound = ("NUMBER_TYPE_MIN", "greater than or equal to 1") if limit < 1 else \
                ("NUMBER_TYPE_MAX", f"less than or equal to {MESSAGES_LIMIT_MAX}")
            raise _form_error({"limit": _leaf(code, f"int value should be {bound}.")})
        anchors = {k: int(query[k][-1]) for k in ("before", "after") if query.get(k, [""])[-1].isdigit()}
        if not self.read_history:
            return []  # "If the current user is missing READ_MESSAGE_HISTORY ... no messages will be returned."
        newest_first = sorted(self.channel_messages, key=lambda m: int(m["id"]), reverse=True)
        if "before" in anchors:
            page = [m for m in newest_first if int(m["id"]) < anchors["before"]][:limit]
        elif "after" in anchors:
            page = [m for m in newest_first if int(m["id"]) > anchors["after"]][-limit:]
        else:
            page = newest_first[:limit]
        return [self._as_seen(m) for m in page]

    def _as_seen(self, message: dict[str, Any]) -> dict[str, Any]:
        """A message as the bot reads it: content fields blanked without the Message Content intent
        (webhook messages are not the app's own)."""
        return dict(message) if self.message_content else {**message, **CONTENT_FIELDS}

    def _answer(self, handler: BaseHTTPRequestHandler, body: bytes, query: str, now: float,
                failure: ScriptedFailure | None) -> tuple[int, dict[str, Any] | None, dict[str, str]]:
        """Decide the answer (called with the lock held)."""
        if failure is not None and failure.kind == "429":
            self._record(handler, 429)
            # A real 429's bucket headers agree with its retry_after.
            headers = {**self._rate_headers(now), "X-RateLimit-Remaining": "0",
                       "X-RateLimit-Reset-After": f"{failure.retry_after:.3f}",
                       "X-RateLimit-Reset": f"{time.time() + failure.retry_after:.3f}",
                       "Retry-After": str(max(1, math.ceil(failure.retry_after))),
                       "X-RateLimit-Scope": failure.scope, "Via": "1.1 google"}
            if failure.scope == "global":
                headers["X-RateLimit-Global"] = "true"
            return 429, {"message": "You are being rate limited.", "retry_after": failure.retry_after,
                         "global": failure.scope == "global"}, headers
        if failure is not None and failure.kind == "status":
            self._record(handler, failure.status)
            return failure.status, failure.body or {"message": "Server error", "code": 0}, {}
        if not self._take_token(now):
            self._record(handler, 429)
            retry_after = round(max(0.001, self._bucket.window_start + self.rate_window - now), 3)
            headers = {**self._rate_headers(now), "Retry-After": str(max(1, math.ceil(retry_after))),
                       "X-RateLimit-Scope": "user", "Via": "1.1 google"}
            return 429, {"message": "You are being rate limited.", "retry_after": retry_after, "global": False}, headers
        headers = self._rate_headers(now)
        try:
            content_type = handler.headers.get("Content-Type") or ""
            if content_type.startswith("multipart/form-data"):
                payload, files = _parse_multipart(content_type, body)
            else:
                payload, files = _json(body), {}
            validate_payload(payload, files)
        except _InvalidBody as exc:
            self._record(handler, exc.status)
            return exc.status, exc.body, headers
        wait = parse_qs(query).get("wait", ["false"])[-1].lower() == "true"
        thread_id = parse_qs(query).get("thread_id", [None])[-1]
        if self.forum and not thread_id and not payload.get("thread_name"):
            self._record(handler, 400)
            return 400, dict(FORUM_NEEDS_THREAD), headers
        if failure is not None and failure.kind == "hang" and not failure.after_accept:
            self._record(handler, failure.status)
            return failure.status, {"message": "Gateway timeout", "code": 0}, headers
        # A hang "after accept" posts here and stalls in _handle: Discord did the work, the answer is lost.
        message = self._accept(payload, files, wait)
        self.messages[-1].thread_id = thread_id
        self._record(handler, 200 if wait else 204)
        return (200, message, headers) if wait else (204, None, headers)

    def _accept(self, payload: dict[str, Any], files: dict[str, tuple[str, str, bytes]],
                wait: bool) -> dict[str, Any]:
        author = {"id": self.webhook_id, "username": payload.get("username") or WEBHOOK_NAME, "discriminator": "0000",
                  "avatar": None, "bot": True}
        message = {**self._message(payload, files, author), "webhook_id": self.webhook_id}
        self.messages.append(ReceivedMessage(message["id"], payload, files, wait))
        self.channel_messages.append(message)
        return message

    def _message(self, payload: dict[str, Any], files: dict[str, tuple[str, str, bytes]],
                 author: dict[str, Any]) -> dict[str, Any]:
        """A message object (message.mdx) with a fresh snowflake id, as stored in the channel."""
        ms = int(time.time() * 1000) - DISCORD_EPOCH_MS
        return {
            "id": str((ms << 22) | next(self._ids)),
            "type": 0,
            "channel_id": self.channel_id,
            "author": author,
            "content": payload.get("content") or "",
            "embeds": payload.get("embeds") or [],
            "attachments": [{"id": str(i), "filename": f[0], "size": len(f[2]), "content_type": f[1]}
                            for i, f in enumerate(files.values())],
            "components": [],
            "mentions": [],
            "mention_roles": [],
            "mention_everyone": False,
            "pinned": False,
            "tts": False,
            "flags": 0,
            "timestamp": datetime.now(timezone.utc).isoformat(),
            "edited_timestamp": None,
        }
