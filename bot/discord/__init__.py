"""hubwatch's Discord bot: slash commands over a ``HubwatchService``.

``build_client(service, ...)`` makes the discord.py client; ``run_bot(token, service, ...)`` runs it.
The service protocol and its result types are in ``service.py``.
"""

from bot.discord.client import HubwatchBot, build_client, run_bot
from bot.discord.errors import BotConfigError, BotInputError
from bot.discord.ratelimit import UserRateLimiter
from bot.discord.service import CompareResult, HubwatchService, NearestRow, StatusInfo, WatchItem

__all__ = [
    "BotConfigError", "BotInputError", "CompareResult", "HubwatchBot", "HubwatchService", "NearestRow",
    "StatusInfo", "UserRateLimiter", "WatchItem", "build_client", "run_bot",
]
