"""hubwatch doctor: one OK/WARN/FAIL line per check, exit 2 on any FAIL, secrets never printed."""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import sqlite3
import sys
import threading
import types
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml  # PyYAML comes with huggingface_hub

from bot.cli import build_parser, main
from bot.cli.commands import doctor as doctor_command
from bot.ops.metrics import Metrics, MetricsServer
from bot.settings import known_env_vars

HF_TOKEN = "hf_" + "AbCdEfGhIjKlMnOpQrStUvWxYz01234567"
# What the torch check imports under the env fixture: the real torch costs ~4 s of CPU to import, so
# only test_the_torch_check_imports_the_installed_torch (slow) loads it.
TORCH_STAND_IN = types.SimpleNamespace(__version__="2.13.0+stand-in")
WEBHOOK_TOKEN = "Wt" * 34
WEBHOOK = f"https://discord.com/api/webhooks/123456789012345678/{WEBHOOK_TOKEN}"  # real-endpoint-constant: validated, never contacted


class FakeHubHandler(BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802
        self.server.seen.append((self.path, self.headers.get("Authorization")))
        status, headers, body = self.server.answer
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def fake_hub():
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeHubHandler)
    server.answer = (200, {"Content-Type": "application/json"}, b'[{"id": "org/model"}]')
    server.seen = []
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def env(monkeypatch, tmp_path, fake_hub):
    """A clean environment pointing at the fake Hub, with the store in tmp_path and torch stood in."""
    monkeypatch.setitem(sys.modules, "torch", TORCH_STAND_IN)
    for name in list(os.environ):
        if name.startswith("HUBWATCH_") or name in known_env_vars():
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{fake_hub.server_port}")
    monkeypatch.setenv("HUBWATCH_DB", str(tmp_path / "hubwatch.db"))
    return monkeypatch


def doctor(capsys, *args):
    code = main(["doctor", *args])
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert all(l.split(" ", 1)[0] in ("OK", "WARN", "FAIL") for l in lines), out
    return code, {l.split(":", 1)[0].split(None, 1)[1]: l for l in lines}, out + err


def test_healthy_setup_exits_zero(capsys, env, fake_hub):
    env.setenv("HF_TOKEN", HF_TOKEN)
    env.setenv("HUBWATCH_DISCORD_WEBHOOK", WEBHOOK)
    code, lines, output = doctor(capsys)
    assert code == 0, output
    for name in ("settings", "environment", "store", "disk", "hub token", "discord webhook", "torch"):
        assert lines[name].startswith("OK"), lines[name]
    assert lines["torch"].endswith("torch: 2.13.0+stand-in")
    assert lines["hub"].startswith("WARN") and "plain http" in lines["hub"]  # the fake Hub is not https
    assert "host discord.com" in lines["discord webhook"]  # real-endpoint-constant: validated, never contacted
    assert fake_hub.seen == [("/api/models?limit=1", f"Bearer {HF_TOKEN}")]
    assert HF_TOKEN not in output and WEBHOOK_TOKEN not in output


def test_rejected_token_fails_without_printing_it(capsys, env, fake_hub):
    env.setenv("HF_TOKEN", HF_TOKEN)
    fake_hub.answer = (401, {"X-Error-Code": "InvalidCredentials"}, b'{"error": "Invalid credentials"}')
    code, lines, output = doctor(capsys)
    assert code == 2
    assert lines["hub"].startswith("FAIL") and "401 Unauthorized: the token (HF_TOKEN) was rejected" in lines["hub"]
    assert HF_TOKEN not in output


def test_rate_limited_is_a_warning_with_the_wait(capsys, env, fake_hub):
    fake_hub.answer = (429, {"RateLimit": '"api";r=0;t=117'}, b'{"error": "rate limited"}')
    code, lines, _ = doctor(capsys)
    assert lines["hub"].startswith("WARN") and "429 rate limited, retry in 117 s" in lines["hub"]
    assert "HF_TOKEN doubles the limit" in lines["hub"]
    assert lines["hub token"].startswith("WARN")
    assert code == 0


@pytest.mark.parametrize("answer, fragment", [
    ((503, {}, b"down"), "HTTP 503"),
    ((200, {"Content-Type": "text/html"}, b"<html>login</html>"), "not with a JSON list of models"),
])
def test_broken_hub_fails(capsys, env, fake_hub, answer, fragment):
    fake_hub.answer = answer
    code, lines, _ = doctor(capsys)
    assert code == 2 and lines["hub"].startswith("FAIL") and fragment in lines["hub"]


