"""Discord webhook delivery against the loopback fake: limits, multipart, 429/5xx/timeouts,
permanent errors, pacing, token secrecy, and the outbox delivery loop (exactly one post per alert)."""

from __future__ import annotations

import json
import logging
import secrets
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

import httpx
import pytest

from bot.alerts.delivery import deliver_pending, retry_delay
from bot.alerts.discord_webhook import EDGE_RETRY_S, USER_AGENT, DiscordWebhookSender, PostedLookupError
from bot.alerts.limits import FILE_MAX_BYTES
from bot.alerts.model import Alert
from bot.alerts.render import PLOT_FILENAME, render_discord_payload
from bot.fakes.discord import FakeDiscordWebhook
from alert_samples import NOW, footer, make_alert

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64


@pytest.fixture
def fake():
    with FakeDiscordWebhook() as server:
        yield server


# What every Discord client sends (reference.mdx "User Agent"); the fake's edge refuses the rest.
AS_A_CLIENT = {"User-Agent": USER_AGENT}


def quick_sender(url: str, **kw) -> DiscordWebhookSender:
    options = dict(timeout=2.0, backoff_base=0.02, backoff_cap=0.1)
    options.update(kw)
    return DiscordWebhookSender(url, **options)


# ---- the fake itself ----------------------------------------------------------------------------

def test_fake_answers_like_discord(fake):
    payload = render_discord_payload(make_alert())
    with httpx.Client(headers=AS_A_CLIENT) as client:
        no_wait = client.post(fake.url, json=payload)
        assert no_wait.status_code == 204 and no_wait.content == b""
        for key in ("Limit", "Remaining", "Reset", "Reset-After", "Bucket"):
            assert f"x-ratelimit-{key.lower()}" in no_wait.headers
        v10 = fake.url.replace("/api/webhooks/", "/api/v10/webhooks/") + "?wait=true"
        waited = client.post(v10, json=payload)
        assert waited.status_code == 200 and waited.json()["id"] == fake.messages[1].id
        wrong = client.post(fake.url[:-1] + "y", json=payload)
        assert wrong.status_code == 404 and wrong.json() == {"message": "Unknown Webhook", "code": 10015}
        assert client.post(fake.url, content=b"{nope", headers={"Content-Type": "application/json"}).json()["code"] == 50109
        assert client.post(fake.url, json={"embeds": []}).json()["code"] == 50006
    assert len(fake.messages) == 2


@pytest.mark.parametrize("mutate, path", [
    (lambda p: p["embeds"][0].update(title="t" * 257), ["embeds", "0", "title"]),
    (lambda p: p["embeds"][0].update(description="d" * 4097), ["embeds", "0", "description"]),
    (lambda p: p["embeds"][0].update(fields=[{"name": "n", "value": "v"}] * 26), ["embeds", "0", "fields"]),
    (lambda p: p["embeds"][0]["fields"][0].update(value="v" * 1025), ["embeds", "0", "fields", "0", "value"]),
    (lambda p: p["embeds"][0]["fields"][0].update(name="n" * 257), ["embeds", "0", "fields", "0", "name"]),
    (lambda p: p["embeds"][0]["fields"][0].update(value="   "), ["embeds", "0", "fields", "0"]),
    (lambda p: p["embeds"][0].update(footer={"text": "f" * 2049}), ["embeds", "0", "footer", "text"]),
    (lambda p: p["embeds"][0].update(author={"name": "a" * 257}), ["embeds", "0", "author", "name"]),
    (lambda p: p["embeds"][0].update(description="d" * 4000, fields=[{"name": "n", "value": "v" * 1000}] * 3),
     ["embeds"]),
    (lambda p: p.update(embeds=p["embeds"] * 11), ["embeds"]),
    (lambda p: p.update(content="c" * 2001), ["content"]),
    (lambda p: p.update(allowed_mentions={"parse": ["everybody"]}), ["allowed_mentions", "parse"]),
    (lambda p: p["embeds"][0].update(image={"url": "attachment://missing.png"}), ["embeds", "0", "image", "url"]),
    (lambda p: p["embeds"][0].update(url="javascript:alert(1)"), ["embeds", "0", "url"]),
])
def test_fake_rejects_payloads_over_the_documented_limits(fake, mutate, path):
    payload = render_discord_payload(make_alert())
    mutate(payload)
    answer = httpx.post(fake.url, headers=AS_A_CLIENT, json=payload)
    assert answer.status_code == 400
    body = answer.json()
    assert body["code"] == 50035 and body["message"] == "Invalid Form Body"
    node = body["errors"]
    for key in path:
        node = node[key]
    assert node["_errors"][0]["code"]
    assert fake.messages == []


