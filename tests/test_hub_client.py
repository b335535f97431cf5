"""HubClient and HubRepoReader against the fake Hub: results, costs and every error path."""

from __future__ import annotations

import hashlib
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from bot.fakes.hub import FakeHub
from bot.hub import (EntryNotFoundError, GatedRepoError, HubClient, HubError, HubUnavailableError, InvalidTokenError,
                     RangeNotSupportedError, RateLimitedError, RepoNotFoundError, RetryPolicy, RevisionNotFoundError)
from bot.hub.models import HubModel, declared_base_models
from bot.hub.ratelimit import HubRateBudget
from bot.hub.ranges import MERGE_GAP, merge_ranges
from bot.hub.remote_reader import HubRepoReader, ModelDeadline
from bot.hub.retry import wait_for_429
from fingerprints.engine import fingerprint_model
from fingerprints.errors import BudgetExceededError, InvalidModelError
from fingerprints.reader import LocalFolderReader, RangeRequest
from hubfixtures import (COPY, FAST_RETRY, GATED, GRANTED_TOKEN, MINILM, OTHER_TOKEN, PRIVATE, hub_model, link_minilm,
                         wait_for)

MiB = 1024 * 1024


def recording_client(hub: FakeHub, **kwargs) -> tuple[HubClient, list[float]]:
    waits: list[float] = []
    kwargs.setdefault("retry", FAST_RETRY)
    return HubClient(hub.endpoint, token=kwargs.pop("token", ""), sleep=waits.append, **kwargs), waits


# ---- listing and model info --------------------------------------------------------------------


def test_list_models_follows_pages_up_to_the_limit(hub_dir):
    with FakeHub(hub_dir, page_size=2) as hub, HubClient(hub.endpoint, token="") as c:
        entries = list(c.list_models(sort="created_at", limit=5, expand=["sha", "createdAt", "cardData"]))
        assert [e.repo_id for e in entries] == [COPY, GATED, "other/d", "tiny/c", "tiny/b"]
        assert all(len(e.sha) == 40 for e in entries)
        assert hub.stats.by_bucket["api"] == 3  # pages of 2, 2 and 1 wanted
        trending = [e.repo_id for e in c.list_models(sort="trendingScore", limit=2, expand=["trendingScore"])]
        assert trending == [MINILM, "tiny/b"]
        assert [e.repo_id for e in c.list_models(limit=10, author="tiny", search="a")] == ["tiny/a"]
    with pytest.raises(HubError, match="unknown sort"):
        next(c.list_models(sort="recent"))


def test_model_info_is_typed(client, hub_dir):
    m = client.model_info(COPY)
    assert isinstance(m, HubModel) and m.repo_id == COPY and len(m.sha) == 40
    assert m.author == "acme" and m.license == "mit" and m.created_at.startswith("2025-06-01")
    assert m.declared_base_models == ("google-bert/bert-base-uncased",)
    weights = m.sibling("model.safetensors")
    assert weights.size == 90_868_376 and weights.lfs_sha256 == hashlib.sha256(
        (hub_dir / MINILM / "model.safetensors").read_bytes()).hexdigest()
    assert m.sibling("config.json").lfs_sha256 is None and m.sibling("config.json").size > 0
    assert client.model_info(GATED).gated == "manual"
    assert client.model_info(MINILM).downloads == 90_000_000


def test_declared_base_models_from_every_source():
    assert declared_base_models(["base_model:quantized:a/b", "base_model:c/d", "license:mit"], ["e/f", 3],
                                {"relation": "merge", "models": [{"id": "a/b"}, {"id": "g/h"}]}) == \
        ("e/f", "a/b", "c/d", "g/h")
    hostile = hub_model({"id": "x/y", "siblings": [{"rfilename": "w", "lfs": {"sha256": "../etc", "size": -5, "pointerSize": 1}}],
                         "gated": ["odd"], "downloads": "many", "cardData": {"license": 7, "base_model": [3, "a/b"]}})
    assert hostile.sibling("w").lfs_sha256 is None and hostile.sibling("w").size is None
    assert hostile.gated is None and hostile.downloads is None and hostile.license is None
    assert hostile.declared_base_models == ("a/b",)


