"""Replication-grade imports (issue 27, rows C1-C5 and C7; issue 28, rows H5 and H7): releases shaped
like real ones (tests/release_sim.py: K sampled replies per post in row blocks, quoted newlines,
placeholders, a mislabelled condition, shuffled replies) must import as what they are, or be refused
with an error that says what to do. Each test fails on the importer before these checks existed."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml
from release_sim import PLACEHOLDER, placeholders_by_group, sampled_release

from audit.cli import main as cli_main
from audit.errors import AuditError
from audit.importer import import_release, import_spec_from_dict, load_import_spec
from audit.store import RunStore

K, N_POSTS = 4, 12


def _spec(path: Path, **update):
    spec = load_import_spec(path)
    return spec.model_copy(update=update) if update else spec


def _analyze(run: Path, capsys) -> pd.DataFrame:
    assert cli_main(["score", str(run), "--scorers", "length"]) == 0
    capsys.readouterr()
    assert cli_main(["analyze", str(run), "--json"]) == 0
    res = pd.DataFrame(json.loads(capsys.readouterr().out))
    return res[(res["outcome"] == "length.words") & (res["cue_type"] == "pooled") & (res["style"] == "pooled")
               & (res["reference"] == "control")].set_index("group")


# --------------------------------------------------------------------------- C1: samples per post


def test_row_blocks_of_samples_are_one_post_and_the_analysis_clusters_them(tmp_path, capsys):
    """C1: K consecutive rows with one post text are K samples of one post: 12 posts, not 48; the gap's
    effective sample size is 12 posts, and its CI is wider than when the samples pose as posts."""
    spec_path = sampled_release(tmp_path / "rel", k=K, n_posts=N_POSTS)
    run = tmp_path / "run"
    s = import_release(load_import_spec(spec_path), run)
    assert s.posts == N_POSTS and s.samples_max == K and s.imported == 3 * N_POSTS * K
    assert f"Effective sample size: {N_POSTS} posts" in s.design_statement
    assert any(f"up to {K} replies per post" in line for line in s.lines())
    with RunStore(run, create=False) as store:
        q = store.replies_df()
        assert q["post_id"].nunique() == N_POSTS
        assert q.groupby("variant_id").size().eq(K).all() and sorted(q["sample_index"].unique()) == list(range(K))
    res = _analyze(run, capsys)
    assert (res["n_clusters"] == N_POSTS).all()
    assert res.loc["Black", "estimate"] < 0  # the planted gap: Black replies 5 words shorter

    naive = tmp_path / "naive"  # the same rows counted as 48 posts (what the import did before)
    import_release(_spec(spec_path, rows_per_post=None, repeated_posts="posts"), naive)
    res_naive = _analyze(naive, capsys)
    assert (res_naive["n_clusters"] == N_POSTS * K).all()
    # the samples share their (post, condition)'s offset: as posts, the CI is far too narrow
    assert res.loc["Black", "se"] > 1.3 * res_naive.loc["Black", "se"]

    assert cli_main(["report", str(run)]) == 0
    capsys.readouterr()
    md = (run / "report.md").read_text(encoding="utf-8")
    assert f"{N_POSTS} posts, up to {K} replies per post and condition" in md


def test_repeated_post_texts_must_be_declared_samples_or_posts(tmp_path):
    """C1: identical post texts within one condition are never guessed: undeclared they are an error that
    names the ways to declare them; declared, they import as samples or as posts."""
    spec_path = sampled_release(tmp_path / "rel", k=K, n_posts=N_POSTS, declare=None)
    with pytest.raises(AuditError, match=r"samples of one post or different posts.*rows_per_post: K.*"
                                         r"repeated_posts: posts") as err:
        import_release(load_import_spec(spec_path), tmp_path / "run")
    assert "control.tsv rows 1 and 2" in err.value.message
    assert not (tmp_path / "run").exists()
    s = import_release(_spec(spec_path, repeated_posts="samples"), tmp_path / "samples")
    assert (s.posts, s.samples_max) == (N_POSTS, K)
    s = import_release(_spec(spec_path, repeated_posts="posts"), tmp_path / "posts")
    assert (s.posts, s.samples_max) == (N_POSTS * K, 1)


def test_a_sample_column_with_match_rows_groups_rows_into_posts(tmp_path):
    """C1: a sample column (0..K-1) under match: rows: a run of rows with one text is one post."""
    root = tmp_path / "rel"
    spec_path = sampled_release(root, k=3, n_posts=8, declare=None)
    spec = yaml.safe_load(spec_path.read_text())
    for f in spec["files"]:
        p = root / f["path"]
        df = pd.read_csv(p, sep="\t", header=None, names=["post", "reply"], dtype=str, keep_default_na=False)
        df.insert(0, "sample", [i % 3 for i in range(len(df))])
        df.to_csv(p, sep="\t", index=False)
        f.update(header=True)
        f.pop("columns")
    spec["columns"]["sample"] = "sample"
    s = import_release(import_spec_from_dict({**spec, "files": [{**f, "path": str(root / f["path"])}
                                                               for f in spec["files"]]}), tmp_path / "run")
    assert (s.posts, s.samples_max, s.imported) == (8, 3, 72)


def test_rows_per_post_that_does_not_fit_the_file_is_refused(tmp_path):
    spec_path = sampled_release(tmp_path / "rel", k=K, n_posts=N_POSTS)
    with pytest.raises(AuditError, match=r"rows_per_post: 5, but the file has 48 rows \(not a multiple of 5\)"):
        import_release(_spec(spec_path, rows_per_post=5), tmp_path / "run")
    with pytest.raises(AuditError, match=r"rows_per_post: 3, but rows 4-6 hold different post texts"):
        import_release(_spec(spec_path, rows_per_post=3), tmp_path / "run")
    with pytest.raises(AuditError, match=r"rows_per_post: 6.*rows 1-6 hold different post texts"):
        import_release(_spec(spec_path, rows_per_post=6), tmp_path / "run")


# --------------------------------------------------------------------------- C2, C4: content across conditions


def test_a_mislabelled_condition_is_an_error_naming_both_files_or_a_warning_with_force(tmp_path, capsys):
    """C2: White.tsv carries Black's posts (identical post column, other replies): refused, naming both
    files and conditions; --force imports it with the warning in the summary and the report."""
    spec_path = sampled_release(tmp_path / "rel", mislabel=True)
    status = cli_main(["import", "--spec", str(spec_path), "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert status == 2 and "Black.tsv" in err and "White.tsv" in err and "identical post texts" in err
    assert "'Black" in err and "'White" in err and "--force" in err
    assert not (tmp_path / "run").exists()
    run = tmp_path / "forced"
    assert cli_main(["import", "--spec", str(spec_path), "--out", str(run), "--force"]) == 0
    out = capsys.readouterr().out
    assert "WARNING: conditions 'Black (explicit_statement)' (Black.tsv) and 'White (explicit_statement)' " \
           "(White.tsv) have identical post texts" in out
    assert cli_main(["report", str(run)]) == 0
    capsys.readouterr()
    assert "Import warning:" in (run / "report.md").read_text(encoding="utf-8")
    assert "identical post texts" in (run / "report.html").read_text(encoding="utf-8")


def test_a_condition_whose_posts_lack_its_declared_cue_is_refused(tmp_path):
    """C2: with cue texts given, every post text of the condition must contain its cue."""
    spec_path = sampled_release(tmp_path / "rel", white_cue="As a Hispanic woman, ",
                                spec_extra={"cues": {"Black": "as a black woman", "White": "As a White woman"}})
    with pytest.raises(AuditError, match=r"48 of 48 post texts of condition 'White' in White.tsv lack its cue "
                                         r"'As a White woman' \(first: row 1"):
        import_release(load_import_spec(spec_path), tmp_path / "run")
    s = import_release(load_import_spec(spec_path), tmp_path / "forced", force=True)
    assert any("lack its cue" in w for w in s.warnings)


def test_the_same_file_for_two_conditions_names_the_pair(tmp_path):
    """C4: the same reply file given for two conditions: one error naming both entries (it was 'two rows
    gave the same request', naming neither)."""
    spec_path = sampled_release(tmp_path / "rel")
    spec = yaml.safe_load(spec_path.read_text())
    spec["files"][2]["path"] = "Black.tsv"
    spec_path.write_text(yaml.safe_dump(spec))
    with pytest.raises(AuditError, match=r"files\[1\] Black.tsv and files\[2\] Black.tsv are the same file"):
        import_release(load_import_spec(spec_path), tmp_path / "run")


def test_identical_reply_columns_of_two_conditions_are_refused(tmp_path):
    spec_path = sampled_release(tmp_path / "rel", same_replies=True)
    with pytest.raises(AuditError, match=r"'Black \(explicit_statement\)' \(Black.tsv\) and 'White "
                                         r"\(explicit_statement\)' \(White.tsv\) have identical replies"):
        import_release(load_import_spec(spec_path), tmp_path / "run")


# --------------------------------------------------------------------------- C3: failures are failures


def test_placeholders_are_flagged_then_failed_replies_counted_per_group(tmp_path, capsys):
    """C3: a 6-character placeholder in ~9% of rows is flagged and counted when undeclared; declared in
    failed_values, its rows are failed replies, counted per group as missing outcomes."""
    root = tmp_path / "rel"
    spec_path = sampled_release(root, placeholder=0.09, seed=11)
    per_group = placeholders_by_group(root)
    n = sum(per_group.values())
    assert n > 5 and all(per_group.values())
    s = import_release(load_import_spec(spec_path), tmp_path / "flagged")
    hit = [r for r in s.recurring if r["text"] == PLACEHOLDER]
    assert hit and hit[0]["rows"] == n and s.replies_missing == 0
    assert any(f"{PLACEHOLDER!r} recurs in {n} rows" in w and "failed_values" in w for w in s.warnings)

    run = tmp_path / "run"
    s = import_release(_spec(spec_path, failed_values=[PLACEHOLDER], allow_missing=True), run)
    assert (s.replies_missing, s.replies_placeholder, s.replies_ok) == (n, n, 3 * N_POSTS * K - n)
    assert not s.recurring and not s.warnings
    with RunStore(run, create=False) as store:
        q = store.replies_df()
        failed = q[q["status"] == "failed"]
        assert len(failed) == n and failed["error"].str.contains("failure placeholder 'ERROR!'").all()
        assert not q["reply"].fillna("").eq(PLACEHOLDER).any()
    res = _analyze(run, capsys)
    assert res.loc["Black", "n_missing"] == per_group["Black"] and res.loc["White", "n_missing"] == per_group["White"]
    assert res.loc["Black", "ref_n_missing"] == per_group["control"]


# --------------------------------------------------------------------------- C5 and encodings: errors that say what to do


def test_quoted_newlines_in_a_tsv_read_without_quoting_csv_get_the_hint(tmp_path):
    """C5: a TSV whose replies hold quoted newlines, read with quotes as text, is refused with the
    `quoting: csv` hint (it was a pandas tokenizer error, or rows split silently)."""
    spec_path = sampled_release(tmp_path / "rel", quoting=False)
    with pytest.raises(AuditError, match=r"row 1 column 'reply' starts a quoted field.*add quoting: csv"):
        import_release(load_import_spec(spec_path), tmp_path / "run")


def test_a_utf16_file_gets_re_save_advice_or_imports_with_its_encoding(tmp_path):
    """M8-like, for imports: a UTF-16 export is named as such, with how to re-save it."""
    df = pd.DataFrame({"post_id": [f"p{i}" for i in range(6) for _ in range(2)],
                       "group": ["control", "Black"] * 6,
                       "text": [("As a Black woman, " if j else "") + f"post number {i} about café" for i in range(6)
                                for j in range(2)],
                       "reply": [f"reply {i}-{j} ünïcode" for i in range(6) for j in range(2)]})
    path = tmp_path / "release.csv"
    df.to_csv(path, index=False, encoding="utf-16")
    spec = {"name": "u16", "match": "id", "files": [{"path": str(path)}],
            "columns": {"post_id": "post_id", "group": "group", "variant": "text", "reply": "reply"}}
    with pytest.raises(AuditError, match=r"not valid UTF-8.*UTF-16.*Re-save it as UTF-8.*encoding: utf-16"):
        import_release(import_spec_from_dict(spec), tmp_path / "run")
    spec["files"][0]["encoding"] = "utf-16"
    s = import_release(import_spec_from_dict(spec), tmp_path / "run")
    assert s.imported == 12 and s.replies_ok == 12


# --------------------------------------------------------------------------- C7: reply-post relevance


def test_replies_shuffled_within_one_file_are_warned_about(tmp_path, capsys):
    """C7: the replies of White.tsv shuffled across its rows: a warning names the file; the aligned files
    (and an aligned release) get none."""
    s = import_release(load_import_spec(sampled_release(tmp_path / "ok")), tmp_path / "run-ok")
    assert not s.warnings and {r["file"] for r in s.relevance} == {"control.tsv", "Black.tsv", "White.tsv"}
    assert all(r["mean_rank"] > 0.9 for r in s.relevance)
    run = tmp_path / "run"
    assert cli_main(["import", "--spec", str(sampled_release(tmp_path / "rel", shuffle="White")), "--out",
                     str(run)]) == 0
    out = capsys.readouterr().out
    warned = [line for line in out.splitlines() if "no more similar to their own posts" in line]
    assert len(warned) == 1 and "White.tsv" in warned[0] and "shuffled" in warned[0]
    assert cli_main(["report", str(run)]) == 0
    capsys.readouterr()
    assert "no more similar to their own posts" in (run / "report.md").read_text(encoding="utf-8")


# --------------------------------------------------------------------------- H5, H7 (issue 28)


def _long(tmp_path: Path, rows: list[dict]) -> Path:
    path = tmp_path / "long.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def _long_rows(n: int = 6) -> list[dict]:
    rows = []
    for i in range(n):
        for g in ("control", "Black"):
            rows.append(dict(post_id=f"P{i}", group=g, cue_type="" if g == "control" else "explicit_tag",
                             text=("As a Black woman, " if g == "Black" else "") + f"My post {i}: I cannot sleep "
                                                                                  f"since move number {i}.",
                             reply=f"Reply to {i} for {g}", model="m1", sample="0"))
    return rows


def _long_spec(path: Path, **cols) -> dict:
    return {"name": "long", "match": "id", "files": [{"path": str(path)}],
            "columns": {"post_id": "post_id", "group": "group", "variant": "text", "reply": "reply", **cols}}


def test_two_different_posts_under_one_id_are_refused(tmp_path):
    """H5: one id, one text (two posts sharing an id were merged silently)."""
    rows = _long_rows()
    rows[2]["text"] = "An entirely different post about my brother and the money he owes me."  # P1's control
    rows[3]["text"] = "As a Black woman, " + rows[2]["text"]
    rows += [dict(rows[0], text="My post 0: I cannot sleep since move number 0.", reply="another"),
             dict(rows[2], text="My post 1: I cannot sleep since move number 1.", reply="x")]
    path = _long(tmp_path, rows)
    with pytest.raises(AuditError, match=r"post id 'P1' \(group 'control'\) has 2 different texts: long.csv row 3 "
                                         r".*long.csv row 14.*one id, one text"):
        import_release(import_spec_from_dict(_long_spec(path)), tmp_path / "run")


@pytest.mark.parametrize("col", ["model", "sample", "cue_type"])
def test_an_empty_model_sample_or_cue_type_cell_is_one_error_with_file_row_column(tmp_path, col):
    """H7: an empty model, sample or cue_type cell (of a non-control row) is one error naming the file,
    the row and the column (it was a silent default, or a TypeError)."""
    rows = _long_rows()
    rows[5][col] = ""
    path = _long(tmp_path, rows)
    with pytest.raises(AuditError, match=rf"empty {col} cell in long.csv row 6, column '{col}'"):
        import_release(import_spec_from_dict(_long_spec(path, model="model", sample="sample", cue_type="cue_type")),
                       tmp_path / "run")


def test_report_of_an_imported_run_before_analyze_is_a_clear_incomplete_report(tmp_path, capsys):
    """H7: `report` of an imported run before `analyze` says the analysis has not run (it was a template
    error on design_statement)."""
    run = tmp_path / "run"
    import_release(import_spec_from_dict(_long_spec(_long(tmp_path, _long_rows()))), run)
    assert cli_main(["report", str(run)]) == 0
    capsys.readouterr()
    md = (run / "report.md").read_text(encoding="utf-8")
    assert "This report is incomplete" in md and "the analysis stage has not run" in md


# --------------------------------------------------------------------------- C6: pooled axis contrasts


def test_race_by_gender_release_gets_pooled_axis_contrasts_beside_the_cell_gaps(tmp_path, capsys):
    """C6: race x gender conditions: the Black vs White contrast pooled over gender (and woman vs man
    pooled over race) from the same model as the cell gaps, without export, pivot and re-run. Planted:
    Black replies 6 words shorter for both genders, no gender effect."""
    import random

    rng = random.Random(4)
    rows = []
    cells = [("control", None, None), ("Black man", "Black", "man"), ("Black woman", "Black", "woman"),
             ("White man", "White", "man"), ("White woman", "White", "woman")]
    for i in range(16):
        post = f"Post {i}: " + " ".join(f"w{i}x{j}" for j in range(12))
        base = rng.gauss(30, 5)
        for g, race, gender in cells:
            for s in range(2):
                words = max(3, round(base - (6 if race == "Black" else 0) + rng.gauss(0, 2)))
                rows.append(dict(post_id=f"P{i}", race=race or "control", gender=gender or "",
                                 text=(f"As a {race} {gender}, " if race else "") + post, sample=str(s),
                                 reply=" ".join(["word"] * words)))
    path = _long(tmp_path, rows)
    run = tmp_path / "run"
    import_release(import_spec_from_dict({
        "name": "rxg", "match": "id", "files": [{"path": str(path)}], "axes": ["race", "gender"],
        "reference_group": "White",
        "columns": {"post_id": "post_id", "variant": "text", "reply": "reply", "sample": "sample"}}), run)
    cellres = _analyze(run, capsys)
    with RunStore(run, create=False) as store:
        axes = store.table_df("results_axes")
    axes = axes[axes["outcome"] == "length.words"].set_index("axis")
    race, gender = axes.loc["race"], axes.loc["gender"]
    assert (race["level"], race["reference"], gender["level"], gender["reference"]) == ("Black", "White", "woman", "man")
    assert race["ci_low"] < -6 < race["ci_high"] and race["p_value"] < 0.001
    assert gender["ci_low"] < 0 < gender["ci_high"]
    # the same model as the cell gaps: the pooled contrast is the mean of the within-gender cell differences
    g = cellres["estimate"]
    expect = ((g["Black man"] - g["White man"]) + (g["Black woman"] - g["White woman"])) / 2
    assert race["estimate"] == pytest.approx(expect, abs=1e-9)
    assert race["n_pairs"] == 2 and race["pairs"] == "Black man - White man; Black woman - White woman"
    assert cli_main(["report", str(run)]) == 0
    capsys.readouterr()
    md = (run / "report.md").read_text(encoding="utf-8")
    assert "Pooled axis contrasts (beside the cell-level gaps above)" in md and "| race | Black vs White |" in md
    assert (run / "tables" / "results_axes.csv").is_file()


def test_failed_value_and_repeated_posts_flags_of_a_long_table(tmp_path, capsys):
    """The flags say what the import spec keys say: --failed-value marks placeholders as failed replies;
    --repeated-posts posts accepts two posts that share a text."""
    rows = _long_rows()
    rows[3]["reply"] = rows[5]["reply"] = "N/A"
    rows += [dict(r, post_id="P9") for r in rows[:2]]  # another post with post P0's text
    path = _long(tmp_path, rows)
    args = ["import", str(path), "--post-id", "post_id", "--group", "group", "--variant", "text", "--reply", "reply"]
    assert cli_main(args + ["--out", str(tmp_path / "refused")]) == 2
    assert "repeated_posts: posts" in capsys.readouterr().err
    assert cli_main(args + ["--out", str(tmp_path / "run"), "--failed-value", "N/A", "--repeated-posts", "posts",
                            "--json"]) == 0
    s = json.loads(capsys.readouterr().out)
    assert (s["replies_missing"], s["replies_placeholder"], s["posts"]) == (2, 2, 7)
