"""HubClient: every request hubwatch makes to the Hub and its CDN.

Listing and model info are huggingface_hub's (``HfApi.list_models``, ``HfApi.model_info``, its
error mapping and ``ModelInfo`` parsing). huggingface_hub sends them through its one shared
httpx session, which hubwatch supplies (``set_client_factory``): a request made inside a
HubClient's HfApi call goes through that client (``_HubTransport``), so it follows hubwatch's own
rules like every other request: an allowlist for redirect targets (the endpoint's host, the Hub's
CDN domains, or for a loopback endpoint such as the fake Hub another loopback host), hubwatch's
retry policy (``retry.py``), the process's rate budget (``ratelimit.py``), one deadline per
request, bounded bodies, hubwatch's User-Agent and its token rule. The batched ranged reads that
huggingface_hub lacks (fingerprints read byte ranges pinned to a commit, many at once; HfApi only
downloads whole files) are hubwatch's own: they insist on 206 and never download a body the
server sends instead. Both share one connection pool and bounded concurrency.

The endpoint and token are given by the caller (the composition root, ``bot/app.py``, from the
settings); the client reads no environment. The token is sent as a Bearer header to the
endpoint's origin only (scheme, host and port) and never appears in logs, errors or repr.
"""

from __future__ import annotations

import functools
import importlib.metadata
import logging
import re
import threading
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Sequence, TypeVar
from urllib.parse import quote, urljoin, urlsplit

from huggingface_hub import HfApi, ModelInfo
from huggingface_hub import errors as hf_errors
from huggingface_hub.utils import build_hf_headers, get_session, hf_raise_for_status, httpx, set_client_factory
# The request hook of huggingface_hub's default session, kept for requests that are not hubwatch's.
from huggingface_hub.utils._http import hf_request_event_hook

from fingerprints.errors import BudgetExceededError, InvalidModelError

from bot.hub.errors import (EntryNotFoundError, GatedRepoError, HubError, HubUnavailableError, InvalidTokenError,
                            RangeNotSupportedError, RateLimitedError, RepoNotFoundError, RevisionNotFoundError)
from bot.hub.models import COMMIT_RX, REPO_ID_RX, HubModel
from bot.hub.remote_reader import HubRepoReader, ModelDeadline
from bot.hub.ratelimit import HubRateBudget, bucket_of
from bot.hub.retry import RETRY_STATUSES, RetryPolicy, wait_for_429
from bot.hub.urls import HUB_REDIRECT_HOST_SUFFIXES, hub_url_allowed
from bot.tls import verified_tls_context

log = logging.getLogger("hubwatch.hub")
T = TypeVar("T")

HUBWATCH_VERSION = importlib.metadata.version("hubwatch")
# Listing sort keys: huggingface_hub's snake_case names map to the Hub's camelCase ones (hf_api.py).
SORT_ALIASES = {"created_at": "createdAt", "last_modified": "lastModified", "trending_score": "trendingScore"}
SORT_KEYS = ("createdAt", "lastModified", "trendingScore", "downloads", "likes")
# The Hub honours at most 1000 results per listing page (its default page size).
MAX_PAGE_SIZE = 1000
CONTENT_RANGE_RX = re.compile(r"^bytes (\d+)-(\d+)/(\d+|\*)$")
REDIRECT_STATUSES = (301, 302, 303, 307, 308)
# A resolve URL takes one hop (307 to resolve-cache or 302 to the CDN); renamed repos add one.
MAX_REDIRECTS = 5
# Model info of a repo with ~100k files is a few MB; listings of 1000 entries with expand about 2 MB.
MAX_JSON_BYTES = 64 * 1024 * 1024
# Most bytes read per model unless the caller says otherwise (settings.limits.model_bytes' default).
DEFAULT_MODEL_BYTE_BUDGET = 64 * 1024 * 1024
# Server messages are hostile input: they are cut to one short line before they reach an error.
MAX_SERVER_MESSAGE = 200
# Redirect and error bodies up to this size are read before closing, so the connection is reused.
DRAIN_LIMIT = 64 * 1024
# What is read of an error answer's body for its message; the Hub's are under 1 KB.
ERROR_BODY_BYTES = 16 * 1024
# Where a file's resolve URL led (CDN or resolve-cache, both pinned to the commit) is reused for
# later ranges of the file, saving one resolver-bucket request and one round trip per range. A
# fingerprint takes seconds; ten minutes keeps a cached signed CDN URL far from its expiry, and a
# stale one (401/403/404/410) falls back to the resolve URL anyway.
LOCATION_TTL_S = 600.0
STALE_LOCATION_STATUSES = (401, 403, 404, 410)
# A long-running watcher visits many files; expired locations are pruned past this many.
MAX_CACHED_LOCATIONS = 4096
# huggingface_hub's HF_HUB_DOWNLOAD_TIMEOUT / HF_HUB_ETAG_TIMEOUT default.
DEFAULT_TIMEOUT_S = 10.0
# One logical request, rate-limit waits included: a spent 5-minute window resets within 300 s,
# plus huggingface_hub's 1 s margin and a read.
DEFAULT_REQUEST_DEADLINE_S = 330.0
# Connections kept open (settings.hub.max_connections' default) and requests in flight at once
# (huggingface.js reads safetensors shard headers 20 at a time, research §1.5). CDN requests do
# not count against the Hub's rate limits.
DEFAULT_MAX_CONNECTIONS = 32
DEFAULT_CONCURRENCY = 32
# httpcore's pool (1.0.9) walks every connection it holds, with a poll() of each idle socket and an
# O(connections²) count of idle ones, on every request and every response close, under one lock
# (encode/httpcore#1035, open): measured against the fake Hub, 0.35 ms of CPU per pass at 32
# connections, ~30 % of a ranged read's client CPU. The connections are split over pools of at
# most this many; each thread sends through one of them.
POOL_SHARD_CONNECTIONS = 8