def test_fake_refuses_a_file_over_10_mib(fake):
    payload = render_discord_payload(make_alert(plot=PNG))
    answer = httpx.post(fake.url, headers=AS_A_CLIENT, data={"payload_json": json.dumps(payload)},
                        files={"files[0]": (PLOT_FILENAME, b"\0" * (FILE_MAX_BYTES + 1), "image/png")})
    assert answer.status_code == 413 and answer.json()["code"] == 40005


def test_fake_rate_limits_each_webhook_with_discords_429_shape():
    with FakeDiscordWebhook(rate_limit=2, rate_window=5.0) as fake, httpx.Client(headers=AS_A_CLIENT) as client:
        payload = render_discord_payload(make_alert())
        first, second, third = (client.post(fake.url, json=payload) for _ in range(3))
    assert (first.status_code, second.status_code, third.status_code) == (204, 204, 429)
    assert first.headers["x-ratelimit-remaining"] == "1" and second.headers["x-ratelimit-remaining"] == "0"
    body = third.json()
    assert 0 < body["retry_after"] <= 5.0 and body["global"] is False
    assert third.headers["via"] == "1.1 google" and third.headers["x-ratelimit-scope"] == "user"
    assert int(third.headers["retry-after"]) >= 1
    assert len(fake.messages) == 2


def test_fake_serves_the_webhook_object_and_its_channel_history(fake):
    api = f"{fake.base_url}/api/v10"
    bot = {"Authorization": f"Bot {fake.bot_token}"}
    with httpx.Client(headers=AS_A_CLIENT) as client:
        webhook = client.get(fake.url).json()  # Get Webhook with Token: no auth, no user
        assert webhook == {"id": fake.webhook_id, "type": 1, "guild_id": fake.guild_id, "channel_id": fake.channel_id,
                           "name": "Captain Hook", "avatar": None, "application_id": None, "token": fake.token}
        assert client.get(fake.url[:-1] + "y").json() == {"message": "Unknown Webhook", "code": 10015}
        posted = client.post(fake.url + "?wait=true", json=render_discord_payload(make_alert(), nonce="n-1")).json()
        chatter = [fake.add_channel_message(f"chat {i}") for i in range(60)]
        history = f"{api}/channels/{fake.channel_id}/messages"
        denied = client.get(history)
        assert denied.status_code == 401 and denied.json() == {"message": "401: Unauthorized", "code": 0}
        newest = client.get(history, headers=bot).json()
        assert len(newest) == 50 and newest[0]["id"] == chatter[-1]["id"]  # default limit, newest first
        assert [m["id"] for m in newest] == sorted((m["id"] for m in newest), key=int, reverse=True)
        older = client.get(history, params={"limit": 100, "before": newest[-1]["id"]}, headers=bot).json()
        assert [m["id"] for m in older] == [m["id"] for m in reversed(chatter[:10])] + [posted["id"]]
        assert older[-1]["webhook_id"] == fake.webhook_id and older[-1]["embeds"] == posted["embeds"]
        after = client.get(history, params={"limit": 2, "after": posted["id"]}, headers=bot).json()
        assert [m["id"] for m in after] == [chatter[1]["id"], chatter[0]["id"]]
        too_many = client.get(history, params={"limit": 101}, headers=bot)
        assert too_many.status_code == 400 and too_many.json()["code"] == 50035 and "limit" in too_many.json()["errors"]
        channel = client.get(f"{api}/channels/{fake.channel_id}", headers=bot).json()
        assert channel["last_message_id"] == chatter[-1]["id"] and channel["guild_id"] == fake.guild_id
        unknown = client.get(f"{api}/channels/1/messages", headers=bot).json()
        assert unknown == {"message": "Unknown Channel", "code": 10003}
        fake.message_content = False  # webhook messages are not the app's own: content fields come back empty
        hidden = client.get(history, params={"limit": 100}, headers=bot).json()[-1]
        assert hidden["id"] == posted["id"]
        assert (hidden["content"], hidden["embeds"], hidden["attachments"]) == ("", [], [])
        fake.read_history = False
        assert client.get(history, headers=bot).json() == []  # no error: no messages
        fake.can_view_channel = False
        assert client.get(history, headers=bot).json() == {"message": "Missing Access", "code": 50001}
    assert [r.method for r in fake.requests].count("POST") == 1 and len(fake.messages) == 1


