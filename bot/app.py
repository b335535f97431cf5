"""The composition root: the one place that turns ``Settings`` into objects.

Every command and the Discord bot get their Hub client, readers, store, alert sender, watcher and
bot service from an ``App``; nothing else reads the environment or builds a client from settings.
Objects are built when first asked for (``hubwatch compare`` on two folders never opens a Hub
client) and closed by ``App.close()``, so a command or the bot leaves no socket open.

Settings are loaded on first use of ``App.settings`` as well: ``hubwatch doctor`` reports a bad
setting as one of its checks, and ``hubwatch fakehub`` needs none.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
import time
from collections.abc import Mapping
from functools import cached_property
from typing import TYPE_CHECKING, Callable

from fingerprints.engine import fingerprint_model
from fingerprints.envelope import LimitedReader, ParseEnvelope
from fingerprints.model import Fingerprint
from fingerprints.reader import RangeReader
from fingerprints.tokenizer_cache import TokenizerCache

from bot.errors import USER_ERRORS
from bot.hub.client import HubClient
from bot.hub.sources import SpecFingerprint, fingerprint_spec, open_reader
from bot.ops.logging_setup import configure_logging
from bot.watch.compare_pool import ComparePool
from bot.settings import Settings, load_settings, unknown_env_vars

if TYPE_CHECKING:
    from store.store import Store

    from bot.alerts.discord_webhook import AlertSender
    from bot.discord.store_service import StoreService
    from bot.ops.metrics import Metrics
    from bot.watch.matching import Matcher
    from bot.watch.watcher import Watcher

log = logging.getLogger("hubwatch.app")


class App:
    def __init__(self, load: Callable[[], Settings], *, debug: bool = False, environ: Mapping[str, str] | None = None):
        self._load = load
        self.debug = debug
        # The environment the settings come from (None: the process's, read by bot.settings only).
        self._environ = environ
        self._closers: list[Callable[[], None]] = []
        # One large tokenizer parsed at a time, whichever thread (feed, bot command) meets it (envelope.py).
        self._large_parse_lock = threading.Lock()

    @classmethod
    def from_options(cls, config_path: str | None = None, *, db_path: str | None = None, debug: bool = False,
                     env: Mapping[str, str] | None = None) -> App:
        """The settings of ``--config`` (else $HUBWATCH_CONFIG, else ./hubwatch.toml) and the
        environment, with ``--db`` in place of ``store.path`` when given."""

        def load() -> Settings:
            settings = load_settings(config_path, env)
            if db_path:
                settings = dataclasses.replace(settings, store=dataclasses.replace(settings.store, path=os.fspath(db_path)))
            return settings

        return cls(load, debug=debug, environ=env)

    def unknown_env_vars(self) -> list[str]:
        """HUBWATCH_* variables of the settings' environment that are no setting (``doctor``)."""
        return unknown_env_vars(self._environ)

    @classmethod
    def of(cls, settings: Settings) -> App:
        return cls(lambda: settings)

    @cached_property
    def settings(self) -> Settings:
        settings = self._load()
        configure_logging(settings.logging.format, "DEBUG" if self.debug else settings.logging.level, settings.secrets())
        return settings

    # ---- the Hub and fingerprints ------------------------------------------------------------

    @cached_property
    def hub(self) -> HubClient:
        h = self.settings.hub
        client = HubClient(h.endpoint, h.token.reveal() or None, timeout_s=h.timeout_s,
                           max_connections=h.max_connections, model_byte_budget=self.settings.limits.model_bytes,
                           redirect_hosts=h.redirect_hosts, request_deadline_s=h.request_deadline_s)
        self._closers.append(client.close)
        return client

    def open_repo(self, repo_id: str, revision: str | None = None) -> RangeReader:
        return self.hub.reader(repo_id, revision)

    def open_reader(self, spec: str) -> RangeReader:
        """A model folder, or a Hub repo ``org/name[@revision]`` read through the one Hub client."""
        return open_reader(spec, self.open_repo)

    @cached_property
    def envelope(self) -> ParseEnvelope:
        return self.settings.limits.parse_envelope()

    def fingerprint(self, reader: RangeReader, tokenizers: TokenizerCache | None = None) -> Fingerprint:
        """``reader``'s fingerprint under every configured limit: requests, bytes and seconds per
        model, byte caps per file, the parse envelope and the tensor sample budget. Every path
        (the watcher, each command, the bot) fingerprints through here."""
        limits = self.settings.limits
        limited = LimitedReader(reader, max_requests=limits.model_requests, max_bytes=limits.model_bytes,
                                max_seconds=limits.model_seconds)
        return fingerprint_model(limited, budget=limits.tensor_bytes, tokenizers=tokenizers, envelope=self.envelope,
                                 large_parse_lock=self._large_parse_lock)

    def fingerprint_spec(self, spec: str) -> SpecFingerprint:
        return fingerprint_spec(spec, self.open_repo, self.fingerprint)

    def refetch(self, repo_id: str, sha: str) -> Fingerprint:
        """The full fingerprint of a stored revision, read from the Hub again (a compact one's
        samples, when a comparison needs them). Any failure is the store's ``RefetchError``."""
        from store.errors import RefetchError

        try:
            return self.fingerprint(self.open_repo(repo_id, sha))
        except USER_ERRORS as exc:
            raise RefetchError(str(exc)) from exc

    def deepen(self, a: tuple[str, str, Fingerprint], b: tuple[str, str, Fingerprint], comparison):
        """``comparison`` of two stored revisions that the standard budget left undecided
        (``needs_deep``), decided by the deep comparison over fresh ranged reads of both (at most
        ``DEEP_BYTE_BUDGET`` of tensor data each, on top of the model byte limit). Each side is
        (repo id or indexed folder, revision, fingerprint). When either side cannot be read, the
        comparison stays undecided and its evidence says why: never a verdict without evidence."""
        from fingerprints.deep import DEEP_BYTE_BUDGET, apply_deep, deep_compare

        def open_repo(repo_id: str, revision: str | None) -> RangeReader:
            return self.hub.reader(repo_id, revision,
                                   byte_budget=self.settings.limits.model_bytes + DEEP_BYTE_BUDGET)

        def reader(side: tuple[str, str, Fingerprint]) -> RangeReader:
            repo_or_folder, sha, _ = side
            return open_reader(repo_or_folder if os.path.isabs(repo_or_folder) else f"{repo_or_folder}@{sha}",
                               open_repo)

        try:
            deep = deep_compare(reader(a), a[2], reader(b), b[2], DEEP_BYTE_BUDGET)
        except USER_ERRORS as exc:
            comparison.evidence = [*comparison.evidence, f"deep comparison not possible: {exc}"]
            return comparison
        log.info("deep comparison", extra={"a": a[0], "b": b[0], "dependent": deep.dependent})
        return apply_deep(comparison, deep)

    @cached_property
    def compare_pool(self) -> ComparePool:
        pool = ComparePool(self.settings.limits.compare_workers)
        self._closers.append(pool.close)
        return pool

    # ---- store, alerts, watcher, bot ---------------------------------------------------------

    def open_store(self, create: bool = True) -> Store:
        """A new connection to the configured store (SQLite connections stay in their thread).
        Only what builds an index (``create``) may start a new database: elsewhere a missing file
        is a mistyped path, not an empty index."""
        from store.errors import StoreError
        from store.store import Store

        path = self.settings.store.path
        if not create and not os.path.exists(path):
            raise StoreError(f"no database at {path} (create one with `hubwatch index seed`, `hubwatch index add` "
                             "or `hubwatch watch`)")
        return Store.open(path, vocabulary_quota_bytes=self.settings.store.vocabulary_quota_bytes)

    @cached_property
    def sender(self) -> AlertSender:
        return self.alert_sender()

    def alert_sender(self, plots_dir: str | None = None) -> AlertSender:
        """The configured webhook, else the console saving plots in ``plots_dir`` (default: the
        alerts.plots_dir setting, else hubwatch-plots next to the store)."""
        from bot.alerts.discord_webhook import make_sender

        d = self.settings.discord
        sender = make_sender(d.webhook_url.reveal() or None, bot_token=d.bot_token.reveal() or None,
                             thread_id=d.webhook_thread_id or None,
                             plots_dir=plots_dir or self.settings.alerts.plots_folder(self.settings.store.path))
        close = getattr(sender, "close", None)
        if close is not None:
            self._closers.append(close)
        return sender

    def watcher(self, metrics: Metrics | None = None, sender: AlertSender | None = None) -> Watcher:
        """``sender``: in place of the configured one (the demo writes each alert's plot too)."""
        from bot.watch.watcher import Watcher

        # Create or migrate now, so a bad store path fails before polling; and load the index once
        # for the process (0.7 s at 100k models, 11 s at 1M), so the first poll does not pay it.
        with self.open_store() as store:
            started = time.monotonic()
            sketches = store.load_index()
            log.info("index loaded sketches=%d seconds=%.1f", sketches, time.monotonic() - started)
        return Watcher(self.settings, self.hub, sender or self.sender, self.fingerprint, metrics,
                       open_store=self.open_store, compare_pool=self.compare_pool, deepen=self.deepen)

    def matcher(self) -> Matcher:
        """Matching and alert decisions for ``index``, ``/nearest`` and ``/watch`` (the watcher
        builds its own with its tokenizer cache): nearest-match comparisons on the pool, compact
        candidates re-read from the Hub, undecided pairs settled by the deep comparison."""
        from bot.watch.matching import Matcher

        return Matcher(self.settings, refetch=self.refetch, compare_pool=self.compare_pool, deepen=self.deepen)

    def service(self) -> StoreService:
        """What the Discord bot's slash commands call: Hub repos only, never a path on this machine."""
        from bot.discord.store_service import StoreService

        self.open_store().close()  # create or migrate now, so a bad path fails at start
        d = self.settings.discord
        return StoreService(self.open_store, self.fingerprint_hub_repo, watch_list_max=d.watch_list_max,
                            refetch=self.refetch, compare_pool=self.compare_pool,
                            home_guild=None if d.global_commands else (d.guild_id or None),
                            matcher=self.matcher())

    def fingerprint_hub_repo(self, spec: str) -> SpecFingerprint:
        """``org/name[@revision]`` from the Hub, even when a folder of that name exists here."""
        return fingerprint_spec(spec, self.open_repo, self.fingerprint, allow_local=False)

    async def run_bot(self, sync_commands: bool = False) -> None:
        """The Discord bot as the settings describe it, until cancelled."""
        from bot.discord.client import run_bot
        from bot.discord.runner import CommandLimits

        d = self.settings.discord
        await run_bot(d.bot_token.reveal(), self.service(), guild_id=d.guild_id or None, sync_commands=sync_commands,
                      global_commands=d.global_commands,
                      limits=CommandLimits(heavy_at_once=d.heavy_commands_at_once, deadline_s=d.command_deadline_s))

    # ---- lifetime ----------------------------------------------------------------------------

    def close(self) -> None:
        """Close every client built so far, newest first."""
        while self._closers:
            self._closers.pop()()

    def __enter__(self) -> App:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
