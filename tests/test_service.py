"""The store-backed service the Discord bot calls, on real MiniLM fingerprints."""

from __future__ import annotations

import shutil

import pytest

from bot.app import App
from bot.hub.sources import index_one
from bot.settings import load_settings


@pytest.fixture
def service(tmp_path, minilm_dir):
    db = str(tmp_path / "hw.db")
    copy = tmp_path / "copy"
    shutil.copytree(minilm_dir, copy)
    with App.of(load_settings(env={"HUBWATCH_DB": db})) as app:
        with app.open_store() as store:
            index_one(store, app.fingerprint_spec(str(minilm_dir)))
        yield app.service(), copy


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
