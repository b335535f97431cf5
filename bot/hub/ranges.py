"""Merging a batch of byte ranges into fewer HTTP requests."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

from fingerprints.reader import RangeRequest

# Two ranges of one file closer than this are fetched as one request: a request costs a round trip
# (~50 ms to the Hub) and a slot of the rate-limit budget, while 64 KiB more costs ~1 ms.
MERGE_GAP = 64 * 1024


@dataclass
class Span:
    """One request: a byte range of a file covering the requests listed in ``members``."""

    path: str
    offset: int
    end: int  # exclusive
    members: list[int] = field(default_factory=list)

    @property
    def length(self) -> int:
        return self.end - self.offset


def merge_ranges(requests: Sequence[RangeRequest], gap: int = MERGE_GAP) -> list[Span]:
    """Spans covering every non-empty request; ranges of one file with a gap under ``gap`` share one."""
    order = sorted((i for i, r in enumerate(requests) if r.length > 0),
                   key=lambda i: (requests[i].path, requests[i].offset))
    spans: list[Span] = []
    for i in order:
        r = requests[i]
        last = spans[-1] if spans else None
        if last is not None and last.path == r.path and r.offset - last.end < gap:
            last.end = max(last.end, r.offset + r.length)
            last.members.append(i)
        else:
            spans.append(Span(r.path, r.offset, r.offset + r.length, [i]))
    return spans