# ---- the sender -----------------------------------------------------------------------------------

def test_json_delivery_records_the_message_id(fake):
    result = quick_sender(fake.url).send(make_alert(), nonce="nonce-1")
    assert result.delivered and not result.permanent and result.attempts == 1
    [message] = fake.messages
    assert result.message_id == message.id and message.wait
    assert message.attachments == {} and "nonce-1" in footer(message)
    assert message.payload["allowed_mentions"] == {"parse": []}


def test_plot_goes_as_multipart_png(fake):
    result = quick_sender(fake.url).send(make_alert(plot=PNG))
    assert result.delivered
    [message] = fake.messages
    assert message.attachments == {"files[0]": (PLOT_FILENAME, "image/png", PNG)}
    assert message.embeds[0]["image"] == {"url": f"attachment://{PLOT_FILENAME}"}
    assert message.payload["attachments"][0]["filename"] == PLOT_FILENAME


def test_plot_over_10_mib_is_dropped_and_said_so(fake):
    result = quick_sender(fake.url).send(make_alert(plot=b"\0" * (FILE_MAX_BYTES + 1)))
    assert result.delivered
    [message] = fake.messages
    assert message.attachments == {} and "image" not in message.embeds[0]
    note = message.embeds[0]["fields"][-1]
    assert note["name"] == "Note" and "10 MiB upload limit" in note["value"]


def test_429_then_success_honours_retry_after(fake):
    fake.respond_429(1, retry_after=0.3)
    waits: list[float] = []
    result = quick_sender(fake.url, sleep=waits.append).send(make_alert())
    assert result.delivered and result.attempts == 2
    assert fake.statuses() == [429, 200] and len(fake.messages) == 1
    # retry_after (0.3 s), not the whole-second Retry-After header; the sleep is not real, so the
    # bucket's reset is still ahead at the retry and the pacing waits out the rest of it too.
    assert waits[0] == pytest.approx(0.3) and all(w <= 0.3 for w in waits)


def test_long_429_hands_the_wait_back_to_the_outbox(fake):
    fake.respond_429(1, retry_after=120.0, scope="global")
    result = quick_sender(fake.url).send(make_alert())
    assert not result.delivered and not result.permanent and not result.ambiguous
    assert result.retry_after == 120.0 and "global" in result.error
    assert fake.messages == [] and fake.statuses() == [429]


def test_5xx_then_success(fake):
    fake.fail_next(2, status=503)
    result = quick_sender(fake.url).send(make_alert())
    assert result.delivered and result.attempts == 3
    assert fake.statuses() == [503, 503, 200] and len(fake.messages) == 1


def test_5xx_past_the_attempts_is_a_transient_failure(fake):
    fake.fail_next(3, status=502)
    result = quick_sender(fake.url, max_attempts=3).send(make_alert())
    assert not result.delivered and not result.permanent and result.ambiguous
    assert "502" in result.error and fake.messages == []


def test_timeout_then_success(fake):
    fake.hang(1, seconds=1.0)
    result = quick_sender(fake.url, timeout=0.3).send(make_alert())
    assert result.delivered and result.attempts == 2
    assert len(fake.messages) == 1


def test_timeout_after_discord_posted_is_the_documented_duplicate_window(fake):
    """Execute Webhook has no idempotency key: when Discord posts but its answer is lost, the retry
    posts again. Both copies carry the same nonce so the duplicate is recognisable."""
    fake.hang(1, seconds=1.0, after_accept=True)
    result = quick_sender(fake.url, timeout=0.3).send(make_alert(), nonce="n-dup")
    assert result.delivered and result.attempts == 2
    assert len(fake.messages) == 2 and {footer(m) for m in fake.messages} == {"hubwatch alert n-dup"}


def test_unreachable_discord_is_transient_and_not_ambiguous():
    with FakeDiscordWebhook() as fake:
        url = fake.url
    result = quick_sender(url, max_attempts=2).send(make_alert())
    assert not result.delivered and not result.permanent and not result.ambiguous
    assert "cannot connect" in result.error


