"""The Discord bot, run as the real discord.py client against a loopback fake of Discord.

The client logs in over REST, finds the gateway through GET /gateway/bot, connects (HELLO,
IDENTIFY, READY, heartbeats), syncs its commands with PUT, and each test pushes INTERACTION_CREATE
dispatches over the gateway and checks the callback and follow-up requests the fake recorded.
The service behind the bot is an in-memory stand-in: the Discord plumbing is what is under test.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
import time

import aiohttp
import discord
import discord.gateway
import pytest
import yarl

from bot.discord import (BotConfigError, CompareResult, NearestRow, StatusInfo, UserRateLimiter, WatchItem,
                             build_client, run_bot)
from bot.discord import commands as discord_commands
from bot.discord.ratelimit import EXPENSIVE_CALLS_PER_WINDOW
from bot.discord.render import PLOT_FILENAME
from bot.discord.runner import CommandLimits
from bot.alerts.discord_webhook import USER_AGENT
from bot.fakes.discord.rest import (ADMINISTRATOR, CHANNEL_MESSAGE, DEFERRED_CHANNEL_MESSAGE, AUTOCOMPLETE_RESULT,
                                  EPHEMERAL, GUILD_ID, MANAGE_GUILD, MEMBER_PERMISSIONS, FakeDiscord)
from fingerprints.errors import InvalidModelError

pytestmark = pytest.mark.timeout(60)

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64
KNOWN = [f"org{i}/model-{i}" for i in range(40)] + ["meta-llama/Llama-2-7b", "TheBloke/Llama-2-7B-GGUF"]
ALICE, BOB = "1500000000000000001", "1500000000000000002"


class InMemoryService:
    """HubwatchService over dicts; records calls and the thread they ran in."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []
        self.threads: set[str] = set()
        self.watch: dict[tuple[str, str], WatchItem] = {}
        self.fail_with: BaseException | None = None
        self.delay_s = 0.0

    def _enter(self, *call) -> None:
        self.calls.append(call)
        self.threads.add(threading.current_thread().name)
        if self.delay_s:
            time.sleep(self.delay_s)
        if self.fail_with is not None:
            raise self.fail_with

    def nearest(self, repo, k):
        self._enter("nearest", repo, k)
        return [NearestRow("TheBloke/Llama-2-7B-GGUF", "weights-derived", 0.991, 0.95, ["quantize"], "", False),
                NearestRow("meta-llama/Llama-2-7b", "identical", 1.0, 0.99, [], "base_model", True)][:k]

    def compare(self, a, b):
        self._enter("compare", a, b)
        return CompareResult(a, b, "weights-derived", 0.93, 0.987, ["noise"],
                             ["embeddings: cosine 0.999 over 4096 sampled rows", "tokenizer: identical vocab"], PNG)

    def watch_add(self, kind, value, by_user, guild_id):
        self._enter("watch_add", kind, value, by_user)
        assert guild_id == int(GUILD_ID)
        if (kind, value) in self.watch:
            return False
        self.watch[(kind, value)] = WatchItem(kind, value, by_user, "2026-05-01T00:00:00+00:00")
        return True

    def watch_remove(self, kind, value, by_user, guild_id):
        self._enter("watch_remove", kind, value, by_user)
        assert guild_id == int(GUILD_ID)
        return self.watch.pop((kind, value), None) is not None

    def watch_list(self, guild_id):
        self._enter("watch_list")
        assert guild_id == int(GUILD_ID)
        return list(self.watch.values())

    def status(self):
        self._enter("status")
        return StatusInfo("2026-05-01T12:00:00+00:00", 1234, 7, 2, 1, "poll failed: 503 from the Hub")

    def known_repo_ids(self, prefix, limit):
        self._enter("known_repo_ids", prefix, limit)
        hits = [r for r in KNOWN if r.lower().startswith(prefix.lower())]
        hits += [r for r in KNOWN if prefix.lower() in r.lower() and r not in hits]
        return hits[:limit]


@contextlib.asynccontextmanager
async def connected_bot(service, *, limiter=None, limits=CommandLimits(), **fake_options):
    """A FakeDiscord and the real client logged in, synced to the test guild, connected and ready."""
    saved_gateway = discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY
    async with FakeDiscord(**fake_options) as fake:
        with fake.installed():
            client = build_client(service, guild_id=int(GUILD_ID), sync_commands=True, limiter=limiter,
                                  limits=limits, guild_ready_timeout=0.05)
            try:
                await client.login(fake.token)
                # discord.Client (unlike AutoShardedClient) connects to a fixed gateway URL; take
                # the one Discord advertises, as GET /gateway/bot is meant to be used.
                _shards, url, _limits = await client.http.get_bot_gateway()
                discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(url)
                runner = asyncio.create_task(client.connect(reconnect=False))
                await asyncio.wait_for(client.wait_until_ready(), 5)
                yield fake, client
            finally:
                await client.close()
                discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = saved_gateway
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(runner, 5)


