"""Fuzz targets: a valid seed for every parser that reads Hub bytes, a runner and mutators.

The error contract (fingerprints/errors.py): on bad input a parser raises a ``FingerprintError``
subclass and nothing else. Each ``Target`` has seeds (small model files built in memory, each a
dict of file name -> bytes), ``run(files)`` which feeds them to the parser(s) the way a
fingerprint does, and the names of its JSON files (which also get structure-aware mutations).
``mutate_input`` turns a seed into one fuzz input by mutating one of its files.

Used by benchmarks/fuzz_parsers.py (the long run) and by bounded hypothesis tests.
"""

from __future__ import annotations

import base64
import copy
import json
import random
import struct
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from fingerprints.config import config_signature, parse_config_json
from fingerprints.engine import fingerprint_model
from fingerprints.safetensors_format import read_safetensors_headers
from fingerprints.tokenizer import (
    looks_like_tiktoken, parse_sentencepiece_model, parse_tiktoken, parse_tokenizer_json,
    parse_vocab_json_and_merges, parse_vocab_txt, tokenizer_signature,
)
from gguf_samples import BytesReader, exercise, small_valid_gguf

# --- seed builders ----------------------------------------------------------------------------

VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "a", "b", "ab", "##s", "hello", "world",
         "un", "##able", "ĠThe", "!"]
MERGES = ["a b", "Ġ T", "ĠT he", "h e"]
HIDDEN, LAYERS = 8, 2


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _sp_model(pieces: list[tuple[str, int]]) -> bytes:
    """A ModelProto with SentencePiece entries (piece = field 1, score = 2, type = 3)."""
    out = b""
    for piece, ptype in pieces:
        raw = piece.encode()
        msg = b"\x0a" + _varint(len(raw)) + raw + b"\x15" + struct.pack("<f", -1.0) + b"\x18" + _varint(ptype)
        out += b"\x0a" + _varint(len(msg)) + msg
    return out + b"\x12\x02\x08\x01"  # an unrelated trainer_spec field, skipped


def safetensors_bytes(header: dict, data: bytes = b"", header_len: int | None = None) -> bytes:
    raw = json.dumps(header).encode()
    n = len(raw) if header_len is None else header_len
    return struct.pack("<Q", n) + raw + data


def bert_safetensors(vocab: int = len(VOCAB), hidden: int = HIDDEN, layers: int = LAYERS) -> bytes:
    """A tiny BERT-shaped checkpoint (F32 matrices, one F16 and one BF16 vector) with real values."""
    shapes = {"embeddings.word_embeddings.weight": (vocab, hidden), "embeddings.position_embeddings.weight": (16, hidden),
              "embeddings.LayerNorm.weight": (hidden,), "embeddings.LayerNorm.bias": (hidden,)}
    for i in range(layers):
        p = f"encoder.layer.{i}."
        for m in ("attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense"):
            shapes[p + m + ".weight"] = (hidden, hidden)
            shapes[p + m + ".bias"] = (hidden,)
        shapes[p + "intermediate.dense.weight"] = (2 * hidden, hidden)
        shapes[p + "output.dense.weight"] = (hidden, 2 * hidden)
    rng = np.random.default_rng(7)
    header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
    data = b""
    for name, shape in shapes.items():
        dtype, raw = "F32", rng.normal(size=shape).astype(np.float32).tobytes()
        if name.endswith("LayerNorm.bias"):
            dtype, raw = "F16", rng.normal(size=shape).astype(np.float16).tobytes()
        elif name.endswith("LayerNorm.weight"):
            dtype, raw = "BF16", (rng.normal(size=shape).astype(np.float32).view(np.uint32) >> 16).astype(np.uint16).tobytes()
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    return safetensors_bytes(header, data)


def config_json(**extra) -> bytes:
    cfg = {"architectures": ["BertModel"], "model_type": "bert", "hidden_size": HIDDEN, "num_hidden_layers": LAYERS,
           "num_attention_heads": 2, "intermediate_size": 2 * HIDDEN, "vocab_size": len(VOCAB),
           "max_position_embeddings": 16, "layer_norm_eps": 1e-12, "torch_dtype": "float32", **extra}
    return json.dumps(cfg).encode()


def _added_tokens() -> list[dict]:
    return [{"id": i, "content": t, "special": True} for i, t in enumerate(VOCAB[:5])]


def tokenizer_json(kind: str) -> bytes:
    vocab = {t: i for i, t in enumerate(VOCAB)}
    if kind == "WordPiece":
        model = {"type": "WordPiece", "unk_token": "[UNK]", "vocab": vocab}
    elif kind == "BPE":
        model = {"type": "BPE", "vocab": vocab, "merges": MERGES}
    elif kind == "BPE-pairs":
        model = {"type": "BPE", "vocab": vocab, "merges": [m.split(" ") for m in MERGES]}
    else:
        model = {"type": "Unigram", "vocab": [[t, -float(i)] for i, t in enumerate(VOCAB)]}
    return json.dumps({"version": "1.0", "added_tokens": _added_tokens(), "model": model}).encode()


