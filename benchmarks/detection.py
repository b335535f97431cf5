"""Detection benchmark: every derived variant and independent control against its source.

Cases: every MiniLM variant (tests/variants.py), MiniLM written as llama.cpp writes BERT GGUFs
(Q4_0; and permuted hidden/heads/neurons in F16 under llama.cpp's phantom-space vocabulary), and
the real Llama-family SmolLM2-135M (tests/smollm.py): its GGUF against its Hugging Face
conversion both ways, a rotation with folded norms, SliceGPT-style deletion of directions, a
rotated body under a new tokenizer, a merge with an equal-norm independent model, noise, and
independent controls (also against the bodies under new tokenizers, the nulls of the row-Gram
trace). Prints one row per case (expected relation, verdict, kinds, weight score, whether the
comparison asked for --deep, bytes read), the margin between the lowest-scoring
derived case and the highest-scoring independent one — the gap the thresholds in
fingerprints/verdict.py sit in — and the same rows as the README's markdown table. Builds the
fixtures on first run (a few minutes: it includes real fine-tuning), cached in
~/.cache/hubwatch/fixtures or $HUBWATCH_FIXTURE_CACHE.

    python benchmarks/detection.py
"""

from __future__ import annotations

import sys
import tempfile
import time
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from safetensors.torch import load_file  # noqa: E402

from fingerprints.compare import compare_fingerprints  # noqa: E402
from fingerprints.engine import fingerprint_model  # noqa: E402
from fingerprints.facts import DERIVED_VERDICTS  # noqa: E402
from fingerprints.model import Fingerprint  # noqa: E402
from fingerprints.reader import LocalFolderReader  # noqa: E402
from fingerprints.verdict import DERIVED_SCORE, ROW_GRAM_DERIVED  # noqa: E402

import smollm  # noqa: E402
import variants  # noqa: E402


@dataclass
class Case:
    name: str
    expected: str
    kinds: tuple[str, ...]
    a: Fingerprint
    b: Fingerprint
    partner: Fingerprint | None = None


def minilm_cases(base: Fingerprint, fps: dict[str, Fingerprint]) -> list[Case]:
    cases = []
    for name, spec in variants.VARIANTS.items():
        reference = fps[spec.reference] if spec.reference else base
        cases.append(Case(name, spec.expected, spec.kinds, reference, fps[name], fps[spec.partner] if spec.partner else None))
    cases.append(Case("merge-independent, second parent not given", "weights-derived", ("merge",), base, fps["merge-independent"]))
    return cases


def gguf_cases(base: Fingerprint, folder: Path) -> list[Case]:
    """MiniLM as llama.cpp writes BERT GGUFs: quantised, and permuted under its vocabulary spelling."""
    tensors = load_file(str(variants.minilm_dir() / variants.WEIGHTS_FILE))
    vocab = (variants.minilm_dir() / "vocab.txt").read_text(encoding="utf-8").splitlines()
    out = []
    for name, weights, qtype, kinds in (
        ("minilm-gguf-q4_0", tensors, "Q4_0", ("rename", "quantize")),
        ("minilm-gguf-permuted-f16 (llama.cpp vocab)", variants.permute_everything(tensors), "F16",
         ("rename", "cast", "permute-hidden", "permute-heads", "permute-neurons")),
    ):
        (folder / qtype).mkdir()
        variants.write_bert_gguf(weights, vocab, folder / qtype / f"minilm-{qtype}.gguf", qtype)
        out.append(Case(name, "weights-derived", kinds, base, fingerprint_model(LocalFolderReader(folder / qtype))))
    return out


def smollm_cases() -> tuple[list[Case], dict[str, Fingerprint]]:
    paths = smollm.build_smollm()
    fps = {name: fingerprint_model(LocalFolderReader(path)) for name, path in paths.items() if name != "smollm2-moe"}
    gguf = fingerprint_model(LocalFolderReader(smollm.smollm_gguf().parent))
    base = fps[smollm.BASE]
    cases = [Case("smollm2 GGUF Q4_1 vs its HF conversion", "weights-derived", ("rename", "cast"), gguf, base),
             Case("smollm2 HF conversion vs its GGUF Q4_1", "weights-derived", ("rename", "quantize"), base, gguf)]
    for name, spec in smollm.SMOLLM_VARIANTS.items():
        if name in fps:
            cases.append(Case(name, spec.expected, spec.kinds, base, fps[name]))
    # The nulls of the row-Gram trace: independent models against the body under a new tokenizer.
    for control in ("smollm2-fresh-init", "smollm2-shuffled"):
        cases.append(Case(f"{control} vs smollm2-rotated-vocab-replaced", "not derived", (), fps[control],
                          fps["smollm2-rotated-vocab-replaced"]))
    return cases, fps


