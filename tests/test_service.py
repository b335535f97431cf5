"""The store-backed service the Discord bot calls: Hub repos only, on real MiniLM fingerprints.

A member's command argument that happens to name a folder on the server is still a Hub repo id:
the folder is never read, and nothing about the server's filesystem (paths indexed from the
command line, the database's path, the endpoint) reaches an answer.
"""

from __future__ import annotations

import json
import os

import pytest

from bot.app import App
from bot.discord.errors import BotInputError
from bot.discord.render import error_text, status_embed
from bot.discord.service import StatusInfo
from bot.hub.errors import RepoNotFoundError
from bot.settings import load_settings
from bot.errors import HubwatchError
from store.store import Store
from hubfixtures import COPY, MINILM


@pytest.fixture
def app(tmp_path, fake_hub, monkeypatch):
    monkeypatch.chdir(tmp_path)
    settings = load_settings(env={"HF_ENDPOINT": fake_hub.endpoint, "HUBWATCH_DB": str(tmp_path / "hw.db"),
                                  "HUBWATCH_DISCORD_WATCH_LIST_MAX": "2"})
    with App.of(settings) as built:
        yield built


@pytest.mark.slow  # fingerprints MiniLM twice over the fake Hub: ~30 s on a shared core
def test_compare_and_nearest_read_the_hub_and_a_repeated_comparison_is_cached(app, fake_hub, minilm_dir):
    service = app.service()
    with app.open_store() as store:  # a folder indexed from the command line, under this machine's path
        store.add_fingerprint(str(minilm_dir.resolve()), "local-x", app.fingerprint(app.open_reader(str(minilm_dir))))
    result = service.compare(MINILM, COPY)
    assert result.verdict == "identical" and result.png.startswith(b"\x89PNG")
    served = len(fake_hub.stats.log)
    assert service.compare(MINILM, COPY) is result and len(fake_hub.stats.log) == served

    service.nearest(MINILM, 3)  # indexes MINILM
    rows = service.nearest(COPY, 3)
    assert [r.repo_id for r in rows] == [MINILM]  # the identical local twin is not shown
    assert service.known_repo_ids("", 25) == [COPY, MINILM]
    assert service.known_repo_ids(str(minilm_dir.resolve())[:5], 25) == []


def test_an_argument_naming_a_server_folder_is_a_hub_id_and_the_folder_is_never_read(app, tmp_path):
    secret = tmp_path / "private" / "model"
    secret.mkdir(parents=True)
    (secret / "config.json").write_text(json.dumps({"model_type": "bert", "hidden_size": 31337}))
    assert os.path.isdir("private/model")  # relative to the bot's working directory
    service = app.service()
    for call in (lambda: service.nearest("private/model", 3), lambda: service.compare("private/model", COPY)):
        with pytest.raises(RepoNotFoundError) as caught:
            call()
        assert "31337" not in str(caught.value)
    with app.open_store() as store:
        assert store.find_fingerprint("private/model") is None
        assert not [r for r in store.conn.execute("SELECT repo_id FROM fingerprints") if r[0].startswith("/")]


HOME, OTHER = 1100000000000000001, 1200000000000000002


def test_the_watch_list_has_a_size_cap(app):
    service = app.service()
    assert service.watch_add("reference", "org/a", "alice", HOME) and service.watch_add("author", "org", "alice", HOME)
    with pytest.raises(BotInputError, match="watch list is full"):
        service.watch_add("reference", "org/c", "alice", HOME)
    assert service.watch_remove("reference", "org/a", "alice", HOME)
    assert [w.value for w in service.watch_list(HOME)] == ["org"]
    status = service.status()
    assert status.queue_depth == 0 and status.last_poll_at is None


def test_errors_and_status_show_members_no_paths_or_endpoint():
    line = error_text(str(HubwatchError("database is locked: /srv/hubwatch/hubwatch.db (https://hub.internal:8443/x)")))
    assert "/srv" not in line and "hub.internal" not in line and "database is locked" in line
    embed = status_embed(StatusInfo(None, 1, 0, 0, 1, "org/model@abc: cannot read ~/models/x or ./hubwatch.db"))
    [last_error] = [f.value for f in embed.fields if f.name == "Last error"]
    assert "org/model@abc" in last_error and "~/models" not in last_error and "hubwatch.db" not in last_error


def test_watch_lists_are_per_server_and_the_operators_entries_stay_with_the_home_server(tmp_path, fake_hub):
    db = tmp_path / "guilds.db"
    with Store.open(str(db)) as store:  # entries from the command line (and from before migration 0004)
        store.add_watch("reference", "operator/base", added_by="seed")
    settings = load_settings(env={"HF_ENDPOINT": fake_hub.endpoint, "HUBWATCH_DB": str(db),
                                  "HUBWATCH_DISCORD_GUILD_ID": str(HOME), "HUBWATCH_DISCORD_GLOBAL_COMMANDS": "false"})
    with App.of(settings) as app:
        service = app.service()
        assert [w.value for w in service.watch_list(HOME)] == ["operator/base"]
        assert service.watch_list(OTHER) == []  # another server's admin sees none of it...
        assert not service.watch_remove("reference", "operator/base", "mallory", OTHER)  # ...and removes none
        assert service.watch_add("author", "mallory-org", "mallory", OTHER)
        assert [w.value for w in service.watch_list(HOME)] == ["operator/base"]
        assert [w.value for w in service.watch_list(OTHER)] == ["mallory-org"]
        with app.open_store() as store:  # the watcher polls what any list watches
            assert {w.value for w in store.watch_list()} == {"operator/base", "mallory-org"}


def test_migration_0004_keeps_existing_watch_entries_with_the_home_server(tmp_path, fake_hub):
    from test_store_tiers import old_store

    db = tmp_path / "old.db"
    conn = old_store(db, before=4)
    conn.execute("INSERT INTO watch_list VALUES ('author', 'operator-org', 'alice (1)', NULL, '2025-01-01')")
    conn.close()
    settings = load_settings(env={"HF_ENDPOINT": fake_hub.endpoint, "HUBWATCH_DB": str(db),
                                  "HUBWATCH_DISCORD_GUILD_ID": str(HOME)})
    with App.of(settings) as app:
        service = app.service()
        assert [(w.value, w.added_by) for w in service.watch_list(HOME)] == [("operator-org", "alice (1)")]
        assert service.watch_list(OTHER) == []
