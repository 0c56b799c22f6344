"""Label hygiene at every entry point (issue 28, item 2 and H3).

``Black `` / ``Black`` and ``Control`` / ``control`` were separate groups with no warning: two rows
labelled "Black" in a report, 86 tests instead of 56. Now every entry point cleans labels with
audit/labels.py (NFC, whitespace) and refuses labels equal up to case, naming both spellings, or folds
them with a warning under ``--fold-case``."""

from __future__ import annotations

import tempfile
import unicodedata
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from audit.cli import main as cli_main
from audit.errors import AuditError
from audit.importer import import_release, import_spec_from_dict
from audit.labels import clean_label, clean_labels, fold_key
from audit.spec import spec_from_dict
from audit.stats import analyze_table

BASES = ["control", "Black", "White", "Latiné"]


def test_clean_label_strips_collapses_and_normalises():
    assert clean_label(" Black\u00a0\twoman ") == "Black woman"
    assert clean_label(unicodedata.normalize("NFD", "Latiné")) == "Latiné"
    assert clean_label("   ") is None and clean_label(float("nan")) is None and clean_label(2.0) == "2"


def test_labels_equal_up_to_case_are_an_error_naming_both_or_folded_with_a_warning():
    with pytest.raises(AuditError) as err:
        clean_labels(pd.Series(["Control", "control ", "Black"]), where="t.csv", column="group")
    assert "'Control' / 'control'" in err.value.message and "--fold-case" in err.value.message
    out, warns = clean_labels(pd.Series(["control", "Control", "control", "Black "]), where="t.csv", column="group",
                              fold_case=True)
    assert out.tolist() == ["control", "control", "control", "Black"]
    assert len(warns) == 1 and "'Control' / 'control'" in warns[0] and "folded into 'control'" in warns[0]


def _table(labels: list[str], n_posts: int = 12, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for p in range(n_posts):
        for lab in labels:
            rows.append(dict(post=f"p{p}", group=lab, score=float(rng.normal(0, 1))))
    return pd.DataFrame(rows)


def test_analyze_refuses_case_variants_and_folds_them_on_request(tmp_path, capsys):
    t = _table(["control", "Black", "White"])
    t.loc[t.index % 6 == 1, "group"] = "Black "      # trailing space: the same label
    t.loc[t.index % 9 == 0, "group"] = "Control"     # case: refused unless --fold-case
    path = tmp_path / "t.csv"
    t.to_csv(path, index=False)
    base = ["analyze", str(path), "--outcome", "score", "--group", "group", "--control", "control", "--cluster", "post"]
    assert cli_main(base) == 2
    err = capsys.readouterr().err
    assert "'Control' / 'control'" in err and err.count("\n") == 1
    assert cli_main([*base, "--fold-case", "--json"]) == 0
    cap = capsys.readouterr()
    import json

    groups = [r["group"] for r in json.loads(cap.out)]
    assert sorted(groups) == ["Black", "White"] and "folded into 'control'" in cap.err


def _long_release(labels_per_row: list[str]) -> pd.DataFrame:
    rows = []
    for i, lab in enumerate(labels_per_row):
        post = i // len(BASES)
        rows.append(dict(post_id=f"P{post:03d}", group=lab,
                         text=("" if fold_key(lab.strip()) == "control" else f"As a {lab.strip()} person, ")
                         + f"post {post} about nothing in particular {post * 7919 % 1000}",
                         reply=f"I hear you. " * (1 + i % 4)))
    return pd.DataFrame(rows)


def test_import_refuses_case_variants_and_folds_them_on_request(tmp_path, capsys):
    labels = [b if i % 3 else (b.upper() if b != "control" else b) for i in range(6) for b in BASES]
    labels = [x + " " if i % 5 == 0 else x for i, x in enumerate(labels)]
    src = tmp_path / "release.csv"
    _long_release(labels).to_csv(src, index=False)
    base = ["import", str(src), "--post-id", "post_id", "--variant", "text", "--reply", "reply", "--group", "group"]
    assert cli_main([*base, "--out", str(tmp_path / "a")]) == 2
    err = capsys.readouterr().err
    assert "'BLACK' / 'Black'" in err and err.count("\n") == 1
    assert not (tmp_path / "a" / "store.sqlite").exists()
    assert cli_main([*base, "--out", str(tmp_path / "b"), "--fold-case"]) == 0
    out = capsys.readouterr().out
    assert "groups: Black, Latiné, White, control" in out and "folded into 'Black'" in out


def test_spec_levels_are_cleaned_and_case_twins_refused():
    spec = spec_from_dict({"name": "x", "demographics": {"axes": ["race"], "groups": {"race": ["Black ", "White"]}}})
    assert spec.demographics.groups == {"race": ["Black", "White"]}
    with pytest.raises(AuditError, match="'Black' and 'black'"):
        spec_from_dict({"name": "x", "demographics": {"axes": ["race"], "groups": {"race": ["Black", "black"]}}})


# --------------------------------------------------------------------------- property: never two groups that print the same

_WS = st.sampled_from(["", " ", "  ", "\t", "\u00a0", " \n"])


@st.composite
def _variant(draw, base: str) -> str:
    mask = draw(st.lists(st.booleans(), min_size=len(base), max_size=len(base)))
    text = "".join(c.swapcase() if m else c for c, m in zip(base, mask))
    if draw(st.booleans()):
        text = unicodedata.normalize("NFD", text)
    return draw(_WS) + text + draw(_WS)


@st.composite
def _labelled_rows(draw) -> list[str]:
    n_posts = draw(st.integers(6, 8))
    return [draw(_variant(b)) for _ in range(n_posts) for b in BASES]


def _printed_unique(groups: list[str]) -> bool:
    printed = [str(g) for g in groups]
    return len({" ".join(g.split()).casefold() for g in printed}) == len(printed)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=_labelled_rows(), fold=st.booleans())
