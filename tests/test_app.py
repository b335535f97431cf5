"""The composition root: settings from a TOML file alone reach every command and the bot's service.

The environment holds no Hub endpoint, token or hubwatch setting; the TOML file names the fake
Hub, a token that only it grants access to a gated repo with, and caps. Every command must read
the gated repo through that endpoint with that token, and honour the caps.
"""

from __future__ import annotations

import json
import os

import pytest

from bot.app import App
from bot.cli import main
from bot.settings import known_env_vars
from hubfixtures import COPY, GATED, GRANTED_TOKEN, MINILM

pytestmark = pytest.mark.slow  # every command against the fake Hub: ~50 s on a shared core

TENSOR_CAP = 65536


@pytest.fixture
def toml_only(tmp_path, monkeypatch, fake_hub):
    """A hubwatch.toml holding endpoint, token, caps and store; an environment without settings."""
    for name in list(os.environ):
        if name.startswith(("HUBWATCH_", "HF_")) or name in known_env_vars():
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    config = tmp_path / "settings.toml"
    config.write_text(
        f'[hub]\nendpoint = "{fake_hub.endpoint}"\ntoken = "{GRANTED_TOKEN}"\n'
        f"[limits]\ntensor_bytes = {TENSOR_CAP}\n"
        f'[store]\npath = "{tmp_path / "toml.db"}"\n'
        "[feeds]\nnewest_enabled = false\nlast_modified_enabled = false\n")
    config.chmod(0o600)
    return config


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return code, out, err


def test_every_command_takes_endpoint_token_and_caps_from_the_toml_file(toml_only, capsys, fake_hub, tmp_path):
    # Options before or after the subcommand alike.
    code, out, err = run(capsys, "--config", toml_only, "fingerprint", GATED, "--json")
    assert code == 0, err
    assert 0 < json.loads(out)["weights"]["tensor_bytes_read"] <= TENSOR_CAP

    code, out, err = run(capsys, "compare", MINILM, GATED, "--config", toml_only)
    assert code == 0 and "verdict:    identical" in out, err

    code, out, err = run(capsys, "index", "add", GATED, "--config", toml_only)
    assert code == 0 and f"added: {GATED}@" in out, err
    code, out, err = run(capsys, "--config", toml_only, "index", "stats", "--json")
    assert code == 0 and json.loads(out)["fingerprints"] == 1, err

    code, out, err = run(capsys, "nearest", COPY, "--config", toml_only, "-k", "1")
    assert code == 0 and GATED in out and "identical" in out, err

    code, out, err = run(capsys, "watch", "--once", "--config", toml_only)
    assert code == 0 and " 0 errors" in out, err

    code, out, err = run(capsys, "doctor", "--config", toml_only)
    assert code == 0, out + err
    assert "settings: loaded from" in out and "FAIL" not in out and GRANTED_TOKEN not in out

    # Every authorized request went to the fake Hub named in the file only.
    assert fake_hub.stats.authorized_by_bucket.get("api")


def test_db_option_overrides_the_store_path_for_every_store_command(toml_only, capsys, tmp_path):
    other = tmp_path / "other.db"
    assert run(capsys, "index", "add", GATED, "--config", toml_only, "--db", other)[0] == 0
    code, out, _ = run(capsys, "--db", other, "--config", toml_only, "index", "stats", "--json")
    assert code == 0 and json.loads(out)["fingerprints"] == 1
    assert not (tmp_path / "toml.db").exists()


def test_the_bot_service_uses_the_configured_client_and_closes_it(toml_only):
    app = App.from_options(str(toml_only))
    with app:
        service = app.service()
        assert service.compare(MINILM, GATED).verdict == "identical"  # the gated repo needs the file's token
        assert service.nearest(GATED, 1) == []  # fingerprinted with the file's token, stored
        assert [row.repo_id for row in service.nearest(COPY, 1)] == [GATED]
        client = app.hub
    assert client._http.is_closed
