"""hubwatch's own retry policy for Hub requests.

huggingface_hub retries only some calls (pages 2+, downloads; never ``model_info`` or the
safetensors header GET, research §1.8), so hubwatch retries everything itself: 429 honouring the
``RateLimit`` header's ``t`` (when ``r=0``) or ``Retry-After``, 5xx and timeouts with exponential
backoff, all within a capped number of attempts and a capped total wait.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

from huggingface_hub.utils import parse_ratelimit_headers

# huggingface_hub's http_backoff retries these statuses (utils/_http.py).
RETRY_STATUSES = frozenset((408, 429, 500, 502, 503, 504))


@dataclass(frozen=True)
class RetryPolicy:
    # huggingface_hub's http_backoff defaults: 5 retries, 1 s doubling to at most 8 s.
    max_attempts: int = 6
    backoff_base_s: float = 1.0
    backoff_cap_s: float = 8.0
    # A 5-minute rate-limit window may need up to 300 s; a watcher cycle should rather give up
    # and come back next cycle than block its worker that long.
    max_total_wait_s: float = 60.0

    def backoff(self, attempt: int) -> float:
        """Wait before retry number ``attempt`` (0-based) after a 5xx, a timeout or a broken connection."""
        return min(self.backoff_cap_s, self.backoff_base_s * (2 ** attempt))


def wait_for_429(headers: Mapping[str, str], fallback_s: float) -> float:
    """How long a 429 asks us to wait: the window reset when r=0 (``RateLimit: "api";r=0;t=55``, parsed
    by huggingface_hub), else Retry-After, else ``fallback_s``."""
    limit = parse_ratelimit_headers(headers)
    if limit is not None and limit.remaining == 0:
        return float(limit.reset_in_seconds)
    retry_after = (headers.get("Retry-After") or "").strip()
    if retry_after.isdigit():  # delay-seconds; an HTTP-date is ignored, as huggingface_hub does
        return float(retry_after)
    return fallback_s
