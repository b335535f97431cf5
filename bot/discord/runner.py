"""Where the bot's blocking service calls run: its own threads, a global cap on heavy calls, a deadline.

Per-user rate limits (ratelimit.py) do not stop many members at once: three concurrent /compare
calls took 2.9 GiB before the parse envelope, and the bot's calls used to share the event loop's
default executor with the scheduler's poll jobs, so /compare waited behind polls and autocomplete
gave up. Here the bot owns its threads; at most ``heavy_at_once`` fingerprinting commands
(/nearest, /compare) run at a time, bot-wide, and a further one is refused at once with a line
saying so; each heavy call is answered within ``deadline_s``. A call past its deadline keeps its
slot until its thread really ends (a thread cannot be stopped), so the cap holds.
"""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable, TypeVar

from discord import app_commands
from bot.errors import HubwatchError


T = TypeVar("T")
# Threads for light calls (status, watch list, autocomplete) beside the heavy ones, so a full
# heavy cap never delays them.
LIGHT_THREADS = 2


@dataclass(frozen=True)
class CommandLimits:
    heavy_at_once: int = 2
    deadline_s: float = 120.0


class BusyError(app_commands.CheckFailure):
    def __init__(self, running: int):
        super().__init__(f"hubwatch is already comparing {running} models for this server's members; "
                         "try again in a minute.")


class CommandDeadlineError(HubwatchError):
    exit_code = 3


class CommandRunner:
    def __init__(self, limits: CommandLimits = CommandLimits()):
        self.limits = limits
        self._pool = ThreadPoolExecutor(max_workers=limits.heavy_at_once + LIGHT_THREADS,
                                        thread_name_prefix="hubwatch-bot")
        self._lock = threading.Lock()
        self.heavy_running = 0

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    async def light(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.wrap_future(self._pool.submit(fn, *args))

    async def heavy(self, fn: Callable[..., T], *args: Any) -> T:
        with self._lock:
            if self.heavy_running >= self.limits.heavy_at_once:
                raise BusyError(self.heavy_running)
            self.heavy_running += 1
        future = self._pool.submit(fn, *args)
        future.add_done_callback(self._release)
        try:
            return await asyncio.wait_for(asyncio.shield(asyncio.wrap_future(future)), self.limits.deadline_s)
        except asyncio.TimeoutError:
            raise CommandDeadlineError(f"that took over {self.limits.deadline_s:g} s, so hubwatch stopped waiting; "
                                       "try again later") from None

    def _release(self, _future) -> None:
        with self._lock:
            self.heavy_running -= 1
