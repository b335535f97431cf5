"""hubwatch's one settings object: defaults, overlaid by a TOML file, overlaid by the environment.

``load_settings()`` is the only way to build a ``Settings``. Precedence, lowest first: the defaults
below, the TOML file (``--config``, else ``$HUBWATCH_CONFIG``, else ``./hubwatch.toml`` when it
exists), then environment variables. Every key has exactly one environment variable, listed by
``settings_reference()``; docs/configuration.md and hubwatch.example.toml are generated from that
list (``python -m bot.settings write-docs``) and a test fails when they drift.

Secrets (the Hub token, the Discord webhook URL and bot token) are held in ``Secret``, whose repr
and str never show the value: call ``.reveal()`` at the single place that sends it.

The caps in ``[limits]`` and the host lists in ``[hub]``/``[discord]`` are the hostile-input guard
rails: ``LimitSettings.parse_envelope()`` carries the caps to the fingerprint code (which cap a file
falls under: ``ParseEnvelope.cap_for``), the Hub client follows requests only to the hosts
``bot.hub.urls.hub_url_allowed`` allows, and ``DiscordSettings.check_webhook_url`` says whether
alerts may be posted to a URL at all, so a model card cannot steer hubwatch to an arbitrary host.
"""

from __future__ import annotations

import dataclasses
import os
import re
import sys
import tomllib
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from bot.errors import HubwatchError
from bot.watch.policy import SEVERITIES
from bot.hub.urls import HUB_ENDPOINT, HUB_REDIRECT_HOST_SUFFIXES, host_matches, is_loopback_host

from fingerprints.envelope import (DEFAULT_MAX_HEADER_BYTES, DEFAULT_MAX_JSON_BYTES, DEFAULT_MAX_JSON_TOKENS,
                                   DEFAULT_MAX_PARSE_MEMORY, DEFAULT_MAX_STRING_BYTES, DEFAULT_MAX_TOKENIZER_BYTES,
                                   DEFAULT_MAX_VOCAB, ParseEnvelope)

from fingerprints.weights import TENSOR_BYTE_BUDGET
from store.outbox import DEFAULT_LEASE

MiB = 1024 * 1024

# The hosts discord.py's Webhook.from_url accepts (discord(?:app)?.com), plus the two client
# channels Discord hands out webhook URLs on.
DISCORD_WEBHOOK_HOSTS = ("discord.com", "discordapp.com", "ptb.discord.com", "canary.discord.com")
# Path of an Execute Webhook URL; id and token shapes as in discord.py's Webhook.from_url regex.
DISCORD_WEBHOOK_PATH_RX = re.compile(r"^/api(?:/v\d+)?/webhooks/(?P<id>[0-9]{17,20})/(?P<token>[A-Za-z0-9.\-_]{60,})/?$")
# Where the TOML file is looked for when neither --config nor HUBWATCH_CONFIG names one.
DEFAULT_CONFIG_FILE = "hubwatch.toml"
CONFIG_ENV_VAR = "HUBWATCH_CONFIG"
ENV_PREFIX = "HUBWATCH_"
LOG_FORMATS = ("text", "json")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
# A watcher that missed this many cycles of its slowest feed in a row is reported unhealthy.
STALE_POLL_CYCLES = 3
TRUE_WORDS = ("1", "true", "yes", "on")
FALSE_WORDS = ("0", "false", "no", "off")


class ConfigError(HubwatchError):
    """A setting is missing, malformed or out of range; the message names the key."""

    exit_code = 78  # EX_CONFIG from sysexits.h


class Secret:
    """A string that never prints itself. ``reveal()`` returns the value."""

    __slots__ = ("_value",)
    MASK = "**********"

    def __init__(self, value: str = ""):
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __bool__(self) -> bool:
        return bool(self._value)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __str__(self) -> str:
        return self.MASK if self._value else ""

    def __repr__(self) -> str:
        return f"Secret({str(self)!r})"


