"""Bad or hostile model folders: one line on stderr, exit code 2, never a traceback."""

from __future__ import annotations

import json
import pickle
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot.cli import main
from fuzz_targets import safetensors_bytes
from fingerprints.errors import InvalidModelError
from fingerprints.reader import LocalFolderReader
from fingerprints.safetensors_format import read_safetensors_header


def write_safetensors(path, header: dict, data: bytes = b"", header_len: int | None = None):
    path.write_bytes(safetensors_bytes(header, data, header_len))


def run_cli(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code, err, fragment):
    assert code == 2
    assert "Traceback" not in err
    lines = [l for l in err.splitlines() if l.startswith("hubwatch: error:")]
    assert len(lines) == 1, err
    assert fragment in lines[0], lines[0]


@pytest.fixture
def model_dir(tmp_path):
    d = tmp_path / "model"
    d.mkdir()
    (d / "config.json").write_text(json.dumps({"model_type": "bert", "hidden_size": 4}))
    return d


F32_2x2 = {"w": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]}}


def test_empty_folder(capsys, tmp_path):
    code, _, err = run_cli(capsys, "fingerprint", str(tmp_path))
    assert_one_line_error(code, err, "no config.json, tokenizer or weights found")


def test_missing_path(capsys, tmp_path):
    code, _, err = run_cli(capsys, "fingerprint", str(tmp_path / "nope" / "x"))
    assert_one_line_error(code, err, "neither an existing folder nor a Hub repo id")


def test_config_not_json(capsys, model_dir):
    (model_dir / "config.json").write_text("{not json")
    code, _, err = run_cli(capsys, "fingerprint", str(model_dir))
    assert_one_line_error(code, err, "config.json is not valid JSON")


def test_config_not_an_object(capsys, model_dir):
    (model_dir / "config.json").write_text("[1, 2]")
    code, _, err = run_cli(capsys, "fingerprint", str(model_dir))
    assert_one_line_error(code, err, "must hold a JSON object")


def test_header_longer_than_file(capsys, model_dir):
    write_safetensors(model_dir / "model.safetensors", F32_2x2, b"\0" * 16, header_len=10_000)
    code, _, err = run_cli(capsys, "fingerprint", str(model_dir))
    assert_one_line_error(code, err, "header claims 10,000 bytes but the file has")


def test_one_gigabyte_claimed_header(capsys, model_dir):
    (model_dir / "model.safetensors").write_bytes(struct.pack("<Q", 1 << 30) + b"{}")
    code, _, err = run_cli(capsys, "fingerprint", str(model_dir))
    assert_one_line_error(code, err, "over the 25,000,000-byte limit")


def test_out_of_range_offsets(capsys, model_dir):
    header = {"w": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]}}
    write_safetensors(model_dir / "model.safetensors", header, b"\0" * 8)
    code, _, err = run_cli(capsys, "fingerprint", str(model_dir))
    assert_one_line_error(code, err, "outside the data region")


def test_overlapping_offsets(capsys, model_dir):
    header = {
        "a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]},
        "b": {"dtype": "F32", "shape": [4], "data_offsets": [8, 24]},
    }
    write_safetensors(model_dir / "model.safetensors", header, b"\0" * 24)
    code, _, err = run_cli(capsys, "fingerprint", str(model_dir))
    assert_one_line_error(code, err, "overlaps")


def test_hole_between_tensors(capsys, model_dir):
    header = {"a": {"dtype": "F32", "shape": [2], "data_offsets": [8, 16]}}
    write_safetensors(model_dir / "model.safetensors", header, b"\0" * 16)
    code, _, err = run_cli(capsys, "fingerprint", str(model_dir))
    assert_one_line_error(code, err, "hole")


def test_size_mismatch(capsys, model_dir):
    header = {"a": {"dtype": "F16", "shape": [4], "data_offsets": [0, 16]}}
    write_safetensors(model_dir / "model.safetensors", header, b"\0" * 16)
    code, _, err = run_cli(capsys, "fingerprint", str(model_dir))
    assert_one_line_error(code, err, "needs 8")


def test_unknown_dtype(capsys, model_dir):
    header = {"a": {"dtype": "F7", "shape": [4], "data_offsets": [0, 16]}}
    write_safetensors(model_dir / "model.safetensors", header, b"\0" * 16)
    code, _, err = run_cli(capsys, "fingerprint", str(model_dir))
    assert_one_line_error(code, err, "unknown dtype 'F7'")


def test_truncated_file(capsys, model_dir):
    (model_dir / "model.safetensors").write_bytes(b"\x01\x02")
    code, _, err = run_cli(capsys, "fingerprint", str(model_dir))
    assert_one_line_error(code, err, "too small to be a safetensors file")


def test_bad_tokenizer_json(capsys, model_dir):
    (model_dir / "tokenizer.json").write_text('{"model": {"type": "BPE", "vocab": {"a": "x"}}}')
    code, _, err = run_cli(capsys, "fingerprint", str(model_dir))
    assert_one_line_error(code, err, "bad vocabulary entry")


