"""Rotations, token spelling conventions, the sliced-model crash and exact kinds across formats.

SmolLM2 cases use tests/smollm.py's real Llama-family fixtures: a rotation of the residual stream
with folded RMSNorm gains (QuaRot/SpinQuant), the same with 72 of 576 directions deleted
(SliceGPT), the rotated body under a new tokenizer (no token pairs the embeddings), a merge with
an equal-norm independent model, the real GGUF against its Hugging Face conversion, and
independent controls. MiniLM cases write GGUFs the way llama.cpp writes BERT models.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest

from fingerprints.compare import compare_fingerprints
from fingerprints.deferred_import import DeferredModule
from fingerprints.engine import fingerprint_model
from fingerprints.facts import HiddenTransform
from fingerprints.reader import LocalFolderReader
from fingerprints.tokenizer import BYTE_LEVEL, SENTENCEPIECE, WORDPIECE, canonical_tokens, token_convention
from variants import WEIGHTS_FILE, llamacpp_bert_token, permute_everything, write_bert_gguf

smollm = DeferredModule("smollm")  # loads torch: with the first test that needs it, not at collection


# ---- token spellings --------------------------------------------------------------------------

def test_one_canonical_spelling_across_conventions():
    wordpiece = ["[CLS]", "the", "##ing", "play"] * 10
    llamacpp = [llamacpp_bert_token(t) for t in wordpiece]
    assert llamacpp[:4] == ["[CLS]", "▁the", "ing", "▁play"]
    assert token_convention(wordpiece) == WORDPIECE and token_convention(llamacpp) == SENTENCEPIECE
    assert canonical_tokens(wordpiece) == canonical_tokens(llamacpp)
    assert canonical_tokens(wordpiece)[:4] == ["[CLS]", " the", "ing", " play"]
    byte_level = ["Ġthe", "ing", "Ċ", "<|endoftext|>", "Ġplay"] * 10
    assert token_convention(byte_level) == BYTE_LEVEL
    assert canonical_tokens(byte_level)[:5] == [" the", "ing", "\n", "<|endoftext|>", " play"]
    assert canonical_tokens(["▁the", "ing", "<s>"] * 10)[:3] == [" the", "ing", "<s>"]


# ---- MiniLM as llama.cpp writes it ----------------------------------------------------------------

@pytest.fixture(scope="module")
def minilm_fp(minilm_dir):
    return fingerprint_model(LocalFolderReader(minilm_dir))


def minilm_vocab(minilm_dir) -> list[str]:
    return (minilm_dir / "vocab.txt").read_text(encoding="utf-8").splitlines()


@pytest.mark.slow  # quantising MiniLM's matrices: ~10 s
def test_gguf_of_a_permuted_model_pairs_with_its_safetensors_source(tmp_path, minilm_dir, minilm_fp):
    from safetensors.torch import load_file  # loads torch, which the fast tests here never need

    tensors = permute_everything(load_file(str(minilm_dir / WEIGHTS_FILE)))
    write_bert_gguf(tensors, minilm_vocab(minilm_dir), tmp_path / "minilm-permuted-f16.gguf", "F16")
    result = compare_fingerprints(minilm_fp, fingerprint_model(LocalFolderReader(tmp_path)))
    text = "\n".join(result.evidence)
    assert result.verdict == "weights-derived", text
    assert {"permute-hidden", "permute-heads", "permute-neurons", "rename", "cast"} == set(result.kinds), text
    assert "once token spellings are normalised (wordpiece vs sentencepiece)" in text
    assert result.score > 0.99


@pytest.mark.slow  # quantising MiniLM's matrices: ~10 s
def test_q4_0_gguf_is_quantisation_not_identical_values(tmp_path, minilm_dir, minilm_fp):
    from safetensors.torch import load_file  # loads torch

    write_bert_gguf(load_file(str(minilm_dir / WEIGHTS_FILE)), minilm_vocab(minilm_dir), tmp_path / "m-q4_0.gguf", "Q4_0")
    result = compare_fingerprints(minilm_fp, fingerprint_model(LocalFolderReader(tmp_path)))
    text = "\n".join(result.evidence)
    assert result.verdict == "weights-derived" and set(result.kinds) == {"rename", "quantize"}, text
    assert "numerically identical" not in text and "rounding only" not in text
    assert "quantised to Q4_0" in text and "differences are quantisation error" in text


# ---- the cascade ------------------------------------------------------------------------------

@pytest.mark.slow  # fingerprints three MiniLM variants
def test_the_cascade_aligns_columns_only_when_the_cheap_scores_cannot_decide(variants, minilm_fp):
    def embedding(name):
        return compare_fingerprints(minilm_fp, fingerprint_model(LocalFolderReader(variants[name]))).weights["embedding"]

    for name in ("finetune-heavy", "independent-trained"):  # decided by the direct rows / by the Gram
        e = embedding(name)
        assert e["probe"]["columns"] == 0 and e["aligned_correlation"] is None, (name, e)
    e = embedding("permute-hidden")
    assert e["transform"] == "permutation" and e["probe"]["best_correlation"] > 0.9 and e["alignment_z"] > 8


def test_shared_token_geometry_that_cannot_decide_asks_for_the_deep_comparison(minilm_fp):
    """Half a rotated copy's token geometry over independent rows: neither derived nor independent."""
    rng = np.random.default_rng(0)
    suspect = copy.deepcopy(minilm_fp)
    rows = suspect.weights.embedding.values.astype(np.float64)
    rotation, _ = np.linalg.qr(rng.standard_normal((rows.shape[1], rows.shape[1])))
    independent = rng.standard_normal(rows.shape) * rows.std()
    suspect.weights.embedding.values = (0.75 * rows @ rotation + independent).astype(np.float32)
    for s in suspect.weights.samples:
        s.values = rng.standard_normal(s.values.shape).astype(np.float32)
    suspect.weights.sample_digest = "changed"
    result = compare_fingerprints(minilm_fp, suspect)
    assert result.verdict not in ("identical", "weights-derived")
    assert result.needs_deep and result.to_dict()["needs_deep"]
    assert any(line.startswith("needs deep comparison: token geometry agrees") for line in result.evidence)


