"""Hostile wave: one real watcher cycle over hostile repos beside benign ones; peak RSS and cycle time.

The fake Hub (in a child process, as the real one runs elsewhere) lists, in one "newest" cycle:
- benign: an undeclared copy of all-MiniLM-L6-v2 (noised, renamed, bf16; its source is indexed
  first) and an independent model of the same shape;
- hostile, each within every download cap: four repos whose 60 MB tokenizer.json is a tiny
  vocabulary beside 20 M empty objects (1.4 GiB each once parsed), a vocab.txt of 60 M empty
  lines, a 2 M-token vocabulary, a checkpoint of 300 tiny shards (~900 requests).
Prints the cycle's time, this process's peak resident set (the watcher's: the Hub is elsewhere),
what was fingerprinted and alerted, and each hostile repo's recorded reason. Exits 1 when a benign
repo was not fingerprinted, the copy not alerted, a hostile repo fingerprinted, or the peak RSS
passed --max-rss-mib.

    python benchmarks/hostile.py          # ~1 min warm (the variant cache), building ~400 MB of repos
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from fake_world import FakeWorld  # noqa: E402
from variants import build_all, default_cache_dir, minilm_dir  # noqa: E402

from bot.alerts.discord_webhook import ConsoleSender  # noqa: E402
from bot.app import App  # noqa: E402
from bot.watch.records import index_one  # noqa: E402
from bot.settings import load_settings  # noqa: E402

MiB = 1024 * 1024
REFERENCE = "sentence-transformers/all-MiniLM-L6-v2"
BENIGN = {"someone/MiniLM-pro": "noise-rename-cast", "indie/encoder-small": "independent-trained"}
# The target: the watcher under a hostile wave stays within 1 GiB.
DEFAULT_MAX_RSS_MIB = 1024


def link(src: Path, dst: Path, meta: dict) -> None:
    dst.mkdir(parents=True)
    for f in src.iterdir():
        if f.is_file():
            os.symlink(f, dst / f.name)
    (dst / "_hub.json").write_text(json.dumps(meta))


def hostile_repo(root: Path, repo_id: str, files: dict[str, bytes]) -> None:
    folder = root / repo_id
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"model_type": "bert", "hidden_size": 384}))
    for name, data in files.items():
        (folder / name).write_bytes(data)
    (folder / "_hub.json").write_text(json.dumps({"createdAt": "2026-11-25T00:00:00.000Z"}))


def empty_objects_tokenizer(megabytes: int = 60) -> bytes:
    head = json.dumps({"model": {"type": "WordPiece", "vocab": {"[UNK]": 0, "a": 1}}})[:-1].encode()
    return head + b', "padding": [' + b"{}," * (megabytes * MiB // 3) + b"{}]}"


def build_hub(root: Path, with_hostile: bool = True) -> list[str]:
    """Lay out the repos; returns the hostile repo ids."""
    variants = build_all(default_cache_dir())
    link(minilm_dir(), root / REFERENCE, {"createdAt": "2021-08-30T00:00:00.000Z"})
    for repo_id, variant in BENIGN.items():
        link(variants[variant], root / repo_id, {"createdAt": "2026-11-24T00:00:00.000Z"})
    hostile: list[str] = []
    if not with_hostile:
        return hostile
    objects = empty_objects_tokenizer()
    for i in range(4):
        hostile.append(f"evil/empty-objects-{i}")
        hostile_repo(root, hostile[-1], {"tokenizer.json": objects})
    hostile.append("evil/empty-lines")
    hostile_repo(root, hostile[-1], {"vocab.txt": b"\n" * (60 * MiB)})
    hostile.append("evil/two-million-tokens")
    vocab = {f"t{i}": i for i in range(2_000_000)}
    hostile_repo(root, hostile[-1], {"tokenizer.json": json.dumps({"model": {"type": "WordLevel", "vocab": vocab}}).encode()})
    hostile.append("evil/tiny-shards")
    shards = {}
    weight_map = {}
    for i in range(300):
        name = f"model-{i:05d}-of-00300.safetensors"
        header = json.dumps({f"t{i}": {"dtype": "F32", "shape": [1, 4], "data_offsets": [0, 16]}}).encode()
        shards[name] = len(header).to_bytes(8, "little") + header + bytes(16)
        weight_map[f"t{i}"] = name
    shards["model.safetensors.index.json"] = json.dumps({"weight_map": weight_map}).encode()
    hostile_repo(root, hostile[-1], shards)
    return hostile


class Reasons(logging.Handler):
    """The watcher's "fingerprint failed" records: repo -> the reason it recorded."""

    def __init__(self):
        super().__init__(logging.WARNING)
        self.by_repo: dict[str, str] = {}

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage() == "fingerprint failed":
            self.by_repo[record.repo] = record.error


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--max-rss-mib", type=float, default=DEFAULT_MAX_RSS_MIB)
    args = parser.parse_args(argv)
    benign_seconds, _, _, _ = one_cycle(False)
    seconds, summary, hostile, done, traffic, rss_before, reasons = one_cycle(True)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"cycle: {seconds:.1f} s for {summary.models_seen} models ({summary.fingerprinted} fingerprinted, "
          f"{summary.errors} failed, {summary.alerts_enqueued} alerts; the benign ones alone: {benign_seconds:.1f} s); "
          f"Hub requests {traffic['requests']}")
    print(f"peak RSS of the watcher: {peak:.0f} MiB (before the cycle: {rss_before:.0f} MiB; target <= "
          f"{args.max_rss_mib:.0f} MiB)")
    for repo in hostile:
        print(f"  {repo:<28} {reasons.by_repo.get(repo, 'NOT REFUSED')[:150]}")
    failures = [f"{r} not fingerprinted" for r in BENIGN if r not in done]
    failures += [f"{r} fingerprinted" for r in hostile if r in done]
    failures += ["the copy was not alerted"] if summary.alerts_enqueued != 1 else []
    failures += [f"peak RSS {peak:.0f} MiB over {args.max_rss_mib:.0f}"] if peak > args.max_rss_mib else []
    for failure in failures:
        print(f"FAIL: {failure}")
    return 1 if failures else 0