def setting(default: Any, meaning: str, *, env: str | None = None, minimum: float | None = None,
            maximum: float | None = None, choices: tuple[str, ...] | None = None) -> Any:
    """A settings field: its default, what it means, and the checks its value must pass."""
    meta = {"meaning": meaning, "env": env, "minimum": minimum, "maximum": maximum, "choices": choices}
    if isinstance(default, (tuple, Secret)):
        return field(default_factory=lambda: default, metadata=meta)
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class HubSettings:
    endpoint: str = setting(HUB_ENDPOINT, "Base URL of the Hub (or a mirror / the fake Hub).", env="HF_ENDPOINT")
    token: Secret = setting(Secret(), "Hub access token, sent as a Bearer token; doubles the API rate limit. Never logged. "
                            "Unset: the one huggingface_hub finds ($HUGGING_FACE_HUB_TOKEN, or saved by `hf auth login`).",
                            env="HF_TOKEN")
    redirect_hosts: tuple[str, ...] = setting(
        HUB_REDIRECT_HOST_SUFFIXES,
        "Hosts (and their subdomains) that resolve redirects may lead to, besides the endpoint's own host.")
    timeout_s: float = setting(10.0, "Seconds before one Hub request times out (huggingface_hub's default is 10).",
                               minimum=0.1, maximum=600)
    request_deadline_s: float = setting(
        330.0, "Seconds one Hub request may take in all: waiting for a spent rate-limit window to reset (up to "
        "300 s, then 1 s more), retries and reading the answer; timeout_s bounds each read within it, and a request for a model ends at "
        "the model's limits.model_seconds if that comes first.",
        minimum=1, maximum=3600)
    max_connections: int = setting(32, "HTTP connections to the Hub and its CDN kept open at once.", minimum=1, maximum=256)

    @property
    def host(self) -> str:
        return (urlsplit(self.endpoint).hostname or "").lower()


@dataclass(frozen=True)
class FeedSettings:
    newest_enabled: bool = setting(True, "Poll the newest models (sort=createdAt).")
    newest_interval_s: int = setting(120, "Seconds between polls of the newest models.", minimum=10)
    trending_enabled: bool = setting(True, "Poll the trending models (sort=trendingScore).")
    trending_interval_s: int = setting(600, "Seconds between polls of the trending models.", minimum=10)
    last_modified_enabled: bool = setting(
        True, "Poll recently modified models (sort=lastModified): catches new revisions pushed to old repos.")
    last_modified_interval_s: int = setting(300, "Seconds between polls of recently modified models.", minimum=10)
    jitter_s: int = setting(10, "Up to this many seconds are added to each poll so feeds do not fire in lock-step.",
                            minimum=0)
    max_models_per_cycle: int = setting(
        100, "Most models one poll of one feed lists and considers (the Hub pages at most 1000).", minimum=1, maximum=1000)
    concurrency: int = setting(4, "Models fingerprinted at the same time.", minimum=1, maximum=64)
    unhealthy_after_s: int = setting(
        0, "Seconds without a successful feed listing after which /healthz (and `doctor --quick`) report "
        "unhealthy; 0: three cycles of the slowest enabled feed.", minimum=0)
    seed_empty_store: bool = setting(
        True, "On a store holding no fingerprints, `watch` first fingerprints the curated reference models "
        "(store/data/references.json), so the first copies it meets have something to match.")

    def stale_after_s(self) -> float:
        """How old the last successful poll may be before the watcher counts as unhealthy."""
        if self.unhealthy_after_s:
            return float(self.unhealthy_after_s)
        intervals = [
            interval
            for enabled, interval in (
                (self.newest_enabled, self.newest_interval_s),
                (self.trending_enabled, self.trending_interval_s),
                (self.last_modified_enabled, self.last_modified_interval_s),
            )
            if enabled
        ]
        return STALE_POLL_CYCLES * (max(intervals, default=self.newest_interval_s) + self.jitter_s)