def test_unreachable_hub_fails(capsys, env):
    env.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # discard port: nothing listens
    code, lines, _ = doctor(capsys)
    assert code == 2 and lines["hub"].startswith("FAIL") and "cannot connect" in lines["hub"]


def test_bad_settings_fail_in_one_line(capsys, env, tmp_path):
    (tmp_path / "bad.toml").write_text("[feeds]\nnewest_interval_s = -1\n")
    code, lines, output = doctor(capsys, "--config", str(tmp_path / "bad.toml"))
    assert code == 2
    assert list(lines) == ["settings"] and "feeds.newest_interval_s" in lines["settings"]
    assert "Traceback" not in output


def test_store_problems(capsys, env, tmp_path):
    (tmp_path / "hubwatch.db").write_bytes(b"this is not a database" * 100)
    code, lines, _ = doctor(capsys, "--quick")
    assert code == 2 and lines["store"].startswith("FAIL") and "cannot be opened as SQLite" in lines["store"]
    env.setenv("HUBWATCH_DB", str(tmp_path / "missing" / "hubwatch.db"))
    code, lines, _ = doctor(capsys, "--quick")
    assert code == 2 and "does not exist" in lines["store"]


def test_existing_database_opens_untouched(capsys, env, tmp_path):
    db = tmp_path / "hubwatch.db"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE t (x)")
    before = db.read_bytes()
    code, lines, _ = doctor(capsys, "--quick")
    assert code == 0 and lines["store"].startswith("OK") and "(1 tables" in lines["store"]
    assert db.read_bytes() == before  # doctor never migrates or writes


def test_schema_from_a_newer_hubwatch_fails(capsys, env, tmp_path):
    migrations = pytest.importorskip("store.migrations")
    latest = migrations.latest_version()
    with sqlite3.connect(tmp_path / "hubwatch.db") as conn:
        conn.execute("CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name TEXT, applied_at TEXT)")
        conn.execute("INSERT INTO schema_migrations VALUES (?, 'future', '2099-01-01')", (latest + 1,))
    code, lines, _ = doctor(capsys, "--quick")
    assert code == 2 and f"schema version {latest + 1}, newer than the {latest}" in lines["store"]
    with sqlite3.connect(tmp_path / "hubwatch.db") as conn:
        conn.execute("UPDATE schema_migrations SET version = 1")
    code, lines, _ = doctor(capsys, "--quick")
    assert code == 0 and f"schema 1/{latest}" in lines["store"]


def test_torch_that_cannot_be_imported_fails_the_check(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)  # what Python does for a module that failed to import
    check = doctor_command.check_torch()
    assert check.status == "FAIL" and check.detail.startswith("cannot import torch: ")


@pytest.mark.slow  # imports torch (~4 s of CPU)
def test_the_torch_check_imports_the_installed_torch():
    check = doctor_command.check_torch()
    assert check.status == "OK" and check.detail.startswith(importlib.metadata.version("torch").split("+")[0])


def test_quick_skips_network_and_torch(capsys, env, fake_hub):
    code, lines, _ = doctor(capsys, "--quick")
    assert code == 0
    assert "hub" not in lines and "torch" not in lines and fake_hub.seen == []
    assert lines["watcher"].startswith("WARN")  # metrics off: nothing to ask


def test_quick_asks_the_running_watcher(capsys, env):
    clock = [1000.0]
    with MetricsServer(Metrics(clock=lambda: clock[0]), port=0, max_poll_age_s=60) as server:
        env.setenv("HUBWATCH_METRICS_PORT", str(server.port))
        code, lines, _ = doctor(capsys, "--quick")
        assert code == 0 and lines["watcher"].startswith("OK")
        clock[0] += 61
        code, lines, _ = doctor(capsys, "--quick")
        assert code == 2 and lines["watcher"].startswith("FAIL") and "no successful poll for 61" in lines["watcher"]
        port = server.port
    code, lines, _ = doctor(capsys, "--quick")
    assert code == 2 and lines["watcher"].startswith("FAIL") and f":{port}/healthz: no watcher answering" in lines["watcher"]


