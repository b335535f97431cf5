"""Hostile uploads: a repo's parsed size, request count and wall time are its own budget.

Each test reproduces an attack that passed every byte cap before the envelope existed: a 60 MB
tokenizer.json of empty objects (1.4 GiB once parsed), a vocab.txt of 30 M empty lines, a repo
of hundreds of tiny shards, a repo whose parsing raises MemoryError; and shows the benign repos
of the same cycle are still fingerprinted and alerted.
"""

from __future__ import annotations

import json
import time
import tracemalloc
from pathlib import Path

import pytest

from bot.alerts.discord_webhook import DeliveryResult
from bot.app import App
from bot.fakes.hub import FakeHub
from bot.fakes.hub.faults import FaultConfig
from bot.settings import load_settings
from bot.watch.watcher import Watcher
from fingerprints.engine import fingerprint_model
from fingerprints.envelope import LimitedReader, ParseEnvelope
from fingerprints.errors import BudgetExceededError
from fingerprints.reader import LocalFolderReader, RangeRequest
from fingerprints.tokenizer import parse_tokenizer_json, parse_vocab_txt
from fingerprints.untrusted_json import loads
from store.store import Store
from hubfixtures import SHA, FolderHub, link_minilm, wait_for

pytestmark = pytest.mark.slow  # hostile repos fingerprinted, a 300-shard repo among them

MiB = 1024 * 1024
REFERENCE = "sentence-transformers/all-MiniLM-L6-v2"
COPY = "someone/MiniLM-pro"


def hostile_tokenizer_json(megabytes: int = 60) -> bytes:
    """A valid tokenizer.json with a tiny vocabulary and ``megabytes`` of empty objects beside it."""
    n = megabytes * MiB // 3
    head = json.dumps({"model": {"type": "WordPiece", "vocab": {"[UNK]": 0, "a": 1}}})[:-1]
    return (head + ', "padding": [' + ",".join(["{}"] * n) + "]}").encode()


def test_a_60_mb_tokenizer_of_empty_objects_is_refused_before_it_is_parsed():
    raw = hostile_tokenizer_json()
    tracemalloc.start()
    try:
        with pytest.raises(BudgetExceededError, match="tokens is over the per-document limit"):
            parse_tokenizer_json(raw)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 * len(raw)  # the decoded text and its measure; parsing it took 1.4 GiB


def test_a_document_under_the_token_limit_but_over_the_memory_estimate_is_refused():
    doc = "[" + ",".join(["[]"] * 100_000) + "]"
    envelope = ParseEnvelope(max_memory_bytes=4 * MiB)
    with pytest.raises(BudgetExceededError, match="parsing would take about 14 MiB"):
        loads(doc, envelope)
    assert len(loads(doc)) == 100_000  # the default envelope takes it


def test_commas_inside_strings_do_not_count_as_tokens():
    doc = json.dumps({"model": {"type": "WordPiece", "vocab": {"[UNK]": 0}}, "note": "," * 50_000})
    assert parse_tokenizer_json(doc.encode(), envelope=ParseEnvelope(max_json_tokens=1000)).vocab == ["[UNK]"]


def test_a_vocab_txt_of_millions_of_empty_lines_is_refused_before_it_is_split():
    with pytest.raises(BudgetExceededError, match="vocabulary limit"):
        parse_vocab_txt(b"\n" * 3_000_000)


def test_a_vocabulary_over_the_configured_size_is_refused():
    vocab = {f"t{i}": i for i in range(5000)}
    raw = json.dumps({"model": {"type": "WordPiece", "vocab": vocab}}).encode()
    with pytest.raises(BudgetExceededError, match="5,000 tokens is over the vocabulary limit of 1,000"):
        parse_tokenizer_json(raw, envelope=ParseEnvelope(max_vocab=1000))


