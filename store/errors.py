"""Store errors: every SQLite failure a user can meet becomes one of these, with a one-line message."""

from __future__ import annotations

# Exit status for storage problems: EX_IOERR (74) from sysexits.h, as distinct from bad model input (2).
EXIT_STORE_ERROR = 74


class StoreError(Exception):
    """The database cannot be opened, read or written."""

    exit_code = EXIT_STORE_ERROR


class StoreCorruptError(StoreError):
    """The file is not a SQLite database, or its pages are damaged."""


class StoreLockedError(StoreError):
    """Another process held a write lock for longer than the busy timeout."""


class RefetchError(Exception):
    """A stored model could not be read again for a comparison (``nearest``'s ``refetch`` raises it:
    the caller knows what its reads can fail with, the store does not)."""


class SchemaTooNewError(StoreError):
    """The database was written by a newer hubwatch whose schema this version does not know."""
