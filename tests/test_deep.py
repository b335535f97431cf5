"""hubwatch compare --deep: more reads, aligned with torch, a p-value against independence.

Real weights throughout: SmolLM2-135M (Llama) rotated, sliced, upcycled into experts; MiniLM
(BERT, no gated FFN) with permuted neurons, fine-tuned, and independent controls."""

from __future__ import annotations

import json
import math
import os

import pytest

from bot.cli import main
from fingerprints.compare import compare_fingerprints
from fingerprints.deep import ATTENTION_SHARE, DEEP_P_MAX, apply_deep, deep_compare, fisher_log10, poisson_log10_sf
from fingerprints.engine import fingerprint_model
from fingerprints.reader import LocalFolderReader

# A fifth of the default: 4 layers of SmolLM2's FFN rows still fit, and the tests stay quick.
SMALL_BUDGET = 12 * 1024 * 1024


def opened(folder):
    reader = LocalFolderReader(folder)
    return reader, fingerprint_model(reader)


@pytest.fixture(scope="module")
def smollm_base(smollm2):
    return opened(smollm2["smollm2"])


def deep(base, folder, budget=SMALL_BUDGET):
    reader_b, fb = opened(folder)
    return deep_compare(*base, reader_b, fb, budget=budget, device="cpu"), fb


@pytest.mark.slow  # two real models fingerprinted and read in depth: 10-60 s on a shared core
def test_rotation_is_traced_with_a_p_value_and_the_bytes_stated(smollm_base, smollm2):
    result, _ = deep(smollm_base, smollm2["smollm2-rotated"])
    assert result.dependent and result.log10_p < -100
    assert result.kinds == ["rotate"]
    assert result.alignment["held_out_cosine"] > 0.99 and result.alignment["largest_entry_median"] < 0.5
    assert all(t.agree > 0.9 * t.neurons for t in result.tests) and len(result.tests) == 4
    assert 0 < result.bytes_read["tensor_a"] <= SMALL_BUDGET and 0 < result.bytes_read["tensor_b"] <= SMALL_BUDGET
    assert result.evidence[0].startswith("deep read: A ") and "MiB" in result.evidence[0]
    assert result.evidence[-1].startswith("deep verdict: dependent")


@pytest.mark.slow  # two real models fingerprinted and read in depth: 10-60 s on a shared core
def test_rotated_and_sliced_model_is_traced_not_crashed(smollm_base, smollm2):
    result, _ = deep(smollm_base, smollm2["smollm2-sliced"])
    assert result.dependent and result.kinds == ["rotate", "prune"]
    assert result.alignment["width"] == [576, 504]


@pytest.mark.slow  # two real models fingerprinted and read in depth: 10-60 s on a shared core
def test_upcycled_experts_map_to_the_dense_ffn(smollm_base, smollm2):
    result, _ = deep(smollm_base, smollm2["smollm2-moe"])
    assert result.dependent and "moe-upcycle" in result.kinds
    expert_tests = [t for t in result.tests if t.expert_b is not None]
    assert {t.expert_b for t in expert_tests} == {0, 1, 2, 3}
    assert all(t.layer_a == t.layer_b and t.log10_p < -100 for t in expert_tests)
    assert len(result.expert_map) == len({t.layer_b for t in expert_tests})
    assert "B0.e3 ← A0" in result.expert_map[0]


@pytest.mark.slow  # two real models fingerprinted and read in depth: 10-60 s on a shared core
@pytest.mark.parametrize("name", ["smollm2-fresh-init", "smollm2-shuffled"])
def test_independent_controls_are_not_rejected(smollm_base, smollm2, name):
    result, _ = deep(smollm_base, smollm2[name])
    assert not result.dependent and result.log10_p > math.log10(DEEP_P_MAX)
    assert result.kinds == [] and result.evidence[-1].startswith("deep verdict: independence not rejected")


@pytest.mark.slow  # two real models fingerprinted and read in depth: 10-60 s on a shared core
def test_the_real_gguf_is_traced_to_its_conversion(smollm_base, smollm2_gguf):
    result, _ = deep(smollm_base, smollm2_gguf.parent)
    assert result.dependent and result.alignment["largest_entry_median"] > 0.99  # no rotation: Q/K rows un-permuted


@pytest.mark.slow  # two real models fingerprinted and read in depth: 10-60 s on a shared core
@pytest.mark.parametrize("name", ["permute-neurons", "permute-hidden", "permute-heads", "rescale-heads", "finetune-heavy",
                                  "noise-1.0", "prune-width"])
