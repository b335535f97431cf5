"""Typed records passed from the comparison (compare.py) to the verdict (verdict.py).

compare.py measures, verdict.py judges: every number the verdict reads is a field here, and each
record renders itself as the JSON evidence stored with a match (``to_dict``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import numpy as np


class Verdict(StrEnum):
    """The one home of verdict names (a StrEnum: equal to, and serialised as, its string)."""

    IDENTICAL = "identical"
    WEIGHTS_DERIVED = "weights-derived"
    TOKENIZER_COPIED = "tokenizer-copied"
    SAME_ARCHITECTURE = "same-architecture"
    INDEPENDENT = "independent"
    NOT_COMPARABLE = "not-comparable"


# Verdicts that say B's weights come from A's.
DERIVED_VERDICTS = frozenset({Verdict.IDENTICAL, Verdict.WEIGHTS_DERIVED})


class Kind(StrEnum):
    """How B was derived from A (a derived verdict's ``kinds``)."""

    IDENTICAL = "identical"
    RENAME = "rename"
    CAST = "cast"
    QUANTIZE = "quantize"
    NOISE = "noise"
    FINE_TUNE = "fine-tune"
    RESCALE = "rescale"
    ROTATE = "rotate"
    PERMUTE_HIDDEN = "permute-hidden"
    PERMUTE_HEADS = "permute-heads"
    PERMUTE_NEURONS = "permute-neurons"
    LOW_RANK = "low-rank"
    MERGE = "merge"
    DEPTH_UPSCALE = "depth-upscale"
    PRUNE = "prune"
    VOCAB_EXTEND = "vocab-extend"
    VOCAB_PRUNE = "vocab-prune"
    VOCAB_REPLACED = "vocab-replaced"
    TOKENIZER = "tokenizer"
    MOE_UPCYCLE = "moe-upcycle"  # B's experts are copies of A's dense FFN (deep.py's expert map)
    PARTIAL_REUSE = "partial-reuse"  # some components of a multimodal model derived, others new (components.py)


class HiddenTransform(StrEnum):
    """What the embedding cascade found between A's and B's hidden dimensions."""

    NONE = "none"  # the same basis (rows agree as they are), or nothing in common
    PERMUTATION = "permutation"  # columns moved (and sign-flipped): recovered by the alignment
    ROTATION = "rotation"  # token geometry kept, but no column maps to a single column


@dataclass(frozen=True)
class TokenizerFacts:
    available: bool
    identical: bool = False
    jaccard: float = 0.0
    containment: float = 0.0  # shared / smaller vocabulary
    a_in_b: float = 0.0  # shared / A's vocabulary
    b_in_a: float = 0.0  # shared / B's vocabulary
    id_agreement: float | None = None
    size_a: int = 0
    size_b: int = 0
    shared_rare_special_tokens: tuple[str, ...] = ()
    standard_vocabulary: str | None = None
    merges_identical: bool = False
    conventions: tuple[str, str] = ("", "")  # token-string conventions, see tokenizer.token_convention

    def to_dict(self) -> dict[str, Any]:
        if not self.available:
            return {"available": False}
        return {
            "available": True, "identical": self.identical, "jaccard": self.jaccard, "containment": self.containment,
            "a_in_b": self.a_in_b, "b_in_a": self.b_in_a, "id_agreement": self.id_agreement,
            "sizes": [self.size_a, self.size_b], "shared_rare_special_tokens": list(self.shared_rare_special_tokens),
            "standard_vocabulary": self.standard_vocabulary, "merges_identical": self.merges_identical,
            "conventions": list(self.conventions),
        }


@dataclass(frozen=True)
class ConfigFacts:
    available: bool
    similarity: float = 0.0
    same_architecture: bool = False
    identical: bool = False
    differences: tuple[str, ...] = ()
    renamed_keys: tuple[str, ...] = ()
    identity_renamed: bool = False
    architectures: tuple[list[str], list[str]] = ([], [])
    model_type: tuple[str | None, str | None] = (None, None)
    narrower: tuple[str, ...] = ()  # width fields that shrank from A to B, "num_heads 12 → 10"

    def to_dict(self) -> dict[str, Any]:
        if not self.available:
            return {"available": False}
        return {
            "available": True, "similarity": round(self.similarity, 4), "same_architecture": self.same_architecture,
            "identical": self.identical, "differences": list(self.differences), "renamed_keys": list(self.renamed_keys),
            "identity_renamed": self.identity_renamed, "architectures": list(self.architectures),
            "model_type": list(self.model_type),
        }


@dataclass
class EmbeddingMatch:
    """Embedding rows of the shared tokens, compared through the cascade of compare.match_embeddings."""

    shared_tokens: int
    width: tuple[int, int]
    direct: float | None  # mean centred row cosine without alignment (same width only)
    gram: float  # correlation of the token-token cosine matrices: blind to any orthogonal map
    transform: HiddenTransform
    probe_best: float | None  # median best |column correlation| of the probed columns of B
    probe_null: float | None  # the same on a shuffled token pairing
    probe_columns: int  # columns of B probed (0: the cascade decided without probing)
    aligned: float | None  # mean matched |column correlation| after the assignment (when run)
    z: float | None  # alignment strength against its shuffled-token null (when run)
    identity_fraction: float  # share of hidden dims the alignment mapped to themselves
    score: float  # mean centred row cosine after applying the recovered permutation and signs
    rel_deltas: np.ndarray  # per shared row ||b - a|| / ||a - mean|| after alignment
    hidden_map: tuple[np.ndarray, np.ndarray] | None  # (B's column, sign) for each of A's columns

    def to_dict(self) -> dict[str, Any]:
        def r(v, n=4):
            return None if v is None else round(float(v), n)
        return {
            "shared_tokens": self.shared_tokens, "width": list(self.width), "direct": r(self.direct),
            "gram_correlation": r(self.gram), "transform": str(self.transform),
            "probe": {"columns": self.probe_columns, "best_correlation": r(self.probe_best), "null": r(self.probe_null)},
            "aligned_correlation": r(self.aligned), "alignment_z": r(self.z, 1),
            "identity_fraction": r(self.identity_fraction), "score": r(self.score),
        }


@dataclass
class TensorMatch:
    a: str
    b: str
    layer_a: int | None
    layer_b: int | None
    role: str
    similarity: float | None  # centred correlation of the values (plain or hidden-aligned); None: not comparable
    invariant: float | None  # correlation of the rotation-invariant form (embedding x norm-folded rows)
    rel_delta: float  # ||b - a|| / ||a - mean(a)||, values as compared
    raw_rel_delta: float  # ||b - a|| / ||a||: what a cast or quantisation changes, relative to the values
    aligned: bool  # the hidden-dimension permutation was applied to B
    dtypes: tuple[str, str]
    rows: int  # sampled rows compared
    rescale_residual: float | None  # ||b - scaled a|| / ||a|| after the best per-row or per-column scaling
    rescale_factors: tuple[float, float] | None  # range of those scales
    difference_rank: int | None  # rank of b - a (2-D samples with changes); None: not low in these rows
    # B regressed on A (both centred): b = share * a + rest. A linear merge with a model unrelated
    # to A keeps the same share of A in every tensor; noise and training keep all of it.
    a_share: float | None = None
    delta_cosine: float | None = None  # cos(b - a, a), centred: a merge's difference points away from A
    # Correlation of the sampled rows' cosines (norm gain folded in), for residual-reading matrices
    # compared without embedding rows: unchanged by a rotation of the residual stream.
    row_gram: float | None = None

    @property
    def best(self) -> float:
        return max(v for v in (self.similarity, self.invariant, self.row_gram, -1.0) if v is not None)


@dataclass
class LayerPair:
    a: int
    b: int
    score: float


@dataclass
class MergeFit:
    """B's sampled values as a linear combination alpha A + beta C of its two parents."""

    parent: str
    weight_a: float
    weight_c: float
    residual: float  # ||b - fit|| / ||b - mean||, median over tensors
    tensors: int


@dataclass
class MergeEstimate:
    """What B's differences from A say about a merge with a model that is not stored."""

    weight: float  # 1 - A's share of B (median over tensors): the unknown parent's weight
    spread: float  # interquartile range of that weight across tensors (one merge weight: ~0)
    delta_cosine: float  # median cos(B - A, A) over tensors
    tensors: int


@dataclass
class WeightFacts:
    format: tuple[str, str]
    bytes_read: tuple[int, int]
    num_layers: tuple[int | None, int | None]
    hidden_size: tuple[int | None, int | None]
    embedding: EmbeddingMatch | None
    pairs: list[LayerPair]
    layer_matrix: list[list[float | None]]
    layers_a: list[int]
    layers_b: list[int]
    tensor_matches: list[TensorMatch]
    layer_score: float | None  # median similarity of the values of the paired layers
    invariant_score: float | None  # median rotation-invariant similarity of the paired layers' reading matrices
    score: float  # the weight score the derived threshold applies to
    z: float
    duplicated_layers: list[tuple[int, int, float]] = field(default_factory=list)  # (B layer, A layer it repeats, score)
    merge: MergeFit | None = None
    merge_estimate: MergeEstimate | None = None
    # Without paired embedding rows: median row-Gram correlation of the paired layers' reading
    # matrices, whether it found the residual stream rotated (values unmatched, Grams kept), and
    # the median value correlation that did not match.
    row_gram_score: float | None = None
    rotated_by_row_grams: bool = False
    unrotated_score: float | None = None

    def to_dict(self) -> dict[str, Any]:
        def rel(v: float) -> float | None:
            return round(v, 6) if np.isfinite(v) else None
        out: dict[str, Any] = {
            "available": True,
            "format": list(self.format),
            "bytes_read": {"a": self.bytes_read[0], "b": self.bytes_read[1]},
            "num_layers": list(self.num_layers),
            "hidden_size": list(self.hidden_size),
            "layers": [{"a": p.a, "b": p.b, "score": round(p.score, 4)} for p in self.pairs],
            "layer_score": None if self.layer_score is None else round(self.layer_score, 4),
            "invariant_score": None if self.invariant_score is None else round(self.invariant_score, 4),
            "tensors": [
                {"a": m.a, "b": m.b, "role": m.role,
                 "similarity": None if m.similarity is None else round(m.similarity, 4),
                 "invariant": None if m.invariant is None else round(m.invariant, 4),
                 "relative_change": rel(m.rel_delta), "hidden_aligned": m.aligned}
                for m in self.tensor_matches
            ],
            "score": round(self.score, 4),
            "z": round(self.z, 1),
        }
        if self.embedding is not None:
            out["embedding"] = self.embedding.to_dict()
        if self.duplicated_layers:
            out["duplicated_layers"] = [{"b": b, "a": a, "score": round(s, 4)} for b, a, s in self.duplicated_layers]
        if self.merge is not None:
            m = self.merge
            out["merge"] = {"parent": m.parent, "weight_a": round(m.weight_a, 4), "weight_c": round(m.weight_c, 4),
                            "residual": round(m.residual, 4), "tensors": m.tensors}
        if self.row_gram_score is not None:
            out["row_gram_score"] = round(self.row_gram_score, 4)
            out["rotated_by_row_grams"] = self.rotated_by_row_grams
        if self.merge_estimate is not None:
            e = self.merge_estimate
            out["merge_estimate"] = {"weight": round(e.weight, 4), "spread": round(e.spread, 4),
                                     "delta_cosine": round(e.delta_cosine, 4), "tensors": e.tensors}
        return out


@dataclass
class ComparisonFacts:
    """Everything the verdict needs about a pair, measured once."""

    config: ConfigFacts
    tokenizer: TokenizerFacts
    weights: WeightFacts | None  # None when either side's weights cannot be compared
    unreadable: str | None  # why not: a pickled checkpoint, no weight files, no decodable tensor
    weight_notes: tuple[str | None, str | None]  # what each side's fingerprint says about its weights
    sample_digests_equal: bool
    configs_equal: bool
    vocabularies_equal: bool
    shared_files: tuple[str, ...]
    structure_equal: bool
    tensor_names: tuple[frozenset[str], frozenset[str]]
    dtypes: tuple[tuple[str, ...], tuple[str, ...]]  # float and quantised dtypes of each side
    vocab_sizes: tuple[int | None, int | None]
    embedding_dtypes: tuple[str | None, str | None]  # dtype of each side's embedding matrix
