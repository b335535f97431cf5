"""The fake Hub (and optionally the fake Discord webhook) in a child process.

Benchmarks measure this process: its wall time and its memory. Servers running in it would hold
the GIL while answering and keep every recorded request and message in its heap, billing the
client for the server's work. The real Hub and Discord run on other machines; so do these.

The parent drives the child over a pipe: fault switches, traffic counters, what was posted.
"""

from __future__ import annotations

import multiprocessing
import time
from typing import Any

from bot.fakes.discord.webhook import FakeDiscordWebhook
from bot.fakes.hub import FakeHub


def _settled(hub: FakeHub) -> None:
    """Wait until the server threads have recorded their last response."""
    last = None
    while (now := (hub.stats.bytes_sent, hub.stats.requests)) != last:
        last = now
        time.sleep(0.05)


def _traffic(hub: FakeHub) -> dict[str, Any]:
    _settled(hub)
    statuses: dict[int, int] = {}
    for _method, _bucket, _path, status, _size in hub.stats.log:
        statuses[status] = statuses.get(status, 0) + 1
    return {"requests": hub.stats.requests, "bytes": hub.stats.bytes_sent, "statuses": statuses}


def _serve(root: str, with_webhook: bool, conn) -> None:
    with FakeHub(root) as hub:
        webhook = FakeDiscordWebhook().start() if with_webhook else None
        conn.send((hub.endpoint, webhook.url if webhook else None))
        try:
            while True:
                command, args = conn.recv()
                if command == "stop":
                    return
                if command == "hub_faults":
                    for name, value in args.items():
                        setattr(hub.faults, name, value)
                    answer = None
                elif command == "traffic":  # counters since the last call, then reset
                    answer = _traffic(hub)
                    hub.stats.reset()
                elif command == "webhook_fail":  # (kind, count): "429" or an HTTP status
                    kind, count = args
                    webhook.respond_429(count) if kind == "429" else webhook.fail_next(count, int(kind))
                    answer = None
                elif command == "posted":  # (message id, embed footer text) of every accepted message
                    answer = [(m.id, (m.embeds[0].get("footer") or {}).get("text", "") if m.embeds else "")
                              for m in webhook.messages]
                else:
                    answer = ValueError(f"unknown command {command!r}")
                conn.send(answer)
        finally:
            if webhook is not None:
                webhook.stop()


class FakeWorld:
    """Handle on the child: ``endpoint`` (HF_ENDPOINT), ``webhook_url``, and the commands above."""

    def __init__(self, hub_root: str, with_webhook: bool = False):
        self._conn, child = multiprocessing.Pipe()
        self._process = multiprocessing.get_context("spawn").Process(
            target=_serve, args=(hub_root, with_webhook, child), daemon=True)
        self._process.start()
        self.endpoint, self.webhook_url = self._conn.recv()

    def _ask(self, command: str, args: Any = None) -> Any:
        self._conn.send((command, args))
        answer = self._conn.recv()
        if isinstance(answer, Exception):
            raise answer
        return answer

    def hub_faults(self, **switches: Any) -> None:
        """Set FaultConfig fields of the fake Hub (latency_ms, storm_429, errors_5xx, truncate...)."""
        self._ask("hub_faults", switches)

    def traffic(self) -> dict[str, Any]:
        """Requests, bytes and responses by status since the last call."""
        return self._ask("traffic")

    def webhook_fail(self, kind: str, count: int = 1) -> None:
        self._ask("webhook_fail", (kind, count))

    def posted(self) -> list[tuple[str, str]]:
        return self._ask("posted")

    def close(self) -> None:
        if self._process.is_alive():
            self._conn.send(("stop", None))
            self._process.join(timeout=10)

    def __enter__(self) -> FakeWorld:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