def test_property_analyze_never_prints_two_groups_alike(rows, fold):
    t = pd.DataFrame({"post": [f"p{i // len(BASES)}" for i in range(len(rows))], "group": rows,
                      "score": np.random.default_rng(len(rows)).normal(size=len(rows))})
    try:
        res = analyze_table(t, outcome="score", group="group", control="control", cluster="post", method="ols",
                            fold_case=fold)
    except AuditError as exc:
        assert not fold and "differ only by case" in exc.message
        return
    groups = sorted(set(res["group"]))
    assert _printed_unique(groups) and len(groups) == len(BASES) - 1


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=_labelled_rows(), fold=st.booleans())
def test_property_import_never_stores_two_groups_alike(rows, fold):
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "release.csv"
        _long_release(rows).to_csv(src, index=False)
        spec = import_spec_from_dict({"name": "prop", "files": [{"path": str(src)}], "match": "id",
                                      "columns": {"post_id": "post_id", "variant": "text", "reply": "reply",
                                                  "group": "group"}, "control": "control"}, where="test")
        try:
            summary = import_release(spec, Path(tmp) / "run", fold_case=fold)
        except AuditError as exc:
            assert not fold and "differ only by case" in exc.message
            return
    assert _printed_unique(summary.groups) and len(summary.groups) == len(BASES)


def test_rater_ids_go_through_the_same_rule(tmp_path, capsys):
    assert cli_main(["ratings", "packet", str(tmp_path), "--n", "5", "--raters", "ann, Ann ", "--out",
                     str(tmp_path / "p")]) == 2
    err = capsys.readouterr().err
    assert "'ann' and 'Ann'" in err and err.count("\n") == 1
    assert cli_main(["ratings", "packet", str(tmp_path), "--n", "5", "--raters", "1000000000", "--out",
                     str(tmp_path / "p")]) == 2
    assert "out of range" in capsys.readouterr().err and not (tmp_path / "p").exists()


def test_stigma_reanalyze_takes_an_upper_case_race_as_the_same_race(tmp_path, capsys):
    """H3: upper-case race in `stigma reanalyze` made a group of its own. The reanalysis matches the
    published design's levels up to case and whitespace (audit/reanalysis.py), so the analysis equals the
    clean table's."""
    from test_stigma_analysis import _synthetic_outputs

    table, _, _ = _synthetic_outputs()
    clean = main_rates(table, tmp_path / "clean", capsys)
    table.loc[table.index % 2 == 0, "race"] = table.loc[table.index % 2 == 0, "race"].str.upper() + " "
    pd.testing.assert_frame_equal(main_rates(table, tmp_path / "upper", capsys), clean)


def main_rates(table: pd.DataFrame, out: Path, capsys, *flags: str) -> pd.DataFrame:
    out.mkdir()
    table.to_csv(out / "t.csv", index=False)
    assert cli_main(["stigma", "reanalyze", str(out / "t.csv"), "--n-boot", "100", "--out", str(out / "o"),
                     *flags]) == 0
    capsys.readouterr()
    return pd.read_csv(out / "o" / "stigma_tests.csv")
