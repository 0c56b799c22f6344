"""`empathy-audit scorers list|validate|train` and the labelled-file reader."""

from __future__ import annotations

import json

import pytest

from audit.cli import main
from audit.scorers.validation import read_labelled
from audit.errors import AuditError
from audit.scorers import available_scorers


def test_list_shows_every_scorer_with_its_measures(capsys):
    assert main(["scorers", "list"]) == 0
    out = capsys.readouterr().out
    for s in available_scorers():
        assert s["name"] in out and ", ".join(s["measures"]) in out
    assert main(["scorers", "list", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == available_scorers()


def _csv(tmp_path, text):
    p = tmp_path / "l.csv"
    p.write_text(text, encoding="utf-8")
    return p


def test_labelled_file_is_checked_row_by_row(tmp_path):
    ok = read_labelled(_csv(tmp_path, 'seeker_post,response_post,level\n"I am sad, really",So sorry.,2\nx,y, 0\n'))
    assert ok["level"].tolist() == [2, 0] and ok["seeker_post"][0] == "I am sad, really"
    with pytest.raises(AuditError) as e:
        read_labelled(_csv(tmp_path, "seeker_post,response_post,level\na,b,1\nc,d,strong\n"))
    assert "row 3" in e.value.message and "'strong'" in e.value.message
    with pytest.raises(AuditError, match=r"missing column\(s\) \['level'\]"):
        read_labelled(_csv(tmp_path, "seeker_post,response_post,label\na,b,1\n"))
    with pytest.raises(AuditError, match="no rows"):
        read_labelled(_csv(tmp_path, "seeker_post,response_post,level\n"))
    with pytest.raises(AuditError, match="not found"):
        read_labelled(tmp_path / "absent.csv")
    with pytest.raises(AuditError, match="level 3"):
        read_labelled(_csv(tmp_path, "seeker_post,response_post,level\na,b,3\n"))


def test_validate_rejects_a_mechanism_the_scorer_does_not_give(tmp_path, capsys):
    p = _csv(tmp_path, "seeker_post,response_post,level\na,b,1\n")
    assert main(["scorers", "validate", "--scorer", "length", "--mechanism", "ER", "--data", str(p)]) == 2
    assert "does not score ER" in capsys.readouterr().err
    assert main(["scorers", "validate", "--scorer", "length", "--mechanism", "ER", "--data", str(tmp_path / "x.csv")]) == 2


def test_train_needs_a_data_directory(tmp_path, capsys):
    assert main(["scorers", "train", "--data", str(tmp_path / "absent")]) == 2
    assert "training data directory not found" in capsys.readouterr().err


def _labelled_sample(shared_dir, tmp_path, n=40):
    import pandas as pd

    df = pd.read_csv(shared_dir / "epitome_data" / "emotional-reactions-reddit.csv")
    # a small, level-balanced file
    df = df.groupby("level").sample(n=n // 3, random_state=1).reset_index(drop=True)
    p = tmp_path / "er.csv"
    df[["seeker_post", "response_post", "level"]].to_csv(p, index=False)
    return p, df


def test_validate_on_a_small_labelled_file_prints_what_the_scorer_gets_right(shared_dir, tmp_path, capsys):
    from audit.scorers import get_scorer

    p, df = _labelled_sample(shared_dir, tmp_path)
    assert main(["scorers", "validate", "--scorer", "epitome", "--mechanism", "ER", "--data", str(p), "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    # the figures are the scorer's own predictions against the labels, computed here independently
    pred = get_scorer("epitome").score(df["seeker_post"].tolist(), df["response_post"].tolist())["ER"].round()
    truth = df["level"].to_numpy()
    assert res["n"] == len(df)
    assert res["accuracy"] == pytest.approx(float((pred.to_numpy() == truth).mean()))
    conf = [[int(((truth == i) & (pred.to_numpy() == j)).sum()) for j in range(3)] for i in range(3)]
    assert res["confusion"] == conf
    assert {"accuracy", "macro_f1", "weighted_kappa", "n"} <= set(res)
    assert main(["scorers", "validate", "--scorer", "epitome", "--mechanism", "ER", "--data", str(p)]) == 0
    text = capsys.readouterr().out
    assert f"accuracy                   {res['accuracy']:.3f}" in text
    assert f"quadratic-weighted kappa   {res['weighted_kappa']:.3f}" in text
    assert "level 2" in text and "confusion" in text
