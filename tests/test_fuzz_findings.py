"""What benchmarks/fuzz.py found: each input once crashed a parser or poisoned the store.

The contract is that hostile model files raise ``InvalidModelError`` (one line, exit code 2) and
nothing else, and that a fingerprint that was computed can be stored and compared.
"""

from __future__ import annotations

import base64
import json

import numpy as np
import pytest

from fingerprints.compare import compare_fingerprints
from fingerprints.config import config_signature, parse_config_json
from fingerprints.engine import fingerprint_model
from fingerprints.errors import InvalidModelError
from fingerprints.model import Fingerprint
from fingerprints.reader import LocalFolderReader
from fingerprints.safetensors_format import checkpoint_shards, parse_header_bytes
from fingerprints.tokenizer import parse_tokenizer_json, parse_vocab_json_and_merges, tokenizer_signature
from fingerprints.untrusted_json import loads

DEEP = b"[" * 5000 + b"]" * 5000
HUGE_INT = b"1" * 5000  # over CPython's 4300-digit int conversion limit: a ValueError, not a JSONDecodeError


@pytest.mark.parametrize("raw", [DEEP, b'{"a": ' + HUGE_INT + b"}", b'{"a": "\xed\xa0\x80"}'],
                         ids=["deep-nesting", "5000-digit-int", "utf8-encoded-surrogate"])
def test_hostile_json_is_a_clean_error_in_every_json_parser(raw):
    with pytest.raises(InvalidModelError, match="config.json is not valid JSON"):
        parse_config_json(raw)
    with pytest.raises(InvalidModelError, match="tokenizer.json is not valid JSON"):
        parse_tokenizer_json(raw)
    with pytest.raises(InvalidModelError, match="vocab.json is not valid JSON"):
        parse_vocab_json_and_merges(raw, None)
    with pytest.raises(InvalidModelError, match="safetensors header is not valid JSON"):
        parse_header_bytes(raw, "model.safetensors", 8 + len(raw), len(raw))
    with pytest.raises(InvalidModelError, match="index.json is malformed"):
        checkpoint_shards(["model.safetensors.index.json"], lambda path: raw)


def test_lone_surrogate_escapes_are_replaced_not_fatal():
    # json.loads accepts "\ud800"; such a string cannot be encoded, so hashing the config raised
    # UnicodeEncodeError. transformers reads the file, so hubwatch must fingerprint it.
    cfg = parse_config_json(b'{"model_type": "bert", "_name_or_path": "x\\ud800", "k\\udc00": ["\\ud83d\\ude00"]}')
    assert cfg == {"model_type": "bert", "_name_or_path": "x\ufffd", "k\ufffd": ["\U0001f600"]}
    assert config_signature(cfg).exact_hash
    vocab = tokenizer_signature(parse_tokenizer_json(
        b'{"model": {"type": "WordPiece", "vocab": {"\\ud800": 0, "a": 1}}}')).vocab
    assert vocab == ["\ufffd", "a"]


def test_what_json_loads_reads_is_still_read():
    assert loads('{"a": 1}'.encode("utf-16")) == {"a": 1}
    assert loads(b'\xef\xbb\xbf{"a": [1.5, NaN]}')["a"][0] == 1.5


def test_a_non_string_dtype_is_a_clean_error():
    header = json.dumps({"w": {"dtype": ["F32"], "shape": [1], "data_offsets": [0, 4]}}).encode()
    with pytest.raises(InvalidModelError, match="unknown dtype"):
        parse_header_bytes(header, "model.safetensors", 8 + len(header) + 4, len(header))


def test_huge_sampled_values_are_stored_finite_and_compare(tmp_path):
    """Values past float16's range (a damaged GGUF's scales) were stored as inf in the fingerprint
    blob; every later comparison with the stored fingerprint then raised ValueError in
    linear_sum_assignment, so each new model near it failed to process, cycle after cycle."""
    from safetensors.numpy import save_file

    rng = np.random.default_rng(0)
    vocab = [f"tok{i}" for i in range(300)]
    (tmp_path / "vocab.txt").write_text("\n".join(vocab) + "\n")
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert", "hidden_size": 32, "vocab_size": 300}))
    emb = rng.normal(size=(300, 32)).astype(np.float32)
    save_file({"embeddings.word_embeddings.weight": emb * 1e6}, str(tmp_path / "model.safetensors"))
    fp = fingerprint_model(LocalFolderReader(tmp_path))
    stored = Fingerprint.from_blob(fp.to_blob())
    assert np.isfinite(stored.weights.embedding.values).all()
    compare_fingerprints(stored, fp)
    compare_fingerprints(fp, stored)
    # A blob written before the fix holds inf: it is read back finite.
    blob = fp.to_dict()
    blob["weights"]["embedding"]["values"]["f16"] = base64.b64encode(
        np.full(stored.weights.embedding.values.shape, np.inf, np.float16).tobytes()).decode()
    old = Fingerprint.from_dict(blob)
    assert np.isfinite(old.weights.embedding.values).all()
    compare_fingerprints(old, fp)

