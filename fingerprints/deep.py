"""The deep comparison: more ranged reads, aligned with torch, ending in a p-value against independence.

The standard fingerprint reads at most 1 MiB and decides most pairs. Some it cannot: a residual
stream rotated by an orthogonal matrix (QuaRot/SpinQuant), rotated and sliced (SliceGPT), an
upcycled mixture of experts whose experts it never samples. ``deep_compare`` reads, within a byte
budget per model (``DEEP_BYTE_BUDGET`` unless told):

1. whole embedding rows of up to ``DEEP_TOKENS_MAX`` tokens both vocabularies share (consecutive ids);
2. in up to ``DEEP_LAYERS`` layers, a block of whole FFN rows: gate and up rows of a gated FFN, up
   rows and down columns otherwise, the same block of every expert of a mixture of experts;
3. in up to ``DEEP_LAYERS`` layers, the whole Q, K, V and O matrices (within ``ATTENTION_SHARE``
   of the budget; a layer is read whole or not at all);
4. the norm gains in front of them.

Alignment (AWM's, generalised from permutations to rotations): the orthogonal Procrustes map R
with B's embedding rows ~ A's rows @ R, fitted on the shared tokens. B's FFN vectors are mapped
into A's basis with R, after each model's RMSNorm gain is folded into its own matrices, so a
permutation, sign flips, a rotation with norm folding and deleted directions all become "the same
vectors" again. Fitting R can also align independent models somewhat (Zhu et al. App. G: least
squares aligns anything a little), so R is never the evidence itself; the test below is.

The test (the idea of Zhu et al.'s phi_MATCH, on weights instead of activations): for each A
neuron, its best-matching B neuron by one of its vectors (gate, or up) and by the other (up, or
down). A copy keeps a neuron's two vectors together, so both name the same B neuron whatever
permutation, rotation or noise was applied; for independent models the two best matches agree by
chance, with m_B candidate neurons about once per m_B A-neurons. The chance level is measured, not
assumed: the same count after a random rotation of B's basis keeps whatever couples a neuron's
two vectors inside each model and destroys the link between the models. Each FFN (or expert)
pair gets a Poisson p-value.

The attention test (AWM's Q/K comparison, made to hold under rotations and head permutations): per
layer the Q/K form S = sum over heads of W_q,h^T W_k,h (the bilinear form of the attention scores)
and the V/O form W_o,h W_v,h summed the same way, each d x d on the residual stream with the
RMSNorm gain folded in, B's mapped into A's basis by R (S_B -> R S_B R^T). Head permutations,
per-head Q/K and V/O rescaling, RoPE-commuting rotations inside a head, per-KV-head V/O mixing and
llama.cpp's Q/K row order leave both forms unchanged; a rotated residual stream is undone by R.
Similarity: the cosine of the forms' traceless parts. Like linear CKA (the cosine of two centred
Gram matrices) but centred by what a random rotation leaves on average (tr S / d * I) instead of a
sample mean, since residual dimensions are no i.i.d. sample; its chance value is exactly 0. Its
p-value is a bound, not an estimate: under the null that B's form sits a Haar-random rotation Z
away from A's (the chance level the FFN test measures, here in closed form), the cosine is a
2*||A||op/||A||F-Lipschitz function of Z (A: A's traceless form), and SO(d)'s Ricci curvature
(d-2)/4 gives (Bakry-Emery, Herbst; Meckes, *The Random Matrix Theory of the Classical Compact
Groups*, 2019, ch. 5) P(cosine >= t) <= exp(-(d-2) t^2 / (8 L^2)). AWM's own number, the unbiased
linear CKA of the aligned Q and K projections (residual dimensions as samples), is reported beside it.

Fisher's method combines every FFN and attention p-value into the verdict's p-value. It assumes them
independent under the null: they come from different matrices, but one rotation relates all of B
to A, so they are only nearly so (the measured chance cosines of different layers are ~1e-3 and
unrelated). The attention bounds leave the margin: on SmolLM2 a bound of p = 0.01 needs a cosine
at least 40 times the measured chance spread (~0.002). Every number is in the evidence.
"""

from __future__ import annotations

import functools
import math
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .compare import difference_rank
from .deferred_import import DeferredModule
from .engine import tensor_layouts
from .facts import DERIVED_VERDICTS, Kind, Verdict
from .model import Fingerprint
from .reader import RangeReader, RangeRequest
from .roles import expert_index
from .tokenizer import canonical_tokens
from .weights import TensorLayout, decode

# Loaded by the first comparison that aligns tensors: this module's constants and p-value helpers
# are imported by every command's help and by callers that never compare in depth.
torch = DeferredModule("torch")
stats = DeferredModule("scipy.stats")

# Bytes of tensor data each model may be read for in a deep comparison. 64 MiB reads all of
# SmolLM2-135M's FFN rows in 4 layers and 4096 embedding rows; a 7B model gets blocks of rows.
DEEP_BYTE_BUDGET = 64 * 1024 * 1024
EMBEDDING_SHARE = 0.25
DEEP_TOKENS_MAX = 4096
DEEP_LAYERS = 4
# Share of the budget for whole attention matrices. SmolLM2-135M's Q/K/V/O are 1.7 MiB a layer
# (bf16): 4 layers fit at the default budget, 2 at 12 MiB. A 7B model's are 80-128 MiB a layer:
# they need --budget of 0.25-0.4 GiB per layer, and are skipped, with that said, below it.
ATTENTION_SHARE = 1 / 3
# Fewer shared tokens than this leave R to chance: B's vectors are compared in their own basis.
MIN_ALIGNMENT_TOKENS = 256
# Fewer neurons than this per FFN block makes a layer test too weak to be worth its bytes.
MIN_NEURONS = 64
# Random rotations of B's basis that measure the chance agreement (each costs one more matching).
NULL_ROTATIONS = 2
# Combined p-value below which the two models are declared dependent. Under independence the
# p-value is uniform (the attention bounds make it conservative), so this is the false-alarm rate per
# comparison (one in a million); derived pairs measured by benchmarks/deep.py (README; 16 MiB per
# model) sit at p <= 1e-2521 (the attention test alone at p <= 1e-66), independent ones at p >= 0.7.
DEEP_P_MAX = 1e-6
# Held-out centred cosine of the Procrustes-aligned embeddings above which the alignment is a
# rotation (not a permutation): each row of R has its largest entry below ROTATION_MAX_ENTRY.
ROTATION_MAX_ENTRY = 0.9

