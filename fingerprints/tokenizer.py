"""Tokenizer signature: vocabulary, merges and special tokens, from any common tokenizer file.

Parsed formats: tokenizer.json (WordPiece / BPE / Unigram), vocab.json + merges.txt, vocab.txt,
SentencePiece ``tokenizer.model`` (the protobuf is decoded by hand: no sentencepiece code runs on
Hub bytes) and tiktoken rank files (``*.tiktoken``, Llama-3's original ``tokenizer.model``). Tokens
from tiktoken files are written in the GPT-2 byte-to-unicode alphabet, the form tokenizer.json uses,
so the same token compares equal whichever file it came from.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import struct
from importlib import resources
from itertools import chain
from typing import Any, Callable

import numpy as np

from . import untrusted_json
from .envelope import DEFAULT_ENVELOPE, ParseEnvelope
from .errors import InvalidModelError
from .model import TokenizerSignature, splitmix64, stable_hash, token_hashes

MINHASH_PERMUTATIONS = 128
# Token strings longer than this are not tokens but an attack on memory.
MAX_TOKEN_CHARS = 1024

COMMON_VOCABULARIES: dict[str, dict[str, Any]] = {
    k: v
    for k, v in json.loads(resources.files(__package__).joinpath("data/common_vocabularies.json").read_text()).items()
    if not k.startswith("_")
}

def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character map (the alphabet of byte-level BPE)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


BYTE_TO_UNICODE = _bytes_to_unicode()


def _json(raw: bytes, path: str, envelope: ParseEnvelope) -> Any:
    try:
        return untrusted_json.loads(raw, envelope, path)
    except ValueError as exc:  # bad UTF-8 or JSON, nesting too deep, a 5000-digit number
        raise InvalidModelError(f"{path} is not valid JSON: {exc}") from exc


def _vocab_from_mapping(mapping: Any, path: str, envelope: ParseEnvelope) -> list[str]:
    if not isinstance(mapping, dict) or not mapping:
        raise InvalidModelError(f"{path}: vocabulary must be a non-empty object of token -> id")
    envelope.check_vocab(path, len(mapping))
    max_vocab = envelope.max_vocab
    # Checked with C-level passes first (a 131k vocabulary in ~5 ms, not ~60 ms); the slow scan
    # below only runs to name the offending entry.
    ids = list(mapping.values())
    if not (set(map(type, ids)) == {int} and 0 <= min(ids) and max(ids) < max_vocab
            and max(map(len, mapping)) <= MAX_TOKEN_CHARS):
        for tok, idx in mapping.items():
            if type(idx) is not int or idx < 0 or idx >= max_vocab or len(tok) > MAX_TOKEN_CHARS:
                raise InvalidModelError(f"{path}: bad vocabulary entry {tok[:40]!r} -> {idx!r}")
    if ids == list(range(len(ids))):  # the usual layout, tokens listed in id order: no Python loop
        return list(mapping)
    vocab = [""] * (max(ids) + 1)
    for tok, idx in mapping.items():
        vocab[idx] = tok
    return vocab


def _merge_strings(merges: Any, path: str) -> list[str]:
    if not isinstance(merges, list):
        raise InvalidModelError(f"{path}: merges must be a list")
    # The two usual layouts, all "a b" strings or all [a, b] pairs, in C-level passes (SmolLM2's
    # 49k pairs in ~5 ms, not ~40 ms); anything else entry by entry.
    kinds = set(map(type, merges))
    if kinds <= {str}:
        return list(merges)
    if kinds == {list} and set(map(len, merges)) == {2} and set(map(type, chain.from_iterable(merges))) == {str}:
        return list(map(" ".join, merges))
    out = []
    for m in merges:
        if isinstance(m, str):
            out.append(m)
        elif isinstance(m, list) and len(m) == 2 and all(isinstance(p, str) for p in m):
            out.append(f"{m[0]} {m[1]}")
        else:
            raise InvalidModelError(f"{path}: bad merge entry {str(m)[:40]}")
    return out


class ParsedTokenizer:
    """What one tokenizer file says, before the signature is computed."""

    def __init__(self, kind: str, source: str, vocab: list[str], merges: list[str] | None = None,
                 added: list[str] | None = None, special: list[str] | None = None):
        self.kind = kind
        self.source = source
        self.vocab = vocab
        self.merges = merges
        self.added = list(added or [])
        self.special = list(special or [])


def parse_tokenizer_json(raw: bytes, path: str = "tokenizer.json",
                         envelope: ParseEnvelope = DEFAULT_ENVELOPE) -> ParsedTokenizer:
    data = _json(raw, path, envelope)
    model = data.get("model") if isinstance(data, dict) else None
    if not isinstance(model, dict):
        raise InvalidModelError(f"{path}: no 'model' object")
    mtype = model.get("type") or ("BPE" if "merges" in model else "WordPiece" if "vocab" in model else None)
    if mtype == "Unigram":
        pieces = model.get("vocab")
        if not isinstance(pieces, list):
            raise InvalidModelError(f"{path}: Unigram vocab must be a list of [piece, score]")
        envelope.check_vocab(path, len(pieces))
        vocab = []
        for p in pieces:
            if not (isinstance(p, list) and p and isinstance(p[0], str) and len(p[0]) <= MAX_TOKEN_CHARS):
                raise InvalidModelError(f"{path}: bad Unigram entry {str(p)[:40]}")
            vocab.append(p[0])
        merges = None
    elif mtype in ("BPE", "WordPiece", "WordLevel"):
        vocab = _vocab_from_mapping(model.get("vocab"), path, envelope)
        merges = _merge_strings(model.get("merges", []), path) if mtype == "BPE" else None
    else:
        raise InvalidModelError(f"{path}: unsupported tokenizer model type {mtype!r}")
    added, special = [], []
    added_tokens = data.get("added_tokens") or []
    if not isinstance(added_tokens, list):
        raise InvalidModelError(f"{path}: added_tokens must be a list")
    for tok in added_tokens:
        if not isinstance(tok, dict) or not isinstance(tok.get("content"), str):
            raise InvalidModelError(f"{path}: bad added_tokens entry")
        content, idx = tok["content"][:MAX_TOKEN_CHARS], tok.get("id")
        added.append(content)
        if tok.get("special"):
            special.append(content)
        if isinstance(idx, int) and 0 <= idx < envelope.max_vocab:
            if idx >= len(vocab):
                vocab.extend([""] * (idx + 1 - len(vocab)))
            vocab[idx] = content
    kind = {"WordPiece": "wordpiece", "BPE": "bpe", "Unigram": "unigram", "WordLevel": "wordlevel"}[mtype]
    return ParsedTokenizer(kind, path, vocab, merges, added, special)


def _check_lines(raw: bytes, path: str, envelope: ParseEnvelope) -> None:
    """A line-per-token file, measured before it is split: each line becomes a str (64 B or more)."""
    lines = raw.count(b"\n") + 1
    envelope.check_vocab(path, lines)
    envelope.check(path, lines, len(raw), 1 if raw.isascii() else 4)


def parse_vocab_txt(raw: bytes, path: str = "vocab.txt", envelope: ParseEnvelope = DEFAULT_ENVELOPE) -> ParsedTokenizer:
    _check_lines(raw, path, envelope)
    try:
        lines = raw.decode("utf-8").split("\n")
    except UnicodeDecodeError as exc:
        raise InvalidModelError(f"{path} is not UTF-8 text: {exc}") from exc
    if lines and lines[-1] == "":
        lines.pop()
    if not lines:
        raise InvalidModelError(f"{path}: no tokens")
    return ParsedTokenizer("wordpiece", path, [ln.rstrip("\r")[:MAX_TOKEN_CHARS] for ln in lines])


def parse_vocab_json_and_merges(vocab_raw: bytes, merges_raw: bytes | None,
                                envelope: ParseEnvelope = DEFAULT_ENVELOPE) -> ParsedTokenizer:
    vocab = _vocab_from_mapping(_json(vocab_raw, "vocab.json", envelope), "vocab.json", envelope)
    merges = None
    if merges_raw is not None:
        envelope.check("merges.txt", merges_raw.count(b"\n") + 1, len(merges_raw), 1 if merges_raw.isascii() else 4)
        try:
            lines = merges_raw.decode("utf-8").splitlines()
        except UnicodeDecodeError as exc:
            raise InvalidModelError(f"merges.txt is not UTF-8 text: {exc}") from exc
        merges = [ln for ln in lines if ln and not ln.startswith("#version")]
    return ParsedTokenizer("bpe", "vocab.json", vocab, merges)


def _read_varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise InvalidModelError("tokenizer.model: truncated or malformed protobuf varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7


def _protobuf_fields(buf: bytes):
    """Yield (field_number, wire_type, value) of one protobuf message; value is bytes or int."""
    pos = 0
    while pos < len(buf):
        key, pos = _read_varint(buf, pos)
        field, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _read_varint(buf, pos)
        elif wire == 1:
            value, pos = buf[pos : pos + 8], pos + 8
        elif wire == 2:
            length, pos = _read_varint(buf, pos)
            if pos + length > len(buf):
                raise InvalidModelError("tokenizer.model: protobuf field runs past the end of the file")
            value, pos = buf[pos : pos + length], pos + length
        elif wire == 5:
            value, pos = buf[pos : pos + 4], pos + 4
        else:
            raise InvalidModelError(f"tokenizer.model: unsupported protobuf wire type {wire}")
        if pos > len(buf):
            raise InvalidModelError("tokenizer.model: truncated protobuf")
        yield field, wire, value


# sentencepiece_model.proto: ModelProto.pieces = 1; SentencePiece.piece = 1, .type = 3
SP_TYPE_CONTROL, SP_TYPE_USER_DEFINED = 3, 4


def parse_sentencepiece_model(raw: bytes, path: str = "tokenizer.model",
                              envelope: ParseEnvelope = DEFAULT_ENVELOPE) -> ParsedTokenizer:
    vocab: list[str] = []
    special: list[str] = []
    added: list[str] = []
    for field, wire, value in _protobuf_fields(raw):
        if field != 1 or wire != 2:
            continue
        piece, ptype = None, 1
        for f2, w2, v2 in _protobuf_fields(value):
            if f2 == 1 and w2 == 2:
                try:
                    piece = v2.decode("utf-8")[:MAX_TOKEN_CHARS]
                except UnicodeDecodeError as exc:
                    raise InvalidModelError(f"{path}: piece is not UTF-8") from exc
            elif f2 == 3 and w2 == 0:
                ptype = v2
        if piece is None:
            raise InvalidModelError(f"{path}: SentencePiece entry without a piece string")
        vocab.append(piece)
        if ptype == SP_TYPE_CONTROL:
            special.append(piece)
        elif ptype == SP_TYPE_USER_DEFINED:
            added.append(piece)
        envelope.check_vocab(path, len(vocab))
    if not vocab:
        raise InvalidModelError(f"{path}: no SentencePiece pieces found")
    return ParsedTokenizer("sentencepiece", path, vocab, None, added, special)


def parse_tiktoken(raw: bytes, path: str, envelope: ParseEnvelope = DEFAULT_ENVELOPE) -> ParsedTokenizer:
    _check_lines(raw, path, envelope)
    mapping: dict[str, int] = {}
    for n, line in enumerate(raw.split(b"\n"), 1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2:
            raise InvalidModelError(f"{path}: line {n} is not '<base64 token> <rank>'")
        try:
            token = base64.b64decode(parts[0], validate=True)
            rank = int(parts[1])
        except (binascii.Error, ValueError) as exc:
            raise InvalidModelError(f"{path}: line {n}: {exc}") from exc
        mapping["".join(BYTE_TO_UNICODE[b] for b in token)] = rank
    return ParsedTokenizer("tiktoken", path, _vocab_from_mapping(mapping, path, envelope))


def looks_like_tiktoken(raw: bytes) -> bool:
    head = raw[:4096].split(b"\n")[0].split()
    if len(head) != 2 or not head[1].isdigit():
        return False
    try:
        base64.b64decode(head[0], validate=True)
        return True
    except binascii.Error:
        return False


def special_tokens_from_configs(configs: list[tuple[str, bytes]],
                                envelope: ParseEnvelope = DEFAULT_ENVELOPE) -> list[str]:
    """Special tokens named in tokenizer_config.json / special_tokens_map.json."""
    found: list[str] = []

    def collect(value: Any) -> None:
        if isinstance(value, str):
            found.append(value[:MAX_TOKEN_CHARS])
        elif isinstance(value, dict) and isinstance(value.get("content"), str):
            found.append(value["content"][:MAX_TOKEN_CHARS])
        elif isinstance(value, list):
            for v in value:
                collect(v)

    for path, raw in configs:
        data = _json(raw, path, envelope)
        if not isinstance(data, dict):
            continue
        for key, value in data.items():
            if key.endswith("_token") or key in ("additional_special_tokens",):
                collect(value)
        decoder = data.get("added_tokens_decoder")
        if isinstance(decoder, dict):
            for entry in decoder.values():
                if isinstance(entry, dict) and entry.get("special"):
                    collect(entry)
    return found


_MINHASH_SEEDS = splitmix64(np.arange(1, MINHASH_PERMUTATIONS + 1, dtype=np.uint64))


def minhash_of_hashes(hashes: np.ndarray) -> list[int]:
    """MinHash signature of a token set given its token hashes; equal positions estimate Jaccard."""
    h = np.asarray(hashes, dtype=np.uint64)  # duplicates leave every minimum unchanged: no unique()
    if not h.size:
        return [0] * MINHASH_PERMUTATIONS
    with np.errstate(over="ignore"):
        return [int(splitmix64(h ^ seed).min()) for seed in _MINHASH_SEEDS]


def minhash(tokens: list[str]) -> list[int]:
    return minhash_of_hashes(token_hashes([t for t in tokens if t]))


def minhash_jaccard(a: list[int], b: list[int]) -> float:
    if not a or len(a) != len(b):
        return 0.0
    return float(np.mean(np.array(a, dtype=np.uint64) == np.array(b, dtype=np.uint64)))


def recognise_standard_vocabulary(vocab: list[str]) -> str | None:
    for name, spec in COMMON_VOCABULARIES.items():
        if abs(len(vocab) - spec["vocab_size"]) > 0:
            continue
        if all(idx < len(vocab) and vocab[idx] == tok for tok, idx in spec["probes"].items()):
            return name
    return None


def tokenizer_signature(parsed: ParsedTokenizer, extra_special: list[str] = ()) -> TokenizerSignature:
    special = sorted(set(parsed.special) | set(extra_special))
    hashes = token_hashes(parsed.vocab)
    present = np.fromiter(map(bool, parsed.vocab), dtype=bool, count=len(parsed.vocab))
    return TokenizerSignature(
        kind=parsed.kind,
        source_file=parsed.source,
        vocab_size=len(parsed.vocab),
        vocab_hash=stable_hash(parsed.vocab),
        merges_hash=stable_hash(parsed.merges) if parsed.merges else None,
        special_tokens=special,
        added_tokens=sorted(set(parsed.added)),
        minhash=minhash_of_hashes(hashes[present]),
        standard_vocabulary=recognise_standard_vocabulary(parsed.vocab),
        vocab=parsed.vocab,
        token_hashes=hashes,
    )


SPECIAL_TOKEN_CONFIGS = ("tokenizer_config.json", "special_tokens_map.json")


def tokenizer_files(files: list[str]) -> list[str]:
    """The files read_tokenizer will read, in order: the vocabulary source, then special-token configs."""
    names = set(files)
    if "tokenizer.json" in names:
        source = ["tokenizer.json"]
    elif "vocab.json" in names:
        source = ["vocab.json"] + (["merges.txt"] if "merges.txt" in names else [])
    elif "vocab.txt" in names:
        source = ["vocab.txt"]
    elif "tokenizer.model" in names:
        source = ["tokenizer.model"]
    else:
        source = sorted(f for f in files if f.endswith(".tiktoken") and "/" not in f)[:1]
    return source + [p for p in SPECIAL_TOKEN_CONFIGS if p in names] if source else []


def read_tokenizer(files: list[str], read: Callable[[str], bytes],
                   envelope: ParseEnvelope = DEFAULT_ENVELOPE) -> TokenizerSignature | None:
    """Find and parse the model's tokenizer among ``files``; ``read(path)`` returns a small file."""
    needed = tokenizer_files(files)
    if not needed:
        return None
    source = needed[0]
    if source == "tokenizer.json":
        parsed = parse_tokenizer_json(read(source), source, envelope)
    elif source == "vocab.json":
        parsed = parse_vocab_json_and_merges(read(source), read("merges.txt") if "merges.txt" in needed else None,
                                             envelope)
    elif source == "vocab.txt":
        parsed = parse_vocab_txt(read(source), source, envelope)
    elif source == "tokenizer.model":
        raw = read(source)
        parsed = (parse_tiktoken(raw, source, envelope) if looks_like_tiktoken(raw)
                  else parse_sentencepiece_model(raw, source, envelope))
    else:
        parsed = parse_tiktoken(read(source), source, envelope)
    configs = [(p, read(p)) for p in SPECIAL_TOKEN_CONFIGS if p in needed]
    return tokenizer_signature(parsed, special_tokens_from_configs(configs, envelope))


