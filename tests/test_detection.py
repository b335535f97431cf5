"""Every derived MiniLM variant is detected, with its kind; no independent control is flagged.

The variants (tests/variants.py) are real weights: noise, renames, casts, pruning, vocabulary
extension, function-preserving permutations, real fine-tuning steps, combinations, and
independent same-architecture controls. The first run builds them (~150 s, cached).
"""

from __future__ import annotations

import re
from itertools import combinations

import pytest

from fingerprints.compare import compare_fingerprints
from fingerprints.engine import fingerprint_model
from fingerprints.reader import LocalFolderReader
from fingerprints.weights import TENSOR_BYTE_BUDGET
from variants import MERGE_WEIGHT, UNSTORED_MERGE_WEIGHT, VARIANTS

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]  # a cold variant cache trains three models first

DERIVED = {"identical", "weights-derived"}


@pytest.fixture(scope="module")
def fingerprints(variants, minilm_dir):
    fps = {name: fingerprint_model(LocalFolderReader(path)) for name, path in variants.items()}
    fps[None] = fingerprint_model(LocalFolderReader(minilm_dir))
    return fps


def compare_variant(fingerprints, name):
    spec = VARIANTS[name]
    partner = fingerprints[spec.partner] if spec.partner else None
    return compare_fingerprints(fingerprints[spec.reference], fingerprints[name], second_parent=partner)


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_variant_verdict_and_kinds(fingerprints, name):
    spec = VARIANTS[name]
    result = compare_variant(fingerprints, name)
    assert result.verdict == spec.expected, result.evidence
    assert set(spec.kinds) <= set(result.kinds), (result.kinds, result.evidence)
    assert fingerprints[name].weights.tensor_bytes_read <= TENSOR_BYTE_BUDGET
    if spec.expected in DERIVED:
        assert result.confidence >= 0.8 and result.score >= 0.7
    else:
        assert result.score < 0.1


# Variants that combine several transformations; every other derived variant is one.
COMBINATIONS = {"noise-rename-cast", "copy-of-finetune-with-noise"}


def test_exact_kinds_for_single_transformations(fingerprints):
    """Each single transformation is named exactly: a cast is not noise, a rescaling not a fine-tune."""
    single = [n for n, s in VARIANTS.items() if s.expected == "weights-derived" and n not in COMBINATIONS]
    assert len(single) >= 20
    wrong = {}
    for name in single:
        result = compare_variant(fingerprints, name)
        if set(result.kinds) != set(VARIANTS[name].kinds):
            wrong[name] = (result.kinds, result.evidence[-1])
    assert not wrong, wrong


def test_every_kind_has_its_evidence_line(fingerprints):
    lines = {
        "rescale-heads": "rescaled: ", "lora-merge": "low-rank update suspected: only 12 matrices changed", "merge-independent": "merge: B = 0.50 × A + 0.50 × ",
        "merge-30-70": "merge: second parent not in index; estimated weight α ≈ 0.70",
        "depth-upscale": "depth up-scaled: ", "prune-heads": "num_heads 12 → 10", "vocab-prune": "(pruned)",
        "vocab-replaced": "vocabulary: replaced", "permute-hidden": "hidden dimension permuted",
        "cast-bf16": "differences are rounding only", "finetune-heavy": "differences look like training",
        "noise-0.1": "differences look like added noise", "permute-neurons": "neurons permuted",
    }
    for name, line in lines.items():
        evidence = "\n".join(compare_variant(fingerprints, name).evidence)
        assert line in evidence, (name, evidence)


@pytest.mark.parametrize("name, weight", [("merge-independent", MERGE_WEIGHT), ("merge-30-70", UNSTORED_MERGE_WEIGHT)])
def test_a_merge_without_its_second_parent_is_a_merge_with_its_weight_estimated(fingerprints, name, weight):
    result = compare_fingerprints(fingerprints[None], fingerprints[name])  # the second parent not given
    assert result.verdict == "weights-derived" and result.kinds == ["merge"], result.evidence
    line = next(e for e in result.evidence if e.startswith("merge: "))
    estimated = float(re.search(r"second parent not in index; estimated weight α ≈ ([0-9.]+)", line).group(1))
    assert abs(estimated - weight) <= 0.1, line
    assert abs(result.weights["merge_estimate"]["weight"] - weight) <= 0.1


def test_noise_and_training_are_not_merges(fingerprints):
    for name, kind in (("noise-0.1", "noise"), ("noise-1.0", "noise"), ("finetune-light", "fine-tune"),
                       ("finetune-heavy", "fine-tune"), ("copy-of-finetune-with-noise", "noise")):
        result = compare_variant(fingerprints, name)
        assert kind in result.kinds and "merge" not in result.kinds, (name, result.evidence)


def test_independent_controls_never_match_each_other(fingerprints):
    controls = [n for n, s in VARIANTS.items() if s.expected not in DERIVED]
    for a, b in combinations(controls, 2):
        result = compare_fingerprints(fingerprints[a], fingerprints[b])
        assert result.verdict not in DERIVED, (a, b, result.evidence)


def test_evidence_names_tokens_tensors_and_layers(fingerprints):
    copied = compare_fingerprints(fingerprints["vocab-extend"], fingerprints["tokenizer-copy-independent-weights"])
    assert "<|hubwatch_slice|>" in "\n".join(copied.evidence)  # the shared rare special tokens are named
    assert copied.tokenizer["shared_rare_special_tokens"]
    result = compare_fingerprints(fingerprints["finetune-heavy"], fingerprints["copy-of-finetune-with-noise"])
    text = "\n".join(result.evidence)
    assert "rows paired by token string" in text and "layers: 6 matched" in text
    data = result.to_dict()
    assert {"verdict", "confidence", "config", "tokenizer", "weights", "evidence"} <= set(data)
    assert data["weights"]["layers"] and data["weights"]["bytes_read"]["b"] > 0
    assert all("similarity" in t for t in data["weights"]["tensors"])


def test_cli_compare_json_and_plot(variants, minilm_dir, tmp_path, capsys):
    import json

    from bot.cli import main

    plot = tmp_path / "evidence.png"
    assert main(["compare", str(minilm_dir), str(variants["noise-rename-cast"]), "--json", "--plot", str(plot)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["verdict"] == "weights-derived" and {"rename", "cast", "noise"} <= set(out["kinds"])
    assert out["weights"]["score"] > 0.9 and len(out["weights"]["layers"]) == 6
    assert plot.read_bytes().startswith(b"\x89PNG")
