"""``empathy-audit analyze`` and ``empathy-audit power`` from the command line."""

from __future__ import annotations

import json

import pytest

from audit.cli import main
from audit.stats.simulate import simulate_audit_table


@pytest.fixture
def table_csv(tmp_path):
    t = simulate_audit_table(n_posts=60, groups=["Black woman", "White man"], cue_types=["tag", "name"],
                             gaps={"Black woman": -0.25}, ref_mean=1.0, sd_post=0.3, sd_resid=0.4, seed=8)
    t = t.rename(columns={"value": "empathy", "post_id": "post", "group": "race_gender"})
    t["refused"] = (t["empathy"] < 0.5).astype(int)
    path = tmp_path / "my_table.csv"
    t.to_csv(path, index=False)
    return path


def run(capsys, *argv):
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def test_json_output_has_the_documented_fields(capsys, table_csv):
    rc, out, err = run(capsys, "analyze", table_csv, "--outcome", "empathy", "--group", "race_gender", "--control",
                       "control", "--cluster", "post", "--json")
    assert rc == 0, err
    rows = json.loads(out)
    assert len(rows) == 2
    for r in rows:
        assert {"group", "estimate", "ci_low", "ci_high", "relative_gap", "p_value", "p_holm", "p_bh", "n"} <= set(r)
    bw = next(r for r in rows if r["group"] == "Black woman")
    assert bw["ci_low"] <= -0.25 <= bw["ci_high"] and bw["p_holm"] < 0.05 and bw["relative_gap"] < 0


def test_family_spans_outcomes_and_by_levels(capsys, table_csv):
    rc, out, _ = run(capsys, "analyze", table_csv, "--outcome", "empathy", "refused", "--group", "race_gender",
                     "--control", "control", "--cluster", "post", "--by", "cue_type", "--json")
    rows = json.loads(out)
    assert rc == 0 and len(rows) == 2 * 2 * 3
    assert {r["by"] for r in rows} == {"pooled", "tag", "name"}
    assert {r["outcome"] for r in rows} == {"empathy", "refused"}
    assert any("gee" in r["method"] for r in rows if r["outcome"] == "refused")
    p = sorted(r["p_value"] for r in rows)
    assert min(r["p_holm"] for r in rows) == pytest.approx(min(1, 12 * p[0]))


def test_text_output_and_parquet(capsys, table_csv, tmp_path):
    import pandas as pd

    pq = tmp_path / "t.parquet"
    pd.read_csv(table_csv).to_parquet(pq)
    rc, out, _ = run(capsys, "analyze", pq, "--outcome", "empathy", "--group", "race_gender", "--control", "control",
                     "--cluster", "post", "--factor", "style")
    assert rc == 0
    assert "Black woman" in out and "p_holm" in out and "family: 2 tests" in out and "lmm" in out


@pytest.mark.parametrize(
    "args, message",
    [
        (["--outcome", "warmth"], "not found"),
        (["--control", "nobody"], "does not occur"),
        (["--outcome", "sample_index"], "constant"),
        (["--cluster", "model_label"], "cluster"),
        (["--outcome", "race_gender"], "not numeric"),
    ],
)
def test_bad_tables_exit_2_with_one_line(capsys, table_csv, args, message):
    base = {"--outcome": "empathy", "--group": "race_gender", "--control": "control", "--cluster": "post"}
    for k, v in zip(args[::2], args[1::2]):
        base[k] = v
    argv = ["analyze", table_csv] + [x for kv in base.items() for x in kv]
    rc, out, err = run(capsys, *argv)
    assert rc == 2 and message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert "my_table.csv" in err


def test_missing_file_and_options(capsys, tmp_path, table_csv):
    rc, _, err = run(capsys, "analyze", tmp_path / "nope.csv", "--outcome", "y", "--group", "g", "--control", "c",
                     "--cluster", "p")
    assert rc == 2 and "not found" in err
    rc, _, err = run(capsys, "analyze", table_csv, "--outcome", "empathy")
    assert rc == 2 and "--group" in err


def test_analyze_run_dir(capsys, tmp_path):
    from test_stats_stage import fill_store

    fill_store(tmp_path, n_posts=10, styles=("plain",), samples=1)
    rc, out, err = run(capsys, "analyze", tmp_path)
    assert rc == 0, err
    assert "Black woman" in out and "stored in table 'results'" in out


def test_power_with_stated_components(capsys, tmp_path):
    spec = tmp_path / "a.yaml"
    spec.write_text("name: plan\nsamples: 1\n")
    rc, out, err = run(capsys, "power", spec, "--gap", "10%", "--sd-post", "0.3", "--sd-resid", "0.5", "--ref-mean",
                       "1.0", "--groups", "2", "--cue-types", "1", "--family-size", "4", "--posts", "10", "80",
                       "--sims", "60", "--json")
    assert rc == 0, err
    r = json.loads(out)
    assert r["gap"] == pytest.approx(0.1) and r["family_size"] == 4
    p = {g["n_posts"]: g["power"] for g in r["grid"]}
    assert p[80] > p[10]
    assert r["needed_posts"]["1"] in (80, None)


def test_power_from_pilot_run_dir(capsys, tmp_path):
    from test_stats_stage import fill_store

    fill_store(tmp_path, n_posts=10, styles=("plain",), samples=1)
    rc, out, err = run(capsys, "power", tmp_path, "--gap", "0.1", "--posts", "20", "--sims", "20", "--groups", "4",
                       "--cue-types", "2")
    assert rc == 0, err
    assert "pilot" in out and "epitome.empathy" in out and "power" in out


def test_power_bad_gap_and_no_components(capsys, tmp_path):
    spec = tmp_path / "a.yaml"
    spec.write_text("name: plan\n")
    rc, _, err = run(capsys, "power", spec, "--gap", "five", "--groups", "2")
    assert rc == 2 and "gap" in err
    # no pilot and nothing stated: the suite's planning defaults, with their source (issue 29)
    rc, out, err = run(capsys, "power", spec, "--gap", "50%", "--groups", "2", "--cue-types", "1", "--posts", "10",
                       "--sims", "10")
    assert rc == 0, err
    assert "no pilot run: planning defaults" in out and "Sharma" in out


def test_extra_reference_joins_the_family(capsys, table_csv):
    rc, out, _ = run(capsys, "analyze", table_csv, "--outcome", "empathy", "--group", "race_gender", "--control",
                     "control", "--cluster", "post", "--extra-reference", "White man", "--json")
    rows = json.loads(out)
    assert rc == 0 and len(rows) == 4
    vs_wm = [r for r in rows if r["reference"] == "White man"]
    assert {r["group"] for r in vs_wm} == {"control", "Black woman"}
    bw = next(r for r in vs_wm if r["group"] == "Black woman")
    assert bw["estimate"] < 0 and bw["ci_low"] <= -0.25 <= bw["ci_high"]
