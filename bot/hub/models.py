"""Typed views of the Hub's model JSON (``/api/models/{repo}`` and listing entries)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

# Hub names of users, organisations and repos: letters, digits, "-", "_", ".", at most 96
# characters, not starting with "-" or "." (huggingface_hub's REPO_ID_REGEX, \b[\w\-.]{1,96}\b).
HUB_NAME = r"[A-Za-z0-9_][\w.\-]{0,95}"
REPO_ID_RX = re.compile(rf"^{HUB_NAME}/{HUB_NAME}$", re.ASCII)
AUTHOR_RX = re.compile(rf"^{HUB_NAME}$", re.ASCII)
# What a user types for a Hub model: org/name or name, optionally @revision (hubwatch's notation).
REPO_SPEC_RX = re.compile(rf"^{HUB_NAME}(/{HUB_NAME})?(@[\w.\-/]+)?$", re.ASCII)
# A commit sha, to which every ranged read is pinned.
COMMIT_RX = re.compile(r"^[0-9a-f]{40}$")
BASE_MODEL_TAG = "base_model:"
LICENSE_TAG = "license:"
# Relations in base_model:<relation>:<id> tags (hub-docs model-cards.md, "Specifying a base model").
BASE_MODEL_RELATIONS = ("adapter", "merge", "quantized", "finetune")


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


@dataclass(frozen=True)
class Sibling:
    path: str
    size: int | None
    blob_id: str | None
    lfs_sha256: str | None

    @classmethod
    def from_api(cls, d: dict[str, Any]) -> Sibling | None:
        path = _str(d.get("rfilename"))
        if path is None:
            return None
        lfs = d.get("lfs") if isinstance(d.get("lfs"), dict) else {}
        size = _int(d.get("size"))
        if size is None:
            size = _int(lfs.get("size"))
        sha256 = _str(lfs.get("sha256"))
        if sha256 is not None and (len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256)):
            sha256 = None  # hostile or odd metadata: never let it claim identity with another file
        return cls(path=path, size=size if size is None or size >= 0 else None, blob_id=_str(d.get("blobId")),
                   lfs_sha256=sha256)


def declared_base_models(tags: list[str], card_base: Any, base_models: Any) -> tuple[str, ...]:
    """Every base model the repo declares: card ``base_model``, ``base_model:*`` tags, ``baseModels``."""
    out: list[str] = []
    if isinstance(card_base, str):
        out.append(card_base)
    elif isinstance(card_base, list):
        out += [m for m in card_base if isinstance(m, str)]
    for tag in tags:
        if tag.startswith(BASE_MODEL_TAG):
            rest = tag[len(BASE_MODEL_TAG):]
            relation, _, ident = rest.partition(":")
            out.append(ident if relation in BASE_MODEL_RELATIONS and ident else rest)
    if isinstance(base_models, dict):
        out += [m["id"] for m in base_models.get("models") or [] if isinstance(m, dict) and _str(m.get("id"))]
    return tuple(dict.fromkeys(m.strip() for m in out if m.strip()))


@dataclass(frozen=True)
class HubModel:
    """A model as the Hub describes it. Siblings carry sizes and LFS sha256 when fetched with blobs."""

    repo_id: str
    model_id: str | None
    sha: str | None
    author: str | None
    created_at: str | None
    last_modified: str | None
    downloads: int | None
    likes: int | None
    trending_score: float | None  # often fractional on the Hub (12.5)
    license: str | None
    tags: tuple[str, ...]
    library_name: str | None
    pipeline_tag: str | None
    declared_base_models: tuple[str, ...]
    gated: str | None  # "auto" or "manual" when gated
    private: bool
    siblings: tuple[Sibling, ...]
    disabled: bool = False  # taken down by the Hub: its files answer 403

    @classmethod
    def from_api(cls, d: dict[str, Any]) -> HubModel:
        repo_id = _str(d.get("id")) or _str(d.get("modelId"))
        if repo_id is None:
            raise ValueError("model JSON has no id")
        tags = [t for t in d.get("tags") or [] if isinstance(t, str)] if isinstance(d.get("tags"), list) else []
        card = d.get("cardData") if isinstance(d.get("cardData"), dict) else {}
        license_ = _str(card.get("license")) or next(
            (t[len(LICENSE_TAG):] for t in tags if t.startswith(LICENSE_TAG)), None)
        siblings = d.get("siblings") if isinstance(d.get("siblings"), list) else []
        gated = d.get("gated")
        return cls(
            repo_id=repo_id, model_id=_str(d.get("_id")), sha=_str(d.get("sha")),
            author=_str(d.get("author")) or (repo_id.split("/")[0] if "/" in repo_id else None),
            created_at=_str(d.get("createdAt")), last_modified=_str(d.get("lastModified")),
            downloads=_int(d.get("downloads")), likes=_int(d.get("likes")),
            trending_score=_number(d.get("trendingScore")), license=license_, tags=tuple(tags),
            library_name=_str(d.get("library_name")) or _str(card.get("library_name")),
            pipeline_tag=_str(d.get("pipeline_tag")) or _str(card.get("pipeline_tag")),
            declared_base_models=declared_base_models(tags, card.get("base_model"), d.get("baseModels")),
            gated=gated if gated in ("auto", "manual") else ("auto" if gated is True else None),
            private=d.get("private") is True,
            siblings=tuple(s for s in (Sibling.from_api(x) for x in siblings if isinstance(x, dict)) if s),
            disabled=d.get("disabled") is True,
        )

    def sibling(self, path: str) -> Sibling | None:
        return next((s for s in self.siblings if s.path == path), None)
