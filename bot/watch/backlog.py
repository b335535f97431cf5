"""The newest feed walks back to where it last stopped, a bounded number of models per cycle.

Listing only the newest page loses every model that arrived between two polls beyond that page.
The Hub pages ``/api/models?sort=createdAt`` newest first with a keyset cursor in an absolute
``Link: <...>; rel="next"`` header, and cannot list "created after X"; so each cycle walks pages
from the newest until it meets ``floor`` (the creation time down to which every model has been
listed and processed; two uploads in the same millisecond across a page boundary are the one
case it can miss). A cycle stops after ``budget`` models (whole pages): back-pressure. It then
keeps the next page's URL, and the next cycle resumes there, walking the rest of the gap before it
looks at the top again; when the gap is closed the floor moves up to the newest model the
unfinished walk began with. Nothing is skipped, however far behind the watcher falls; how far is
the lag: the newest creation time seen minus the floor.

The state is one ``poll_cursors`` row: ``last_seen`` holds the floor, ``cursor`` a JSON object
with the resume URL and the walk's newest creation time. The watcher saves it only after the
cycle's models were processed.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from bot.hub.client import ListingPage
from bot.hub.models import HubModel

# The feed walked back: sort=createdAt.
NEWEST_FEED = "newest"

# A listing page: the first (None) or the one at a next-page URL.
FetchPage = Callable[[str | None], ListingPage]


@dataclass(frozen=True)
class FeedCursor:
    floor: str | None = None  # createdAt down to which everything was listed; None before the first walk
    resume: str | None = None  # next page of an unfinished walk
    head: str | None = None  # newest createdAt of that walk: the floor once it finishes

    @classmethod
    def load(cls, row: dict[str, str | None] | None) -> FeedCursor:
        """From ``Store.get_cursor``; a cursor this code did not write (older versions kept None) is empty."""
        if not row:
            return cls()
        try:
            state = json.loads(row["cursor"]) if row.get("cursor") else {}
        except ValueError:
            state = {}
        if not isinstance(state, dict):
            state = {}
        resume, head = state.get("resume"), state.get("head")
        return cls(row.get("last_seen"), resume if isinstance(resume, str) else None, head if isinstance(head, str) else None)

    def dump(self) -> tuple[str | None, str | None]:
        """(cursor, last_seen) for ``Store.set_cursor``."""
        if self.resume is None:
            return None, self.floor
        return json.dumps({"resume": self.resume, "head": self.head}), self.floor

    def lag_s(self) -> float:
        """Seconds of creation time not yet fully listed: 0 unless a walk is unfinished."""
        if self.resume is None or not (self.head and self.floor):
            return 0.0
        return max(0.0, (_parse(self.head) - _parse(self.floor)).total_seconds())


def _parse(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def walk_newest(fetch_page: FetchPage, cursor: FeedCursor, budget: int) -> tuple[list[HubModel], FeedCursor]:
    """This cycle's models, newest first, and the cursor to save once they are processed.

    A first walk (no floor) takes one budget's worth and starts the floor at its newest model:
    the Hub's history is the backfill's job, not the watcher's."""
    page = fetch_page(cursor.resume)
    head = cursor.head if cursor.resume else None
    entries: list[HubModel] = []
    while True:
        url = page.next_url
        for entry in page.models:
            created = entry.created_at
            if cursor.floor and created and created <= cursor.floor:
                return entries, FeedCursor(floor=head or cursor.floor)
            if head is None and created:
                head = created
            entries.append(entry)
        if url is None or len(entries) >= budget:
            break
        page = fetch_page(url)
    if url is None or cursor.floor is None:  # the listing's end, or the first walk
        return entries, FeedCursor(floor=head or cursor.floor)
    return entries, FeedCursor(floor=cursor.floor, resume=url, head=head)
