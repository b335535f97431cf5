"""Mixtures of experts in the standard comparison: what its samples cannot say about the experts.

The standard fingerprint samples no expert tensors (dozens to hundreds of them per layer would eat
the 1 MiB budget), so a dense model and an MoE upcycled from it match on their embeddings,
attention and norms only. The evidence says so, and points at the deep comparison (deep.py), which
reads the experts and maps each one to the FFN it was copied from.
"""

from __future__ import annotations

from .model import Fingerprint
from .roles import expert_index


def experts_per_layer(fp: Fingerprint) -> int:
    """Experts in the layer that has the most (0 for a dense model): Mixtral-style names, or GGUF ffn_*_exps."""
    if fp.weights is None:
        return 0
    per_layer: dict[int | None, set[int]] = {}
    for t in fp.weights.tensors:
        if t.role.startswith("expert_") and len(t.shape) == 3:  # GGUF: (experts, rows, cols) in one tensor
            per_layer.setdefault(t.layer, set()).update(range(t.shape[0]))
        elif (expert := expert_index(t.name)) is not None:
            per_layer.setdefault(t.layer, set()).add(expert)
    return max((len(e) for e in per_layer.values()), default=0)


def expert_note(fa: Fingerprint, fb: Fingerprint) -> str | None:
    """An evidence line when exactly one side is a mixture of experts, else None."""
    ea, eb = experts_per_layer(fa), experts_per_layer(fb)
    if (ea == 0) == (eb == 0):
        return None
    moe, dense = ("B", "A") if eb else ("A", "B")
    return (f"experts: {moe} is a mixture of {max(ea, eb)} experts per layer, {dense} is dense; the sampled "
            f"weights exclude experts, so whether they were copied from {dense}'s FFN is for "
            "`hubwatch compare --deep`, which maps each expert to its source")