def run(scenario):
    asyncio.run(scenario())


def test_gateway_handshake_heartbeats_and_command_sync():
    async def scenario():
        async with connected_bot(InMemoryService()) as (fake, client):
            identify = fake.gateway.identifies[0]
            assert identify["token"] == fake.token
            assert identify["intents"] & 1  # GUILDS, and nothing privileged
            assert client.guilds and client.guilds[0].id == int(GUILD_ID)  # READY + GUILD_CREATE processed
            await fake.gateway.wait_until(lambda: len(fake.gateway.heartbeats) >= 3, timeout=3)
            assert client.latency < 1.0  # the ACKs came back
            paths = [(r.method, r.path, r.status) for r in fake.requests]
            for expected in (("GET", "/api/v10/users/@me", 200), ("GET", "/api/v10/oauth2/applications/@me", 200),
                             ("GET", "/api/v10/gateway/bot", 200)):
                assert expected in paths
            assert any(m == "PUT" and p.endswith(f"/guilds/{GUILD_ID}/commands") and s == 200 for m, p, s in paths)
            synced = {c["name"]: c for c in fake.commands[GUILD_ID]}
            assert set(synced) == {"nearest", "compare", "status", "watch"}
            assert synced["watch"]["default_member_permissions"] == str(MANAGE_GUILD)
            assert {o["name"] for o in synced["watch"]["options"]} == {"add", "remove", "list"}
            k = next(o for o in synced["nearest"]["options"] if o["name"] == "k")
            assert (k["min_value"], k["max_value"]) == (1, 10)
            assert all(o.get("autocomplete") for o in synced["compare"]["options"])
            assert None not in fake.commands  # nothing synced globally
    run(scenario)


def test_nearest_defers_then_replaces_thinking_message_with_embed_table():
    service = InMemoryService()

    async def scenario():
        async with connected_bot(service) as (fake, _client):
            interaction = await fake.invoke("nearest", {"repo": "someone/llama-copy", "k": 2})
            callback = await fake.wait_for_callback(interaction)
            assert callback["type"] == DEFERRED_CHANNEL_MESSAGE
            answer = await fake.wait_for_answer(interaction)
            assert answer.via == "followup" and not answer.ephemeral
            embed = answer.embeds[0]
            assert embed["title"] == "Nearest to someone/llama-copy"
            assert embed["description"].startswith("```")
            assert "TheBloke/Llama-2-7B-GGUF" in embed["description"]
            assert "weights-derived" in embed["description"] and "0.991" in embed["description"]
            assert answer.payload["allowed_mentions"] == {"parse": []}
            assert ("nearest", "someone/llama-copy", 2) in service.calls
            assert {t.split("_")[0] for t in service.threads} == {"hubwatch-bot"}  # the bot's own threads
    run(scenario)


def test_slow_service_is_still_acknowledged_within_the_deadline():
    service = InMemoryService()
    service.delay_s = 0.6

    async def scenario():
        # The fake refuses callbacks later than ack_deadline_s, like Discord after 3 s.
        async with connected_bot(service, ack_deadline_s=0.3) as (fake, _client):
            interaction = await fake.invoke("status")
            assert (await fake.wait_for_callback(interaction))["type"] == DEFERRED_CHANNEL_MESSAGE
            answer = await fake.wait_for_answer(interaction)
            fields = {f["name"]: f["value"] for f in answer.embeds[0]["fields"]}
            assert fields["Models fingerprinted"] == "1234" and fields["Queue depth"] == "2"
            assert fields["Alerts sent"] == "7" and fields["Errors"] == "1" and "503" in fields["Last error"]
            assert interaction.callback_at - interaction.dispatched_at < 0.3
    run(scenario)


def test_compare_attaches_the_plot_and_embeds_it():
    async def scenario():
        async with connected_bot(InMemoryService()) as (fake, _client):
            interaction = await fake.invoke("compare", {"a": "org1/model-1", "b": "org2/model-2"})
            assert (await fake.wait_for_callback(interaction))["type"] == DEFERRED_CHANNEL_MESSAGE
            answer = await fake.wait_for_answer(interaction)
            assert answer.attachments[PLOT_FILENAME][1] == PNG  # discord.py labels it octet-stream
            embed = answer.embeds[0]
            assert embed["image"]["url"] == f"attachment://{PLOT_FILENAME}"
            fields = {f["name"]: f["value"] for f in embed["fields"]}
            assert fields["Verdict"] == "weights-derived"
            assert fields["Weight similarity"] == "0.987" and fields["Confidence"] == "0.93"
            assert "cosine 0.999" in embed["description"]
    run(scenario)


