"""``empathy-audit score-table``: scores for users who only want scores (issue 14, part 2)."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from audit.cli import main
from audit.errors import AuditError
from audit.score_table import score_table
from audit.scorers import get_scorer


def test_score_table_writes_every_row_with_one_column_per_measure(tmp_path, capsys):
    t = pd.DataFrame({"seeker": ["I can't sleep and I feel alone.", "My dog died.", "Work is too much."],
                      "response": ["That sounds so hard. What keeps you up?", "", "I'm sorry. You matter."]})
    src = tmp_path / "pairs.tsv"
    t.to_csv(src, sep="\t", index=False)
    out = tmp_path / "scored.parquet"
    rc = main(["score-table", str(src), "--post", "seeker", "--reply", "response", "--scorers", "epitome", "length",
               "--out", str(out)])
    assert rc == 0 and "scored 3 rows" in capsys.readouterr().out
    got = pd.read_parquet(out)
    assert len(got) == 3 and got["response"].fillna("").tolist() == t["response"].tolist()
    direct = get_scorer("epitome").score(t["seeker"].tolist(), t["response"].fillna("").tolist())
    expect = [v if r else float("nan") for v, r in zip(direct["ER"].tolist(), t["response"])]  # empty is missing
    assert got["epitome.ER"].tolist() == pytest.approx(expect, nan_ok=True)
    assert got["reply_empty"].tolist() == [False, True, False]
    assert got.loc[0, "length.words"] == 8


def test_score_table_names_missing_columns():
    with pytest.raises(AuditError) as err:
        score_table(pd.DataFrame({"a": ["x"]}), post="post", reply="reply", scorers=["length"], where="f.csv")
    assert "not found" in err.value.message and "--post" in err.value.fix


def test_empty_null_and_whitespace_replies_are_missing_never_scored_zero(tmp_path, capsys):
    """H2 (score-table): an empty reply was scored 0 on every measure."""
    src = tmp_path / "t.jsonl"
    rows = [{"post": "I feel alone.", "reply": r} for r in ("", None, "  \n ", "That sounds hard. I'm here.")]
    src.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    out = tmp_path / "o.csv"
    assert main(["score-table", str(src), "--post", "post", "--reply", "reply", "--scorers", "length", "refusal",
                 "--out", str(out)]) == 0
    assert "3 of 4 replies are empty" in capsys.readouterr().out
    got = pd.read_csv(out)
    assert got["length.words"].isna().tolist() == [True, True, True, False]
    assert got["refusal.refusal"].isna().tolist() == [True, True, True, False]


def test_an_input_column_named_like_an_output_is_refused_not_overwritten(tmp_path, capsys):
    src = tmp_path / "t.csv"
    pd.DataFrame({"post": ["p"], "reply": ["r r"], "length.words": [99]}).to_csv(src, index=False)
    assert main(["score-table", str(src), "--post", "post", "--reply", "reply", "--scorers", "length",
                 "--out", str(tmp_path / "o.csv")]) == 2
    err = capsys.readouterr().err
    assert "length.words" in err and "overwrite" in err and err.count("\n") == 1
    assert not (tmp_path / "o.csv").exists()


def test_csv_output_cells_are_guarded_and_json_replies_stay_json(tmp_path):
    src = tmp_path / "t.jsonl"
    rows = [{"post": "=HYPERLINK(\"http://x\")", "reply": "=1+2 is what I'd say"},
            {"post": "p", "reply": {"text": "I hear you", "score": 1}}]
    src.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    out = tmp_path / "o.csv"
    assert main(["score-table", str(src), "--post", "post", "--reply", "reply", "--scorers", "length",
                 "--out", str(out)]) == 0
    got = pd.read_csv(out)
    assert got.loc[0, "post"].startswith("'=") and got.loc[0, "reply"].startswith("'=")
    assert json.loads(got.loc[1, "reply"]) == {"text": "I hear you", "score": 1}  # JSON, not a Python repr
