"""Multimodal models compared component by component: a copy of the whole model and an honest
assembly of public parts read differently (real weights: MiniLM's encoder as vision tower, SmolLM2
as language model, LLaVA layout; tests/smollm.py)."""

from __future__ import annotations

import pytest

from fingerprints.compare import compare_fingerprints
from fingerprints.components import LANGUAGE, PROJECTOR, VISION, component_of, components
from fingerprints.engine import fingerprint_model
from fingerprints.reader import LocalFolderReader


@pytest.mark.parametrize("name, expected", [
    ("vision_tower.vision_model.encoder.layers.3.self_attn.q_proj.weight", VISION),
    ("multi_modal_projector.linear_1.weight", PROJECTOR),
    ("language_model.model.layers.0.mlp.up_proj.weight", LANGUAGE),
    ("visual.blocks.5.attn.qkv.weight", VISION),  # Qwen2-VL
    ("visual.merger.mlp.0.weight", PROJECTOR),  # Qwen2-VL's projector lives inside `visual`
    ("vpm.encoder.layers.1.mlp.fc1.weight", VISION),  # MiniCPM-V
    ("resampler.attn.in_proj_weight", PROJECTOR),
    ("model.vision_model.encoder.layers.0.mlp.fc1.weight", VISION),  # Idefics3 / SmolVLM
    ("model.connector.modality_projection.proj.weight", PROJECTOR),
    ("model.text_model.layers.0.self_attn.q_proj.weight", LANGUAGE),
    ("model.layers.0.self_attn.q_proj.weight", LANGUAGE),
])
def test_component_of(name, expected):
    assert component_of(name) == expected


@pytest.fixture(scope="module")
def multimodal(smollm2):
    return {name: fingerprint_model(LocalFolderReader(smollm2[name])) for name in ("mm-original", "mm-copy", "mm-assembly", "smollm2")}


def by_component(comparison):
    return {c["component"]: c for c in comparison.components}


@pytest.mark.slow  # fingerprints three 0.3 GB models
def test_every_component_is_sampled_and_the_embedding_is_the_language_models(multimodal):
    fp = multimodal["mm-original"]
    assert components(fp) == [LANGUAGE, VISION, PROJECTOR]
    assert fp.weights.embedding.tensor == "language_model.model.embed_tokens.weight"
    sampled = {component_of(s.name) for s in fp.weights.samples}
    assert sampled == {LANGUAGE, VISION, PROJECTOR}
    assert {s.layer for s in fp.weights.samples if component_of(s.name) == VISION} - {None} == set(range(6))  # all 6 layers


@pytest.mark.slow
def test_a_copy_of_the_whole_model_has_every_component_derived(multimodal):
    c = compare_fingerprints(multimodal["mm-original"], multimodal["mm-copy"])
    parts = by_component(c)
    assert {p["verdict"] for p in parts.values()} == {"weights-derived"}
    assert "noise" in parts[PROJECTOR]["kinds"]
    assert "partial-reuse" not in c.kinds
    assert any(e.startswith("components: ") and e.endswith("a copy of the whole model") for e in c.evidence)


@pytest.mark.slow
def test_an_assembly_of_public_parts_reads_as_shared_parts_with_a_new_projector(multimodal):
    c = compare_fingerprints(multimodal["mm-original"], multimodal["mm-assembly"])
    parts = by_component(c)
    assert parts[VISION]["verdict"] == "identical" and parts[LANGUAGE]["verdict"] == "identical"
    assert parts[PROJECTOR]["verdict"] in ("same-architecture", "independent")
    assert "partial-reuse" in c.kinds
    line = next(e for e in c.evidence if e.startswith("components: "))
    assert "projector" in line and "new weights" in line and "not a copy of the whole model" in line


@pytest.mark.slow
def test_a_text_model_against_a_multimodal_one_compares_the_language_model(multimodal):
    c = compare_fingerprints(multimodal["smollm2"], multimodal["mm-original"])
    parts = by_component(c)
    assert parts[LANGUAGE]["verdict"] in ("identical", "weights-derived")
    assert parts[VISION]["verdict"] == parts[PROJECTOR]["verdict"] == "absent"
    assert "only in B" in parts[VISION]["note"]
