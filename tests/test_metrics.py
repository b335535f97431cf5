"""Observability: Prometheus metrics scraped over HTTP, /healthz, structured and redacted logs."""

from __future__ import annotations

import io
import json
import logging
import re
import threading

import httpx
import pytest

from bot.ops.logging_setup import CycleSummary, configure_logging, log_cycle_summary, redact
from bot.ops.metrics import EXPOSITION_CONTENT_TYPE, Metrics, MetricsServer, format_value, start_metrics_server
from bot.settings import ConfigError, load_settings

HF_TOKEN = "hf_" + "AbCdEfGhIjKlMnOpQrStUvWxYz01234567"
WEBHOOK_TOKEN = "Wt" * 34
WEBHOOK = f"https://discord.com/api/webhooks/123456789012345678/{WEBHOOK_TOKEN}"  # real-endpoint-constant: validated, never contacted
BOT_TOKEN = "MTIzNDU2Nzg5MDEyMzQ1Njc4OQ" + ".GhIjKl." + "abcdefghijklmnopqrstuvwxyz0123456789"
# Prometheus text format 0.0.4: a sample line is name{labels} value.
SAMPLE_RX = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{([a-zA-Z_][a-zA-Z0-9_]*="(\\.|[^"\\])*",?)*\})? (\S+)$')


