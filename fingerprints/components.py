"""Components of multimodal models: vision tower, projector, language model, compared one by one.

A multimodal checkpoint is usually assembled from public parts (a SigLIP/CLIP/Qwen-ViT vision
tower, a public language model) joined by a projector trained for it. Reusing public parts is
normal and often declared; copying someone's whole model (Llama3-V from MiniCPM-Llama3-V 2.5)
copies their projector too, which nobody else has. So each component gets its own verdict, and
the projector is the one that tells an honest assembly from a copy.

Components are told apart by the tensor-name prefixes of the common multimodal layouts (LLaVA,
Qwen2-VL, Idefics/SmolVLM, MiniCPM-V, InternVL); the sampler (weights.py) picks layers per
component, so each one is sampled like a model of its own.
"""

from __future__ import annotations

import functools
import hashlib
import re
from dataclasses import replace
from typing import Any

from .facts import DERIVED_VERDICTS, Kind, Verdict
from .model import Fingerprint, WeightsSignature, structure_hash
from .roles import NAMES_CACHED

LANGUAGE = "language model"
VISION = "vision encoder"
PROJECTOR = "projector"
# A component's status when only one of the two models has it (not a verdict: nothing was compared).
ABSENT = "absent"
# First match wins: projectors nested inside a vision module (Qwen2-VL's visual.merger) come first.
COMPONENT_PATTERNS = [
    (PROJECTOR, re.compile(r"^(model\.)?(multi_modal_projector|mm_projector|resampler|connector|visual\.merger|"
                           r"vision_proj|mlp1|aligner|vision_language_adapter)\.")),
    (VISION, re.compile(r"^(model\.)?(vision_tower|vision_model|visual|vision_encoder|vpm|image_encoder|vit|"
                        r"vision|siglip|clip)\.")),
]


@functools.lru_cache(maxsize=NAMES_CACHED)
def component_of(name: str) -> str:
    return next((component for component, rx in COMPONENT_PATTERNS if rx.search(name)), LANGUAGE)


def components(fp: Fingerprint) -> list[str]:
    """The components a fingerprint's tensors fall into, language model first."""
    if fp.weights is None:
        return []
    found = {component_of(t.name) for t in fp.weights.tensors}
    return [c for c in (LANGUAGE, VISION, PROJECTOR) if c in found]


def component_fingerprint(fp: Fingerprint, component: str) -> Fingerprint:
    """The part of ``fp`` that belongs to one component, as a fingerprint of its own.

    The language model keeps the tokenizer, the config and the token embedding; the vision tower and
    the projector have neither, so they are compared by their sampled tensors alone.
    """
    w = fp.weights
    tensors = [t for t in w.tensors if component_of(t.name) == component]
    samples = [s for s in w.samples if component_of(s.name) == component]
    digest = hashlib.blake2b(digest_size=16)
    for s in samples:
        digest.update(s.name.encode() + b"\0" + s.dtype.encode() + b"\0" + s.values.tobytes())
    layers = {t.layer for t in tensors if t.layer is not None}
    is_language = component == LANGUAGE
    embedding = w.embedding if is_language and w.embedding is not None and component_of(w.embedding.tensor) == LANGUAGE else None
    weights = WeightsSignature(
        format=w.format, tensors=tensors, structure_hash=structure_hash(tensors), hidden_size=w.hidden_size if is_language else None,
        num_layers=len(layers) or None, embedding=embedding, samples=samples, sample_digest=digest.hexdigest(),
        value_digest=None, file_sha256={}, tensor_bytes_read=sum(s.values.nbytes for s in samples),
    )
    return replace(fp, source=f"{fp.source} [{component}]", weights=weights,
                   config=fp.config if is_language else None, tokenizer=fp.tokenizer if is_language else None)


def compare_components(fa: Fingerprint, fb: Fingerprint, compare) -> list[dict[str, Any]]:
    """One comparison per component both models have, when either is multimodal; [] otherwise.

    ``compare`` is compare_fingerprints (passed in: compare.py calls this module).
    A text-only model is all language model, so a multimodal model's language model is compared
    with it and its other components are reported as absent on that side.
    """
    ca, cb = components(fa), components(fb)
    if len(ca) < 2 and len(cb) < 2:
        return []
    results = []
    for component in (LANGUAGE, VISION, PROJECTOR):
        if component not in ca and component not in cb:
            continue
        if component not in ca or component not in cb:
            side = "A" if component not in ca else "B"
            results.append({"component": component, "verdict": ABSENT, "kinds": [], "score": None,
                            "note": f"only in {'B' if side == 'A' else 'A'}"})
            continue
        c = compare(component_fingerprint(fa, component), component_fingerprint(fb, component))
        results.append({"component": component, "verdict": str(c.verdict), "kinds": [str(k) for k in c.kinds], "score": round(c.score, 4),
                        "note": next((e for e in c.evidence if e.startswith("layers:")), "")})
    return results


def component_summary(results: list[dict[str, Any]]) -> tuple[str, list[str]]:
    """The evidence line ("vision encoder identical; language model weights-derived (noise); projector
    independent: new weights") and the kinds it adds: "partial-reuse" when some shared component
    is derived and another is not, the reading of an assembly of public parts."""
    parts = []
    for r in results:
        if r["verdict"] == ABSENT:
            parts.append(f"{r['component']} {r['note']}")
            continue
        text = f"{r['component']} {r['verdict']}"
        if r["kinds"] and r["verdict"] != Verdict.IDENTICAL:
            text += f" ({', '.join(r['kinds'])})"
        if r["verdict"] in (Verdict.INDEPENDENT, Verdict.SAME_ARCHITECTURE) and r["component"] == PROJECTOR:
            text += ": new weights"
        parts.append(text + (f", score {r['score']:.3f}" if r["score"] is not None else ""))
    compared = [r for r in results if r["verdict"] != ABSENT]
    derived = [r for r in compared if r["verdict"] in DERIVED_VERDICTS]
    kinds = [Kind.PARTIAL_REUSE] if derived and len(derived) < len(compared) else []
    line = "components: " + "; ".join(parts)
    if kinds:
        line += " — shared parts, not a copy of the whole model"
    elif compared and len(derived) == len(compared) and len(compared) > 1:
        line += " — every component derived: a copy of the whole model"
    return line, kinds
