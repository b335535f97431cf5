"""The JSON the fake Hub returns for a model: listing entries and ``/api/models/{repo}`` bodies.

Field names and shapes follow huggingface_hub 1.33's ``ModelInfo`` parser (hf_api.py) and the
recorded responses quoted in the project's research notes (§1.2, §1.4 of hub-and-discord.md).
"""

from __future__ import annotations

import hashlib
import json
import struct
from typing import Any, Callable

from bot.fakes.hub.repos import Repo, RepoFolder, lfs_pointer

# A listing entry without expand/full carries exactly these keys (live responses, research §1.2).
LISTING_KEYS = ("_id", "id", "likes", "trendingScore", "private", "downloads", "tags", "pipeline_tag",
                "library_name", "createdAt", "modelId")
# ``full=true`` adds these.
FULL_KEYS = ("author", "sha", "lastModified", "gated", "disabled", "siblings")
# ``/api/models/{repo}`` without expand (recorded roberta-base-squad2 response, research §1.4).
INFO_KEYS = ("_id", "id", "modelId", "author", "sha", "lastModified", "createdAt", "private", "disabled",
             "gated", "downloads", "likes", "trendingScore", "tags", "pipeline_tag", "library_name", "cardData",
             "siblings", "config", "spaces", "safetensors", "usedStorage")
# huggingface_hub's ExpandModelProperty_T. baseModels, childrenModelCount and usedStorage are
# refused by the listing (huggingface_hub PR #3182); xetEnabled is accepted by model info only.
EXPAND_PROPERTIES = frozenset((
    "author", "baseModels", "cardData", "childrenModelCount", "config", "createdAt", "disabled", "downloads",
    "downloadsAllTime", "evalResults", "gated", "gguf", "inference", "inferenceProviderMapping", "lastModified",
    "library_name", "likes", "mask_token", "model-index", "pipeline_tag", "private", "resourceGroup",
    "safetensors", "sha", "siblings", "spaces", "tags", "transformersInfo", "trendingScore", "usedStorage",
    "widgetData", "xetEnabled"))
INFO_ONLY_EXPAND = frozenset(("baseModels", "childrenModelCount", "usedStorage", "xetEnabled"))
# Relations the Hub reports in baseModels / base_model:<relation>:<id> tags (hub-docs model-cards.md).
BASE_MODEL_RELATIONS = ("adapter", "merge", "quantized", "finetune")
# config.json is read to derive tags and the reduced ``config``; the Hub ignores bigger ones.
MAX_CONFIG_BYTES = 1024 * 1024
# huggingface_hub refuses safetensors headers over 25 MB (constants.SAFETENSORS_MAX_HEADER_LENGTH).
MAX_SAFETENSORS_HEADER = 25_000_000


def _config(repo: Repo) -> dict[str, Any]:
    return repo.memo("config", _read_config)


def _read_config(repo: Repo) -> dict[str, Any]:
    f = repo.files.get("config.json")
    if f is None or f.size > MAX_CONFIG_BYTES:
        return {}
    try:
        data = json.loads(f.full_path.read_bytes())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def base_models(repo: Repo) -> tuple[str | None, list[str]]:
    """(relation, ids) declared by the card; the relation is inferred the way the Hub does when absent."""
    declared = repo.card_data.get("base_model")
    ids = [declared] if isinstance(declared, str) else [m for m in declared or [] if isinstance(m, str)]
    if not ids:
        return None, []
    relation = repo.card_data.get("base_model_relation")
    if relation not in BASE_MODEL_RELATIONS:
        if "adapter_config.json" in repo.files:
            relation = "adapter"
        elif len(ids) > 1:
            relation = "merge"
        elif any(p.endswith(".gguf") for p in repo.files):
            relation = "quantized"
        else:
            relation = "finetune"
    return relation, ids


def tags(repo: Repo) -> list[str]:
    return list(repo.memo("tags", _tags))


def _tags(repo: Repo) -> list[str]:
    card = repo.card_data
    out = [t for t in repo.meta.get("tags") or [] if isinstance(t, str)]
    if card.get("library_name"):
        out.append(card["library_name"])
    if any(p.endswith(".safetensors") for p in repo.files):
        out.append("safetensors")
    if any(p.endswith(".gguf") for p in repo.files):
        out.append("gguf")
    model_type = _config(repo).get("model_type")
    if isinstance(model_type, str):
        out.append(model_type)
    if card.get("pipeline_tag"):
        out.append(card["pipeline_tag"])
    relation, ids = base_models(repo)
    for base in ids:
        out += [f"base_model:{base}", f"base_model:{relation}:{base}"]
    if isinstance(card.get("license"), str):
        out.append(f"license:{card['license']}")
    out.append("region:us")
    return list(dict.fromkeys(out))


def _safetensors_summary(repo: Repo) -> dict[str, Any] | None:
    """{"parameters": {dtype: count}, "total": n} from the safetensors headers, as the Hub computes it
    (once per revision: it is stored with the commit)."""
    return repo.memo("safetensors", _read_safetensors_summary)


