"""hubwatch watch: poll the Hub, fingerprint what is new, alert on undeclared copies."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

log = logging.getLogger("hubwatch.watch")

# SIGTERM or Ctrl-C ends the process within this many seconds, whatever is in flight: feeds stop
# taking work at once and hand their claims back; what is still running then (a slow Hub read)
# is abandoned, its revisions requeued at the next start. The outbox takes no new claim once
# stopping, and an alert cut short mid-post is settled by its lease like a crash. 8 s fits
# Docker's default 10 s stop timeout and compose's stop_grace_period (30 s).
STOP_DEADLINE_S = 8.0


def register(sub) -> None:
    p = sub.add_parser(
        "watch",
        help="watch the Hub and alert on undeclared copies (the main job)",
        description="Poll the Hub's newest, trending and recently modified models on a schedule, "
        "fingerprint every new revision, compare it with the stored index and post an alert (console, or "
        "Discord when HUBWATCH_DISCORD_WEBHOOK is set) when a model is an undeclared copy of an earlier one. "
        "On an empty store the curated reference models are fingerprinted first. "
        "Runs the Discord bot too when HUBWATCH_DISCORD_TOKEN is set. Exits 0 when stopped by SIGTERM or "
        "Ctrl-C; with --once, non-zero when a feed or a model failed.",
    )
    p.add_argument("--once", action="store_true", help="poll every enabled feed once, deliver alerts, and exit")
    p.add_argument("--plots", metavar="DIR", help="folder for the evidence plots of console alerts "
                   "(default: alerts.plots_dir, else hubwatch-plots next to the store)")
    p.set_defaults(func=run)


class Stopper:
    """Turns SIGTERM / Ctrl-C into a prompt, clean stop of the watcher, bounded by STOP_DEADLINE_S.
    A second signal leaves at once."""

    def __init__(self, watcher):
        self.watcher = watcher
        self.signum: int | None = None
        self._wake: tuple[asyncio.AbstractEventLoop, asyncio.Event] | None = None

    @property
    def exit_code(self) -> int:
        return 128 + (self.signum or 0)

    def request(self, signum: int) -> None:
        if self.signum is not None:
            self._leave(f"hubwatch: {signal.Signals(signum).name} again: leaving now")
        self.signum = signum
        log.info("stopping", extra={"signal": signal.Signals(signum).name, "deadline_s": STOP_DEADLINE_S})
        self.watcher.stop()
        if self._wake is not None:
            loop, event = self._wake
            loop.call_soon_threadsafe(event.set)
        deadline = threading.Timer(STOP_DEADLINE_S, self._leave,
                                   ["hubwatch: stopped with work in flight; it is picked up at the next start"])
        deadline.daemon = True
        deadline.start()

    def _leave(self, line: str) -> None:
        # The threads still running hold only Hub reads and uncommitted SQLite work: ending the
        # process is what a crash would do, which the revisions table and the outbox survive.
        print(line, file=sys.stderr, flush=True)
        sys.stdout.flush()
        os._exit(0 if self._wake is not None else self.exit_code)

    @contextmanager
    def on_signals(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():  # signals reach the main thread only
            yield
            return
        previous = {sig: signal.signal(sig, lambda s, _frame: self.request(s)) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def wake(self, loop: asyncio.AbstractEventLoop, event: asyncio.Event) -> None:
        """Set ``event`` on ``loop`` when a stop is requested (the long-running watch)."""
        self._wake = (loop, event)


async def _serve(watcher, app, stopper: Stopper) -> None:
    stop = asyncio.Event()
    stopper.wake(asyncio.get_running_loop(), stop)
    tasks = [asyncio.create_task(watcher.run_forever(stop), name="watcher")]
    discord = app.settings.discord
    if discord.bot_token:
        tasks.append(asyncio.create_task(app.run_bot(), name="discord-bot"))
    done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    for task in pending:
        task.cancel()
    for task in done:
        task.result()  # re-raise a bot failure (bad token) instead of dying silently


def seed_empty_store(app, watcher) -> None:
    """A first run on an empty store fingerprints the curated references first, so the first copy
    of one is recognised; or says in one line why it cannot."""
    from store.references import load_references

    from bot.cli.commands.index import Indexer, seed

    if not app.settings.feeds.seed_empty_store:
        return
    with app.open_store() as store:
        if store.stats()["fingerprints"]:
            return
        refs = load_references()
        print(f"hubwatch: the store is empty: fingerprinting the {len(refs)} curated reference models first "
              "(feeds.seed_empty_store)", file=sys.stderr)
        indexer = Indexer(app, store)
        failed, untried = seed(indexer, refs, stop=watcher.stopping)
        indexer.deliver()
    done = len(refs) - len(failed) - untried
    if done == 0 and failed:
        repo, exc = failed[0]
        print(f"hubwatch: cannot seed the references from {app.settings.hub.host} ({repo}: "
              f"{str(exc).removeprefix(repo + ': ')}); copies are matched only against models seen from now on "
              "(retry with `hubwatch index seed`)", file=sys.stderr)
    else:
        print(f"hubwatch: seeded {done} of {len(refs)} references ({len(failed)} failed)", file=sys.stderr)


def run(args, app) -> int:
    from bot.ops.metrics import Metrics, start_metrics_server

    metrics = Metrics()
    watcher = app.watcher(metrics, sender=app.alert_sender(args.plots) if args.plots else None)
    stopper = Stopper(watcher)
    server = start_metrics_server(app.settings, metrics)
    try:
        with stopper.on_signals():
            seed_empty_store(app, watcher)
            if not args.once:
                asyncio.run(_serve(watcher, app, stopper))
                return 0
            summaries = watcher.run_once()
        print(f"hubwatch: one cycle done: {sum(s.fingerprinted for s in summaries)} fingerprinted, "
              f"{sum(s.alerts_enqueued for s in summaries)} alerts, {sum(s.errors for s in summaries)} errors")
        if stopper.signum is not None:
            print("hubwatch: stopped; unfinished revisions are picked up at the next start", file=sys.stderr)
            return stopper.exit_code
        if watcher.failures:
            first = watcher.failures[0]
            print(f"hubwatch: error: {len(watcher.failures)} failed in this cycle; first: {first.what} "
                  f"(on {app.settings.hub.host}): {first.error}", file=sys.stderr)
            return getattr(first.error, "exit_code", 1)
        return 0
    finally:
        watcher.close()
        if server is not None:
            server.stop()
