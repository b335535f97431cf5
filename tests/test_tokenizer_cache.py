"""The tokenizer cache: a repo whose tokenizer files the Hub names as already seen reads none of them."""

from __future__ import annotations

import json

import pytest

from bot.fakes.hub import FakeHub
from bot.hub import HubClient
from fingerprints.engine import fingerprint_model
from fingerprints.model import TokenizerSignature
from fingerprints.reader import LocalFolderReader
from fingerprints.tokenizer_cache import TokenizerCache, tokenizer_cache_key
from hubfixtures import COPY, MINILM, link_minilm

pytestmark = pytest.mark.slow  # MiniLM over the fake Hub

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


def signature(name: str) -> TokenizerSignature:
    return TokenizerSignature("bpe", name, 1, name, None, [], [], [0] * 128, None, [name])


def test_lru_evicts_the_least_recently_used_and_counts_hits():
    cache = TokenizerCache(max_entries=2)
    a, b, c = ((("tokenizer.json", k),) for k in "abc")
    cache.put(a, signature("a"))
    cache.put(b, signature("b"))
    assert cache.get(a).vocab == ["a"]  # a is now the most recent
    cache.put(c, signature("c"))
    assert cache.get(b) is None and cache.get(a) is not None and cache.get(c) is not None
    assert (cache.hits, cache.misses, len(cache)) == (3, 1, 2)
    with pytest.raises(ValueError):
        TokenizerCache(max_entries=0)


def test_no_key_without_a_content_id_for_every_file(minilm_dir):
    local = LocalFolderReader(minilm_dir)
    assert tokenizer_cache_key(local, list(TOKENIZER_FILES)) is None
    cache = TokenizerCache()
    fingerprint_model(local, tokenizers=cache)
    assert len(cache) == 0 and cache.hits == 0


def test_a_reupload_reads_no_tokenizer_bytes(client, hub_dir):  # noqa: F811
    cache = TokenizerCache()
    first_reader = client.reader(MINILM)
    first = fingerprint_model(first_reader, tokenizers=cache)
    second_reader = client.reader(COPY)  # byte-identical files: same blob ids
    second = fingerprint_model(second_reader, tokenizers=cache)
    tokenizer_bytes = sum((hub_dir / MINILM / f).stat().st_size for f in TOKENIZER_FILES)
    assert cache.hits == 1 and cache.misses == 1
    assert second.tokenizer is first.tokenizer
    assert first_reader.bytes_read - second_reader.bytes_read == tokenizer_bytes
    assert second.weights.sample_digest == first.weights.sample_digest  # same rows sampled


def test_a_changed_special_tokens_config_is_another_tokenizer(tmp_path, minilm_dir):
    base = link_minilm(tmp_path / "org" / "base", minilm_dir)
    changed = link_minilm(tmp_path / "org" / "changed", minilm_dir)
    (changed / "special_tokens_map.json").unlink()
    special = json.loads((base / "special_tokens_map.json").read_text())
    (changed / "special_tokens_map.json").write_text(json.dumps({**special, "additional_special_tokens": ["<|hub|>"]}))
    cache = TokenizerCache()
    with FakeHub(tmp_path) as hub, HubClient(hub.endpoint, token="") as hub_client:
        fingerprint_model(hub_client.reader("org/base"), tokenizers=cache)
        changed_fp = fingerprint_model(hub_client.reader("org/changed"), tokenizers=cache)
    assert cache.hits == 0 and len(cache) == 2
    assert "<|hub|>" in changed_fp.tokenizer.special_tokens


def test_threads_fingerprinting_one_tokenizer_at_once_parse_it_once(client, monkeypatch):  # noqa: F811
    """Fine-tunes of one base arrive together: the first thread reads and parses the shared
    tokenizer, the others wait for its signature instead of doing the same work."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    import fingerprints.engine as engine

    parses, started = [], threading.Barrier(3)
    real = engine.read_tokenizer

    def counted(*args, **kwargs):
        parses.append(threading.current_thread().name)
        return real(*args, **kwargs)

    monkeypatch.setattr(engine, "read_tokenizer", counted)
    cache = TokenizerCache()

    def fingerprint(repo):
        reader = client.reader(repo)
        started.wait()  # all three claim the key at the same moment
        return fingerprint_model(reader, tokenizers=cache)

    with ThreadPoolExecutor(3) as pool:
        fps = list(pool.map(fingerprint, [MINILM, COPY, MINILM]))
    assert len(parses) == 1 and (cache.misses, cache.hits) == (1, 2)
    assert fps[1].tokenizer is fps[0].tokenizer is fps[2].tokenizer


def test_a_failed_claim_lets_the_waiting_thread_read_for_itself():
    cache = TokenizerCache()
    key = (("tokenizer.json", "a"),)
    assert cache.claim(key) is None  # this thread reads it
    waited = []
    import threading

    waiter = threading.Thread(target=lambda: waited.append(cache.claim(key, wait_s=30)))
    waiter.start()
    other = threading.Thread(target=cache.release, args=(key,))  # not its claim to end
    other.start()
    other.join()
    waiter.join(timeout=0.5)
    assert waiter.is_alive()
    cache.release(key)  # the read failed: nothing put
    waiter.join(timeout=10)
    assert not waiter.is_alive() and waited == [None]
    cache.put(key, signature("a"))
    assert cache.claim(key).vocab == ["a"]
