"""Verdicts, derivation kinds and confidence, with the thresholds that decide them.

Calibration (benchmarks/detection.py; numbers in the README): all derived MiniLM variants
(noise up to r=1, casts, renames, pruning of layers, heads and width, vocabulary extension,
pruning and replacement, hidden/head/neuron permutations, per-head rescaling, a merged LoRA, a
merge with and without its second parent given, depth up-scaling, light and heavy fine-tuning,
combinations, GGUF conversions) and the SmolLM2 cases (rotation with folded norms, SliceGPT-style
deletion, a rotated body under a new tokenizer, GGUF <-> HF) against
independent same-architecture controls (fresh inits with other seeds, a model trained with the
heavy fine-tune's recipe from scratch). Independent controls score at most ~0.03, derived
variants at least ~0.7, so the score threshold sits well inside the gap, and a z-score floor
keeps small samples from deciding on their own.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np

from .facts import (
    ComparisonFacts, ConfigFacts, EmbeddingMatch, HiddenTransform, Kind, MergeEstimate, TensorMatch, TokenizerFacts, Verdict,
    WeightFacts,
)

# A weight score (centred correlation of aligned samples) at or above this, with z at or above
# DERIVED_MIN_Z, means the weights were derived. Independent controls: <= ~0.03; the weakest
# derived case (noise r=1.0, cos = 1/sqrt(2)) ~0.7.
DERIVED_SCORE = 0.25
DERIVED_MIN_Z = 8.0
# The recovered hidden permutation is used only when the alignment beats its shuffled-token null
# by this many standard deviations (independent pairs: |z| < 4 in calibration).
ALIGNMENT_MIN_Z = 8.0
# Share of hidden dims mapped to themselves above which the alignment is "no permutation".
IDENTITY_PERMUTATION_MIN = 0.9
# The embedding cascade (compare.match_embeddings). Gram correlation (token-token cosines) below
# which the hidden basis is not probed: independent controls measure <= 0.01 (MiniLM fresh inits
# 0.003, the model trained from scratch -0.011, SmolLM2's controls -0.003), derived cases >= 0.66
# (noise r=1.0; every other case >= 0.94).
GRAM_PROBE_MIN = 0.3
# Median best |column correlation| of the probed columns above which, and this far above the
# same on shuffled rows, B's columns are a permutation of A's: permuted MiniLM copies measure 1.0
# (null 0.17 at 300-500 rows), rotated SmolLM2 copies 0.26 (null 0.15). With few rows and many
# columns chance alone reaches 0.5 (64 rows, hidden 4096) to 0.75 (32 rows, hidden 8192); a
# noised permutation lost in that null is still found derived by the rotation-blind scores.
PERMUTATION_PROBE_MIN = 0.5
PERMUTATION_PROBE_MARGIN = 0.2
# A rotated copy (no column maps to one column) is derived when the token geometry (Gram) and the
# norm-folded reading matrices (invariant score) both agree at least this much: the rotated
# SmolLM2 measures Gram 1.000 and invariant 1.000, the sliced one (72 of 576 directions deleted)
# 0.985 and 0.933; independent controls <= 0.01 and <= 0.03. Real independently trained models share some token geometry; between GRAM_PROBE_MIN
# and these thresholds the standard budget cannot decide and the comparison asks for --deep.
GRAM_DERIVED = 0.8
INVARIANT_DERIVED = 0.8
# Without embedding rows to pair (a body under a new tokenizer), a rotation is found by the
# sampled rows' cosines inside each residual-reading matrix, (W·diag(g))(W·diag(g))ᵀ, which the
# rotation leaves unchanged: derived when their median correlation over at least
# ROW_GRAM_MIN_TENSORS matrices reaches this while the values themselves do not match. Measured
# (benchmarks/detection.py): the rotated SmolLM2 body under a new tokenizer 1.000 over 40
# matrices; independent pairs compared without paired rows at most 0.319 (MiniLM's controls
# against vocab-replaced, 6 rows a matrix; SmolLM2's controls 0.10-0.16).
ROW_GRAM_DERIVED = 0.8
ROW_GRAM_MIN_TENSORS = 8
# Relative change below which sampled values are the same numbers (float32 round-off).
EXACT_REL_DELTA = 1e-6
# bf16 keeps 8 mantissa bits: relative rounding error per value <= 2^-9, i.e. ~0.0023 as a
# norm ratio; fp16 is 8x smaller. A tensor changed by more than this, relative to its values, was
# changed by more than a cast.
CAST_MAX_REL_DELTA = 0.006
# Quantisation error relative to the values, median over the quantised samples: MiniLM in Q4_0
# measures 0.086 (single samples up to 0.153: a 2-row tensor); above this, or a sample above
# twice this, the quantised tensors changed by more than quantisation.
QUANTIZE_MAX_REL_DELTA = 0.15
# Added Gaussian noise (sigma proportional to each tensor's spread) changes every tensor by the
# same relative amount; training does not. Spread of log10(relative change) across tensors and
# embedding rows: noise variants <= ~0.1, fine-tunes >= ~0.5.
NOISE_MAX_LOG_SPREAD = 0.3
# A matrix that matches its source after scaling each row or each column (per-head Q/K or V/O
# rescaling) leaves float round-off behind (MiniLM: ~1e-7 of a change of 0.1-1); a fine-tune's
# change is not proportional to the values, and scaling explains little of it.
RESCALE_UNEXPLAINED_MAX = 0.01
# Scales within this of 1 are not a rescaling.
RESCALE_MIN_FACTOR = 0.02
# A merge fit b = alpha a + beta c leaving at most this much of b's spread unexplained, with the
# second parent's weight at least MERGE_MIN_WEIGHT, is a merge (an exact linear merge leaves float
# round-off; a fine-tune of A is not a weighted sum of A and an unrelated model).
MERGE_FIT_MAX = 0.05
MERGE_MIN_WEIGHT = 0.05
# A merge with a model that is not stored, B = (1 - w) A + w V: regressing B on A gives A's share
# 1 - w in every tensor when V is unrelated to A, and B - A = w (V - A) points away from A,
# cos(B - A, A) ~ -|A| / |V - A| (-0.71 for equal norms). Measured on sampled tensors: SmolLM2's
# 50/50 merge with its shuffled control (equal norms) w 0.501 (quartiles within 0.012), median cos
# -0.71; MiniLM's 50/50 and 30/70 merges with fresh inits w 0.500 and 0.700, median cos -1.00 (an
# initialisation is smaller than trained weights); MiniLM's noise up to r=1, the
# fine-tunes, the merged LoRA and the noised copy w <= 0.009 (90th percentile) and median cos
# >= -0.03. A per-head rescaling moves A's share by -0.6..+0.3 from tensor to tensor (spread).
MERGE_DELTA_COSINE_MAX = -0.3
MERGE_WEIGHT_SPREAD_MAX = 0.1
# A tensor in a well-matched layer whose similarity is near the null is a permuted one.
MISMATCH_MAX_SIMILARITY = 0.15
MATCHED_LAYER_MIN = 0.6
# Tokenizers whose vocabularies overlap this much (as containment) are the same vocabulary,
# possibly extended; below VOCAB_REPLACED_MAX of either vocabulary shared, it was replaced.
SAME_VOCAB_CONTAINMENT = 0.98
VOCAB_REPLACED_MAX = 0.5
SAME_ARCH_CONFIG_SIMILARITY = 0.8

INTEGER_DTYPES = {"I64", "I32", "I16", "I8", "U8", "U16", "U32", "U64", "BOOL"}
FLOAT_DTYPE_NAMES = {"F64", "F32", "F16", "BF16"}
_LAYER_NUMBER_RX = re.compile(r"\d+")
ATTENTION_ROLES = {"attn_q", "attn_k", "attn_v", "attn_o", "attn_qkv", "inferred:attn_square"}
MLP_ROLES = {"mlp_up", "mlp_gate", "mlp_down", "inferred:in_projection", "inferred:out_projection"}
# Roles of matrices that write the residual stream: their sampled rows are residual dimensions,
# moved by a hidden permutation and mixed by a rotation (so no invariant form from a few rows).
RESIDUAL_WRITER_ROLES = {"attn_o", "mlp_down", "inferred:out_projection"}


@dataclass
class Decision:
    verdict: Verdict
    confidence: float
    score: float
    kinds: list[Kind]
    evidence: list[str]
    needs_deep: bool = False


@dataclass
class _Lines:
    """Evidence lines and kinds collected while deciding."""

    evidence: list[str] = field(default_factory=list)
    kinds: list[Kind] = field(default_factory=list)

    def add(self, line: str, kind: Kind | None = None) -> None:
        self.evidence.append(line)
        if kind is not None and kind not in self.kinds:
            self.kinds.append(kind)


def _base_role(role: str) -> str:
    return role[: -len("_bias")] if role.endswith("_bias") else role


def _confidence_derived(score: float) -> float:
    # DERIVED_SCORE maps to 0.8 and a perfect score to 0.999, linearly in between.
    return float(min(0.999, 0.8 + 0.199 * (score - DERIVED_SCORE) / (1 - DERIVED_SCORE)))


def _confidence_independent(score: float) -> float:
    return float(max(0.5, min(0.99, 1 - abs(score) / DERIVED_SCORE * 0.5)))


# ---- tokenizer and config --------------------------------------------------------------------

def _tokenizer_lines(t: TokenizerFacts, out: _Lines) -> bool:
    """Evidence about the vocabularies; True when the tokenizer itself looks copied."""
    if not t.available:
        return False
    rare = t.shared_rare_special_tokens
    same_vocab = t.identical or (t.containment >= SAME_VOCAB_CONTAINMENT and (t.id_agreement or 0) >= SAME_VOCAB_CONTAINMENT)
    if not same_vocab:
        out.add(f"tokenizer: vocabularies differ (Jaccard {t.jaccard:.3f})")
        return False
    if t.identical:
        what = "identical vocabulary"
    else:
        what = f"same vocabulary (containment {t.containment:.3f}, ids agree {t.id_agreement:.3f})"
        if t.conventions[0] != t.conventions[1]:
            what += f", once token spellings are normalised ({t.conventions[0]} vs {t.conventions[1]})"
    if rare:
        out.add(f"tokenizer: {what} and {len(rare)} shared rare special tokens: " + ", ".join(rare[:10]))
        return True
    if t.standard_vocabulary:
        out.add(f"tokenizer: {what}, the widely shared {t.standard_vocabulary} vocabulary (not evidence of copying)")
        return False
    out.add(f"tokenizer: {what}, not a widely shared standard vocabulary")
    return True


def _config_lines(c: ConfigFacts, out: _Lines) -> bool:
    if not c.available:
        return False
    line = "config: same architecture" if c.same_architecture else f"config: similarity {c.similarity:.2f}"
    if c.renamed_keys:
        line += "; keys renamed: " + ", ".join(c.renamed_keys[:8])
    if c.identity_renamed:
        line += f"; declared as {c.architectures[1] or c.model_type[1]} vs {c.architectures[0] or c.model_type[0]}"
    if c.differences and not c.same_architecture:
        line += "; differs in " + "; ".join(c.differences[:4])
    out.add(line)
    return c.same_architecture or c.similarity >= SAME_ARCH_CONFIG_SIMILARITY


# ---- weights ---------------------------------------------------------------------------------

def _embedding_lines(e: EmbeddingMatch | None, out: _Lines) -> None:
    if e is None:
        out.add("embedding: too few shared tokens to align embeddings")
        return
    line = (f"embedding: {e.shared_tokens} rows paired by token string, centred cosine {e.score:.3f} "
            f"(independent models ~0); token-token similarity (Gram) r {e.gram:.3f}, blind to permutations and rotations")
    if e.aligned is not None:
        line += f"; column alignment |r| {e.aligned:.3f}, z={e.z:.0f} against shuffled tokens"
    out.add(line)


def _rotation_derived(w: WeightFacts) -> bool:
    e = w.embedding
    return bool(e is not None and e.transform == HiddenTransform.ROTATION and e.gram >= GRAM_DERIVED
                and w.invariant_score is not None and w.invariant_score >= INVARIANT_DERIVED)


def _rotation_score(w: WeightFacts) -> float | None:
    """The rotation-invariant score when B's residual stream is A's rotated, else None."""
    if _rotation_derived(w):
        return w.invariant_score
    return w.row_gram_score if w.rotated_by_row_grams else None


def _needs_deep(w: WeightFacts) -> str | None:
    """Why the sampled bytes cannot decide a pair that is not derived, or None."""
    e = w.embedding
    if e is not None and e.gram >= GRAM_PROBE_MIN:
        return f"token geometry agrees (Gram r {e.gram:.2f}) but the sampled weights do not settle it"
    if w.invariant_score is not None and w.invariant_score >= GRAM_PROBE_MIN:
        return f"norm-folded reading matrices agree (r {w.invariant_score:.2f}) but not enough to decide"
    if DERIVED_SCORE / 2 <= w.score < DERIVED_SCORE:
        return f"weight score {w.score:.3f} is just under the derived threshold {DERIVED_SCORE}"
    return None


def _rename_lines(f: ComparisonFacts, out: _Lines) -> None:
    names_a, names_b = f.tensor_names
    # Tensors that match well under other names (a permuted tensor pairs with whatever is left,
    # its name says nothing). Layer numbers are masked: dropping layers renumbers the
    # rest without renaming them; a tensor only B has (an untied LM head) is not a rename.
    renamed = [(m.a, m.b) for m in f.weights.tensor_matches
               if m.best >= MATCHED_LAYER_MIN and _LAYER_NUMBER_RX.sub("#", m.a) != _LAYER_NUMBER_RX.sub("#", m.b)]
    if renamed:
        out.add(f"tensor names: {len(names_b - names_a)} of {len(names_b)} differ "
                f"(e.g. {renamed[0][0]} → {renamed[0][1]})", Kind.RENAME)
    elif f.config.available and (f.config.renamed_keys or f.config.identity_renamed):
        out.kinds.append(Kind.RENAME)


def _quantized(dtypes: tuple[str, ...]) -> list[str]:
    return [d for d in dtypes if d not in FLOAT_DTYPE_NAMES]


def _structure_lines(f: ComparisonFacts, w: WeightFacts, out: _Lines) -> None:
    """Dtypes, depth, width and vocabulary: what changed in the model's shape."""
    dtypes_a, dtypes_b = f.dtypes
    if dtypes_a != dtypes_b:
        new_quant = [d for d in _quantized(dtypes_b) if d not in dtypes_a]
        out.add(f"dtypes: {'/'.join(dtypes_a)} → {'/'.join(dtypes_b)}"
                + (f" (quantised to {', '.join(new_quant)})" if new_quant else ""),
                Kind.QUANTIZE if new_quant else Kind.CAST)
    depth_a, depth_b = w.num_layers
    if (depth_a or 0) > (depth_b or 0):
        out.add(f"depth: {depth_a} → {depth_b} layers; layers matched by content, not index", Kind.PRUNE)
    elif (depth_b or 0) > (depth_a or 0) and w.duplicated_layers:
        repeats = ", ".join(f"B{b} repeats A{a} ({s:.2f})" for b, a, s in w.duplicated_layers[:8])
        out.add(f"depth: {depth_a} → {depth_b} layers, depth up-scaled: {repeats}", Kind.DEPTH_UPSCALE)
    narrower = list(f.config.narrower)
    ha, hb = w.hidden_size
    if ha and hb and hb < ha and not any(n.startswith("hidden_size") for n in narrower):
        narrower.append(f"hidden_size {ha} → {hb}")
    if narrower:
        out.add("width: " + ", ".join(narrower) + " (pruned)", Kind.PRUNE)
    t = f.tokenizer
    size_a, size_b = f.vocab_sizes
    if t.available and size_a and size_b and not t.identical:
        if min(t.a_in_b, t.b_in_a) < VOCAB_REPLACED_MAX:
            out.add(f"vocabulary: replaced, {size_a} → {size_b} tokens, {t.b_in_a:.0%} of B's tokens in A's, "
                    "while the body's weights match", Kind.VOCAB_REPLACED)
        elif size_b > size_a and t.a_in_b >= SAME_VOCAB_CONTAINMENT:
            out.add(f"vocabulary: {size_a} → {size_b} tokens; shared tokens' rows still match", Kind.VOCAB_EXTEND)
        elif size_b < size_a and t.b_in_a >= SAME_VOCAB_CONTAINMENT:
            out.add(f"vocabulary: {size_a} → {size_b} tokens, every token of B in A (pruned)", Kind.VOCAB_PRUNE)


