"""The command line as a newcomer meets it: help for every command, quiet broken pipes, no
database conjured out of a mistyped path."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bot.cli import EXIT_BROKEN_PIPE, build_parser, main

ROOT = Path(__file__).resolve().parent.parent


def _subparsers(parser: argparse.ArgumentParser, prefix: str = "hubwatch"):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help for a in action._choices_actions}
            for name, sub in action.choices.items():
                yield f"{prefix} {name}", helps.get(name), sub
                yield from _subparsers(sub, f"{prefix} {name}")


def test_every_subcommand_has_a_summary_and_a_description():
    found = list(_subparsers(build_parser()))
    assert {"hubwatch demo", "hubwatch index add", "hubwatch index seed", "hubwatch index stats"} <= {n for n, _, _ in found}
    for name, summary, parser in found:
        assert summary, f"{name} has no one-line help in its parent's --help"
        assert parser.description and len(parser.description) > len(summary), f"{name} --help has no description"


@pytest.mark.parametrize("argv", [["nearest", "org/model"], ["index", "stats"]])
def test_a_missing_database_is_an_error_not_a_new_file(capsys, tmp_path, argv):
    db = tmp_path / "typo.db"
    assert main(argv + ["--db", str(db)]) == 74
    err = capsys.readouterr().err
    assert err.strip() == (f"hubwatch: error: no database at {db} (create one with `hubwatch index seed`, "
                           "`hubwatch index add` or `hubwatch watch`)")
    assert not db.exists()


def test_index_add_creates_the_database(capsys, tmp_path, minilm_dir):
    db = tmp_path / "new.db"
    assert main(["index", "add", str(minilm_dir), "--db", str(db)]) == 0
    assert db.exists() and "added:" in capsys.readouterr().out
    assert main(["index", "stats", "--db", str(db)]) == 0


@pytest.mark.slow
def test_a_closed_pipe_ends_quietly(minilm_dir):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "bot.cli", "fingerprint", "--json", str(minilm_dir)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=ROOT)
    proc.stdout.close()  # the reader is gone before the first byte is written, as with `| head -0`
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == EXIT_BROKEN_PIPE
    assert err == ""