def test_minilm_derivatives_are_dependent(variants, minilm_dir, name):
    result, _ = deep(opened(minilm_dir), variants[name])
    assert result.dependent, result.evidence
    assert fisher_log10(result.attention.log10_ps) < math.log10(DEEP_P_MAX)  # the attention test alone too


@pytest.mark.slow  # two real models fingerprinted and read in depth: 10-60 s on a shared core
@pytest.mark.parametrize("name", ["independent-trained", "fresh-init-seed1"])
def test_minilm_independent_models_are_not_rejected(variants, minilm_dir, name):
    """independent-trained was trained with the same recipe as finetune-heavy: the chance level holds."""
    result, _ = deep(opened(minilm_dir), variants[name])
    assert not result.dependent, result.evidence
    assert result.attention.tests and fisher_log10(result.attention.log10_ps) > -1


@pytest.mark.slow  # two real models fingerprinted and read in depth: 10-60 s on a shared core
def test_deep_upgrades_an_undecided_standard_verdict(smollm_base, smollm2):
    reader_b, fb = opened(smollm2["smollm2-rotated"])
    standard = compare_fingerprints(smollm_base[1], fb)
    combined = apply_deep(standard, deep_compare(*smollm_base, reader_b, fb, budget=SMALL_BUDGET))
    assert combined.verdict == "weights-derived" and "rotate" in combined.kinds and "tokenizer" not in combined.kinds
    assert combined.weights["deep"]["dependent"] and any(e.startswith("deep verdict") for e in combined.evidence)


@pytest.fixture(scope="module")
def rotated_heads(tmp_path_factory, smollm2):
    import smollm

    return smollm.build_rotated_heads(smollm2["smollm2-rotated"], tmp_path_factory.mktemp("rotated_heads") / "model")


@pytest.mark.slow  # builds a 135M model, runs it twice, and reads both in depth: 20-90 s on a shared core
def test_attention_test_traces_a_rotated_model_with_permuted_and_rescaled_heads(smollm_base, smollm2, rotated_heads):
    import smollm
    import torch
    from safetensors.torch import load_file

    config = json.loads((smollm2["smollm2"] / "config.json").read_text())
    ids = smollm.calibration_ids(smollm2["smollm2"])[:12]
    logits = [smollm.llama_forward(load_file(str(folder / "model.safetensors")), config, ids)
              for folder in (smollm2["smollm2"], rotated_heads)]
    assert torch.allclose(logits[0], logits[1], atol=0.05 * float(logits[0].abs().max()))  # the same function

    result, _ = deep(smollm_base, rotated_heads)
    attention = result.attention
    assert len(attention.tests) >= 2 and all(t.qk_cosine > 0.99 and t.ov_cosine > 0.99 for t in attention.tests)
    assert fisher_log10(attention.log10_ps) < math.log10(DEEP_P_MAX)  # the attention test alone rejects independence
    assert result.dependent
    line = next(e for e in result.evidence if e.startswith("deep attention tests"))
    assert "Q/K 1.000" in line and "CKA Q" in line
    assert any(e.startswith("deep attention read: whole Q, K, V, O") and "MiB" in e for e in result.evidence)


@pytest.mark.slow  # two real models fingerprinted and read in depth: 10-60 s on a shared core
def test_attention_test_does_not_flag_an_independent_model(smollm_base, smollm2):
    result, _ = deep(smollm_base, smollm2["smollm2-fresh-init"])
    assert result.attention.tests and all(abs(t.qk_cosine) < 0.02 and abs(t.ov_cosine) < 0.02 for t in result.attention.tests)
    assert fisher_log10(result.attention.log10_ps) > -1 and not result.dependent


class CountingReader(LocalFolderReader):
    """Counts the bytes of every range read, per file, as the deep comparison asks for them."""

    def __init__(self, folder):
        super().__init__(folder)
        self.served = 0

    def read_ranges(self, requests):
        out = super().read_ranges(requests)
        self.served += sum(len(chunk) for chunk in out)
        return out


