"""The ``hubwatch`` command line.

Subcommands live in ``bot/cli/commands/<name>.py``; each module's ``register(subparsers)`` adds its
parser and sets ``func(args, app)``, where ``app`` is the composition root (``bot/app.py``) built
from the common options. Every error of ``bot.errors.USER_ERRORS`` becomes one line on stderr and its exit code;
anything else is a bug, reported in one line too unless ``--debug`` asks for the traceback.

The common options (``--config``, ``--db``, ``--debug``) are accepted before or after any
subcommand: every parser in the tree declares them, the subcommands' copies with no default so a
value given before the subcommand is not overwritten.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import pkgutil
import sys


from bot.errors import USER_ERRORS
from bot.app import App
from bot.cli import commands
from bot.ops.logging_setup import configure_logging

EXIT_INTERNAL_ERROR = 70  # EX_SOFTWARE from sysexits.h
EXIT_BROKEN_PIPE = 128 + 13  # what a shell reports for a program killed by SIGPIPE


class HubwatchParser(argparse.ArgumentParser):
    """An ArgumentParser whose every (sub)parser takes the common options."""

    def __init__(self, *args, top: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        unset = {} if top else {"default": argparse.SUPPRESS}
        self.add_argument("--config", metavar="FILE", **({"default": None} | unset),
                          help="TOML settings file (default: $HUBWATCH_CONFIG, else ./hubwatch.toml if present)")
        self.add_argument("--db", metavar="FILE", **({"default": None} | unset),
                          help="SQLite store, in place of store.path ($HUBWATCH_DB, default ./hubwatch.db)")
        self.add_argument("--debug", action="store_true", **({"default": False} | unset),
                          help="show tracebacks and debug logs")


def build_parser() -> argparse.ArgumentParser:
    parser = HubwatchParser(
        prog="hubwatch", top=True,
        description="Watch the Hugging Face Hub for models that are copies of other models.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for mod in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        importlib.import_module(f"{commands.__name__}.{mod.name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    # Defaults until a command loads the settings (watch, bot, doctor reconfigure with their
    # format, level and secrets to redact).
    configure_logging("text", "DEBUG" if args.debug else "INFO")
    logging.getLogger("matplotlib").setLevel(logging.WARNING)
    try:
        with App.from_options(args.config, db_path=args.db, debug=args.debug) as app:
            code = int(args.func(args, app) or 0)
            sys.stdout.flush()  # a closed pipe shows here, inside the handler, not at interpreter exit
            return code
    except BrokenPipeError:
        # The reader went away (`hubwatch ... | head`): stop quietly, as a SIGPIPE'd program would.
        # stdout is pointed at /dev/null so the interpreter's final flush cannot complain again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_BROKEN_PIPE
    except USER_ERRORS as exc:
        print(f"hubwatch: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("hubwatch: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # a bug, not bad input: keep it to one line unless debugging
        if args.debug:
            raise
        print(
            f"hubwatch: internal error: {type(exc).__name__}: {exc} (rerun with --debug for details)",
            file=sys.stderr,
        )
        return EXIT_INTERNAL_ERROR

