"""The fake Hub against the real huggingface_hub client, plus its raw HTTP contract."""

from __future__ import annotations

import hashlib
import json
import os
import time

import httpx
import pytest
from huggingface_hub import HfApi, hf_hub_download
from huggingface_hub.errors import (GatedRepoError, HfHubHTTPError, RemoteEntryNotFoundError, RepositoryNotFoundError,
                                    RevisionNotFoundError)

from bot.cli import main as cli_main
from bot.fakes.hub import FakeHub
from bot.fakes.hub import repos as fakehub_repos
from bot.fakes.hub.repos import FULL_HASH_LIMIT_BYTES
from bot.discord import commands as discord_commands
from bot.hub import HubClient
from hubfixtures import COPY, GATED, GRANTED_TOKEN, MINILM, OTHER_TOKEN, PRIVATE, hub_model, public_repo_ids, wait_for

MINILM_PARAMS = {"F32": 22_713_216, "I64": 512}


@pytest.fixture(scope="module")
def minilm_sha256(hub_dir) -> str:
    return hashlib.sha256((hub_dir / MINILM / "model.safetensors").read_bytes()).hexdigest()


def api(hub: FakeHub) -> HfApi:
    return HfApi(endpoint=hub.endpoint, token=False)


# ---- listing -----------------------------------------------------------------------------------


def test_list_models_pages_through_absolute_link_headers(hub_dir):
    with FakeHub(hub_dir, page_size=2) as hub:
        models = list(api(hub).list_models(sort="created_at"))
        assert [m.id for m in models][:3] == [COPY, GATED, "other/d"]
        assert {m.id for m in models} == public_repo_ids()  # the private repo stays hidden
        created = [m.created_at for m in models]
        assert created == sorted(created, reverse=True)
        assert wait_for(lambda: hub.stats.by_bucket.get("api") == 4)  # 7 repos at 2 per page
        first = httpx.get(f"{hub.endpoint}/api/models", params={"sort": "createdAt"})
        link = first.links["next"]["url"]
        assert link.startswith(hub.endpoint + "/api/models?") and "cursor=" in link


def test_list_models_sort_filter_search_author_and_expand(fake_hub):
    hf = api(fake_hub)
    by_downloads = [m.id for m in hf.list_models(sort="downloads", limit=3)]
    assert by_downloads == [MINILM, "tiny/c", "tiny/a"]
    assert [m.id for m in hf.list_models(sort="trending_score", limit=2)] == [MINILM, "tiny/b"]
    assert {m.id for m in hf.list_models(filter="text-classification")} == {"tiny/a", "tiny/c"}
    assert {m.id for m in hf.list_models(author="tiny")} == {"tiny/a", "tiny/b", "tiny/c"}
    assert {m.id for m in hf.list_models(search="minilm")} == {MINILM, COPY, GATED}
    raw = httpx.get(f"{fake_hub.endpoint}/api/models", params=[("sort", "likes"), ("limit", "1"),
                                                                 ("expand[]", "sha"), ("expand[]", "createdAt")]).json()
    assert set(raw[0]) == {"_id", "id", "sha", "createdAt"} and raw[0]["id"] == MINILM
    plain = httpx.get(f"{fake_hub.endpoint}/api/models", params={"limit": 1}).json()[0]
    assert set(plain) == {"_id", "id", "likes", "trendingScore", "private", "downloads", "tags", "pipeline_tag",
                          "library_name", "createdAt", "modelId"}


def test_listing_rejects_bad_parameters(fake_hub):
    bad_sort = httpx.get(f"{fake_hub.endpoint}/api/models", params={"sort": "recent"})
    assert bad_sort.status_code == 400 and "sort" in bad_sort.json()["error"]
    info_only = httpx.get(f"{fake_hub.endpoint}/api/models", params={"expand": "baseModels"})
    assert info_only.status_code == 400
    assert httpx.get(f"{fake_hub.endpoint}/api/models", params={"cursor": "!!"}).status_code == 400


def test_trending_route_caps_at_twenty(fake_hub):
    body = httpx.get(f"{fake_hub.endpoint}/api/trending", params={"type": "model", "limit": 50}).json()
    entries = body["recentlyTrending"]
    assert entries[0]["repoData"]["id"] == MINILM and len(entries) == len(public_repo_ids())


# ---- model info --------------------------------------------------------------------------------


