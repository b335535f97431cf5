"""Verdicts, derivation kinds and confidence, with the thresholds that decide them.

Calibration (benchmarks/detection.py; numbers in the README): all derived MiniLM variants
(noise up to r=1, casts, renames, pruning, vocabulary extension, hidden/head/neuron permutations,
light and heavy fine-tuning, combinations) against independent same-architecture controls (fresh
inits with other seeds, a model trained with the heavy fine-tune's recipe from scratch). The
independent controls score at most ~0.03, derived variants at least ~0.6, so the score threshold
sits well inside the gap, and a z-score floor keeps small samples from deciding on their own.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import numpy as np

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
# Relative change below which sampled values are the same numbers (float32 round-off).
EXACT_REL_DELTA = 1e-6
# bf16 keeps 8 mantissa bits: relative rounding error per value <= 2^-9, i.e. ~0.0023 as a
# norm ratio; fp16 is 8x smaller. Above this the difference is more than a cast.
CAST_MAX_REL_DELTA = 0.006
# Added Gaussian noise (sigma proportional to each tensor's spread) changes every tensor by the
# same relative amount; training does not. Spread of log10(relative change) across tensors and
# embedding rows: noise variants <= ~0.1, fine-tunes >= ~0.5.
NOISE_MAX_LOG_SPREAD = 0.3
# A tensor in a well-matched layer whose similarity is near the null is a permuted one.
MISMATCH_MAX_SIMILARITY = 0.15
MATCHED_LAYER_MIN = 0.6
# Tokenizers whose vocabularies overlap this much (as containment) are the same vocabulary,
# possibly extended.
SAME_VOCAB_CONTAINMENT = 0.98
SAME_ARCH_CONFIG_SIMILARITY = 0.8

# The verdict when either side's weights could not be read: a pickled checkpoint, no weight files,
# or no tensor in a decodable dtype. Never a weight verdict, never an alert.
NOT_COMPARABLE = "not-comparable"

INTEGER_DTYPES = {"I64", "I32", "I16", "I8", "U8", "U16", "U32", "U64", "BOOL"}
FLOAT_DTYPE_NAMES = {"F64", "F32", "F16", "BF16"}
# Quantisation error (Q4_K: ~5% of each weight) is larger than a cast's; above this it is noise.
QUANTIZE_MAX_REL_DELTA = 0.08
_LAYER_NUMBER_RX = re.compile(r"\d+")
ATTENTION_ROLES = {"attn_q", "attn_k", "attn_v", "attn_o", "attn_qkv", "inferred:attn_square"}
MLP_ROLES = {"mlp_up", "mlp_gate", "mlp_down", "inferred:in_projection", "inferred:out_projection"}


@dataclass
class Decision:
    verdict: str
    confidence: float
    score: float
    kinds: list[str]
    evidence: list[str]


def _base_role(role: str) -> str:
    return role[: -len("_bias")] if role.endswith("_bias") else role


def weight_evidence(fa, fb, emb, pairs, tensor_matches) -> dict[str, Any]:
    wa, wb = fa.weights, fb.weights
    layer_scores = [s for _, _, s in pairs]
    out: dict[str, Any] = {
        "available": True,
        "bytes_read": {"a": wa.tensor_bytes_read, "b": wb.tensor_bytes_read},
        "num_layers": [wa.num_layers, wb.num_layers],
        "hidden_size": [wa.hidden_size, wb.hidden_size],
        "layers": [{"a": la, "b": lb, "score": round(s, 4)} for la, lb, s in pairs],
        "layer_score": round(float(np.median(layer_scores)), 4) if layer_scores else None,
        "tensors": [
            {"a": m.a, "b": m.b, "role": m.role, "similarity": round(m.similarity, 4),
             "relative_change": round(m.rel_delta, 6) if np.isfinite(m.rel_delta) else None,
             "hidden_aligned": m.aligned}
            for m in tensor_matches
        ],
    }
    if emb is not None:
        out["embedding"] = {
            "shared_tokens": emb.shared_tokens, "direct": None if emb.direct is None else round(emb.direct, 4),
            "aligned_correlation": round(emb.aligned, 4), "null_correlation": round(emb.null_mean, 4),
            "alignment_z": round(emb.z, 1), "identity_fraction": round(emb.identity_fraction, 4),
            "score": round(emb.score, 4),
        }
    candidates = [s for s in (emb.score if emb else None, out["layer_score"]) if s is not None]
    global_scores = [m.similarity for m in tensor_matches if m.layer_a is None]
    if not candidates and global_scores:
        candidates.append(float(np.median(global_scores)))
    out["score"] = round(max(candidates), 4) if candidates else 0.0
    out["z"] = round(_score_z(emb, tensor_matches, out["score"]), 1)
    return out


def _score_z(emb, tensor_matches, score: float) -> float:
    """How many null standard deviations the score is from 0.

    A centred correlation of n independent values has null sd 1/sqrt(n); the embedding score
    averages one cosine per shared token, each over the hidden width.
    """
    zs = []
    if emb is not None:
        n = emb.shared_tokens * len(emb.perm)
        zs.append(emb.score * np.sqrt(n))
        if emb.identity_fraction < IDENTITY_PERMUTATION_MIN:
            zs[-1] = min(zs[-1], emb.z)
    if tensor_matches:
        sizes = [m for m in tensor_matches]
        zs.append(np.median([m.similarity for m in sizes]) * np.sqrt(min(4096, 16 * 384)))
    return float(max(zs)) if zs else 0.0


def _delta_kind(emb, tensor_matches, dtype_changed: bool, quantized: bool = False) -> tuple[str | None, str]:
    rel = [m.rel_delta for m in tensor_matches if m.similarity > 0.5 and np.isfinite(m.rel_delta)]
    if emb is not None:
        rel += [float(r) for r in emb.rel_deltas if np.isfinite(r)]
    if not rel:
        return None, "no aligned values to measure differences on"
    rel_arr = np.array(rel)
    top = float(rel_arr.max())
    if top < EXACT_REL_DELTA:
        return None, "sampled values are numerically identical"
    median = float(np.median(rel_arr))
    # The median, not the maximum: rounding is relative to each value, so a low-spread vector (a
    # LayerNorm gain near 1) shows a large change relative to its spread after a plain bf16 cast.
    if dtype_changed and median < CAST_MAX_REL_DELTA:
        return None, f"differences are dtype rounding only (median relative change {median:.4f})"
    if quantized and float(np.median(rel_arr)) < QUANTIZE_MAX_REL_DELTA:
        return None, f"differences are quantisation error (median relative change {np.median(rel_arr):.4f})"
    spread = float(np.std(np.log10(rel_arr + 1e-12)))
    if spread <= NOISE_MAX_LOG_SPREAD:
        return "noise", (
            f"differences look like added noise: relative change ~{median:.3g} in every tensor and row "
            f"(spread {spread:.2f} decades; training moves tensors unevenly)"
        )
    return "fine-tune", (
        f"differences look like training: relative change from {np.percentile(rel_arr, 5):.2g} to "
        f"{np.percentile(rel_arr, 95):.2g} across tensors and rows (spread {spread:.2f} decades)"
    )


def _permutation_kinds(emb, pairs, tensor_matches, hidden_permuted: bool) -> list[str]:
    if hidden_permuted:
        return ["permute-hidden"]
    good_layers = {(la, lb) for la, lb, s in pairs if s >= MATCHED_LAYER_MIN}
    mismatched = {
        _base_role(m.role) for m in tensor_matches
        if (m.layer_a, m.layer_b) in good_layers and abs(m.similarity) < MISMATCH_MAX_SIMILARITY
    }
    kinds = []
    if mismatched & ATTENTION_ROLES:
        kinds.append("permute-heads")
    if mismatched & MLP_ROLES:
        kinds.append("permute-neurons")
    return kinds


def _confidence_derived(score: float) -> float:
    # DERIVED_SCORE maps to 0.8 and a perfect score to 0.999, linearly in between.
    return float(min(0.999, 0.8 + 0.199 * (score - DERIVED_SCORE) / (1 - DERIVED_SCORE)))


def _confidence_independent(score: float) -> float:
    return float(max(0.5, min(0.99, 1 - abs(score) / DERIVED_SCORE * 0.5)))


def decide(fa, fb, config, tokenizer, weights, emb, tensor_matches) -> Decision:
    evidence: list[str] = []
    kinds: list[str] = []
    wa, wb = fa.weights, fb.weights
    for side, w in (("A", wa), ("B", wb)):
        if w is not None and w.note:
            evidence.append(f"{side}: {w.note}")

    # --- tokenizer --------------------------------------------------------------------------
    tok_copied = False
    if tokenizer.get("available"):
        rare = tokenizer["shared_rare_special_tokens"]
        same_vocab = tokenizer["identical"] or (
            tokenizer["containment"] >= SAME_VOCAB_CONTAINMENT and (tokenizer["id_agreement"] or 0) >= SAME_VOCAB_CONTAINMENT
        )
        standard = tokenizer["standard_vocabulary"]
        if same_vocab:
            what = "identical vocabulary" if tokenizer["identical"] else (
                f"same vocabulary (containment {tokenizer['containment']:.3f}, ids agree {tokenizer['id_agreement']:.3f})")
            if rare:
                tok_copied = True
                evidence.append(f"tokenizer: {what} and {len(rare)} shared rare special tokens: " + ", ".join(rare[:10]))
            elif standard:
                evidence.append(f"tokenizer: {what}, the widely shared {standard} vocabulary (not evidence of copying)")
            else:
                tok_copied = True
                evidence.append(f"tokenizer: {what}, not a widely shared standard vocabulary")
        else:
            evidence.append(f"tokenizer: vocabularies differ (Jaccard {tokenizer['jaccard']:.3f})")

    # --- config -----------------------------------------------------------------------------
    same_arch = False
    if config.get("available"):
        same_arch = config["same_architecture"] or config["similarity"] >= SAME_ARCH_CONFIG_SIMILARITY
        sim = config["similarity"]
        line = "config: same architecture" if config["same_architecture"] else f"config: similarity {sim:.2f}"
        if config["renamed_keys"]:
            line += "; keys renamed: " + ", ".join(config["renamed_keys"][:8])
        if config["identity_renamed"]:
            line += f"; declared as {config['architectures'][1] or config['model_type'][1]} vs {config['architectures'][0] or config['model_type'][0]}"
        if config["differences"] and not config["same_architecture"]:
            line += "; differs in " + "; ".join(config["differences"][:4])
        evidence.append(line)
    if wa is not None and wb is not None and wa.structure_hash and wa.structure_hash == wb.structure_hash:
        same_arch = True
        evidence.append("weights: identical tensor shape pattern (names ignored)")

    # --- weights ----------------------------------------------------------------------------
    score = float(weights.get("score", 0.0)) if weights.get("available") else 0.0
    z = float(weights.get("z", 0.0)) if weights.get("available") else 0.0
    identical = (
        weights.get("available") and wa.sample_digest == wb.sample_digest
        and (fa.config is None or fb.config is None or fa.config.exact_hash == fb.config.exact_hash)
        and (fa.tokenizer is None or fb.tokenizer is None or fa.tokenizer.vocab_hash == fb.tokenizer.vocab_hash)
    )
    shared_files = sorted(set(wa.file_sha256.values()) & set(wb.file_sha256.values())) if wa and wb else []
    if shared_files:
        evidence.append(f"files: {len(shared_files)} weight file(s) with identical sha256 (e.g. {shared_files[0][:16]}…)")
    if identical or (shared_files and weights.get("available") is False):
        evidence.append("weights: every sampled byte identical, same tensor names and dtypes")
        return Decision("identical", 0.999, 1.0, ["identical"], evidence)

    if weights.get("available"):
        e = weights.get("embedding")
        hidden_permuted = bool(e and e["identity_fraction"] < IDENTITY_PERMUTATION_MIN and e["alignment_z"] >= ALIGNMENT_MIN_Z)
        if e:
            evidence.append(
                f"embedding: {e['shared_tokens']} rows paired by token string, centred cosine {e['score']:.3f} "
                f"(independent models ~0); column alignment |r| {e['aligned_correlation']:.3f} vs shuffled null "
                f"{e['null_correlation']:.3f} (z={e['alignment_z']:.0f})"
            )
            if hidden_permuted:
                moved = round((1 - e["identity_fraction"]) * (wb.hidden_size or 0))
                evidence.append(f"hidden dimension permuted: {moved} of {wb.hidden_size} dims moved; recovered by alignment")
        else:
            evidence.append("embedding: too few shared tokens to align embeddings")
        layers = weights["layers"]
        if layers:
            shown = ", ".join(f"A{l['a']}→B{l['b']} {l['score']:.2f}" for l in layers[:12])
            evidence.append(f"layers: {len(layers)} matched by assignment, median {weights['layer_score']:.3f}: {shown}")
        derived = score >= DERIVED_SCORE and z >= DERIVED_MIN_Z
        evidence.append(f"weights: score {score:.3f} (derived at >= {DERIVED_SCORE}), z={z:.0f}")
        if derived:
            names_a = {t.name for t in wa.tensors}
            names_b = {t.name for t in wb.tensors}
            # Layer numbers are masked: dropping layers renumbers the rest without renaming them.
            if {_LAYER_NUMBER_RX.sub("#", n) for n in names_b} - {_LAYER_NUMBER_RX.sub("#", n) for n in names_a}:
                renamed = len(names_b - names_a)
                example = next(((m.a, m.b) for m in tensor_matches if m.a != m.b), None)
                kinds.append("rename")
                evidence.append(
                    f"tensor names: {renamed} of {len(names_b)} differ"
                    + (f" (e.g. {example[0]} → {example[1]})" if example else "")
                )
            elif config.get("available") and (config["renamed_keys"] or config["identity_renamed"]):
                kinds.append("rename")
            dtypes_a = sorted({t.dtype for t in wa.tensors if t.dtype not in INTEGER_DTYPES})
            dtypes_b = sorted({t.dtype for t in wb.tensors if t.dtype not in INTEGER_DTYPES})
            dtype_changed = dtypes_a != dtypes_b
            if dtype_changed:
                quantized = [d for d in dtypes_b if d not in FLOAT_DTYPE_NAMES and d not in dtypes_a]
                kinds.append("quantize" if quantized else "cast")
                evidence.append(f"dtypes: {'/'.join(dtypes_a)} → {'/'.join(dtypes_b)}")
            if (wa.num_layers or 0) > (wb.num_layers or 0):
                kinds.append("prune")
                evidence.append(f"depth: {wa.num_layers} → {wb.num_layers} layers; layers matched by content, not index")
            narrower = _narrower_dimensions(fa, fb)
            if narrower:
                kinds.append("prune")
                evidence.append("width: " + ", ".join(narrower) + " (width pruning)")
            if _vocab_grew(fa, fb):
                kinds.append("vocab-extend")
                evidence.append(
                    f"vocabulary: {fa.tokenizer.vocab_size} → {fb.tokenizer.vocab_size} tokens; shared tokens' rows still match"
                )
            kinds += _permutation_kinds(emb, weights_pairs(weights), tensor_matches, hidden_permuted)
            delta_kind, delta_line = _delta_kind(emb, tensor_matches, dtype_changed, "quantize" in kinds)
            evidence.append(delta_line)
            if delta_kind:
                kinds.append(delta_kind)
            if tok_copied:
                evidence.append("tokenizer copied as well")
            return Decision("weights-derived", _confidence_derived(score), score, kinds, evidence)

    if tok_copied:
        return Decision("tokenizer-copied", 0.9 if tokenizer["shared_rare_special_tokens"] else 0.7, score, ["tokenizer"], evidence)
    if not weights.get("available"):
        # "same-architecture" and "independent" are statements about the weights: without
        # readable weights on both sides there is no such statement to make.
        evidence.append(f"weights: not compared ({weights['reason']}), so no verdict on them")
        return Decision(NOT_COMPARABLE, 0.0, 0.0, [], evidence)
    if same_arch:
        return Decision("same-architecture", _confidence_independent(score), score, [], evidence)
    return Decision("independent", _confidence_independent(score), score, [], evidence)


def unreadable_weights(fa, fb) -> str | None:
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


def weights_pairs(weights: dict[str, Any]) -> list[tuple[int, int, float]]:
    return [(l["a"], l["b"], l["score"]) for l in weights.get("layers", [])]


def _vocab_grew(fa, fb) -> bool:
    return bool(fa.tokenizer and fb.tokenizer and fb.tokenizer.vocab_size > fa.tokenizer.vocab_size)


WIDTH_FIELDS = ("hidden_size", "intermediate_size", "num_heads", "num_kv_heads")


def _narrower_dimensions(fa, fb) -> list[str]:
    """Width dimensions that shrank from A to B, from the configs, else from the embeddings."""
    if fa.config is not None and fb.config is not None:
        a, b = fa.config.fields, fb.config.fields
        return [f"{k} {a[k]} → {b[k]}" for k in WIDTH_FIELDS
                if isinstance(a.get(k), int) and isinstance(b.get(k), int) and b[k] < a[k]]
    ha, hb = fa.weights.hidden_size, fb.weights.hidden_size
    return [f"hidden_size {ha} → {hb}"] if ha and hb and hb < ha else []