def test_wrong_token_is_permanent_with_discords_message(fake, caplog):
    url = fake.url[:-4] + "nope"
    with caplog.at_level(logging.DEBUG, logger="hubwatch.alerts"):
        result = quick_sender(url).send(make_alert())
    assert not result.delivered and result.permanent and result.attempts == 1
    assert result.error == "Discord answered 404 (code 10015): Unknown Webhook"
    assert fake.statuses() == [404]
    token = url.rsplit("/", 1)[-1]
    assert token not in caplog.text and token not in result.error


def test_400_is_permanent_and_carries_the_form_errors(fake):
    errors = {"embeds": {"0": {"title": {"_errors": [{"code": "BASE_TYPE_MAX_LENGTH", "message": "too long"}]}}}}
    fake.fail_next(1, status=400, body={"code": 50035, "message": "Invalid Form Body", "errors": errors})
    result = quick_sender(fake.url).send(make_alert())
    assert result.permanent and not result.delivered
    assert result.error.startswith("Discord answered 400 (code 50035): Invalid Form Body: ")
    assert "BASE_TYPE_MAX_LENGTH" in result.error and fake.statuses() == [400]


def test_the_token_never_reaches_logs_or_errors(caplog):
    token = "tok-" + secrets.token_urlsafe(48)
    with FakeDiscordWebhook(token=token) as fake, caplog.at_level(logging.DEBUG, logger="hubwatch.alerts"):
        fake.respond_429(1, retry_after=0.05)
        fake.fail_next(1, status=500)
        fake.hang(1, seconds=0.6)
        result = quick_sender(fake.url, timeout=0.2, max_attempts=3).send(make_alert())
        assert not result.delivered
        dead_url = fake.url
    result_down = quick_sender(dead_url, max_attempts=1).send(make_alert())
    for text in (caplog.text, result.error, result_down.error, repr(result), repr(result_down)):
        assert token not in text
    assert "webhook" in caplog.text


def test_sender_paces_on_remaining_zero_instead_of_hitting_429():
    with FakeDiscordWebhook(rate_limit=2, rate_window=0.6) as fake:
        sender = quick_sender(fake.url)
        started = time.monotonic()
        results = [sender.send(make_alert(i)) for i in range(5)]
        elapsed = time.monotonic() - started
    assert all(r.delivered for r in results)
    assert fake.statuses() == [200] * 5  # waited on X-RateLimit-Reset-After, never drew a 429
    assert elapsed >= 1.1  # two full windows of 0.6 s for five posts at two per window


# ---- the delivery loop over an outbox ------------------------------------------------------------

@dataclass
class Row:
    id: int
    nonce: str
    payload: dict[str, Any]
    status: str = "pending"
    attempts: int = 0
    claim_token: str | None = None
    lease_until: datetime | None = None
    next_attempt_at: datetime = NOW
    last_error: str | None = None
    delivery_ref: str | None = None
    resumed: bool = False
    created_at: str = NOW.isoformat()


@dataclass
class MemoryOutbox:
    """The outbox Protocol in memory, with store/outbox.py's state machine."""

    lease: timedelta = timedelta(seconds=120)
    max_attempts: int = 10
    rows: dict[int, Row] = field(default_factory=dict)
    delivered_calls: list[int] = field(default_factory=list)

    def add(self, alert: Alert) -> int:
        alert_id = len(self.rows) + 1
        self.rows[alert_id] = Row(alert_id, secrets.token_hex(8), alert.to_dict())
        return alert_id

    def claim_pending_alerts(self, limit: int, now: datetime | None = None,
                             lease: timedelta | None = None) -> list[Row]:
        due = [r for r in self.rows.values()
               if (r.status == "pending" and r.next_attempt_at <= now)
               or (r.status == "sending" and r.lease_until <= now)]
        claimed = []
        for r in sorted(due, key=lambda r: (r.next_attempt_at, r.id))[:limit]:
            r.resumed = r.status == "sending"
            r.status, r.attempts = "sending", r.attempts + 1
            r.claim_token, r.lease_until = secrets.token_hex(4), now + (lease or self.lease)
            claimed.append(Row(**vars(r)))
        return claimed

    def mark_delivered(self, alert_id: int, delivery_ref: str | None = None, now: datetime | None = None) -> bool:
        self.delivered_calls.append(alert_id)
        r = self.rows[alert_id]
        if r.status == "delivered":
            return False
        r.status, r.delivery_ref, r.claim_token, r.lease_until = "delivered", delivery_ref, None, None
        return True

    def mark_failed(self, alert_id: int, claim_token: str, error: str, retry_at: datetime | None,
                    in_doubt: bool = False) -> str | None:
        r = self.rows[alert_id]
        if r.status != "sending" or r.claim_token != claim_token:
            return None
        if retry_at is None or r.attempts >= self.max_attempts:
            r.status = "failed"
        else:
            r.status = "sending" if in_doubt else "pending"
        r.last_error, r.claim_token, r.lease_until = error, None, retry_at if r.status == "sending" else None
        if retry_at is not None:
            r.next_attempt_at = retry_at
        return r.status

    def statuses(self) -> list[str]:
        return [r.status for r in self.rows.values()]