# ---- the remote reader -------------------------------------------------------------------------


def test_remote_fingerprint_equals_local_and_costs_little(client, hub_dir):
    reader = client.reader(MINILM)
    assert reader.name == f"{MINILM}@{reader.sha}"
    remote = fingerprint_model(reader)
    local = fingerprint_model(LocalFolderReader(hub_dir / MINILM))
    assert remote.weights.structure_hash == local.weights.structure_hash
    assert remote.tokenizer.vocab_hash == local.tokenizer.vocab_hash
    assert remote.config.fields == local.config.fields
    assert remote.weights.file_sha256["model.safetensors"] == reader.file_sha256("model.safetensors")
    assert reader.bytes_read <= 3 * MiB and reader.requests < 150


def test_read_ranges_merges_neighbours_and_returns_exact_bytes(client, hub_dir, fake_hub):
    reader = HubRepoReader(client, MINILM)
    data = (hub_dir / MINILM / "model.safetensors").read_bytes()
    wanted = [RangeRequest("model.safetensors", 1000, 10), RangeRequest("model.safetensors", 0, 8),
              RangeRequest("model.safetensors", 1005, 20), RangeRequest("model.safetensors", 5 * MiB, 4),
              RangeRequest("config.json", 0, 5), RangeRequest("model.safetensors", 7, 0)]
    fake_hub.stats.reset()
    got = reader.read_ranges(wanted)
    assert got[:4] == [data[1000:1010], data[0:8], data[1005:1025], data[5 * MiB:5 * MiB + 4]]
    assert got[4] == (hub_dir / MINILM / "config.json").read_bytes()[:5] and got[5] == b""
    assert reader.requests == 1 + 3  # model info, then [0, 1025), [5 MiB, +4) and config.json
    assert wait_for(lambda: fake_hub.stats.by_bucket.get("cdn") == 2)
    with pytest.raises(InvalidModelError, match="outside the file"):
        reader.read_ranges([RangeRequest("config.json", 0, 10**6)])
    with pytest.raises(InvalidModelError, match="no file"):
        reader.size("missing.bin")


def test_merge_ranges_gap_rule():
    reqs = [RangeRequest("a", 0, 10), RangeRequest("a", 10 + MERGE_GAP - 1, 5), RangeRequest("a", 10**7, 5),
            RangeRequest("a", 10**7 + 5 + MERGE_GAP, 1), RangeRequest("b", 0, 1)]
    spans = merge_ranges(reqs)
    assert [(s.path, s.offset, s.end, s.members) for s in spans] == [
        ("a", 0, 10 + MERGE_GAP + 4, [0, 1]), ("a", 10**7, 10**7 + 5, [2]),
        ("a", 10**7 + 5 + MERGE_GAP, 10**7 + 6 + MERGE_GAP, [3]), ("b", 0, 1, [4])]


def test_reads_are_pinned_to_the_commit(tmp_path, hub_dir):
    repo = link_minilm(tmp_path / "org" / "model", hub_dir / MINILM)
    with FakeHub(tmp_path) as hub, HubClient(hub.endpoint, token="", retry=FAST_RETRY) as c:
        reader = c.reader("org/model")
        assert reader.read_ranges([RangeRequest("config.json", 0, 1)]) == [b"{"]
        (repo / "README.md").write_text("a push while we were reading")
        with pytest.raises(RevisionNotFoundError):
            reader.read_ranges([RangeRequest("vocab.txt", 0, 5)])


