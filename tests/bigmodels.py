"""Sparse big-model checkpoints: real headers over holes, laid out like Hub repos.

Each builder writes a folder with config.json, a tokenizer and weight files whose headers are
real (safetensors JSON headers with a model.safetensors.index.json, or a GGUF header with a full
tokenizer) and whose tensor data is a hole made by ``truncate``: the files have the apparent
size of the real model (a Grok-1-shaped checkpoint is ~630 GB) but cost only their headers on
disk. Holes read as zeros, so sampled tensor bytes are zeros unless ``fill_embedding_rows`` asks
for deterministic non-zero embedding rows (``embedding_row_values`` gives their values). Used by
tests and by benchmarks (remote reads of a 7B, a 314B and a 7B Q4_K GGUF model).
"""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path
from typing import Iterable

import numpy as np
from gguf import GGUFWriter
from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType, LlamaFileType

BF16_BYTES = 2
# save_pretrained's shard limit when Llama-2 was published ("10GB"); it yields Llama-2-7b-hf's
# two shards.
LLAMA2_SHARD_BYTES = 10_000_000_000
# Grok-1's 64 layers are split 4 per shard: 16 shards of ~39 GB, a realistic count of headers.
GROK1_LAYERS_PER_SHARD = 4
# Ids 0..2 are <unk>, <s>, </s> and 3..258 the byte tokens <0x00>..<0xFF>, as in Llama-2's vocabulary.
LLAMA_SPECIAL_TOKENS = ["<unk>", "<s>", "</s>"]
# ggml's token types (llama.cpp llama-vocab.h): normal, control, byte.
TOKEN_TYPE_NORMAL, TOKEN_TYPE_CONTROL, TOKEN_TYPE_BYTE = 1, 3, 6

LLAMA2_7B_CONFIG = {
    "architectures": ["LlamaForCausalLM"],
    "bos_token_id": 1,
    "eos_token_id": 2,
    "hidden_act": "silu",
    "hidden_size": 4096,
    "initializer_range": 0.02,
    "intermediate_size": 11008,
    "max_position_embeddings": 4096,
    "model_type": "llama",
    "num_attention_heads": 32,
    "num_hidden_layers": 32,
    "num_key_value_heads": 32,
    "pretraining_tp": 1,
    "rms_norm_eps": 1e-05,
    "rope_scaling": None,
    "rope_theta": 10000.0,
    "tie_word_embeddings": False,
    "torch_dtype": "bfloat16",
    "vocab_size": 32000,
}

GROK1_CONFIG = {
    "architectures": ["Grok1ModelForCausalLM"],
    "model_type": "grok-1",
    "hidden_size": 6144,
    "intermediate_size": 32768,
    "num_hidden_layers": 64,
    "num_attention_heads": 48,
    "num_key_value_heads": 8,
    "num_local_experts": 8,
    "num_experts_per_tok": 2,
    "max_position_embeddings": 8192,
    "rms_norm_eps": 1e-05,
    "rope_theta": 10000.0,
    "vocab_size": 131072,
    "tie_word_embeddings": False,
    "torch_dtype": "bfloat16",
    "bos_token_id": 1,
    "eos_token_id": 2,
}


def synthetic_vocab(size: int) -> list[str]:
    """A Llama-style vocabulary of distinct strings: specials, 256 byte tokens, then word pieces."""
    tokens = LLAMA_SPECIAL_TOKENS + [f"<0x{b:02X}>" for b in range(256)]
    tokens += [f"\u2581w{i}" if i % 2 else f"p{i}" for i in range(size - len(tokens))]
    return tokens[:size]


def _token_types(vocab: list[str]) -> list[int]:
    n_special, n_bytes = len(LLAMA_SPECIAL_TOKENS), 256
    return [
        TOKEN_TYPE_CONTROL if i < n_special else TOKEN_TYPE_BYTE if i < n_special + n_bytes else TOKEN_TYPE_NORMAL
        for i in range(len(vocab))
    ]


