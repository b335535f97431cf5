"""The fingerprint of one model revision: typed, serialisable without pickle, and indexable.

A ``Fingerprint`` has three independent parts (config, tokenizer, weights); any can be missing
(a repo with no tokenizer, or weights hubwatch refuses to open). ``to_blob``/``from_blob`` give a
compact, versioned, pickle-free encoding (zlib-compressed JSON; arrays as float16 bytes), which is
what the store keeps. The full vocabulary is not in the blob: many models share one tokenizer, so
the store keeps vocabularies once per ``vocab_hash``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import zlib
from collections import Counter
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np

from .errors import InvalidModelError
from .special_tokens import is_common_special_token

# Bump when the meaning of any stored field changes; the store re-fingerprints older versions.
# 2: tensor budget 2 MiB -> 1 MiB; 3: matrix rows placed by row count only; 4: a multimodal model's
# layers and token embedding picked per component (a v3 copy of it compared with a v4 one sampled
# other vision layers: identical components read as merely derived).
FINGERPRINT_VERSION = 4


def stable_hash(obj: Any) -> str:
    """sha256 of a canonical JSON encoding (sorted keys), hex, first 32 chars."""
    data = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    return hashlib.sha256(data).hexdigest()[:32]


# The compact tier (what the store keeps for every model that matched nothing) is this fingerprint
# without its sampled tensor values: 0.5-2.5 MB of float16 samples become a few KB. Its blob stays
# under this many bytes (the store's per-model target is 64 KB, index rows and metadata included).
COMPACT_BLOB_MAX = 48 * 1024
COMPACT_NOTE = "compact fingerprint: sampled tensor values not stored (re-read from the Hub to compare weights)"

# float16's largest finite value. Sampled values are finite (weights.py) but may be far larger: a
# stored inf made every later comparison with this fingerprint fail (NaN correlations).
F16_MAX = float(np.finfo(np.float16).max)


def _encode_array(a: np.ndarray | None) -> dict | None:
    if a is None:
        return None
    a16 = np.clip(np.nan_to_num(np.asarray(a, dtype=np.float32)), -F16_MAX, F16_MAX).astype(np.float16)
    return {"shape": list(a16.shape), "f16": base64.b64encode(a16.tobytes()).decode("ascii")}


def _decode_array(d: dict | None) -> np.ndarray | None:
    if d is None:
        return None
    raw = base64.b64decode(d["f16"])
    values = np.frombuffer(raw, dtype=np.float16).astype(np.float32).reshape(d["shape"])
    # Fingerprints stored before F16_MAX clipping may hold inf: read them as the largest finite value.
    return np.nan_to_num(values, nan=0.0, posinf=F16_MAX, neginf=-F16_MAX)


@dataclass
class ConfigSignature:
    """Architecture facts from config.json, under canonical names whatever the source keys."""

    family: str | None  # normalised model_type, e.g. "bert", "llama"
    architectures: list[str]
    fields: dict[str, Any]  # canonical name -> value (hidden_size, num_layers, ...)
    arch_hash: str  # hash of ``fields``: equal for configs that describe the same shapes
    exact_hash: str  # hash of the whole config minus bookkeeping keys
    renamed_keys: dict[str, str]  # source key -> canonical name, where they differ
    text_config_path: str | None = None  # e.g. "text_config" for multimodal configs


@dataclass
class TokenizerSignature:
    kind: str  # "wordpiece" | "bpe" | "unigram" | "tiktoken" | "sentencepiece"
    source_file: str
    vocab_size: int
    vocab_hash: str
    merges_hash: str | None
    special_tokens: list[str]
    added_tokens: list[str]
    minhash: list[int]  # MinHash of the token strings, MINHASH_PERMUTATIONS values
    standard_vocabulary: str | None  # name of a widely shared vocabulary, if recognised
    vocab: list[str] | None = field(default=None, repr=False)  # id -> token; not in the blob
    # token_rank of every id, computed once while parsing (not in the blob).
    token_hashes: np.ndarray | None = field(default=None, repr=False)


@dataclass
class TensorInfo:
    name: str
    dtype: str  # safetensors dtype name, or a GGUF type name
    shape: list[int]
    file: str
    role: str  # canonical role, see roles.py
    layer: int | None  # block index, None for model-level tensors


@dataclass
class TensorSample:
    """Sampled rows of one tensor, as float32, at row indices ``rows`` (all rows of a 1-D tensor)."""

    name: str
    role: str
    layer: int | None
    shape: list[int]
    dtype: str
    rows: list[int]
    values: np.ndarray  # (len(rows), row_length) float32; 1-D tensors are one row


@dataclass
class TokenRows:
    """Embedding rows for a sample of token strings, so models can be aligned by token."""

    tensor: str
    tokens: list[str]
    ids: list[int]
    values: np.ndarray  # (len(tokens), hidden) float32


@dataclass
class WeightsSignature:
    format: str  # "safetensors" | "gguf" | "none" | "uninspectable"
    tensors: list[TensorInfo]
    structure_hash: str | None  # name-independent: roles, shapes and layer pattern
    hidden_size: int | None
    num_layers: int | None
    embedding: TokenRows | None
    samples: list[TensorSample]
    sample_digest: str | None  # hash of the raw sampled bytes, names and dtypes
    value_digest: str | None  # hash of sampled values rounded to bf16, name- and dtype-free
    file_sha256: dict[str, str]
    tensor_bytes_read: int
    note: str | None = None  # why weights were not inspected, when they were not


@dataclass
class Fingerprint:
    source: str  # repo id (with @sha) or folder path
    config: ConfigSignature | None
    tokenizer: TokenizerSignature | None
    weights: WeightsSignature | None
    bytes_read: int = 0
    requests: int = 0
    version: int = FINGERPRINT_VERSION

    # ---- index support -------------------------------------------------------------------

    def shape_family(self) -> str:
        """Partition key for the vector index: models that could be weight-compared directly."""
        w = self.weights
        if w is None or w.hidden_size is None:
            return "none"
        return f"d{w.hidden_size}"

    def index_keys(self) -> list[tuple[str, str]]:
        """Exact-match keys for candidate search: (kind, value)."""
        keys: list[tuple[str, str]] = []
        if self.weights:
            keys += [("file_sha256", h) for h in sorted(set(self.weights.file_sha256.values()))]
            if self.weights.structure_hash:
                keys.append(("structure", self.weights.structure_hash))
            if self.weights.value_digest:
                keys.append(("values", self.weights.value_digest))
        if self.tokenizer:
            keys.append(("vocab", self.tokenizer.vocab_hash))
            rare = rare_special_tokens(self.tokenizer)
            if rare:
                keys.append(("rare_specials", stable_hash(sorted(rare))))
        if self.config:
            keys.append(("arch", self.config.arch_hash))
        return keys

    # ---- tiers ---------------------------------------------------------------------------

    def compact(self) -> Fingerprint:
        """This fingerprint without sampled tensor values (config, tokenizer, tensor table, hashes and
        digests kept), within COMPACT_BLOB_MAX. A tensor table too large for it (MoE checkpoints list
        tens of thousands of expert tensors) keeps the model-level tensors and the first block's."""
        w = self.weights
        if w is None or (not w.samples and w.embedding is None):
            return self
        slim = replace(self, weights=replace(w, samples=[], embedding=None, note=w.note or COMPACT_NOTE))
        if len(slim.to_blob()) > COMPACT_BLOB_MAX:
            first_block = [t for t in w.tensors if t.layer is None or t.layer == 0]
            slim.weights.tensors = first_block
            if len(slim.to_blob()) > COMPACT_BLOB_MAX:
                slim.weights.tensors = []
        return slim

    # ---- serialisation -------------------------------------------------------------------

    def to_dict(self, include_arrays: bool = True) -> dict[str, Any]:
        # asdict deep-copies field by field: the vocabulary (not serialised) is left out before it,
        # and the tensor table (thousands of flat records) is copied directly; with them, a
        # 131k-token, 2,115-tensor fingerprint took ~1.5 s per blob.
        tok, w = self.tokenizer, self.weights
        d = asdict(replace(self, tokenizer=None, weights=replace(w, tensors=[]) if w is not None else None))
        if w is not None:
            d["weights"]["tensors"] = [{**vars(t), "shape": list(t.shape)} for t in w.tensors]
        if tok is not None:
            d["tokenizer"] = asdict(replace(tok, vocab=None, token_hashes=None))
            d["tokenizer"].pop("vocab")
            d["tokenizer"].pop("token_hashes")
        if w is not None:
            if include_arrays:
                if w.embedding is not None:
                    d["weights"]["embedding"]["values"] = _encode_array(w.embedding.values)
                for i, s in enumerate(w.samples):
                    d["weights"]["samples"][i]["values"] = _encode_array(s.values)
            else:
                if w.embedding is not None:
                    d["weights"]["embedding"].pop("values")
                for s in d["weights"]["samples"]:
                    s.pop("values")
        return d

    def to_blob(self) -> bytes:
        return zlib.compress(json.dumps(self.to_dict(), separators=(",", ":")).encode(), 6)

    @classmethod
    def from_blob(cls, blob: bytes, vocab: list[str] | None = None) -> Fingerprint:
        try:
            d = json.loads(zlib.decompress(blob))
        except (zlib.error, ValueError) as exc:
            raise InvalidModelError(f"stored fingerprint is corrupt: {exc}") from exc
        return cls.from_dict(d, vocab=vocab)

    @classmethod
    def from_dict(cls, d: dict[str, Any], vocab: list[str] | None = None) -> Fingerprint:
        config = ConfigSignature(**d["config"]) if d.get("config") else None
        tokenizer = None
        if d.get("tokenizer"):
            tokenizer = TokenizerSignature(**{**d["tokenizer"], "vocab": vocab})
        weights = None
        if d.get("weights"):
            w = dict(d["weights"])
            w["tensors"] = [TensorInfo(**t) for t in w["tensors"]]
            if w.get("embedding"):
                e = dict(w["embedding"])
                e["values"] = _decode_array(e["values"])
                w["embedding"] = TokenRows(**e)
            w["samples"] = [
                TensorSample(**{**s, "values": _decode_array(s["values"])}) for s in w["samples"]
            ]
            weights = WeightsSignature(**w)
        return cls(
            source=d["source"],
            config=config,
            tokenizer=tokenizer,
            weights=weights,
            bytes_read=d.get("bytes_read", 0),
            requests=d.get("requests", 0),
            version=d.get("version", FINGERPRINT_VERSION),
        )