def posts_per_alert(fake: FakeDiscordWebhook, outbox: MemoryOutbox) -> dict[int, int]:
    by_nonce = {r.nonce: r.id for r in outbox.rows.values()}
    counts = dict.fromkeys(outbox.rows, 0)
    for m in fake.messages:
        counts[by_nonce[footer(m).removeprefix("hubwatch alert ")]] += 1
    return counts


def test_delivery_loop_delivers_each_alert_once(fake):
    outbox = MemoryOutbox()
    for i in range(3):
        outbox.add(make_alert(i))
    report = deliver_pending(outbox, quick_sender(fake.url), now=NOW)
    assert report.to_dict() == {"claimed": 3, "delivered": 3, "retrying": 0, "failed": 0, "resumed": 0,
                                "found_posted": 0, "errors": []}
    assert outbox.statuses() == ["delivered"] * 3 and outbox.delivered_calls == [1, 2, 3]
    assert [r.delivery_ref for r in outbox.rows.values()] == [m.id for m in fake.messages]
    assert posts_per_alert(fake, outbox) == {1: 1, 2: 1, 3: 1}
    again = deliver_pending(outbox, quick_sender(fake.url), now=NOW + timedelta(hours=1))
    assert again.claimed == 0 and len(fake.messages) == 3


def test_transient_failures_are_retried_later_and_posted_exactly_once(fake):
    outbox = MemoryOutbox()
    outbox.add(make_alert(0))
    outbox.add(make_alert(1))
    sender = quick_sender(fake.url, max_attempts=2)
    fake.fail_next(2, status=503)  # alert 1 fails both in-send attempts
    first = deliver_pending(outbox, sender, now=NOW)
    assert (first.delivered, first.retrying) == (1, 1) and "503" in first.errors[0]
    # A 503 may come from a proxy in front of a Discord that posted: the alert is in doubt, held
    # 'sending' until its retry time, when it is claimed as resumed.
    in_doubt = outbox.rows[1]
    assert (in_doubt.status, in_doubt.claim_token, in_doubt.lease_until) == ("sending", None, NOW + retry_delay(1))
    assert deliver_pending(outbox, sender, now=NOW + timedelta(seconds=1)).claimed == 0  # not due yet
    fake.respond_429(1, retry_after=0.05)
    fake.hang(1, seconds=0.8)
    second = deliver_pending(outbox, quick_sender(fake.url, timeout=0.3, max_attempts=3),
                             now=NOW + timedelta(minutes=5))
    assert second.delivered == 1 and second.resumed == 1 and outbox.statuses() == ["delivered", "delivered"]
    assert posts_per_alert(fake, outbox) == {1: 1, 2: 1}
    assert sorted(outbox.delivered_calls) == [1, 2]


def test_a_long_rate_limit_reschedules_at_retry_after(fake):
    outbox = MemoryOutbox()
    outbox.add(make_alert())
    fake.respond_429(1, retry_after=7200.0)
    report = deliver_pending(outbox, quick_sender(fake.url), now=NOW)
    assert report.retrying == 1
    assert outbox.rows[1].next_attempt_at == NOW + timedelta(hours=2)


