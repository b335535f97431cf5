"""hubwatch nearest REPO|PATH: the indexed models closest to a model, with verdicts."""

from __future__ import annotations

import json
import sys

from fingerprints.errors import InvalidModelError

from bot.alerts.model import verdict_text

# Column widths of the table; longer values are cut with an ellipsis.
REPO_COLUMN = 48
VERDICT_COLUMN = 30


def register(sub) -> None:
    p = sub.add_parser("nearest", help="find the indexed models closest to a model",
                       description="Fingerprint a model, propose candidates from the index (exact keys, "
                       "vocabulary LSH, weight sketches) and compare the best exactly. '*' marks the "
                       "likely original of two copies (the earlier created).")
    p.add_argument("model", metavar="REPO|PATH", help="a model folder or org/name[@revision]")
    p.add_argument("-k", type=int, default=5, help="how many neighbours (default 5)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def _cut_left(text: str, width: int) -> str:
    """Keep the end: for a folder path the last components say which model it is."""
    return text if len(text) <= width else "…" + text[-(width - 1):]


def run(args, app) -> int:
    from store.nearest import nearest

    from bot.watch.records import spec_record

    if args.k < 1:
        raise InvalidModelError(f"-k must be at least 1, not {args.k}")
    with app.open_store(create=False) as store:  # before fingerprinting: a mistyped --db fails at once
        print(f"fingerprinting {args.model} …", file=sys.stderr)
        got = app.fingerprint_spec(args.model)
        query_record = None if got.is_local else (store.get_model(got.repo_id) or spec_record(got))
        found = nearest(store, got.fp, k=args.k, exclude_repo=got.repo_id, query_record=query_record,
                        refetch=app.refetch, pool=app.compare_pool.get())
    if args.json:
        rows = [{k: v for k, v in n.to_dict().items() if k != "comparison"} for n in found]
        print(json.dumps({"query": {"repo_id": got.repo_id, "sha": got.sha}, "neighbours": rows}, indent=2))
        return 0
    print_neighbours(found, got.repo_id)
    return 0


def print_neighbours(found, query_repo: str, say=print) -> None:
    """The neighbours table: '*' marks the likely original, the last column each model's creation date."""
    if not found:
        say("no candidates in the index (add references with `hubwatch index seed` or `hubwatch index add`)")
        return
    say(f"{'':1} {'repo':{REPO_COLUMN}} {'verdict':{VERDICT_COLUMN}} {'score':>6} {'conf':>5}  {'declared':28} created")
    for n in found:
        mark = "*" if n.likely_original == "neighbour" else " "
        say(f"{mark} {_cut_left(n.repo_id, REPO_COLUMN):{REPO_COLUMN}} {_cut(verdict_text(n.verdict, n.kinds), VERDICT_COLUMN):{VERDICT_COLUMN}} "
            f"{n.score:6.3f} {n.confidence:5.2f}  {_cut(n.declared, 28):28} {(n.created_at or '?')[:10]}")
    marked = any(n.likely_original == "neighbour" for n in found)
    if not marked and any(n.likely_original == "query" for n in found):
        say(f"* {query_repo} itself is older than its copies listed above: it is the likely original")