def test_byte_budget_stops_before_reading(client, fake_hub):
    reader = HubRepoReader(client, MINILM, byte_budget=MiB)
    fake_hub.stats.reset()
    with pytest.raises(BudgetExceededError, match="budget"):
        fingerprint_model(reader)
    assert reader.bytes_read <= MiB
    assert wait_for(lambda: fake_hub.stats.requests > 0) and fake_hub.stats.bytes_sent <= MiB


def test_file_size_from_head(client):
    sha = client.model_info(MINILM).sha
    assert client.file_size(MINILM, sha, "model.safetensors") == 90_868_376
    assert client.file_size(MINILM, sha, "config.json") == client.model_info(MINILM).sibling("config.json").size


# ---- errors ------------------------------------------------------------------------------------


def test_missing_private_and_bad_ids(client):
    for repo in ("nobody/nothing", PRIVATE):
        with pytest.raises(RepoNotFoundError, match="not found"):
            client.reader(repo)
    with pytest.raises(RepoNotFoundError, match="not a Hub repo id"):
        client.model_info("../../etc/passwd")
    with pytest.raises(RevisionNotFoundError):
        client.reader(MINILM, "v0.0-nope")
    sha = client.model_info(MINILM).sha
    with pytest.raises(EntryNotFoundError):
        client.read_range(MINILM, sha, "nope.safetensors", 0, 8)


def test_gated_repo_needs_a_granted_token(fake_hub):
    with HubClient(fake_hub.endpoint, token="") as anonymous:
        reader = anonymous.reader(GATED)  # model info is public
        with pytest.raises(GatedRepoError, match="set HF_TOKEN"):
            reader.read_ranges([RangeRequest("config.json", 0, 1)])
    with HubClient(fake_hub.endpoint, token=OTHER_TOKEN) as wrong:
        with pytest.raises(GatedRepoError, match="not been granted") as err:
            wrong.reader(GATED).read_ranges([RangeRequest("config.json", 0, 1)])
        assert OTHER_TOKEN not in str(err.value) and OTHER_TOKEN not in repr(wrong)
    with HubClient(fake_hub.endpoint, token=GRANTED_TOKEN) as granted:
        assert granted.reader(GATED).read_ranges([RangeRequest("model.safetensors", 0, 8)])[0]
        assert granted.reader(PRIVATE).model.private


def test_token_goes_to_the_hub_only(fake_hub):
    with HubClient(fake_hub.endpoint, GRANTED_TOKEN, retry=FAST_RETRY) as c:
        assert c.has_token
        c.reader(GATED).read_ranges([RangeRequest("model.safetensors", 0, 8)])
    assert wait_for(lambda: fake_hub.stats.by_bucket.get("cdn"))
    # The Bearer token goes to the Hub only, never to the CDN host.
    assert fake_hub.stats.authorized_by_bucket.get("api") and not fake_hub.stats.authorized_by_bucket.get("cdn")


def test_429_then_success_waits_for_the_reset_and_counts_each_429_once(fake_hub):
    c, waits = recording_client(fake_hub)
    # t=0: a window ending now, the shortest real wait (t + 1 = 1 s each).
    fake_hub.faults.storm_429, fake_hub.faults.storm_reset_s = 2, 0
    started = time.monotonic()
    assert c.model_info(MINILM).repo_id == MINILM
    assert waits == []  # no backoff: the rate budget waited for the resets
    assert c.rate_budget.waits == 2 and 1.9 <= c.rate_budget.waited_s <= time.monotonic() - started  # 2 x (t + 1)
    assert c.take_rate_limited_count() == 2 and c.take_rate_limited_count() == 0


def test_a_reset_past_the_request_deadline_is_a_clear_error_at_once(fake_hub):
    c, waits = recording_client(fake_hub, request_deadline_s=5)
    fake_hub.faults.storm_429, fake_hub.faults.storm_reset_s = 100, 250
    started = time.monotonic()
    with pytest.raises(RateLimitedError, match="resets in 251 s, past this request's deadline"):
        c.model_info(MINILM)
    assert time.monotonic() - started < 2 and waits == []