@dataclass(frozen=True)
class LimitSettings:
    tensor_bytes: int = setting(TENSOR_BYTE_BUDGET, "Bytes of sampled tensor data read per model.", minimum=64 * 1024)
    model_bytes: int = setting(
        64 * MiB,
        "Most bytes read per model in all: headers, configs, tokenizer and tensor samples. all-MiniLM-L6-v2 "
        "takes 2.4 MB; the largest common tokenizer.json files (Gemma 3) are about 33 MB.",
        minimum=MiB)
    json_bytes: int = setting(DEFAULT_MAX_JSON_BYTES, "Largest config-like JSON file downloaded (config.json, "
                              "tokenizer_config.json, generation_config.json, ...).", minimum=1024)
    tokenizer_bytes: int = setting(DEFAULT_MAX_TOKENIZER_BYTES, "Largest tokenizer file downloaded (tokenizer.json, "
                                   "tokenizer.model, vocab files, merges.txt).", minimum=1024)
    compare_workers: int = setting(
        0, "Processes that compare a new model with its candidates, in parallel, one BLAS thread each (the watcher, the bot, the "
        "backfill's driver); 0: one per CPU core, 1: in the polling thread itself.", env="HUBWATCH_COMPARE_WORKERS", minimum=0, maximum=64)
    header_bytes: int = setting(DEFAULT_MAX_HEADER_BYTES, "Largest safetensors/GGUF header or shard index downloaded "
                                "(huggingface_hub refuses safetensors headers over 25 MB).", minimum=1024)
    model_requests: int = setting(
        400, "Most HTTP requests one model's fingerprint may make (all-MiniLM-L6-v2 takes 138, a 163-shard "
        "checkpoint about 230); a repo of hundreds of tiny shards is refused instead of starving the rest.",
        minimum=10)
    model_seconds: float = setting(
        300.0, "Most seconds one model's fingerprint may take, rate-limit waits included; a Hub request still "
        "running then is cut, the model is recorded as failed and the cycle goes on.", minimum=1)
    parse_tokens: int = setting(
        DEFAULT_MAX_JSON_TOKENS, "Most JSON tokens (or lines) one downloaded document may hold; counted before "
        "parsing (Gemma 3's tokenizer.json, the largest common one, has about 2.1 million).", minimum=1000)
    parse_string_bytes: int = setting(DEFAULT_MAX_STRING_BYTES, "Most bytes of string content in one document.",
                                      minimum=1024)
    parse_memory_bytes: int = setting(
        DEFAULT_MAX_PARSE_MEMORY, "Most memory one parsed document may take, estimated before parsing at 72 bytes "
        "per JSON token plus its strings (keeps the watcher under 1 GiB with hostile uploads).", minimum=MiB)
    vocab_tokens: int = setting(DEFAULT_MAX_VOCAB, "Most entries in one vocabulary (XLM-V, the largest known, has "
                                "901,629).", minimum=1000)


    def parse_envelope(self) -> ParseEnvelope:
        return ParseEnvelope(max_json_tokens=self.parse_tokens, max_string_bytes=self.parse_string_bytes,
                             max_vocab=self.vocab_tokens, max_memory_bytes=self.parse_memory_bytes,
                             max_json_bytes=self.json_bytes, max_tokenizer_bytes=self.tokenizer_bytes,
                             max_header_bytes=self.header_bytes)


@dataclass(frozen=True)
class AlertSettings:
    on_declared_derivatives: bool = setting(
        False, "Alert even when the suspect declares the source as its base model (an honest fine-tune).")
    min_severity: str = setting("medium", "Least severe alert that is sent (low, medium, high).", choices=SEVERITIES)
    delivery_lease_s: int = setting(
        int(DEFAULT_LEASE.total_seconds()),
        "Seconds an alert being posted stays claimed by its sender. After a crash it is taken up again once "
        "this has passed; keep it above the longest send (5 tries of up to 10 s, ~70 s) or a live sender's "
        "alert may be taken up and posted twice.", minimum=1, maximum=3600)
    plots_dir: str = setting(
        "", "Folder where console alerts save their evidence plot (PNG); empty: hubwatch-plots next to the "
        "store. `hubwatch watch --plots DIR` overrides it.")

    def plots_folder(self, store_path: str) -> str:
        return self.plots_dir or str(Path(store_path).resolve().parent / "hubwatch-plots")


