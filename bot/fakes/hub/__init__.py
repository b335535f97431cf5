"""A fake Hugging Face Hub for loopback tests and demos (``hubwatch fakehub DIR``)."""

from bot.fakes.hub.faults import FaultConfig, TrafficStats
from bot.fakes.hub.repos import FakeHubError
from bot.fakes.hub.server import FakeHub

__all__ = ["FakeHub", "FakeHubError", "FaultConfig", "TrafficStats"]