def one_cycle(with_hostile: bool):
    """One "newest" cycle of a fresh watcher and store over a fresh fake Hub."""
    with tempfile.TemporaryDirectory() as tmp:
        hub_root = Path(tmp) / "hub"
        # Built in a child process: building the files would otherwise count in this process's peak.
        with multiprocessing.get_context("spawn").Pool(1) as pool:
            hostile = pool.apply(build_hub, (hub_root, with_hostile))
        with FakeWorld(str(hub_root)) as world:
            settings = load_settings(env={
                "HF_ENDPOINT": world.endpoint, "HF_TOKEN": "", "HUBWATCH_DB": str(Path(tmp) / "hubwatch.db"),
                "HUBWATCH_FEEDS_TRENDING_ENABLED": "false", "HUBWATCH_FEEDS_LAST_MODIFIED_ENABLED": "false",
                "HUBWATCH_LOG_LEVEL": "ERROR"})
            reasons = Reasons()
            watcher_log = logging.getLogger("hubwatch.watcher")
            watcher_log.addHandler(reasons)
            watcher_log.propagate = False
            with App.of(settings) as app, open(os.devnull, "w") as quiet:
                watcher_log.setLevel(logging.WARNING)
                with app.open_store() as store:
                    index_one(store, app.fingerprint_spec(REFERENCE))
                rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
                watcher = app.watcher(sender=ConsoleSender(quiet))
                started = time.monotonic()
                summary = watcher.poll_feed("newest")
                seconds = time.monotonic() - started
                with app.open_store() as store:
                    done = {repo for repo in [*BENIGN, *hostile] if store.find_fingerprint(repo) is not None}
            traffic = world.traffic()
    if not with_hostile:
        return seconds, summary, done, traffic
    return seconds, summary, hostile, done, traffic, rss_before, reasons


if __name__ == "__main__":
    sys.exit(main())