# ---- token-string conventions ----------------------------------------------------------------
# The same token is spelled differently by each tokenizer family: SentencePiece marks a word start
# with "▁", GPT-2's byte-level BPE writes bytes in its own alphabet (" " is "Ġ", "\n" is "Ċ"),
# WordPiece marks continuations with "##", and llama.cpp writes BERT vocabularies with the
# SentencePiece marker (word starts get "▁", "##" continuations become plain pieces). Rows are
# paired across conventions on one canonical spelling: the text the token stands for, with a
# leading space for a word start. Special tokens ([CLS], <s>, <|im_start|>) keep their spelling.

SENTENCEPIECE, BYTE_LEVEL, WORDPIECE, PLAIN = "sentencepiece", "byte-level", "wordpiece", "plain"
# Share of tokens carrying a convention's marker above which a vocabulary uses it. Measured on the
# vocabularies the tests ship: BERT uncased (MiniLM) has 19% "##" pieces and no "▁" or "Ġ";
# SmolLM2's byte-level vocabulary 65% "Ġ" tokens, no "▁" and 0.02% "##" (code tokens).
CONVENTION_MIN_SHARE = {WORDPIECE: 0.02, SENTENCEPIECE: 0.1, BYTE_LEVEL: 0.1}
_SPECIAL_SPELLING = re.compile(r"^(\[[^\]]+\]|<[^<>]+>)$")
_UNICODE_TO_BYTE = {c: b for b, c in BYTE_TO_UNICODE.items()}


