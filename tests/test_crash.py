"""Crash test: `hubwatch watch --once` is killed with SIGKILL at random points while alerts are
pending, and restarted until the outbox is drained.

The watcher runs as its real command (settings from the environment, the SQLite outbox, the
Discord webhook sender) against the loopback fake Discord, which takes ``LATENCY`` seconds per
request, half before it acts and half after, so kills land inside requests: before Discord posted,
or after it posted and before the outbox committed. That last window is also hit on purpose: the
first life's first post is accepted and then left hanging, and the watcher is killed right there.

With the bot token every alert must be posted exactly once; without it, at least once, and every
duplicate must come from a resumed claim logged with its nonce.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from bot.fakes.discord import FakeDiscordWebhook
from store.store import Store
from alert_samples import footer, make_alert

pytestmark = pytest.mark.slow  # kills hubwatch processes mid-delivery

N_ALERTS = 12
LATENCY = 0.2
LEASE_S = 1  # a restarted watcher may take a dead one's alert after 1 s (a life starts in ~2 s)
KILL_WITHIN_S = 1.5  # a random kill comes this long at most after the life's first request
LIFE_TIMEOUT_S = 60
FOOTER_PREFIX = "hubwatch alert "
FOUND = "in-doubt alert was already posted; recording it, not posting again"
RESENT = "re-sending an alert whose previous attempt may have been posted (no bot token to check)"


@dataclass
class CrashRun:
    fake: FakeDiscordWebhook
    db: Path
    env: dict[str, str]
    workdir: Path
    logs: list[str] = field(default_factory=list)
    kills: int = 0
    # Kills after Discord accepted a post and before the outbox recorded it.
    window_kills: int = 0
    # Kills after a post's request left and before Discord acted on it (it then posted anyway).
    in_flight_kills: int = 0

    def start(self) -> tuple[subprocess.Popen, Path]:
        log = self.workdir / f"life-{len(self.logs) + 1}.log"
        with log.open("w") as out:
            proc = subprocess.Popen([sys.executable, "-m", "bot.cli", "watch", "--once"], cwd=self.workdir,
                                    env=self.env, stdout=out, stderr=subprocess.STDOUT)
        return proc, log

    def posted_not_recorded(self) -> set[str]:
        """Ids of messages Discord holds whose alert the outbox has not recorded delivered."""
        with Store.open(self.db) as store:
            rows = [store.get_alert(i) for i in range(1, N_ALERTS + 1)]
        delivered = {r.nonce for r in rows if r.status == "delivered"}
        return {m.id for m in self.fake.messages if nonce_of(m) not in delivered}

    def life(self, kill_after: float | None = None, wait_for_accept: bool = False) -> None:
        """One run of the watcher: SIGKILLed ``kill_after`` s after its first request (or right after
        Discord accepted a post, with ``wait_for_accept``), else left to finish."""
        before = self.posted_not_recorded()
        requests, messages = len(self.fake.requests), len(self.fake.messages)
        proc, log = self.start()
        try:
            if kill_after is not None or wait_for_accept:
                killed = self._kill_when_due(proc, requests, messages, kill_after, wait_for_accept)
            else:
                killed = False
            assert proc.wait(timeout=LIFE_TIMEOUT_S) == (-signal.SIGKILL if killed else 0), log.read_text()
            accepted_at_kill = {m.id for m in self.fake.messages}
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        self.logs.append(log.read_text())
        if killed:
            time.sleep(LATENCY)  # a request the dead watcher had fully sent is still acted on by Discord
            new = self.posted_not_recorded() - before
            self.kills += 1
            self.window_kills += bool(new & accepted_at_kill)
            self.in_flight_kills += bool(new - accepted_at_kill)

    def _kill_when_due(self, proc: subprocess.Popen, requests: int, messages: int, kill_after: float | None,
                       wait_for_accept: bool) -> bool:
        deadline = time.monotonic() + LIFE_TIMEOUT_S
        while proc.poll() is None and time.monotonic() < deadline:
            if wait_for_accept and len(self.fake.messages) > messages:
                break
            if not wait_for_accept and len(self.fake.requests) > requests:
                time.sleep(kill_after)
                break
            time.sleep(0.005)
        if proc.poll() is not None:
            return False
        proc.send_signal(signal.SIGKILL)
        return True

    def drain(self, max_lives: int = 4) -> None:
        for _ in range(max_lives):
            self.life()
            with Store.open(self.db) as store:
                if store.alert_counts()["delivered"] == N_ALERTS:
                    return
        raise AssertionError(f"outbox not drained after {max_lives} clean lives")

    def log_entries(self, message: str) -> list[dict]:
        return [entry for text in self.logs for line in text.splitlines() if line.startswith("{")
                for entry in [json.loads(line)] if entry["msg"] == message]


def nonce_of(message) -> str:
    return footer(message).removeprefix(FOOTER_PREFIX)


@pytest.fixture
def crash_run(tmp_path):
    db = tmp_path / "hubwatch.db"
    with Store.open(db) as store:
        for i in range(N_ALERTS):
            alert = make_alert(i)
            assert store.enqueue_alert(alert.key, alert.to_dict())
    with FakeDiscordWebhook(latency=LATENCY) as fake:
        env = {k: v for k, v in os.environ.items() if not k.startswith("HUBWATCH_") and k not in ("HF_TOKEN",)}
        env.update({
            "HUBWATCH_DB": str(db), "HUBWATCH_DISCORD_WEBHOOK": fake.url, "HUBWATCH_DISCORD_ALLOWED_HOSTS": "127.0.0.1",
            "HUBWATCH_ALERTS_DELIVERY_LEASE_S": str(LEASE_S), "HUBWATCH_LOG_FORMAT": "json",
            # Only the "watched" feed, whose watch list is empty: a cycle is the outbox drain.
            "HUBWATCH_FEEDS_NEWEST_ENABLED": "false", "HUBWATCH_FEEDS_TRENDING_ENABLED": "false",
            "HUBWATCH_FEEDS_SEED_EMPTY_STORE": "false",
            "HUBWATCH_FEEDS_LAST_MODIFIED_ENABLED": "false", "HF_ENDPOINT": "http://127.0.0.1:9",
        })
        yield CrashRun(fake, db, env, tmp_path)


def crash_and_drain(run: CrashRun, name: str, random_kills: int, seed: int) -> tuple[Counter, list]:
    """Kill the watcher once right after Discord accepted a post, then ``random_kills`` times at
    seeded random points, then let it run until the outbox is drained. Returns the number of posts
    per nonce and the outbox rows."""
    started = time.monotonic()
    rng = random.Random(seed)
    # The accept→commit window on purpose: the first post is accepted, its answer hangs, kill.
    run.fake.hang(1, seconds=20, after_accept=True)
    run.life(wait_for_accept=True)
    assert run.kills == 1 and run.window_kills == 1
    for _ in range(random_kills):
        run.life(kill_after=rng.uniform(0, KILL_WITHIN_S))
    run.drain()
    posts = Counter(nonce_of(m) for m in run.fake.messages)
    with Store.open(run.db) as store:
        rows = [store.get_alert(i) for i in range(1, N_ALERTS + 1)]
    print(f"\n{name}: {len(run.logs)} lives, {run.kills} kills, {run.window_kills} after Discord accepted and "
          f"before the commit, {run.in_flight_kills} with a post in flight (posted after the kill), "
          f"posts per alert {sorted(posts.values())}, {time.monotonic() - started:.1f} s")
    assert [r.status for r in rows] == ["delivered"] * N_ALERTS
    return posts, rows


def test_kill_9_at_random_points_with_the_bot_token_posts_every_alert_exactly_once(crash_run):
    run = crash_run
    run.env["HUBWATCH_DISCORD_TOKEN"] = run.fake.bot_token
    posts, rows = crash_and_drain(run, "bot token", random_kills=5, seed=7)
    assert posts == Counter({r.nonce: 1 for r in rows})  # none lost, none twice
    by_id = {m.id: nonce_of(m) for m in run.fake.messages}
    assert all(by_id[r.delivery_ref] == r.nonce for r in rows)  # recorded with the message posted
    # Every kill that left a posted alert unrecorded was settled by a later life finding it.
    found = run.log_entries(FOUND)
    assert len(found) >= run.window_kills + run.in_flight_kills and run.window_kills >= 1
    assert {e["nonce"] for e in found} <= set(posts) and all(e["message_id"] in by_id for e in found)
    everything = "\n".join(run.logs)
    assert run.fake.bot_token not in everything and run.fake.token not in everything


def test_kill_9_without_the_bot_token_is_at_least_once_and_duplicates_are_resumed_and_logged(crash_run):
    run = crash_run
    posts, rows = crash_and_drain(run, "no bot token", random_kills=2, seed=11)
    assert set(posts) == {r.nonce for r in rows}  # none lost
    resent = Counter(e["nonce"] for e in run.log_entries(RESENT))
    duplicated = {nonce: n - 1 for nonce, n in posts.items() if n > 1}
    assert duplicated, "the first life's kill after Discord accepted must cost a duplicate"
    # Each extra post came from a resumed claim, logged with the alert's nonce.
    assert all(resent[nonce] >= extra for nonce, extra in duplicated.items())
    assert not run.log_entries(FOUND)
