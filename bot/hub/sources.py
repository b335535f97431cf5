"""What a user typed (a local folder or a Hub repo id) -> a RangeReader and a fingerprint.

The Hub client and the fingerprint limits are handed in by the composition root (``bot/app.py``);
nothing here builds a client or reads a setting.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from fingerprints.errors import InvalidModelError
from fingerprints.model import Fingerprint, stable_hash
from fingerprints.reader import LocalFolderReader, RangeReader

from bot.hub.models import REPO_ID_RX, REPO_SPEC_RX, HubModel

# Opens a Hub repo at a revision (None: main); the composition root binds it to its one client.
OpenRepo = Callable[[str, "str | None"], RangeReader]
LOCAL_SHA_PREFIX = "local-"


def is_hub_repo_id(text: str) -> bool:
    """``org/name`` as the Hub spells it (not a local path, which is absolute or has no "/")."""
    return bool(REPO_ID_RX.match(text))


def open_reader(spec: str, open_repo: OpenRepo, allow_local: bool = True) -> RangeReader:
    """A reader over the folder ``spec``, or over the Hub repo ``org/name[@revision]`` by ``open_repo``.
    ``allow_local=False`` (the Discord bot) never looks at this machine's filesystem."""
    if not allow_local:
        if not REPO_SPEC_RX.match(spec):
            raise InvalidModelError(f"{spec[:100]!r} is not a Hub repo id (org/name)")
    elif os.path.exists(spec):
        if not os.path.isdir(spec):
            raise InvalidModelError(f"{spec} is a file; give the model's folder")
        return LocalFolderReader(spec)
    if not REPO_SPEC_RX.match(spec):
        raise InvalidModelError(f"{spec!r} is neither an existing folder nor a Hub repo id (org/name[@revision])")
    repo_id, _, revision = spec.partition("@")
    return open_repo(repo_id, revision or None)


@dataclass
class SpecFingerprint:
    repo_id: str  # Hub repo id, or the folder's absolute path
    sha: str
    fp: Fingerprint
    is_local: bool
    model: HubModel | None = None  # the Hub's metadata (creation date, declared bases) for a repo


def content_sha(fp: Fingerprint) -> str:
    """A revision id for a local folder: equal for equal content, so re-adding it is a no-op."""
    d = fp.to_dict(include_arrays=False)
    for volatile in ("source", "bytes_read", "requests"):
        d.pop(volatile, None)
    return LOCAL_SHA_PREFIX + stable_hash(d)


def fingerprint_spec(spec: str, open_repo: OpenRepo, fingerprint: Callable[[RangeReader], Fingerprint],
                     allow_local: bool = True) -> SpecFingerprint:
    """Fingerprint a folder or an org/name[@revision] repo, and name the revision it was read at."""
    reader = open_reader(spec, open_repo, allow_local)
    fp = fingerprint(reader)
    if isinstance(reader, LocalFolderReader):
        return SpecFingerprint(str(Path(spec).resolve()), content_sha(fp), fp, True)
    # The Hub reader pins one commit for all its reads and exposes it as ``sha``, with the model
    # info it fetched to pin it (creation date, declared bases).
    return SpecFingerprint(spec.partition("@")[0], reader.sha, fp, False, reader.model)