ELEMENT_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2}
GATE_ROLES = ("mlp_gate", "expert_mlp_gate")
UP_ROLES = ("mlp_up", "expert_mlp_up")
DOWN_ROLES = ("mlp_down", "expert_mlp_down")
ATTENTION_ROLES = ("attn_q", "attn_k", "attn_v", "attn_o")


@dataclass
class FFNUnit:
    """The neuron-indexed views of one FFN or one expert: (layout, first row, kind) for two views.

    kind "rows": neuron i is row first+i (gate/up matrices); "cols": neuron i is column i of the
    whole (hidden x ff) matrix (down projections).
    """

    layer: int
    expert: int | None
    views: tuple[tuple[TensorLayout, int, str], tuple[TensorLayout, int, str]]
    neurons: int
    norm: TensorLayout | None  # RMSNorm gain folded into reading views


@dataclass
class UnitTest:
    layer_a: int
    layer_b: int
    expert_a: int | None
    expert_b: int | None
    neurons: int
    agree: int
    chance: float
    log10_p: float
    matched_cosine: float

    def label(self) -> str:
        a = f"A{self.layer_a}" + (f".e{self.expert_a}" if self.expert_a is not None else "")
        b = f"B{self.layer_b}" + (f".e{self.expert_b}" if self.expert_b is not None else "")
        return f"{a}→{b}"


@dataclass
class DeepComparison:
    dependent: bool
    log10_p: float  # combined over FFN and attention tests, Fisher; -inf never: floored at the float range
    tests: list[UnitTest]  # the FFN tests
    shared_tokens: int
    alignment: dict[str, Any]
    expert_map: list[str]
    bytes_read: dict[str, int]
    seconds: float
    cpu_seconds: float
    device: str
    attention: AttentionComparison
    evidence: list[str] = field(default_factory=list)
    kinds: list[Kind] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "dependent": self.dependent, "log10_p": round(self.log10_p, 1), "p_max": DEEP_P_MAX,
            "shared_tokens": self.shared_tokens, "alignment": self.alignment, "expert_map": self.expert_map,
            "attention": self.attention.to_dict(),
            "bytes_read": self.bytes_read, "seconds": round(self.seconds, 2), "cpu_seconds": round(self.cpu_seconds, 2), "device": self.device,
            "kinds": self.kinds, "evidence": self.evidence,
            "tests": [{"pair": t.label(), "neurons": t.neurons, "agree": t.agree, "chance": round(t.chance, 2),
                       "log10_p": round(t.log10_p, 1), "matched_cosine": round(t.matched_cosine, 3)} for t in self.tests],
        }


@dataclass
class AttentionLayer:
    """One layer's whole Q, K, V and O matrices, its head counts, and the RMSNorm gain read before them."""

    layer: int
    q: TensorLayout
    k: TensorLayout
    v: TensorLayout
    o: TensorLayout
    heads: int
    kv_heads: int
    norm: TensorLayout | None

    @property
    def nbytes(self) -> int:
        return sum(t.nbytes for t in (self.q, self.k, self.v, self.o, self.norm) if t is not None)


@dataclass
class AttentionTest:
    """The Q/K and V/O forms of one layer pair: cosines of their traceless parts, AWM's CKA, p-value bounds."""

    layer_a: int
    layer_b: int
    qk_cosine: float
    ov_cosine: float
    qk_log10_p: float
    ov_log10_p: float
    q_cka: float
    k_cka: float

    def to_dict(self) -> dict[str, Any]:
        return {"pair": f"A{self.layer_a}→B{self.layer_b}", "qk_cosine": round(self.qk_cosine, 4),
                "ov_cosine": round(self.ov_cosine, 4), "qk_log10_p": round(self.qk_log10_p, 1),
                "ov_log10_p": round(self.ov_log10_p, 1), "q_cka": round(self.q_cka, 4), "k_cka": round(self.k_cka, 4)}


@dataclass
class AttentionComparison:
    """What the attention test read (layers, bytes), what it cost, and its tests."""

    layers: list[tuple[int, int]]
    bytes_read: dict[str, int]
    cpu_seconds: float
    tests: list[AttentionTest]
    skipped: str | None = None  # why no layer was compared, when none was

    @property
    def log10_ps(self) -> list[float]:
        return [p for t in self.tests for p in (t.qk_log10_p, t.ov_log10_p)]

    def to_dict(self) -> dict[str, Any]:
        return {"layers": [list(pair) for pair in self.layers], "bytes_read": self.bytes_read,
                "cpu_seconds": round(self.cpu_seconds, 2), "log10_p": round(fisher_log10(self.log10_ps), 1),
                "skipped": self.skipped, "tests": [t.to_dict() for t in self.tests]}


def p_text(log10_p: float) -> str:
    return f"p = {10 ** log10_p:.2g}" if log10_p > -300 else f"p = 1e{log10_p:.0f}"


# ---- what to read ----------------------------------------------------------------------------------

