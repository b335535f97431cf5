"""The sketch kinds (fingerprints/sketch.py) on the MiniLM variants: the screen separates copies from
independent models in the kind new rows store, whatever the copy did to the vocabulary."""

from __future__ import annotations

import pytest
from variants import VARIANTS

from fingerprints.engine import fingerprint_model
from fingerprints.facts import DERIVED_VERDICTS
from fingerprints.reader import LocalFolderReader
from fingerprints.sketch import SKETCH_KIND, SKETCH_KINDS, SKETCH_ORDERED, SKETCH_SCREEN_MIN, sketch_vector

VOCABULARY_CHANGED = ("vocab-prune", "vocab-replaced")


@pytest.fixture(scope="module")
def fps(minilm_dir, variants):
    out = {name: fingerprint_model(LocalFolderReader(path)) for name, path in variants.items()}
    out["base"] = fingerprint_model(LocalFolderReader(minilm_dir))
    return out


def cosine(a, b, kind=SKETCH_KIND) -> float:
    return float(sketch_vector(a, kind) @ sketch_vector(b, kind))


def test_every_variant_is_on_its_side_of_the_screen(fps):
    for name, spec in VARIANTS.items():
        reference = fps[spec.reference or "base"]
        if spec.expected in DERIVED_VERDICTS:
            assert cosine(reference, fps[name]) >= SKETCH_SCREEN_MIN[SKETCH_KIND], name
    independent = [name for name, spec in VARIANTS.items() if spec.expected not in DERIVED_VERDICTS]
    for i, a in enumerate(independent):
        for b in independent[i + 1:] + list(VOCABULARY_CHANGED):
            assert cosine(fps[a], fps[b]) < SKETCH_SCREEN_MIN[SKETCH_KIND], (a, b)


@pytest.mark.parametrize("name", VOCABULARY_CHANGED)
def test_the_ordered_kind_missed_copies_under_another_vocabulary(fps, name):
    """Why the pairs kind exists: the ordered kind put these under its screen."""
    assert cosine(fps["base"], fps[name], SKETCH_ORDERED) < SKETCH_SCREEN_MIN[SKETCH_ORDERED]


def test_a_sketch_is_unit_norm_in_every_kind_and_none_is_left_in_a_compact_fingerprint(fps):
    """A compact row cannot be sketched again: the store keeps each row's sketch with its kind."""
    for kind in SKETCH_KINDS:
        assert sketch_vector(fps["base"], kind) @ sketch_vector(fps["base"], kind) == pytest.approx(1.0, abs=1e-5)
        assert not sketch_vector(fps["base"].compact(), kind).any()
    with pytest.raises(ValueError, match="sketch kind"):
        sketch_vector(fps["base"], "unknown")
