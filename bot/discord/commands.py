"""The slash commands: /nearest, /compare, /watch add|remove|list, /status, on a CommandTree.

Every command answers within Discord's 3-second deadline by deferring before any call to the
service, runs the (blocking) service call on the bot's own threads (``runner.py``: a bot-wide cap
on heavy commands and a deadline for each), then sends the result as a follow-up. Failures always
reach the user as an ephemeral line (see ``HubwatchCommandTree.on_error``). Commands take Hub ids
only; with a home guild, interactions from any other server are refused.
"""

from __future__ import annotations

import asyncio
import io
import logging

import discord
from discord import app_commands


from bot.errors import USER_ERRORS
from bot.discord.errors import BotInputError
from bot.hub.models import AUTHOR_RX, REPO_ID_RX
from bot.discord.ratelimit import UserRateLimiter
from bot.discord.runner import CommandRunner
from bot.discord.render import (PLOT_FILENAME, compare_embed, error_text, nearest_embed, status_embed,
                     watch_list_embed)
from bot.discord.service import HubwatchService, WatchKind

log = logging.getLogger(__name__)

NO_MENTIONS = discord.AllowedMentions.none()
# Discord's limits for autocomplete results (receiving-and-responding.mdx: at most 25 choices;
# application-commands.mdx: choice name and string value 1-100 characters).
AUTOCOMPLETE_CHOICES_MAX = 25
CHOICE_TEXT_MAX = 100
# Autocomplete must be answered within the same 3 s as any interaction; a store slower than this
# gets no suggestions rather than a failed interaction.
AUTOCOMPLETE_TIMEOUT_S = 2.0
NEAREST_K_DEFAULT = 5
# Ten rows keep the table readable in a chat window (each row is one ~64-character line).
NEAREST_K_MAX = 10
GENERIC_FAILURE = "Something went wrong on hubwatch's side; the error was logged."
# interaction.extras key: the command's result has been delivered (so an error afterwards must not
# delete the original response, which by then is the result).
ANSWERED = "hubwatch_answered"


class UserCooldownError(app_commands.CheckFailure):
    """A user ran too many expensive commands in the limiter's window (not the Hub's rate limit)."""

    def __init__(self, retry_after: float):
        super().__init__(f"Too many expensive commands: try again in {max(1, round(retry_after))} s.")
        self.retry_after = retry_after


class ManageServerRequiredError(app_commands.CheckFailure):
    def __init__(self) -> None:
        super().__init__("Changing the watch list needs the Manage Server permission.")


def check_model_id(repo: str) -> str:
    repo = repo.strip()
    if not REPO_ID_RX.match(repo):
        raise BotInputError(f"{repo[:CHOICE_TEXT_MAX]!r} is not a Hub model id (org/name)")
    return repo


def watch_target(text: str) -> tuple[WatchKind, str]:
    """"org/name" is a reference model, "org" a watched author (the Hub's own naming)."""
    text = text.strip()
    if REPO_ID_RX.match(text):
        return "reference", text
    if AUTHOR_RX.match(text):
        return "author", text
    raise BotInputError(f"{text[:CHOICE_TEXT_MAX]!r} is neither a Hub model id (org/name) nor an author name")


def user_label(user: discord.abc.User) -> str:
    return f"{user.name} ({user.id})"


async def send_result(interaction: discord.Interaction, **message) -> None:
    await interaction.followup.send(allowed_mentions=NO_MENTIONS, **message)
    interaction.extras[ANSWERED] = True


async def send_error(interaction: discord.Interaction, text: str) -> None:
    """``text`` as an ephemeral message, whatever state the interaction is in."""
    if interaction.type is discord.InteractionType.autocomplete:
        if not interaction.response.is_done():
            await interaction.response.autocomplete([])
        return
    if not interaction.response.is_done():
        await interaction.response.send_message(text, ephemeral=True, allowed_mentions=NO_MENTIONS)
        return
    if (interaction.response.type is discord.InteractionResponseType.deferred_channel_message
            and not interaction.extras.get(ANSWERED)):
        # The first follow-up after a public defer replaces the "thinking" message and keeps its
        # visibility whatever flags it carries (discord-api-docs #2860); remove that message so the
        # error can be a fresh, ephemeral one.
        try:
            await interaction.delete_original_response()
        except discord.NotFound:
            pass
    await interaction.followup.send(text, ephemeral=True, allowed_mentions=NO_MENTIONS)


OTHER_SERVER = "hubwatch answers only in the server it was set up for."


class HubwatchCommandTree(app_commands.CommandTree):
    # The one server whose members may use the commands (settings discord.guild_id); None when
    # the commands are published globally on purpose.
    home_guild: int | None = None

    async def interaction_check(self, interaction: discord.Interaction, /) -> bool:
        if self.home_guild is None or interaction.guild_id == self.home_guild:
            return True
        await send_error(interaction, OTHER_SERVER)
        return False

    async def on_error(self, interaction: discord.Interaction, error: app_commands.AppCommandError, /) -> None:
        cause = error.original if isinstance(error, app_commands.CommandInvokeError) else error
        if isinstance(cause, USER_ERRORS):
            text = error_text(str(cause))
        elif isinstance(cause, (app_commands.CheckFailure, app_commands.TransformerError)):
            text = error_text(str(cause))
        elif isinstance(cause, (app_commands.CommandNotFound, app_commands.CommandSignatureMismatch)):
            text = "This command is out of date here; an admin should run `hubwatch bot --sync`."
            log.warning("stale command %s: %s", interaction.data and interaction.data.get("name"), cause)
        else:
            text = GENERIC_FAILURE
            command = interaction.command.qualified_name if interaction.command else "?"
            log.error("command /%s failed for user %s", command, interaction.user.id, exc_info=cause)
        try:
            await send_error(interaction, text)
        except discord.HTTPException as exc:
            # The interaction token expired or Discord refused: nothing left to tell the user through.
            log.error("could not deliver an error to user %s: %s", interaction.user.id, exc)


