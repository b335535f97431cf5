"""Alert model (JSON round-trip, bad payloads), rendering within Discord's limits, hostile text."""

from __future__ import annotations

import io
import json
import re
from datetime import datetime, timezone

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot.alerts.discord_webhook import ConsoleSender, DiscordWebhookSender, make_sender
from bot.alerts.escape import ZERO_WIDTH_SPACE
from bot.fakes.discord.limits import (DESCRIPTION_MAX, EMBEDS_TOTAL_MAX, FIELD_NAME_MAX, FIELD_VALUE_MAX, FIELDS_MAX,
                                      FOOTER_TEXT_MAX, TITLE_MAX, discord_len, embed_text_length)
from bot.alerts.model import Alert, AlertFormatError, RepoRef, build_alert
from bot.alerts.render import PLOT_FILENAME, render_console, render_discord_payload
from bot.fakes.discord.webhook import validate_payload
from bot.watch.policy import ModelFacts, decide_alert
from fingerprints.compare import Comparison

HUB = "http://hub.test"
T0 = datetime(2023, 1, 2, 3, 4, tzinfo=timezone.utc)
T1 = datetime(2024, 5, 6, 7, 8, tzinfo=timezone.utc)
TRUNCATED = re.compile(r"…\(\d+ more")


def make_alert(**changes) -> Alert:
    fields = dict(
        suspect=RepoRef.on_hub("someone/minilm-copy", HUB, sha="0123456789abcdef0123", created_at=T1),
        source=RepoRef.on_hub("sentence-transformers/all-MiniLM-L6-v2", HUB, created_at=T0),
        severity="high", verdict="weights-derived", confidence=0.97, score=0.991, kinds=("noise", "rename"),
        reason="undeclared weights-derived from sentence-transformers/all-MiniLM-L6-v2",
        declared_base_models=("bert-base-uncased",), lineage_declared=False,
        license_conflict="derived from a llama3-licensed model but the card claims apache-2.0",
        evidence=("all 6 layers match after un-renaming (cosine 0.999)", "noise std 0.001 relative to weights"),
        created_at=T1,
    )
    fields.update(changes)
    return Alert(**fields)


def all_strings(obj) -> list[str]:
    if isinstance(obj, str):
        return [obj]
    if isinstance(obj, dict):
        return [s for v in obj.values() for s in all_strings(v)]
    if isinstance(obj, list):
        return [s for v in obj for s in all_strings(v)]
    return []


def assert_within_limits(payload: dict) -> None:
    [embed] = payload["embeds"]
    assert discord_len(embed["title"]) <= TITLE_MAX
    assert discord_len(embed["description"]) <= DESCRIPTION_MAX
    assert len(embed["fields"]) <= FIELDS_MAX
    for f in embed["fields"]:
        assert 0 < discord_len(f["name"]) <= FIELD_NAME_MAX
        assert 0 < discord_len(f["value"]) <= FIELD_VALUE_MAX
    assert discord_len(embed["footer"]["text"]) <= FOOTER_TEXT_MAX
    assert embed_text_length(embed) <= EMBEDS_TOTAL_MAX
    assert payload["allowed_mentions"] == {"parse": []}
    json.dumps(payload)


# ---- model --------------------------------------------------------------------------------

def test_alert_round_trips_through_json_without_the_plot():
    alert = make_alert(plot_png=b"\x89PNG...")
    text = alert.to_json()
    assert "PNG" not in text
    back = Alert.from_json(text)
    assert back == alert
    assert back.plot_png is None
    assert Alert.from_dict(json.loads(json.dumps(alert.to_dict()))) == alert
    assert alert.key == "someone/minilm-copy@0123456789abcdef0123->sentence-transformers/all-MiniLM-L6-v2"
    assert alert.kind == "weights-derived (noise, rename)"
    assert alert.suspect.url == "http://hub.test/someone/minilm-copy"


