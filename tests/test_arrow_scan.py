"""The analysis pass's columnar reads (audit/arrow_scan.py) and key look-ups (audit/store.py) give the
codes and matches of the row-by-row code they replaced, for every kind of request key."""

import hashlib

import numpy as np
import pyarrow as pa

from audit.arrow_scan import key_codes, scan
import pytest

from audit import keycodes
from audit.keycodes import KeyFinder, find_keys as _find_keys, key_bytes as _key_bytes, key_prefix as _key_prefix


def _keys(n: int, seed: int = 0) -> list[str]:
    return [hashlib.sha256(f"{seed}-{i}".encode()).hexdigest() for i in range(n)]


def test_key_codes_equal_the_python_codes_for_hex_and_any_other_key():
    hexes = _keys(300)
    assert (key_codes(pa.array(hexes)) == _key_bytes(hexes)).all()
    assert (key_codes(pa.array(hexes).slice(7, 100)) == _key_bytes(hexes[7:107])).all()  # an offset into the buffer
    assert (key_codes(pa.array(hexes, type=pa.large_string())) == _key_bytes(hexes)).all()
    # upper-case hex, other lengths, non-ASCII, a hex-looking key with one bad digit: the "\x02" + UTF-8 codes
    odd = hexes[:3] + [hexes[3].upper(), "post003-Black|warm|1", "é" * 64, hexes[4][:63] + "g", ""]
    got, want = key_codes(pa.array(odd)), _key_bytes(odd)
    assert got.tolist() == want.tolist()
    assert got[3] != got[0] and got[3][:1] == b"\x02" and got[0][:1] == b"\x01"
    assert len(set(got.tolist())) == len(odd)  # one code per key: upper and lower case apart


def test_find_keys_by_prefix_matches_a_full_search_even_where_prefixes_collide():
    codes = _key_bytes(_keys(2000, seed=1) + ["post-1", "post-2"])
    stored = codes[::2].copy()
    twins = np.array([b"\x01" + b"\x00" * 7 + bytes([k]) * 25 for k in (1, 2, 3)], dtype="S33")  # one 8-byte prefix
    stored = np.sort(np.concatenate([stored, twins[:2]]))
    asked = np.concatenate([codes, twins, np.array([b"\x01" + b"\x00" * 7], dtype="S33")])
    pos, hit = _find_keys(stored, _key_prefix(stored), asked)
    assert (hit == np.isin(asked, stored)).all()
    assert (stored[pos[hit]] == asked[hit]).all()
    assert hit[-4] and hit[-3] and not hit[-2] and not hit[-1]  # both twins found, the third and a bare prefix not


@pytest.mark.parametrize("hash_max", [10**9, 0])
@pytest.mark.parametrize("twins", [False, True])
def test_key_finder_equals_find_keys_by_hash_or_binary_search(monkeypatch, hash_max, twins):
    """The hash table of prefixes (distinct prefixes, small sets) and the binary search (shared prefixes,
    or above HASH_MAX_KEYS) give find_keys' positions and hits."""
    monkeypatch.setattr(keycodes, "HASH_MAX_KEYS", hash_max)
    codes = _key_bytes(_keys(3000, seed=2) + ["imported-id-1", "imported-id-2"])
    stored = codes[::3].copy()
    if twins:  # two stored codes with one 8-byte prefix: no hash table
        stored = np.concatenate([stored, np.array([b"\x01" + b"\x00" * 7 + bytes([k]) * 25 for k in (1, 2)],
                                                  dtype="S33")])
    stored = np.sort(stored)
    finder = KeyFinder(stored)
    assert (finder.index is not None) == (hash_max > 0 and not twins)
    asked = np.concatenate([codes, stored[::-1], np.array([b"\x01" + b"\x00" * 7], dtype="S33")])
    pos, hit = finder.find(asked)
    want_pos, want_hit = _find_keys(stored, _key_prefix(stored), asked)
    assert np.array_equal(hit, want_hit) and np.array_equal(pos[hit], want_pos[want_hit])
    assert (hit == np.isin(asked, stored)).all() and (stored[pos[hit]] == asked[hit]).all()
    assert not KeyFinder(stored[:0]).find(asked)[1].any()


def test_scan_reads_a_query_in_order_in_tables_of_at_least_the_given_rows(tmp_path):
    import sqlite3

    path = tmp_path / "t.sqlite"
    with sqlite3.connect(path) as c:
        c.execute("CREATE TABLE t (k TEXT, v REAL)")
        c.executemany("INSERT INTO t VALUES (?, ?)", [(f"k{i}", None if i % 7 == 0 else i / 3) for i in range(200_000)])
    parts = list(scan(path, "SELECT k, ifnull(v, 0.0), v IS NULL FROM t WHERE rowid > ?", (10,), rows=70_000))
    assert len(parts) >= 2 and all(p.num_rows >= 70_000 for p in parts[:-1])  # whole batches of the driver
    assert sum(p.num_rows for p in parts) == 199_990
    k = [x for p in parts for x in p.column(0).to_pylist()]
    assert k[0] == "k10" and k[-1] == "k199999"
    null = np.concatenate([p.column(2).to_numpy() for p in parts])
    assert null.sum() == sum(1 for i in range(10, 200_000) if i % 7 == 0)