def _write_tokenizer_json(folder: Path, vocab: list[str]) -> None:
    special = [
        {"id": i, "content": tok, "special": True, "single_word": False, "lstrip": False, "rstrip": False, "normalized": False}
        for i, tok in enumerate(LLAMA_SPECIAL_TOKENS)
    ]
    data = {
        "version": "1.0",
        "added_tokens": special,
        "model": {"type": "BPE", "byte_fallback": True, "vocab": {t: i for i, t in enumerate(vocab)}, "merges": []},
    }
    (folder / "tokenizer.json").write_text(json.dumps(data, ensure_ascii=False))
    config = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "tokenizer_class": "LlamaTokenizer"}
    (folder / "tokenizer_config.json").write_text(json.dumps(config))


def embedding_row_values(row: int, hidden: int) -> np.ndarray:
    """The deterministic values a filled embedding row holds (bf16-exact float32)."""
    values = np.random.default_rng(row).normal(0.0, 0.02, hidden).astype(np.float32)
    return (values.view(np.uint32) & 0xFFFF0000).view(np.float32)


def _bf16_bytes(values: np.ndarray) -> bytes:
    return (values.astype(np.float32).view(np.uint32) >> 16).astype("<u2").tobytes()


def _llama_tensors(hidden: int, layers: int, heads: int, kv_heads: int, ffn: int, vocab: int) -> list[tuple[str, tuple[int, ...]]]:
    kv_dim = hidden // heads * kv_heads
    out = [("model.embed_tokens.weight", (vocab, hidden))]
    for i in range(layers):
        p = f"model.layers.{i}."
        out += [
            (p + "self_attn.q_proj.weight", (hidden, hidden)),
            (p + "self_attn.k_proj.weight", (kv_dim, hidden)),
            (p + "self_attn.v_proj.weight", (kv_dim, hidden)),
            (p + "self_attn.o_proj.weight", (hidden, hidden)),
            (p + "mlp.gate_proj.weight", (ffn, hidden)),
            (p + "mlp.up_proj.weight", (ffn, hidden)),
            (p + "mlp.down_proj.weight", (hidden, ffn)),
            (p + "input_layernorm.weight", (hidden,)),
            (p + "post_attention_layernorm.weight", (hidden,)),
        ]
    return out + [("model.norm.weight", (hidden,)), ("lm_head.weight", (vocab, hidden))]


def _grok1_tensors(config: dict) -> list[tuple[str, tuple[int, ...]]]:
    hidden, ffn, vocab = config["hidden_size"], config["intermediate_size"], config["vocab_size"]
    kv_dim = hidden // config["num_attention_heads"] * config["num_key_value_heads"]
    out = [("model.embed_tokens.weight", (vocab, hidden))]
    for i in range(config["num_hidden_layers"]):
        p = f"model.layers.{i}."
        out += [
            (p + "self_attn.q_proj.weight", (hidden, hidden)),
            (p + "self_attn.k_proj.weight", (kv_dim, hidden)),
            (p + "self_attn.v_proj.weight", (kv_dim, hidden)),
            (p + "self_attn.o_proj.weight", (hidden, hidden)),
            (p + "block_sparse_moe.gate.weight", (config["num_local_experts"], hidden)),
        ]
        for e in range(config["num_local_experts"]):
            q = f"{p}block_sparse_moe.experts.{e}."
            out += [(q + "w1.weight", (ffn, hidden)), (q + "w2.weight", (hidden, ffn)), (q + "w3.weight", (ffn, hidden))]
        # Grok-1 normalises before and after both attention and the MoE block.
        out += [
            (p + "pre_attn_norm.weight", (hidden,)),
            (p + "post_attn_norm.weight", (hidden,)),
            (p + "pre_moe_norm.weight", (hidden,)),
            (p + "post_moe_norm.weight", (hidden,)),
        ]
    return out + [("model.norm.weight", (hidden,)), ("lm_head.weight", (vocab, hidden))]