# ---- SmolLM2: rotations, SliceGPT, GGUF <-> HF --------------------------------------------------

@pytest.fixture(scope="module")
def smollm_fps(smollm2, smollm2_gguf):
    fps = {name: fingerprint_model(LocalFolderReader(path)) for name, path in smollm2.items() if name != "smollm2-moe"}
    fps["gguf"] = fingerprint_model(LocalFolderReader(smollm2_gguf.parent))
    return fps


@pytest.mark.slow  # fingerprints seven SmolLM2 models
def test_rotation_with_folded_norms_is_derived_and_named(smollm_fps):
    result = compare_fingerprints(smollm_fps["smollm2"], smollm_fps["smollm2-rotated"])
    text = "\n".join(result.evidence)
    assert result.verdict == "weights-derived" and result.kinds == ["rotate"], text
    assert result.score > 0.99 and result.weights["embedding"]["transform"] == HiddenTransform.ROTATION
    assert "hidden dimension rotated: token-token similarity kept" in text
    assert "permuted" not in text  # the false "574 of 576 dims moved"


@pytest.mark.slow
def test_slicegpt_is_rotate_and_prune_with_the_deleted_directions(smollm_fps):
    result = compare_fingerprints(smollm_fps["smollm2"], smollm_fps["smollm2-sliced"])
    text = "\n".join(result.evidence)
    assert result.verdict == "weights-derived" and set(result.kinds) == {"rotate", "prune"}, text
    assert "72 directions deleted" in text and "hidden_size 576 → 504" in text


