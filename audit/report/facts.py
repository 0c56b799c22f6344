"""What the report needs of a run's replies and scores, read from the store without holding them.

A million-reply run has a million reply rows and seven million scores; the report used to read them
all into DataFrames (3.8 GB). Everything here is either

- an **aggregate** computed by SQLite (``GROUP BY``): reply status counts per model, the models' runtimes,
  distinct errors of failed requests, the per-group score summary (``n``, mean, SD), counts of scored
  and unscored replies; its result has a row per group, not per reply;
- a **bounded read**: the first request per model or style, the replies of the few posts the report shows
  as examples, the rated replies, the reply sample of the distribution figure (at most
  :data:`SAMPLE_REPLIES` replies), a chunk of ``tables/replies.csv``.

The rows, orders and formulas are those of the frames they replace (``RunStore.replies_df`` order:
post, group, cue type, style, sample, request key), so a small run's report is unchanged.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from typing import Any

import pandas as pd

from ..store import RunStore, _expand_attributes

#: The distribution figure draws the scores of at most this many answered replies: every reply of a
#: smaller run, else the replies with the smallest request keys (SHA-256 content addresses, so the
#: sample is a fixed pseudo-random draw that does not depend on group, model or post).
SAMPLE_REPLIES = 50_000
#: Distinct error messages of failed requests listed in the limitations (the rest are counted).
MAX_ERRORS = 200

REPLY_COLUMNS = ("q.request_key, q.purpose, q.variant_id, q.subject_key, q.model_label, q.endpoint_id, q.model_name,"
                 " q.style, q.style_hash, q.sample_index, q.params_json, r.status, r.finish_reason, r.prompt_tokens,"
                 " r.completion_tokens, r.latency_s, r.attempts, r.model_reported, r.runtime, r.runtime_version,"
                 " r.error, r.created_at AS replied_at, r.flags, v.post_id, v.topic, v.risk, v.group_name,"
                 " v.cue_type, v.alternative, v.attributes_json")
REPLY_ORDER = " ORDER BY v.post_id, v.group_name, v.cue_type, q.style, q.sample_index, q.request_key"
_FROM = (" FROM requests q LEFT JOIN replies r ON r.request_key = q.request_key"
         " LEFT JOIN variants v ON v.variant_id = q.variant_id")
#: The same rows but those of a request without a stored variant, walked in the variants' post order
#: (CROSS JOIN: SQLite keeps the variants outside, through their post index): a query ordered by post
#: with a LIMIT reads the first posts' requests, not the whole run (first_rows: 18 s of a million-reply
#: report's SQL, ~0.1 s so).
_FROM_POSTS = (" FROM variants v CROSS JOIN requests q ON q.variant_id = v.variant_id"
               " LEFT JOIN replies r ON r.request_key = q.request_key")


class ReplyFacts:
    """SQL over the current design's reply requests (the rows of ``RunStore.replies_df('reply')``)."""

    def __init__(self, store: RunStore):
        self.store = store
        # the unary + keeps SQLite from driving a query through an index these terms barely narrow
        # (every request is a reply request of the design): a walk of the purpose index, or of the design's
        # key list, looks up each request at random; a plain scan reads the table in order. A list of
        # request keys (rows_of) still goes through the primary key.
        self.cond, self.params = store._design_filter("+q.request_key", False)

    # ------------------------------------------------------------------ helpers
    def where(self, extra: str = "", *, keyed: bool = False) -> str:
        """WHERE clause of the design's reply requests and ``extra``. ``keyed``: ``extra`` names a few
        request keys; the design is then checked per row (a primary-key look-up) instead of through
        the list of the design's keys, which SQLite builds anew for every statement (0.4 s at 1M)."""
        cond = self.cond
        if keyed and cond:
            cond = ("EXISTS (SELECT 1 FROM design_requests dr WHERE dr.design_id = ?"
                    " AND dr.request_key = q.request_key)")
        parts = ["+q.purpose = 'reply'"] + ([cond] if cond else []) + ([extra] if extra else [])
        return " WHERE " + " AND ".join(parts)

    def rows(self, extra: str = "", params: tuple = (), *, limit: int | None = None,
             keyed: bool = False, by_post: bool = False) -> pd.DataFrame:
        """Reply rows (the columns of ``replies_df(texts=False)``) matching ``extra``, in its order.
        ``by_post``: ``extra`` names a few posts (``v.post_id IN (...)``); the rows are found through
        the posts' variants instead of a scan of every request."""
        sql = "SELECT " + REPLY_COLUMNS + (_FROM_POSTS if by_post else _FROM) \
            + self.where(extra, keyed=keyed or by_post) + REPLY_ORDER + (f" LIMIT {int(limit)}" if limit is not None else "")
        return _expand_attributes(self.store.query_df(sql, (*self.params, *params)))

    def every_request_has_variant(self) -> bool:
        """Whether every reply request names a stored variant (then :data:`_FROM_POSTS` walks them all;
        a request without one would come first in ``replies_df`` order, its post being NULL). Two index
        look-ups: a NULL variant, then each distinct variant id of the requests in the variants."""
        if self.store.conn.execute("SELECT 1 FROM requests WHERE variant_id IS NULL AND purpose = 'reply'"
                                   " LIMIT 1").fetchone():
            return False
        return self.store.conn.execute(
            "SELECT 1 FROM (SELECT DISTINCT variant_id AS vid FROM requests WHERE variant_id IS NOT NULL)"
            " WHERE NOT EXISTS (SELECT 1 FROM variants v WHERE v.variant_id = vid) LIMIT 1").fetchone() is None

    def first_rows(self, partition: str, prefer: str, extra: str = "",
                   values: list[Any] | None = None) -> pd.DataFrame:
        """For each value of the expression ``partition`` (NULL left out): its first reply row matching
        ``extra``, rows where ``prefer`` is true first, then in ``replies_df`` order.

        ``values``: every value ``partition`` takes among the reply requests (e.g. the models of
        :meth:`summary`). Each value's row is then found by walking the posts in order until one
        matches (a query with ``LIMIT 1``, then one without ``prefer`` when none is preferred), where
        the whole run was sorted; without ``values``, or where a request has no stored variant: one
        sort of the keys (a window function). Then the chosen rows by key."""
        if values is not None and self.every_request_has_variant():
            keys = []
            for value in values:
                if value is None:
                    continue
                for cond in (f"{partition} = ? AND ({prefer})", f"{partition} = ?"):
                    sql = "SELECT q.request_key" + _FROM_POSTS + self.where(
                        cond + (f" AND {extra}" if extra else ""), keyed=True) + REPLY_ORDER + " LIMIT 1"
                    row = self.store.conn.execute(sql, (*self.params, value)).fetchone()
                    if row is not None:
                        keys.append(row[0])
                        break
            return self.rows_of(keys)
        order = REPLY_ORDER.replace(" ORDER BY ", "")
        keys = [k for (k,) in self.store.conn.execute(
            f"SELECT k FROM (SELECT q.request_key AS k, ROW_NUMBER() OVER (PARTITION BY {partition}"
            f" ORDER BY CASE WHEN {prefer} THEN 0 ELSE 1 END, {order}) AS rn" + _FROM
            + self.where(f"{partition} IS NOT NULL" + (f" AND {extra}" if extra else "")) + ") WHERE rn = 1",
            self.params)]
        return self.rows_of(keys)

    def chunks(self, size: int) -> Iterator[pd.DataFrame]:
        """Every reply row in ``replies_df`` order, ``size`` rows at a time (``tables/replies.csv``)."""
        sql = "SELECT " + REPLY_COLUMNS + _FROM + self.where() + REPLY_ORDER
        for part in pd.read_sql_query(sql, self.store.conn, params=self.params, chunksize=size):
            yield _expand_attributes(part)

    # ------------------------------------------------------------------ aggregates
    def summary(self) -> pd.DataFrame:
        """One row per (model, status, style, reported model, runtime, runtime version): ``n`` requests,
        ``max_sample``, ``embedded`` (endpoint ``embedded...``), ``imported`` (runtime ``import``),
        ``flagged`` (replies with change flags), ``scored`` (with any score row) and ``unscored``
        (status ok without a non-NULL score)."""
        sql = ("SELECT q.model_label, r.status, q.style, r.model_reported, r.runtime, r.runtime_version,"
               " COUNT(*) AS n, MAX(q.sample_index) AS max_sample,"
               " SUM(substr(q.endpoint_id, 1, 8) = 'embedded') AS embedded,"
               " SUM(r.runtime IS NOT NULL AND r.runtime = 'import') AS imported,"
               " SUM(r.flags IS NOT NULL AND r.flags != '[]') AS flagged,"
               " SUM(EXISTS (SELECT 1 FROM scores s WHERE s.request_key = q.request_key)) AS scored,"
               " SUM(r.status = 'ok' AND NOT EXISTS (SELECT 1 FROM scores s WHERE s.request_key = q.request_key"
               "  AND s.value IS NOT NULL)) AS unscored"
               + _FROM + self.where() + " GROUP BY 1, 2, 3, 4, 5, 6")
        return self.store.query_df(sql, self.params)

    def errors(self) -> tuple[list[dict[str, Any]], int]:
        """Distinct errors of failed requests (``[{error, n}]``, by error text, at most :data:`MAX_ERRORS`)
        and how many distinct errors were left out."""
        sql = ("SELECT COALESCE(r.error, 'unknown error') AS error, COUNT(*) AS n" + _FROM
               + self.where("r.status = 'failed'") + " GROUP BY 1 ORDER BY 1")
        cur = self.store.conn.execute(sql, self.params)
        out = [dict(error=str(e)[:300], n=int(n)) for e, n in cur.fetchmany(MAX_ERRORS)]
        more = sum(1 for _ in cur)
        return out, more

    def answers_changed(self) -> list[dict[str, Any]]:
        """What the request engine changed before storing answers: ``[{kind, n, example}]`` (the example:
        the first such flag in ``replies_df`` order), streamed over the flagged replies only."""
        found: dict[str, list[Any]] = {}
        cur = self.store.conn.execute(
            "SELECT r.flags" + _FROM + self.where("r.flags IS NOT NULL AND r.flags != '[]'") + REPLY_ORDER, self.params)
        while rows := cur.fetchmany(10_000):
            for (raw,) in rows:
                for flag in json.loads(raw):
                    kind = flag.split(":")[0]
                    if kind in found:
                        found[kind][0] += 1
                    else:
                        found[kind] = [1, flag]
        return [dict(kind=k, n=v[0], example=v[1]) for k, v in sorted(found.items())]

    def group_summary(self) -> pd.DataFrame:
        """Mean, SD and n of every score per model, outcome (``scorer.measure``), group and cue type, over
        answered (status ok) replies with a non-NULL score: one SQL ``GROUP BY`` (n, sum, sum of squares).

        SD = sqrt((sum x^2 - (sum x)^2 / n) / (n - 1)), the one-pass textbook formula: its relative
        error is about eps * (1 + mean^2 / var) * sqrt(n) (eps = 2.2e-16), below 1e-10 for scores whose
        mean is within a few hundred SDs of 0; constant scores give 0 exactly (integer-valued sums)."""
        cols = ["model_label", "outcome", "group", "cue_type", "mean", "sd", "n"]
        sql = ("SELECT q.model_label, s.scorer || '.' || s.measure AS outcome, v.group_name AS grp, v.cue_type,"
               " COUNT(*) AS n, SUM(s.value) AS s1, SUM(s.value * s.value) AS s2"
               " FROM requests q JOIN replies r ON r.request_key = q.request_key"
               " JOIN variants v ON v.variant_id = q.variant_id JOIN scores s ON s.request_key = q.request_key"
               + self.where("r.status = 'ok' AND s.value IS NOT NULL") + " GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4")
        df = self.store.query_df(sql, self.params)
        if df.empty:
            return pd.DataFrame(columns=cols)
        out = []
        for r in df.itertuples(index=False):
            n, s1, s2 = int(r.n), float(r.s1), float(r.s2)
            var = max((s2 - s1 * s1 / n) / (n - 1), 0.0) if n > 1 else math.nan
            out.append((r.model_label, r.outcome, r.grp, r.cue_type, s1 / n, math.sqrt(var), n, s1))
        return pd.DataFrame(out, columns=[*cols, "sum"])

    def scored_outcomes(self) -> list[tuple[str, str, bool]]:
        """(scorer, measure, has a non-NULL value) of every stored score of the design's replies."""
        cond, params = self.store._design_filter("request_key", False)
        return [(s, m, bool(v)) for s, m, v in self.store.conn.execute(
            "SELECT scorer, measure, MAX(value IS NOT NULL) FROM scores" + (f" WHERE {cond}" if cond else "")
            + " GROUP BY 1, 2 ORDER BY 1, 2", params)]

    def refusal_counts(self) -> pd.DataFrame:
        """Per group and cue type: ``n`` answered replies (ok or content_filter) with a refusal value
        (a content-filtered reply counts as a refusal) and ``refused`` (the sum of the values)."""
        return self.store.query_df(
            "SELECT v.group_name AS grp, v.cue_type, COUNT(x) AS n, SUM(x) AS refused FROM (SELECT v.group_name,"
            " v.cue_type, CASE WHEN r.status = 'content_filter' THEN 1.0 ELSE s.value END AS x"
            " FROM requests q JOIN replies r ON r.request_key = q.request_key"
            " LEFT JOIN variants v ON v.variant_id = q.variant_id"
            " LEFT JOIN scores s ON s.request_key = q.request_key AND s.measure = 'refusal'"
            + self.where("r.status IN ('ok', 'content_filter')") + ") v WHERE x IS NOT NULL AND grp IS NOT NULL"
            " GROUP BY 1, 2 ORDER BY 1, 2", self.params)

    def refusal_rows(self) -> pd.DataFrame:
        """Per answered reply (ok or content_filter): ``request_key, group, cue_type, status, value`` (its
        refusal score; 1 for a content-filtered reply), as the refusal figure of a small run reads them."""
        return self.store.query_df(
            "SELECT q.request_key, v.group_name AS \"group\", v.cue_type, r.status,"
            " CASE WHEN r.status = 'content_filter' THEN 1.0 ELSE s.value END AS value"
            " FROM requests q JOIN replies r ON r.request_key = q.request_key"
            " LEFT JOIN variants v ON v.variant_id = q.variant_id"
            " LEFT JOIN scores s ON s.request_key = q.request_key AND s.measure = 'refusal'"
            + self.where("r.status IN ('ok', 'content_filter')") + REPLY_ORDER, self.params)

    def scores_of(self, keys: list[str]) -> pd.DataFrame:
        """Long scores (``request_key, scorer, measure, value, detail``) of the requests ``keys``."""
        keys = list(dict.fromkeys(keys))
        parts = [self.store.query_df("SELECT request_key, scorer, measure, value, detail FROM scores"
                                     f" WHERE request_key IN ({','.join('?' * len(keys[i:i + 500]))})", keys[i:i + 500])
                 for i in range(0, len(keys), 500)]
        parts = [p for p in parts if len(p)]
        if not parts:
            return pd.DataFrame(columns=["request_key", "scorer", "measure", "value", "detail"])
        return pd.concat(parts, ignore_index=True)

    def scores_of_measures(self, pairs: list[tuple[str, str]]) -> pd.DataFrame:
        """Every non-NULL score of the design for the given (scorer, measure) pairs (scorer agreement)."""
        cond, params = self.store._design_filter("request_key", False)
        parts = []
        for s, m in pairs:
            parts.append(self.store.query_df(
                "SELECT request_key, scorer, measure, value FROM scores WHERE scorer = ? AND measure = ?"
                " AND value IS NOT NULL" + (f" AND {cond}" if cond else ""), (s, m, *params)))
        return pd.concat(parts, ignore_index=True) if parts else \
            pd.DataFrame(columns=["request_key", "scorer", "measure", "value"])

    def rows_of(self, keys: list[str]) -> pd.DataFrame:
        """The reply rows of the requests ``keys`` (those of the design), in ``replies_df`` order."""
        keys = list(dict.fromkeys(keys))
        parts = [self.rows(f"q.request_key IN ({','.join('?' * len(keys[i:i + 500]))})", tuple(keys[i:i + 500]),
                           keyed=True) for i in range(0, len(keys), 500)]
        parts = [p for p in parts if len(p)]
        if not parts:
            return self.rows("0")
        df = pd.concat(parts, ignore_index=True)
        return df.sort_values(["post_id", "group_name", "cue_type", "style", "sample_index", "request_key"],
                              na_position="first", kind="stable").reset_index(drop=True)

    def sample_keys(self, n: int) -> list[str]:
        """The answered (status ok) replies with the smallest request keys, at most ``n``."""
        return [k for (k,) in self.store.conn.execute(
            # CROSS JOIN: walk the requests in key order and stop at the limit (not a scan of every reply)
            "SELECT q.request_key FROM requests q CROSS JOIN replies r ON r.request_key = q.request_key"
            + self.where("r.status = 'ok'") + f" ORDER BY q.request_key LIMIT {int(n)}", self.params)]

    def example_posts(self, cond: str, params: tuple, n_posts: int, n_groups: int) -> list[str]:
        """The posts the report shows example replies of, among the replies matching ``cond``: the first
        ``n_posts`` posts (by post id) with a control reply; without any, posts from every group in turn
        (a post under the group of its first reply), up to ``max(n_posts, groups)`` posts."""
        base = _FROM + self.where(cond + " AND v.post_id IS NOT NULL")
        ctrl = [p for (p,) in self.store.conn.execute(  # the posts walked in order: the first ones are read
            "SELECT DISTINCT v.post_id" + _FROM_POSTS + self.where(cond + " AND v.post_id IS NOT NULL", keyed=True)
            + f" AND v.cue_type = 'control' ORDER BY v.post_id LIMIT {int(n_posts)}", (*self.params, *params))]
        if ctrl:
            return ctrl
        # no control: the first reply of each post decides its group; each group's first posts, interleaved
        rows = self.store.conn.execute(
            "SELECT post_id, grp FROM (SELECT post_id, grp, ROW_NUMBER() OVER (PARTITION BY grp ORDER BY post_id) AS k"
            " FROM (SELECT post_id, grp FROM (SELECT v.post_id AS post_id, v.group_name AS grp, ROW_NUMBER() OVER"
            " (PARTITION BY v.post_id ORDER BY v.group_name, v.cue_type, q.style, q.sample_index, q.request_key) AS rn"
            + base + ") WHERE rn = 1)) WHERE k <= ? ORDER BY grp, post_id",
            (*self.params, *params, int(n_groups))).fetchall()
        by_group: dict[str, list[str]] = {}
        for p, g in rows:
            by_group.setdefault(g, []).append(p)
        lists = [by_group[g] for g in sorted(by_group)]
        n = max(n_posts, len(lists))
        return [p for i in range(n) for p in (lst[i] for lst in lists if i < len(lst))][:n]
