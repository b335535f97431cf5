"""The curated default reference list shipped in store/data/references.json."""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources

from .errors import StoreError



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
        # The shape only; the Hub's naming rule is the Hub layer's (bot/hub/models.py REPO_ID_RX),
        # and a misspelt name fails its seed alone, as an unreachable repo does.
        org, slash, name = ref.repo_id.partition("/")
        if not (org and slash and name) or "/" in name:
            raise StoreError(f"reference list: {ref.repo_id!r} is not an org/name repo id")
        if ref.repo_id in seen:
            raise StoreError(f"reference list: {ref.repo_id} is listed twice")
        seen.add(ref.repo_id)
    return refs
