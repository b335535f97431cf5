"""Fault injection, rate-limit windows and traffic counters of the fake Hub.

All three are shared by the server's request threads and read or changed by tests while the
server runs, so every mutation happens under a lock.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

# Where an injected fault may strike: Hub API routes, /resolve/ routes (the "resolvers" bucket,
# resolve-cache included), the CDN, or any of them.
SCOPES = ("any", "api", "resolvers", "cdn")
# The Hub's 5-minute fixed window and anonymous quotas (hub-docs rate-limits.md, September 2025).
WINDOW_S = 300
ANONYMOUS_API_QUOTA = 500
ANONYMOUS_RESOLVER_QUOTA = 3000


@dataclass
class FaultConfig:
    """Switches tests flip at runtime (``hub.faults.errors_5xx = 3``); counts are used up one per response."""

    latency_ms: float = 0.0
    storm_429: int = 0           # next N matching responses are 429 with RateLimit r=0;t=reset_s
    storm_reset_s: int = 1       # the ``t`` those 429s announce
    retry_after_s: int | None = None  # also send Retry-After on injected 429s
    errors_5xx: int = 0          # next N matching responses are this status
    status_5xx: int = 503
    truncate: int = 0            # next N matching bodies stop halfway and the connection closes
    ignore_range: bool = False   # answer 200 with the whole body even when Range is sent
    drip_repo: str | None = None  # this repo's file bodies are sent one byte every drip_interval_s
    drip_interval_s: float = 1.0  # (a server that never lets a read time out, yet never finishes)
    scope: str = "any"
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.scope not in SCOPES:
            raise ValueError(f"fault scope must be one of {', '.join(SCOPES)}, not {self.scope!r}")

    def take(self, counter: str, bucket: str) -> bool:
        """Use up one injected fault of ``counter`` if it applies to ``bucket``."""
        with self._lock:
            if self.scope not in ("any", bucket) or getattr(self, counter) <= 0:
                return False
            setattr(self, counter, getattr(self, counter) - 1)
            return True


class RateWindow:
    """One fixed-window counter per (bucket, client): requests left and seconds to the reset."""

    def __init__(self, api_quota: int, resolver_quota: int, window_s: int = WINDOW_S, clock=time.monotonic):
        self.quotas = {"api": api_quota, "resolvers": resolver_quota}
        self.window_s = window_s
        self.clock = clock
        self._lock = threading.Lock()
        self._windows: dict[tuple[str, str], tuple[float, int]] = {}

    def hit(self, bucket: str, client: str) -> tuple[int, int, int]:
        """Count one request; return (remaining, seconds_to_reset, quota). remaining < 0 means over."""
        now = self.clock()
        quota = self.quotas[bucket]
        with self._lock:
            start, used = self._windows.get((bucket, client), (now, 0))
            if now - start >= self.window_s:
                start, used = now, 0
            used += 1
            self._windows[(bucket, client)] = (start, used)
        reset = max(1, int(self.window_s - (now - start) + 0.999))
        return quota - used, reset, quota


@dataclass
class TrafficStats:
    """What the fake Hub served. ``log`` keeps (method, bucket, path, status, body bytes) per response."""

    requests: int = 0
    bytes_sent: int = 0
    by_bucket: dict[str, int] = field(default_factory=dict)
    authorized_by_bucket: dict[str, int] = field(default_factory=dict)  # requests that carried a token
    log: list[tuple[str, str, str, int, int]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def record(self, method: str, bucket: str, path: str, status: int, body_bytes: int, authorized: bool) -> None:
        with self._lock:
            if authorized:
                self.authorized_by_bucket[bucket] = self.authorized_by_bucket.get(bucket, 0) + 1
            self.requests += 1
            self.bytes_sent += body_bytes
            self.by_bucket[bucket] = self.by_bucket.get(bucket, 0) + 1
            self.log.append((method, bucket, path, status, body_bytes))

    def reset(self) -> None:
        with self._lock:
            self.requests = 0
            self.bytes_sent = 0
            self.by_bucket.clear()
            self.authorized_by_bucket.clear()
            self.log.clear()
