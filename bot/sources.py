"""Turn what a user typed (a local folder or a Hub repo id) into a RangeReader."""

from __future__ import annotations

import os
import re

from fingerprints.errors import HubwatchError, InvalidModelError
from fingerprints.reader import LocalFolderReader, RangeReader

# Hub repo ids: "name" or "org/name", optionally "@revision" (the CLI's own notation).
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
