"""hubwatch index add|stats|seed|compact: build and inspect the reference index."""

from __future__ import annotations

import json
import os
import sys
import threading

from store.rows import TIER_REFERENCE

from bot.errors import USER_ERRORS
from bot.hub.errors import HubUnavailableError
from bot.ops.progress import progress
from bot.watch.backlog import NEWEST_FEED, FeedCursor


class Indexer:
    """Store fingerprinted specs through the watcher's matching, then deliver the alerts they
    raised (console, or the configured webhook), as `hubwatch watch` would."""

    def __init__(self, app, store):
        self.app, self.store = app, store
        self.matcher = app.matcher()
        self.alerts = 0

    def add(self, spec: str):
        from bot.watch.matching import index_spec

        indexed = index_spec(self.store, self.app.fingerprint_spec(spec), self.matcher, tier=TIER_REFERENCE)
        self.alerts += len(indexed.alerts)
        return indexed

    def deliver(self) -> None:
        if not self.alerts:
            return
        from datetime import timedelta

        from bot.alerts.delivery import deliver_pending
        from bot.watch.matching import plot_of

        report = deliver_pending(self.store, self.app.sender, load_plot=plot_of,
                                 lease=timedelta(seconds=self.app.settings.alerts.delivery_lease_s))
        print(f"{self.alerts} alert(s) raised, {report.delivered} delivered")


def failed_line(failed: list[tuple[str, Exception]], total: int, what: str, hub_host: str) -> str:
    """The last line of a run with failures: how many, and the first one: what, where, the error."""
    spec, exc = failed[0]
    where = "local folder" if os.path.exists(spec) else f"on {hub_host}"
    error = _without_prefix(str(exc), spec)
    return f"hubwatch: error: {len(failed)} of {total} {what} failed; first: {spec} ({where}): {error}"


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
        "(no sampled values; re-read from the Hub when a comparison needs them). Fingerprints kept in full "
        "that still hold the sketch of stores before schema 6 are sketched again, in the kind that finds "
        "copies under another vocabulary.")
    compact.add_argument("--limit", type=int, default=100_000, metavar="N", help="at most N fingerprints (default 100,000)")
    compact.set_defaults(func=run_compact)


def run_add(args, app) -> int:
    failed: list[tuple[str, Exception]] = []
    with app.open_store() as store:
        indexer = Indexer(app, store)
        for spec in args.models:
            try:
                indexed = indexer.add(spec)
            except USER_ERRORS as exc:
                print(f"hubwatch: error: {spec}: {_without_prefix(str(exc), spec)}", file=sys.stderr)
                failed.append((spec, exc))
                continue
            got, ing = indexed.spec, indexed.ingested
            state = "added" if ing.created else "already indexed"
            print(f"{state}: {got.repo_id}@{got.sha[:12]} (fingerprint {ing.fingerprint_id}, "
                  f"{got.fp.bytes_read:,} bytes read)")
        indexer.deliver()
    if failed:
        print(failed_line(failed, len(args.models), "models", app.settings.hub.host), file=sys.stderr)
        return getattr(failed[0][1], "exit_code", 1)
    return 0


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
    print(f"vocabularies:  {s['vocabularies']:,} ({s['vocabulary_token_bytes']:,} bytes of tokens; "
          f"{s['vocabularies_over_quota']:,} kept without tokens, over the quota)   "
          f"index keys: {s['index_keys']:,}   LSH bands: {s['lsh_bands']:,}")
    print(f"matches:       {s['matches']:,}   watch list: {s['watch_list']:,}")
    tiers = ", ".join(f"{k} {v:,}" for k, v in s["tiers"].items())
    per_model = s["bytes"] / max(1, s["fingerprints"])
    print(f"tiers:         {tiers or 'none'}   blobs {s['blob_bytes'] / 1e6:,.1f} MB   {per_model / 1e3:,.1f} KB per model")
    print("alerts:        " + ", ".join(f"{k} {v:,}" for k, v in s["alerts"].items()))
    lag = s["newest_feed"]["lag_s"]
    print(f"newest feed:   listed and processed down to {newest.floor or 'never polled'}"
          + (f"; {lag / 60:,.0f} min of uploads still to walk back through" if newest.resume else "; caught up"))
    print("revisions:     " + ", ".join(f"{k} {v:,}" for k, v in s["revisions"].items()))
    for reason, n in s["revisions_not_done"].items():
        print(f"  {reason}: {n:,}")
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
        sketched = store.sketch_full_rows_again(limit=max(args.limit, 0))
    print(f"compacted {done:,} fingerprints: blobs {before / 1e6:,.1f} MB -> {after / 1e6:,.1f} MB "
          "(the file shrinks after `sqlite3 FILE VACUUM`)")
    if sketched:
        print(f"sketched {sketched:,} fingerprints kept in full again, in the current sketch kind")
    return 0


def run_seed(args, app) -> int:
    from store.references import load_references

    refs = load_references()
    if args.family:
        refs = [r for r in refs if r.family == args.family]
    if args.limit is not None:
        refs = refs[: max(args.limit, 0)]
    with app.open_store() as store:
        indexer = Indexer(app, store)
        failed, untried = seed(indexer, refs)
        indexer.deliver()
    print(f"seeded {len(refs) - len(failed) - untried} of {len(refs)} references ({len(failed)} failed"
          + (f", {untried} not tried: the Hub is unreachable" if untried else "") + ")")
    if failed:
        print(failed_line(failed, len(refs), "references", app.settings.hub.host), file=sys.stderr)
        return getattr(failed[0][1], "exit_code", 1)
    return 0


def seed(indexer: Indexer, refs, stop: threading.Event | None = None) -> tuple[list[tuple[str, Exception]], int]:
    """Fingerprint ``refs`` with one progress line each on stderr: (the ones that failed, how many
    were not tried). An unreachable Hub ends the seed: every other reference would wait out the
    same retries."""
    failed: list[tuple[str, Exception]] = []
    with progress("index seed", len(refs)) as bar:
        for i, ref in enumerate(refs, 1):
            if stop is not None and stop.is_set():
                return failed, len(refs) - i + 1
            try:
                indexed = indexer.add(ref.repo_id)
                indexer.store.add_watch("reference", ref.repo_id, added_by="seed", note=ref.family)
            except USER_ERRORS as exc:  # one missing or gated repo must not stop the seed
                failed.append((ref.repo_id, exc))
                bar.write(f"[{i}/{len(refs)}] {ref.repo_id} ... failed: {_without_prefix(str(exc), ref.repo_id)}")
                if isinstance(exc, HubUnavailableError):
                    return failed, len(refs) - i
            else:
                bar.write(f"[{i}/{len(refs)}] {ref.repo_id} ... {'ok' if indexed.ingested.created else 'unchanged'} "
                          f"({indexed.spec.fp.bytes_read / 1e6:.1f} MB)")
            bar.advance(note=ref.repo_id)
    return failed, 0


def _without_prefix(message: str, repo_id: str) -> str:
    """Hub errors start with the repo id; the line that reports them has named it already."""
    return message.removeprefix(f"{repo_id}: ")

