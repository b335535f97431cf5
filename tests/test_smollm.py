"""The SmolLM2 fixtures are what they claim: a faithful conversion of the real GGUF, and derived models
that compute (nearly) the same function or, for the controls, share nothing but value statistics."""

from __future__ import annotations

import json

import pytest

from fingerprints.deferred_import import DeferredModule

# Both load torch, with the first test that uses them, not when `pytest -m "not slow"` collects this module.
torch = DeferredModule("torch")
smollm = DeferredModule("smollm")

PROMPT = ["The", "Ġcapital", "Ġof", "ĠFrance", "Ġis"]


def load(folder):
    from safetensors.torch import load_file  # loads torch

    return load_file(str(folder / "model.safetensors")), json.loads((folder / "config.json").read_text())


@pytest.fixture(scope="module")
def prompt_ids(smollm2):
    vocab = json.loads((smollm2["smollm2"] / "tokenizer.json").read_text())["model"]["vocab"]
    return [vocab[t] for t in PROMPT], {i: t for t, i in vocab.items()}


@pytest.fixture(scope="module")
def base_logits(smollm2, prompt_ids):
    return smollm.llama_forward(*load(smollm2["smollm2"]), prompt_ids[0])[-1]


@pytest.mark.slow  # a 30-layer forward pass: ~15 s on a shared core
def test_conversion_is_the_real_model(smollm2, base_logits, prompt_ids):
    """Q/K rows un-permuted right (else attention is scrambled): the model completes a fact."""
    tensors, config = load(smollm2["smollm2"])
    assert (config["hidden_size"], config["num_hidden_layers"], config["num_attention_heads"], config["num_key_value_heads"]) == (576, 30, 9, 3)
    assert tensors[smollm.EMBED].shape == (49152, 576) and len(tensors) == 272
    assert tensors[smollm.EMBED].dtype == torch.bfloat16
    assert prompt_ids[1][int(base_logits.argmax())] == "ĠParis"
    tokenizer = json.loads((smollm2["smollm2"] / "tokenizer.json").read_text())
    assert len(tokenizer["model"]["merges"]) == 48900 and tokenizer["added_tokens"][0]["content"] == "<|endoftext|>"


@pytest.mark.slow  # a 30-layer forward pass: ~15 s on a shared core
def test_rotation_preserves_the_function(smollm2, base_logits, prompt_ids):
    tensors, config = load(smollm2["smollm2-rotated"])
    logits = smollm.llama_forward(tensors, config, prompt_ids[0])[-1]
    # bf16 storage of rotated matrices is the only difference.
    assert torch.corrcoef(torch.stack([logits, base_logits]))[0, 1] > 0.9999
    assert int(logits.argmax()) == int(base_logits.argmax())
    assert torch.equal(tensors[smollm.FINAL_NORM].float(), torch.ones(576)) and not config["tie_word_embeddings"]
    base = load(smollm2["smollm2"])[0]
    # Nothing is merely permuted: a rotated embedding column matches no source column.
    corr = torch.corrcoef(torch.cat([base[smollm.EMBED][:2000].float().T, tensors[smollm.EMBED][:2000].float().T]))[:576, 576:]
    assert float(corr.abs().max(dim=1).values.median()) < 0.3


@pytest.mark.slow  # a 30-layer forward pass: ~15 s on a shared core
def test_slicing_keeps_most_of_the_function(smollm2, base_logits, prompt_ids):
    tensors, config = load(smollm2["smollm2-sliced"])
    assert config["hidden_size"] == smollm.SLICED_HIDDEN == tensors[smollm.EMBED].shape[1]
    assert tensors["model.layers.0.self_attn.q_proj.weight"].shape == (576, smollm.SLICED_HIDDEN)
    logits = smollm.llama_forward(tensors, config, prompt_ids[0])[-1]
    # Measured 0.84 (SliceGPT without its recovery fine-tune); deleting 72 random directions gives ~0.3.
    assert torch.corrcoef(torch.stack([logits, base_logits]))[0, 1] > 0.75


@pytest.mark.slow  # torch and two 135M checkpoints loaded (~4 s); the fixture builder's own check
def test_moe_experts_are_noised_copies_of_the_ffn(smollm2):
    base, _ = load(smollm2["smollm2"])
    moe, config = load(smollm2["smollm2-moe"])
    assert config["num_local_experts"] == smollm.MOE_EXPERTS and not any(".mlp." in k for k in moe)
    for i in (0, 29):
        dense = base[f"model.layers.{i}.mlp.up_proj.weight"].float()
        for expert, ratio in enumerate(smollm.MOE_EXPERT_NOISE):
            w3 = moe[f"model.layers.{i}.block_sparse_moe.experts.{expert}.w3.weight"].float()
            assert float((w3 - dense).std() / dense.std()) == pytest.approx(ratio, rel=0.05)
        assert moe[f"model.layers.{i}.block_sparse_moe.gate.weight"].shape == (smollm.MOE_EXPERTS, 576)


@pytest.mark.slow  # torch and two 135M checkpoints loaded; the fixture builder's own check
def test_shuffled_control_keeps_each_tensors_values(smollm2):
    base, _ = load(smollm2["smollm2"])
    shuffled, _ = load(smollm2["smollm2-shuffled"])
    name = "model.layers.7.self_attn.k_proj.weight"
    assert torch.equal(base[name].flatten().sort().values, shuffled[name].flatten().sort().values)
    assert not torch.equal(base[name], shuffled[name])