def _hidden_lines(w: WeightFacts, out: _Lines) -> None:
    e = w.embedding
    if w.rotated_by_row_grams:
        n = sum(m.row_gram is not None for m in w.tensor_matches)
        out.add(f"hidden dimension rotated: no embedding rows pair, but the sampled rows of {n} residual-reading "
                f"matrices keep their cosines (row Gram of W·diag(g), median r {w.row_gram_score:.3f}) while their values "
                f"do not match (median r {w.unrotated_score:.3f}): an orthogonal map of the residual stream", Kind.ROTATE)
        return
    if e is None:
        return
    if e.transform == HiddenTransform.PERMUTATION and e.hidden_map is not None:
        moved = round((1 - e.identity_fraction) * e.width[1])
        out.add(f"hidden dimension permuted: {moved} of {e.width[1]} dims moved; probed columns each have one partner "
                f"(median best |r| {e.probe_best:.2f} vs {e.probe_null:.2f} on shuffled tokens); recovered by alignment",
                Kind.PERMUTE_HIDDEN)
    elif e.transform == HiddenTransform.ROTATION:
        deleted = f", {e.width[0] - e.width[1]} directions deleted" if e.width[1] < e.width[0] else ""
        line = (f"hidden dimension rotated{deleted}: token-token similarity kept (Gram r {e.gram:.3f}) while no column "
                f"maps to one column (median best |r| {e.probe_best:.2f} over {e.probe_columns} probed columns, "
                f"{e.probe_null:.2f} on shuffled tokens)")
        if w.invariant_score is not None:
            n = sum(m.invariant is not None for m in w.tensor_matches)
            line += f"; norm-folded reading matrices agree (median r {w.invariant_score:.3f} over {n} tensors)"
        out.add(line, Kind.ROTATE)


