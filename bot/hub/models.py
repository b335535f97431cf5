"""Typed views of the Hub's model JSON (``/api/models/{repo}`` and listing entries), as huggingface_hub's
``ModelInfo`` parsed it."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from huggingface_hub import ModelCardData, ModelInfo
from huggingface_hub.hf_api import RepoSibling

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


def _hub_time(value: Any) -> str | None:
    """A time as the Hub writes it (``2026-11-20T00:00:00.000Z``, what the store and the newest
    feed's floor compare), from the datetime huggingface_hub parsed it into."""
    if not isinstance(value, datetime):
        return None
    utc = value.astimezone(timezone.utc) if value.tzinfo else value
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


@dataclass(frozen=True)
class Sibling:
    path: str
    size: int | None
    blob_id: str | None
    lfs_sha256: str | None

    @classmethod
    def from_repo_sibling(cls, s: RepoSibling) -> Sibling:
        size = _int(s.size)
        if size is None and s.lfs is not None:
            size = _int(s.lfs.size)
        sha256 = _str(s.lfs.sha256) if s.lfs is not None else None
        if sha256 is not None and (len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256)):
            sha256 = None  # hostile or odd metadata: never let it claim identity with another file
        return cls(path=str(s.rfilename), size=size if size is None or size >= 0 else None, blob_id=_str(s.blob_id),
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
    def from_model_info(cls, info: ModelInfo) -> HubModel:
        """The model as huggingface_hub parsed the Hub's JSON (``HfApi.model_info``/``list_models``).
        ModelInfo keeps the JSON's values as they came, so each is type-checked here: hostile repos
        control their card data and odd values are dropped, never trusted."""
        repo_id = _str(info.id)
        if repo_id is None:
            raise ValueError("model JSON has no id")
        tags = [t for t in info.tags if isinstance(t, str)] if isinstance(info.tags, list) else []
        card = info.card_data if isinstance(info.card_data, ModelCardData) else ModelCardData()
        license_ = _str(card.get("license")) or next(
            (t[len(LICENSE_TAG):] for t in tags if t.startswith(LICENSE_TAG)), None)
        gated = info.gated
        return cls(
            repo_id=repo_id, model_id=_str(getattr(info, "_id", None)), sha=_str(info.sha),
            author=_str(info.author) or (repo_id.split("/")[0] if "/" in repo_id else None),
            created_at=_hub_time(info.created_at), last_modified=_hub_time(info.last_modified),
            downloads=_int(info.downloads), likes=_int(info.likes),
            trending_score=_number(info.trending_score), license=license_, tags=tuple(tags),
            library_name=_str(info.library_name) or _str(card.get("library_name")),
            pipeline_tag=_str(info.pipeline_tag) or _str(card.get("pipeline_tag")),
            declared_base_models=declared_base_models(tags, card.get("base_model"), info.base_models),
            gated=gated if gated in ("auto", "manual") else ("auto" if gated is True else None),
            private=info.private is True,
            siblings=tuple(Sibling.from_repo_sibling(s) for s in info.siblings or () if isinstance(s, RepoSibling)),
            disabled=info.disabled is True,
        )

    def sibling(self, path: str) -> Sibling | None:
        return next((s for s in self.siblings if s.path == path), None)
