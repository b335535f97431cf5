"""A model's sketch: a fixed-length, unit-norm vector for approximate nearest-neighbour search.

Every sketch is built from similarities that no permutation, sign flip or rotation of the hidden
dimension changes (cosines between embedding rows, or between a matrix's rows), so permuted and
rotated copies land next to their source. There are two kinds; a store keeps each row's kind and
compares a query with each row in that row's kind (store/vectors.py):

- ``SKETCH_ORDERED`` (stores before schema 6): the upper triangle of the cosine matrix of the
  centred embedding rows of the ``SKETCH_TOKENS`` sampled tokens with the lowest raw token hash,
  in hash order. A copy under another vocabulary shares few of those tokens, and one token
  missing shifts every later position: vocab-prune, vocab-replaced and llama.cpp's spelling of
  MiniLM scored 0.22-0.36 against their source, under the 0.42-0.57 of independent pairs (the
  shared -1/(n-1) offset that centring 23 rows gives every cosine).
- ``SKETCH_PAIRS`` (what new rows store): similarities added into signed hash buckets chosen by
  what the pair is (two canonically spelled tokens, or two rows of one matrix), so a pair lands
  in the same bucket whatever else either model holds, with three parts:
  * spelling: the ``SKETCH_TOKENS`` sampled tokens with the lowest raw token hash (the hashed
    half of ``weights.embedding_token_ids``): a pruned or extended vocabulary keeps most of them;
  * position: the first ``BLOCK_HEAD`` tokens of every contiguous block of sampled ids (the
    blocks of ``embedding_token_ids``, at the same ids whatever the spelling, dtype or sample
    size): a GGUF in llama.cpp's spelling or a cast copy samples the same ones;
  * body: cosines between the first ``BODY_ROWS`` sampled rows of each matrix reading the residual
    stream, its norm gain folded in (the row Gram of fingerprints/compare.py): no embedding
    needed, so a body copied under a new tokenizer still meets its source.
  Token pairs' cosines are centred (their mean removed): centring the rows gives every cosine the
  same negative offset, which made independent sketches look alike.
"""

from __future__ import annotations

import numpy as np

from .model import Fingerprint, splitmix64, token_hashes
from .roles import GAIN_OF_ROLE
from .tokenizer import canonical_tokens

# Length of every sketch; the store's vector index is built for this size.
SKETCH_DIM = 256
# Tokens in the ordered sketch's cosine matrix, C(23, 2) = 253 <= 256; and in the pairs sketch's
# spelling part (its 23 lowest-hash tokens: 15 of them survive vocab-prune's 60 % pruning).
SKETCH_TOKENS = 23

SKETCH_ORDERED = "ordered"
SKETCH_PAIRS = "pairs"
SKETCH_KINDS = (SKETCH_ORDERED, SKETCH_PAIRS)
SKETCH_KIND = SKETCH_PAIRS  # what a new row stores

# Tokens taken from the head of each contiguous block of sampled ids: a 7B model's 64 sampled rows
# hold 4 blocks of 8; MiniLM's 340 (float32) blocks of 73 and its float16 casts' 512 blocks of 116
# share their first 8 whatever the sample size. (A 70B model's 32 rows hold blocks of 4: all are
# taken, and its 4-bit GGUF, with longer blocks, shares half of its first 8.)
BLOCK_HEAD = 8
# Sampled rows per matrix in the body part: MiniLM's float32 matrices give 6, casts to 16 bits more
# (all placed from the same first row, weights.py), so the first 4 are read by every copy.
BODY_ROWS = 4
# Each part's share of the pairs sketch's squared norm, i.e. of the cosine when the other parts do
# not match. Measured on benchmarks/sketch.py's cases: a copy under another vocabulary matches on
# one part (llama.cpp's spelling of permuted MiniLM on position, vocab-replaced on body) or on
# spelling partly (vocab-prune: 0.40) and body, so the position and body parts carry most.
PART_WEIGHTS = {"spelling": 0.2, "position": 0.4, "body": 0.4}
_PART_TAGS = {"spelling": 1, "position": 2, "body": 3}

# Per kind, the sketch cosine at and above which a stored model may share weights with the query
# (store/nearest.py re-reads a compact one from the Hub to compare them; the store ranks candidates
# of both kinds by their distance from it). Measured with benchmarks/sketch.py on
# benchmarks/detection.py's cases:
# - ordered: every derived case under the source's own vocabulary >= 0.705 (noise 1.0 x spread;
#   all others >= 0.768), every independent pair <= 0.568; copies under another vocabulary 0.22-0.36
#   (vocab-prune, vocab-replaced, llama.cpp's spelling) fall under it and pass the screen only on
#   identity keys or the config-and-tokenizer comparison.
# - pairs: every derived case >= 0.410 (vocab-replaced; llama.cpp's spelling of permuted MiniLM
#   0.421, vocab-prune 0.511, SmolLM2's rotated body under a new tokenizer 0.482), every independent
#   pair <= 0.146 (two BERT initialisations, one under vocab-extend's tokenizer): the screen sits
#   midway.
SKETCH_SCREEN_MIN = {SKETCH_ORDERED: 0.6, SKETCH_PAIRS: 0.27}


def sketch_vector(fp: Fingerprint, kind: str = SKETCH_KIND) -> np.ndarray:
    """``fp``'s sketch of ``kind`` (float32, unit norm; zeros when it has nothing to sketch)."""
    if kind == SKETCH_ORDERED:
        return _ordered(fp)
    if kind == SKETCH_PAIRS:
        return _pairs(fp)
    raise ValueError(f"sketch kind must be one of {', '.join(SKETCH_KINDS)}, not {kind!r}")