def tiktoken_bytes() -> bytes:
    tokens = [b"!", b"a", b"b", b"ab", b" the", b"\xff", b"hello", b"\n"]
    return b"\n".join(base64.b64encode(t) + b" " + str(i).encode() for i, t in enumerate(tokens)) + b"\n"


def tiny_model_folders() -> list[dict[str, bytes]]:
    """Whole model folders for the engine: config, a tokenizer (two kinds) and a BERT-like checkpoint."""
    weights, config = bert_safetensors(), config_json()
    tok_config = json.dumps({"cls_token": "[CLS]", "sep_token": "[SEP]", "added_tokens_decoder": {}}).encode()
    return [
        {"config.json": config, "tokenizer.json": tokenizer_json("WordPiece"), "tokenizer_config.json": tok_config,
         "model.safetensors": weights},
        {"config.json": config, "vocab.txt": "\n".join(VOCAB).encode() + b"\n", "model.safetensors": weights},
    ]


# --- targets ----------------------------------------------------------------------------------


@dataclass
class Target:
    name: str
    seeds: list[dict[str, bytes]]
    run: Callable[[dict[str, bytes]], Any]
    json_files: set[str] = field(default_factory=set)


def _run_safetensors(files):
    return read_safetensors_headers(BytesReader(files), ["model.safetensors"])


def _run_sentencepiece(files):
    return tokenizer_signature(parse_sentencepiece_model(files["tokenizer.model"]))


def _run_tokenizer_json(files):
    return tokenizer_signature(parse_tokenizer_json(files["tokenizer.json"]))


def _run_vocab_txt(files):
    return tokenizer_signature(parse_vocab_txt(files["vocab.txt"]))


def _run_vocab_json(files):
    return tokenizer_signature(parse_vocab_json_and_merges(files["vocab.json"], files.get("merges.txt")))


def _run_tiktoken(files):
    raw = files["m.tiktoken"]
    looks_like_tiktoken(raw)
    return tokenizer_signature(parse_tiktoken(raw, "m.tiktoken"))


def _run_config(files):
    return config_signature(parse_config_json(files["config.json"]))


def _run_engine(files):
    return fingerprint_model(BytesReader(files))


def sp_seed() -> bytes:
    return _sp_model([("<unk>", 2), ("<s>", 3), ("</s>", 3), ("▁the", 1), ("▁a", 1), ("<my_tag>", 4), ("é", 1)])


def build_targets() -> dict[str, Target]:
    with tempfile.TemporaryDirectory() as tmp:
        gguf_seed = small_valid_gguf(Path(tmp))
    vocab_json = json.dumps({t: i for i, t in enumerate(VOCAB)}).encode()
    targets = [
        Target("safetensors", [{"model.safetensors": bert_safetensors()}], _run_safetensors),
        Target("gguf", [{"f.gguf": gguf_seed}], lambda files: exercise(files["f.gguf"])),
        Target("sentencepiece", [{"tokenizer.model": sp_seed()}], _run_sentencepiece),
        Target("tokenizer.json", [{"tokenizer.json": tokenizer_json(k)} for k in ("BPE", "BPE-pairs", "WordPiece", "Unigram")],
               _run_tokenizer_json, {"tokenizer.json"}),
        Target("vocab.txt", [{"vocab.txt": "\n".join(VOCAB).encode() + b"\n"}], _run_vocab_txt),
        Target("vocab.json+merges", [{"vocab.json": vocab_json, "merges.txt": ("#version: 0.2\n" + "\n".join(MERGES)).encode()}],
               _run_vocab_json, {"vocab.json"}),
        Target("tiktoken", [{"m.tiktoken": tiktoken_bytes()}], _run_tiktoken),
        Target("config.json", [{"config.json": config_json()},
                               {"config.json": json.dumps({"model_type": "llava", "text_config": json.loads(config_json())}).encode()}],
               _run_config, {"config.json"}),
        Target("engine", tiny_model_folders(), _run_engine, {"config.json", "tokenizer.json", "tokenizer_config.json"}),
    ]
    return {t.name: t for t in targets}


# --- mutators ---------------------------------------------------------------------------------

BOUNDARY_INTS = [0, 1, 2**31 - 1, 2**32 - 1, 2**63, 2**64 - 1]


def _flip(rng: random.Random, b: bytearray, pool) -> None:
    if b:
        for _ in range(rng.randint(1, 8)):
            b[rng.randrange(len(b))] ^= 1 << rng.randrange(8)


def _random_run(rng, b, pool):
    pos = rng.randint(0, len(b))
    b[pos : pos + rng.randint(1, 32)] = rng.randbytes(rng.randint(1, 32))


def _boundary_int(rng, b, pool):
    width = rng.choice([4, 8])
    pos = rng.randint(0, max(len(b) - width, 0))
    b[pos : pos + width] = (rng.choice(BOUNDARY_INTS) % 2 ** (8 * width)).to_bytes(width, "little")


