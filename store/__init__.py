"""hubwatch's store: fingerprints, matches, alert outbox and poll cursors in SQLite.

``Store.open(path)`` opens (creating and migrating) a database file; see ``store.store.Store`` for
the API, ``store/outbox.py`` for the alert outbox's exactly-once state machine, ``store/lsh.py``
and ``store/vectors.py`` for the candidate indexes, and ``store/nearest.py`` for nearest-match
search with exact re-ranking. Every failure is a ``StoreError``, this package's error root.
"""

from .errors import SchemaTooNewError, StoreCorruptError, StoreError, StoreLockedError
from .records import OutboxRow, Candidate, MatchRecord, ModelRecord, StoredFingerprint, WatchEntry
from .store import Store

__all__ = [
    "OutboxRow", "Candidate", "MatchRecord", "ModelRecord", "SchemaTooNewError", "Store", "StoreCorruptError",
    "StoreError", "StoreLockedError", "StoredFingerprint", "WatchEntry",
]
