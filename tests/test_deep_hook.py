"""Pairs the standard comparison cannot decide (``needs_deep``) are decided by the deep comparison
before anything is recorded or alerted (issue 16, point 1): the watcher, ``index`` and the bot all
match through a Matcher that the composition root gives ``App.deepen``."""

from __future__ import annotations

import pytest

from bot.app import App
from bot.settings import load_settings
from bot.watch.matching import Matcher
from fingerprints.compare import compare_fingerprints
from fingerprints.engine import fingerprint_model
from fingerprints.reader import LocalFolderReader
from store import Store
from store.records import ModelRecord
from store_samples import small_fp


class Undecided:
    """A standard comparison in the band between independent and derived."""

    def __init__(self):
        self.verdict, self.confidence, self.score, self.needs_deep = "same-architecture", 0.5, 0.2, True
        self.kinds, self.evidence = [], ["weights: score 0.200, between the independent and derived bands"]

    def to_dict(self):
        return {"verdict": self.verdict, "score": self.score, "needs_deep": self.needs_deep}


def deep_says_derived(a, b, comparison):
    comparison.verdict, comparison.score, comparison.confidence, comparison.needs_deep = "weights-derived", 0.2, 1.0, False
    comparison.kinds = ["rotate"]
    comparison.evidence = [*comparison.evidence, f"deep: {a[0]} -> {b[0]} dependent, p=1e-300"]
    return comparison


def ingest(store, matcher, repo, seed, created):
    record = ModelRecord(repo_id=repo, author=repo.split("/")[0], created_at=created)
    store.upsert_model(record)
    fp = small_fp(seed)
    fp.source = repo
    return matcher.ingest(store, record, f"sha-{seed}", fp)


@pytest.mark.parametrize("deepen, alerted", [(None, False), (deep_says_derived, True)])
def test_an_undecided_pair_is_settled_by_the_deep_comparison_before_it_is_recorded(tmp_path, monkeypatch, deepen,
                                                                                   alerted):
    monkeypatch.setattr("bot.watch.matching.render_comparison_png", lambda comparison: b"\x89PNG")
    calls = []

    def deepen_and_count(a, b, comparison):
        calls.append((a[0], a[1], b[0], b[1]))
        return deepen(a, b, comparison)

    matcher = Matcher(load_settings(env={}), compare=lambda a, b: Undecided(),
                      deepen=deepen_and_count if deepen else None)
    with Store.open(tmp_path / "d.db") as store:
        ingest(store, matcher, "lab/base", 0, "2022-01-01T00:00:00Z")
        done = ingest(store, matcher, "thief/rotated", 0, "2026-11-20T00:00:00Z")
        alerts = [matcher.decide(store, s, "thief/rotated") for s in done.suspects]
    if not alerted:
        assert done.suspects == set() and calls == []
        return
    assert calls[0] == ("lab/base", "sha-0", "thief/rotated", "sha-0")  # the stored model, then the new one
    [alert] = alerts
    assert alert.source.repo_id == "lab/base" and alert.verdict == "weights-derived"
    assert any(line.startswith("deep: lab/base -> thief/rotated dependent") for line in alert.evidence)


@pytest.mark.slow  # the deep comparison's reads and torch alignment (~10 s CPU)
def test_app_deepen_reads_both_models_again_and_decides_the_rotated_copy(smollm2, tmp_path):
    base, rotated, independent = (str(smollm2[n]) for n in ("smollm2", "smollm2-rotated", "smollm2-fresh-init"))
    app = App.of(load_settings(env={"HUBWATCH_DB": str(tmp_path / "h.db")}))
    fps = {p: fingerprint_model(LocalFolderReader(p)) for p in (base, rotated, independent)}

    def undecided(a, b):
        comparison = compare_fingerprints(fps[a], fps[b])
        comparison.needs_deep = True  # as a pair in the band between the independent and derived scores
        return comparison

    derived = app.deepen((base, "local", fps[base]), (rotated, "local", fps[rotated]), undecided(base, rotated))
    assert derived.verdict == "weights-derived" and not derived.needs_deep
    assert any("deep" in line.lower() for line in derived.evidence)
    control = app.deepen((base, "local", fps[base]), (independent, "local", fps[independent]),
                         undecided(base, independent))
    assert control.verdict not in ("weights-derived", "identical")
    # A side that cannot be read leaves the comparison undecided and says why.
    missing = str(tmp_path / "gone")
    left = app.deepen((base, "local", fps[base]), (missing, "local", fps[rotated]), undecided(base, rotated))
    assert left.needs_deep and "deep comparison not possible" in left.evidence[-1]
    app.close()
