"""hubwatch backfill against the fake Hub, on a Dask cluster of 2 loopback worker processes started here.

The Hub holds copies of the real all-MiniLM-L6-v2 under several names, a repo with a hostile
safetensors header and a gated repo, listed 3 per page. The backfill must store every readable
revision once, record the two failures in the work table without stopping, resume after a SIGKILL of its driver at
the page it had not finished, and skip stored revisions without reading them again.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from bot.backfill.sources import RepoFile
from bot.cli import main
from bot.fakes.hub import FakeHub
from bot.hub import HubClient
from fingerprints.errors import InvalidModelError
from hubfixtures import link_minilm, wait_for
from store.store import Store

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

COPIES = [f"org{i % 2}/minilm-{i}" for i in range(6)]
BROKEN = "broken/bad-header"
GATED = "acme/gated"
PAGE_SIZE = 3


@pytest.fixture(scope="module")
def cluster():
    import distributed

    with distributed.LocalCluster(n_workers=2, threads_per_worker=2, processes=True, host="127.0.0.1",
                                  dashboard_address="127.0.0.1:0") as local:
        yield local.scheduler_address


@pytest.fixture(scope="module")
def hub_root(tmp_path_factory, minilm_dir) -> Path:
    root = tmp_path_factory.mktemp("backfill-hub")
    for i, repo in enumerate(COPIES):
        link_minilm(root / repo, minilm_dir)
        (root / repo / "_hub.json").write_text(json.dumps({"createdAt": f"2025-01-0{i + 1}T00:00:00.000Z"}))
    broken = root / BROKEN
    broken.mkdir(parents=True)
    (broken / "config.json").write_text('{"model_type": "bert"}')
    (broken / "model.safetensors").write_bytes(b"\xff" * 64)  # header length 2^64-1
    (broken / "_hub.json").write_text(json.dumps({"createdAt": "2025-02-01T00:00:00.000Z"}))
    gated = root / GATED
    gated.mkdir(parents=True)
    (gated / "config.json").write_text('{"model_type": "bert"}')
    (gated / "_hub.json").write_text(json.dumps({"createdAt": "2025-03-01T00:00:00.000Z", "gated": "manual"}))
    return root


def backfill_env(monkeypatch, hub: FakeHub, db: Path, cwd: Path, **settings: str) -> dict[str, str]:
    env = {"HF_ENDPOINT": hub.endpoint, "HF_TOKEN": "", "HUBWATCH_DB": str(db), **settings}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.chdir(cwd)  # no stray ./hubwatch.toml
    return env


def stored(db: Path) -> list[tuple[str, str]]:
    with Store.open(db) as store:
        return sorted(tuple(r) for r in store.conn.execute("SELECT repo_id, sha FROM fingerprints"))


def test_backfill_stores_every_revision_records_failures_and_skips_stored_ones(
        cluster, hub_root, tmp_path, monkeypatch, capsys):
    db = tmp_path / "hub.db"
    with FakeHub(hub_root, page_size=PAGE_SIZE) as hub:
        backfill_env(monkeypatch, hub, db, tmp_path, HUBWATCH_BACKFILL_PROGRESS_INTERVAL_S="0.1")
        assert main(["backfill", "--scheduler", cluster]) == 0
        out, err = capsys.readouterr()
        assert "backfill complete: 6 fingerprinted, 0 already done, 2 failed" in out
        assert "progress what=backfill" in err  # plain progress lines: stderr is not a terminal here
        shas = {repo: hub.repos.get(repo).sha for repo in COPIES}
        assert stored(db) == sorted(shas.items())
        with Store.open(db) as store:
            assert store.get_model(COPIES[0]).created_at == "2025-01-01T00:00:00.000Z"
            tiers = {r[0] for r in store.conn.execute("SELECT tier FROM fingerprints")}
            assert tiers == {"compact"}  # the tier every model gets; nothing was compared
            assert {repo: store.get_revision(repo, sha).state for repo, sha in shas.items()} == dict.fromkeys(COPIES, "done")
            failures = {repo: store.get_revision(repo, hub.repos.get(repo).sha) for repo in (BROKEN, GATED)}
            assert {repo: (r.state, r.reason) for repo, r in failures.items()} == {
                BROKEN: ("skipped", "invalid or hostile files"), GATED: ("skipped", "gated")}
            assert "header claims" in failures[BROKEN].detail
            assert store.get_cursor("backfill:hub")["cursor"] is None  # complete: the next run starts over

        hub.stats.reset()
        assert main(["backfill", "--scheduler", cluster]) == 0
        assert "0 fingerprinted, 8 already done, 0 failed" in capsys.readouterr().out
        assert wait_for(lambda: hub.stats.requests > 0)
        assert {bucket for _, bucket, _, _, _ in hub.stats.log} == {"api"}  # the listing; no repo is read again


def test_killed_backfill_resumes_at_the_page_it_had_not_finished(cluster, hub_root, tmp_path, monkeypatch, capsys):
    db = tmp_path / "hub.db"
    with FakeHub(hub_root, page_size=PAGE_SIZE) as hub:
        hub.faults.latency_ms = 150  # slow enough to be killed half-way
        env = backfill_env(monkeypatch, hub, db, tmp_path, HUBWATCH_BACKFILL_BATCH_SIZE="1",
                           PYTHONPATH=os.pathsep.join([str(Path.cwd()), os.environ.get("PYTHONPATH", "")]))
        driver = subprocess.Popen([sys.executable, "-m", "bot.cli", "backfill", "--scheduler", cluster],
                                  env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            assert wait_for(lambda: db.exists() and len(stored(db)) >= 2, timeout_s=120)
            assert driver.poll() is None, driver.communicate()
            driver.send_signal(signal.SIGKILL)
            driver.wait(timeout=30)
        finally:
            if driver.poll() is None:
                driver.kill()
        before = stored(db)
        assert 2 <= len(before) < len(COPIES)
        with Store.open(db) as store:
            cursor = store.get_cursor("backfill:hub")["cursor"]
        assert cursor and cursor.startswith(hub.endpoint + "/api/models?")

        hub.faults.latency_ms = 0
        pages_read: list[str] = []
        read_page = HubClient.list_models_page
        monkeypatch.setattr(HubClient, "list_models_page",
                            lambda self, url, **kw: pages_read.append(url) or read_page(self, url, **kw))
        assert main(["backfill", "--scheduler", cluster]) == 0
        assert f"{len(COPIES) - len(before)} fingerprinted, " in capsys.readouterr().out
        assert len(stored(db)) == len(COPIES)
        assert pages_read[0] == cursor  # the listing went on at the saved page, not at the top


def test_repo_file_reads_ids_and_revisions_and_rejects_bad_lines(tmp_path):
    listing = tmp_path / "repos.txt"
    listing.write_text("# references\nsentence-transformers/all-MiniLM-L6-v2\n\nacme/x@0123abcd  # pinned\n")
    items = RepoFile(str(listing), page_lines=1).items
    assert [(i.repo_id, i.revision) for i in items] == [("sentence-transformers/all-MiniLM-L6-v2", None),
                                                        ("acme/x", "0123abcd")]
    pages = list(RepoFile(str(listing), page_lines=1).pages("1"))
    assert [(p.resume, p.next_resume, [i.repo_id for i in p.items]) for p in pages] == [("1", None, ["acme/x"])]
    listing.write_text("not a repo id\n")
    with pytest.raises(InvalidModelError, match=r"repos.txt:1: 'not a repo id' is not a Hub repo id"):
        RepoFile(str(listing))
