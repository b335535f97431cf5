"""Tensor roles: what each tensor does, from its name where the name is known, else from its shape.

Roles are data (data/tensor_roles.json), not if-chains. Comparison never relies on names (a copy
may rename everything); roles serve the structure signature and the evidence a person reads.
"""

from __future__ import annotations

import functools
import json
import re
from importlib import resources

_TABLE = json.loads(resources.files(__package__).joinpath("data/tensor_roles.json").read_text())
MODEL_ROLES = [(role, re.compile(rx)) for role, rx in _TABLE["model"]]
LAYER_ROLES = [(role, re.compile(rx)) for role, rx in _TABLE["layer"]]

# The block index: the number after a known block container, else the first dotted number.
_LAYER_RX = re.compile(r"(?:^|\.)(?:layers?|h|blocks?|blk|decoder\.layers|encoder\.layer)\.(\d+)\.")
_ANY_NUMBER_RX = re.compile(r"(?:^|\.)(\d+)\.")
_EXPERT_RX = re.compile(r"(?:^|\.)experts?\.(\d+)\.")
# Tensor names classified per process by the hundred thousand (every comparison asks about every
# tensor of both sides: a fifth to a quarter of a comparison's CPU in benchmarks/throughput.py went
# to these regexes), but few distinct ones, since architectures share their names: the answers are
# kept for this many names (a few MB).
NAMES_CACHED = 1 << 15

EMBEDDING_ROLES = {"embedding"}
HIDDEN_VECTOR_ROLES = {"norm_embedding", "norm_final", "norm_attn", "norm_mlp"}
# The norm whose gain multiplies a reading matrix's input (pre-norm blocks; folded into the
# matrix by QuaRot/SliceGPT). Post-norm BERT names differ, but both sides use the same rule.
GAIN_OF_ROLE = {"attn_q": "norm_attn", "attn_k": "norm_attn", "attn_v": "norm_attn", "attn_qkv": "norm_attn",
                "mlp_gate": "norm_mlp", "mlp_up": "norm_mlp"}


def layer_index(name: str) -> int | None:
    m = _LAYER_RX.search(name)
    if m:
        return int(m.group(1))
    stripped = _EXPERT_RX.sub(".", name)
    m = _ANY_NUMBER_RX.search(stripped)
    return int(m.group(1)) if m else None


def is_expert(name: str) -> bool:
    return bool(_EXPERT_RX.search(name))


@functools.lru_cache(maxsize=NAMES_CACHED)
def expert_index(name: str) -> int | None:
    """The expert number in a Mixtral-style name (``...experts.3.w1.weight``), else None."""
    m = _EXPERT_RX.search(name)
    return int(m.group(1)) if m else None


def role_from_name(name: str, layer: int | None) -> str | None:
    is_bias = name.endswith(".bias")
    key = name[: -len(".bias")] + ".weight" if is_bias else name
    for role, rx in LAYER_ROLES if layer is not None else MODEL_ROLES:
        if rx.search(key):
            role = f"expert_{role}" if is_expert(name) else role
            return f"{role}_bias" if is_bias else role
    return None


def role_from_shape(shape: tuple[int, ...], layer: int | None, hidden: int | None, vocab: int | None) -> str:
    """A best guess for unknown names, marked 'inferred:' so evidence shows it is a guess."""
    if hidden is None:
        return "inferred:unknown"
    if len(shape) == 1:
        return "inferred:hidden_vector" if shape[0] == hidden else "inferred:vector"
    if len(shape) == 2:
        rows, cols = shape
        if layer is None:
            if vocab and rows >= vocab * 0.9 and cols == hidden:
                return "inferred:embedding"
            return "inferred:model_matrix"
        if rows == cols == hidden:
            return "inferred:attn_square"
        if cols == hidden:
            return "inferred:in_projection"
        if rows == hidden:
            return "inferred:out_projection"
    return "inferred:unknown"


def assign_role(name: str, shape: tuple[int, ...], hidden: int | None, vocab: int | None) -> tuple[str, int | None]:
    layer = layer_index(name)
    return role_from_name(name, layer) or role_from_shape(shape, layer, hidden, vocab), layer