def _permutation_lines(w: WeightFacts, out: _Lines) -> None:
    # With the hidden dimension permuted, a writer's sampled rows are other residual dimensions:
    # only readers' rows (heads, neurons) still say whether heads or neurons moved.
    hidden_moved = w.embedding is not None and w.embedding.hidden_map is not None
    good_layers = {(p.a, p.b) for p in w.pairs if p.score >= MATCHED_LAYER_MIN}
    mismatched = {
        _base_role(m.role) for m in w.tensor_matches
        if (m.layer_a, m.layer_b) in good_layers and m.similarity is not None and abs(m.similarity) < MISMATCH_MAX_SIMILARITY
        and not (hidden_moved and _base_role(m.role) in RESIDUAL_WRITER_ROLES)
    }
    if mismatched & ATTENTION_ROLES:
        out.add("attention rows reordered inside matching layers (" + ", ".join(sorted(mismatched & ATTENTION_ROLES))
                + " sample other rows of the same tensors): heads permuted", Kind.PERMUTE_HEADS)
    if mismatched & MLP_ROLES:
        out.add("FFN rows reordered inside matching layers (" + ", ".join(sorted(mismatched & MLP_ROLES))
                + "): neurons permuted", Kind.PERMUTE_NEURONS)


def _rescaled(m: TensorMatch) -> bool:
    lo, hi = m.rescale_factors
    return (m.rescale_residual <= RESCALE_UNEXPLAINED_MAX * m.raw_rel_delta
            and max(abs(lo - 1), abs(hi - 1)) >= RESCALE_MIN_FACTOR)


