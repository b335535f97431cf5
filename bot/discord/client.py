"""The bot's discord.py client, and ``run_bot`` to run it until cancelled."""

from __future__ import annotations

import logging
from typing import Any

import discord

from bot.discord.commands import NO_MENTIONS, HubwatchCommandTree, build_tree
from bot.discord.errors import BotConfigError
from bot.discord.ratelimit import UserRateLimiter
from bot.discord.runner import CommandLimits, CommandRunner
from bot.discord.service import HubwatchService

log = logging.getLogger(__name__)


def bot_intents() -> discord.Intents:
    # Slash commands need no intent; GUILDS only lets discord.py know the servers it is in
    # (logged at start, and the guild objects interactions refer to). No privileged intents.
    return discord.Intents(guilds=True)


class HubwatchBot(discord.Client):
    """``guild_id``: the server the commands are synced to and the only one they answer in;
    ``None`` publishes them globally and answers everywhere (discord.global_commands)."""

    def __init__(self, service: HubwatchService, *, guild_id: int | None = None, sync_commands: bool = False,
                 limiter: UserRateLimiter | None = None, limits: CommandLimits = CommandLimits(), **options: Any):
        options.setdefault("intents", bot_intents())
        options.setdefault("allowed_mentions", NO_MENTIONS)
        super().__init__(**options)
        self.service = service
        self.guild_id = guild_id
        self.sync_commands = sync_commands
        self.runner = CommandRunner(limits)
        self.tree: HubwatchCommandTree = build_tree(self, service, limiter or UserRateLimiter(), self.runner,
                                                    home_guild=guild_id)

    async def close(self) -> None:
        await super().close()
        self.runner.close()

    async def setup_hook(self) -> None:
        if self.sync_commands:
            synced = await self.sync_app_commands()
            log.info("synced %d application commands (%s)", len(synced),
                     f"guild {self.guild_id}" if self.guild_id else "global")

    async def sync_app_commands(self) -> list[discord.app_commands.AppCommand]:
        """Publish the command definitions to Discord. Creating commands is limited to 200 a day
        per guild, so this runs only on request (``hubwatch bot --sync``), never on every start.
        A guild sync is visible at once; a global one can take a while to reach every client."""
        try:
            if self.guild_id is None:
                return await self.tree.sync()
            guild = discord.Object(id=self.guild_id)
            self.tree.copy_global_to(guild=guild)
            return await self.tree.sync(guild=guild)
        except discord.Forbidden as exc:
            raise BotConfigError("Discord refused the command sync: invite the bot with the "
                                 "applications.commands scope") from exc
        except discord.app_commands.CommandSyncFailure as exc:
            raise BotConfigError(f"Discord rejected the command definitions: {exc}") from exc

    async def on_ready(self) -> None:
        log.info("Discord bot connected as %s (%s) in %d servers", self.user, self.user.id if self.user else "?",
                 len(self.guilds))


def build_client(service: HubwatchService, *, guild_id: int | None = None, sync_commands: bool = False,
                 limiter: UserRateLimiter | None = None, limits: CommandLimits = CommandLimits(),
                 **options: Any) -> HubwatchBot:
    """A ready-to-start bot. ``options`` go to ``discord.Client`` (e.g. ``guild_ready_timeout``)."""
    return HubwatchBot(service, guild_id=guild_id, sync_commands=sync_commands, limiter=limiter, limits=limits,
                       **options)


async def run_bot(token: str, service: HubwatchService, *, guild_id: int | None, sync_commands: bool,
                  global_commands: bool = False, limits: CommandLimits = CommandLimits()) -> None:
    """Connect and serve commands until cancelled; a rejected token is a ``BotConfigError``.
    Commands live in one server (``guild_id``) unless ``global_commands``: a global command reaches
    every server the bot is invited to, and their members would share one watch list."""
    if not token.strip():
        raise BotConfigError("the Discord bot token is empty")
    if guild_id is None and not global_commands:
        raise BotConfigError("set discord.guild_id (HUBWATCH_DISCORD_GUILD_ID) to the server the bot serves, or "
                             "discord.global_commands = true (HUBWATCH_DISCORD_GLOBAL_COMMANDS) to serve every server")
    client = build_client(service, guild_id=None if global_commands else guild_id, sync_commands=sync_commands,
                          limits=limits)
    try:
        async with client:
            await client.start(token)
    except discord.LoginFailure as exc:
        raise BotConfigError("Discord rejected the bot token (401 Unauthorized)") from exc