class FakeClock:
    def __init__(self, now: float = 1_000_000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


def parse_exposition(text: str) -> dict[str, float]:
    """Sample lines keyed by name+labels; fails on any line that is not HELP, TYPE or a sample."""
    samples = {}
    for line in text.splitlines():
        if line.startswith("# HELP ") or line.startswith("# TYPE "):
            continue
        match = SAMPLE_RX.match(line)
        assert match, f"not a valid exposition line: {line!r}"
        samples[line.rsplit(" ", 1)[0]] = float(line.rsplit(" ", 1)[1])
    return samples


def test_render_counts_and_types():
    m = Metrics(clock=FakeClock())
    m.observe_cycle(CycleSummary("newest", models_seen=10, fingerprinted=3, bytes_read=5_000_000,
                                 alerts_enqueued=2, alerts_delivered=1, hub_429s=4))
    m.listing_succeeded("newest")
    m.alerts_failed.inc()
    m.record_error(TimeoutError("slow"))
    m.record_error(TimeoutError("slow again"))
    m.outbox_depth.set(7)
    text = m.render()
    assert "# TYPE hubwatch_models_fingerprinted_total counter" in text
    assert "# TYPE hubwatch_outbox_depth gauge" in text
    samples = parse_exposition(text)
    assert samples["hubwatch_models_fingerprinted_total"] == 3
    assert samples["hubwatch_bytes_read_total"] == 5_000_000
    assert samples["hubwatch_alerts_enqueued_total"] == 2
    assert samples["hubwatch_alerts_delivered_total"] == 1
    assert samples["hubwatch_alerts_failed_total"] == 1
    assert samples['hubwatch_errors_total{kind="TimeoutError"}'] == 2
    assert samples["hubwatch_hub_429_responses_total"] == 4
    assert samples['hubwatch_poll_cycles_total{feed="newest"}'] == 1
    assert samples['hubwatch_last_successful_poll_timestamp_seconds{feed="newest"}'] == 1_000_000
    assert samples["hubwatch_outbox_depth"] == 7


def test_label_values_are_escaped():
    m = Metrics()
    m.errors.inc(kind='odd "kind"\\with\nnewline')
    line = [l for l in m.render().splitlines() if l.startswith("hubwatch_errors_total")][0]
    assert line == 'hubwatch_errors_total{kind="odd \\"kind\\"\\\\with\\nnewline"} 1'
    assert SAMPLE_RX.match(line)


def test_value_formatting():
    assert format_value(3.0) == "3"
    assert format_value(0.25) == "0.25"
    assert format_value(float("inf")) == "+Inf"
    assert format_value(float("nan")) == "NaN"
    assert format_value(2.0**60) == repr(2.0**60)


def test_counters_reject_misuse():
    m = Metrics()
    with pytest.raises(ValueError):
        m.bytes_read.inc(-1)
    with pytest.raises(ValueError):
        m.errors.inc()  # the kind label is required


def test_concurrent_increments_are_not_lost():
    m = Metrics()
    per_thread, threads = 2000, 8

    def work():
        for _ in range(per_thread):
            m.bytes_read.inc(3)
            m.errors.inc(kind="HubError")

    workers = [threading.Thread(target=work) for _ in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert m.bytes_read.value() == 3 * per_thread * threads
    assert m.errors.value(kind="HubError") == per_thread * threads


def test_scrape_over_http_and_health():
    clock = FakeClock()
    m = Metrics(clock=clock)
    with MetricsServer(m, port=0, max_poll_age_s=100) as server:
        base = f"http://127.0.0.1:{server.port}"
        m.bytes_read.inc(1234)
        r = httpx.get(f"{base}/metrics")
        assert r.status_code == 200
        assert r.headers["content-type"] == EXPOSITION_CONTENT_TYPE
        assert parse_exposition(r.text)["hubwatch_bytes_read_total"] == 1234

        assert httpx.get(f"{base}/healthz").json()["status"] == "ok"  # starting up: grace period
        clock.now += 150
        stale = httpx.get(f"{base}/healthz")
        assert stale.status_code == 503 and stale.json()["status"] == "stale"
        # A poll whose listing failed is not a successful poll: still unhealthy, and says why.
        m.observe_cycle(CycleSummary("trending", errors=1))
        m.listing_failed("trending", "trending listing from hub.test: Hub unavailable (HTTP 503)")
        outage = httpx.get(f"{base}/healthz")
        assert outage.status_code == 503
        assert outage.json()["reason"] == ("no feed listing succeeded for 150 s; last error: trending listing "
                                           "from hub.test: Hub unavailable (HTTP 503)")
        m.listing_succeeded("trending")
        fresh = httpx.get(f"{base}/healthz")
        assert fresh.status_code == 200 and fresh.json()["seconds_since"] == 0
        assert httpx.get(f"{base}/other").status_code == 404


def test_server_only_when_port_set_and_clear_error_when_taken():
    assert start_metrics_server(load_settings(env={}), Metrics()) is None
    with MetricsServer(Metrics(), port=0) as first:
        with pytest.raises(ConfigError, match=f"metrics.port: cannot listen on 127.0.0.1:{first.port}"):
            start_metrics_server(load_settings(env={"HUBWATCH_METRICS_PORT": str(first.port)}), Metrics())
        settings = load_settings(env={"HUBWATCH_METRICS_PORT": str(first.port)})
    server = start_metrics_server(settings, Metrics())
    try:
        assert server is not None and httpx.get(f"http://127.0.0.1:{server.port}/healthz").status_code == 200
    finally:
        server.stop()


# --- logging ---


@pytest.fixture
def log_stream():
    """Configure hubwatch logging into a buffer; restore the root logger afterwards."""
    root = logging.getLogger()
    level = root.level
    stream = io.StringIO()
    handlers = []

    def configure(fmt: str, secrets=()):
        handlers.append(configure_logging(fmt, "DEBUG", secrets=secrets, stream=stream))
        return stream

    yield configure
    for h in handlers:
        root.removeHandler(h)
    root.setLevel(level)


def test_json_lines_carry_fields_and_extras(log_stream):
    stream = log_stream("json")
    logging.getLogger("hubwatch.test").info("fingerprinted %s", "org/model", extra={"bytes_read": 42, "feed": "newest"})
    entry = json.loads(stream.getvalue().splitlines()[-1])
    assert entry["level"] == "INFO" and entry["logger"] == "hubwatch.test"
    assert entry["msg"] == "fingerprinted org/model"
    assert entry["bytes_read"] == 42 and entry["feed"] == "newest"
    assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$", entry["ts"])


def test_secrets_redacted_everywhere(log_stream):
    stream = log_stream("json", secrets=["configured-secret-value"])
    log = logging.getLogger("hubwatch.test")
    log.warning("token %s and webhook %s", HF_TOKEN, WEBHOOK, extra={"url": WEBHOOK, "auth": f"Bot {BOT_TOKEN}"})
    try:
        raise RuntimeError(f"request failed: Authorization: Bearer {HF_TOKEN} configured-secret-value {BOT_TOKEN}")
    except RuntimeError:
        log.exception("delivery failed")
    output = stream.getvalue()
    for secret in (HF_TOKEN, WEBHOOK_TOKEN, BOT_TOKEN, "configured-secret-value"):
        assert secret not in output
    lines = [json.loads(l) for l in output.splitlines()]
    assert "webhooks/123456789012345678/[REDACTED]" in lines[0]["msg"]
    assert lines[0]["url"].endswith("/123456789012345678/[REDACTED]")
    assert "RuntimeError" in lines[1]["exc"] and "[REDACTED]" in lines[1]["exc"]


def test_redact_keeps_ordinary_text():
    text = "hf_hub_download failed for org/model; Discord bot connected as hubwatch"
    assert redact(text) == text
    # A short secret is masked where it stands alone, not inside other words.
    assert redact("short secret abc; abcdef and xabc stay", ["abc"]) == "short secret [REDACTED]; abcdef and xabc stay"


def test_cycle_summary_line_text_and_json(log_stream):
    stream = log_stream("text")
    summary = CycleSummary("newest", models_seen=100, new_revisions=7, fingerprinted=6, bytes_read=16_234_112,
                           alerts_enqueued=1, alerts_delivered=1, errors=0, hub_429s=2, rate_limit_wait_s=121.0,
                           duration_s=41.23456)
    log_cycle_summary(summary)
    line = stream.getvalue().splitlines()[-1]
    assert " INFO hubwatch.cycle: cycle done feed=newest models_seen=100 new_revisions=7 fingerprinted=6 " \
           "bytes_read=16234112 alerts_enqueued=1 alerts_delivered=1 errors=0 hub_429s=2 rate_limit_wait_s=121.0 " \
           "duration_s=41.235" in line
    log_stream("json")  # replaces the text handler instead of adding a second one
    log_cycle_summary(CycleSummary("trending", errors=3))
    new_lines = stream.getvalue().splitlines()[1:]
    assert len(new_lines) == 1
    entry = json.loads(new_lines[0])
    assert entry["level"] == "WARNING" and entry["feed"] == "trending" and entry["errors"] == 3
    assert set(entry) >= {"models_seen", "new_revisions", "fingerprinted", "bytes_read", "alerts_enqueued",
                          "alerts_delivered", "hub_429s", "rate_limit_wait_s", "duration_s"}


def test_configure_logging_rejects_unknown_format():
    with pytest.raises(ValueError, match="text or json"):
        configure_logging("xml")