@dataclass(frozen=True)
class _Deadline:
    """The end of one logical request: its own (``hub.request_deadline_s``) or its model's, whichever comes first."""

    at: float
    model_seconds: float | None  # the model's limit, when its deadline comes first
    setting: str

    @classmethod
    def starting_now(cls, request_s: float, model: ModelDeadline | None) -> _Deadline:
        own = time.monotonic() + request_s
        if model is not None and model.at < own:
            return cls(model.at, model.seconds, "limits.model_seconds")
        return cls(own, None, "hub.request_deadline_s")

    def left(self) -> float:
        return self.at - time.monotonic()

    def over_budget(self, what: str, doing: str) -> BudgetExceededError:
        return BudgetExceededError(f"{what}: {doing} at the model's deadline ({self.model_seconds:g} s, "
                                   "limits.model_seconds); cut there")


class _Retryable(Exception):
    """A transient failure inside one attempt (a short body, a broken stream)."""


class _StaleLocation(Exception):
    """A cached CDN location no longer serves the file."""


@dataclass(frozen=True)
class ListingPage:
    url: str  # where this page is read again: a listing resumes here
    models: list[HubModel]
    next_url: str | None  # the next page (the Link header); None after the last page


@dataclass
class _ApiCall:
    """One HfApi call a HubClient is making: what it is (for errors and retry lines) and, for a
    listing, each page read so far: its URL and its ``Link: rel="next"`` (None after the last page)."""

    client: HubClient
    what: str
    pages: list[tuple[str, str | None]] = field(default_factory=list)


# The HfApi call in progress in this thread (a context variable: HfApi runs in the caller's thread).
_API_CALL: ContextVar[_ApiCall | None] = ContextVar("hubwatch_api_call", default=None)


class _HubTransport(httpx.BaseTransport):
    """The transport of huggingface_hub's shared session. A request made inside a HubClient's HfApi
    call is sent by that client (``HubClient._send_api``); any other (huggingface_hub used directly
    elsewhere in the process) goes out as huggingface_hub's default session would send it."""

    def __init__(self) -> None:
        self._plain = httpx.HTTPTransport(verify=verified_tls_context())

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        call = _API_CALL.get()
        if call is None:
            hf_request_event_hook(request)  # what huggingface_hub's own session does first (offline mode, request id)
            return self._plain.handle_request(request)
        return call.client._send_api(request, call)

    def close(self) -> None:
        self._plain.close()


