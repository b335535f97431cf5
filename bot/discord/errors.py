"""Errors the bot itself raises; both are shown to the user as one ephemeral line."""

from __future__ import annotations
from bot.errors import HubwatchError


class BotInputError(HubwatchError):
    """An option value the bot refuses before asking the service (bad repo id, bad k)."""

    exit_code = 2


class BotConfigError(HubwatchError):
    """The bot cannot start: no token, bad guild id, token rejected by Discord."""

    exit_code = 2
