"""Strict streaming GGUF parsing over a range reader: header, metadata, tensor infos, sampled rows.

GGUF (ggml-org/ggml docs/gguf.md) is: magic "GGUF", u32 version, u64 tensor count, u64 KV count,
the KV pairs, the tensor infos, padding to ``general.alignment``, then the tensor data. The header
is read in growing chunks from offset 0, never the whole file, so the same code parses a local
file or a 40 GB file on the Hub. Every length and count is checked against limits ported from
huggingface.js (packages/gguf/src/gguf.ts) before anything is allocated, and every malformed input
raises ``InvalidModelError`` with one line.

Rows are read as whole quant blocks along ggml's ``ne[0]`` (the contiguous dimension) and decoded
with gguf-py's tables (``GGML_QUANT_SIZES``, ``gguf.quants.dequantize``); this module never uses
``GGUFReader``, which needs a local memory-mapped file.
"""

from __future__ import annotations

import math
import re
import struct
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
from gguf.constants import (
    GGML_QUANT_SIZES,
    GGUF_DEFAULT_ALIGNMENT,
    TENSOR_NAMES,
    GGMLQuantizationType,
    GGUFValueType,
    MODEL_TENSOR,
)
from gguf.quants import dequantize

from .envelope import DEFAULT_MAX_HEADER_BYTES
from .errors import InvalidModelError, UninspectableWeightsError
from .reader import RangeReader, RangeRequest, read_range

GGUF_MAGIC = b"GGUF"
# Version 1 (2023) used u32 lengths; gguf-py's reader and llama.cpp read only 2 and 3.
SUPPORTED_VERSIONS = (2, 3)

# The first read. Headers without a vocabulary fit; a vocabulary's token strings overflow it, and
# the parser then asks for what it estimates the rest of the header to be (ESTIMATE_* below), so a
# 32k-vocabulary 7B header (~0.7 MB) costs two requests and ~1% over-read, where a fixed 1 MiB
# first read cost one request and ~0.3 MB of tensor bytes nobody used.
FIRST_CHUNK_BYTES = 256 * 1024
# Estimating the header left when a string array overflows the buffer: the array's remaining
# strings at the average length seen so far, plus two 4-byte arrays of the same count (llama.cpp
# writes tokenizer.ggml.scores and token_type right after the tokens), plus one tensor info per
# tensor (name, dims, type, offset: ~60 bytes for llama.cpp names), plus slack for the small keys.
# A miss costs one more request, never a wrong parse.
ESTIMATE_COMPANION_BYTES_PER_ITEM = 8
ESTIMATE_TENSOR_INFO_BYTES = 64
ESTIMATE_SLACK_BYTES = 16 * 1024

# Defensive limits from huggingface.js gguf.ts (its CWE-400/CWE-770 notes).
MAX_KV_COUNT = 100_000
MAX_TENSOR_COUNT = 10_000_000
MAX_STRING_LENGTH = 10 * 1024 * 1024
MAX_METADATA_ARRAY_LENGTH = 1_000_000
MAX_TENSOR_NDIMS = 8
MAX_TENSOR_DIM = 2**32
MAX_ARRAY_RECURSION_DEPTH = 4
# Not in huggingface.js: all array elements decoded from one header, so nested arrays cannot turn
# 64 MiB of u8 into hundreds of millions of Python objects. A 256k vocabulary with scores, token
# types and merges is about 1M elements.
MAX_TOTAL_ARRAY_ELEMENTS = 8_000_000
# llama.cpp's GGML_MAX_NAME: gguf.cpp refuses tensor names of 64 bytes or more.
MAX_TENSOR_NAME_BYTES = 63

# Scalar value types: struct format character (without byte order) and size.
_SCALAR_FORMATS: dict[GGUFValueType, str] = {
    GGUFValueType.UINT8: "B",
    GGUFValueType.INT8: "b",
    GGUFValueType.UINT16: "H",
    GGUFValueType.INT16: "h",
    GGUFValueType.UINT32: "I",
    GGUFValueType.INT32: "i",
    GGUFValueType.FLOAT32: "f",
    GGUFValueType.UINT64: "Q",
    GGUFValueType.INT64: "q",
    GGUFValueType.FLOAT64: "d",
    GGUFValueType.BOOL: "B",
}

