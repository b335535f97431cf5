"""GGUF over ranged reads: parse real files written by gguf-py, check against GGUFReader, fuzz."""

from __future__ import annotations

import struct

import numpy as np
import pytest
from gguf import GGUFReader, GGUFValueType, get_tensor_name_map
from gguf.constants import GGML_QUANT_SIZES, GGUFEndian, GGMLQuantizationType, MODEL_ARCH
from gguf.quants import dequantize, quantize
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.numpy import load_file

from fingerprints import gguf_format
from fingerprints.errors import FingerprintError, InvalidModelError, UninspectableWeightsError
from fingerprints.gguf_format import (
    DEQUANTIZABLE_TYPES,
    ESTIMATE_SLACK_BYTES,
    FIRST_CHUNK_BYTES,
    gguf_architecture,
    gguf_name_to_hf_role,
    gguf_qk_rows_to_hf_rows,
    gguf_tokenizer,
    parse_gguf_header,
    read_gguf_rows,
    undo_llama_qk_permutation,
)
from fingerprints.reader import LocalFolderReader, RangeRequest
from gguf_samples import (F16, F32, MINILM, Q8_0, BytesReader, exercise, minilm_gguf_tensors, minilm_kv,
                          small_valid_gguf, write_gguf)

pytestmark = pytest.mark.slow  # writes and quantizes MiniLM GGUFs, fuzzes with hypothesis


@pytest.fixture(scope="module")
def minilm_ggufs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("minilm_gguf")
    for label, qtype in (("f32", F32), ("f16", F16), ("q8_0", Q8_0)):
        write_gguf(folder / f"minilm-{label}.gguf", "bert", minilm_kv, minilm_gguf_tensors(qtype))
    return folder


def reader_metadata(reader: GGUFReader) -> dict:
    return {k: f.contents() for k, f in reader.fields.items() if not k.startswith("GGUF.") and k != "test.nested"}


@pytest.mark.parametrize("label", ["f32", "f16", "q8_0"])
def test_minilm_header_matches_gguf_reader(minilm_ggufs, label):
    file = f"minilm-{label}.gguf"
    reader = LocalFolderReader(minilm_ggufs)
    header = parse_gguf_header(reader, file)
    ref = GGUFReader(minilm_ggufs / file)

    assert header.version == 3 and header.byte_order == "<"
    ours = {k: v for k, v in header.metadata.items() if k != "test.nested"}
    assert ours == reader_metadata(ref)
    assert header.metadata["test.nested"] == [[1, 2], [3]]
    assert header.alignment == ref.alignment == 32
    assert header.data_start == ref.data_offset
    assert [t.name for t in header.tensors] == [t.name for t in ref.tensors]
    for ours_t, ref_t in zip(header.tensors, ref.tensors):
        assert ours_t.shape == tuple(reversed(ref_t.shape.tolist()))
        assert ours_t.ggml_type == ref_t.tensor_type.name
        assert ours_t.offset_abs == ref_t.data_offset
        assert ours_t.n_bytes == ref_t.n_bytes
    # The header (30522 WordPiece tokens, ~0.57 MB) overflows the first chunk; the parser's estimate
    # of the rest fetches it in one more request. The estimate assumes scores and token types follow
    # the tokens; a WordPiece GGUF has no scores, so it over-reads by that 4-byte-per-token array.
    assert reader.requests == 2
    assert reader.bytes_read == header.fetched_bytes
    assert header.header_bytes <= header.fetched_bytes < header.header_bytes + 4 * 30522 + 2 * ESTIMATE_SLACK_BYTES


def test_minilm_tokenizer_and_architecture(minilm_ggufs):
    header = parse_gguf_header(LocalFolderReader(minilm_ggufs), "minilm-q8_0.gguf")
    tok = gguf_tokenizer(header)
    vocab = (MINILM / "vocab.txt").read_text(encoding="utf-8").splitlines()
    assert tok["tokens"] == vocab and len(vocab) == 30522
    assert tok["model"] == "bert" and tok["merges"] is None
    assert tok["bos_token_id"] == 101 and tok["eos_token_id"] == 102
    assert tok["token_types"][vocab.index("[CLS]")] == 3
    assert tok["chat_template"] == "{{ messages }}"
    arch = gguf_architecture(header)
    assert arch["architecture"] == "bert"
    assert (arch["embedding_length"], arch["block_count"], arch["feed_forward_length"], arch["head_count"]) == (384, 6, 1536, 12)
    assert arch["vocab_size"] == 30522 and arch["qk_permuted"] is False


