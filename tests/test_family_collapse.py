"""A family of recorded copies among the candidates costs its representatives' comparisons, not
one per member (store/nearest.py, FAMILY_NEAREST): comparisons are counted, never timed."""

from __future__ import annotations

from dataclasses import replace

import pytest

from fingerprints.compare import Comparison
from store import Store
from store.nearest import FAMILY_NEAREST, nearest
from store_samples import fine_tune, small_fp

BASE = "lab/base"


def stub(reference: str, suspect: str, verdict: str) -> Comparison:
    score = 0.99 if verdict == "weights-derived" else 0.02
    return Comparison(reference, suspect, verdict, 0.9, score, [], [f"stub: {verdict}"], {}, {}, {})


class Recording:
    """A compare that says ``verdicts[source]`` (default: weights-derived) and remembers its calls."""

    def __init__(self, verdicts: dict[str, str] | None = None):
        self.verdicts = verdicts or {}
        self.calls: list[str] = []

    def __call__(self, reference, suspect) -> Comparison:
        self.calls.append(reference.source)
        return stub(reference.source, suspect.source, self.verdicts.get(reference.source, "weights-derived"))


def family(store: Store, members: int):
    """A base and ``members`` fine-tunes of it, each recorded as weights-derived from the base."""
    base = small_fp(1)
    base_id, _ = store.add_fingerprint(BASE, "s", replace(base, source=BASE))
    for i in range(members):
        fid, _ = store.add_fingerprint(f"org/ft-{i}", "s", fine_tune(base, i, f"org/ft-{i}"))
        store.record_match(base_id, fid, stub(BASE, f"org/ft-{i}", "weights-derived"))
    return base


@pytest.mark.parametrize("members", [12, 40])
def test_a_new_fine_tune_near_a_family_costs_its_original_and_nearest_members(tmp_path, members):
    with Store.open(tmp_path / "f.db") as store:
        base = family(store, members)
        query = fine_tune(base, 999, "new/ft")
        candidates = store.candidates(query, limit=15)
        assert len(candidates) == min(15, members + 1) and BASE in {c.repo_id for c in candidates}
        compare = Recording()
        found = nearest(store, query, k=5, compare=compare)
        # The original and the FAMILY_NEAREST nearest members, whatever the family's size.
        assert len(compare.calls) == 1 + FAMILY_NEAREST and BASE in compare.calls
        nearest_members = [c.repo_id for c in candidates if c.repo_id != BASE][:FAMILY_NEAREST]
        assert sorted(compare.calls) == sorted([BASE, *nearest_members])
        assert {n.repo_id for n in found} == set(compare.calls)
        line = f"family: {len(candidates) - len(compare.calls)} more candidates recorded as copies of {BASE} not compared"
        assert all(any(e.startswith(line) and "shares their weights" in e for e in n.evidence) for n in found)


def test_a_family_that_is_no_relation_of_the_query_is_left_after_its_representatives(tmp_path):
    with Store.open(tmp_path / "n.db") as store:
        base = family(store, 20)
        compare = Recording(dict.fromkeys([BASE] + [f"org/ft-{i}" for i in range(20)], "same-architecture"))
        found = nearest(store, fine_tune(base, 999, "new/model"), k=5, compare=compare)
        assert len(compare.calls) == 1 + FAMILY_NEAREST
        assert all(any("shares no weights with them" in e for e in n.evidence) for n in found)


def test_representatives_that_disagree_send_the_other_members_to_the_comparisons(tmp_path):
    with Store.open(tmp_path / "d.db") as store:
        base = family(store, 20)
        query = fine_tune(base, 999, "new/ft")
        candidates = [c.repo_id for c in store.candidates(query, limit=15)]
        nearest_member = next(r for r in candidates if r != BASE)
        # The nearest member is not a copy while the original is: the family cannot be judged by them.
        compare = Recording({nearest_member: "same-architecture"})
        found = nearest(store, query, k=5, compare=compare)
        # The original and the two nearest members (two copies of three), then the other members in
        # index order until k = 5 copies.
        later = [r for r in candidates if r != BASE][FAMILY_NEAREST:]
        assert compare.calls[1 + FAMILY_NEAREST:] == later[:3]
        assert not any(e.startswith("family:") for n in found for e in n.evidence)


def test_a_candidate_with_identical_sampled_values_is_always_compared(tmp_path):
    with Store.open(tmp_path / "i.db") as store:
        base = family(store, 20)
        twin = store.load_fingerprint(store.find_fingerprint("org/ft-17").id)
        query = replace(twin, source="new/reupload")  # the same sampled values: an identity key
        compare = Recording()
        nearest(store, query, k=5, compare=compare)
        assert "org/ft-17" in compare.calls and len(compare.calls) <= 2 + FAMILY_NEAREST


def test_unrecorded_look_alikes_are_each_compared(tmp_path):
    """Without recorded copy relations there is no family to stand for: an unrelated model compares
    every candidate (no copy among them to stop at)."""
    with Store.open(tmp_path / "u.db") as store:
        base = small_fp(1)
        names = [f"org/ft-{i}" for i in range(20)]
        for i, name in enumerate(names):
            store.add_fingerprint(name, "s", fine_tune(base, i, name))
        compare = Recording(dict.fromkeys(names, "same-architecture"))
        nearest(store, fine_tune(base, 999, "new/model"), k=5, compare=compare)
        assert len(compare.calls) == 15
