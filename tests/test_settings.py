"""Settings: defaults < TOML file < environment, clear errors naming the key, secrets never shown."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import given, settings as hyp_settings
from hypothesis import strategies as st

from bot.hub.urls import hub_url_allowed
from bot.settings import (
    ConfigError,
    Secret,
    Settings,
    known_env_vars,
    load_settings,
    render_example_toml,
    render_reference_table,
    settings_reference,
    splice_reference_table,
)

REPO = Path(__file__).resolve().parent.parent
HF_TOKEN = "hf_" + "AbCdEfGhIjKlMnOpQrStUvWxYz01234567"
WEBHOOK = "https://discord.com/api/webhooks/123456789012345678/" + "T" * 68  # real-endpoint-constant
LOCAL_WEBHOOK = "http://127.0.0.1:8765/api/webhooks/123456789012345678/" + "T" * 68


@pytest.fixture(autouse=True)
def clean_env(monkeypatch, tmp_path):
    """No HUBWATCH_*/HF_* variable from the caller's shell, and no ./hubwatch.toml in the way."""
    for name in list(os.environ):
        if name.startswith("HUBWATCH_") or name in known_env_vars():
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


def write_toml(tmp_path: Path, text: str, name: str = "custom.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_defaults_without_file_or_environment():
    s = load_settings(env={})
    assert s == Settings()
    assert s.config_file is None
    assert s.hub.endpoint == "https://huggingface.co"  # real-endpoint-constant
    assert not s.hub.token
    assert (s.feeds.newest_interval_s, s.feeds.trending_interval_s) == (120, 600)
    assert s.limits.tensor_bytes == 1024 * 1024
    assert s.alerts.on_declared_derivatives is False
    assert s.store.path == "hubwatch.db"
    assert s.metrics.port == 0
    assert s.logging.format == "text"


def test_file_then_environment_precedence(tmp_path):
    path = write_toml(tmp_path, """
[feeds]
newest_interval_s = 300
trending_enabled = false
[store]
path = "/data/from-file.db"
[logging]
format = "json"
""")
    env = {"HUBWATCH_FEEDS_NEWEST_INTERVAL_S": "90", "HUBWATCH_DB": "/data/from-env.db"}
    s = load_settings(path, env=env)
    assert s.feeds.newest_interval_s == 90  # env beats file
    assert s.feeds.trending_enabled is False  # file beats default
    assert s.store.path == "/data/from-env.db"
    assert s.logging.format == "json"
    assert s.config_file == str(path)


def test_config_file_from_env_var_and_from_working_directory(tmp_path):
    named = write_toml(tmp_path, "[metrics]\nport = 9100\n", "named.toml")
    assert load_settings(env={"HUBWATCH_CONFIG": str(named)}).metrics.port == 9100
    write_toml(tmp_path, "[metrics]\nport = 9200\n", "hubwatch.toml")
    assert load_settings(env={}).metrics.port == 9200
    assert load_settings(named, env={}).metrics.port == 9100  # an explicit path wins


def test_named_env_vars_for_the_common_settings():
    env = {
        "HF_ENDPOINT": "http://127.0.0.1:8080/",
        "HF_TOKEN": HF_TOKEN,
        "HUBWATCH_DISCORD_WEBHOOK": WEBHOOK,
        "HUBWATCH_DISCORD_TOKEN": "x" * 24 + ".abcdef." + "y" * 27,
        "HUBWATCH_DB": "/data/hubwatch.db",
        "HUBWATCH_METRICS_PORT": "9100",
        "HUBWATCH_LOG_FORMAT": "JSON",
        "HUBWATCH_FEEDS_LAST_MODIFIED_ENABLED": "off",
        "HUBWATCH_HUB_REDIRECT_HOSTS": "cdn.example, Other.Example ,",
    }
    s = load_settings(env=env)
    assert s.hub.endpoint == "http://127.0.0.1:8080"
    assert s.hub.token.reveal() == HF_TOKEN
    assert s.discord.webhook_url.reveal() == WEBHOOK
    assert s.store.path == "/data/hubwatch.db"
    assert s.metrics.port == 9100
    assert s.logging.format == "json"
    assert s.feeds.last_modified_enabled is False
    assert s.hub.redirect_hosts == ("cdn.example", "other.example")
    # The webhook's token alone too, as an error or a form field may print it.
    assert set(s.secrets()) == {HF_TOKEN, WEBHOOK, WEBHOOK.rsplit("/", 1)[1], env["HUBWATCH_DISCORD_TOKEN"]}


def test_secrets_never_appear_in_repr_or_str():
    s = load_settings(env={"HF_TOKEN": HF_TOKEN, "HUBWATCH_DISCORD_WEBHOOK": WEBHOOK})
    for text in (repr(s), str(s), repr(s.hub), f"{s.hub.token}", str(s.discord.webhook_url)):
        assert HF_TOKEN not in text and "T" * 60 not in text
    assert "**********" in repr(s.hub)
    assert repr(Secret()) == "Secret('')"


@pytest.mark.parametrize("env, fragment", [
    ({"HUBWATCH_FEEDS_NEWEST_INTERVAL_S": "soon"}, "feeds.newest_interval_s ($HUBWATCH_FEEDS_NEWEST_INTERVAL_S): expected a whole number"),
    ({"HUBWATCH_FEEDS_NEWEST_INTERVAL_S": "5"}, "must be at least 10"),
    ({"HUBWATCH_METRICS_PORT": "70000"}, "metrics.port ($HUBWATCH_METRICS_PORT): must be at most 65535"),
    ({"HUBWATCH_FEEDS_TRENDING_ENABLED": "maybe"}, "feeds.trending_enabled ($HUBWATCH_FEEDS_TRENDING_ENABLED): expected true or false"),
    ({"HUBWATCH_ALERTS_MIN_SEVERITY": "critical"}, "expected one of low, medium, high"),
    ({"HUBWATCH_HUB_TIMEOUT_S": "nan"}, "hub.timeout_s ($HUBWATCH_HUB_TIMEOUT_S): expected a number"),
    ({"HF_ENDPOINT": "ftp://example.org"}, "hub.endpoint: expected an http(s):// base URL"),
    ({"HUBWATCH_LIMITS_MODEL_BYTES": "1048576", "HUBWATCH_LIMITS_TENSOR_BYTES": "2097152"},
     "limits.model_bytes (1,048,576) must be at least limits.tensor_bytes"),
])
def test_bad_environment_values_name_the_key(env, fragment):
    with pytest.raises(ConfigError) as err:
        load_settings(env=env)
    assert fragment in str(err.value)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("toml, fragment", [
    ("[feeds]\nnewest_intervall_s = 60\n", "unknown key feeds.newest_intervall_s; valid keys in [feeds]: newest_enabled, newest_interval_s"),
    ("[feed]\nx = 1\n", "unknown section [feed]; valid sections: hub, feeds, limits"),
    ("feeds = 3\n", "feeds must be a [feeds] table"),
    ("[feeds]\nnewest_interval_s = \"120\"\n", "feeds.newest_interval_s"),
    ("[feeds]\nnewest_enabled = 1\n", "expected true or false"),
    ("[metrics]\nport = true\n", "metrics.port"),
    ("[hub]\nredirect_hosts = \"hf.co\"\n", "expected a list of strings"),
    ("[feeds\n", "is not valid TOML"),
])
def test_bad_files_name_the_key(tmp_path, toml, fragment):
    path = write_toml(tmp_path, toml)
    with pytest.raises(ConfigError) as err:
        load_settings(path, env={})
    assert fragment in str(err.value)


def test_missing_explicit_file_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "nope.toml", env={})