def _merged_with_unknown(m: MergeEstimate | None) -> bool:
    return bool(m is not None and m.weight >= MERGE_MIN_WEIGHT and m.delta_cosine <= MERGE_DELTA_COSINE_MAX
                and m.spread <= MERGE_WEIGHT_SPREAD_MAX)


def _delta_lines(f: ComparisonFacts, w: WeightFacts, out: _Lines) -> None:
    """What the differences between matched values say: rounding, rescaling, low rank, merge, noise, training."""
    e = w.embedding
    if e is not None and e.transform == HiddenTransform.ROTATION and e.width[0] != e.width[1]:
        out.add("differences not measured: deleted directions change every invariant form by construction")
        return
    matched = [m for m in w.tensor_matches if m.best > 0.5 and np.isfinite(m.rel_delta)]
    emb_rel = [float(r) for r in e.rel_deltas if np.isfinite(r)] if e is not None and e.transform != HiddenTransform.ROTATION else []
    if not matched and not emb_rel:
        out.add("no aligned values to measure differences on")
        return
    raw = [m.raw_rel_delta for m in matched if np.isfinite(m.raw_rel_delta)]
    largest = max(raw + emb_rel)
    if largest < EXACT_REL_DELTA:
        out.add("differences: sampled values are numerically identical")
        return
    quant_b = set(_quantized(f.dtypes[1])) - set(f.dtypes[0])
    if quant_b:
        in_quant = [m.raw_rel_delta for m in matched if m.dtypes[1] in quant_b]
        others = [m.raw_rel_delta for m in matched if m.dtypes[1] not in quant_b]
        if f.embedding_dtypes[1] in quant_b:
            in_quant += emb_rel
        else:
            others += emb_rel
        if (in_quant and np.median(in_quant) <= QUANTIZE_MAX_REL_DELTA and max(in_quant) <= 2 * QUANTIZE_MAX_REL_DELTA
                and max(others, default=0.0) <= CAST_MAX_REL_DELTA):
            out.add(f"differences are quantisation error: {len(in_quant)} {'/'.join(sorted(quant_b))} samples change by "
                    f"{np.median(in_quant):.3f} of their values (median; largest {max(in_quant):.3f}), the rest by "
                    f"<= {max(others, default=0.0):.4f}")
            return
    rerounded = (f.dtypes[0] != f.dtypes[1] or w.rotated_by_row_grams
                 or (e is not None and e.transform == HiddenTransform.ROTATION))
    if rerounded and largest <= CAST_MAX_REL_DELTA:
        out.add(f"differences are rounding only: every sample within {largest:.4f} of its values (bf16 rounds by <= 0.0023)")
        return
    if w.merge is not None and w.merge.residual <= MERGE_FIT_MAX and w.merge.weight_c >= MERGE_MIN_WEIGHT:
        m = w.merge
        out.add(f"merge: B = {m.weight_a:.2f} × A + {m.weight_c:.2f} × {m.parent} over {m.tensors} tensors "
                f"(unexplained {m.residual:.4f} of B's spread)", Kind.MERGE)
        return
    if _merged_with_unknown(w.merge_estimate):
        m = w.merge_estimate
        out.add(f"merge: second parent not in index; estimated weight α ≈ {m.weight:.2f} (B ≈ {1 - m.weight:.2f} × A + "
                f"{m.weight:.2f} × an unknown model): A's share of B is the same in {m.tensors} tensors (spread "
                f"{m.spread:.3f}) and the differences point away from A (median cos(B − A, A) {m.delta_cosine:.2f}; "
                "noise and training ~0)", Kind.MERGE)
        return
    changed = [m for m in matched if m.raw_rel_delta > EXACT_REL_DELTA]
    matrices = [m for m in changed if m.rescale_residual is not None]
    embedding_unchanged = all(r <= EXACT_REL_DELTA for r in emb_rel)
    if matrices and embedding_unchanged and len(matrices) == len([m for m in changed if m.rows > 1]):
        if all(_rescaled(m) for m in matrices):
            lo = min(m.rescale_factors[0] for m in matrices)
            hi = max(m.rescale_factors[1] for m in matrices)
            roles = sorted({_base_role(m.role) for m in matrices})
            out.add(f"rescaled: {len(matrices)} matrices ({', '.join(roles)}) equal their source after scaling rows or "
                    f"columns by {lo:.2f}–{hi:.2f} (left over <= {max(m.rescale_residual for m in matrices):.1e}); "
                    "embedding rows unchanged, function preserved", Kind.RESCALE)
            return
        untouched = [m for m in matched if m.rows > 1 and m.raw_rel_delta <= EXACT_REL_DELTA]
        if not any(m.rows == 1 for m in changed) and untouched:
            # Adapters change some matrices and nothing else; training moves every tensor.
            # The standard budget samples a few rows of each matrix (6 of MiniLM's), fewer than most
            # adapters' rank: then the update is seen by what it left untouched, and its rank is
            # measured by the deep comparison, which reads whole rows of the changed matrices.
            roles = sorted({_base_role(m.role) for m in matrices})
            ranks = [m.difference_rank for m in matrices]
            rows = min(m.rows for m in matrices)
            measured = all(r is not None for r in ranks)
            rank_line = (f"the differences have rank {max(ranks)} in {rows}+ sampled rows" if measured
                         else f"its rank is not measurable in {rows} sampled rows; rank measured by --deep (hubwatch compare --deep)")
            out.add(f"low-rank update{'' if measured else ' suspected'}: only {len(matrices)} matrices changed "
                    f"({', '.join(roles)}), every embedding row, norm and {len(untouched)} other matrices bit-identical "
                    f"(a merged adapter); {rank_line}", Kind.LOW_RANK)
            return
    rel = np.array([m.rel_delta for m in matched] + emb_rel)
    median = float(np.median(rel))
    spread = float(np.std(np.log10(rel + 1e-12)))
    if spread <= NOISE_MAX_LOG_SPREAD:
        out.add(f"differences look like added noise: relative change ~{median:.3g} in every tensor and row "
                f"(spread {spread:.2f} decades; training moves tensors unevenly)", Kind.NOISE)
    else:
        out.add(f"differences look like training: relative change from {np.percentile(rel, 5):.2g} to "
                f"{np.percentile(rel, 95):.2g} across tensors and rows (spread {spread:.2f} decades)", Kind.FINE_TUNE)