def splitmix64(x: np.ndarray) -> np.ndarray:
    x = x + np.uint64(0x9E3779B97F4A7C15)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


_BYTE_IN_WORD = np.arange(8)


def token_hashes(tokens: list[str]) -> np.ndarray:
    """A 64-bit hash of every token's UTF-8 bytes (uint64 array): the token's rank (token_rank).

    Vectorised over the whole vocabulary, one 8-byte word position at a time: the length seeds
    the state and each little-endian word (zero-padded) is xored in and mixed with splitmix64.
    A 131k vocabulary hashes in ~30 ms instead of ~130 ms with one blake2b call per token. It is
    not collision-resistant; nothing relies on that (ranks and MinHash only need tokens spread
    evenly), and a forged collision moves a Jaccard estimate by 1/128 at most.
    """
    encoded = [t.encode("utf-8") for t in tokens]
    lengths = np.fromiter(map(len, encoded), dtype=np.int64, count=len(encoded))
    data = np.frombuffer(b"".join(encoded) + bytes(8), dtype=np.uint8)
    ends = np.cumsum(lengths)
    # Longest first, so the tokens still holding a word at position j are a prefix of ``order``.
    order = np.argsort(-lengths, kind="stable")
    n_words = -(-lengths[order] // 8)
    with np.errstate(over="ignore"):
        state = splitmix64(lengths.astype(np.uint64))
        for word in range(int(n_words[0]) if len(encoded) else 0):
            active = order[: np.searchsorted(-n_words, -word, side="left")]
            at = (ends - lengths)[active, None] + 8 * word + _BYTE_IN_WORD
            raw = np.where(at < ends[active, None], data[at], 0).astype(np.uint8)
            state[active] = splitmix64(state[active] ^ np.ascontiguousarray(raw).view("<u8").ravel())
    return state


def token_rank(token: str) -> int:
    """Deterministic pseudo-random rank of a token string (bottom-k sampling).

    Two vocabularies that share a token give it the same rank, so the k lowest-ranked tokens of
    overlapping vocabularies overlap in proportion to the vocabularies themselves.
    """
    return int(token_hashes([token])[0])


def rare_special_tokens(tok: TokenizerSignature) -> list[str]:
    """Special/added tokens that are not part of a widely shared standard set."""
    return sorted(
        t for t in set(tok.special_tokens) | set(tok.added_tokens) if not is_common_special_token(t)
    )


def structure_hash(infos: list[TensorInfo]) -> str:
    """Hash of the tensor shape pattern, blind to names and dtypes.

    Model-level shapes plus the multiset of per-layer shape sets: a checkpoint with every tensor
    renamed, or cast to another dtype, keeps the same structure hash.
    """
    model_level = sorted(tuple(i.shape) for i in infos if i.layer is None)
    per_layer: dict[int, list[tuple[int, ...]]] = {}
    for i in infos:
        if i.layer is not None:
            per_layer.setdefault(i.layer, []).append(tuple(i.shape))
    layer_pattern = Counter(tuple(sorted(shapes)) for shapes in per_layer.values())
    return stable_hash([model_level, sorted([list(k), v] for k, v in layer_pattern.items())])
