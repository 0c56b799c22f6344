"""Checks that an import (:mod:`audit.importer`) runs on the content of a release, beyond its shape.

Each catches a release that imports cleanly but changes a conclusion (issue 27):

- :func:`row_blocks` - which rows of a file are one post (``match: rows``): every row, blocks of
  ``rows_per_post`` rows, or runs of rows with one post text (a ``sample`` column or
  ``repeated_posts: samples``). Samples are repeated replies to one post; counted as posts they
  inflate the effective sample size K-fold and make the confidence intervals too narrow.
- :func:`repeated_texts` - identical post texts within one condition that the spec did not declare
  as samples or as distinct posts: an error, never a silent guess.
- :func:`one_id_one_text` - two different texts under one post id (and condition): an error.
- :func:`identical_conditions` - per-column content hashes: two conditions with identical post
  texts (a file mislabelled upstream: its posts carry another condition's cue) or identical replies
  (the same reply file given twice) are an error naming both files and conditions.
- :func:`missing_cues` - a condition whose post texts lack its declared cue text.
- :func:`recurring_replies` - one reply text recurring across many rows and posts (a failure
  placeholder such as ``"ERROR!"``): flagged and counted.
- :func:`relevance` - whether each reply is more similar to its own post than to the other posts
  (TF-IDF cosine): a file whose replies are not has likely been shuffled.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections import Counter
from typing import Any

import numpy as np
import pandas as pd

from .errors import AuditError

__all__ = ["fold", "text_hash", "row_blocks", "repeated_texts", "one_id_one_text", "identical_conditions",
           "missing_cues", "recurring_replies", "relevance", "tfidf_cosine"]


def fold(s: str) -> str:
    """Case and whitespace folded: how two texts are compared."""
    return " ".join(s.casefold().split())


def _folder():
    """:func:`fold` with a cache per call site: the texts of a release repeat (samples, models), so
    each distinct text is folded, and held folded, once."""
    cache: dict[str, str] = {}

    def f(s: str) -> str:
        out = cache.get(s)
        if out is None:
            out = cache[s] = fold(s)
        return out
    return f


def text_hash(s: str) -> int:
    """A 63-bit hash of a text (BLAKE2b), to compare and count replies without holding them."""
    return int.from_bytes(hashlib.blake2b(s.encode("utf-8", "surrogatepass"), digest_size=8).digest(), "little") >> 1


# --------------------------------------------------------------------------- posts and samples


def row_blocks(texts: list[str | None], samples: list[int | None] | None, rows_per_post: int | None,
               runs: bool, where: str) -> tuple[np.ndarray, np.ndarray]:
    """Post number (1-based, in file order) and sample index of each row of one file (``match: rows``).

    - ``rows_per_post`` K: rows 1..K are post 1, K+1..2K post 2, ...; every block must hold one post text
      and the file a whole number of blocks;
    - ``runs`` (a sample column or ``repeated_posts: samples``): a post is a run of consecutive rows with
      one (folded) text; a sample index seen before in the run starts a new post;
    - else every row is a post.
    """
    n = len(texts)
    if rows_per_post:
        k = rows_per_post
        if n % k:
            raise AuditError(f"rows_per_post: {k}, but the file has {n} rows (not a multiple of {k})", where=where,
                             fix="check the file for a lost or extra row, or correct rows_per_post")
        block = np.arange(n) // k
        for b0 in range(0, n, k):
            first = texts[b0]
            for j in range(b0 + 1, b0 + k):
                if texts[j] is not None and first is not None and fold(texts[j]) != fold(first):
                    raise AuditError(
                        f"rows_per_post: {k}, but rows {b0 + 1}-{b0 + k} hold different post texts (row {b0 + 1}: "
                        f"{first[:40]!r}, row {j + 1}: {texts[j][:40]!r})", where=where,
                        fix="check rows_per_post (every post must have exactly K consecutive rows), or give a "
                            "sample column or repeated_posts: samples for blocks of varying length")
        sample = np.arange(n) % k
        return block + 1, sample
    if runs:
        block = np.zeros(n, dtype=np.int64)
        sample = np.zeros(n, dtype=np.int64)
        b, seen, prev = 0, set(), None
        for i, t in enumerate(texts):
            key = fold(t) if t is not None else None
            s = samples[i] if samples is not None else None
            if i == 0 or key != prev or (s is not None and s in seen):
                b, seen = b + 1, set()
            sample[i] = s if s is not None else len(seen)
            seen.add(sample[i])
            block[i], prev = b, key
        return block, sample
    return np.arange(1, n + 1), np.zeros(n, dtype=np.int64)


def repeated_texts(rows: pd.DataFrame, names: list[str], match: str) -> None:
    """Identical post texts within one condition (file, group, cue type) under different posts: an
    error asking the user to declare them (samples or distinct posts). ``rows`` has ``_file, _row,
    group_label, cue_type, variant, post_id``."""
    d = rows.loc[rows["variant"].notna(), ["_file", "group_label", "cue_type", "variant", "post_id", "_row"]]
    fo = _folder()
    keys = pd.DataFrame({"f": d["_file"].to_numpy(), "g": d["group_label"].astype(str).to_numpy(),
                         "c": d["cue_type"].astype(object).fillna("").to_numpy(),
                         "t": [fo(t) for t in d["variant"]], "p": d["post_id"].to_numpy(),
                         "r": d["_row"].to_numpy()})
    per = keys.groupby(["f", "g", "c", "t"], sort=False)["p"].nunique()
    rep = per[per > 1]
    if rep.empty:
        return
    f, g, _c, t = rep.index[0]
    ex = keys[(keys["f"] == f) & (keys["g"] == g) & (keys["t"] == t)]
    first_rows = sorted(ex.drop_duplicates("p")["r"].tolist())[:2]
    n_texts = len(rep)
    n_rows = int(keys.set_index(["f", "g", "c", "t"]).index.isin(rep.index).sum())
    if match == "rows":
        fix = ("declare what they are: rows_per_post: K (--rows-per-post K) when each post has K consecutive rows "
               "(its samples), a sample column (columns.sample), or repeated_posts: samples when consecutive rows "
               "with one text are samples of one post; repeated_posts: posts (--repeated-posts posts) when they "
               "are different posts that share a text")
    else:
        fix = ("give the rows of one post one post id (they are then its samples), or declare repeated_posts: posts "
               "(--repeated-posts posts) when they are different posts that share a text")
    raise AuditError(
        f"{n_texts} post text(s) recur within one condition ({n_rows} rows), e.g. group '{g}' in {names[int(f)]} rows "
        f"{' and '.join(map(str, first_rows))} ({ex['t'].iloc[0][:40]!r}): samples of one post or different posts? "
        "Counting samples as posts would overstate the effective sample size", where=names[int(f)], fix=fix)


def one_id_one_text(rows: pd.DataFrame, names: list[str], post_id_col: str | None) -> None:
    """One post id, one text: per (post id, group, cue type) one variant text, and per post id one text
    in the ``post`` column (H5: two posts sharing an id were merged silently)."""
    d = rows.loc[rows["variant"].notna(), ["_file", "_row", "group_label", "cue_type", "variant", "post_id"]]
    fo = _folder()
    folded = pd.Series([fo(t) for t in d["variant"]], index=d.index)
    keys = pd.DataFrame({"p": d["post_id"], "g": d["group_label"].astype(str),
                         "c": d["cue_type"].astype(object).fillna(""), "t": folded})
    per = keys.groupby(["p", "g", "c"], sort=False)["t"].nunique()
    bad = per[per > 1]
    col = f"column '{post_id_col}'" if post_id_col else "the post ids"
    if not bad.empty:
        p, g, _ = bad.index[0]
        ex = d[(keys["p"] == p) & (keys["g"] == g)].drop_duplicates("variant")
        a, b = ex.iloc[0], ex.iloc[1]
        raise AuditError(
            f"post id '{p}' (group '{g}') has {int(bad.iloc[0])} different texts: {names[int(a['_file'])]} row "
            f"{int(a['_row'])} {a['variant'][:40]!r} and {names[int(b['_file'])]} row {int(b['_row'])} "
            f"{b['variant'][:40]!r} ({len(bad)} id(s) in all); one id, one text", where=col,
            fix="give each post its own id (two posts under one id would be merged into one); if the texts are "
                "different cues of one group, give them a cue_type column")
    if "post" in rows and rows["post"].notna().any():
        d = rows.loc[rows["post"].notna(), ["_file", "_row", "post", "post_id"]]
        per = pd.DataFrame({"p": d["post_id"], "t": [fo(t) for t in d["post"]]}).groupby("p")["t"].nunique()
        bad = per[per > 1]
        if not bad.empty:
            p = bad.index[0]
            ex = d[d["post_id"] == p].drop_duplicates("post")
            raise AuditError(
                f"post id '{p}' has {int(bad.iloc[0])} different original post texts ({names[int(ex.iloc[0]['_file'])]} "
                f"row {int(ex.iloc[0]['_row'])} and {names[int(ex.iloc[1]['_file'])]} row {int(ex.iloc[1]['_row'])}); "
                "one id, one text", where=col, fix="give each post its own id")


# --------------------------------------------------------------------------- conditions


def _condition_label(group: str, cue: str) -> str:
    return group if cue in ("", "control") else f"{group} ({cue})"


def identical_conditions(rows: pd.DataFrame, names: list[str], sha: list[str], force: bool) -> list[str]:
    """Per-column content hashes across conditions (group x cue type).

    Two files with the same bytes, two conditions with the same set of (post id, post text), or two
    conditions with the same multiset of answered replies (at least two distinct ones) are an error
    naming both files and conditions; with ``force`` they are warnings (returned) instead.
    """
    problems: list[str] = []
    seen: dict[str, int] = {}
    for i, h in enumerate(sha):
        if h in seen:
            j = seen[h]
            problems.append(f"files[{j}] {names[j]} and files[{i}] {names[i]} are the same file (sha256 {h[:16]}...), "
                            f"given for two conditions")
        seen.setdefault(h, i)
    conds: dict[tuple[str, str], dict[str, Any]] = {}
    fo = _folder()
    cols = rows[["group_name", "cue", "post_id", "text", "_rstate", "_rhash", "_file"]]
    for (g, c), d in cols.groupby(["group_name", "cue"], sort=True):
        posts = sorted({(str(p), fo(t)) for p, t in zip(d["post_id"], d["text"])})
        ok = d.loc[d["_rstate"] == 0, "_rhash"].to_numpy()
        conds[(g, c)] = dict(
            files=sorted({names[int(f)] for f in d["_file"]}),
            post=hashlib.sha256(repr(posts).encode("utf-8", "surrogatepass")).hexdigest(),
            reply=hashlib.sha256(np.sort(ok).tobytes()).hexdigest() if len(np.unique(ok)) >= 2 else None)
    keys = list(conds)
    for what, col in (("post texts", "post"), ("replies", "reply")):
        by: dict[str, tuple[str, str]] = {}
        for k in keys:
            h = conds[k][col]
            if h is None:
                continue
            if h in by:
                a, b = by[h], k
                fa, fb = ", ".join(conds[a]["files"]), ", ".join(conds[b]["files"])
                problems.append(f"conditions '{_condition_label(*a)}' ({fa}) and '{_condition_label(*b)}' ({fb}) have "
                                f"identical {what}" + (": a file mislabelled upstream carries another condition's "
                                                       "posts" if col == "post" else ": the same replies were given "
                                                       "for two conditions (or the model answered both word for "
                                                       "word alike, e.g. greedy decoding that ignores the cue)"))
            else:
                by[h] = k
    if problems and not force:
        raise AuditError("; ".join(problems), where="the release's files",
                         fix="check which file belongs to which condition (files[i].values, the group column); "
                             "--force (force: true) imports anyway, with a warning in the report")
    return [p + " (imported with --force)" for p in problems]


def missing_cues(rows: pd.DataFrame, names: list[str], cues: dict[str, str], file_cues: dict[int, str],
                 force: bool) -> list[str]:
    """Every non-control row of a condition with a declared cue text (``cues: {group: text}`` or
    ``files[i].cue``) must contain it (case and whitespace folded). Violations are an error naming the
    condition, file, count and first row; with ``force`` a warning."""
    problems: list[str] = []
    if not cues and not file_cues:
        return []
    d = rows.loc[~rows["is_control"].to_numpy(), ["_file", "_row", "group_label", "text"]]
    want = [file_cues.get(int(f)) or cues.get(str(g)) for f, g in zip(d["_file"], d["group_label"])]
    if not any(want):
        return []
    fo = _folder()
    miss = np.array([bool(w) and fold(w) not in fo(t) for w, t in zip(want, d["text"])])
    if not miss.any():
        return []
    bad = d[miss]
    for (f, g), part in bad.groupby(["_file", "group_label"], sort=True):
        n_cond = int(((d["_file"] == f) & (d["group_label"] == g)).sum())
        cue = file_cues.get(int(f)) or cues.get(str(g))
        r = part.iloc[0]
        problems.append(f"{len(part)} of {n_cond} post texts of condition '{g}' in {names[int(f)]} lack its cue "
                        f"{cue!r} (first: row {int(r['_row'])} {r['text'][:50]!r})")
    if not force:
        raise AuditError("; ".join(problems), where="the release's files",
                         fix="the file may hold another condition's posts (mislabelled upstream): check it and its "
                             "files[i].values; correct the cue text if it is worded otherwise; --force imports anyway, "
                             "with a warning in the report")
    return [p + " (imported with --force)" for p in problems]


def recurring_replies(rows: pd.DataFrame, previews: dict[int, str], *, min_rows: int = 5,
                      min_share: float = 0.02, min_posts: int = 3, short_chars: int = 40) -> list[dict[str, Any]]:
    """Answered reply texts that recur in at least ``max(min_rows, min_share * rows)`` rows across at
    least ``min_posts`` posts: ``[{text, rows, posts, share, short}]``, most frequent first. A model rarely
    gives one reply word for word to many different posts; a failure placeholder does. ``short``: at
    most ``short_chars`` characters (a placeholder such as ``"ERROR!"`` rather than a template answer)."""
    ok = rows.loc[rows["_rstate"] == 0, ["_rhash", "post_id"]]
    if ok.empty:
        return []
    counts = ok["_rhash"].value_counts()
    need = max(min_rows, math.ceil(min_share * len(rows)))
    cand = counts[counts >= need]
    out = []
    for h, n in cand.items():
        posts = ok.loc[ok["_rhash"] == h, "post_id"].nunique()
        if posts >= min_posts:
            text = previews.get(int(h))
            out.append(dict(text=text if text is not None else "(a long text)", rows=int(n), posts=int(posts),
                            share=float(n / len(rows)), short=bool(text is not None and len(text) <= short_chars)))
    return out


# --------------------------------------------------------------------------- reply-post relevance

_TOKEN = re.compile(r"[^\W_]{2,}", re.UNICODE)
_STOP = frozenset(
    "a an and are as at be but by for from had has have he her his i if in into is it its me my no not of on or our "
    "she so that the their them then there they this to too was we were what when which who will with you your "
    "i'm it's don't can't am been do does did just very".split())


def _tokens(text: str) -> list[str]:
    return [t for t in _TOKEN.findall(text.casefold()) if t not in _STOP]


def tfidf_cosine(replies: list[str], posts: list[str]):
    """Cosine similarities (replies x posts) of TF-IDF vectors, as a dense array.

    Term weights ``tf * idf`` with ``idf = ln((1 + N) / (1 + df)) + 1`` over the N texts of both lists
    (the smoothed idf of scikit-learn's ``TfidfVectorizer``, Salton & Buckley 1988), rows L2-normalised.
    Written here with scipy.sparse because scikit-learn is not a dependency of the package.
    """
    from scipy import sparse

    docs = [_tokens(t) for t in replies] + [_tokens(t) for t in posts]
    vocab: dict[str, int] = {}
    ind, ptr, val = [], [0], []
    for toks in docs:
        c = Counter(toks)
        for w, n in c.items():
            ind.append(vocab.setdefault(w, len(vocab)))
            val.append(float(n))
        ptr.append(len(ind))
    m = sparse.csr_matrix((val, ind, ptr), shape=(len(docs), max(len(vocab), 1)))
    df = np.bincount(m.indices, minlength=m.shape[1])
    idf = np.log((1 + len(docs)) / (1 + df)) + 1.0
    m = m @ sparse.diags(idf)
    norms = np.sqrt(np.asarray(m.multiply(m).sum(axis=1)).ravel())
    norms[norms == 0] = 1.0
    m = sparse.diags(1.0 / norms) @ m
    r, p = m[: len(replies)], m[len(replies):]
    return np.asarray((r @ p.T).todense())


def relevance(sample: pd.DataFrame, *, min_posts: int = 5, z: float = 2.326) -> list[dict[str, Any]]:
    """For each (file, condition) of ``sample`` (columns ``file, condition, post_id, post, reply``), how
    much more similar each reply is to its own post than to the condition's other posts.

    Per reply, the percentile rank of its own post among the condition's posts by TF-IDF cosine
    (:func:`tfidf_cosine`): the share of other posts less similar (ties count half). With replies
    unrelated to their posts (shuffled rows) the ranks are uniform, mean 1/2, SD ``sqrt(1/12)``; the
    check warns when the mean rank is not above ``1/2 + z sqrt(1/12) / sqrt(n)`` (one-sided, 1%), i.e.
    the replies are no more similar to their own posts than to others. A condition whose replies share
    no word with any post cannot be checked (``checkable`` False). Returns one dict per condition:
    ``file, condition, replies, posts, mean_rank, own_similarity, other_similarity, checkable, warn``.
    """
    out = []
    for (f, cond), d in sample.groupby(["file", "condition"], sort=True):
        posts = d.drop_duplicates("post_id")[["post_id", "post"]]
        if len(posts) < min_posts:
            continue
        pid = {p: i for i, p in enumerate(posts["post_id"])}
        s = tfidf_cosine(d["reply"].tolist(), posts["post"].tolist())
        own_i = np.array([pid[p] for p in d["post_id"]])
        own = s[np.arange(len(d)), own_i]
        k = s.shape[1] - 1
        others_mean = (s.sum(axis=1) - own) / k
        below = (s < own[:, None]).sum(axis=1)
        ties = (s == own[:, None]).sum(axis=1) - 1
        rank = (below + 0.5 * ties) / k
        n = len(d)
        checkable = bool(s.max() > 0)
        mean_rank = float(rank.mean())
        threshold = 0.5 + z * math.sqrt(1 / 12) / math.sqrt(n)
        out.append(dict(file=f, condition=cond, replies=int(n), posts=int(len(posts)), mean_rank=mean_rank,
                        own_similarity=float(own.mean()), other_similarity=float(others_mean.mean()),
                        checkable=checkable, warn=bool(checkable and mean_rank <= threshold)))
    return out