def test_huge_hostile_results_still_fit_discord_limits():
    service = InMemoryService()
    hostile = "@everyone [click](http://evil.example) `x` " * 20
    service.compare = lambda a, b: CompareResult(a, b, "identical", 1.0, 1.0, ["rename"] * 400,
                                                 [hostile + str(i) for i in range(20000)], None)

    async def scenario():
        async with connected_bot(service) as (fake, _client):
            interaction = await fake.invoke("compare", {"a": "org1/model-1", "b": "org2/model-2"})
            # The fake answers 400 to anything over Discord's embed limits; an answer means it fit.
            answer = await fake.wait_for_answer(interaction)
            description = answer.embeds[0]["description"]
            assert description.endswith("more)") and "@everyone" not in description
            assert "](http" not in description and not answer.attachments
    run(scenario)


def test_service_error_after_defer_becomes_an_ephemeral_line():
    service = InMemoryService()
    service.fail_with = InvalidModelError("org1/model-1 has no config.json")

    async def scenario():
        async with connected_bot(service) as (fake, _client):
            interaction = await fake.invoke("compare", {"a": "org1/model-1", "b": "org2/model-2"})
            await fake.wait_for_callback(interaction)
            await fake.wait_until(lambda: interaction.followups)
            # The public "thinking" message is gone and the error is a separate ephemeral message.
            assert interaction.original is not None and interaction.original.deleted
            [error] = interaction.visible_messages()
            assert error.ephemeral and error.payload["flags"] & EPHEMERAL
            assert "has no config.json" in error.content
    run(scenario)


def test_unexpected_exception_gives_a_generic_ephemeral_error_and_is_logged(caplog):
    service = InMemoryService()
    service.fail_with = RuntimeError("database exploded")

    async def scenario():
        async with connected_bot(service) as (fake, _client):
            interaction = await fake.invoke("nearest", {"repo": "org1/model-1"})
            await fake.wait_until(lambda: interaction.followups)
            [error] = interaction.visible_messages()
            assert error.ephemeral and error.content == discord_commands.GENERIC_FAILURE
            assert "database exploded" not in error.content

    with caplog.at_level(logging.ERROR, logger=discord_commands.__name__):
        run(scenario)
    assert any("database exploded" in str(r.exc_info[1]) for r in caplog.records if r.exc_info)


def test_bad_repo_id_is_refused_at_once_ephemerally_without_calling_the_service():
    service = InMemoryService()

    async def scenario():
        async with connected_bot(service) as (fake, _client):
            interaction = await fake.invoke("nearest", {"repo": "not a repo @everyone"})
            callback = await fake.wait_for_callback(interaction)
            assert callback["type"] == CHANNEL_MESSAGE
            assert callback["data"]["flags"] & EPHEMERAL
            assert "is not a Hub model id" in callback["data"]["content"]
            assert callback["data"]["allowed_mentions"] == {"parse": []}
            assert not [c for c in service.calls if c[0] == "nearest"]
    run(scenario)


def test_autocomplete_answers_at_most_25_store_repo_ids():
    async def scenario():
        async with connected_bot(InMemoryService()) as (fake, _client):
            interaction = await fake.autocomplete("compare", {"a": "org", "b": ""}, focused="a")
            callback = await fake.wait_for_callback(interaction)
            assert callback["type"] == AUTOCOMPLETE_RESULT
            assert len(interaction.choices) == discord_commands.AUTOCOMPLETE_CHOICES_MAX
            assert all(c["value"].startswith("org") and c["name"] == c["value"] for c in interaction.choices)

            narrow = await fake.autocomplete("nearest", {"repo": "llama"}, focused="repo")
            await fake.wait_for_callback(narrow)
            assert {c["value"] for c in narrow.choices} == {"meta-llama/Llama-2-7b", "TheBloke/Llama-2-7B-GGUF"}
    run(scenario)


