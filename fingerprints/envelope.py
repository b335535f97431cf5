"""What one model's metadata may cost once parsed, not just downloaded.

Byte caps bound downloads, not what parsing makes of them: a 60 MB tokenizer.json of ``[{},{},...]``
is 20 M Python dicts, 1.4 GiB. Every document from the Hub is therefore measured before it is
parsed (``untrusted_json.loads``, the line-based tokenizer parsers) against a ``ParseEnvelope``:
JSON tokens, bytes of string content, vocabulary entries, and an estimate of the memory the parse
would take. A document over any of them is refused with the reason; nothing is materialised.
``LimitedReader`` holds a model to its requests, bytes and wall time the same way.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Callable, Sequence

from .errors import BudgetExceededError
from .reader import CuttableReader, RangeReader, RangeRequest

MiB = 1024 * 1024
# Memory of one parsed JSON token in CPython 3.11, measured with tracemalloc: an empty dict in a
# list 72 B, an empty list 64 B, a short str 64 B, an int 36 B, a float 32 B: the worst case is the estimate.
BYTES_PER_JSON_TOKEN = 72
# Gemma 3's tokenizer.json (262k vocabulary, 514k merges; the largest common one, ~33 MB) is about
# 2.1 M JSON tokens (keys, values and merge pairs); twice that leaves room for larger vocabularies.
DEFAULT_MAX_JSON_TOKENS = 4_000_000
# Bytes of string content in one document; a 64 MiB tokenizer file cannot hold more.
DEFAULT_MAX_STRING_BYTES = 64 * MiB
# The largest vocabularies on the Hub: XLM-V 901,629 tokens, Gemma 262,144, Llama-3 128,256.
DEFAULT_MAX_VOCAB = 1_000_000
# An estimated 4 M-token document is 288 MiB: Gemma 3's tokenizer.json (est. ~180 MiB) fits, and a
# watcher fingerprinting 4 models at once stays under 1 GiB (benchmarks/hostile.py).
DEFAULT_MAX_PARSE_MEMORY = 256 * MiB
# Download caps, by the kind of file (``ParseEnvelope.cap_for``). Configs are a few KB; 4 MiB
# leaves room for the largest multimodal ones.
DEFAULT_MAX_JSON_BYTES = 4 * MiB
# Tokenizer files are a few MB even for 256k vocabularies (Gemma 3's tokenizer.json, the largest
# common one, is ~33 MB).
DEFAULT_MAX_TOKENIZER_BYTES = 64 * MiB
# huggingface_hub refuses safetensors headers over 25 MB (constants.SAFETENSORS_MAX_HEADER_LENGTH);
# real headers of 1000-tensor shards are ~100 KB, GGUF headers of 256k vocabularies ~10 MB, shard
# indexes of the largest checkpoints a few MB.
DEFAULT_MAX_HEADER_BYTES = 25_000_000
# Which cap a file falls under: tokenizer payloads, then weight headers and shard indexes, else JSON.
TOKENIZER_FILE_RX = re.compile(
    r"(^|/)(tokenizer\.json|tokenizer\.model|[^/]*\.tiktoken|vocab\.(txt|json)|merges\.txt|spiece\.model"
    r"|sentencepiece\.bpe\.model|added_tokens\.json|special_tokens_map\.json)$")
HEADER_FILE_RX = re.compile(r"(\.safetensors|\.gguf|\.safetensors\.index\.json)$")
# Documents larger than this are parsed one at a time per process (``large_parse_lock`` of
# ``fingerprint_model``): each may cost up to the memory cap, smaller ones at most ~50 MB.
LARGE_DOCUMENT_BYTES = 2 * MiB


@dataclass(frozen=True)
class ParseEnvelope:
    max_json_tokens: int = DEFAULT_MAX_JSON_TOKENS
    max_string_bytes: int = DEFAULT_MAX_STRING_BYTES
    max_vocab: int = DEFAULT_MAX_VOCAB
    max_memory_bytes: int = DEFAULT_MAX_PARSE_MEMORY
    max_json_bytes: int = DEFAULT_MAX_JSON_BYTES
    max_tokenizer_bytes: int = DEFAULT_MAX_TOKENIZER_BYTES
    max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES

    def cap_for(self, path: str) -> int:
        """The most bytes a download of ``path`` may take (a whole small file, or a weights file's
        header), by the file's kind."""
        if TOKENIZER_FILE_RX.search(path):
            return self.max_tokenizer_bytes
        if HEADER_FILE_RX.search(path):
            return self.max_header_bytes
        return self.max_json_bytes

    def check(self, what: str, tokens: int, string_bytes: int, char_width: int = 1) -> None:
        """Refuse a document of ``tokens`` JSON tokens (or lines) and ``string_bytes`` bytes of text
        before it is parsed; ``char_width``: bytes per character of the decoded text (1, 2 or 4)."""
        if tokens > self.max_json_tokens:
            raise BudgetExceededError(f"{what}: {tokens:,} tokens is over the per-document limit of "
                                      f"{self.max_json_tokens:,} (limits.parse_tokens)")
        if string_bytes > self.max_string_bytes:
            raise BudgetExceededError(f"{what}: {string_bytes:,} bytes of strings is over the per-document "
                                      f"limit of {self.max_string_bytes:,} (limits.parse_string_bytes)")
        memory = tokens * BYTES_PER_JSON_TOKEN + string_bytes * char_width
        if memory > self.max_memory_bytes:
            raise BudgetExceededError(f"{what}: parsing would take about {memory / MiB:,.0f} MiB, over the "
                                      f"per-document limit of {self.max_memory_bytes / MiB:,.0f} MiB "
                                      "(limits.parse_memory_bytes)")

    def check_vocab(self, what: str, size: int) -> None:
        if size > self.max_vocab:
            raise BudgetExceededError(f"{what}: {size:,} tokens is over the vocabulary limit of "
                                      f"{self.max_vocab:,} (limits.vocab_tokens)")