# Types whose rows ``read_gguf_rows`` decodes: F32/F16 natively, the rest through gguf.quants
# (every type that module can dequantize; Q8_1 and Q8_K are intermediate formats it cannot).
DEQUANTIZABLE_TYPES = frozenset({
    "F32", "F16", "BF16", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q2_K", "Q3_K", "Q4_K", "Q5_K",
    "Q6_K", "IQ1_S", "IQ1_M", "IQ2_XXS", "IQ2_XS", "IQ2_S", "IQ3_XXS", "IQ3_S", "IQ4_NL", "IQ4_XS",
    "TQ1_0", "TQ2_0", "MXFP4", "NVFP4",
})
# In big-endian files only plain element types can be byte-swapped back; quant blocks pack
# multi-byte scales whose swapped layout gguf.quants does not decode.
BIG_ENDIAN_ROW_TYPES = {"F32": ">f4", "F16": ">f2"}

# Architectures whose llama.cpp converter (convert_hf_to_gguf.py) runs LlamaModel.permute on
# q_proj/k_proj: LlamaModel (arch "llama", also used for Mistral and Mixtral), MiniCPM, and
# GraniteModel/GraniteMoeModel, which inherit LlamaModel's tensor handling.
QK_PERMUTED_ARCHITECTURES = frozenset({"llama", "minicpm", "granite", "granitemoe"})


@dataclass(frozen=True)
class GGUFTensor:
    name: str
    shape: tuple[int, ...]  # numpy order: ggml's dims reversed, so the last axis is ne[0]
    ggml_type: str  # GGMLQuantizationType name, e.g. "Q4_K"
    offset_abs: int  # absolute byte offset of the tensor data in the file
    n_bytes: int
    byte_order: str = "<"  # the file's: "<" or ">" (struct notation)

    @property
    def row_len(self) -> int:
        """Elements per row (ggml's ne[0])."""
        return self.shape[-1]

    @property
    def n_rows(self) -> int:
        """Rows over all leading dimensions flattened (1 for a vector)."""
        return math.prod(self.shape[:-1])

    @property
    def row_bytes(self) -> int:
        block_size, type_size = GGML_QUANT_SIZES[GGMLQuantizationType[self.ggml_type]]
        return self.row_len // block_size * type_size


@dataclass(frozen=True)
class GGUFHeader:
    path: str
    version: int
    byte_order: str  # "<" or ">" (struct notation)
    metadata: dict[str, Any]  # arrays are lists; strings are str
    tensors: list[GGUFTensor]
    alignment: int
    data_start: int  # absolute offset of the tensor data section
    header_bytes: int  # where the tensor infos end: the bytes a parser must read
    fetched_bytes: int  # what this parse read from the reader (whole chunks)
    file_size: int

    def tensor(self, name: str) -> GGUFTensor:
        for t in self.tensors:
            if t.name == name:
                return t
        raise InvalidModelError(f"{self.path}: no tensor {name!r} in the GGUF header")