@pytest.mark.slow  # two real models fingerprinted and read in depth: 10-60 s on a shared core
@pytest.mark.parametrize("budget", [2 * 1024 * 1024, SMALL_BUDGET])
def test_the_budget_bounds_the_bytes_read(smollm2, budget):
    readers = [CountingReader(smollm2[name]) for name in ("smollm2", "smollm2-rotated")]
    fingerprints = [fingerprint_model(r) for r in readers]
    served_before = [r.served for r in readers]
    result = deep_compare(readers[0], fingerprints[0], readers[1], fingerprints[1], budget=budget, device="cpu")
    for side, reader, before in zip("ab", readers, served_before):
        served = reader.served - before
        assert served == result.bytes_read[side]  # the stated bytes are the bytes the reader served
        assert served - result.bytes_read[f"headers_{side}"] <= budget
        assert result.attention.bytes_read[side] <= budget * ATTENTION_SHARE
    # 2 MiB cannot hold one layer's Q/K/V/O (1.7 MiB) within its share: said, not read.
    if budget < SMALL_BUDGET:
        assert result.attention.tests == [] and result.attention.bytes_read == {"a": 0, "b": 0}
        assert any(e.startswith("deep attention test: not run (one layer's Q/K/V/O is 1.7 MiB") for e in result.evidence)
    else:
        # Two layers' whole bf16 Q and O (576 x 576), K and V (192 x 576) and the norm gain (576).
        assert len(result.attention.layers) == 2
        assert result.attention.bytes_read == {side: 2 * 2 * (2 * 576 * 576 + 2 * 192 * 576 + 576) for side in "ab"}


@pytest.mark.slow  # MiniLM written as a GGUF and both read in depth: 10-40 s on a shared core
def test_a_permuted_gguf_under_llamacpp_token_spelling_is_aligned_and_traced(tmp_path, minilm_dir):
    """llama.cpp spells BERT's "##" continuations as plain pieces and word starts with "▁": rows pair on canonical spelling."""
    import variants
    from safetensors.torch import load_file

    vocab = (minilm_dir / "vocab.txt").read_text(encoding="utf-8").splitlines()
    variants.write_bert_gguf(variants.permute_everything(load_file(str(minilm_dir / "model.safetensors"))), vocab,
                             tmp_path / "minilm-F16.gguf", "F16")
    result, fb = deep(opened(minilm_dir), tmp_path)
    assert fb.weights.format == "gguf" and result.shared_tokens > 2000
    assert result.alignment["held_out_cosine"] > 0.99 and result.alignment["largest_entry_median"] > 0.99  # a permutation
    assert result.attention.tests and all(t.qk_cosine > 0.99 for t in result.attention.tests) and result.dependent


def test_p_value_arithmetic_stays_finite_far_in_the_tail():
    assert poisson_log10_sf(0, 1.0) == 0.0
    assert poisson_log10_sf(3, 1.0) == pytest.approx(math.log10(1 - sum(math.exp(-1) / math.factorial(k) for k in range(3))))
    assert -5000 < poisson_log10_sf(1536, 1.0) < -4000
    assert fisher_log10([-1, -2, -0.5]) == pytest.approx(math.log10(0.013133942751234516), rel=1e-6)
    assert fisher_log10([-4230.0] * 16) < -60000


@pytest.mark.slow  # two real models fingerprinted and read in depth: 10-60 s on a shared core
def test_cli_deep_flag(smollm2, capsys):
    code = main(["compare", str(smollm2["smollm2"]), str(smollm2["smollm2-rotated"]), "--deep", "--budget", str(SMALL_BUDGET), "--json"])
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    assert out["verdict"] == "weights-derived" and out["weights"]["deep"]["bytes_read"]["tensor_b"] <= SMALL_BUDGET


def test_cli_budget_needs_deep(tmp_path, capsys):
    # Refused before either model is read: any two folders do.
    assert main(["compare", str(tmp_path / "a"), str(tmp_path / "b"), "--budget", "1000"]) == 2
    assert "add --deep" in capsys.readouterr().err


MOE_GGUF_LAYERS = 4


