"""hubwatch watch: poll the Hub, fingerprint what is new, alert on undeclared copies."""

from __future__ import annotations

import asyncio
import logging

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
    p.add_argument("--once", action="store_true", help="poll every enabled feed once, deliver alerts, and exit")
    p.set_defaults(func=run)


async def _serve(watcher, app) -> None:
    tasks = [asyncio.create_task(watcher.run_forever(), name="watcher")]
    discord = app.settings.discord
    if discord.bot_token:
        tasks.append(asyncio.create_task(app.run_bot(), name="discord-bot"))
    done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    for task in pending:
        task.cancel()
    for task in done:
        task.result()  # re-raise a bot failure (bad token) instead of dying silently


def run(args, app) -> int:
    from bot.ops.metrics import Metrics, start_metrics_server

    metrics = Metrics()
    watcher = app.watcher(metrics)
    server = start_metrics_server(app.settings, metrics)
    try:
        if args.once:
            summaries = watcher.run_once()
            print(f"hubwatch: one cycle done: {sum(s.fingerprinted for s in summaries)} fingerprinted, "
                  f"{sum(s.alerts_enqueued for s in summaries)} alerts, {sum(s.errors for s in summaries)} errors")
            return 0
        asyncio.run(_serve(watcher, app))
        return 0
    finally:
        if server is not None:
            server.stop()
