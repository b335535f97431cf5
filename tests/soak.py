"""Soak: the real watcher against the fake Hub for a long run, under waves of injected faults.

Used by benchmarks/soak.py (minutes, printed figures) and tests/test_soak.py (a few cycles).

Every cycle publishes new repos on the fake Hub — an undeclared noised copy of the reference and
an independent model — then runs one watcher cycle (``Watcher.run_once``: list the newest feed,
fingerprint what is new, match, alert, deliver) while the Hub answers with the cycle's fault wave:
429 storms, 5xx bursts, slow and truncated responses; the webhook now and then answers 429 or 502.
At the end the faults stop and the watcher drains what is left. Then:
- lost: published repos with no stored fingerprint (must be none);
- alerts: every copy alerted, no independent model alerted, every alert posted exactly once;
- memory: this process's resident set and live Python objects after each cycle; "flat" is judged
  on the resident set's slope over the second half of the run, after caches (tokenizers,
  connections, imports) have filled.

The fakes run in a child process (tests/fake_world.py), so their recorded traffic and messages are
not counted in this process's memory.

Models are small slices of the real all-MiniLM-L6-v2 (hidden 64, 2 layers, 3000 tokens, fp16,
~0.6 MB): real weight statistics, and hundreds of repos fit on disk.
"""

from __future__ import annotations

import gc
import json
import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file, save_file

from bot.app import App
from bot.settings import load_settings
from fake_world import FakeWorld
from store.store import Store

REFERENCE = "origin/reference"
HIDDEN, LAYERS, VOCAB, INTERMEDIATE, HEADS = 64, 2, 3000, 256, 4
# MiniLM's axis sizes -> the soak model's: every tensor keeps the leading part of each axis.
SHRINK = {30522: VOCAB, 384: HIDDEN, 1536: INTERMEDIATE}
# The disguised copies' noise, relative to each tensor's spread (tests/variants.py copies use 0.05).
COPY_NOISE = 0.05
# What the Hub does during a cycle, in rotation. Counts are responses. A storm of 6 429s outlasts
# the client's 6 attempts at the listing: the cycle gives up and the next one finds the repos.
# 3 429s on the resolvers bucket hit the fingerprints' first ranged reads of each file (the CDN
# behind the redirect does not rate-limit), which wait out the reset and go on.
# 4 503s take the client's backoff (1 + 2 + 4 + 8 s).
FAULT_WAVES: tuple[tuple[str, dict], ...] = (
    ("calm", {}),
    ("429 storm", {"storm_429": 6, "retry_after_s": 1}),
    ("5xx burst", {"errors_5xx": 4}),
    ("slow + truncated", {"latency_ms": 150, "truncate": 2}),
    ("429s on resolves", {"storm_429": 3, "scope": "resolvers"}),
)
CALM = {"storm_429": 0, "retry_after_s": None, "errors_5xx": 0, "latency_ms": 0, "truncate": 0, "scope": "any"}
# Every WEBHOOK_FAULT_EVERY-th cycle the webhook refuses the next post once, alternating 429 / 502.
WEBHOOK_FAULT_EVERY = 3
# Cycles after the faults stop, to pick up what a failed listing or fingerprint left.
DRAIN_CYCLES = 4


@dataclass
class CycleFigures:
    cycle: int
    wave: str
    published: int
    fingerprinted: int
    alerts_enqueued: int
    errors: int
    hub_429: int
    hub_5xx: int
    rss_kib: int
    # Live Python objects after a full collection: a leak of Python objects shows here even while
    # the allocator's high-water marks keep the resident set noisy.
    objects: int
    seconds: float


