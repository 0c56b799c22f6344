"""Appropriateness analysis and judge: strict judge parsing; judge validation on a labelled table with
known kappas; replication mode reproduces known rates exactly and judges through the engine once;
a planted group effect is recovered; the gap tests hold their level under the null."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from audit.appropriateness.analysis import analyze_appropriateness, appropriateness_tests
from audit.appropriateness.judge import option_order, parse_choice, truncate
from audit.appropriateness.replicate import reanalyze_appropriateness
from audit.appropriateness.stimuli import load_stimuli
from audit.appropriateness.validation import validate_judge
from audit.errors import AuditError
from appropriateness_sim import simulate_judged, true_marginal_gap

YN = ["yes", "no"]
NY = ["no", "yes"]


@pytest.mark.parametrize("text,options,answer,status", [
    ("A", YN, "yes", "judged"), ("B", YN, "no", "judged"), ("A", NY, "no", "judged"), ("b", NY, "yes", "judged"),
    ("(B)", YN, "no", "judged"), ("B.", YN, "no", "judged"), ("**A**", YN, "yes", "judged"),
    ("A: yes", YN, "yes", "judged"), ("B) no", YN, "no", "judged"), (" A\n", YN, "yes", "judged"),
    ("Yes", YN, "yes", "judged"), ("no.", NY, "no", "judged"), ("NO", YN, "no", "judged"),
    ("A: no", YN, None, "unparseable"),            # the letter and the word disagree
    ("A or B", YN, None, "unparseable"), ("The answer is A", YN, None, "unparseable"),
    ("Absolutely", YN, None, "unparseable"), ("C", YN, None, "unparseable"), ("yes and no", YN, None, "unparseable"),
    ("I cannot judge this.", YN, None, "unparseable"), ("AB", YN, None, "unparseable"),
    ("", YN, None, "unanswered"), ("   ", YN, None, "unanswered"), (None, YN, None, "unanswered"),
])
def test_judge_answers_are_parsed_strictly(text, options, answer, status):
    c = parse_choice(text, options)
    assert (c.answer, c.status) == (answer, status)


def test_options_are_shuffled_per_item_reproducibly_and_replies_truncated_as_upstream():
    orders = [tuple(option_order(0, f"k{i}")) for i in range(400)]
    assert set(orders) == {("yes", "no"), ("no", "yes")}
    assert 0.42 < orders.count(("yes", "no")) / 400 < 0.58
    assert orders == [tuple(option_order(0, f"k{i}")) for i in range(400)]
    assert [tuple(option_order(1, f"k{i}")) for i in range(400)] != orders
    assert truncate("x" * 1500, 1024) == ("x" * 1024, True) and truncate("short", 1024) == ("short", False)


def _labelled() -> pd.DataFrame:
    """100 rows. judge vs human_1: 45 yes-yes, 5 yes-no, 10 no-yes, 40 no-no -> p_o 0.85, p_e 0.5,
    kappa 0.70. human_2 = human_1 except 10 rows (5 yes->no, 5 no->yes)."""
    judge = ["yes"] * 45 + ["yes"] * 5 + ["no"] * 10 + ["no"] * 40
    h1 = ["yes"] * 45 + ["no"] * 5 + ["yes"] * 10 + ["no"] * 40
    h2 = list(h1)
    for i in [0, 1, 2, 3, 4]:
        h2[i] = "no"
    for i in [60, 61, 62, 63, 64]:
        h2[i] = "yes"
    return pd.DataFrame({"reply": [f"r{i}" for i in range(100)], "criterion": "Does the response ...?",
                         "judge": judge, "human_1": h1, "human_2": h2})


def _cohen(a, b):
    a, b = np.asarray(a) == "yes", np.asarray(b) == "yes"
    po = (a == b).mean()
    pe = a.mean() * b.mean() + (1 - a.mean()) * (1 - b.mean())
    return (po - pe) / (1 - pe)


def test_judge_validation_gives_the_known_kappas(tmp_path):
    t = _labelled()
    t.to_csv(tmp_path / "v.csv", index=False)
    v = validate_judge(tmp_path / "v.csv")
    p = v.pairs.set_index(["a", "b"])
    assert p.loc[("judge", "human_1"), "kappa"] == pytest.approx(0.70, abs=1e-12)
    assert p.loc[("judge", "human_1"), "accuracy"] == pytest.approx(0.85)
    assert p.loc[("judge", "human_2"), "kappa"] == pytest.approx(_cohen(t.judge, t.human_2), abs=1e-12)
    assert p.loc[("human_1", "human_2"), "kappa"] == pytest.approx(_cohen(t.human_1, t.human_2), abs=1e-12)
    # majority of two: ties (the 10 rows they disagree on) are left out
    assert v.n_ties == 10 and p.loc[("judge", "human majority"), "n"] == 90
    agree = t[t.human_1 == t.human_2]
    assert p.loc[("judge", "human majority"), "kappa"] == pytest.approx(_cohen(agree.judge, agree.human_1), abs=1e-12)
    # Fleiss' kappa of two raters by its formula: P_i = sum_j n_ij(n_ij - 1) / (n(n - 1)), P_e = sum_j p_j^2
    n_yes = (t.human_1 == "yes").astype(int) + (t.human_2 == "yes").astype(int)
    P_i = (n_yes * (n_yes - 1) + (2 - n_yes) * (1 - n_yes)) / 2
    p_yes = n_yes.sum() / 200
    P_e = p_yes ** 2 + (1 - p_yes) ** 2
    assert v.fleiss["kappa"] == pytest.approx((P_i.mean() - P_e) / (1 - P_e), abs=1e-12) and v.fleiss["n"] == 100
    assert "Fleiss' kappa 0.959 over the judge and two annotators" in v.summary()


def test_judge_validation_errors_name_row_and_column():
    t = _labelled()
    t.loc[7, "human_2"] = "maybe"
    with pytest.raises(AuditError, match="row 9") as e:
        validate_judge(t)
    assert "human_2" in e.value.where
    with pytest.raises(AuditError, match="no column 'judge_label'"):
        validate_judge(_labelled(), judge="judge_label")
    with pytest.raises(AuditError, match="no human label column"):
        validate_judge(_labelled().drop(columns=["human_1", "human_2"]))


def test_the_cli_validates_and_writes_json(tmp_path, capsys):
    from audit.cli import main

    t = _labelled().rename(columns={"human_1": "ann_a", "human_2": "ann_b", "judge": "gpt"})
    t.to_csv(tmp_path / "v.csv", index=False)
    rc = main(["judge", "validate", "--data", str(tmp_path / "v.csv"), "--columns", "judge=gpt,humans=ann_a|ann_b",
               "--json", str(tmp_path / "v.json")])
    assert rc == 0
    out = json.loads((tmp_path / "v.json").read_text())
    k = {(r["a"], r["b"]): r["kappa"] for r in out["pairs"]}
    assert k[("judge", "ann_a")] == pytest.approx(0.70)
    assert "Fleiss' kappa, 2 annotators alone" in capsys.readouterr().out


def _raw_table(seed: int = 3) -> tuple[pd.DataFrame, dict[tuple[str, str], float]]:
    """Raw replies of two models with judge labels (some blank) and the known appropriate rates."""
    rng = np.random.default_rng(seed)
    st = load_stimuli()
    rows, ok = [], {}
    for model, p in (("m-a", 0.8), ("m-b", 0.4)):
        for s in st.to_dict("records"):
            for k in range(6):
                appropriate = rng.random() < p
                blank = rng.random() < 0.05
                label = "" if blank else (s["appropriate_answer"] if appropriate else
                                          ("no" if s["appropriate_answer"] == "yes" else "yes"))
                rows.append({"model": model, "interjection": s["messages"][-1]["content"] if k % 2 else s["id"],
                             "response": f"reply {k}", "label": label, "group": ["control", "Black", "White"][k % 3]})
                ok.setdefault((model, s["condition"]), []).append(float(appropriate and not blank))
    return pd.DataFrame(rows), {k: float(np.mean(v)) for k, v in ok.items()}


def test_replication_mode_reproduces_known_rates_exactly(tmp_path):
    t, expected = _raw_table()
    t.to_csv(tmp_path / "raw.csv", index=False)
    res = reanalyze_appropriateness(tmp_path / "raw.csv", reply="response", stimulus="interjection",
                                    judge_label="label", group="group", n_boot=200)
    got = res.rates[(res.rates.by == "condition") & (res.rates.level != "all conditions")]
    assert len(got) == len(expected) == 10
    for r in got.to_dict("records"):
        assert r["rate"] == pytest.approx(expected[(r["model_label"], r["level"])], abs=1e-12)
    assert res.meta["n_unanswered"] == int((t["label"] == "").sum())
    assert set(res.tests["group"]) == {"Black", "White"}
    with pytest.raises(AuditError, match="row 4"):
        bad = t.copy()
        bad.loc[2, "interjection"] = "Where is the nearest bridge?"
        reanalyze_appropriateness(bad, reply="response", stimulus="interjection", judge_label="label")
    with pytest.raises(AuditError, match="no judge labels and no judge"):
        reanalyze_appropriateness(t, reply="response", stimulus="interjection")


def test_replication_mode_judges_through_the_engine_once(tmp_path):
    from audit.spec import JudgeSpec, ModelSpec
    from audit.testing import StubServer

    t, _ = _raw_table()
    t = t[t.model == "m-a"].head(20)
    with StubServer(reply=lambda req, text: "A") as srv:
        judge = JudgeSpec(model=ModelSpec(label="j", base_url=srv.base_url, model="stub"), response_format="none")
        res = reanalyze_appropriateness(t, reply="response", stimulus="interjection", judge=judge,
                                        store_dir=tmp_path / "judge", n_boot=200)
        sent = srv.count
        again = reanalyze_appropriateness(t, reply="response", stimulus="interjection", judge=judge,
                                          store_dir=tmp_path / "judge", n_boot=200)
        assert srv.count == sent
    assert 0 < sent <= 20 and (res.judged["judge_status"] == "judged").all()
    pd.testing.assert_frame_equal(res.rates, again.rates)
    # answer "A" is "yes" or "no" by the shuffled order: the rate is neither 0 nor 1
    assert 0 < res.rates.loc[res.rates.level == "all conditions", "rate"].iloc[0] < 1


def test_a_planted_group_effect_is_recovered():
    d = simulate_judged(seed=5, effect={"Black": -1.2})
    res = analyze_appropriateness(d, n_boot=500)
    t = res.tests.set_index("group")
    truth = true_marginal_gap(-1.2)
    assert t.loc["Black", "ci_low"] <= truth <= t.loc["Black", "ci_high"]
    assert bool(t.loc["Black", "significant_holm"])
    assert t.loc["White", "ci_low"] <= 0 <= t.loc["White", "ci_high"]
    r = res.rates[res.rates.by == "group"].set_index("level")
    assert r.loc["Black", "rate"] < r.loc["control", "rate"] and r.loc["Black", "n_clusters"] == 10


def test_rate_cis_resample_stimuli():
    """Duplicating every reply inside its stimulus must not narrow the cluster-bootstrap CI."""
    d = simulate_judged(seed=9)
    a = analyze_appropriateness(d, n_boot=2000).rates
    b = analyze_appropriateness(pd.concat([d, d]), n_boot=2000).rates
    ra, rb = a[a.level == "all conditions"].iloc[0], b[b.level == "all conditions"].iloc[0]
    assert rb["rate"] == pytest.approx(ra["rate"])
    assert rb["ci_high"] - rb["ci_low"] == pytest.approx(ra["ci_high"] - ra["ci_low"], rel=0.15)


@pytest.mark.slow
def test_gap_tests_hold_their_level_under_the_null():
    """200 null datasets (10 stimuli x 5 contexts x control + 2 groups x 2 wordings): the group-vs-control
    contrasts of the GEE reject at <= 8% at alpha 0.05 (10 clusters: Mancl-DeRouen SEs)."""
    rejected = tested = 0
    for s in range(200):
        t = appropriateness_tests(simulate_judged(seed=20_000 + s))
        rejected += int((t["p_value"] < 0.05).sum())
        tested += int(t["p_value"].notna().sum())
    assert tested >= 390
    assert rejected / tested <= 0.08


def test_the_reanalyze_cli_writes_its_tables(tmp_path, capsys):
    from audit.cli import main

    t, expected = _raw_table()
    t.to_csv(tmp_path / "raw.csv", index=False)
    rc = main(["appropriateness", "reanalyze", str(tmp_path / "raw.csv"), "--columns",
               "reply=response,stimulus=interjection,judge_label=label,group=group", "--n-boot", "200",
               "--out", str(tmp_path / "out")])
    assert rc == 0
    rates = pd.read_csv(tmp_path / "out" / "appropriateness_rates.csv")
    r = rates[(rates.model_label == "m-b") & (rates.level == "mania")].iloc[0]
    assert r["rate"] == pytest.approx(expected[("m-b", "mania")], abs=1e-12)
    assert "m-b" in capsys.readouterr().out
    assert main(["appropriateness", "reanalyze", str(tmp_path / "raw.csv"), "--columns", "reply=response"]) == 2
