"""A fake Hugging Face Hub on loopback, faithful where huggingface_hub and hubwatch depend on it.

Routes, headers and error codes follow huggingface_hub 1.33 (hf_api.py, file_download.py,
utils/_http.py) and the research notes (hub-and-discord.md §1.7, §1.8, §1.10):

- ``GET /api/models``: search, author, filter, sort (always descending), limit, expand, full,
  cardData, config, keyset cursor paging through an absolute ``Link: <...>; rel="next"``;
- ``GET /api/models/{org}/{name}[/revision/{rev}]``: ``blobs=true`` adds size/blobId/lfs, ``expand``;
- ``GET /api/trending``;
- ``HEAD|GET /{org}/{name}/resolve/{rev}/{path}``: 307 with a relative Location to
  ``/api/resolve-cache/...`` for small files, 302 to the "CDN" on another hostname for LFS files;
- ``HEAD|GET /cdn/{org}/{name}/{commit}/{path}`` on the CDN hostname: Range -> 206, 416, or 200.

Every Hub (not CDN) response carries ``RateLimit``/``RateLimit-Policy`` with separate api and
resolvers counters. Fault switches live in ``FakeHub.faults`` and traffic counters in ``FakeHub.stats``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import re
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit

from bot.fakes.hub.faults import ANONYMOUS_API_QUOTA, ANONYMOUS_RESOLVER_QUOTA, WINDOW_S, FaultConfig, RateWindow, TrafficStats
from bot.fakes.hub.model_json import EXPAND_PROPERTIES, INFO_ONLY_EXPAND, ModelJson
from bot.fakes.hub.repos import FakeHubError, Repo, RepoFile, RepoFolder

log = logging.getLogger("hubwatch.fakehub")

# Listing sort keys the Hub accepts (huggingface_hub maps created_at -> createdAt and so on).
SORT_KEYS = ("createdAt", "lastModified", "trendingScore", "downloads", "likes")
# The Hub's listing page size when no limit is given; also the largest limit it honours.
DEFAULT_PAGE_SIZE = 1000
# /api/trending returns at most 20 entries (research §1.3).
TRENDING_MAX = 20
# Bodies are streamed from disk in chunks of this size.
SEND_CHUNK = 1024 * 1024
# How often the background server checks for stop(); short, so test teardown is quick.
STOP_POLL_S = 0.05
RANGE_RX = re.compile(r"^bytes=(\d*)-(\d*)$")
TRUE_VALUES = ("1", "true", "True")
# The real Hub's text for a missing or private repo seen anonymously (research §1.4).
REPO_NOT_FOUND_MESSAGE = "Repository not found"
INVALID_CREDENTIALS_MESSAGE = "Invalid credentials in Authorization header"
EXPOSED_HEADERS = ("X-Repo-Commit,X-Request-Id,X-Error-Code,X-Error-Message,X-Total-Count,ETag,Link,"
                   "Accept-Ranges,Content-Range,X-Linked-Size,X-Linked-Etag")


class _HttpError(Exception):
    def __init__(self, status: int, message: str, code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.code = status, message, code


def _truthy(params: dict[str, list[str]], key: str) -> bool:
    return any(v in TRUE_VALUES for v in params.get(key, []))


def _weak_etag(body: bytes) -> str:
    return f'W/"{len(body):x}-{hashlib.sha1(body).hexdigest()[:27]}"'


def _encode_cursor(key: tuple[Any, str]) -> str:
    return base64.urlsafe_b64encode(json.dumps(list(key)).encode()).decode().rstrip("=")


def _decode_cursor(text: str) -> tuple[Any, str]:
    try:
        value, oid = json.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
    except (ValueError, TypeError) as exc:
        raise _HttpError(400, "Invalid cursor") from exc
    if not isinstance(oid, str) or not isinstance(value, (str, int, float)):
        raise _HttpError(400, "Invalid cursor")
    return value, oid


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # socketserver's default listen backlog is 5: a client opening 16 connections at once had
    # SYNs dropped and waited out the 1 s TCP retransmit, which no real Hub front end does.
    request_queue_size = 128

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients drop keep-alive connections and abort bodies they do not want; that is not an error.
        exc = sys.exc_info()[1]
        if isinstance(exc, ConnectionError):
            return
        log.exception("fake Hub request from %s failed", client_address[0])


class FakeHub:
    """The server. ``start()`` runs it in a daemon thread; ``endpoint`` is what clients use."""

    def __init__(self, root: str | os.PathLike[str], *, host: str = "127.0.0.1", port: int = 0,
                 cdn_host: str = "localhost", faults: FaultConfig | None = None,
                 api_quota: int = ANONYMOUS_API_QUOTA, resolver_quota: int = ANONYMOUS_RESOLVER_QUOTA,
                 window_s: int = WINDOW_S, page_size: int = DEFAULT_PAGE_SIZE, tokens: tuple[str, ...] = ()):
        self.repos = RepoFolder(root)
        self.tokens = frozenset(tokens)
        self.model_json = ModelJson(self.repos, self.repos.all_repos)
        self.faults = faults or FaultConfig()
        self.stats = TrafficStats()
        self.rate = RateWindow(api_quota, resolver_quota, window_s)
        self.cdn_host = cdn_host
        self.page_size = page_size
        self.host = host
        try:
            self._server = _Server((host, port), _Handler)
        except OSError as exc:
            raise FakeHubError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
        self._server.hub = self  # type: ignore[attr-defined]
        self._thread: threading.Thread | None = None
        self._hashing_stop = threading.Event()
        self._hasher: threading.Thread | None = None

    def knows_token(self, token: str) -> bool:
        """User tokens the Hub knows: ``tokens`` and every token granted access to a repo. Any other
        Bearer token is refused on every route, as the real Hub refuses an expired or made-up one."""
        return token in self.tokens or any(token in r.granted_tokens for r in self.repos.all_repos())

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    @property
    def endpoint(self) -> str:
        return f"http://{self.host}:{self.port}"

    def _start_hashing(self) -> None:
        """LFS files are hashed in the background from start-up, as the real Hub hashes them at
        push time; a request for a file not hashed yet hashes it (or waits for it) itself."""
        self._hasher = threading.Thread(target=self.repos.hash_lfs_files, args=(self._hashing_stop,),
                                        name="fakehub-hash", daemon=True)
        self._hasher.start()

    def start(self) -> FakeHub:
        self._start_hashing()
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": STOP_POLL_S},
                                        name="fakehub", daemon=True)
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        self._start_hashing()
        self._server.serve_forever()

    def stop(self) -> None:
        self._hashing_stop.set()
        self._server.shutdown()
        self._server.server_close()
        if self._thread:
            self._thread.join(timeout=5)
        if self._hasher:
            self._hasher.join(timeout=5)  # done within one chunk: the served folder may be deleted next

    def __enter__(self) -> FakeHub:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, so clients' connection pools are exercised
    # Headers and body are separate writes: with Nagle's algorithm the body waited for the client's
    # delayed ACK of the headers, 40 ms per response (705 sequential ranged reads took 29.7 s, 2.4 s
    # with TCP_NODELAY), a stall no real Hub or CDN front end adds.
    disable_nagle_algorithm = True
    # Buffered, so that a response's last bytes leave only after its request is in ``stats``
    # (_write_body): a client that has its answer finds it counted. Unbuffered, the client could
    # read ``stats`` before the handler thread recorded the request it had just answered.
    wbufsize = -1
    server_version = "fakehub"

    @property
    def hub(self) -> FakeHub:
        return self.server.hub  # type: ignore[attr-defined]

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s " + format, self.address_string(), *args)

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_HEAD(self) -> None:
        self._dispatch("HEAD")

    # ---- plumbing ------------------------------------------------------------------------------

    def _token(self) -> str | None:
        auth = self.headers.get("Authorization") or ""
        return auth[7:].strip() or None if auth.lower().startswith("bearer ") else None

    def _dispatch(self, method: str) -> None:
        self._method = method
        self._extra: dict[str, str] = {}
        parts = urlsplit(self.path)
        self._raw_path = parts.path
        self._params: dict[str, list[str]] = {}
        for k, v in parse_qsl(parts.query, keep_blank_values=True):
            self._params.setdefault(k.removesuffix("[]"), []).append(v)
        if self._raw_path.startswith("/cdn/"):
            self._bucket = "cdn"
        elif "/resolve/" in self._raw_path or self._raw_path.startswith("/api/resolve-cache/"):
            self._bucket = "resolvers"
        else:
            self._bucket = "api"
        faults = self.hub.faults
        if faults.latency_ms:
            time.sleep(faults.latency_ms / 1000)
        try:
            self._authenticate()
            self._rate_limit()
            if faults.take("errors_5xx", self._bucket):
                raise _HttpError(faults.status_5xx, "Injected server error")
            self._route()
        except _HttpError as exc:
            self._send_error(exc)
        except FakeHubError as exc:
            self._send_error(_HttpError(500, str(exc)))

    def _authenticate(self) -> None:
        token = self._token()
        if self._bucket != "cdn" and token is not None and not self.hub.knows_token(token):
            # What huggingface.co answers for a bad or expired HF_TOKEN, on every route; without an
            # X-Error-Code, and huggingface_hub keeps it apart from RepoNotFound by this message.
            raise _HttpError(401, INVALID_CREDENTIALS_MESSAGE)

    def _rate_limit(self) -> None:
        if self._bucket == "cdn":
            return
        client = self._token() or self.client_address[0]
        remaining, reset, quota = self.hub.rate.hit(self._bucket, client)
        faults = self.hub.faults
        storm = faults.take("storm_429", self._bucket)
        if storm:
            remaining, reset = 0, faults.storm_reset_s
        self._extra["RateLimit"] = f'"{self._bucket}";r={max(0, remaining)};t={reset}'
        self._extra["RateLimit-Policy"] = f'"fixed window";"{self._bucket}";q={quota};w={self.hub.rate.window_s}'
        if storm or remaining < 0:
            if storm and faults.retry_after_s is not None:
                self._extra["Retry-After"] = str(faults.retry_after_s)
            raise _HttpError(429, f"You have exceeded our '{self._bucket}' rate limit quota. Please retry later.")

    def _send_error(self, exc: _HttpError) -> None:
        headers = {"X-Error-Message": exc.message}
        if exc.code:
            headers["X-Error-Code"] = exc.code
        self._send(exc.status, json.dumps({"error": exc.message}).encode(), headers)

    def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None,
              content_type: str = "application/json; charset=utf-8") -> None:
        self._start(status, len(body), {**(headers or {}), "Content-Type": content_type})
        self._write_body(lambda: iter([body]), len(body), status)

    def _start(self, status: int, length: int, headers: dict[str, str]) -> None:
        self.send_response(status)
        for k, v in {**self._extra, **headers}.items():
            self.send_header(k, v)
        self.send_header("Access-Control-Expose-Headers", EXPOSED_HEADERS)
        self.send_header("Content-Length", str(length))
        self.end_headers()
        if length and self._method != "HEAD":
            self.wfile.flush()  # a body follows: the headers leave now, its last piece after the record

    def _write_body(self, chunks, length: int, status: int) -> None:
        sent = 0
        held = b""  # the body's last byte, sent once the request is recorded
        try:
            if self._method != "HEAD" and length:
                limit = length
                if length > 1 and self.hub.faults.take("truncate", self._bucket):
                    limit = length // 2
                    self.close_connection = True  # the client sees the connection end before Content-Length
                for chunk in chunks():
                    piece = chunk[: limit - sent]
                    last = sent + len(piece) >= limit
                    # A write larger than the buffer leaves at once: the last byte is held back.
                    self.wfile.write(piece[:-1] if last else piece)
                    sent += len(piece)
                    if last:
                        held = piece[-1:]
                        break
                    self.wfile.flush()  # the others as they come (drips, stalls)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # a client that aborts a body it does not want
        self.hub.stats.record(self._method, self._bucket, self._raw_path, status, sent,
                              authorized=self._token() is not None)
        try:
            self.wfile.write(held)
            self.wfile.flush()  # the headers and the last byte: the client has its answer now
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def _send_json(self, data: Any, headers: dict[str, str] | None = None) -> None:
        body = json.dumps(data, separators=(",", ":")).encode()
        etag = _weak_etag(body)
        if self.headers.get("If-None-Match") == etag:
            self._send(304, b"", {"ETag": etag})
            return
        self._send(200, body, {"ETag": etag, **(headers or {})})

    # ---- routing -------------------------------------------------------------------------------

    def _route(self) -> None:
        segs = self._raw_path.split("/")[1:]
        if self._method == "GET" and segs[:2] == ["api", "models"]:
            if len(segs) == 2 or (len(segs) == 3 and segs[2] == ""):
                return self._list_models()
            if len(segs) == 4:
                return self._model_info(f"{unquote(segs[2])}/{unquote(segs[3])}", None)
            if len(segs) == 6 and segs[4] == "revision":
                return self._model_info(f"{unquote(segs[2])}/{unquote(segs[3])}", unquote(segs[5]))
        if self._method == "GET" and segs == ["api", "trending"]:
            return self._trending()
        if len(segs) >= 5 and segs[2] == "resolve":
            return self._resolve(f"{unquote(segs[0])}/{unquote(segs[1])}", unquote(segs[3]),
                                 unquote("/".join(segs[4:])))
        if len(segs) >= 7 and segs[:3] == ["api", "resolve-cache", "models"]:
            return self._serve_pinned(f"{unquote(segs[3])}/{unquote(segs[4])}", segs[5], unquote("/".join(segs[6:])),
                                      cdn=False)
        if len(segs) >= 5 and segs[0] == "cdn":
            if (urlsplit(f"//{self.headers.get('Host', '')}").hostname or "") != self.hub.cdn_host:
                raise _HttpError(404, "Not Found")
            return self._serve_pinned(f"{unquote(segs[1])}/{unquote(segs[2])}", segs[3], unquote("/".join(segs[4:])),
                                      cdn=True)
        raise _HttpError(404, "Not Found")

    # ---- access rules --------------------------------------------------------------------------

    def _visible(self, repo: Repo | None) -> bool:
        return repo is not None and (not repo.private or self._token() in repo.granted_tokens)

    def _repo(self, repo_id: str) -> Repo:
        repo = self.hub.repos.get(repo_id)
        if not self._visible(repo):
            # The Hub answers 401 for missing and private repos alike (research §1.4).
            raise _HttpError(401, REPO_NOT_FOUND_MESSAGE, "RepoNotFound")
        return repo  # type: ignore[return-value]

    def _check_gate(self, repo: Repo) -> None:
        if not repo.gated:
            return
        token = self._token()
        if token is None:
            raise _HttpError(401, f"Access to model {repo.repo_id} is restricted. You must have access to it "
                             "and be authenticated to access it. Please log in.", "GatedRepo")
        if token not in repo.granted_tokens:
            raise _HttpError(403, f"Access to model {repo.repo_id} is restricted and you are not in the "
                             "authorized list.", "GatedRepo")

    @staticmethod
    def _check_revision(repo: Repo, revision: str) -> None:
        if revision not in ("main", repo.sha):
            raise _HttpError(404, f"Invalid rev id: {revision}", "RevisionNotFound")

    @staticmethod
    def _entry(repo: Repo, path: str) -> RepoFile:
        f = repo.files.get(path)
        if f is None:
            raise _HttpError(404, "Entry not found", "EntryNotFound")
        return f

    # ---- API routes ----------------------------------------------------------------------------

    def _expand(self, allow_info_only: bool) -> list[str]:
        expand = [e for v in self._params.get("expand", []) for e in v.split(",") if e]
        bad = [e for e in expand if e not in EXPAND_PROPERTIES or (e in INFO_ONLY_EXPAND and not allow_info_only)]
        if bad:
            valid = sorted(EXPAND_PROPERTIES if allow_info_only else EXPAND_PROPERTIES - INFO_ONLY_EXPAND)
            raise _HttpError(400, f'"expand" must be one of {", ".join(valid)} (got {", ".join(bad)})')
        return expand

    def _list_models(self) -> None:
        p = self._params
        sort = (p.get("sort") or ["trendingScore"])[-1]
        if sort not in SORT_KEYS:
            raise _HttpError(400, f'"sort" must be one of {", ".join(SORT_KEYS)}')
        try:
            limit = int((p.get("limit") or [str(self.hub.page_size)])[-1])
        except ValueError as exc:
            raise _HttpError(400, '"limit" must be an integer') from exc
        if limit < 1:
            raise _HttpError(400, '"limit" must be positive')
        page = min(limit, self.hub.page_size)
        expand = self._expand(allow_info_only=False)
        search = (p.get("search") or [""])[-1].lower()
        author = (p.get("author") or [None])[-1]
        filters = [f for v in p.get("filter", []) for f in v.split(",") if f]
        gated = (p.get("gated") or [None])[-1]
        mj = self.hub.model_json
        rows = []
        for repo in self.hub.repos.all_repos():
            if not self._visible(repo) or (search and search not in repo.repo_id.lower()):
                continue
            if author and repo.author != author:
                continue
            if filters and not set(filters) <= set(mj.property(repo, "tags")[1]):
                continue
            if gated is not None and bool(repo.gated) != (gated in TRUE_VALUES):
                continue
            rows.append(((mj.property(repo, sort)[1], repo.object_id), repo))
        rows.sort(key=lambda r: r[0], reverse=True)
        if "cursor" in p:
            after = _decode_cursor(p["cursor"][-1])
            rows = [r for r in rows if r[0] < after]
        chunk, more = rows[:page], len(rows) > page
        body = [mj.listing_entry(repo, expand, _truthy(p, "full"), _truthy(p, "cardData"), _truthy(p, "config"))
                for _, repo in chunk]
        headers = {}
        if more:
            query = [(k, v) for k, vs in p.items() if k != "cursor" for v in vs] + [("cursor", _encode_cursor(chunk[-1][0]))]
            host = self.headers.get("Host") or f"{self.hub.host}:{self.hub.port}"
            headers["Link"] = f'<http://{host}/api/models?{urlencode(query)}>; rel="next"'
        self._send_json(body, headers)

    def _model_info(self, repo_id: str, revision: str | None) -> None:
        repo = self._repo(repo_id)
        if revision is not None:
            self._check_revision(repo, revision)
        self._send_json(self.hub.model_json.info(repo, self._expand(allow_info_only=True), _truthy(self._params, "blobs")))

    def _trending(self) -> None:
        try:
            limit = min(TRENDING_MAX, int((self._params.get("limit") or [str(TRENDING_MAX)])[-1]))
        except ValueError as exc:
            raise _HttpError(400, '"limit" must be an integer') from exc
        kind = (self._params.get("type") or ["model"])[-1]
        mj = self.hub.model_json
        repos = [r for r in self.hub.repos.all_repos() if self._visible(r)] if kind == "model" else []
        repos.sort(key=lambda r: (mj.property(r, "trendingScore")[1], r.object_id), reverse=True)
        keys = ("id", "author", "downloads", "likes", "gated", "private", "lastModified", "pipeline_tag")
        self._send_json({"recentlyTrending": [{"repoType": "model", "repoData": mj.build(r, keys)}
                                              for r in repos[: max(0, limit)]]})

    # ---- files ---------------------------------------------------------------------------------

    def _resolve(self, repo_id: str, revision: str, path: str) -> None:
        repo = self._repo(repo_id)
        self._check_gate(repo)
        self._check_revision(repo, revision)
        f = self._entry(repo, path)
        headers = {"X-Repo-Commit": repo.sha, "Accept-Ranges": "bytes"}
        if not f.is_lfs:
            location = (f"/api/resolve-cache/models/{quote(repo_id)}/{repo.sha}/{quote(path)}"
                        f"?etag=%22{f.git_sha1}%22")
            headers.update({"Location": location, "ETag": f'"{f.git_sha1}"'})
            return self._send(307, f"Temporary Redirect. Redirecting to {location}".encode(), headers, "text/plain")
        sha256 = self.hub.repos.sha256(repo, f)
        port = urlsplit(f"//{self.headers.get('Host', '')}").port or self.hub.port
        location = f"http://{self.hub.cdn_host}:{port}/cdn/{quote(repo_id)}/{repo.sha}/{quote(path)}"
        headers.update({"Location": location, "X-Linked-Etag": f'"{sha256}"', "X-Linked-Size": str(f.size),
                        "ETag": f'"{self.hub.repos.blob_id(repo, f)}"'})
        self._send(302, f"Found. Redirecting to {location}".encode(), headers, "text/plain")

    def _serve_pinned(self, repo_id: str, commit: str, path: str, cdn: bool) -> None:
        if cdn:
            # The real CDN URL is signed: the resolve route checked access when it handed it out,
            # and the CDN asks for no token (none is sent to it).
            repo = self.hub.repos.get(repo_id)
            if repo is None:
                raise _HttpError(404, "Not Found")
        else:
            repo = self._repo(repo_id)
            self._check_gate(repo)
        if commit != repo.sha:
            raise _HttpError(404, f"Invalid rev id: {commit}", "RevisionNotFound")
        f = self._entry(repo, path)
        if cdn:
            headers = {"ETag": f'"{self.hub.repos.sha256(repo, f)}"'}
        else:
            headers = {"ETag": f'"{f.git_sha1}"', "X-Repo-Commit": repo.sha}
        headers["Accept-Ranges"] = "bytes"
        ctype = "application/octet-stream"
        start, length, status = 0, f.size, 200
        match = RANGE_RX.match(self.headers.get("Range", "").strip())
        if match and not self.hub.faults.ignore_range and match.group(1) + match.group(2):
            first, last = match.group(1), match.group(2)
            if first:
                start = int(first)
                end = min(int(last), f.size - 1) if last else f.size - 1
            else:  # suffix range: the last N bytes
                start, end = max(0, f.size - int(last)), f.size - 1
            if start >= f.size or (last and first and int(last) < start):
                headers["Content-Range"] = f"bytes */{f.size}"
                return self._send(416, b"", headers, ctype)
            status, length = 206, end - start + 1
            headers["Content-Range"] = f"bytes {start}-{end}/{f.size}"
        self._start(status, length, {**headers, "Content-Type": ctype})

        drip_s = self.hub.faults.drip_interval_s if self.hub.faults.drip_repo == repo_id else None

        def chunks():
            with open(f.full_path, "rb") as fh:
                pos, end = start, start + length
                while pos < end:
                    data = os.pread(fh.fileno(), 1 if drip_s else min(SEND_CHUNK, end - pos), pos)
                    if not data:
                        return
                    yield data
                    pos += len(data)
                    if drip_s:
                        time.sleep(drip_s)

        self._write_body(chunks, length, status)
