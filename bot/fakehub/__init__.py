"""A fake Hugging Face Hub for loopback tests and demos (``hubwatch fakehub DIR``)."""

from .faults import FaultConfig, TrafficStats
from .repos import FakeHubError
from .server import FakeHub

__all__ = ["FakeHub", "FakeHubError", "FaultConfig", "TrafficStats"]
