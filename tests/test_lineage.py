"""Lineage names the family's original, not the closest sibling (issue 11, point 2), and the pair
decides who is the suspect whichever arrives first (point 1). Fast: small fingerprints and a fake
comparison that scores the fine-tunes above their base, as the 1,000-fine-tune store did."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from bot.settings import load_settings
from bot.watch.lineage import Member, pick_root
from bot.watch.matching import Matcher
from store import Store
from store.records import ModelRecord
from store.rows import TIER_REFERENCE
from store_samples import small_fp

BASE = "lab/base"
SIBLINGS = [f"tuner{i}/base-ft" for i in range(30)]
SUSPECT = "thief/base-pro"


def when(year: int) -> datetime:
    return datetime(year, 1, 1, tzinfo=timezone.utc)


def test_the_declared_base_is_the_root_even_when_a_sibling_scores_higher():
    base = Member(BASE, 1, when(2022), frozenset(), shared=1, verdict="weights-derived", score=0.9988, confidence=1)
    sibling = Member("x/ft", 2, when(2024), frozenset({BASE}), shared=40, verdict="weights-derived", score=0.9989,
                     confidence=1)
    assert pick_root([sibling, base]) is base
    # No declarations: the earliest; a model without a date (a local reference folder) counts as earliest.
    undated = Member("/refs/base", 3, None, frozenset(), shared=0, verdict="identical", score=1.0, confidence=1)
    assert pick_root([sibling, undated]) is undated
    # Same dates: the one the others share most with.
    a = Member("a/m", 4, when(2023), frozenset(), shared=2, verdict="weights-derived", score=0.99, confidence=1)
    b = Member("b/m", 5, when(2023), frozenset(), shared=9, verdict="weights-derived", score=0.98, confidence=1)
    assert pick_root([a, b]) is b


class Scored:
    """A comparison result: every pair is weights-derived; the fine-tunes score above the base."""

    def __init__(self, score: float):
        self.verdict, self.confidence, self.score = "weights-derived", 0.999, score
        self.kinds, self.evidence = ["fine-tune"], [f"weights: score {score}"]
        self.config, self.tokenizer, self.weights, self.layer_matrix = {}, {}, {}, []
        self.layers_a, self.layers_b, self.bytes_read = [], [], {}

    def to_dict(self):
        return {"verdict": self.verdict, "score": self.score}


@pytest.fixture
def matcher(monkeypatch):
    monkeypatch.setattr("bot.watch.matching.render_comparison_png", lambda comparison: b"\x89PNG")
    m = Matcher(load_settings(env={}))
    m.compare = lambda a, b: Scored(0.9988 if BASE in (a.source, b.source) else 0.9989)
    return m


def ingest(store: Store, matcher: Matcher, repo: str, seed: int, created: str, bases=(), tier=None) -> set[int]:
    record = ModelRecord(repo_id=repo, author=repo.split("/")[0], created_at=created, base_models=list(bases))
    store.upsert_model(record)
    fp = small_fp(seed)
    fp.source = repo
    return matcher.ingest(store, record, f"sha-{seed}", fp, tier=tier).suspects


def test_a_copy_in_a_crowd_of_fine_tunes_names_the_base_and_lists_the_siblings(tmp_path, matcher):
    with Store.open(tmp_path / "l.db") as store:
        ingest(store, matcher, BASE, 0, "2022-01-01T00:00:00Z", tier=TIER_REFERENCE)  # as `index seed` keeps it
        for i, repo in enumerate(SIBLINGS, 1):
            ingest(store, matcher, repo, i, "2024-01-01T00:00:00Z", bases=[BASE])
        suspects = ingest(store, matcher, SUSPECT, 99, "2026-11-20T00:00:00Z")
        [suspect] = suspects
        alert = matcher.decide(store, suspect, SUSPECT)
        assert alert is not None and alert.source.repo_id == BASE and alert.suspect.repo_id == SUSPECT
        [lineage] = [e for e in alert.evidence if e.startswith("lineage:")]
        assert f"{BASE} is the family's original (weights-derived 0.9988)" in lineage
        assert lineage.count("/base-ft (weights-derived 0.9989)") >= 2  # the closer siblings, listed
        assert matcher.decide(store, suspect, SUSPECT) is None  # exactly once per (copy revision, original)


def test_an_original_indexed_after_its_copy_makes_the_stored_copy_the_suspect(tmp_path, matcher):
    with Store.open(tmp_path / "o.db") as store:
        stored = store.find_fingerprint
        assert ingest(store, matcher, SUSPECT, 99, "2026-11-20T00:00:00Z") == set()
        suspects = ingest(store, matcher, BASE, 0, "2022-01-01T00:00:00Z")
        assert suspects == {stored(SUSPECT).id}
        alert = matcher.decide(store, stored(SUSPECT).id, BASE)
        assert alert.source.repo_id == BASE and alert.suspect.repo_id == SUSPECT
        assert alert.reason.endswith(f"found when {BASE} was indexed")


def test_the_alert_reuses_the_comparison_made_while_ingesting(tmp_path, matcher):
    pairs: list[tuple[str, str]] = []
    scored = matcher.compare
    matcher.compare = lambda a, b: pairs.append((a.source, b.source)) or scored(a, b)
    with Store.open(tmp_path / "r.db") as store:
        ingest(store, matcher, BASE, 0, "2022-01-01T00:00:00Z", tier=TIER_REFERENCE)
        record = ModelRecord(repo_id=SUSPECT, author="thief", created_at="2026-11-20T00:00:00Z")
        store.upsert_model(record)
        fp = small_fp(99)
        fp.source = SUSPECT
        done = matcher.ingest(store, record, "sha-99", fp)
        [suspect] = done.suspects
        alert = matcher.decide(store, suspect, SUSPECT, done.comparisons)
        assert alert is not None and alert.source.repo_id == BASE
        assert pairs == [(BASE, SUSPECT)]  # compared once, when the suspect was ingested
        # Without the ingest's comparisons (a later decision), the pair is compared again for the alert.
        store.conn.execute("DELETE FROM alerts")
        matcher.decide(store, suspect, SUSPECT)
        assert pairs == [(BASE, SUSPECT)] * 2
