"""A fake Discord REST API + gateway on loopback, enough for the real discord.py client to log in,
connect, sync slash commands and answer interactions; tests push interactions and read the answers.

Routes (discord-api-docs; ``/api/v10`` prefix):
- ``GET /users/@me``, ``GET /oauth2/applications/@me``, ``GET /gateway/bot`` (needs ``Authorization: Bot``;
  401 ``{"message": "401: Unauthorized", "code": 0}`` otherwise); ``/gateway`` is the websocket (gateway.py);
- ``PUT /applications/{app}/commands`` and ``.../guilds/{guild}/commands``: bulk overwrite, validated
  (names ``^[-_a-z0-9]{1,32}$``, descriptions 1-100, at most 25 options/choices, 100 commands),
  answered with ids; new names count against 200 creates a day per scope (30034 beyond);
- ``POST /interactions/{id}/{token}/callback``: one acknowledgement per interaction (40060 on a second),
  within 3 s of the dispatch (10062 "Unknown interaction" after), types 4/5 for commands and 8 for
  autocomplete (at most 25 choices, 1-100 character names and values); ``with_response`` answers
  the interaction callback object;
- ``POST /webhooks/{app}/{token}`` (follow-ups, JSON or multipart ``payload_json`` + ``files[n]``):
  10015 "Unknown Webhook" before the acknowledgement, 50027 after 15 minutes; the first follow-up
  after a type-5 defer replaces the "thinking" message and keeps the defer's visibility (flags 64
  on it are ignored; discord-api-docs issue #2860); ``wait=true`` returns the message, else 204;
- ``GET/PATCH/DELETE /webhooks/{app}/{token}/messages/@original`` and ``/messages/{id}``;
- every answer carries ``X-RateLimit-Limit/Remaining/Reset/Reset-After/Bucket``; per-bucket fixed
  windows; a 429 has ``retry_after``/``global``/``code`` in the body, ``Retry-After``,
  ``X-RateLimit-Scope`` and ``Via`` (discord.py retries a 429 only when ``Via`` is present).
Message bodies are validated with the webhook fake's rules (limits, attachment:// references).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import math
import re
import secrets
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Iterator

from aiohttp import web

from bot.fakes.discord.gateway import FakeGateway
from bot.fakes.discord.webhook import (DISCORD_EPOCH_MS, EDGE_REFUSAL_BODY, _InvalidBody, valid_user_agent,
                                      validate_payload)

API_PREFIX = "/api/v10"
BOT_TOKEN = "fake-bot-token." + "x" * 40
APPLICATION_ID = "1100000000000000001"
BOT_USER_ID = APPLICATION_ID  # a bot user shares its application's id
GUILD_ID = "1200000000000000001"
CHANNEL_ID = "1300000000000000001"
# Interaction deadlines (receiving-and-responding.mdx): acknowledge within 3 s; the token is
# good for follow-ups for 15 minutes.
ACK_DEADLINE_S = 3.0
TOKEN_LIFETIME_S = 15 * 60
EPHEMERAL = 1 << 6
LOADING = 1 << 7  # message flag of a deferred "thinking" message
# Interaction and callback types (receiving-and-responding.mdx).
APPLICATION_COMMAND, AUTOCOMPLETE = 2, 4
CHANNEL_MESSAGE, DEFERRED_CHANNEL_MESSAGE, AUTOCOMPLETE_RESULT = 4, 5, 8
ALLOWED_CALLBACKS = {APPLICATION_COMMAND: {CHANNEL_MESSAGE, DEFERRED_CHANNEL_MESSAGE},
                     AUTOCOMPLETE: {AUTOCOMPLETE_RESULT}}
# Application command limits (application-commands.mdx).
COMMAND_NAME_RX = re.compile(r"^[-_a-z0-9]{1,32}$")
COMMAND_DESCRIPTION_MAX = 100
OPTIONS_MAX = 25
CHOICES_MAX = 25
CHOICE_TEXT_MAX = 100
COMMANDS_MAX = 100
DAILY_CREATES_MAX = 200
# Option types: SUB_COMMAND 1, SUB_COMMAND_GROUP 2, STRING 3, INTEGER 4, BOOLEAN 5, NUMBER 10.
SUB_COMMAND, SUB_COMMAND_GROUP, STRING, INTEGER, BOOLEAN, NUMBER = 1, 2, 3, 4, 5, 10
# Real route limits are per route and undocumented; this is generous so tests do not wait on it.
DEFAULT_ROUTE_LIMIT = 50
DEFAULT_ROUTE_WINDOW_S = 1.0
ATTACHMENT_SIZE_LIMIT = 10 * 1024 * 1024
# Permission bits (permissions.mdx).
MANAGE_GUILD = 1 << 5
ADMINISTRATOR = 1 << 3
SEND_MESSAGES = 1 << 11
USE_APPLICATION_COMMANDS = 1 << 31
MEMBER_PERMISSIONS = SEND_MESSAGES | USE_APPLICATION_COMMANDS


def _iso(moment: float) -> str:
    return datetime.fromtimestamp(moment, timezone.utc).isoformat()


def _user(user_id: str, name: str, bot: bool = False) -> dict[str, Any]:
    return {"id": user_id, "username": name, "global_name": name, "discriminator": "0", "avatar": None,
            "bot": bot, "public_flags": 0, "flags": 0}


class _ApiError(Exception):
    def __init__(self, status: int, message: str, code: int = 0, **extra: Any):
        super().__init__(message)
        self.status = status
        self.body = {"message": message, "code": code, **extra}


@dataclass
class SentMessage:
    """A message the bot made through an interaction (callback, follow-up or edit)."""

    id: str
    payload: dict[str, Any]
    attachments: dict[str, tuple[str, bytes]]  # filename -> (content type, bytes)
    ephemeral: bool
    via: str  # "callback" | "defer" | "followup"
    deleted: bool = False
    loading: bool = False  # a deferred "thinking" message not yet replaced

    @property
    def content(self) -> str:
        return self.payload.get("content") or ""

    @property
    def embeds(self) -> list[dict[str, Any]]:
        return self.payload.get("embeds") or []


@dataclass
class InteractionRecord:
    id: str
    token: str
    payload: dict[str, Any]  # the INTERACTION_CREATE data as dispatched
    dispatched_at: float
    callback: dict[str, Any] | None = None  # the callback body the bot posted
    callback_at: float | None = None
    original: SentMessage | None = None
    followups: list[SentMessage] = field(default_factory=list)

    @property
    def callback_type(self) -> int | None:
        return None if self.callback is None else self.callback.get("type")

    @property
    def choices(self) -> list[dict[str, Any]]:
        return ((self.callback or {}).get("data") or {}).get("choices") or []

    def visible_messages(self) -> list[SentMessage]:
        """Messages still shown: the original (if any, not deleted) then the follow-ups."""
        return [m for m in ([self.original] if self.original else []) + self.followups if not m.deleted]


@dataclass
class RequestRecord:
    method: str
    path: str
    status: int
    at: float


class FakeDiscord:
    """``async with FakeDiscord() as fake:`` serves REST and gateway on 127.0.0.1 (random port)."""

    def __init__(self, token: str = BOT_TOKEN, *, route_limit: int = DEFAULT_ROUTE_LIMIT,
                 route_window_s: float = DEFAULT_ROUTE_WINDOW_S, ack_deadline_s: float = ACK_DEADLINE_S):
        self.token = token
        self.route_limit = route_limit
        self.route_window_s = route_window_s
        self.ack_deadline_s = ack_deadline_s
        self.bot_user = _user(BOT_USER_ID, "hubwatch", bot=True)
        self.guild = _guild(GUILD_ID, CHANNEL_ID)
        self.gateway = FakeGateway(token, self.bot_user, {"id": APPLICATION_ID, "flags": 0}, [self.guild])
        self.commands: dict[str | None, list[dict[str, Any]]] = {}  # guild id (None: global) -> commands
        self.command_creates: dict[str | None, int] = {}
        self.interactions: dict[str, InteractionRecord] = {}
        self.requests: list[RequestRecord] = []
        self._by_token: dict[str, InteractionRecord] = {}
        self._buckets: dict[str, tuple[float, int]] = {}
        self._scripted_429: list[tuple[str, float]] = []  # (path regex, retry_after)
        self._ids = itertools.count()
        self._changed = asyncio.Condition()
        self._runner: web.AppRunner | None = None
        self.port = 0

    # ---- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> FakeDiscord:
        app = web.Application(middlewares=[self._middleware], client_max_size=2 * ATTACHMENT_SIZE_LIMIT)
        app.router.add_get("/gateway", self.gateway.handle)
        p = API_PREFIX
        app.router.add_get(f"{p}/users/@me", self._users_me)
        app.router.add_get(f"{p}/oauth2/applications/@me", self._application)
        app.router.add_get(f"{p}/gateway/bot", self._gateway_bot)
        app.router.add_put(f"{p}/applications/{{app}}/commands", self._put_commands)
        app.router.add_put(f"{p}/applications/{{app}}/guilds/{{guild}}/commands", self._put_commands)
        app.router.add_post(f"{p}/interactions/{{id}}/{{token}}/callback", self._callback)
        app.router.add_post(f"{p}/webhooks/{{app}}/{{token}}", self._followup)
        for method in ("GET", "PATCH", "DELETE"):
            app.router.add_route(method, f"{p}/webhooks/{{app}}/{{token}}/messages/{{message}}", self._message)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.gateway.url = f"ws://127.0.0.1:{self.port}/gateway"
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeDiscord:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}{API_PREFIX}"

    @contextmanager
    def installed(self) -> Iterator[FakeDiscord]:
        """Point discord.py's REST calls (``discord.http.Route.BASE``) here; restored on exit."""
        import discord.http

        saved = discord.http.Route.BASE
        discord.http.Route.BASE = self.base_url
        try:
            yield self
        finally:
            discord.http.Route.BASE = saved

    # ---- plumbing ----------------------------------------------------------------------------

    def _snowflake(self) -> str:
        return str(((int(time.time() * 1000) - DISCORD_EPOCH_MS) << 22) | (next(self._ids) & 0x3FFFFF))

    @web.middleware
    async def _middleware(self, request: web.Request, handler) -> web.StreamResponse:
        if request.path == "/gateway":
            return await handler(request)
        now = time.monotonic()
        # Bot-authenticated requests without the DiscordBot User-Agent are refused at the edge.
        # Interaction callbacks and follow-ups (the interaction token is their auth) are not:
        # discord.py sends them with aiohttp's own User-Agent, and Discord serves them.
        if "Authorization" in request.headers and not valid_user_agent(request.headers.get("User-Agent")):
            self.requests.append(RequestRecord(request.method, request.path, 403, now))
            return web.Response(status=403, body=EDGE_REFUSAL_BODY, content_type="text/plain")
        bucket = self._bucket_key(request)
        start, used = self._buckets.get(bucket, (now, 0))
        if now - start >= self.route_window_s:
            start, used = now, 0
        scripted = next((s for s in self._scripted_429 if re.search(s[0], request.path)), None)
        if scripted is not None:
            self._scripted_429.remove(scripted)
            response = self._too_many(scripted[1], "user")
        elif used >= self.route_limit:
            response = self._too_many(self.route_window_s - (now - start), "user")
        else:
            self._buckets[bucket] = (start, used + 1)
            try:
                response = await handler(request)
            except _ApiError as exc:
                response = _json_response(exc.body, status=exc.status)
            except _InvalidBody as exc:
                response = _json_response(exc.body, status=exc.status)
            start, used = self._buckets[bucket]
        reset_after = max(0.0, self.route_window_s - (now - start))
        response.headers.update({
            "X-RateLimit-Limit": str(self.route_limit),
            "X-RateLimit-Remaining": str(max(0, self.route_limit - used)),
            "X-RateLimit-Reset": f"{time.time() + reset_after:.3f}",
            "X-RateLimit-Reset-After": f"{reset_after:.3f}",
            "X-RateLimit-Bucket": bucket,
        })
        self.requests.append(RequestRecord(request.method, request.path, response.status, now))
        await self._notify()
        return response

    def _bucket_key(self, request: web.Request) -> str:
        # Per-route limits are keyed on the route and its top-level resource (rate-limits.mdx).
        info = request.match_info
        route = request.match_info.route.resource.canonical if request.match_info.route.resource else request.path
        major = info.get("guild") or info.get("app") or info.get("id") or ""
        return f"{request.method}:{route}:{major}:{info.get('token', '')}".encode().hex()[:32]

    @staticmethod
    def _too_many(retry_after: float, scope: str) -> web.Response:
        retry_after = max(retry_after, 0.0)
        response = _json_response({"message": "You are being rate limited.", "retry_after": round(retry_after, 3),
                                      "global": False, "code": 0}, status=429)
        response.headers.update({"Retry-After": str(math.ceil(retry_after)), "X-RateLimit-Scope": scope,
                                 "Via": "1.1 google"})
        return response

    def _require_bot_auth(self, request: web.Request) -> None:
        if request.headers.get("Authorization") != f"Bot {self.token}":
            raise _ApiError(401, "401: Unauthorized")

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    # ---- bot endpoints -----------------------------------------------------------------------

    async def _users_me(self, request: web.Request) -> web.Response:
        self._require_bot_auth(request)
        return _json_response({**self.bot_user, "verified": True, "mfa_enabled": False, "locale": "en-US"})

    async def _application(self, request: web.Request) -> web.Response:
        self._require_bot_auth(request)
        return _json_response({
            "id": APPLICATION_ID, "name": "hubwatch", "description": "", "icon": None, "bot_public": False,
            "bot_require_code_grant": False, "owner": _user("1400000000000000001", "owner"), "verify_key": "0" * 64,
            "flags": 0, "team": None, "summary": "", "rpc_origins": [], "interactions_endpoint_url": None,
        })

    async def _gateway_bot(self, request: web.Request) -> web.Response:
        self._require_bot_auth(request)
        return _json_response({"url": self.gateway.url, "shards": 1, "session_start_limit": {
            "total": 1000, "remaining": 999, "reset_after": 14400000, "max_concurrency": 1}})

    async def _put_commands(self, request: web.Request) -> web.Response:
        self._require_bot_auth(request)
        if request.match_info["app"] != APPLICATION_ID:
            raise _ApiError(403, "Missing Access", 50001)
        guild = request.match_info.get("guild")
        if guild is not None and guild != GUILD_ID:
            raise _ApiError(403, "Missing Access", 50001)
        try:
            commands = await request.json()
        except ValueError:
            raise _ApiError(400, "The request body contains invalid JSON.", 50109) from None
        if not isinstance(commands, list) or len(commands) > COMMANDS_MAX:
            raise _ApiError(400, "Invalid Form Body", 50035)
        for i, command in enumerate(commands):
            _check_command(command, str(i))
        known = {c["name"]: c for c in self.commands.get(guild, [])}
        creates = sum(1 for c in commands if c["name"] not in known)
        if self.command_creates.get(guild, 0) + creates > DAILY_CREATES_MAX:
            raise _ApiError(400, "Max number of daily application command creates has been reached "
                            f"({DAILY_CREATES_MAX})", 30034)
        self.command_creates[guild] = self.command_creates.get(guild, 0) + creates
        stored = []
        for command in commands:
            old = known.get(command["name"])
            permissions = command.get("default_member_permissions")
            stored.append({"type": 1, "options": [], "nsfw": False, **command,
                           # Discord answers permission bitsets as strings whatever was sent.
                           "default_member_permissions": None if permissions is None else str(permissions),
                           "id": old["id"] if old else self._snowflake(), "application_id": APPLICATION_ID,
                           "version": self._snowflake(), **({"guild_id": guild} if guild else {})})
        self.commands[guild] = stored
        await self._notify()
        return _json_response(stored)

    # ---- interactions ------------------------------------------------------------------------

    async def _callback(self, request: web.Request) -> web.Response:
        record = self.interactions.get(request.match_info["id"])
        if record is None or record.token != request.match_info["token"]:
            raise _ApiError(404, "Unknown interaction", 10062)
        if record.callback is not None:
            raise _ApiError(400, "Interaction has already been acknowledged.", 40060)
        if time.monotonic() - record.dispatched_at > self.ack_deadline_s:
            raise _ApiError(404, "Unknown interaction", 10062)
        body, files = await _read_message_request(request)
        kind = body.get("type")
        if kind not in ALLOWED_CALLBACKS[record.payload["type"]]:
            raise _ApiError(400, "Interaction callback type is not valid for this interaction", 50035)
        data = body.get("data") or {}
        if kind == AUTOCOMPLETE_RESULT:
            _check_choices(data.get("choices"))
        elif kind == CHANNEL_MESSAGE:
            validate_payload(data, files)
            record.original = self._message_from(data, files, ephemeral=bool(int(data.get("flags") or 0) & EPHEMERAL),
                                                 via="callback")
        else:
            record.original = SentMessage(self._snowflake(), {"content": ""}, {},
                                          ephemeral=bool(int(data.get("flags") or 0) & EPHEMERAL), via="defer",
                                          loading=True)
        record.callback, record.callback_at = body, time.monotonic()
        await self._notify()
        if request.query.get("with_response") not in ("1", "true", "True"):
            return web.Response(status=204)
        answer: dict[str, Any] = {"interaction": {
            "id": record.id, "type": record.payload["type"],
            **({"response_message_id": record.original.id, "response_message_loading": record.original.loading,
                "response_message_ephemeral": record.original.ephemeral} if record.original else {})}}
        if record.original is not None:
            answer["resource"] = {"type": kind, "message": self._message_json(record, record.original)}
        return _json_response(answer)

    def _interaction_for(self, request: web.Request) -> InteractionRecord:
        record = self._by_token.get(request.match_info["token"])
        if record is None or request.match_info["app"] != APPLICATION_ID or record.callback is None:
            raise _ApiError(404, "Unknown Webhook", 10015)
        if time.monotonic() - record.dispatched_at > TOKEN_LIFETIME_S:
            raise _ApiError(401, "Invalid Webhook Token", 50027)
        return record

    async def _followup(self, request: web.Request) -> web.Response:
        record = self._interaction_for(request)
        body, files = await _read_message_request(request)
        validate_payload(body, files)
        original = record.original
        if original is not None and original.loading and not original.deleted:
            # Replaces the thinking message; its visibility was fixed by the defer.
            original.payload, original.attachments = body, _attachments(files)
            original.loading, original.via = False, "followup"
            message = original
        else:
            message = self._message_from(body, files, ephemeral=bool(int(body.get("flags") or 0) & EPHEMERAL),
                                         via="followup")
            record.followups.append(message)
        await self._notify()
        if request.query.get("wait") not in ("1", "true", "True"):
            return web.Response(status=204)
        return _json_response(self._message_json(record, message))

    async def _message(self, request: web.Request) -> web.Response:
        record = self._interaction_for(request)
        wanted = request.match_info["message"]
        candidates = ([record.original] if record.original else []) + record.followups
        if wanted == "@original":
            candidates = candidates[:1] if record.original else []
        message = next((m for m in candidates if not m.deleted and (wanted == "@original" or m.id == wanted)), None)
        if message is None:
            raise _ApiError(404, "Unknown Message", 10008)
        if request.method == "DELETE":
            message.deleted = True
            await self._notify()
            return web.Response(status=204)
        if request.method == "PATCH":
            body, files = await _read_message_request(request)
            merged = {**message.payload, **{k: v for k, v in body.items() if v is not None}}
            attachments = {**message.attachments, **_attachments(files)}
            validate_payload(merged, {name: (name, ctype, data) for name, (ctype, data) in attachments.items()})
            message.payload, message.attachments, message.loading = merged, attachments, False
            await self._notify()
        return _json_response(self._message_json(record, message))

    def _message_from(self, payload: dict[str, Any], files: dict[str, tuple[str, str, bytes]], *, ephemeral: bool,
                      via: str) -> SentMessage:
        return SentMessage(self._snowflake(), payload, _attachments(files), ephemeral=ephemeral, via=via)

    def _message_json(self, record: InteractionRecord, message: SentMessage) -> dict[str, Any]:
        flags = (EPHEMERAL if message.ephemeral else 0) | (LOADING if message.loading else 0)
        return {
            "id": message.id, "type": 20, "channel_id": CHANNEL_ID, "guild_id": record.payload.get("guild_id"),
            "author": self.bot_user, "content": message.content, "embeds": message.embeds, "tts": False,
            "attachments": [{"id": self._snowflake(), "filename": name, "size": len(data), "content_type": ctype,
                             "url": f"http://127.0.0.1:{self.port}/attachments/{message.id}/{name}",
                             "proxy_url": f"http://127.0.0.1:{self.port}/attachments/{message.id}/{name}"}
                            for name, (ctype, data) in message.attachments.items()],
            "timestamp": _iso(time.time()), "edited_timestamp": None, "mention_everyone": False, "mentions": [],
            "mention_roles": [], "pinned": False, "flags": flags, "webhook_id": APPLICATION_ID,
            "application_id": APPLICATION_ID, "components": [],
        }

    # ---- test API ----------------------------------------------------------------------------

    async def wait_until(self, predicate, timeout: float = 5.0) -> None:
        async with self._changed:
            await asyncio.wait_for(self._changed.wait_for(predicate), timeout)

    def respond_429(self, path_pattern: str, retry_after: float = 0.05) -> None:
        """The next request whose path matches ``path_pattern`` (a regex) answers 429."""
        self._scripted_429.append((path_pattern, retry_after))

    def command(self, name: str, guild_id: str | None = GUILD_ID) -> dict[str, Any]:
        """The registered command ``name`` visible in ``guild_id`` (guild commands first, then global)."""
        scopes = [guild_id, None] if guild_id else [None]
        for scope in scopes:
            for command in self.commands.get(scope, []):
                if command["name"] == name:
                    return command
        raise LookupError(f"/{name} is not registered with the fake Discord (sync the commands first)")

    async def invoke(self, name: str, options: dict[str, Any] | None = None, *, subcommand: str | None = None,
                     user_id: str = "1500000000000000001", permissions: int = MEMBER_PERMISSIONS,
                     in_guild: bool = True) -> InteractionRecord:
        """Dispatch an APPLICATION_COMMAND interaction for a registered command, as Discord would."""
        return await self._dispatch_interaction(APPLICATION_COMMAND, name, options or {}, subcommand, None,
                                                user_id, permissions, in_guild)

    async def autocomplete(self, name: str, options: dict[str, Any], focused: str, *, subcommand: str | None = None,
                           user_id: str = "1500000000000000001") -> InteractionRecord:
        """Dispatch an AUTOCOMPLETE interaction while the user types ``options[focused]``."""
        return await self._dispatch_interaction(AUTOCOMPLETE, name, options, subcommand, focused, user_id,
                                                MEMBER_PERMISSIONS, True)

    async def wait_for_callback(self, record: InteractionRecord, timeout: float = 5.0) -> dict[str, Any]:
        await self.wait_until(lambda: record.callback is not None, timeout)
        assert record.callback is not None
        return record.callback

    async def wait_for_answer(self, record: InteractionRecord, timeout: float = 5.0) -> SentMessage:
        """The first message with content: the callback's message, the replaced defer, or a follow-up."""
        def answered() -> SentMessage | None:
            return next((m for m in record.visible_messages() if not m.loading), None)

        await self.wait_until(lambda: answered() is not None, timeout)
        message = answered()
        assert message is not None
        return message

    async def _dispatch_interaction(self, kind: int, name: str, options: dict[str, Any], subcommand: str | None,
                                    focused: str | None, user_id: str, permissions: int,
                                    in_guild: bool) -> InteractionRecord:
        command = self.command(name, GUILD_ID if in_guild else None)
        definitions = command.get("options") or []
        if subcommand is not None:
            sub = next((o for o in definitions if o["name"] == subcommand and o["type"] == SUB_COMMAND), None)
            if sub is None:
                raise LookupError(f"/{name} has no subcommand {subcommand!r}")
            definitions = sub.get("options") or []
        by_name = {o["name"]: o for o in definitions}
        values = []
        for key, value in options.items():
            if key not in by_name:
                raise LookupError(f"/{name} has no option {key!r}")
            option = {"name": key, "type": by_name[key]["type"], "value": value}
            if key == focused:
                option["focused"] = True
            values.append(option)
        missing = [o["name"] for o in definitions if o.get("required") and o["name"] not in options]
        if missing and kind == APPLICATION_COMMAND:
            raise LookupError(f"/{name} needs {', '.join(missing)}")
        if subcommand is not None:
            values = [{"name": subcommand, "type": SUB_COMMAND, "options": values}]
        data: dict[str, Any] = {"id": command["id"], "name": name, "type": 1, "options": values}
        if command.get("guild_id"):
            data["guild_id"] = command["guild_id"]
        interaction_id, token = self._snowflake(), "aW50ZXJhY3Rpb24" + secrets.token_urlsafe(120)
        user = _user(user_id, f"user{user_id[-4:]}")
        payload: dict[str, Any] = {
            "id": interaction_id, "application_id": APPLICATION_ID, "type": kind, "data": data, "token": token,
            "version": 1, "locale": "en-US", "entitlements": [], "attachment_size_limit": ATTACHMENT_SIZE_LIMIT,
            "app_permissions": str(MEMBER_PERMISSIONS),
        }
        if in_guild:
            payload.update({
                "guild_id": GUILD_ID, "guild": {"id": GUILD_ID, "locale": "en-US", "features": []},
                "guild_locale": "en-US", "channel_id": CHANNEL_ID, "channel": self.guild["channels"][0],
                "context": 0, "authorizing_integration_owners": {"0": GUILD_ID},
                "member": {"user": user, "roles": [], "joined_at": _iso(time.time() - 86400), "deaf": False,
                           "mute": False, "flags": 0, "pending": False, "nick": None, "avatar": None,
                           "premium_since": None, "permissions": str(permissions)},
            })
        else:
            payload.update({"user": user, "context": 1, "authorizing_integration_owners": {"0": GUILD_ID},
                            "channel_id": "1300000000000000099",
                            "channel": {"id": "1300000000000000099", "type": 1, "recipients": [user]}})
        record = InteractionRecord(interaction_id, token, payload, time.monotonic())
        self.interactions[interaction_id] = record
        self._by_token[token] = record
        await self.gateway.dispatch("INTERACTION_CREATE", payload)
        return record


