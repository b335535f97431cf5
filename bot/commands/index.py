"""hubwatch index add|stats|seed: build and inspect the reference index."""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from fingerprints.errors import HubwatchError
from fingerprints.model import Fingerprint, stable_hash
from fingerprints.reader import RangeReader

from ..sources import open_reader

DB_ENV_VAR = "HUBWATCH_DB"
DEFAULT_DB = "hubwatch.db"
LOCAL_SHA_PREFIX = "local-"


def add_db_option(parser) -> None:
    parser.add_argument("--db", default=os.environ.get(DB_ENV_VAR) or DEFAULT_DB,
                        help=f"SQLite database (default: ${DB_ENV_VAR} or ./{DEFAULT_DB})")


def open_store(args):
    from store import Store

    return Store.open(args.db)


@dataclass
class Fingerprinted:
    repo_id: str  # Hub repo id, or the folder's absolute path
    sha: str
    fp: Fingerprint
    is_local: bool


def content_sha(fp: Fingerprint) -> str:
    """A revision id for a local folder: equal for equal content, so re-adding it is a no-op."""
    d = fp.to_dict(include_arrays=False)
    for volatile in ("source", "bytes_read", "requests"):
        d.pop(volatile, None)
    return LOCAL_SHA_PREFIX + stable_hash(d)


def fingerprint_spec(spec: str) -> Fingerprinted:
    """Fingerprint a folder or an org/name[@revision] repo, and name the revision it was read at."""
    from fingerprints.engine import fingerprint_model

    reader: RangeReader = open_reader(spec)
    fp = fingerprint_model(reader)
    if os.path.isdir(spec):
        return Fingerprinted(str(Path(spec).resolve()), content_sha(fp), fp, True)
    repo_id, _, revision = spec.partition("@")
    # The Hub reader pins one commit for all its reads and exposes it as ``sha``.
    sha = getattr(reader, "sha", None) or revision or content_sha(fp)
    return Fingerprinted(repo_id, sha, fp, False)


def index_one(store, spec: str) -> tuple[Fingerprinted, int, bool]:
    from store.records import ModelRecord

    got = fingerprint_spec(spec)
    fid, created = store.add_fingerprint(got.repo_id, got.sha, got.fp)
    if not got.is_local:
        known = store.get_model(got.repo_id)
        record = known or ModelRecord(repo_id=got.repo_id, author=got.repo_id.split("/")[0] if "/" in got.repo_id else None)
        record.sha = got.sha
        store.upsert_model(record)
    return got, fid, created


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


def run_add(args) -> int:
    first_error: HubwatchError | None = None
    with open_store(args) as store:
        for spec in args.models:
            try:
                got, fid, created = index_one(store, spec)
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
    print("alerts:        " + ", ".join(f"{k} {v:,}" for k, v in s["alerts"].items()))
    families = ", ".join(f"{k} {v:,}" for k, v in list(s["shape_families"].items())[:10])
    print(f"shape families: {families or 'none'}")
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
                got, _, created = index_one(store, ref.repo_id)
                store.add_watch("reference", ref.repo_id, added_by="seed", note=ref.family)
            except HubwatchError as exc:  # one unreachable or gated repo must not stop the seed
                failed += 1
                print(f"failed: {exc}", file=sys.stderr)
                continue
            ok += 1
            print(f"{'ok' if created else 'unchanged'} ({got.fp.bytes_read / 1e6:.1f} MB)", file=sys.stderr)
    print(f"seeded {ok} of {len(refs)} references ({failed} failed)")
    return 0
