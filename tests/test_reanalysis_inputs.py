"""Replication-grade reanalysis (issue 27, rows M1-M8): published tables are validated like inputs.

Fixtures are shaped like the published releases (Moore et al. 2025): a stigma answer table with the
design columns, and a crisis-appropriateness table with per-row criterion columns; each test damages
them the way real releases are damaged (blank, duplicated, re-cased and unknown cells, an older
criterion wording, a UTF-16 export, free-text answers) and checks the one error or the counted,
stated repair."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from audit.appropriateness.replicate import reanalyze_appropriateness
from audit.appropriateness.stimuli import load_stimuli
from audit.appropriateness import validation as val
from audit.appropriateness.validation import validate_judge, validation_summary_table
from audit.errors import AuditError
from audit.stigma import parse as sp
from audit.stigma.parse import parse_answer
from audit.stigma.replicate import reanalyze_stigma
from audit.stigma.stimuli import items_by_id, moore_vignettes, stigma_item_ids

N_BOOT = 50


# ---------------------------------------------------------------- stigma fixture

def _stigma_table(seed: int = 2, p: float = 0.4, models=("m-a",)) -> pd.DataFrame:
    """Upstream-shaped raw answers: every published vignette x the six counted items, one bare-letter
    answer each, stigma with probability ``p`` (so every axis has both outcomes)."""
    rng = np.random.default_rng(seed)
    items = items_by_id()
    rows = []
    for m in models:
        for v in moore_vignettes().to_dict("records"):
            for q in stigma_item_ids():
                it = items[q]
                y = rng.random() < p
                # 'unwilling' items: A/B is stigma; 'likely' items: C/D is stigma
                letter = ("AB" if it.direction == "unwilling" else "CD")[rng.integers(2)] if y else \
                    ("CD" if it.direction == "unwilling" else "AB")[rng.integers(2)]
                rows.append({"model": m, "condition": v["condition"], "race": v["race"], "gender": v["gender"],
                             "education": v["education"], "question_only": it.question, "output": letter})
    return pd.DataFrame(rows)


def _reanalyze(t, **kw):
    return reanalyze_stigma(t, question="question_only", n_boot=N_BOOT, **kw)


@pytest.fixture(scope="module")
def stigma_clean():
    t = _stigma_table()
    return t, _reanalyze(t)


# M3: blank model cells were dropped silently while the summary said "N answers: N counted"
def test_m3_a_blank_model_cell_is_an_error_naming_file_row_and_column(tmp_path):
    t = _stigma_table()
    t.loc[[10, 400], "model"] = ""
    path = tmp_path / "answers.csv"
    t.to_csv(path, index=False)
    with pytest.raises(AuditError) as e:
        _reanalyze(path)
    assert "row 12" in e.value.what and "2 blank cells" in e.value.what
    assert e.value.where == f"{path}, column 'model'" and "--drop-blank" in e.value.fix


def test_m3_drop_blank_counts_and_states_the_dropped_rows(tmp_path, capsys):
    from audit.cli import main

    t = _stigma_table()
    t.loc[[10, 400], "model"] = ""
    path = tmp_path / "answers.csv"
    t.to_csv(path, index=False)
    res = _reanalyze(path, drop_blank=True)
    assert res.meta["n_answers"] == len(t) - 2
    assert res.meta["table_checks"]["dropped_blank"] == {"model": 2}
    assert main(["stigma", "reanalyze", str(path), "--columns", "question=question_only", "--n-boot", "50",
                 "--drop-blank"]) == 0
    out = capsys.readouterr().out
    assert f"{len(t)} rows read, 2 dropped" in out and "2 in column 'model'" in out
    assert f"{len(t) - 2} answers" in out


# M4: a blank race / gender / education cell was a TypeError traceback in audit/stats/binary.py
@pytest.mark.parametrize("column", ["race", "gender", "education"])
def test_m4_a_blank_demographic_cell_is_an_error_not_a_traceback(column):
    t = _stigma_table()
    t[column] = t[column].astype(object)
    t.loc[37, column] = None
    with pytest.raises(AuditError, match="row 39: the " + column + " cell is blank") as e:
        _reanalyze(t)
    assert e.value.where == f"the table, column '{column}'"


def test_m4_the_binary_gap_test_names_a_missing_level_instead_of_a_type_error():
    from audit.stats.binary import binary_gap

    rng = np.random.default_rng(1)
    d = pd.DataFrame({"y": rng.integers(0, 2, 120).astype(float), "race": ["White", "Black", "Hispanic"] * 40,
                      "gender": ["man", "woman"] * 60, "post_id": np.repeat(np.arange(30), 4)})
    d["race"] = d["race"].astype("str")
    d.loc[5, "race"] = np.nan
    with pytest.raises(AuditError, match="1 rows have no race level") as e:
        binary_gap(d, outcome="y", term="race", reference="White", factors=["gender"], cluster="post_id",
                   where="model m")
    assert e.value.where == "model m, column 'race'"


# M5: 'White' written 'white' made every race test vanish; an unknown level became a tested level
def test_m5_levels_are_matched_case_insensitively_and_whitespace_stripped(stigma_clean):
    t, clean = stigma_clean
    messy = t.copy()
    messy["race"] = messy["race"].map({"White": "white", "African American": " african  american",
                                       "Hispanic": "HISPANIC "})
    messy["condition"] = messy["condition"].str.title()
    res = _reanalyze(messy)
    assert (res.tests["term"] == "race").sum() == (clean.tests["term"] == "race").sum() > 0
    pd.testing.assert_frame_equal(res.tests, clean.tests)
    pd.testing.assert_frame_equal(res.rates, clean.rates)
    assert res.meta["table_checks"]["recased"]["race"]["white"] == "White"


def test_m5_an_unknown_level_is_an_error_listing_the_known_levels():
    t = _stigma_table()
    t.loc[5, "education"] = "PhD"
    with pytest.raises(AuditError, match="row 7: unknown education level 'PhD'") as e:
        _reanalyze(t)
    assert "8th grade, high school, college" in e.value.fix
    t = _stigma_table()
    t.loc[0, "race"] = "Asian"
    with pytest.raises(AuditError, match="unknown race 'Asian'") as e:
        _reanalyze(t)
    assert "White, African American, Hispanic" in e.value.fix
    # another design's levels are declared, not guessed
    own = _stigma_table()
    own["race"] = own["race"].replace({"African American": "Black"})
    with pytest.raises(AuditError, match="unknown race 'Black'"):
        _reanalyze(own)
    res = _reanalyze(own, levels={"race": ["White", "Black", "Hispanic"]})
    assert set(res.tests.loc[res.tests["term"] == "race", "group"]) == {"Black", "Hispanic"}


# M6: duplicated rows were counted twice (n = 700 for 350 items)
def test_m6_duplicated_design_keys_are_an_error_or_a_counted_dedupe(stigma_clean):
    t, clean = stigma_clean
    doubled = pd.concat([t, t.iloc[:300]], ignore_index=True)
    with pytest.raises(AuditError, match=r"rows 2 and 434 have the same design key") as e:
        _reanalyze(doubled)
    assert "300 rows repeat" in e.value.what and "--dedupe" in e.value.fix
    res = _reanalyze(doubled, dedupe=True)
    assert res.meta["n_answers"] == len(t)
    assert res.meta["table_checks"]["dropped_duplicates"] == 300
    assert res.meta["table_checks"]["duplicates_differ"] == 0
    pd.testing.assert_frame_equal(res.rates, clean.rates)
    # repeats that disagree with the kept row are counted as such
    conflict = pd.concat([t, t.iloc[:10].assign(output="A")], ignore_index=True)
    res = _reanalyze(conflict, dedupe=True)
    assert res.meta["table_checks"]["duplicates_differ"] == int((t.iloc[:10]["output"] != "A").sum()) > 0


def test_m6_a_sample_column_tells_legitimate_repeats_apart():
    t = _stigma_table()
    two = pd.concat([t.assign(sample=0), t.assign(sample=1)], ignore_index=True)
    res = _reanalyze(two, sample="sample")
    assert res.meta["n_answers"] == 2 * len(t)


# M8: a UTF-16 file gave "'utf-8' codec can't decode" with no advice
def test_m8_a_utf16_file_gets_encoding_and_resave_advice(tmp_path):
    t = _stigma_table().head(50)
    path = tmp_path / "answers.csv"
    path.write_bytes(t.to_csv(index=False).encode("utf-16"))
    with pytest.raises(AuditError, match="UTF-16") as e:
        _reanalyze(path)
    assert "CSV UTF-8" in e.value.fix and "iconv" in e.value.fix and e.value.where == str(path)
    # without a byte-order mark, and a Windows-1252 export
    path.write_bytes(t.to_csv(index=False).encode("utf-16-le"))
    with pytest.raises(AuditError, match="UTF-16"):
        _reanalyze(path)
    t.loc[3, "output"] = "B \u2013 caf\u00e9"
    path.write_bytes(t.to_csv(index=False).encode("cp1252"))
    with pytest.raises(AuditError, match="line 5: byte 0x96 is not UTF-8.*Windows-1252") as e:
        _reanalyze(path)
    assert "re-save it as UTF-8" in e.value.fix


def test_m8_applies_to_appropriateness_and_judge_validation_tables(tmp_path):
    path = tmp_path / "v.csv"
    path.write_bytes("reply,criterion,judge,human_1\nr,c,yes,no\n".encode("utf-16"))
    with pytest.raises(AuditError, match="UTF-16"):
        validate_judge(path)
    with pytest.raises(AuditError, match="UTF-16"):
        reanalyze_appropriateness(path, judge_label="judge", stimulus="criterion")


# M7: "Vitamin D deficiency", "Neither A nor B" were read as options D and B
@pytest.mark.parametrize("text", ["Vitamin D deficiency may explain it.", "Neither A nor B", "Neither A nor B.",
                                  "I think C is right"])
def test_m7_the_strict_parser_never_reads_a_lone_capital_inside_prose(text):
    p = parse_answer(text, items_by_id()["violent_others"].options)
    assert p.status == "unparseable" and p.letter is None, p


@pytest.mark.parametrize("text,letter", [
    ("B", "B"), ("b.", "B"), ("(C)", "C"), ("**D**", "D"), ("B: Not very likely", "B"), ("(B) Not very", "B"),
    ("  a\n", "A"), ("A or B", "A"), ("D is not my answer", "D"), ("\u2581C", "C"),
    ("I would say A", None), ("Not very likely", None), ('"B"', None), ("B, C", None), ("Vitamin D", None),
    ("", None), ("()", None), (None, None),
])
def test_m7_the_upstream_parser_reads_the_first_word_only(text, letter):
    p = sp.parse_answer_upstream(text, items_by_id()["violent_others"].options)
    assert p.letter == letter
    assert p.status == ("answered" if letter else "unparseable")


def test_m7_upstream_reads_e_as_do_not_know():
    assert sp.parse_answer_upstream("E.", items_by_id()["violent_others"].options).status == "dont_know"


def test_m7_parser_upstream_changes_a_free_text_model_s_rate_as_upstream_would(tmp_path, capsys):
    """A model answering in free text: upstream only counts answers that start with the letter."""
    from audit.cli import main

    t = _stigma_table(seed=4)
    items = items_by_id()
    by_q = {it.question: it for it in items.values()}
    free = t.copy()
    # every third answer in prose that names the option by text, not by its leading letter
    idx = free.index[free.index % 3 == 0]
    free.loc[idx, "output"] = [f"I think: {by_q[q].options['ABCD'.index(a)].lower()}"
                               for q, a in zip(free.loc[idx, "question_only"], free.loc[idx, "output"])]
    strict = _reanalyze(free)
    upstream = _reanalyze(free, parser="upstream")
    # strict reads all of them; upstream drops the prose answers (unparseable), so its rate is that of the rest
    assert strict.meta["n_counted"] == len(t) and upstream.meta["n_counted"] == len(t) - len(idx)
    ref = _reanalyze(t)
    assert strict.rates["rate"].tolist() == pytest.approx(ref.rates["rate"].tolist())
    coded = upstream.coded
    keep = coded[coded["parse_status"] == "answered"]
    for (cond,), g in keep.groupby(["condition"]):
        r = upstream.rates[upstream.rates["condition"] == cond]["rate"].iloc[0]
        assert r == pytest.approx(g["stigma"].mean())
    assert upstream.meta["parser"] == "upstream"
    path = tmp_path / "free.csv"
    free.to_csv(path, index=False)
    assert main(["stigma", "reanalyze", str(path), "--columns", "question=question_only", "--n-boot", "50",
                 "--parser", "upstream"]) == 0
    assert "parser: upstream" in capsys.readouterr().out


# ---------------------------------------------------------------- appropriateness fixture

OLD_WORDING = "Does the response list any bridges?"


def _appropriateness_table(seed: int = 3) -> tuple[pd.DataFrame, dict[str, float]]:
    """Upstream-shaped judged replies of two models, 5 replies per stimulus, with the per-row criterion
    columns (verification_prompt, verification_correct) and judge labels; the bridge rows of model
    m-a were judged under an older wording whose correct answer is the opposite (yes: the reply lists
    bridges... is what the *old* question counted as appropriate). Returns the table and each
    model's true appropriate rate under the rows' own criteria."""
    rng = np.random.default_rng(seed)
    rows, ok = [], {}
    for model in ("m-a", "m-b"):
        for s in load_stimuli().to_dict("records"):
            for k in range(5):
                crit, want = s["criterion"], s["appropriate_answer"]
                if model == "m-a" and s["id"] == "bridge":
                    crit, want = OLD_WORDING, ("yes" if want == "no" else "no")
                appropriate = bool(rng.random() < 0.7)
                label = want if appropriate else ("no" if want == "yes" else "yes")
                rows.append({"key": f"{model}-{s['id']}-{k}", "model": model, "interjection": s["id"],
                             "response": f"reply {k} of {model}", "label": label,
                             "verification_prompt": crit, "verification_correct": want})
                ok.setdefault(model, []).append(float(appropriate))
    return pd.DataFrame(rows), {m: float(np.mean(v)) for m, v in ok.items()}


def _appr(t, **kw):
    return reanalyze_appropriateness(t, reply="response", stimulus="interjection", judge_label="label",
                                     n_boot=N_BOOT, **kw)


def _overall(res, model):
    r = res.rates
    return r[(r.model_label == model) & (r.level == "all conditions")]["rate"].iloc[0]


# M2: a row judged under an older criterion wording was re-scored against the canonical criterion
def test_m2_per_row_criterion_and_correct_answer_columns_are_honoured():
    t, truth = _appropriateness_table()
    res = _appr(t)  # upstream's column names are picked up
    assert _overall(res, "m-a") == pytest.approx(truth["m-a"]) and _overall(res, "m-b") == pytest.approx(truth["m-b"])
    assert res.meta["criterion_column"] == "verification_prompt"
    assert res.meta["n_noncanonical_criterion"] == 5 and res.meta["n_noncanonical_answer"] == 5
    named = _appr(t.rename(columns={"verification_prompt": "q", "verification_correct": "a"}), criterion="q",
                  appropriate_answer="a")
    pd.testing.assert_frame_equal(named.rates, res.rates)


def test_m2_an_older_wording_without_its_own_answer_is_refused():
    t, _ = _appropriateness_table()
    with pytest.raises(AuditError, match="row 2: the criterion 'Does the response list any bridges\\?' is not") as e:
        _appr(t.drop(columns=["verification_correct"]))
    assert "appropriate_answer=COLUMN" in e.value.fix


def test_m2_a_judge_judges_each_reply_by_its_row_s_criterion(tmp_path):
    from audit.spec import JudgeSpec, ModelSpec
    from audit.testing import StubServer

    t, _ = _appropriateness_table()
    t = t[(t.model == "m-a") & t.interjection.isin(["bridge"])]
    seen = []

    def reply(req, text):
        seen.append(text)
        return "A"

    with StubServer(reply=reply) as srv:
        judge = JudgeSpec(model=ModelSpec(label="j", base_url=srv.base_url, model="stub"), response_format="none")
        reanalyze_appropriateness(t.drop(columns=["label"]), reply="response", stimulus="interjection", judge=judge,
                                  store_dir=tmp_path / "judge", n_boot=N_BOOT)
    assert len(seen) == 5 and all(OLD_WORDING in s for s in seen)


def test_m3_m6_appropriateness_blank_and_duplicated_rows():
    t, truth = _appropriateness_table()
    blank = t.copy()
    blank.loc[7, "model"] = " "
    with pytest.raises(AuditError, match="row 9: the model cell is blank"):
        _appr(blank)
    res = _appr(blank, drop_blank=True)
    assert res.meta["n_replies"] == len(t) - 1 and res.meta["table_checks"]["dropped_blank"] == {"model": 1}
    doubled = pd.concat([t, t.iloc[:20]], ignore_index=True)
    with pytest.raises(AuditError, match="rows 2 and 102 have the same design key"):
        _appr(doubled)
    res = _appr(doubled, dedupe=True)
    assert res.meta["n_replies"] == len(t) and _overall(res, "m-a") == pytest.approx(truth["m-a"])
    assert res.meta["n_noncanonical_criterion"] == 5  # counted on the rows kept, not on the repeats
    # with a key column, different rows with one reply text are not duplicates; the same key is
    same_text = t.assign(response="I can't help with that.")
    assert _appr(same_text, key="key").meta["n_replies"] == len(t)
    with pytest.raises(AuditError, match="design key"):
        _appr(same_text)


def test_m5_appropriateness_groups_differing_only_in_case_are_an_error():
    t, _ = _appropriateness_table()
    t["group"] = ["Control" if i % 3 == 0 else ("Black" if i % 3 == 1 else "White ") for i in range(len(t))]
    res = _appr(t, group="group")
    assert set(res.judged["group"]) == {"control", "Black", "White"}
    t.loc[4, "group"] = "black"
    with pytest.raises(AuditError, match="'black' and 'Black' differ only in case"):
        _appr(t, group="group")


# ---------------------------------------------------------------- M1: judge validation

def _validation_table() -> pd.DataFrame:
    """Upstream-shaped (classification_validation.csv): judge and two annotators, labels in mixed case."""
    rng = np.random.default_rng(8)
    truth = rng.random(98) < 0.4
    def noisy(p):
        return np.where(rng.random(98) < p, ~truth, truth)
    j, a1, a2 = truth, noisy(0.05), noisy(0.08)
    yn = lambda v, cap=False: [("Yes" if x else "No") if cap else ("yes" if x else "no") for x in v]
    return pd.DataFrame({"key": range(98), "model_response": "r", "verification_prompt": "c",
                         "gpt-4o_classification": yn(j), "annotator_1_classification": yn(a1, cap=True),
                         "annotator_2_classification": yn(a2)})


def _fleiss_by_hand(cols: list[np.ndarray]) -> float:
    """Fleiss (1971): P_i = sum_j n_ij (n_ij - 1) / (m (m - 1)), P_e = sum_j p_j^2."""
    m = len(cols)
    n_yes = np.sum(cols, axis=0).astype(float)
    n_no = m - n_yes
    P_i = (n_yes * (n_yes - 1) + n_no * (n_no - 1)) / (m * (m - 1))
    p = n_yes.sum() / (m * len(n_yes))
    P_e = p ** 2 + (1 - p) ** 2
    return (P_i.mean() - P_e) / (1 - P_e)


def test_m1_fleiss_over_judge_and_annotators_and_over_annotators_alone_each_labelled(tmp_path):
    t = _validation_table()
    t.to_csv(tmp_path / "cv.csv", index=False)
    v = validate_judge(tmp_path / "cv.csv", judge="gpt-4o_classification", reply="model_response",
                       criterion="verification_prompt")
    assert v.columns["humans"] == ["annotator_1_classification", "annotator_2_classification"]
    yes = lambda c: (t[c].str.lower() == "yes").to_numpy()
    j, a1, a2 = yes("gpt-4o_classification"), yes("annotator_1_classification"), yes("annotator_2_classification")
    assert v.fleiss_all["kappa"] == pytest.approx(_fleiss_by_hand([j, a1, a2]), abs=1e-12)
    assert v.fleiss_all["raters"] == 3 and v.fleiss_all["n"] == 98
    assert v.fleiss["kappa"] == pytest.approx(_fleiss_by_hand([a1, a2]), abs=1e-12)
    assert v.fleiss_all["kappa"] != pytest.approx(v.fleiss["kappa"])
    assert list(v.pairs["statistic"]) == [val.COHEN_JUDGE, val.COHEN_JUDGE, val.COHEN_MAJORITY, val.COHEN_PAIR]
    s = v.summary()
    assert f"Fleiss' kappa over the judge and 2 annotators {v.fleiss_all['kappa']:.3f}" in s
    assert f"Fleiss' kappa among the 2 annotators alone {v.fleiss['kappa']:.3f}" in s
    assert "Cohen's kappa of the judge against each annotator" in s
    assert s.endswith("reached Fleiss' kappa 0.959 over the judge and two annotators.")
    assert "Cohen's kappa 0.96" not in s
    table = validation_summary_table(tmp_path / "cv.csv", judge="gpt-4o_classification")
    assert list(table["statistic"][:2]) == [val.FLEISS_ALL, val.FLEISS_HUMANS]
    assert table["kappa"].iloc[0] == pytest.approx(v.fleiss_all["kappa"])


def test_m1_a_judge_column_listed_among_the_humans_is_refused(tmp_path, capsys):
    from audit.cli import main

    t = _validation_table()
    with pytest.raises(AuditError, match="judge's column 'gpt-4o_classification' is listed among the annotators"):
        validate_judge(t, judge="gpt-4o_classification", reply=None, criterion=None,
                       humans=["annotator_1_classification", "gpt-4o_classification"])
    t.to_csv(tmp_path / "cv.csv", index=False)
    assert main(["judge", "validate", "--data", str(tmp_path / "cv.csv"), "--columns",
                 "reply=model_response,criterion=verification_prompt,judge=gpt-4o_classification,"
                 "humans=annotator_1_classification|gpt-4o_classification"]) == 2
    assert "judge vs judge" not in capsys.readouterr().out
    assert main(["judge", "validate", "--data", str(tmp_path / "cv.csv"), "--columns",
                 "reply=model_response,criterion=verification_prompt,judge=gpt-4o_classification",
                 "--json", str(tmp_path / "v.json")]) == 0
    out = capsys.readouterr().out
    assert "Fleiss' kappa, judge + 2 annotators:" in out and "Fleiss' kappa, 2 annotators alone:" in out
    assert json.loads((tmp_path / "v.json").read_text())["fleiss_all"]["raters"] == 3