def _guild(guild_id: str, channel_id: str) -> dict[str, Any]:
    channel = {"id": channel_id, "type": 0, "guild_id": guild_id, "name": "general", "position": 0,
               "permission_overwrites": [], "nsfw": False, "parent_id": None, "topic": None,
               "last_message_id": None, "rate_limit_per_user": 0, "flags": 0}
    return {
        "id": guild_id, "name": "hubwatch test server", "icon": None, "owner_id": "1400000000000000001",
        "unavailable": False, "large": False, "member_count": 2, "roles": [
            {"id": guild_id, "name": "@everyone", "permissions": str(MEMBER_PERMISSIONS), "position": 0, "color": 0,
             "hoist": False, "managed": False, "mentionable": False, "flags": 0}],
        "emojis": [], "stickers": [], "features": [], "channels": [channel], "threads": [], "members": [],
        "voice_states": [], "presences": [], "stage_instances": [], "guild_scheduled_events": [],
        "soundboard_sounds": [], "preferred_locale": "en-US", "verification_level": 0,
        "default_message_notifications": 0, "explicit_content_filter": 0, "mfa_level": 0, "nsfw_level": 0,
        "premium_tier": 0, "system_channel_flags": 0, "afk_timeout": 300, "joined_at": _iso(time.time()),
    }


