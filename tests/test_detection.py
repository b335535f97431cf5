"""Every derived MiniLM variant is detected, with its kind; no independent control is flagged.

The variants (tests/variants.py) are real weights: noise, renames, casts, pruning, vocabulary
extension, function-preserving permutations, real fine-tuning steps, combinations, and
independent same-architecture controls. The first run builds them (~150 s, cached).
"""

from __future__ import annotations

from itertools import combinations

import pytest

from fingerprints.compare import compare_fingerprints
from fingerprints.engine import fingerprint_model
from fingerprints.reader import LocalFolderReader
from fingerprints.weights import TENSOR_BYTE_BUDGET
from variants import VARIANTS

pytestmark = pytest.mark.timeout(1200)  # a cold variant cache trains three models first

DERIVED = {"identical", "weights-derived"}


@pytest.fixture(scope="module")
def fingerprints(variants, minilm_dir):
    fps = {name: fingerprint_model(LocalFolderReader(path)) for name, path in variants.items()}
    fps[None] = fingerprint_model(LocalFolderReader(minilm_dir))
    return fps


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_variant_verdict_and_kinds(fingerprints, name):
    spec = VARIANTS[name]
    result = compare_fingerprints(fingerprints[spec.reference], fingerprints[name])
    assert result.verdict == spec.expected, result.evidence
    assert set(spec.kinds) <= set(result.kinds), (result.kinds, result.evidence)
    assert fingerprints[name].weights.tensor_bytes_read <= TENSOR_BYTE_BUDGET
    if spec.expected in DERIVED:
        assert result.confidence >= 0.8 and result.score >= 0.7
    else:
        assert result.score < 0.1


def test_exact_kinds_for_single_transformations(fingerprints):
    """No spurious kinds: a cast is not noise, dropping layers is not a rename."""
    for name in ("cast-bf16", "cast-fp16", "prune-layers", "reupload-renamed", "permute-hidden", "noise-0.1"):
        spec = VARIANTS[name]
        result = compare_fingerprints(fingerprints[spec.reference], fingerprints[name])
        assert set(result.kinds) == set(spec.kinds), (name, result.kinds)


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
