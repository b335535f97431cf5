"""The newest feed walks back to its floor, a bounded number per cycle, and loses nothing."""

from __future__ import annotations

import json

from bot.fakes.hub import FakeHub
from bot.hub import HubClient
from bot.watch.backlog import FeedCursor, walk_newest
from hubfixtures import hub_model
from bot.hub.client import ListingPage


def stamp(minute: int) -> str:
    return f"2026-11-28T{minute // 60:02d}:{minute % 60:02d}:00.000Z"


class PagedListing:
    """The Hub's createdAt listing: newest first, ``page`` entries a page, keyset cursor URLs."""

    def __init__(self, page: int = 3):
        self.page = page
        self.minutes: list[int] = []
        self.fetched = 0

    def publish(self, *minutes: int) -> None:
        self.minutes += minutes

    def fetch(self, url: str | None):
        self.fetched += 1
        below = None if url is None else int(url)  # keyset: entries older than the last one served
        ordered = [m for m in sorted(self.minutes, reverse=True) if below is None or m < below]
        rows = [hub_model({"id": f"org/m{m}", "createdAt": stamp(m)}) for m in ordered[:self.page]]
        return ListingPage(url or "first", rows, str(ordered[self.page - 1]) if len(ordered) > self.page else None)


def cycle(listing: PagedListing, cursor: FeedCursor, budget: int) -> tuple[set[str], FeedCursor]:
    entries, after = walk_newest(listing.fetch, cursor, budget)
    return {e.repo_id for e in entries}, after


def test_first_walk_takes_one_budget_and_starts_the_floor_at_its_newest():
    listing = PagedListing()
    listing.publish(*range(10))
    seen, cursor = cycle(listing, FeedCursor(), budget=3)
    assert seen == {"org/m9", "org/m8", "org/m7"}
    assert cursor == FeedCursor(floor=stamp(9)) and cursor.lag_s() == 0


def test_a_backlog_is_walked_over_several_cycles_without_losing_a_model():
    listing = PagedListing(page=3)
    listing.publish(*range(10))
    _, cursor = cycle(listing, FeedCursor(), budget=3)
    listing.publish(*range(10, 20))  # ten uploads since: more than one cycle takes
    seen, cursor = cycle(listing, cursor, budget=3)
    assert seen == {"org/m19", "org/m18", "org/m17"}
    assert cursor.resume is not None and cursor.floor == stamp(9) and cursor.head == stamp(19)
    assert cursor.lag_s() == 10 * 60
    listing.publish(20, 21)  # arrivals during the backlog wait for the gap to close
    all_seen = set(seen)
    for _ in range(3):
        seen, cursor = cycle(listing, cursor, budget=3)
        all_seen |= seen
        if cursor.resume is None:
            break
    assert all_seen >= {f"org/m{m}" for m in range(10, 20)}
    assert cursor == FeedCursor(floor=stamp(19))
    seen, cursor = cycle(listing, cursor, budget=3)
    assert {"org/m21", "org/m20"} <= seen and cursor == FeedCursor(floor=stamp(21))


def test_a_caught_up_walk_stops_at_the_floor_after_one_page():
    listing = PagedListing(page=3)
    listing.publish(*range(10))
    _, cursor = cycle(listing, FeedCursor(), budget=3)
    listing.publish(10)
    fetched = listing.fetched
    seen, cursor = cycle(listing, cursor, budget=100)
    assert seen == {"org/m10"}
    assert listing.fetched == fetched + 1 and cursor == FeedCursor(floor=stamp(10))


def test_cursor_round_trips_through_the_store_row_and_ignores_what_it_did_not_write():
    cursor = FeedCursor(floor=stamp(1), resume="https://hub/api/models?cursor=abc", head=stamp(5))
    text, last_seen = cursor.dump()
    assert FeedCursor.load({"cursor": text, "last_seen": last_seen}) == cursor
    assert FeedCursor.load({"cursor": None, "last_seen": stamp(1)}) == FeedCursor(floor=stamp(1))
    assert FeedCursor.load({"cursor": "not json", "last_seen": None}) == FeedCursor()
    assert FeedCursor.load(None) == FeedCursor()


def test_the_walk_follows_the_hubs_link_header_pages(tmp_path):
    def publish(minute: int) -> None:
        folder = tmp_path / "org" / f"m{minute}"
        folder.mkdir(parents=True)
        (folder / "config.json").write_text("{}")
        (folder / "_hub.json").write_text(json.dumps({"createdAt": stamp(minute)}))

    for minute in range(3):
        publish(minute)
    with FakeHub(tmp_path, page_size=2) as hub, HubClient(hub.endpoint, token="") as client:
        fetch = lambda url: client.list_models_page(url, sort="createdAt", page_size=2, expand=["createdAt"])  # noqa: E731
        entries, cursor = walk_newest(fetch, FeedCursor(), budget=2)
        assert [e.repo_id for e in entries] == ["org/m2", "org/m1"] and cursor.floor == stamp(2)
        for minute in range(3, 8):
            publish(minute)
        walked: list[str] = []
        for _ in range(4):
            entries, cursor = walk_newest(fetch, cursor, budget=2)
            walked += [e.repo_id for e in entries]
            if cursor.resume is None:
                break
        assert walked == ["org/m7", "org/m6", "org/m5", "org/m4", "org/m3"]
        assert cursor == FeedCursor(floor=stamp(7))