def test_model_info_with_files_metadata(fake_hub, minilm_sha256):
    info = api(fake_hub).model_info(MINILM, files_metadata=True)
    siblings = {s.rfilename: s for s in info.siblings}
    weights = siblings["model.safetensors"]
    assert weights.lfs.sha256 == minilm_sha256 and weights.size == weights.lfs.size == 90_868_376
    assert siblings["config.json"].lfs is None and siblings["config.json"].size > 0
    assert info.card_data.license == "apache-2.0" and "license:apache-2.0" in info.tags
    assert info.safetensors.parameters == MINILM_PARAMS
    assert info.created_at.year == 2022 and len(info.sha) == 40
    head = httpx.head(f"{fake_hub.endpoint}/{MINILM}/resolve/main/config.json")
    assert head.headers["X-Repo-Commit"] == info.sha


def test_model_info_expand_and_declared_lineage(fake_hub):
    raw = httpx.get(f"{fake_hub.endpoint}/api/models/{COPY}",
                    params=[("expand", "baseModels"), ("expand", "cardData")]).json()
    assert set(raw) == {"_id", "id", "baseModels", "cardData"}
    assert raw["baseModels"]["relation"] == "finetune"
    assert [m["id"] for m in raw["baseModels"]["models"]] == ["google-bert/bert-base-uncased"]
    info = api(fake_hub).model_info(COPY)
    assert "base_model:finetune:google-bert/bert-base-uncased" in info.tags


def test_model_info_at_revision_and_weak_etag(fake_hub):
    sha = api(fake_hub).model_info(MINILM).sha
    assert api(fake_hub).model_info(MINILM, revision=sha).sha == sha
    with pytest.raises(RevisionNotFoundError):
        api(fake_hub).model_info(MINILM, revision="v9.9")
    first = httpx.get(f"{fake_hub.endpoint}/api/models/{MINILM}")
    assert first.headers["ETag"].startswith('W/"')
    again = httpx.get(f"{fake_hub.endpoint}/api/models/{MINILM}", headers={"If-None-Match": first.headers["ETag"]})
    assert again.status_code == 304


def test_missing_and_private_repos_are_401_repo_not_found(fake_hub):
    for repo in ("nobody/nothing", PRIVATE):
        with pytest.raises(RepositoryNotFoundError):
            api(fake_hub).model_info(repo)
        r = httpx.get(f"{fake_hub.endpoint}/api/models/{repo}")
        assert r.status_code == 401 and r.headers["X-Error-Code"] == "RepoNotFound" and r.json()["error"]
    granted = HfApi(endpoint=fake_hub.endpoint, token=GRANTED_TOKEN).model_info(PRIVATE)
    assert granted.private is True


# ---- files -------------------------------------------------------------------------------------


@pytest.mark.slow  # downloads MiniLM through huggingface_hub
def test_hf_hub_download_small_and_lfs_files(fake_hub, hub_dir, tmp_path):
    config = hf_hub_download(MINILM, "config.json", endpoint=fake_hub.endpoint, cache_dir=tmp_path, token=False)
    assert open(config, "rb").read() == (hub_dir / MINILM / "config.json").read_bytes()
    weights = hf_hub_download(MINILM, "model.safetensors", endpoint=fake_hub.endpoint, cache_dir=tmp_path, token=False)
    assert os.path.getsize(weights) == 90_868_376
    assert wait_for(lambda: fake_hub.stats.by_bucket.get("cdn"))
    statuses = [(m, b, s) for m, b, p, s, _ in fake_hub.stats.log]
    assert ("HEAD", "resolvers", 307) in statuses and ("HEAD", "resolvers", 302) in statuses
    assert ("GET", "cdn", 200) in statuses


def test_resolve_redirects_and_headers(fake_hub, minilm_sha256):
    small = httpx.head(f"{fake_hub.endpoint}/{MINILM}/resolve/main/config.json")
    assert small.status_code == 307 and small.headers["Location"].startswith("/api/resolve-cache/models/")
    final = httpx.head(fake_hub.endpoint + small.headers["Location"])
    assert final.status_code == 200 and final.headers["ETag"].startswith('"')
    assert final.headers["X-Repo-Commit"] and final.headers["Accept-Ranges"] == "bytes"
    assert int(final.headers["Content-Length"]) > 0
    big = httpx.head(f"{fake_hub.endpoint}/{MINILM}/resolve/main/model.safetensors")
    assert big.status_code == 302
    assert big.headers["Location"].startswith(f"http://localhost:{fake_hub.port}/cdn/")
    assert big.headers["X-Linked-Etag"] == f'"{minilm_sha256}"' and big.headers["X-Linked-Size"] == "90868376"
    assert big.headers["X-Repo-Commit"] and big.headers["ETag"] != big.headers["X-Linked-Etag"]


