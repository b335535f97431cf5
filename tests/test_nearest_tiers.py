"""Nearest matches against compact fingerprints: the sketch screen, Hub re-reads, the process pool."""

from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor

import pytest
from variants import WEIGHTS_FILE, permute_everything, write_bert_gguf

from fingerprints.engine import fingerprint_model
from fingerprints.sketch import SKETCH_KIND, SKETCH_ORDERED, SKETCH_SCREEN_MIN, sketch_vector
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
    assert len(not_compared) == 1 and "stored compact" in not_compared[0]
    assert f"below {SKETCH_SCREEN_MIN[SKETCH_KIND]}" in not_compared[0]


@pytest.fixture(scope="module")
def llamacpp_copy(minilm_dir, tmp_path_factory):
    """MiniLM permuted (hidden, heads, neurons) and written as llama.cpp writes a BERT GGUF: its
    vocabulary spelling ("▁word", "##" dropped), F16."""
    from safetensors.torch import load_file  # torch loads here, not when the fast tests are collected

    folder = tmp_path_factory.mktemp("gguf")
    vocab = (minilm_dir / "vocab.txt").read_text(encoding="utf-8").splitlines()
    write_bert_gguf(permute_everything(load_file(str(minilm_dir / WEIGHTS_FILE))), vocab, folder / "m.gguf", "F16")
    return fingerprint_model(LocalFolderReader(folder))


@pytest.mark.parametrize("copy", ["vocab-prune", "vocab-replaced", "llama.cpp spelling"])
def test_a_copy_under_another_vocabulary_passes_the_screen_of_its_compact_original(compact_base, minilm_dir, variants,
                                                                                    llamacpp_copy, fps, copy):
    """The ordered sketch gave these 0.22-0.36, under its 0.6 screen: the compact original was never
    re-read and the copy went unreported (fingerprints/sketch.py)."""
    store, fid = compact_base
    suspect = llamacpp_copy if copy == "llama.cpp spelling" else fingerprint_model(LocalFolderReader(variants[copy]))
    asked = []

    def refetch(repo_id, sha):
        asked.append(repo_id)
        return fps["base"]

    [n] = nearest(store, suspect, k=1, refetch=refetch)
    assert asked == ["org/base"]
    assert n.repo_id == "org/base" and n.verdict == "weights-derived"
    assert store.get_fingerprint(fid).tier == TIER_FULL


def test_a_compact_row_of_an_older_store_is_screened_in_its_own_sketch_kind(compact_base, fps):
    """A row stored before schema 6 keeps its ordered sketch (its samples are gone): the query meets
    it in that kind, under that kind's screen; once re-read in full it is sketched in the current kind."""
    store, fid = compact_base
    store.conn.execute("UPDATE sketches SET kind = ?, vector = ? WHERE fingerprint_id = ?",
                       (SKETCH_ORDERED, sketch_vector(fps["base"], SKETCH_ORDERED).astype("<f4").tobytes(), fid))
    [n] = nearest(store, fps["fresh-init-seed1"], k=1)
    # Copies under another vocabulary score under the older kind's screen: its evidence says so.
    assert (f"below {SKETCH_SCREEN_MIN[SKETCH_ORDERED]}, where no measured copy under its source's vocabulary falls"
            in " ".join(n.evidence))
    [n] = nearest(store, fps["noise-0.3"], k=1, refetch=lambda repo_id, sha: fps["base"])
    assert n.verdict == "weights-derived"
    assert store.sketches_of([fid])[fid][0] == SKETCH_KIND
    store.vectors.refresh(store.conn, "d384", SKETCH_KIND)
    assert store.vectors.search(store.conn, "d384", SKETCH_KIND, sketch_vector(fps["base"]), 1)[0][0] == fid


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
