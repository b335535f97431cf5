"""Weight sampling: which bytes of a checkpoint the fingerprint reads, and turning them into numbers.

The standard fingerprint reads at most ``TENSOR_BYTE_BUDGET`` bytes of tensor data whatever the
model's size. Samples are placed deterministically by *shape*, never by name, so two checkpoints
with the same shapes are sampled at the same places even when every tensor was renamed:

- embedding rows for a set of token *strings* (contiguous id blocks plus tokens picked by a hash
  of their string), so vocabularies that were extended or re-ordered still align by token;
- every 1-D tensor (norm gains and biases) of the sampled layers: they are indexed by the hidden
  dimension, which lets a permutation found on the embeddings be checked on them;
- a contiguous block of rows of each matrix in up to ``MAX_SAMPLED_LAYERS`` evenly spaced blocks.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

import numpy as np

from .components import LANGUAGE, component_of
from .model import TensorInfo, TensorSample, TokenRows, token_hashes
from .reader import RangeReader, RangeRequest
from .roles import EMBEDDING_ROLES, is_expert

# 1 MiB keeps a whole fingerprint (config, tokenizer, headers and samples) near or under 2 MiB.
# benchmarks/detection.py, 29 MiniLM cases: margin between the lowest derived and the highest
# independent score 0.709 at 2 MiB, 0.706 at 1.25 MiB, 0.702 at 1 MiB, 0.677 at 0.5 MiB; all 29
# correct at each. Changing it moves the sampled rows: bump FINGERPRINT_VERSION (model.py).
TENSOR_BYTE_BUDGET = 1024 * 1024
# Shares of the budget. Embedding rows carry the alignment (permutations, vocab changes), so they
# get half; vectors are small but numerous in deep models.
EMBEDDING_SHARE = 0.5
VECTOR_SHARE = 0.2
EMBEDDING_ROWS_MAX = 512
# Scattered rows cost one request each over HTTP; 48 keeps a 7B fingerprint near 100 requests.
HASHED_TOKENS_MAX = 48
EMBEDDING_BLOCKS = 4
MAX_SAMPLED_LAYERS = 8
ROWS_PER_MATRIX_MAX = 16

FLOAT_DTYPES = {"F64", "F32", "F16", "BF16"}


@dataclass(frozen=True)
class TensorLayout:
    """Where a tensor's rows lie in a file and how to turn their bytes into numbers.

    ``row_order`` maps each logical row (Hugging Face order) to its stored row, for formats that
    store rows permuted (llama.cpp's Q/K layout in GGUF); None means stored in order.
    ``dequantize`` decodes whole rows of a quantised type (GGUF); None means a plain float dtype.
    """

    name: str
    dtype: str
    shape: tuple[int, ...]
    file: str
    offset: int
    nbytes: int
    row_order: np.ndarray | None = None
    dequantize: object = None  # Callable[[np.ndarray], np.ndarray] on (n, row_bytes) uint8

    @property
    def row_bytes(self) -> int:
        return self.nbytes // self.shape[0] if self.shape and self.shape[0] else self.nbytes

    def requests(self, rows: list[int]) -> list[RangeRequest]:
        """Byte ranges of ``rows`` in that order; consecutive stored rows become one range."""
        rb = self.row_bytes
        reqs: list[RangeRequest] = []
        for r in rows:
            stored = int(self.row_order[r]) if self.row_order is not None else r
            start = self.offset + stored * rb
            if reqs and reqs[-1].offset + reqs[-1].length == start:
                last = reqs.pop()
                reqs.append(RangeRequest(self.file, last.offset, last.length + rb))
            else:
                reqs.append(RangeRequest(self.file, start, rb))
        return reqs

    def decode(self, raw: bytes, n_rows: int) -> np.ndarray:
        if self.dequantize is None:
            values = decode(raw, self.dtype).reshape(n_rows, -1)
        else:
            rows = np.frombuffer(raw, dtype=np.uint8).reshape(n_rows, self.row_bytes)
            with np.errstate(over="ignore", invalid="ignore"):
                values = np.asarray(self.dequantize(rows), dtype=np.float32).reshape(n_rows, -1)
        # Hub bytes may hold NaN/inf (hostile files, damaged quant scales). They carry no lineage
        # signal and would poison every statistic downstream, so they count as zeros.
        return np.nan_to_num(values, nan=0.0, posinf=0.0, neginf=0.0)


def decode(raw: bytes, dtype: str) -> np.ndarray:
    """Little-endian tensor bytes -> float32."""
    if dtype == "F32":
        return np.frombuffer(raw, dtype="<f4").astype(np.float32)
    if dtype == "F16":
        return np.frombuffer(raw, dtype="<f2").astype(np.float32)
    if dtype == "BF16":
        return (np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16).view(np.float32)
    if dtype == "F64":
        return np.frombuffer(raw, dtype="<f8").astype(np.float32)
    raise ValueError(f"not a float dtype: {dtype}")


@dataclass
class WeightSamples:
    embedding: TokenRows | None
    samples: list[TensorSample]
    tensor_bytes_read: int
    sample_digest: str
    value_digest: str


def _shape_seed(shape: tuple[int, ...]) -> int:
    return int.from_bytes(hashlib.blake2b(repr(tuple(shape)).encode(), digest_size=8).digest(), "little")


def pick_layers(layers: list[int]) -> list[int]:
    if len(layers) <= MAX_SAMPLED_LAYERS:
        return layers
    idx = np.linspace(0, len(layers) - 1, MAX_SAMPLED_LAYERS).round().astype(int)
    return [layers[i] for i in sorted(set(idx.tolist()))]


def embedding_token_ids(vocab: list[str] | None, rows: int, k: int, ranks: np.ndarray | None = None) -> list[int]:
    """Token ids to sample: EMBEDDING_BLOCKS contiguous blocks, then hash-ranked tokens.

    Block starts are fractions of the largest power of two below the vocabulary size, so a
    vocabulary extended by a few thousand tokens samples the same ids as its source. ``ranks``
    are the tokens' token_rank values when the tokenizer already computed them.
    """
    n_hashed = min(HASHED_TOKENS_MAX, k // 2)
    per_block = max(1, (k - n_hashed) // EMBEDDING_BLOCKS)
    span = 2 ** int(math.log2(max(rows, 2)))
    chosen: list[int] = []
    seen: set[int] = set()
    for j in range(EMBEDDING_BLOCKS):
        start = min(int(span * (0.15 + 0.2 * j)), max(0, rows - per_block))
        for i in range(start, min(rows, start + per_block)):
            if i not in seen and (vocab is None or (i < len(vocab) and vocab[i])):
                chosen.append(i)
                seen.add(i)
    if vocab is not None:
        n = min(rows, len(vocab))
        if ranks is None or len(ranks) < n:
            ranks = token_hashes(vocab[:n])
        eligible = np.fromiter(map(bool, vocab[:n]), dtype=bool, count=n)
        eligible[list(seen)] = False
        ids = np.flatnonzero(eligible)
        chosen += ids[np.argsort(ranks[:n][ids], kind="stable")[:n_hashed]].tolist()
    return sorted(chosen)


def find_embedding(tensors: list[TensorLayout], roles: dict[str, str]):
    named = [t for t in tensors if roles[t.name] in EMBEDDING_ROLES and len(t.shape) == 2]
    if named:
        return named[0]
    inferred = [t for t in tensors if roles[t.name] == "inferred:embedding"]
    return inferred[0] if inferred else None


def sample_weights(
    reader: RangeReader,
    tensors: list[TensorLayout],
    infos: list[TensorInfo],
    vocab: list[str] | None,
    budget: int = TENSOR_BYTE_BUDGET,
    ranks: np.ndarray | None = None,
) -> WeightSamples:
    by_name = {t.name: t for t in tensors}
    roles = {i.name: i.role for i in infos}
    layers_of = {i.name: i.layer for i in infos}
    float_tensors = [t for t in tensors if not is_expert(t.name) and t.nbytes > 0 and not roles[t.name].startswith("expert_")]
    # A multimodal model's components are sampled like models of their own (components.py): layers
    # are picked per component and the token embedding is the language model's.
    component = {t.name: component_of(t.name) for t in float_tensors}
    embedding = find_embedding([t for t in float_tensors if component[t.name] == LANGUAGE], roles)

    plan: list[tuple[TensorLayout, list[int]]] = []
    spent = 0
    emb_ids: list[int] = []
    if embedding is not None:
        k = int(min(EMBEDDING_ROWS_MAX, (budget * EMBEDDING_SHARE) // embedding.row_bytes))
        emb_ids = embedding_token_ids(vocab, embedding.shape[0], k, ranks) if k > 0 else []
        spent += len(emb_ids) * embedding.row_bytes

    sampled_layers = set()
    for part in set(component.values()):
        layers = sorted({layers_of[t.name] for t in float_tensors if component[t.name] == part and layers_of[t.name] is not None})
        sampled_layers |= {(part, layer) for layer in pick_layers(layers)}
    in_scope = [
        t for t in float_tensors
        if t is not embedding and (layers_of[t.name] is None or (component[t.name], layers_of[t.name]) in sampled_layers)
    ]
    vector_budget = budget * VECTOR_SHARE
    for t in sorted((t for t in in_scope if len(t.shape) == 1), key=lambda t: (layers_of[t.name] or -1, t.name)):
        if t.nbytes <= vector_budget:
            plan.append((t, [0]))
            vector_budget -= t.nbytes
            spent += t.nbytes

    matrices = [t for t in in_scope if len(t.shape) >= 2 and t.shape[0] > 0]
    remaining = budget - spent
    if matrices and remaining > 0:
        per_matrix = remaining / len(matrices)
        for t in sorted(matrices, key=lambda t: (layers_of[t.name] or -1, t.shape, t.name)):
            rows = int(min(ROWS_PER_MATRIX_MAX, t.shape[0], per_matrix // t.row_bytes))
            if rows < 1 or t.row_bytes > remaining:
                continue
            # Placed by the row count alone and independently of how many rows the budget allows,
            # so the same rows are read whatever the row width or dtype: a matrix whose input side
            # was sliced (SliceGPT) or quantised (GGUF) shares its sampled rows with the original.
            start = _shape_seed((t.shape[0],)) % (t.shape[0] - min(ROWS_PER_MATRIX_MAX, t.shape[0]) + 1)
            plan.append((t, list(range(start, start + rows))))
            remaining -= rows * t.row_bytes
            spent += rows * t.row_bytes

    requests: list[RangeRequest] = []
    spans: list[tuple[int, int]] = []
    if embedding is not None and emb_ids:
        reqs = embedding.requests(emb_ids)
        spans.append((len(requests), len(reqs)))
        requests += reqs
    for t, rows in plan:
        reqs = t.requests(rows) if len(t.shape) >= 2 else [RangeRequest(t.file, t.offset, t.nbytes)]
        spans.append((len(requests), len(reqs)))
        requests += reqs
    blobs = reader.read_ranges(requests) if requests else []
    raw_parts = [b"".join(blobs[s : s + n]) for s, n in spans]

    digest = hashlib.blake2b(digest_size=16)
    value_hashes: list[bytes] = []

    def account(name: str, dtype: str, raw: bytes, values: np.ndarray) -> None:
        digest.update(name.encode() + b"\0" + dtype.encode() + b"\0" + raw)
        rounded = (values.astype(np.float32).view(np.uint32) + np.uint32(0x8000)) >> np.uint32(16)
        value_hashes.append(hashlib.blake2b(rounded.astype(np.uint16).tobytes(), digest_size=16).digest())

    token_rows = None
    part = iter(raw_parts)
    if embedding is not None and emb_ids:
        raw = next(part)
        values = embedding.decode(raw, len(emb_ids))
        account(embedding.name, embedding.dtype, raw, values)
        tokens = [vocab[i] if vocab and i < len(vocab) else f"#{i}" for i in emb_ids]
        token_rows = TokenRows(embedding.name, tokens, emb_ids, values)
    samples = []
    for t, rows in plan:
        raw = next(part)
        values = t.decode(raw, 1 if len(t.shape) == 1 else len(rows))
        account(t.name, t.dtype, raw, values)
        samples.append(TensorSample(t.name, roles[t.name], layers_of[t.name], list(t.shape), t.dtype, rows, values))
    return WeightSamples(
        embedding=token_rows,
        samples=samples,
        tensor_bytes_read=sum(len(r) for r in raw_parts),
        sample_digest=digest.hexdigest(),
        value_digest=hashlib.blake2b(b"".join(sorted(value_hashes)), digest_size=16).hexdigest(),
    )