def test_a_stalled_read_is_cut_at_the_model_deadline_not_at_the_read_timeout(fake_hub):
    """One byte, then nothing for 60 s: no read ends before timeout_s (10 s), yet the model's 1 s ends it."""
    c, _ = recording_client(fake_hub, timeout_s=10)
    sha = c.model_info(MINILM).sha
    fake_hub.faults.drip_repo, fake_hub.faults.drip_interval_s = MINILM, 60
    started = time.monotonic()
    with pytest.raises(BudgetExceededError, match=r"at the model's deadline \(1 s, limits.model_seconds\); cut there"):
        c.read_range(MINILM, sha, "model.safetensors", 0, 1000, ModelDeadline(time.monotonic() + 1, 1))
    assert time.monotonic() - started < 5
    c.close()


def test_a_reset_over_60_s_is_waited_for_and_what_is_left_of_a_window_goes_at_once():
    now = [0.0]

    def advance(cond, timeout):
        now[0] += timeout

    budget = HubRateBudget(clock=lambda: now[0], wait=advance)
    budget.observe("api", {"RateLimit": '"api";r=0;t=120', "RateLimit-Policy": '"fixed window";"api";q=500;w=300'})
    budget.acquire("api", deadline=330, what="models")
    assert now[0] == 121 and budget.waited_s == 121 and budget.waits == 1  # t + 1, not abandoned at 60 s
    budget.observe("api", {"RateLimit": '"api";r=2;t=200'})
    for name in ("a", "b"):
        budget.acquire("api", deadline=now[0] + 330, what=name)
    assert now[0] == 121  # two left in the window: no wait
    with pytest.raises(RateLimitedError):  # the window is spent and resets past this deadline
        budget.acquire("api", deadline=now[0] + 10, what="c")


def test_a_spent_bucket_serves_its_requests_in_arrival_order_and_holds_up_no_other_bucket():
    budget = HubRateBudget()
    budget.exhausted("resolvers", 0.2)  # a 429 on file reads: nothing there for 1.2 s (t + 1)
    served: list[str] = []

    def read(name: str) -> None:
        budget.acquire("resolvers", deadline=time.monotonic() + 30, what=name)
        served.append(name)
        budget.observe("resolvers", {"RateLimit": '"resolvers";r=100;t=300'})  # the new window has room

    threads = []
    for i, name in enumerate(("first", "second", "third")):
        threads.append(threading.Thread(target=read, args=(name,)))
        threads[-1].start()
        while len(budget._queues.get("resolvers", ())) < i + 1:  # queued before the next one arrives
            time.sleep(0.005)
    budget.acquire("api", deadline=time.monotonic() + 30, what="listing")  # another bucket: at once
    assert served == []  # the file reads still wait for their reset
    for thread in threads:
        thread.join(10)
    assert served == ["first", "second", "third"]


class _TricklingHub(BaseHTTPRequestHandler):
    """Sends a 38-byte JSON answer one byte every 0.3 s: each read is quick, the whole is not."""

    def do_GET(self):  # noqa: N802
        body = b'{"id": "org/name", "sha": "' + b"a" * 8 + b'"}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        for i in range(len(body)):
            try:
                self.wfile.write(body[i:i + 1])
                self.wfile.flush()
            except OSError:
                return
            time.sleep(0.3)

    def log_message(self, *args):
        pass


def test_a_trickling_answer_is_cut_at_the_requests_deadline_not_per_read():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _TricklingHub)
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    try:
        with HubClient(f"http://127.0.0.1:{server.server_port}", "", retry=FAST_RETRY, timeout_s=5,
                       request_deadline_s=1.5) as c:
            started = time.monotonic()
            with pytest.raises(HubUnavailableError, match="still arriving at the request's deadline"):
                c.model_info("org/name")
            assert time.monotonic() - started < 4  # 38 bytes at 0.3 s each would take 11 s
    finally:
        server.shutdown()
        server.server_close()


