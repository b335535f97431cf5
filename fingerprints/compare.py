"""Pairwise comparison of two fingerprints, with the evidence behind every number.

Weights are compared without trusting names, cheapest test first (a cascade):
1. Embedding rows are paired by token string, spelled canonically across tokenizer conventions
   (tokenizer.canonical_tokens). Two scores cost one matrix product each: the centred row cosine
   as the rows are (a copy in the same basis), and the correlation of the token-token cosine
   matrices (the Gram), which no orthogonal map of the hidden dimension changes: permutations,
   sign flips, rotations (QuaRot/SpinQuant) and, approximately, deleted directions (SliceGPT).
   The first decides copies in the same basis, a low Gram decides independence; only a high Gram
   with disagreeing rows asks how the basis moved. A probe of a few of B's columns against all of
   A's tells a permutation (each probed column has one partner) from a rotation (none has), and
   only a permutation pays for the linear assignment (AWM's alignment) that recovers it.
2. Sampled tensors are paired by shape within each layer (a linear assignment on similarity when
   several share a shape, e.g. q/k/v/o), and layers are paired by a second assignment, so dropped
   layers and renamed tensors do not matter. Similarities are *centred* Pearson correlations:
   raw cosines of norm gains are ~1 for any two models (the Solar/GLM mistake), and near-constant
   tensors (fresh LayerNorms, buffers) are skipped, never counted as matches. Matrices that read
   the residual stream also get a rotation-invariant similarity: E·(W·diag(g))ᵀ, the shared
   tokens' embedding rows E times the sampled rows W with the preceding norm gain g folded in,
   is the same number in a rotated, norm-folded copy (E' = EQ, W' = W·diag(g)·Q, g' = 1). With no
   embedding rows to pair (a body under a new tokenizer), the cosines between a reading matrix's
   own sampled rows, (W·diag(g))(W·diag(g))ᵀ, are the rotation-invariant view instead.
3. The differences, tensor by tensor, tell a cast or quantisation (rounding relative to each value),
   a function-preserving rescaling (exact after scaling rows or columns), a low-rank update (a
   merged LoRA), a merge (A's same share of B in every tensor), added noise (the same relative
   size everywhere) and training (uneven).
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.optimize import linear_sum_assignment

from . import verdict as V
from .components import compare_components, component_summary
from .config import config_similarity
from .experts import expert_note
from .facts import (
    ComparisonFacts, ConfigFacts, EmbeddingMatch, HiddenTransform, LayerPair, MergeEstimate, MergeFit, TensorMatch,
    TokenizerFacts, WeightFacts,
)
from .model import Fingerprint, TensorSample, TokenRows, rare_special_tokens
from .roles import GAIN_OF_ROLE
from .tokenizer import canonical_tokens, minhash_jaccard, token_convention

# Alignment needs enough shared rows for the column correlations to mean something; below this
# the embedding anchor is reported as unavailable rather than guessed.
MIN_SHARED_TOKENS = 32
# Columns of B the permutation-or-rotation probe correlates with all of A's: a median over 32
# columns, at 32/width of the cost of the full correlation matrix.
PROBE_COLUMNS = 32
# A vector whose spread is below this, relative to its mean, is a constant (fresh LayerNorm gain,
# a buffer): comparing it would only compare initialisations.
CONSTANT_RELATIVE_STD = 1e-6
# Names of deterministic buffers: identical in independent models, so never evidence.
BUFFER_NAME_PARTS = ("inv_freq", "position_ids", "masked_bias", "attn.bias", "rotary_emb", "cos_cached", "sin_cached")
# Shared tokens whose embedding rows make the invariant forms E·(W·diag(g))ᵀ: 128 tokens x the
# 1-16 sampled rows of a matrix, at a quarter of the cost of 512 tokens (SmolLM2 comparison
# 7 s -> 1.3 s on this loaded machine, the same verdicts).
INVARIANT_TOKENS = 128
# A matrix's row Gram needs pairs of rows: 3 rows give 3 cosines, MiniLM's ~6 sampled rows 15,
# SmolLM2's ~7 21 (a correlation over fewer is noise).
ROW_GRAM_MIN_ROWS = 3
# A difference has rank r where its singular values fall by at least this factor from the r-th to
# the next, within the first half of them (a random matrix's last few fall steeply too). Measured
# on MiniLM's merged rank-8 LoRA read whole: a fall of ~1e5 after the 8th (float32 round-off), and
# a rank-16 update stored in bf16 falls ~1e2 after the 16th (tests/test_deep.py); training and
# noise change every row independently and fall by less than 2 from one value to the next.
LOW_RANK_GAP_MIN = 10.0
# A per-column scale fitted on so few rows fits any change; from 4 rows on, 3 of every column's 4
# values must agree for the fit to be exact (MiniLM's matrices get ~6 sampled rows).
RESCALE_COLUMN_MIN_ROWS = 4


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
    # The sampled bytes could not decide: `hubwatch compare --deep` reads more before anyone alerts.
    needs_deep: bool = False
    components: list[dict[str, Any]] = field(default_factory=list)  # per component of multimodal models

    def to_dict(self) -> dict[str, Any]:
        return {
            "a": self.a, "b": self.b, "verdict": str(self.verdict), "confidence": round(self.confidence, 4),
            "score": round(self.score, 4), "kinds": [str(k) for k in self.kinds], "evidence": self.evidence,
            "needs_deep": self.needs_deep, "config": self.config, "tokenizer": self.tokenizer,
            "weights": self.weights, "bytes_read": self.bytes_read, "components": self.components,
        }


# ---- small numeric helpers ---------------------------------------------------------------------

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


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    a = a.ravel().astype(np.float64)
    b = b.ravel().astype(np.float64)
    a, b = a - a.mean(), b - b.mean()
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    return float(a @ b / (na * nb)) if na > 0 and nb > 0 else 0.0


def _rel_delta(a: np.ndarray, b: np.ndarray) -> float:
    denom = np.linalg.norm(a - a.mean())
    return float(np.linalg.norm(b - a) / denom) if denom > 0 else float("inf")


def _raw_rel_delta(a: np.ndarray, b: np.ndarray) -> float:
    denom = np.linalg.norm(a)
    return float(np.linalg.norm(b - a) / denom) if denom > 0 else float("inf")


def _centred_unit(x: np.ndarray) -> np.ndarray:
    """x flattened, centred and scaled to norm 1: the Pearson correlation of two is their dot product."""
    x = x.ravel()
    x = x - x.mean()
    norm = np.linalg.norm(x)
    return x / norm if norm > 0 else x


def _unit_rows(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norms == 0, 1, norms)


def gram_correlation(ca: np.ndarray, cb: np.ndarray) -> float:
    """Correlation of the token-token cosine matrices of two sets of (paired, column-centred) rows.

    Unchanged by any orthogonal map of either side's columns, and by their widths: the cheap,
    name-free test of "same token geometry" that runs before any alignment.
    """
    ga = _unit_rows(ca)
    gb = _unit_rows(cb)
    upper = np.triu_indices(len(ca), k=1)
    return _pearson((ga @ ga.T)[upper], (gb @ gb.T)[upper])


# ---- tokenizer and config ----------------------------------------------------------------------

@dataclass(frozen=True)
class _CanonicalVocab:
    convention: str
    ids: dict[str, int]  # canonical spelling -> first id


_CANONICAL_VOCABS: dict[str, _CanonicalVocab] = {}
_CANONICAL_CACHE_SIZE = 16  # vocabularies kept canonicalised per process (a few MB each)


def _canonical_vocab(tok) -> _CanonicalVocab:
    """A tokenizer's vocabulary in canonical spelling, cached by vocabulary hash."""
    hit = _CANONICAL_VOCABS.get(tok.vocab_hash)
    if hit is None:
        convention = token_convention(tok.vocab)
        ids: dict[str, int] = {}
        for i, t in enumerate(canonical_tokens(tok.vocab, convention)):
            if t:
                ids.setdefault(t, i)
        hit = _CanonicalVocab(convention, ids)
        if len(_CANONICAL_VOCABS) >= _CANONICAL_CACHE_SIZE:
            _CANONICAL_VOCABS.pop(next(iter(_CANONICAL_VOCABS)))
        _CANONICAL_VOCABS[tok.vocab_hash] = hit
    return hit