def test_permanent_failures_stop_and_bad_payloads_fail_without_posting(fake):
    outbox = MemoryOutbox()
    outbox.add(make_alert())
    outbox.rows[outbox.add(make_alert(1))].payload = {"format": 1, "severity": "nope"}
    report = deliver_pending(outbox, quick_sender(fake.url[:-2] + "zz"), now=NOW)
    assert (report.failed, report.delivered) == (2, 0)
    assert outbox.statuses() == ["failed", "failed"]
    assert "Unknown Webhook" in outbox.rows[1].last_error and "alert payload" in outbox.rows[2].last_error
    assert deliver_pending(outbox, quick_sender(fake.url), now=NOW + timedelta(days=1)).claimed == 0
    assert fake.messages == []


def test_plots_come_from_load_plot_and_a_broken_plot_does_not_block_the_alert(fake):
    outbox = MemoryOutbox()
    outbox.add(make_alert(0))
    outbox.add(make_alert(1))
    plots = {1: PNG, 2: "corrupt"}

    def load_plot(row):
        plot = plots[row.id]
        if not isinstance(plot, bytes):
            raise ValueError("Incorrect padding")
        return plot

    report = deliver_pending(outbox, quick_sender(fake.url), now=NOW, load_plot=load_plot)
    assert report.delivered == 2
    with_plot, without = fake.messages
    assert with_plot.attachments["files[0]"][2] == PNG and "image" in with_plot.embeds[0]
    assert without.attachments == {} and "image" not in without.embeds[0]


class CrashingSender:
    """Posts through a real sender, then 'dies' (an exception no one catches) on the n-th alert,
    after Discord answered 2xx and before the loop records it."""

    def __init__(self, inner: DiscordWebhookSender, crash_on: int):
        self.inner, self.crash_on, self.calls = inner, crash_on, 0

    def send(self, alert, nonce=None):
        self.calls += 1
        result = self.inner.send(alert, nonce)
        if self.calls == self.crash_on:
            raise SystemExit("killed")
        return result


def test_a_crash_leaves_at_most_one_alert_in_doubt(fake):
    outbox = MemoryOutbox()
    for i in range(4):
        outbox.add(make_alert(i))
    with pytest.raises(SystemExit):
        deliver_pending(outbox, CrashingSender(quick_sender(fake.url), crash_on=2), now=NOW)
    # Claimed one at a time: only the alert being sent is 'sending'; the rest were never claimed.
    assert outbox.statuses() == ["delivered", "sending", "pending", "pending"]
    restart = deliver_pending(outbox, quick_sender(fake.url), now=NOW + timedelta(seconds=1))
    assert restart.claimed == 2 and restart.resumed == 0  # the in-doubt alert waits for its lease
    after_lease = deliver_pending(outbox, quick_sender(fake.url), now=NOW + timedelta(minutes=3))
    assert after_lease.resumed == 1 and outbox.statuses() == ["delivered"] * 4
    # The residual window: alert 2 was posted before the crash and again after its lease expired.
    assert posts_per_alert(fake, outbox) == {1: 1, 2: 2, 3: 1, 4: 1}


def test_the_real_store_satisfies_the_outbox_protocol(fake, tmp_path):
    from store.store import Store

    with Store.open(tmp_path / "hub.db") as store:
        alert = make_alert()
        assert store.enqueue_alert(alert.key, alert.to_dict(), now=NOW)
        assert not store.enqueue_alert(alert.key, alert.to_dict(), now=NOW)
        fake.fail_next(1, status=500)
        first = deliver_pending(store, quick_sender(fake.url, max_attempts=1), now=NOW)
        assert first.retrying == 1 and fake.messages == []
        second = deliver_pending(store, quick_sender(fake.url), now=NOW + timedelta(hours=2))
        assert second.delivered == 1
        row = store.get_alert(1)
        assert row.status == "delivered" and row.delivery_ref == fake.messages[0].id
        assert footer(fake.messages[0]) == f"hubwatch alert {row.nonce}"
        assert Alert.from_dict(row.payload) == alert
        assert deliver_pending(store, quick_sender(fake.url), now=NOW + timedelta(days=1)).claimed == 0
    assert len(fake.messages) == 1


# ---- settling in-doubt alerts with the bot token ------------------------------------------------

def checking_sender(fake: FakeDiscordWebhook, **kw) -> DiscordWebhookSender:
    return quick_sender(fake.url, bot_token=fake.bot_token, **kw)


