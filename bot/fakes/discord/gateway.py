"""A fake Discord gateway (websocket) on loopback, for running the real discord.py client in tests.

What it reproduces (discord-api-docs developers/events/gateway.mdx, gateway-events.mdx, opcodes):
- on connect: HELLO (op 10) with ``heartbeat_interval``;
- IDENTIFY (op 2) checked against the bot token (close 4004 "Authentication failed" otherwise);
  anything before IDENTIFY/RESUME closes with 4003; an unknown opcode with 4001; bad JSON with 4002;
- READY (op 0) with ``v``, ``user``, ``guilds`` (unavailable), ``session_id``,
  ``resume_gateway_url``, ``shard`` when asked, ``application`` {id, flags}; then GUILD_CREATE for
  each guild when the GUILDS intent (bit 0) was identified with;
- HEARTBEAT (op 1) answered with HEARTBEAT_ACK (op 11); a HEARTBEAT from the server is not sent;
- RESUME (op 6): replays dispatches after ``seq`` then RESUMED, or INVALID_SESSION (op 9, false);
- transport compression ``compress=zlib-stream`` (one zlib stream per connection, each message
  ending in a Z_SYNC_FLUSH); other values get plain text frames, ``encoding`` must be json.
Dispatches (op 0) carry an increasing ``s`` per session. Heartbeat deadlines are not enforced.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import zlib
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web

OP_DISPATCH, OP_HEARTBEAT, OP_IDENTIFY, OP_RESUME = 0, 1, 2, 6
OP_INVALID_SESSION, OP_HELLO, OP_HEARTBEAT_ACK = 9, 10, 11
# Gateway close codes (opcodes-and-status-codes.mdx "Gateway Close Event Codes").
CLOSE_UNKNOWN_OPCODE, CLOSE_DECODE_ERROR, CLOSE_NOT_AUTHENTICATED, CLOSE_AUTH_FAILED = 4001, 4002, 4003, 4004
INTENT_GUILDS = 1 << 0
GATEWAY_VERSION = 10
# Discord sends ~41250 ms; tests want to see heartbeats flow within a fraction of a second.
DEFAULT_HEARTBEAT_INTERVAL_MS = 250


@dataclass
class GatewaySession:
    session_id: str
    identify: dict[str, Any]
    seq: int = 0
    sent: list[dict[str, Any]] = field(default_factory=list)  # dispatches, kept for RESUME


@dataclass
class _Connection:
    ws: web.WebSocketResponse
    compressor: Any | None  # zlib compress object for zlib-stream, None for text frames
    session: GatewaySession | None = None

    async def send(self, message: dict[str, Any]) -> None:
        text = json.dumps(message, separators=(",", ":"))
        if self.compressor is None:
            await self.ws.send_str(text)
        else:
            data = self.compressor.compress(text.encode()) + self.compressor.flush(zlib.Z_SYNC_FLUSH)
            await self.ws.send_bytes(data)


class FakeGateway:
    """One bot's gateway: ``handle`` is the aiohttp websocket route; ``dispatch`` pushes an event."""

    def __init__(self, token: str, user: dict[str, Any], application: dict[str, Any], guilds: list[dict[str, Any]],
                 heartbeat_interval_ms: int = DEFAULT_HEARTBEAT_INTERVAL_MS):
        self.token = token
        self.user = user
        self.application = application
        self.guilds = guilds
        self.heartbeat_interval_ms = heartbeat_interval_ms
        self.url = ""  # ws://host:port/gateway, set by the server once it listens
        self.identifies: list[dict[str, Any]] = []
        self.heartbeats: list[Any] = []  # the ``d`` (last seq) of each heartbeat received
        self.close_codes: list[int] = []  # codes this fake closed connections with
        self.sessions: dict[str, GatewaySession] = {}
        self._live: _Connection | None = None
        self._changed = asyncio.Condition()

    async def handle(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(autoclose=False)
        await ws.prepare(request)
        if request.query.get("encoding", "json") != "json":
            await self._close(ws, CLOSE_DECODE_ERROR, "only encoding=json is supported")
            return ws
        compressor = zlib.compressobj() if request.query.get("compress") == "zlib-stream" else None
        conn = _Connection(ws, compressor)
        await conn.send({"op": OP_HELLO, "d": {"heartbeat_interval": self.heartbeat_interval_ms}, "s": None, "t": None})
        try:
            async for msg in ws:
                if msg.type is not WSMsgType.TEXT and msg.type is not WSMsgType.BINARY:
                    break
                try:
                    payload = json.loads(msg.data)
                    op = payload["op"]
                except (ValueError, KeyError, TypeError):
                    await self._close(ws, CLOSE_DECODE_ERROR, "Decode error")
                    break
                if not await self._on_message(conn, op, payload.get("d")):
                    break
        finally:
            if self._live is conn:
                self._live = None
            await self._notify()
        return ws

    async def _on_message(self, conn: _Connection, op: int, data: Any) -> bool:
        """Handle one client message; False when the connection was closed."""
        if op == OP_HEARTBEAT:
            self.heartbeats.append(data)
            await conn.send({"op": OP_HEARTBEAT_ACK, "d": None, "s": None, "t": None})
            await self._notify()
            return True
        if op == OP_IDENTIFY:
            return await self._identify(conn, data if isinstance(data, dict) else {})
        if op == OP_RESUME:
            return await self._resume(conn, data if isinstance(data, dict) else {})
        if conn.session is None:
            await self._close(conn.ws, CLOSE_NOT_AUTHENTICATED, "Not authenticated")
            return False
        await self._close(conn.ws, CLOSE_UNKNOWN_OPCODE, "Unknown opcode")
        return False

    async def _identify(self, conn: _Connection, data: dict[str, Any]) -> bool:
        self.identifies.append(data)
        if data.get("token") != self.token:
            await self._close(conn.ws, CLOSE_AUTH_FAILED, "Authentication failed")
            return False
        session = GatewaySession(session_id=secrets.token_hex(16), identify=data)
        self.sessions[session.session_id] = session
        conn.session = session
        self._live = conn
        ready = {
            "v": GATEWAY_VERSION,
            "user": self.user,
            "guilds": [{"id": g["id"], "unavailable": True} for g in self.guilds],
            "session_id": session.session_id,
            "resume_gateway_url": self.url,
            "application": {"id": self.application["id"], "flags": self.application.get("flags", 0)},
        }
        if "shard" in data:
            ready["shard"] = data["shard"]
        await self._send_dispatch(conn, "READY", ready)
        if int(data.get("intents") or 0) & INTENT_GUILDS:
            for guild in self.guilds:
                await self._send_dispatch(conn, "GUILD_CREATE", guild)
        await self._notify()
        return True

    async def _resume(self, conn: _Connection, data: dict[str, Any]) -> bool:
        session = self.sessions.get(str(data.get("session_id")))
        if data.get("token") != self.token or session is None:
            await conn.send({"op": OP_INVALID_SESSION, "d": False, "s": None, "t": None})
            return True
        conn.session = session
        self._live = conn
        after = int(data.get("seq") or 0)
        for message in session.sent:
            if message["s"] > after:
                await conn.send(message)
        await self._send_dispatch(conn, "RESUMED", {})
        await self._notify()
        return True

    async def _send_dispatch(self, conn: _Connection, event: str, data: dict[str, Any]) -> None:
        assert conn.session is not None
        conn.session.seq += 1
        message = {"op": OP_DISPATCH, "t": event, "s": conn.session.seq, "d": data}
        conn.session.sent.append(message)
        await conn.send(message)

    async def _close(self, ws: web.WebSocketResponse, code: int, reason: str) -> None:
        self.close_codes.append(code)
        await ws.close(code=code, message=reason.encode())

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    # ---- test API ---------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self._live is not None and not self._live.ws.closed

    async def dispatch(self, event: str, data: dict[str, Any]) -> None:
        """Send ``event`` to the identified connection (raises if the bot is not connected)."""
        if not self.connected:
            raise RuntimeError(f"no identified gateway connection to send {event} to")
        assert self._live is not None
        await self._send_dispatch(self._live, event, data)

    async def wait_until(self, predicate, timeout: float) -> None:
        """Wait until ``predicate()`` holds (checked whenever the gateway's state changes)."""
        async with self._changed:
            await asyncio.wait_for(self._changed.wait_for(predicate), timeout)

    async def disconnect(self, code: int = 4000) -> None:
        """Close the live connection (4000 "Unknown error" lets the client resume)."""
        if self._live is not None:
            await self._close(self._live.ws, code, "closed by the test")