def _ffn_units(fp: Fingerprint, layouts: dict[str, TensorLayout]) -> dict[int, list[FFNUnit]]:
    """Per layer, its FFN (dense) or its experts, with the two neuron-indexed views of each."""
    by_layer: dict[int, dict[str, list]] = {}
    for info in fp.weights.tensors if fp.weights is not None else []:
        if info.layer is None or info.name not in layouts:
            continue
        by_layer.setdefault(info.layer, {}).setdefault(info.role, []).append(info)
    units: dict[int, list[FFNUnit]] = {}
    for layer, roles in by_layer.items():
        # A pre-norm RMSNorm gain (no bias) is folded; LayerNorm (with a bias) subtracts a mean, so
        # it does not commute with a rotation and folding it would compare nothing better.
        norm = roles.get("norm_mlp", [None])[0] if "norm_mlp_bias" not in roles else None
        norm_layout = layouts.get(norm.name) if norm is not None else None
        gated = any(r in roles for r in GATE_ROLES)
        first_roles, second_roles = (GATE_ROLES, UP_ROLES) if gated else (UP_ROLES, DOWN_ROLES)
        firsts = [i for r in first_roles for i in roles.get(r, [])]
        seconds = [i for r in second_roles for i in roles.get(r, [])]
        found = []
        for first in firsts:
            expert = expert_index(first.name)
            second = next((s for s in seconds if expert_index(s.name) == expert), None)
            if second is None:
                continue
            experts = first.shape[0] if len(first.shape) == 3 else None  # GGUF ffn_*_exps: (experts, ff, hidden)
            neurons = first.shape[-2]
            for e in range(experts or 1):
                views = ((layouts[first.name], e * neurons if experts else 0, "rows"),
                         _second_view(layouts[second.name], second.shape, e, gated))
                found.append(FFNUnit(layer, e if experts else expert, views, neurons, norm_layout))
        if found:
            units[layer] = found
    return units


def _second_view(layout: TensorLayout, shape: list[int], expert: int, gated: bool):
    if gated:
        return (layout, expert * shape[-2] if len(shape) == 3 else 0, "rows")
    return (layout, 0, "cols")


