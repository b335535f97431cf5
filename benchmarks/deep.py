"""Deep comparison benchmark: bytes, time and p-values for derived and independent pairs.

MiniLM (BERT; tests/variants.py) and SmolLM2-135M (Llama; tests/smollm.py): rotated, sliced,
noised, fine-tuned, permuted, heads permuted and rescaled, written as llama.cpp writes GGUFs
(quantized; permuted under llama.cpp's spelling of the vocabulary), upcycled into experts, and
independent controls, each compared with its source by fingerprints/deep.py. Prints per pair:
tensor bytes read per model, CPU seconds (process time, all threads), wall seconds, the combined
log10 p-value and whether independence was rejected; then, for the attention test alone, the bytes
of whole Q/K/V/O it read per model, its CPU seconds, its Fisher log10 p-value and its smallest Q/K
and V/O cosines. Ends with the margin between the weakest derived and the strongest independent
p-value, overall and for the attention test alone, and the GPU ("GPU: not available" when torch
sees none; with one, ``--device cuda`` runs the comparisons on it and the seconds are its).
Builds the fixtures on first run (minutes), cached in ~/.cache/hubwatch/fixtures.

    python benchmarks/deep.py [--device cuda] [--budget BYTES]
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import torch  # noqa: E402
from safetensors.torch import load_file  # noqa: E402

from fingerprints.deep import DEEP_BYTE_BUDGET, DEEP_P_MAX, deep_compare, fisher_log10  # noqa: E402
from fingerprints.engine import fingerprint_model  # noqa: E402
from fingerprints.reader import LocalFolderReader  # noqa: E402

import smollm  # noqa: E402
import variants  # noqa: E402

# (family, case, derived?)
MINILM_CASES = [("permute-neurons", True), ("permute-hidden", True), ("permute-heads", True), ("rescale-heads", True),
                ("noise-1.0", True), ("finetune-heavy", True), ("prune-width", True), ("gguf-q8_0", True), ("gguf-q4_0", True),
                ("gguf-permuted-f16", True),
                ("independent-trained", False), ("fresh-init-seed1", False)]
SMOLLM_CASES = [("smollm2-rotated", True), ("smollm2-rotated-heads", True), ("smollm2-sliced", True), ("smollm2-noise", True),
                ("smollm2-moe", True), ("gguf-q4_1", True), ("smollm2-fresh-init", False), ("smollm2-shuffled", False)]


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default=None, help="torch device (default: cuda when present, else cpu)")
    parser.add_argument("--budget", type=int, default=DEEP_BYTE_BUDGET, help="tensor bytes per model")
    args = parser.parse_args(argv)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    with tempfile.TemporaryDirectory() as scratch:
        return run(device, args.budget, Path(scratch))


def run(device: str, budget: int, scratch: Path) -> int:
    minilm_paths = variants.build_all(variants.default_cache_dir())
    # MiniLM as llama.cpp writes BERT GGUFs (its vocabulary spelling): quantized, and permuted.
    tensors = load_file(str(variants.minilm_dir() / variants.WEIGHTS_FILE))
    vocab = (variants.minilm_dir() / "vocab.txt").read_text(encoding="utf-8").splitlines()
    for case, weights, qtype in (("gguf-q8_0", tensors, "Q8_0"), ("gguf-q4_0", tensors, "Q4_0"),
                                 ("gguf-permuted-f16", variants.permute_everything(tensors), "F16")):
        (scratch / case).mkdir()
        variants.write_bert_gguf(weights, vocab, scratch / case / f"minilm-{qtype}.gguf", qtype)
        minilm_paths[case] = scratch / case
    smollm_paths = smollm.build_smollm(smollm.default_cache_dir())
    smollm_paths["gguf-q4_1"] = smollm.smollm_gguf().parent
    smollm_paths["smollm2-rotated-heads"] = smollm.build_rotated_heads(smollm_paths["smollm2-rotated"], scratch / "rotated-heads")
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    if device.startswith("cuda"):  # the first CUDA call pays for context creation: not the comparison's cost
        torch.zeros(1, device=device)

    header = (f"{'source':<10} {'case':<22} {'derived':<8} {'MiB A':>6} {'MiB B':>6} {'CPU s':>6} {'wall s':>6} {'log10 p':>9}"
              f" | {'attn MiB A':>10} {'MiB B':>6} {'CPU s':>6} {'log10 p':>8} {'Q/K cos':>7} {'V/O cos':>7} |  rejects independence")
    print(f"device {device}, budget {budget:,} bytes per model\n")
    print(header)
    print("-" * len(header))
    rows = []
    for family, base_dir, cases, paths in (("MiniLM", variants.minilm_dir(), MINILM_CASES, minilm_paths),
                                           ("SmolLM2", smollm_paths["smollm2"], SMOLLM_CASES, smollm_paths)):
        reader_a = LocalFolderReader(base_dir)
        fa = fingerprint_model(reader_a)
        for case, derived in cases:
            reader_b = LocalFolderReader(paths[case])
            fb = fingerprint_model(reader_b)
            wall = time.perf_counter()
            result = deep_compare(reader_a, fa, reader_b, fb, budget=budget, device=device)
            wall = time.perf_counter() - wall
            ok = result.dependent == derived
            attention = result.attention
            attention_p = fisher_log10(attention.log10_ps)
            rows.append((derived, result.log10_p, attention_p if attention.tests else None, ok))
            cosines = (f"{min(t.qk_cosine for t in attention.tests):7.3f} {min(t.ov_cosine for t in attention.tests):7.3f}"
                       if attention.tests else f"{'-':>7} {'-':>7}")
            print(f"{family:<10} {case:<22} {'yes' if derived else 'no':<8} {result.bytes_read['tensor_a'] / 2**20:6.1f} "
                  f"{result.bytes_read['tensor_b'] / 2**20:6.1f} {result.cpu_seconds:6.1f} {wall:6.1f} {result.log10_p:9.1f}"
                  f" | {attention.bytes_read['a'] / 2**20:10.2f} {attention.bytes_read['b'] / 2**20:6.2f} "
                  f"{attention.cpu_seconds:6.1f} {attention_p:8.1f} {cosines} |  "
                  f"{'yes' if result.dependent else 'no'}{'' if ok else '  WRONG'}")
    print(f"\n{sum(row[-1] for row in rows)} of {len(rows)} correct; threshold log10 p < {math.log10(DEEP_P_MAX):.0f}")
    for label, column in (("combined", 1), ("attention test alone", 2)):
        derived = [row[column] for row in rows if row[0] and row[column] is not None]
        independent = [row[column] for row in rows if not row[0] and row[column] is not None]
        print(f"{label}: weakest derived log10 p {max(derived):.1f}, strongest independent {min(independent):.1f} "
              f"({len(derived)} derived and {len(independent)} independent pairs tested)")
    print(f"GPU: {gpu} ({device} used)" if gpu else "GPU: not available")
    return 0 if all(row[-1] for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