@pytest.fixture(scope="module")
def moe_gguf(tmp_path_factory, smollm2):
    """smollm2-moe's first layers as llama.cpp stores an MoE: ffn_{gate,up,down}_exps (experts, rows, cols), Q8_0."""
    import numpy as np
    from gguf import GGMLQuantizationType, GGUFWriter
    from gguf.quants import quantize
    from safetensors.torch import load_file as load_torch  # numpy cannot hold the bf16 values

    weights = {k: v.float().numpy() for k, v in load_torch(str(smollm2["smollm2-moe"] / "model.safetensors")).items()}
    vocab = json.loads((smollm2["smollm2"] / "tokenizer.json").read_text())["model"]
    tokens = sorted(vocab["vocab"], key=vocab["vocab"].get)
    path = tmp_path_factory.mktemp("moe_gguf") / "smollm2-moe-Q8_0.gguf"
    w = GGUFWriter(path, "llama")
    w.add_block_count(MOE_GGUF_LAYERS)
    w.add_embedding_length(576)
    w.add_feed_forward_length(1536)
    w.add_head_count(9)
    w.add_head_count_kv(3)
    w.add_expert_count(4)
    w.add_expert_used_count(2)
    w.add_tokenizer_model("gpt2")
    w.add_token_list(tokens)
    w.add_token_merges(vocab["merges"])
    q8 = GGMLQuantizationType.Q8_0
    w.add_tensor("token_embd.weight", quantize(weights["model.embed_tokens.weight"], q8), raw_dtype=q8)
    w.add_tensor("output_norm.weight", weights["model.norm.weight"])
    for i in range(MOE_GGUF_LAYERS):
        p = f"model.layers.{i}."
        w.add_tensor(f"blk.{i}.ffn_norm.weight", weights[p + "post_attention_layernorm.weight"])
        w.add_tensor(f"blk.{i}.ffn_gate_inp.weight", weights[p + "block_sparse_moe.gate.weight"])
        for gguf_name, short in (("ffn_gate_exps", "w1"), ("ffn_up_exps", "w3"), ("ffn_down_exps", "w2")):
            stacked = np.stack([weights[f"{p}block_sparse_moe.experts.{e}.{short}.weight"] for e in range(4)])
            w.add_tensor(f"blk.{i}.{gguf_name}.weight", quantize(stacked, q8), raw_dtype=q8)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path.parent


@pytest.mark.slow
def test_gguf_expert_tensors_map_to_the_dense_ffn(smollm_base, moe_gguf):
    result, fb = deep(smollm_base, moe_gguf)
    assert fb.weights.format == "gguf"
    first = [t for t in result.tests if t.layer_b == 0]
    assert {t.expert_b for t in first} == {0, 1, 2, 3} and all(t.layer_a == 0 and t.log10_p < -100 for t in first)
    # Deeper GGUF layers sit at other relative depths of A: no false map.
    assert all(t.log10_p > -6 for t in result.tests if t.layer_b != 0)
    assert result.dependent and "moe-upcycle" in result.kinds
    assert result.expert_map[0].startswith("B0.e0 ← A0")


def test_uninspectable_weights_leave_the_deep_test_undecided(tmp_path):
    for side in ("a", "b"):
        (tmp_path / side).mkdir()
        (tmp_path / side / "config.json").write_text(json.dumps({"model_type": "llama", "hidden_size": 64}))
        (tmp_path / side / "pytorch_model.bin").write_bytes(b"\x80\x04never unpickled")
    result = deep_compare(*opened(tmp_path / "a"), *opened(tmp_path / "b"), device="cpu")
    assert not result.dependent and result.tests == [] and result.bytes_read["tensor_a"] == 0
    assert result.evidence[-1] == "deep verdict: undecided (nothing comparable was read)"


@pytest.mark.slow
def test_standard_comparison_of_an_moe_says_its_experts_need_the_deep_comparison(smollm_base, smollm2, moe_gguf):
    for folder in (smollm2["smollm2-moe"], moe_gguf):
        c = compare_fingerprints(smollm_base[1], opened(folder)[1])
        line = next(e for e in c.evidence if e.startswith("experts: "))
        assert "B is a mixture of 4 experts per layer, A is dense" in line and "--deep" in line
    assert not any(e.startswith("experts: ") for e in compare_fingerprints(smollm_base[1], smollm_base[1]).evidence)


@pytest.mark.slow  # a real MiniLM pair read over HTTP from the fake Hub
def test_cli_deep_over_the_hub_reads_beyond_the_fingerprints_byte_limit(fake_hub, tmp_path, monkeypatch, capsys):
    """The per-model byte limit caps the fingerprint; --deep's budget comes on top of it."""
    from hubfixtures import COPY, MINILM

    model_bytes = 8 * 1024 * 1024
    config = tmp_path / "settings.toml"
    config.write_text(f'[hub]\nendpoint = "{fake_hub.endpoint}"\n[limits]\nmodel_bytes = {model_bytes}\n'
                      f'[store]\npath = "{tmp_path / "s.db"}"\n')
    config.chmod(0o600)
    for name in [n for n in os.environ if n.startswith(("HUBWATCH_", "HF_"))]:
        monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    code = main(["compare", MINILM, COPY, "--config", str(config), "--deep", "--budget", str(2 * model_bytes), "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    deep_result = json.loads(out)["weights"]["deep"]
    assert deep_result["dependent"] and deep_result["bytes_read"]["b"] > model_bytes
