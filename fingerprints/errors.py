"""Errors of the pure fingerprint core: bad, hostile or too costly model input.

``FingerprintError`` is this package's own root, so the core depends on nothing above it; the
application's root (``bot.errors.HubwatchError``) and the store's (``store.errors.StoreError``)
live in their layers, and ``bot.errors.USER_ERRORS`` names all three for the one-line report.
"""

from __future__ import annotations


class FingerprintError(Exception):
    """Base class. ``exit_code`` is what the CLI returns for it."""

    exit_code = 2


class InvalidModelError(FingerprintError):
    """The model's files are missing, malformed or hostile (bad header, bad JSON, bad offsets)."""

    exit_code = 2


class UninspectableWeightsError(FingerprintError):
    """The weights exist but are in a format hubwatch refuses to open (pickles, JAX/npz)."""

    exit_code = 2


class BudgetExceededError(FingerprintError):
    """A read would take more bytes than the per-model budget allows."""

    exit_code = 2