def test_repo_url_quotes_hostile_ids():
    ref = RepoRef.on_hub("a/b)?x=1 #y", "https://hub.example/")
    assert ref.url == "https://hub.example/a/b%29%3Fx%3D1%20%23y"


@pytest.mark.parametrize("payload, message", [
    ("{not json", "not valid JSON"),
    ("[1, 2]", "must be a JSON object"),
    ('{"format": 99}', "format 99"),
])
def test_bad_payload_text_is_a_one_line_error(payload, message):
    with pytest.raises(AlertFormatError, match=message) as err:
        Alert.from_json(payload)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("key, value, message", [
    ("severity", "catastrophic", "severity must be one of"),
    ("verdict", "maybe", "verdict must be one of"),
    ("confidence", 1.5, "confidence must be within"),
    ("confidence", "high", "confidence must be a number"),
    ("evidence", "one string", "evidence must be a list of strings"),
    ("lineage_declared", "no", "lineage_declared must be true or false"),
    ("created_at", "yesterday", "created_at is not an ISO 8601 time"),
    ("suspect", None, "suspect must be an object"),
])
def test_bad_payload_fields_are_named(key, value, message):
    d = make_alert().to_dict()
    d[key] = value
    with pytest.raises(AlertFormatError, match=message):
        Alert.from_dict(d)


def test_build_alert_from_policy_decision_and_comparison():
    suspect = ModelFacts("someone/minilm-copy", sha="abc", author="someone", created_at=T1, license="apache-2.0",
                         declared_base_models=("bert-base-uncased",))
    source = ModelFacts("meta-llama/tiny", author="meta-llama", created_at=T0, license="llama3")
    comparison = Comparison(a="meta-llama/tiny", b="someone/minilm-copy", verdict="weights-derived", confidence=0.99,
                            score=0.98, kinds=["noise"], evidence=["layers match"], config={}, tokenizer={}, weights={})
    decision = decide_alert(suspect, source, comparison.verdict, comparison.confidence)
    alert = build_alert(suspect, source, decision, comparison, hub_url=HUB, plot_png=b"png", now=T1)
    assert alert.severity == "high" and alert.license_conflict and not alert.lineage_declared
    assert alert.declared_base_models == ("bert-base-uncased",)
    assert alert.suspect.sha == "abc" and alert.source.url == "http://hub.test/meta-llama/tiny"
    assert alert.plot_png == b"png" and alert.evidence == ("layers match",)
    declared = ModelFacts("someone/ft", author="someone", created_at=T1, declared_base_models=("meta-llama/tiny",))
    no_alert = decide_alert(declared, source, "weights-derived", 0.99)
    with pytest.raises(AlertFormatError, match="no alert to build"):
        build_alert(declared, source, no_alert, comparison)


# ---- Discord rendering --------------------------------------------------------------------

def test_payload_has_links_fields_footer_nonce_and_plot_reference():
    payload = render_discord_payload(make_alert(plot_png=b"png"), nonce="abc123")
    assert_within_limits(payload)
    validate_payload(payload, {"files[0]": (PLOT_FILENAME, "image/png", b"png")})
    [embed] = payload["embeds"]
    assert embed["url"] == "http://hub.test/someone/minilm-copy"
    text = json.dumps(payload)
    assert "(http://hub.test/someone/minilm-copy)" in text
    assert "(http://hub.test/sentence-transformers/all-MiniLM-L6-v2)" in text
    assert embed["image"] == {"url": f"attachment://{PLOT_FILENAME}"}
    assert payload["attachments"] == [{"id": 0, "filename": PLOT_FILENAME, "description": payload["attachments"][0]["description"]}]
    assert "abc123" in embed["footer"]["text"]
    names = [f["name"] for f in embed["fields"]]
    assert names == ["Suspect", "Source", "Verdict", "Declared base models", "License conflict"]
    assert "bert" in embed["fields"][3]["value"]
    assert embed["timestamp"] == T1.isoformat()


