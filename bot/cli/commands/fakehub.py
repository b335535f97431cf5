"""hubwatch fakehub DIR: serve a folder of repos as a fake Hugging Face Hub on loopback."""

from __future__ import annotations

from bot.fakes.hub import FakeHub, FaultConfig
from bot.fakes.hub.faults import ANONYMOUS_API_QUOTA, ANONYMOUS_RESOLVER_QUOTA, SCOPES
from bot.fakes.hub.server import DEFAULT_PAGE_SIZE


def register(sub) -> None:
    p = sub.add_parser(
        "fakehub",
        help="serve a folder of model repos as a fake Hugging Face Hub",
        description="Serve DIR/<org>/<name>/ folders (plus optional _hub.json metadata) with the Hub's "
        "API, resolve and CDN routes, for tests and demos. Point HF_ENDPOINT at the printed URL.",
    )
    p.add_argument("dir", help="folder holding <org>/<name>/ repo folders")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8080, help="port to listen on; 0 picks a free one (default 8080)")
    p.add_argument("--cdn-host", default="localhost",
                   help="hostname LFS downloads are redirected to; must differ from the Hub's (default localhost)")
    p.add_argument("--latency-ms", type=float, default=0.0, help="delay added to every response")
    p.add_argument("--rate-limit", type=int, default=ANONYMOUS_API_QUOTA,
                   help=f"API requests per 5-minute window and client (default {ANONYMOUS_API_QUOTA}, the anonymous quota)")
    p.add_argument("--resolver-rate-limit", type=int, default=ANONYMOUS_RESOLVER_QUOTA,
                   help=f"resolve requests per 5-minute window and client (default {ANONYMOUS_RESOLVER_QUOTA})")
    p.add_argument("--page-size", type=int, default=DEFAULT_PAGE_SIZE, help="largest listing page")
    p.add_argument("--fail-429", type=int, default=0, metavar="N", help="answer the next N requests with 429")
    p.add_argument("--retry-after", type=int, default=None, metavar="S", help="send Retry-After: S on injected 429s")
    p.add_argument("--fail-5xx", type=int, default=0, metavar="N", help="answer the next N requests with 503")
    p.add_argument("--truncate", type=int, default=0, metavar="N", help="cut the next N bodies in half")
    p.add_argument("--ignore-range", action="store_true", help="answer ranged requests with 200 and the whole file")
    p.add_argument("--fault-scope", choices=SCOPES, default="any", help="which routes injected faults hit")
    p.set_defaults(func=run)


def run(args, app) -> int:
    faults = FaultConfig(latency_ms=args.latency_ms, storm_429=args.fail_429, retry_after_s=args.retry_after,
                         errors_5xx=args.fail_5xx, truncate=args.truncate, ignore_range=args.ignore_range,
                         scope=args.fault_scope)
    hub = FakeHub(args.dir, host=args.host, port=args.port, cdn_host=args.cdn_host, faults=faults,
                  api_quota=args.rate_limit, resolver_quota=args.resolver_rate_limit, page_size=args.page_size)
    repos = hub.repos.repo_ids()
    print(f"fake Hub serving {len(repos)} repos from {args.dir} at {hub.endpoint} "
          f"(CDN http://{args.cdn_host}:{hub.port}); export HF_ENDPOINT={hub.endpoint}", flush=True)
    try:
        hub.serve_forever()
    finally:
        hub.stop()
    return 0
