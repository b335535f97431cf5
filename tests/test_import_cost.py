"""torch, scipy.stats and matplotlib load on first use, not on import.

torch alone is ~4 s of CPU to import: a command that never compares in depth (help, doctor, a
watcher cycle of standard comparisons) must not pay for it, nor must `pytest -m "not slow"` when
collecting its tests (README, "Run the tests")."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
ON_FIRST_USE = ("torch", "scipy.stats", "matplotlib")

IMPORT_EVERY_MODULE = f"""
import importlib, json, pkgutil, sys
for package in ("bot", "fingerprints", "store"):
    for module in pkgutil.walk_packages(importlib.import_module(package).__path__, package + "."):
        if not module.name.endswith(".__main__"):  # runs the CLI
            importlib.import_module(module.name)
print(json.dumps([m for m in {ON_FIRST_USE!r} if m in sys.modules]))
"""

COLLECT_THE_FAST_TESTS = f"""
import json, sys
import pytest
code = pytest.main(["--collect-only", "-q", "-m", "not slow", "-p", "no:cacheprovider", "tests"])
print(json.dumps([code, [m for m in {ON_FIRST_USE!r} if m in sys.modules]]))
"""


def run_python(code: str):
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=240,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.slow  # a fresh interpreter imports the whole application
def test_importing_every_module_of_the_application_loads_none_of_them():
    assert run_python(IMPORT_EVERY_MODULE) == []


@pytest.mark.slow  # a fresh interpreter collects the whole suite
def test_collecting_the_fast_tests_loads_none_of_them():
    assert run_python(COLLECT_THE_FAST_TESTS) == [0, []]
