"""Detection benchmark: every MiniLM-derived variant and independent control against the base.

Prints one row per case (expected relation, verdict, kinds, weight score, bytes read) and the
margin between the lowest-scoring derived case and the highest-scoring independent one — the gap
the thresholds in fingerprints/verdict.py sit in. Builds the variants on first run (a few minutes:
it includes real fine-tuning), cached in ~/.cache/hubwatch/fixtures/variants or $HUBWATCH_FIXTURE_CACHE.

    python benchmarks/detection.py
"""

from __future__ import annotations

import sys
import time
from itertools import combinations
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from fingerprints.compare import compare_fingerprints  # noqa: E402
from fingerprints.engine import fingerprint_model  # noqa: E402
from fingerprints.reader import LocalFolderReader  # noqa: E402
from fingerprints.verdict import DERIVED_SCORE  # noqa: E402

import variants  # noqa: E402

DERIVED = {"identical", "weights-derived"}


def main() -> int:
    cache = variants.default_cache_dir()
    t0 = time.perf_counter()
    paths = variants.build_all(cache)
    print(f"variants ready in {time.perf_counter() - t0:.1f} s ({cache})\n")
    base = fingerprint_model(LocalFolderReader(variants.minilm_dir()))
    fps = {name: fingerprint_model(LocalFolderReader(path)) for name, path in paths.items()}

    rows = []
    for name, spec in variants.VARIANTS.items():
        reference = fps[spec.reference] if getattr(spec, "reference", None) else base
        t = time.perf_counter()
        c = compare_fingerprints(reference, fps[name])
        ok = c.verdict == spec.expected and set(spec.kinds) <= set(c.kinds)
        rows.append((name, spec.expected, c.verdict, ",".join(c.kinds), c.score, fps[name].weights.tensor_bytes_read,
                     time.perf_counter() - t, ok))
    independent = [n for n, s in variants.VARIANTS.items() if s.expected not in DERIVED]
    for a, b in combinations(independent, 2):
        c = compare_fingerprints(fps[a], fps[b])
        rows.append((f"{a} vs {b}", "not derived", c.verdict, ",".join(c.kinds), c.score,
                     fps[b].weights.tensor_bytes_read, 0.0, c.verdict not in DERIVED))

    header = f"{'case':<48} {'expected':<18} {'verdict':<18} {'kinds':<28} {'score':>7} {'bytes':>10} {'s':>5}  ok"
    print(header)
    print("-" * len(header))
    for name, exp, verdict, kinds, score, nbytes, secs, ok in rows:
        print(f"{name:<48} {exp:<18} {verdict:<18} {kinds:<28} {score:7.3f} {nbytes:>10,} {secs:5.2f}  {'yes' if ok else 'NO'}")
    derived_scores = [r[4] for r in rows if r[1] in DERIVED]
    null_scores = [r[4] for r in rows if r[1] not in DERIVED]
    print()
    print(f"lowest derived score:      {min(derived_scores):.3f}")
    print(f"highest independent score: {max(null_scores):.3f}")
    print(f"margin:                    {min(derived_scores) - max(null_scores):.3f} (threshold {DERIVED_SCORE})")
    failures = [r[0] for r in rows if not r[7]]
    print(f"cases: {len(rows)}, correct: {len(rows) - len(failures)}" + (f", WRONG: {', '.join(failures)}" if failures else ""))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