class _HeaderStream:
    """Sequential little- or big-endian decoding over a prefix of the file that grows on demand."""

    def __init__(self, reader: RangeReader, path: str, file_size: int, head: bytes = b"",
                 max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES):
        self.reader = reader
        self.path = path
        self.file_size = file_size
        # ``head``: the file's first bytes when the caller already fetched them in a batch.
        self.max_header_bytes = max_header_bytes
        self.buf = bytearray(head[: min(file_size, max_header_bytes)])
        self.pos = 0
        self.order = "<"
        self.array_elements = 0
        self.tensor_count = 0

    def fail(self, what: str) -> InvalidModelError:
        return InvalidModelError(f"{self.path}: {what} (at byte {self.pos:,})")

    def _ensure(self, n: int, expect_more: int = 0) -> None:
        """Hold at least ``n`` bytes past ``pos``; ``expect_more`` is the caller's estimate of the
        header bytes that follow, fetched in the same request."""
        need = self.pos + n
        if need <= len(self.buf):
            return
        if need > self.file_size:
            raise self.fail(f"GGUF header is truncated: needs {need:,} bytes, file has {self.file_size:,}")
        if need > self.max_header_bytes:
            raise self.fail(f"GGUF header runs past the {self.max_header_bytes:,}-byte limit (limits.header_bytes)")
        # Without an estimate, double what we hold (at least the first chunk): few requests.
        target = need + expect_more if expect_more else max(need, 2 * len(self.buf), FIRST_CHUNK_BYTES)
        target = min(target, self.file_size, self.max_header_bytes)
        start = len(self.buf)
        chunk = read_range(self.reader, self.path, start, target - start)
        if len(chunk) != target - start:
            raise self.fail(f"short read: asked for {target - start:,} bytes at {start:,}, got {len(chunk):,}")
        self.buf += chunk

    def take(self, n: int) -> bytes:
        self._ensure(n)
        out = bytes(self.buf[self.pos : self.pos + n])
        self.pos += n
        return out

    def scalar(self, fmt: str) -> Any:
        size = struct.calcsize(fmt)
        self._ensure(size)
        (value,) = struct.unpack_from(self.order + fmt, self.buf, self.pos)
        self.pos += size
        return value

    def u32(self) -> int:
        return self.scalar("I")

    def u64(self) -> int:
        return self.scalar("Q")

    def string(self, what: str, limit: int = MAX_STRING_LENGTH) -> str:
        length = self.u64()
        if length > limit:
            raise self.fail(f"{what} claims {length:,} bytes, over the {limit:,}-byte limit")
        raw = self.take(length)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise self.fail(f"{what} is not valid UTF-8 ({exc.reason})") from exc

    def string_array(self, key: str, count: int) -> list[str]:
        """``count`` strings, decoded in one tight loop (a vocabulary is 32k-256k of them)."""
        what = f"value of {key!r}"
        unpack_length = struct.Struct(self.order + "Q").unpack_from
        start, out = self.pos, []
        for i in range(count):
            if self.pos + 8 > len(self.buf) or self.pos + 8 + unpack_length(self.buf, self.pos)[0] > len(self.buf):
                self._ensure(8, self._estimate_rest(start, i, count))
                (length,) = unpack_length(self.buf, self.pos)
                if length > MAX_STRING_LENGTH:
                    raise self.fail(f"{what} claims {length:,} bytes, over the {MAX_STRING_LENGTH:,}-byte limit")
                self.pos += 8
                self._ensure(length, self._estimate_rest(start, i, count))
            else:
                (length,) = unpack_length(self.buf, self.pos)
                if length > MAX_STRING_LENGTH:
                    raise self.fail(f"{what} claims {length:,} bytes, over the {MAX_STRING_LENGTH:,}-byte limit")
                self.pos += 8
            end = self.pos + length
            try:
                out.append(self.buf[self.pos : end].decode("utf-8"))
            except UnicodeDecodeError as exc:
                raise self.fail(f"{what} is not valid UTF-8 ({exc.reason})") from exc
            self.pos = end
        return out

    def _estimate_rest(self, array_start: int, done: int, count: int) -> int:
        """Header bytes expected after ``pos`` when a string array of ``count`` overflows at item ``done``."""
        average = (self.pos - array_start) / done if done else 16
        return int(average * (count - done) + ESTIMATE_COMPANION_BYTES_PER_ITEM * count
                   + ESTIMATE_TENSOR_INFO_BYTES * self.tensor_count + ESTIMATE_SLACK_BYTES)

    def value_type(self, what: str) -> GGUFValueType:
        raw = self.u32()
        try:
            return GGUFValueType(raw)
        except ValueError:
            raise self.fail(f"{what} has unknown value type {raw}") from None

    def value(self, vtype: GGUFValueType, key: str, depth: int = 0) -> Any:
        if vtype == GGUFValueType.STRING:
            return self.string(f"value of {key!r}")
        if vtype == GGUFValueType.ARRAY:
            return self.array(key, depth + 1)
        value = self.scalar(_SCALAR_FORMATS[vtype])
        return bool(value) if vtype == GGUFValueType.BOOL else value

    def array(self, key: str, depth: int) -> list[Any]:
        if depth > MAX_ARRAY_RECURSION_DEPTH:
            raise self.fail(f"array {key!r} nests deeper than {MAX_ARRAY_RECURSION_DEPTH} levels")
        etype = self.value_type(f"array {key!r}")
        count = self.u64()
        if count > MAX_METADATA_ARRAY_LENGTH:
            raise self.fail(f"array {key!r} claims {count:,} elements, over the {MAX_METADATA_ARRAY_LENGTH:,} limit")
        self.array_elements += count
        if self.array_elements > MAX_TOTAL_ARRAY_ELEMENTS:
            raise self.fail(f"arrays hold over {MAX_TOTAL_ARRAY_ELEMENTS:,} elements in all")
        if etype == GGUFValueType.STRING:
            return self.string_array(key, count)
        fmt = _SCALAR_FORMATS.get(etype)
        if fmt is None:
            return [self.value(etype, key, depth) for _ in range(count)]
        # Scalar arrays decode in one numpy call: a 256k-entry score array is one slice, not 256k unpacks.
        raw = self.take(count * struct.calcsize(fmt))
        items = np.frombuffer(raw, dtype=np.dtype(self.order + fmt))
        if etype == GGUFValueType.BOOL:
            return (items != 0).tolist()
        return items.tolist()


