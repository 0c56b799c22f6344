"""Issue 26: each scorer measure declares its validity evidence, the default primary outcome is the
measure with the strongest evidence (never the composite ``empathy``), and one function picks the
headline result: the corrected gap when ratings of the primary outcome are stored, else the automated
disparity."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from audit.report.headline import group_table, headline_result, headline_sentences, primary_outcome, primary_reason
from audit.scorers.epitome import ARTIFACT_DIR, CV_FILE, EPITOME_EVIDENCE
from audit.scorers.measures import Evidence, Measure, MeasureCatalog, builtin_catalog


def test_the_epitome_evidence_is_the_shipped_cross_validation():
    cv = json.loads((ARTIFACT_DIR / CV_FILE).read_text(encoding="utf-8"))["summary"]
    for m in ("ER", "IP", "EX"):
        ev = EPITOME_EVIDENCE[m]
        assert ev.agreement == round(cv[m]["pooled"]["macro_f1"], 3) and ev.n == cv[m]["pooled"]["n"]
        assert ev.text == "human peer replies" and ev.statistic == "macro-F1"
        assert f"quadratic-weighted kappa {cv[m]['pooled']['weighted_kappa']:.2f}" in ev.note
        f1 = "/".join(f"{cv[m]['pooled']['per_level'][k]['f1']:.2f}" for k in ("0", "1", "2"))
        assert ev.note.endswith(f1)
    assert EPITOME_EVIDENCE["empathy"].agreement is None  # a composite has no agreement of its own


def test_a_declaration_stores_its_evidence_and_an_imported_measure_takes_none(tmp_path):
    m = builtin_catalog().declared("epitome.EX")
    assert Measure.from_dict(json.loads(json.dumps(m.as_dict()))) == m and m.evidence.agreement == 0.717
    # a stored declaration without evidence (a run scored before) takes the built-in's
    old = {k: v for k, v in m.as_dict().items() if k != "evidence"}
    cat = MeasureCatalog.from_scorer_info({"epitome": {"measures": [old]}})
    assert cat.declared("epitome.EX").evidence == m.evidence
    from audit.importer import _measure_declarations
    assert _measure_declarations(["EX"])[0]["evidence"] is None  # a published scorer is not the classifier
    with pytest.raises(Exception, match="text kind"):
        Evidence("x", text="tweets")


def _results(outcomes: list[str]) -> pd.DataFrame:
    return pd.DataFrame([dict(outcome=o, group="B", reference="control", style="pooled", cue_type="pooled",
                              estimate=-0.1, ci_low=-0.2, ci_high=0.0, ref_mean=1.0, relative_gap=-0.1,
                              rel_ci_low=-0.2, rel_ci_high=0.0, p_holm=0.04, significant_holm=True)
                         for o in outcomes])


def test_the_default_primary_is_the_measure_with_the_strongest_evidence_never_the_composite():
    res = _results(["epitome.empathy", "epitome.ER", "epitome.IP", "epitome.EX", "epitome.EX>0", "length.words",
                    "sentiment.compound"])
    # ER: the highest macro-F1 (0.73); EX has the higher kappa but recognises its weak level poorly
    assert primary_outcome(res, catalog=builtin_catalog()) == "epitome.ER"
    assert primary_outcome(_results(["epitome.empathy", "epitome.IP", "epitome.EX"])) == "epitome.EX"
    assert primary_outcome(res, primary=["empathy"]) == "epitome.empathy"  # pre-registered wins
    # no measure declares evidence (an LLM judge's levels): catalog order, not the composite first
    assert primary_outcome(_results(["llm-judge.empathy", "llm-judge.ER"])) == "llm-judge.ER"
    why = primary_reason("epitome.ER", builtin_catalog(), chosen_by="evidence")
    assert "strongest validity evidence" in why and "macro-F1 0.73" in why and "unvalidated" in why
    assert "never the default" in why


def _ppi(estimates: dict[str, tuple[float, float, float]]) -> pd.DataFrame:
    rows = []
    for kind, (e, lo, hi) in estimates.items():
        rows.append(dict(outcome="epitome.EX", model_label="m", group="B", reference="control", kind=kind,
                         estimate=e, ci_low=lo, ci_high=hi, n_rated=40, n_all=400, warning=""))
    return pd.DataFrame(rows)


def test_one_function_picks_the_headline_and_the_sentences_and_table_follow_it():
    res = _results(["epitome.EX"])
    disp = pd.DataFrame([dict(outcome="epitome.EX", model_label="m", estimate=0.3, ci_low=0.1, ci_high=0.5,
                              max_group="A", min_group="B", ratio=0.8, p_holm=0.01, significant_holm=True)])
    auto = headline_result(res, disp, None, "epitome.EX")
    assert auto["kind"] == "automated" and auto["source"] == "results_disparity" and auto["estimate"] == 0.3
    ppi = _ppi({"automated": (-0.6, -0.8, -0.4), "ppi": (-0.1, -0.3, 0.1), "human": (-0.05, -0.4, 0.3)})
    h = headline_result(res, disp, ppi, "epitome.EX")
    assert h["kind"] == "corrected" and h["estimate"] == -0.1 and h["automated"]["estimate"] == -0.6
    s = headline_sentences(res, disp, None, "epitome.EX", ppi=ppi)
    assert s[0].startswith("Corrected with 40 human ratings") and "0.10 points lower" in s[0]
    assert "the automated scores alone say 0.60 points lower" in s[0]
    assert "includes 0" in s[1] and "about 83% of the automated gap" in s[1]
    assert s[2].startswith("On the automated scores, the largest disparity") and len(s) <= 5
    row = group_table(res, "epitome.EX", ppi=ppi)[0]
    assert row["corrected"] == "0.10 points lower" and row["vs_control"] == "0.60 points lower"
    # a rated outcome other than the primary one leaves the automated headline
    other = ppi.assign(outcome="epitome.ER")
    assert headline_result(res, disp, other, "epitome.EX")["kind"] == "automated"
