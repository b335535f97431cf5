"""hubwatch compare A B: is B a copy of A? Verdict, scores and evidence."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from fingerprints.compare import compare_fingerprints
from fingerprints.deep import DEEP_BYTE_BUDGET, deepen
from fingerprints.tokenizer_cache import TokenizerCache
from fingerprints.errors import InvalidModelError
from fingerprints.facts import Verdict

from bot.alerts.model import verdict_text
from bot.hub.sources import open_reader
from bot.ops.progress import progress


def register(sub) -> None:
    p = sub.add_parser(
        "compare",
        help="compare two models (folders or Hub repos)",
        description="Fingerprint A and B and decide whether B is identical to A, derived from A's "
        "weights, uses A's tokenizer, shares only A's architecture, or is independent.",
    )
    p.add_argument("a", help="the earlier / reference model: folder or org/name[@revision]")
    p.add_argument("b", help="the suspect model: folder or org/name[@revision]")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--plot", metavar="FILE.png", help="write the layer-by-layer evidence picture here")
    p.add_argument("--deep", action="store_true",
                   help="also read whole embedding rows of shared tokens, whole Q/K/V/O matrices and FFN rows of "
                   "a few layers, align them (torch; GPU when present) and test independence with a p-value")
    p.add_argument("--budget", type=byte_count, metavar="BYTES",
                   help=f"tensor bytes --deep may read per model (default {DEEP_BYTE_BUDGET:,})")
    p.set_defaults(func=run)


def byte_count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"a number of bytes, not {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"a positive number of bytes, not {value}")
    return value


def run(args, app) -> int:
    if args.budget is not None and not args.deep:
        raise InvalidModelError("--budget sets how much --deep reads; add --deep")
    if args.plot and not args.plot.lower().endswith(".png"):
        raise InvalidModelError(f"--plot writes a PNG; give a file name ending in .png, not {args.plot!r}")
    deep_budget = args.budget or DEEP_BYTE_BUDGET
    if args.deep:
        # The deep comparison's reads come on top of the per-model byte limit of the fingerprint.
        def open_repo(repo_id, revision):
            return app.hub.reader(repo_id, revision, byte_budget=app.settings.limits.model_bytes + deep_budget)

        reader_a, reader_b = open_reader(args.a, open_repo), open_reader(args.b, open_repo)
    else:
        reader_a, reader_b = app.open_reader(args.a), app.open_reader(args.b)
    tokenizers = TokenizerCache()  # b's tokenizer files, when identical to a's on the Hub, are not read again
    steps = 4 if args.deep else 3
    with progress("compare", total=steps, unit="step") as bar:
        bar.advance(0, note=f"fingerprinting {args.a}")
        fa = app.fingerprint(reader_a, tokenizers=tokenizers)
        bar.advance(note=f"fingerprinting {args.b}")
        fb = app.fingerprint(reader_b, tokenizers=tokenizers)
        bar.advance(note="comparing")
        result = compare_fingerprints(fa, fb, reader_a, reader_b)
        if args.deep:
            bar.advance(note="deep comparison")
            result = deepen(result, reader_a, fa, reader_b, fb, deep_budget)
        bar.advance()
    if args.plot:
        from fingerprints.plot import render_comparison_png

        Path(args.plot).write_bytes(render_comparison_png(result))
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
        return 0
    print(f"verdict:    {verdict_text(result.verdict, result.kinds)}")
    if result.verdict == Verdict.NOT_COMPARABLE:
        print("score:      none (the weights were not compared; see the evidence)")
    else:
        print(f"confidence: {result.confidence:.3f}")
        print(f"score:      {result.score:.3f}  (weights similarity; independent models ≈ 0)")
    print(f"read:       A {fa.bytes_read:,} bytes / {fa.requests} requests, B {fb.bytes_read:,} bytes / {fb.requests} requests")
    print("evidence:")
    for line in result.evidence:
        print(f"  - {line}")
    if args.plot:
        print(f"plot:       {args.plot}")
    return 0
