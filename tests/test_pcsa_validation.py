"""Validating the PCSA suite's judge: the labelling table of a scripted run (blinded, stratified,
unparseable verdicts left out), two simulated annotators through ``empathy-audit judge validate``
with hand-computed kappas, and the report stating the validation when the spec points at the table."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd
import pytest

from audit.errors import AuditError
from audit.cli import main
from audit.pcsa.validation import criterion_text, validation_table
from audit.pipeline import run
from audit.spec import spec_from_dict
from audit.store import RunStore
from audit.testing import StubServer

sys.path.insert(0, str(Path(__file__).parent))
from pcsa_sim import attacker_reply, spec_dict, target  # noqa: E402

GROUPS = {"axes": ["race"], "groups": {"race": ["Black", "White"]}}


def _black_complies(ms, last):
    return any("Black" in m["content"] for m in ms if m["role"] == "user")


@pytest.fixture(scope="module")
def servers():
    with StubServer(reply=attacker_reply) as att, StubServer(reply=target(_black_complies)) as tgt:
        yield att, tgt


def _spec(servers, **extra):
    att, tgt = servers
    # 4 personas x (control, Black, White), one objective, one turn: 12 conversations, the 4 Black ones UNSAFE
    return spec_dict(att.base_url, {"t": tgt.base_url}, persona_limit=4, objectives=["anti_recovery"], max_turns=1,
                     demographics=GROUPS, **extra)


@pytest.fixture(scope="module")
def run_dir(servers, tmp_path_factory):
    d = tmp_path_factory.mktemp("pcsa-val") / "run"
    res = run(spec_from_dict(_spec(servers)), d, progress=False, echo=None)
    assert res.ok
    return d


def _flip(v: str) -> str:
    return {"yes": "no", "no": "yes"}[v]


def _annotate(table: Path) -> tuple[pd.DataFrame, list[int]]:
    """human_1 agrees with the judge everywhere; human_2 disagrees on two UNSAFE rows and one SAFE row."""
    df = pd.read_csv(table)
    df["human_1"] = df["judge"]
    df["human_2"] = df["judge"]
    flip = list(df.index[df["judge"] == "yes"][:2]) + list(df.index[df["judge"] == "no"][:1])
    df.loc[flip, "human_2"] = df.loc[flip, "judge"].map(_flip)
    df.to_csv(table, index=False)
    return df, flip


def _kappa(a: pd.Series, b: pd.Series) -> float:
    """Cohen's kappa by its definition: (p_o - p_e) / (1 - p_e)."""
    po = float((a == b).mean())
    pe = sum(float((a == c).mean()) * float((b == c).mean()) for c in ("yes", "no"))
    return (po - pe) / (1 - pe)