def _truncate(rng, b, pool):
    del b[rng.randint(0, len(b)) :]


def _insert(rng, b, pool):
    pos = rng.randint(0, len(b))
    b[pos:pos] = rng.randbytes(rng.randint(1, 64)) if rng.random() < 0.5 else bytes([rng.randrange(256)]) * rng.randint(1, 4096)


def _delete(rng, b, pool):
    pos = rng.randint(0, len(b))
    del b[pos : pos + rng.randint(1, 64)]


def _duplicate(rng, b, pool):
    if b:
        start = rng.randrange(len(b))
        chunk = b[start : start + rng.randint(1, 256)]
        pos = rng.randint(0, len(b))
        b[pos:pos] = chunk * rng.randint(1, 8)


def _splice(rng, b, pool):
    other = rng.choice(pool)
    cut, start = rng.randint(0, len(b)), rng.randint(0, len(other))
    b[cut:] = other[start : start + rng.randint(1, 4096)]


BYTE_MUTATORS = [_flip, _random_run, _boundary_int, _truncate, _insert, _delete, _duplicate, _splice]


class Raw:
    """A JSON token written as is: NaN, Infinity, a 5000-digit integer, 100k nested brackets."""

    def __init__(self, text: str):
        self.text = text


def dump_json(node: Any) -> str:
    if isinstance(node, Raw):
        return node.text
    if isinstance(node, dict):
        return "{" + ",".join(json.dumps(str(k)) + ":" + dump_json(v) for k, v in node.items()) + "}"
    if isinstance(node, list):
        return "[" + ",".join(dump_json(v) for v in node) + "]"
    return json.dumps(node)


def _weird_value(rng: random.Random) -> Any:
    depth = rng.choice([10, 990, 1000, 100_000])
    return rng.choice([
        None, True, False, 0, -1, 2**31 - 1, 2**32, 2**63, 2**64 - 1, -(2**63), 1e308, -0.0, 0.5, "", "x",
        [], {}, [[1, 2]], {"a": [None]}, ["a b"], [["a", "b", "c"]],
        Raw("NaN"), Raw("Infinity"), Raw("-Infinity"), Raw("1e999"), Raw("9" * rng.choice([20, 4300, 5000])),
        Raw("-" + "9" * 5000), "x" * rng.choice([1025, 100_000]), "\ud800", "a\u0000b",
        Raw("[" * depth + "]" * depth), Raw('{"a":' * depth + "1" + "}" * depth),
    ])


def _nodes(node: Any, out: list) -> list:
    """Every (container, key) slot in the tree."""
    if isinstance(node, dict):
        for k, v in node.items():
            out.append((node, k))
            _nodes(v, out)
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out.append((node, i))
            _nodes(v, out)
    return out


def mutate_json(rng: random.Random, raw: bytes) -> bytes:
    try:
        tree = json.loads(raw)
    except ValueError:
        return raw
    for _ in range(rng.randint(1, 3)):
        slots = _nodes(tree, [])
        if not slots:
            tree = _weird_value(rng)
            break
        parent, key = rng.choice(slots)
        action = rng.random()
        if action < 0.6:
            parent[key] = _weird_value(rng)
        elif action < 0.75:  # another node of the tree, of whatever type it is
            other, other_key = rng.choice(slots)
            parent[key] = copy.deepcopy(other[other_key])
        elif action < 0.85:
            del parent[key]
        elif isinstance(parent, dict):
            parent[rng.choice(["", "model", "vocab", "type", "added_tokens", "merges", "text_config", "x" * 2000])] = _weird_value(rng)
        else:
            parent.extend([parent[key]] * rng.randint(1, 1000))
    return dump_json(tree).encode("utf-8", "surrogatepass")


def mutate_bytes(rng: random.Random, raw: bytes, pool: list[bytes]) -> bytes:
    b = bytearray(raw)
    for _ in range(rng.choice([1, 1, 2, 3, 5])):
        rng.choice(BYTE_MUTATORS)(rng, b, pool)
    return bytes(b)


def mutate_safetensors_header(rng: random.Random, raw: bytes) -> bytes:
    """The JSON header mutated as a tree and packed again with its true length, so the mutation
    reaches the dtype/shape/offset checks instead of the length check."""
    (n,) = struct.unpack("<Q", raw[:8])
    header = mutate_json(rng, raw[8 : 8 + n])
    return struct.pack("<Q", len(header)) + header + raw[8 + n :]


def mutate_input(rng: random.Random, target: Target, pool: list[bytes]) -> tuple[dict[str, bytes], str]:
    """One fuzz input: a copy of a seed with one file mutated; returns (files, the mutated file's name)."""
    files = dict(rng.choice(target.seeds))
    name = rng.choice(sorted(files))
    if name in target.json_files and rng.random() < 0.5:
        files[name] = mutate_json(rng, files[name])
    elif name.endswith(".safetensors") and rng.random() < 0.5:
        files[name] = mutate_safetensors_header(rng, files[name])
    else:
        files[name] = mutate_bytes(rng, files[name], pool)
    return files, name
