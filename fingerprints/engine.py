"""fingerprint_model: read a model through a RangeReader and compute its Fingerprint."""

from __future__ import annotations

import re
import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext

import numpy as np

from .config import config_signature, parse_config_json
from .envelope import DEFAULT_ENVELOPE, LARGE_DOCUMENT_BYTES, ParseEnvelope
from .errors import InvalidModelError
from .model import (ConfigSignature, Fingerprint, TensorInfo, TokenizerSignature, WeightsSignature, stable_hash,
                    structure_hash)
from .reader import RangeReader, read_files_and_heads, read_small_file
from .roles import assign_role
from .safetensors_format import FIRST_READ_BYTES, INDEX_FILE, read_checkpoint, unindexed_files
from .tokenizer import ParsedTokenizer, read_tokenizer, tokenizer_files, tokenizer_signature
from .tokenizer_cache import CacheKey, TokenizerCache, tokenizer_cache_key
from .weights import FLOAT_DTYPES, TENSOR_BYTE_BUDGET, TensorLayout, sample_weights

# Formats that can only be opened by executing code or by libraries hubwatch does not run on
# untrusted bytes. Their configs and tokenizers are still fingerprinted.
UNINSPECTABLE_SUFFIXES = {
    ".bin": "PyTorch pickle",
    ".pt": "PyTorch pickle",
    ".pth": "PyTorch pickle",
    ".ckpt": "pickle checkpoint",
    ".pkl": "pickle",
    ".npz": "NumPy archive (may hold pickled objects)",
    ".msgpack": "Flax msgpack",
    ".h5": "Keras/TensorFlow HDF5",
}


def _uninspectable(files: list[str]) -> str | None:
    kinds = sorted({UNINSPECTABLE_SUFFIXES[s] for f in files for s in UNINSPECTABLE_SUFFIXES if f.endswith(s)})
    return ", ".join(kinds) if kinds else None


def fingerprint_model(reader: RangeReader, budget: int = TENSOR_BYTE_BUDGET,
                      tokenizers: TokenizerCache | None = None, envelope: ParseEnvelope = DEFAULT_ENVELOPE,
                      large_parse_lock: threading.Lock | None = None) -> Fingerprint:
    """``tokenizers``: signatures of tokenizers seen before, by file identity; a hit reads none
    of the tokenizer's files (see tokenizer_cache.py). ``envelope``: what each parsed document
    may cost (envelope.py). ``large_parse_lock``: shared by the threads of one process, so that
    tokenizers over LARGE_DOCUMENT_BYTES are parsed one at a time and their peaks do not add up."""
    files = reader.list_files()
    tokenizer_paths = tokenizer_files(files)
    tokenizer_key = tokenizer_cache_key(reader, tokenizer_paths) if tokenizers is not None else None
    if tokenizers is None or tokenizer_key is None:
        return _fingerprint_model(reader, files, tokenizer_paths, budget, tokenizers, None, None, envelope,
                                  large_parse_lock)
    # A miss claims the key: other threads with the same tokenizer wait for this one's parse.
    cached_tokenizer = tokenizers.claim(tokenizer_key)
    try:
        return _fingerprint_model(reader, files, tokenizer_paths, budget, tokenizers, tokenizer_key, cached_tokenizer,
                                  envelope, large_parse_lock)
    finally:
        tokenizers.release(tokenizer_key)  # when it failed before its signature was put


