"""The rank of a merged low-rank update: suspected by the standard comparison, measured by --deep.

The standard budget samples ~6 rows of each MiniLM matrix, fewer than an adapter's rank, so it
sees a merged LoRA by what it left untouched and says the rank is measured by the deep comparison,
which reads whole rows of the changed matrices (fingerprints/deep.py: deepen, update_rank)."""

from __future__ import annotations

import re

import numpy as np
import pytest
from gguf import GGMLQuantizationType
from gguf.quants import dequantize, quantize

from fingerprints.compare import LOW_RANK_GAP_MIN, compare_fingerprints, difference_rank
from fingerprints.deep import deepen
from fingerprints.engine import fingerprint_model
from fingerprints.reader import LocalFolderReader
from variants import LORA_RANK

# As tests/test_deep.py: small enough to stay quick, larger than MiniLM's 12 changed matrices.
SMALL_BUDGET = 12 * 1024 * 1024


def bf16(x: np.ndarray) -> np.ndarray:
    """``x`` rounded to bfloat16 (round to nearest even, as torch casts) by gguf's BF16 codec: no torch to import."""
    bf16_type = GGMLQuantizationType.BF16
    return dequantize(quantize(x.astype(np.float32), bf16_type), bf16_type)


def test_a_rank_16_update_stored_in_bf16_has_rank_16_and_training_has_none():
    rng = np.random.default_rng(0)
    w = rng.normal(0, 0.05, size=(256, 576))
    update = rng.normal(size=(256, 16)) @ rng.normal(size=(16, 576))
    update *= 0.1 * np.linalg.norm(w) / np.linalg.norm(update)  # 10% of the matrix, as variants.merge_lora
    rank, fall = difference_rank(bf16(w + update).astype(np.float64) - bf16(w))
    assert rank == 16 and fall >= LOW_RANK_GAP_MIN
    for change in (rng.normal(0, 0.005, size=w.shape), 0.01 * rng.normal(size=(256, 1)) * w + rng.normal(0, 0.002, size=w.shape)):
        assert difference_rank(bf16(w + change).astype(np.float64) - bf16(w))[0] is None


@pytest.mark.slow  # MiniLM and its merged LoRA fingerprinted, compared and read in depth
def test_merged_lora_rank_is_suspected_by_the_standard_comparison_and_measured_by_deep(variants, minilm_dir):
    reader_a, reader_b = LocalFolderReader(minilm_dir), LocalFolderReader(variants["lora-merge"])
    fa, fb = fingerprint_model(reader_a), fingerprint_model(reader_b)
    standard = compare_fingerprints(fa, fb)
    line = next(e for e in standard.evidence if e.startswith("low-rank update"))
    assert standard.kinds == ["low-rank"]
    assert line.startswith("low-rank update suspected: only 12 matrices changed (attn_q, attn_v)"), line
    assert line.endswith("its rank is not measurable in 6 sampled rows; rank measured by --deep (hubwatch compare --deep)")
    result = deepen(standard, reader_a, fa, reader_b, fb, SMALL_BUDGET, device="cpu")
    text = "\n".join(result.evidence)
    assert f"deep rank: difference of rank {LORA_RANK} in 12 of 12 matrices read (singular values fall" in text, text
    assert re.search(r"fall [0-9]e[0-9]+× after 8; [0-9]+ whole rows of each\)", text), text
    measured = result.weights["update_rank"]
    assert [m["rank"] for m in measured["matrices"]] == [LORA_RANK] * 12
    assert all(m["rows"] > 2 * LORA_RANK for m in measured["matrices"])
    assert 0 < measured["bytes_read"]["a"] <= SMALL_BUDGET // 4 and result.kinds[0] == "low-rank"


@pytest.mark.slow
def test_deep_measures_no_rank_when_no_low_rank_update_is_suspected(variants, minilm_dir):
    reader_a, reader_b = LocalFolderReader(minilm_dir), LocalFolderReader(variants["finetune-heavy"])
    fa, fb = fingerprint_model(reader_a), fingerprint_model(reader_b)
    result = deepen(compare_fingerprints(fa, fb), reader_a, fa, reader_b, fb, SMALL_BUDGET, device="cpu")
    assert "update_rank" not in result.weights and not any(e.startswith("deep rank") for e in result.evidence)