def test_bad_secret_value_is_not_echoed(tmp_path):
    path = write_toml(tmp_path, "[hub]\ntoken = 12345\n")
    with pytest.raises(ConfigError) as err:
        load_settings(path, env={})
    assert "(hidden)" in str(err.value) and "12345" not in str(err.value)


@pytest.mark.parametrize("url, fragment", [
    ("https://evil.example/api/webhooks/123456789012345678/" + "T" * 68, "host 'evil.example' is not one of discord.com"),  # real-endpoint-constant
    ("https://discord.com.evil.example/api/webhooks/123456789012345678/" + "T" * 68, "is not one of"),  # real-endpoint-constant
    ("http://discord.com/api/webhooks/123456789012345678/" + "T" * 68, "must be an https:// URL"),  # real-endpoint-constant
    ("https://discord.com/api/webhooks/12/short", "path must look like /api/webhooks/<id>/<token>"),  # real-endpoint-constant
])
def test_webhook_url_is_checked_without_echoing_the_token(url, fragment):
    with pytest.raises(ConfigError) as err:
        load_settings(env={"HUBWATCH_DISCORD_WEBHOOK": url})
    assert fragment in str(err.value)
    assert "T" * 60 not in str(err.value) and "short" not in str(err.value)


def test_loopback_webhook_allowed_when_listed():
    s = load_settings(env={"HUBWATCH_DISCORD_WEBHOOK": LOCAL_WEBHOOK, "HUBWATCH_DISCORD_ALLOWED_HOSTS": "127.0.0.1"})
    assert s.discord.webhook_url.reveal() == LOCAL_WEBHOOK
    assert load_settings(env={"HUBWATCH_DISCORD_WEBHOOK": WEBHOOK.replace("discord.com", "canary.discord.com")})  # real-endpoint-constant