@dataclass(frozen=True)
class DiscordSettings:
    webhook_url: Secret = setting(Secret(), "Discord webhook that receives alerts; unset prints alerts to the console.",
                                  env="HUBWATCH_DISCORD_WEBHOOK")
    bot_token: Secret = setting(
        Secret(), "Token of the Discord bot that answers questions; unset disables the bot. The watcher also uses "
        "it to look an in-doubt alert up in the webhook's channel before posting it again: exactly-once "
        "delivery across crashes needs it (View Channel, Read Message History, Message Content intent).",
        env="HUBWATCH_DISCORD_TOKEN")
    guild_id: int = setting(0, "Discord server (guild) the bot serves: its slash commands are synced there and "
                            "answered only there. Needed unless global_commands is set.", minimum=0)
    webhook_thread_id: int = setting(
        0, "Thread (forum post) the webhook posts alerts into; needed when the webhook's channel is a forum "
        "channel (Discord refuses a forum post without one, error 220001). 0: the channel itself.", minimum=0)
    global_commands: bool = setting(
        False, "Publish the slash commands globally and answer them in every server the bot is invited to "
        "(their managers then share one watch list).")
    heavy_commands_at_once: int = setting(
        2, "/nearest and /compare calls running at once, bot-wide (each fingerprints up to two models); "
        "a further one is refused with a line saying so.", minimum=1, maximum=16)
    command_deadline_s: int = setting(120, "Seconds after which a /nearest or /compare is answered with a "
                                      "timeout instead of its result.", minimum=5, maximum=840)
    watch_list_max: int = setting(200, "Most entries (authors and reference models) on the watch list.",
                                  minimum=1, maximum=10000)
    allowed_hosts: tuple[str, ...] = setting(DISCORD_WEBHOOK_HOSTS, "Hosts a webhook URL may point at.")

    def check_webhook_url(self, url: str) -> None:
        """Raise ConfigError unless ``url`` is an Execute Webhook URL on an allowed host. Never echoes the token."""
        parts = urlsplit(url)
        host = (parts.hostname or "").lower()
        where = f"discord.webhook_url ({DiscordSettings.env_name('webhook_url')})"
        if not host_matches(host, self.allowed_hosts):
            raise ConfigError(f"{where}: host {host or '(none)'!r} is not one of {', '.join(self.allowed_hosts)}")
        if parts.scheme != "https" and not (parts.scheme == "http" and is_loopback_host(host)):
            raise ConfigError(f"{where}: must be an https:// URL")
        if not DISCORD_WEBHOOK_PATH_RX.match(parts.path):
            raise ConfigError(f"{where}: path must look like /api/webhooks/<id>/<token>")

    @staticmethod
    def env_name(key: str) -> str:
        return _env_name("discord", next(f for f in dataclasses.fields(DiscordSettings) if f.name == key))


@dataclass(frozen=True)
class StoreSettings:
    path: str = setting("hubwatch.db", "SQLite file holding fingerprints, matches and the alert outbox.",
                        env="HUBWATCH_DB")
    retention_days: int = setting(
        0, "Matches and delivered alerts older than this many days are deleted by the watcher; 0 keeps them "
        "forever. Undelivered alerts and fingerprints are never deleted.", env="HUBWATCH_RETENTION_DAYS",
        minimum=0, maximum=36500)
    plot_retention_days: int = setting(
        30, "Evidence plots (~90 KB each) of delivered alerts older than this many days are dropped from the "
        "outbox, the alert text kept; 0 keeps them forever.", env="HUBWATCH_PLOT_RETENTION_DAYS",
        minimum=0, maximum=36500)
    vocabulary_quota_bytes: int = setting(
        1 << 30, "Bytes all stored vocabularies' token lists (compressed) may take together; past it a new "
        "vocabulary keeps its hash, size and MinHash but not its tokens (a distinct 1M-token vocabulary takes "
        "~19 MiB, so hostile uploads cannot grow the store without bound); counted as vocabularies_over_quota "
        "in `index stats`. 0: no quota.", minimum=0)


@dataclass(frozen=True)
class MetricsSettings:
    port: int = setting(0, "Port of the Prometheus /metrics and /healthz endpoint; 0 turns it off.",
                        env="HUBWATCH_METRICS_PORT", minimum=0, maximum=65535)
    host: str = setting("127.0.0.1", "Address the metrics endpoint listens on (0.0.0.0 inside a container).")


