"""hubwatch watch: poll the Hub, fingerprint what is new, alert on undeclared copies."""

from __future__ import annotations

import asyncio
import logging

from bot.ops.logging_setup import configure_logging
from bot.settings import load_settings

log = logging.getLogger("hubwatch.watch")


def register(sub) -> None:
    p = sub.add_parser(
        "watch",
        help="watch the Hub and alert on undeclared copies (the main job)",
        description="Poll the Hub's newest, trending and recently modified models on a schedule, "
        "fingerprint every new revision, compare it with the stored index and post an alert (console, or "
        "Discord when HUBWATCH_DISCORD_WEBHOOK is set) when a model is an undeclared copy of an earlier one. "
        "Runs the Discord bot too when HUBWATCH_DISCORD_TOKEN is set.",
    )
    p.add_argument("--config", metavar="FILE", help="TOML settings file (default: $HUBWATCH_CONFIG or ./hubwatch.toml)")
    p.add_argument("--once", action="store_true", help="poll every enabled feed once, deliver alerts, and exit")
    p.set_defaults(func=run)


async def _serve(watcher, settings) -> None:
    tasks = [asyncio.create_task(watcher.run_forever(), name="watcher")]
    if settings.discord.bot_token:
        from bot.discord.client import run_bot
        from bot.discord.store_service import open_service

        tasks.append(asyncio.create_task(
            run_bot(settings.discord.bot_token.reveal(), open_service(settings),
                    guild_id=settings.discord.guild_id or None, sync_commands=False), name="discord-bot"))
    done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    for task in pending:
        task.cancel()
    for task in done:
        task.result()  # re-raise a bot failure (bad token) instead of dying silently


def build_watcher(settings, metrics=None):
    """The watcher as ``hubwatch watch`` runs it: Hub client, alert sender and store from ``settings``.
    The caller closes ``watcher.hub``."""
    from store.store import Store

    from bot.alerts.discord_webhook import make_sender
    from bot.hub import HubClient
    from bot.watch.watcher import Watcher

    Store.open(settings.store.path).close()  # create or migrate now: a bad store path fails before polling
    hub = HubClient(settings.hub.endpoint, settings.hub.token.reveal() or None, timeout_s=settings.hub.timeout_s,
                    max_connections=settings.hub.max_connections, model_byte_budget=settings.limits.model_bytes,
                    redirect_hosts=settings.hub.redirect_hosts)
    sender = make_sender(settings.discord.webhook_url.reveal() or None,
                         bot_token=settings.discord.bot_token.reveal() or None)
    return Watcher(settings, hub, sender, metrics)


def run(args) -> int:
    from bot.ops.metrics import Metrics, start_metrics_server

    settings = load_settings(args.config)
    configure_logging(settings.logging.format, "DEBUG" if args.debug else settings.logging.level, settings.secrets())
    metrics = Metrics()
    watcher = build_watcher(settings, metrics)
    server = None
    try:
        server = start_metrics_server(settings, metrics)
        if args.once:
            summaries = watcher.run_once()
            print(f"hubwatch: one cycle done: {sum(s.fingerprinted for s in summaries)} fingerprinted, "
                  f"{sum(s.alerts_enqueued for s in summaries)} alerts, {sum(s.errors for s in summaries)} errors")
            return 0
        asyncio.run(_serve(watcher, settings))
        return 0
    finally:
        watcher.hub.close()
        watcher.close()
        if server is not None:
            server.stop()