def test_cdn_range_semantics(fake_hub, hub_dir):
    cdn = httpx.head(f"{fake_hub.endpoint}/{MINILM}/resolve/main/model.safetensors").headers["Location"]
    data = (hub_dir / MINILM / "model.safetensors").read_bytes()
    part = httpx.get(cdn, headers={"Range": "bytes=10-19"})
    assert part.status_code == 206 and part.content == data[10:20]
    assert part.headers["Content-Range"] == f"bytes 10-19/{len(data)}"
    tail = httpx.get(cdn, headers={"Range": "bytes=-4"})
    assert tail.status_code == 206 and tail.content == data[-4:]
    beyond = httpx.get(cdn, headers={"Range": f"bytes={len(data)}-"})
    assert beyond.status_code == 416 and beyond.headers["Content-Range"] == f"bytes */{len(data)}"
    head = httpx.head(cdn)
    assert head.status_code == 200 and head.headers["Content-Length"] == str(len(data))
    # The CDN lives on its own hostname: the Hub's hostname does not serve it.
    assert httpx.get(cdn.replace("localhost", "127.0.0.1"), headers={"Range": "bytes=0-1"}).status_code == 404


def test_get_safetensors_metadata_reads_one_range(fake_hub):
    meta = api(fake_hub).get_safetensors_metadata(MINILM)
    assert meta.files_metadata["model.safetensors"].parameter_count == MINILM_PARAMS
    assert wait_for(lambda: fake_hub.stats.by_bucket.get("cdn"))
    cdn = [entry for entry in fake_hub.stats.log if entry[1] == "cdn"]
    assert [(m, s, n) for m, _, _, s, n in cdn] == [("GET", 206, 100_001)]


def test_gated_repo_files(fake_hub, tmp_path):
    kwargs = dict(endpoint=fake_hub.endpoint, cache_dir=tmp_path)
    assert api(fake_hub).model_info(GATED).gated == "manual"  # metadata stays public
    with pytest.raises(GatedRepoError):
        hf_hub_download(GATED, "config.json", token=False, **kwargs)
    with pytest.raises(GatedRepoError):
        hf_hub_download(GATED, "config.json", token=OTHER_TOKEN, **kwargs)
    assert os.path.exists(hf_hub_download(GATED, "config.json", token=GRANTED_TOKEN, **kwargs))
    anonymous = httpx.head(f"{fake_hub.endpoint}/{GATED}/resolve/main/config.json")
    wrong = httpx.head(f"{fake_hub.endpoint}/{GATED}/resolve/main/config.json",
                       headers={"Authorization": f"Bearer {OTHER_TOKEN}"})
    assert (anonymous.status_code, wrong.status_code) == (401, 403)
    assert anonymous.headers["X-Error-Code"] == wrong.headers["X-Error-Code"] == "GatedRepo"


def test_missing_file_and_revision(fake_hub, tmp_path):
    with pytest.raises(RemoteEntryNotFoundError):
        hf_hub_download(MINILM, "nope.bin", endpoint=fake_hub.endpoint, cache_dir=tmp_path, token=False)
    with pytest.raises(RevisionNotFoundError):
        hf_hub_download(MINILM, "config.json", revision="nope", endpoint=fake_hub.endpoint, cache_dir=tmp_path,
                        token=False)


# ---- rate limits and faults --------------------------------------------------------------------


def test_ratelimit_headers_with_separate_buckets(hub_dir):
    with FakeHub(hub_dir, api_quota=3, resolver_quota=100) as hub:
        first = httpx.get(f"{hub.endpoint}/api/models/{MINILM}")
        assert first.headers["RateLimit"].startswith('"api";r=2;t=')
        assert first.headers["RateLimit-Policy"] == '"fixed window";"api";q=3;w=300'
        resolve = httpx.head(f"{hub.endpoint}/{MINILM}/resolve/main/config.json")
        assert resolve.headers["RateLimit"].startswith('"resolvers";r=99;')
        missing = httpx.get(f"{hub.endpoint}/api/models/nobody/nothing")
        assert missing.status_code == 401 and missing.headers["RateLimit"].startswith('"api";r=1;')
        httpx.get(f"{hub.endpoint}/api/models")
        over = httpx.get(f"{hub.endpoint}/api/models")
        assert over.status_code == 429 and over.headers["RateLimit"].startswith('"api";r=0;')
        assert httpx.head(f"{hub.endpoint}/{MINILM}/resolve/main/config.json").status_code == 307


