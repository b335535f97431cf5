"""Strict safetensors header parsing over a range reader.

A header is an 8-byte little-endian length N, then N bytes of JSON mapping tensor names to
{dtype, shape, data_offsets}. Every field is checked before any offset is trusted: the header
must fit in the file, offsets must lie in the data region, match dtype x shape, and tile the
data region without overlaps or holes (the format's own rule). Sharded checkpoints are read
through model.safetensors.index.json, one header per shard.

Why not the safetensors library here: it opens a whole local file (``safe_open`` maps it), while
a fingerprint reads a Hub file's header and a few sampled rows by HTTP ranges; and its parser
accepts headers up to 100 MB and checks less than this one, which runs on hostile bytes under
the parse envelope (envelope.py). Local folders go through the same parser so that a local
comparison means what a remote one does. The library is used where a whole local checkpoint is
loaded or written: the demo's repos (bot/demo.py) and the test fixtures.
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass

from . import untrusted_json
from .envelope import DEFAULT_ENVELOPE, ParseEnvelope
from .errors import InvalidModelError
from .reader import RangeReader, RangeRequest

# One GET of this size returns the whole header of a single-file checkpoint up to ~600 tensors
# (MiniLM: 9 KB, a 7B: ~30 KB); a longer header takes a second GET. Shards listed in an index are
# read by an estimate from their tensor names instead (below). huggingface_hub reads 100 KB per
# file, which costs a 16-shard checkpoint 1.6 MB of header reads.
FIRST_READ_BYTES = 64 * 1024
# Dimensions a tensor may have (the widest real ones have 5 or 6).
MAX_DIMS = 32
# Estimating a shard's header from the index: each entry is its quoted name plus
# {"dtype":"BF16","shape":[..],"data_offsets":[..,..]} with up to 4 dims and 12-digit offsets,
# 70-95 bytes; 112 cannot fall short below 4 dims and 10^15-byte offsets. Measured over-read:
# Llama-2-7B shards 46 KB read for 34 KB of headers, Grok-1's 16 shards 359 KB for 272 KB, a
# few KB per shard against a round trip. The allowance covers __metadata__ ({"format":"pt"}) and
# the padding to 8 bytes. A short estimate costs one more GET, never a wrong parse.
HEADER_ENTRY_BYTES = 112
HEADER_ALLOWANCE_BYTES = 1024

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


def parse_header_bytes(header: bytes, file: str, file_size: int, header_len: int,
                       envelope: ParseEnvelope = DEFAULT_ENVELOPE) -> list[SafetensorsTensor]:
    try:
        data = untrusted_json.loads(header, envelope, f"{file} header")
    except ValueError as exc:  # bad UTF-8 or JSON, nesting too deep, a 5000-digit number
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
        if not isinstance(dtype, str) or dtype not in DTYPE_SIZES:
            raise InvalidModelError(f"{file}: tensor {name!r} has unknown dtype {dtype!r}")
        # dims are usize in the format: at most MAX_DIMS of them keeps the byte count printable
        if (not isinstance(shape, list) or len(shape) > MAX_DIMS
                or not all(isinstance(d, int) and 0 <= d < 2**64 for d in shape)):
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


def read_safetensors_headers(reader: RangeReader, files: list[str], *, heads: dict[str, bytes] | None = None,
                             first_reads: dict[str, int] | None = None, envelope: ParseEnvelope = DEFAULT_ENVELOPE,
                             ) -> dict[str, tuple[list[SafetensorsTensor], int]]:
    """Parse the headers of ``files``: one batched read of every file's start (``first_reads[f]``
    bytes, default FIRST_READ_BYTES; none for files whose ``heads`` the caller already holds), then
    one batched read of the rest of any header longer than that. Returns file -> (tensors, header bytes)."""
    heads, first_reads = heads or {}, first_reads or {}
    sizes = {f: reader.size(f) for f in files}
    for f, size in sizes.items():
        if size < 8:
            raise InvalidModelError(f"{f}: {size} bytes is too small to be a safetensors file")
    missing = [f for f in files if len(heads.get(f, b"")) < 8]
    firsts = {**heads, **dict(zip(missing, reader.read_ranges(
        [RangeRequest(f, 0, min(sizes[f], max(8, first_reads.get(f, FIRST_READ_BYTES)))) for f in missing])))}
    lengths = {}
    for f in files:
        (header_len,) = struct.unpack("<Q", firsts[f][:8])
        if header_len > envelope.max_header_bytes:
            raise InvalidModelError(f"{f}: header claims {header_len:,} bytes, over the "
                                    f"{envelope.max_header_bytes:,}-byte limit (limits.header_bytes)")
        if 8 + header_len > sizes[f]:
            raise InvalidModelError(f"{f}: header claims {header_len:,} bytes but the file has {sizes[f]:,}")
        lengths[f] = header_len
    short = [f for f in files if len(firsts[f]) < 8 + lengths[f]]
    rests = dict(zip(short, reader.read_ranges(
        [RangeRequest(f, len(firsts[f]), 8 + lengths[f] - len(firsts[f])) for f in short]))) if short else {}
    out = {}
    for f in files:
        header = (firsts[f] + rests.get(f, b""))[8 : 8 + lengths[f]]
        out[f] = (parse_header_bytes(header, f, sizes[f], lengths[f], envelope), 8 + lengths[f])
    return out


def read_safetensors_header(reader: RangeReader, file: str) -> tuple[list[SafetensorsTensor], int]:
    """Parse one file's header; returns the tensors and the header bytes read."""
    return read_safetensors_headers(reader, [file])[file]