@dataclass(frozen=True)
class LoggingSettings:
    format: str = setting("text", "Log line format: text, or json (one object per line).", env="HUBWATCH_LOG_FORMAT",
                          choices=LOG_FORMATS)
    level: str = setting("INFO", "Least severe log level written.", env="HUBWATCH_LOG_LEVEL", choices=LOG_LEVELS)


@dataclass(frozen=True)
class BackfillSettings:
    scheduler: str = setting(
        "", "Address of the Dask scheduler `hubwatch backfill` runs its jobs on (tcp://host:8786); empty starts a "
        "cluster of backfill.workers processes on this machine, on loopback.")
    workers: int = setting(2, "Worker processes of the local backfill cluster (when backfill.scheduler is empty).",
                           minimum=1, maximum=256)
    threads_per_worker: int = setting(
        4, "Models each local backfill worker process fingerprints at once (the work waits on the Hub most of "
        "the time).", minimum=1, maximum=64)
    batch_size: int = setting(64, "Fingerprints the backfill writes to the store per transaction; the driver compares "
                              "each batch with the store before the next (kept in full on disk until then).",
                              minimum=1, maximum=10000)
    progress_interval_s: float = setting(
        15.0, "Seconds between the backfill's progress log lines when its output is not a terminal (a terminal "
        "gets a progress bar).", minimum=0.1)


SECTIONS: dict[str, type] = {
    "hub": HubSettings,
    "feeds": FeedSettings,
    "limits": LimitSettings,
    "alerts": AlertSettings,
    "discord": DiscordSettings,
    "store": StoreSettings,
    "metrics": MetricsSettings,
    "logging": LoggingSettings,
    "backfill": BackfillSettings,
}


@dataclass(frozen=True)
class Settings:
    hub: HubSettings = field(default_factory=HubSettings)
    feeds: FeedSettings = field(default_factory=FeedSettings)
    limits: LimitSettings = field(default_factory=LimitSettings)
    alerts: AlertSettings = field(default_factory=AlertSettings)
    discord: DiscordSettings = field(default_factory=DiscordSettings)
    store: StoreSettings = field(default_factory=StoreSettings)
    metrics: MetricsSettings = field(default_factory=MetricsSettings)
    logging: LoggingSettings = field(default_factory=LoggingSettings)
    backfill: BackfillSettings = field(default_factory=BackfillSettings)
    config_file: str | None = None  # the TOML file these settings came from, if any

    def secrets(self) -> tuple[str, ...]:
        """Every configured secret value, for the log redaction filter."""
        values = (self.hub.token, self.discord.webhook_url, self.discord.bot_token)
        found = [s.reveal() for s in values if s]
        webhook = DISCORD_WEBHOOK_PATH_RX.match(urlsplit(self.discord.webhook_url.reveal()).path)
        if webhook:  # the token alone, as an error or a form field may print it
            found.append(webhook["token"])
        return tuple(found)


def _env_name(section: str, f: dataclasses.Field) -> str:
    return f.metadata["env"] or f"{ENV_PREFIX}{section}_{f.name}".upper()


