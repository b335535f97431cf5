"""The watcher's use of the revisions table: one fingerprint per revision across concurrent feeds,
failures recorded with their reason and retried with backoff, gated and disabled repos skipped
without a fetch (issue 11, points 3 and 4). Fast: the Hub and the fingerprinting are in-process fakes."""

from __future__ import annotations

import threading
import time
from collections import Counter
from types import SimpleNamespace

import pytest

from bot.discord.store_service import StoreService
from bot.hub.errors import GatedRepoError, HubUnavailableError
from bot.ops.metrics import Metrics
from bot.settings import load_settings
from bot.watch.records import model_record
from bot.watch.watcher import Watcher
from store import Store
from store_samples import small_fp
from hubfixtures import hub_model
from bot.hub.client import ListingPage

SHA = "a" * 40


def entry(repo: str, **extra) -> dict:
    return {"id": repo, "sha": SHA, "createdAt": "2026-11-20T00:00:00.000Z", **extra}


class ListingHub:
    """Every feed lists the same entries; readers are counted, and some repos refuse to be read."""

    def __init__(self, entries: list[dict], refuse: set[str] = frozenset(), delay_s: float = 0.0):
        self.entries, self.refuse, self.delay_s = entries, refuse, delay_s
        self.reads: Counter[str] = Counter()
        self.lock = threading.Lock()

    def list_models(self, *, sort, limit, expand, author=None):
        return [hub_model(e) for e in self.entries]

    rate_budget = SimpleNamespace(take_waited_s=lambda: 0.0)

    def take_rate_limited_count(self):
        return 0

    def list_models_page(self, url, *, sort, page_size, expand):
        return ListingPage("page-1", self.list_models(sort=sort, limit=page_size, expand=expand), None)

    def model_info(self, repo_id, revision=None):
        return hub_model(next(e for e in self.entries if e["id"] == repo_id))

    def reader(self, repo_id, sha=None):
        with self.lock:
            self.reads[repo_id] += 1
        time.sleep(self.delay_s)  # fetches overlap across the feeds' threads
        if repo_id in self.refuse:
            raise GatedRepoError(f"{repo_id}: gated repo; ask for access on its page")
        return repo_id


class NoMatch:
    verdict, confidence, score, kinds, evidence = "independent", 0.0, 0.0, [], []

    def to_dict(self):
        return {}


@pytest.fixture
def make_watcher(tmp_path):
    def build(hub: ListingHub) -> Watcher:
        settings = load_settings(env={"HUBWATCH_DB": str(tmp_path / "w.db"), "HUBWATCH_FEEDS_CONCURRENCY": "4",
                                      "HF_ENDPOINT": "http://hub.test"})
        seeds = {}
        watcher = Watcher(settings, hub, None,
                          fingerprint=lambda repo_id, tokenizers: small_fp(seeds.setdefault(repo_id, len(seeds))))
        watcher.matcher.compare = lambda a, b: NoMatch()
        return watcher
    return build


def test_three_feeds_listing_the_same_models_at_once_fingerprint_each_revision_once(make_watcher):
    hub = ListingHub([entry(f"org/m{i}") for i in range(5)], delay_s=0.05)
    watcher = make_watcher(hub)
    summaries = []
    threads = [threading.Thread(target=lambda f=f: summaries.append(watcher.poll_feed(f)))
               for f in ("newest", "trending", "last_modified")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(summaries) == 3  # every feed's poll ran (none failed opening the new database)
    assert hub.reads == Counter({f"org/m{i}": 1 for i in range(5)})
    assert sum(s.fingerprinted for s in summaries) == 5
    assert sum(s.bytes_read for s in summaries) == 5 * small_fp().bytes_read  # counted once, and counted
    with Store.open(watcher.settings.store.path) as store:
        assert store.stats()["revisions"]["done"] == 5
    watcher.close()


def test_a_revision_in_flight_is_fetched_once_in_the_process(make_watcher):
    hub = ListingHub([entry("org/m0")], delay_s=0.2)
    watcher = make_watcher(hub)
    record = model_record(hub_model(entry("org/m0")))
    first, second = watcher._fetch(record), watcher._fetch(record)
    assert first is second and first.result().fingerprint is not None
    assert hub.reads["org/m0"] == 1
    watcher.close()


def test_failures_are_recorded_with_their_reason_and_not_refetched_every_cycle(make_watcher):
    hub = ListingHub([entry("org/ok"), entry("org/locked"), entry("org/gated", gated="manual"),
                      entry("org/gone", disabled=True)], refuse={"org/locked"})
    watcher = make_watcher(hub)
    first = watcher.poll_feed("trending")
    assert (first.fingerprinted, first.errors) == (1, 1)
    for _ in range(2):
        again = watcher.poll_feed("trending")
        assert (again.fingerprinted, again.errors, again.new_revisions) == (0, 0, 0)
    assert hub.reads == Counter({"org/ok": 1, "org/locked": 1})  # gated/disabled never fetched
    with Store.open(watcher.settings.store.path) as store:
        assert store.revisions_not_done() == {"failed: gated": 1, "skipped: disabled": 1, "skipped: gated": 1}
        failed = store.get_revision("org/locked", SHA)
        assert failed.attempts == 1 and "ask for access" in failed.detail
        # Its backoff has passed: the next cycle tries it once more.
        store.conn.execute("UPDATE revisions SET next_attempt_at = '2000-01-01' WHERE repo_id = 'org/locked'")
        status = StoreService(lambda: Store.open(watcher.settings.store.path), None).status()
        assert status.not_fingerprinted["failed: gated"] == 1
        assert status.revisions_queued == 1  # the failed one, due for its retry
        assert watcher.metrics.revisions_queued.value() == 1
    retry = watcher.poll_feed("trending")
    assert retry.errors == 1 and hub.reads["org/locked"] == 2
    with Store.open(watcher.settings.store.path) as store:
        assert store.get_revision("org/locked", SHA).attempts == 2
    watcher.close()


class DownHub(ListingHub):
    def list_models(self, *, sort, limit, expand, author=None):
        raise HubUnavailableError("the Hub did not answer usably after 6 attempts; last error: HTTP 503")


def test_a_failed_listing_is_not_a_successful_poll_and_health_says_why(make_watcher):
    clock = [1_000_000.0]
    watcher = make_watcher(DownHub([]))
    watcher.metrics = Metrics(clock=lambda: clock[0])
    summary = watcher.poll_feed("trending")
    assert summary.errors == 1
    clock[0] += 3600
    healthy, details = watcher.metrics.health(max_poll_age_s=1800)
    assert not healthy and details["last_successful_poll"] is None
    assert details["reason"] == ("no feed listing succeeded for 3600 s; last error: trending listing from hub.test: the Hub "
                                 "did not answer usably after 6 attempts; last error: HTTP 503")
    assert [f.what for f in watcher.failures] == ["feed trending"]
    watcher.close()
