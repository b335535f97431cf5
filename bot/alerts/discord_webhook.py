"""Senders: post an alert to a Discord webhook (httpx), or print it on the console.

``DiscordWebhookSender.send`` makes one delivery: it retries within itself what is worth retrying
now (429 with a short ``retry_after``, 5xx, timeouts, dropped connections; capped exponential
backoff) and returns a ``DeliveryResult``; it never raises for an HTTP outcome. Only a 2xx counts
as delivered. A 4xx other than 429 that carries Discord's JSON error (deleted webhook, invalid
body) is permanent: retrying cannot fix it. A 4xx without one came from Discord's edge or a proxy
(Cloudflare's 403 "error code: 1010") and is retried later.

Exactly-once: Execute Webhook has no idempotency key (webhook.mdx lists no ``nonce``; only the
bot-token Create Message has ``nonce`` + ``enforce_nonce``, and that deduplicates only "in the past
few minutes"), and a webhook token cannot read its channel. So a retry after an *ambiguous*
failure (a read timeout or dropped connection after the body was sent, a 5xx from a proxy in front
of a Discord that did post) can post twice; each message carries the outbox nonce in its footer so
a duplicate can be recognised. Failures before the request left (connect errors, 429s, 4xx) are
never ambiguous.

With a bot token (``bot_token``; the bot needs View Channel and Read Message History in the
webhook's channel, and the Message Content intent, since webhook messages are not the app's own),
``find_posted`` settles an ambiguous attempt instead: Get Webhook with Token gives the webhook's
channel, Get Channel Messages (newest first) is searched for a message of this webhook whose
embed footer carries the nonce. Such a sender does not retry an ambiguous failure within ``send``:
it hands it back so the outbox checks, after a retry delay, whether it was posted. Whatever cannot
be checked (unreadable history or content, an error) raises ``PostedLookupError``; it is never
read as "not posted".

The webhook URL and the bot token are secrets: they never appear in a log line or an error text.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import IO, Any, Protocol

import httpx

from bot.ops.logging_setup import redact
from bot.alerts.limits import FILE_MAX_BYTES
from bot.alerts.model import Alert
from bot.alerts.render import PLOT_FILENAME, render_console, render_discord_payload
from bot.tls import verified_tls_context

log = logging.getLogger("hubwatch.alerts")

# An Execute Webhook answer normally takes well under a second; 10 s is discord.py's and most
# clients' order of magnitude and bounds how long a cycle waits on a hung Discord.
DEFAULT_TIMEOUT_S = 10.0
# discord.py's webhook adapter makes 5 attempts per request; we do the same within one send.
DEFAULT_MAX_ATTEMPTS = 5
# Backoff between retries of a 5xx/timeout: base * 2**(attempt-1), capped. discord.py sleeps
# 1 + 2*attempt (1, 3, 5, 7 s); doubling from 1 s caps at 16 s by the 5th attempt.
DEFAULT_BACKOFF_BASE_S = 1.0
DEFAULT_BACKOFF_CAP_S = 16.0
# A 429 asking for a longer wait than this ends the send: the outbox reschedules the alert at
# retry_after instead of the watcher sleeping through a cycle. Webhook buckets reset within ~2 s
# (5 requests / 2 s per webhook, discord-api-docs issue #367), so 30 s is only hit by a global
# limit or a Cloudflare ban.
DEFAULT_MAX_INLINE_WAIT_S = 30.0
# Discord's error text is for a human; its "errors" tree on a 400 can be large.
ERROR_TEXT_MAX = 300
# Get Channel Messages returns at most 100 messages a page (message.mdx). An in-doubt alert is
# looked for back to its queueing time; ten pages bound the search in a busy channel.
HISTORY_PAGE = 100
HISTORY_MAX_PAGES = 10
# Our clock and Discord's may disagree: search this far before the alert was queued.
CLOCK_SKEW = timedelta(minutes=5)
# Snowflakes carry milliseconds since Discord's epoch in their top 42 bits (reference.mdx).
DISCORD_EPOCH_MS = 1420070400000
API_VERSION = "v10"
WEBHOOK_URL_RX = re.compile(r"/webhooks/(?P<id>\d+)/(?P<token>[^/?#]+)")
# reference.mdx "User Agent": every request names its library and version; Discord's edge
# refuses requests without it (403), Execute Webhook included.
USER_AGENT = "DiscordBot (hubwatch, 0.1.0)"
# Evidence plot file names of console alerts: repo ids reduced to these characters, this long.
PLOT_NAME_UNSAFE = re.compile(r"[^A-Za-z0-9._@-]+")
PLOT_NAME_MAX = 150
# A 4xx without Discord's JSON error object came from its edge or a proxy, not from the API:
# the alert is retried this much later rather than marked failed for good.
EDGE_RETRY_S = 60.0


@dataclass(frozen=True)
class DeliveryResult:
    delivered: bool
    message_id: str | None = None
    # True when retrying cannot help (4xx other than 429): the outbox marks the alert failed.
    permanent: bool = False
    error: str | None = None
    # Seconds the server asked us to wait before the next try (429), when the send gave up on it.
    retry_after: float | None = None
    # True when the last failure may have happened after Discord posted the message.
    ambiguous: bool = False
    attempts: int = 0


class AlertSender(Protocol):
    def send(self, alert: Alert, nonce: str | None = None) -> DeliveryResult: ...


class PostedLookupError(Exception):
    """Whether an alert was posted cannot be told now; ``retry_after`` when Discord asked to wait."""

    def __init__(self, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.retry_after = retry_after


class PostedChecker(Protocol):
    def find_posted(self, nonce: str, since: datetime | None = None) -> str | None:
        """The id of the message carrying ``nonce`` posted since ``since``, or None when there is
        none. Raises PostedLookupError when that cannot be told."""
        ...


def posted_checker(sender: AlertSender) -> PostedChecker | None:
    """``sender`` when it can look an alert up in its channel (a webhook sender with a bot token)."""
    return sender if getattr(sender, "can_check_posted", False) else None  # type: ignore[return-value]


def snowflake_time(snowflake: str | int) -> datetime:
    return datetime.fromtimestamp(((int(snowflake) >> 22) + DISCORD_EPOCH_MS) / 1000, timezone.utc)


def _carries_nonce(message: dict[str, Any], nonce: str) -> bool:
    embeds = message.get("embeds") if isinstance(message.get("embeds"), list) else []
    return any(isinstance(e, dict) and isinstance(e.get("footer"), dict)
               and nonce in str(e["footer"].get("text") or "") for e in embeds)


class ConsoleSender:
    """Prints each alert (the default when HUBWATCH_DISCORD_WEBHOOK is unset). With ``plots_dir``
    the evidence plot is saved there as a PNG file and the alert names the file."""

    def __init__(self, stream: IO[str] | None = None, plots_dir: str | os.PathLike[str] | None = None):
        self.stream = stream
        self.plots_dir = Path(plots_dir) if plots_dir else None

    def send(self, alert: Alert, nonce: str | None = None) -> DeliveryResult:
        out = self.stream or sys.stdout
        plot = self._save_plot(alert, nonce) if alert.plot_png and self.plots_dir else None
        out.write(render_console(alert, [f"alert id {nonce}"] if nonce else [], plot_file=plot) + "\n\n")
        out.flush()
        return DeliveryResult(delivered=True, attempts=1)

    def _save_plot(self, alert: Alert, nonce: str | None) -> str:
        name = f"{alert.suspect.repo_id}@{(alert.suspect.sha or '')[:7]}--{alert.source.repo_id}"
        # Repo ids come from the Hub: only safe characters reach the file name, and not too many.
        safe = PLOT_NAME_UNSAFE.sub("_", name)[:PLOT_NAME_MAX] + (f"-{nonce[:8]}" if nonce else "")
        path = self.plots_dir / f"{safe}.png"
        try:
            self.plots_dir.mkdir(parents=True, exist_ok=True)
            path.write_bytes(alert.plot_png)
        except OSError as exc:  # the alert still goes out; it says why its plot is missing
            return f"not saved ({path}: {exc.strerror or exc})"
        return str(path.resolve())


def _seconds(value: Any) -> float | None:
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        return None
    return seconds if math.isfinite(seconds) and seconds >= 0 else None


def _json_body(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _discord_error(response: httpx.Response) -> str:
    body = _json_body(response)
    message = body.get("message") if isinstance(body.get("message"), str) else response.reason_phrase
    code = f" (code {body['code']})" if isinstance(body.get("code"), int) else ""
    details = f": {json.dumps(body['errors'], separators=(',', ':'))}" if isinstance(body.get("errors"), dict) else ""
    return f"Discord answered {response.status_code}{code}: {message}{details}"[:ERROR_TEXT_MAX]


class DiscordWebhookSender:
    """Posts alerts to one Discord webhook. Not thread-safe: one sender per delivery loop."""

    def __init__(self, url: str, client: httpx.Client | None = None, *, timeout: float = DEFAULT_TIMEOUT_S,
                 max_attempts: int = DEFAULT_MAX_ATTEMPTS, backoff_base: float = DEFAULT_BACKOFF_BASE_S,
                 backoff_cap: float = DEFAULT_BACKOFF_CAP_S, max_inline_wait: float = DEFAULT_MAX_INLINE_WAIT_S,
                 sleep: Callable[[float], None] = time.sleep, clock: Callable[[], float] = time.monotonic,
                 bot_token: str | None = None, thread_id: int | None = None):
        """``thread_id``: the thread (forum post) to post into; a webhook on a forum channel needs one."""
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        self._url = url
        self._bot_token = bot_token or None
        parsed = httpx.URL(url)
        webhook = WEBHOOK_URL_RX.search(parsed.path)
        if self._bot_token and webhook is None:
            raise ValueError("a webhook URL ends in /webhooks/<id>/<token>")
        self.webhook_id, self._webhook_token = (webhook["id"], webhook["token"]) if webhook else (None, None)
        # The REST API lives on the webhook URL's host (discord.com/api/webhooks/... -> discord.com/api/v10).
        self._api = f"{parsed.scheme}://{parsed.netloc.decode('ascii')}/api/{API_VERSION}"
        self._post_url = parsed.copy_merge_params({"wait": "true", **({"thread_id": str(thread_id)} if thread_id else {})})
        self._own_client = client is None
        self._client = client or httpx.Client(follow_redirects=False, headers={"User-Agent": USER_AGENT},
                                              verify=verified_tls_context())
        self.timeout = timeout
        self.max_attempts = max_attempts
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self.max_inline_wait = max_inline_wait
        self._sleep = sleep
        self._clock = clock
        # Monotonic time before which the next request must not start (X-RateLimit-Remaining: 0).
        self._not_before = 0.0

    @property
    def redacted_url(self) -> str:
        return redact(self._url, [self._url.rstrip("/").rsplit("/", 1)[-1]])

    def close(self) -> None:
        if self._own_client:
            self._client.close()

    def __enter__(self) -> DiscordWebhookSender:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _redact(self, text: str) -> str:
        return redact(text, [self._url, self._url.rstrip("/").rsplit("/", 1)[-1], self._bot_token or ""])

    @property
    def can_check_posted(self) -> bool:
        return self._bot_token is not None

    def _backoff(self, attempt: int) -> float:
        return min(self.backoff_cap, self.backoff_base * 2 ** (attempt - 1))

    def _request_kwargs(self, alert: Alert, nonce: str | None) -> dict[str, Any]:
        png = alert.plot_png
        if png is not None and len(png) > FILE_MAX_BYTES:
            note = (f"evidence plot left out: {len(png) / 2**20:.1f} MiB is over Discord's "
                    f"{FILE_MAX_BYTES // 2**20} MiB upload limit")
            return {"json": render_discord_payload(alert, nonce=nonce, plot_attached=False, notes=[note])}
        payload = render_discord_payload(alert, nonce=nonce)
        if png is None:
            return {"json": payload}
        # Uploading Files: non-file params go in payload_json, the file in files[0]; the
        # attachments entry with id 0 names it for the embed's attachment:// reference.
        return {"data": {"payload_json": json.dumps(payload, ensure_ascii=False)},
                "files": {"files[0]": (PLOT_FILENAME, png, "image/png")}}

    def _pace(self) -> None:
        wait = self._not_before - self._clock()
        if wait > 0:
            self._sleep(wait)

    def _note_rate_limit(self, response: httpx.Response) -> None:
        """Honour X-RateLimit-Remaining: 0 by holding the next request until the bucket resets."""
        if response.headers.get("x-ratelimit-remaining") != "0":
            return
        reset_after = _seconds(response.headers.get("x-ratelimit-reset-after"))
        if reset_after is None:
            reset_at = _seconds(response.headers.get("x-ratelimit-reset"))
            reset_after = max(0.0, reset_at - time.time()) if reset_at is not None else None
        if reset_after is not None:
            self._not_before = max(self._not_before, self._clock() + min(reset_after, self.max_inline_wait))

    def send(self, alert: Alert, nonce: str | None = None) -> DeliveryResult:
        kwargs = self._request_kwargs(alert, nonce)
        error, ambiguous, retry_after = "no attempt made", False, None
        for attempt in range(1, self.max_attempts + 1):
            self._pace()
            try:
                response = self._client.post(self._post_url, timeout=self.timeout, headers={"User-Agent": USER_AGENT},
                                             **kwargs)
            except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
                # The request never reached Discord: safe to retry.
                error, ambiguous, retry_after = f"cannot connect to Discord: {exc}", False, None
            except (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError) as exc:
                # The body may have been received and posted before the connection failed.
                error, ambiguous, retry_after = f"no answer from Discord: {type(exc).__name__} {exc}", True, None
            else:
                self._note_rate_limit(response)
                if response.is_success:
                    message_id = _json_body(response).get("id")
                    return DeliveryResult(delivered=True, message_id=str(message_id) if message_id else None,
                                          attempts=attempt)
                if response.status_code == 429:
                    body = _json_body(response)
                    retry_after = _seconds(body.get("retry_after"))
                    if retry_after is None:
                        retry_after = _seconds(response.headers.get("retry-after")) or self._backoff(attempt)
                    scope = response.headers.get("x-ratelimit-scope") or ("global" if body.get("global") else "user")
                    error, ambiguous = f"rate limited by Discord ({scope}); retry after {retry_after:.2f} s", False
                    if retry_after > self.max_inline_wait or attempt == self.max_attempts:
                        break
                    log.info("alert delivery rate limited", extra={"webhook": self.redacted_url,
                                                                    "retry_after": retry_after})
                    self._sleep(retry_after)
                    continue
                if response.is_server_error:
                    error, ambiguous, retry_after = _discord_error(response), True, None
                elif not isinstance(_json_body(response).get("code"), int):
                    # Refused before Discord's API saw it (its edge: Cloudflare's 403 "error code:
                    # 1010", a proxy): not posted, and nothing about the alert is wrong. Later.
                    error, ambiguous, retry_after = _discord_error(response), False, EDGE_RETRY_S
                    break
                else:
                    error = self._redact(_discord_error(response))
                    log.warning("alert delivery refused", extra={"webhook": self.redacted_url, "error": error})
                    return DeliveryResult(delivered=False, permanent=True, error=error, attempts=attempt)
            error = self._redact(error)
            log.info("alert delivery attempt failed", extra={"webhook": self.redacted_url, "attempt": attempt,
                                                             "error": error})
            if ambiguous and self.can_check_posted:
                break  # maybe posted: the outbox checks before another post, after a retry delay
            if attempt < self.max_attempts:
                self._sleep(self._backoff(attempt))
        return DeliveryResult(delivered=False, error=self._redact(error), retry_after=retry_after,
                              ambiguous=ambiguous, attempts=attempt)

    # ---- was it posted? ---------------------------------------------------------------------

    def _get(self, url: str, params: dict[str, Any] | None = None, bot: bool = False) -> Any:
        """One GET; any answer but a 2xx with JSON raises PostedLookupError (429: with retry_after)."""
        headers = {"User-Agent": USER_AGENT}
        if bot:
            headers["Authorization"] = f"Bot {self._bot_token}"
        try:
            response = self._client.get(url, params=params, headers=headers, timeout=self.timeout)
        except httpx.HTTPError as exc:
            raise PostedLookupError(self._redact(f"no answer from Discord: {type(exc).__name__} {exc}")) from None
        if response.status_code == 429:
            retry_after = _seconds(_json_body(response).get("retry_after"))
            retry_after = retry_after or _seconds(response.headers.get("retry-after"))
            raise PostedLookupError("rate limited by Discord", retry_after)
        if not response.is_success:
            raise PostedLookupError(self._redact(_discord_error(response)))
        try:
            return response.json()
        except ValueError:
            raise PostedLookupError(f"Discord answered {response.status_code} without JSON") from None

    def find_posted(self, nonce: str, since: datetime | None = None) -> str | None:
        """The id of this webhook's message whose embed footer carries ``nonce``, searched newest
        first back to ``since`` (less CLOCK_SKEW), or None when there is none."""
        if not self._bot_token:
            raise PostedLookupError("no bot token: a webhook cannot read its channel")
        webhook = self._get(f"{self._api}/webhooks/{self.webhook_id}/{self._webhook_token}")
        channel_id = webhook.get("channel_id") if isinstance(webhook, dict) else None
        if not channel_id:
            raise PostedLookupError("the webhook has no channel")
        floor = since - CLOCK_SKEW if since else None
        before = None
        for _ in range(HISTORY_MAX_PAGES):
            page = self._get(f"{self._api}/channels/{channel_id}/messages",
                             {"limit": HISTORY_PAGE, **({"before": before} if before else {})}, bot=True)
            try:
                found = self._search_page(page, nonce)
                oldest = page[-1]["id"] if page else None
                reached_floor = floor is not None and oldest is not None and snowflake_time(oldest) < floor
            except (AttributeError, KeyError, TypeError, ValueError):
                raise PostedLookupError("Get Channel Messages answered something else than messages") from None
            if found is not None:
                return found
            if oldest is None:
                if before is None:
                    self._check_history_readable(channel_id, floor)
                return None
            if len(page) < HISTORY_PAGE or reached_floor:
                return None
            before = oldest
        raise PostedLookupError(f"more than {HISTORY_PAGE * HISTORY_MAX_PAGES} messages in the channel since "
                                "the alert was queued")

    def _search_page(self, page: list[dict[str, Any]], nonce: str) -> str | None:
        for message in page:
            if message.get("webhook_id") != self.webhook_id:
                continue
            if _carries_nonce(message, nonce):
                return str(message["id"])
            if not message.get("content") and not message.get("embeds"):
                raise PostedLookupError("the bot cannot read the webhook's messages: it needs the Message Content "
                                        "intent")
        return None

    def _check_history_readable(self, channel_id: str, floor: datetime | None) -> None:
        """An empty history is also what a bot without Read Message History gets (message.mdx):
        believe it only if the channel's last message is older than the alert."""
        channel = self._get(f"{self._api}/channels/{channel_id}", bot=True)
        last = channel.get("last_message_id") if isinstance(channel, dict) else None
        if last and (floor is None or not str(last).isdigit() or snowflake_time(last) >= floor):
            raise PostedLookupError("the channel has messages the bot cannot see: it needs Read Message History")


def make_sender(webhook_url: str | None, client: httpx.Client | None = None,
                bot_token: str | None = None, thread_id: int | None = None,
                plots_dir: str | None = None) -> AlertSender:
    """The Discord sender when a webhook URL is configured, else the console (saving plots in
    ``plots_dir``). With ``bot_token`` the sender can check whether an in-doubt alert was posted
    (exactly-once across crashes)."""
    if webhook_url:
        return DiscordWebhookSender(webhook_url, client, bot_token=bot_token, thread_id=thread_id)
    return ConsoleSender(plots_dir=plots_dir)
