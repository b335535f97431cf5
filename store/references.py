"""The curated default reference list shipped in store/data/references.json."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from importlib import resources

from .errors import StoreError

REPO_ID_RX = re.compile(r"^[A-Za-z0-9][\w.\-]*/[A-Za-z0-9][\w.\-]*$")


@dataclass(frozen=True)
class Reference:
    repo_id: str
    family: str
    note: str


def load_references(text: str | None = None) -> list[Reference]:
    """The shipped reference list (or ``text`` in the same format), validated."""
    if text is None:
        text = resources.files(__package__).joinpath("data", "references.json").read_text(encoding="utf-8")
    try:
        doc = json.loads(text)
        entries = doc["references"]
        refs = [Reference(str(e["repo_id"]), str(e["family"]), str(e.get("note", ""))) for e in entries]
    except (ValueError, KeyError, TypeError) as exc:
        raise StoreError(f"reference list is malformed: {exc}") from exc
    seen: set[str] = set()
    for ref in refs:
        if not REPO_ID_RX.match(ref.repo_id):
            raise StoreError(f"reference list: {ref.repo_id!r} is not an org/name repo id")
        if ref.repo_id in seen:
            raise StoreError(f"reference list: {ref.repo_id} is listed twice")
        seen.add(ref.repo_id)
    return refs
