"""The one error hierarchy of hubwatch.

Every failure a user can meet is a ``HubwatchError``; the CLI prints its message on one line and
exits with its ``exit_code``. Lower layers (hub access, store, bot) subclass these rather than
inventing their own roots, so a caller needs a single ``except HubwatchError``.
"""

from __future__ import annotations


class HubwatchError(Exception):
    """Base class. ``exit_code`` is what the CLI returns for it."""

    exit_code = 1


class InvalidModelError(HubwatchError):
    """The model's files are missing, malformed or hostile (bad header, bad JSON, bad offsets)."""

    exit_code = 2


class UninspectableWeightsError(HubwatchError):
    """The weights exist but are in a format hubwatch refuses to open (pickles, JAX/npz)."""

    exit_code = 2


class BudgetExceededError(HubwatchError):
    """A read would take more bytes than the per-model budget allows."""

    exit_code = 2