def _read_preamble(stream: _HeaderStream) -> int:
    if stream.take(4) != GGUF_MAGIC:
        raise stream.fail("not a GGUF file (bad magic)")
    raw_version = stream.take(4)
    (little,) = struct.unpack("<I", raw_version)
    (big,) = struct.unpack(">I", raw_version)
    if little in SUPPORTED_VERSIONS:
        stream.order = "<"
        return little
    if big in SUPPORTED_VERSIONS:
        stream.order = ">"
        return big
    raise stream.fail(f"GGUF version {little} is not supported (only {', '.join(map(str, SUPPORTED_VERSIONS))})")


def _read_metadata(stream: _HeaderStream, kv_count: int) -> dict[str, Any]:
    metadata: dict[str, Any] = {}
    for _ in range(kv_count):
        key = stream.string("metadata key")
        vtype = stream.value_type(f"metadata {key!r}")
        value = stream.value(vtype, key)
        if key in metadata:
            raise stream.fail(f"duplicate metadata key {key!r}")
        metadata[key] = value
    return metadata


def _alignment(stream: _HeaderStream, metadata: dict[str, Any]) -> int:
    if "general.alignment" not in metadata:
        return GGUF_DEFAULT_ALIGNMENT
    alignment = metadata["general.alignment"]
    if not isinstance(alignment, int) or isinstance(alignment, bool) or alignment <= 0 or alignment & (alignment - 1):
        raise stream.fail(f"general.alignment must be a positive power of two, got {alignment!r}")
    return alignment


def _read_tensor_info(stream: _HeaderStream) -> tuple[str, tuple[int, ...], GGMLQuantizationType, int]:
    name = stream.string("tensor name", MAX_TENSOR_NAME_BYTES)
    n_dims = stream.u32()
    if not 1 <= n_dims <= MAX_TENSOR_NDIMS:
        raise stream.fail(f"tensor {name!r} has {n_dims} dimensions (1..{MAX_TENSOR_NDIMS} allowed)")
    dims = [stream.u64() for _ in range(n_dims)]
    if any(d > MAX_TENSOR_DIM for d in dims):
        raise stream.fail(f"tensor {name!r} has a dimension over {MAX_TENSOR_DIM:,}: {dims}")
    raw_type = stream.u32()
    try:
        qtype = GGMLQuantizationType(raw_type)
    except ValueError:
        raise stream.fail(f"tensor {name!r} has unknown ggml type {raw_type}") from None
    if qtype not in GGML_QUANT_SIZES:
        raise stream.fail(f"tensor {name!r} has ggml type {qtype.name}, which has no known block size")
    block_size, _ = GGML_QUANT_SIZES[qtype]
    if dims[0] % block_size:
        raise stream.fail(f"tensor {name!r}: row length {dims[0]} is not a multiple of the {qtype.name} block size {block_size}")
    offset = stream.u64()
    return name, tuple(reversed(dims)), qtype, offset


