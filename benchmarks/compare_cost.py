"""What one comparison costs at hidden 576, 4096 and 8192: Llama-shaped fingerprints with realistic values.

Fingerprints are built the way the sampler fills them at the 1 MiB budget with bf16 weights (as
many embedding rows of shared tokens as half the budget holds, every norm vector of 8 sampled
layers, then an even share of rows of each of the 7 matrices per layer), with values that have
the structure of trained embeddings: a low-rank token structure, isotropic noise, a mean offset
and a few outlier dimensions. Each width is timed on four pairs:

- fine-tune: B = A plus uneven relative changes (1-5% per tensor);
- independent: another draw of the same generator;
- permuted: A's hidden dimension permuted, plus the fine-tune's changes (the alignment's case);
- rotated: A's residual stream times a random orthogonal matrix (QuaRot-style; block-structured).

    python benchmarks/compare_cost.py [--repeat 3] [--baseline FOLDER]

Prints the median seconds per comparison and the verdict; with --baseline, the same for another
checkout's fingerprints package, interleaved on the same fingerprints (timings on a shared machine
move with its load: compare the ratio, not the seconds).
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fingerprints.compare import compare_fingerprints  # noqa: E402
from fingerprints.model import Fingerprint, TensorInfo, TensorSample, TokenRows, WeightsSignature  # noqa: E402

BUDGET, EMBEDDING_SHARE, VECTOR_SHARE, MAX_ROWS, ROWS_PER_MATRIX = 1024 * 1024, 0.5, 0.2, 512, 16
BF16 = 2
SAMPLED_LAYERS = 8
# (hidden, intermediate) of SmolLM2-135M, Llama-2-7B and Llama-2-70B.
WIDTHS = {576: 1536, 4096: 11008, 8192: 28672}
MATRICES = (("attn_q", "q"), ("attn_k", "k"), ("attn_v", "v"), ("attn_o", "o"), ("mlp_gate", "gate"), ("mlp_up", "up"),
            ("mlp_down", "down"))
LATENT_RANK, OUTLIER_DIMS = 64, 8
ROTATION_BLOCK = 64


def shapes(hidden: int, ffn: int) -> dict[str, tuple[int, int]]:
    return {"q": (hidden, hidden), "k": (hidden, hidden), "v": (hidden, hidden), "o": (hidden, hidden),
            "gate": (ffn, hidden), "up": (ffn, hidden), "down": (hidden, ffn)}


def structured(rng: np.random.Generator, rows: int, cols: int, outliers: np.ndarray) -> np.ndarray:
    latent = rng.standard_normal((rows, LATENT_RANK)) @ rng.standard_normal((LATENT_RANK, cols)) / np.sqrt(LATENT_RANK)
    x = 0.02 * (latent + 0.5 * rng.standard_normal((rows, cols))) + 0.004
    x[:, outliers[outliers < cols]] *= 10
    return x.astype(np.float32)


def model(hidden: int, ffn: int, seed: int) -> dict:
    """A model's sampled values: embedding rows, norm vectors and matrix rows, keyed by name."""
    rng = np.random.default_rng(seed)
    outliers = rng.choice(hidden, OUTLIER_DIMS, replace=False)
    n_emb = int(min(MAX_ROWS, BUDGET * EMBEDDING_SHARE // (hidden * BF16)))
    values = {"embed": structured(rng, n_emb, hidden, outliers)}
    vector_bytes = 2 * SAMPLED_LAYERS * hidden * BF16
    per_matrix = (BUDGET * (1 - EMBEDDING_SHARE) - vector_bytes) / (7 * SAMPLED_LAYERS)
    for layer in range(SAMPLED_LAYERS):
        for norm in ("attn_norm", "ffn_norm"):
            values[f"{layer}.{norm}"] = (1 + 0.1 * rng.standard_normal((1, hidden))).astype(np.float32)
        for _, short in MATRICES:
            rows_total, cols = shapes(hidden, ffn)[short]
            rows = int(min(ROWS_PER_MATRIX, max(1, per_matrix // (cols * BF16))))
            values[f"{layer}.{short}"] = structured(rng, rows, cols, outliers)
    return values


def derive(values: dict, hidden: int, seed: int, kind: str) -> dict:
    rng = np.random.default_rng(seed)
    out = {}
    basis = None
    if kind == "permuted":
        basis = np.eye(hidden)[:, rng.permutation(hidden)] * rng.choice([-1, 1], hidden)
    elif kind == "rotated":
        # Random orthogonal blocks of 64 dims, then a permutation: every column mixes with 63
        # others (a dense 8192 x 8192 QR would cost minutes to draw, nothing to compare).
        blocks = [np.linalg.qr(rng.standard_normal((ROTATION_BLOCK, ROTATION_BLOCK)))[0]
                  for _ in range(hidden // ROTATION_BLOCK)]
        basis = np.zeros((hidden, hidden))
        for i, block in enumerate(blocks):
            basis[i * ROTATION_BLOCK:(i + 1) * ROTATION_BLOCK, i * ROTATION_BLOCK:(i + 1) * ROTATION_BLOCK] = block
        basis = basis[:, rng.permutation(hidden)]
    for name, x in values.items():
        x = x.astype(np.float64)
        if kind in ("fine-tune", "permuted"):
            x = x + rng.uniform(0.01, 0.05) * x.std() * rng.standard_normal(x.shape)
        if basis is not None:
            short = name.split(".")[-1]
            if name == "embed" or short in ("q", "k", "v", "gate", "up"):
                x = x @ basis  # reads the residual stream (columns)
            elif short in ("o", "down"):
                # The sampled rows of a writer are other residual dimensions (permuted) or mixtures
                # of all of them (rotated): numbers unrelated to A's sampled rows.
                x = structured(rng, x.shape[0], x.shape[1], np.array([], dtype=int))
            elif short.endswith("norm"):
                x = x @ np.abs(basis) if kind == "permuted" else np.ones_like(x)  # folded into the readers
        out[name] = x.astype(np.float32)
    return out


def fingerprint(values: dict, hidden: int, ffn: int, source: str) -> Fingerprint:
    n_emb = len(values["embed"])
    tokens = [f"tok{i}" for i in range(n_emb)]
    infos = [TensorInfo("model.embed_tokens.weight", "BF16", [128000, hidden], "m.safetensors", "embedding", None)]
    samples = []
    for layer in range(SAMPLED_LAYERS):
        for norm, hf in (("attn_norm", "input_layernorm"), ("ffn_norm", "post_attention_layernorm")):
            name = f"model.layers.{layer}.{hf}.weight"
            role = "norm_attn" if norm == "attn_norm" else "norm_mlp"
            infos.append(TensorInfo(name, "BF16", [hidden], "m.safetensors", role, layer))
            samples.append(TensorSample(name, role, layer, [hidden], "BF16", [0], values[f"{layer}.{norm}"]))
        for role, short in MATRICES:
            shape = shapes(hidden, ffn)[short]
            name = f"model.layers.{layer}.{short}_proj.weight"
            rows = values[f"{layer}.{short}"]
            infos.append(TensorInfo(name, "BF16", list(shape), "m.safetensors", role, layer))
            samples.append(TensorSample(name, role, layer, list(shape), "BF16", list(range(len(rows))), rows))
    weights = WeightsSignature(
        format="safetensors", tensors=infos, structure_hash="s", hidden_size=hidden, num_layers=SAMPLED_LAYERS,
        embedding=TokenRows("model.embed_tokens.weight", tokens, list(range(n_emb)), values["embed"]),
        samples=samples, sample_digest=source, value_digest=source, file_sha256={}, tensor_bytes_read=BUDGET,
    )
    return Fingerprint(source=source, config=None, tokenizer=None, weights=weights)


def baseline_compare(folder: str):
    """compare_fingerprints of another checkout's fingerprints package (FOLDER/fingerprints), imported
    under another name so both run in one process, on the same fingerprints, in the same minutes."""
    package = Path(folder) / "fingerprints"
    spec = importlib.util.spec_from_file_location("baseline_fingerprints", package / "__init__.py",
                                                  submodule_search_locations=[str(package)])
    sys.modules["baseline_fingerprints"] = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(sys.modules["baseline_fingerprints"])
    return importlib.import_module("baseline_fingerprints.compare").compare_fingerprints


def timed(compare, a: Fingerprint, b: Fingerprint, repeat: int) -> tuple[str, float]:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        result = compare(a, b)
        times.append(time.perf_counter() - started)
    return str(result.verdict), float(np.median(times))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--baseline", metavar="FOLDER",
                        help="also time FOLDER/fingerprints, e.g. from `git archive REV fingerprints | tar -x -C FOLDER`")
    parser.add_argument("--hidden", type=int, nargs="*", choices=sorted(WIDTHS), default=sorted(WIDTHS))
    args = parser.parse_args()
    baseline = baseline_compare(args.baseline) if args.baseline else None
    print(f"{'hidden':>6} {'pair':<12} {'verdict':<18} {'s (median)':>10}"
          + (f" {'baseline verdict':<18} {'baseline s':>10}" if baseline else ""))
    for hidden in args.hidden:
        ffn = WIDTHS[hidden]
        base_values = model(hidden, ffn, seed=1)
        base = fingerprint(base_values, hidden, ffn, "A")
        pairs = {
            "fine-tune": derive(base_values, hidden, 2, "fine-tune"),
            "independent": model(hidden, ffn, seed=3),
            "permuted": derive(base_values, hidden, 4, "permuted"),
            "rotated": derive(base_values, hidden, 5, "rotated"),
        }
        for name, values in pairs.items():
            other = fingerprint(values, hidden, ffn, name)
            verdict, seconds = timed(compare_fingerprints, base, other, args.repeat)
            line = f"{hidden:>6} {name:<12} {verdict:<18} {seconds:>10.3f}"
            if baseline:
                old_verdict, old_seconds = timed(baseline, base, other, args.repeat)
                line += f" {old_verdict:<18} {old_seconds:>10.3f}"
            print(line, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
