"""End to end: `hubwatch watch --once` against the fake Hub and a fake Discord webhook.

The Hub holds a reference model and a trending list with a disguised copy of it (renamed, noised,
cast to bf16), an honestly declared fine-tune and an independent model of the same architecture.
One cycle must post exactly one alert, for the copy, with its evidence and plot; a second cycle
must post nothing more.
"""

from __future__ import annotations

import json

import pytest
from watch_samples import COPY, DECLARED, INDEPENDENT, REFERENCE, trending_only

from bot.cli import main
from bot.fakes.discord.webhook import FakeDiscordWebhook
from bot.fakes.hub import FakeHub
from store.store import Store

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]  # a cold variant cache trains models first

def test_one_cycle_posts_exactly_one_alert_for_the_undeclared_copy(hub_root, tmp_path, monkeypatch, capsys):
    db = tmp_path / "hubwatch.db"
    with FakeHub(hub_root) as hub, FakeDiscordWebhook() as discord:
        trending_only(monkeypatch, hub, discord, db, tmp_path)

        assert main(["index", "add", REFERENCE, "--db", str(db)]) == 0
        assert main(["watch", "--once"]) == 0
        out = capsys.readouterr().out
        assert "3 fingerprinted, 1 alerts, 0 errors" in out

        assert len(discord.messages) == 1
        message = discord.messages[0]
        embed = message.embeds[0]
        text = json.dumps(embed)
        assert COPY in text and REFERENCE in text
        assert "weights-derived" in text and "rename" in text and "noise" in text
        assert message.payload["allowed_mentions"] == {"parse": []}
        filename, content_type, png = next(iter(message.attachments.values()))
        assert content_type == "image/png" and png.startswith(b"\x89PNG")  # the evidence plot

        store = Store.open(str(db))
        try:
            assert store.alert_counts().get("delivered") == 1
            declared = store.matches_for(store.find_fingerprint(DECLARED).id)
            sources = {store.get_fingerprint(m.fingerprint_a).repo_id: m.verdict for m in declared}
            assert sources[REFERENCE] == "weights-derived"  # recorded, not alerted
            assert store.matches_for(store.find_fingerprint(INDEPENDENT).id) == []
            # Full detail for the reference and what matched; the unmatched model is kept compact.
            tiers = {repo: store.find_fingerprint(repo).tier for repo in (REFERENCE, COPY, DECLARED, INDEPENDENT)}
            assert tiers == {REFERENCE: "reference", COPY: "full", DECLARED: "full", INDEPENDENT: "compact"}
        finally:
            store.close()

        # A second cycle: every revision is known, nothing is fingerprinted or posted again.
        assert main(["watch", "--once"]) == 0
        assert "0 fingerprinted, 0 alerts, 0 errors" in capsys.readouterr().out
        assert len(discord.messages) == 1


def test_index_seed_fingerprints_references_and_skips_missing_ones(hub_root, tmp_path, monkeypatch, capsys):
    db = tmp_path / "seed.db"
    with FakeHub(hub_root) as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.endpoint)
        monkeypatch.setenv("HF_TOKEN", "")
        # "bert" references are not on this Hub: each is reported and skipped, the seed goes on.
        assert main(["index", "seed", "--family", "bert", "--db", str(db)]) == 2  # RepoNotFoundError's code
        captured = capsys.readouterr()
        assert "seeded 0 of 2 references (2 failed)" in captured.out
        assert captured.err.count("failed:") == 2 and "Traceback" not in captured.err
        assert captured.err.splitlines()[-1].startswith(
            "hubwatch: error: 2 of 2 references failed; first: google-bert/bert-base-uncased (on 127.0.0.1): "
            "repository not found")
        assert main(["index", "seed", "--family", "minilm", "--db", str(db)]) == 0
        captured = capsys.readouterr()
        assert "[1/1] sentence-transformers/all-MiniLM-L6-v2 ... ok" in captured.err
        assert "seeded 1 of 1 references (0 failed)" in captured.out
        # The seed recorded the Hub's model info: nearest dates the reference and marks it the original.
        assert main(["nearest", COPY, "-k", "1", "--db", str(db)]) == 0
        row = next(line for line in capsys.readouterr().out.splitlines() if REFERENCE in line)
        assert row.startswith(f"* {REFERENCE} ") and row.rstrip().endswith("2021-08-30")
    store = Store.open(str(db))
    try:
        assert store.find_fingerprint(REFERENCE) is not None
        assert [w.value for w in store.watch_list("reference")] == [REFERENCE]
    finally:
        store.close()


def test_watch_list_entries_are_polled(hub_root, tmp_path, monkeypatch, capsys):
    """/watch add author|reference takes effect: the watched feed indexes references and polls authors."""
    db = tmp_path / "watched.db"
    with FakeHub(hub_root) as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.endpoint)
        monkeypatch.setenv("HF_TOKEN", "")
        monkeypatch.setenv("HUBWATCH_DB", str(db))
        monkeypatch.setenv("HUBWATCH_FEEDS_SEED_EMPTY_STORE", "false")
        for feed in ("NEWEST", "TRENDING", "LAST_MODIFIED"):
            monkeypatch.setenv(f"HUBWATCH_FEEDS_{feed}_ENABLED", "false")
        monkeypatch.chdir(tmp_path)
        store = Store.open(str(db))
        store.add_watch("reference", REFERENCE, added_by="alice")
        store.add_watch("author", "someone", added_by="alice")
        store.close()
        assert main(["watch", "--once"]) == 0
        # The reference and someone/MiniLM-pro, alerted in the same cycle.
        assert "2 fingerprinted, 1 alerts, 0 errors" in capsys.readouterr().out
    store = Store.open(str(db))
    try:
        assert store.find_fingerprint(REFERENCE) is not None and store.find_fingerprint(COPY) is not None
        assert store.find_fingerprint(DECLARED) is None  # lab/ is not watched and its feeds are off
    finally:
        store.close()


def test_a_crash_after_storing_the_fingerprint_does_not_lose_the_alert(hub_root, tmp_path, monkeypatch, capsys):
    """The revision is marked done only after its alert is in the outbox."""
    db = tmp_path / "crash.db"
    with FakeHub(hub_root) as hub, FakeDiscordWebhook() as discord:
        trending_only(monkeypatch, hub, discord, db, tmp_path)
        assert main(["index", "add", REFERENCE, "--db", str(db)]) == 0

        def crash(self, *args, **kwargs):
            # Not an Exception: like a kill, it is not caught by the per-model error handling.
            raise KeyboardInterrupt("simulated crash after the fingerprint was stored")

        with monkeypatch.context() as m:
            m.setattr(Store, "record_match", crash)
            assert main(["watch", "--once"]) != 0
        assert main(["watch", "--once"]) == 0
        assert len(discord.messages) == 1 and COPY in json.dumps(discord.messages[0].embeds[0])


def test_a_source_and_its_copy_listed_in_one_cycle_still_alert(hub_root, tmp_path, monkeypatch, capsys):
    # No `index add`: the reference arrives in the same trending listing as its copy, listed after
    # it (lower trendingScore). The copy is ingested first and finds nothing; the alert must come
    # when the reference is ingested and matches the later copy.
    db = tmp_path / "hubwatch.db"
    with FakeHub(hub_root) as hub, FakeDiscordWebhook() as discord:
        trending_only(monkeypatch, hub, discord, db, tmp_path)
        assert main(["watch", "--once"]) == 0
        assert "4 fingerprinted, 1 alerts, 0 errors" in capsys.readouterr().out
        assert len(discord.messages) == 1 and COPY in json.dumps(discord.messages[0].embeds[0])
