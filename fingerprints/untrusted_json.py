"""``json.loads`` for JSON that came from the Hub: every way it can fail is a ``ValueError``.

``json.loads`` on hostile bytes can also raise ``RecursionError`` (arrays nested a few thousand
deep), and it accepts lone UTF-16 surrogates, as ``\\ud800`` escapes or, for ``bytes`` input,
as raw bytes (it decodes with ``surrogatepass``). Such strings cannot be encoded again, so they
broke hashing (``stable_hash``) long after parsing. Here the bytes are decoded strictly (the
encoding is detected as ``json.loads`` detects it), nesting too deep for the parser is a
``ValueError``, and lone surrogates from escapes are replaced with U+FFFD: a file that Python's
``json`` module (and so transformers) reads is read, not refused. Over-long integers (more than
4300 digits) already fail with ``ValueError``.

Before parsing, the document is measured against a ``ParseEnvelope`` (envelope.py): a few
``str.count`` passes bound its tokens, and only a document near the limits has its strings
stripped by a regular expression for the exact count. A document over the envelope is a
``BudgetExceededError`` and is never handed to ``json.loads``.
"""

from __future__ import annotations

import json
import re
from typing import Any

from .envelope import DEFAULT_ENVELOPE, ParseEnvelope
from .errors import BudgetExceededError

# A \\uD800-\\uDFFF escape: the only way a lone surrogate survives the strict decode.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")
# A JSON string literal (the unrolled form: no backtracking per character).
_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"')
# Every JSON value and object member follows one of these, or is the document itself.
_TOKEN_STARTS = "[{,:"


def _tokens(text: str) -> int:
    return sum(map(text.count, _TOKEN_STARTS)) + 1


def measure(text: str, envelope: ParseEnvelope, what: str) -> None:
    """Raise ``BudgetExceededError`` when parsing ``text`` would pass ``envelope``."""
    width = 1 if text.isascii() else 4
    try:  # the bound counts separators inside strings too: when it fits, the document fits
        envelope.check(what, _tokens(text), len(text), width)
        return
    except BudgetExceededError:
        pass
    structure, _ = _STRING.subn("", text)
    envelope.check(what, _tokens(structure), len(text) - len(structure), width)


def loads(raw: bytes | str, envelope: ParseEnvelope = DEFAULT_ENVELOPE, what: str = "JSON document") -> Any:
    """Parse ``raw``; raises ``ValueError`` (``UnicodeDecodeError`` and ``JSONDecodeError`` are
    ones) for anything that is not a JSON document this process can hash and store, and
    ``BudgetExceededError`` for one over ``envelope``."""
    if not isinstance(raw, str):
        raw = bytes(raw)
        raw = raw.decode(json.detect_encoding(raw))
    text = raw
    measure(text, envelope, what)
    try:
        data = json.loads(text)
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None
    if _SURROGATE_ESCAPE.search(text) and _has_lone_surrogate(data):
        data = _replace_lone_surrogates(data)
    return data


def _has_lone_surrogate(data: Any) -> bool:
    try:
        json.dumps(data, ensure_ascii=False, allow_nan=True).encode("utf-8")  # C speed; pairs were joined by loads
        return False
    except UnicodeEncodeError:
        return True
    except (ValueError, RecursionError):  # nesting deeper than the encoder goes: walk it
        return True


def _clean(text: str) -> str:
    return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


def _replace_lone_surrogates(data: Any) -> Any:
    """``data`` with every string (keys too) freed of lone surrogates; iterative, as ``data`` may
    nest as deep as the parser allows."""
    def fix(value: Any) -> Any:
        return _clean(value) if isinstance(value, str) else value

    root = [fix(data)]
    stack: list[tuple[Any, Any]] = [(root, 0)]
    while stack:
        parent, key = stack.pop()
        node = parent[key]
        if isinstance(node, dict):
            items = [(fix(k), fix(v)) for k, v in node.items()]
            node.clear()
            node.update(items)
            stack.extend((node, k) for k, v in items if isinstance(v, (dict, list)))
        elif isinstance(node, list):
            for i, v in enumerate(node):
                node[i] = fix(v)
                if isinstance(v, (dict, list)):
                    stack.append((node, i))
    return root[0]