def test_fault_switches(fake_hub):
    url = f"{fake_hub.endpoint}/api/models/{MINILM}"
    fake_hub.faults.storm_429, fake_hub.faults.storm_reset_s, fake_hub.faults.retry_after_s = 1, 7, 3
    storm = httpx.get(url)
    assert storm.status_code == 429 and storm.headers["Retry-After"] == "3"
    assert storm.headers["RateLimit"] == '"api";r=0;t=7'
    fake_hub.faults.errors_5xx = 1
    assert httpx.get(url).status_code == 503
    assert httpx.get(url).status_code == 200
    fake_hub.faults.latency_ms = 100
    started = time.monotonic()
    httpx.get(url)
    assert time.monotonic() - started >= 0.1
    fake_hub.faults.latency_ms = 0
    fake_hub.faults.truncate = 1
    with pytest.raises(httpx.RemoteProtocolError):
        httpx.get(url)
    fake_hub.faults.ignore_range = True
    cdn = httpx.head(f"{fake_hub.endpoint}/{MINILM}/resolve/main/config.json").headers["Location"]
    whole = httpx.get(fake_hub.endpoint + cdn, headers={"Range": "bytes=0-9"})
    assert whole.status_code == 200 and len(whole.content) > 10


def test_real_client_retries_later_pages_through_a_429(hub_dir):
    with FakeHub(hub_dir, page_size=3) as hub:
        pages = api(hub).list_models(sort="created_at")
        first = [next(pages) for _ in range(3)]
        hub.faults.storm_429, hub.faults.storm_reset_s = 1, 0
        rest = list(pages)
        assert len(first) + len(rest) == len(public_repo_ids())


# ---- repository identity -----------------------------------------------------------------------


def test_commit_sha_is_stable_and_changes_with_files(tmp_path, hub_dir):
    repo = tmp_path / "org" / "model"
    repo.mkdir(parents=True)
    (repo / "config.json").write_text("{}")
    with FakeHub(tmp_path) as hub:
        info = lambda: httpx.get(f"{hub.endpoint}/api/models/org/model").json()["sha"]  # noqa: E731
        before = info()
        assert info() == before
        (repo / "config.json").write_text('{"hidden_size": 8}')
        assert info() != before


def test_sparse_big_files_need_no_full_hash(tmp_path, monkeypatch):
    repo = tmp_path / "big" / "model"
    repo.mkdir(parents=True)
    declared = repo / "declared.safetensors"
    sparse = repo / "sparse.safetensors"
    for f in (declared, sparse):
        with open(f, "wb") as fh:
            fh.write(b"header")
            fh.truncate(FULL_HASH_LIMIT_BYTES + 1)  # a hole: past the full-hash limit, no disk used
    (repo / "_hub.json").write_text(json.dumps({"sha256": {"declared.safetensors": "ab" * 32}}))
    sparse_digests = []
    real_sparse_digest = fakehub_repos._sparse_digest
    monkeypatch.setattr(fakehub_repos, "_sparse_digest",
                        lambda path, size: sparse_digests.append(path.name) or real_sparse_digest(path, size))
    with FakeHub(tmp_path) as hub:
        siblings = {s["rfilename"]: s for s in
                    httpx.get(f"{hub.endpoint}/api/models/big/model", params={"blobs": "true"}).json()["siblings"]}
    # The declared file is not hashed at all; the undeclared one only over its data regions.
    assert sparse_digests == ["sparse.safetensors"]
    assert siblings["declared.safetensors"]["lfs"]["sha256"] == "ab" * 32
    assert len(siblings["sparse.safetensors"]["lfs"]["sha256"]) == 64
    assert siblings["sparse.safetensors"]["size"] == FULL_HASH_LIMIT_BYTES + 1


def test_lfs_files_are_hashed_at_start_and_served_from_the_cache(tmp_path, monkeypatch):
    repo = tmp_path / "org" / "model"
    repo.mkdir(parents=True)
    weights = repo / "model.safetensors"
    weights.write_bytes(os.urandom(3 * 1024 * 1024))
    expected = hashlib.sha256(weights.read_bytes()).hexdigest()
    sidecar = tmp_path / fakehub_repos.SHA256_SIDECAR
    with FakeHub(tmp_path) as hub:
        # Hashed in the background, as the real Hub hashes at push time, before any request asks.
        assert wait_for(lambda: sidecar.exists() and expected in sidecar.read_text())
        monkeypatch.setattr(fakehub_repos, "file_sha256", lambda *a, **k: pytest.fail("hashed again"))
        siblings = httpx.get(f"{hub.endpoint}/api/models/org/model", params={"blobs": "true"}).json()["siblings"]
        assert siblings[0]["lfs"]["sha256"] == expected
        sha = httpx.get(f"{hub.endpoint}/api/models/org/model").json()["sha"]
        # A changed file is a new commit and is hashed again.
        monkeypatch.undo()
        weights.write_bytes(os.urandom(1024))
        changed = httpx.get(f"{hub.endpoint}/api/models/org/model", params={"blobs": "true"}).json()
        assert changed["sha"] != sha
        assert changed["siblings"][0]["lfs"]["sha256"] == hashlib.sha256(weights.read_bytes()).hexdigest()


