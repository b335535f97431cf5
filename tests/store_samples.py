"""Small synthetic fingerprints for the store and index tests."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timezone

import numpy as np

from fingerprints.model import (ConfigSignature, Fingerprint, TokenizerSignature, TokenRows,
                                WeightsSignature)
from fingerprints.tokenizer import minhash

T0 = datetime(2025, 1, 1, 12, 0, tzinfo=timezone.utc)


def small_fp(seed: int = 0, hidden: int = 16, vocab: list[str] | None = None) -> Fingerprint:
    rng = np.random.default_rng(seed)
    vocab = vocab or [f"tok{i}" for i in range(40)]
    tokens = vocab[:30]
    emb = TokenRows("embed", tokens, list(range(len(tokens))), rng.normal(size=(len(tokens), hidden)).astype(np.float32))
    weights = WeightsSignature("safetensors", [], f"struct-{hidden}", hidden, 2, emb, [], f"sample-{seed}",
                               f"values-{seed}", {}, 100)
    tok = TokenizerSignature("wordpiece", "vocab.txt", len(vocab), f"vocab-{len(vocab)}-{vocab[-1]}", None, [], [],
                             minhash(vocab), None, vocab)
    config = ConfigSignature("bert", ["BertModel"], {"hidden_size": hidden}, f"arch-{hidden}", f"exact-{seed}", {})
    return Fingerprint(f"test/{seed}", config, tok, weights, bytes_read=1234)


def fine_tune(fp: Fingerprint, seed: int, name: str) -> Fingerprint:
    """``fp`` with its embedding moved a little and its own sampled values: a sketch neighbour."""
    rng = np.random.default_rng(seed)
    emb = fp.weights.embedding
    moved = replace(emb, values=(emb.values + 0.05 * rng.standard_normal(emb.values.shape)).astype(np.float32))
    weights = replace(fp.weights, embedding=moved, sample_digest=f"sample-{name}", value_digest=f"values-{name}")
    return replace(fp, source=name, weights=weights)
