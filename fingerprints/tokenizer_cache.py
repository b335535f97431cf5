"""Tokenizer signatures remembered by the identity of the files they were parsed from.

Most new Hub repos are fine-tunes that ship their base model's tokenizer files byte for byte, and
those files are the largest part of a fingerprint's reads (Llama-3's tokenizer.json is 9 MB,
Grok-1's 2.5 MB, against 1 MiB of sampled weights). The Hub names every file's content (its git
blob id, or its LFS sha256) in the model info, so a tokenizer whose files were all seen before is
taken from here without reading a byte. Keys hold every tokenizer file's path and identity: a
changed special-tokens config is a different tokenizer.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

from .model import TokenizerSignature
from .reader import RangeReader

# A cached signature keeps its vocabulary (embedding rows are chosen by token string): ~8 MB for a
# 131k vocabulary, ~20 MB for 256k. 16 entries bound the cache near 150 MB in the worst case and
# hold the handful of base tokenizers (Llama, Qwen, Mistral, Gemma...) that most uploads reuse.
DEFAULT_MAX_ENTRIES = 16
# A thread that finds another one reading and parsing the same tokenizer waits this long for it
# instead of doing the same work: fine-tunes of one base arrive together (in one poll of
# benchmarks/throughput.py, 5 of 8 parses repeated one running at that moment). A read and parse
# takes well under a second (a 9 MB Llama-3 tokenizer.json at 50 ms per request); past the wait the
# thread reads for itself, so a slow or stalled repo never holds back another beyond it.
IN_FLIGHT_WAIT_S = 5.0

CacheKey = tuple[tuple[str, str], ...]


def tokenizer_cache_key(reader: RangeReader, paths: list[str]) -> CacheKey | None:
    """The identity of a tokenizer's files, or None when the storage cannot name any one of them."""
    ids = [(p, reader.file_id(p)) for p in paths]
    return tuple((p, i) for p, i in ids if i) if paths and all(i for _, i in ids) else None


class TokenizerCache:
    """A thread-safe LRU of tokenizer signatures; the watcher fingerprints several repos at once."""

    def __init__(self, max_entries: int = DEFAULT_MAX_ENTRIES):
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self.max_entries = max_entries
        self._entries: OrderedDict[CacheKey, TokenizerSignature] = OrderedDict()
        # Keys some thread has claimed and is reading: set when it puts or releases the key.
        self._in_flight: dict[CacheKey, tuple[int, threading.Event]] = {}  # key -> (claiming thread, event)
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: CacheKey) -> TokenizerSignature | None:
        with self._lock:
            found = self._entries.get(key)
            if found is None:
                self.misses += 1
                return None
            self._entries.move_to_end(key)
            self.hits += 1
            return found

    def claim(self, key: CacheKey, wait_s: float = IN_FLIGHT_WAIT_S) -> TokenizerSignature | None:
        """The cached signature; or, on a miss, None with ``key`` claimed by this thread, which must
        ``put`` or ``release`` it. When another thread holds the claim, this one waits for it (up to
        ``wait_s``) and takes what it put; a miss after that is this thread's to read, unclaimed."""
        with self._lock:
            claim = self._in_flight.get(key)
            if claim is None and key not in self._entries:
                self._in_flight[key] = (threading.get_ident(), threading.Event())
                self.misses += 1
                return None
        if claim is not None:
            claim[1].wait(wait_s)
        return self.get(key)

    def put(self, key: CacheKey, signature: TokenizerSignature) -> None:
        with self._lock:
            self._entries[key] = signature
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)
            claim = self._in_flight.pop(key, None)  # whoever claimed it: the signature is here now
        if claim is not None:
            claim[1].set()

    def release(self, key: CacheKey) -> None:
        """End this thread's claim on ``key`` (a no-op when another thread holds it, or none does):
        the threads waiting go on, and read for themselves."""
        with self._lock:
            claim = self._in_flight.get(key)
            if claim is None or claim[0] != threading.get_ident():
                return
            del self._in_flight[key]
        claim[1].set()
