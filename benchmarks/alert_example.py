"""Regenerate the README's sample alert from a real run: docs/alert-example.txt, docs/alert-example.png
and the block between the README's alert-example markers.

A fake Hub (in this process) serves the real all-MiniLM-L6-v2 and a disguised copy of it (every
tensor and config key renamed, Gaussian noise of 0.05 x each tensor's spread, cast to bf16); one
`hubwatch watch --once` cycle of the trending feed, on an empty store, fingerprints both, and the
console alert it prints is what the README shows. Only the fake Hub's loopback address is replaced
by huggingface.co, the per-run alert id dropped and the plot path made relative.

    python benchmarks/alert_example.py            # rewrite the docs
    python benchmarks/alert_example.py --check    # exit 1 when the docs are out of step
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

TEXT = ROOT / "docs" / "alert-example.txt"
PLOT = ROOT / "docs" / "alert-example.png"
README = ROOT / "README.md"
BEGIN, END = "<!-- alert-example:begin (python benchmarks/alert_example.py) -->", "<!-- alert-example:end -->"
PUBLIC_HUB = "https://huggingface.co"  # real-endpoint-constant: what the README reader would see
REFERENCE = "sentence-transformers/all-MiniLM-L6-v2"
COPY = "someone/MiniLM-pro"


def _publish(root: Path, repo_id: str, source: Path, meta: dict) -> None:
    folder = root / repo_id
    folder.mkdir(parents=True)
    for f in source.iterdir():
        if f.is_file():
            os.symlink(f, folder / f.name)
    (folder / "_hub.json").write_text(json.dumps(meta))


def run_example(work: Path) -> tuple[str, bytes]:
    """One real watch cycle; (the console alert as the README shows it, the plot PNG)."""
    import variants

    from bot.cli import main
    from bot.fakes.hub import FakeHub

    root = work / "hub"
    _publish(root, REFERENCE, variants.minilm_dir(), {"createdAt": "2021-08-30T00:00:00.000Z", "trendingScore": 5})
    built = variants.build_all(variants.default_cache_dir())
    _publish(root, COPY, built["noise-rename-cast"], {"createdAt": "2026-11-23T00:00:00.000Z", "trendingScore": 90,
                                                      "cardData": {"license": "mit"}})
    with FakeHub(root) as hub:
        env = {"HF_ENDPOINT": hub.endpoint, "HUBWATCH_DB": str(work / "hubwatch.db"),
               "HUBWATCH_FEEDS_NEWEST_ENABLED": "false", "HUBWATCH_FEEDS_LAST_MODIFIED_ENABLED": "false",
               "HUBWATCH_FEEDS_SEED_EMPTY_STORE": "false", "HUBWATCH_LOG_LEVEL": "WARNING"}
        saved = {k: os.environ.get(k) for k in env}
        os.environ.update(env)
        out = io.StringIO()
        try:
            with contextlib.redirect_stdout(out):
                code = main(["watch", "--once", "--plots", str(work / "plots")])
        finally:
            for k, v in saved.items():
                os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)
        if code != 0:
            raise SystemExit(f"the watch cycle failed ({code}):\n{out.getvalue()}")
        alert = out.getvalue().split("\n\n")[0]
        alert = alert.replace(hub.endpoint, PUBLIC_HUB)
    lines = [line for line in alert.splitlines() if not line.startswith("  note: alert id ")]
    [plot] = (work / "plots").iterdir()
    lines = [re.sub(r"evidence plot: .*", f"evidence plot: {PLOT.relative_to(ROOT)}", line) for line in lines]
    return "\n".join(lines) + "\n", plot.read_bytes()


def readme_with(text: str) -> str:
    readme = README.read_text()
    head, sep, rest = readme.partition(BEGIN)
    _, sep2, tail = rest.partition(END)
    if not (sep and sep2):
        raise SystemExit("README.md lacks the alert-example markers")
    return f"{head}{BEGIN}\n```\n{text}```\n{END}{tail}"


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="hubwatch-alert-example-") as tmp:
        text, png = run_example(Path(tmp))
    if "--check" in sys.argv[1:]:
        stale = [p.name for p, ok in ((TEXT, TEXT.read_text() == text), (README, README.read_text() == readme_with(text)))
                 if not ok]
        if stale:
            print(f"out of step: {', '.join(stale)} (run python benchmarks/alert_example.py)")
            return 1
        return 0
    TEXT.write_text(text)
    PLOT.write_bytes(png)
    README.write_text(readme_with(text))
    print(text, end="")
    print(f"wrote {TEXT.relative_to(ROOT)}, {PLOT.relative_to(ROOT)} ({len(png):,} bytes) and the README block")
    return 0


if __name__ == "__main__":
    sys.exit(main())