def test_table_is_blinded_and_the_key_holds_the_design(run_dir, tmp_path, capsys):
    out = tmp_path / "label.csv"
    assert main(["pcsa", "validation-table", str(run_dir), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "12 of 12 judged conversations written" in printed and "0 with an unparseable verdict" in printed
    df = pd.read_csv(out)
    assert list(df.columns) == ["conversation_id", "objective", "transcript", "criterion", "judge", "judge_compliance",
                                "judge_harmful_content", "judge_impersonation", "judge_toxic_empathy", "human_1",
                                "human_2"]
    assert df["human_1"].isna().all() and df["human_2"].isna().all()
    assert (df["criterion"] == criterion_text()["criterion"]).all()
    assert df["criterion"].iloc[0].startswith("Is the counsellor's side of this conversation unsafe")
    key = pd.read_csv(tmp_path / "label.key.csv")
    with RunStore(run_dir) as st:
        conv = st.pcsa_conversations_df().set_index("conversation_id")
    # the key has the design of every row; the judge column is the stored verdict
    assert set(key["conversation_id"]) == set(df["conversation_id"]) == set(conv.index)
    k = key.set_index("conversation_id")
    assert (k.loc[df["conversation_id"], "group_name"].to_numpy() == conv.loc[df["conversation_id"], "group_name"]
            .to_numpy()).all()
    judge = df.set_index("conversation_id")["judge"]
    assert (judge == conv.loc[judge.index, "verdict"].map({"UNSAFE": "yes", "SAFE": "no"})).all()
    assert set(judge[k["group_name"] == "Black"]) == {"yes"} and set(judge[k["group_name"] != "Black"]) == {"no"}
    # the compliance axis is what made them UNSAFE
    assert (df["judge_compliance"] == df["judge"]).all()
    # transcripts are the stored turns as the judge read them
    assert df["transcript"].str.startswith("[Client, turn 1]").all()
    assert df["transcript"].str.contains(r"\[Counsellor, turn 1\]").all()


def test_two_simulated_annotators_give_the_hand_computed_kappas(run_dir, tmp_path, capsys):
    out = tmp_path / "label.csv"
    assert main(["pcsa", "validation-table", str(run_dir), "--out", str(out)]) == 0
    df, flip = _annotate(out)
    res_json = tmp_path / "v.json"
    capsys.readouterr()
    assert main(["judge", "validate", "--data", str(out), "--columns", "reply=transcript",
                 "--json", str(res_json)]) == 0
    pairs = {(p["a"], p["b"]): p for p in json.loads(res_json.read_text())["pairs"]}
    # 12 rows, judge yes 4 / no 8; human_2: yes 3 (2 of the judge's yes, 1 of its no)
    # p_o = 9/12, p_e = 4/12 * 3/12 + 8/12 * 9/12 = 84/144, kappa = (108 - 84) / (144 - 84) = 0.4
    assert pairs[("judge", "human_1")]["kappa"] == pytest.approx(1.0)
    assert pairs[("judge", "human_1")]["accuracy"] == pytest.approx(1.0)
    assert pairs[("judge", "human_2")]["kappa"] == pytest.approx(0.4)
    assert pairs[("judge", "human_2")]["kappa"] == pytest.approx(_kappa(df["judge"], df["human_2"]))
    assert pairs[("judge", "human_2")]["accuracy"] == pytest.approx(9 / 12)
    # the 3 rows where the annotators disagree tie and are left out of the majority, which agrees with the judge
    maj = pairs[("judge", "human majority")]
    assert maj["n"] == 9 and maj["kappa"] == pytest.approx(1.0) and maj["accuracy"] == pytest.approx(1.0)
    assert pairs[("human_1", "human_2")]["kappa"] == pytest.approx(0.4)
    assert json.loads(res_json.read_text())["n_ties"] == len(flip) == 3


def test_stratified_sample_takes_equal_shares_of_each_verdict_and_group(run_dir, tmp_path, capsys):
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    assert main(["pcsa", "validation-table", str(run_dir), "--out", str(a), "--n", "6", "--seed", "3"]) == 0
    assert "6 of 12 judged conversations written (a stratified sample over 3 strata)" in capsys.readouterr().out
    key = pd.read_csv(tmp_path / "a.key.csv")
    # strata: UNSAFE | persona | Black, SAFE | persona | White, SAFE | persona | control: 2 each
    assert key["stratum"].value_counts().to_dict() == {"UNSAFE | persona | Black": 2, "SAFE | persona | White": 2,
                                                       "SAFE | persona | control": 2}
    assert key["conversation_id"].is_unique and len(pd.read_csv(a)) == 6
    validation_table(run_dir, out=b, n=6, seed=3)
    assert pd.read_csv(a).equals(pd.read_csv(b))      # seeded
    other = validation_table(run_dir, n=6, seed=4)
    assert len(other.table) == 6 and other.strata == {s: 2 for s in key["stratum"]}
    assert main(["pcsa", "validation-table", str(run_dir), "--out", str(tmp_path / "c.csv"), "--n", "2"]) == 2
    err = capsys.readouterr().err
    assert err.count("error:") == 1 and "--n 2 cannot cover the run's 3 strata" in err


def test_a_filled_table_is_never_overwritten_and_force_keeps_a_backup(run_dir, tmp_path, capsys):
    """H4: running validation-table again over a filled annotation table overwrote 16 of 16 human labels."""
    a = tmp_path / "a.csv"
    assert main(["pcsa", "validation-table", str(run_dir), "--out", str(a)]) == 0
    filled = pd.read_csv(a)
    filled["human_1"] = ["yes" if i % 2 else "no" for i in range(len(filled))]
    filled.to_csv(a, index=False)
    before = a.read_bytes()
    capsys.readouterr()
    assert main(["pcsa", "validation-table", str(run_dir), "--out", str(a), "--seed", "5"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not empty" in err and "--force" in err
    assert a.read_bytes() == before
    with pytest.raises(AuditError):
        validation_table(run_dir, out=a)
    assert main(["pcsa", "validation-table", str(run_dir), "--out", str(a), "--force"]) == 0
    out = capsys.readouterr().out
    backups = sorted(tmp_path.glob("a.csv.bak-*"))
    assert len(backups) == 1 and backups[0].read_bytes() == before and str(backups[0]) in out
    assert pd.read_csv(a)["human_1"].isna().all()


def test_unparseable_verdicts_are_left_out_and_counted(servers, tmp_path, capsys):
    from audit.pcsa.local import answer

    def judge(req, last):
        return "It looks UNSAFE to me." if "Black" in last else answer(last)

    with StubServer(reply=judge) as j:
        d = _spec(servers, judge={"model": {"label": "judge", "base_url": j.base_url, "model": "stub-judge"}})
        run(spec_from_dict(d), tmp_path / "run", progress=False, echo=None)
    out = tmp_path / "t.csv"
    assert main(["pcsa", "validation-table", str(tmp_path / "run"), "--out", str(out)]) == 0
    assert "8 of 8 judged conversations written; left out: 4 with an unparseable verdict" in capsys.readouterr().out
    df = pd.read_csv(out)
    assert len(df) == 8 and set(df["judge"]) == {"no"}
    assert set(pd.read_csv(tmp_path / "t.key.csv")["group_name"]) == {"White", "control"}


def test_csv_export_is_injection_safe(servers, tmp_path):
    def att(req, last):
        return "=HYPERLINK(\"http://x\") " + attacker_reply(req, last)

    with StubServer(reply=att) as a:
        d = _spec(servers)
        d["pcsa"]["attacker"]["model"]["base_url"] = a.base_url
        d["pcsa"]["persona_limit"] = 1
        run(spec_from_dict(d), tmp_path / "run", progress=False, echo=None)
    res = validation_table(tmp_path / "run", out=tmp_path / "t.csv")
    raw = (tmp_path / "t.csv").read_text()
    assert res.table["transcript"].str.contains("=HYPERLINK").all()
    # the transcript starts with the turn label; a cell starting with '=' would be quoted
    assert "]\n=HYPERLINK" in raw
    res.table["transcript"] = "=HYPERLINK(\"http://x\")"
    from audit.pcsa.validation import write_validation_table

    write_validation_table(res, tmp_path / "u.csv")
    assert (pd.read_csv(tmp_path / "u.csv")["transcript"] == "'=HYPERLINK(\"http://x\")").all()


def test_report_states_the_validation_when_the_spec_points_at_the_table(servers, run_dir, tmp_path):
    table = tmp_path / "label.csv"
    validation_table(run_dir, out=table)
    _annotate(table)
    d = _spec(servers, judge_validation={"data": str(table), "humans": ["human_1", "human_2"]})
    res = run(spec_from_dict(d), tmp_path / "run", progress=False, echo=None)
    assert res.ok
    html = res.paths["html"].read_text()
    assert 'id="judge-validation-table"' in html
    assert "judge against each annotator: human_1 1.00, human_2 0.40" in html
    assert "Moore et al." not in html.split('id="pcsa-judge-validation"')[1].split("</section>")[0]
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    rows = {(r["a"], r["b"]): r for r in results["validation"]["rows"]}
    assert rows[("judge", "human majority")]["kappa"] == "1.00" and rows[("judge", "human majority")]["n"] == 9
    assert rows[("humans", "Fleiss")]["n"] == 12
    lim = " ".join(results["limitations"])
    assert "Its validation against human labels" in lim and "has not been validated" not in lim
    assert "The judge's validation" in res.paths["markdown"].read_text()
    # without the spec entry the report says how to validate
    plain = json.loads((run_dir / "results.json").read_text())
    assert plain["validation"] is None
    assert any("empathy-audit pcsa validation-table" in x and "judge validate" in x for x in plain["limitations"])


def test_bad_validation_table_is_one_clear_error(servers, run_dir, tmp_path, capsys):
    table = tmp_path / "label.csv"
    validation_table(run_dir, out=table)
    _annotate(table)
    # a human column that is not in the file: the analysis stops with one message naming file and column
    d = _spec(servers, judge_validation={"data": str(table), "humans": ["human_1", "human_9"]})
    res = run(spec_from_dict(d), tmp_path / "run", progress=False, echo=None)
    with RunStore(tmp_path / "run") as st:
        err = st.get_meta("analysis_error")
        assert st.table_df("pcsa_validation") is None and st.count_rows("pcsa_conversations") == 12
    assert not res.ok and [st.status for st in res.stages if st.name == "analyze"] == ["failed"]
    assert err.startswith(f"pcsa.judge_validation: {table}: the table has no column 'human_9'")
    assert "human_1, human_2" in err and err in res.paths["html"].read_text().replace("&#39;", "'")
    # a file that is not there
    d["pcsa"]["judge_validation"] = {"data": str(tmp_path / "missing.csv")}
    run(spec_from_dict(d), tmp_path / "run", progress=False, echo=None)
    with RunStore(tmp_path / "run") as st:
        assert st.get_meta("analysis_error").startswith(f"pcsa.judge_validation: {tmp_path / 'missing.csv'}: ")
    # a label that is not yes/no: the row and the column are named
    df = pd.read_csv(table)
    df.loc[4, "human_2"] = "maybe"
    df.to_csv(table, index=False)
    capsys.readouterr()
    assert main(["judge", "validate", "--data", str(table), "--columns", "reply=transcript"]) == 2
    e = capsys.readouterr().err
    assert e.count("error:") == 1 and "row 6" in e and "'maybe' is not yes or no" in e and "human_2" in e
    # a run directory that is not a run, and a file type that cannot be written
    assert main(["pcsa", "validation-table", str(tmp_path), "--out", str(tmp_path / "x.csv")]) == 2
    assert "no run store here" in capsys.readouterr().err
    assert main(["pcsa", "validation-table", str(run_dir), "--out", str(tmp_path / "x.xlsx")]) == 2
    err = capsys.readouterr().err
    assert "'.xlsx'" in err and ".csv, .tsv, .jsonl" in err and err.count("\n") == 1


def test_a_pcsa_spec_without_judge_validation_keeps_its_hash():
    d = spec_dict("http://127.0.0.1:9/v1", {"t": "http://127.0.0.1:9/v1"})
    plain = spec_from_dict(d)
    assert "judge_validation" not in plain.canonical_json
    d["pcsa"]["judge_validation"] = {"data": "label.csv", "humans": ["human_1", "human_2"]}
    with_table = spec_from_dict(d)
    assert '"judge_validation"' in with_table.canonical_json and with_table.canonical_json != plain.canonical_json
    assert with_table.pcsa.judge_validation.judge == "judge"
