"""``empathy-audit score-table``: scores for users who only want scores (issue 14, part 2)."""

from __future__ import annotations

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
    assert got["epitome.ER"].tolist() == pytest.approx(direct["ER"].tolist(), nan_ok=True)
    assert got.loc[0, "length.words"] == 8


def test_score_table_names_missing_columns():
    with pytest.raises(AuditError) as err:
        score_table(pd.DataFrame({"a": ["x"]}), post="post", reply="reply", scorers=["length"], where="f.csv")
    assert "not found" in err.value.message and "--post" in err.value.fix
