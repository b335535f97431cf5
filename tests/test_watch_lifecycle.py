"""`hubwatch watch` as a process meets it: a first run on an empty store, an offline Hub, a stop
request while the Hub is slow (issue 11, points 5 to 8)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bot.cli import main
from bot.fakes.discord.webhook import FakeDiscordWebhook
from bot.fakes.hub import FakeHub
from bot.fakes.hub.faults import FaultConfig
from store.store import Store
from watch_samples import COPY, REFERENCE, trending_only

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]
# Issue 11: SIGTERM or Ctrl-C ends the process within 10 s whatever is in flight.
STOP_LIMIT_S = 10.0


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_an_offline_first_run_says_why_it_cannot_seed_and_exits_non_zero_naming_the_feed(tmp_path, monkeypatch,
                                                                                          capsys):
    port = closed_port()
    for name, value in {"HF_ENDPOINT": f"http://127.0.0.1:{port}", "HF_TOKEN": "", "HUBWATCH_DB": str(tmp_path / "h.db"),
                        "HUBWATCH_FEEDS_NEWEST_ENABLED": "false", "HUBWATCH_FEEDS_LAST_MODIFIED_ENABLED": "false"}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.chdir(tmp_path)
    assert main(["watch", "--once"]) == 3  # HubUnavailableError
    captured = capsys.readouterr()
    err = captured.err.splitlines()
    assert any(line.startswith("hubwatch: cannot seed the references from 127.0.0.1 (") for line in err)
    assert "1 failed in this cycle; first: feed trending (on 127.0.0.1): " in err[-1]
    assert "Traceback" not in captured.err
    with Store.open(tmp_path / "h.db") as store:
        assert store.counters()["last_error"]["text_value"].startswith("feed trending: ")


def test_a_first_run_seeds_the_references_with_progress_then_alerts_the_copy(hub_root, tmp_path, monkeypatch,
                                                                             capsys):
    db = tmp_path / "first.db"
    with FakeHub(hub_root) as hub, FakeDiscordWebhook() as discord:
        trending_only(monkeypatch, hub, discord, db, tmp_path)
        monkeypatch.setenv("HUBWATCH_FEEDS_SEED_EMPTY_STORE", "true")
        # The reference is not in the listing: only the seed can bring it.
        monkeypatch.setenv("HUBWATCH_FEEDS_MAX_MODELS_PER_CYCLE", "1")
        code = main(["watch", "--once"])
        captured = capsys.readouterr()
        assert "hubwatch: the store is empty: fingerprinting the" in captured.err
        assert f"] {REFERENCE} ... ok" in captured.err
        assert "hubwatch: seeded 1 of " in captured.err
        assert code == 0, captured.err
        assert "1 fingerprinted, 1 alerts, 0 errors" in captured.out
        assert len(discord.messages) == 1 and COPY in discord.messages[0].embeds[0]["title"]


def _start(args: list[str], env: dict[str, str], cwd: Path, log: Path) -> subprocess.Popen:
    with log.open("w") as out:
        return subprocess.Popen([sys.executable, "-m", "bot.cli", *args], cwd=cwd, env=env, stdout=out,
                                stderr=subprocess.STDOUT)


def _stop_within_limit(proc: subprocess.Popen, sig: int) -> tuple[int, float]:
    started = time.monotonic()
    proc.send_signal(sig)
    try:
        code = proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    return code, time.monotonic() - started


def test_sigterm_and_ctrl_c_stop_within_10_s_against_a_slow_hub_and_nothing_is_lost(hub_root, tmp_path):
    db = tmp_path / "stop.db"
    with FakeHub(hub_root, faults=FaultConfig(latency_ms=1000)) as hub, FakeDiscordWebhook() as discord:
        env = {k: v for k, v in os.environ.items() if not k.startswith("HUBWATCH_") and k != "HF_TOKEN"}
        env.update({"HF_ENDPOINT": hub.endpoint, "HUBWATCH_DB": str(db), "HUBWATCH_DISCORD_WEBHOOK": discord.url,
                    "HUBWATCH_DISCORD_ALLOWED_HOSTS": "127.0.0.1", "HUBWATCH_FEEDS_SEED_EMPTY_STORE": "false",
                    "HUBWATCH_FEEDS_NEWEST_ENABLED": "false", "HUBWATCH_FEEDS_LAST_MODIFIED_ENABLED": "false",
                    "PYTHONPATH": os.getcwd()})
        for args, sig, expected in ((["watch"], signal.SIGTERM, 0), (["watch", "--once"], signal.SIGINT, 130)):
            log = tmp_path / f"{sig.name}.log"
            # Requests the previous run left in flight reach the fake Hub's log up to one latency
            # later: counted now, one of them would look like this run's read and stop it at start.
            time.sleep(hub.faults.latency_ms / 1000 + 0.5)
            served = len(hub.stats.log)
            proc = _start(args, env, tmp_path, log)
            # Stop once model files are being read: fingerprints in flight, each read taking 1 s.
            deadline = time.monotonic() + 120
            while proc.poll() is None and time.monotonic() < deadline and \
                    not any("/resolve/" in entry[2] for entry in hub.stats.log[served:]):
                time.sleep(0.1)
            code, took = _stop_within_limit(proc, sig)
            text = log.read_text()
            assert took < STOP_LIMIT_S, text
            assert code == expected, text
            assert "Traceback" not in text, text
        # Nothing was lost: a later run at full speed finishes the abandoned work and alerts once.
        hub.faults.latency_ms = 0
        with Store.open(db) as store:
            store.add_watch("reference", REFERENCE)
        proc = subprocess.run([sys.executable, "-m", "bot.cli", "watch", "--once"], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert len(discord.messages) == 1 and COPY in discord.messages[0].embeds[0]["title"]
        with Store.open(db) as store:
            assert store.alert_counts()["delivered"] == 1
            assert store.stats()["revisions"]["in_flight"] == 0
