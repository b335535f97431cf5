"""The watcher searches several models at once and records them in arrival order (Matcher.search,
then Matcher.record): what it records and alerts must be what ingesting one model at a time does,
and a model that breaks the comparison pool fails alone. Fast: small fingerprints, fake comparisons."""

from __future__ import annotations

import threading
from concurrent.futures.process import BrokenProcessPool

import pytest

from bot.settings import load_settings
from bot.watch.matching import Matcher
from bot.watch.watcher import Watcher
from store import Store
from store.records import ModelRecord
from store_samples import fine_tune, small_fp
from test_lineage import Scored
from test_watcher_work import SHA, ListingHub, NoMatch, entry

ORIGINAL = small_fp(7)  # never indexed: only its two copies are listed
FIRST, SECOND = "early/copy", "late/copy"
LISTING = [ModelRecord(repo_id=FIRST, author="early", created_at="2026-11-20T00:00:00Z"),
           ModelRecord(repo_id=SECOND, author="late", created_at="2026-11-21T00:00:00Z")]


@pytest.fixture
def matcher(monkeypatch):
    monkeypatch.setattr("bot.watch.matching.render_comparison_png", lambda comparison: b"\x89PNG")
    m = Matcher(load_settings(env={}))
    m.compare = lambda a, b: Scored(0.9991)  # every pair shares its weights
    return m


def cycle(store: Store, matcher: Matcher, searched_first: bool) -> tuple[set[tuple[str, str]], list[tuple[str, str]]]:
    """Ingest the listing's two copies, both searched before either is stored (as two searches in
    flight at once) or one at a time; the copy relations recorded and the alerts queued."""
    fps = {record.repo_id: fine_tune(ORIGINAL, i, record.repo_id) for i, record in enumerate(LISTING)}
    store.upsert_models(LISTING)
    if searched_first:
        searches = [matcher.search(store, r, f"sha-{r.author}", fps[r.repo_id]) for r in LISTING]
        done = [matcher.record(store, searched) for searched in searches]
    else:
        done = [matcher.ingest(store, r, f"sha-{r.author}", fps[r.repo_id]) for r in LISTING]
    suspects = {fid: record.repo_id for got, record in zip(done, LISTING) for fid in got.suspects}
    alerts = [a for fid, trigger in suspects.items() if (a := matcher.decide(store, fid, trigger)) is not None]
    repo = lambda fid: store.get_fingerprint(fid).repo_id  # noqa: E731
    relations = {(repo(m.fingerprint_a), repo(m.fingerprint_b)) for got in done for m in store.matches_for(got.fingerprint_id)}
    return relations, [(a.suspect.repo_id, a.source.repo_id) for a in alerts]


def test_two_copies_searched_before_either_is_stored_are_related_and_alerted_as_one_at_a_time(tmp_path, matcher):
    with Store.open(tmp_path / "serial.db") as store:
        serial = cycle(store, matcher, searched_first=False)
    with Store.open(tmp_path / "pipelined.db") as store:
        pipelined = cycle(store, matcher, searched_first=True)
        # The later copy's search saw an empty store: the relation comes from the record's catch-up.
        assert store.last_fingerprint_id() == 2
    assert serial == ({(FIRST, SECOND)}, [(SECOND, FIRST)])
    assert pipelined == serial


class BreakingPool:
    """A compare pool that one model's comparisons break (a worker killed, say out of memory): every
    search on it then fails until new workers start (``renew_if_broken``). Comparisons run in-thread."""

    def __init__(self):
        self.broken = False

    def get(self, draws_plots: bool = False):
        return None

    running = get

    def renew_if_broken(self) -> None:
        self.broken = False


def test_a_model_that_breaks_the_comparison_pool_fails_alone(tmp_path):
    listing = [entry(repo) for repo in ("org/oom", "org/m0", "org/m1", "org/m2", "org/m3")]
    settings = load_settings(env={"HUBWATCH_DB": str(tmp_path / "w.db"), "HUBWATCH_FEEDS_CONCURRENCY": "1",
                                  "HF_ENDPOINT": "http://hub.test"})
    pool = BreakingPool()
    seeds: dict[str, int] = {}
    watcher = Watcher(settings, ListingHub(listing), None, compare_pool=pool,
                      fingerprint=lambda repo_id, tokenizers: small_fp(seeds.setdefault(repo_id, len(seeds))))
    watcher.matcher.compare = lambda a, b: NoMatch()
    searched_oom = threading.Event()
    search = watcher.matcher.search

    def breaking_search(store, record, sha, fp):
        if record.repo_id == "org/oom":
            pool.broken = True
            searched_oom.set()
            raise BrokenProcessPool("a child process terminated abruptly")
        if threading.current_thread() is not threading.main_thread():
            searched_oom.wait(5)  # the searches in flight with it meet the broken pool
        if pool.broken:
            raise BrokenProcessPool("a child process terminated abruptly")
        return search(store, record, sha, fp)

    watcher.matcher.search = breaking_search
    summary = watcher.poll_feed("newest")
    watcher.close()
    assert (summary.fingerprinted, summary.errors) == (4, 1)
    assert [f.what for f in watcher.failures] == [f"repo org/oom@{SHA}"]
    with Store.open(tmp_path / "w.db") as store:
        assert store.stats()["revisions"]["done"] == 4


class BrokenExecutor:
    """A process pool one of whose workers died: it refuses every task."""

    def submit(self, *args, **kwargs):
        raise BrokenProcessPool("a child process terminated abruptly")

    def map(self, *args, **kwargs):
        raise BrokenProcessPool("a child process terminated abruptly")

    def shutdown(self, wait: bool = True, cancel_futures: bool = False) -> None:
        pass


def test_an_alert_plot_whose_pool_broke_is_drawn_here_and_the_pool_renewed(tmp_path, matcher):
    """The plots run on the compare pool only when it is running: a worker that died there (under
    another model's comparison) must not lose the cycle's alerts to a BrokenProcessPool."""
    from bot.watch.compare_pool import ComparePool

    pool = ComparePool(2)
    pool._pool = BrokenExecutor()
    matcher.compare_pool = pool
    with Store.open(tmp_path / "w.db") as store:
        store.upsert_models(LISTING)
        done = [matcher.ingest(store, r, f"sha-{r.author}", fine_tune(ORIGINAL, i, r.repo_id))
                for i, r in enumerate(LISTING)]
        suspects = {fid: r.repo_id for got, r in zip(done, LISTING) for fid in got.suspects}
        alerts = matcher.decide_all(store, suspects)
    assert [(a.suspect.repo_id, a.source.repo_id) for a in alerts] == [(SECOND, FIRST)]
    assert pool.running() is None  # the next use starts new workers
