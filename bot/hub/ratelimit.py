"""One rate-limit budget for the Hub per process, driven by the Hub's ``RateLimit`` headers.

The Hub limits each IP (or token) per 5-minute fixed window and bucket (api, resolvers, pages) and
says where a client stands on every answer: ``RateLimit: "api";r=499;t=295`` (research §1.8;
parsed by huggingface_hub's ``parse_ratelimit_headers``). Every request of a ``HubClient`` asks
its budget first, and the composition root builds one client per process, shared by the watcher,
the command and the Discord bot. While a bucket has requests left they go at once (counted down
locally between answers, so 32 requests in flight do not all spend the last one). When it is spent
(``r=0`` seen, a 429, or the local count at 0) requests wait for the window's reset plus one second
(huggingface_hub's ``t + 1``) instead of failing, in arrival order within the bucket: a repo with
hundreds of reads queues behind the requests that came before it and cannot take the next window
from them, and a spent bucket (resolvers, say) never holds up another's requests (the listing). Every
wait is logged and added to ``waited_s`` (the watcher reports it as
``hubwatch_hub_rate_limit_wait_seconds_total``). A wait that would pass the request's deadline
raises ``RateLimitedError`` at once.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Callable, Mapping
from urllib.parse import urlsplit

from huggingface_hub.utils import parse_ratelimit_headers

from bot.hub.errors import RateLimitedError

log = logging.getLogger("hubwatch.hub")

# huggingface_hub's http_backoff sleeps t + 1 s on a RateLimit reset (PRs #3577, #4460): the
# window's clock and ours are a second apart at worst.
RESET_MARGIN_S = 1.0


def bucket_of(url: str) -> str:
    """The Hub's rate-limit bucket of a request to the endpoint (hub-docs rate-limits.md)."""
    path = urlsplit(url).path
    if "/resolve/" in path or path.startswith("/api/resolve-cache/"):
        return "resolvers"
    return "api" if path.startswith("/api/") else "pages"


@dataclass
class _Bucket:
    remaining: int
    reset_at: float  # clock time at which the window resets (plus the margin)


class HubRateBudget:
    def __init__(self, clock: Callable[[], float] = time.monotonic,
                 wait: Callable[[threading.Condition, float], object] = lambda cond, timeout: cond.wait(timeout)):
        """``clock`` and ``wait`` (a Condition and a timeout) are replaceable for tests."""
        self._clock = clock
        self._wait = wait
        self._cond = threading.Condition()
        self._buckets: dict[str, _Bucket] = {}
        self._queues: dict[str, deque[object]] = {}  # per bucket: arrival order within a bucket
        self.waited_s = 0.0
        self.waits = 0

    def observe(self, bucket: str, headers: Mapping[str, str]) -> None:
        """Take what an answer's ``RateLimit`` header says about ``bucket``."""
        info = parse_ratelimit_headers(headers)
        if info is None:
            return
        with self._cond:
            self._buckets[info.resource_type or bucket] = _Bucket(
                info.remaining, self._clock() + info.reset_in_seconds + RESET_MARGIN_S)
            self._cond.notify_all()

    def exhausted(self, bucket: str, wait_s: float) -> None:
        """A 429 asked to wait ``wait_s`` (its reset or Retry-After): nothing goes before then."""
        with self._cond:
            reset_at = self._clock() + wait_s + RESET_MARGIN_S
            known = self._buckets.get(bucket)
            self._buckets[bucket] = _Bucket(0, max(reset_at, known.reset_at if known else 0.0))
            self._cond.notify_all()

    def take_waited_s(self) -> float:
        with self._cond:
            waited, self.waited_s = self.waited_s, 0.0
            return waited

    def acquire(self, bucket: str, deadline: float, what: str, deadline_setting: str = "hub.request_deadline_s") -> None:
        """Spend one request of ``bucket``, waiting (in arrival order) for its reset when it is spent;
        ``deadline_setting`` names where ``deadline`` came from, for the error."""
        ticket = object()
        with self._cond:
            queue = self._queues.setdefault(bucket, deque())
            queue.append(ticket)
            started = self._clock()
            try:
                while True:
                    now = self._clock()
                    state = self._buckets.get(bucket)
                    if state is not None and state.remaining <= 0 and now >= state.reset_at:
                        state.remaining = 1  # a new window: this request learns its size
                    if queue[0] is ticket and (state is None or state.remaining > 0):
                        if state is not None:
                            state.remaining -= 1
                        break
                    until = state.reset_at if queue[0] is ticket and state is not None else now + 1.0
                    if until > deadline:
                        raise RateLimitedError(
                            f"{what}: the Hub's {bucket} rate limit resets in {max(0.0, until - now):.0f} s, "
                            f"past this request's deadline ({deadline_setting})")
                    if queue[0] is ticket and now == started:
                        log.info("waiting for the Hub's rate limit",
                                 extra={"bucket": bucket, "wait_s": round(until - now, 1), "what": what})
                    self._wait(self._cond, until - now)
            finally:
                queue.remove(ticket)
                self._cond.notify_all()
            waited = self._clock() - started
            if waited > 0.001:
                self.waited_s += waited
                self.waits += 1
