"""Where a backfill's work comes from, one page at a time, each page with a token to resume at.

- ``HubListing``: every model on the Hub, ``/api/models`` sorted by creation time (newest first),
  1000 per page, following the ``Link: <...>; rel="next"`` cursor. Keyset paging by creation time
  is stable while the Hub grows: models created during the backfill land before the first page
  (the watcher's newest feed covers them) and never shift the pages still to come. The resume token
  is the page's URL.
- ``RepoFile``: repo ids from a file, one per line (``org/name`` or ``org/name@revision``; blank
  lines and ``#`` comments ignored), in pages of ``FILE_PAGE_LINES``. The resume token is the index
  of the page's first repo in the file.

A page's listing metadata (sha, dates, card lineage) is stored by the driver; an item listed with
its sha is skipped before any Hub request when that revision is already fingerprinted.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Iterator

from fingerprints.errors import InvalidModelError
from store.records import ModelRecord

from bot.errors import HubwatchError
from bot.backfill.job import WorkItem
from bot.hub.client import MAX_PAGE_SIZE, HubClient
from bot.hub.models import REPO_ID_RX
from bot.watch.records import model_record
from bot.watch.watcher import LIST_EXPAND

# Repos of a repo-id file per page: the driver saves the resume point once a page is fully
# written, so a killed run redoes at most this many repos' listing checks (never their fingerprints).
FILE_PAGE_LINES = 1000
LISTING_SORT = "createdAt"


@dataclass
class Page:
    resume: str  # restarts the source at this page
    next_resume: str | None  # restarts it after this page; None after the last one
    items: list[WorkItem]
    records: list[ModelRecord] = field(default_factory=list)  # listing metadata to store


class HubListing:
    def __init__(self, hub: HubClient, page_size: int = MAX_PAGE_SIZE):
        self.hub = hub
        self.page_size = page_size
        self.key = "backfill:hub"
        self.description = f"the Hub's model listing at {hub.endpoint}"

    def pages(self, resume: str | None) -> Iterator[Page]:
        # A saved page of another endpoint is not resumed: the listing starts over.
        url = resume if resume and resume.startswith(self.hub.endpoint + "/") else None
        while True:
            page = self.hub.list_models_page(url, sort=LISTING_SORT, page_size=self.page_size, expand=LIST_EXPAND)
            records = [model_record(model) for model in page.models]
            yield Page(page.url, page.next_url, [WorkItem(r.repo_id, r.sha) for r in records], records)
            if page.next_url is None:
                return
            url = page.next_url


class RepoFile:
    def __init__(self, path: str, page_lines: int = FILE_PAGE_LINES):
        self.path = os.path.abspath(path)
        self.page_lines = page_lines
        self.key = f"backfill:file:{self.path}"
        self.description = self.path
        self.items = self._read()

    def _read(self) -> list[WorkItem]:
        try:
            with open(self.path, encoding="utf-8") as fh:
                lines = fh.read().splitlines()
        except OSError as exc:
            raise HubwatchError(f"cannot read repo list {self.path}: {exc.strerror or exc}") from None
        except UnicodeDecodeError:
            raise InvalidModelError(f"repo list {self.path} is not UTF-8 text") from None
        items = []
        for number, line in enumerate(lines, 1):
            spec = line.split("#", 1)[0].strip()
            if not spec:
                continue
            repo_id, _, revision = spec.partition("@")
            if not REPO_ID_RX.match(repo_id) or (_ and not revision):
                raise InvalidModelError(f"{self.path}:{number}: {spec!r} is not a Hub repo id (org/name[@revision])")
            items.append(WorkItem(repo_id, revision or None))
        return items

    def pages(self, resume: str | None) -> Iterator[Page]:
        start = int(resume) if resume and resume.isdigit() and int(resume) < len(self.items) else 0
        for first in range(start, len(self.items), self.page_lines):
            end = first + self.page_lines
            yield Page(str(first), str(end) if end < len(self.items) else None, self.items[first:end])