def test_payload_without_plot_has_no_image():
    payload = render_discord_payload(make_alert())
    assert "image" not in payload["embeds"][0] and "attachments" not in payload
    dropped = render_discord_payload(make_alert(plot_png=b"x"), plot_attached=False, notes=["plot left out: too big"])
    assert "image" not in dropped["embeds"][0]
    assert dropped["embeds"][0]["fields"][-1] == {"name": "Note", "value": "plot left out\\: too big", "inline": False}


def test_huge_evidence_and_long_names_are_truncated_with_a_marker():
    long_id = "org/" + "x" * 5000
    alert = make_alert(
        suspect=RepoRef.on_hub(long_id, HUB, sha="f" * 5000),
        source=RepoRef.on_hub("src/" + "y" * 5000, HUB),
        reason="r" * 10_000,
        evidence=tuple(f"layer {i}: cosine 0.99 " + "z" * (i % 50) for i in range(20_000)) + ("w" * 100_000,),
        declared_base_models=tuple(f"base/{i}" for i in range(1000)),
        license_conflict="L" * 5000,
    )
    payload = render_discord_payload(alert, nonce="n" * 5000, notes=["note " * 1000])
    assert_within_limits(payload)
    validate_payload(payload, {})
    [embed] = payload["embeds"]
    assert TRUNCATED.search(embed["title"])
    assert embed["description"].endswith("more)")
    n_more = int(re.search(r"…\((\d+) more\)$", embed["description"]).group(1))
    shown = embed["description"].count("\n• ")
    assert shown + n_more == len(alert.evidence)
    for f in embed["fields"]:
        if f["name"] in ("Declared base models", "License conflict", "Note"):
            assert TRUNCATED.search(f["value"]), f["name"]
    assert TRUNCATED.search(embed["footer"]["text"])
    # The repo id is too long to link safely: shown as text, still truncated.
    assert "](" not in embed["fields"][0]["value"]


def test_astral_characters_count_double():
    alert = make_alert(evidence=("😀" * 5000,))
    payload = render_discord_payload(alert)
    assert_within_limits(payload)
    assert "😀" in payload["embeds"][0]["description"]


hostile = st.text(st.characters(codec="utf-8"), max_size=3000)


@pytest.mark.slow  # fuzzing; the fast tests above push every limit with one worst case each
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(repo=hostile, reason=hostile, evidence=st.lists(hostile, max_size=40), bases=st.lists(hostile, max_size=30),
       conflict=st.none() | hostile, nonce=hostile)
def test_any_input_stays_within_discords_limits(repo, reason, evidence, bases, conflict, nonce):
    alert = make_alert(suspect=RepoRef.on_hub(repo or "x", HUB), source=RepoRef(repo, url=repo), reason=reason,
                       evidence=tuple(evidence), declared_base_models=tuple(bases), license_conflict=conflict or None)
    payload = render_discord_payload(alert, nonce=nonce or None)
    assert_within_limits(payload)
    validate_payload(payload, {})


MENTIONS = re.compile(r"(?<!\\)@(everyone|here)|<@[!&]?\d+>|@[!&]?\d{17,20}", re.IGNORECASE)


def test_mentions_cannot_ping_and_markdown_is_inert():
    alert = make_alert(
        suspect=RepoRef.on_hub("@everyone/@here", HUB),
        source=RepoRef.on_hub("<@123456789012345678>/<@&223456789012345678>", HUB),
        reason="see [this](http://evil.example) **now** @everyone",
        evidence=("`code` ||spoiler|| > quote", "# heading", "- list <#123456789012345678>"),
        declared_base_models=("@here",),
    )
    payload = render_discord_payload(alert)
    assert payload["allowed_mentions"] == {"parse": []}
    for text in all_strings(payload):
        assert not MENTIONS.search(text), text
    description = payload["embeds"][0]["description"]
    assert "[this](http" not in description and "\\[this\\]\\(http\\://evil.example\\)" in description
    assert "\\*\\*now\\*\\*" in description and "@" + ZERO_WIDTH_SPACE + "everyone" in description
    assert "\\`code\\`" in description and "\\|\\|spoiler" in description
    assert "• \\# heading" in description and "• \\- list \\<\\#" in description
    # The links still work: the URL is percent-quoted, the visible name escaped.
    suspect = payload["embeds"][0]["fields"][0]["value"]
    assert suspect.startswith("[@" + ZERO_WIDTH_SPACE + "everyone/@" + ZERO_WIDTH_SPACE + "here](http://hub.test/%40everyone/%40here)")