def _unit_rows(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norms == 0, 1, norms)


def _ordered(fp: Fingerprint) -> np.ndarray:
    out = np.zeros(SKETCH_DIM, dtype=np.float32)
    emb = fp.weights.embedding if fp.weights else None
    if emb is None or len(emb.tokens) < SKETCH_TOKENS:
        return out
    order = np.argsort(token_hashes(emb.tokens), kind="stable")[:SKETCH_TOKENS]
    rows = emb.values[order].astype(np.float64)
    rows = _unit_rows(rows - rows.mean(axis=0, keepdims=True))
    tri = (rows @ rows.T)[np.triu_indices(SKETCH_TOKENS, k=1)]
    out[: tri.size] = tri
    n = np.linalg.norm(out)
    return out / n if n > 0 else out


def _unit(v: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(v)
    return v / n if n > 0 else v


def _pair_cosines(groups: list[tuple[list[str], np.ndarray]], centre: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every pair of rows within each group of (names, rows): the two names' hashes, lower first, and
    the pair's cosine (the mean cosine subtracted when ``centre``)."""
    names: list[str] = []
    firsts, seconds, values = [], [], []
    for group_names, rows in groups:
        unit = _unit_rows(rows)
        i, j = np.triu_indices(len(rows), k=1)
        values.append((unit @ unit.T)[i, j])
        firsts.append(len(names) + i)
        seconds.append(len(names) + j)
        names += group_names
    if not names:
        return np.zeros(0, dtype=np.uint64), np.zeros(0, dtype=np.uint64), np.zeros(0)
    cosines = np.concatenate(values)
    if centre and len(cosines):
        cosines = cosines - cosines.mean()
    hashes = token_hashes(names)
    i, j = np.concatenate(firsts), np.concatenate(seconds)
    return np.minimum(hashes[i], hashes[j]), np.maximum(hashes[i], hashes[j]), cosines


def _buckets(tag: int, low: np.ndarray, high: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Each pair's value added, with a sign, into the bucket that a hash of its two names picks."""
    with np.errstate(over="ignore"):
        keys = splitmix64(splitmix64(low ^ np.uint64(tag)) + high)
    signs = np.where(keys >> np.uint64(63) == 1, -1.0, 1.0)
    out = np.zeros(SKETCH_DIM, dtype=np.float64)
    np.add.at(out, (keys % np.uint64(SKETCH_DIM)).astype(np.int64), signs * values)
    return out


def _block_heads(ids: list[int]) -> np.ndarray:
    """Positions of the first BLOCK_HEAD ids (all, in a shorter one) of every run of consecutive ids;
    a lone id is a hashed token, not a block."""
    ids_arr = np.asarray(ids, dtype=np.int64)
    if not len(ids_arr):
        return np.zeros(0, dtype=np.int64)
    starts = np.r_[True, np.diff(ids_arr) != 1]
    run_start = np.maximum.accumulate(np.where(starts, np.arange(len(ids_arr)), 0))
    run = np.cumsum(starts) - 1
    run_length = np.bincount(run)[run]
    return np.flatnonzero((np.arange(len(ids_arr)) - run_start < BLOCK_HEAD) & (run_length > 1))


def _body(fp: Fingerprint) -> np.ndarray:
    """Row cosines of each sampled matrix that reads the residual stream, its norm gain folded in
    (W·diag(g): a rotation of the residual stream with the gain folded in, W' = W·diag(g)·Qᵀ, keeps
    them), keyed by (role, layer, row). Rows are not centred: a centring over the hidden coordinates
    is not rotation-invariant."""
    w = fp.weights
    gains = {(s.layer, s.role): s.values.ravel() for s in w.samples if len(s.shape) == 1}
    groups = []
    for s in w.samples:
        if s.role in GAIN_OF_ROLE and len(s.shape) == 2 and s.shape[1] == w.hidden_size:
            rows = s.values[:BODY_ROWS].astype(np.float64)
            gain = gains.get((s.layer, GAIN_OF_ROLE[s.role]))
            if gain is not None and gain.shape == (rows.shape[1],):
                rows = rows * gain
            groups.append(([f"{s.role}/{s.layer}/{r}" for r in s.rows[:BODY_ROWS]], rows))
    return _buckets(_PART_TAGS["body"], *_pair_cosines(groups, centre=False))


def _pairs(fp: Fingerprint) -> np.ndarray:
    w = fp.weights
    if w is None:
        return np.zeros(SKETCH_DIM, dtype=np.float32)
    parts = {"body": _body(fp)}
    emb = w.embedding
    if emb is not None:
        canonical = canonical_tokens(emb.tokens)
        rows = emb.values.astype(np.float64)
        rows = rows - rows.mean(axis=0, keepdims=True)
        for part, picked in (("spelling", np.argsort(token_hashes(emb.tokens), kind="stable")[:SKETCH_TOKENS]),
                             ("position", _block_heads(emb.ids))):
            pairs = _pair_cosines([([canonical[i] for i in picked], rows[picked])], centre=True)
            parts[part] = _buckets(_PART_TAGS[part], *pairs)
    out = sum(np.sqrt(PART_WEIGHTS[part]) * _unit(v) for part, v in parts.items())
    return _unit(out).astype(np.float32)