def _fingerprint_model(reader: RangeReader, files: list[str], tokenizer_paths: list[str], budget: int,
                       tokenizers: TokenizerCache | None, tokenizer_key: CacheKey | None,
                       cached_tokenizer: TokenizerSignature | None, envelope: ParseEnvelope,
                       large_parse_lock: threading.Lock | None) -> Fingerprint:
    has_safetensors = any(f.endswith(".safetensors") and "/" not in f for f in files)
    gguf_file = choose_gguf_file(files)

    # Every small file the fingerprint may need, and the start of every weights file whose header
    # is known to be needed, fetched in one batch (one round trip over HTTP). Shards listed in an
    # index are read next, sized by the index.
    limits = {p: envelope.cap_for(p) for p in ("config.json", INDEX_FILE) if p in files}
    if cached_tokenizer is None:
        limits.update({p: envelope.cap_for(p) for p in tokenizer_paths})
    heads: dict[str, int] = {}
    if has_safetensors and INDEX_FILE not in files:
        heads = dict.fromkeys(unindexed_files(files), FIRST_READ_BYTES)
    elif not has_safetensors and gguf_file is not None:
        from .gguf_format import FIRST_CHUNK_BYTES

        heads = {gguf_file: FIRST_CHUNK_BYTES}
    prefetched, prefetched_heads = read_files_and_heads(reader, limits, heads)

    def small(path: str) -> bytes:
        return prefetched[path] if path in prefetched else read_small_file(reader, path, envelope.cap_for(path))

    config = None
    if "config.json" in files:
        config = config_signature(parse_config_json(small("config.json"), "config.json", envelope))
    # An indexed checkpoint's shard headers take one more round trip: parse the tokenizer (a few
    # hundred ms for a 131k vocabulary) while they are in flight. Only the worker touches the
    # reader; the tokenizer's files were all prefetched above.
    with ThreadPoolExecutor(max_workers=1) as pool:
        checkpoint = (pool.submit(read_checkpoint, reader, files, small, prefetched_heads,
                                  envelope) if has_safetensors else None)
        large = sum(len(prefetched.get(p, b"")) for p in tokenizer_paths) > LARGE_DOCUMENT_BYTES
        with large_parse_lock if large and large_parse_lock is not None else nullcontext():
            tokenizer = cached_tokenizer or read_tokenizer(files, small, envelope)
    if tokenizers is not None and tokenizer_key and cached_tokenizer is None and tokenizer is not None:
        tokenizers.put(tokenizer_key, tokenizer)
    vocab = tokenizer.vocab if tokenizer else None

    weights: WeightsSignature | None
    if checkpoint is not None:
        tensors, _ = checkpoint.result()
        layouts = [TensorLayout(t.name, t.dtype, t.shape, t.file, t.offset, t.nbytes) for t in tensors]
        hidden = config.fields.get("hidden_size") if config else None
        vocab_size = len(vocab) if vocab else (config.fields.get("vocab_size") if config else None)
        infos = []
        for t in tensors:
            role, layer = assign_role(t.name, t.shape, hidden, vocab_size)
            infos.append(TensorInfo(t.name, t.dtype, list(t.shape), t.file, role, layer))
        weights = _sampled_weights("safetensors", reader, files, layouts, infos, tokenizer, hidden, budget)
    elif gguf_file is not None:
        from . import gguf_format as G  # the gguf package is only needed for GGUF repos

        header = G.parse_gguf_header(reader, gguf_file, prefetched_heads[gguf_file], envelope.max_header_bytes)
        arch = G.gguf_architecture(header)
        if config is None:
            config = _config_from_gguf(arch)
        if tokenizer is None:
            tokenizer = _tokenizer_from_gguf(G.gguf_tokenizer(header), gguf_file)
        layouts, infos = _gguf_layouts(G, header, arch)
        weights = _sampled_weights("gguf", reader, files, layouts, infos, tokenizer, arch.get("embedding_length"), budget)
    elif (kind := _uninspectable(files)) is not None:
        weights = WeightsSignature(
            format="uninspectable", tensors=[], structure_hash=None, hidden_size=None, num_layers=None,
            embedding=None, samples=[], sample_digest=None, value_digest=None,
            file_sha256={f: h for f in files if (h := reader.file_sha256(f))}, tensor_bytes_read=0,
            note=f"weights are stored as {kind}; hubwatch never unpickles or executes model files, "
                 "so only the config and tokenizer were fingerprinted",
        )
    else:
        weights = None
    if config is None and tokenizer is None and weights is None:
        raise InvalidModelError(f"{reader.name}: no config.json, tokenizer or weights found")
    return Fingerprint(
        source=reader.name, config=config, tokenizer=tokenizer, weights=weights,
        bytes_read=reader.bytes_read, requests=reader.requests,
    )


def _sampled_weights(fmt, reader, files, layouts, infos, tokenizer, hidden, budget) -> WeightsSignature:
    decodable = {i.name for i in infos if i.dtype in FLOAT_DTYPES or fmt == "gguf"}
    vocab, ranks = (tokenizer.vocab, tokenizer.token_hashes) if tokenizer else (None, None)
    sampled = sample_weights(reader, [l for l in layouts if l.name in decodable], infos, vocab, budget, ranks)
    emb = sampled.embedding
    layers = {i.layer for i in infos if i.layer is not None and i.name in decodable}
    return WeightsSignature(
        format=fmt,
        tensors=infos,
        structure_hash=structure_hash([i for i in infos if i.name in decodable]),
        hidden_size=int(emb.values.shape[1]) if emb is not None else hidden,
        num_layers=len(layers) or None,
        embedding=emb,
        samples=sampled.samples,
        sample_digest=sampled.sample_digest,
        value_digest=sampled.value_digest,
        file_sha256={f: h for f in files if (h := reader.file_sha256(f))},
        tensor_bytes_read=sampled.tensor_bytes_read,
    )


def tensor_layouts(reader: RangeReader) -> list[TensorLayout]:
    """Where every decodable tensor of the checkpoint lies and how to decode it (headers only).

    The fingerprint reads a fixed sample; the deep comparison (deep.py) reads more of the same
    tensors and needs their places again.
    """
    files = reader.list_files()
    if any(f.endswith(".safetensors") and "/" not in f for f in files):
        tensors, _ = read_checkpoint(reader, files, lambda p: read_small_file(reader, p, MAX_INDEX_BYTES))
        return [TensorLayout(t.name, t.dtype, t.shape, t.file, t.offset, t.nbytes) for t in tensors if t.dtype in FLOAT_DTYPES]
    gguf_file = choose_gguf_file(files)
    if gguf_file is None:
        return []
    from . import gguf_format as G

    header = G.parse_gguf_header(reader, gguf_file)
    return _gguf_layouts(G, header, G.gguf_architecture(header))[0]