def test_fourth_quick_compare_is_refused_with_the_wait_time():
    service = InMemoryService()

    async def scenario():
        async with connected_bot(service) as (fake, _client):
            answered = []
            for _ in range(EXPENSIVE_CALLS_PER_WINDOW):
                interaction = await fake.invoke("compare", {"a": "org1/model-1", "b": "org2/model-2"}, user_id=ALICE)
                answered.append(await fake.wait_for_answer(interaction))
            assert all(a.embeds for a in answered)
            refused = await fake.invoke("compare", {"a": "org1/model-1", "b": "org2/model-2"}, user_id=ALICE)
            callback = await fake.wait_for_callback(refused)
            assert callback["type"] == CHANNEL_MESSAGE and callback["data"]["flags"] & EPHEMERAL
            assert "try again in" in callback["data"]["content"]
            assert len([c for c in service.calls if c[0] == "compare"]) == EXPENSIVE_CALLS_PER_WINDOW
            # The limit is per user: someone else is still served.
            other = await fake.invoke("nearest", {"repo": "org1/model-1"}, user_id=BOB)
            assert (await fake.wait_for_callback(other))["type"] == DEFERRED_CHANNEL_MESSAGE
    run(scenario)


def test_watch_changes_need_manage_server_and_list_shows_them():
    service = InMemoryService()

    async def scenario():
        async with connected_bot(service) as (fake, _client):
            refused = await fake.invoke("watch", {"repo": "org1/model-1"}, subcommand="add", user_id=BOB,
                                        permissions=MEMBER_PERMISSIONS)
            callback = await fake.wait_for_callback(refused)
            assert callback["type"] == CHANNEL_MESSAGE and callback["data"]["flags"] & EPHEMERAL
            assert "Manage Server" in callback["data"]["content"]
            assert not [c for c in service.calls if c[0] == "watch_add"]

            manager = MEMBER_PERMISSIONS | MANAGE_GUILD
            added = await fake.invoke("watch", {"repo": "org1/model-1"}, subcommand="add", user_id=ALICE,
                                      permissions=manager)
            assert (await fake.wait_for_answer(added)).content == "Now watching reference model `org1/model-1`."
            author = await fake.invoke("watch", {"repo": "TheBloke"}, subcommand="add", user_id=ALICE,
                                       permissions=MEMBER_PERMISSIONS | ADMINISTRATOR)
            assert "author `TheBloke`" in (await fake.wait_for_answer(author)).content
            assert ("watch_add", "author", "TheBloke", f"user{ALICE[-4:]} ({ALICE})") in service.calls

            missing = await fake.invoke("watch", {"repo": "org9/never"}, subcommand="remove", user_id=ALICE,
                                        permissions=manager)
            await fake.wait_until(lambda: missing.followups)
            [error] = missing.visible_messages()
            assert error.ephemeral and "not on the watch list" in error.content

            listing = await fake.invoke("watch", subcommand="list", user_id=BOB)
            embed = (await fake.wait_for_answer(listing)).embeds[0]
            fields = {f["name"]: f["value"] for f in embed["fields"]}
            # Escaped: "(" and ")" could otherwise build a masked link out of user-supplied text.
            assert fields["Reference models (1)"] == f"org1/model-1 \\(by user{ALICE[-4:]} \\({ALICE}\\), 2026-05-01\\)"
            assert "TheBloke" in fields["Watched authors (1)"]
    run(scenario)


def test_watch_add_in_a_direct_message_is_refused():
    service = InMemoryService()

    async def scenario():
        async with connected_bot(service) as (fake, _client):
            fake.commands[None] = fake.commands[GUILD_ID]  # as if synced globally, so a DM can reach it
            interaction = await fake.invoke("watch", {"repo": "org1/model-1"}, subcommand="add", in_guild=False,
                                            permissions=MANAGE_GUILD)
            callback = await fake.wait_for_callback(interaction)
            assert callback["data"]["flags"] & EPHEMERAL
            assert not [c for c in service.calls if c[0] == "watch_add"]
    run(scenario)


def test_a_rate_limited_followup_is_retried_after_retry_after():
    async def scenario():
        async with connected_bot(InMemoryService()) as (fake, _client):
            fake.respond_429(r"/webhooks/", retry_after=0.05)
            interaction = await fake.invoke("status")
            answer = await fake.wait_for_answer(interaction)
            assert answer.embeds
            statuses = [r.status for r in fake.requests if "/webhooks/" in r.path]
            assert statuses[:2] == [429, 200]
    run(scenario)


