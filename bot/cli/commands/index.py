"""hubwatch index add|stats|seed|compact: build and inspect the reference index."""

from __future__ import annotations

import json
import sys

from fingerprints.errors import HubwatchError

from bot.hub.sources import fingerprint_spec, index_one
from store.rows import TIER_REFERENCE

def add_db_option(parser) -> None:
    parser.add_argument("--db", help="SQLite database (default: the store path from the settings: "
                        "$HUBWATCH_DB, hubwatch.toml, or ./hubwatch.db)")


def open_store(args):
    from store import Store

    from bot.settings import load_settings

    return Store.open(args.db or load_settings().store.path)


def register(sub) -> None:
    p = sub.add_parser("index", help="build and inspect the reference index",
                       description="Add models to the fingerprint index, seed it with the curated "
                       "reference list, or show what it holds.")
    isub = p.add_subparsers(dest="index_command", metavar="ACTION", required=True)

    add = isub.add_parser("add", help="fingerprint folders or Hub repos and store them")
    add.add_argument("models", nargs="+", metavar="REPO|PATH", help="model folders or org/name[@revision]")
    add_db_option(add)
    add.set_defaults(func=run_add)

    stats = isub.add_parser("stats", help="what the index holds")
    stats.add_argument("--json", action="store_true", help="print one JSON object")
    add_db_option(stats)
    stats.set_defaults(func=run_stats)

    seed = isub.add_parser("seed", help="fingerprint the curated reference models (store/data/references.json)")
    seed.add_argument("--limit", type=int, default=None, metavar="N", help="only the first N references")
    seed.add_argument("--family", default=None, help="only references of this family (e.g. llama-3)")
    add_db_option(seed)
    seed.set_defaults(func=run_seed)

    compact = isub.add_parser(
        "compact", help="shrink stored fingerprints that matched nothing to the compact tier",
        description="Stores written before schema 3 keep every model in full (~0.8 MB each). This keeps full "
        "detail for references and models in a match, and shrinks the rest to their compact form "
        "(no sampled values; re-read from the Hub when a comparison needs them).")
    compact.add_argument("--limit", type=int, default=100_000, metavar="N", help="at most N fingerprints (default 100,000)")
    add_db_option(compact)
    compact.set_defaults(func=run_compact)


def run_add(args) -> int:
    first_error: HubwatchError | None = None
    with open_store(args) as store:
        for spec in args.models:
            try:
                got, fid, created = index_one(store, spec, tier=TIER_REFERENCE)
            except HubwatchError as exc:
                print(f"hubwatch: error: {spec}: {exc}", file=sys.stderr)
                first_error = first_error or exc
                continue
            state = "added" if created else "already indexed"
            print(f"{state}: {got.repo_id}@{got.sha[:12]} (fingerprint {fid}, {got.fp.bytes_read:,} bytes read)")
    return first_error.exit_code if first_error else 0


def run_stats(args) -> int:
    with open_store(args) as store:
        s = store.stats()
    if args.json:
        print(json.dumps(s, indent=2))
        return 0
    print(f"database:      {s['path']} ({s['bytes'] / 1e6:,.1f} MB, schema {s['schema_version']})")
    print(f"fingerprints:  {s['fingerprints']:,} ({s['repos_fingerprinted']:,} repos, {s['models']:,} with Hub metadata)")
    print(f"vocabularies:  {s['vocabularies']:,}   index keys: {s['index_keys']:,}   LSH bands: {s['lsh_bands']:,}")
    print(f"matches:       {s['matches']:,}   watch list: {s['watch_list']:,}")
    tiers = ", ".join(f"{k} {v:,}" for k, v in s["tiers"].items())
    per_model = s["bytes"] / max(1, s["fingerprints"])
    print(f"tiers:         {tiers or 'none'}   blobs {s['blob_bytes'] / 1e6:,.1f} MB   {per_model / 1e3:,.1f} KB per model")
    print("alerts:        " + ", ".join(f"{k} {v:,}" for k, v in s["alerts"].items()))
    families = ", ".join(f"{k} {v:,}" for k, v in list(s["shape_families"].items())[:10])
    print(f"shape families: {families or 'none'}")
    return 0


def run_compact(args) -> int:
    from store.references import load_references

    with open_store(args) as store:
        keep = {r.repo_id for r in load_references()} | {e.value for e in store.watch_list("reference")}
        before = store.stats()["blob_bytes"]
        done = store.compact_unmatched(keep, limit=max(args.limit, 0))
        after = store.stats()["blob_bytes"]
    print(f"compacted {done:,} fingerprints: blobs {before / 1e6:,.1f} MB -> {after / 1e6:,.1f} MB "
          "(the file shrinks after `sqlite3 FILE VACUUM`)")
    return 0


def run_seed(args) -> int:
    from store.references import load_references

    refs = load_references()
    if args.family:
        refs = [r for r in refs if r.family == args.family]
    if args.limit is not None:
        refs = refs[: max(args.limit, 0)]
    ok = failed = 0
    with open_store(args) as store:
        for i, ref in enumerate(refs, 1):
            prefix = f"[{i}/{len(refs)}] {ref.repo_id} ..."
            print(prefix, end=" ", file=sys.stderr, flush=True)
            try:
                got, _, created = index_one(store, ref.repo_id, tier=TIER_REFERENCE)
                store.add_watch("reference", ref.repo_id, added_by="seed", note=ref.family)
            except HubwatchError as exc:  # one unreachable or gated repo must not stop the seed
                failed += 1
                print(f"failed: {exc}", file=sys.stderr)
                continue
            ok += 1
            print(f"{'ok' if created else 'unchanged'} ({got.fp.bytes_read / 1e6:.1f} MB)", file=sys.stderr)
    print(f"seeded {ok} of {len(refs)} references ({failed} failed)")
    return 0