def _write_safetensors_shard(path: Path, tensors: list[tuple[str, tuple[int, ...]]], fill: dict[str, dict[int, bytes]]) -> int:
    """One bf16 shard: header, then a hole for the data except the filled rows. Returns its size."""
    header: dict = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name, shape in tensors:
        nbytes = math.prod(shape) * BF16_BYTES
        header[name] = {"dtype": "BF16", "shape": list(shape), "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)  # the safetensors writer pads the header to 8 bytes
    data_start = 8 + len(raw)
    total = data_start + offset
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)) + raw)
        for name, shape in tensors:
            row_bytes = math.prod(shape[1:]) * BF16_BYTES
            for row, payload in fill.get(name, {}).items():
                f.seek(data_start + header[name]["data_offsets"][0] + row * row_bytes)
                f.write(payload)
        f.truncate(total)
    return total


def _write_sharded(folder: Path, tensors: list[tuple[str, tuple[int, ...]]], shards: list[list[int]],
                   fill: dict[str, dict[int, bytes]]) -> int:
    names = [f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))]
    weight_map, total = {}, 0
    for shard_name, indices in zip(names, shards):
        shard = [tensors[i] for i in indices]
        total += _write_safetensors_shard(folder / shard_name, shard, fill)
        weight_map.update({name: shard_name for name, _ in shard})
    tensor_bytes = sum(math.prod(shape) * BF16_BYTES for _, shape in tensors)
    index = {"metadata": {"total_size": tensor_bytes}, "weight_map": weight_map}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))
    return total


def _split_by_bytes(tensors: list[tuple[str, tuple[int, ...]]], max_bytes: int) -> list[list[int]]:
    """save_pretrained's greedy split: start a new shard when the next tensor would overflow."""
    shards: list[list[int]] = [[]]
    size = 0
    for i, (_, shape) in enumerate(tensors):
        nbytes = math.prod(shape) * BF16_BYTES
        if shards[-1] and size + nbytes > max_bytes:
            shards.append([])
            size = 0
        shards[-1].append(i)
        size += nbytes
    return shards


def _embedding_fill(rows: Iterable[int], hidden: int) -> dict[str, dict[int, bytes]]:
    return {"model.embed_tokens.weight": {r: _bf16_bytes(embedding_row_values(r, hidden)) for r in rows}}


def _folder_total(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.iterdir() if p.is_file())