def build_tree(client: discord.Client, service: HubwatchService, limiter: UserRateLimiter,
               runner: CommandRunner, home_guild: int | None = None) -> HubwatchCommandTree:
    tree = HubwatchCommandTree(client)
    tree.home_guild = home_guild

    async def rate_limited(interaction: discord.Interaction) -> bool:
        wait = limiter.acquire(interaction.user.id)
        if wait > 0:
            raise UserCooldownError(wait)
        return True

    async def manage_server(interaction: discord.Interaction) -> bool:
        perms = interaction.permissions
        if interaction.guild_id is None or not (perms.manage_guild or perms.administrator):
            raise ManageServerRequiredError()
        return True

    async def repo_choices(interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
        try:
            ids = await asyncio.wait_for(
                runner.light(service.known_repo_ids, current.strip(), AUTOCOMPLETE_CHOICES_MAX),
                AUTOCOMPLETE_TIMEOUT_S)
        except USER_ERRORS as exc:
            log.warning("autocomplete for %r failed: %s", current, exc)
            return []
        except asyncio.TimeoutError:
            log.warning("autocomplete for %r took over %.1f s; answered with no suggestions", current,
                        AUTOCOMPLETE_TIMEOUT_S)
            return []
        fitting = [repo for repo in ids if 0 < len(repo) <= CHOICE_TEXT_MAX]
        return [app_commands.Choice(name=repo, value=repo) for repo in fitting[:AUTOCOMPLETE_CHOICES_MAX]]

    @tree.command(name="nearest", description="The stored models closest to a Hub model")
    @app_commands.describe(repo="Hub model id (org/name)", k=f"How many matches (1-{NEAREST_K_MAX})")
    @app_commands.autocomplete(repo=repo_choices)
    @app_commands.check(rate_limited)
    async def nearest(interaction: discord.Interaction, repo: str,
                      k: app_commands.Range[int, 1, NEAREST_K_MAX] = NEAREST_K_DEFAULT) -> None:
        repo = check_model_id(repo)
        await interaction.response.defer(thinking=True)
        rows = await runner.heavy(service.nearest, repo, k)
        await send_result(interaction, embed=nearest_embed(repo, rows))

    @tree.command(name="compare", description="Is one Hub model a copy of another?")
    @app_commands.describe(a="First model (org/name)", b="Second model (org/name)")
    @app_commands.autocomplete(a=repo_choices, b=repo_choices)
    @app_commands.check(rate_limited)
    async def compare(interaction: discord.Interaction, a: str, b: str) -> None:
        a, b = check_model_id(a), check_model_id(b)
        if a == b:
            raise BotInputError("compare needs two different models")
        await interaction.response.defer(thinking=True)
        result = await runner.heavy(service.compare, a, b)
        embed = compare_embed(result)
        if result.png is None:
            await send_result(interaction, embed=embed)
        else:
            plot = discord.File(io.BytesIO(result.png), filename=PLOT_FILENAME)
            await send_result(interaction, embed=embed, file=plot)

    @tree.command(name="status", description="What hubwatch has been doing")
    async def status(interaction: discord.Interaction) -> None:
        await interaction.response.defer(thinking=True)
        info = await runner.light(service.status)
        await send_result(interaction, embed=status_embed(info))

    # Discord applies default permissions to a whole top-level command only, so "list" is hidden
    # from non-managers by default too; server admins can widen it in Server Settings > Integrations.
    watch = app_commands.Group(name="watch", description="Extra reference models and watched authors",
                               default_permissions=discord.Permissions(manage_guild=True), guild_only=True)

    @watch.command(name="add", description="Watch an author (org) or add a reference model (org/name)")
    @app_commands.describe(repo="org/name for a reference model, org for an author")
    @app_commands.autocomplete(repo=repo_choices)
    @app_commands.check(manage_server)
    async def watch_add(interaction: discord.Interaction, repo: str) -> None:
        kind, value = watch_target(repo)
        await interaction.response.defer(thinking=True)
        added = await runner.light(service.watch_add, kind, value, user_label(interaction.user), interaction.guild_id)
        what = "reference model" if kind == "reference" else "author"
        text = f"Now watching {what} `{value}`." if added else f"{what.capitalize()} `{value}` was already watched."
        await send_result(interaction, content=text)

    @watch.command(name="remove", description="Stop watching an author or reference model")
    @app_commands.describe(repo="org/name for a reference model, org for an author")
    @app_commands.autocomplete(repo=repo_choices)
    @app_commands.check(manage_server)
    async def watch_remove(interaction: discord.Interaction, repo: str) -> None:
        kind, value = watch_target(repo)
        await interaction.response.defer(thinking=True)
        removed = await runner.light(service.watch_remove, kind, value, user_label(interaction.user),
                                     interaction.guild_id)
        if not removed:
            raise BotInputError(f"{value} is not on the watch list")
        await send_result(interaction, content=f"Stopped watching `{value}`.")

    @watch.command(name="list", description="Reference models and authors added here")
    async def watch_list(interaction: discord.Interaction) -> None:
        await interaction.response.defer(thinking=True)
        items = await runner.light(service.watch_list, interaction.guild_id)
        await send_result(interaction, embed=watch_list_embed(items))

    tree.add_command(watch)
    return tree