def token_convention(tokens: list[str]) -> str:
    """Which spelling convention a list of tokens (a vocabulary or a sample of it) follows."""
    present = [t for t in tokens if t]
    if not present:
        return PLAIN
    shares = {
        WORDPIECE: sum(t.startswith("##") for t in present) / len(present),
        SENTENCEPIECE: sum("▁" in t for t in present) / len(present),
        BYTE_LEVEL: sum("Ġ" in t for t in present) / len(present),
    }
    name, share = max(shares.items(), key=lambda kv: kv[1])
    return name if share >= CONVENTION_MIN_SHARE[name] else PLAIN


def _byte_level_text(token: str) -> str:
    if any(c not in _UNICODE_TO_BYTE for c in token):
        return token  # an added token written as plain text
    return bytes(_UNICODE_TO_BYTE[c] for c in token).decode("utf-8", "backslashreplace")


def canonical_token(token: str, convention: str) -> str:
    if not token or _SPECIAL_SPELLING.match(token):
        return token
    if convention == SENTENCEPIECE:
        return token.replace("▁", " ")
    if convention == BYTE_LEVEL:
        return _byte_level_text(token)
    if convention == WORDPIECE:
        return token[2:] if token.startswith("##") else " " + token
    return token


def canonical_tokens(tokens: list[str], convention: str | None = None) -> list[str]:
    """Every token in the canonical spelling; the convention is detected when not given."""
    convention = convention or token_convention(tokens)
    return [canonical_token(t, convention) for t in tokens]

