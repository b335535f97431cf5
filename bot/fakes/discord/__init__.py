"""Fake Discord endpoints on loopback, for tests and local demos (no network, no Discord account)."""

from bot.fakes.discord.webhook import FakeDiscordWebhook, ReceivedMessage

__all__ = ["FakeDiscordWebhook", "ReceivedMessage"]
