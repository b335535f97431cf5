"""The sparse big-model builders: real sizes on paper, headers that parse, almost nothing on disk."""

from __future__ import annotations

import json
import math
import struct

import numpy as np
import pytest

from bigmodels import (
    GGUF_7B_Q4K_FILE,
    GROK1_CONFIG,
    LLAMA2_7B_CONFIG,
    build_grok1_314b,
    build_llama7b_q4k_gguf,
    build_llama7b_sharded,
    embedding_row_values,
    synthetic_vocab,
)
from fingerprints.gguf_format import ESTIMATE_SLACK_BYTES, FIRST_CHUNK_BYTES, gguf_architecture, gguf_tokenizer, parse_gguf_header, read_gguf_rows
from fingerprints.reader import LocalFolderReader, read_range
from fingerprints.safetensors_format import read_checkpoint
from fingerprints.weights import decode

pytestmark = pytest.mark.slow  # sparse multi-GB checkpoints over the fake Hub

# Headers, config and tokenizer files are a few MB; the tensor data must stay holes.
MAX_DISK_BYTES = 50 * 1024 * 1024
# Llama-2-7B's published parameter count.
LLAMA2_7B_PARAMS = 6_738_415_616


def disk_usage(folder) -> int:
    return sum(p.stat().st_blocks * 512 for p in folder.iterdir())


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("bigmodels")
    return {
        "llama7b": build_llama7b_sharded(root / "llama7b"),
        "grok1": build_grok1_314b(root / "grok1"),
        "gguf": build_llama7b_q4k_gguf(root / "gguf"),
    }


