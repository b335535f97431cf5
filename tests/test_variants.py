"""The MiniLM variants are what they claim to be: loadable Hub folders, right shapes and configs,
function-preserving permutations, real fine-tuning, deterministic builds, safe caching."""

from __future__ import annotations

import json

import pytest
from safetensors import safe_open

import minibert
import variants as variant_builder
from fingerprints.deferred_import import DeferredModule
from variants import VARIANTS, WEIGHTS_FILE

# torch loads with the first test that uses it, not when `pytest -m "not slow"` collects this module.
torch = DeferredModule("torch")

# The first test that needs the variants builds them when the cache is cold (~2.5 min on one
# free core, several times that on a loaded machine): more than pyproject's 300 s per test.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]

VERDICTS = {"identical", "weights-derived", "tokenizer-copied", "same-architecture", "independent"}
# float32 forward passes of the same function in a different summation order agree to ~1e-6.
FUNCTION_TOLERANCE = 1e-4
BASE_VOCAB, HIDDEN = 30522, 384


@pytest.fixture(scope="module")
def base(minilm_dir):
    return weights(minilm_dir)


def weights(folder):
    from safetensors.torch import load_file  # loads torch

    return load_file(str(folder / WEIGHTS_FILE))


def config(folder):
    return json.loads((folder / "config.json").read_text())


def sample_batch():
    """Two sequences of ordinary word ids, the second padded: exercises the attention mask too."""
    ids = torch.randint(1000, 30000, (2, 24), generator=torch.Generator().manual_seed(5))
    ids[:, 0], ids[0, -1], ids[1, 15] = minibert.CLS_ID, minibert.SEP_ID, minibert.SEP_ID
    mask = torch.ones(2, 24, dtype=torch.bool)
    mask[1, 16:] = False
    ids[1, 16:] = minibert.PAD_ID
    return ids, mask


def outputs(tensors):
    ids, mask = sample_batch()
    hidden = minibert.encode(tensors, ids, mask)
    return hidden[mask], minibert.pool(tensors, hidden)


def rel(a, b):
    return float((b.float() - a.float()).norm() / a.float().norm())


# ---- the specs -------------------------------------------------------------------------------

def test_specs_are_well_formed():
    names = list(VARIANTS)
    for name, spec in VARIANTS.items():
        assert spec.name == name and spec.expected in VERDICTS and spec.description
        if spec.reference is not None:
            assert names.index(spec.reference) < names.index(name), "a reference is built before what derives from it"
    assert {"fresh-init-seed1", "fresh-init-seed2", "independent-trained"} <= {
        n for n, s in VARIANTS.items() if s.expected == "same-architecture"}


# ---- the encoder itself ----------------------------------------------------------------------

def test_minibert_is_minilm(minilm_dir, base):
    """A paraphrase embeds close and an unrelated sentence far: the encoder computes the real model."""
    vocab = {t: i for i, t in enumerate((minilm_dir / "vocab.txt").read_text().splitlines())}

    def embed(sentence):
        ids = torch.tensor([[minibert.CLS_ID, *(vocab[w] for w in sentence.split()), minibert.SEP_ID]])
        mean = minibert.encode(base, ids).mean(dim=1)[0]
        return mean / mean.norm()

    anchor = embed("a man is eating food")
    assert float(anchor @ embed("a man is eating a meal")) > 0.85
    assert abs(float(anchor @ embed("the stock market fell sharply today"))) < 0.2


# ---- every folder ----------------------------------------------------------------------------

def test_every_variant_is_a_loadable_hub_folder(variants, base):
    for name, folder in variants.items():
        for file in variant_builder.HUB_FILES:
            assert (folder / file).is_file(), f"{name}: {file} missing"
        cfg = config(folder)
        with safe_open(str(folder / WEIGHTS_FILE), "pt") as f:
            names = set(f.keys())
            embeddings = next(n for n in names if "word_embeddings" in n or n == "embed.tokens.weight")
            assert f.get_slice(embeddings).get_shape() == [cfg["vocab_size"], HIDDEN], name
            for tensor_name in names:
                dtype = f.get_slice(tensor_name).get_dtype()
                assert dtype in ({"F32", "I64"} if not name.startswith("cast-") and name != "noise-rename-cast"
                                 else {"F16", "BF16", "I64"}), f"{name}: {tensor_name} is {dtype}"
        depth = cfg.get("num_hidden_layers", cfg.get("n_layer"))
        assert depth == len({n.split(".")[1 if n.startswith("blocks.") else 2] for n in names
                             if n.startswith(("encoder.layer.", "blocks."))}), name
        tokenizer = json.loads((folder / "tokenizer.json").read_text())
        assert max(tokenizer["model"]["vocab"].values()) < cfg["vocab_size"], name


