"""hubwatch backfill: fingerprint the models already on the Hub, on a Dask cluster, into the store."""

from __future__ import annotations

import argparse
import dataclasses
import sys


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def register(sub) -> None:
    p = sub.add_parser(
        "backfill",
        help="fingerprint every model already on the Hub (or a list of repos) on a Dask cluster",
        description="List the Hub's models (or read repo ids from --repos FILE), fingerprint every revision not "
        "stored yet on a Dask cluster (a local one, or --scheduler ADDRESS), and write the fingerprints into the "
        "store; compare them with the store as the watcher does and, once the listing is complete, alert on every "
        "undeclared copy. Resumable: a stopped or killed backfill picks up where it was. Needs the scale extra "
        "(pip install 'hubwatch[scale]').",
    )
    p.add_argument("--repos", metavar="FILE", help="fingerprint the repos listed in FILE (org/name[@revision] per line) "
                   "instead of the Hub's whole listing")
    p.add_argument("--scheduler", metavar="ADDRESS", help="Dask scheduler to run on, e.g. tcp://head:8786 "
                   "(default: backfill.scheduler; empty starts a local cluster)")
    p.add_argument("--workers", type=positive_int, metavar="N", help="worker processes of the local cluster "
                   "(default: backfill.workers)")
    p.add_argument("--limit", type=positive_int, metavar="N", help="fingerprint at most N revisions in this run")
    p.set_defaults(func=run)


def run(args, app) -> int:
    from bot.backfill.driver import run_backfill
    from bot.backfill.sources import HubListing, RepoFile

    overrides = {k: v for k, v in (("scheduler", args.scheduler), ("workers", args.workers)) if v is not None}
    settings = dataclasses.replace(app.settings, backfill=dataclasses.replace(app.settings.backfill, **overrides))
    source = RepoFile(args.repos) if args.repos else HubListing(app.hub)
    with app.open_store() as store:
        summary = run_backfill(app, settings, store, source, limit=args.limit, stream=sys.stderr,
                               total=len(source.items) if args.repos else None)
    state = "complete" if summary.complete else "stopped; run it again to resume"
    print(f"hubwatch: backfill {state}: {summary.line()} ({summary.bytes_read / 1e6:,.1f} MB read)")
    return 0