def build_llama7b_sharded(folder: str | Path, fill_embedding_rows: Iterable[int] = ()) -> tuple[Path, int]:
    """Llama-2-7B (hidden 4096, 32 layers, 32 heads, ffn 11008, vocab 32000) in bf16, two shards.

    Returns the folder and the logical size of all its files (~13.5 GB).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    c = LLAMA2_7B_CONFIG
    (folder / "config.json").write_text(json.dumps(c, indent=2))
    _write_tokenizer_json(folder, synthetic_vocab(c["vocab_size"]))
    tensors = _llama_tensors(c["hidden_size"], c["num_hidden_layers"], c["num_attention_heads"],
                             c["num_key_value_heads"], c["intermediate_size"], c["vocab_size"])
    _write_sharded(folder, tensors, _split_by_bytes(tensors, LLAMA2_SHARD_BYTES),
                   _embedding_fill(fill_embedding_rows, c["hidden_size"]))
    return folder, _folder_total(folder)


def build_grok1_314b(folder: str | Path, fill_embedding_rows: Iterable[int] = ()) -> tuple[Path, int]:
    """Grok-1 shapes (hidden 6144, 64 layers, 48 q / 8 kv heads, 8 experts of ffn 32768, vocab
    131072) in bf16 safetensors shards with Mixtral-style names. Logical size ~633 GB.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    c = GROK1_CONFIG
    (folder / "config.json").write_text(json.dumps(c, indent=2))
    _write_tokenizer_json(folder, synthetic_vocab(c["vocab_size"]))
    tensors = _grok1_tensors(c)
    shards: list[list[int]] = [[] for _ in range(c["num_hidden_layers"] // GROK1_LAYERS_PER_SHARD)]
    for i, (name, _) in enumerate(tensors):
        layer = int(name.split(".")[2]) if name.startswith("model.layers.") else None
        # Embedding in the first shard; final norm and lm_head in the last.
        if layer is None:
            shards[0 if "embed" in name else -1].append(i)
        else:
            shards[layer // GROK1_LAYERS_PER_SHARD].append(i)
    _write_sharded(folder, tensors, shards, _embedding_fill(fill_embedding_rows, c["hidden_size"]))
    return folder, _folder_total(folder)


def _gguf_nbytes(shape: tuple[int, ...], qtype: GGMLQuantizationType) -> int:
    block_size, type_size = GGML_QUANT_SIZES[qtype]
    return math.prod(shape) // block_size * type_size


def _llama_gguf_tensors(c: dict) -> list[tuple[str, tuple[int, ...], GGMLQuantizationType]]:
    """Llama-2-7B in llama.cpp names with a Q4_K_M-like mix: Q4_K matrices, Q6_K output, F32 norms."""
    hidden, ffn, vocab = c["hidden_size"], c["intermediate_size"], c["vocab_size"]
    q4, q6, f32 = GGMLQuantizationType.Q4_K, GGMLQuantizationType.Q6_K, GGMLQuantizationType.F32
    out = [("token_embd.weight", (vocab, hidden), q4)]
    for i in range(c["num_hidden_layers"]):
        p = f"blk.{i}."
        out += [
            (p + "attn_q.weight", (hidden, hidden), q4),
            (p + "attn_k.weight", (hidden, hidden), q4),
            (p + "attn_v.weight", (hidden, hidden), q4),
            (p + "attn_output.weight", (hidden, hidden), q4),
            (p + "ffn_gate.weight", (ffn, hidden), q4),
            (p + "ffn_up.weight", (ffn, hidden), q4),
            (p + "ffn_down.weight", (hidden, ffn), q4),
            (p + "attn_norm.weight", (hidden,), f32),
            (p + "ffn_norm.weight", (hidden,), f32),
        ]
    return out + [("output_norm.weight", (hidden,), f32), ("output.weight", (vocab, hidden), q6)]


GGUF_7B_Q4K_FILE = "llama-2-7b.Q4_K_M.gguf"


def build_llama7b_q4k_gguf(folder: str | Path) -> tuple[Path, int]:
    """A Llama-2-7B Q4_K_M GGUF: real header and 32000-token tokenizer arrays over a data hole (~3.9 GB)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    c = LLAMA2_7B_CONFIG
    path = folder / GGUF_7B_Q4K_FILE
    vocab = synthetic_vocab(c["vocab_size"])
    w = GGUFWriter(path, "llama")
    w.add_name("Llama 2 7b")
    w.add_context_length(c["max_position_embeddings"])
    w.add_embedding_length(c["hidden_size"])
    w.add_block_count(c["num_hidden_layers"])
    w.add_feed_forward_length(c["intermediate_size"])
    w.add_rope_dimension_count(c["hidden_size"] // c["num_attention_heads"])
    w.add_head_count(c["num_attention_heads"])
    w.add_head_count_kv(c["num_key_value_heads"])
    w.add_layer_norm_rms_eps(c["rms_norm_eps"])
    w.add_rope_freq_base(c["rope_theta"])
    w.add_file_type(LlamaFileType.MOSTLY_Q4_K_M)
    w.add_tokenizer_model("llama")
    w.add_tokenizer_pre("default")
    w.add_token_list(vocab)
    w.add_token_scores([-float(i) for i in range(len(vocab))])
    w.add_token_types(_token_types(vocab))
    w.add_bos_token_id(c["bos_token_id"])
    w.add_eos_token_id(c["eos_token_id"])
    w.add_unk_token_id(0)
    w.add_quantization_version(2)
    tensors = _llama_gguf_tensors(c)
    data_bytes = 0
    for name, shape, qtype in tensors:
        nbytes = _gguf_nbytes(shape, qtype)
        w.add_tensor_info(name, shape, np.dtype(np.float32), nbytes, raw_dtype=qtype)
        data_bytes += GGUFWriter.ggml_pad(nbytes, w.data_alignment)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()
    w.close()
    with open(path, "r+b") as f:
        f.seek(0, 2)
        data_start = GGUFWriter.ggml_pad(f.tell(), w.data_alignment)
        f.truncate(data_start + data_bytes)
    return folder, _folder_total(folder)
