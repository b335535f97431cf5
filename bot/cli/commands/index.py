"""hubwatch index add|stats|seed|compact: build and inspect the reference index."""

from __future__ import annotations

import json
import sys


from bot.errors import USER_ERRORS
from bot.hub.sources import index_one
from bot.ops.progress import progress
from bot.watch.backlog import NEWEST_FEED, FeedCursor
from store.rows import TIER_REFERENCE


def register(sub) -> None:
    p = sub.add_parser("index", help="build and inspect the reference index",
                       description="Add models to the fingerprint index, seed it with the curated "
                       "reference list, or show what it holds.")
    isub = p.add_subparsers(dest="index_command", metavar="ACTION", required=True)

    add = isub.add_parser("add", help="fingerprint folders or Hub repos and store them",
                          description="Fingerprint each model folder or Hub repo and store it in the index "
                          "(with its Hub metadata: creation date, declared base models). A revision already "
                          "indexed is left as it is. Creates the database when it does not exist.")
    add.add_argument("models", nargs="+", metavar="REPO|PATH", help="model folders or org/name[@revision]")
    add.set_defaults(func=run_add)

    stats = isub.add_parser("stats", help="what the index holds",
                            description="Counts of fingerprints, vocabularies, index keys, matches, watch "
                            "list entries and alerts by state, and the largest shape families.")
    stats.add_argument("--json", action="store_true", help="print one JSON object")
    stats.set_defaults(func=run_stats)

    seed = isub.add_parser("seed", help="fingerprint the curated reference models (store/data/references.json)",
                           description="Fingerprint the curated base models hubwatch compares uploads with "
                           "(store/data/references.json) and put them on the watch list. A reference that "
                           "cannot be read is reported and skipped. Creates the database when it does not exist.")
    seed.add_argument("--limit", type=int, default=None, metavar="N", help="only the first N references")
    seed.add_argument("--family", default=None, help="only references of this family (e.g. llama-3)")
    seed.set_defaults(func=run_seed)

    compact = isub.add_parser(
        "compact", help="shrink stored fingerprints that matched nothing to the compact tier",
        description="Stores written before schema 3 keep every model in full (~0.8 MB each). This keeps full "
        "detail for references and models in a match, and shrinks the rest to their compact form "
        "(no sampled values; re-read from the Hub when a comparison needs them).")
    compact.add_argument("--limit", type=int, default=100_000, metavar="N", help="at most N fingerprints (default 100,000)")
    compact.set_defaults(func=run_compact)


def run_add(args, app) -> int:
    first_error: Exception | None = None
    with app.open_store() as store:
        for spec in args.models:
            try:
                got = app.fingerprint_spec(spec)
                fid, created = index_one(store, got, tier=TIER_REFERENCE)
            except USER_ERRORS as exc:
                print(f"hubwatch: error: {spec}: {_without_prefix(str(exc), spec)}", file=sys.stderr)
                first_error = first_error or exc
                continue
            state = "added" if created else "already indexed"
            print(f"{state}: {got.repo_id}@{got.sha[:12]} (fingerprint {fid}, {got.fp.bytes_read:,} bytes read)")
    return first_error.exit_code if first_error else 0


def run_stats(args, app) -> int:
    with app.open_store(create=False) as store:
        s = store.stats()
        newest = FeedCursor.load(store.get_cursor(NEWEST_FEED))
    s["newest_feed"] = {"floor": newest.floor, "backlog": newest.resume is not None, "lag_s": newest.lag_s()}
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
    lag = s["newest_feed"]["lag_s"]
    print(f"newest feed:   listed and processed down to {newest.floor or 'never polled'}"
          + (f"; {lag / 60:,.0f} min of uploads still to walk back through" if newest.resume else "; caught up"))
    families = ", ".join(f"{k} {v:,}" for k, v in list(s["shape_families"].items())[:10])
    print(f"shape families: {families or 'none'}")
    return 0


def run_compact(args, app) -> int:
    from store.references import load_references

    with app.open_store(create=False) as store:
        keep = {r.repo_id for r in load_references()} | {e.value for e in store.watch_list("reference")}
        before = store.stats()["blob_bytes"]
        done = store.compact_unmatched(keep, limit=max(args.limit, 0))
        after = store.stats()["blob_bytes"]
    print(f"compacted {done:,} fingerprints: blobs {before / 1e6:,.1f} MB -> {after / 1e6:,.1f} MB "
          "(the file shrinks after `sqlite3 FILE VACUUM`)")
    return 0


def run_seed(args, app) -> int:
    from store.references import load_references

    refs = load_references()
    if args.family:
        refs = [r for r in refs if r.family == args.family]
    if args.limit is not None:
        refs = refs[: max(args.limit, 0)]
    ok = failed = 0
    with app.open_store() as store, progress("index seed", len(refs)) as bar:
        for i, ref in enumerate(refs, 1):
            try:
                got = app.fingerprint_spec(ref.repo_id)
                created = index_one(store, got, tier=TIER_REFERENCE)[1]
                store.add_watch("reference", ref.repo_id, added_by="seed", note=ref.family)
            except USER_ERRORS as exc:  # one unreachable or gated repo must not stop the seed
                failed += 1
                bar.write(f"[{i}/{len(refs)}] {ref.repo_id} ... failed: {_without_prefix(str(exc), ref.repo_id)}")
            else:
                ok += 1
                bar.write(f"[{i}/{len(refs)}] {ref.repo_id} ... {'ok' if created else 'unchanged'} "
                          f"({got.fp.bytes_read / 1e6:.1f} MB)")
            bar.advance(note=ref.repo_id)
    print(f"seeded {ok} of {len(refs)} references ({failed} failed)")
    return 0


def _without_prefix(message: str, repo_id: str) -> str:
    """Hub errors start with the repo id; the line that reports them has named it already."""
    return message.removeprefix(f"{repo_id}: ")
