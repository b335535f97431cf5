"""Helpers to run a fake Hub in a test; its fixtures (hub_dir, fake_hub, client) are in conftest.py.

The served folder holds the real all-MiniLM-L6-v2 (files symlinked from the installed package),
a byte-identical re-upload under another name, a gated and a private copy, and a few tiny
config-only repos with distinct dates and counters for listing and paging tests.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from huggingface_hub import ModelInfo

from bot.hub import HubModel, RetryPolicy
from bot.hub.client import ListingPage
from bot.hub.ratelimit import HubRateBudget
from fingerprints.reader import LocalFolderReader

MINILM = "sentence-transformers/all-MiniLM-L6-v2"
COPY = "acme/minilm-copy"
GATED = "acme/gated-minilm"
PRIVATE = "acme/private-minilm"
GRANTED_TOKEN = "hf_granted_token_0123456789"
OTHER_TOKEN = "hf_other_token_9876543210"
MINILM_FILES = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
                "special_tokens_map.json", "vocab.txt")
# Tiny repos: (repo id, createdAt, trendingScore, downloads, likes, tags)
TINY_REPOS = [
    ("tiny/a", "2024-01-01T00:00:00.000Z", 5, 10, 1, ["text-classification"]),
    ("tiny/b", "2024-02-01T00:00:00.000Z", 50, 5, 9, []),
    ("tiny/c", "2024-03-01T00:00:00.000Z", 1, 500, 3, ["text-classification"]),
    ("other/d", "2024-04-01T00:00:00.000Z", 20, 0, 0, []),
]
# Fast retries for tests: the behaviour under test is the policy, not the wall-clock waits.
FAST_RETRY = RetryPolicy(max_attempts=4, backoff_base_s=0.01, backoff_cap_s=0.02, max_total_wait_s=5.0)


def wait_for(predicate, timeout_s: float = 5.0) -> bool:
    """Poll ``predicate``: the fake Hub records a response only after its body is written."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def _write_meta(folder: Path, meta: dict) -> None:
    (folder / "_hub.json").write_text(json.dumps(meta))


def link_minilm(folder: Path, minilm: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name in MINILM_FILES:
        os.symlink(minilm / name, folder / name)
    return folder


def build_hub_dir(root: Path, minilm: Path) -> Path:
    """Lay out the test repos under ``root`` and return it."""
    original = link_minilm(root / MINILM, minilm)
    _write_meta(original, {"createdAt": "2022-03-02T23:29:05.000Z", "downloads": 90_000_000, "likes": 3000,
                           "trendingScore": 100, "cardData": {"license": "apache-2.0", "library_name":
                           "sentence-transformers", "pipeline_tag": "sentence-similarity"}})
    copy = link_minilm(root / COPY, minilm)
    _write_meta(copy, {"createdAt": "2025-06-01T12:00:00.000Z", "downloads": 3, "trendingScore": 7,
                       "cardData": {"license": "mit", "base_model": "google-bert/bert-base-uncased"}})
    gated = link_minilm(root / GATED, minilm)
    _write_meta(gated, {"createdAt": "2025-05-01T00:00:00.000Z", "gated": "manual",
                        "granted_tokens": [GRANTED_TOKEN]})
    private = link_minilm(root / PRIVATE, minilm)
    _write_meta(private, {"createdAt": "2025-07-01T00:00:00.000Z", "private": True,
                          "granted_tokens": [GRANTED_TOKEN]})
    for repo_id, created, trending, downloads, likes, tags in TINY_REPOS:
        folder = root / repo_id
        folder.mkdir(parents=True)
        (folder / "config.json").write_text(json.dumps({"model_type": "bert", "architectures": ["BertModel"]}))
        _write_meta(folder, {"createdAt": created, "trendingScore": trending, "downloads": downloads,
                             "likes": likes, "tags": tags})
    return root


def public_repo_ids() -> set[str]:
    return {MINILM, COPY, GATED} | {r[0] for r in TINY_REPOS}


SHA = "0" * 40


def hub_model(entry: dict) -> HubModel:
    """A model from its Hub JSON, parsed as the Hub client parses it (huggingface_hub's ModelInfo)."""
    return HubModel.from_model_info(ModelInfo(**entry))


class FolderHub:
    """The watcher's Hub over local folders (or an exception a repo raises): one listing, readers
    pinned to SHA."""

    def __init__(self, repos: dict[str, Path | BaseException], created: dict[str, str]):
        self.repos = repos
        self.created = created

    def list_models(self, *, sort, limit, expand, author=None):
        return [hub_model({"id": repo, "sha": SHA, "createdAt": self.created[repo]}) for repo in self.repos]

    def reader(self, repo_id, sha=None):
        source = self.repos[repo_id]
        if isinstance(source, BaseException):
            raise source
        reader = LocalFolderReader(source)
        reader.name, reader.sha = repo_id, SHA
        return reader

    def list_models_page(self, url, *, sort, page_size, expand):
        return ListingPage("page-1", self.list_models(sort=sort, limit=page_size, expand=expand), None)  # one page

    def take_rate_limited_count(self):
        return 0  # folders are never rate limited

    rate_budget = HubRateBudget()
