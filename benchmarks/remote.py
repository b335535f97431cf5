"""Remote fingerprinting cost: bytes, requests and wall time over HTTP against the fake Hub.

For MiniLM (real weights), a Llama-2-7B-shaped sharded checkpoint, a Grok-1-shaped 314B
checkpoint and a 7B Q4_K GGUF (sparse files: real headers over holes), at 0 ms and 50 ms injected
latency per request, next to the full download size and to what huggingface_hub's
get_safetensors_metadata reads for the headers alone.

The fake Hub runs in a child process, as the real one runs on other machines: in this process its
request handling would hold the GIL and bill the client for the server's CPU. Each model is
fingerprinted once before timing (imports, first-call costs, as in a long-running watcher), then
timed with a fresh client: new connections, no cached CDN locations. "tokenizer seen" is what the
same repo costs when its tokenizer files were fingerprinted before (fingerprints/tokenizer_cache.py),
the common case of a fine-tune shipping its base model's tokenizer.

    python benchmarks/remote.py
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import bigmodels  # noqa: E402
from fake_world import FakeWorld  # noqa: E402
from bot.hub import HubClient  # noqa: E402
from fingerprints.engine import fingerprint_model  # noqa: E402
from fingerprints.model import Fingerprint  # noqa: E402
from fingerprints.tokenizer_cache import TokenizerCache  # noqa: E402
from variants import minilm_dir  # noqa: E402

MINILM_FILES = ("config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                "vocab.txt", "model.safetensors")
LATENCIES_MS = (0, 50)


def build_repos(root: Path) -> dict[str, tuple[str, int]]:
    repos = {}
    minilm = root / "sentence-transformers" / "all-MiniLM-L6-v2"
    minilm.mkdir(parents=True)
    for name in MINILM_FILES:
        os.symlink(minilm_dir() / name, minilm / name)
    repos["MiniLM (90 MB)"] = ("sentence-transformers/all-MiniLM-L6-v2",
                               sum((minilm / n).stat().st_size for n in MINILM_FILES))
    for label, repo, build in (
        ("Llama-2-7B, 2 bf16 shards", "meta-llama/Llama-2-7b-hf", bigmodels.build_llama7b_sharded),
        ("Grok-1 314B, 16 bf16 shards", "xai-org/grok-1", bigmodels.build_grok1_314b),
        ("Llama-2-7B Q4_K_M GGUF", "TheBloke/Llama-2-7B-GGUF", bigmodels.build_llama7b_q4k_gguf),
    ):
        _, size = build(root / repo)
        repos[label] = (repo, size)
    return repos


def safetensors_metadata_bytes(hub: FakeWorld, repo: str) -> str:
    from huggingface_hub import HfApi
    from huggingface_hub.errors import NotASafetensorsRepoError

    hub.traffic()
    try:
        HfApi(endpoint=hub.endpoint, token=False).get_safetensors_metadata(repo)
    except NotASafetensorsRepoError:
        return "n/a (GGUF)"
    served = hub.traffic()
    return f"{served['bytes']:,} B / {served['requests']} req"


def fingerprint_cold(hub: FakeWorld, repo: str, latency_ms: float,
                     tokenizers: TokenizerCache | None = None) -> tuple[Fingerprint, float, int, int]:
    """Fingerprint ``repo`` with a fresh client (new connections, no cached CDN URLs): the
    fingerprint, seconds, bytes served and requests."""
    hub.hub_faults(latency_ms=latency_ms)
    with HubClient(hub.endpoint, token="") as client:
        hub.traffic()
        start = time.perf_counter()
        fp = fingerprint_model(client.reader(repo), tokenizers=tokenizers)
        elapsed = time.perf_counter() - start
        served = hub.traffic()
    hub.hub_faults(latency_ms=0)
    return fp, elapsed, served["bytes"], served["requests"]


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        repos = build_repos(Path(tmp))
        with FakeWorld(tmp) as hub:
            header = (f"{'model':<30} {'full download':>15} {'read':>11} {'tensor data':>12} {'requests':>9} "
                      f"{'0 ms':>7} {'50 ms':>7} {'tokenizer seen':>15}  get_safetensors_metadata")
            print(header)
            print("-" * len(header))
            for label, (repo, full_size) in repos.items():
                seen = TokenizerCache()
                fingerprint_cold(hub, repo, 0, seen)  # imports and first-call costs, not timed
                _, fast, _, _ = fingerprint_cold(hub, repo, 0)
                fp, slow, served, requests = fingerprint_cold(hub, repo, 50)
                # A fine-tune shipping its base's tokenizer files: the Hub names them as seen before.
                _, _, served_seen, _ = fingerprint_cold(hub, repo, 0, seen)
                print(f"{label:<30} {full_size / 1e9:>12.2f} GB {served / 2**20:>8.2f} MiB "
                      f"{fp.weights.tensor_bytes_read / 2**20:>8.2f} MiB {requests:>9} "
                      f"{fast:>6.2f}s {slow:>6.2f}s {served_seen / 2**20:>11.2f} MiB  "
                      f"{safetensors_metadata_bytes(hub, repo)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
