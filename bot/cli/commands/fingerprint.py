"""hubwatch fingerprint PATH|REPO: compute and print one model's fingerprint."""

from __future__ import annotations

import json
import sys

from fingerprints.errors import UninspectableWeightsError


def register(sub) -> None:
    p = sub.add_parser(
        "fingerprint",
        help="fingerprint a model folder or Hub repo",
        description="Read a model's config, tokenizer and a sample of its weights (at most 1 MiB of "
        "tensor data) and print its fingerprint.",
    )
    p.add_argument("model", help="a local model folder, or a Hub repo id org/name[@revision]")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)


def describe(fp) -> list[str]:
    lines = [f"model:      {fp.source}"]
    if fp.config:
        f = fp.config.fields
        lines.append(
            f"config:     {fp.config.family or '?'} ({', '.join(fp.config.architectures) or 'no architectures'}); "
            + ", ".join(f"{k}={f[k]}" for k in ("hidden_size", "num_layers", "num_heads", "intermediate_size", "vocab_size") if k in f)
        )
    else:
        lines.append("config:     none")
    if fp.tokenizer:
        t = fp.tokenizer
        std = f", standard {t.standard_vocabulary}" if t.standard_vocabulary else ""
        lines.append(f"tokenizer:  {t.kind} from {t.source_file}, {t.vocab_size} tokens{std}, vocab {t.vocab_hash[:12]}")
    else:
        lines.append("tokenizer:  none")
    w = fp.weights
    if w is None:
        lines.append("weights:    none")
    elif w.format == "uninspectable":
        lines.append(f"weights:    not inspected — {w.note}")
    else:
        lines.append(
            f"weights:    {w.format}, {len(w.tensors)} tensors, {w.num_layers} layers, hidden {w.hidden_size}, "
            f"structure {w.structure_hash[:12]}"
        )
        lines.append(f"sampled:    {w.tensor_bytes_read:,} bytes of tensor data in {len(w.samples)} tensors"
                     + (f" + {len(w.embedding.tokens)} embedding rows" if w.embedding else ""))
    lines.append(f"read:       {fp.bytes_read:,} bytes in {fp.requests} requests")
    return lines


def run(args, app) -> int:
    fp = app.fingerprint(app.open_reader(args.model))
    if args.json:
        print(json.dumps(fp.to_dict(include_arrays=False), indent=2))
    else:
        print("\n".join(describe(fp)))
    if fp.weights is not None and fp.weights.format == "uninspectable":
        raise UninspectableWeightsError(fp.weights.note)
    return 0
