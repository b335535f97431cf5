"""Hub access: listing, model info and ranged reads pinned to a commit (``HubClient``, ``HubRepoReader``)."""

from bot.hub.client import HubClient
from bot.hub.errors import (EntryNotFoundError, GatedRepoError, HubError, HubUnavailableError, InvalidTokenError,
                            RangeNotSupportedError, RateLimitedError, RepoNotFoundError, RevisionNotFoundError)
from bot.hub.models import HubModel, Sibling
from bot.hub.retry import RetryPolicy

__all__ = ["EntryNotFoundError", "GatedRepoError", "HubClient", "HubError", "HubModel", "HubUnavailableError", "InvalidTokenError",
           "RangeNotSupportedError", "RateLimitedError", "RepoNotFoundError", "RetryPolicy",
           "RevisionNotFoundError", "Sibling"]
