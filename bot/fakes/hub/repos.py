"""The fake Hub's repositories: a folder of ``<org>/<name>/`` model folders plus optional metadata.

Each repo folder holds the repo's files and an optional ``_hub.json`` with what the Hub would know
about it (``createdAt``, ``lastModified``, ``downloads``, ``likes``, ``trendingScore``, ``tags``,
``cardData``, ``license``, ``library_name``, ``pipeline_tag``, ``gated``, ``private``, ``author``,
``granted_tokens`` and ``sha256`` — a ``{path: hex}`` map that spares hashing big files).

Hashes follow git and git-lfs: a small file's id is its git blob sha1; an LFS file is stored as a
pointer whose blob sha1 is the sibling's ``blobId`` and whose ``oid sha256`` is the file's sha256.
The commit sha is a hash of every file's path and identity, so it changes when a file changes.

The real Hub computes all of this once, when a file is pushed, and serves it from its metadata.
The fake keeps a repo's scan for as long as no file's size or mtime and no byte of ``_hub.json``
changed (every request still lists the folder and stats its files), and hashes LFS files in the
background from start-up (``hash_lfs_files``), so requests do not pay for either.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import stat
import threading
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from bot.errors import HubwatchError

log = logging.getLogger("hubwatch.fakehub")

HUB_METADATA_FILE = "_hub.json"
# Sidecar at the top of the served folder caching sha256 of LFS files by (size, mtime).
SHA256_SIDECAR = ".fakehub-sha256.json"
# The Hub's default .gitattributes stores these as LFS (huggingface_hub's repo templates list them).
LFS_SUFFIXES = (".safetensors", ".gguf", ".bin", ".pt", ".pth", ".ckpt", ".h5", ".msgpack", ".onnx", ".npz",
                ".model", ".tflite", ".ot", ".pkl", ".pickle", ".zip", ".tar", ".gz", ".zst", ".parquet",
                ".arrow", ".joblib", ".mlmodel", ".tgz", ".wasm", ".xz", ".7z", ".rar", ".bz2")
# The Hub rejects git (non-LFS) files over 10 MB (hub-docs repositories-getting-started.md).
LFS_SIZE_THRESHOLD = 10 * 1000 * 1000
# Hashing reads the whole file; past this size a sparse stand-in digest is used unless _hub.json
# declares the sha256 (a sparse 630 GB Grok-1 shape would take minutes to hash for real).
FULL_HASH_LIMIT_BYTES = 2 * 1024**3
HASH_CHUNK = 8 * 1024 * 1024
# The lowest createdAt the Hub reports: "the date when we began to store creation dates"
# (huggingface_hub list_models docstring).
HUB_EPOCH = "2022-03-02T23:29:04.000Z"
LFS_POINTER_VERSION = "https://git-lfs.github.com/spec/v1"


class FakeHubError(HubwatchError):
    """The fake Hub's folder or a repo's metadata is unusable."""

    exit_code = 2


def git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def lfs_pointer(sha256: str, size: int) -> bytes:
    return f"version {LFS_POINTER_VERSION}\noid sha256:{sha256}\nsize {size}\n".encode()


def iso_time(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.") + "000Z"


def _sparse_digest(path: Path, size: int) -> str:
    """A stand-in content digest of a big file that hashes only its data extents and hole layout."""
    h = hashlib.sha256(b"fakehub-sparse-v1 %d\0" % size)
    with open(path, "rb") as fh:
        fd = fh.fileno()
        pos = 0
        while pos < size:
            try:
                start = os.lseek(fd, pos, os.SEEK_DATA)
            except OSError:  # ENXIO: only a hole remains
                break
            end = os.lseek(fd, start, os.SEEK_HOLE)
            h.update(b"%d-%d\0" % (start, end))
            while start < end:
                chunk = os.pread(fd, min(HASH_CHUNK, end - start), start)
                if not chunk:
                    break
                h.update(chunk)
                start += len(chunk)
            pos = end
    return h.hexdigest()


class HashCancelled(Exception):
    """The fake Hub stopped while a file was being hashed in the background."""


def file_sha256(path: Path, size: int, cancelled: Callable[[], bool] = lambda: False) -> str:
    if size > FULL_HASH_LIMIT_BYTES:
        return _sparse_digest(path, size)
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(HASH_CHUNK):
            if cancelled():
                raise HashCancelled(str(path))
            h.update(chunk)
    return h.hexdigest()


@dataclass
class RepoFile:
    path: str
    full_path: Path
    size: int
    mtime_ns: int
    is_lfs: bool
    git_sha1: str | None  # small files only; LFS blob ids need the sha256 first
    declared_sha256: str | None = None


@dataclass
class Repo:
    repo_id: str
    folder: Path
    files: dict[str, RepoFile]
    meta: dict[str, Any]
    sha: str
    created_at: str
    last_modified: str
    object_id: str
    granted_tokens: frozenset[str] = field(default_factory=frozenset)
    # Values derived from the files (model_json.py): a Repo is kept only while its files are unchanged.
    derived: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    def memo(self, name: str, compute: Callable[[Repo], Any]) -> Any:
        if name not in self.derived:
            self.derived[name] = compute(self)
        return self.derived[name]

    @property
    def author(self) -> str:
        return self.meta.get("author") or self.repo_id.split("/")[0]

    @property
    def private(self) -> bool:
        return bool(self.meta.get("private", False))

    @property
    def gated(self) -> str | bool:
        gated = self.meta.get("gated", False)
        if gated is True:
            return "auto"
        return gated if gated in ("auto", "manual") else False

    @property
    def card_data(self) -> dict[str, Any]:
        card = dict(self.meta.get("cardData") or {})
        for key in ("license", "library_name", "pipeline_tag", "base_model"):
            if key in self.meta and key not in card:
                card[key] = self.meta[key]
        return card


def _object_id(repo_id: str, created_at: str) -> str:
    """A Mongo ObjectId like the Hub's ``_id``: its first 4 bytes are createdAt in seconds."""
    seconds = int(datetime.fromisoformat(created_at.replace("Z", "+00:00")).timestamp())
    return f"{seconds & 0xFFFFFFFF:08x}" + hashlib.sha1(repo_id.encode()).hexdigest()[:16]