def test_find_posted_finds_this_webhooks_nonce_and_pages_back_to_when_the_alert_was_queued(fake):
    sender = checking_sender(fake)
    fake.add_channel_message("hubwatch alert n-1")  # someone quoting a footer is not the webhook's post
    posted = sender.send(make_alert(), nonce="n-1")
    for i in range(150):
        fake.add_channel_message(f"chat {i}")
    assert sender.find_posted("n-1", since=NOW) == posted.message_id  # on the second page
    assert sender.find_posted("n-2", since=NOW) is None
    gets = [r.path for r in fake.requests if r.method == "GET"]
    assert gets.count(f"/api/v10/channels/{fake.channel_id}/messages") == 4  # two pages per lookup
    # Nothing is searched older than the alert (less the clock skew allowance): one page suffices.
    assert sender.find_posted("n-1", since=datetime.now(timezone.utc) + timedelta(hours=1)) is None
    assert [r.path for r in fake.requests if r.method == "GET"].count(gets[-1]) == 5


def test_find_posted_never_takes_what_it_cannot_read_for_not_posted(fake, caplog):
    sender = checking_sender(fake)
    assert sender.find_posted("n-1", since=NOW) is None  # an empty channel
    fake.read_history = False
    assert sender.find_posted("n-1", since=NOW) is None  # empty, and its last_message_id is null
    sender.send(make_alert(), nonce="n-1")
    with pytest.raises(PostedLookupError, match="Read Message History"):
        sender.find_posted("n-1", since=NOW)  # messages exist that the bot cannot list
    fake.read_history, fake.message_content = True, False
    with pytest.raises(PostedLookupError, match="Message Content"):
        sender.find_posted("n-1", since=NOW)
    fake.message_content, fake.can_view_channel = True, False
    with pytest.raises(PostedLookupError, match="50001"):
        sender.find_posted("n-1", since=NOW)
    with caplog.at_level(logging.DEBUG, logger="hubwatch.alerts"), \
            pytest.raises(PostedLookupError, match="401") as wrong:
        quick_sender(fake.url, bot_token="wrong-" + fake.bot_token).find_posted("n-1", since=NOW)
    url = fake.url
    fake.stop()
    with pytest.raises(PostedLookupError, match="no answer") as down:
        quick_sender(url, bot_token=fake.bot_token).find_posted("n-1")
    for text in (str(wrong.value), str(down.value), caplog.text):
        assert fake.bot_token not in text and fake.token not in text


def test_a_crash_after_discord_posted_is_settled_by_finding_the_nonce(fake):
    outbox = MemoryOutbox()
    for i in range(3):
        outbox.add(make_alert(i))
    with pytest.raises(SystemExit):
        deliver_pending(outbox, CrashingSender(checking_sender(fake), crash_on=2), now=NOW)
    report = deliver_pending(outbox, checking_sender(fake), now=NOW + timedelta(minutes=3))
    assert (report.claimed, report.resumed, report.found_posted, report.delivered) == (2, 1, 1, 2)
    assert outbox.statuses() == ["delivered"] * 3 and posts_per_alert(fake, outbox) == {1: 1, 2: 1, 3: 1}
    assert outbox.rows[2].delivery_ref == fake.messages[1].id  # recorded with the message found


def test_an_in_doubt_alert_that_was_not_posted_is_posted_once(fake):
    outbox = MemoryOutbox()
    outbox.add(make_alert())
    outbox.claim_pending_alerts(1, NOW)  # a sender claims it and dies before its request leaves
    report = deliver_pending(outbox, checking_sender(fake), now=NOW + timedelta(minutes=3))
    assert (report.resumed, report.found_posted, report.delivered) == (1, 0, 1)
    assert posts_per_alert(fake, outbox) == {1: 1}


def test_an_in_doubt_alert_whose_lookup_fails_is_not_posted_and_stays_in_doubt(fake, caplog):
    outbox = MemoryOutbox()
    outbox.add(make_alert())
    with pytest.raises(SystemExit):
        deliver_pending(outbox, CrashingSender(checking_sender(fake), crash_on=1), now=NOW)
    fake.can_view_channel = False
    later = NOW + timedelta(minutes=3)
    with caplog.at_level(logging.DEBUG, logger="hubwatch.alerts"):
        report = deliver_pending(outbox, checking_sender(fake), now=later)
    assert (report.resumed, report.retrying, report.delivered) == (1, 1, 0) and "Missing Access" in report.errors[0]
    row = outbox.rows[1]
    assert (row.status, row.claim_token, row.lease_until) == ("sending", None, later + retry_delay(2))
    assert len(fake.messages) == 1  # not posted blindly
    assert deliver_pending(outbox, checking_sender(fake), now=later + timedelta(seconds=30)).claimed == 0
    fake.can_view_channel = True
    again = deliver_pending(outbox, checking_sender(fake), now=later + timedelta(minutes=2))
    assert (again.resumed, again.found_posted) == (1, 1) and posts_per_alert(fake, outbox) == {1: 1}
    assert fake.bot_token not in caplog.text