@dataclass(frozen=True)
class SettingDoc:
    key: str  # "section.name", as in the TOML file
    env: str
    default: str  # rendered as it would be written in the TOML file
    meaning: str


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Secret):
        return '""'
    if isinstance(value, tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return repr(value)


def settings_reference() -> list[SettingDoc]:
    """Every setting: key, environment variable, default and meaning, in file order."""
    rows = []
    for section, cls in SECTIONS.items():
        defaults = cls()
        for f in dataclasses.fields(cls):
            rows.append(SettingDoc(f"{section}.{f.name}", _env_name(section, f),
                                   _toml_value(getattr(defaults, f.name)), f.metadata["meaning"]))
    return rows


def known_env_vars() -> set[str]:
    return {row.env for row in settings_reference()} | {CONFIG_ENV_VAR}


def unknown_env_vars(env: Mapping[str, str] | None = None) -> list[str]:
    """HUBWATCH_* variables of ``env`` (the process environment by default) that are no setting:
    a typo there would otherwise be ignored in silence (``doctor`` warns about them)."""
    env = os.environ if env is None else env
    known = known_env_vars()
    return sorted(k for k in env if k.startswith(ENV_PREFIX) and k not in known)


def _describe_expected(tp: Any, meta: Mapping[str, Any]) -> str:
    if meta["choices"]:
        return "one of " + ", ".join(meta["choices"])
    return {bool: "true or false", int: "a whole number", float: "a number", str: "a string", Secret: "a string"}.get(
        tp, "a list of strings")


def _coerce(key: str, origin: str, tp: Any, meta: Mapping[str, Any], raw: Any) -> Any:
    """Turn a TOML value or an environment string into the field's type, or raise ConfigError."""
    from_env = isinstance(raw, str) and origin.startswith("$")

    def bad(why: str) -> ConfigError:
        shown = "(hidden)" if tp is Secret else repr(raw)
        return ConfigError(f"{key} ({origin}): {why}, got {shown}")

    if tp is bool:
        if isinstance(raw, bool):
            value: Any = raw
        elif from_env and raw.strip().lower() in TRUE_WORDS + FALSE_WORDS:
            value = raw.strip().lower() in TRUE_WORDS
        else:
            raise bad("expected true or false")
    elif tp in (int, float):
        if isinstance(raw, bool):
            raise bad(f"expected {_describe_expected(tp, meta)}")
        if from_env:
            try:
                value = tp(raw.strip())
            except ValueError:
                raise bad(f"expected {_describe_expected(tp, meta)}") from None
        elif isinstance(raw, int) or (tp is float and isinstance(raw, float)):
            value = tp(raw)
        else:
            raise bad(f"expected {_describe_expected(tp, meta)}")
        if tp is float and value != value:  # NaN compares unequal to everything, so no range check catches it
            raise bad("expected a number")
        if meta["minimum"] is not None and value < meta["minimum"]:
            raise bad(f"must be at least {meta['minimum']:g}")
        if meta["maximum"] is not None and value > meta["maximum"]:
            raise bad(f"must be at most {meta['maximum']:g}")
    elif tp in (str, Secret):
        if not isinstance(raw, str):
            raise bad("expected a string")
        value = raw.strip()
        if meta["choices"]:
            match = next((c for c in meta["choices"] if c.lower() == value.lower()), None)
            if match is None:
                raise bad(f"expected one of {', '.join(meta['choices'])}")
            value = match
        if tp is Secret:
            value = Secret(value)
    else:  # tuple[str, ...]
        if from_env:
            items = [part.strip() for part in raw.split(",")]
        elif isinstance(raw, list) and all(isinstance(item, str) for item in raw):
            items = [item.strip() for item in raw]
        else:
            raise bad("expected a list of strings")
        value = tuple(item.lower() for item in items if item)
    return value


def _check_endpoint(endpoint: str) -> str:
    parts = urlsplit(endpoint)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
        raise ConfigError(f"hub.endpoint: expected an http(s):// base URL, got {endpoint!r}")
    return endpoint.rstrip("/")


def _check_consistency(s: Settings) -> None:
    if s.limits.model_bytes < s.limits.tensor_bytes:
        raise ConfigError(
            f"limits.model_bytes ({s.limits.model_bytes:,}) must be at least limits.tensor_bytes ({s.limits.tensor_bytes:,})")
    if s.discord.webhook_url:
        s.discord.check_webhook_url(s.discord.webhook_url.reveal())


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None


def find_config_file(config_path: str | os.PathLike[str] | None, env: Mapping[str, str]) -> Path | None:
    """The TOML file to read: the explicit path, else $HUBWATCH_CONFIG, else ./hubwatch.toml if present."""
    if config_path:
        return Path(config_path)
    if env.get(CONFIG_ENV_VAR):
        return Path(env[CONFIG_ENV_VAR])
    default = Path(DEFAULT_CONFIG_FILE)
    return default if default.is_file() else None


def load_settings(config_path: str | os.PathLike[str] | None = None, env: Mapping[str, str] | None = None) -> Settings:
    """Defaults, overlaid by the TOML file, overlaid by environment variables (``env`` defaults to os.environ).

    With the process environment, a Hub token set nowhere else is resolved as huggingface_hub resolves
    it (``get_token``: $HF_TOKEN, the legacy $HUGGING_FACE_HUB_TOKEN, the token ``hf auth login`` saved),
    so hubwatch reads gated repos wherever the ``hf`` tools do."""
    resolve_hub_token = env is None
    env = os.environ if env is None else env
    path = find_config_file(config_path, env)
    document = _read_toml(path) if path else {}
    unknown_sections = sorted(set(document) - set(SECTIONS))
    if unknown_sections:
        raise ConfigError(f"{path}: unknown section [{unknown_sections[0]}]; valid sections: {', '.join(SECTIONS)}")
    built = {}
    for section, cls in SECTIONS.items():
        table = document.get(section, {})
        if not isinstance(table, dict):
            raise ConfigError(f"{path}: {section} must be a [{section}] table")
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(table) - set(fields))
        if unknown:
            raise ConfigError(f"{path}: unknown key {section}.{unknown[0]}; valid keys in [{section}]: {', '.join(fields)}")
        types = typing.get_type_hints(cls)
        values = {}
        for name, f in fields.items():
            key, env_var = f"{section}.{name}", _env_name(section, f)
            if env.get(env_var, "") != "":
                values[name] = _coerce(key, f"${env_var}", types[name], f.metadata, env[env_var])
            elif name in table:
                values[name] = _coerce(key, str(path), types[name], f.metadata, table[name])
        if section == "hub" and "endpoint" in values:
            values["endpoint"] = _check_endpoint(values["endpoint"])
        if section == "hub" and "token" not in values and resolve_hub_token:
            from huggingface_hub import get_token

            values["token"] = Secret(get_token() or "")
        built[section] = cls(**values)
    settings = Settings(**built, config_file=str(path) if path else None)
    _check_consistency(settings)
    return settings


