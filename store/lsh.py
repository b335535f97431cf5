"""MinHash LSH banding over vocabularies.

A vocabulary's MinHash (``fingerprints.tokenizer.MINHASH_PERMUTATIONS`` = 128 values) is cut into
``LSH_BANDS`` bands of ``LSH_ROWS`` values; two vocabularies become candidates when any band is
equal. With Jaccard similarity s, P(candidate) = 1 - (1 - s^r)^b, an S-curve whose midpoint is
about (1/b)^(1/r). With b=32, r=4 the threshold is (1/32)^(1/4) ≈ 0.42:

    s = 0.2 -> 5%   s = 0.3 -> 23%   s = 0.42 -> 64%   s = 0.5 -> 87%   s = 0.6 -> 98.8%   s = 0.7 -> 99.97%

The case that needs LSH is a copied-and-extended tokenizer (identical vocabularies already meet on
the exact ``vocab`` key): Chinese-LLaMA grows LLaMA's 32,000 tokens to 49,953, s = 0.64, found
with probability 99.7%. Lower thresholds (b=64, r=2) would pair most same-family BPE vocabularies
and flood the re-ranker; a higher one (b=16, r=8, threshold 0.71) would miss that case 63% of
the time.
"""

from __future__ import annotations

import hashlib
import struct

import numpy as np

LSH_BANDS = 32
LSH_ROWS = 4


def band_buckets(minhash: list[int]) -> list[tuple[int, int]]:
    """(band, bucket) pairs of a MinHash signature; bucket is a signed 64-bit hash of the band."""
    values = np.asarray(minhash, dtype=np.uint64)
    if values.size != LSH_BANDS * LSH_ROWS or not values.any():
        return []
    out = []
    for band, chunk in enumerate(values.reshape(LSH_BANDS, LSH_ROWS)):
        digest = hashlib.blake2b(chunk.astype("<u8").tobytes(), digest_size=8).digest()
        out.append((band, struct.unpack("<q", digest)[0]))
    return out


def minhash_to_bytes(minhash: list[int]) -> bytes:
    return np.asarray(minhash, dtype="<u8").tobytes()


def minhash_from_bytes(raw: bytes) -> np.ndarray:
    return np.frombuffer(raw, dtype="<u8")


def estimated_jaccard(a: np.ndarray, b: np.ndarray) -> float:
    if a.size == 0 or a.size != b.size:
        return 0.0
    return float(np.mean(a == b))
