"""Per-user sliding-window rate limit for the commands that fingerprint or compare models."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable

# One /nearest or /compare can fetch headers and sampled ranges of two models (seconds of CPU and
# Hub requests); 3 a minute per user keeps one member from monopolising the worker threads
# while leaving room for a normal back-and-forth.
EXPENSIVE_CALLS_PER_WINDOW = 3
EXPENSIVE_WINDOW_S = 60.0


class UserRateLimiter:
    """At most ``limit`` calls per ``window_s`` seconds per user, shared by every command using it."""

    def __init__(self, limit: int = EXPENSIVE_CALLS_PER_WINDOW, window_s: float = EXPENSIVE_WINDOW_S,
                 clock: Callable[[], float] = time.monotonic):
        if limit < 1 or window_s <= 0:
            raise ValueError(f"rate limit needs limit >= 1 and window > 0, got {limit} per {window_s}s")
        self.limit = limit
        self.window_s = window_s
        self._clock = clock
        self._calls: dict[int, deque[float]] = {}

    def acquire(self, user_id: int) -> float:
        """Record a call and return 0.0, or return the seconds to wait (recording nothing)."""
        now = self._clock()
        calls = self._calls.setdefault(user_id, deque())
        while calls and now - calls[0] >= self.window_s:
            calls.popleft()
        if len(calls) >= self.limit:
            return self.window_s - (now - calls[0])
        calls.append(now)
        self._forget_idle(now)
        return 0.0

    def _forget_idle(self, now: float) -> None:
        # Users who stopped calling would otherwise keep an entry forever.
        idle = [uid for uid, calls in self._calls.items() if not calls or now - calls[-1] >= self.window_s]
        for uid in idle:
            del self._calls[uid]
