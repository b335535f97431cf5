"""Sketch cosines of every benchmarks/detection.py case, in each sketch kind (fingerprints/sketch.py).

The store re-reads a compact model from the Hub for a weight comparison only when its sketch cosine
with the new model reaches its kind's SKETCH_SCREEN_MIN (or identity keys or the config-and-tokenizer
comparison say so): every derived case must sit at or above it, every independent pair below.
Prints one row per case (expected relation, cosine per kind, and whether it falls on the right side
of the screen), then per kind the lowest derived and highest independent cosine and the margin.
Needs detection.py's fixtures (built on first use, a few minutes).

    python benchmarks/sketch.py
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks"), str(ROOT / "tests")]

from detection import all_cases  # noqa: E402

from fingerprints.facts import DERIVED_VERDICTS  # noqa: E402
from fingerprints.sketch import SKETCH_KIND, SKETCH_KINDS, SKETCH_SCREEN_MIN, sketch_vector  # noqa: E402


def main() -> int:
    started = time.perf_counter()
    cases = all_cases()
    print(f"fixtures ready and fingerprinted in {time.perf_counter() - started:.1f} s\n")
    header = f"{'case':<58} {'expected':<18} " + " ".join(f"{kind:>8} ok" for kind in SKETCH_KINDS)
    print(header)
    print("-" * len(header))
    cosines: dict[str, list[tuple[bool, float, str]]] = {kind: [] for kind in SKETCH_KINDS}
    for case in cases:
        derived = case.expected in DERIVED_VERDICTS
        cells = []
        for kind in SKETCH_KINDS:
            cosine = float(sketch_vector(case.a, kind) @ sketch_vector(case.b, kind))
            cosines[kind].append((derived, cosine, case.name))
            ok = (cosine >= SKETCH_SCREEN_MIN[kind]) == derived
            cells.append(f"{cosine:8.3f} {'  ' if ok else 'NO'}")
        print(f"{case.name:<58} {case.expected:<18} " + " ".join(cells))
    print()
    wrong = 0
    for kind, values in cosines.items():
        low = min((c, n) for d, c, n in values if d)
        high = max((c, n) for d, c, n in values if not d)
        misplaced = sum((c >= SKETCH_SCREEN_MIN[kind]) != d for d, c, _ in values)
        print(f"{kind:>8}: lowest derived {low[0]:.3f} ({low[1]}), highest independent {high[0]:.3f} ({high[1]}), "
              f"margin {low[0] - high[0]:.3f}, screen {SKETCH_SCREEN_MIN[kind]}, wrong side {misplaced}")
        if kind == SKETCH_KIND:  # what new rows store; the other kind's misplaced copies are why it exists
            wrong = misplaced
    return 1 if wrong else 0


if __name__ == "__main__":
    sys.exit(main())
