"""The store-backed service the Discord bot calls, on real MiniLM fingerprints."""

from __future__ import annotations

import shutil

import pytest

from bot.discord.store_service import StoreService
from bot.hub.sources import index_one
from store.store import Store


@pytest.fixture
def service(tmp_path, minilm_dir):
    db = str(tmp_path / "hw.db")
    copy = tmp_path / "copy"
    shutil.copytree(minilm_dir, copy)
    store = Store.open(db)
    index_one(store, str(minilm_dir))
    store.close()
    return StoreService(db), copy


def test_compare_and_nearest(service, minilm_dir):
    svc, copy = service
    result = svc.compare(str(minilm_dir), str(copy))
    assert result.verdict == "identical" and result.png.startswith(b"\x89PNG")
    rows = svc.nearest(str(copy), 3)
    assert rows and rows[0].verdict == "identical"
    assert str(minilm_dir.resolve()) in svc.known_repo_ids(str(minilm_dir.resolve())[:10], 25)


def test_watch_list_and_status(service):
    svc, _ = service
    assert svc.watch_add("reference", "org/model", "alice")
    assert not svc.watch_add("reference", "org/model", "alice")
    assert [w.value for w in svc.watch_list()] == ["org/model"]
    assert svc.watch_remove("reference", "org/model", "alice")
    status = svc.status()
    assert status.queue_depth == 0 and status.last_poll_at is None
