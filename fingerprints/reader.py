"""Byte-range readers: the only way fingerprint code touches model files.

A reader lists a model's files and returns byte ranges of them. ``fingerprints/`` is pure
computation over this interface, so the same code fingerprints a local folder, a Hub repo read
over HTTP Range requests, or a test fixture. Readers count every byte and request they serve, so
callers can report what a fingerprint cost.
"""

from __future__ import annotations

import mmap
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, Sequence, runtime_checkable

from .errors import InvalidModelError


@dataclass(frozen=True)
class RangeRequest:
    path: str
    offset: int
    length: int


@runtime_checkable
class RangeReader(Protocol):
    """What fingerprinting needs from a model's storage.

    ``read_ranges`` takes a batch so that a remote reader can issue the requests concurrently and
    merge neighbouring ranges; local readers simply loop.
    """

    name: str
    bytes_read: int
    requests: int

    def list_files(self) -> list[str]: ...

    def size(self, path: str) -> int: ...

    def read_ranges(self, requests: Sequence[RangeRequest]) -> list[bytes]: ...

    def file_sha256(self, path: str) -> str | None:
        """The file's sha256 when the storage already knows it (Hub LFS metadata), else None."""
        ...

    def file_id(self, path: str) -> str | None:
        """A name for the file's exact content when the storage knows one without reading the
        file (the Hub's git blob id or LFS sha256), else None."""
        ...


@runtime_checkable
class CuttableReader(Protocol):
    """A reader whose requests can outlast a check between reads (one over the network): given the
    model's time limit, it cuts each request there, in flight or not."""

    def set_deadline(self, seconds: float) -> None: ...


def read_range(reader: RangeReader, path: str, offset: int, length: int) -> bytes:
    return reader.read_ranges([RangeRequest(path, offset, length)])[0]


def read_small_file(reader: RangeReader, path: str, max_bytes: int) -> bytes:
    """Read a whole small file (config, tokenizer), refusing files larger than ``max_bytes``."""
    return read_small_files(reader, {path: max_bytes})[path]


def read_small_files(reader: RangeReader, limits: dict[str, int]) -> dict[str, bytes]:
    """Read several whole small files in one batch (one round trip over HTTP), each capped."""
    return read_files_and_heads(reader, limits, {})[0]


def read_files_and_heads(reader: RangeReader, limits: dict[str, int],
                         heads: dict[str, int]) -> tuple[dict[str, bytes], dict[str, bytes]]:
    """One batch (one round trip over HTTP): whole small files, each capped by ``limits``, and the
    first ``heads[path]`` bytes (at most the whole file) of files whose header is parsed next."""
    if set(limits) & set(heads):
        raise ValueError("a file is read either whole or by its head, not both")
    sizes = {path: reader.size(path) for path in [*limits, *heads]}
    for path in limits:
        if sizes[path] > limits[path]:
            raise InvalidModelError(
                f"{path} is {sizes[path]:,} bytes, over the {limits[path]:,}-byte limit for this kind of file"
            )
    lengths = {**sizes, **{p: min(n, sizes[p]) for p, n in heads.items()}}
    wanted = [RangeRequest(p, 0, lengths[p]) for p in [*limits, *heads] if lengths[p]]
    blobs = dict(zip([r.path for r in wanted], reader.read_ranges(wanted) if wanted else []))
    return {p: blobs.get(p, b"") for p in limits}, {p: blobs.get(p, b"") for p in heads}


class LocalFolderReader:
    """Reads a model folder on disk through mmap, counting bytes like a remote reader would."""

    def __init__(self, folder: str | os.PathLike[str]):
        self.root = Path(folder)
        if not self.root.is_dir():
            raise InvalidModelError(f"{self.root} is not a folder")
        self.name = str(self.root)
        self.bytes_read = 0
        self.requests = 0
        self._files = sorted(
            p.relative_to(self.root).as_posix()
            for p in self.root.rglob("*")
            if p.is_file() and ".git" not in p.parts
        )

    def list_files(self) -> list[str]:
        return list(self._files)

    def _path(self, path: str) -> Path:
        if path not in self._files:
            raise InvalidModelError(f"{self.name}: no file {path!r}")
        return self.root / path

    def size(self, path: str) -> int:
        return self._path(path).stat().st_size

    def read_ranges(self, requests: Sequence[RangeRequest]) -> list[bytes]:
        out: list[bytes] = []
        for req in requests:
            full = self._path(req.path)
            size = full.stat().st_size
            if req.offset < 0 or req.length < 0 or req.offset + req.length > size:
                raise InvalidModelError(
                    f"{req.path}: range {req.offset}+{req.length} is outside the file ({size} bytes)"
                )
            if req.length == 0:
                out.append(b"")
                continue
            with open(full, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mm:
                out.append(bytes(mm[req.offset : req.offset + req.length]))
            self.bytes_read += req.length
            self.requests += 1
        return out

    def file_sha256(self, path: str) -> str | None:
        # Hashing a local file would read all of it; identity is judged from sampled bytes instead.
        return None

    def file_id(self, path: str) -> str | None:
        # Same reason: a local folder names no content without reading it.
        return None