# Preference when a repo ships several quantisations: the least lossy first.
GGUF_QUALITY = ("f32", "bf16", "f16", "q8_0", "q6_k", "q5_k", "q5_0", "q4_k", "q4_0", "iq4", "q3_k", "q2_k")
_GGUF_SHARD_RX = re.compile(r"-(\d{5})-of-(\d{5})\.gguf$")


def choose_gguf_file(files: list[str]) -> str | None:
    """One GGUF file to fingerprint: the first shard of the least lossy quantisation."""
    ggufs = [f for f in files if f.lower().endswith(".gguf") and "mmproj" not in f.lower()]
    ggufs = [f for f in ggufs if not (m := _GGUF_SHARD_RX.search(f)) or m.group(1) == "00001"]
    if not ggufs:
        return None

    def quality(name: str) -> tuple[int, str]:
        low = name.lower()
        return next((i for i, q in enumerate(GGUF_QUALITY) if q in low), len(GGUF_QUALITY)), name

    return min(ggufs, key=quality)


# GGUF architecture keys -> canonical config fields (config.py's names).
_GGUF_CONFIG_FIELDS = {
    "embedding_length": "hidden_size", "block_count": "num_layers", "head_count": "num_heads",
    "head_count_kv": "num_kv_heads", "feed_forward_length": "intermediate_size", "vocab_size": "vocab_size",
    "context_length": "max_positions", "rope_freq_base": "rope_theta", "expert_count": "num_experts",
    "expert_used_count": "experts_per_token",
}


def _config_from_gguf(arch: dict) -> ConfigSignature:
    fields = {canon: arch[k] for k, canon in _GGUF_CONFIG_FIELDS.items() if isinstance(arch.get(k), (int, float))}
    return ConfigSignature(
        family=arch["architecture"], architectures=[], fields=fields, arch_hash=stable_hash(fields),
        exact_hash=stable_hash({k: v for k, v in arch.items() if k not in ("name", "basename", "file_type")}),
        renamed_keys={},
    )


# tokenizer.ggml.model -> hubwatch's tokenizer kinds; token_type 3 = CONTROL, 4 = USER_DEFINED.
_GGUF_TOKENIZER_KINDS = {"gpt2": "bpe", "llama": "sentencepiece", "bert": "wordpiece", "t5": "unigram"}


def _tokenizer_from_gguf(tok: dict | None, path: str) -> TokenizerSignature | None:
    if tok is None:
        return None
    types = tok.get("token_types") or []
    tokens = tok["tokens"]
    special = [t for t, ty in zip(tokens, types) if ty == 3]
    added = [t for t, ty in zip(tokens, types) if ty == 4]
    kind = _GGUF_TOKENIZER_KINDS.get(tok.get("model") or "", tok.get("model") or "gguf")
    return tokenizer_signature(ParsedTokenizer(kind, path, list(tokens), tok.get("merges"), added, special))


def _gguf_layouts(G, header, arch: dict) -> tuple[list[TensorLayout], list[TensorInfo]]:
    layouts, infos = [], []
    n_head, n_head_kv = arch.get("head_count"), arch.get("head_count_kv")
    for t in header.tensors:
        if t.ggml_type not in G.DEQUANTIZABLE_TYPES or (t.byte_order == ">" and t.ggml_type not in G.BIG_ENDIAN_ROW_TYPES):
            continue
        role, layer = G.gguf_name_to_hf_role(t.name)
        role = role or "inferred:unknown"
        row_order = None
        if arch.get("qk_permuted") and role in ("attn_q", "attn_k") and isinstance(n_head, int) and len(t.shape) == 2:
            kv = n_head if role == "attn_q" else (n_head_kv if isinstance(n_head_kv, int) else n_head)
            hf_of_stored = G.gguf_qk_rows_to_hf_rows(np.arange(t.shape[0]), t.shape[0], n_head, kv)
            row_order = np.argsort(hf_of_stored)  # logical (HF) row -> stored row
        qtype = t.ggml_type
        if t.byte_order == ">":
            dequant = (lambda rows, dt=G.BIG_ENDIAN_ROW_TYPES[qtype]: rows.view(dt).astype(np.float32))
        elif qtype in ("F32", "F16", "BF16"):
            dequant = None
        else:
            dequant = (lambda rows, q=qtype: G.dequantize(rows, G.GGMLQuantizationType[q]))
        shape = tuple(t.shape) if len(t.shape) <= 2 else (int(np.prod(t.shape[:-1])), t.shape[-1])
        layouts.append(TensorLayout(t.name, qtype, shape, header.path, t.offset_abs, t.n_bytes, row_order, dequant))
        infos.append(TensorInfo(t.name, qtype, list(t.shape), header.path, role, layer))
    return layouts, infos
