"""Issue 11's proof: an undeclared copy is alerted exactly once, naming the original, whatever order
the original, the copy and a declared fine-tune arrive in; the declared fine-tune is recorded, not
alerted.

The fake Hub serves all-MiniLM-L6-v2 (2021), a renamed, noised, bf16 copy (2026-11-20) and a heavy
fine-tune that declares the original as its base (2026-11-21, so the copy is older than it).
Orders: all three in one listing; the copy alone first, the original and the fine-tune a cycle
later; the copy and the fine-tune from the feed, the original by `hubwatch index add`.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bot.cli import main
from bot.fakes.discord.webhook import FakeDiscordWebhook
from bot.fakes.hub import FakeHub
from store.store import Store
from watch_samples import COPY, DECLARED, REFERENCE, publish as publish_folder, trending_only

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]

META = {
    REFERENCE: {"createdAt": "2021-08-30T00:00:00.000Z", "trendingScore": 5, "cardData": {"license": "apache-2.0"}},
    COPY: {"createdAt": "2026-11-20T00:00:00.000Z", "trendingScore": 90, "cardData": {"license": "mit"}},
    DECLARED: {"createdAt": "2026-11-21T00:00:00.000Z", "trendingScore": 80,
               "cardData": {"license": "apache-2.0", "base_model": REFERENCE}},
}


def publish(root: Path, repo_id: str, minilm_dir: Path, variants: dict[str, Path]) -> None:
    source = {REFERENCE: minilm_dir, COPY: variants["noise-rename-cast"], DECLARED: variants["finetune-heavy"]}[repo_id]
    publish_folder(root, repo_id, source, META[repo_id])


def watch_once(capsys) -> str:
    assert main(["watch", "--once"]) == 0
    return capsys.readouterr().out


def assert_one_alert_for_the_copy(discord: FakeDiscordWebhook, db: Path) -> dict:
    assert len(discord.messages) == 1
    embed = discord.messages[0].embeds[0]
    assert COPY in embed["title"] and REFERENCE in embed["title"]
    assert DECLARED not in embed["title"]
    with Store.open(db) as store:
        declared = store.matches_for(store.find_fingerprint(DECLARED).id)
        sources = {store.get_fingerprint(m.fingerprint_a).repo_id for m in declared
                   if m.fingerprint_b == store.find_fingerprint(DECLARED).id}
        assert REFERENCE in sources  # the fine-tune's relation is recorded
        assert store.alert_counts()["delivered"] == 1
    return embed


@pytest.mark.parametrize("order", ["same-cycle", "copy-first", "original-by-index-add"])
def test_the_undeclared_copy_is_alerted_once_in_every_arrival_order(order, tmp_path, minilm_dir, variants,
                                                                    monkeypatch, capsys):
    root, db = tmp_path / "hub", tmp_path / "hubwatch.db"
    root.mkdir()
    with FakeHub(root) as hub, FakeDiscordWebhook() as discord:
        trending_only(monkeypatch, hub, discord, db, tmp_path)
        if order == "same-cycle":
            for repo in (COPY, DECLARED, REFERENCE):
                publish(root, repo, minilm_dir, variants)
            assert "3 fingerprinted, 1 alerts, 0 errors" in watch_once(capsys)
        elif order == "copy-first":
            publish(root, COPY, minilm_dir, variants)
            assert "1 fingerprinted, 0 alerts, 0 errors" in watch_once(capsys)
            publish(root, DECLARED, minilm_dir, variants)
            publish(root, REFERENCE, minilm_dir, variants)
            assert "2 fingerprinted, 1 alerts, 0 errors" in watch_once(capsys)
        else:
            publish(root, COPY, minilm_dir, variants)
            publish(root, DECLARED, minilm_dir, variants)
            # The fine-tune matches the copy, but declares a base not indexed yet: it waits.
            assert "2 fingerprinted, 0 alerts, 0 errors" in watch_once(capsys)
            publish(root, REFERENCE, minilm_dir, variants)
            assert main(["index", "add", REFERENCE]) == 0
            out = capsys.readouterr().out
            assert "1 alert(s) raised, 1 delivered" in out
            assert f"found when {REFERENCE} was indexed" in json.dumps(discord.messages[0].embeds[0])
        assert_one_alert_for_the_copy(discord, db)
        # Nothing more in any later cycle.
        assert "0 alerts, 0 errors" in watch_once(capsys)
        assert len(discord.messages) == 1


@pytest.mark.parametrize("variant", ["vocab-prune", "vocab-replaced"])
def test_a_copy_under_another_vocabulary_of_a_compact_original_is_alerted(variant, tmp_path, minilm_dir, variants,
                                                                          monkeypatch, capsys):
    """The original arrives first and matches nothing, so only its compact fingerprint is kept; the
    copy, under a pruned or a new vocabulary, comes a cycle later. Its sketch must pass the screen
    of the compact original (fingerprints/sketch.py), which is then re-read from the Hub: the older
    sketch scored 0.35-0.36 for these, under its 0.6 screen, and the copy went unreported."""
    root, db = tmp_path / "hub", tmp_path / "hubwatch.db"
    root.mkdir()
    with FakeHub(root) as hub, FakeDiscordWebhook() as discord:
        trending_only(monkeypatch, hub, discord, db, tmp_path)
        publish(root, REFERENCE, minilm_dir, variants)
        assert "1 fingerprinted, 0 alerts, 0 errors" in watch_once(capsys)
        with Store.open(db) as store:
            assert store.find_fingerprint(REFERENCE).tier == "compact"
        publish_folder(root, COPY, variants[variant], META[COPY])
        assert "1 fingerprinted, 1 alerts, 0 errors" in watch_once(capsys)
        [message] = discord.messages
        assert COPY in message.embeds[0]["title"] and REFERENCE in message.embeds[0]["title"]
        assert "weights-derived" in json.dumps(message.embeds[0])
        with Store.open(db) as store:
            assert store.find_fingerprint(REFERENCE).tier == "full"  # re-read, and kept as evidence
