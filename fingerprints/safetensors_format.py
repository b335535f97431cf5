"""Strict safetensors header parsing over a range reader.

A header is an 8-byte little-endian length N, then N bytes of JSON mapping tensor names to
{dtype, shape, data_offsets}. Every field is checked before any offset is trusted: the header
must fit in the file, offsets must lie in the data region, match dtype x shape, and tile the
data region without overlaps or holes (the format's own rule). Sharded checkpoints are read
through model.safetensors.index.json, one header per shard.
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass

from .errors import InvalidModelError
from .reader import RangeReader, RangeRequest

# huggingface_hub refuses headers over 25 MB (constants.SAFETENSORS_MAX_HEADER_LENGTH); real
# headers of 1000-tensor shards are ~100 KB.
MAX_HEADER_BYTES = 25_000_000
# One GET of this size returns the whole header of most shards (7B and Grok-1 shards: ~17-34 KB;
# a 1000-tensor shard ~100 KB takes a second GET). huggingface_hub reads 100 KB, which costs a
# 16-shard checkpoint 1.6 MB of header reads instead of ~0.3 MB.
FIRST_READ_BYTES = 64 * 1024
MAX_INDEX_BYTES = 50 * 1024 * 1024

DTYPE_SIZES = {
    "F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1,
    "U16": 2, "U32": 4, "U64": 8, "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1, "F8_E8M0": 1,
}


@dataclass(frozen=True)
class SafetensorsTensor:
    name: str
    dtype: str
    shape: tuple[int, ...]
    file: str
    offset: int  # absolute byte offset of the tensor data in the file
    nbytes: int

    @property
    def row_bytes(self) -> int:
        return self.nbytes // self.shape[0] if self.shape and self.shape[0] else self.nbytes


def parse_header_bytes(header: bytes, file: str, file_size: int, header_len: int) -> list[SafetensorsTensor]:
    try:
        data = json.loads(header)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidModelError(f"{file}: safetensors header is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise InvalidModelError(f"{file}: safetensors header must be a JSON object")
    data_start = 8 + header_len
    data_len = file_size - data_start
    tensors = []
    spans = []
    for name, info in data.items():
        if name == "__metadata__":
            if not isinstance(info, dict):
                raise InvalidModelError(f"{file}: __metadata__ must be an object")
            continue
        if not isinstance(info, dict):
            raise InvalidModelError(f"{file}: entry {name!r} is not an object")
        dtype, shape, offsets = info.get("dtype"), info.get("shape"), info.get("data_offsets")
        if dtype not in DTYPE_SIZES:
            raise InvalidModelError(f"{file}: tensor {name!r} has unknown dtype {dtype!r}")
        if not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape):
            raise InvalidModelError(f"{file}: tensor {name!r} has an invalid shape {shape!r}")
        if (
            not isinstance(offsets, list)
            or len(offsets) != 2
            or not all(isinstance(o, int) for o in offsets)
            or not 0 <= offsets[0] <= offsets[1] <= data_len
        ):
            raise InvalidModelError(
                f"{file}: tensor {name!r} has data_offsets {offsets!r} outside the data region (0..{data_len})"
            )
        nbytes = math.prod(shape) * DTYPE_SIZES[dtype]
        if offsets[1] - offsets[0] != nbytes:
            raise InvalidModelError(
                f"{file}: tensor {name!r} spans {offsets[1] - offsets[0]} bytes but {dtype}{shape} needs {nbytes}"
            )
        spans.append((offsets[0], offsets[1], name))
        tensors.append(SafetensorsTensor(name, dtype, tuple(shape), file, data_start + offsets[0], nbytes))
    spans.sort()
    end = 0
    for begin, stop, name in spans:
        if begin < end:
            raise InvalidModelError(f"{file}: tensor {name!r} overlaps the tensor before it")
        if begin > end:
            raise InvalidModelError(f"{file}: a hole of {begin - end} bytes precedes tensor {name!r}")
        end = stop
    return tensors


def read_safetensors_headers(reader: RangeReader, files: list[str]) -> dict[str, tuple[list[SafetensorsTensor], int]]:
    """Parse the headers of ``files``: one batched read of every file's start, then one batched
    read of the rest of any header longer than that. Returns file -> (tensors, header bytes)."""
    sizes = {f: reader.size(f) for f in files}
    for f, size in sizes.items():
        if size < 8:
            raise InvalidModelError(f"{f}: {size} bytes is too small to be a safetensors file")
    firsts = dict(zip(files, reader.read_ranges([RangeRequest(f, 0, min(sizes[f], FIRST_READ_BYTES)) for f in files])))
    lengths = {}
    for f in files:
        (header_len,) = struct.unpack("<Q", firsts[f][:8])
        if header_len > MAX_HEADER_BYTES:
            raise InvalidModelError(f"{f}: header claims {header_len:,} bytes, over the {MAX_HEADER_BYTES:,}-byte limit")
        if 8 + header_len > sizes[f]:
            raise InvalidModelError(f"{f}: header claims {header_len:,} bytes but the file has {sizes[f]:,}")
        lengths[f] = header_len
    short = [f for f in files if len(firsts[f]) < 8 + lengths[f]]
    rests = dict(zip(short, reader.read_ranges(
        [RangeRequest(f, len(firsts[f]), 8 + lengths[f] - len(firsts[f])) for f in short]))) if short else {}
    out = {}
    for f in files:
        header = (firsts[f] + rests.get(f, b""))[8 : 8 + lengths[f]]
        out[f] = (parse_header_bytes(header, f, sizes[f], lengths[f]), 8 + lengths[f])
    return out


def read_safetensors_header(reader: RangeReader, file: str) -> tuple[list[SafetensorsTensor], int]:
    """Parse one file's header; returns the tensors and the header bytes read."""
    return read_safetensors_headers(reader, [file])[file]


def safetensors_files(files: list[str], read_index) -> list[str]:
    """Which safetensors files make up the checkpoint (root level; index-listed shards win)."""
    index_name = "model.safetensors.index.json"
    if index_name in files:
        try:
            index = json.loads(read_index(index_name))
            shard_names = sorted(set(index["weight_map"].values()))
        except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, AttributeError) as exc:
            raise InvalidModelError(f"{index_name} is malformed: {exc}") from exc
        missing = [s for s in shard_names if s not in files]
        if missing:
            raise InvalidModelError(f"{index_name} lists shards that are not in the repo: {missing[:3]}")
        return shard_names
    root = sorted(f for f in files if f.endswith(".safetensors") and "/" not in f)
    if "model.safetensors" in root:
        return ["model.safetensors"]
    # Mistral repos ship consolidated.safetensors beside HF shards; it repeats the same weights.
    return [f for f in root if f != "consolidated.safetensors"] or root


def read_checkpoint(reader: RangeReader, files: list[str], read_index) -> tuple[list[SafetensorsTensor], int]:
    tensors: list[SafetensorsTensor] = []
    header_bytes = 0
    seen: set[str] = set()
    shards = safetensors_files(files, read_index)
    headers = read_safetensors_headers(reader, shards)
    for shard in shards:
        shard_tensors, n = headers[shard]
        header_bytes += n
        for t in shard_tensors:
            if t.name in seen:
                raise InvalidModelError(f"tensor {t.name!r} appears in more than one shard")
            seen.add(t.name)
        tensors += shard_tensors
    return tensors, header_bytes