def test_retry_after_and_backoff_rules():
    assert wait_for_429({"RateLimit": '"api";r=0;t=42', "Retry-After": "5"}, 1.0) == 42.0
    assert wait_for_429({"RateLimit": '"api";r=10;t=42', "Retry-After": "5"}, 1.0) == 5.0
    assert wait_for_429({"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}, 1.5) == 1.5
    policy = RetryPolicy(backoff_base_s=1, backoff_cap_s=8)
    assert [policy.backoff(i) for i in range(5)] == [1, 2, 4, 8, 8]


def test_5xx_then_success_and_5xx_forever(fake_hub, caplog):
    c, waits = recording_client(fake_hub)
    fake_hub.faults.errors_5xx = 2
    caplog.set_level("INFO", logger="hubwatch.hub")
    assert c.model_info(MINILM).sha
    retries = [r for r in caplog.records if r.getMessage() == "retrying"]
    assert [(r.what, r.host, r.reason) for r in retries] == [(MINILM, "127.0.0.1", "HTTP 503")] * 2
    assert waits == [FAST_RETRY.backoff(0), FAST_RETRY.backoff(1)]
    fake_hub.faults.errors_5xx = 1000
    fake_hub.stats.reset()
    with pytest.raises(HubUnavailableError, match="after 4 attempts.*HTTP 503"):
        c.model_info(MINILM)
    assert wait_for(lambda: fake_hub.stats.requests == FAST_RETRY.max_attempts)


def test_truncated_header_body_is_retried_then_reported(fake_hub):
    c, _ = recording_client(fake_hub)
    reader = c.reader(MINILM)
    fake_hub.faults.scope, fake_hub.faults.truncate = "cdn", 1
    header = reader.read_ranges([RangeRequest("model.safetensors", 0, 64 * 1024)])[0]
    assert len(header) == 64 * 1024
    fake_hub.faults.truncate = 1000
    with pytest.raises(HubUnavailableError, match="RemoteProtocolError|truncated"):
        reader.read_ranges([RangeRequest("model.safetensors", 8, 64 * 1024)])


def test_server_ignoring_range_is_refused_without_downloading(tmp_path):
    repo = tmp_path / "big" / "model"
    repo.mkdir(parents=True)
    size = 1024 * MiB
    with open(repo / "model.safetensors", "wb") as fh:
        fh.truncate(size)  # sparse: a 1 GiB file that costs no disk
    (repo / "_hub.json").write_text('{"sha256": {"model.safetensors": "%s"}}' % ("0" * 64))
    with FakeHub(tmp_path) as hub, HubClient(hub.endpoint, token="", retry=FAST_RETRY) as c:
        reader = c.reader("big/model")
        hub.faults.ignore_range = True
        with pytest.raises(RangeNotSupportedError, match="ignored the Range header"):
            reader.read_ranges([RangeRequest("model.safetensors", 0, 8)])
        assert wait_for(lambda: hub.stats.by_bucket.get("cdn"))
        assert hub.stats.bytes_sent < 64 * MiB  # the server stopped as soon as the client hung up


def test_redirect_to_a_foreign_host_is_refused(hub_dir):
    with FakeHub(hub_dir, cdn_host="cdn.example.org") as hub, HubClient(hub.endpoint, token="") as c:
        reader = c.reader(MINILM)
        with pytest.raises(HubError, match="refusing to follow.*cdn.example.org"):
            reader.read_ranges([RangeRequest("model.safetensors", 0, 8)])
        assert reader.read_ranges([RangeRequest("config.json", 0, 1)]) == [b"{"]  # resolve-cache is same-host


def test_unreachable_hub_is_a_clear_error(caplog):
    caplog.set_level("INFO", logger="hubwatch.hub")
    with HubClient("http://127.0.0.1:9", token="", retry=FAST_RETRY) as c:
        with pytest.raises(HubUnavailableError, match=f"{MINILM}: the Hub at 127.0.0.1 .*ConnectError"):
            c.model_info(MINILM)
    assert not caplog.records  # no line per attempt: the error says it once
    with pytest.raises(HubError, match="not an http"):
        HubClient("ftp://example", token="")


def test_hub_client_satisfies_the_watcher_protocol(client):
    entries = list(client.list_models(sort="createdAt", limit=2, expand=["sha"]))
    reader = client.reader(entries[0].repo_id, entries[0].sha)
    assert reader.sha == entries[0].sha and "config.json" in reader.list_files()


class _RejectingHub(BaseHTTPRequestHandler):
    """Answers every request as the Hub answers a bad or expired token."""

    def do_GET(self):  # noqa: N802
        body = b'{"error": "Invalid credentials in Authorization header"}'
        self.send_response(401)
        self.send_header("X-Request-Id", "Root=1-abc")
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_a_rejected_token_is_not_reported_as_a_missing_repo():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _RejectingHub)
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    try:
        with HubClient(f"http://127.0.0.1:{server.server_port}", "hf_expired_token_000", retry=FAST_RETRY) as c:
            with pytest.raises(InvalidTokenError, match="rejected the token") as err:
                c.model_info(MINILM)
    finally:
        server.shutdown()
        server.server_close()
    assert not isinstance(err.value, RepoNotFoundError)
    assert (err.value.status, err.value.request_id, err.value.repo) == (401, "Root=1-abc", MINILM)
    assert "hf_expired_token_000" not in str(err.value)


class _RecordingHub(BaseHTTPRequestHandler):
    """Model info and a listing, each pointing hubwatch away from the endpoint in its own way."""

    seen: list[dict[str, str]] = []

    def do_GET(self):  # noqa: N802
        self.seen.append(dict(self.headers))
        if self.path.startswith("/api/models/org/moved"):  # a renamed repo's redirect, to a foreign host
            return self._answer(307, b"", {"Location": "http://10.255.255.1/api/models/org/moved"})
        if self.path.startswith("/api/models?"):  # a listing page whose next page is on a foreign host
            return self._answer(200, b"[]", {"Link": '<http://10.255.255.1/api/models?cursor=x>; rel="next"'})
        self._answer(200, json.dumps({"id": "org/name", "sha": "a" * 40, "siblings": []}).encode(), {})

    def _answer(self, status, body, headers):
        self.send_response(status)
        for k, v in {**headers, "Content-Type": "application/json", "Content-Length": str(len(body))}.items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_huggingface_hubs_calls_follow_the_clients_rules():
    """HfApi's model info and listing go out through the HubClient: its token and User-Agent, its
    redirect allowlist, its listing-host rule."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _RecordingHub)
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    try:
        with HubClient(f"http://127.0.0.1:{server.server_port}", OTHER_TOKEN, retry=FAST_RETRY) as c:
            assert c.model_info("org/name").sha == "a" * 40
            with pytest.raises(HubError, match="refusing to follow the Hub to '?10.255.255.1"):
                c.model_info("org/moved")
            with pytest.raises(HubError, match="another host \\(10.255.255.1\\)"):
                list(c.list_models(limit=5))
    finally:
        server.shutdown()
        server.server_close()
    headers = {k.lower(): v for k, v in _RecordingHub.seen[0].items()}
    assert headers["authorization"] == f"Bearer {OTHER_TOKEN}" and headers["user-agent"].startswith("hubwatch/")
    assert len(_RecordingHub.seen) == 3  # nothing was sent to the foreign host


def test_errors_carry_status_request_and_repo(client):
    with pytest.raises(RevisionNotFoundError) as err:
        client.model_info(MINILM, "v0.0-nope")
    assert err.value.status == 404 and err.value.repo == MINILM


def test_the_budget_waits_for_a_spent_window_instead_of_meeting_429s(hub_dir):
    with FakeHub(hub_dir, api_quota=3, window_s=2) as hub, HubClient(hub.endpoint, token="", retry=FAST_RETRY) as c:
        for _ in range(5):
            assert c.model_info(MINILM).repo_id == MINILM
        statuses = [status for _method, bucket, _path, status, _size in hub.stats.log if bucket == "api"]
    assert statuses == [200] * 5  # the window was read from the RateLimit headers: no request met a 429
    assert c.rate_budget.waits >= 1 and c.rate_budget.take_waited_s() > 0.5


class _SlowRangesHub(BaseHTTPRequestHandler):
    """Answers every ranged read with zeros after 50 ms, noting the connection (client port) it came on."""

    protocol_version = "HTTP/1.1"
    connections: set[int] = set()

    def do_GET(self):  # noqa: N802
        self.connections.add(self.client_address[1])
        time.sleep(0.05)
        first, last = (int(n) for n in self.headers["Range"].removeprefix("bytes=").split("-"))
        body = bytes(last - first + 1)
        self.send_response(206)
        self.send_header("Content-Range", f"bytes {first}-{last}/1000000")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_concurrent_reads_use_at_most_max_connections():
    """The client's connections are split over several small pools (httpcore's pool costs
    O(connections²) per request): together they keep within hub.max_connections, and a load of
    twice as many concurrent reads uses them all."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _SlowRangesHub)
    server.request_queue_size = 64
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    try:
        with HubClient(f"http://127.0.0.1:{server.server_port}", "", max_connections=12, max_concurrency=24) as c:
            reads = c.map_concurrent(lambda i: c.read_range("org/name", "a" * 40, "w.bin", 10 * i, 10), range(96))
    finally:
        server.shutdown()
        server.server_close()
    assert reads == [bytes(10)] * 96
    assert 8 < len(_SlowRangesHub.connections) <= 12


