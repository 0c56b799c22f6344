"""The analysis fitted from cells (audit/stats/cells.py) is the analysis of the replies themselves.

A cell is one (variant, style, model, outcome): its replies differ only in their sample index. Every
test of a run's analysis depends on them only through the cell's count, mean and within-cell sum of
squares (and, for 0/1 outcomes, its count of ones), so

* a gap test fitted from the cells equals the same test fitted from the reply rows (the row path of
  ``gap_test``, which is what the analysis ran before it was fitted from cells): mixed models with a
  nested variant intercept, GEE of a 0/1 outcome, cluster-robust OLS;
* two runs whose replies differ but whose cells have the same statistics (every reply reflected about
  its cell's mean) get the same results, every table of them;
* the store's one streaming pass (``analysis_cells``) gives the cells of the reply rows, with failed
  replies, NULL scores and derived ``>0`` level outcomes counted as the row table counts them.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from audit.errors import AuditError
from audit.stats import gap_test
from audit.stats.cells import CELLS, cells_from_rows
from audit.stats.fastlmm import fit_nested_ri
from audit.stats.gaps import _ols_cluster_cells
from audit.stats.simulate import simulate_audit_table
from audit.stats.stage import analysis_cells, analysis_table, analyze_scores, table_cells
from audit.store import RunStore
from test_stats_stage import fill_store

SAMPLES = 20
NUM = ["estimate", "se", "ci_low", "ci_high", "ref_mean", "relative_gap", "std_effect", "z", "p_value"]
COUNTS = ["n", "n_posts", "n_missing", "ref_n_missing", "n_clusters"]


def _close(a: pd.DataFrame, b: pd.DataFrame, cols, rel=1e-9):
    for c in cols:
        x, y = a[c].to_numpy(float), b[c].to_numpy(float)
        assert np.array_equal(np.isnan(x), np.isnan(y)), c
        ok = ~np.isnan(x)
        np.testing.assert_allclose(x[ok], y[ok], rtol=rel, atol=1e-12, err_msg=c)


def _rows(binary=False, seed=3, samples=SAMPLES, missing=0):
    t = simulate_audit_table(n_posts=25, groups=["A", "B"], cue_types=["tag", "name"], samples=samples,
                             gaps={"A": -0.3 if not binary else -0.2}, ref_mean=1.0 if not binary else 0.5,
                             sd_variant=0.2, binary=binary, seed=seed)
    if missing:  # some replies without a score, in every group
        t.loc[t.index[::missing], "value"] = np.nan
    return t


@pytest.mark.parametrize("binary", [False, True])
def test_a_gap_test_from_cells_equals_the_test_from_the_reply_rows(binary):
    rows = _rows(binary=binary, missing=0 if binary else 17)
    cells = cells_from_rows(rows, ["variant_id", "style", "model_label", "outcome", "post_id", "group", "cue_type"])
    assert len(cells) * SAMPLES == len(rows) and (cells["n"] + cells["n_missing"] == SAMPLES).all()
    kw = dict(outcome="value", group="group", control="control", cluster="post_id", inner="variant_id", by="cue_type",
              allow_missing=True)
    a = gap_test(rows, **kw)
    b = gap_test(cells, cells=CELLS, **kw)
    assert a["method"].tolist() == b["method"].tolist()
    assert ("gee" in a["method"].iloc[0]) == binary and ("(1|post:inner)" in a["method"].iloc[0]) != binary
    assert a[COUNTS].astype(float).equals(b[COUNTS].astype(float))
    assert a["design"].tolist() == b["design"].tolist()
    _close(a, b, NUM, rel=1e-9 if not binary else 1e-7)  # GEE: statsmodels stops at a step of 1e-6


def test_fits_from_cells_are_the_fits_of_the_observations():
    rows = _rows()
    y = rows["value"].to_numpy()
    X = np.column_stack([np.ones(len(rows)), (rows["group"] == "A").to_numpy(float),
                         (rows["group"] == "B").to_numpy(float)])
    cells = cells_from_rows(rows, ["variant_id", "post_id", "group"])
    Xc = np.column_stack([np.ones(len(cells)), (cells["group"] == "A").to_numpy(float),
                          (cells["group"] == "B").to_numpy(float)])
    w, ss = cells["n"].to_numpy(float), float(cells["ss"].sum())
    for inner in (True, False):
        f = fit_nested_ri(y, X, rows["post_id"].to_numpy(), rows["variant_id"].to_numpy() if inner else None)
        g = fit_nested_ri(cells["value"].to_numpy(), Xc, cells["post_id"].to_numpy(),
                          cells["variant_id"].to_numpy() if inner else None, weights=w, within_ss=ss)
        np.testing.assert_allclose(g.params, f.params, rtol=1e-10)
        np.testing.assert_allclose(g.cov_params, f.cov_params, rtol=1e-7)
        assert abs(g.criterion - f.criterion) < 1e-8 and g.n_obs == f.n_obs
    # cluster-robust OLS: the closed form on cells equals statsmodels on the rows
    import statsmodels.api as sm

    r = sm.OLS(y, X).fit(cov_type="cluster", cov_kwds={"groups": pd.factorize(rows["post_id"])[0]})
    o = _ols_cluster_cells(cells["value"].to_numpy(), Xc, cells["post_id"].to_numpy(), [], w, ss)
    np.testing.assert_allclose(o.params, r.params, rtol=1e-10)
    np.testing.assert_allclose(o.cov, r.cov_params(), rtol=1e-9)
    assert o.total_sd == pytest.approx(np.sqrt(r.scale), rel=1e-12)


def _reflected(rows: pd.DataFrame) -> pd.DataFrame:
    """Every reply reflected about its cell's mean (``2 ybar - y``) and the samples of each cell in reverse
    order: other replies, the same cell statistics (count, mean, within-cell sum of squares). The cells
    keep their order (the bootstrap draws posts by their order of appearance)."""
    out = rows.copy()
    mean = out.groupby("variant_id")["value"].transform("mean")
    out["value"] = (2 * mean - out["value"]).groupby(out["variant_id"]).transform(lambda v: v.to_numpy()[::-1])
    return out


def test_one_and_twenty_replies_per_cell_of_the_same_cell_statistics_give_identical_fits():
    rows = _rows(seed=8)
    rows["request_key"] = rows["request_key"] + "-" + rows["variant_id"]
    twin = _reflected(rows)
    assert not np.allclose(np.sort(rows["value"]), np.sort(twin["value"]))  # other replies
    one = table_cells(rows)  # one row per cell: its count, mean and within-cell sum of squares
    assert (one["n"] == SAMPLES).all()
    kw = dict(paired_check=True, seed=1)
    a = analyze_scores(rows, **kw)
    b = analyze_scores(twin, **kw)
    from audit.stats.stage import analyze_cells

    c = analyze_cells(one, **kw)
    for x in (b, c):
        for name, df in a.tables.items():
            if name == "analysis_meta":
                continue
            other = x.tables[name]
            assert list(df.columns) == list(other.columns) and len(df) == len(other), name
            num = [col for col in df.columns if pd.api.types.is_float_dtype(df[col])]
            # the partial pooling's tau is an optimiser's output (bounded Brent): held to 1e-6, the rest to 1e-9
            _close(df, other, num, rel=1e-6 if name == "results_intersectional" else 1e-9)
            text = [col for col in df.columns if col not in num]
            assert df[text].astype(str).equals(other[text].astype(str)), name
    # the same results as the reply rows fitted one by one, as before cells: the row path of gap_test
    before = gap_test(rows[rows["style"] == "plain"], outcome="value", inner="variant_id", by="cue_type")
    got = a.results[a.results["reference"] == "control"].reset_index(drop=True)
    _close(got, before, NUM)


def _messy_store(run_dir):
    """fill_store's run (2 styles x 2 samples, an ordinal level outcome) with failed replies and NULL
    scores."""
    fill_store(run_dir, n_posts=8, samples=3, level=True)
    with RunStore(run_dir, create=False) as st:
        keys = [r[0] for r in st.conn.execute("SELECT request_key FROM requests ORDER BY request_key")]
        with st.transaction() as c:
            c.executemany("UPDATE replies SET status = 'failed' WHERE request_key = ?", [(k,) for k in keys[::13]])
            c.execute("UPDATE replies SET status = 'failed'"
                      " WHERE request_key LIKE 'post003-Black-woman-explicit_tag|warm|%'")  # a cell with none observed
            c.executemany("UPDATE scores SET value = NULL WHERE request_key = ? AND measure = 'empathy'",
                          [(k,) for k in keys[5::11]])
            c.executemany("DELETE FROM scores WHERE request_key = ? AND measure = 'ER'", [(k,) for k in keys[7::9]])


def _same_cells(got: pd.DataFrame, want: pd.DataFrame) -> None:
    """Two cell tables agree: the statistics to 1e-12 relative, every other column exactly."""
    for c in got.columns:
        if c in ("value", "ss", "vmin", "vmax"):
            _close(got, want, [c], rel=1e-12)
        else:
            assert got[c].astype(object).where(got[c].notna(), None).tolist() == \
                want[c].astype(object).where(want[c].notna(), None).tolist(), c


def test_the_store_pass_gives_the_cells_of_the_reply_rows(tmp_path):
    _messy_store(tmp_path)
    with RunStore(tmp_path, create=False) as st:
        got = analysis_cells(st)
        want = table_cells(analysis_table(st, compact=True))
    assert set(got["outcome"].astype(str)) == {"epitome.ER", "epitome.ER>0", "epitome.empathy", "refusal.refusal"}
    assert len(got) == len(want) and list(got.columns) == list(want.columns)
    assert (got["n_missing"] > 0).any() and (got["n"] == 0).any()
    _same_cells(got, want)


@pytest.mark.parametrize("workers", ["1", "2"])
def test_the_store_pass_in_two_halves_gives_the_same_cells(tmp_path, monkeypatch, workers):
    """Above SCORE_SCAN_SPLIT_ROWS the scores are summed in two halves (the second forked where two cores
    are free) and merged: the cells of the reply rows again, forked or not."""
    import audit.store as store_mod

    _messy_store(tmp_path)
    with RunStore(tmp_path, create=False) as st:
        whole = analysis_cells(st)
    monkeypatch.setattr(store_mod, "SCORE_SCAN_SPLIT_ROWS", 1)
    monkeypatch.setenv("EMPATHY_AUDIT_WORKERS", workers)
    monkeypatch.setenv("EMPATHY_AUDIT_PARALLEL_MIN_CELLS", "0")
    import audit.arrow_scan as arrow_mod

    log = tmp_path / "scans.log"
    real_scan = arrow_mod.scan

    def traced(path, query, *args, **kw):  # the scans run in forked processes: logged to a file
        with open(log, "a") as fh:
            fh.write(query.replace("\n", " ") + "\n")
        return real_scan(path, query, *args, **kw)

    monkeypatch.setattr(arrow_mod, "scan", traced)
    with RunStore(tmp_path, create=False) as st:
        lo, hi = st.conn.execute("SELECT min(rowid), max(rowid) FROM scores").fetchone()
        halves = analysis_cells(st)
    sql = log.read_text().splitlines()
    assert sum("rowid BETWEEN" in q for q in sql) == 2 and hi > lo  # the split path ran, both halves
    assert len(halves) == len(whole) and list(halves.columns) == list(whole.columns)
    _same_cells(halves, whole)


@pytest.mark.parametrize("split", [False, True])
def test_the_store_pass_leaves_out_requests_outside_the_current_design(tmp_path, monkeypatch, split):
    """Requests stored for another design (an earlier sweep in the same store) are not the run's: the
    pass keeps the current design's requests only, as the reply rows do, in one pass or in halves."""
    import audit.store as store_mod

    _messy_store(tmp_path)
    if split:
        monkeypatch.setattr(store_mod, "SCORE_SCAN_SPLIT_ROWS", 1)
        monkeypatch.setenv("EMPATHY_AUDIT_WORKERS", "2")
    with RunStore(tmp_path, create=False) as st:
        every = analysis_cells(st)
        keys = [r[0] for r in st.conn.execute("SELECT request_key FROM requests ORDER BY request_key")]
        kept = [k for i, k in enumerate(keys) if i % 3 != 2 and "post005" not in k]  # a post left out whole
        st.put_design_requests("d-current", kept)
        st.bind_design("d-current", {"note": "a subset"})
        got = analysis_cells(st)
        want = table_cells(analysis_table(st, compact=True))
    def requests(cells):  # every request is a reply, observed or missing, of each outcome
        one = cells[cells["outcome"].astype(str) == "refusal.refusal"]
        return int((one["n"] + one["n_missing"]).sum())

    assert requests(got) == len(kept) < requests(every) == len(keys)
    assert "post005" not in set(got["post_id"].astype(str)) and "post005" in set(every["post_id"].astype(str))
    assert len(got) == len(want) and list(got.columns) == list(want.columns)
    _same_cells(got, want)


