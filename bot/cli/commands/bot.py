"""hubwatch bot: run the Discord bot on its own (``hubwatch watch`` runs it too when a token is set)."""

from __future__ import annotations

import asyncio

from bot.settings import DiscordSettings


def register(sub) -> None:
    p = sub.add_parser(
        "bot", help="run the Discord bot (slash commands /nearest, /compare, /watch, /status)",
        description="Connect to Discord with the bot token from $HUBWATCH_DISCORD_TOKEN and answer slash "
        "commands until interrupted. Commands are published to Discord only with --sync: creating "
        "commands is limited to 200 a day per server, so do it once after install or upgrade.")
    p.add_argument("--sync", action="store_true",
                   help="publish the slash commands (to discord.guild_id, or globally with discord.global_commands)")
    p.set_defaults(func=run)


def run(args, app) -> int:
    from bot.discord import BotConfigError

    settings = app.settings
    if not settings.discord.bot_token:
        raise BotConfigError(f"no Discord bot token: set {DiscordSettings.env_name('bot_token')} "
                             "(Discord developer portal > your application > Bot > Reset Token)")
    asyncio.run(app.run_bot(sync_commands=args.sync))
    return 0