def allows(hub, url: str) -> bool:
    """The Hub client's rule for ``url`` under these Hub settings."""
    return hub_url_allowed(url, hub.endpoint, hub.redirect_hosts)


def test_hub_requests_only_to_configured_hosts():
    hub = load_settings(env={}).hub
    assert allows(hub, "https://huggingface.co/api/models")  # real-endpoint-constant
    assert allows(hub, "https://cas-bridge.xethub.hf.co/xet-bridge-us/abc?Expires=1")
    assert allows(hub, "https://cdn-lfs-us-1.hf.co/repos/x")
    assert not allows(hub, "https://evil.example/model.safetensors")
    assert not allows(hub, "https://huggingface.co.evil.example/x")  # real-endpoint-constant
    assert not allows(hub, "http://huggingface.co/api/models")  # no downgrade to plain http  # real-endpoint-constant
    assert not allows(hub, "file:///etc/passwd")
    local = load_settings(env={"HF_ENDPOINT": "http://127.0.0.1:9000", "HUBWATCH_HUB_REDIRECT_HOSTS": "localhost"}).hub
    assert allows(local, "http://127.0.0.1:9000/org/name/resolve/abc/model.safetensors")
    assert allows(local, "http://localhost:9001/cdn/abc")
    assert not allows(local, "https://huggingface.co/api/models")  # real-endpoint-constant


def test_download_caps_by_file_kind():
    limits = load_settings(env={"HUBWATCH_LIMITS_JSON_BYTES": "5000"}).limits
    caps = limits.parse_envelope()
    assert caps.cap_for("config.json") == 5000
    assert caps.cap_for("tokenizer_config.json") == 5000
    assert caps.cap_for("tokenizer.json") == limits.tokenizer_bytes
    assert caps.cap_for("sub/tokenizer.model") == limits.tokenizer_bytes
    assert caps.cap_for("vocab.txt") == limits.tokenizer_bytes
    assert caps.cap_for("model-00001-of-00004.safetensors") == limits.header_bytes
    assert caps.cap_for("model.safetensors.index.json") == limits.header_bytes
    assert caps.cap_for("llama-7b.Q4_K_M.gguf") == limits.header_bytes


def test_stale_after_uses_slowest_enabled_feed():
    s = load_settings(env={})
    assert s.feeds.stale_after_s() == 3 * (600 + 10)
    s = load_settings(env={"HUBWATCH_FEEDS_TRENDING_ENABLED": "0", "HUBWATCH_FEEDS_LAST_MODIFIED_ENABLED": "0"})
    assert s.feeds.stale_after_s() == 3 * (120 + 10)


def test_every_key_has_a_distinct_env_var():
    rows = settings_reference()
    assert len({r.env for r in rows}) == len(rows)
    assert all(r.meaning.endswith((".", ")")) for r in rows)


def test_docs_table_matches_code():
    doc = (REPO / "docs" / "configuration.md").read_text()
    assert splice_reference_table(doc) == doc, "run: python -m bot.settings write-docs"
    for row in settings_reference():
        assert f"`{row.env}`" in render_reference_table()


def test_example_file_matches_code_and_loads_to_defaults():
    example = REPO / "hubwatch.example.toml"
    assert example.read_text() == render_example_toml(), "run: python -m bot.settings write-docs"
    loaded = load_settings(example, env={})
    assert loaded == Settings(config_file=str(example))


@pytest.mark.slow  # hypothesis fuzzing
@hyp_settings(max_examples=200, deadline=None)
@given(raw=st.text(max_size=30))
def test_any_env_string_loads_or_fails_cleanly(raw):
    for name in ("HUBWATCH_FEEDS_JITTER_S", "HUBWATCH_HUB_TIMEOUT_S", "HUBWATCH_FEEDS_NEWEST_ENABLED",
                 "HUBWATCH_ALERTS_MIN_SEVERITY", "HUBWATCH_HUB_REDIRECT_HOSTS", "HF_ENDPOINT"):
        try:
            load_settings(env={name: raw})
        except ConfigError as exc:
            assert "\n" not in str(exc)


def test_hub_settings_and_client_share_one_url_rule():
    """The fake Hub's CDN runs on another loopback name; settings and client must agree on it."""
    from bot.hub import HubClient

    local = load_settings(env={"HF_ENDPOINT": "http://127.0.0.1:9000"})
    cdn = "http://localhost:9000/cdn/org/name/abc/model.safetensors"
    with HubClient("http://127.0.0.1:9000", token="") as client:
        assert allows(local.hub, cdn) and client._allowed(cdn)
        assert not allows(local.hub, "http://evil.example/x") and not client._allowed("http://evil.example/x")