def test_metadata_edits_are_seen_even_within_one_mtime_tick(tmp_path):
    repo = tmp_path / "org" / "model"
    repo.mkdir(parents=True)
    (repo / "config.json").write_text("{}")
    meta = repo / "_hub.json"
    meta.write_text(json.dumps({"downloads": 1}))
    stamp = meta.stat().st_mtime_ns
    with FakeHub(tmp_path) as hub:
        downloads = lambda: httpx.get(f"{hub.endpoint}/api/models/org/model").json()["downloads"]  # noqa: E731
        assert downloads() == 1
        meta.write_text(json.dumps({"downloads": 2}))  # same size
        os.utime(meta, ns=(stamp, stamp))  # and the same mtime: a coarse clock tick
        assert downloads() == 2


def test_bad_metadata_is_a_one_line_error(tmp_path, capsys):
    repo = tmp_path / "org" / "model"
    repo.mkdir(parents=True)
    (repo / "_hub.json").write_text("{not json")
    with FakeHub(tmp_path) as hub:
        r = httpx.get(f"{hub.endpoint}/api/models/org/model")
        assert r.status_code == 500 and "_hub.json" in r.json()["error"]
    assert cli_main(["fakehub", str(tmp_path / "missing"), "--port", "0"]) == 2
    assert "does not exist" in capsys.readouterr().err



def test_an_unknown_token_is_refused_on_every_route_with_the_hubs_401(fake_hub):
    unknown = {"Authorization": "Bearer hf_expired_or_made_up_000"}
    for path in ("/api/models", f"/api/models/{MINILM}", f"/{MINILM}/resolve/main/config.json"):
        r = httpx.get(f"{fake_hub.endpoint}{path}", headers=unknown)
        assert r.status_code == 401 and "X-Error-Code" not in r.headers
        assert r.json()["error"] == r.headers["X-Error-Message"] == "Invalid credentials in Authorization header"
    # huggingface_hub tells it apart from a missing repo by that message.
    with pytest.raises(HfHubHTTPError) as caught:
        HfApi(endpoint=fake_hub.endpoint, token="hf_expired_or_made_up_000").model_info(MINILM)
    assert not isinstance(caught.value, RepositoryNotFoundError)
    assert HfApi(endpoint=fake_hub.endpoint, token=OTHER_TOKEN).model_info(MINILM).id == MINILM


def test_trending_scores_may_be_fractional_and_repo_names_may_start_with_an_underscore(tmp_path):
    folder = tmp_path / "_org" / "_model"
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    (folder / "_hub.json").write_text(json.dumps({"trendingScore": 12.5}))
    with FakeHub(tmp_path) as hub, HubClient(hub.endpoint, token="") as client:
        [entry] = httpx.get(f"{hub.endpoint}/api/models", params={"sort": "trendingScore"}).json()
        assert client.model_info("_org/_model").trending_score == 12.5
    assert entry["id"] == "_org/_model" and entry["trendingScore"] == 12.5
    assert hub_model(entry).trending_score == 12.5
    assert discord_commands.check_model_id("_org/_model") == "_org/_model"


def test_a_large_answer_ends_only_after_its_request_is_counted(fake_hub, monkeypatch):
    """A client that has read a whole body finds its request in ``stats`` at once, also when the
    body's last piece is larger than the handler's write buffer (which sends such a write at once)."""
    record = fake_hub.stats.record

    def slow_record(*args, **kwargs):
        time.sleep(0.3)  # the handler thread is slow to count: the client must still find it counted
        record(*args, **kwargs)

    monkeypatch.setattr(fake_hub.stats, "record", slow_record)
    cdn = httpx.head(f"{fake_hub.endpoint}/{MINILM}/resolve/main/model.safetensors").headers["Location"]
    body = httpx.get(cdn, headers={"Range": "bytes=0-99999"})
    assert body.status_code == 206 and len(body.content) == 100_000
    assert ("GET", "cdn", 206, 100_000) in [(m, b, s, n) for m, b, _, s, n in fake_hub.stats.log]
