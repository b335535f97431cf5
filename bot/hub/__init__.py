"""Hub access: listing, model info and ranged reads pinned to a commit (``HubClient``, ``HubRepoReader``)."""

from .client import HubClient
from .errors import (EntryNotFoundError, GatedRepoError, HubError, HubUnavailableError, RangeNotSupportedError,
                     RateLimitedError, RepoNotFoundError, RevisionNotFoundError)
from .models import HubModel, Sibling
from .retry import RetryPolicy

__all__ = ["EntryNotFoundError", "GatedRepoError", "HubClient", "HubError", "HubModel", "HubUnavailableError",
           "RangeNotSupportedError", "RateLimitedError", "RepoNotFoundError", "RetryPolicy",
           "RevisionNotFoundError", "Sibling"]