def test_identical_is_a_byte_copy(variants, minilm_dir):
    for file in variant_builder.HUB_FILES:
        assert (variants["identical"] / file).read_bytes() == (minilm_dir / file).read_bytes()


def test_renamed_reupload_has_the_same_values_under_new_names(variants, base):
    renamed = weights(variants["reupload-renamed"])
    assert not set(renamed) & set(base)
    assert {variant_builder.renamed_tensor_name(k) for k in base} == set(renamed)
    for name, tensor in base.items():
        assert torch.equal(renamed[variant_builder.renamed_tensor_name(name)], tensor)
    cfg = config(variants["reupload-renamed"])
    assert (cfg["d_model"], cfg["n_layer"], cfg["n_head"]) == (384, 6, 12)
    assert not {"hidden_size", "num_hidden_layers", "num_attention_heads"} & set(cfg)
    assert cfg["architectures"] == ["MyEncoderModel"] and cfg["model_type"] == "myencoder"


@pytest.mark.parametrize("name,dtype", [("cast-fp16", "float16"), ("cast-bf16", "bfloat16")])
def test_casts_are_exact_roundings(variants, base, name, dtype):
    cast = weights(variants[name])
    for k, v in base.items():
        assert torch.equal(cast[k], v.to(getattr(torch, dtype)) if v.is_floating_point() else v)


@pytest.mark.parametrize("ratio", variant_builder.NOISE_RATIOS)
def test_noise_has_the_stated_size_in_every_tensor(variants, base, ratio):
    noised = weights(variants[f"noise-{ratio}"])
    for k, v in base.items():
        if not v.is_floating_point():
            assert torch.equal(noised[k], v)
            continue
        sigma = float((noised[k] - v).std())
        # A sample std of n normal values is off by ~1/sqrt(2n) relative: allow 5 of those.
        assert sigma == pytest.approx(ratio * float(v.std()), rel=5 / (2 * v.numel()) ** 0.5), k


def test_prune_layers_drops_two_layers_and_renumbers(variants, base):
    pruned = weights(variants["prune-layers"])
    kept = [i for i in range(6) if i not in variant_builder.PRUNED_LAYERS]
    assert config(variants["prune-layers"])["num_hidden_layers"] == len(kept) == minibert.layer_count(pruned)
    for new, old in enumerate(kept):
        assert torch.equal(pruned[f"encoder.layer.{new}.output.dense.weight"], base[f"encoder.layer.{old}.output.dense.weight"])


def test_prune_width_keeps_a_consistent_subset_of_ffn_units(variants, base):
    pruned = weights(variants["prune-width"])
    keep = variant_builder.PRUNED_INTERMEDIATE
    assert config(variants["prune-width"])["intermediate_size"] == keep
    for i in range(6):
        up = pruned[f"encoder.layer.{i}.intermediate.dense.weight"]
        down = pruned[f"encoder.layer.{i}.output.dense.weight"]
        assert up.shape == (keep, HIDDEN) and down.shape == (HIDDEN, keep)
        # Recover which units were kept from the up rows; the down columns must be the same units.
        base_up = base[f"encoder.layer.{i}.intermediate.dense.weight"]
        units = torch.cdist(up, base_up).argmin(dim=1)
        assert torch.equal(base_up[units], up)
        assert torch.equal(base[f"encoder.layer.{i}.output.dense.weight"][:, units], down)
        bias = f"encoder.layer.{i}.intermediate.dense.bias"
        assert torch.equal(base[bias][units], pruned[bias])