@dataclass
class SoakReport:
    cycles: list[CycleFigures] = field(default_factory=list)
    published: dict[str, str] = field(default_factory=dict)  # repo -> "copy" | "independent"
    lost: list[str] = field(default_factory=list)
    copies_alerted: int = 0
    independents_alerted: list[str] = field(default_factory=list)
    alerts_in_store: int = 0
    alerts_undelivered: int = 0
    posts_per_alert: Counter = field(default_factory=Counter)

    @property
    def copies(self) -> int:
        return sum(1 for kind in self.published.values() if kind == "copy")

    @property
    def duplicate_posts(self) -> int:
        return sum(n - 1 for n in self.posts_per_alert.values() if n > 1)

    def rss_slope_kib_per_cycle(self) -> float:
        """Least-squares slope of the resident set over the second half of the cycles."""
        tail = self.cycles[len(self.cycles) // 2:]
        if len(tail) < 3:
            return 0.0
        return float(np.polyfit([c.cycle for c in tail], [c.rss_kib for c in tail], 1)[0])

    def problems(self, max_slope_kib: float) -> list[str]:
        found = []
        if self.lost:
            found.append(f"{len(self.lost)} published repos never fingerprinted: {self.lost[:3]}")
        if self.copies_alerted != self.copies:
            found.append(f"{self.copies - self.copies_alerted} of {self.copies} copies raised no alert")
        if self.independents_alerted:
            found.append(f"independent models alerted: {self.independents_alerted[:3]}")
        if self.alerts_undelivered:
            found.append(f"{self.alerts_undelivered} alerts not delivered")
        if self.duplicate_posts:
            found.append(f"{self.duplicate_posts} alerts posted more than once")
        missing = self.alerts_in_store - len(self.posts_per_alert)
        if missing:
            found.append(f"{missing} delivered alerts not found in the channel")
        if (slope := self.rss_slope_kib_per_cycle()) > max_slope_kib:
            found.append(f"memory grows {slope:.0f} KiB per cycle (limit {max_slope_kib:.0f})")
        return found


def rss_kib() -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS in /proc/self/status")


class RepoMaker:
    """Writes small MiniLM-sliced repos into the fake Hub's folder, each with its own createdAt."""

    def __init__(self, root: Path, minilm_dir: Path):
        self.root = root
        full = load_file(str(minilm_dir / "model.safetensors"))
        self.reference = {name: self._slice(t) for name, t in full.items() if self._kept(name)}
        self.vocab = (minilm_dir / "vocab.txt").read_text().splitlines()[:VOCAB]
        config = json.loads((minilm_dir / "config.json").read_text())
        self.config = {**config, "hidden_size": HIDDEN, "num_hidden_layers": LAYERS, "vocab_size": VOCAB,
                       "intermediate_size": INTERMEDIATE, "num_attention_heads": HEADS}
        self.created = 1_700_000_000  # seconds; every repo is one minute newer than the one before

    @staticmethod
    def _kept(name: str) -> bool:
        parts = name.split(".")
        return not ("layer" in parts and int(parts[parts.index("layer") + 1]) >= LAYERS)

    @staticmethod
    def _slice(t: np.ndarray) -> np.ndarray:
        part = np.ascontiguousarray(t[tuple(slice(0, SHRINK.get(n, n)) for n in t.shape)])
        return part.astype(np.float16) if part.dtype.kind == "f" else part  # position_ids stay int64

    def publish(self, repo_id: str, tensors: dict[str, np.ndarray], vocab: list[str]) -> None:
        folder = self.root / repo_id
        folder.mkdir(parents=True)
        save_file(tensors, str(folder / "model.safetensors"))
        (folder / "config.json").write_text(json.dumps(self.config))
        (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
        self.created += 60
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(self.created))
        # _hub.json last: the fake Hub sees the repo complete or not at all.
        (folder / "_hub.json").write_text(json.dumps({"createdAt": stamp, "cardData": {"license": "mit"}}))

    def copy_of_reference(self, seed: int) -> dict[str, np.ndarray]:
        rng = np.random.default_rng(seed)
        return {n: (t + rng.normal(0, COPY_NOISE * float(t.std() or 1), t.shape)).astype(np.float16)
                if t.dtype.kind == "f" else t for n, t in self.reference.items()}

    def independent(self, seed: int) -> tuple[dict[str, np.ndarray], list[str]]:
        """Fresh BERT-style init (normal 0.02, norms at 1/0) and a vocabulary of its own."""
        rng = np.random.default_rng(seed)
        tensors = {n: t if t.dtype.kind != "f" else
                   (np.ones(t.shape) if n.endswith("LayerNorm.weight") else np.zeros(t.shape) if t.ndim == 1
                    else rng.normal(0, 0.02, t.shape)).astype(np.float16) for n, t in self.reference.items()}
        return tensors, self.vocab[:5] + [f"m{seed}w{i}" for i in range(5, VOCAB)]


def run_soak(workdir: Path, minilm_dir: Path, *, duration_s: float, min_cycles: int = 4,
             waves: tuple[tuple[str, dict], ...] = FAULT_WAVES,
             progress: Callable[[CycleFigures], None] = lambda c: None) -> SoakReport:
    """Cycles until ``duration_s`` has passed and at least ``min_cycles`` ran, the fault waves in
    rotation (the first cycle gets the second wave: the reference was indexed in calm)."""
    root = workdir / "hub"
    root.mkdir(parents=True)
    maker = RepoMaker(root, minilm_dir)
    maker.publish(REFERENCE, maker.reference, maker.vocab)
    report = SoakReport()
    logging.getLogger("hubwatch").setLevel(logging.ERROR)  # the per-model warnings are the expected faults
    with FakeWorld(str(root), with_webhook=True) as world:
        env = {"HF_ENDPOINT": world.endpoint, "HF_TOKEN": "", "HUBWATCH_DB": str(workdir / "hubwatch.db"),
               "HUBWATCH_DISCORD_ALLOWED_HOSTS": "127.0.0.1", "HUBWATCH_DISCORD_WEBHOOK": world.webhook_url,
               "HUBWATCH_FEEDS_TRENDING_ENABLED": "false", "HUBWATCH_FEEDS_LAST_MODIFIED_ENABLED": "false",
               "HUBWATCH_CONFIG": str(workdir / "hubwatch.toml")}
        (workdir / "hubwatch.toml").write_text("")  # no stray ./hubwatch.toml decides anything
        settings = load_settings(env=env)
        app = App.of(settings)
        watcher = app.watcher()
        try:
            watcher.run_once()  # the reference enters the index before any copy appears
            started = time.monotonic()
            cycle = 0
            while cycle < min_cycles or time.monotonic() - started < duration_s:
                cycle += 1
                report.cycles.append(_cycle(watcher, world, maker, report, cycle, waves[cycle % len(waves)]))
                progress(report.cycles[-1])
            world.hub_faults(**CALM)
            for _ in range(DRAIN_CYCLES):
                watcher.run_once()
        finally:
            app.close()
        posted = world.posted()
    _tally(report, settings.store.path, posted)
    return report


def _cycle(watcher, world: FakeWorld, maker: RepoMaker, report: SoakReport, cycle: int,
           wave_and_faults: tuple[str, dict]) -> CycleFigures:
    wave, faults = wave_and_faults
    # Other owners than the reference's: a lab re-uploading its own model is not alerted (bot/watch/policy.py).
    copy, independent = f"copier-{cycle}/model", f"indie-{cycle}/model"
    maker.publish(copy, maker.copy_of_reference(cycle), maker.vocab)
    maker.publish(independent, *maker.independent(cycle))
    report.published.update({copy: "copy", independent: "independent"})
    world.hub_faults(**{**CALM, **faults})
    if cycle % WEBHOOK_FAULT_EVERY == 0:
        world.webhook_fail("429" if cycle % (2 * WEBHOOK_FAULT_EVERY) else "502")
    start = time.monotonic()
    summaries = watcher.run_once()
    seconds = time.monotonic() - start
    traffic = world.traffic()
    gc.collect()
    statuses = traffic["statuses"]
    return CycleFigures(
        cycle=cycle, wave=wave, published=2, fingerprinted=sum(s.fingerprinted for s in summaries),
        alerts_enqueued=sum(s.alerts_enqueued for s in summaries), errors=sum(s.errors for s in summaries),
        hub_429=statuses.get(429, 0), hub_5xx=sum(n for status, n in statuses.items() if status >= 500),
        rss_kib=rss_kib(), objects=len(gc.get_objects()), seconds=seconds)


def _tally(report: SoakReport, store_path: str, posted: list[tuple[str, str]]) -> None:
    store = Store.open(store_path)
    try:
        report.lost = [repo for repo in report.published if store.find_fingerprint(repo) is None]
        rows = store.conn.execute("SELECT nonce, payload, status FROM alerts").fetchall()
    finally:
        store.close()
    suspects = {json.loads(payload)["suspect"]["repo_id"] for _, payload, _ in rows}
    report.copies_alerted = sum(1 for repo, kind in report.published.items() if kind == "copy" and repo in suspects)
    report.independents_alerted = sorted(r for r, kind in report.published.items() if kind == "independent" and r in suspects)
    report.alerts_in_store = len(rows)
    report.alerts_undelivered = sum(1 for _, _, status in rows if status != "delivered")
    nonces = {nonce for nonce, _, _ in rows}
    report.posts_per_alert = Counter(n for _, footer in posted for n in nonces if n in footer)