def _read_safetensors_summary(repo: Repo) -> dict[str, Any] | None:
    params: dict[str, int] = {}
    found = False
    for f in repo.files.values():
        if not f.path.endswith(".safetensors") or f.size < 8:
            continue
        try:
            with open(f.full_path, "rb") as fh:
                (n,) = struct.unpack("<Q", fh.read(8))
                if n > MAX_SAFETENSORS_HEADER or n > f.size - 8:
                    return None
                header = json.loads(fh.read(n))
        except (OSError, ValueError, struct.error):
            return None
        found = True
        for name, info in header.items():
            if name == "__metadata__" or not isinstance(info, dict):
                continue
            count = 1
            for d in info.get("shape") or []:
                count *= int(d)
            params[str(info.get("dtype"))] = params.get(str(info.get("dtype")), 0) + count
    return {"parameters": params, "total": sum(params.values())} if found else None


class ModelJson:
    """Builds the JSON for one repo, computing each property only when asked for."""

    def __init__(self, folder: RepoFolder, all_repos: Callable[[], list[Repo]]):
        self.folder = folder
        self.all_repos = all_repos

    def _sibling(self, repo: Repo, path: str, blobs: bool) -> dict[str, Any]:
        if not blobs:
            return {"rfilename": path}
        f = repo.files[path]
        entry: dict[str, Any] = {"rfilename": path, "size": f.size, "blobId": self.folder.blob_id(repo, f)}
        if f.is_lfs:
            sha256 = self.folder.sha256(repo, f)
            entry["lfs"] = {"size": f.size, "sha256": sha256, "pointerSize": len(lfs_pointer(sha256, f.size))}
        return entry

    def _children(self, repo: Repo) -> dict[str, int]:
        counts = dict.fromkeys(BASE_MODEL_RELATIONS, 0)
        for other in self.all_repos():
            relation, ids = base_models(other)
            if repo.repo_id in ids and relation:
                counts[relation] += 1
        return counts

    def property(self, repo: Repo, name: str, blobs: bool = False) -> tuple[bool, Any]:
        """(present, value) of one property; absent properties are left out of the JSON, as the Hub does."""
        card = repo.card_data
        simple = {
            "_id": repo.object_id, "id": repo.repo_id, "modelId": repo.repo_id, "author": repo.author,
            "sha": repo.sha, "createdAt": repo.created_at, "lastModified": repo.last_modified,
            "private": repo.private, "disabled": bool(repo.meta.get("disabled", False)), "gated": repo.gated,
            "downloads": int(repo.meta.get("downloads", 0)),
            "downloadsAllTime": int(repo.meta.get("downloadsAllTime", repo.meta.get("downloads", 0))),
            "likes": int(repo.meta.get("likes", 0)), "trendingScore": _score(repo.meta.get("trendingScore", 0)),
            "spaces": [], "xetEnabled": False,
        }
        if name in simple:
            return True, simple[name]
        if name == "tags":
            return True, tags(repo)
        if name in ("library_name", "pipeline_tag"):
            return (name in card), card.get(name)
        if name == "cardData":
            return bool(card), card
        if name == "siblings":
            return True, [self._sibling(repo, p, blobs) for p in sorted(repo.files)]
        if name == "config":
            cfg = _config(repo)
            reduced = {k: cfg[k] for k in ("architectures", "model_type") if k in cfg}
            return bool(cfg), {**reduced, "tokenizer_config": {}}
        if name == "safetensors":
            summary = _safetensors_summary(repo)
            return summary is not None, summary
        if name == "usedStorage":
            return True, sum(f.size for f in repo.files.values())
        if name == "baseModels":
            relation, ids = base_models(repo)
            models = [{"id": i, "_id": hashlib.sha1(i.encode()).hexdigest()[:24]} for i in ids]
            return bool(ids), {"relation": relation, "models": models}
        if name == "childrenModelCount":
            return True, self._children(repo)
        return False, None  # known to the Hub but not modelled here (inference, widgetData, gguf, ...)

    def build(self, repo: Repo, keys: tuple[str, ...] | list[str], blobs: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key in keys:
            present, value = self.property(repo, key, blobs)
            if present:
                out[key] = value
        return out

    def listing_entry(self, repo: Repo, expand: list[str], full: bool, card_data: bool, config: bool) -> dict[str, Any]:
        if expand:
            return self.build(repo, ["_id", "id", *expand])
        keys = list(LISTING_KEYS)
        if full:
            keys += FULL_KEYS
        if card_data or full:
            keys.append("cardData")
        if config:
            keys.append("config")
        return self.build(repo, keys)

    def info(self, repo: Repo, expand: list[str], blobs: bool) -> dict[str, Any]:
        if expand:
            return self.build(repo, ["_id", "id", *expand], blobs)
        return self.build(repo, INFO_KEYS, blobs)


def _score(value: Any) -> int | float:
    """The Hub's trendingScore is a JSON number that is often fractional (e.g. 12.5); whole
    numbers are sent as integers, as the Hub's JSON does."""
    number = float(value)
    return int(number) if number.is_integer() else number
