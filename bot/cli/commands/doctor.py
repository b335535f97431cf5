"""hubwatch doctor: check the setup and say what is wrong, one OK/WARN/FAIL line per check.

``--quick`` skips the slow and network checks (Hub, torch) and instead asks a running watcher's
/healthz endpoint, when metrics are on: that is the container HEALTHCHECK. Exit 0 when nothing
FAILed, 2 otherwise. Secrets are never printed: every line goes through the log redactor.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sqlite3
import sys
import time
import tomllib
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from urllib.parse import urlsplit

import httpx
from huggingface_hub.utils import parse_ratelimit_headers

from bot.ops.logging_setup import redact
from bot.settings import ConfigError, Settings
from bot.tls import verified_tls_context

EXIT_OK = 0
EXIT_FAILED = 2
# The Hub probe must not hold a healthcheck or an operator for long.
HUB_PROBE_TIMEOUT_S = 5.0
HEALTH_PROBE_TIMEOUT_S = 3.0
# Below this much free disk the store cannot take a day of fingerprints (~10 KB each, see store/);
# below the warning level it will be full within weeks at a few thousand models a day.
DISK_FAIL_BYTES = 100 * 1024 * 1024
DISK_WARN_BYTES = 1024 * 1024 * 1024
# HF user access tokens: "hf_" then 34 letters/digits (older ones are shorter, never under 30).
HF_TOKEN_RX = re.compile(r"^hf_[A-Za-z0-9]{30,}$")
# Discord bot tokens: base64 user id . base64 timestamp . HMAC.
DISCORD_BOT_TOKEN_RX = re.compile(r"^[A-Za-z0-9_\-]{23,28}\.[A-Za-z0-9_\-]{6,7}\.[A-Za-z0-9_\-]{27,}$")
SECRET_KEYS = (("hub", "token"), ("discord", "webhook_url"), ("discord", "bot_token"))
# Looked up in the webhook's channel to prove the bot can read it; no alert carries it.
DOCTOR_PROBE_NONCE = "hubwatch-doctor-probe"
# How far back the probe looks. A bot without Read Message History sees an empty history, which
# only betrays it when the channel's last message is newer than this; a week catches a channel
# in use without paging through a busy one.
DOCTOR_PROBE_LOOKBACK = timedelta(days=7)


@dataclass(frozen=True)
class Check:
    status: str  # OK | WARN | FAIL
    name: str
    detail: str


def register(sub) -> None:
    p = sub.add_parser(
        "doctor",
        help="check the configuration, store, Hub access and Discord settings",
        description="Check hubwatch's setup and say what is wrong: one OK/WARN/FAIL line per check. "
        "Exits 0 when nothing failed, 2 otherwise.",
    )
    p.add_argument("--quick", action="store_true",
                   help="local checks only, plus the running watcher's /healthz when metrics are on "
                   "(the container healthcheck)")
    p.set_defaults(func=run)


def check_unknown_env(unknown: list[str]) -> Check:
    if unknown:
        return Check("WARN", "environment", f"ignored, not hubwatch settings: {', '.join(unknown)}")
    return Check("OK", "environment", "no unknown HUBWATCH_* variables")


def check_config_file_secrets(settings: Settings) -> Check | None:
    """A config file holding secrets should be readable by its owner only."""
    if not settings.config_file:
        return None
    path = Path(settings.config_file)
    with path.open("rb") as fh:
        document = tomllib.load(fh)
    held = [f"{s}.{k}" for s, k in SECRET_KEYS if document.get(s, {}).get(k)]
    if held and path.stat().st_mode & 0o077:
        return Check("WARN", "config file", f"{path} holds {', '.join(held)} but others can read it: chmod 600 {path}")
    return Check("OK", "config file", f"{path}" + (" (secrets readable by owner only)" if held else ""))


def check_store(settings: Settings) -> Check:
    path = Path(settings.store.path)
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        return Check("FAIL", "store", f"folder {folder} does not exist")
    if not os.access(folder, os.W_OK | os.X_OK):
        return Check("FAIL", "store", f"folder {folder} is not writable (SQLite needs it for its journal)")
    if not path.exists():
        return Check("OK", "store", f"{path} will be created on first run")
    if not os.access(path, os.R_OK | os.W_OK):
        return Check("FAIL", "store", f"{path} is not readable and writable by this user")
    try:
        # mode=ro: doctor looks, it never creates, migrates or writes the store.
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=1.0)
        try:
            tables = conn.execute("SELECT count(*) FROM sqlite_master WHERE type = 'table'").fetchone()[0]
            schema = _schema_version(conn)
        finally:
            conn.close()
    except sqlite3.DatabaseError as exc:
        return Check("FAIL", "store", f"{path} cannot be opened as SQLite: {exc}")
    opened = f"{path} opens ({tables} tables, {path.stat().st_size:,} bytes"
    if schema is None:
        return Check("OK", "store", opened + ")")
    version, latest = schema
    if version > latest:
        return Check("FAIL", "store", f"{path} has schema version {version}, newer than the {latest} this hubwatch "
                     "knows: upgrade hubwatch")
    pending = f"; {latest - version} migration(s) run on next start" if version < latest else ""
    return Check("OK", "store", f"{opened}, schema {version}/{latest}{pending})")


def _schema_version(conn: sqlite3.Connection) -> tuple[int, int] | None:
    """(applied, latest known) schema versions, read without migrating; None without the store package."""
    try:
        from store.migrations import latest_version
    except ImportError:
        return None
    has_table = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations'").fetchone()
    applied = conn.execute("SELECT max(version) FROM schema_migrations").fetchone()[0] if has_table else None
    return int(applied or 0), latest_version()


def check_hub_token(settings: Settings) -> Check:
    token = settings.hub.token.reveal()
    if not token:
        return Check("WARN", "hub token", "HF_TOKEN unset: anonymous access gets half the API rate limit and no gated repos")
    if HF_TOKEN_RX.match(token):
        return Check("OK", "hub token", f"set (hf_…, {len(token)} characters)")
    return Check("WARN", "hub token", f"set but does not look like a Hugging Face token (hf_ + 34 letters/digits; "
                 f"this one has {len(token)} characters)")


def check_hub(settings: Settings) -> Check:
    url = f"{settings.hub.endpoint}/api/models"
    headers = {"Authorization": f"Bearer {settings.hub.token.reveal()}"} if settings.hub.token else {}
    started = time.monotonic()
    try:
        response = httpx.get(url, params={"limit": 1}, headers=headers,
                             timeout=min(settings.hub.timeout_s, HUB_PROBE_TIMEOUT_S), verify=verified_tls_context())
    except httpx.TimeoutException:
        return Check("FAIL", "hub", f"{url}: no answer within {min(settings.hub.timeout_s, HUB_PROBE_TIMEOUT_S):g} s")
    except httpx.HTTPError as exc:
        return Check("FAIL", "hub", f"{url}: cannot connect: {exc}")
    elapsed = time.monotonic() - started
    status = response.status_code
    if status == 401:
        why = "the token (HF_TOKEN) was rejected" if settings.hub.token else "it wants a token (set HF_TOKEN)"
        return Check("FAIL", "hub", f"{url}: 401 Unauthorized: {why}")
    if status == 429:
        limit = parse_ratelimit_headers(response.headers)
        wait = response.headers.get("Retry-After") or (limit.reset_in_seconds if limit else None)
        return Check("WARN", "hub", f"{url}: 429 rate limited" + (f", retry in {wait} s" if wait else "")
                     + ("" if settings.hub.token else "; an HF_TOKEN doubles the limit"))
    if status != 200:
        return Check("FAIL", "hub", f"{url}: HTTP {status} {response.reason_phrase}")
    try:
        listing = response.json()
    except json.JSONDecodeError:
        listing = None
    if not isinstance(listing, list):
        return Check("FAIL", "hub", f"{url}: answered 200 but not with a JSON list of models: is this a Hub endpoint?")
    if urlsplit(settings.hub.endpoint).scheme == "http":
        return Check("WARN", "hub", f"{url}: reachable ({elapsed:.2f} s) but over plain http")
    return Check("OK", "hub", f"{url}: reachable ({elapsed:.2f} s)")


def check_discord(settings: Settings) -> list[Check]:
    checks = []
    if settings.discord.webhook_url:
        # load_settings already refused a malformed URL or a host not allowed; say what was accepted.
        host = urlsplit(settings.discord.webhook_url.reveal()).hostname
        checks.append(Check("OK", "discord webhook", f"well-formed, host {host}"))
    else:
        checks.append(Check("WARN", "discord webhook", "HUBWATCH_DISCORD_WEBHOOK unset: alerts only print to the console"))
    token = settings.discord.bot_token.reveal()
    if not token:
        checks.append(Check("OK", "discord bot", "HUBWATCH_DISCORD_TOKEN unset: the question-answering bot is off"))
    elif DISCORD_BOT_TOKEN_RX.match(token):
        checks.append(Check("OK", "discord bot", "token set and well-formed"))
    else:
        checks.append(Check("WARN", "discord bot", "token set but not shaped like a Discord bot token (three dot-separated parts)"))
    return checks


def check_exactly_once(settings: Settings) -> Check | None:
    """Can the bot read the webhook's channel? That is what settles an alert whose delivery a
    crash left in doubt without posting it twice (bot/alerts/delivery.py)."""
    if not settings.discord.webhook_url:
        return None
    token = settings.discord.bot_token.reveal()
    if not token:
        return Check("WARN", "alert delivery", "at least once: a crash between Discord's answer and the outbox "
                     "commit can post an alert twice; set HUBWATCH_DISCORD_TOKEN to a bot that can read the "
                     "webhook's channel for exactly once")
    from bot.alerts.discord_webhook import DiscordWebhookSender, PostedLookupError

    with DiscordWebhookSender(settings.discord.webhook_url.reveal(), bot_token=token,
                              timeout=HUB_PROBE_TIMEOUT_S, max_attempts=1) as sender:
        try:
            sender.find_posted(DOCTOR_PROBE_NONCE, since=datetime.now(timezone.utc) - DOCTOR_PROBE_LOOKBACK)
        except PostedLookupError as exc:
            return Check("WARN", "alert delivery", f"at least once: the bot cannot read the webhook's channel ({exc})")
    return Check("OK", "alert delivery", "exactly once: the bot can read the webhook's channel")


def check_torch() -> Check:
    try:
        import torch
    except ImportError as exc:
        return Check("FAIL", "torch", f"cannot import torch: {exc}")
    return Check("OK", "torch", f"{torch.__version__}")


def check_disk(settings: Settings) -> Check:
    folder = Path(settings.store.path).parent
    folder = folder if folder.is_dir() else Path(".")
    free = shutil.disk_usage(folder).free
    shown = f"{free / 1024**3:.1f} GiB free under {folder.resolve()}"
    if free < DISK_FAIL_BYTES:
        return Check("FAIL", "disk", shown)
    if free < DISK_WARN_BYTES:
        return Check("WARN", "disk", shown)
    return Check("OK", "disk", shown)


def check_watcher_health(settings: Settings, quick: bool) -> Check | None:
    if not settings.metrics.port:
        if quick:
            return Check("WARN", "watcher", "metrics.port (HUBWATCH_METRICS_PORT) is off, so the watcher cannot be asked")
        return None
    host = "127.0.0.1" if settings.metrics.host in ("0.0.0.0", "::", "") else settings.metrics.host
    url = f"http://{host}:{settings.metrics.port}/healthz"
    try:
        response = httpx.get(url, timeout=HEALTH_PROBE_TIMEOUT_S, verify=verified_tls_context())
    except httpx.HTTPError as exc:
        return Check("FAIL" if quick else "WARN", "watcher", f"{url}: no watcher answering ({type(exc).__name__})")
    try:
        details = response.json()
    except json.JSONDecodeError:
        return Check("FAIL", "watcher", f"{url}: HTTP {response.status_code}, not a hubwatch health answer")
    if response.status_code == 200:
        return Check("OK", "watcher", f"healthy, last successful poll {details.get('seconds_since')} s ago")
    error = details.get("last_listing_error")
    return Check("FAIL", "watcher", f"{details.get('status', 'unhealthy')}: no successful poll for "
                 f"{details.get('seconds_since')} s (limit {details.get('max_poll_age_s')} s)"
                 + (f"; last error: {error}" if error else ""))


def run_checks(settings: Settings, unknown_env: list[str], quick: bool) -> list[Check]:
    checks = [check_unknown_env(unknown_env)]
    checks += [c for c in (check_config_file_secrets(settings),) if c]
    checks.append(check_store(settings))
    checks.append(check_disk(settings))
    checks.append(check_hub_token(settings))
    checks += check_discord(settings)
    if not quick:
        checks.append(check_hub(settings))
        checks += [c for c in (check_exactly_once(settings),) if c]
        checks.append(check_torch())
    health = check_watcher_health(settings, quick)
    if health:
        checks.append(health)
    return checks


def run(args, app) -> int:
    try:
        settings = app.settings
    except ConfigError as exc:
        print(f"FAIL settings: {redact(str(exc))}")
        return EXIT_FAILED
    checks = [Check("OK", "settings", f"loaded from {settings.config_file or 'defaults and environment'}")]
    checks += run_checks(settings, app.unknown_env_vars(), args.quick)
    for check in checks:
        print(redact(f"{check.status:<4} {check.name}: {check.detail}", settings.secrets()))
    failed = [c.name for c in checks if c.status == "FAIL"]
    if failed:
        print(f"doctor: {len(failed)} check(s) failed: {', '.join(failed)}", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK
