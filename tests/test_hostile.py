"""Hostile uploads: a repo's parsed size, request count and wall time are its own budget.

Each test reproduces an attack that passed every byte cap before the envelope existed: a 60 MB
tokenizer.json of empty objects (1.4 GiB once parsed), a vocab.txt of 30 M empty lines, a repo
of hundreds of tiny shards, a repo whose parsing raises MemoryError; and shows the benign repos
of the same cycle are still fingerprinted and alerted.
"""

from __future__ import annotations

import json
import tracemalloc
from pathlib import Path

import pytest

from bot.alerts.discord_webhook import DeliveryResult
from bot.app import App
from bot.settings import load_settings
from bot.watch.watcher import Watcher
from fingerprints.engine import fingerprint_model
from fingerprints.envelope import LimitedReader, ParseEnvelope
from fingerprints.errors import BudgetExceededError
from fingerprints.reader import LocalFolderReader, RangeRequest
from fingerprints.tokenizer import parse_tokenizer_json, parse_vocab_txt
from fingerprints.untrusted_json import loads
from store.store import Store
from hubfixtures import SHA, FolderHub

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
