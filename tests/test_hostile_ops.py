"""The Medium/Low findings: token origin, redaction gaps, metrics server limits, database permissions."""

from __future__ import annotations

import os
import socket
import stat
import threading
import time

import httpx
import pytest

from bot.hub.client import HubClient
from bot.ops.logging_setup import redact
from bot.ops.metrics import MAX_CONNECTIONS, SOCKET_TIMEOUT_S, Metrics, MetricsServer
from bot.settings import load_settings
from store.store import Store

TOKEN = "hf_origin_token_0123456789abcdef"
WEBHOOK = "https://discord.com/api/webhooks/123456789012345678/" + "W" * 68  # real-endpoint-constant: redacted, never contacted


def test_the_bearer_token_goes_to_the_endpoints_origin_only_not_another_port_of_its_host():
    seen: list[tuple[str, str | None]] = []

    def hub(request: httpx.Request) -> httpx.Response:
        seen.append((str(request.url), request.headers.get("Authorization")))
        if request.url.port == 8443:  # the Hub sends the read on to another port of its own host
            return httpx.Response(302, headers={"Location": "http://127.0.0.1:9999/api/models/org/name"})
        return httpx.Response(200, json={"id": "org/name", "sha": "a" * 40, "siblings": []})

    with HubClient("http://127.0.0.1:8443", TOKEN) as client:
        client._http = httpx.Client(transport=httpx.MockTransport(hub))
        client.model_info("org/name")
    assert seen[0][1] == f"Bearer {TOKEN}"
    assert seen[1] == ("http://127.0.0.1:9999/api/models/org/name", None)


def test_redaction_covers_short_secrets_the_webhook_token_alone_encoded_urls_and_signed_cdn_urls():
    settings = load_settings(env={"HF_TOKEN": "s3cr3t", "HUBWATCH_DISCORD_WEBHOOK": WEBHOOK})
    secrets = settings.secrets()
    token = WEBHOOK.rsplit("/", 1)[1]
    assert "s3cr3t" not in redact("token=s3cr3t rejected", secrets)
    assert redact("s3cr3ts and us3cr3t stay", secrets) == "s3cr3ts and us3cr3t stay"  # only where it stands alone
    assert token not in redact(f"webhook token {token} refused", secrets)
    encoded = "next=https%3A%2F%2Fdiscord.com%2Fapi%2Fwebhooks%2F123456789012345678%2F" + "W" * 68  # real-endpoint-constant
    assert "WWWW" not in redact(encoded)
    signed = ("GET https://cas-bridge.xethub.hf.co/xet-bridge/abc?X-Amz-Algorithm=AWS4-HMAC-SHA256"
              "&X-Amz-Credential=AKIAXYZ%2F20261128&X-Amz-Signature=0123abcd&Expires=1764300000"
              "&Policy=eyJTdGF0ZW1lbnQiOlt7&Signature=Zm9vYmFy&Key-Pair-Id=K2L8")
    clean = redact(signed)
    for leaked in ("AKIAXYZ", "0123abcd", "eyJTdGF0", "Zm9vYmFy", "K2L8"):
        assert leaked not in clean
    assert "X-Amz-Algorithm=AWS4-HMAC-SHA256" in clean and "Expires=1764300000" in clean


@pytest.mark.slow  # waits out idle timeouts
def test_the_metrics_server_drops_idle_connections_and_caps_its_threads():
    def connection_threads() -> int:  # the server's per-connection threads (other tests' threads excluded)
        return sum("process_request_thread" in t.name for t in threading.enumerate())

    already = connection_threads()  # idle ones a previous test's server may still be closing
    with MetricsServer(Metrics()) as server:
        idle = [socket.create_connection((server.host, server.port)) for _ in range(MAX_CONNECTIONS + 20)]
        try:
            time.sleep(0.3)
            assert connection_threads() - already <= MAX_CONNECTIONS
            # Idle connections are dropped after the socket timeout, and the endpoint answers again.
            deadline = time.monotonic() + SOCKET_TIMEOUT_S + 5
            while True:
                try:
                    if httpx.get(f"http://{server.host}:{server.port}/metrics", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                assert time.monotonic() < deadline, "the metrics endpoint never answered again"
                time.sleep(0.2)
        finally:
            for s in idle:
                s.close()


def test_a_new_database_file_is_readable_by_its_owner_only(tmp_path):
    path = tmp_path / "hubwatch.db"
    Store.open(str(path)).close()
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    for suffix in ("-wal", "-shm"):
        if os.path.exists(f"{path}{suffix}"):
            assert stat.S_IMODE(os.stat(f"{path}{suffix}").st_mode) & 0o077 == 0


def test_the_gitignore_keeps_secrets_out_of_the_repository():
    lines = open(os.path.join(os.path.dirname(__file__), "..", ".gitignore")).read().split()
    assert ".env" in lines and "hubwatch.toml" in lines

