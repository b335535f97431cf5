"""hubwatch backfill against the fake Hub, on a Dask cluster of 2 loopback worker processes started here.

The Hub holds copies of the real all-MiniLM-L6-v2 under several names, a repo with a hostile
safetensors header and a gated repo, listed 3 per page. The backfill must store every readable
revision once, record the two failures in the work table without stopping, resume after a SIGKILL of its driver at
the page it had not finished, and skip stored revisions without reading them again.

A second Hub holds the watch tests' models (tests/watch_samples.py: an original, a disguised copy, a
declared fine-tune and an independent model): the backfill must compare them as the watcher does,
record every copy relation earlier model first whatever order it met them in, and post exactly one
alert, for the copy, naming the original, also when its driver is killed and run again.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from watch_samples import COPY, DECLARED, INDEPENDENT, REFERENCE, build_hub_root

from bot.backfill.sources import RepoFile
from bot.cli import main
from bot.fakes.discord.webhook import FakeDiscordWebhook
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


def kill_driver_when(condition, cluster: str, env: dict[str, str], timeout_s: float) -> None:
    """Run `hubwatch backfill` in a child process (this checkout's code) and SIGKILL it once
    ``condition()`` holds, while it still runs."""
    path = os.pathsep.join([str(Path(__file__).resolve().parents[1]), os.environ.get("PYTHONPATH", "")])
    driver = subprocess.Popen([sys.executable, "-m", "bot.cli", "backfill", "--scheduler", cluster],
                              env={**os.environ, **env, "PYTHONPATH": path}, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE)
    try:
        met = wait_for(condition, timeout_s=timeout_s)
        assert driver.poll() is None, driver.communicate()
        driver.send_signal(signal.SIGKILL)
        out, err = driver.communicate(timeout=30)
        assert met, (out.decode()[-2000:], err.decode()[-4000:])
    finally:
        if driver.poll() is None:
            driver.kill()


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
        assert "6 compared" in out
        assert "progress what=backfill" in err  # plain progress lines: stderr is not a terminal here
        shas = {repo: hub.repos.get(repo).sha for repo in COPIES}
        assert stored(db) == sorted(shas.items())
        with Store.open(db) as store:
            assert store.get_model(COPIES[0]).created_at == "2025-01-01T00:00:00.000Z"
            tiers = {r[0] for r in store.conn.execute("SELECT tier FROM fingerprints")}
            assert tiers == {"full"}  # identical copies of each other: every one is evidence of a match
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
        env = backfill_env(monkeypatch, hub, db, tmp_path, HUBWATCH_BACKFILL_BATCH_SIZE="1")
        kill_driver_when(lambda: db.exists() and len(stored(db)) >= 2, cluster, env, timeout_s=300)
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


# ---- comparisons and alerts ------------------------------------------------------------------

@pytest.fixture(scope="module")
def watch_hub(tmp_path_factory, minilm_dir, variants) -> Path:
    return build_hub_root(tmp_path_factory.mktemp("watch-hub"), minilm_dir, variants)


def alerting_env(monkeypatch, hub: FakeHub, discord: FakeDiscordWebhook, db: Path, cwd: Path, **settings: str):
    return backfill_env(monkeypatch, hub, db, cwd, HUBWATCH_DISCORD_WEBHOOK=discord.url,
                        HUBWATCH_DISCORD_ALLOWED_HOSTS="127.0.0.1", **settings)


def relations(db: Path) -> dict[tuple[str, str], str]:
    """Recorded copy relations, (earlier repo, later repo) -> verdict."""
    with Store.open(db) as store:
        rows = store.conn.execute(
            "SELECT a.repo_id, b.repo_id, m.verdict FROM matches m JOIN fingerprints a ON a.id = m.fingerprint_a "
            "JOIN fingerprints b ON b.id = m.fingerprint_b").fetchall()
    return {(a, b): verdict for a, b, verdict in rows}


def assert_one_alert_for_the_copy(db: Path, discord: FakeDiscordWebhook) -> dict[tuple[str, str], str]:
    assert len(discord.messages) == 1
    text = json.dumps(discord.messages[0].embeds[0])
    assert COPY in text and REFERENCE in text and DECLARED not in text
    found = relations(db)
    assert found[(REFERENCE, COPY)] == "weights-derived"
    assert found[(REFERENCE, DECLARED)] == "weights-derived"  # recorded, not alerted: it declares its base
    with Store.open(db) as store:
        assert {k: v for k, v in store.alert_counts().items() if v} == {"delivered": 1}
        created = {repo: store.get_model(repo).created_at for repo in (REFERENCE, COPY, DECLARED, INDEPENDENT)}
        assert set(store.revision_counts().items()) >= {("done", 4), ("unmatched", 0), ("undecided", 0)}
    assert all(created[a] < created[b] for a, b in found)  # earlier model first
    assert not any(INDEPENDENT in pair for pair in found)
    return found


def test_backfill_compares_like_the_watcher_and_alerts_once_for_the_undeclared_copy(
        cluster, watch_hub, tmp_path, monkeypatch, capsys):
    db = tmp_path / "hub.db"
    with FakeHub(watch_hub, page_size=2) as hub, FakeDiscordWebhook() as discord:
        alerting_env(monkeypatch, hub, discord, db, tmp_path, HUBWATCH_BACKFILL_PROGRESS_INTERVAL_S="0.1")
        assert main(["backfill", "--scheduler", cluster]) == 0  # listed newest first: the original last
        out, err = capsys.readouterr()
        assert "4 fingerprinted, 0 already done, 0 failed" in out
        assert "compared, " in err and 'what="backfill: deciding alerts"' in err  # both phases show progress
        found = assert_one_alert_for_the_copy(db, discord)
        with Store.open(db) as store:
            tiers = {repo: store.find_fingerprint(repo).tier for repo in (REFERENCE, COPY, DECLARED, INDEPENDENT)}
        assert tiers == {REFERENCE: "full", COPY: "full", DECLARED: "full", INDEPENDENT: "compact"}

        # Killed right after the alert was queued, before any revision was marked: every one is
        # compared and judged again, and nothing is alerted twice.
        with Store.open(db) as store:
            store.conn.execute("UPDATE revisions SET state = 'unmatched'")
        assert main(["backfill", "--scheduler", cluster]) == 0
        out, err = capsys.readouterr()
        assert "0 fingerprinted, 4 already done" in out and "4 compared (" in out and "), 0 alerts" in out
        assert 'what="backfill: comparing"' in err  # the leftovers, before the listing
        assert assert_one_alert_for_the_copy(db, discord) == found

    # The same models met oldest first (a repo list): the same relations, the same one alert.
    repos = tmp_path / "repos.txt"
    repos.write_text("\n".join((REFERENCE, COPY, DECLARED, INDEPENDENT)) + "\n")
    db = tmp_path / "oldest-first.db"
    with FakeHub(watch_hub, page_size=2) as hub, FakeDiscordWebhook() as discord:
        alerting_env(monkeypatch, hub, discord, db, tmp_path)
        assert main(["backfill", "--scheduler", cluster, "--repos", str(repos)]) == 0
        assert "4 fingerprinted" in capsys.readouterr().out
        assert assert_one_alert_for_the_copy(db, discord) == found


def test_a_backfill_killed_while_comparing_resumes_without_losing_or_doubling_an_alert(
        cluster, watch_hub, tmp_path, monkeypatch, capsys):
    db = tmp_path / "hub.db"
    with FakeHub(watch_hub, page_size=2) as hub, FakeDiscordWebhook() as discord:
        hub.faults.latency_ms = 100  # re-reads of compact models for comparisons are slow too
        env = alerting_env(monkeypatch, hub, discord, db, tmp_path, HUBWATCH_BACKFILL_BATCH_SIZE="1")

        def compared() -> bool:
            if not db.exists():
                return False
            with Store.open(db) as store:
                return store.revision_counts()["done"] >= 1

        kill_driver_when(compared, cluster, env, timeout_s=300)
        with Store.open(db) as store:
            assert not any(store.alert_counts().values())  # killed before the listing was complete: nothing judged yet

        hub.faults.latency_ms = 0
        assert main(["backfill", "--scheduler", cluster]) == 0
        assert "backfill complete" in capsys.readouterr().out
        assert_one_alert_for_the_copy(db, discord)
