"""tokenizer.json's vocabulary and merges parse alike in every layout the format allows."""

from __future__ import annotations

import json

import pytest

from fingerprints.errors import InvalidModelError
from fingerprints.tokenizer import parse_tokenizer_json


def _bpe(vocab, merges) -> bytes:
    return json.dumps({"model": {"type": "BPE", "vocab": vocab, "merges": merges}}).encode()


def test_merges_as_strings_pairs_or_both_give_the_same_strings():
    vocab = {"a": 0, "b": 1, "ab": 2, "c": 3, "abc": 4}
    strings = ["a b", "ab c"]
    for merges in (strings, [["a", "b"], ["ab", "c"]], [["a", "b"], "ab c"], ["a b", ["ab", "c"]]):
        assert parse_tokenizer_json(_bpe(vocab, merges)).merges == strings
    assert parse_tokenizer_json(_bpe(vocab, [])).merges == []


def test_a_vocabulary_in_any_id_order_or_with_gaps_gives_tokens_by_id():
    in_order = parse_tokenizer_json(_bpe({"a": 0, "b": 1, "c": 2}, [])).vocab
    assert in_order == ["a", "b", "c"]
    assert parse_tokenizer_json(_bpe({"c": 2, "a": 0, "b": 1}, [])).vocab == in_order
    assert parse_tokenizer_json(_bpe({"a": 0, "c": 3}, [])).vocab == ["a", "", "", "c"]


@pytest.mark.parametrize("vocab, merges", [
    ({"a": 0, "b": True}, []),            # a bool is not an id
    ({"a": 0, "b": -1}, []),
    ({"a": 0, "b": 1.0}, []),
    ({"a": 0, "b": 1}, [["a"]]),          # a pair of one
    ({"a": 0, "b": 1}, [["a", 1]]),
    ({"a": 0, "b": 1}, [["a", "b"], 7]),
])
def test_bad_entries_are_refused_in_every_layout(vocab, merges):
    with pytest.raises(InvalidModelError, match="bad (vocabulary|merge) entry"):
        parse_tokenizer_json(_bpe(vocab, merges))
