"""Deep comparison benchmark: bytes, time and p-values for derived and independent pairs.

MiniLM (BERT; tests/variants.py) and SmolLM2-135M (Llama; tests/smollm.py): rotated, sliced,
noised, fine-tuned, permuted, upcycled into experts, and independent controls, each compared with
its source by fingerprints/deep.py. Prints per pair: tensor bytes read per model, CPU seconds
(process time, all threads), wall seconds, the combined log10 p-value and whether independence was
rejected; then the margin between the weakest derived and the strongest independent p-value.
Builds the fixtures on first run (minutes), cached in ~/.cache/hubwatch/fixtures.

    python benchmarks/deep.py [--device cuda] [--budget BYTES]
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import torch  # noqa: E402

from fingerprints.deep import DEEP_BYTE_BUDGET, DEEP_P_MAX, deep_compare  # noqa: E402
from fingerprints.engine import fingerprint_model  # noqa: E402
from fingerprints.reader import LocalFolderReader  # noqa: E402

import smollm  # noqa: E402
import variants  # noqa: E402

# (family, case, derived?)
MINILM_CASES = [("permute-neurons", True), ("permute-hidden", True), ("noise-1.0", True), ("finetune-heavy", True),
                ("prune-width", True), ("independent-trained", False), ("fresh-init-seed1", False)]
SMOLLM_CASES = [("smollm2-rotated", True), ("smollm2-sliced", True), ("smollm2-noise", True), ("smollm2-moe", True),
                ("gguf-q4_1", True), ("smollm2-fresh-init", False), ("smollm2-shuffled", False)]


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default=None, help="torch device (default: cuda when present, else cpu)")
    parser.add_argument("--budget", type=int, default=DEEP_BYTE_BUDGET, help="tensor bytes per model")
    args = parser.parse_args(argv)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    minilm_paths = variants.build_all(variants.default_cache_dir())
    smollm_paths = smollm.build_smollm(smollm.default_cache_dir())
    smollm_paths["gguf-q4_1"] = smollm.smollm_gguf().parent
    if device.startswith("cuda"):  # the first CUDA call pays for context creation: not the comparison's cost
        torch.zeros(1, device=device)

    header = f"{'source':<10} {'case':<22} {'derived':<8} {'MiB A':>6} {'MiB B':>6} {'CPU s':>6} {'wall s':>6} {'log10 p':>9}  rejects independence"
    print(f"device {device}, budget {args.budget:,} bytes per model\n")
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
            result = deep_compare(reader_a, fa, reader_b, fb, budget=args.budget, device=device)
            wall = time.perf_counter() - wall
            ok = result.dependent == derived
            rows.append((derived, result.log10_p, ok))
            print(f"{family:<10} {case:<22} {'yes' if derived else 'no':<8} {result.bytes_read['tensor_a'] / 2**20:6.1f} "
                  f"{result.bytes_read['tensor_b'] / 2**20:6.1f} {result.cpu_seconds:6.1f} {wall:6.1f} "
                  f"{result.log10_p:9.1f}  {'yes' if result.dependent else 'no'}{'' if ok else '  WRONG'}")
    weakest_derived = max(p for d, p, _ in rows if d)
    strongest_null = min(p for d, p, _ in rows if not d)
    print(f"\n{sum(ok for *_, ok in rows)} of {len(rows)} correct; threshold log10 p < {math.log10(DEEP_P_MAX):.0f}; "
          f"weakest derived log10 p {weakest_derived:.1f}, strongest independent {strongest_null:.1f}")
    return 0 if all(ok for *_, ok in rows) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
