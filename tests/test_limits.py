"""Every byte cap docs/configuration.md lists holds on every path: the CLI, the Discord bot's
service and the watcher all fingerprint through the composition root (bot/app.py)."""

from __future__ import annotations

import json
import os

import pytest

from bot.app import App
from bot.errors import USER_ERRORS
from bot.cli import main
from bot.settings import known_env_vars, load_settings
from bot.watch.watcher import Watcher
from fingerprints.envelope import LimitedReader
from hubfixtures import SHA, FolderHub, hub_model
from fingerprints.reader import LocalFolderReader

pytestmark = pytest.mark.slow  # 16 MiniLM fingerprints through the CLI, the bot and the watcher: ~50 s

MiB = 1024 * 1024

# (setting, value, what the refusal says); MiniLM's config.json is padded to ~5 KB, its
# tokenizer.json is 466 KB, its safetensors header 9 KB and a fingerprint of it reads ~1.5 MiB.
REFUSALS = [
    ("json_bytes", 1024, "config.json is 5,"),
    ("tokenizer_bytes", 1024, "tokenizer.json is 466,247 bytes, over the 1,024-byte limit"),
    ("header_bytes", 1024, "over the 1,024-byte limit (limits.header_bytes)"),
    ("model_bytes", MiB, "per-model"),
]


@pytest.fixture
def model(tmp_path, minilm_dir):
    """MiniLM with a 5 KB config.json, as a Hub repo may have (the weights are linked, not copied)."""
    folder = tmp_path / "model"
    folder.mkdir()
    for name in ("model.safetensors", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt"):
        os.symlink(minilm_dir / name, folder / name)
    config = json.loads((minilm_dir / "config.json").read_text())
    config["notes"] = "x" * 4500
    (folder / "config.json").write_text(json.dumps(config))
    return folder


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    for name in list(os.environ):
        if name.startswith("HUBWATCH_") or name in known_env_vars():
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    return monkeypatch




def hub_repo_over(folder, repo_id: str) -> LimitedReader:
    """``folder`` read as the Hub repo ``repo_id`` at SHA (a reader with the Hub reader's ``sha``
    and ``model``, which is not a LocalFolderReader)."""
    inner = LocalFolderReader(folder)
    inner.sha, inner.model = SHA, hub_model({"id": repo_id, "sha": SHA})
    return LimitedReader(inner, max_requests=10**6, max_bytes=2**40, max_seconds=3600)


def fingerprint_by(path: str, env: dict[str, str], folder, capsys):
    """Fingerprint ``folder`` the way ``path`` does; the fingerprint's JSON, or the error text."""
    if path == "cli":
        for name, value in env.items():
            os.environ[name] = value
        try:
            code = main(["fingerprint", str(folder), "--json"])
        finally:
            for name in env:
                del os.environ[name]
        out, err = capsys.readouterr()
        return json.loads(out) if code == 0 else err
    settings = load_settings(env=env)
    with App.of(settings) as app:
        if path == "bot":  # the bot takes Hub repo ids only: the folder plays the Hub repo
            app.open_repo = lambda repo_id, revision=None: hub_repo_over(folder, repo_id)
            try:
                app.service().nearest("someone/model", 1)
            except USER_ERRORS as exc:
                return str(exc)
            with app.open_store() as store:
                return store.load_fingerprint(store.find_fingerprint("someone/model").id).to_dict(False)
        watcher = Watcher(settings, FolderHub({"someone/model": folder}, {"someone/model": "2026-11-20T00:00:00.000Z"}), app.sender, app.fingerprint,
                          open_store=app.open_store)
        watcher.poll_feed("newest")
        with app.open_store() as store:
            found = store.find_fingerprint("someone/model", SHA)
            if found is None:
                return store.counters()["last_error"]["text_value"]
            return store.load_fingerprint(found.id).to_dict(False)


PATHS = ["cli", "bot", "watcher"]


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("key, value, refusal", REFUSALS, ids=[r[0] for r in REFUSALS])
def test_each_cap_refuses_the_model_on_every_path(clean_env, capsys, tmp_path, model, path, key, value, refusal):
    env = {"HUBWATCH_DB": str(tmp_path / "limits.db"), f"HUBWATCH_LIMITS_{key.upper()}": str(value)}
    got = fingerprint_by(path, env, model, capsys)
    assert isinstance(got, str) and refusal in got, got


@pytest.mark.parametrize("path", PATHS)
def test_the_tensor_sample_budget_holds_on_every_path(clean_env, capsys, tmp_path, model, path):
    env = {"HUBWATCH_DB": str(tmp_path / "limits.db"), "HUBWATCH_LIMITS_TENSOR_BYTES": "65536"}
    got = fingerprint_by(path, env, model, capsys)
    assert isinstance(got, dict), got
    assert 0 < got["weights"]["tensor_bytes_read"] <= 65536


def test_defaults_fingerprint_the_padded_model(clean_env, capsys, tmp_path, model):
    got = fingerprint_by("cli", {}, model, capsys)
    assert isinstance(got, dict) and got["weights"]["tensor_bytes_read"] > 65536
