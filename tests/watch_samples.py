"""The models of the watch end-to-end tests on the fake Hub, and the environment of a trending-only
`hubwatch watch` (shared by test_watch_e2e, test_arrival_order and test_watch_lifecycle)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from bot.fakes.discord.webhook import FakeDiscordWebhook
from bot.fakes.hub import FakeHub

REFERENCE = "sentence-transformers/all-MiniLM-L6-v2"
COPY = "someone/MiniLM-pro"
DECLARED = "lab/minilm-finetuned"
INDEPENDENT = "indie/encoder-small"


def publish(root: Path, repo_id: str, source: Path, meta: dict) -> None:
    folder = root / repo_id
    folder.mkdir(parents=True)
    for f in source.iterdir():
        if f.is_file():
            os.symlink(f, folder / f.name)
    (folder / "_hub.json").write_text(json.dumps(meta))


def trending_only(monkeypatch, hub: FakeHub, discord: FakeDiscordWebhook, db: Path, cwd: Path) -> None:
    """Environment of a `hubwatch watch` polling only the trending feed of ``hub``, alerting to ``discord``."""
    for name, value in {"HF_ENDPOINT": hub.endpoint, "HF_TOKEN": "", "HUBWATCH_DB": str(db),
                        "HUBWATCH_DISCORD_ALLOWED_HOSTS": "127.0.0.1", "HUBWATCH_DISCORD_WEBHOOK": discord.url,
                        "HUBWATCH_FEEDS_NEWEST_ENABLED": "false", "HUBWATCH_FEEDS_LAST_MODIFIED_ENABLED": "false",
                        "HUBWATCH_FEEDS_SEED_EMPTY_STORE": "false"}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.chdir(cwd)  # no stray ./hubwatch.toml


def build_hub_root(root: Path, minilm_dir: Path, variants: dict[str, Path]) -> Path:
    """The original (2021), an undeclared copy (2026-11-20), a declared fine-tune and an independent model."""
    publish(root, REFERENCE, minilm_dir, {"createdAt": "2021-08-30T00:00:00.000Z", "trendingScore": 5,
                                          "cardData": {"license": "apache-2.0"}})
    publish(root, COPY, variants["noise-rename-cast"], {"createdAt": "2026-11-20T00:00:00.000Z", "trendingScore": 90,
                                                        "cardData": {"license": "mit"}})
    publish(root, DECLARED, variants["finetune-heavy"], {"createdAt": "2026-11-21T00:00:00.000Z", "trendingScore": 80,
                                                         "cardData": {"license": "apache-2.0", "base_model": REFERENCE}})
    publish(root, INDEPENDENT, variants["independent-trained"], {"createdAt": "2026-11-22T00:00:00.000Z",
                                                                  "trendingScore": 70})
    return root


