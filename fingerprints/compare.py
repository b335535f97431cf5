"""Pairwise comparison of two fingerprints, with the evidence behind every number.

Weights are compared without trusting names:
1. Embedding rows are paired by token *string*. Their columns (hidden dimensions) are matched by
   a linear assignment on |correlation| (AWM's alignment), which recovers a permutation and sign
   flips of the hidden dimension; the matched correlation is judged against a null obtained by
   shuffling the token pairing (Zhu et al.'s advice: test the alignment against its own null).
2. Sampled tensors are paired by shape within each layer (a linear assignment on similarity when
   several share a shape, e.g. q/k/v/o), and layers are paired by a second assignment, so dropped
   layers and renamed tensors do not matter. Similarities are *centred* Pearson correlations:
   raw cosines of norm gains are ~1 for any two models (the Solar/GLM mistake), and near-constant
   tensors (fresh LayerNorms, buffers) are skipped, never counted as matches.
3. The relative size of the differences, tensor by tensor, tells added noise (the same relative
   size everywhere) from training (some tensors moved, others did not).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.optimize import linear_sum_assignment

from .components import compare_components, component_summary
from .config import config_similarity
from .model import Fingerprint, TensorSample, TokenRows, rare_special_tokens
from .tokenizer import minhash_jaccard
from . import verdict as V

# Alignment needs enough shared rows for the column correlations to mean something; below this
# the embedding anchor is reported as unavailable rather than guessed.
MIN_SHARED_TOKENS = 32
# Null repetitions for the alignment test; LAP on 4096 columns costs ~1 s, so big models get one.
NULL_REPEATS_SMALL, NULL_REPEATS_LARGE, LARGE_WIDTH = 3, 1, 2048
# A vector whose spread is below this, relative to its mean, is a constant (fresh LayerNorm gain,
# a buffer): comparing it would only compare initialisations.
CONSTANT_RELATIVE_STD = 1e-6
# Names of deterministic buffers: identical in independent models, so never evidence.
BUFFER_NAME_PARTS = ("inv_freq", "position_ids", "masked_bias", "attn.bias", "rotary_emb", "cos_cached", "sin_cached")


@dataclass
class EmbeddingMatch:
    shared_tokens: int
    direct: float | None  # mean centred row cosine without alignment (same width only)
    aligned: float  # mean matched |column correlation| after the assignment
    null_mean: float
    z: float  # (aligned - null_mean) / null sd of the mean
    identity_fraction: float  # share of hidden dims the assignment mapped to themselves
    score: float  # mean centred row cosine after applying the recovered permutation and signs
    rel_deltas: np.ndarray  # per shared row ||b - a|| / ||a - mean|| after alignment
    perm: np.ndarray  # perm[i] = B's dim matched to A's dim order[i]
    order: np.ndarray
    signs: np.ndarray


@dataclass
class TensorMatch:
    a: str
    b: str
    layer_a: int | None
    layer_b: int | None
    role: str
    similarity: float
    rel_delta: float
    aligned: bool  # the hidden-dimension permutation was applied to B


@dataclass
class Comparison:
    a: str
    b: str
    verdict: str
    confidence: float
    score: float
    kinds: list[str]
    evidence: list[str]
    config: dict[str, Any]
    tokenizer: dict[str, Any]
    weights: dict[str, Any]
    layer_matrix: list[list[float | None]] = field(default_factory=list)
    layers_a: list[int] = field(default_factory=list)
    layers_b: list[int] = field(default_factory=list)
    bytes_read: dict[str, int] = field(default_factory=dict)
    components: list[dict[str, Any]] = field(default_factory=list)  # per component of multimodal models

    def to_dict(self) -> dict[str, Any]:
        return {
            "a": self.a, "b": self.b, "verdict": self.verdict, "confidence": round(self.confidence, 4),
            "score": round(self.score, 4), "kinds": self.kinds, "evidence": self.evidence,
            "config": self.config, "tokenizer": self.tokenizer, "weights": self.weights,
            "bytes_read": self.bytes_read, "components": self.components,
        }


def _centred_rows(x: np.ndarray) -> np.ndarray:
    return x - x.mean(axis=0, keepdims=True)


def _row_cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    na, nb = np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1)
    ok = (na > 0) & (nb > 0)
    out = np.zeros(len(a))
    out[ok] = (a[ok] * b[ok]).sum(axis=1) / (na[ok] * nb[ok])
    return out


def _standardise_columns(x: np.ndarray) -> np.ndarray:
    x = x - x.mean(axis=0, keepdims=True)
    sd = x.std(axis=0, keepdims=True)
    return x / np.where(sd == 0, 1, sd)


def _assign(za: np.ndarray, zb: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    corr = za.T @ zb / len(za)
    rows, cols = linear_sum_assignment(-np.abs(corr))
    return rows, cols, corr[rows, cols]


def match_embeddings(ea: TokenRows, eb: TokenRows) -> EmbeddingMatch | None:
    index_b = {t: i for i, t in enumerate(eb.tokens)}
    pairs = [(i, index_b[t]) for i, t in enumerate(ea.tokens) if t in index_b]
    if len(pairs) < MIN_SHARED_TOKENS:
        return None
    ia, ib = map(np.array, zip(*pairs))
    xa, xb = ea.values[ia].astype(np.float64), eb.values[ib].astype(np.float64)
    direct = None
    if xa.shape[1] == xb.shape[1]:
        direct = float(_row_cosines(_centred_rows(xa), _centred_rows(xb)).mean())
    za, zb = _standardise_columns(xa), _standardise_columns(xb)
    order, perm, matched = _assign(za, zb)
    aligned = float(np.abs(matched).mean())
    rng = np.random.default_rng(0)
    repeats = NULL_REPEATS_LARGE if max(xa.shape[1], xb.shape[1]) > LARGE_WIDTH else NULL_REPEATS_SMALL
    null_means, null_sds = [], []
    for _ in range(repeats):
        _, _, null_matched = _assign(za, zb[rng.permutation(len(zb))])
        null_means.append(np.abs(null_matched).mean())
        null_sds.append(np.abs(null_matched).std() / np.sqrt(len(null_matched)))
    null_mean = float(np.mean(null_means))
    z = (aligned - null_mean) / max(float(np.mean(null_sds)), 1e-9)
    signs = np.sign(matched)
    same_width = xa.shape[1] == xb.shape[1]
    identity = float(np.mean(order == perm)) if same_width else 0.0
    if identity >= V.IDENTITY_PERMUTATION_MIN or z < V.ALIGNMENT_MIN_Z:
        # Without a significant non-trivial alignment, keep the identity pairing: the assignment
        # always finds *some* columns that correlate, which would inflate the null.
        order = perm = np.arange(min(xa.shape[1], xb.shape[1]))
        signs = np.ones(len(order))
    xb_aligned = xb[:, perm] * signs
    xa_sel = xa[:, order]
    score = float(_row_cosines(_centred_rows(xa_sel), _centred_rows(xb_aligned)).mean())
    denom = np.linalg.norm(xa_sel - xa_sel.mean(axis=1, keepdims=True), axis=1)
    rel = np.linalg.norm(xb_aligned - xa_sel, axis=1) / np.where(denom == 0, 1, denom)
    return EmbeddingMatch(len(pairs), direct, aligned, null_mean, z, identity, score, rel, perm, order, signs)


def _is_comparable(values: np.ndarray, name: str) -> bool:
    if any(part in name for part in BUFFER_NAME_PARTS):
        return False
    sd = float(values.std())
    return sd > CONSTANT_RELATIVE_STD * (abs(float(values.mean())) + CONSTANT_RELATIVE_STD)


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    a = a.ravel().astype(np.float64) - a.mean()
    b = b.ravel().astype(np.float64) - b.mean()
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    return float(a @ b / (na * nb)) if na > 0 and nb > 0 else 0.0


def _rel_delta(a: np.ndarray, b: np.ndarray) -> float:
    denom = np.linalg.norm(a - a.mean())
    return float(np.linalg.norm(b - a) / denom) if denom > 0 else float("inf")


def _tensor_similarity(sa: TensorSample, sb: TensorSample, hidden_map: np.ndarray | None):
    """Best of the plain and the hidden-aligned comparison; None when not comparable."""
    if sa.shape != sb.shape or sa.rows != sb.rows or sa.values.shape != sb.values.shape:
        return None
    if not (_is_comparable(sa.values, sa.name) and _is_comparable(sb.values, sb.name)):
        return None
    va, vb = sa.values, sb.values
    best = (_pearson(va, vb), _rel_delta(va, vb), False)
    if hidden_map is not None and va.shape[1] == len(hidden_map[0]):
        vb_aligned = vb[:, hidden_map[0]] * hidden_map[1]
        candidate = (_pearson(va, vb_aligned), _rel_delta(va, vb_aligned), True)
        if candidate[0] > best[0]:
            best = candidate
    return best


def _match_groups(samples_a: list[TensorSample], samples_b: list[TensorSample], hidden_map) -> list[TensorMatch]:
    """Pair tensors of the same shape, by assignment on similarity when a shape repeats."""
    by_shape_a: dict[tuple, list[TensorSample]] = {}
    by_shape_b: dict[tuple, list[TensorSample]] = {}
    for s in samples_a:
        by_shape_a.setdefault(tuple(s.shape), []).append(s)
    for s in samples_b:
        by_shape_b.setdefault(tuple(s.shape), []).append(s)
    matches = []
    for shape, group_a in by_shape_a.items():
        group_b = by_shape_b.get(shape)
        if not group_b:
            continue
        sims = [[_tensor_similarity(x, y, hidden_map) for y in group_b] for x in group_a]
        cost = np.array([[-(s[0] if s else -1.0) for s in row] for row in sims])
        for i, j in zip(*linear_sum_assignment(cost)):
            s = sims[i][j]
            if s is not None:
                x, y = group_a[i], group_b[j]
                matches.append(TensorMatch(x.name, y.name, x.layer, y.layer, x.role, s[0], s[1], s[2]))
    return matches


def _layer_score(matches: list[TensorMatch]) -> float | None:
    return float(np.median([m.similarity for m in matches])) if matches else None


def match_layers(fa: Fingerprint, fb: Fingerprint, hidden_map):
    sa = [s for s in fa.weights.samples if s.layer is not None]
    sb = [s for s in fb.weights.samples if s.layer is not None]
    layers_a = sorted({s.layer for s in sa})
    layers_b = sorted({s.layer for s in sb})
    group_a = {l: [s for s in sa if s.layer == l] for l in layers_a}
    group_b = {l: [s for s in sb if s.layer == l] for l in layers_b}
    matrix: list[list[float | None]] = []
    detail: dict[tuple[int, int], list[TensorMatch]] = {}
    for la in layers_a:
        row = []
        for lb in layers_b:
            m = _match_groups(group_a[la], group_b[lb], hidden_map)
            detail[(la, lb)] = m
            row.append(_layer_score(m))
        matrix.append(row)
    pairs: list[tuple[int, int, float]] = []
    if layers_a and layers_b:
        cost = np.array([[-(v if v is not None else -1.0) for v in row] for row in matrix])
        for i, j in zip(*linear_sum_assignment(cost)):
            if matrix[i][j] is not None:
                pairs.append((layers_a[i], layers_b[j], matrix[i][j]))
    globals_a = [s for s in fa.weights.samples if s.layer is None]
    globals_b = [s for s in fb.weights.samples if s.layer is None]
    global_matches = _match_groups(globals_a, globals_b, hidden_map)
    layer_matches = [m for la, lb, _ in pairs for m in detail[(la, lb)]]
    return matrix, layers_a, layers_b, pairs, layer_matches, global_matches


def compare_tokenizers(fa: Fingerprint, fb: Fingerprint) -> dict[str, Any]:
    ta, tb = fa.tokenizer, fb.tokenizer
    if ta is None or tb is None:
        return {"available": False}
    out: dict[str, Any] = {"available": True, "identical": ta.vocab_hash == tb.vocab_hash and ta.merges_hash == tb.merges_hash}
    if ta.vocab is not None and tb.vocab is not None:
        set_a, set_b = set(ta.vocab) - {""}, set(tb.vocab) - {""}
        shared = set_a & set_b
        out["jaccard"] = len(shared) / max(1, len(set_a | set_b))
        out["containment"] = len(shared) / max(1, min(len(set_a), len(set_b)))
        ids_a = {t: i for i, t in enumerate(ta.vocab) if t}
        ids_b = {t: i for i, t in enumerate(tb.vocab) if t}
        out["id_agreement"] = sum(ids_a[t] == ids_b[t] for t in shared) / max(1, len(shared))
    else:
        out["jaccard"] = minhash_jaccard(ta.minhash, tb.minhash)
        out["containment"] = out["jaccard"]
        out["id_agreement"] = None
    out["shared_rare_special_tokens"] = sorted(set(rare_special_tokens(ta)) & set(rare_special_tokens(tb)))
    out["standard_vocabulary"] = ta.standard_vocabulary or tb.standard_vocabulary
    out["merges_identical"] = ta.merges_hash is not None and ta.merges_hash == tb.merges_hash
    return out


def compare_configs(fa: Fingerprint, fb: Fingerprint) -> dict[str, Any]:
    ca, cb = fa.config, fb.config
    if ca is None or cb is None:
        return {"available": False}
    sim, diffs = config_similarity(ca, cb)
    return {
        "available": True, "similarity": round(sim, 4), "same_architecture": ca.arch_hash == cb.arch_hash,
        "identical": ca.exact_hash == cb.exact_hash, "differences": diffs,
        "renamed_keys": sorted(set(cb.renamed_keys) ^ set(ca.renamed_keys)),
        "identity_renamed": (ca.architectures != cb.architectures) or (ca.family != cb.family),
        "architectures": [ca.architectures, cb.architectures], "model_type": [ca.family, cb.family],
    }


def compare_fingerprints(fa: Fingerprint, fb: Fingerprint, reader_a=None, reader_b=None) -> Comparison:
    """Compare two fingerprints. Readers are accepted for callers that have them; the standard
    comparison needs only the fingerprints (it reads nothing more)."""
    config = compare_configs(fa, fb)
    tokenizer = compare_tokenizers(fa, fb)
    weights: dict[str, Any] = {"available": False}
    emb = None
    matrix: list[list[float | None]] = []
    layers_a: list[int] = []
    layers_b: list[int] = []
    tensor_matches: list[TensorMatch] = []
    wa, wb = fa.weights, fb.weights
    unreadable = V.unreadable_weights(fa, fb)
    if unreadable is not None:
        weights["reason"] = unreadable
    else:
        hidden_map = None
        if wa.embedding is not None and wb.embedding is not None:
            emb = match_embeddings(wa.embedding, wb.embedding)
        if emb is not None and emb.identity_fraction < V.IDENTITY_PERMUTATION_MIN and emb.z >= V.ALIGNMENT_MIN_Z:
            # Map B's columns into A's order, for tensors whose rows run along the hidden dim.
            inverse = np.empty_like(emb.order)
            inverse[emb.order] = np.arange(len(emb.order))
            hidden_map = (emb.perm[inverse], emb.signs[inverse])
        matrix, layers_a, layers_b, pairs, layer_matches, global_matches = match_layers(fa, fb, hidden_map)
        tensor_matches = layer_matches + global_matches
        weights = V.weight_evidence(fa, fb, emb, pairs, tensor_matches)
    result = V.decide(fa, fb, config, tokenizer, weights, emb, tensor_matches)
    # Multimodal models: one verdict per component as well (components.py).
    parts = compare_components(fa, fb, compare_fingerprints)
    if parts:
        line, extra_kinds = component_summary(parts)
        result.evidence.append(line)
        result.kinds += [k for k in extra_kinds if k not in result.kinds]
    return Comparison(
        a=fa.source, b=fb.source, verdict=result.verdict, confidence=result.confidence, score=result.score,
        kinds=result.kinds, evidence=result.evidence, config=config, tokenizer=tokenizer, weights=weights,
        layer_matrix=matrix, layers_a=layers_a, layers_b=layers_b,
        bytes_read={"a": fa.bytes_read, "b": fb.bytes_read}, components=parts,
    )