def _check_command(command: Any, at: str) -> None:
    if not isinstance(command, dict):
        raise _ApiError(400, "Invalid Form Body", 50035, errors={at: "Only dictionaries may be used"})
    if not COMMAND_NAME_RX.match(str(command.get("name", ""))):
        raise _ApiError(400, "Invalid Form Body", 50035, errors={at: {"name": "APPLICATION_COMMAND_INVALID_NAME"}})
    if command.get("type", 1) == 1 and not 1 <= len(str(command.get("description", ""))) <= COMMAND_DESCRIPTION_MAX:
        raise _ApiError(400, "Invalid Form Body", 50035, errors={at: {"description": "BASE_TYPE_BAD_LENGTH"}})
    options = command.get("options") or []
    if len(options) > OPTIONS_MAX:
        raise _ApiError(400, "Invalid Form Body", 50035, errors={at: {"options": "BASE_TYPE_MAX_LENGTH"}})
    for j, option in enumerate(options):
        _check_command({**option, "type": 1}, f"{at}.options.{j}")
        if len(option.get("choices") or []) > CHOICES_MAX:
            raise _ApiError(400, "Invalid Form Body", 50035,
                            errors={f"{at}.options.{j}": {"choices": "BASE_TYPE_MAX_LENGTH"}})


