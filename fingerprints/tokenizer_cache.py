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

    def put(self, key: CacheKey, signature: TokenizerSignature) -> None:
        with self._lock:
            self._entries[key] = signature
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)
