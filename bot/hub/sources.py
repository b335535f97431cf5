"""Turn what a user typed (a local folder or a Hub repo id) into a RangeReader."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from fingerprints.errors import HubwatchError, InvalidModelError
from fingerprints.model import Fingerprint, stable_hash
from fingerprints.reader import LocalFolderReader, RangeReader
from store.records import ModelRecord

# Hub repo ids: "name" or "org/name", optionally "@revision" (the CLI's own notation).
LOCAL_SHA_PREFIX = "local-"
REPO_ID_RX = re.compile(r"^[A-Za-z0-9_][\w.\-]*(/[A-Za-z0-9_][\w.\-]*)?(@[\w.\-/]+)?$", re.ASCII)


def open_reader(spec: str, hub=None) -> RangeReader:
    """``hub``: the HubClient for a repo id (default: one for $HF_ENDPOINT)."""
    if os.path.exists(spec):
        if not os.path.isdir(spec):
            raise InvalidModelError(f"{spec} is a file; give the model's folder")
        return LocalFolderReader(spec)
    if not REPO_ID_RX.match(spec):
        raise InvalidModelError(f"{spec!r} is neither an existing folder nor a Hub repo id (org/name[@revision])")
    repo_id, _, revision = spec.partition("@")
    try:
        from bot.hub import HubClient
        from bot.hub.remote_reader import HubRepoReader
    except ImportError as exc:  # the Hub layer is optional at this stage of the install
        raise HubwatchError(f"cannot read Hub repos: {exc}") from exc
    return HubRepoReader(hub or HubClient(), repo_id, revision=revision or None)


@dataclass
class SpecFingerprint:
    repo_id: str  # Hub repo id, or the folder's absolute path
    sha: str
    fp: Fingerprint
    is_local: bool
    record: ModelRecord | None = None  # the Hub's metadata (creation date, declared bases) for a repo


def content_sha(fp: Fingerprint) -> str:
    """A revision id for a local folder: equal for equal content, so re-adding it is a no-op."""
    d = fp.to_dict(include_arrays=False)
    for volatile in ("source", "bytes_read", "requests"):
        d.pop(volatile, None)
    return LOCAL_SHA_PREFIX + stable_hash(d)


def fingerprint_spec(spec: str, hub=None) -> SpecFingerprint:
    """Fingerprint a folder or an org/name[@revision] repo, and name the revision it was read at."""
    from fingerprints.engine import fingerprint_model

    reader: RangeReader = open_reader(spec, hub)
    fp = fingerprint_model(reader)
    if os.path.isdir(spec):
        return SpecFingerprint(str(Path(spec).resolve()), content_sha(fp), fp, True)
    repo_id, _, revision = spec.partition("@")
    # The Hub reader pins one commit for all its reads and exposes it as ``sha``.
    sha = getattr(reader, "sha", None) or revision or content_sha(fp)
    hub_model = getattr(reader, "model", None)  # the model info the reader fetched to pin its commit
    return SpecFingerprint(repo_id, sha, fp, False, hub_model.to_record() if hub_model is not None else None)


def index_one(store, spec: str, hub=None) -> tuple[SpecFingerprint, int, bool]:
    got = fingerprint_spec(spec, hub)
    fid, created = store.add_fingerprint(got.repo_id, got.sha, got.fp)
    if got.record is not None:
        store.upsert_model(got.record)
    return got, fid, created
