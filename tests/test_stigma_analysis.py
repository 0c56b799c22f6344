"""Stigma analysis: replication mode reproduces known rates exactly; a planted race effect is
recovered; the demographic gap tests hold their level under the null; the human reference is coded
as % unwilling / % likely."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from audit.errors import AuditError
from audit.stigma.analysis import human_reference, human_stigma_rates, stigma_rates, stigma_tests, _gap
from audit.stigma.replicate import reanalyze_stigma
from audit.stigma.stimuli import items_by_id, moore_vignettes, stigma_item_ids
from stigma_sim import simulate_coded, true_marginal_gap

# raw answers that code to a known value, per item direction (and answers that must be dropped)
STIGMA_ANSWERS = {"unwilling": ["A", "(B)", "Probably unwilling", "I would say A", "b)"],
                  "likely": ["C", "D.", "Very likely", "The answer is (C).", "d"]}
NO_STIGMA_ANSWERS = {"unwilling": ["C", "d)", "Definitely willing", "Option D", "probably willing"],
                     "likely": ["A", "(B)", "Not very likely", "I'd pick B", "a."]}


def _synthetic_outputs(seed: int = 5) -> tuple[pd.DataFrame, dict[tuple[str, str], float], dict[str, int]]:
    """Upstream-shaped raw outputs (question = question with options) for two models, with known codes."""
    rng = np.random.default_rng(seed)
    items = items_by_id()
    vig = moore_vignettes()
    rows, codes, dropped = [], {}, {"dk": 0, "bad": 0}
    for model, p in (("model-a", 0.3), ("model-b", 0.7)):
        for v in vig.to_dict("records"):
            for q in stigma_item_ids() + ["mental_illness"]:
                it = items[q]
                question = it.question + "\n" + "\n".join(f"- ({chr(65 + i)}): {o}" for i, o in enumerate(it.options))
                u = rng.random()
                if u < 0.05:
                    out = rng.choice(["E", "Do not know", "I don't know."])
                    dropped["dk"] += it.stigma
                elif u < 0.08:
                    out = rng.choice(["I cannot answer that.", "A or B", "", "Neither"])
                    dropped["bad"] += it.stigma
                else:
                    y = int(rng.random() < p)
                    direction = it.direction or "likely"
                    out = rng.choice((STIGMA_ANSWERS if y else NO_STIGMA_ANSWERS)[direction])
                    if it.stigma:
                        codes.setdefault((model, v["condition"]), []).append(y)
                rows.append({**v, "question": question, "output": out, "model": model, "code": -1})
    expected = {k: float(np.mean(c)) for k, c in codes.items()}
    return pd.DataFrame(rows), expected, dropped


def test_replication_mode_reproduces_known_stigma_rates_exactly(tmp_path):
    table, expected, dropped = _synthetic_outputs()
    path = tmp_path / "outputs.csv"
    table.to_csv(path, index=False)
    res = reanalyze_stigma(path, n_boot=200)
    got = res.rates[res.rates["condition"].isin(["daily troubles", "depression", "alcohol dependence",
                                                 "schizophrenia"])]
    assert len(got) == len(expected) == 8
    for r in got.to_dict("records"):
        assert r["rate"] == pytest.approx(expected[(r["model_label"], r["condition"])], abs=1e-12)
        assert r["n_vignettes"] == 18 and r["ci_low"] <= r["rate"] <= r["ci_high"]
    assert int(res.rates.loc[res.rates["condition"] != "all conditions but the control", "n_dont_know"].sum()) \
        == dropped["dk"]
    assert int(res.rates.loc[res.rates["condition"] != "all conditions but the control", "n_unparseable"].sum()) \
        == dropped["bad"]
    # the descriptive item is parsed but never counted
    assert not res.coded.loc[res.coded["question"] == "mental_illness", "counted"].any()


def test_replication_mode_names_a_missing_column_and_a_bad_question(tmp_path):
    table, _, _ = _synthetic_outputs()
    with pytest.raises(AuditError, match="column 'answer_text'"):
        reanalyze_stigma(table, output="answer_text")
    bad = table.copy()
    bad.loc[3, "question"] = "How tall is the person?"
    with pytest.raises(AuditError, match="row 5"):
        reanalyze_stigma(bad)


def test_the_cli_reanalyzes_a_file_and_writes_its_tables(tmp_path, capsys):
    from audit.cli import main

    table, expected, _ = _synthetic_outputs()
    table = table.rename(columns={"output": "raw"})
    table.to_csv(tmp_path / "t.csv", index=False)
    rc = main(["stigma", "reanalyze", str(tmp_path / "t.csv"), "--columns", "output=raw", "--n-boot", "200",
               "--out", str(tmp_path / "out")])
    assert rc == 0
    rates = pd.read_csv(tmp_path / "out" / "stigma_rates.csv")
    r = rates[(rates.model_label == "model-b") & (rates.condition == "depression")].iloc[0]
    assert r["rate"] == pytest.approx(expected[("model-b", "depression")], abs=1e-12)
    assert "model-b" in capsys.readouterr().out


def test_human_reference_is_percent_unwilling_and_likely():
    h = human_reference().set_index(["question", "condition"])["human"]
    # % unwilling: the control is the least avoided vignette, schizophrenia/alcohol the most
    for q in ("work_closely", "live_next_door", "socialize", "friend", "marry_into_family"):
        assert h[(q, "daily troubles")] < h[(q, "schizophrenia")]
    assert h[("work_closely", "schizophrenia")] == pytest.approx(0.65)
    assert h[("violent_others", "schizophrenia")] == pytest.approx(0.67)
    rates = human_stigma_rates()
    assert rates["daily troubles"] < min(rates["schizophrenia"], rates["alcohol dependence"])


def test_bootstrap_ci_is_clustered_by_vignette():
    """Duplicating every answer inside its vignette must not narrow the cluster-bootstrap CI."""
    d = simulate_coded(seed=3, conditions=["depression"])
    once = stigma_rates(d, n_boot=2000, seed=1).iloc[0]
    twice = stigma_rates(pd.concat([d, d]), n_boot=2000, seed=1).iloc[0]
    assert twice["rate"] == pytest.approx(once["rate"])
    assert twice["ci_high"] - twice["ci_low"] == pytest.approx(once["ci_high"] - once["ci_low"], rel=0.15)


def test_a_planted_race_effect_is_recovered():
    effect = 1.2
    d = simulate_coded(seed=11, race_effect={"African American": effect}, replicates=2)
    t = stigma_tests(d, axes=("race", "gender", "education"))
    truth = true_marginal_gap(effect)
    aa = t[(t.term == "race") & (t.condition == "pooled") & (t.group == "African American")].iloc[0]
    assert aa["ci_low"] <= truth <= aa["ci_high"]
    assert aa["p_value"] < 0.001 and bool(aa["significant_holm"])
    hisp = t[(t.term == "race") & (t.condition == "pooled") & (t.group == "Hispanic")].iloc[0]
    assert hisp["ci_low"] <= 0 <= hisp["ci_high"]
    within = t[(t.term == "race") & (t.condition != "pooled") & (t.group == "African American")]
    assert len(within) == 4 and (within["estimate"] > 0).all()
    # Holm over the whole family: every p_holm >= its p
    assert (t["p_holm"].dropna() >= t["p_value"].dropna() - 1e-12).all()


@pytest.mark.slow
def test_within_condition_gap_tests_hold_their_level_under_the_null():
    """300 null datasets of one condition (18 vignettes x 6 items): the race contrasts of the GEE
    within condition reject at <= 7% at alpha 0.05."""
    rejected = tested = 0
    for s in range(300):
        d = simulate_coded(seed=10_000 + s, conditions=["schizophrenia"])
        g = _gap(d, "race", "White", ["gender", "education", "question"], "null")
        rejected += int((g["p_value"] < 0.05).sum())
        tested += int(g["p_value"].notna().sum())
    assert tested >= 590
    assert rejected / tested <= 0.07
