"""Progress and log volume: a bar on a terminal, periodic lines elsewhere, quiet scheduler logs."""

from __future__ import annotations

import io
import logging
import time

from bot.ops.logging_setup import configure_logging
from bot.ops.progress import PLAIN_INTERVAL_S, Progress


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_plain_progress_is_a_line_per_interval_and_silent_when_quick(caplog):
    caplog.set_level("INFO", logger="hubwatch.progress")
    clock = Clock()
    with Progress("index seed", total=10, stream=io.StringIO(), clock=clock, terminal=False) as bar:
        for i in range(10):
            clock.now += PLAIN_INTERVAL_S / 4
            bar.advance(note=f"org/m{i}")
    lines = [(r.done, r.total, r.last) for r in caplog.records]
    assert lines == [(4, 10, "org/m3"), (8, 10, "org/m7"), (10, 10, "org/m9")]  # every 15 s, then the end
    caplog.clear()
    with Progress("quick", total=3, stream=io.StringIO(), clock=Clock(), terminal=False) as bar:
        bar.advance(3)
    assert not caplog.records


def test_plain_progress_speaks_while_one_item_takes_long(caplog):
    caplog.set_level("INFO", logger="hubwatch.progress")
    with Progress("watch newest: fingerprinting", total=1, stream=io.StringIO(), interval_s=0.05, terminal=False):
        deadline = time.monotonic() + 10
        while not caplog.records and time.monotonic() < deadline:
            time.sleep(0.01)  # the one model is still being read: no advance() yet
    assert caplog.records[0].done == 0 and caplog.records[0].total == 1


def test_log_lines_go_above_the_terminal_bar_and_the_handler_is_restored():
    stream = io.StringIO()
    handler = configure_logging("text", "INFO", stream=stream)
    try:
        with Progress("index seed", total=2, stream=stream, terminal=True) as bar:
            bar.advance(note="org/a")
            logging.getLogger("hubwatch.hub").info("retrying", extra={"what": "org/b", "host": "hub.example"})
            bar.write("[1/2] org/a ... ok")
            bar.advance(note="org/b")
        assert handler.stream is stream
    finally:
        logging.getLogger().removeHandler(handler)
    lines = stream.getvalue().replace("\r", "\n").splitlines()
    # Each line starts clean: tqdm clears the bar before writing above it.
    retry = next(l for l in lines if "retrying" in l)
    assert "INFO hubwatch.hub: retrying what=org/b host=hub.example" in retry and "index seed" not in retry
    assert "[1/2] org/a ... ok" in lines


def test_scheduler_run_lines_are_off_unless_debugging():
    handler = configure_logging("text", "INFO", stream=io.StringIO())
    try:
        assert not logging.getLogger("apscheduler.executors.default").isEnabledFor(logging.INFO)
        assert logging.getLogger("apscheduler").isEnabledFor(logging.WARNING)
        configure_logging("text", "DEBUG", stream=io.StringIO())
        assert logging.getLogger("apscheduler.executors.default").isEnabledFor(logging.INFO)
    finally:
        configure_logging("text", "INFO")
        logging.getLogger().removeHandler(handler)


def test_an_unreachable_hub_is_one_line_per_cycle_naming_host_and_error(tmp_path, caplog):
    from bot.alerts.discord_webhook import ConsoleSender
    from bot.app import App
    from bot.hub import HubClient
    from bot.hub.retry import RetryPolicy
    from bot.settings import load_settings
    from bot.watch.watcher import Watcher

    settings = load_settings(env={"HUBWATCH_DB": str(tmp_path / "hubwatch.db"), "HF_ENDPOINT": "http://127.0.0.1:9",
                                  "HUBWATCH_FEEDS_TRENDING_ENABLED": "false",
                                  "HUBWATCH_FEEDS_LAST_MODIFIED_ENABLED": "false"})
    hub = HubClient(settings.hub.endpoint, token="", retry=RetryPolicy(max_attempts=3, backoff_base_s=0.01),
                    sleep=lambda s: None)
    caplog.set_level("INFO")
    try:
        summary = Watcher(settings, hub, ConsoleSender(), App.of(settings).fingerprint).poll_feed("newest")
    finally:
        hub.close()
    lines = [r for r in caplog.records if r.name.startswith("hubwatch")]
    assert [(r.levelname, r.getMessage()) for r in lines] == [("WARNING", "cycle done")]
    assert summary.errors == 1 and lines[0].feed == "newest"
    assert lines[0].error.startswith("listing models by createdAt: the Hub at 127.0.0.1 did not answer usably")
    assert "ConnectError" in lines[0].error
