"""Watcher.deliver: one drain of the outbox at a time (poll jobs and the deliver job share a sender)."""

from __future__ import annotations

import threading

from bot.app import App
from bot.alerts.discord_webhook import DeliveryResult
from bot.settings import load_settings
from store.store import Store
from alert_samples import make_alert


class BlockingSender:
    """Holds its first send until released; records every send."""

    def __init__(self):
        self.sent: list[str] = []
        self.entered = threading.Event()
        self.release = threading.Event()

    def send(self, alert, nonce=None) -> DeliveryResult:
        self.sent.append(nonce)
        self.entered.set()
        self.release.wait(10)
        return DeliveryResult(delivered=True, message_id=str(len(self.sent)))


def test_a_second_drain_while_one_runs_sends_nothing(tmp_path):
    settings = load_settings(env={"HUBWATCH_DB": str(tmp_path / "hubwatch.db")})
    assert settings.store.path == str(tmp_path / "hubwatch.db")
    with Store.open(settings.store.path) as store:
        store.enqueue_alert("a", make_alert(0).to_dict())
        store.enqueue_alert("b", make_alert(1).to_dict())
    sender = BlockingSender()
    watcher = App.of(settings).watcher(sender=sender)
    first = threading.Thread(target=lambda: results.append(watcher.deliver()))
    results: list[int] = []
    first.start()
    assert sender.entered.wait(10)
    assert watcher.deliver() == 0  # the running drain owns the sender
    sender.release.set()
    first.join(10)
    assert results == [2] and len(sender.sent) == 2 and len(set(sender.sent)) == 2
    assert watcher.deliver() == 0  # nothing left, and the lock was released