INDEX_FILE = "model.safetensors.index.json"


def checkpoint_shards(files: list[str], read_index, envelope: ParseEnvelope = DEFAULT_ENVELOPE) -> dict[str, int | None]:
    """Which safetensors files make up the checkpoint (root level; index-listed shards win), each
    with an estimate of its header's size when the index lists its tensors (None otherwise)."""
    if INDEX_FILE in files:
        try:
            weight_map = untrusted_json.loads(read_index(INDEX_FILE), envelope, INDEX_FILE)["weight_map"]
            entries = [(str(name), shard) for name, shard in weight_map.items()]
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise InvalidModelError(f"{INDEX_FILE} is malformed: {exc}") from exc
        if not all(isinstance(shard, str) for _, shard in entries):
            raise InvalidModelError(f"{INDEX_FILE} is malformed: shard names must be strings")
        estimates: dict[str, int] = {}
        for name, shard in entries:
            estimates[shard] = estimates.get(shard, 8 + HEADER_ALLOWANCE_BYTES) + len(json.dumps(name)) + HEADER_ENTRY_BYTES
        missing = [s for s in estimates if s not in files]
        if missing:
            raise InvalidModelError(f"{INDEX_FILE} lists shards that are not in the repo: {sorted(missing)[:3]}")
        return dict(sorted(estimates.items()))
    return dict.fromkeys(unindexed_files(files))


def unindexed_files(files: list[str]) -> list[str]:
    """The checkpoint's files when no index lists them."""
    root = sorted(f for f in files if f.endswith(".safetensors") and "/" not in f)
    if "model.safetensors" in root:
        return ["model.safetensors"]
    # Mistral repos ship consolidated.safetensors beside HF shards; it repeats the same weights.
    return [f for f in root if f != "consolidated.safetensors"] or root


def read_checkpoint(reader: RangeReader, files: list[str], read_index,
                    heads: dict[str, bytes] | None = None,
                    envelope: ParseEnvelope = DEFAULT_ENVELOPE) -> tuple[list[SafetensorsTensor], int]:
    """Every tensor of the checkpoint and the header bytes that described them. ``heads``: first
    bytes of unindexed files the caller fetched already (the engine's first batch)."""
    tensors: list[SafetensorsTensor] = []
    header_bytes = 0
    seen: set[str] = set()
    estimates = checkpoint_shards(files, read_index, envelope)
    shards = list(estimates)
    headers = read_safetensors_headers(reader, shards, heads=heads,
                                       first_reads={f: n for f, n in estimates.items() if n is not None},
                                       envelope=envelope)
    for shard in shards:
        shard_tensors, n = headers[shard]
        header_bytes += n
        for t in shard_tensors:
            if t.name in seen:
                raise InvalidModelError(f"tensor {t.name!r} appears in more than one shard")
            seen.add(t.name)
        tensors += shard_tensors
    return tensors, header_bytes
