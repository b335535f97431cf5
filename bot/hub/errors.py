"""Errors of Hub access. Each is a ``HubwatchError``, so the CLI prints one line and exits."""

from __future__ import annotations

from fingerprints.errors import HubwatchError


class HubError(HubwatchError):
    """The Hub answered something hubwatch cannot use (malformed JSON, an unexpected status)."""

    exit_code = 3


class RepoNotFoundError(HubError):
    """No such repo, or it is private (the Hub answers 401 for both)."""

    exit_code = 2


class GatedRepoError(HubError):
    """The repo is gated and this token (or no token) has not been granted access."""

    exit_code = 2


class RevisionNotFoundError(HubError):
    exit_code = 2


class EntryNotFoundError(HubError):
    """The repo has no such file at that revision."""

    exit_code = 2


class RateLimitedError(HubError):
    """Still 429 after the retry policy's attempts, or the reset is further away than it may wait."""


class RangeNotSupportedError(HubError):
    """A ranged read was answered with the whole file (200) or a different range; the body was not read."""


class HubUnavailableError(HubError):
    """5xx answers, timeouts or broken connections outlasted the retry policy."""