def test_warnings_for_env_typos_and_readable_secret_files(capsys, env, tmp_path):
    env.setenv("HUBWATCH_FEEDS_NEWEST_INTERVALS", "60")
    config = tmp_path / "hubwatch.toml"
    config.write_text(f'[hub]\ntoken = "{HF_TOKEN}"\n')
    config.chmod(0o644)
    code, lines, output = doctor(capsys, "--quick")
    assert code == 0
    assert lines["environment"].startswith("WARN") and "HUBWATCH_FEEDS_NEWEST_INTERVALS" in lines["environment"]
    assert lines["config file"].startswith("WARN") and "chmod 600" in lines["config file"]
    assert HF_TOKEN not in output
    config.chmod(0o600)
    _, lines, _ = doctor(capsys, "--quick")
    assert lines["config file"].startswith("OK")


def test_odd_tokens_are_flagged(capsys, env):
    env.setenv("HF_TOKEN", "not-a-token")
    env.setenv("HUBWATCH_DISCORD_TOKEN", "also-not-a-token")
    code, lines, output = doctor(capsys, "--quick")
    assert lines["hub token"].startswith("WARN") and "does not look like a Hugging Face token" in lines["hub token"]
    assert lines["discord bot"].startswith("WARN")
    assert "not-a-token" not in output


def test_database_made_by_the_store_is_current(capsys, env, tmp_path):
    store = pytest.importorskip("store")
    with store.Store.open(tmp_path / "hubwatch.db"):
        pass
    latest = pytest.importorskip("store.migrations").latest_version()
    code, lines, _ = doctor(capsys, "--quick")
    assert code == 0 and f"schema {latest}/{latest})" in lines["store"]


# --- the container files agree with the code ---

REPO = Path(__file__).resolve().parent.parent


def test_container_healthcheck_runs_doctor_quick():
    dockerfile = (REPO / "Dockerfile").read_text()
    argv = json.loads(re.search(r"HEALTHCHECK [^\n]*\\\n\s*CMD (\[.*\])", dockerfile).group(1))
    assert argv[0] == "hubwatch"
    args = build_parser().parse_args(argv[1:])
    assert args.func is doctor_command.run and args.quick
    assert re.search(r"^ENTRYPOINT \[\"hubwatch\"\]\s*$", dockerfile, re.M)
    assert re.search(r"^CMD \[\"watch\"\]\s*$", dockerfile, re.M)
    user = re.findall(r"^USER (\S+)", dockerfile, re.M)[-1]
    assert user.split(":")[0].isdigit() and user.split(":")[0] != "0"


def test_container_files_only_set_real_settings():
    known = known_env_vars()
    dockerfile = (REPO / "Dockerfile").read_text()
    in_dockerfile = set(re.findall(r"\b((?:HUBWATCH|HF)_[A-Z_]+)=", dockerfile))
    compose = yaml.safe_load((REPO / "compose.yaml").read_text())
    watcher_env = compose["services"]["watcher"]["environment"]
    assert in_dockerfile and in_dockerfile <= known
    assert set(watcher_env) <= known
    assert watcher_env["HUBWATCH_DB"] == "/data/hubwatch.db" and "HUBWATCH_DB=/data/hubwatch.db" in dockerfile
    assert compose["services"]["datasette"]["profiles"] == ["browse"]
    assert "hubwatch-data:/data:ro" in compose["services"]["datasette"]["volumes"]



def test_alert_delivery_says_whether_exactly_once_holds(capsys, env):
    from bot.fakes.discord.webhook import FakeDiscordWebhook

    with FakeDiscordWebhook() as fake:
        env.setenv("HUBWATCH_DISCORD_ALLOWED_HOSTS", "127.0.0.1")
        env.setenv("HUBWATCH_DISCORD_WEBHOOK", fake.url)
        code, lines, output = doctor(capsys)
        assert lines["alert delivery"].startswith("WARN") and "at least once" in lines["alert delivery"]
        env.setenv("HUBWATCH_DISCORD_TOKEN", fake.bot_token)
        code, lines, output = doctor(capsys)
        assert lines["alert delivery"].startswith("OK") and "exactly once" in lines["alert delivery"]
        fake.read_history = False  # Discord then answers 200 with an empty history...
        code, lines, output = doctor(capsys)
        assert lines["alert delivery"].startswith("OK")  # ...which an empty channel cannot contradict
        fake.add_channel_message("an earlier alert")
        code, lines, output = doctor(capsys)
        assert lines["alert delivery"].startswith("WARN") and "cannot read" in lines["alert delivery"]
        assert fake.bot_token not in output and fake.token not in output
