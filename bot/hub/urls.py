"""Where Hub requests may go: the endpoint's host and the Hub's CDN domains, never elsewhere."""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

# The public Hub; huggingface_hub's own default for HF_ENDPOINT (constants.py).
HUB_ENDPOINT = "https://huggingface.co"
# Resolve URLs redirect to CDN and Xet hosts; hub-docs models-downloading.md lists them, all under
# these two domains (cdn-lfs-us-1.hf.co, us.aws.cdn.hf.co, cas-bridge.xethub.hf.co, ...).
HUB_REDIRECT_HOST_SUFFIXES = ("hf.co", "huggingface.co")


def is_loopback_host(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def hub_url_allowed(url: str, endpoint: str, redirect_hosts: tuple[str, ...]) -> bool:
    """The one rule for Hub requests and redirects: the endpoint's host or a redirect host, never a
    downgrade to plain http, and any loopback host when the endpoint itself is loopback (the fake
    Hub's CDN runs under another loopback name)."""
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    if not host or parts.scheme not in ("http", "https"):
        return False
    endpoint_parts = urlsplit(endpoint)
    if parts.scheme == "http" and endpoint_parts.scheme != "http":
        return False
    endpoint_host = (endpoint_parts.hostname or "").lower()
    if host == endpoint_host or host_matches(host, redirect_hosts):
        return True
    return is_loopback_host(endpoint_host) and is_loopback_host(host)


def host_matches(host: str, allowed: tuple[str, ...]) -> bool:
    host = host.lower().rstrip(".")
    return any(host == a or host.endswith("." + a) for a in allowed)