def test_non_http_urls_are_not_linked():
    alert = make_alert(suspect=RepoRef("a/b", url="javascript:alert(1)"))
    payload = render_discord_payload(alert)
    assert "url" not in payload["embeds"][0]
    assert "javascript" not in payload["embeds"][0]["fields"][0]["value"]
    validate_payload(payload, {})


# ---- console --------------------------------------------------------------------------------

def test_console_render_is_complete_and_terminal_safe():
    evidence = tuple(f"line {i}" for i in range(200))
    alert = make_alert(suspect=RepoRef.on_hub("evil/\x1b[2Jclear\nforged: line", HUB, sha="0123456789abcdef0123"),
                       evidence=evidence, plot_png=b"12345")
    text = render_console(alert, ["alert id n1"], plot_file="/data/hubwatch-plots/x.png")
    assert "\x1b" not in text and "\nforged" not in text
    assert "HIGH: evil/[2Jclearforged: line is an undeclared weights-derived copy of sentence-transformers/all-MiniLM-L6-v2" in text
    assert all(f"    - line {i}" in text for i in range(200))
    for piece in ("0123456789abcdef0123", "http://hub.test/sentence-transformers/all-MiniLM-L6-v2",
                  "weights-derived (noise, rename); confidence 97%; weight similarity 0.991", "bert-base-uncased",
                  "license conflict: derived from a llama3", "evidence plot: /data/hubwatch-plots/x.png", "note: alert id n1",
                  "created 2023-01-02 03:04 UTC"):
        assert piece in text


def test_console_alert_says_where_its_plot_file_is(tmp_path):
    """Issue 11 point 9: the plot is a file (named from the repos, safely), and the alert names it."""
    out = io.StringIO()
    alert = make_alert(suspect=RepoRef.on_hub("evil/../../x y", HUB, sha="0123456789abcdef"), plot_png=b"\x89PNG-bytes")
    ConsoleSender(out, plots_dir=tmp_path / "plots").send(alert, nonce="abcdef0123456789")
    [saved] = (tmp_path / "plots").iterdir()
    assert saved.read_bytes() == b"\x89PNG-bytes"
    assert saved.name == "evil_.._.._x_y@0123456--sentence-transformers_all-MiniLM-L6-v2-abcdef01.png"
    assert f"evidence plot: {saved}" in out.getvalue() and "bytes of PNG" not in out.getvalue()
    blocked = tmp_path / "file"
    blocked.write_text("not a folder")
    out = io.StringIO()
    assert ConsoleSender(out, plots_dir=blocked).send(alert).delivered  # the alert goes out anyway
    assert "evidence plot: not saved (" in out.getvalue()


def test_console_sender_prints_and_make_sender_picks_console_without_a_webhook():
    out = io.StringIO()
    result = ConsoleSender(out).send(make_alert(), nonce="n9")
    assert result.delivered and "someone/minilm-copy" in out.getvalue() and "alert id n9" in out.getvalue()
    assert isinstance(make_sender(None), ConsoleSender)
    assert isinstance(make_sender(""), ConsoleSender)
    sender = make_sender("http://127.0.0.1:9/api/webhooks/1/secret-token-value")
    assert isinstance(sender, DiscordWebhookSender)
    assert "secret-token-value" not in sender.redacted_url
    sender.close()
