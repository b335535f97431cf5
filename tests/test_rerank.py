"""Re-ranking in nearest: which candidates it compares, and how often."""

from __future__ import annotations

from dataclasses import replace


from fingerprints.compare import Comparison, compare_fingerprints
from fingerprints.sketch import SKETCH_KIND, SKETCH_SCREEN_MIN
from store import Store
from store.nearest import nearest
from store.rows import TIER_COMPACT
from store_samples import fine_tune, small_fp


class Recording:
    """A compare that says ``verdicts[source]`` (default: same-architecture) and remembers its calls."""

    def __init__(self, verdicts: dict[str, str]):
        self.verdicts = verdicts
        self.calls: list[str] = []

    def __call__(self, reference, suspect) -> Comparison:
        self.calls.append(reference.source)
        verdict = self.verdicts.get(reference.source, "same-architecture")
        return Comparison(reference.source, suspect.source, verdict, 0.9, 0.9 if verdict == "weights-derived" else 0.1,
                          [], [f"stub: {verdict}"], {}, {}, {})


def family(tmp_path, members: int):
    base = small_fp(1)
    store = Store.open(tmp_path / "h.db")
    for i in range(members):
        store.add_fingerprint(f"org/ft-{i}", "s", fine_tune(base, i, f"ft-{i}"))
    return store, base


def test_re_ranking_stops_once_k_copies_are_found(tmp_path):
    store, base = family(tmp_path, 12)
    with store:
        query = fine_tune(base, 99, "query")
        order = [c.repo_id.split("/")[1] for c in store.candidates(query, limit=15)]
        everyone = Recording({name: "weights-derived" for name in order})
        loaded = []
        load = store.load_fingerprint
        store.load_fingerprint = lambda fid: loaded.append(fid) or load(fid)
        found = nearest(store, query, k=3, compare=everyone)
        # Only the first three in index order: a later copy could only tie them in verdict. The
        # others (stored in full) are not even read from the store.
        assert everyone.calls == order[:3]
        assert len(loaded) == 3
        assert sorted(n.repo_id for n in found) == sorted(f"org/{name}" for name in order[:3])

        # Candidates that are not copies do not count: comparing goes on until three copies are found.
        some = Recording({name: "weights-derived" for name in order[2:7:2]})
        found = nearest(store, query, k=3, compare=some)
        assert some.calls == order[:7]
        assert [n.verdict for n in found] == ["weights-derived"] * 3


def test_fewer_copies_than_k_compare_every_candidate(tmp_path):
    store, base = family(tmp_path, 12)
    with store:
        query = fine_tune(base, 99, "query")
        none = Recording({})
        found = nearest(store, query, k=5, compare=none)
        assert len(none.calls) == 12 and len(set(none.calls)) == 12
        assert len(found) == 5 and {n.verdict for n in found} == {"same-architecture"}


def test_identical_sampled_values_are_compared_even_after_k_copies(tmp_path):
    store, base = family(tmp_path, 6)
    with store:
        reupload = replace(base, source="reupload")
        store.add_fingerprint("org/reupload", "s", reupload)
        query = replace(base, source="query")  # same sampled values as org/reupload
        cands = store.candidates(query, limit=15)
        assert cands[0].repo_id == "org/reupload" and cands[0].identity_evidence
        everyone = Recording({c.repo_id.split("/")[1]: "weights-derived" for c in cands})
        nearest(store, query, k=1, compare=everyone)
        assert everyone.calls == ["reupload"]


def test_a_screened_out_compact_candidate_is_compared_once(tmp_path):
    with Store.open(tmp_path / "h.db") as store:
        store.add_fingerprint("org/other", "s", small_fp(2), tier=TIER_COMPACT)
        counting = Recording({})

        def compare(reference, suspect):
            counting(reference, suspect)
            return compare_fingerprints(reference, suspect)

        [n] = nearest(store, replace(small_fp(3), source="query"), k=1, compare=compare)
    assert counting.calls == ["test/2"]  # the screen's config-and-tokenizer comparison, reused
    assert any(f"below {SKETCH_SCREEN_MIN[SKETCH_KIND]}" in line for line in n.evidence)