def test_with_a_bot_token_an_answer_lost_after_discord_posted_is_found_not_posted_again(fake):
    outbox = MemoryOutbox()
    outbox.add(make_alert())
    fake.hang(1, seconds=1.0, after_accept=True)
    first = deliver_pending(outbox, checking_sender(fake, timeout=0.3), now=NOW)
    # No blind retry inside the send: the alert is handed back in doubt.
    assert first.retrying == 1 and len(fake.messages) == 1 and outbox.rows[1].status == "sending"
    second = deliver_pending(outbox, checking_sender(fake), now=NOW + retry_delay(1))
    assert (second.resumed, second.found_posted) == (1, 1) and posts_per_alert(fake, outbox) == {1: 1}


def test_the_real_store_keeps_an_in_doubt_alert_resumable(tmp_path):
    from store.store import Store

    with Store.open(tmp_path / "hub.db") as store:
        store.enqueue_alert("k", make_alert().to_dict(), now=NOW)
        [claim] = store.claim_pending_alerts(1, now=NOW)
        retry_at = NOW + timedelta(seconds=30)
        assert store.mark_failed(claim.id, claim.claim_token, "timeout", retry_at, in_doubt=True) == "sending"
        assert store.claim_pending_alerts(1, now=NOW + timedelta(seconds=29)) == []
        [again] = store.claim_pending_alerts(1, now=NOW + timedelta(seconds=30))
        assert again.resumed and again.attempts == 2 and again.last_error == "timeout"
        assert store.mark_failed(again.id, again.claim_token, "x", NOW, max_attempts=2, in_doubt=True) == "failed"


# ---- Discord's edge: the User-Agent rule --------------------------------------------------------

def test_the_fake_refuses_requests_without_a_discordbot_user_agent_at_its_edge(fake):
    payload = render_discord_payload(make_alert())
    for headers in ({}, {"User-Agent": "python-httpx/0.28.1"}, {"User-Agent": "DiscordBot"}):
        answer = httpx.post(fake.url, json=payload, headers=headers)
        assert answer.status_code == 403 and answer.text == "error code: 1010"
        assert httpx.get(fake.url, headers=headers).status_code == 403
    assert fake.messages == []
    assert httpx.post(fake.url, json=payload, headers=AS_A_CLIENT).status_code == 204


def test_the_sender_names_itself_even_on_a_client_it_was_given(fake):
    with httpx.Client() as plain, quick_sender(fake.url, client=plain) as sender:
        assert sender.send(make_alert()).delivered
    assert len(fake.messages) == 1


def test_a_403_from_discords_edge_is_retried_later_not_failed_for_good():
    def edge(request: httpx.Request) -> httpx.Response:
        return httpx.Response(403, text="error code: 1010", headers={"Content-Type": "text/plain"})

    url = "http://127.0.0.1:9/api/webhooks/123456789012345678/" + "t" * 68
    with httpx.Client(transport=httpx.MockTransport(edge)) as client, quick_sender(url, client=client) as sender:
        result = sender.send(make_alert())
    assert not result.delivered and not result.permanent and not result.ambiguous
    assert result.retry_after == EDGE_RETRY_S and result.attempts == 1
    assert "403" in result.error


def test_a_webhook_on_a_forum_channel_posts_into_the_configured_thread():
    with FakeDiscordWebhook(forum=True) as forum:
        with quick_sender(forum.url) as without:
            refused = without.send(make_alert())
        assert refused.permanent and "220001" in refused.error  # Discord's answer without a thread
        with quick_sender(forum.url, thread_id=1300000000000000042) as sender:
            assert sender.send(make_alert()).delivered
        assert [m.thread_id for m in forum.messages] == ["1300000000000000042"]