def all_cases() -> list[Case]:
    """Every case: derived variants against their sources, and independent pairs."""
    base = fingerprint_model(LocalFolderReader(variants.minilm_dir()))
    fps = {name: fingerprint_model(LocalFolderReader(path)) for name, path in variants.build_all(variants.default_cache_dir()).items()}
    cases = minilm_cases(base, fps)
    with tempfile.TemporaryDirectory() as tmp:
        cases += gguf_cases(base, Path(tmp))
    smollm_list, smollm_fps = smollm_cases()
    cases += smollm_list
    controls = [(n, fps[n]) for n, s in variants.VARIANTS.items() if s.expected not in DERIVED_VERDICTS]
    controls_smollm = [(n, smollm_fps[n]) for n, s in smollm.SMOLLM_VARIANTS.items()
                       if s.expected not in DERIVED_VERDICTS and n in smollm_fps]
    for group in (controls, controls_smollm):
        for (na, a), (nb, b) in combinations(group, 2):
            cases.append(Case(f"{na} vs {nb}", "not derived", (), a, b))
    for name, control in controls:  # MiniLM's nulls of the row-Gram trace
        cases.append(Case(f"{name} vs vocab-replaced", "not derived", (), control, fps["vocab-replaced"]))
    return cases


def main() -> int:
    started = time.perf_counter()
    cases = all_cases()
    print(f"fixtures ready and fingerprinted in {time.perf_counter() - started:.1f} s\n")

    rows = []
    row_grams = []  # (derived?, score) of the cases compared without paired embedding rows
    for case in cases:
        t = time.perf_counter()
        c = compare_fingerprints(case.a, case.b, second_parent=case.partner)
        seconds = time.perf_counter() - t
        if case.expected == "not derived":
            ok = c.verdict not in DERIVED_VERDICTS
        else:
            ok = c.verdict == case.expected and set(case.kinds) <= set(c.kinds)
        rows.append((case.name, case.expected, c.verdict, ",".join(c.kinds), c.score, c.needs_deep,
                     case.b.weights.tensor_bytes_read, seconds, ok))
        if c.weights.get("row_gram_score") is not None:
            row_grams.append((case.expected in DERIVED_VERDICTS, c.weights["row_gram_score"]))

    header = (f"{'case':<58} {'expected':<18} {'verdict':<18} {'kinds':<52} {'score':>6} {'deep':>4} "
              f"{'bytes':>10} {'s':>5}  ok")
    print(header)
    print("-" * len(header))
    for name, exp, verdict, kinds, score, deep, nbytes, secs, ok in rows:
        print(f"{name:<58} {exp:<18} {verdict:<18} {kinds:<52} {score:6.3f} {'yes' if deep else '':>4} {nbytes:>10,} "
              f"{secs:5.2f}  {'yes' if ok else 'NO'}")
    derived_scores = [r[4] for r in rows if r[1] in DERIVED_VERDICTS]
    null_scores = [r[4] for r in rows if r[1] not in DERIVED_VERDICTS]
    failures = [r[0] for r in rows if not r[8]]
    print()
    print(f"lowest derived score:      {min(derived_scores):.3f}")
    print(f"highest independent score: {max(null_scores):.3f}")
    print(f"margin:                    {min(derived_scores) - max(null_scores):.3f} (threshold {DERIVED_SCORE})")
    derived_grams = [g for derived, g in row_grams if derived]
    null_grams = [g for derived, g in row_grams if not derived]
    if derived_grams and null_grams:
        print(f"row-Gram trace (no paired embedding rows): lowest derived {min(derived_grams):.3f}, "
              f"highest independent {max(null_grams):.3f} (threshold {ROW_GRAM_DERIVED})")
    print(f"asked for --deep:          {sum(r[5] for r in rows)}")
    print(f"cases: {len(rows)}, correct: {len(rows) - len(failures)}" + (f", WRONG: {', '.join(failures)}" if failures else ""))
    print("\nREADME table:\n\n| case | verdict | kinds | score |\n|---|---|---|---|")
    for name, exp, verdict, kinds, score, *_ in rows:
        if exp != "not derived":
            print(f"| {name} | {verdict} | {kinds.replace(',', ', ')} | {score:.3f} |")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
