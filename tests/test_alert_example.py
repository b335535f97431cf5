"""The README's sample alert is what a real run prints (benchmarks/alert_example.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import alert_example  # noqa: E402


def test_readme_shows_docs_alert_example():
    assert alert_example.README.read_text() == alert_example.readme_with(alert_example.TEXT.read_text())


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_a_real_run_prints_the_documented_alert(tmp_path, variants):
    text, png = alert_example.run_example(tmp_path)
    assert text == alert_example.TEXT.read_text(), "run: python benchmarks/alert_example.py"
    assert png.startswith(b"\x89PNG")