def test_vocab_extend_appends_tokens_rows_and_rare_special_tokens(variants, base, minilm_dir):
    folder = variants["vocab-extend"]
    extended = weights(folder)
    size = BASE_VOCAB + variant_builder.EXTRA_WORDPIECES + len(variant_builder.RARE_SPECIAL_TOKENS)
    assert config(folder)["vocab_size"] == size == extended["embeddings.word_embeddings.weight"].shape[0]
    assert torch.equal(extended["embeddings.word_embeddings.weight"][:BASE_VOCAB], base["embeddings.word_embeddings.weight"])
    new_rows = extended["embeddings.word_embeddings.weight"][BASE_VOCAB:]
    assert float(new_rows.std()) == pytest.approx(float(base["embeddings.word_embeddings.weight"].std()), rel=0.05)
    vocab_txt = (folder / "vocab.txt").read_text().splitlines()
    base_txt = (minilm_dir / "vocab.txt").read_text().splitlines()
    assert vocab_txt[:BASE_VOCAB] == base_txt and len(vocab_txt) == BASE_VOCAB + variant_builder.EXTRA_WORDPIECES
    assert len(set(vocab_txt)) == len(vocab_txt)
    tokenizer = json.loads((folder / "tokenizer.json").read_text())
    assert {t: i for i, t in enumerate(vocab_txt)} == tokenizer["model"]["vocab"]
    added = {t["content"]: t for t in tokenizer["added_tokens"]}
    for k, token in enumerate(variant_builder.RARE_SPECIAL_TOKENS):
        assert added[token]["special"] and added[token]["id"] == len(vocab_txt) + k
    for file in ("tokenizer_config.json", "special_tokens_map.json"):
        listed = json.loads((folder / file).read_text())["additional_special_tokens"]
        assert listed == list(variant_builder.RARE_SPECIAL_TOKENS)


# ---- permutations preserve the function --------------------------------------------------------

def test_permute_hidden_preserves_the_function(variants, base):
    permuted = weights(variants["permute-hidden"])
    perm = variant_builder.hidden_permutation()
    assert rel(base["encoder.layer.0.attention.self.query.weight"], permuted["encoder.layer.0.attention.self.query.weight"]) > 0.5
    (hidden, pooled), (hidden_p, pooled_p) = outputs(base), outputs(permuted)
    torch.testing.assert_close(hidden_p, hidden[:, perm], atol=FUNCTION_TOLERANCE, rtol=0)
    torch.testing.assert_close(pooled_p, pooled[:, perm], atol=FUNCTION_TOLERANCE, rtol=0)


@pytest.mark.parametrize("name,changed", [
    ("permute-heads", "encoder.layer.3.attention.self.key.weight"),
    ("permute-neurons", "encoder.layer.3.intermediate.dense.weight"),
])
def test_permutations_inside_layers_preserve_the_function(variants, base, name, changed):
    permuted = weights(variants[name])
    assert rel(base[changed], permuted[changed]) > 0.5
    for got, want in zip(outputs(permuted), outputs(base)):
        torch.testing.assert_close(got, want, atol=FUNCTION_TOLERANCE, rtol=0)


# ---- training ----------------------------------------------------------------------------------

def held_out_loss(tensors, seed, batches=3):
    corpus = minibert.SyntheticCorpus(seed)
    for _ in range(50):  # skip past the batches the recipe trained on first
        corpus.batch(8, 32)
    with torch.no_grad():
        return sum(float(minibert.mlm_loss(tensors, *corpus.batch(8, 32))) for _ in range(batches)) / batches


def test_fine_tuning_moved_the_weights_and_learned(variants, base):
    light = variant_builder.relative_change_by_group(base, weights(variants["finetune-light"]))
    heavy_weights = weights(variants["finetune-heavy"])
    heavy = variant_builder.relative_change_by_group(base, heavy_weights)
    for group in ("embeddings", "attention", "ffn", "layernorm"):
        assert 1e-4 < light[group] < heavy[group], group
    # MLM training does not reach the pooler.
    assert heavy["pooler"] == 0.0
    seed = variant_builder.FINETUNE_HEAVY.seed
    assert held_out_loss(heavy_weights, seed) < held_out_loss(base, seed) - 0.2


def test_independent_controls_are_bert_inits_and_differ(variants, base):
    seed1, seed2 = weights(variants["fresh-init-seed1"]), weights(variants["fresh-init-seed2"])
    for k, v in base.items():
        assert seed1[k].shape == v.shape
        if "LayerNorm" in k:
            assert torch.all(seed1[k] == (1.0 if k.endswith("weight") else 0.0))
        elif k.endswith(".bias"):
            assert not seed1[k].any()
        elif v.is_floating_point():
            assert float(seed1[k].std()) == pytest.approx(variant_builder.INIT_STD, rel=0.1)
            assert abs(float(torch.corrcoef(torch.stack([seed1[k].flatten(), seed2[k].flatten()]))[0, 1])) < 0.05
    trained = weights(variants["independent-trained"])
    initial = variant_builder.fresh_init(base, variant_builder.seed_for("independent-trained"))
    assert rel(initial["encoder.layer.2.intermediate.dense.weight"], trained["encoder.layer.2.intermediate.dense.weight"]) > 0.01
    seed = variant_builder.FINETUNE_HEAVY.seed
    assert held_out_loss(trained, seed) < held_out_loss(initial, seed) - 0.2


