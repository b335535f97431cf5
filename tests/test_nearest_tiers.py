"""Nearest matches against compact fingerprints: the sketch screen, Hub re-reads, the process pool."""

from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor

import pytest

from fingerprints.engine import fingerprint_model
from store.errors import RefetchError
from fingerprints.reader import LocalFolderReader
from store import Store
from store.nearest import nearest
from store.rows import TIER_COMPACT, TIER_FULL


@pytest.fixture(scope="module")
def fps(minilm_dir, variants):
    wanted = ("noise-0.3", "fresh-init-seed1")
    out = {name: fingerprint_model(LocalFolderReader(variants[name])) for name in wanted}
    out["base"] = fingerprint_model(LocalFolderReader(minilm_dir))
    return out


@pytest.fixture
def compact_base(tmp_path, fps):
    with Store.open(tmp_path / "h.db") as store:
        fid, _ = store.add_fingerprint("org/base", "sha-base", fps["base"], tier=TIER_COMPACT)
        yield store, fid


def test_a_copy_of_a_compact_model_is_confirmed_on_weights_re_read_from_the_hub(compact_base, fps):
    store, fid = compact_base
    asked = []

    def refetch(repo_id, sha):
        asked.append((repo_id, sha))
        return fps["base"]

    [n] = nearest(store, fps["noise-0.3"], k=1, refetch=refetch)
    assert asked == [("org/base", "sha-base")]
    assert n.verdict == "weights-derived" and "noise" in n.kinds
    assert not any("not compared" in line for line in n.evidence)
    # It matched: its full detail is kept from now on.
    assert store.get_fingerprint(fid).tier == TIER_FULL
    assert store.load_fingerprint(fid).weights.embedding is not None


def test_without_hub_access_a_screened_compact_model_is_not_called_a_copy_and_says_why(compact_base, fps):
    store, fid = compact_base
    [n] = nearest(store, fps["noise-0.3"], k=1)
    assert n.verdict == "not-comparable"
    assert any("not compared" in line and "sketch cosine 0.9" in line for line in n.evidence)
    assert store.get_fingerprint(fid).tier == TIER_COMPACT

    def failing(repo_id, sha):
        raise RefetchError("404 repo deleted")

    [n] = nearest(store, fps["noise-0.3"], k=1, refetch=failing)
    assert any("re-reading failed: 404 repo deleted" in line for line in n.evidence)


def test_an_independent_model_does_not_re_read_compact_ones(compact_base, fps):
    store, _ = compact_base

    def refetch(repo_id, sha):
        raise AssertionError("an independent model passed the sketch screen")

    [n] = nearest(store, fps["fresh-init-seed1"], k=1, refetch=refetch)
    assert n.verdict == "not-comparable"
    not_compared = [line for line in n.evidence if line.startswith("weights: not compared")]
    assert len(not_compared) == 1 and "stored compact" in not_compared[0] and "below 0.6" in not_compared[0]


@pytest.mark.slow
def test_comparisons_in_a_process_pool_give_the_same_neighbours(tmp_path, fps, monkeypatch):
    with Store.open(tmp_path / "h.db") as store:
        store.add_fingerprint("org/base", "s", fps["base"])
        store.add_fingerprint("org/indep", "s", fps["fresh-init-seed1"])
        serial = nearest(store, fps["noise-0.3"], k=2)
        with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as pool:
            # The workers read the stored candidates themselves (spawned: this patch is not theirs).
            monkeypatch.setattr(Store, "load_fingerprint", lambda *a: pytest.fail("candidate decoded here"))
            pooled = nearest(store, fps["noise-0.3"], k=2, pool=pool)
    assert [(n.repo_id, n.verdict, n.score, n.evidence) for n in pooled] == \
        [(n.repo_id, n.verdict, n.score, n.evidence) for n in serial]
    assert serial[0].repo_id == "org/base" and serial[0].verdict == "weights-derived"