def _check_choices(choices: Any) -> None:
    if not isinstance(choices, list) or len(choices) > CHOICES_MAX:
        raise _ApiError(400, "Invalid Form Body", 50035, errors={"data": {"choices": "BASE_TYPE_MAX_LENGTH"}})
    for i, choice in enumerate(choices):
        name, value = (choice.get("name"), choice.get("value")) if isinstance(choice, dict) else (None, None)
        if not isinstance(name, str) or not 1 <= len(name) <= CHOICE_TEXT_MAX or \
                (isinstance(value, str) and not 1 <= len(value) <= CHOICE_TEXT_MAX) or value is None:
            raise _ApiError(400, "Invalid Form Body", 50035,
                            errors={"data": {"choices": {str(i): "BASE_TYPE_BAD_LENGTH"}}})


async def _read_message_request(request: web.Request) -> tuple[dict[str, Any], dict[str, tuple[str, str, bytes]]]:
    """The JSON body, or multipart ``payload_json`` + ``files[n]`` (field -> (filename, type, bytes))."""
    files: dict[str, tuple[str, str, bytes]] = {}
    if request.content_type.startswith("multipart/"):
        body: Any = None
        reader = await request.multipart()
        async for part in reader:
            name = part.name or ""
            data = await part.read()
            if name == "payload_json":
                body = _json(bytes(data))
            elif name.startswith("files["):
                files[name] = (part.filename or name, part.headers.get("Content-Type", "application/octet-stream"),
                               bytes(data))
    else:
        body = _json(await request.read())
    if not isinstance(body, dict):
        raise _ApiError(400, "The request body contains invalid JSON.", 50109)
    return body, files


def _json_response(body: Any, status: int = 200) -> web.Response:
    # Exactly "application/json", as Discord sends: discord.py's json_or_text compares the whole
    # header, so aiohttp's default "; charset=utf-8" suffix would make it treat JSON as text.
    return web.Response(body=json.dumps(body).encode(), status=status, headers={"Content-Type": "application/json"})


def _json(raw: bytes) -> Any:
    try:
        return json.loads(raw or b"null")
    except ValueError:
        raise _ApiError(400, "The request body contains invalid JSON.", 50109) from None


def _attachments(files: dict[str, tuple[str, str, bytes]]) -> dict[str, tuple[str, bytes]]:
    return {filename: (ctype, data) for filename, ctype, data in files.values()}
