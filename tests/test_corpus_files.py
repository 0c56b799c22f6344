"""Users' own post files: CSV / JSONL / parquet with a column mapping, clear errors, nothing dropped silently."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from audit.cli import main
from audit.corpus import load_posts, read_post_file, read_posts
from audit.counterfactual import build_variant_set
from audit.errors import AuditError
from audit.spec import load_spec, spec_from_dict

TEXT_A = "Everything has felt heavy lately, and I can't explain why.\nSome days are better."
TEXT_B = "I keep worrying about money, and it is all I think about."
TEXT_C = "My partner and I keep arguing about chores, \"again\", every week."


def _frame():
    return pd.DataFrame({"pid": ["a1", "b2", "c3"], "body": [TEXT_A, TEXT_B, TEXT_C],
                         "theme": ["depression", "money", "relationship"], "level": ["Moderate", "low", ""]})


def _write(df, path):
    if path.suffix == ".csv":
        df.to_csv(path, index=False)
    elif path.suffix == ".jsonl":
        df.to_json(path, orient="records", lines=True, force_ascii=False)
    else:
        df.to_parquet(path, index=False)
    return path


MAPPING = {"id": "pid", "text": "body", "topic": "theme", "risk": "level"}


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".parquet"])
def test_reads_every_format_with_a_column_mapping(tmp_path, suffix):
    p = _write(_frame(), tmp_path / f"posts{suffix}")
    df, rep = read_post_file(p, MAPPING)
    assert list(df.columns) == ["post_id", "text", "topic", "risk"]
    assert df["post_id"].tolist() == ["a1", "b2", "c3"]
    assert df["text"].tolist() == [TEXT_A, TEXT_B, TEXT_C]  # multi-line text and quotes survive
    assert df["risk"].tolist() == ["moderate", "low", "unrated"]
    assert rep.rows_read == 3 and rep.kept == 3 and rep.dropped == {}
    assert any("no risk level" in n for n in rep.notes)


def test_canonical_names_need_no_mapping(tmp_path):
    p = _write(pd.DataFrame({"id": [1, 2], "text": [TEXT_A, TEXT_B]}), tmp_path / "p.csv")
    df, rep = read_post_file(p)
    assert df["post_id"].tolist() == ["1", "2"]
    assert (df["topic"] == "unspecified").all() and (df["risk"] == "unrated").all()
    assert any("no risk column" in n for n in rep.notes)


def test_ids_derived_from_text_when_there_is_no_id_column(tmp_path):
    p = _write(pd.DataFrame({"text": [TEXT_A, TEXT_B]}), tmp_path / "p.jsonl")
    df1, rep = read_post_file(p)
    df2, _ = read_post_file(_write(pd.DataFrame({"text": [TEXT_B, TEXT_A]}), tmp_path / "q.jsonl"))
    assert df1["post_id"].str.fullmatch(r"p-[0-9a-f]{12}").all()
    assert dict(zip(df1.text, df1.post_id)) == dict(zip(df2.text, df2.post_id))  # stable, order-free
    assert any("derived" in n for n in rep.notes)


def test_missing_column_lists_the_available_ones(tmp_path):
    p = _write(_frame(), tmp_path / "p.csv")
    with pytest.raises(AuditError) as ei:
        read_post_file(p, {"text": "message"})
    msg = ei.value.message
    assert "column 'message' (for text) not found" in msg and "pid" in msg and "posts.columns.text" in msg


def test_missing_mapped_optional_column_is_an_error_too(tmp_path):
    p = _write(_frame(), tmp_path / "p.csv")
    with pytest.raises(AuditError, match="column 'severity' \\(for risk\\)"):
        read_post_file(p, {"id": "pid", "text": "body", "risk": "severity"})


def test_empty_texts_are_an_error_naming_the_lines(tmp_path):
    df = _frame()
    df.loc[1, "body"] = "   "
    p = _write(df, tmp_path / "p.csv")
    with pytest.raises(AuditError) as ei:
        read_post_file(p, MAPPING)
    msg = ei.value.message
    assert "1 post(s) have an empty text" in msg and "line 3" in msg and "skip_empty" in msg


def test_empty_texts_dropped_only_when_asked_and_counted(tmp_path):
    df = _frame()
    df.loc[0, "body"] = ""
    df.loc[2, "body"] = None
    p = _write(df, tmp_path / "p.jsonl")
    out, rep = read_post_file(p, MAPPING, skip_empty=True)
    assert out["post_id"].tolist() == ["b2"]
    assert rep.rows_read == 3 and rep.kept == 1
    (reason, n), = rep.dropped.items()
    assert n == 2 and "empty text" in reason and "line 1" in reason and "line 3" in reason


def test_duplicate_ids(tmp_path):
    df = _frame()
    df.loc[2, "pid"] = "a1"
    p = _write(df, tmp_path / "p.csv")
    with pytest.raises(AuditError) as ei:
        read_post_file(p, MAPPING)
    msg = ei.value.message
    assert "duplicate post id 'a1'" in msg and "line 2" in msg and "line 4" in msg


def test_undecodable_csv(tmp_path):
    p = tmp_path / "p.csv"
    p.write_bytes("id,text\n1,caf\xe9 au lait makes me anxious\n".encode("latin-1"))
    with pytest.raises(AuditError) as ei:
        read_post_file(p)
    msg = ei.value.message
    assert "not valid UTF-8" in msg and "line 2" in msg and "UTF-8" in msg


def test_utf8_bom_is_accepted(tmp_path):
    p = tmp_path / "p.csv"
    p.write_bytes("\ufeffid,text\n1,caf\u00e9 talk helps\n".encode("utf-8"))
    df, _ = read_post_file(p)
    assert df["post_id"].tolist() == ["1"] and df["text"].iloc[0] == "caf\u00e9 talk helps"


def test_bad_jsonl_line(tmp_path):
    p = tmp_path / "p.jsonl"
    p.write_text(json.dumps({"id": "a", "text": TEXT_A}) + "\n{not json}\n", encoding="utf-8")
    with pytest.raises(AuditError) as ei:
        read_post_file(p)
    assert "line 2" in ei.value.message and "invalid JSON" in ei.value.message


def test_jsonl_line_that_is_not_an_object(tmp_path):
    p = tmp_path / "p.jsonl"
    p.write_text('["a", "b"]\n', encoding="utf-8")
    with pytest.raises(AuditError, match="expected a JSON object"):
        read_post_file(p)


def test_corrupt_parquet(tmp_path):
    p = tmp_path / "p.parquet"
    p.write_bytes(b"PAR1 this is not really parquet")
    with pytest.raises(AuditError, match="cannot read the parquet file"):
        read_post_file(p)


def test_unsupported_suffix_and_missing_file(tmp_path):
    with pytest.raises(AuditError, match="unsupported post file type '.xlsx'"):
        read_post_file(tmp_path / "p.xlsx")
    with pytest.raises(AuditError, match="post file not found"):
        read_post_file(tmp_path / "nope.csv")


def test_bad_risk_level(tmp_path):
    df = _frame()
    df.loc[1, "level"] = "urgent"
    with pytest.raises(AuditError) as ei:
        read_post_file(_write(df, tmp_path / "p.csv"), MAPPING)
    assert "'urgent'" in ei.value.message and "line 3" in ei.value.message


def test_header_only_file(tmp_path):
    p = tmp_path / "p.csv"
    p.write_text("id,text\n", encoding="utf-8")
    with pytest.raises(AuditError, match="no posts"):
        read_post_file(p)


def test_spec_with_user_file_end_to_end(tmp_path, capsys):
    df = _frame()
    df.loc[1, "body"] = ""
    _write(df, tmp_path / "mine.csv")
    spec_path = tmp_path / "audit.yaml"
    spec_path.write_text(
        "name: mine\nposts:\n  source: mine.csv\n  skip_empty: true\n"
        "  columns: {id: pid, text: body, topic: theme, risk: level}\n"
        "demographics:\n  cue_types: [explicit_tag]\n  fixed: {age: '32'}\n", encoding="utf-8")
    spec = load_spec(spec_path)
    vs = build_variant_set(spec)
    variants = vs.frame
    assert set(variants["post_id"]) == {"a1", "c3"}
    assert len(variants) == 2 * (1 + 8)
    assert sum(vs.load_report.dropped.values()) == 1 and "empty text" in next(iter(vs.load_report.dropped))
    assert main(["variants", str(spec_path)]) == 0
    out = capsys.readouterr().out
    assert "posts: 2 kept of 3 read from" in out and "dropped 1: empty text" in out


def test_user_posts_with_demographic_words_are_flagged_not_dropped(tmp_path):
    _write(pd.DataFrame({"id": ["x", "y"], "text": ["My husband says I worry too much.", TEXT_B]}),
           tmp_path / "p.csv")
    spec = spec_from_dict({"name": "t", "posts": {"source": str(tmp_path / "p.csv")}})
    post_set = read_posts(spec)
    assert len(post_set.frame) == 2
    assert any("may signal a demographic group" in n and "x" in n for n in post_set.report.notes)


def test_filters_are_counted(tmp_path):
    spec = spec_from_dict({"name": "t", "posts": {"risk": ["high"], "limit": 3}})
    post_set = read_posts(spec)
    posts, rep = post_set.frame, post_set.report
    assert len(posts) == 3 and (posts["risk"] == "high").all()
    assert rep.rows_read == rep.kept + sum(rep.dropped.values())


@pytest.mark.parametrize("posts, expect", [
    ({"ids": ["grief-01", "grief-99"]}, "unknown post id(s) ['grief-99']"),
    ({"topics": ["grief", "gardening"]}, "unknown topic(s) ['gardening']"),
    ({"columns": {"text": "body"}}, "posts.columns applies to a post file"),
    ({"risk": ["high"], "topics": ["grief"]}, "no posts left after the filters"),
])
def test_selection_errors(posts, expect):
    with pytest.raises(AuditError) as ei:
        load_posts(spec_from_dict({"name": "t", "posts": posts}))
    assert expect in ei.value.message


def test_per_topic_keeps_the_first_posts_of_each_topic():
    posts = load_posts(spec_from_dict({"name": "t", "posts": {"per_topic": 1}}))
    assert posts["topic"].is_unique and posts["post_id"].str.endswith("-01").all()


def test_cli_lint_lists_flagged_posts(tmp_path, capsys):
    _write(pd.DataFrame({"id": ["x", "y"], "text": ["As a dad I feel useless.", TEXT_B]}), tmp_path / "p.csv")
    spec_path = tmp_path / "s.yaml"
    spec_path.write_text("name: s\nposts: {source: p.csv}\n", encoding="utf-8")
    assert main(["variants", str(spec_path), "--lint"]) == 1
    out = capsys.readouterr().out
    assert "x: 'As a dad' (gendered_self_reference)" in out and "y:" not in out
    assert "lint: 1 of 2 posts" in out
    assert main(["variants", "demo", "--lint"]) == 0
