"""Request keys as fixed-width byte codes, for sorting and matching millions of them in numpy.

Every request key this tool makes is a SHA-256 digest in 64 lowercase hex digits; as a code it is
``b"\x01"`` + its 32 raw bytes (half the memory of the text). Any other key (an imported release's own
ids) is ``b"\x02"`` + its UTF-8 bytes; the prefixes keep the two kinds apart, so a code names one key.
Used by the analysis's pass over the store (:meth:`audit.store.RunStore.score_cells`, and
:func:`audit.arrow_scan.key_codes`, which makes the same codes from Arrow buffers).
"""

from __future__ import annotations

import numpy as np

__all__ = ["KeyFinder", "find_keys", "key_bytes", "key_code", "key_prefix"]


def key_bytes(keys) -> np.ndarray:
    """Request keys as a fixed-width bytes array for sorting and matching in numpy, one code per key
    whatever the chunk it comes in: a key of 64 lowercase hex digits (every key this tool makes: a
    SHA-256 digest) is ``b"\\x01"`` + its 32 raw bytes, any other key ``b"\\x02"`` + its UTF-8 bytes (the
    prefixes keep the two kinds apart). Half the memory of the text: 10M keys are 330 MB, not 640 MB."""
    n = len(keys)
    if not n:
        return np.array([], dtype="S33")
    joined = "".join(keys)
    if len(joined) == 64 * n and set(map(len, keys)) == {64} and not any(c in joined for c in "ABCDEF"):
        try:
            raw = bytes.fromhex(joined)
        except ValueError:
            raw = None
        if raw is not None:
            out = np.empty(n, dtype="S33")
            v = out.view(np.uint8).reshape(n, 33)
            v[:, 0] = 1
            v[:, 1:] = np.frombuffer(raw, dtype=np.uint8).reshape(n, 32)
            return out
    return np.array([key_code(k) for k in keys], dtype=bytes)


def key_code(k: str) -> bytes:
    """One key's code (:func:`key_bytes` of one key)."""
    if len(k) == 64 and not any(c in k for c in "ABCDEF"):
        try:
            return b"\x01" + bytes.fromhex(k)
        except ValueError:
            pass
    return b"\x02" + k.encode()


def key_prefix(codes: np.ndarray) -> np.ndarray:
    """The first 8 bytes of each fixed-width key code as a big-endian uint64: sorted codes have sorted
    prefixes (bytes compare as the integer does), and numpy searches uint64 ~3x faster than 33-byte strings."""
    w = codes.dtype.itemsize
    head = np.zeros((len(codes), 8), dtype=np.uint8)
    head[:, :min(w, 8)] = codes.view(np.uint8).reshape(len(codes), w)[:, :8]
    return head.view(">u8").ravel().astype(np.uint64)


def find_keys(sorted_codes: np.ndarray, sorted_prefix: np.ndarray, codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(pos, hit)``: for each of ``codes`` its index in ``sorted_codes`` and whether it is there. Searched by
    the 8-byte prefix, then checked whole; a code whose prefix several stored codes share (two SHA-256 keys
    with the same first 64 bits: almost never) is searched again by the whole code."""
    if not len(sorted_codes):
        return np.zeros(len(codes), dtype=np.int64), np.zeros(len(codes), dtype=bool)
    pos = np.searchsorted(sorted_prefix, key_prefix(codes))
    pos[pos >= len(sorted_codes)] = 0
    return _checked(sorted_codes, codes, pos)


def _checked(sorted_codes: np.ndarray, codes: np.ndarray, pos: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(pos, hit)`` from candidate positions found by prefix: each checked against the whole code, and a
    code not found so searched again by the whole code (``pos`` is updated in place)."""
    hit = sorted_codes[pos] == codes
    again = np.flatnonzero(~hit)
    if len(again):
        p2 = np.searchsorted(sorted_codes, codes[again])
        p2[p2 >= len(sorted_codes)] = 0
        pos[again] = p2
        hit[again] = sorted_codes[p2] == codes[again]
    return pos, hit


#: Largest set of codes :class:`KeyFinder` searches through a hash table of their prefixes.
HASH_MAX_KEYS = 4_000_000


class KeyFinder:
    """:func:`find_keys` in one sorted set of codes, searched many times (the pass looks up every score's
    request): where the stored codes' 8-byte prefixes are distinct (SHA-256 keys: always, but for one
    chance in ~10^5 at 10M keys), a hash table of the prefixes (``pandas.Index.get_indexer``, ~5x faster than
    a binary search over a million prefixes, which misses the cache at every step); else the binary search.
    The answer is the same either way: a prefix found is checked against the whole code, and a code not
    found so is searched again by the whole code, as :func:`find_keys` does. Above :data:`HASH_MAX_KEYS`
    codes, the binary search too: the table is ~25 bytes a key (250 MB at 10M keys, where the pass's
    process is near its 2 GB budget)."""

    def __init__(self, sorted_codes: np.ndarray):
        import pandas as pd

        self.codes = sorted_codes
        self.prefix = key_prefix(sorted_codes)
        self.index = None
        if 0 < len(sorted_codes) <= HASH_MAX_KEYS:
            index = pd.Index(self.prefix)
            self.index = index if index.is_unique else None

    def find(self, codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(pos, hit)`` of :func:`find_keys`."""
        if self.index is None:
            return find_keys(self.codes, self.prefix, codes)
        pos = self.index.get_indexer(key_prefix(codes)).astype(np.int64)
        pos[pos < 0] = 0
        return _checked(self.codes, codes, pos)
