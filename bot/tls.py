"""The one verified TLS context that every HTTP client of the process shares.

httpx builds a new context for each Client it is not handed one, and building one parses the CA
bundle (~50 ms of CPU). The Hub client and the webhook sender are built per command, per backfill
worker and per test; one context serves them all (an SSLContext is safe to share between clients
and threads once configured).
"""

from __future__ import annotations

import functools
import ssl

import httpx


@functools.cache
def verified_tls_context() -> ssl.SSLContext:
    """httpx's default verification (certifi's bundle, or SSL_CERT_FILE / SSL_CERT_DIR), built once."""
    return httpx.create_ssl_context()
