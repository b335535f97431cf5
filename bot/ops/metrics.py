"""Prometheus metrics without a client library: counters, gauges and a /metrics endpoint.

The watcher owns one ``Metrics`` and updates it from any thread; ``MetricsServer`` serves it in the
Prometheus text exposition format 0.0.4 on a stdlib HTTP server thread, plus ``/healthz`` (200 while
polls keep succeeding, 503 with the last listing error once the last successful poll is too old)
for the container healthcheck. A poll is successful only when its feed listing was read.
The server is only started when ``metrics.port`` is set (``start_metrics_server``).
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING

from bot.settings import ConfigError

if TYPE_CHECKING:
    from bot.ops.logging_setup import CycleSummary
    from bot.settings import Settings

log = logging.getLogger(__name__)

EXPOSITION_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# Integers up to 2**53 are exact in a float; print them without a decimal point like Prometheus does.
EXACT_FLOAT_INT = 2**53
# How often the server thread checks for stop(): the delay a shutdown can take (http.server's default is 0.5 s).
SHUTDOWN_POLL_S = 0.05
# A Prometheus scrape and a container healthcheck each hold one connection for milliseconds: a
# handful at once is plenty, and idle or slow connections must not pile up threads.
MAX_CONNECTIONS = 16
SOCKET_TIMEOUT_S = 5.0


def format_value(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if float(value).is_integer() and abs(value) < EXACT_FLOAT_INT:
        return str(int(value))
    return repr(float(value))


def _escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


class _Metric:
    kind = ""

    def __init__(self, name: str, help_text: str, labelnames: tuple[str, ...] = ()):
        self.name, self.help, self.labelnames = name, help_text, labelnames
        self._values: dict[tuple[str, ...], float] = {}
        self._lock = threading.Lock()
        if not labelnames:
            self._values[()] = 0.0  # an unlabelled series exists from the start, at zero

    def _key(self, labels: dict[str, str]) -> tuple[str, ...]:
        if set(labels) != set(self.labelnames):
            raise ValueError(f"{self.name} takes labels {self.labelnames}, got {tuple(labels)}")
        return tuple(str(labels[n]) for n in self.labelnames)

    def value(self, **labels: str) -> float:
        with self._lock:
            return self._values.get(self._key(labels), 0.0)

    def samples(self) -> list[tuple[tuple[str, ...], float]]:
        with self._lock:
            return sorted(self._values.items())

    def render(self) -> list[str]:
        lines = [f"# HELP {self.name} {_escape_help(self.help)}", f"# TYPE {self.name} {self.kind}"]
        for key, value in self.samples():
            labels = ",".join(f'{n}="{_escape_label(v)}"' for n, v in zip(self.labelnames, key))
            lines.append(f"{self.name}{{{labels}}} {format_value(value)}" if labels else f"{self.name} {format_value(value)}")
        return lines


class Counter(_Metric):
    kind = "counter"

    def inc(self, amount: float = 1.0, **labels: str) -> None:
        if amount < 0:
            raise ValueError(f"{self.name}: a counter only goes up, not by {amount}")
        key = self._key(labels)
        with self._lock:
            self._values[key] = self._values.get(key, 0.0) + amount


class Gauge(_Metric):
    kind = "gauge"

    def set(self, value: float, **labels: str) -> None:
        key = self._key(labels)
        with self._lock:
            self._values[key] = float(value)


class Metrics:
    """Every hubwatch metric. Thread-safe: each series has its own lock."""

    def __init__(self, clock: Callable[[], float] = time.time):
        self.clock = clock
        self.models_fingerprinted = Counter("hubwatch_models_fingerprinted_total", "Models fingerprinted.")
        self.bytes_read = Counter("hubwatch_bytes_read_total", "Bytes of model files read from the Hub.")
        self.alerts_enqueued = Counter("hubwatch_alerts_enqueued_total", "Alerts written to the outbox.")
        self.alerts_delivered = Counter("hubwatch_alerts_delivered_total", "Alerts delivered (a 2xx from Discord).")
        self.alerts_failed = Counter("hubwatch_alerts_failed_total", "Alert delivery attempts that failed.")
        self.errors = Counter("hubwatch_errors_total", "Errors, by error class.", ("kind",))
        self.hub_429s = Counter("hubwatch_hub_429_responses_total", "HTTP 429 (rate limited) answers from the Hub.")
        self.rate_limit_wait = Counter("hubwatch_hub_rate_limit_wait_seconds_total",
                                       "Seconds spent waiting for the Hub's rate-limit windows to reset.")
        self.cycles = Counter("hubwatch_poll_cycles_total", "Completed polls, by feed.", ("feed",))
        self.last_successful_poll = Gauge(
            "hubwatch_last_successful_poll_timestamp_seconds", "Unix time the feed was last polled successfully.",
            ("feed",))
        self.outbox_depth = Gauge("hubwatch_outbox_depth", "Alerts waiting in the outbox for delivery.")
        self.revisions_queued = Gauge(
            "hubwatch_revisions_queued", "Listed revisions still to fingerprint: pending, in flight, or failed and "
            "waiting for their retry (the queue's depth).")
        self.feed_lag = Gauge(
            "hubwatch_feed_lag_seconds", "Creation time of the newest listed model minus the time down to which "
            "every model is listed and processed (bot/watch/backlog.py); 0 when the feed has caught up.", ("feed",))
        self.start_time = Gauge("hubwatch_start_time_seconds", "Unix time the process started.")
        self.start_time.set(clock())
        self._last_listing_error: str | None = None
        self._error_lock = threading.Lock()

    def all(self) -> list[_Metric]:
        return [m for m in vars(self).values() if isinstance(m, _Metric)]

    def record_error(self, exc: BaseException) -> None:
        self.errors.inc(kind=type(exc).__name__)

    def observe_cycle(self, summary: CycleSummary) -> None:
        """Count what a poll did, whether or not its listing succeeded (listing_succeeded says that)."""
        self.models_fingerprinted.inc(summary.fingerprinted)
        self.bytes_read.inc(summary.bytes_read)
        self.alerts_enqueued.inc(summary.alerts_enqueued)
        self.alerts_delivered.inc(summary.alerts_delivered)
        self.hub_429s.inc(summary.hub_429s)
        self.rate_limit_wait.inc(summary.rate_limit_wait_s)
        self.cycles.inc(feed=summary.feed)

    def listing_succeeded(self, feed: str) -> None:
        """The feed's listing was read: the poll counts as successful for health."""
        self.last_successful_poll.set(self.clock(), feed=feed)

    def listing_failed(self, feed: str, error: str) -> None:
        """The feed's listing failed: health keeps the error as its reason."""
        with self._error_lock:
            self._last_listing_error = error

    def render(self) -> str:
        return "\n".join(line for metric in self.all() for line in metric.render()) + "\n"

    def health(self, max_poll_age_s: float | None) -> tuple[bool, dict[str, object]]:
        """(healthy, details). Healthy while the newest successful poll, or the start if none yet, is recent."""
        now = self.clock()
        polls = [v for _, v in self.last_successful_poll.samples()]
        since = max(polls) if polls else self.start_time.value()
        age = now - since
        healthy = max_poll_age_s is None or age <= max_poll_age_s
        with self._error_lock:
            error = self._last_listing_error
        details: dict[str, object] = {
            "status": "ok" if healthy else "stale",
            "last_successful_poll": max(polls) if polls else None,
            "seconds_since": round(age, 3),
            "max_poll_age_s": max_poll_age_s,
            "last_listing_error": error,
        }
        if not healthy:
            details["reason"] = (f"no feed listing succeeded for {age:.0f} s" +
                                 (f"; last error: {error}" if error else ""))
        return healthy, details


