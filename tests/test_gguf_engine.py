"""GGUF checkpoints through the whole engine: fingerprinted like safetensors, compared across formats."""

from __future__ import annotations

import pytest
from gguf import GGMLQuantizationType

from fingerprints.compare import compare_fingerprints
from fingerprints.engine import choose_gguf_file, fingerprint_model
from fingerprints.reader import LocalFolderReader
from fingerprints.weights import TENSOR_BYTE_BUDGET
from gguf_samples import minilm_gguf_tensors, minilm_kv, write_gguf

pytestmark = pytest.mark.slow  # fingerprints MiniLM GGUFs


@pytest.fixture(scope="module")
def minilm_fp(minilm_dir):
    return fingerprint_model(LocalFolderReader(minilm_dir))


@pytest.mark.parametrize("qtype, kind", [(GGMLQuantizationType.F16, "cast"), (GGMLQuantizationType.Q8_0, "quantize")])
def test_gguf_conversion_is_weights_derived(tmp_path, minilm_fp, qtype, kind):
    write_gguf(tmp_path / f"minilm-{qtype.name}.gguf", "bert", minilm_kv, minilm_gguf_tensors(qtype))
    fp = fingerprint_model(LocalFolderReader(tmp_path))
    assert fp.weights.format == "gguf" and fp.config.fields["hidden_size"] == 384
    assert fp.tokenizer.vocab_hash == minilm_fp.tokenizer.vocab_hash  # GGUF token list == vocab.txt
    assert fp.weights.tensor_bytes_read <= TENSOR_BYTE_BUDGET
    result = compare_fingerprints(minilm_fp, fp)
    assert result.verdict == "weights-derived", result.evidence
    assert result.score > 0.99
    assert set(result.kinds) == {"rename", kind}


def test_choose_gguf_prefers_least_lossy_first_shard():
    files = ["m-Q4_K_M.gguf", "m-Q8_0.gguf", "m-f16-00002-of-00002.gguf", "m-f16-00001-of-00002.gguf", "mmproj-f16.gguf"]
    assert choose_gguf_file(files) == "m-f16-00001-of-00002.gguf"
    assert choose_gguf_file(["README.md"]) is None
