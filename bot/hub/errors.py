"""Errors of Hub access. Each is a ``bot.errors.HubwatchError``, so the CLI prints one line and exits."""

from __future__ import annotations
from bot.errors import HubwatchError


class HubError(HubwatchError):
    """The Hub answered something hubwatch cannot use (malformed JSON, an unexpected status).

    ``status``, ``request_id`` (the Hub's X-Request-Id, what its support asks for) and ``repo``
    say which answer it was, when there was one."""

    exit_code = 3

    def __init__(self, message: str, *, status: int | None = None, request_id: str | None = None,
                 repo: str | None = None):
        super().__init__(message + (f" [request id {request_id}]" if request_id else ""))
        self.status = status
        self.request_id = request_id
        self.repo = repo


class InvalidTokenError(HubError):
    """The Hub rejected the token itself (bad, revoked or expired): every request would fail alike."""

    exit_code = 78  # EX_CONFIG: the token setting is wrong


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
