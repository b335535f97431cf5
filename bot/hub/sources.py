"""Turn what a user typed (a local folder or a Hub repo id) into a RangeReader."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from fingerprints.errors import HubwatchError, InvalidModelError
from fingerprints.model import Fingerprint, stable_hash
from fingerprints.reader import LocalFolderReader, RangeReader
from store.rows import TIER_FULL

# Hub repo ids: "name" or "org/name", optionally "@revision" (the CLI's own notation).
LOCAL_SHA_PREFIX = "local-"
REPO_ID_RX = re.compile(r"^[A-Za-z0-9][\w.\-]*(/[A-Za-z0-9][\w.\-]*)?(@[\w.\-/]+)?$")


def open_reader(spec: str) -> RangeReader:
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
    return HubRepoReader(HubClient(), repo_id, revision=revision or None)


@dataclass
class SpecFingerprint:
    repo_id: str  # Hub repo id, or the folder's absolute path
    sha: str
    fp: Fingerprint
    is_local: bool


def content_sha(fp: Fingerprint) -> str:
    """A revision id for a local folder: equal for equal content, so re-adding it is a no-op."""
    d = fp.to_dict(include_arrays=False)
    for volatile in ("source", "bytes_read", "requests"):
        d.pop(volatile, None)
    return LOCAL_SHA_PREFIX + stable_hash(d)


def fingerprint_spec(spec: str) -> SpecFingerprint:
    """Fingerprint a folder or an org/name[@revision] repo, and name the revision it was read at."""
    from fingerprints.engine import fingerprint_model

    reader: RangeReader = open_reader(spec)
    fp = fingerprint_model(reader)
    if os.path.isdir(spec):
        return SpecFingerprint(str(Path(spec).resolve()), content_sha(fp), fp, True)
    repo_id, _, revision = spec.partition("@")
    # The Hub reader pins one commit for all its reads and exposes it as ``sha``.
    sha = getattr(reader, "sha", None) or revision or content_sha(fp)
    return SpecFingerprint(repo_id, sha, fp, False)


def refetch_fingerprint(repo_id: str, sha: str) -> Fingerprint:
    """The full fingerprint of a stored revision, read from the Hub again (store.nearest's refetch)."""
    return fingerprint_spec(f"{repo_id}@{sha}").fp


def index_one(store, spec: str, tier: str = TIER_FULL) -> tuple[SpecFingerprint, int, bool]:
    """Fingerprint ``spec`` and store it in ``tier`` (store/rows.py; "reference" for reference models)."""
    from store.records import ModelRecord

    got = fingerprint_spec(spec)
    fid, created = store.add_fingerprint(got.repo_id, got.sha, got.fp, tier=tier)
    if not got.is_local:
        known = store.get_model(got.repo_id)
        record = known or ModelRecord(repo_id=got.repo_id, author=got.repo_id.split("/")[0] if "/" in got.repo_id else None)
        record.sha = got.sha
        store.upsert_model(record)
    return got, fid, created