def compare_tokenizers(fa: Fingerprint, fb: Fingerprint) -> TokenizerFacts:
    ta, tb = fa.tokenizer, fb.tokenizer
    if ta is None or tb is None:
        return TokenizerFacts(available=False)
    identical = ta.vocab_hash == tb.vocab_hash and ta.merges_hash == tb.merges_hash
    conventions = ("", "")
    if ta.vocab_hash == tb.vocab_hash:
        jaccard = a_in_b = b_in_a = 1.0
        id_agreement: float | None = 1.0
    elif ta.vocab is not None and tb.vocab is not None:
        ca, cb = _canonical_vocab(ta), _canonical_vocab(tb)
        conventions = (ca.convention, cb.convention)
        shared = ca.ids.keys() & cb.ids.keys()
        jaccard = len(shared) / max(1, len(ca.ids) + len(cb.ids) - len(shared))
        a_in_b, b_in_a = len(shared) / max(1, len(ca.ids)), len(shared) / max(1, len(cb.ids))
        id_agreement = sum(ca.ids[t] == cb.ids[t] for t in shared) / max(1, len(shared))
    else:
        jaccard = a_in_b = b_in_a = minhash_jaccard(ta.minhash, tb.minhash)
        id_agreement = None
    return TokenizerFacts(
        available=True, identical=identical, jaccard=jaccard, containment=max(a_in_b, b_in_a),
        a_in_b=a_in_b, b_in_a=b_in_a, id_agreement=id_agreement, size_a=ta.vocab_size, size_b=tb.vocab_size,
        shared_rare_special_tokens=tuple(sorted(set(rare_special_tokens(ta)) & set(rare_special_tokens(tb)))),
        standard_vocabulary=ta.standard_vocabulary or tb.standard_vocabulary,
        merges_identical=ta.merges_hash is not None and ta.merges_hash == tb.merges_hash,
        conventions=conventions,
    )


WIDTH_FIELDS = ("hidden_size", "intermediate_size", "num_heads", "num_kv_heads")


def compare_configs(fa: Fingerprint, fb: Fingerprint) -> ConfigFacts:
    ca, cb = fa.config, fb.config
    if ca is None or cb is None:
        return ConfigFacts(available=False)
    sim, diffs = config_similarity(ca, cb)
    a, b = ca.fields, cb.fields
    narrower = tuple(f"{k} {a[k]} → {b[k]}" for k in WIDTH_FIELDS
                     if isinstance(a.get(k), int) and isinstance(b.get(k), int) and b[k] < a[k])
    return ConfigFacts(
        available=True, similarity=sim, same_architecture=ca.arch_hash == cb.arch_hash,
        identical=ca.exact_hash == cb.exact_hash, differences=tuple(diffs),
        renamed_keys=tuple(sorted(set(cb.renamed_keys) ^ set(ca.renamed_keys))),
        identity_renamed=(ca.architectures != cb.architectures) or (ca.family != cb.family),
        architectures=(ca.architectures, cb.architectures), model_type=(ca.family, cb.family), narrower=narrower,
    )


# ---- embeddings: the cascade -------------------------------------------------------------------

def _paired_rows(ea: TokenRows, eb: TokenRows) -> tuple[np.ndarray, np.ndarray]:
    tokens_a, tokens_b = canonical_tokens(ea.tokens), canonical_tokens(eb.tokens)
    index_b = {t: i for i, t in enumerate(tokens_b)}
    pairs = [(i, index_b[t]) for i, t in enumerate(tokens_a) if t in index_b]
    if not pairs:
        return np.empty(0, int), np.empty(0, int)
    ia, ib = map(np.array, zip(*pairs))
    return ia, ib


def _probe(za: np.ndarray, zb: np.ndarray, rng: np.random.Generator) -> tuple[float, np.ndarray, int]:
    """Median best |correlation| of a few of B's columns with all of A's, and the same bests on
    shuffled rows (the null: with few rows and many columns, chance alone reaches 0.5-0.75)."""
    cols = rng.choice(zb.shape[1], size=min(PROBE_COLUMNS, zb.shape[1]), replace=False)
    n = len(za)
    best = np.abs(za.T @ zb[:, cols] / n).max(axis=0)
    null = np.abs(za.T @ zb[rng.permutation(n)][:, cols] / n).max(axis=0)
    return float(np.median(best)), null, len(cols)