def _derived(f: ComparisonFacts, w: WeightFacts, out: _Lines) -> None:
    _rename_lines(f, out)
    _structure_lines(f, w, out)
    _hidden_lines(w, out)
    _permutation_lines(w, out)
    _delta_lines(f, w, out)


def decide(f: ComparisonFacts) -> Decision:
    out = _Lines()
    for side, note in zip("AB", f.weight_notes):
        if note:
            out.add(f"{side}: {note}")
    tok_copied = _tokenizer_lines(f.tokenizer, out)
    same_arch = _config_lines(f.config, out)
    if f.structure_equal:
        same_arch = True
        out.add("weights: identical tensor shape pattern (names ignored)")
    if f.shared_files:
        out.add(f"files: {len(f.shared_files)} weight file(s) with identical sha256 (e.g. {f.shared_files[0][:16]}…)")
    w = f.weights
    if (w is not None and f.sample_digests_equal and f.configs_equal and f.vocabularies_equal) or (f.shared_files and w is None):
        out.add("weights: every sampled byte identical, same tensor names and dtypes")
        return Decision(Verdict.IDENTICAL, 0.999, 1.0, [Kind.IDENTICAL], out.evidence)
    if w is None:
        if tok_copied:
            return Decision(Verdict.TOKENIZER_COPIED, 0.9 if f.tokenizer.shared_rare_special_tokens else 0.7, 0.0,
                            [Kind.TOKENIZER], out.evidence)
        # "same-architecture" and "independent" are statements about the weights: without
        # readable weights on both sides there is no such statement to make.
        out.add(f"weights: not compared ({f.unreadable}), so no verdict on them")
        return Decision(Verdict.NOT_COMPARABLE, 0.0, 0.0, [], out.evidence)

    _embedding_lines(w.embedding, out)
    if w.pairs:
        shown = ", ".join(f"A{p.a}→B{p.b} {p.score:.2f}" for p in w.pairs[:12])
        median = float(np.median([p.score for p in w.pairs]))
        out.add(f"layers: {len(w.pairs)} matched by assignment, median {median:.3f}: {shown}")
    rotation_score = _rotation_score(w)
    rotated = rotation_score is not None
    score = rotation_score if rotated else w.score
    derived = rotated or (w.score >= DERIVED_SCORE and w.z >= DERIVED_MIN_Z)
    out.add(f"weights: score {score:.3f} (derived at >= {DERIVED_SCORE}), z={w.z:.0f}"
            + (" (rotation-invariant score)" if rotated else ""))
    if derived:
        _derived(f, w, out)
        if tok_copied:
            out.add("tokenizer copied as well")
        return Decision(Verdict.WEIGHTS_DERIVED, _confidence_derived(score), score, out.kinds, out.evidence)
    deep = _needs_deep(w)
    if deep:
        out.add(f"needs deep comparison: {deep} (hubwatch compare --deep)")
    if tok_copied:
        return Decision(Verdict.TOKENIZER_COPIED, 0.9 if f.tokenizer.shared_rare_special_tokens else 0.7, score,
                        [Kind.TOKENIZER], out.evidence, needs_deep=bool(deep))
    verdict = Verdict.SAME_ARCHITECTURE if same_arch else Verdict.INDEPENDENT
    return Decision(verdict, _confidence_independent(score), score, [], out.evidence, needs_deep=bool(deep))