class _HeldAnswersHub(BaseHTTPRequestHandler):
    """Answers /slow only once ``release`` is set, anything else at once."""

    protocol_version = "HTTP/1.1"
    release = threading.Event()

    def do_GET(self):  # noqa: N802
        if self.path == "/slow":
            self.release.wait(20)
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args):
        pass


def test_a_request_takes_a_free_connection_while_slow_answers_fill_another_pool():
    """Eight held answers (a stalled repo) fill one pool's worth of connections: a ninth request is
    sent on another pool's free connection at once, not queued behind them. Pinning each thread to
    a pool in turn had put the held ones in one pool and the ninth behind them."""
    from bot.hub.client import _ShardedTransport
    from bot.hub.client import httpx

    server = ThreadingHTTPServer(("127.0.0.1", 0), _HeldAnswersHub)
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    url = f"http://127.0.0.1:{server.server_port}"
    http = httpx.Client(transport=_ShardedTransport(16, False), timeout=httpx.Timeout(10, pool=2))
    held: list[threading.Thread] = []
    try:
        for i in range(16):  # each thread's first request in turn: threads 0, 2, 4... took the first pool
            first_done, go_slow = threading.Event(), i % 2 == 0

            def send(first_done=first_done, go_slow=go_slow):
                http.get(url + "/quick")
                first_done.set()
                if go_slow:
                    http.get(url + "/slow")

            thread = threading.Thread(target=send)
            thread.start()
            first_done.wait(10)
            held.append(thread)
        time.sleep(0.3)  # the eight slow requests are in flight
        assert http.get(url + "/quick").content == b"ok"  # the 17th thread's first request
        assert any(t.is_alive() for t in held)  # while the slow answers are still held
    finally:
        _HeldAnswersHub.release.set()
        for thread in held:
            thread.join(10)
        http.close()
        server.shutdown()
        server.server_close()
