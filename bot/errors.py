"""The application's error root, and every error a user may meet as one line.

The pure fingerprint core and the store have their own roots (``fingerprints.errors.FingerprintError``,
``store.errors.StoreError``): they sit below the application and cannot name it. What the service
layer raises is a ``HubwatchError``; ``USER_ERRORS`` is what the CLI, the watcher and the bot catch
and report on one line, each error with its ``exit_code``.
"""

from __future__ import annotations

from fingerprints.errors import FingerprintError
from store.errors import StoreError


class HubwatchError(Exception):
    """Base class of the service layer's errors. ``exit_code`` is what the CLI returns for it."""

    exit_code = 1


USER_ERRORS: tuple[type[Exception], ...] = (HubwatchError, FingerprintError, StoreError)
