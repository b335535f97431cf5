"""fingerprint_model: read a model through a RangeReader and compute its Fingerprint."""

from __future__ import annotations

from collections import Counter

from .config import config_signature, parse_config_json
from .errors import InvalidModelError
from .model import Fingerprint, TensorInfo, WeightsSignature, stable_hash
from .reader import RangeReader, read_small_file
from .roles import assign_role
from .safetensors_format import MAX_INDEX_BYTES, read_checkpoint
from .tokenizer import MAX_TOKENIZER_BYTES, read_tokenizer
from .weights import FLOAT_DTYPES, TENSOR_BYTE_BUDGET, sample_weights

MAX_CONFIG_BYTES = 4 * 1024 * 1024
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


def structure_hash(infos: list[TensorInfo]) -> str:
    """Hash of the tensor shape pattern, blind to names and dtypes.

    Model-level shapes plus the multiset of per-layer shape sets: a checkpoint with every tensor
    renamed, or cast to another dtype, keeps the same structure hash.
    """
    model_level = sorted(tuple(i.shape) for i in infos if i.layer is None)
    per_layer: dict[int, list[tuple[int, ...]]] = {}
    for i in infos:
        if i.layer is not None:
            per_layer.setdefault(i.layer, []).append(tuple(i.shape))
    layer_pattern = Counter(tuple(sorted(shapes)) for shapes in per_layer.values())
    return stable_hash([model_level, sorted([list(k), v] for k, v in layer_pattern.items())])


def _uninspectable(files: list[str]) -> str | None:
    kinds = sorted({UNINSPECTABLE_SUFFIXES[s] for f in files for s in UNINSPECTABLE_SUFFIXES if f.endswith(s)})
    return ", ".join(kinds) if kinds else None


def fingerprint_model(reader: RangeReader, budget: int = TENSOR_BYTE_BUDGET) -> Fingerprint:
    files = reader.list_files()

    def small(path: str, limit: int = MAX_TOKENIZER_BYTES) -> bytes:
        return read_small_file(reader, path, limit)

    config = None
    if "config.json" in files:
        config = config_signature(parse_config_json(small("config.json", MAX_CONFIG_BYTES)))
    tokenizer = read_tokenizer(files, small)
    vocab = tokenizer.vocab if tokenizer else None

    has_safetensors = any(f.endswith(".safetensors") and "/" not in f for f in files)
    weights: WeightsSignature | None
    if has_safetensors:
        tensors, _ = read_checkpoint(reader, files, lambda p: small(p, MAX_INDEX_BYTES))
        hidden = config.fields.get("hidden_size") if config else None
        vocab_size = len(vocab) if vocab else (config.fields.get("vocab_size") if config else None)
        infos = []
        for t in tensors:
            role, layer = assign_role(t.name, t.shape, hidden, vocab_size)
            infos.append(TensorInfo(t.name, t.dtype, list(t.shape), t.file, role, layer))
        float_infos = [i for i in infos if i.dtype in FLOAT_DTYPES]
        sampled = sample_weights(reader, tensors, infos, vocab, budget)
        emb = sampled.embedding
        layers = {i.layer for i in float_infos if i.layer is not None}
        weights = WeightsSignature(
            format="safetensors",
            tensors=infos,
            structure_hash=structure_hash(float_infos),
            hidden_size=int(emb.values.shape[1]) if emb is not None else hidden,
            num_layers=len(layers) or None,
            embedding=emb,
            samples=sampled.samples,
            sample_digest=sampled.sample_digest,
            value_digest=sampled.value_digest,
            file_sha256={f: h for f in files if (h := reader.file_sha256(f))},
            tensor_bytes_read=sampled.tensor_bytes_read,
        )
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
