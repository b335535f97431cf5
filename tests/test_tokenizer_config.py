"""Tokenizer and config parsing across formats and disguises."""

from __future__ import annotations

import base64
import json
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fingerprints.config import config_signature, config_similarity
from fingerprints.errors import FingerprintError, InvalidModelError
from fingerprints.model import rare_special_tokens
from fingerprints.tokenizer import (
    looks_like_tiktoken, minhash, minhash_jaccard, parse_sentencepiece_model, parse_tiktoken,
    parse_tokenizer_json, parse_vocab_json_and_merges, read_tokenizer, tokenizer_signature,
)
import fuzz_targets
from fuzz_targets import _sp_model


def test_sentencepiece_protobuf():
    parsed = parse_sentencepiece_model(_sp_model([("<unk>", 2), ("<s>", 3), ("▁the", 1), ("<my_tag>", 4)]))
    assert parsed.vocab == ["<unk>", "<s>", "▁the", "<my_tag>"]
    assert parsed.special == ["<s>"] and parsed.added == ["<my_tag>"]


def test_sentencepiece_truncated_is_clean_error():
    with pytest.raises(InvalidModelError):
        parse_sentencepiece_model(_sp_model([("▁the", 1)])[:-9])


def test_tiktoken_tokens_match_byte_level_bpe():
    raw = b"\n".join(base64.b64encode(t) + b" " + str(i).encode() for i, t in enumerate([b"!", b" the", b"\xff"]))
    assert looks_like_tiktoken(raw)
    parsed = parse_tiktoken(raw, "tokenizer.model")
    # tiktoken bytes are written in GPT-2's byte alphabet, as tokenizer.json writes them
    assert parsed.vocab == ["!", "Ġthe", "ÿ"]


def test_vocab_json_and_merges_equal_tokenizer_json():
    vocab = {"a": 0, "b": 1, "ab": 2}
    a = parse_vocab_json_and_merges(json.dumps(vocab).encode(), b"#version: 0.2\na b\n")
    b = parse_tokenizer_json(json.dumps({"model": {"type": "BPE", "vocab": vocab, "merges": ["a b"]}}).encode())
    sa, sb = tokenizer_signature(a), tokenizer_signature(b)
    assert sa.vocab_hash == sb.vocab_hash and sa.merges_hash == sb.merges_hash


def test_unigram_and_added_tokens():
    data = {"model": {"type": "Unigram", "vocab": [["<pad>", 0.0], ["▁x", -1.0]]},
            "added_tokens": [{"id": 2, "content": "<|slice|>", "special": True}]}
    sig = tokenizer_signature(parse_tokenizer_json(json.dumps(data).encode()))
    assert sig.vocab == ["<pad>", "▁x", "<|slice|>"]
    assert rare_special_tokens(sig) == ["<|slice|>"]


def test_common_special_tokens_are_not_rare():
    data = {"model": {"type": "BPE", "vocab": {"a": 0}, "merges": []},
            "added_tokens": [{"id": 1, "content": "<|reserved_special_token_7|>", "special": True},
                             {"id": 2, "content": "<|eot_id|>", "special": True}]}
    assert rare_special_tokens(tokenizer_signature(parse_tokenizer_json(json.dumps(data).encode()))) == []


def test_minhash_estimates_jaccard():
    a = [f"tok{i}" for i in range(2000)]
    b = a[:1500] + [f"other{i}" for i in range(500)]  # true Jaccard 1500/2500 = 0.6
    assert abs(minhash_jaccard(minhash(a), minhash(b)) - 0.6) < 0.12


def test_minilm_vocab_txt_and_tokenizer_json_agree(minilm_dir):
    files = ["vocab.txt"]
    sig_txt = read_tokenizer(files, lambda p: (minilm_dir / p).read_bytes())
    sig_json = read_tokenizer(["tokenizer.json"], lambda p: (minilm_dir / p).read_bytes())
    assert sig_txt.vocab_hash == sig_json.vocab_hash
    assert sig_json.standard_vocabulary == "bert-base-uncased"


def test_config_renamed_keys_compare_equal():
    a = config_signature({"model_type": "llama", "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "vocab_size": 100})
    b = config_signature({"model_type": "mymodel", "architectures": ["X"], "d_model": 64, "n_layer": 2, "n_head": 4, "n_vocab": 100})
    assert a.arch_hash == b.arch_hash
    assert set(b.renamed_keys) == {"d_model", "n_layer", "n_head", "n_vocab"}
    assert config_similarity(a, b)[0] == 1.0


def test_nested_text_config():
    sig = config_signature({"model_type": "llava", "text_config": {"hidden_size": 4096, "num_hidden_layers": 32}})
    assert sig.text_config_path == "text_config" and sig.fields["hidden_size"] == 4096


# --- bounded fuzzing (the long run is benchmarks/fuzz_parsers.py) ------------------------------

FUZZ_TARGETS = fuzz_targets.build_targets()
SEED_POOL = [data for t in FUZZ_TARGETS.values() for s in t.seeds for data in s.values()]


def _only_clean_errors(target: str, seed: int) -> None:
    files, _ = fuzz_targets.mutate_input(random.Random(seed), FUZZ_TARGETS[target], SEED_POOL)
    try:
        FUZZ_TARGETS[target].run(files)
    except FingerprintError:
        pass


@pytest.mark.slow  # hypothesis fuzzing
@settings(max_examples=300, deadline=None)
@given(seed=st.integers(0, 2**32 - 1))
def test_fuzzed_sentencepiece_models_only_raise_clean_errors(seed):
    _only_clean_errors("sentencepiece", seed)


@pytest.mark.slow  # hypothesis fuzzing
@settings(max_examples=150, deadline=None)
@given(target=st.sampled_from(["tokenizer.json", "vocab.txt", "vocab.json+merges", "tiktoken"]), seed=st.integers(0, 2**32 - 1))
def test_fuzzed_tokenizer_files_only_raise_clean_errors(target, seed):
    _only_clean_errors(target, seed)


@pytest.mark.parametrize("added", [1.5, 7, True])
def test_added_tokens_not_a_list_is_clean_error(added):
    data = {"model": {"type": "BPE", "vocab": {"a": 0}, "merges": []}, "added_tokens": added}
    with pytest.raises(InvalidModelError, match="added_tokens must be a list"):
        parse_tokenizer_json(json.dumps(data).encode())