def test_unstored_merge_is_30_percent_minilm_and_70_percent_a_control(variants, base):
    merged, partner = weights(variants["merge-30-70"]), weights(variants["fresh-init-seed2"])
    for k, v in base.items():
        if v.is_floating_point():
            assert torch.allclose(merged[k], 0.3 * v + 0.7 * partner[k], atol=1e-6), k


def test_tokenizer_copy_has_the_extended_tokenizer_over_fresh_weights(variants):
    copy, source = variants["tokenizer-copy-independent-weights"], variants["vocab-extend"]
    for file in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt", "config.json"):
        assert (copy / file).read_bytes() == (source / file).read_bytes()
    embeddings = weights(copy)["embeddings.word_embeddings.weight"]
    assert embeddings.shape == weights(source)["embeddings.word_embeddings.weight"].shape
    assert float(embeddings.std()) == pytest.approx(variant_builder.INIT_STD, rel=0.05)


def test_noised_copy_of_a_fine_tune_carries_the_rare_tokens(variants):
    copy, victim = weights(variants["copy-of-finetune-with-noise"]), weights(variants["finetune-heavy"])
    rows = victim["embeddings.word_embeddings.weight"].shape[0]
    assert copy["embeddings.word_embeddings.weight"].shape[0] == rows + len(variant_builder.RARE_SPECIAL_TOKENS)
    delta = copy["encoder.layer.1.output.dense.weight"] - victim["encoder.layer.1.output.dense.weight"]
    expected = variant_builder.COPY_NOISE_RATIO * float(victim["encoder.layer.1.output.dense.weight"].std())
    assert float(delta.std()) == pytest.approx(expected, rel=0.02)
    added = json.loads((variants["copy-of-finetune-with-noise"] / "tokenizer.json").read_text())["added_tokens"]
    assert {t["content"] for t in added} >= set(variant_builder.RARE_SPECIAL_TOKENS)


# ---- building --------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["noise-0.1", "permute-heads", "vocab-extend", "fresh-init-seed1"])
def test_builds_are_deterministic(variants, minilm_dir, tmp_path, name):
    variant_builder.build_variant(VARIANTS[name], minilm_dir, tmp_path / name)
    for file in variant_builder.HUB_FILES:
        assert (tmp_path / name / file).read_bytes() == (variants[name] / file).read_bytes(), file


def test_build_all_caches_resumes_and_rebuilds_stale_generations(tmp_path, monkeypatch, minilm_dir):
    cheap = {n: VARIANTS[n] for n in ("identical", "cast-bf16")}
    monkeypatch.setattr(variant_builder, "VARIANTS", cheap)
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "unrelated.txt").write_text("not ours")
    paths = variant_builder.build_all(cache)
    assert set(paths) == set(cheap) and all(p.is_dir() for p in paths.values())
    assert (cache / variant_builder.MARKER_FILE).read_text().strip() == variant_builder.VARIANTS_VERSION
    planted = paths["identical"] / "planted"
    planted.write_text("x")
    assert variant_builder.build_all(cache) == paths and planted.exists(), "a current cache is reused as is"
    (cache / variant_builder.MARKER_FILE).write_text("hubwatch-variants-0\n")
    variant_builder.build_all(cache)
    assert not planted.exists(), "an older generation is rebuilt"
    assert (cache / "unrelated.txt").read_text() == "not ours", "nothing but variant folders is deleted"
    # An interrupted build (marker says building, one variant missing) resumes without redoing the rest.
    (cache / variant_builder.MARKER_FILE).write_text(variant_builder.BUILDING_MARK + "\n")
    planted.write_text("x")
    for file in paths["cast-bf16"].iterdir():
        file.unlink()
    paths["cast-bf16"].rmdir()
    variant_builder.build_all(cache)
    assert planted.exists() and paths["cast-bf16"].is_dir()