class _ShardedTransport(httpx.BaseTransport):
    """``max_connections`` kept open over several httpcore pools of at most POOL_SHARD_CONNECTIONS.
    Each request goes to the pool with the most free connections, and holds its place there until
    its body is closed: a pool full of slow answers (a stalled or dripping repo) never makes a
    request wait while another pool has a free connection, as one pool of them all would not."""

    def __init__(self, max_connections: int, verify: Any) -> None:
        count = -(-max_connections // POOL_SHARD_CONNECTIONS)
        self._sizes = [max_connections // count + (i < max_connections % count) for i in range(count)]
        self._pools = [httpx.HTTPTransport(verify=verify, limits=httpx.Limits(max_connections=n,
                                                                             max_keepalive_connections=n))
                       for n in self._sizes]
        self._in_flight = [0] * count
        self._lock = threading.Lock()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        with self._lock:
            shard = max(range(len(self._pools)), key=lambda i: self._sizes[i] - self._in_flight[i])
            self._in_flight[shard] += 1
        released = threading.Event()

        def release() -> None:
            if not released.is_set():
                released.set()
                with self._lock:
                    self._in_flight[shard] -= 1

        try:
            response = self._pools[shard].handle_request(request)
        except BaseException:
            release()
            raise
        response.stream = _ReleasingStream(response.stream, release)
        return response

    def close(self) -> None:
        for pool in self._pools:
            pool.close()


class _ReleasingStream(httpx.SyncByteStream):
    """A response body that gives its pool's place back when it is closed."""

    def __init__(self, stream: Any, release: Callable[[], None]) -> None:
        self._stream = stream
        self._release = release

    def __iter__(self) -> Iterator[bytes]:
        yield from self._stream

    def close(self) -> None:
        try:
            self._stream.close()
        finally:
            self._release()


def _hub_session() -> httpx.Client:
    """huggingface_hub's session as its ``default_client_factory`` builds it (redirects followed, no
    timeout of its own), on ``_HubTransport``. HubClient follows redirects itself, within its
    allowlist, so none of its requests' redirects reaches this session's redirect handling."""
    return httpx.Client(transport=_HubTransport(), follow_redirects=True, timeout=None)


_session_lock = threading.Lock()
_session_installed = False


def _install_hub_session() -> None:
    """Make huggingface_hub build its shared session by ``_hub_session`` (once per process: the
    session is process-wide, and each HubClient finds its own calls by ``_API_CALL``)."""
    global _session_installed
    with _session_lock:
        if not _session_installed:
            set_client_factory(_hub_session)
            _session_installed = True


# httpx parses a URL string in ~70 µs of Python; a file's ranged reads all go to its cached location.
_parsed_url = functools.lru_cache(maxsize=MAX_CACHED_LOCATIONS)(httpx.URL)


def _drain(resp: httpx.Response) -> None:
    """Close a response, reading it first when it is small so its connection goes back to the pool."""
    length = resp.headers.get("Content-Length", "")
    try:
        if length.isdigit() and int(length) <= DRAIN_LIMIT:
            resp.read()
    except httpx.HTTPError:
        pass  # the connection is dropped instead of reused
    finally:
        resp.close()


def _decoded_headers(resp: httpx.Response) -> list[tuple[str, str]]:
    """The headers of ``resp`` for a copy holding its decoded body: no encoding or length of the wire's."""
    return [(k, v) for k, v in resp.headers.multi_items()
            if k.lower() not in ("content-encoding", "content-length", "transfer-encoding")]


def _one_line(text: str) -> str:
    clean = "".join(ch if ch.isprintable() else " " for ch in text).strip()
    return clean[:MAX_SERVER_MESSAGE] + ("…" if len(clean) > MAX_SERVER_MESSAGE else "")


def _origin(url: str) -> tuple[str, str, int | None]:
    """scheme, host and port (the scheme's default when absent): the token goes to this origin only,
    not to another port or scheme of the same host."""
    parts = urlsplit(url)
    return parts.scheme, (parts.hostname or "").lower(), parts.port or {"http": 80, "https": 443}.get(parts.scheme)


class HubClient:
    def __init__(self, endpoint: str, token: str | None = None, *,
                 timeout_s: float = DEFAULT_TIMEOUT_S, max_connections: int = DEFAULT_MAX_CONNECTIONS,
                 max_concurrency: int = DEFAULT_CONCURRENCY, retry: RetryPolicy | None = None,
                 model_byte_budget: int = DEFAULT_MODEL_BYTE_BUDGET,
                 redirect_hosts: tuple[str, ...] = HUB_REDIRECT_HOST_SUFFIXES,
                 sleep: Callable[[float], None] = time.sleep, request_deadline_s: float = DEFAULT_REQUEST_DEADLINE_S,
                 rate_budget: HubRateBudget | None = None):
        self.endpoint = endpoint.rstrip("/")
        parts = urlsplit(self.endpoint)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise HubError(f"Hub endpoint {self.endpoint!r} is not an http(s) URL")
        self._host = parts.hostname.lower()
        self._origin = _origin(self.endpoint)
        self._token = token or None
        self.request_deadline_s = request_deadline_s
        self.timeout_s = timeout_s
        self.rate_budget = rate_budget or HubRateBudget()
        self.retry = retry or RetryPolicy()
        self.model_byte_budget = model_byte_budget
        self.redirect_hosts = tuple(h.lower() for h in redirect_hosts)
        self._sleep = sleep
        self._slots = threading.BoundedSemaphore(max_concurrency)
        self._pool = ThreadPoolExecutor(max_workers=max_concurrency, thread_name_prefix="hub")
        # huggingface_hub's headers without a token: its user agent, naming hubwatch first
        # ("hubwatch/0.1.0; hf_hub/1.33.0; python/..."), on every request.
        self._hf_headers = build_hf_headers(token=False, library_name="hubwatch", library_version=HUBWATCH_VERSION)
        tls = verified_tls_context()
        self._http = httpx.Client(
            timeout=httpx.Timeout(timeout_s),
            # limits and verify also configure the transports of proxies taken from the environment
            limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections),
            transport=_ShardedTransport(max_connections, tls),
            follow_redirects=False,  # followed by hand: allowlist, Authorization only to the endpoint
            verify=tls,
            headers={"User-Agent": self._hf_headers["user-agent"]},
        )
        # huggingface_hub's API calls; it sends no token (token=False): _send_following adds it, to
        # the endpoint's origin only. Its User-Agent is the one above.
        self._api = HfApi(endpoint=self.endpoint, token=False, library_name="hubwatch",
                          library_version=HUBWATCH_VERSION)
        _install_hub_session()
        self._counter_lock = threading.Lock()
        self.requests = 0
        self._rate_limited_answers = 0
        self._locations: dict[tuple[str, str, str], tuple[str, float]] = {}

    def __repr__(self) -> str:
        return f"HubClient(endpoint={self.endpoint!r}, token={'***' if self._token else None})"

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._http.close()

    def __enter__(self) -> HubClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def has_token(self) -> bool:
        return self._token is not None

    def take_rate_limited_count(self) -> int:
        """429 answers since the last call: each is counted once, by whichever cycle asks first."""
        with self._counter_lock:
            count, self._rate_limited_answers = self._rate_limited_answers, 0
        return count

    # ---- plumbing ------------------------------------------------------------------------------

    def _redact(self, text: str) -> str:
        return text.replace(self._token, "***") if self._token else text

    def _allowed(self, url: str) -> bool:
        return hub_url_allowed(url, self.endpoint, self.redirect_hosts)

    def _send_following(self, method: str, url: str, headers: dict[str, str], stop_off_host: bool,
                        deadline: _Deadline) -> httpx.Response:
        """Send, following redirects to allowed hosts; the returned response's body is not read yet."""
        for _ in range(MAX_REDIRECTS + 1):
            if not self._allowed(url):
                raise HubError(f"refusing to follow the Hub to {urlsplit(url).hostname or url!r} (not an allowed host)")
            hdrs = dict(headers)
            on_hub = _origin(url) == self._origin
            if on_hub:  # the Hub's rate limits; its CDN has none
                self.rate_budget.acquire(bucket_of(url), deadline.at, urlsplit(url).path, deadline.setting)
            left = deadline.left()
            if left <= 0:
                raise httpx.TimeoutException(f"no time left before the deadline ({deadline.setting})")
            if self._token and on_hub:
                hdrs["Authorization"] = f"Bearer {self._token}"
            log.debug("%s %s", method, url)
            with self._counter_lock:
                self.requests += 1
            # Each read waits at most timeout_s and never past the deadline: a server that stops
            # sending is given up on at the deadline, one that drips bytes at the next chunk (_chunks).
            request = self._http.build_request(method, _parsed_url(url), headers=hdrs,
                                               timeout=min(self.timeout_s, left))
            resp = self._http.send(request, stream=True)
            if on_hub:
                self.rate_budget.observe(bucket_of(url), resp.headers)
                if resp.status_code == 429:
                    self.rate_budget.exhausted(bucket_of(url), wait_for_429(resp.headers, self.retry.backoff(0)))
            location = resp.headers.get("Location")
            if resp.status_code not in REDIRECT_STATUSES or not location:
                return resp
            target = urljoin(url, location)
            if stop_off_host and (urlsplit(target).hostname or "").lower() != self._host:
                return resp  # the 302 to the CDN carries the file's metadata itself
            _drain(resp)
            url = target
        raise HubError(f"more than {MAX_REDIRECTS} redirects from the Hub")

    def _call(self, method: str, url: str, what: str, consume: Callable[[httpx.Response, _Deadline], T], *,
              headers: dict[str, str] | None = None, stop_off_host: bool = False,
              model_deadline: ModelDeadline | None = None) -> T:
        """One logical request: retries, redirects, status mapping; ``consume`` reads the response
        (within the deadline it is given)."""
        waited, attempt = 0.0, 0
        host = urlsplit(url).hostname
        # One deadline for the whole logical request: rate-limit waits, retries, redirects and every
        # body read (a per-read timeout alone let a 38-byte answer at 1 byte per 2 s take 74 s); the
        # model's when that comes first (a request for a model may not outlast the model's limit).
        deadline = _Deadline.starting_now(self.request_deadline_s, model_deadline)
        while True:
            rate_limited = answered = False
            try:
                with self._slots:
                    resp = self._send_following(method, url, headers or {}, stop_off_host, deadline)
                    try:
                        if resp.status_code not in RETRY_STATUSES:
                            return consume(resp, deadline)
                        rate_limited = resp.status_code == 429
                        answered = True
                        if rate_limited:
                            with self._counter_lock:
                                self._rate_limited_answers += 1
                        reason = f"HTTP {resp.status_code}"
                        headers_seen = resp.headers
                        _drain(resp)
                    finally:
                        resp.close()
            except _Retryable as exc:
                reason, headers_seen, answered = str(exc), None, True
            except (httpx.TimeoutException, httpx.TransportError) as exc:
                reason = self._redact(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)
                headers_seen = None
            # A 429's wait is the rate budget's (the next attempt waits there for the reset, t + 1 s,
            # within the request's deadline); 5xx and broken connections back off here.
            wait = 0.0 if rate_limited else self.retry.backoff(attempt)
            attempt += 1
            if (attempt >= self.retry.max_attempts or waited + wait > self.retry.max_total_wait_s
                    or time.monotonic() + wait > deadline.at):
                if deadline.model_seconds is not None and time.monotonic() + wait > deadline.at:
                    raise deadline.over_budget(what, f"still no usable answer ({reason})") from None
                if rate_limited:
                    raise RateLimitedError(
                        f"{what}: rate limited by the Hub ({reason}; it asks to wait "
                        f"{wait_for_429(headers_seen, 0):.0f} s, after {attempt} attempts)")
                raise HubUnavailableError(f"{what}: the Hub at {host} did not answer usably after {attempt} attempts "
                                          f"({waited:.1f} s of waiting); last error: {reason}")
            # A Hub that answers with 429/5xx is worth a line per retry; one that cannot be reached at
            # all is reported once, by the error above, not by a line per attempt.
            log.log(logging.INFO if answered else logging.DEBUG, "retrying",
                    extra={"what": what, "host": host, "reason": reason, "wait_s": wait, "attempt": attempt})
            if wait:
                self._sleep(wait)
            waited += wait

    def _raise_for_status(self, resp: httpx.Response, deadline: _Deadline, what: str, repo: str | None = None) -> None:
        """Map an error answer of a ranged read to a hubwatch error (``_hub_error``). Only the first
        ERROR_BODY_BYTES of the body are read: an error body is hostile input like any other."""
        if resp.status_code < 400:
            return
        bounded = self._bounded(resp, deadline, what, ERROR_BODY_BYTES)
        try:
            hf_raise_for_status(bounded)
        except hf_errors.HfHubHTTPError as exc:
            raise self._hub_error(exc, what, repo) from None
        except Exception:  # noqa: BLE001 - a malformed error body (a JSON list, deep nesting) breaks the parser
            raise HubError(f"{what}: HTTP {resp.status_code} from the Hub", status=resp.status_code,
                           request_id=resp.headers.get("X-Request-Id"), repo=repo) from None

    def _hub_error(self, exc: hf_errors.HfHubHTTPError, what: str, repo: str | None) -> HubError:
        """huggingface_hub's error for an answer (hf_raise_for_status: X-Error-Code, X-Error-Message,
        the JSON body) as a hubwatch error, so hubwatch tells a bad token from a missing repo exactly
        as huggingface_hub does."""
        status = exc.response.status_code
        context = {"status": status, "request_id": exc.response.headers.get("X-Request-Id"), "repo": repo}
        detail = self._redact(_one_line(exc.server_message or "")) or f"HTTP {status}"
        if isinstance(exc, hf_errors.GatedRepoError):  # a RepositoryNotFoundError subclass: first
            hint = "set HF_TOKEN to a token that has been granted access" if not self._token else \
                "this token has not been granted access"
            return GatedRepoError(f"{what}: gated repo, {hint} (HTTP {status})", **context)
        if isinstance(exc, hf_errors.RepositoryNotFoundError):
            return RepoNotFoundError(f"{what}: repository not found on {self.endpoint} (or private; HTTP {status})",
                                     **context)
        if isinstance(exc, hf_errors.RevisionNotFoundError):
            return RevisionNotFoundError(f"{what}: revision not found ({detail})", **context)
        if isinstance(exc, hf_errors.EntryNotFoundError):
            return EntryNotFoundError(f"{what}: no such file in the repo", **context)
        if status == 401 and self._token:
            return InvalidTokenError(f"{what}: the Hub rejected the token (HF_TOKEN): {detail} (HTTP 401); "
                                     "check that it is valid and not expired", **context)
        return HubError(f"{what}: HTTP {status} from the Hub: {detail}", **context)

    def _bounded(self, resp: httpx.Response, deadline: _Deadline, what: str, limit: int) -> httpx.Response:
        """``resp`` with at most ``limit`` bytes of its body read (an error answer: its message)."""
        body = bytearray()
        try:
            for chunk in self._chunks(resp, deadline, what):
                body += chunk
                if len(body) >= limit:
                    break
        except httpx.HTTPError:
            pass  # the status and headers still say what went wrong
        return httpx.Response(resp.status_code, headers=_decoded_headers(resp), content=bytes(body[:limit]),
                              request=resp.request)

    def _chunks(self, resp: httpx.Response, deadline: _Deadline, what: str) -> Iterator[bytes]:
        """The body's chunks until the deadline. A body still arriving at the request's own deadline
        is a retryable failure; at the model's, the model is over its budget."""
        for chunk in resp.iter_bytes():
            if time.monotonic() > deadline.at:
                if deadline.model_seconds is not None:
                    raise deadline.over_budget(what, "the answer was still arriving")
                raise _Retryable(f"{what}: the answer was still arriving at the request's deadline "
                                 f"({self.request_deadline_s:g} s, hub.request_deadline_s)")
            yield chunk

    def _send_api(self, request: httpx.Request, call: _ApiCall) -> httpx.Response:
        """Send a request of huggingface_hub's (``_HubTransport``) as every request of this client is
        sent (``_call``), and answer it with the body read whole: at most MAX_JSON_BYTES, or the
        first ERROR_BODY_BYTES of an error answer, within the request's deadline. What fails here
        fails as a hubwatch error and a retryable status never comes back, so huggingface_hub's own
        retries (``http_backoff`` for pages after the first, on httpx errors and 429/5xx) never
        retry on top of this client's."""
        url = str(request.url)
        if _origin(url) != self._origin:  # the endpoint, or a listing's Link to its next page
            raise HubError(f"{call.what}: the Hub sent hubwatch to another host ({urlsplit(url).hostname})")
        # huggingface_hub's headers (its User-Agent naming hubwatch, its request id); the token is
        # added by _send_following, to the endpoint's origin only.
        headers = {k: v for k, v in request.headers.items() if k.lower() not in ("host", "authorization", "cookie")}

        def consume(resp: httpx.Response, deadline: _Deadline) -> httpx.Response:
            if resp.status_code >= 400:
                return self._bounded(resp, deadline, call.what, ERROR_BODY_BYTES)
            body = bytearray()
            for chunk in self._chunks(resp, deadline, call.what):
                body += chunk
                if len(body) > MAX_JSON_BYTES:
                    raise HubError(f"{call.what}: response over {MAX_JSON_BYTES:,} bytes")
            if request.url.path.rstrip("/") == "/api/models":
                call.pages.append((url, resp.links.get("next", {}).get("url")))
            return httpx.Response(resp.status_code, headers=_decoded_headers(resp), content=bytes(body),
                                  request=request)

        return self._call(request.method, url, call.what, consume, headers=headers)

    @contextmanager
    def _through(self, call: _ApiCall, repo: str | None = None) -> Iterator[None]:
        """Send huggingface_hub's requests in the block through this client; its errors as hubwatch's."""
        token = _API_CALL.set(call)
        try:
            yield
        except hf_errors.HfHubHTTPError as exc:
            raise self._hub_error(exc, call.what, repo) from None
        except (ValueError, KeyError, TypeError, AttributeError, RecursionError) as exc:
            # Malformed or deeply nested JSON, or JSON that ModelInfo cannot take (a hostile or broken answer).
            raise HubError(f"{call.what}: the Hub sent malformed model JSON ({type(exc).__name__})",
                           repo=repo) from None
        finally:
            _API_CALL.reset(token)

    def map_concurrent(self, fn: Callable[[Any], T], items: Sequence[Any]) -> list[T]:
        """``[fn(x) for x in items]`` on the client's thread pool; the first error propagates."""
        if len(items) <= 1:
            return [fn(x) for x in items]
        futures = [self._pool.submit(fn, x) for x in items]
        try:
            return [f.result() for f in futures]
        finally:
            for f in futures:
                f.cancel()

    # ---- API -----------------------------------------------------------------------------------

    @staticmethod
    def check_repo_id(repo_id: str) -> str:
        if not REPO_ID_RX.match(repo_id or ""):
            raise RepoNotFoundError(f"{repo_id!r} is not a Hub repo id (org/name)")
        return repo_id

    @staticmethod
    def _sort_key(sort: str) -> str:
        """The Hub's name of a listing sort (huggingface_hub's snake_case names accepted)."""
        key = SORT_ALIASES.get(sort, sort)
        if key not in SORT_KEYS:
            raise HubError(f"unknown sort {sort!r}; use one of {', '.join(SORT_KEYS)}")
        return key

    def _models(self, infos: Iterable[ModelInfo], call: _ApiCall) -> Iterator[HubModel]:
        """HfApi's lazy ModelInfo iterator as HubModels, each page it reads read through this client."""
        models = iter(infos)
        while True:
            with self._through(call):
                info = next(models, None)
                if info is None:
                    return
                model = HubModel.from_model_info(info)
            yield model

    def list_models(self, sort: str = "createdAt", limit: int = 100, expand: Sequence[str] | None = None, *,
                    author: str | None = None, search: str | None = None,
                    filter: Sequence[str] | None = None) -> Iterator[HubModel]:
        """Models newest/most-trending first, up to ``limit`` (HfApi.list_models: it follows the
        ``Link`` header from page to page)."""
        key = self._sort_key(sort)
        call = _ApiCall(self, f"listing models by {key}" + (f" of {author}" if author else ""))  # names the feed in errors
        yield from self._models(self._api.list_models(sort=key, limit=max(1, limit), expand=list(expand or ()) or None,
                                                      author=author, search=search, filter=list(filter or ()) or None),
                                call)

    def list_models_page(self, url: str | None, *, sort: str = "createdAt", page_size: int = MAX_PAGE_SIZE,
                         expand: Sequence[str] | None = None) -> ListingPage:
        """One page of a listing: the first (``url`` None; ``HfApi.list_models`` with ``page_size``
        as its limit) or the one at ``url``, a page URL an earlier page gave. A caller that keeps a
        page's URL or its next page's resumes there.

        HfApi.list_models cannot start at a saved cursor, so a page at ``url`` is read as its
        pagination reads every page after the first: a GET of the ``Link`` URL on huggingface_hub's
        session, ``hf_raise_for_status``, ``ModelInfo`` per entry."""
        key = self._sort_key(sort)
        call = _ApiCall(self, f"listing models by {key}")
        if url is None:
            page: list[HubModel] = []
            for model in self._models(self._api.list_models(sort=key, limit=min(max(1, page_size), MAX_PAGE_SIZE),
                                                            expand=list(expand or ()) or None), call):
                if len(call.pages) > 1:
                    # This model opened a second page: the Hub paged at fewer models than asked (it
                    # honours up to MAX_PAGE_SIZE; small pages are a fake Hub's test setting).
                    break
                page.append(model)
            first_url, next_url = call.pages[0]
            return ListingPage(first_url, page, next_url)
        if urlsplit(url).hostname != self._host:
            raise HubError(f"{call.what}: page URL is on another host ({urlsplit(url).hostname})")
        with self._through(call):
            answer = get_session().get(url, headers=self._hf_headers)
            hf_raise_for_status(answer)
            entries = answer.json()
            if not isinstance(entries, list):
                raise HubError(f"{call.what}: the Hub sent something other than a list")
            page = [HubModel.from_model_info(ModelInfo(**e)) for e in entries]
        return ListingPage(url, page, call.pages[-1][1])

    def model_info(self, repo_id: str, revision: str | None = None) -> HubModel:
        """The model at ``revision`` (default: main) with its files' sizes and LFS sha256
        (HfApi.model_info with files_metadata)."""
        self.check_repo_id(repo_id)
        with self._through(_ApiCall(self, repo_id + (f"@{revision}" if revision else "")), repo_id):
            return HubModel.from_model_info(self._api.model_info(repo_id, revision=revision, files_metadata=True))

    def resolve_url(self, repo_id: str, revision: str, path: str) -> str:
        return f"{self.endpoint}/{repo_id}/resolve/{quote(revision, safe='')}/{quote(path)}"

    def file_size(self, repo_id: str, commit: str, path: str, model_deadline: ModelDeadline | None = None) -> int:
        """The file's size from a HEAD on its resolve URL (X-Linked-Size on the CDN redirect)."""
        what = f"{repo_id}@{commit[:12]}/{path}"

        def consume(resp: httpx.Response, deadline: _Deadline) -> int:
            self._raise_for_status(resp, deadline, what, repo_id)
            size = resp.headers.get("X-Linked-Size") or (
                None if resp.status_code in REDIRECT_STATUSES else resp.headers.get("Content-Length"))
            if not size or not size.isdigit():
                raise HubError(f"{what}: the Hub did not say how big the file is")
            return int(size)

        return self._call("HEAD", self.resolve_url(repo_id, commit, path), what, consume,
                          headers={"Accept-Encoding": "identity"}, stop_off_host=True, model_deadline=model_deadline)

    def read_range(self, repo_id: str, commit: str, path: str, offset: int, length: int,
                   model_deadline: ModelDeadline | None = None) -> bytes:
        """Bytes [offset, offset+length) of a file at a commit. Requires 206; never reads a 200 body.
        ``model_deadline``: the request is cut there too (``ModelDeadline``)."""
        if length <= 0:
            return b""
        if not COMMIT_RX.match(commit):
            raise HubError(f"{repo_id}: ranged reads must be pinned to a commit sha, not {commit!r}")
        end = offset + length - 1
        what = f"{repo_id}@{commit[:12]}/{path} bytes {offset}-{end}"

        def consume(resp: httpx.Response, deadline: _Deadline) -> bytes:
            if resp.status_code == 200:
                raise RangeNotSupportedError(
                    f"{what}: the server ignored the Range header and started sending the whole file; "
                    "stopped without reading it")
            if resp.status_code == 416:
                raise InvalidModelError(f"{what}: range lies outside the file ({resp.headers.get('Content-Range', '')})")
            self._raise_for_status(resp, deadline, what, repo_id)
            if resp.status_code != 206:
                raise HubError(f"{what}: expected 206 Partial Content, got HTTP {resp.status_code}")
            m = CONTENT_RANGE_RX.match(resp.headers.get("Content-Range", ""))
            if not m or int(m.group(1)) != offset or int(m.group(2)) != end:
                raise RangeNotSupportedError(
                    f"{what}: the server answered a different range ({resp.headers.get('Content-Range')!r})")
            body = bytearray()
            for chunk in self._chunks(resp, deadline, what):
                body += chunk
                if len(body) > length:
                    raise RangeNotSupportedError(f"{what}: the server sent more bytes than asked for")
            if len(body) != length:
                raise _Retryable(f"body truncated at {len(body)} of {length} bytes")
            return bytes(body)

        key = (repo_id, commit, path)
        headers = {"Range": f"bytes={offset}-{end}", "Accept-Encoding": "identity"}
        with self._counter_lock:
            cached = self._locations.get(key)
        if cached and cached[1] > time.monotonic():
            def consume_cached(resp: httpx.Response, deadline: _Deadline) -> bytes:
                if resp.status_code in STALE_LOCATION_STATUSES:
                    raise _StaleLocation()
                return consume(resp, deadline)

            try:
                return self._call("GET", cached[0], what, consume_cached, headers=headers,
                                  model_deadline=model_deadline)
            except _StaleLocation:
                with self._counter_lock:
                    self._locations.pop(key, None)

        def consume_and_remember(resp: httpx.Response, deadline: _Deadline) -> bytes:
            data = consume(resp, deadline)
            now = time.monotonic()
            with self._counter_lock:
                if len(self._locations) >= MAX_CACHED_LOCATIONS:
                    self._locations = {k: v for k, v in self._locations.items() if v[1] > now}
                self._locations[key] = (str(resp.request.url), now + LOCATION_TTL_S)
            return data

        return self._call("GET", self.resolve_url(repo_id, commit, path), what, consume_and_remember, headers=headers,
                          model_deadline=model_deadline)

    def reader(self, repo_id: str, sha: str | None = None, *, byte_budget: int | None = None):
        """A RangeReader over the repo at ``sha`` (a commit or branch; default: main)."""
        return HubRepoReader(self, repo_id, revision=sha, byte_budget=byte_budget)
