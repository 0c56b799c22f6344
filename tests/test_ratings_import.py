"""Rating import: a simulated rater's filled CSV and a Label Studio JSON export are read into the
store; blank levels are counted, not errors; unknown ids, another rater's items, out-of-range levels,
duplicates and conflicting re-imports get one clear error naming file and row/task and store
nothing; re-importing the same file changes nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from audit.cli import main as cli_main
from audit.errors import AuditError
from audit.ratings import consensus, import_ratings, make_packet
from audit.store import RunStore
from ratings_sim import fill_csv, item_keys, label_studio_export, scorer_truth
from synthetic_store import fill_store


@pytest.fixture
def run(tmp_path) -> Path:
    return fill_store(tmp_path / "run", with_results=False, with_probe=False)


@pytest.fixture
def packet(run, tmp_path):
    return make_packet(run, n=27, raters=["ann", "bo"], overlap=9, out=tmp_path / "packet", seed=3)


def _ratings(run) -> pd.DataFrame:
    with RunStore(run, create=False) as st:
        return st.ratings_df()


def _csv(packet, rater: str) -> pd.DataFrame:
    return pd.read_csv(packet.out_dir / rater / "ratings.csv", dtype=str, keep_default_na=False)


def test_a_filled_csv_and_a_label_studio_export_are_stored(run, packet, tmp_path):
    truth = scorer_truth(run, shift={"Black woman": 1.0})
    f1 = fill_csv(run, packet.out_dir, "ann", truth, tmp_path / "ann.csv", blank_every=6, harmful_every=5)
    s1 = import_ratings(run, f1, rater="ann")
    n_ann = len(_csv(packet, "ann"))
    assert (s1.rows, s1.format) == (n_ann, "csv")
    assert s1.unrated_items == n_ann // 6 and s1.rated_items == n_ann - n_ann // 6
    assert s1.written == 3 * s1.rated_items and s1.harmful == sum(1 for i in range(1, n_ann + 1)
                                                                 if i % 5 == 0 and i % 6 != 0)
    f2 = label_studio_export(run, packet.out_dir, "bo", truth, tmp_path / "bo.json", skip_every=7)
    s2 = import_ratings(run, f2, rater="bo")
    n_bo = len(_csv(packet, "bo"))
    assert s2.format == "label-studio" and s2.unrated_items == n_bo // 7 and s2.written == 3 * (n_bo - n_bo // 7)

    stored = _ratings(run)
    keys = {**{("ann", k): v for k, v in item_keys(run, "ann").items()},
            **{("bo", k): v for k, v in item_keys(run, "bo").items()}}
    for r in stored.itertuples():
        assert keys[(r.rater, r.item_id)] == r.request_key
        assert r.value == truth(r.request_key, r.measure)
        assert r.source_name in ("ann.csv", "bo.json") and len(r.source_sha256) == 64 and r.imported_at
    flagged = stored[stored["harmful"] == 1]
    assert flagged["comment"].str.contains("=cmd").all()  # stored as text, as written
    bo = stored[stored["rater"] == "bo"]
    assert (bo["comment"].dropna() == "fine").all() and (bo["harmful"].dropna() == 0).all()

    with RunStore(run, create=False) as st:
        human = st.human_ratings_df()
    assert list(human.columns) == ["request_key", "rater", "measure", "value"]
    assert human["value"].dtype == float and set(human["value"]) <= {0.0, 1.0, 2.0}
    assert len(human) == s1.written + s2.written
    cons = consensus(human)
    both = cons[cons["n_raters"] == 2]
    assert len(both) > 0 and list(cons.columns) == ["request_key", "measure", "value", "n_raters"]
    assert all(v == truth(k, m) for k, m, v in zip(both["request_key"], both["measure"], both["value"]))


def test_reimporting_the_same_file_changes_nothing(run, packet, tmp_path):
    f = fill_csv(run, packet.out_dir, "ann", scorer_truth(run), tmp_path / "ann.csv")
    first = import_ratings(run, f, rater="ann")
    with RunStore(run, create=False) as st:
        before = st.content_sha256()
    again = import_ratings(run, f, rater="ann")
    assert again.written == 0 and again.unchanged == first.written
    with RunStore(run, create=False) as st:
        assert st.content_sha256() == before


def test_a_spreadsheet_csv_with_semicolons_bom_and_decimal_levels_is_read(run, packet, tmp_path):
    f = fill_csv(run, packet.out_dir, "ann", lambda k, m: 1.0, tmp_path / "x.csv", delimiter=";", encoding="utf-8-sig")
    text = f.read_text(encoding="utf-8-sig").replace(";1;1;1;", ";1.0;1;1;")
    assert ";1.0;1;1;" in text
    f.write_text("\ufeff" + text, encoding="utf-8")
    s = import_ratings(run, f, rater="ann")
    assert s.rated_items == s.rows and set(_ratings(run)["value"]) == {1.0}


def test_a_level_left_blank_can_be_filled_in_later(run, packet, tmp_path):
    df = _csv(packet, "ann")
    df["er"], df["ip"], df["ex"] = "1", "", "0"
    df.to_csv(tmp_path / "a.csv", index=False)
    import_ratings(run, tmp_path / "a.csv", rater="ann")
    df["ip"] = "2"
    df.to_csv(tmp_path / "b.csv", index=False)
    s = import_ratings(run, tmp_path / "b.csv", rater="ann")
    assert s.written == len(df) and s.unchanged == 2 * len(df)
    ip = _ratings(run).query("measure == 'IP'")
    assert (ip["value"] == 2.0).all()


def _error(run, path, rater="ann", **kw) -> AuditError:
    before = _ratings(run)
    with pytest.raises(AuditError) as err:
        import_ratings(run, path, rater=rater, **kw)
    pd.testing.assert_frame_equal(_ratings(run), before)  # nothing of the file was stored
    return err.value


def test_bad_rows_get_one_clear_error_and_nothing_is_stored(run, packet, tmp_path):
    df = _csv(packet, "ann")
    df["er"], df["ip"], df["ex"] = "1", "1", "1"
    cases = {
        "unknown": (lambda d: d.assign(item_id=["itdeadbeefdeadbeef"] + d["item_id"].tolist()[1:]),
                    "row 2", "item id 'itdeadbeefdeadbeef' is in no rating packet"),
        "range": (lambda d: d.assign(ip=d["ip"].tolist()[:3] + ["3"] + d["ip"].tolist()[4:]),
                  "row 5", "ip is 3, out of range"),
        "text": (lambda d: d.assign(ex=["lots"] + d["ex"].tolist()[1:]), "row 2", "ex is 'lots', not a level"),
        "negative": (lambda d: d.assign(er=["-1"] + d["er"].tolist()[1:]), "row 2", "er is -1, out of range"),
        "harmful": (lambda d: d.assign(harmful=["maybe"] + d["harmful"].tolist()[1:]), "row 2", "neither yes nor no"),
        "duplicate": (lambda d: pd.concat([d, d.iloc[[1]]]), f"row {len(df) + 2}", "appears twice (first at row 3)"),
    }
    for name, (change, where, what) in cases.items():
        path = tmp_path / f"{name}.csv"
        change(df.copy()).to_csv(path, index=False)
        err = _error(run, path)
        assert err.where == f"{path}, {where}" and what in err.what, (name, err.message)
        assert err.fix


def test_another_raters_file_or_an_unknown_rater_is_refused(run, packet, tmp_path):
    f = fill_csv(run, packet.out_dir, "bo", lambda k, m: 1.0, tmp_path / "bo.csv")
    err = _error(run, f, rater="ann")
    assert "in rater bo's packet, not in rater ann's" in err.what and "--rater bo" in err.fix
    err = _error(run, f, rater="cy")
    assert "rater 'cy' has no packet" in err.what and "ann, bo" in err.what


def test_a_conflicting_reimport_is_refused_unless_replace(run, packet, tmp_path):
    f = fill_csv(run, packet.out_dir, "ann", lambda k, m: 1.0, tmp_path / "a.csv")
    import_ratings(run, f, rater="ann")
    g = fill_csv(run, packet.out_dir, "ann", lambda k, m: 2.0 if m == "EX" else 1.0, tmp_path / "b.csv")
    err = _error(run, g)
    assert "this file says level 2" in err.what and "says level 1" in err.what and "a.csv" in err.what
    assert err.where.endswith("row 2") and "--replace" in err.fix
    s = import_ratings(run, g, rater="ann", replace=True)
    assert s.written == s.rows and s.unchanged == 2 * s.rows
    ex = _ratings(run).query("measure == 'EX'")
    assert (ex["value"] == 2.0).all() and (ex["source_name"] == "b.csv").all()


def test_label_studio_problems_name_the_task(run, packet, tmp_path):
    f = label_studio_export(run, packet.out_dir, "ann", lambda k, m: 1.0, tmp_path / "ls.json")
    tasks = json.loads(f.read_text())
    two = json.loads(json.dumps(tasks))
    two[2]["annotations"].append(dict(two[2]["annotations"][0], id=9))
    (tmp_path / "two.json").write_text(json.dumps(two))
    err = _error(run, tmp_path / "two.json")
    assert err.where.endswith(f"task 3 (id {tasks[2]['id']})") and "2 annotations" in err.what
    bad = json.loads(json.dumps(tasks))
    bad[1]["annotations"][0]["result"][0]["value"]["choices"] = ["7"]
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    err = _error(run, tmp_path / "bad.json")
    assert "er is 7, out of range" in err.what and "task 2" in err.where
    (tmp_path / "broken.json").write_text(f.read_text()[:-20])
    err = _error(run, tmp_path / "broken.json")
    assert "JSON cannot be read" in err.what


def test_label_studio_json_min_export_is_read(run, packet, tmp_path):
    keys = item_keys(run, "bo")
    rows = [{"id": i, "item_id": item, "post": "p", "reply": "r", "er": "2", "ip": "0", "ex": "1",
             "harmful": "harmful", "annotator": 3} for i, item in enumerate(keys)]
    (tmp_path / "min.json").write_text(json.dumps(rows))
    s = import_ratings(run, tmp_path / "min.json", rater="bo")
    assert s.rated_items == len(keys) and s.harmful == len(keys)
    got = _ratings(run).pivot_table(index="request_key", columns="measure", values="value")
    assert (got["ER"] == 2).all() and (got["IP"] == 0).all() and (got["EX"] == 1).all()


def test_the_cli_imports_and_reports_errors_as_one_line(run, packet, tmp_path, capsys):
    f = fill_csv(run, packet.out_dir, "ann", lambda k, m: 1.0, tmp_path / "a.csv")
    assert cli_main(["ratings", "import", str(run), str(f), "--rater", "ann"]) == 0
    assert "ratings stored" in capsys.readouterr().out
    assert cli_main(["ratings", "import", str(run), str(tmp_path / "missing.csv"), "--rater", "ann"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "ratings file not found" in err
    with RunStore(tmp_path / "other", create=True):
        pass
    assert cli_main(["ratings", "import", str(tmp_path / "other"), str(f), "--rater", "ann"]) == 2
    assert "no rating packet" in capsys.readouterr().err


def test_a_reply_rated_in_two_packets_by_one_rater_is_one_rating(run, tmp_path):
    with RunStore(run, create=False) as st:
        n = len(st.replies_df(include_failed=False))
    a = make_packet(run, n=n, raters=["ann"], out=tmp_path / "a", seed=1)
    b = make_packet(run, n=n, raters=["ann"], out=tmp_path / "b", seed=2)
    assert set(a.items["request_key"]) == set(b.items["request_key"])  # every reply, under new ids
    import_ratings(run, fill_csv(run, a.out_dir, "ann", lambda k, m: 1.0, tmp_path / "a.csv"), rater="ann")
    same = import_ratings(run, fill_csv(run, b.out_dir, "ann", lambda k, m: 1.0, tmp_path / "b.csv"), rater="ann")
    assert same.written == 0 and same.unchanged == 3 * n
    err = _error(run, fill_csv(run, b.out_dir, "ann", lambda k, m: 0.0, tmp_path / "c.csv"))
    assert "this file says level 0" in err.what and "a.csv" in err.what


def test_quotes_in_posts_and_replies_do_not_break_the_csv(tmp_path):
    """Issue 26, D2: the delimiter sniffer read the header alone and set doublequote=False, so every row
    whose post or reply held a '"' was split wrongly, and the error blamed the rater's levels."""
    from audit.ratings import read_rating_file

    df = pd.DataFrame([dict(item_id="it01", post='He said "fine", then left;\nI cried', reply='"You matter," I said.',
                            er="2", ip="1", ex="0", harmful="", comment='a "quoted" note, with a comma'),
                       dict(item_id="it02", post="plain", reply="plain", er="1", ip="", ex="2", harmful="yes",
                            comment="")])
    for sep in (",", ";", "\t"):
        path = tmp_path / f"filled{len(sep)}{ord(sep)}.csv"
        df.to_csv(path, index=False, sep=sep)
        fmt, rows = read_rating_file(path)
        assert [r.item_id for r in rows] == ["it01", "it02"]
        assert rows[0].levels == {"ER": 2.0, "IP": 1.0, "EX": 0.0} and rows[0].comment == 'a "quoted" note, with a comma'
        assert rows[1].levels == {"ER": 1.0, "IP": None, "EX": 2.0} and rows[1].harmful == 1
    broken = tmp_path / "broken.csv"  # quoting lost: the row has more fields than the header
    broken.write_text('item_id,post,reply,er,ip,ex,harmful,comment\nit01,a, b,"x",1,1,1,,\n', encoding="utf-8")
    with pytest.raises(AuditError, match=r"row 2: the row has 9 fields, the header 8"):
        read_rating_file(broken)
