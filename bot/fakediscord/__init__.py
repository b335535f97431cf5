"""Fake Discord endpoints on loopback, for tests and local demos (no network, no Discord account)."""

from .webhook import FakeDiscordWebhook, ReceivedMessage

__all__ = ["FakeDiscordWebhook", "ReceivedMessage"]
