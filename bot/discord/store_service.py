"""The store-backed HubwatchService: what the Discord bot's commands do.

Each call opens its own Store connection: the bot runs service calls in worker threads, and
SQLite connections must not cross threads. A repo that is not in the store yet is fingerprinted
(ranged reads) and stored before it is answered about.
"""

from __future__ import annotations

import threading
from typing import Callable

from cachetools import TTLCache

from fingerprints.compare import compare_fingerprints
from fingerprints.model import Fingerprint
from fingerprints.plot import render_comparison_png
from store.nearest import nearest
from store.rows import TIER_COMPACT
from store.store import OPERATOR_GUILD, Store

from bot.discord.service import CompareResult, NearestRow, StatusInfo, WatchItem
from bot.discord.errors import BotInputError
from bot.hub.sources import SpecFingerprint, is_hub_repo_id
from bot.watch.backlog import NEWEST_FEED, FeedCursor
from bot.watch.matching import Matcher, index_spec
from bot.watch.records import index_one
from bot.watch.compare_pool import ComparePool

# A comparison costs two fingerprints (seconds, hundreds of Hub requests); members asking the same
# question within ten minutes get the same answer. 64 answers with their plots are a few MB.
COMPARE_CACHE_SIZE = 64
COMPARE_CACHE_TTL_S = 600


class StoreService:
    """``open_store`` and ``fingerprint_spec`` come from the composition root (``bot/app.py``), so
    the bot reads the Hub through the one configured client, with the configured limits."""

    def __init__(self, open_store: Callable[[], Store], fingerprint_spec: Callable[[str], SpecFingerprint], *,
                 watch_list_max: int = 200, refetch: Callable[[str, str], Fingerprint] | None = None,
                 compare_pool: ComparePool | None = None, home_guild: int | None = None,
                 matcher: Matcher | None = None):
        """``home_guild``: the configured server, whose watch list includes the operator's entries."""
        self.home_guild = home_guild
        self._store = open_store
        self._fingerprint_spec = fingerprint_spec
        self.watch_list_max = watch_list_max
        self._refetch = refetch  # re-reads compact candidates that pass the screen (store/nearest.py)
        self._compare_pool = compare_pool
        self._compared: TTLCache[tuple[str, str], CompareResult] = TTLCache(COMPARE_CACHE_SIZE, COMPARE_CACHE_TTL_S)
        self._compared_lock = threading.Lock()
        # With a matcher, a repo first seen here is matched and alerted on as the watcher would.
        self.matcher = matcher

    def _fingerprint(self, store: Store, spec: str, keep: bool = True) -> tuple[str, Fingerprint]:
        """The stored fingerprint of ``spec``, else a fresh one (stored too when ``keep``)."""
        stored = store.find_fingerprint(spec)
        if stored is not None and stored.tier != TIER_COMPACT:  # a compact one lacks the samples to compare
            return spec, store.load_fingerprint(stored.id)
        got = self._fingerprint_spec(spec)
        if keep and self.matcher is not None:
            index_spec(store, got, self.matcher)
        elif keep:
            index_one(store, got)
        return got.repo_id, got.fp

    def nearest(self, repo: str, k: int) -> list[NearestRow]:
        store = self._store()
        try:
            repo_id, fp = self._fingerprint(store, repo)
            pool = self._compare_pool.get() if self._compare_pool else None
            rows = nearest(store, fp, k=k, exclude_repo=repo_id, query_record=store.get_model(repo_id),
                           refetch=self._refetch, pool=pool)
            # Folders indexed from the command line are stored under this machine's paths: not shown.
            return [NearestRow(n.repo_id, n.verdict, n.score, n.confidence, list(n.kinds),
                               "" if n.declared == "none" else n.declared, n.likely_original == "neighbour")
                    for n in rows if is_hub_repo_id(n.repo_id)]
        finally:
            store.close()

    def compare(self, a: str, b: str) -> CompareResult:
        with self._compared_lock:
            cached = self._compared.get((a, b))
        if cached is not None:
            return cached
        store = self._store()
        try:
            # A comparison does not add its models to the index; /nearest does.
            fa = self._fingerprint(store, a, keep=False)[1]
            fb = self._fingerprint(store, b, keep=False)[1]
        finally:
            store.close()
        result = compare_fingerprints(fa, fb)
        answer = CompareResult(a, b, result.verdict, result.confidence, result.score, list(result.kinds),
                               list(result.evidence), render_comparison_png(result))
        with self._compared_lock:
            self._compared[(a, b)] = answer
        return answer

    def _guilds(self, guild_id: int) -> tuple[int, ...]:
        """The lists a server's commands read and change: its own, plus the operator's for the home server."""
        return (guild_id, OPERATOR_GUILD) if guild_id == self.home_guild else (guild_id,)

    def watch_add(self, kind: str, value: str, by_user: str, guild_id: int) -> bool:
        store = self._store()
        try:
            listed = store.watch_list(guild_ids=self._guilds(guild_id))
            if any((e.kind, e.value) == (kind, value) for e in listed):
                return False
            if len(listed) >= self.watch_list_max:
                raise BotInputError(f"the watch list is full ({self.watch_list_max} entries); remove one first")
            return store.add_watch(kind, value, added_by=by_user, guild_id=guild_id)
        finally:
            store.close()

    def watch_remove(self, kind: str, value: str, by_user: str, guild_id: int) -> bool:
        store = self._store()
        try:
            return store.remove_watch(kind, value, self._guilds(guild_id))
        finally:
            store.close()

    def watch_list(self, guild_id: int) -> list[WatchItem]:
        store = self._store()
        try:
            return [WatchItem(e.kind, e.value, e.added_by, e.added_at)
                    for e in store.watch_list(guild_ids=self._guilds(guild_id))]
        finally:
            store.close()

    def status(self) -> StatusInfo:
        store = self._store()
        try:
            counters = store.counters()
            polls = [c["text_value"] for name, c in counters.items() if name.startswith("last_poll:") and c["text_value"]]
            value = lambda name: int((counters.get(name) or {}).get("value") or 0)  # noqa: E731
            return StatusInfo(
                last_poll_at=max(polls) if polls else None,
                models_fingerprinted=value("models_fingerprinted"),
                alerts_sent=value("alerts_delivered"),
                queue_depth=store.alert_counts().get("pending", 0),
                feed_lag_s=FeedCursor.load(store.get_cursor(NEWEST_FEED)).lag_s(),
                revisions_queued=store.revisions_queued(),
                errors=value("fingerprint_errors"),
                last_error=(counters.get("last_error") or {}).get("text_value"),
                not_fingerprinted=store.revisions_not_done(),
            )
        finally:
            store.close()

    def known_repo_ids(self, prefix: str, limit: int) -> list[str]:
        store = self._store()
        try:
            like = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
            rows = store.conn.execute(
                "SELECT DISTINCT repo_id FROM fingerprints WHERE repo_id LIKE ? ESCAPE '\\' AND repo_id NOT LIKE '/%' "
                "ORDER BY repo_id LIMIT ?",
                (like, limit),
            ).fetchall()
            return [r[0] for r in rows if is_hub_repo_id(r[0])]
        finally:
            store.close()