def test_pickle_is_never_unpickled(capsys, model_dir, tmp_path):
    canary = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return (open, (str(canary), "w"))

    (model_dir / "pytorch_model.bin").write_bytes(pickle.dumps(Exploit()))
    code, out, err = run_cli(capsys, "fingerprint", str(model_dir))
    assert_one_line_error(code, err, "never unpickles")
    assert "config:" in out  # the config is still fingerprinted
    assert not canary.exists()


def test_compare_rejects_non_png_plot(capsys, model_dir):
    code, _, err = run_cli(capsys, "compare", str(model_dir), str(model_dir), "--plot", "x.jpg")
    assert_one_line_error(code, err, "ending in .png")


@pytest.mark.parametrize("shape", [[2**64 - 1] * 300, [1] * 33, [2**64, 1], [10**4000, 10**4000]])
def test_absurd_shapes_are_clean_errors(tmp_path, shape):
    # Found by benchmarks/fuzz_parsers.py: a byte count over 4300 digits broke the error message.
    write_safetensors(tmp_path / "model.safetensors", {"w": {"dtype": "F32", "shape": shape, "data_offsets": [0, 16]}}, b"\0" * 16)
    with pytest.raises(InvalidModelError, match="invalid shape"):
        read_safetensors_header(LocalFolderReader(tmp_path), "model.safetensors")


@pytest.mark.slow  # hypothesis fuzzing
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(blob=st.binary(max_size=400), header_len=st.integers(min_value=0, max_value=2**64 - 1))
def test_fuzzed_headers_only_raise_invalid_model(tmp_path_factory, blob, header_len):
    d = tmp_path_factory.mktemp("fuzz")
    (d / "model.safetensors").write_bytes(struct.pack("<Q", header_len) + blob)
    try:
        read_safetensors_header(LocalFolderReader(d), "model.safetensors")
    except InvalidModelError:
        pass


@settings(max_examples=150, deadline=None)
@given(
    header=st.dictionaries(
        st.text(max_size=8),
        st.fixed_dictionaries(
            {
                "dtype": st.sampled_from(["F32", "F16", "BF16", "I64", "X"]),
                "shape": st.lists(st.integers(min_value=-2, max_value=6), max_size=3),
                "data_offsets": st.lists(st.integers(min_value=-4, max_value=64), min_size=0, max_size=3),
            }
        ),
        max_size=4,
    )
)
@pytest.mark.slow  # hypothesis fuzzing
def test_fuzzed_structured_headers_only_raise_invalid_model(tmp_path_factory, header):
    d = tmp_path_factory.mktemp("fuzz")
    write_safetensors(d / "model.safetensors", header, b"\0" * 64)
    try:
        tensors, _ = read_safetensors_header(LocalFolderReader(d), "model.safetensors")
    except InvalidModelError:
        return
    for t in tensors:  # whatever parsed must be self-consistent
        assert t.offset + t.nbytes <= (d / "model.safetensors").stat().st_size


@pytest.mark.slow  # fingerprints two MiniLM copies
def test_non_finite_weights_are_compared_not_crashed_on(capsys, tmp_path, minilm_dir):
    import shutil

    import numpy as np
    from safetensors.numpy import load_file, save_file

    copy = tmp_path / "nan-copy"
    shutil.copytree(minilm_dir, copy)
    tensors = load_file(minilm_dir / "model.safetensors")
    emb = tensors["embeddings.word_embeddings.weight"].copy()
    emb[:, 5] = np.nan
    emb[3000:3100] = np.inf
    tensors["embeddings.word_embeddings.weight"] = emb
    save_file(tensors, copy / "model.safetensors")
    code, out, err = run_cli(capsys, "compare", str(minilm_dir), str(copy))
    assert code == 0 and "Traceback" not in err
    assert "verdict:    weights-derived" in out


@pytest.mark.parametrize("weights", ["pickle", "none"])
def test_unreadable_weights_are_not_comparable(capsys, minilm_dir, tmp_path, weights):
    suspect = tmp_path / "suspect"
    suspect.mkdir()
    for name in ("config.json", "tokenizer.json", "vocab.txt"):
        (suspect / name).write_bytes((minilm_dir / name).read_bytes())
    if weights == "pickle":
        (suspect / "pytorch_model.bin").write_bytes(pickle.dumps({"w": [1.0, 2.0]}))
    code, out, err = run_cli(capsys, "compare", str(minilm_dir), str(suspect))
    assert code == 0, err
    assert "verdict:    not-comparable\n" in out
    assert "score:      none" in out
    why = "B: weights in a format hubwatch never opens" if weights == "pickle" else "B: no weight files"
    assert f"weights: not compared ({why})" in out
    assert "same-architecture" not in out and "independent" not in out


def test_identical_verdict_is_not_repeated(capsys, minilm_dir):
    code, out, _ = run_cli(capsys, "compare", str(minilm_dir), str(minilm_dir))
    assert code == 0 and "verdict:    identical\n" in out
