"""Config signature: the architecture a config.json describes, under canonical names.

Families spell the same fact differently (hidden_size / n_embd / d_model ...) and a disguised copy
may rename keys, ``architectures`` or ``model_type``; the canonical fields make such configs compare
equal. Multimodal configs keep the language model under a nested key (text_config, llm_config ...);
its fields are used when the top level has none.
"""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

from . import untrusted_json
from .envelope import DEFAULT_ENVELOPE, ParseEnvelope
from .errors import InvalidModelError
from .model import ConfigSignature, stable_hash

CANONICAL_KEYS: dict[str, list[str]] = {
    k: v
    for k, v in json.loads(resources.files(__package__).joinpath("data/config_keys.json").read_text()).items()
    if not k.startswith("_")
}
NESTED_TEXT_CONFIG_KEYS = ("text_config", "llm_config", "language_config", "text_model_config")
# Keys that record who saved the file, not what the model is; two copies may differ in them.
BOOKKEEPING_KEYS = {"_name_or_path", "transformers_version", "_commit_hash", "torch_dtype", "dtype", "auto_map"}
IDENTITY_KEYS = ("architectures", "model_type")


def parse_config_json(raw: bytes, path: str = "config.json", envelope: ParseEnvelope = DEFAULT_ENVELOPE) -> dict[str, Any]:
    try:
        data = untrusted_json.loads(raw, envelope, path)
    except ValueError as exc:  # bad UTF-8 or JSON, nesting too deep, a 5000-digit number
        raise InvalidModelError(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise InvalidModelError(f"{path} must hold a JSON object, not {type(data).__name__}")
    return data


def _canonical_fields(cfg: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    fields: dict[str, Any] = {}
    renamed: dict[str, str] = {}
    for canonical, aliases in CANONICAL_KEYS.items():
        for key in aliases:
            if key in cfg and isinstance(cfg[key], (int, float, str, bool)):
                fields[canonical] = cfg[key]
                if key != aliases[0]:
                    renamed[key] = canonical
                break
    return fields, renamed


def config_signature(cfg: dict[str, Any]) -> ConfigSignature:
    fields, renamed = _canonical_fields(cfg)
    nested_path = None
    if "hidden_size" not in fields:
        for key in NESTED_TEXT_CONFIG_KEYS:
            if isinstance(cfg.get(key), dict):
                fields, renamed = _canonical_fields(cfg[key])
                nested_path = key
                break
    architectures = cfg.get("architectures")
    if not isinstance(architectures, list) or not all(isinstance(a, str) for a in architectures):
        architectures = []
    family = cfg.get("model_type")
    exact = {k: v for k, v in cfg.items() if k not in BOOKKEEPING_KEYS}
    return ConfigSignature(
        family=family.lower() if isinstance(family, str) else None,
        architectures=architectures,
        fields=fields,
        arch_hash=stable_hash(fields),
        exact_hash=stable_hash(exact),
        renamed_keys=renamed,
        text_config_path=nested_path,
    )


def config_similarity(a: ConfigSignature, b: ConfigSignature) -> tuple[float, list[str]]:
    """Fraction of canonical fields (present in either) with equal values, and the differences."""
    keys = sorted(set(a.fields) | set(b.fields))
    if not keys:
        return 0.0, []
    diffs = [f"{k}: {a.fields.get(k)!r} vs {b.fields.get(k)!r}" for k in keys if a.fields.get(k) != b.fields.get(k)]
    return 1 - len(diffs) / len(keys), diffs