def render_reference_table() -> str:
    """The Markdown table of every setting, as embedded in docs/configuration.md."""
    lines = ["| Key | Environment variable | Default | Meaning |", "| --- | --- | --- | --- |"]
    for row in settings_reference():
        lines.append(f"| `{row.key}` | `{row.env}` | `{row.default}` | {row.meaning} |")
    return "\n".join(lines) + "\n"


def render_example_toml() -> str:
    """hubwatch.example.toml: every key at its default, with its meaning and environment variable."""
    out = [
        "# hubwatch configuration: every key with its default. Copy to hubwatch.toml and edit.",
        "# Environment variables override this file; secrets are best given through them.",
        "# Generated by `python -m bot.settings write-docs`; do not edit by hand.",
    ]
    current = None
    for row in settings_reference():
        section, name = row.key.split(".", 1)
        if section != current:
            out += ["", f"[{section}]"]
            current = section
        out.append(f"# {row.meaning} (env {row.env})")
        out.append(f"{name} = {row.default}")
    return "\n".join(out) + "\n"


TABLE_BEGIN = "<!-- settings-table:begin (generated by `python -m bot.settings write-docs`) -->"
TABLE_END = "<!-- settings-table:end -->"


def splice_reference_table(doc: str) -> str:
    """Replace the generated table between the markers of docs/configuration.md."""
    head, sep, rest = doc.partition(TABLE_BEGIN)
    _, sep2, tail = rest.partition(TABLE_END)
    if not (sep and sep2):
        raise ConfigError("docs/configuration.md lacks the settings-table markers")
    return f"{head}{TABLE_BEGIN}\n{render_reference_table()}{TABLE_END}{tail}"


def write_docs(repo_root: Path) -> None:
    doc_path = repo_root / "docs" / "configuration.md"
    doc_path.write_text(splice_reference_table(doc_path.read_text()))
    (repo_root / "hubwatch.example.toml").write_text(render_example_toml())


if __name__ == "__main__":
    if sys.argv[1:] != ["write-docs"]:
        sys.exit("usage: python -m bot.settings write-docs")
    write_docs(Path(__file__).resolve().parent.parent)
