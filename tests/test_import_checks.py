"""The content checks of an import (audit/importer_checks.py), on their own: the reply-post relevance
check warns on shuffled replies and not on aligned ones, at the rates its one-sided 1% rule promises;
row blocks; recurring replies."""

from __future__ import annotations

import random

import numpy as np
import pandas as pd
import pytest
from release_sim import post_text, reply_text

from audit.errors import AuditError
from audit.importer_checks import relevance, row_blocks, tfidf_cosine


def _sample(seed: int, shuffle: bool, n_posts: int = 10, k: int = 3) -> pd.DataFrame:
    rng = random.Random(seed)
    rows = [dict(file="f.tsv", condition="Black", post_id=f"p{i}", post=post_text(100 * seed + i),
                 reply=reply_text(rng, post_text(100 * seed + i), 30)) for i in range(n_posts) for _ in range(k)]
    d = pd.DataFrame(rows)
    if shuffle:
        d["reply"] = d["reply"].sample(frac=1, random_state=seed).to_numpy()
    return d


def test_shuffled_replies_are_warned_about_and_aligned_ones_are_not():
    warned_shuffled = sum(relevance(_sample(s, True))[0]["warn"] for s in range(40))
    warned_aligned = sum(relevance(_sample(s, False))[0]["warn"] for s in range(40))
    assert warned_aligned == 0
    assert warned_shuffled >= 37  # warns unless the ranks are above chance at one-sided 1%: ~99% of shuffles


def test_replies_that_share_no_word_with_any_post_cannot_be_checked():
    d = _sample(0, False)
    d["reply"] = "Take care of yourself."
    (r,) = relevance(d)
    assert not r["checkable"] and not r["warn"]


def test_tfidf_cosine_of_identical_texts_is_one_and_of_disjoint_texts_zero():
    s = tfidf_cosine(["apples and pears", "stormy weather"], ["pears apples", "rainy weather today"])
    assert s[0, 0] == pytest.approx(1.0) and s[0, 1] == 0 and 0 < s[1, 1] < 1


def test_row_blocks():
    t = ["a", "a", "b", "b", "c", "c"]
    b, s = row_blocks(t, None, 2, False, "f")
    assert b.tolist() == [1, 1, 2, 2, 3, 3] and s.tolist() == [0, 1, 0, 1, 0, 1]
    b, s = row_blocks(["a", "a", "a", "b"], [0, 1, 0, 0], None, True, "f")  # a repeated sample index: new post
    assert b.tolist() == [1, 1, 2, 3] and s.tolist() == [0, 1, 0, 0]
    with pytest.raises(AuditError, match="not a multiple of 4"):
        row_blocks(t, None, 4, False, "f")
    assert np.array_equal(row_blocks(t, None, None, False, "f")[0], np.arange(1, 7))