def _assign(za: np.ndarray, zb: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    corr = za.T @ zb / len(za)
    rows, cols = linear_sum_assignment(-np.abs(corr))
    return rows, cols, corr[rows, cols]


def match_embeddings(ea: TokenRows, eb: TokenRows) -> EmbeddingMatch | None:
    ia, ib = _paired_rows(ea, eb)
    if len(ia) < MIN_SHARED_TOKENS:
        return None
    xa, xb = ea.values[ia].astype(np.float64), eb.values[ib].astype(np.float64)
    width = (xa.shape[1], xb.shape[1])
    same_width = width[0] == width[1]
    ca, cb = _centred_rows(xa), _centred_rows(xb)
    direct = float(_row_cosines(ca, cb).mean()) if same_width else None
    gram = gram_correlation(ca, cb)
    identity = np.arange(min(width))
    order = perm = identity
    signs = np.ones(len(identity))
    transform = HiddenTransform.NONE
    probe_best = probe_null = aligned = z = None
    probe_columns = 0
    if (direct is None or direct < V.DERIVED_SCORE) and gram >= V.GRAM_PROBE_MIN:
        za, zb = _standardise_columns(xa), _standardise_columns(xb)
        rng = np.random.default_rng(0)
        probe_best, null_bests, probe_columns = _probe(za, zb, rng)
        probe_null = float(np.median(null_bests))
        if probe_best >= max(V.PERMUTATION_PROBE_MIN, probe_null + V.PERMUTATION_PROBE_MARGIN):
            # Each probed column has one partner: recover the permutation and its signs (the one
            # linear assignment of the cascade), tested against the probe's shuffled-row bests,
            # which bound the assignment's own null from above.
            order, perm, matched = _assign(za, zb)
            aligned = float(np.abs(matched).mean())
            null_sd = float(null_bests.std()) / np.sqrt(len(matched))
            z = (aligned - float(null_bests.mean())) / max(null_sd, 1e-9)
            signs = np.sign(matched)
            if z >= V.ALIGNMENT_MIN_Z:
                transform = HiddenTransform.PERMUTATION
            else:
                order = perm = identity
                signs = np.ones(len(identity))
        else:
            transform = HiddenTransform.ROTATION
    if transform == HiddenTransform.PERMUTATION or not same_width:
        xa_sel, xb_aligned = xa[:, order], xb[:, perm] * signs
        score = float(_row_cosines(_centred_rows(xa_sel), _centred_rows(xb_aligned)).mean())
    else:  # columns as they are: the direct score
        xa_sel, xb_aligned, score = xa, xb, direct
    denom = np.linalg.norm(xa_sel - xa_sel.mean(axis=1, keepdims=True), axis=1)
    rel = np.linalg.norm(xb_aligned - xa_sel, axis=1) / np.where(denom == 0, 1, denom)
    identity_fraction = float(np.mean(order == perm)) if same_width else 0.0
    hidden_map = None
    if transform == HiddenTransform.PERMUTATION and same_width and identity_fraction < V.IDENTITY_PERMUTATION_MIN:
        inverse = np.empty_like(order)
        inverse[order] = np.arange(len(order))
        hidden_map = (perm[inverse], signs[inverse])
    return EmbeddingMatch(
        shared_tokens=len(ia), width=width, direct=direct, gram=gram, transform=transform,
        probe_best=probe_best, probe_null=probe_null, probe_columns=probe_columns, aligned=aligned, z=z,
        identity_fraction=identity_fraction, score=score, rel_deltas=rel, hidden_map=hidden_map,
    )


# ---- tensors -----------------------------------------------------------------------------------

def _is_comparable(values: np.ndarray, name: str) -> bool:
    if any(part in name for part in BUFFER_NAME_PARTS):
        return False
    sd = float(values.std())
    return sd > CONSTANT_RELATIVE_STD * (abs(float(values.mean())) + CONSTANT_RELATIVE_STD)


@dataclass
class _Side:
    """One model's sampled tensors with what the invariant form needs: its shared-token rows."""

    samples: list[TensorSample]
    rows: np.ndarray | None  # centred embedding rows of the shared tokens, in pairing order
    gains: dict[tuple[int | None, str], np.ndarray]  # (layer, norm role) -> gain vector
    hidden: int | None  # the residual stream's width
    # Per sample (by id), computed once: a tensor meets every same-kind tensor of every layer.
    _values: dict[int, np.ndarray] = field(default_factory=dict)
    _forms: dict[int, np.ndarray | None] = field(default_factory=dict)
    _row_grams: dict[int, np.ndarray | None] = field(default_factory=dict)
    _gram_units: dict[int, np.ndarray] = field(default_factory=dict)
    _comparable: dict[int, bool] = field(default_factory=dict)
    _units: dict[tuple[int, bool], np.ndarray] = field(default_factory=dict)

    def gain_for(self, sample: TensorSample) -> np.ndarray | None:
        return self.gains.get((sample.layer, GAIN_OF_ROLE.get(sample.role, "")))

    def values(self, sample: TensorSample) -> np.ndarray:
        key = id(sample)
        if key not in self._values:
            self._values[key] = sample.values.astype(np.float64)
        return self._values[key]

    def unit(self, sample: TensorSample, form: bool = False) -> np.ndarray:
        """The values (or invariant form), flattened, centred and scaled to norm 1: Pearson is a dot product."""
        key = (id(sample), form)
        if key not in self._units:
            self._units[key] = _centred_unit(self.invariant_form(sample) if form else self.values(sample))
        return self._units[key]

    def comparable(self, sample: TensorSample) -> bool:
        key = id(sample)
        if key not in self._comparable:
            self._comparable[key] = _is_comparable(sample.values, sample.name)
        return self._comparable[key]

    def invariant_form(self, sample: TensorSample) -> np.ndarray | None:
        """E·(W·diag(g))ᵀ over all sampled rows of a matrix reading the residual stream, else None."""
        key = id(sample)
        if key not in self._forms:
            values = self.values(sample)
            form = None
            if (self.rows is not None and len(sample.shape) == 2 and values.shape[1] == self.rows.shape[1]
                    and sample.role not in V.RESIDUAL_WRITER_ROLES):
                gain = self.gain_for(sample)
                folded = values * gain if gain is not None and gain.shape == (values.shape[1],) else values
                form = self.rows @ folded.T
            self._forms[key] = form
        return self._forms[key]


    def row_gram(self, sample: TensorSample) -> np.ndarray | None:
        """Cosines between the sampled rows of a matrix reading the residual stream, its norm gain
        folded in: (W·diag(g))(W·diag(g))ᵀ is what a rotation W' = W·diag(g)·Qᵀ leaves unchanged,
        and it needs no embedding rows (a body under a new tokenizer). Rows are not centred:
        a centring over the hidden coordinates is not rotation-invariant."""
        key = id(sample)
        if key not in self._row_grams:
            gram = None
            values = self.values(sample)
            if (sample.role in GAIN_OF_ROLE and len(sample.shape) == 2 and values.shape[1] == self.hidden
                    and len(values) >= ROW_GRAM_MIN_ROWS):
                gain = self.gain_for(sample)
                folded = _unit_rows(values * gain if gain is not None and gain.shape == (values.shape[1],) else values)
                gram = folded @ folded.T
            self._row_grams[key] = gram
        return self._row_grams[key]


    def row_gram_unit(self, sample: TensorSample) -> np.ndarray:
        """The upper triangle of ``row_gram`` over all sampled rows, centred and scaled to norm 1."""
        key = id(sample)
        if key not in self._gram_units:
            gram = self.row_gram(sample)
            self._gram_units[key] = _centred_unit(gram[np.triu_indices(len(gram), k=1)])
        return self._gram_units[key]


def _side(fp: Fingerprint, rows: np.ndarray | None) -> _Side:
    gains = {(s.layer, s.role): s.values.ravel() for s in fp.weights.samples if len(s.shape) == 1}
    return _Side(fp.weights.samples, rows, gains, fp.weights.hidden_size)


def _common_rows(sa: TensorSample, sb: TensorSample) -> tuple[np.ndarray, np.ndarray] | None:
    if len(sa.shape) == 1:
        return (np.array([0]), np.array([0])) if sa.shape == sb.shape else None
    common = sorted(set(sa.rows) & set(sb.rows))
    if not common:
        return None
    pos_a, pos_b = {r: i for i, r in enumerate(sa.rows)}, {r: i for i, r in enumerate(sb.rows)}
    return np.array([pos_a[r] for r in common]), np.array([pos_b[r] for r in common])


def _rescale_fit(a: np.ndarray, b: np.ndarray) -> tuple[float, tuple[float, float]]:
    """Residual of b after the best per-row or per-column scaling of a, and that scaling's range."""
    best = (float("inf"), (1.0, 1.0))
    norm = np.linalg.norm(a)
    if norm == 0:
        return best
    # Per row always; per column only with enough rows for a column's scale to be a fit.
    for axis in (1, 0) if len(a) >= RESCALE_COLUMN_MIN_ROWS else (1,):
        aa = (a * a).sum(axis=axis, keepdims=True)
        scale = (a * b).sum(axis=axis, keepdims=True) / np.where(aa == 0, 1, aa)
        residual = float(np.linalg.norm(b - scale * a) / norm)
        if residual < best[0]:
            best = (residual, (float(scale.min()), float(scale.max())))
    return best


def _share_of_a(a: np.ndarray, b: np.ndarray) -> tuple[float | None, float | None]:
    """A's share of B (least-squares b ~ share * a, both centred) and cos(b - a, a)."""
    a = a.ravel().astype(np.float64)
    b = b.ravel().astype(np.float64)
    a, b = a - a.mean(), b - b.mean()
    d = b - a
    aa, nd = float(a @ a), float(np.linalg.norm(d))
    if aa == 0 or nd == 0:
        return None, None
    return float(a @ b) / aa, float(d @ a) / (nd * np.sqrt(aa))


def _merge_estimate(tensor_matches: list[TensorMatch]) -> MergeEstimate | None:
    """The weight of an unstored second parent, read off A's share of B in every changed tensor."""
    found = [(m.a_share, m.delta_cosine) for m in tensor_matches
             if m.a_share is not None and m.delta_cosine is not None and m.best > 0.5]
    if not found:
        return None
    weights = 1 - np.array([share for share, _ in found])
    q25, q75 = np.percentile(weights, [25, 75])
    return MergeEstimate(float(np.median(weights)), float(q75 - q25),
                         float(np.median([cos for _, cos in found])), len(found))


def difference_rank(diff: np.ndarray) -> tuple[int | None, float]:
    """The rank of a difference and how far its singular values fall after it; (None, the largest
    fall) when they fall by less than LOW_RANK_GAP_MIN everywhere in their first half."""
    sv = np.linalg.svd(diff.astype(np.float64), compute_uv=False)
    half = min(len(diff), diff.shape[1]) // 2
    if half == 0 or sv[0] == 0:
        return None, 1.0
    falls = sv[:half] / np.maximum(sv[1 : half + 1], sv[0] * 1e-12)
    i = int(np.argmax(falls))
    return (i + 1 if falls[i] >= LOW_RANK_GAP_MIN else None), float(falls[i])


def _correlation(sa: TensorSample, sb: TensorSample, side_a: _Side, side_b: _Side, positions, form: bool,
                 a_values: np.ndarray, b_values: np.ndarray) -> float:
    if len(positions[0]) == len(sa.rows) == len(sb.rows) and np.array_equal(positions[0], positions[1]):
        return float(side_a.unit(sa, form) @ side_b.unit(sb, form))  # same rows: the cached unit vectors
    return _pearson(a_values, b_values)


def _tensor_match(sa: TensorSample, sb: TensorSample, side_a: _Side, side_b: _Side,
                  hidden_map, transform: HiddenTransform, detail: bool = True) -> TensorMatch | None:
    """Compare two samples (common rows only); None when they have nothing comparable.

    Without ``detail`` only the similarities are computed (enough to pair layers and tensors).
    """
    if len(sa.shape) != len(sb.shape) or sa.shape[0] != sb.shape[0]:
        return None
    positions = _common_rows(sa, sb)
    if positions is None:
        return None
    va, vb = side_a.values(sa)[positions[0]], side_b.values(sb)[positions[1]]
    invariant = pa = pb = None
    if side_a.invariant_form(sa) is not None and side_b.invariant_form(sb) is not None:
        pa, pb = side_a.invariant_form(sa)[:, positions[0]], side_b.invariant_form(sb)[:, positions[1]]
        invariant = _correlation(sa, sb, side_a, side_b, positions, True, pa, pb)
    row_gram = ga = gb = None
    if side_a.rows is None and side_b.rows is None and len(positions[0]) >= ROW_GRAM_MIN_ROWS:
        # No embedding rows to anchor the invariant form: the rows' own Gram is the rotation-blind view.
        grams = side_a.row_gram(sa), side_b.row_gram(sb)
        if grams[0] is not None and grams[1] is not None:
            if len(positions[0]) == len(sa.rows) == len(sb.rows) and not detail:
                row_gram = float(side_a.row_gram_unit(sa) @ side_b.row_gram_unit(sb))  # same rows: cached
            else:
                upper = np.triu_indices(len(positions[0]), k=1)
                ga, gb = (g[np.ix_(p, p)][upper] for g, p in zip(grams, positions))
                row_gram = _pearson(ga, gb)
    similarity = rel = raw = None
    aligned = False
    comparable = va.shape == vb.shape and side_a.comparable(sa) and side_b.comparable(sb)
    # Under a rotation, values indexed by the residual dimension (a reader's columns, a writer's
    # rows, a norm's entries) are not comparable as they are.
    residual_indexed = (side_a.hidden or -1) in (va.shape[-1], sa.shape[0])
    if comparable and not (transform == HiddenTransform.ROTATION and residual_indexed):
        similarity = _correlation(sa, sb, side_a, side_b, positions, False, va, vb)
        if hidden_map is not None and va.shape[-1] == len(hidden_map[0]):
            vb_aligned = vb[:, hidden_map[0]] * hidden_map[1]
            candidate = _pearson(va, vb_aligned)
            if candidate > similarity:
                similarity, aligned, vb = candidate, True, vb_aligned
    if similarity is None and invariant is None and row_gram is None:
        return None
    rescale_residual = rescale_factors = rank = a_share = delta_cosine = None
    rel = raw = float("nan")
    if detail and similarity is not None:
        rel, raw = _rel_delta(va, vb), _raw_rel_delta(va, vb)
        if raw > V.EXACT_REL_DELTA:
            a_share, delta_cosine = _share_of_a(va, vb)
            if len(sa.shape) == 2 and len(va) >= 2:
                rescale_residual, rescale_factors = _rescale_fit(va, vb)
                rank, _ = difference_rank(vb - va)
    elif detail:
        # The invariant forms' difference: what a rotation left changed.
        rel = raw = _rel_delta(pa, pb) if invariant is not None else _rel_delta(ga, gb)
    return TensorMatch(
        a=sa.name, b=sb.name, layer_a=sa.layer, layer_b=sb.layer, role=sa.role, similarity=similarity,
        invariant=invariant, rel_delta=rel, raw_rel_delta=raw, aligned=aligned, dtypes=(sa.dtype, sb.dtype),
        rows=len(va), rescale_residual=rescale_residual, rescale_factors=rescale_factors, difference_rank=rank,
        a_share=a_share, delta_cosine=delta_cosine, row_gram=row_gram,
    )


_Kind = tuple[int, int]  # rank and row count


def _kind(s: TensorSample) -> _Kind:
    """Tensors are paired only with tensors of the same kind: rank and row count."""
    return len(s.shape), s.shape[0]


def _row_signature(s: TensorSample) -> tuple[int, ...] | None:
    """The rows a sample holds, in order (a vector is one row): samples with equal signatures are
    correlated on their cached unit vectors as they are, as _correlation does; None: duplicated rows."""
    if len(s.shape) == 1:
        return (0,) if len(s.rows) == 1 else None
    return tuple(s.rows) if len(set(s.rows)) == len(s.rows) else None


def _equal_keys(keys_a: list, keys_b: list) -> np.ndarray:
    """Which keys of A equal which keys of B (None equals nothing)."""
    codes: dict = {None: -1}
    ca = np.array([codes.setdefault(k, len(codes)) for k in keys_a], dtype=int)
    cb = np.array([codes.setdefault(k, len(codes)) for k in keys_b], dtype=int)
    return (ca[:, None] == cb[None, :]) & (ca[:, None] >= 0)


def _dot_table(keys_a: list, keys_b: list, unit_a, unit_b) -> tuple[np.ndarray, np.ndarray]:
    """Dot products of the unit vectors of every pair whose keys are equal (None: no vector), one
    matrix product per key; and which pairs have one."""
    values = np.zeros((len(keys_a), len(keys_b)))
    taken = np.zeros(values.shape, dtype=bool)
    for key in dict.fromkeys(k for k in keys_a if k is not None):
        ib = [j for j, k in enumerate(keys_b) if k == key]
        if ib:
            ia = [i for i, k in enumerate(keys_a) if k == key]
            block = np.ix_(ia, ib)
            values[block] = np.stack([unit_a(i) for i in ia]) @ np.stack([unit_b(j) for j in ib]).T
            taken[block] = True
    return values, taken


@dataclass
class _KindTable:
    best: np.ndarray  # TensorMatch.best of every pair, as _tensor_match(detail=False) gives it
    found: np.ndarray  # where _tensor_match finds something comparable
    rows: np.ndarray  # the rows each pair compares (TensorMatch.rows)


def _kind_table(xs: list[TensorSample], ys: list[TensorSample], side_a: _Side, side_b: _Side,
                hidden_map, transform: HiddenTransform) -> _KindTable:
    """_tensor_match(x, y, detail=False) of every pair of xs x ys (one kind), as whole matrices.

    Pairing layers meets every tensor with every same-kind tensor of every layer, and one
    _tensor_match call per pair was 58% of the comparisons' CPU in benchmarks/throughput.py
    (py-spy), nearly all of it Python overhead around one dot product. So the pairs are taken a
    block at a time: the samples of A that hold one set of rows against those of B that hold
    another (one block when both models were sampled alike; a cast or quantised copy holds fewer
    rows of each matrix), each similarity (values, values aligned by the hidden-dimension map,
    invariant form, row Gram) one product of the stacked unit vectors of the rows the two share.
    Layer matching in that benchmark's 10-model poll 5.8 -> 1.9 CPU s, the same results to 1e-15.
    Samples with duplicated rows, or the same rows in another order, are matched pair by pair.
    """
    shape = (len(xs), len(ys))
    va, vb = [side_a.values(x) for x in xs], [side_b.values(y) for y in ys]
    sig_a, sig_b = [_row_signature(x) for x in xs], [_row_signature(y) for y in ys]
    # _tensor_match's conditions, side by side: values comparable (under a rotation, not indexed by
    # the residual dimension), invariant forms, row Grams (only without embedding rows on both sides).
    values_a = np.array([side_a.comparable(x) and not (transform == HiddenTransform.ROTATION
                                                       and (side_a.hidden or -1) in (v.shape[-1], x.shape[0]))
                         for x, v in zip(xs, va)], dtype=bool)
    values_b = np.array([side_b.comparable(y) for y in ys], dtype=bool)
    mapped = np.array([hidden_map is not None and v.shape[-1] == len(hidden_map[0]) for v in va], dtype=bool)
    form_a = np.array([side_a.invariant_form(x) is not None for x in xs], dtype=bool)
    form_b = np.array([side_b.invariant_form(y) is not None for y in ys], dtype=bool)
    no_rows = side_a.rows is None and side_b.rows is None
    gram_a = np.array([no_rows and side_a.row_gram(x) is not None for x in xs], dtype=bool)
    gram_b = np.array([no_rows and side_b.row_gram(y) is not None for y in ys], dtype=bool)
    width_a, width_b = [v.shape[1:] for v in va], [v.shape[1:] for v in vb]

    def keyed(ok: np.ndarray, members: list[int], keys: list | None = None) -> list:
        """Keys of a block's members that have the vector (values: their width; the others: one key)."""
        return [(keys[i] if keys is not None else ()) if ok[i] else None for i in members]

    parts = [(np.zeros(shape), np.zeros(shape, dtype=bool)) for _ in range(4)]
    rows = np.zeros(shape, dtype=int)
    one_by_one = np.zeros(shape, dtype=bool)
    for rows_a, ia in _indices_by(sig_a).items():
        for rows_b, ib in _indices_by(sig_b).items():
            block = np.ix_(ia, ib)
            # Same rows in another order: _tensor_match correlates their row Grams as stored.
            if rows_a is None or rows_b is None or (rows_a != rows_b and set(rows_a) == set(rows_b)):
                one_by_one[block] = True
                continue
            if rows_a == rows_b:  # the same rows: the cached unit vectors of the whole samples
                ta, tb = _SharedRows(side_a, None), _SharedRows(side_b, None)
                shared = len(rows_a)
            else:
                positions = _common_rows(xs[ia[0]], ys[ib[0]])
                if positions is None:
                    continue
                ta, tb = _SharedRows(side_a, positions[0]), _SharedRows(side_b, positions[1])
                shared = len(positions[0])
            rows[block] = shared
            grams = shared >= ROW_GRAM_MIN_ROWS
            for (values, has), (value, found) in zip(parts, (
                _dot_table(keyed(values_a, ia, width_a), keyed(values_b, ib, width_b),
                           lambda i: ta.unit(xs[ia[i]]), lambda j: tb.unit(ys[ib[j]])),
                # B's values in A's hidden dimension order and signs, kept where they correlate better.
                _dot_table(keyed(values_a & mapped, ia, width_a), keyed(values_b, ib, width_b),
                           lambda i: ta.unit(xs[ia[i]]),
                           lambda j: _centred_unit(tb.values(ys[ib[j]])[:, hidden_map[0]] * hidden_map[1])),
                _dot_table(keyed(form_a, ia), keyed(form_b, ib),
                           lambda i: ta.form_unit(xs[ia[i]]), lambda j: tb.form_unit(ys[ib[j]])),
                _dot_table(keyed(gram_a & grams, ia), keyed(gram_b & grams, ib),
                           lambda i: ta.row_gram_unit(xs[ia[i]]), lambda j: tb.row_gram_unit(ys[ib[j]])),
            )):
                values[block], has[block] = value, found
    # TensorMatch.best: the largest part found, at least -1 (sampled values are finite: weights.py).
    best = np.maximum.reduce([np.where(has, value, -1.0) for value, has in parts])
    found = np.logical_or.reduce([has for _, has in parts])
    possible = ((np.outer(values_a, values_b) & _equal_keys(width_a, width_b))
                | np.outer(form_a, form_b) | np.outer(gram_a, gram_b))
    paired = _equal_keys([x.layer is None for x in xs], [y.layer is None for y in ys])
    for i, j in zip(*np.nonzero(one_by_one & possible & paired)):
        m = _tensor_match(xs[i], ys[j], side_a, side_b, hidden_map, transform, detail=False)
        found[i, j] = m is not None
        if m is not None:
            best[i, j], rows[i, j] = m.best, m.rows
    return _KindTable(best, found, rows)


@dataclass
class _SharedRows:
    """One side's samples restricted to the rows the other side's samples share (positions None: all
    of them, in the same order), with the unit vectors _tensor_match correlates."""

    side: _Side
    positions: np.ndarray | None

    def values(self, s: TensorSample) -> np.ndarray:
        values = self.side.values(s)
        return values if self.positions is None else values[self.positions]

    def unit(self, s: TensorSample) -> np.ndarray:
        return self.side.unit(s) if self.positions is None else _centred_unit(self.values(s))

    def form_unit(self, s: TensorSample) -> np.ndarray:
        if self.positions is None:
            return self.side.unit(s, form=True)
        return _centred_unit(self.side.invariant_form(s)[:, self.positions])

    def row_gram_unit(self, s: TensorSample) -> np.ndarray:
        if self.positions is None:
            return self.side.row_gram_unit(s)
        p = self.positions
        return _centred_unit(self.side.row_gram(s)[np.ix_(p, p)][np.triu_indices(len(p), k=1)])


def _indices_by(keys: list) -> dict:
    """The positions of each key, in first-seen order."""
    out: dict = {}
    for i, k in enumerate(keys):
        out.setdefault(k, []).append(i)
    return out


def _by_kind(samples: list[TensorSample]) -> dict[_Kind, list[TensorSample]]:
    out: dict[_Kind, list[TensorSample]] = {}
    for s in samples:
        out.setdefault(_kind(s), []).append(s)
    return out


def _by_layer(samples: list[TensorSample]) -> dict[int | None, dict[_Kind, tuple[list[TensorSample], np.ndarray]]]:
    """Each layer's samples (None: the global ones) by kind, in their order, with their positions
    in the kind's table (_by_kind of all samples)."""
    position = {id(s): i for group in _by_kind(samples).values() for i, s in enumerate(group)}
    found: dict[int | None, dict[_Kind, tuple[list[TensorSample], list[int]]]] = {}
    for s in samples:
        members, positions = found.setdefault(s.layer, {}).setdefault(_kind(s), ([], []))
        members.append(s)
        positions.append(position[id(s)])
    return {layer: {kind: (members, np.array(positions)) for kind, (members, positions) in by_kind.items()}
            for layer, by_kind in found.items()}


class _PairTables:
    """The pairing similarity of every same-kind pair of two models' samples, built once: each layer
    meets every other layer."""

    def __init__(self, side_a: _Side, side_b: _Side, hidden_map, transform: HiddenTransform):
        kinds_a, kinds_b = _by_kind(side_a.samples), _by_kind(side_b.samples)
        self.tables = {k: _kind_table(xs, kinds_b[k], side_a, side_b, hidden_map, transform)
                       for k, xs in kinds_a.items() if k in kinds_b}
        self.layers_a, self.layers_b = _by_layer(side_a.samples), _by_layer(side_b.samples)

    def pairs(self, layer_a: int | None, layer_b: int | None) -> list[tuple[TensorSample, TensorSample, float, int]]:
        """The tensors of two layers (None: the global ones) paired within each kind, by assignment
        on similarity when several are alike: (a, b, similarity, rows compared) of each pair with
        something comparable."""
        group_b = self.layers_b.get(layer_b, {})
        out = []
        for kind, (xs, positions_a) in self.layers_a.get(layer_a, {}).items():
            if kind not in group_b:
                continue
            ys, positions_b = group_b[kind]
            table, block = self.tables[kind], (positions_a[:, None], positions_b)
            best, found, rows = table.best[block], table.found[block], table.rows[block]
            for i, j in zip(*linear_sum_assignment(np.where(found, -best, 1.0))):
                if found[i, j]:
                    out.append((xs[i], ys[j], float(best[i, j]), int(rows[i, j])))
        return out


def _layer_score(pairs: list[tuple[TensorSample, TensorSample, float, int]]) -> float | None:
    """How well two layers match: the better of their matrices' and their vectors' median.

    Vectors (norm gains, biases) alone still pair layers whose every sampled matrix row was
    permuted (heads and neurons reordered): after the hidden alignment their norms agree.
    """
    if not pairs:
        return None
    matrices = [best for _, _, best, rows in pairs if rows > 1]
    vectors = [best for _, _, best, rows in pairs if rows == 1]
    return float(max(statistics.median(part) for part in (matrices, vectors) if part))


@dataclass
class _Layers:
    matrix: list[list[float | None]]
    layers_a: list[int]
    layers_b: list[int]
    pairs: list[LayerPair]
    layer_matches: list[TensorMatch]
    global_matches: list[TensorMatch]


def match_layers(side_a: _Side, side_b: _Side, hidden_map, transform: HiddenTransform) -> _Layers:
    tables = _PairTables(side_a, side_b, hidden_map, transform)
    layers_a = sorted(l for l in tables.layers_a if l is not None)
    layers_b = sorted(l for l in tables.layers_b if l is not None)
    matrix = [[_layer_score(tables.pairs(la, lb)) for lb in layers_b] for la in layers_a]
    pairs: list[LayerPair] = []
    if layers_a and layers_b:
        cost = np.array([[-(v if v is not None else -1.0) for v in row] for row in matrix])
        for i, j in zip(*linear_sum_assignment(cost)):
            if matrix[i][j] is not None:
                pairs.append(LayerPair(layers_a[i], layers_b[j], matrix[i][j]))

    def detailed(layer_a: int | None, layer_b: int | None) -> list[TensorMatch]:
        return [_tensor_match(x, y, side_a, side_b, hidden_map, transform)
                for x, y, _, _ in tables.pairs(layer_a, layer_b)]

    global_matches = detailed(None, None)
    layer_matches = [m for p in pairs for m in detailed(p.a, p.b)]
    return _Layers(matrix, layers_a, layers_b, pairs, layer_matches, global_matches)


def _duplicated_layers(layers: _Layers) -> list[tuple[int, int, float]]:
    """B layers left out of the one-to-one pairing that repeat an A layer (depth up-scaling)."""
    paired_b = {p.b for p in layers.pairs}
    out = []
    for j, lb in enumerate(layers.layers_b):
        if lb in paired_b:
            continue
        column = [(row[j], layers.layers_a[i]) for i, row in enumerate(layers.matrix) if row[j] is not None]
        if column:
            score, la = max(column)
            if score >= V.MATCHED_LAYER_MIN:
                out.append((lb, la, float(score)))
    return out


def _fit_merge(fa: Fingerprint, fb: Fingerprint, fc: Fingerprint, tensor_matches: list[TensorMatch]) -> MergeFit | None:
    """Least-squares b = alpha a + beta c over the tensors the three models share (paired by B's names)."""
    side_c, side_b = _side(fc, None), _side(fb, None)
    c_layers = match_layers(side_c, side_b, None, HiddenTransform.NONE)
    c_of_b = {m.b: m.a for m in c_layers.layer_matches + c_layers.global_matches if m.similarity is not None}
    by_name = {"a": {s.name: s for s in fa.weights.samples}, "b": {s.name: s for s in fb.weights.samples},
               "c": {s.name: s for s in fc.weights.samples}}
    weights, residuals = [], []
    for m in tensor_matches:
        if m.similarity is None or m.aligned or m.b not in c_of_b:
            continue
        sa, sb, sc = by_name["a"][m.a], by_name["b"][m.b], by_name["c"][c_of_b[m.b]]
        rows = set(sa.rows) & set(sb.rows) & set(sc.rows)
        if not rows or not (sa.values.shape[-1] == sb.values.shape[-1] == sc.values.shape[-1]):
            continue
        pick = [[s.rows.index(r) for r in sorted(rows)] for s in (sa, sb, sc)]
        a, b, c = (s.values[p].ravel().astype(np.float64) for s, p in zip((sa, sb, sc), pick))
        design = np.stack([a, c], axis=1)
        coef, *_ = np.linalg.lstsq(design, b, rcond=None)
        spread = np.linalg.norm(b - b.mean())
        if spread > 0:
            weights.append(coef)
            residuals.append(float(np.linalg.norm(b - design @ coef) / spread))
    if not weights:
        return None
    alpha, beta = np.median(np.array(weights), axis=0)
    return MergeFit(fc.source, float(alpha), float(beta), float(np.median(residuals)), len(weights))


# ---- the weight score ----------------------------------------------------------------------------

def _score_z(emb: EmbeddingMatch | None, tensor_matches: list[TensorMatch], score: float) -> float:
    """How many null standard deviations the score is from 0.

    A centred correlation of n independent values has null sd 1/sqrt(n); the embedding score
    averages one cosine per shared token, each over the hidden width.
    """
    zs = []
    if emb is not None:
        zs.append(emb.score * np.sqrt(emb.shared_tokens * min(emb.width)))
        if emb.transform == HiddenTransform.PERMUTATION and emb.z is not None:
            zs[-1] = min(zs[-1], emb.z)
    sims = [m.best for m in tensor_matches]
    if sims:
        zs.append(np.median(sims) * np.sqrt(min(4096, 16 * 384)))
    return float(max(zs)) if zs else 0.0


def weight_facts(fa: Fingerprint, fb: Fingerprint, second_parent: Fingerprint | None = None) -> WeightFacts:
    wa, wb = fa.weights, fb.weights
    emb = None
    rows_a = rows_b = None
    if wa.embedding is not None and wb.embedding is not None:
        emb = match_embeddings(wa.embedding, wb.embedding)
        # Rows of unrelated token geometry anchor nothing: the matrices' own row Grams stand in.
        if emb is not None and emb.gram >= V.GRAM_PROBE_MIN:
            ia, ib = _paired_rows(wa.embedding, wb.embedding)
            ia, ib = ia[:INVARIANT_TOKENS], ib[:INVARIANT_TOKENS]
            rows_a = _centred_rows(wa.embedding.values[ia].astype(np.float64))
            rows_b = _centred_rows(wb.embedding.values[ib].astype(np.float64))
    transform = emb.transform if emb is not None else HiddenTransform.NONE
    hidden_map = emb.hidden_map if emb is not None else None
    side_a, side_b = _side(fa, rows_a), _side(fb, rows_b)
    layers = match_layers(side_a, side_b, hidden_map, transform)
    row_grams = [m.row_gram for m in layers.layer_matches if m.row_gram is not None]
    row_gram_score = float(np.median(row_grams)) if row_grams else None
    values = [m.similarity for m in layers.layer_matches if m.similarity is not None]
    unrotated_score = float(np.median(values)) if values else None
    rotated_by_rows = bool(
        transform == HiddenTransform.NONE and row_gram_score is not None and row_gram_score >= V.ROW_GRAM_DERIVED
        and len(row_grams) >= V.ROW_GRAM_MIN_TENSORS and (unrotated_score is None or unrotated_score < V.DERIVED_SCORE))
    if rotated_by_rows:
        # The readers' rows kept their geometry while their values moved: compare again with
        # everything indexed by the residual dimension set aside, as for a rotation the embedding found.
        transform = HiddenTransform.ROTATION
        layers = match_layers(side_a, side_b, None, transform)
    tensor_matches = layers.layer_matches + layers.global_matches
    values = [m.similarity for m in layers.layer_matches if m.similarity is not None]
    invariants = [m.invariant for m in layers.layer_matches if m.invariant is not None]
    layer_score = float(np.median(values)) if values else None
    invariant_score = float(np.median(invariants)) if invariants else None
    candidates = [s for s in (emb.score if emb else None, layer_score) if s is not None]
    global_values = [m.similarity for m in layers.global_matches if m.similarity is not None]
    if not candidates and global_values:
        candidates.append(float(np.median(global_values)))
    score = max(candidates) if candidates else 0.0
    merge = None
    if second_parent is not None and second_parent.weights is not None and second_parent.weights.samples:
        merge = _fit_merge(fa, fb, second_parent, tensor_matches)
    return WeightFacts(
        format=(wa.format, wb.format), bytes_read=(wa.tensor_bytes_read, wb.tensor_bytes_read),
        num_layers=(wa.num_layers, wb.num_layers), hidden_size=(wa.hidden_size, wb.hidden_size),
        embedding=emb, pairs=layers.pairs, layer_matrix=layers.matrix, layers_a=layers.layers_a,
        layers_b=layers.layers_b, tensor_matches=tensor_matches, layer_score=layer_score,
        invariant_score=invariant_score, score=score, z=_score_z(emb, tensor_matches, score),
        duplicated_layers=_duplicated_layers(layers), merge=merge, merge_estimate=_merge_estimate(tensor_matches),
        row_gram_score=row_gram_score, rotated_by_row_grams=rotated_by_rows,
        unrotated_score=unrotated_score if rotated_by_rows else None,
    )


def unreadable_weights(fa: Fingerprint, fb: Fingerprint) -> str | None:
    """Why the two models' weights cannot be compared, or None when both have sampled values."""
    reasons = []
    for side, w in (("A", fa.weights), ("B", fb.weights)):
        if w is None:
            reasons.append(f"{side}: no weight files")
        elif w.format == "uninspectable":
            reasons.append(f"{side}: weights in a format hubwatch never opens")
        elif not w.samples and w.embedding is None:
            reasons.append(f"{side}: no tensor in a dtype hubwatch decodes")
    return "; ".join(reasons) or None


def _dtypes(fp: Fingerprint) -> tuple[str, ...]:
    return tuple(sorted({t.dtype for t in fp.weights.tensors if t.dtype not in V.INTEGER_DTYPES})) if fp.weights else ()


def _embedding_dtype(fp: Fingerprint) -> str | None:
    w = fp.weights
    if w is None or w.embedding is None:
        return None
    return next((t.dtype for t in w.tensors if t.name == w.embedding.tensor), None)


def comparison_facts(fa: Fingerprint, fb: Fingerprint, second_parent: Fingerprint | None = None) -> ComparisonFacts:
    wa, wb = fa.weights, fb.weights
    unreadable = unreadable_weights(fa, fb)
    return ComparisonFacts(
        config=compare_configs(fa, fb),
        tokenizer=compare_tokenizers(fa, fb),
        weights=None if unreadable else weight_facts(fa, fb, second_parent),
        unreadable=unreadable,
        weight_notes=(wa.note if wa else None, wb.note if wb else None),
        sample_digests_equal=bool(wa and wb and wa.sample_digest and wa.sample_digest == wb.sample_digest),
        configs_equal=fa.config is None or fb.config is None or fa.config.exact_hash == fb.config.exact_hash,
        vocabularies_equal=fa.tokenizer is None or fb.tokenizer is None or fa.tokenizer.vocab_hash == fb.tokenizer.vocab_hash,
        shared_files=tuple(sorted(set(wa.file_sha256.values()) & set(wb.file_sha256.values()))) if wa and wb else (),
        structure_equal=bool(wa and wb and wa.structure_hash and wa.structure_hash == wb.structure_hash),
        tensor_names=(frozenset(t.name for t in wa.tensors) if wa else frozenset(),
                      frozenset(t.name for t in wb.tensors) if wb else frozenset()),
        dtypes=(_dtypes(fa), _dtypes(fb)),
        vocab_sizes=(fa.tokenizer.vocab_size if fa.tokenizer else None, fb.tokenizer.vocab_size if fb.tokenizer else None),
        embedding_dtypes=(_embedding_dtype(fa), _embedding_dtype(fb)),
    )


def compare_fingerprints(fa: Fingerprint, fb: Fingerprint, reader_a=None, reader_b=None,
                         second_parent: Fingerprint | None = None) -> Comparison:
    """Compare two fingerprints: a pure function of its arguments (safe to run in a process pool).

    Readers are accepted for callers that have them; the standard comparison reads nothing more.
    ``second_parent``: another stored model B may be a merge of A with; the evidence then says
    whether B's samples are a weighted sum of the two and with which weights.
    """
    facts = comparison_facts(fa, fb, second_parent)
    result = V.decide(facts)
    # Multimodal models: one verdict per component as well (components.py).
    parts = compare_components(fa, fb, compare_fingerprints)
    if parts:
        line, extra_kinds = component_summary(parts)
        result.evidence.append(line)
        result.kinds += [k for k in extra_kinds if k not in result.kinds]
    if (note := expert_note(fa, fb)) is not None:
        result.evidence.append(note)
    w = facts.weights
    return Comparison(
        a=fa.source, b=fb.source, verdict=result.verdict, confidence=result.confidence, score=result.score,
        kinds=result.kinds, evidence=result.evidence, config=facts.config.to_dict(),
        tokenizer=facts.tokenizer.to_dict(),
        weights=w.to_dict() if w else {"available": False, "reason": facts.unreadable},
        layer_matrix=w.layer_matrix if w else [], layers_a=w.layers_a if w else [], layers_b=w.layers_b if w else [],
        bytes_read={"a": fa.bytes_read, "b": fb.bytes_read}, needs_deep=result.needs_deep, components=parts,
    )