def test_the_replies_table_is_written_for_small_runs_and_on_request(tmp_path, monkeypatch):
    """``tables/replies.csv`` (every reply's text) is opt-in above REPLIES_TABLE_MAX replies: a million
    replies made 2.4 GB of it. ``report --replies-table`` writes it for any run, ``--no-replies-table``
    never; the other tables are written either way."""
    from audit.cli import main as cli_main
    from audit.report import build
    from synthetic_store import fill_store as fill_report_store

    run = fill_report_store(tmp_path / "run")
    assert cli_main(["report", str(run)]) == 0
    assert (run / "tables" / "replies.csv").is_file()  # a small run: as before
    assert cli_main(["report", str(run), "--no-replies-table"]) == 0
    assert not (run / "tables" / "replies.csv").exists() and (run / "tables" / "results.csv").is_file()
    monkeypatch.setattr(build, "REPLIES_TABLE_MAX", 3)  # a run larger than the default limit
    assert cli_main(["report", str(run)]) == 0
    assert not (run / "tables" / "replies.csv").exists()
    assert cli_main(["report", str(run), "--replies-table"]) == 0
    text = (run / "tables" / "replies.csv").read_text(encoding="utf-8")
    assert text.count("\n") > 3


def test_the_store_pass_reads_null_styles_as_the_rows_do_and_refuses_a_score_that_is_text(tmp_path):
    """The pass reads the store as Arrow columns (audit/arrow_scan.py), which need one type per column: a
    NULL style is read beside its text (the cells equal those of the reply rows), and a
    score stored as text is one clear error naming the request, not a silent zero."""
    _messy_store(tmp_path)
    with RunStore(tmp_path, create=False) as st:
        keys = [r[0] for r in st.conn.execute("SELECT request_key FROM requests WHERE purpose = 'reply'"
                                              " ORDER BY rowid")]
        with st.transaction() as c:  # NULL style on the first rows (the reader's types come from its first batch)
            c.executemany("UPDATE requests SET style = NULL WHERE request_key = ?", [(k,) for k in keys[:40]])
        got = analysis_cells(st)
        want = table_cells(analysis_table(st, compact=True))
        assert "default" in set(got["style"].astype(str))
        _same_cells(got, want)
        bad = keys[50]
        with st.transaction() as c:
            c.execute("UPDATE scores SET value = 'n/a' WHERE request_key = ? AND measure = 'empathy'", (bad,))
        with pytest.raises(AuditError) as e:
            analysis_cells(st)
    assert "not a number" in e.value.what and bad in e.value.what


def test_the_store_pass_without_fork_reads_with_the_connection_closed_and_reopens_it(tmp_path, monkeypatch):
    """Where there is no fork (Windows, macOS) the Arrow reader's SQLite and Python's sqlite3 must not hold
    the file at once (one releases the other's locks when it closes it): the store's connection is closed
    for the pass and opened again after, with the same cells as the forked pass and a usable store."""
    import audit.parallel as parallel_mod

    _messy_store(tmp_path)
    with RunStore(tmp_path, create=False) as st:
        forked = analysis_cells(st)
    monkeypatch.setattr(parallel_mod, "fork_available", lambda: False)
    with RunStore(tmp_path, create=False) as st:
        before = st.conn
        here = analysis_cells(st)
        assert st.conn is not before  # closed and opened again
        assert st.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        st.set_meta("after_the_pass", "written")  # the reopened connection writes
        assert st.get_meta("after_the_pass") == "written"
    _same_cells(here, forked)