def _check_tensor_layout(path: str, tensors: list[GGUFTensor], file_size: int) -> None:
    """Tensor data must lie inside the file and no two tensors may share bytes."""
    end = 0
    for t in sorted(tensors, key=lambda t: t.offset_abs):
        if t.offset_abs + t.n_bytes > file_size:
            raise InvalidModelError(
                f"{path}: tensor {t.name!r} needs bytes {t.offset_abs:,}..{t.offset_abs + t.n_bytes:,} "
                f"but the file has {file_size:,}"
            )
        if t.offset_abs < end:
            raise InvalidModelError(f"{path}: tensor {t.name!r} overlaps the tensor before it")
        end = t.offset_abs + t.n_bytes


def parse_gguf_header(reader: RangeReader, path: str, head: bytes = b"",
                      max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES) -> GGUFHeader:
    """Parse a GGUF file's header through ``reader``, reading only its first bytes.

    ``head`` is the file's first bytes when the caller fetched them already (the engine reads
    ``FIRST_CHUNK_BYTES`` in the same batch as the config and tokenizer files)."""
    file_size = reader.size(path)
    stream = _HeaderStream(reader, path, file_size, head, max_header_bytes)
    version = _read_preamble(stream)
    tensor_count = stream.tensor_count = stream.u64()
    kv_count = stream.u64()
    if tensor_count > MAX_TENSOR_COUNT:
        raise stream.fail(f"header claims {tensor_count:,} tensors, over the {MAX_TENSOR_COUNT:,} limit")
    if kv_count > MAX_KV_COUNT:
        raise stream.fail(f"header claims {kv_count:,} metadata keys, over the {MAX_KV_COUNT:,} limit")
    metadata = _read_metadata(stream, kv_count)
    alignment = _alignment(stream, metadata)
    infos = [_read_tensor_info(stream) for _ in range(tensor_count)]
    header_bytes = stream.pos
    data_start = -(-header_bytes // alignment) * alignment
    tensors = []
    seen: set[str] = set()
    for name, shape, qtype, offset in infos:
        if name in seen:
            raise InvalidModelError(f"{path}: duplicate tensor name {name!r}")
        seen.add(name)
        if offset % alignment:
            raise InvalidModelError(f"{path}: tensor {name!r} offset {offset:,} is not a multiple of the alignment {alignment}")
        block_size, type_size = GGML_QUANT_SIZES[qtype]
        n_bytes = math.prod(shape) // block_size * type_size
        tensors.append(GGUFTensor(name, shape, qtype.name, data_start + offset, n_bytes, stream.order))
    _check_tensor_layout(path, tensors, file_size)
    return GGUFHeader(
        path=path,
        version=version,
        byte_order=stream.order,
        metadata=metadata,
        tensors=tensors,
        alignment=alignment,
        data_start=data_start,
        header_bytes=header_bytes,
        fetched_bytes=len(stream.buf),
        file_size=file_size,
    )


def _typed(header: GGUFHeader, key: str, kind: type) -> Any:
    """A metadata value of the expected Python type, or None when absent."""
    value = header.metadata.get(key)
    if value is None:
        return None
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise InvalidModelError(f"{header.path}: metadata {key!r} should be {kind.__name__}, got {type(value).__name__}")
    return value


def _typed_list(header: GGUFHeader, key: str, item: type) -> list | None:
    values = _typed(header, key, list)
    if values is not None and not all(isinstance(v, item) and not isinstance(v, bool) for v in values):
        raise InvalidModelError(f"{header.path}: metadata {key!r} should be a list of {item.__name__}")
    return values


def gguf_tokenizer(header: GGUFHeader) -> dict[str, Any] | None:
    """The tokenizer stored in the metadata, or None when the file carries no vocabulary."""
    tokens = _typed_list(header, "tokenizer.ggml.tokens", str)
    if tokens is None:
        return None
    token_types = _typed_list(header, "tokenizer.ggml.token_type", int)
    scores = _typed_list(header, "tokenizer.ggml.scores", float)
    for name, values in (("token_type", token_types), ("scores", scores)):
        if values is not None and len(values) != len(tokens):
            raise InvalidModelError(
                f"{header.path}: tokenizer.ggml.{name} has {len(values):,} entries for {len(tokens):,} tokens"
            )
    special = {}
    for field in ("bos", "eos", "unknown", "padding"):
        token_id = _typed(header, f"tokenizer.ggml.{field}_token_id", int)
        # An id outside the vocabulary names no token (converters write such pad ids); it is
        # dropped rather than failing the whole fingerprint over an optional field.
        special[f"{field}_token_id"] = token_id if token_id is not None and 0 <= token_id < len(tokens) else None
    return {
        "model": _typed(header, "tokenizer.ggml.model", str),
        "pre": _typed(header, "tokenizer.ggml.pre", str),
        "tokens": tokens,
        "merges": _typed_list(header, "tokenizer.ggml.merges", str),
        "token_types": token_types,
        "scores": scores,
        **special,
        "chat_template": _typed(header, "tokenizer.chat_template", str),
        "huggingface_json": _typed(header, "tokenizer.huggingface.json", str),
    }


# Per-architecture keys ("{arch}.<suffix>") reported by gguf_architecture, from gguf.constants.Keys.
_ARCH_KEYS = {
    "context_length": "context_length",
    "embedding_length": "embedding_length",
    "block_count": "block_count",
    "feed_forward_length": "feed_forward_length",
    "head_count": "attention.head_count",
    "head_count_kv": "attention.head_count_kv",
    "key_length": "attention.key_length",
    "value_length": "attention.value_length",
    "rope_dimension_count": "rope.dimension_count",
    "rope_freq_base": "rope.freq_base",
    "layer_norm_rms_epsilon": "attention.layer_norm_rms_epsilon",
    "layer_norm_epsilon": "attention.layer_norm_epsilon",
    "expert_count": "expert_count",
    "expert_used_count": "expert_used_count",
    "vocab_size": "vocab_size",
}


def gguf_architecture(header: GGUFHeader) -> dict[str, Any]:
    """Architecture facts: general.* names plus the "{arch}.*" hyperparameters that are present.

    Values keep their stored form (some models store head counts per layer as arrays). When
    ``{arch}.vocab_size`` is absent (most converters omit it) the vocabulary size comes from the
    token array, else from the embedding tensor's row count.
    """
    arch = _typed(header, "general.architecture", str)
    if arch is None:
        raise InvalidModelError(f"{header.path}: GGUF metadata has no general.architecture")
    facts: dict[str, Any] = {
        "architecture": arch,
        "name": _typed(header, "general.name", str),
        "basename": _typed(header, "general.basename", str),
        "file_type": _typed(header, "general.file_type", int),
        "quantization_version": _typed(header, "general.quantization_version", int),
    }
    for field, suffix in _ARCH_KEYS.items():
        value = header.metadata.get(f"{arch}.{suffix}")
        if value is not None:
            facts[field] = value
    if "vocab_size" not in facts:
        tokens = header.metadata.get("tokenizer.ggml.tokens")
        embedding = [t for t in header.tensors if t.name == "token_embd.weight"]
        if isinstance(tokens, list):
            facts["vocab_size"] = len(tokens)
        elif embedding:
            facts["vocab_size"] = embedding[0].shape[0]
    facts["qk_permuted"] = arch in QK_PERMUTED_ARCHITECTURES
    return facts


def read_gguf_rows(reader: RangeReader, path: str, tensor: GGUFTensor, rows: Sequence[int]) -> np.ndarray:
    """Rows ``rows`` of ``tensor`` as float32 ``(len(rows), row_len)``, fetching only their bytes.

    A row is ``row_len`` elements along ggml's ne[0], which is always whole quant blocks, so each
    row decodes on its own. All rows are fetched in one batched ``read_ranges`` call. Rows index
    the tensor with its leading dimensions flattened (a 3-D expert tensor's rows run expert by
    expert).
    """
    if tensor.ggml_type not in DEQUANTIZABLE_TYPES:
        raise UninspectableWeightsError(f"{path}: tensor {tensor.name!r} has ggml type {tensor.ggml_type}, which hubwatch cannot decode")
    if tensor.byte_order == ">" and tensor.ggml_type not in BIG_ENDIAN_ROW_TYPES:
        raise UninspectableWeightsError(
            f"{path}: tensor {tensor.name!r} is {tensor.ggml_type} in a big-endian GGUF, which hubwatch cannot decode"
        )
    n_rows = tensor.n_rows
    for r in rows:
        if isinstance(r, bool) or not isinstance(r, (int, np.integer)) or not 0 <= r < n_rows:
            raise InvalidModelError(f"{path}: row {r!r} is outside tensor {tensor.name!r} ({n_rows:,} rows)")
    if tensor.row_len == 0:
        # Zero-width rows hold nothing to fetch (gguf.quants cannot reshape them either).
        return np.zeros((len(rows), 0), dtype=np.float32)
    wanted = sorted({int(r) for r in rows})
    row_bytes = tensor.row_bytes
    chunks = reader.read_ranges([RangeRequest(path, tensor.offset_abs + r * row_bytes, row_bytes) for r in wanted])
    if any(len(c) != row_bytes for c in chunks):
        raise InvalidModelError(f"{path}: short read of tensor {tensor.name!r} rows")
    by_row = dict(zip(wanted, chunks))
    raw = np.frombuffer(b"".join(by_row[int(r)] for r in rows), dtype=np.uint8).reshape(len(rows), row_bytes)
    # Hostile or damaged scales decode to inf/NaN; that is data for the caller to judge, not a warning.
    with np.errstate(over="ignore", invalid="ignore"):
        if tensor.byte_order == ">":
            return raw.view(BIG_ENDIAN_ROW_TYPES[tensor.ggml_type]).astype(np.float32)
        values = dequantize(raw, GGMLQuantizationType[tensor.ggml_type])
    return np.asarray(values, dtype=np.float32).reshape(len(rows), tensor.row_len)


def _qk_groups(n_rows: int, n_head: int, n_head_kv: int | None, what: str) -> tuple[int, int]:
    """convert_hf_to_gguf's LlamaModel.permute: the head count used, and the half head dimension."""
    heads = n_head_kv if n_head_kv is not None and n_head_kv != n_head else n_head
    if heads <= 0 or n_rows % (2 * heads):
        raise InvalidModelError(f"{what}: {n_rows} rows cannot be split into {heads} heads of even size")
    return heads, n_rows // heads // 2


def undo_llama_qk_permutation(matrix: np.ndarray, n_head: int, n_head_kv: int | None = None) -> np.ndarray:
    """Put a GGUF Q or K weight (or bias) back in Hugging Face row order.

    llama.cpp's converter applies ``permute(w, n_head, n_head)`` to q_proj and
    ``permute(w, n_head, n_head_kv)`` to k_proj: rows are viewed as (heads, 2, head_dim // 2) and
    the last two axes swapped, turning HF's rotary half-split layout into interleaved pairs. This
    is the inverse; pass the same arguments the converter did.
    """
    rows = matrix.shape[0]
    heads, half = _qk_groups(rows, n_head, n_head_kv, "Q/K un-permutation")
    return matrix.reshape(heads, half, 2, *matrix.shape[1:]).swapaxes(1, 2).reshape(matrix.shape)


def gguf_qk_rows_to_hf_rows(rows: Sequence[int] | np.ndarray, n_rows: int, n_head: int, n_head_kv: int | None = None) -> np.ndarray:
    """Where GGUF Q/K row indices sit in the Hugging Face tensor (the index form of the inverse)."""
    heads, half = _qk_groups(n_rows, n_head, n_head_kv, "Q/K row mapping")
    gguf_rows = np.asarray(rows, dtype=np.int64)
    if gguf_rows.size and (gguf_rows.min() < 0 or gguf_rows.max() >= n_rows):
        raise InvalidModelError(f"Q/K row mapping: rows must lie in 0..{n_rows - 1}")
    head, within = np.divmod(gguf_rows, 2 * half)
    pair, side = np.divmod(within, 2)
    return head * 2 * half + side * half + pair


# GGUF tensor names (gguf.constants.TENSOR_NAMES) -> hubwatch roles, as fingerprints/roles.py names them.
_GGUF_ROLES: dict[MODEL_TENSOR, str] = {
    MODEL_TENSOR.TOKEN_EMBD: "embedding",
    MODEL_TENSOR.TOKEN_EMBD_NORM: "norm_embedding",
    MODEL_TENSOR.TOKEN_TYPES: "token_type_embedding",
    MODEL_TENSOR.POS_EMBD: "position_embedding",
    MODEL_TENSOR.OUTPUT_NORM: "norm_final",
    MODEL_TENSOR.OUTPUT: "lm_head",
    MODEL_TENSOR.ATTN_Q: "attn_q",
    MODEL_TENSOR.ATTN_K: "attn_k",
    MODEL_TENSOR.ATTN_V: "attn_v",
    MODEL_TENSOR.ATTN_QKV: "attn_qkv",
    MODEL_TENSOR.ATTN_OUT: "attn_o",
    MODEL_TENSOR.ATTN_NORM: "norm_attn",
    # BERT's post-attention LayerNorm (attention.output.LayerNorm), which roles.py calls norm_attn.
    MODEL_TENSOR.ATTN_OUT_NORM: "norm_attn",
    MODEL_TENSOR.FFN_NORM: "norm_mlp",
    # BERT's post-MLP LayerNorm (output.LayerNorm), which roles.py calls norm_mlp.
    MODEL_TENSOR.LAYER_OUT_NORM: "norm_mlp",
    MODEL_TENSOR.FFN_GATE: "mlp_gate",
    MODEL_TENSOR.FFN_UP: "mlp_up",
    MODEL_TENSOR.FFN_DOWN: "mlp_down",
    MODEL_TENSOR.FFN_GATE_INP: "router",
    MODEL_TENSOR.FFN_GATE_EXP: "expert_mlp_gate",
    MODEL_TENSOR.FFN_UP_EXP: "expert_mlp_up",
    MODEL_TENSOR.FFN_DOWN_EXP: "expert_mlp_down",
}
_GGUF_NAME_RX = re.compile(r"^(?:blk\.(\d+)\.)?([A-Za-z0-9_.]+?)\.(weight|bias)$")
_ROLE_BY_STEM = {TENSOR_NAMES[t].removeprefix("blk.{bid}."): role for t, role in _GGUF_ROLES.items()}
_LAYERED_STEMS = {TENSOR_NAMES[t].removeprefix("blk.{bid}.") for t in _GGUF_ROLES if TENSOR_NAMES[t].startswith("blk.")}


def gguf_name_to_hf_role(name: str) -> tuple[str | None, int | None]:
    """(role, layer) for a GGUF tensor name; role is None for names outside the mapped set.

    A bias gets the weight's role plus "_bias", as in fingerprints/roles.py.
    """
    m = _GGUF_NAME_RX.match(name)
    if not m:
        return None, None
    layer_text, stem, kind = m.groups()
    layer = int(layer_text) if layer_text is not None else None
    role = _ROLE_BY_STEM.get(stem)
    if role is None or (layer is not None) != (stem in _LAYERED_STEMS):
        return None, layer
    return (f"{role}_bias" if kind == "bias" else role), layer