@pytest.mark.parametrize("label", ["f32", "f16", "q8_0"])
def test_rows_match_full_dequantized_tensor(minilm_ggufs, label):
    file = f"minilm-{label}.gguf"
    reader = LocalFolderReader(minilm_ggufs)
    header = parse_gguf_header(reader, file)
    ref = {t.name: t for t in GGUFReader(minilm_ggufs / file).tensors}
    for name in ("token_embd.weight", "blk.2.ffn_down.weight", "blk.0.attn_output_norm.bias"):
        tensor = header.tensor(name)
        full = dequantize(ref[name].data, ref[name].tensor_type).reshape(tensor.n_rows, tensor.row_len)
        rows = [0, tensor.n_rows - 1, tensor.n_rows // 2, 0]
        before_bytes, before_requests = reader.bytes_read, reader.requests
        got = read_gguf_rows(reader, file, tensor, rows)
        assert got.dtype == np.float32 and got.shape == (len(rows), tensor.row_len)
        np.testing.assert_array_equal(got, full[rows])
        # Only the distinct rows' bytes: one range per distinct row, nothing more.
        distinct = len(set(rows))
        assert reader.bytes_read - before_bytes == distinct * tensor.row_bytes
        assert reader.requests - before_requests == distinct


def test_q8_0_rows_are_close_to_the_safetensors_weights(minilm_ggufs):
    reader = LocalFolderReader(minilm_ggufs)
    header = parse_gguf_header(reader, "minilm-q8_0.gguf")
    original = load_file(MINILM / "model.safetensors")["embeddings.word_embeddings.weight"]
    rows = [101, 2023, 29999]
    got = read_gguf_rows(reader, "minilm-q8_0.gguf", header.tensor("token_embd.weight"), rows)
    assert header.tensor("token_embd.weight").ggml_type == "Q8_0"
    assert np.abs(got - original[rows]).max() < 0.01 * np.abs(original[rows]).max()


def test_rows_come_from_one_batched_read(minilm_ggufs):
    calls = []

    class Recording(LocalFolderReader):
        def read_ranges(self, requests):
            calls.append(list(requests))
            return super().read_ranges(requests)

    reader = Recording(minilm_ggufs)
    header = parse_gguf_header(reader, "minilm-f16.gguf")
    calls.clear()
    tensor = header.tensor("token_embd.weight")
    read_gguf_rows(reader, "minilm-f16.gguf", tensor, [7, 3, 5000])
    assert len(calls) == 1
    assert calls[0] == [RangeRequest("minilm-f16.gguf", tensor.offset_abs + r * tensor.row_bytes, tensor.row_bytes) for r in (3, 7, 5000)]


def random_blocks(qtype: GGMLQuantizationType, n_rows: int, row_len: int, seed: int) -> np.ndarray:
    """Random bytes in the tensor's block layout (scales may decode to inf/NaN; both sides agree)."""
    block_size, type_size = GGML_QUANT_SIZES[qtype]
    return np.random.default_rng(seed).integers(0, 256, size=(n_rows, row_len // block_size * type_size), dtype=np.uint8)


@pytest.mark.parametrize("type_name", sorted(DEQUANTIZABLE_TYPES - {"F32", "F16"}))
def test_every_dequantizable_type_matches_gguf_py(tmp_path, type_name):
    qtype = GGMLQuantizationType[type_name]
    block_size, _ = GGML_QUANT_SIZES[qtype]
    row_len, n_rows = max(block_size, 256), 6
    data = random_blocks(qtype, n_rows, row_len, seed=int(qtype))
    write_gguf(tmp_path / "q.gguf", "llama", lambda w: None, [("blk.0.ffn_up.weight", data, qtype)])
    reader = LocalFolderReader(tmp_path)
    tensor = parse_gguf_header(reader, "q.gguf").tensor("blk.0.ffn_up.weight")
    assert tensor.shape == (n_rows, row_len) and tensor.ggml_type == type_name
    ref = GGUFReader(tmp_path / "q.gguf").tensors[0]
    with np.errstate(all="ignore"):
        full = dequantize(ref.data, ref.tensor_type).reshape(n_rows, row_len)
    got = read_gguf_rows(reader, "q.gguf", tensor, [5, 1, 3])
    np.testing.assert_array_equal(got, full[[5, 1, 3]])


def test_undecodable_types_bad_rows_and_empty_rows(tmp_path):
    data = np.arange(64, dtype=np.int32).reshape(4, 16)
    write_gguf(tmp_path / "i.gguf", "llama", lambda w: None,
               [("blk.0.ffn_up.weight", data, None), ("blk.0.ffn_down.weight", data.astype(np.float32), None)])
    reader = LocalFolderReader(tmp_path)
    ints, floats = parse_gguf_header(reader, "i.gguf").tensors
    assert ints.ggml_type == "I32"
    with pytest.raises(UninspectableWeightsError, match="I32"):
        read_gguf_rows(reader, "i.gguf", ints, [0])
    zero_width = tensor_info("t", [0, 4], int(Q8_0), 0)
    empty_reader = BytesReader({"z.gguf": gguf_bytes(n_tensors=1, tensors=zero_width, tail=b"\0" * 64)})
    zero = parse_gguf_header(empty_reader, "z.gguf").tensors[0]
    assert read_gguf_rows(empty_reader, "z.gguf", zero, [0, 3]).shape == (2, 0)
    for bad_row in (4, -1, 1.0):
        with pytest.raises(InvalidModelError, match="outside tensor"):
            read_gguf_rows(reader, "i.gguf", floats, [bad_row])


def hf_permute(weights: np.ndarray, n_head: int, n_head_kv: int | None) -> np.ndarray:
    """LlamaModel.permute from llama.cpp's convert_hf_to_gguf.py: the layout this module undoes."""
    if n_head_kv is not None and n_head != n_head_kv:
        n_head = n_head_kv
    return weights.reshape(n_head, 2, weights.shape[0] // n_head // 2, *weights.shape[1:]).swapaxes(1, 2).reshape(weights.shape)


LLAMA_SMALL = {"hidden": 256, "heads": 8, "kv_heads": 2, "ffn": 512, "vocab": 320, "layers": 2}


@pytest.fixture(scope="module")
def llama_small(tmp_path_factory):
    """A small random llama with GQA, converted the llama.cpp way (Q/K permuted), in F32 and Q8_0."""
    c = LLAMA_SMALL
    rng = np.random.default_rng(0)
    head_dim = c["hidden"] // c["heads"]
    hf = {"token_embd.weight": rng.normal(size=(c["vocab"], c["hidden"])).astype(np.float32)}
    for i in range(c["layers"]):
        hf[f"blk.{i}.attn_q.weight"] = rng.normal(size=(c["hidden"], c["hidden"])).astype(np.float32)
        hf[f"blk.{i}.attn_k.weight"] = rng.normal(size=(c["kv_heads"] * head_dim, c["hidden"])).astype(np.float32)
        hf[f"blk.{i}.attn_v.weight"] = rng.normal(size=(c["kv_heads"] * head_dim, c["hidden"])).astype(np.float32)
        hf[f"blk.{i}.attn_norm.weight"] = rng.normal(size=c["hidden"]).astype(np.float32)
    converted = dict(hf)
    for i in range(c["layers"]):
        converted[f"blk.{i}.attn_q.weight"] = hf_permute(hf[f"blk.{i}.attn_q.weight"], c["heads"], c["heads"])
        converted[f"blk.{i}.attn_k.weight"] = hf_permute(hf[f"blk.{i}.attn_k.weight"], c["heads"], c["kv_heads"])

    def kv(w):
        w.add_block_count(c["layers"])
        w.add_embedding_length(c["hidden"])
        w.add_head_count(c["heads"])
        w.add_head_count_kv(c["kv_heads"])
        w.add_rope_freq_base(500000.0)
        w.add_tokenizer_model("gpt2")
        w.add_token_list([f"t{i}" for i in range(c["vocab"])])
        w.add_token_merges(["t 1", "t1 0"])

    folder = tmp_path_factory.mktemp("llama_small")
    write_gguf(folder / "f32.gguf", "llama", kv, [(n, a, None) for n, a in converted.items()])
    write_gguf(folder / "q8.gguf", "llama", kv,
               [(n, quantize(a, Q8_0), Q8_0) if a.ndim == 2 else (n, a, None) for n, a in converted.items()])
    return folder, hf


def test_undo_permutation_recovers_hf_q_and_k(llama_small):
    folder, hf = llama_small
    c = LLAMA_SMALL
    reader = LocalFolderReader(folder)
    header = parse_gguf_header(reader, "f32.gguf")
    arch = gguf_architecture(header)
    assert arch["qk_permuted"] and (arch["head_count"], arch["head_count_kv"]) == (8, 2)
    assert arch["rope_freq_base"] == 500000.0
    q, k = header.tensor("blk.1.attn_q.weight"), header.tensor("blk.1.attn_k.weight")
    gguf_q = read_gguf_rows(reader, "f32.gguf", q, list(range(q.n_rows)))
    gguf_k = read_gguf_rows(reader, "f32.gguf", k, list(range(k.n_rows)))
    assert not np.array_equal(gguf_q, hf["blk.1.attn_q.weight"])
    np.testing.assert_array_equal(undo_llama_qk_permutation(gguf_q, c["heads"], c["heads"]), hf["blk.1.attn_q.weight"])
    np.testing.assert_array_equal(undo_llama_qk_permutation(gguf_k, c["heads"], c["kv_heads"]), hf["blk.1.attn_k.weight"])
    # 1-D (biases) permute the same way.
    bias = np.arange(c["hidden"], dtype=np.float32)
    np.testing.assert_array_equal(undo_llama_qk_permutation(hf_permute(bias, 8, 8), 8, 8), bias)


@pytest.mark.parametrize("file", ["f32.gguf", "q8.gguf"])
def test_sampled_qk_rows_map_to_hf_rows(llama_small, file):
    folder, hf = llama_small
    c = LLAMA_SMALL
    reader = LocalFolderReader(folder)
    header = parse_gguf_header(reader, file)
    for name, heads_kv in (("blk.0.attn_q.weight", c["heads"]), ("blk.0.attn_k.weight", c["kv_heads"])):
        t = header.tensor(name)
        rows = [0, 1, 2, 17, t.n_rows - 1]
        got = read_gguf_rows(reader, file, t, rows)
        hf_rows = gguf_qk_rows_to_hf_rows(rows, t.n_rows, c["heads"], heads_kv)
        expected = hf[name][hf_rows]
        if file == "f32.gguf":
            np.testing.assert_array_equal(got, expected)
        else:
            np.testing.assert_allclose(got, expected, atol=0.05 * np.abs(expected).max())


def test_row_mapping_is_the_inverse_permutation():
    rows = np.arange(96)
    for heads, kv in ((4, 4), (12, 3), (6, None)):
        permuted = hf_permute(np.arange(96), heads, kv)  # permuted[g] is the HF row stored at GGUF row g
        np.testing.assert_array_equal(gguf_qk_rows_to_hf_rows(rows, 96, heads, kv), permuted)
    with pytest.raises(InvalidModelError, match="heads"):
        gguf_qk_rows_to_hf_rows([0], 90, 4, 4)
    with pytest.raises(InvalidModelError, match="rows must lie"):
        gguf_qk_rows_to_hf_rows([96], 96, 4, 4)


def test_llama_tokenizer_merges(llama_small):
    folder, _ = llama_small
    tok = gguf_tokenizer(parse_gguf_header(LocalFolderReader(folder), "f32.gguf"))
    assert tok["model"] == "gpt2" and tok["merges"] == ["t 1", "t1 0"] and len(tok["tokens"]) == 320


@pytest.mark.parametrize(
    "name, expected",
    [
        ("token_embd.weight", ("embedding", None)),
        ("output.weight", ("lm_head", None)),
        ("output_norm.weight", ("norm_final", None)),
        ("token_types.weight", ("token_type_embedding", None)),
        ("position_embd.weight", ("position_embedding", None)),
        ("token_embd_norm.bias", ("norm_embedding_bias", None)),
        ("blk.0.attn_q.weight", ("attn_q", 0)),
        ("blk.12.attn_k.weight", ("attn_k", 12)),
        ("blk.3.attn_v.bias", ("attn_v_bias", 3)),
        ("blk.3.attn_output.weight", ("attn_o", 3)),
        ("blk.3.ffn_gate.weight", ("mlp_gate", 3)),
        ("blk.3.ffn_up.weight", ("mlp_up", 3)),
        ("blk.3.ffn_down.weight", ("mlp_down", 3)),
        ("blk.3.attn_norm.weight", ("norm_attn", 3)),
        ("blk.3.ffn_norm.weight", ("norm_mlp", 3)),
        ("blk.3.attn_output_norm.weight", ("norm_attn", 3)),
        ("blk.3.layer_output_norm.bias", ("norm_mlp_bias", 3)),
        ("blk.7.ffn_gate_inp.weight", ("router", 7)),
        ("blk.7.ffn_down_exps.weight", ("expert_mlp_down", 7)),
        ("blk.3.unheard_of.weight", (None, 3)),
        ("attn_q.weight", (None, None)),  # a layer tensor name without its block
        ("blk.1.output.weight", (None, 1)),  # a model-level name inside a block
        ("not a tensor name", (None, None)),
    ],
)
def test_gguf_name_to_hf_role(name, expected):
    assert gguf_name_to_hf_role(name) == expected


def test_every_minilm_tensor_has_a_role(minilm_ggufs):
    header = parse_gguf_header(LocalFolderReader(minilm_ggufs), "minilm-f32.gguf")
    assert all(gguf_name_to_hf_role(t.name)[0] is not None for t in header.tensors)


def test_big_endian_file(tmp_path):
    rng = np.random.default_rng(1)
    emb = rng.normal(size=(40, 64)).astype(np.float32)

    def kv(w):
        w.add_token_list([f"t{i}" for i in range(40)])
        w.add_head_count(4)

    tensors = [("token_embd.weight", emb, None), ("blk.0.ffn_up.weight", emb.astype(np.float16), None),
               ("blk.0.ffn_down.weight", quantize(emb, Q8_0), Q8_0)]
    write_gguf(tmp_path / "be.gguf", "llama", kv, tensors, endianess=GGUFEndian.BIG)
    reader = LocalFolderReader(tmp_path)
    header = parse_gguf_header(reader, "be.gguf")
    ref = GGUFReader(tmp_path / "be.gguf")
    assert header.byte_order == ">" and header.version == 3
    assert header.metadata["tokenizer.ggml.tokens"][:2] == ["t0", "t1"]
    assert header.metadata["llama.attention.head_count"] == 4
    assert [t.offset_abs for t in header.tensors] == [t.data_offset for t in ref.tensors]
    np.testing.assert_array_equal(read_gguf_rows(reader, "be.gguf", header.tensors[0], [3, 39]), emb[[3, 39]])
    np.testing.assert_array_equal(read_gguf_rows(reader, "be.gguf", header.tensors[1], [0]),
                                  emb[[0]].astype(np.float16).astype(np.float32))
    with pytest.raises(UninspectableWeightsError, match="big-endian"):
        read_gguf_rows(reader, "be.gguf", header.tensors[2], [0])


def test_custom_alignment(tmp_path):
    data = np.ones((3, 32), dtype=np.float32)
    write_gguf(tmp_path / "a.gguf", "llama", lambda w: None,
               [("blk.0.ffn_up.weight", data, None), ("blk.0.ffn_down.weight", data * 2, None)], alignment=256)
    reader = LocalFolderReader(tmp_path)
    header = parse_gguf_header(reader, "a.gguf")
    assert header.alignment == 256 and header.data_start % 256 == 0
    assert header.data_start == GGUFReader(tmp_path / "a.gguf").data_offset
    np.testing.assert_array_equal(read_gguf_rows(reader, "a.gguf", header.tensors[1], [2]), data[[2]] * 2)


def test_large_header_grows_by_its_estimate(tmp_path):
    # ~2.2 MB of tokens: more than the first chunk, so the parser extends its read once, by its
    # estimate of the rest (the remaining tokens at the average length seen so far).
    tokens = [f"token-{i:07d}-" + "x" * 40 for i in range(40_000)]
    write_gguf(tmp_path / "big.gguf", "llama", lambda w: w.add_token_list(tokens), [("output_norm.weight", np.ones(32, np.float32), None)])
    reader = LocalFolderReader(tmp_path)
    header = parse_gguf_header(reader, "big.gguf")
    assert header.metadata["tokenizer.ggml.tokens"] == tokens
    assert header.header_bytes > 2 * FIRST_CHUNK_BYTES
    assert reader.requests == 2
    assert reader.bytes_read == header.fetched_bytes == header.file_size  # the estimate ran past the end: capped


def test_header_size_cap(tmp_path, monkeypatch):
    tokens = [f"token-{i}" for i in range(2000)]
    write_gguf(tmp_path / "t.gguf", "llama", lambda w: w.add_token_list(tokens), [])
    with pytest.raises(InvalidModelError, match="4,096-byte limit"):
        parse_gguf_header(LocalFolderReader(tmp_path), "t.gguf", max_header_bytes=4096)


# --- hand-built malformed headers -------------------------------------------------------------


def gguf_bytes(version=3, tensors=b"", n_tensors=0, kvs=b"", n_kv=0, tail=b"") -> bytes:
    return b"GGUF" + struct.pack("<IQQ", version, n_tensors, n_kv) + kvs + tensors + tail


def gstr(s: str | bytes) -> bytes:
    raw = s.encode() if isinstance(s, str) else s
    return struct.pack("<Q", len(raw)) + raw


def kv_u32(key: str, value: int) -> bytes:
    return gstr(key) + struct.pack("<II", GGUFValueType.UINT32, value)


def tensor_info(name: str, dims: list[int], ggml_type: int, offset: int) -> bytes:
    return gstr(name) + struct.pack("<I", len(dims)) + struct.pack(f"<{len(dims)}Q", *dims) + struct.pack("<IQ", ggml_type, offset)


def nested_array(depth: int) -> bytes:
    inner = struct.pack("<IQ", GGUFValueType.UINT8, 1) + b"\x01"
    for _ in range(depth - 1):
        inner = struct.pack("<IQ", GGUFValueType.ARRAY, 1) + inner
    return inner


@pytest.mark.parametrize(
    "blob, message",
    [
        (b"GGML" + b"\0" * 40, "bad magic"),
        (gguf_bytes(version=1), "version 1 is not supported"),
        (gguf_bytes(version=7), "version 7"),
        (b"GGUF\x03\0\0\0", "truncated"),
        (gguf_bytes(n_kv=100_001), "100,001 metadata keys"),
        (gguf_bytes(n_tensors=10_000_001), "tensors, over"),
        (gguf_bytes(n_kv=1, kvs=struct.pack("<Q", 11 * 2**20)), "over the 10,485,760-byte limit"),
        (gguf_bytes(n_kv=1, kvs=gstr("k") + struct.pack("<I", 99)), "unknown value type 99"),
        (gguf_bytes(n_kv=1, kvs=gstr(b"\xff\xfe")), "not valid UTF-8"),
        (gguf_bytes(n_kv=2, kvs=kv_u32("a", 1) + kv_u32("a", 2)), "duplicate metadata key 'a'"),
        (gguf_bytes(n_kv=1, kvs=gstr("k") + struct.pack("<IIQ", GGUFValueType.ARRAY, GGUFValueType.UINT8, 1_000_001)), "1,000,001 elements"),
        (gguf_bytes(n_kv=1, kvs=gstr("k") + struct.pack("<I", GGUFValueType.ARRAY) + nested_array(5)), "nests deeper than 4"),
        (gguf_bytes(n_kv=1, kvs=kv_u32("general.alignment", 48)), "power of two"),
        (gguf_bytes(n_kv=1, kvs=kv_u32("general.alignment", 0)), "power of two"),
        (gguf_bytes(n_tensors=1, tensors=tensor_info("x" * 64, [32], 0, 0)), "over the 63-byte limit"),
        (gguf_bytes(n_tensors=1, tensors=tensor_info("t", [], 0, 0)), "0 dimensions"),
        (gguf_bytes(n_tensors=1, tensors=tensor_info("t", [1] * 9, 0, 0)), "9 dimensions"),
        (gguf_bytes(n_tensors=1, tensors=tensor_info("t", [2**32 + 1], 0, 0)), "dimension over"),
        (gguf_bytes(n_tensors=1, tensors=tensor_info("t", [32], 1234, 0)), "unknown ggml type 1234"),
        (gguf_bytes(n_tensors=1, tensors=tensor_info("t", [33], int(Q8_0), 0)), "not a multiple of the Q8_0 block size"),
        (gguf_bytes(n_tensors=1, tensors=tensor_info("t", [8], 0, 16), tail=b"\0" * 200), "not a multiple of the alignment"),
        (gguf_bytes(n_tensors=1, tensors=tensor_info("t", [1024], 0, 0), tail=b"\0" * 100), "file has"),
        (gguf_bytes(n_tensors=2, tensors=tensor_info("t", [8], 0, 0) + tensor_info("t", [8], 0, 32), tail=b"\0" * 200), "duplicate tensor name"),
        (gguf_bytes(n_tensors=2, tensors=tensor_info("a", [16], 0, 0) + tensor_info("b", [8], 0, 32), tail=b"\0" * 200), "overlaps"),
    ],
)
def test_malformed_headers_are_one_line_errors(blob, message):
    with pytest.raises(InvalidModelError) as info:
        parse_gguf_header(BytesReader({"m.gguf": blob}), "m.gguf")
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_metadata_type_errors_are_clear():
    blob = gguf_bytes(n_kv=2, kvs=gstr("general.architecture") + struct.pack("<I", GGUFValueType.STRING) + gstr("llama")
                      + gstr("tokenizer.ggml.tokens") + struct.pack("<IIQ", GGUFValueType.ARRAY, GGUFValueType.UINT8, 2) + b"\1\2")
    header = parse_gguf_header(BytesReader({"m.gguf": blob}), "m.gguf")
    with pytest.raises(InvalidModelError, match="list of str"):
        gguf_tokenizer(header)
    tokens = gstr("tokenizer.ggml.tokens") + struct.pack("<IIQ", GGUFValueType.ARRAY, GGUFValueType.STRING, 2) + gstr("a") + gstr("b")
    pad = kv_u32("tokenizer.ggml.padding_token_id", 2)
    scores = gstr("tokenizer.ggml.scores") + struct.pack("<IIQ", GGUFValueType.ARRAY, GGUFValueType.FLOAT32, 1) + b"\0" * 4
    tok = gguf_tokenizer(parse_gguf_header(BytesReader({"m.gguf": gguf_bytes(n_kv=2, kvs=tokens + pad)}), "m.gguf"))
    assert tok["tokens"] == ["a", "b"] and tok["padding_token_id"] is None
    with pytest.raises(InvalidModelError, match="1 entries for 2 tokens"):
        gguf_tokenizer(parse_gguf_header(BytesReader({"m.gguf": gguf_bytes(n_kv=2, kvs=tokens + scores)}), "m.gguf"))
    no_arch = parse_gguf_header(BytesReader({"m.gguf": gguf_bytes()}), "m.gguf")
    with pytest.raises(InvalidModelError, match="no general.architecture"):
        gguf_architecture(no_arch)
    assert gguf_tokenizer(no_arch) is None


# --- fuzzing ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def valid_blob(tmp_path_factory):
    return small_valid_gguf(tmp_path_factory.mktemp("fuzz"))


def test_the_fuzz_seed_is_valid(valid_blob):
    exercise(valid_blob)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_fuzzed_ggufs_only_raise_invalid_model_error(valid_blob, data):
    blob = bytearray(valid_blob)
    for _ in range(data.draw(st.integers(1, 6))):
        kind = data.draw(st.sampled_from(["flip", "set", "number", "truncate", "insert", "delete"]))
        pos = data.draw(st.integers(0, max(len(blob) - 1, 0)))
        if kind == "flip" and blob:
            blob[pos] ^= 1 << data.draw(st.integers(0, 7))
        elif kind == "set" and blob:
            blob[pos : pos + 8] = data.draw(st.binary(min_size=1, max_size=8))
        elif kind == "number":
            # Counts, lengths, dims and offsets are u32/u64: plant boundary values where fields may sit.
            value = data.draw(st.sampled_from([0, 1, 2, 31, 32, 255, 2**31, 2**32, 2**32 + 1, 2**63, 2**64 - 1]))
            width = data.draw(st.sampled_from([4, 8]))
            blob[pos : pos + width] = (value % 2 ** (8 * width)).to_bytes(width, "little")
        elif kind == "truncate":
            del blob[pos:]
        elif kind == "insert":
            blob[pos:pos] = data.draw(st.binary(min_size=1, max_size=16))
        elif kind == "delete":
            del blob[pos : pos + data.draw(st.integers(1, 16))]
    try:
        exercise(bytes(blob))
    except FingerprintError:
        pass


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(pos=st.integers(0, 23), value=st.integers(0, 2**64 - 1))
def test_fuzzed_counts_and_lengths(valid_blob, pos, value):
    # The 8-byte fields right after the magic and in the first key: counts and lengths.
    blob = bytearray(valid_blob)
    offset = 8 + (pos // 8) * 8
    blob[offset : offset + 8] = struct.pack("<Q", value)
    try:
        exercise(bytes(blob))
    except FingerprintError:
        pass
