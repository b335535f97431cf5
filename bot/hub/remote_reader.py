"""HubRepoReader: the RangeReader of a Hub repo, so fingerprints/ runs on org/name as on a folder.

The repo's revision is resolved to its commit sha once, at construction, and every read is pinned
to that sha: a push during fingerprinting cannot mix two revisions. Sizes and sha256 come from
the model info's siblings (``blobs=true``); a batch of ranges is merged per file (``ranges.py``)
and fetched concurrently; a per-model byte budget is enforced before any request is sent.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Protocol, Sequence, TypeVar

from fingerprints.errors import BudgetExceededError, InvalidModelError
from fingerprints.reader import RangeRequest

from bot.hub.errors import HubError
from bot.hub.models import COMMIT_RX, HubModel
from bot.hub.ranges import Span, merge_ranges


T = TypeVar("T")


@dataclass(frozen=True)
class ModelDeadline:
    """When the reads of one model must end (``limits.model_seconds``): the client cuts each request
    made for the model there, whichever thread sends it, not only between reads."""

    at: float  # time.monotonic()
    seconds: float


class RepoFileClient(Protocol):
    """What a reader calls back on the client that built it (``bot.hub.client.HubClient``); named
    here so the reader needs no import of the client, which imports the reader."""

    model_byte_budget: int

    def model_info(self, repo_id: str, revision: str | None = None) -> HubModel: ...

    def file_size(self, repo_id: str, commit: str, path: str,
                  model_deadline: ModelDeadline | None = None) -> int: ...

    def read_range(self, repo_id: str, commit: str, path: str, offset: int, length: int,
                   model_deadline: ModelDeadline | None = None) -> bytes: ...

    def map_concurrent(self, fn: Callable[[Any], T], items: Sequence[Any]) -> list[T]: ...


class HubRepoReader:
    def __init__(self, client: RepoFileClient, repo_id: str, revision: str | None = None, *,
                 byte_budget: int | None = None):
        self.client = client
        self.model: HubModel = client.model_info(repo_id, revision)
        if not self.model.sha or not COMMIT_RX.match(self.model.sha):
            raise HubError(f"{repo_id}: the Hub gave no commit sha to pin reads to")
        self.repo_id = repo_id
        self.sha = self.model.sha
        self.name = f"{repo_id}@{self.sha}"
        self.byte_budget = byte_budget if byte_budget is not None else client.model_byte_budget
        self.bytes_read = 0
        self.requests = 1  # the model info call
        self._siblings = {s.path: s for s in self.model.siblings}
        self._sizes: dict[str, int] = {p: s.size for p, s in self._siblings.items() if s.size is not None}
        self._lock = threading.Lock()
        self.deadline: ModelDeadline | None = None

    def set_deadline(self, seconds: float) -> None:
        """Cut every later request of this model ``seconds`` from now (``limits.model_seconds``,
        given by ``LimitedReader``), including those in flight on the client's pool threads."""
        self.deadline = ModelDeadline(time.monotonic() + seconds, seconds)

    def __repr__(self) -> str:
        return f"HubRepoReader({self.name!r}, bytes_read={self.bytes_read}, requests={self.requests})"

    def list_files(self) -> list[str]:
        return sorted(self._siblings)

    def size(self, path: str) -> int:
        if path not in self._siblings:
            raise InvalidModelError(f"{self.name}: no file {path!r}")
        if path not in self._sizes:  # a Hub that left sizes out of the siblings: ask the file itself
            size = self.client.file_size(self.repo_id, self.sha, path, self.deadline)
            with self._lock:
                self.requests += 1
                self._sizes[path] = size
        return self._sizes[path]

    def file_sha256(self, path: str) -> str | None:
        sibling = self._siblings.get(path)
        return sibling.lfs_sha256 if sibling else None

    def file_id(self, path: str) -> str | None:
        sibling = self._siblings.get(path)
        return (sibling.lfs_sha256 or sibling.blob_id) if sibling else None

    def _reserve(self, spans: list[Span]) -> None:
        total = sum(s.length for s in spans)
        with self._lock:
            if self.bytes_read + total > self.byte_budget:
                raise BudgetExceededError(
                    f"{self.name}: reading {total:,} more bytes would pass the per-model budget of "
                    f"{self.byte_budget:,} bytes ({self.bytes_read:,} already read)")
            self.bytes_read += total
            self.requests += len(spans)

    def read_ranges(self, requests: Sequence[RangeRequest]) -> list[bytes]:
        for r in requests:
            size = self.size(r.path)
            if r.offset < 0 or r.length < 0 or r.offset + r.length > size:
                raise InvalidModelError(f"{self.name}: {r.path} range {r.offset}+{r.length} is outside the file "
                                        f"({size:,} bytes)")
        spans = merge_ranges(requests)
        self._reserve(spans)
        blobs = self.client.map_concurrent(
            lambda s: self.client.read_range(self.repo_id, self.sha, s.path, s.offset, s.length, self.deadline), spans)
        out = [b""] * len(requests)
        for span, blob in zip(spans, blobs):
            for i in span.members:
                start = requests[i].offset - span.offset
                out[i] = blob[start:start + requests[i].length]
        return out