def raw_safetensors_header(folder, file) -> dict:
    """The format's own definition: u64 little-endian length N, then N bytes of JSON."""
    with open(folder / file, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        return json.loads(f.read(n))


def read_index(folder):
    def read(path: str) -> bytes:
        return (folder / path).read_bytes()
    return read


@pytest.mark.parametrize("key", ["llama7b", "grok1", "gguf"])
def test_apparent_size_is_real_and_disk_cost_is_not(built, key):
    folder, total = built[key]
    assert total == sum(p.stat().st_size for p in folder.iterdir())
    expected = {"llama7b": (13.4e9, 13.6e9), "grok1": (620e9, 640e9), "gguf": (3.7e9, 4.1e9)}[key]
    assert expected[0] < total < expected[1]
    assert disk_usage(folder) < MAX_DISK_BYTES


def test_llama7b_shards_parse_like_the_hub_checkpoint(built):
    folder, _ = built["llama7b"]
    files = sorted(p.name for p in folder.iterdir())
    assert files == ["config.json", "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors",
                     "model.safetensors.index.json", "tokenizer.json", "tokenizer_config.json"]
    index = json.loads((folder / "model.safetensors.index.json").read_text())
    raw = {**raw_safetensors_header(folder, files[1]), **raw_safetensors_header(folder, files[2])}
    raw.pop("__metadata__")
    assert set(raw) == set(index["weight_map"])
    params = sum(math.prod(t["shape"]) for t in raw.values())
    assert params == LLAMA2_7B_PARAMS
    assert index["metadata"]["total_size"] == params * 2
    down = raw["model.layers.31.mlp.down_proj.weight"]
    assert (down["dtype"], down["shape"]) == ("BF16", [4096, 11008])

    reader = LocalFolderReader(folder)
    tensors, header_bytes = read_checkpoint(reader, reader.list_files(), read_index(folder))
    assert len(tensors) == 32 * 9 + 3
    assert header_bytes < 100_000
    assert json.loads((folder / "config.json").read_text()) == LLAMA2_7B_CONFIG
    vocab = json.loads((folder / "tokenizer.json").read_text())["model"]["vocab"]
    assert len(vocab) == 32000 and vocab["<0x41>"] == 3 + 0x41


def test_grok1_shards_have_moe_names_and_shapes(built):
    folder, total = built["grok1"]
    reader = LocalFolderReader(folder)
    shards = sorted(f for f in reader.list_files() if f.endswith(".safetensors"))
    assert len(shards) == 16
    tensors, header_bytes = read_checkpoint(reader, reader.list_files(), read_index(folder))
    # Each shard's header read once, sized from the index's tensor names: never short (one request
    # per shard), over-reading by the estimate's margin only (359 KB for 272 KB of headers).
    assert reader.requests == 16
    assert header_bytes <= reader.bytes_read < 1.5 * header_bytes
    by_name = {t.name: t for t in tensors}
    c = GROK1_CONFIG
    assert len(tensors) == c["num_hidden_layers"] * (5 + 3 * c["num_local_experts"] + 4) + 3
    assert by_name["model.layers.63.block_sparse_moe.experts.7.w1.weight"].shape == (32768, 6144)
    assert by_name["model.layers.0.block_sparse_moe.experts.0.w2.weight"].shape == (6144, 32768)
    assert by_name["model.layers.5.self_attn.k_proj.weight"].shape == (1024, 6144)
    assert by_name["model.layers.5.block_sparse_moe.gate.weight"].shape == (8, 6144)
    assert by_name["model.embed_tokens.weight"].shape == (131072, 6144)
    params = sum(math.prod(t.shape) for t in tensors)
    assert 314e9 < params < 318e9
    assert total > params * 2


def test_q4k_gguf_header_parses_from_two_reads(built):
    folder, _ = built["gguf"]
    reader = LocalFolderReader(folder)
    header = parse_gguf_header(reader, GGUF_7B_Q4K_FILE)
    # The first chunk, then the estimated rest: 766,760 bytes fetched for a 758,697-byte header.
    assert reader.requests == 2 and reader.bytes_read == header.fetched_bytes
    assert FIRST_CHUNK_BYTES < header.header_bytes <= header.fetched_bytes < header.header_bytes + 2 * ESTIMATE_SLACK_BYTES
    assert len(header.tensors) == 32 * 9 + 3
    types = {t.ggml_type for t in header.tensors}
    assert types == {"Q4_K", "Q6_K", "F32"}
    assert header.tensor("blk.0.ffn_down.weight").shape == (4096, 11008)
    assert header.tensor("output.weight").ggml_type == "Q6_K"
    assert header.tensors[-1].offset_abs + header.tensors[-1].n_bytes == header.file_size
    arch = gguf_architecture(header)
    assert (arch["architecture"], arch["block_count"], arch["embedding_length"], arch["head_count"]) == ("llama", 32, 4096, 32)
    assert arch["vocab_size"] == 32000 and arch["qk_permuted"]
    tok = gguf_tokenizer(header)
    assert tok["tokens"] == synthetic_vocab(32000) and tok["model"] == "llama"
    assert (tok["bos_token_id"], tok["eos_token_id"]) == (1, 2)
    # The data is a hole: sampled rows decode to zeros, at whole-block cost.
    rows = read_gguf_rows(reader, GGUF_7B_Q4K_FILE, header.tensor("token_embd.weight"), [0, 31999])
    assert rows.shape == (2, 4096) and not rows.any()
    assert reader.bytes_read == header.fetched_bytes + 2 * (4096 // 256 * 144)


def test_filled_embedding_rows_read_back(tmp_path):
    rows = [0, 1234, 31999]
    folder, _ = build_llama7b_sharded(tmp_path / "filled", fill_embedding_rows=rows)
    reader = LocalFolderReader(folder)
    tensors, _ = read_checkpoint(reader, reader.list_files(), read_index(folder))
    emb = next(t for t in tensors if t.name == "model.embed_tokens.weight")
    for row in rows + [5]:
        values = decode(read_range(reader, emb.file, emb.offset + row * emb.row_bytes, emb.row_bytes), "BF16")
        expected = embedding_row_values(row, 4096) if row in rows else np.zeros(4096, np.float32)
        np.testing.assert_array_equal(values, expected)
    assert disk_usage(folder) < MAX_DISK_BYTES