@pytest.mark.slow
def test_comparing_a_sliced_model_is_a_verdict_not_a_crash(smollm2, capsys):
    from bot.cli import main

    assert main(["compare", str(smollm2["smollm2"]), str(smollm2["smollm2-sliced"])]) == 0
    verdict = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("verdict:"))
    assert verdict.startswith("verdict:    weights-derived (") and "rotate" in verdict and "prune" in verdict


@pytest.mark.slow
def test_gguf_and_its_hugging_face_conversion_pair_both_ways(smollm_fps):
    forward = compare_fingerprints(smollm_fps["smollm2"], smollm_fps["gguf"])
    assert forward.verdict == "weights-derived" and set(forward.kinds) == {"rename", "quantize"}, forward.evidence
    assert any(line.startswith("differences are quantisation error") for line in forward.evidence)
    backward = compare_fingerprints(smollm_fps["gguf"], smollm_fps["smollm2"])
    assert backward.verdict == "weights-derived" and set(backward.kinds) == {"rename", "cast"}, backward.evidence


@pytest.mark.slow
def test_independent_controls_are_neither_derived_nor_undecided(smollm_fps):
    for name in ("smollm2-fresh-init", "smollm2-shuffled"):
        result = compare_fingerprints(smollm_fps["smollm2"], smollm_fps[name])
        assert result.verdict == "tokenizer-copied" and not result.needs_deep, (name, result.evidence)
        assert result.score < 0.1


@pytest.mark.slow
def test_rotated_body_under_a_new_tokenizer_is_traced_by_its_row_grams(smollm_fps):
    """No token pairs the embeddings; the readers' row cosines, which a rotation keeps, still trace the body."""
    result = compare_fingerprints(smollm_fps["smollm2"], smollm_fps["smollm2-rotated-vocab-replaced"])
    text = "\n".join(result.evidence)
    assert result.verdict == "weights-derived" and set(result.kinds) == {"rotate", "vocab-replaced"}, text
    assert "embedding: too few shared tokens to align embeddings" in text
    assert "hidden dimension rotated: no embedding rows pair, but the sampled rows of 40 residual-reading matrices" in text
    assert "vocabulary: replaced, 49152 → 32000 tokens" in text
    assert result.weights["rotated_by_row_grams"] and result.score > 0.99


@pytest.mark.slow
def test_independent_models_under_another_tokenizer_are_not_traced_by_row_grams(smollm_fps):
    for name in ("smollm2-fresh-init", "smollm2-shuffled"):
        result = compare_fingerprints(smollm_fps[name], smollm_fps["smollm2-rotated-vocab-replaced"])
        assert result.verdict not in ("identical", "weights-derived"), (name, result.evidence)
        assert not result.weights["rotated_by_row_grams"] and result.weights["row_gram_score"] < 0.5


@pytest.mark.slow
def test_exact_kinds_for_single_smollm2_transformations(smollm_fps):
    wrong = {}
    for name, spec in smollm.SMOLLM_VARIANTS.items():
        if spec.expected != "weights-derived" or name not in smollm_fps:
            continue
        result = compare_fingerprints(smollm_fps["smollm2"], smollm_fps[name])
        if result.verdict != spec.expected or set(result.kinds) != set(spec.kinds):
            wrong[name] = (result.verdict, result.kinds, result.evidence)
    assert not wrong, wrong


@pytest.mark.slow
def test_merge_with_an_equal_norm_model_not_given_is_a_merge_with_its_weight(smollm_fps):
    result = compare_fingerprints(smollm_fps["smollm2"], smollm_fps["smollm2-merge-shuffled"])
    estimate = result.weights["merge_estimate"]
    assert result.verdict == "weights-derived" and result.kinds == ["merge"], result.evidence
    assert abs(estimate["weight"] - smollm.MERGE_SHUFFLED_WEIGHT) <= 0.1 and -0.8 < estimate["delta_cosine"] < -0.6
    assert any(e.startswith("merge: second parent not in index; estimated weight α ≈ 0.50") for e in result.evidence)