def _attention_layers(fp: Fingerprint, layouts: dict[str, TensorLayout]) -> dict[int, AttentionLayer]:
    """Per layer, its separate Q, K, V, O matrices (fused QKV is not split) with consistent head counts.

    Without num_heads in the config, only layers whose K is as tall as Q (no grouped-query
    attention) can be paired head by head; then the head count does not matter and is taken as 1.
    """
    by_layer: dict[int, dict[str, Any]] = {}
    for info in fp.weights.tensors if fp.weights is not None else []:
        if info.layer is not None and info.name in layouts and (info.role in ATTENTION_ROLES or info.role in ("norm_attn", "norm_attn_bias")):
            by_layer.setdefault(info.layer, {})[info.role] = layouts[info.name]
    heads_config = fp.config.fields.get("num_heads") if fp.config is not None else None
    found = {}
    for layer, roles in by_layer.items():
        if not all(r in roles and len(roles[r].shape) == 2 for r in ATTENTION_ROLES):
            continue
        q, k, v, o = (roles[r] for r in ATTENTION_ROLES)
        heads = heads_config if isinstance(heads_config, int) and heads_config > 0 else (1 if q.shape == k.shape else 0)
        if not heads or q.shape[0] % heads or k.shape != v.shape or o.shape[1] != q.shape[0]:
            continue
        head_dim = q.shape[0] // heads
        if k.shape[0] % head_dim or heads % (k.shape[0] // head_dim):
            continue
        # LayerNorm (with a bias) subtracts a mean: folding its gain would compare nothing better.
        norm = roles.get("norm_attn") if "norm_attn_bias" not in roles else None
        found[layer] = AttentionLayer(layer, q, k, v, o, heads, k.shape[0] // head_dim, norm)
    return found


def _layer_pairs(layers_a: list[int], layers_b: list[int], count: int) -> list[tuple[int, int]]:
    """Up to ``count`` evenly spaced A layers, each with the B layer at the same relative depth."""
    if not layers_a or not layers_b:
        return []
    picks = sorted({round(i) for i in np.linspace(0, len(layers_a) - 1, min(count, len(layers_a)))})
    pairs = []
    for i in picks:
        j = round(i * (len(layers_b) - 1) / max(1, len(layers_a) - 1))
        pairs.append((layers_a[i], layers_b[j]))
    return pairs


def _shared_tokens(fa: Fingerprint, fb: Fingerprint, rows_a: int, rows_b: int, limit: int) -> tuple[list[int], list[int]]:
    """Up to ``limit`` tokens both vocabularies have, as (A ids, B ids): a run of consecutive A ids.

    Consecutive ids are one ranged read per side when the vocabularies agree on ids (the usual
    case); scattered rows would be merged into far larger reads over HTTP. The run starts a tenth
    of the way into A's vocabulary, past byte tokens and specials, and wraps around. Tokens are
    paired on their canonical spelling (tokenizer.canonical_tokens), so a GGUF's llama.cpp spelling
    of a BERT vocabulary pairs with the WordPiece original; a spelling shared by several ids pairs
    its first.
    """
    if not fa.tokenizer or not fb.tokenizer or not fa.tokenizer.vocab or not fb.tokenizer.vocab or limit <= 0:
        return [], []
    va, vb = canonical_tokens(fa.tokenizer.vocab[:rows_a]), canonical_tokens(fb.tokenizer.vocab[:rows_b])
    ids_b: dict[str, int] = {}
    for i, t in enumerate(vb):
        if t:
            ids_b.setdefault(t, i)
    shared = [(i, ids_b[t]) for i, t in enumerate(va) if t and t in ids_b]
    first = next((k for k, (i, _) in enumerate(shared) if i >= rows_a // 10), 0)
    run = (shared[first:] + shared[:first])[:limit]
    return [i for i, _ in run], [j for _, j in run]


# ---- reading ------------------------------------------------------------------------------------------

def _read_rows(reader: RangeReader, layout: TensorLayout, rows: list[int]) -> np.ndarray:
    requests = layout.requests(rows)
    return layout.decode(b"".join(reader.read_ranges(requests)), len(rows))


def _read_matrix(reader: RangeReader, layout: TensorLayout) -> np.ndarray:
    return _read_rows(reader, layout, list(range(layout.shape[0])))


def _read_vector(reader: RangeReader, layout: TensorLayout) -> np.ndarray:
    """A whole 1-D tensor (a norm gain): its "rows" are single values."""
    return _read_matrix(reader, layout).reshape(-1)


def _read_view(reader: RangeReader, view, start: int, count: int) -> np.ndarray:
    """Neurons start..start+count of a view, one row per neuron."""
    layout, offset, kind = view
    if kind == "rows":
        return _read_rows(reader, layout, list(range(offset + start, offset + start + count)))
    size = ELEMENT_BYTES.get(layout.dtype)
    if size is None or layout.dequantize is not None or layout.row_order is not None:
        # Quantised rows decode only whole (blocks of 32 or 256 values): read the matrix.
        whole = _read_rows(reader, layout, list(range(layout.shape[0])))
        return whole[:, start : start + count].T
    # Columns of a plain float matrix: the same slice of every row, one range per row.
    requests = [RangeRequest(layout.file, layout.offset + r * layout.row_bytes + start * size, count * size)
                for r in range(layout.shape[0])]
    return decode(b"".join(reader.read_ranges(requests)), layout.dtype).reshape(layout.shape[0], count).T


def _view_bytes(view, count: int) -> int:
    layout, _, kind = view
    if kind == "rows":
        return count * layout.row_bytes
    size = ELEMENT_BYTES.get(layout.dtype)
    if size is None or layout.dequantize is not None or layout.row_order is not None:
        return layout.nbytes
    return count * layout.shape[0] * size


# ---- the statistics ----------------------------------------------------------------------------------

def procrustes(xa: torch.Tensor, xb: torch.Tensor) -> torch.Tensor:
    """R (d_a x d_b, orthonormal rows or columns) minimising ||xa R - xb|| (columns centred first).

    Fitted in float64 (the SVD of a cross-covariance of a few thousand rows), returned in xa's dtype.
    """
    xa = xa.double() - xa.double().mean(0, keepdim=True)
    xb = xb.double() - xb.double().mean(0, keepdim=True)
    u, _, vh = torch.linalg.svd(xa.T @ xb, full_matrices=False)
    return (u @ vh).to(torch.float32)


def _row_cosines(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    a = a - a.mean(0, keepdim=True)
    b = b - b.mean(0, keepdim=True)
    return torch.nn.functional.cosine_similarity(a, b, dim=1)


@functools.lru_cache(maxsize=8)
def null_rotations(n: int, device: str) -> tuple[torch.Tensor, ...]:
    """NULL_ROTATIONS fixed Haar-random orthogonal n x n matrices (seeded: the same chance level every run)."""
    rotations = []
    for seed in range(NULL_ROTATIONS):
        gaussian = torch.randn(n, n, generator=torch.Generator().manual_seed(1000 + seed), dtype=torch.float64).to(device)
        q, r = torch.linalg.qr(gaussian)
        rotations.append((q * torch.sign(torch.diagonal(r))).to(torch.float32))
    return tuple(rotations)


def _best_matches(va: torch.Tensor, vb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """For each row of va, the index of the row of vb with the largest |cosine|, and that |cosine|."""
    sims = torch.nn.functional.normalize(va, dim=1) @ torch.nn.functional.normalize(vb, dim=1).T
    best = sims.abs().max(dim=1)
    return best.indices, best.values


def neuron_agreement(a1, a2, b1, b2) -> tuple[int, float]:
    """How many A neurons get the same best B neuron by both views, and the mean best |cosine|."""
    j1, c1 = _best_matches(a1, b1)
    j2, _ = _best_matches(a2, b2)
    return int((j1 == j2).sum()), float(c1.mean())


def poisson_log10_sf(agree: int, chance: float) -> float:
    """log10 P(X >= agree) for X ~ Poisson(chance).

    Far in the tail scipy's logsf underflows to -inf; there the tail is bounded above by
    P(X = agree) / (1 - chance / (agree + 1)) (a geometric series), which is what is returned.
    """
    if agree <= 0:
        return 0.0
    log_sf = float(stats.poisson.logsf(agree - 1, chance))
    if math.isfinite(log_sf):
        return log_sf / math.log(10)
    bound = float(stats.poisson.logpmf(agree, chance)) - math.log1p(-chance / (agree + 1))
    return bound / math.log(10)


def fisher_log10(log10_ps: list[float]) -> float:
    """log10 of Fisher's combined p-value.

    The chi-square(2k) tail of X = -2 sum(ln p) in closed form, exp(-X/2) sum_{i<k} (X/2)^i / i!,
    summed in logs: scipy's chi2.logsf underflows to -inf for the p-values copies produce.
    """
    if not log10_ps:
        return 0.0
    half = -math.log(10) * sum(log10_ps)
    if half <= 0:
        return 0.0
    terms = [i * math.log(half) - math.lgamma(i + 1) for i in range(len(log10_ps))]
    top = max(terms)
    log_p = -half + top + math.log(sum(math.exp(t - top) for t in terms))
    return min(0.0, log_p / math.log(10))


# ---- the attention test ----------------------------------------------------------------------------

def attention_forms(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, o: torch.Tensor,
                    heads: int, kv_heads: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The Q/K form sum_h W_q,h^T W_k,g(h) and the V/O form sum_h W_o,h W_v,g(h), both d x d.

    g(h) is query head h's key/value head (grouped-query attention repeats each kv_heads times).
    Sums over heads: a head permutation, a per-head rescaling of Q against K or V against O, and an
    orthogonal map inside a head applied to both sides leave each head's term, and so the form, unchanged.
    """
    head_dim = q.shape[0] // heads

    def expanded(m: torch.Tensor) -> torch.Tensor:
        return m.reshape(kv_heads, head_dim, -1).repeat_interleave(heads // kv_heads, 0).reshape(heads * head_dim, -1)

    return q.T @ expanded(k), o @ expanded(v)


def traceless_cosine(a: torch.Tensor, b: torch.Tensor) -> tuple[float, float]:
    """The cosine of two d x d forms' traceless parts and the p-value bound's Lipschitz factor.

    The traceless part S - tr(S)/d I is what a Haar-random rotation Z leaves on average zero
    (E[Z S Z^T] = tr(S)/d I), so the cosine's chance value is 0. The factor bounds ||A||op / ||A||F
    of A's traceless part from above: the cosine of A with Z B Z^T changes by at most twice that
    per unit of Frobenius distance moved by Z (B's ratio would do as well; one is enough). The
    bound is the Schatten-8 norm (sum of sigma^8)^(1/8) >= sigma_max, two matrix products: the
    spectral norm itself is an SVD, 0.4 s CPU at d = 576 but 100 s at d = 4096.
    """
    a, b = a.double(), b.double()
    eye = torch.eye(a.shape[0], dtype=a.dtype, device=a.device)
    a = a - torch.trace(a) / a.shape[0] * eye
    b = b - torch.trace(b) / b.shape[0] * eye
    na, nb = torch.linalg.matrix_norm(a), torch.linalg.matrix_norm(b)
    if float(na) == 0 or float(nb) == 0:
        return 0.0, 1.0
    cosine = float((a * b).sum() / (na * nb))
    unit = a / na
    gram = unit.T @ unit
    spread = float(torch.linalg.matrix_norm(gram @ gram)) ** 0.25
    return cosine, spread


def rotation_null_log10_p(cosine: float, spread: float, dim: int) -> float:
    """log10 of the bound on P(cosine >= observed) when B's form is a Haar-random rotation of A's basis away.

    Concentration on SO(d) (Ricci curvature (d-2)/4; Bakry-Emery, Herbst): for an L-Lipschitz f,
    P(f >= E f + t) <= exp(-(d-2) t^2 / (8 L^2)), here with E f = 0 and L = 2 * spread.
    """
    if cosine <= 0 or dim < 3:
        return 0.0
    return -(dim - 2) * cosine**2 / (8 * (2 * spread) ** 2) / math.log(10)


def unbiased_linear_cka(x: torch.Tensor, y: torch.Tensor) -> float:
    """Linear CKA with the unbiased HSIC estimator (Song et al. 2012), rows as samples: AWM's similarity."""
    k, l = (m.double() @ m.double().T for m in (x, y))
    n = k.shape[0]
    if n < 4:
        return 0.0

    def hsic(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        a, b = a - torch.diag(torch.diagonal(a)), b - torch.diag(torch.diagonal(b))
        ones = torch.ones(n, dtype=a.dtype, device=a.device)
        return ((a * b).sum() + a.sum() * b.sum() / ((n - 1) * (n - 2)) - 2 / (n - 2) * (ones @ a @ (b @ ones))) / (n * (n - 3))

    denominator = float(hsic(k, k) * hsic(l, l))
    return float(hsic(k, l)) / math.sqrt(denominator) if denominator > 0 else 0.0


def _attention_matrices(reader: RangeReader, unit: AttentionLayer, tensor) -> tuple[torch.Tensor, ...]:
    """Q, K, V, O read whole, the RMSNorm gain folded into the matrices that read the normed stream."""
    q, k, v, o = (tensor(_read_matrix(reader, t)) for t in (unit.q, unit.k, unit.v, unit.o))
    if unit.norm is not None:
        gain = tensor(_read_vector(reader, unit.norm))
        q, k, v = q * gain, k * gain, v * gain
    return q, k, v, o


def attention_test(a: tuple[torch.Tensor, ...], b: tuple[torch.Tensor, ...], unit_a: AttentionLayer,
                   unit_b: AttentionLayer, rotation: torch.Tensor | None) -> AttentionTest | None:
    """One layer pair's forms compared in A's basis; None when the widths differ and nothing aligns them."""
    if rotation is None and a[0].shape[1] != b[0].shape[1]:
        return None
    # B's matrices read (and O writes) B's residual stream: R maps it into A's basis.
    if rotation is not None:
        b = (b[0] @ rotation.T, b[1] @ rotation.T, b[2] @ rotation.T, rotation @ b[3])
    qk_a, ov_a = attention_forms(*a, unit_a.heads, unit_a.kv_heads)
    qk_b, ov_b = attention_forms(*b, unit_b.heads, unit_b.kv_heads)
    dim = qk_a.shape[0]
    qk, qk_spread = traceless_cosine(qk_a, qk_b)
    ov, ov_spread = traceless_cosine(ov_a, ov_b)
    return AttentionTest(unit_a.layer, unit_b.layer, qk, ov, rotation_null_log10_p(qk, qk_spread, dim),
                         rotation_null_log10_p(ov, ov_spread, dim),
                         unbiased_linear_cka(a[0].T, b[0].T), unbiased_linear_cka(a[1].T, b[1].T))


def _compare_attention(reader_a, fa, layouts_a, reader_b, fb, layouts_b, share: float, rotation, tensor) -> AttentionComparison:
    """Up to DEEP_LAYERS evenly spaced layer pairs whose whole Q/K/V/O fit ``share`` bytes per model."""
    cpu_started = time.process_time()
    units_a, units_b = _attention_layers(fa, layouts_a), _attention_layers(fb, layouts_b)
    if not units_a or not units_b:
        return AttentionComparison([], {"a": 0, "b": 0}, 0.0, [], "no separate Q/K/V/O matrices on both sides")
    largest = max(u.nbytes for u in [*units_a.values(), *units_b.values()])
    count = min(DEEP_LAYERS, int(share // largest))
    if count == 0:
        return AttentionComparison([], {"a": 0, "b": 0}, 0.0, [],
                                   f"one layer's Q/K/V/O is {largest / 2**20:.1f} MiB, over the attention share "
                                   f"of the budget ({share / 2**20:.1f} MiB)")
    pairs = _layer_pairs(sorted(units_a), sorted(units_b), count)
    tests = []
    for la, lb in pairs:
        test = attention_test(_attention_matrices(reader_a, units_a[la], tensor), _attention_matrices(reader_b, units_b[lb], tensor),
                              units_a[la], units_b[lb], rotation)
        if test is not None:
            tests.append(test)
    bytes_read = {"a": sum(units_a[la].nbytes for la, _ in pairs), "b": sum(units_b[lb].nbytes for _, lb in pairs)}
    skipped = None if tests else "the widths differ and no alignment maps them"
    return AttentionComparison(pairs, bytes_read, time.process_time() - cpu_started, tests, skipped)


# ---- the comparison ------------------------------------------------------------------------------------

def deep_compare(reader_a: RangeReader, fa: Fingerprint, reader_b: RangeReader, fb: Fingerprint,
                 budget: int = DEEP_BYTE_BUDGET, device: str | None = None) -> DeepComparison:
    started, cpu_started = time.perf_counter(), time.process_time()
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    before = {"a": reader_a.bytes_read, "b": reader_b.bytes_read}
    layouts_a = {t.name: t for t in tensor_layouts(reader_a)}
    layouts_b = {t.name: t for t in tensor_layouts(reader_b)}
    header_bytes = {"a": reader_a.bytes_read - before["a"], "b": reader_b.bytes_read - before["b"]}
    spent = {"a": 0, "b": 0}
    evidence: list[str] = []

    def tensor(x: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).to(device)

    # 1. Alignment from shared tokens' whole embedding rows.
    emb_a = layouts_a.get(fa.weights.embedding.tensor) if fa.weights and fa.weights.embedding else None
    emb_b = layouts_b.get(fb.weights.embedding.tensor) if fb.weights and fb.weights.embedding else None
    alignment: dict[str, Any] = {"method": "none"}
    rotation = None
    tokens = 0
    if emb_a is not None and emb_b is not None:
        limit = int(min(DEEP_TOKENS_MAX, budget * EMBEDDING_SHARE // max(emb_a.row_bytes, emb_b.row_bytes)))
        ids_a, ids_b = _shared_tokens(fa, fb, emb_a.shape[0], emb_b.shape[0], limit)
        tokens = len(ids_a)
        if tokens >= MIN_ALIGNMENT_TOKENS:
            xa, xb = tensor(_read_rows(reader_a, emb_a, ids_a)), tensor(_read_rows(reader_b, emb_b, ids_b))
            spent["a"] += tokens * emb_a.row_bytes
            spent["b"] += tokens * emb_b.row_bytes
            fit, held = xa[0::2], xa[1::2]
            r_half = procrustes(fit, xb[0::2])
            held_out = float(_row_cosines(held @ r_half, xb[1::2]).mean())
            rotation = procrustes(xa, xb)
            largest = rotation.abs().max(dim=1).values if rotation.shape[0] <= rotation.shape[1] else rotation.abs().max(dim=0).values
            direct = float(_row_cosines(xa, xb).mean()) if xa.shape[1] == xb.shape[1] else None
            alignment = {"method": "procrustes", "tokens": tokens, "held_out_cosine": round(held_out, 4),
                         "direct_cosine": None if direct is None else round(direct, 4),
                         "largest_entry_median": round(float(largest.median()), 4),
                         "width": [int(xa.shape[1]), int(xb.shape[1])]}
            evidence.append(
                f"deep alignment: orthogonal Procrustes on {tokens} shared tokens' whole embedding rows, "
                f"held-out centred cosine {held_out:.3f}" + (f" (unaligned {direct:.3f})" if direct is not None else "")
                + f"; median largest |R| entry per dim {float(largest.median()):.2f} (1 = a permutation)")

    # 2. Whole Q/K/V/O of a few layer pairs.
    attention = _compare_attention(reader_a, fa, layouts_a, reader_b, fb, layouts_b, budget * ATTENTION_SHARE, rotation, tensor)
    spent["a"] += attention.bytes_read["a"]
    spent["b"] += attention.bytes_read["b"]

    # 3. FFN blocks of a few layer pairs, in what is left of the budget.
    units_a, units_b = _ffn_units(fa, layouts_a), _ffn_units(fb, layouts_b)
    pairs = _layer_pairs(sorted(units_a), sorted(units_b), DEEP_LAYERS)
    tests: list[UnitTest] = []
    if pairs:
        per_layer = (budget - max(spent.values())) / len(pairs)
        for la, lb in pairs:
            ua, ub = units_a[la], units_b[lb]
            neurons = min(u.neurons for u in ua + ub)
            per_unit = per_layer / max(len(ua), len(ub))
            # Largest block whose reads fit: bytes grow with the block except whole-matrix reads.
            count = next((n for n in range(neurons, MIN_NEURONS - 1, -MIN_NEURONS // 2)
                          if max(_unit_bytes(u, n) for u in ua + ub) <= per_unit), 0)
            if count < MIN_NEURONS:
                continue
            start = (neurons - count) // 2
            read_a = [_unit_vectors(reader_a, u, start, count, tensor) for u in ua]
            read_b = [_unit_vectors(reader_b, u, start, count, tensor) for u in ub]
            spent["a"] += sum(_unit_bytes(u, count) for u in ua)
            spent["b"] += sum(_unit_bytes(u, count) for u in ub)
            for ia, (a1, a2) in enumerate(read_a):
                for ib, (b1, b2) in enumerate(read_b):
                    test = _unit_test(a1, a2, b1, b2, rotation, device, (la, lb, ua[ia].expert, ub[ib].expert, count))
                    if test is not None:
                        tests.append(test)

    log10_p = fisher_log10([t.log10_p for t in tests] + attention.log10_ps)
    dependent = bool(tests or attention.tests) and log10_p < math.log10(DEEP_P_MAX)
    expert_map = _expert_map(tests)
    bytes_read = {"a": reader_a.bytes_read - before["a"], "b": reader_b.bytes_read - before["b"],
                  "tensor_a": spent["a"], "tensor_b": spent["b"], "headers_a": header_bytes["a"], "headers_b": header_bytes["b"]}
    seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu_started
    result = DeepComparison(dependent, log10_p, tests, tokens, alignment, expert_map, bytes_read, seconds, cpu_seconds, device, attention)
    result.evidence = [
        f"deep read: A {bytes_read['a'] / 2**20:.1f} MiB, B {bytes_read['b'] / 2**20:.1f} MiB "
        f"(budget {budget / 2**20:.0f} MiB each; embedding rows of {tokens} shared tokens, whole Q/K/V/O of "
        f"{len(attention.layers)} and FFN rows of {len({(t.layer_a, t.layer_b) for t in tests})} layer pairs); "
        f"{seconds:.1f} s on {device} ({cpu_seconds:.1f} s CPU)",
        *evidence,
        *_attention_lines(attention),
        *_test_lines(tests),
        *([f"experts: {line}" for line in expert_map]),
        _conclusion(tests, attention, log10_p, dependent),
    ]
    result.kinds = _deep_kinds(result, fa, fb, units_a, units_b)
    return result


def _unit_bytes(unit: FFNUnit, count: int) -> int:
    return sum(_view_bytes(v, count) for v in unit.views) + (unit.norm.nbytes if unit.norm is not None else 0)


def _unit_vectors(reader, unit: FFNUnit, start: int, count: int, tensor):
    first = tensor(_read_view(reader, unit.views[0], start, count))
    second = tensor(_read_view(reader, unit.views[1], start, count))
    if unit.norm is not None:
        gain = tensor(_read_vector(reader, unit.norm))
        first = first * gain
        if unit.views[1][2] == "rows":
            second = second * gain
    return first, second


def _unit_test(a1, a2, b1, b2, rotation, device, where) -> UnitTest | None:
    """None when the two FFNs read hidden states of different widths and no alignment maps them."""
    la, lb, ea, eb, count = where
    if rotation is not None:
        b1, b2 = b1 @ rotation.T, b2 @ rotation.T
    elif a1.shape[1] != b1.shape[1]:
        return None
    agree, cosine = neuron_agreement(a1, a2, b1, b2)
    null = [neuron_agreement(a1, a2, b1 @ z, b2 @ z)[0] for z in null_rotations(a1.shape[1], device)]
    # At least the uniform-chance level (one agreement in count per A neuron).
    chance = max(1.0, float(np.mean(null)))
    return UnitTest(la, lb, ea, eb, count, agree, chance, poisson_log10_sf(agree, chance), cosine)


def _test_lines(tests: list[UnitTest]) -> list[str]:
    if not tests:
        return ["deep test: no FFN blocks to compare (no shared layer structure within the budget)"]
    shown = sorted(tests, key=lambda t: t.log10_p)[:8]
    return ["deep FFN tests (neurons whose gate/up, or up/down, best matches agree; chance from rotated B): " + "; ".join(
        f"{t.label()} {t.agree}/{t.neurons} vs {t.chance:.1f}, {p_text(t.log10_p)}" for t in shown)
        + (f"; … {len(tests) - len(shown)} more" if len(tests) > len(shown) else "")]


def _attention_lines(attention: AttentionComparison) -> list[str]:
    if not attention.tests:
        return [f"deep attention test: not run ({attention.skipped})"]
    layers = ", ".join(f"A{la}→B{lb}" for la, lb in attention.layers)
    return [
        f"deep attention read: whole Q, K, V, O (and the RMSNorm gain before them, where there is one) of layers {layers}: "
        f"A {attention.bytes_read['a'] / 2**20:.2f} MiB, B {attention.bytes_read['b'] / 2**20:.2f} MiB; "
        f"{attention.cpu_seconds:.1f} s CPU",
        "deep attention tests (cosine of the traceless Q/K form sum_h W_q,hᵀW_k,h and V/O form sum_h W_o,hW_v,h, "
        "B in A's basis; chance 0; p bounded under a random rotation of B; AWM's unbiased CKA of Q, K): " + "; ".join(
            f"{t.layer_a}→{t.layer_b} Q/K {t.qk_cosine:.3f} ({p_text(t.qk_log10_p)}), V/O {t.ov_cosine:.3f} "
            f"({p_text(t.ov_log10_p)}), CKA Q {t.q_cka:.3f} K {t.k_cka:.3f}" for t in attention.tests),
    ]


def _conclusion(tests: list[UnitTest], attention: AttentionComparison, log10_p: float, dependent: bool) -> str:
    if not tests and not attention.tests:
        return "deep verdict: undecided (nothing comparable was read)"
    what = "dependent: B's weights come from A's" if dependent else "independence not rejected"
    return (f"deep verdict: {what} (Fisher over {len(tests)} FFN tests and {len(attention.log10_ps)} attention tests "
            f"({p_text(fisher_log10(attention.log10_ps))} alone), {p_text(log10_p)}; declared dependent below p = {DEEP_P_MAX:g})")


def _expert_map(tests: list[UnitTest]) -> list[str]:
    """One line per MoE layer: each expert, the FFN (or expert) it most significantly comes from."""
    best: dict[tuple[int, int | None], UnitTest] = {}
    for t in tests:
        if t.expert_b is None and t.expert_a is None:
            continue
        key = (t.layer_b, t.expert_b) if t.expert_b is not None else (t.layer_a, t.expert_a)
        if key not in best or t.log10_p < best[key].log10_p:
            best[key] = t
    by_layer: dict[int, list[UnitTest]] = {}
    for (layer, _), t in sorted(best.items(), key=lambda kv: (kv[0][0], kv[0][1] or 0)):
        by_layer.setdefault(layer, []).append(t)
    lines = []
    for tests_of_layer in by_layer.values():
        parts = []
        for t in tests_of_layer:
            source = "←" if t.log10_p < math.log10(DEEP_P_MAX) else "not traced to"
            a, b = t.label().split("→")
            parts.append(f"{b} {source} {a} ({t.agree}/{t.neurons} neurons, |cos| {t.matched_cosine:.3f}, {p_text(t.log10_p)})")
        lines.append("; ".join(parts))
    return lines


def _deep_kinds(result: DeepComparison, fa, fb, units_a, units_b) -> list[Kind]:
    if not result.dependent:
        return []
    kinds = []
    a = result.alignment
    if a.get("method") == "procrustes" and a["largest_entry_median"] < ROTATION_MAX_ENTRY:
        kinds.append(Kind.ROTATE)
    if a.get("method") == "procrustes" and a["width"][1] < a["width"][0]:
        kinds.append(Kind.PRUNE)
    experts_a = any(u.expert is not None for us in units_a.values() for u in us)
    experts_b = any(u.expert is not None for us in units_b.values() for u in us)
    if experts_b and not experts_a:
        kinds.append(Kind.MOE_UPCYCLE)
    return kinds


# ---- the rank of a suspected low-rank update --------------------------------------------------------

# A merged adapter changes a few matrices by a low-rank W' - W; the standard budget samples fewer
# rows of each than an adapter's rank. The deep comparison reads up to RANK_ROWS_MAX whole rows of
# up to RANK_MATRICES_MAX of the changed matrices (the same rows on both sides), within
# RANK_BUDGET_SHARE of its budget, and measures the rank of the difference.
RANK_MATRICES_MAX = 12
RANK_ROWS_MAX = 512
RANK_MIN_ROWS = 8
RANK_BUDGET_SHARE = 0.25


def update_rank(reader_a: RangeReader, reader_b: RangeReader, comparison, budget: int) -> dict[str, Any] | None:
    """The rank of B - A in the matrices the standard comparison found changed, or None when none can be read."""
    layouts_a = {t.name: t for t in tensor_layouts(reader_a)}
    layouts_b = {t.name: t for t in tensor_layouts(reader_b)}
    changed = [(layouts_a[t["a"]], layouts_b[t["b"]]) for t in comparison.weights.get("tensors", [])
               if (t.get("relative_change") or 0) > 0 and not t.get("hidden_aligned")
               and t["a"] in layouts_a and t["b"] in layouts_b and len(layouts_a[t["a"]].shape) == 2
               and layouts_a[t["a"]].shape == layouts_b[t["b"]].shape][:RANK_MATRICES_MAX]
    before = {"a": reader_a.bytes_read, "b": reader_b.bytes_read}
    found = []
    for la, lb in changed:
        rows = int(min(la.shape[0], RANK_ROWS_MAX, budget / len(changed) // max(la.row_bytes, lb.row_bytes)))
        if rows < RANK_MIN_ROWS:
            continue
        diff = _read_rows(reader_b, lb, list(range(rows))).astype(np.float64) - _read_rows(reader_a, la, list(range(rows)))
        rank, fall = difference_rank(diff)
        found.append({"a": la.name, "b": lb.name, "rows": rows, "rank": rank, "fall": round(fall, 1)})
    if not found:
        return None
    return {"matrices": found, "bytes_read": {"a": reader_a.bytes_read - before["a"], "b": reader_b.bytes_read - before["b"]}}


def update_rank_line(measured: dict[str, Any]) -> str:
    """One evidence line: "difference of rank 8 in 12 of 12 matrices read (singular values fall 8e6× after 8; …)"."""
    found = measured["matrices"]
    rows = sorted({m["rows"] for m in found})
    rows_text = f"{rows[0]}" if len(rows) == 1 else f"{rows[0]}–{rows[-1]}"
    ranks = Counter(m["rank"] for m in found if m["rank"] is not None)
    if not ranks:
        return (f"deep rank: the differences of {len(found)} changed matrices read ({rows_text} rows each) have no low rank "
                f"(singular values fall at most {max(m['fall'] for m in found):.1f}× from one to the next)")
    rank, count = ranks.most_common(1)[0]
    fall = float(np.median([m["fall"] for m in found if m["rank"] == rank]))
    others = [f"{n} with rank {r}" for r, n in ranks.items() if r != rank]
    others += [f"{n} without a low rank" for n in [sum(m["rank"] is None for m in found)] if n]
    return (f"deep rank: difference of rank {rank} in {count} of {len(found)} matrices read"
            + (f" ({', '.join(others)})" if others else "")
            + f" (singular values fall {f'{fall:.0e}'.replace('e+0', 'e').replace('e+', 'e')}× after {rank}; "
            f"{rows_text} whole rows of each)")


def deepen(comparison, reader_a: RangeReader, fa: Fingerprint, reader_b: RangeReader, fb: Fingerprint,
           budget: int = DEEP_BYTE_BUDGET, device: str | None = None):
    """The standard comparison decided by the deep one (apply_deep), and, when it suspects a merged
    low-rank update, that update's rank measured on whole rows (RANK_BUDGET_SHARE of the budget)."""
    rank_budget = int(budget * RANK_BUDGET_SHARE) if Kind.LOW_RANK in comparison.kinds else 0
    comparison = apply_deep(comparison, deep_compare(reader_a, fa, reader_b, fb, budget - rank_budget, device))
    measured = update_rank(reader_a, reader_b, comparison, rank_budget) if rank_budget else None
    if measured is not None:
        comparison.evidence = comparison.evidence + [update_rank_line(measured)]
        comparison.weights = {**comparison.weights, "update_rank": measured}
    return comparison


def apply_deep(comparison, deep: DeepComparison):
    """The standard comparison with the deep result folded in: its evidence, and the verdict it supports.

    A dependent deep result makes the verdict weights-derived (kinds from the deep alignment and
    structure); an independent one never overrides a standard derived verdict, it only adds its
    lines, because the deep test covers fewer tensors than the standard one samples.
    """
    comparison.evidence = comparison.evidence + deep.evidence
    comparison.weights = {**comparison.weights, "deep": deep.to_dict()}
    comparison.needs_deep = False
    if deep.dependent:
        if comparison.verdict not in DERIVED_VERDICTS:
            comparison.verdict = Verdict.WEIGHTS_DERIVED
            comparison.kinds = [k for k in comparison.kinds if k != Kind.TOKENIZER]
        comparison.kinds = comparison.kinds + [k for k in deep.kinds if k not in comparison.kinds]
        comparison.confidence = max(comparison.confidence, min(0.999, 1 - 10 ** deep.log10_p))
    return comparison