def tiny_shards_repo(root: Path, shards: int) -> Path:
    """A checkpoint of ``shards`` one-tensor safetensors files listed in an index."""
    root.mkdir(parents=True)
    (root / "config.json").write_text(json.dumps({"model_type": "bert", "hidden_size": 4}))
    weight_map = {}
    for i in range(shards):
        name = f"model-{i:05d}-of-{shards:05d}.safetensors"
        header = json.dumps({f"t{i}": {"dtype": "F32", "shape": [1, 4], "data_offsets": [0, 16]}}).encode()
        (root / name).write_bytes(len(header).to_bytes(8, "little") + header + bytes(16))
        weight_map[f"t{i}"] = name
    (root / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    return root


def test_a_repo_of_hundreds_of_tiny_shards_is_refused_before_its_header_reads_go_out(tmp_path):
    inner = LocalFolderReader(tiny_shards_repo(tmp_path / "shards", 300))
    limited = LimitedReader(inner, max_requests=100, max_bytes=64 * MiB, max_seconds=60)
    with pytest.raises(BudgetExceededError, match="per-model limit of 100"):
        fingerprint_model(limited)
    assert inner.requests <= 100


def test_the_wall_time_limit_covers_the_whole_fingerprint(minilm_dir):
    now = [0.0]

    def clock() -> float:
        now[0] += 1.0  # every look at the clock is one second later
        return now[0]

    limited = LimitedReader(LocalFolderReader(minilm_dir), max_requests=10_000, max_bytes=64 * MiB,
                            max_seconds=3, clock=clock)
    with pytest.raises(BudgetExceededError, match="took over 3 s"):
        fingerprint_model(limited)


def test_the_byte_limit_holds_for_local_folders_too(minilm_dir):
    limited = LimitedReader(LocalFolderReader(minilm_dir), max_requests=10_000, max_bytes=100_000, max_seconds=60)
    with pytest.raises(BudgetExceededError, match="per-model budget of 100,000 bytes"):
        limited.read_ranges([RangeRequest("model.safetensors", 0, 200_000)])


# ---- the watcher: a hostile repo fails alone --------------------------------------------------



class RecordingSender:
    def __init__(self):
        self.sent = []

    def send(self, alert, nonce=None) -> DeliveryResult:
        self.sent.append(alert)
        return DeliveryResult(delivered=True, message_id=str(len(self.sent)))


@pytest.fixture
def hostile_tokenizer_repo(tmp_path, minilm_dir) -> Path:
    folder = tmp_path / "hostile-tokenizer"
    folder.mkdir()
    (folder / "config.json").write_bytes((minilm_dir / "config.json").read_bytes())
    (folder / "tokenizer.json").write_bytes(hostile_tokenizer_json())
    return folder


def test_hostile_repos_fail_alone_and_the_copy_beside_them_is_alerted(tmp_path, minilm_dir, variants,
                                                                     hostile_tokenizer_repo):
    db = tmp_path / "hubwatch.db"
    settings = load_settings(env={"HUBWATCH_DB": str(db), "HUBWATCH_LIMITS_MODEL_REQUESTS": "200"})
    with Store.open(str(db)) as store:
        store.add_fingerprint(REFERENCE, "1" * 40, fingerprint_model(LocalFolderReader(minilm_dir)))
    repos = {"evil/memory": MemoryError(), "evil/tokenizer": hostile_tokenizer_repo,
             "evil/shards": tiny_shards_repo(tmp_path / "shards", 300), "evil/crash": RuntimeError("boom"),
             COPY: variants["noise-rename-cast"]}
    hub = FolderHub(repos, dict.fromkeys(repos, "2026-11-20T00:00:00.000Z"))
    sender = RecordingSender()
    summary = Watcher(settings, hub, sender, App.of(settings).fingerprint).poll_feed("newest")

    assert summary.fingerprinted == 1 and summary.errors == 4
    assert [a.suspect.repo_id for a in sender.sent] == [COPY]
    with Store.open(str(db)) as store:
        assert store.find_fingerprint(COPY, SHA) is not None
        assert all(store.find_fingerprint(repo, SHA) is None for repo in repos if repo != COPY)
        assert store.counters()["fingerprint_errors"]["value"] == 4
        # Each hostile repo is recorded state with its reason, retried later, not refetched every cycle.
        failed = {repo: store.get_revision(repo, SHA) for repo in repos if repo != COPY}
        assert all(rev is not None and rev.state == "failed" and rev.next_attempt_at for rev in failed.values())
        assert failed["evil/shards"].reason == "over budget" and failed["evil/tokenizer"].reason == "over budget"


def test_a_drip_fed_repo_is_cut_at_the_model_deadline_and_the_benign_one_beside_it_is_fingerprinted(
        tmp_path, minilm_dir):
    """A server that sends a byte every half second never lets a read time out: before the model's
    deadline reached into each request, one model's first read ran to hub.request_deadline_s (330 s)."""
    drip, benign, model_seconds, drip_interval_s = "evil/drip", "good/minilm", 8, 0.5
    link_minilm(tmp_path / "hub" / drip, minilm_dir)
    link_minilm(tmp_path / "hub" / benign, minilm_dir)
    db = tmp_path / "hubwatch.db"
    with FakeHub(tmp_path / "hub", faults=FaultConfig(drip_repo=drip, drip_interval_s=drip_interval_s)) as hub:
        settings = load_settings(env={"HF_ENDPOINT": hub.endpoint, "HUBWATCH_DB": str(db),
                                      "HUBWATCH_LIMITS_MODEL_SECONDS": str(model_seconds)})
        started = time.monotonic()
        with App.of(settings) as app:
            summary = Watcher(settings, app.hub, RecordingSender(), app.fingerprint).poll_feed("newest")
        elapsed = time.monotonic() - started

        def drip_answers(statuses: tuple[int, ...]) -> list[int]:
            """Body bytes of the drip repo's file answers of these statuses (the fake records each when it ends)."""
            return [sent for _m, _b, path, status, sent in hub.stats.log if f"/{drip}/" in path and status in statuses]

        # Every ranged read was redirected once (resolve -> resolve-cache or CDN), then dripped.
        assert wait_for(lambda: len(drip_answers((206,))) == len(drip_answers((302, 307))) > 0, timeout_s=10)
        dripped = drip_answers((206,))
        drip_sha = hub.repos.get(drip).sha

    assert summary.fingerprinted == 1 and summary.errors == 1
    # Cut at the model's deadline, far from the request's: each body had sent about model_seconds /
    # drip_interval_s bytes (config.json alone is 612 bytes, 5 minutes at this pace).
    assert elapsed < 60
    assert max(dripped) <= 3 * model_seconds / drip_interval_s
    with Store.open(str(db)) as store:
        assert store.find_fingerprint(benign) is not None
        revision = store.get_revision(drip, drip_sha)
    assert revision.state == "failed" and revision.reason == "over budget"
    assert "at the model's deadline (8 s, limits.model_seconds); cut there" in revision.detail