class _Handler(BaseHTTPRequestHandler):
    server: _MetricsHTTPServer
    # A scrape takes milliseconds; a connection idle this long is dropped (socket timeout).
    timeout = SOCKET_TIMEOUT_S

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        path = self.path.split("?", 1)[0]
        if path == "/metrics":
            self._send(200, EXPOSITION_CONTENT_TYPE, self.server.metrics.render().encode())
        elif path == "/healthz":
            healthy, details = self.server.metrics.health(self.server.max_poll_age_s)
            self._send(200 if healthy else 503, "application/json", json.dumps(details).encode())
        else:
            self._send(404, "text/plain; charset=utf-8", b"not found: try /metrics or /healthz\n")

    def _send(self, status: int, content_type: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        log.debug("metrics endpoint: " + format, *args)


class _MetricsHTTPServer(ThreadingHTTPServer):
    """A thread per connection, at most MAX_CONNECTIONS at once: a further one is closed at once."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], metrics: Metrics, max_poll_age_s: float | None):
        self.metrics, self.max_poll_age_s = metrics, max_poll_age_s
        self._slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        super().__init__(address, _Handler)

    def process_request(self, request, client_address) -> None:
        if not self._slots.acquire(blocking=False):
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request, client_address) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()


class MetricsServer:
    """Serves ``metrics`` at http://host:port/metrics and /healthz from a daemon thread."""

    def __init__(self, metrics: Metrics, host: str = "127.0.0.1", port: int = 0,
                 max_poll_age_s: float | None = None):
        try:
            self._httpd = _MetricsHTTPServer((host, port), metrics, max_poll_age_s)
        except OSError as exc:
            raise ConfigError(f"metrics.port: cannot listen on {host}:{port}: {exc.strerror or exc}") from None
        self.host = host
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(SHUTDOWN_POLL_S,),
                                        name="hubwatch-metrics", daemon=True)

    def start(self) -> MetricsServer:
        self._thread.start()
        log.info("metrics at http://%s:%d/metrics", self.host, self.port)
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join()

    def __enter__(self) -> MetricsServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_metrics_server(settings: Settings, metrics: Metrics) -> MetricsServer | None:
    """Start the endpoint when ``metrics.port`` is set; None when metrics are off."""
    if not settings.metrics.port:
        return None
    return MetricsServer(metrics, settings.metrics.host, settings.metrics.port,
                         max_poll_age_s=settings.feeds.stale_after_s()).start()