def test_rate_limit_headers_on_rest_answers():
    async def scenario():
        async with FakeDiscord() as fake, aiohttp.ClientSession(headers={"User-Agent": USER_AGENT}) as session:
            async with session.get(f"{fake.base_url}/users/@me", headers={"Authorization": f"Bot {fake.token}"}) as r:
                assert r.status == 200
                for header in ("X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset",
                               "X-RateLimit-Reset-After", "X-RateLimit-Bucket"):
                    assert header in r.headers
            async with session.get(f"{fake.base_url}/users/@me", headers={"Authorization": "Bot wrong"}) as r:
                assert r.status == 401 and (await r.json())["message"] == "401: Unauthorized"
    run(scenario)


def test_rest_requests_without_a_discordbot_user_agent_are_refused_at_the_edge():
    async def scenario():
        async with FakeDiscord() as fake, aiohttp.ClientSession() as session:  # aiohttp's own User-Agent
            async with session.get(f"{fake.base_url}/users/@me", headers={"Authorization": f"Bot {fake.token}"}) as r:
                assert r.status == 403 and await r.text() == "error code: 1010"
    run(scenario)


def test_gateway_closes_4004_on_a_wrong_token():
    async def scenario():
        async with FakeDiscord() as fake, aiohttp.ClientSession() as session:
            async with session.ws_connect(fake.gateway.url + "?v=10&encoding=json") as ws:
                hello = await ws.receive_json()
                assert hello["op"] == 10 and hello["d"]["heartbeat_interval"] > 0
                await ws.send_str(json.dumps({"op": 2, "d": {"token": "wrong", "intents": 1, "properties": {}}}))
                closing = await ws.receive()
                assert closing.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
                assert ws.close_code == 4004
    run(scenario)


def test_run_bot_turns_a_rejected_token_into_a_config_error():
    async def scenario():
        async with FakeDiscord() as fake:
            with fake.installed(), pytest.raises(BotConfigError, match="rejected the bot token"):
                await run_bot("not-the-token", InMemoryService(), guild_id=int(GUILD_ID), sync_commands=False)
    run(scenario)


def test_rate_limiter_window():
    now = [0.0]
    limiter = UserRateLimiter(limit=2, window_s=10.0, clock=lambda: now[0])
    assert limiter.acquire(1) == 0.0 and limiter.acquire(1) == 0.0
    now[0] = 4.0
    assert limiter.acquire(1) == pytest.approx(6.0)
    assert limiter.acquire(2) == 0.0
    now[0] = 10.0
    assert limiter.acquire(1) == 0.0


def test_cli_bot_without_token_is_one_line_error(monkeypatch, capsys, tmp_path):
    from bot.cli import main

    monkeypatch.delenv("HUBWATCH_DISCORD_TOKEN", raising=False)
    monkeypatch.chdir(tmp_path)
    code = main(["bot"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.count("\n") == 0
    assert "HUBWATCH_DISCORD_TOKEN" in err


def test_without_a_guild_the_bot_refuses_to_publish_commands_everywhere():
    async def scenario():
        with pytest.raises(BotConfigError, match="discord.guild_id"):
            await run_bot("any-token", InMemoryService(), guild_id=None, sync_commands=True)
    run(scenario)


def test_commands_are_answered_only_in_the_home_server():
    service = InMemoryService()

    async def scenario():
        async with connected_bot(service) as (fake, _client):
            fake.commands[None] = fake.commands[GUILD_ID]  # as if once synced globally
            interaction = await fake.invoke("nearest", {"repo": "org1/model-1"}, in_guild=False)
            callback = await fake.wait_for_callback(interaction)
            assert callback["data"]["flags"] & EPHEMERAL and callback["data"]["content"] == discord_commands.OTHER_SERVER
            assert not [c for c in service.calls if c[0] == "nearest"]
    run(scenario)


def test_heavy_commands_have_a_bot_wide_cap_and_a_deadline():
    service = InMemoryService()
    service.delay_s = 1.0

    async def scenario():
        async with connected_bot(service, limits=CommandLimits(heavy_at_once=1, deadline_s=0.4)) as (fake, _client):
            first = await fake.invoke("compare", {"a": "org1/model-1", "b": "org2/model-2"}, user_id=ALICE)
            await fake.wait_for_callback(first)
            second = await fake.invoke("nearest", {"repo": "org1/model-1"}, user_id=BOB)  # another member
            await fake.wait_until(lambda: second.followups)
            [busy] = second.visible_messages()
            assert busy.ephemeral and "already comparing 1 models" in busy.content
            status = await fake.invoke("status", user_id=BOB)  # light commands still have threads
            assert (await fake.wait_for_answer(status)).embeds
            await fake.wait_until(lambda: first.followups)
            [late] = first.visible_messages()
            assert late.ephemeral and "took over 0.4 s" in late.content
    run(scenario)