DEFAULT_ENVELOPE = ParseEnvelope()


class LimitedReader:
    """A ``RangeReader`` that holds one model to its share of requests, bytes and wall time.

    Each batch is checked before it is sent, counting one request per range (merging can only
    make it fewer), so a repo of 300 tiny shards is refused before its 300 header reads go out,
    not after. The wall-time limit covers the whole fingerprint: it is checked between reads, and a
    reader whose requests can be cut (``CuttableReader``, the Hub's) cuts a request still running
    at the limit, so one slow answer cannot overrun it.
    """

    def __init__(self, inner: RangeReader, *, max_requests: int, max_bytes: int, max_seconds: float,
                 clock: Callable[[], float] = time.monotonic):
        self.inner = inner
        self.max_requests = max_requests
        self.max_bytes = max_bytes
        self._clock = clock
        self._deadline = clock() + max_seconds
        self.max_seconds = max_seconds
        if isinstance(inner, CuttableReader):
            inner.set_deadline(max_seconds)

    def __getattr__(self, name: str):  # sha, model, repo_id ... of the wrapped reader
        return getattr(self.inner, name)

    @property
    def name(self) -> str:
        return self.inner.name

    @property
    def bytes_read(self) -> int:
        return self.inner.bytes_read

    @property
    def requests(self) -> int:
        return self.inner.requests

    def check_time(self) -> None:
        if self._clock() > self._deadline:
            raise BudgetExceededError(f"{self.name}: fingerprinting took over {self.max_seconds:g} s "
                                      "(limits.model_seconds)")

    def list_files(self) -> list[str]:
        return self.inner.list_files()

    def size(self, path: str) -> int:
        self.check_time()
        return self.inner.size(path)

    def read_ranges(self, requests: Sequence[RangeRequest]) -> list[bytes]:
        self.check_time()
        if self.inner.requests + len(requests) > self.max_requests:
            raise BudgetExceededError(f"{self.name}: {len(requests):,} more requests would pass the per-model limit "
                                      f"of {self.max_requests:,} ({self.inner.requests:,} made; limits.model_requests)")
        wanted = sum(r.length for r in requests)
        if self.inner.bytes_read + wanted > self.max_bytes:
            raise BudgetExceededError(f"{self.name}: reading {wanted:,} more bytes would pass the per-model budget "
                                      f"of {self.max_bytes:,} bytes ({self.inner.bytes_read:,} read; limits.model_bytes)")
        out = self.inner.read_ranges(requests)
        self.check_time()
        return out

    def file_sha256(self, path: str) -> str | None:
        return self.inner.file_sha256(path)

    def file_id(self, path: str) -> str | None:
        return self.inner.file_id(path)