class RepoFolder:
    """Scans the served folder on demand; a repo is built again only when its files or metadata changed."""

    def __init__(self, root: str | os.PathLike[str]):
        self.root = Path(root)
        if not self.root.is_dir():
            raise FakeHubError(f"fake Hub folder {self.root} does not exist or is not a folder")
        self._lock = threading.Lock()
        self._small_cache: dict[tuple[str, int, int], str] = {}
        self._scans: dict[str, tuple[tuple[Any, ...], Repo]] = {}
        self._sha256_lock = threading.Lock()
        self._sha256_cache: dict[str, dict[str, Any]] = self._load_sidecar()
        self._hashing: dict[str, threading.Event] = {}  # files being hashed now, by key

    # ---- sha256 of LFS files (cached in a sidecar) ----------------------------------------------

    def _load_sidecar(self) -> dict[str, dict[str, Any]]:
        path = self.root / SHA256_SIDECAR
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def _save_sidecar(self) -> None:
        tmp = self.root / (SHA256_SIDECAR + ".tmp")
        try:
            tmp.write_text(json.dumps(self._sha256_cache, sort_keys=True))
            os.replace(tmp, self.root / SHA256_SIDECAR)
        except OSError:  # a read-only folder keeps the cache in memory only
            pass

    def sha256(self, repo: Repo, f: RepoFile, cancelled: Callable[[], bool] = lambda: False) -> str:
        """The file's sha256; a file another thread is hashing is waited for, not hashed twice."""
        if f.declared_sha256:
            return f.declared_sha256
        key = f"{repo.repo_id}/{f.path}"
        while True:
            with self._sha256_lock:
                hit = self._sha256_cache.get(key)
                if hit and hit.get("size") == f.size and hit.get("mtime_ns") == f.mtime_ns:
                    return hit["sha256"]
                running = self._hashing.get(key)
                if running is None:
                    running = self._hashing[key] = threading.Event()
                    break
            running.wait()  # then look again: it may have hashed another version of the file
        try:
            digest = file_sha256(f.full_path, f.size, cancelled)
            with self._sha256_lock:
                self._sha256_cache[key] = {"size": f.size, "mtime_ns": f.mtime_ns, "sha256": digest}
                self._save_sidecar()
            return digest
        finally:
            with self._sha256_lock:
                del self._hashing[key]
            running.set()

    def blob_id(self, repo: Repo, f: RepoFile) -> str:
        """The git blob sha1: of the file itself, or of its LFS pointer."""
        return f.git_sha1 if f.git_sha1 else git_blob_sha1(lfs_pointer(self.sha256(repo, f), f.size))

    def hash_lfs_files(self, stop: threading.Event) -> None:
        """Hash every LFS file not hashed yet, as the real Hub does when a file is pushed (its
        API then serves the sha256 from metadata). Runs in a background thread until ``stop``."""
        try:
            for repo in self.all_repos():
                for f in repo.files.values():
                    if stop.is_set():
                        return
                    if f.is_lfs:
                        self.sha256(repo, f, stop.is_set)
        except (OSError, FakeHubError, HashCancelled) as exc:  # a folder changing under it: requests hash on demand
            log.debug("background hashing stopped: %s", exc)

    # ---- scanning ---------------------------------------------------------------------------------

    def repo_ids(self) -> list[str]:
        ids = []
        for org in sorted(self.root.iterdir()):
            if org.is_dir() and not org.name.startswith("."):  # names may start with "_", as on the Hub
                ids += [f"{org.name}/{d.name}" for d in sorted(org.iterdir())
                        if d.is_dir() and not d.name.startswith(".")]
        return ids

    def all_repos(self) -> list[Repo]:
        return [r for r in (self.get(i) for i in self.repo_ids()) if r is not None]

    def get(self, repo_id: str) -> Repo | None:
        parts = repo_id.split("/")
        if len(parts) != 2 or any(p in ("", ".", "..") or p.startswith(".") for p in parts):
            return None
        folder = self.root / parts[0] / parts[1]
        try:
            folder_stat = os.stat(folder)
        except OSError:
            return None
        if not stat.S_ISDIR(folder_stat.st_mode):
            return None
        entries = _files_under(str(folder))
        meta_raw = self._read_meta_bytes(folder)
        signature = (folder_stat.st_mtime_ns, meta_raw, tuple((rel, st.st_size, st.st_mtime_ns) for rel, _, st in entries))
        with self._lock:
            cached = self._scans.get(repo_id)
        if cached is not None and cached[0] == signature:
            return cached[1]
        repo = self._scan(repo_id, folder, entries, meta_raw)
        with self._lock:
            self._scans[repo_id] = (signature, repo)
        return repo

    @staticmethod
    def _read_meta_bytes(folder: Path) -> bytes | None:
        try:
            return (folder / HUB_METADATA_FILE).read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise FakeHubError(f"{folder / HUB_METADATA_FILE}: cannot be read ({exc.strerror or exc})") from exc

    @staticmethod
    def _parse_meta(folder: Path, raw: bytes | None) -> dict[str, Any]:
        if raw is None:
            return {}
        path = folder / HUB_METADATA_FILE
        try:
            meta = json.loads(raw)
        except ValueError as exc:
            raise FakeHubError(f"{path}: not valid JSON ({exc})") from exc
        if not isinstance(meta, dict):
            raise FakeHubError(f"{path}: must hold a JSON object")
        return meta

    def _scan(self, repo_id: str, folder: Path, entries: list[tuple[str, str, os.stat_result]],
              meta_raw: bytes | None) -> Repo:
        meta = self._parse_meta(folder, meta_raw)
        declared = meta.get("sha256") or {}
        if not isinstance(declared, dict):
            raise FakeHubError(f"{folder / HUB_METADATA_FILE}: 'sha256' must map file paths to hex digests")
        files: dict[str, RepoFile] = {}
        for rel, full, st in entries:
            if rel == HUB_METADATA_FILE:
                continue
            is_lfs = rel.endswith(LFS_SUFFIXES) or st.st_size > LFS_SIZE_THRESHOLD
            git_sha1 = None if is_lfs else self._small_sha1(Path(full), st)
            files[rel] = RepoFile(rel, Path(full), st.st_size, st.st_mtime_ns, is_lfs, git_sha1,
                                  declared.get(rel) if is_lfs else None)
        # LFS files not yet hashed enter the commit by size and mtime, so a start needs no hashing.
        identity = "\n".join(
            f"{f.path}\0{f.git_sha1 or f.declared_sha256 or f'{f.size}:{f.mtime_ns}'}" for f in files.values())
        sha = hashlib.sha1(f"{repo_id}\n{identity}".encode()).hexdigest()
        mtimes = [f.mtime_ns / 1e9 for f in files.values()] or [folder.stat().st_mtime]
        created = meta.get("createdAt") or max(HUB_EPOCH, iso_time(min(mtimes)))
        modified = meta.get("lastModified") or iso_time(max(mtimes))
        tokens = meta.get("granted_tokens") or []
        return Repo(repo_id=repo_id, folder=folder, files=files, meta=meta, sha=sha, created_at=created,
                    last_modified=modified, object_id=_object_id(repo_id, created),
                    granted_tokens=frozenset(t for t in tokens if isinstance(t, str)))

    def _small_sha1(self, full: Path, st: os.stat_result) -> str:
        key = (str(full), st.st_size, st.st_mtime_ns)
        with self._lock:
            hit = self._small_cache.get(key)
        if hit is None:
            hit = git_blob_sha1(full.read_bytes())
            with self._lock:
                self._small_cache[key] = hit
        return hit


def _files_under(folder: str) -> list[tuple[str, str, os.stat_result]]:
    """(relative path, full path, stat) of every file under ``folder``, in the order of sorted
    ``Path.rglob``: symlinked files are followed, symlinked folders and ``.git`` folders are not."""
    found: list[tuple[str, str, os.stat_result]] = []
    pending = [(folder, "")]
    while pending:
        directory, prefix = pending.pop()
        with os.scandir(directory) as it:
            for entry in it:
                if entry.name == ".git":
                    continue
                rel = prefix + entry.name
                try:
                    if entry.is_dir(follow_symlinks=False):
                        pending.append((entry.path, rel + "/"))
                    elif entry.is_file():
                        found.append((rel, entry.path, entry.stat()))
                except FileNotFoundError:  # removed while listed
                    continue
    found.sort(key=lambda e: e[0].split("/"))
    return found
