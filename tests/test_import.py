"""``empathy-audit import``: synthetic releases in every supported shape -> run store -> score -> analyze ->
report, with the alignment checked, unmatched rows counted, file hashes in the provenance, and the
release's own scores stored as a named scorer.

The releases are built here (:func:`per_group_tsv_release`, :func:`long_release`) with a planted gap:
replies to group "Black" are shorter by a fixed number of words, so the length gap must be found for
Black and not for White. docs/replication.md walks through the same shapes.
"""

from __future__ import annotations

import hashlib
import json
import random
import string
from pathlib import Path

import pandas as pd
import pytest
import yaml

from audit.cli import main as cli_main
from audit.errors import AuditError
from audit.importer import import_release, import_spec_from_dict, load_import_spec, texts_match
from audit.store import RunStore

N_POSTS = 14
TOPICS = ["work", "sleep", "family", "money", "school", "friends", "health"]


def _post(i: int) -> str:
    """Post i: a topic and made-up words, so that two posts are never close (SequenceMatcher ratio < 0.45,
    far below the 0.6 a variant must reach), as two real posts are not."""
    r = random.Random(1000 + i)
    words = " ".join("".join(r.choice(string.ascii_lowercase) for _ in range(r.randint(3, 8))) for _ in range(14))
    return f"Post {i} about {TOPICS[i % len(TOPICS)]}: {words}."


def _reply(rng: random.Random, group: str) -> str:
    words = rng.randint(18, 30) - (8 if group == "Black" else 0)  # the planted gap: 8 fewer words for Black
    return " ".join(["I'm", "so", "sorry", "you", "are", "going", "through", "this."] + ["Take care."] * (words // 2))


def per_group_tsv_release(root: Path, *, shuffle_white: bool = False, drop_last_white: bool = False,
                          empty_black: int = 0) -> Path:
    """Shape (a): one headerless TSV of (post, reply) per condition, row k of every file is post k."""
    root.mkdir(parents=True, exist_ok=True)
    rng = random.Random(5)
    cues = {"control": "", "Black": "As a Black woman, ", "White": "As a White woman, "}
    for group, cue in cues.items():
        order = list(range(N_POSTS))
        if group == "White" and shuffle_white:
            order = order[1:] + order[:1]  # every row now holds the next post
        if group == "White" and drop_last_white:
            order = order[:-1]
        lines = []
        for k, i in enumerate(order):
            reply = "" if group == "Black" and k < empty_black else _reply(rng, group)
            lines.append(f"{cue}{_post(i)}\t{reply}\n")
        (root / f"{group}.tsv").write_text("".join(lines), encoding="utf-8")
    spec = {
        "name": "tsv-release", "match": "rows", "control": "control", "axes": ["race"],
        "columns": {"variant": "post", "reply": "reply"}, "cue_type": "explicit_statement",
        "files": [{"path": f"{g}.tsv", "header": False, "columns": ["post", "reply"], "values": {"race": g}}
                  for g in cues],
    }
    (root / "import.yaml").write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
    return root / "import.yaml"


def long_release(*, observational: bool = False, seed: int = 3) -> pd.DataFrame:
    """Shape (b): one long table with ids, groups, a model column and two published scorers' columns."""
    rng = random.Random(seed)
    rows = []
    groups = ["control", "Black", "White"]
    for i in range(N_POSTS * (3 if observational else 1)):
        for g in ([groups[i % 3]] if observational else groups):
            cue = "" if g == "control" else f"As a {g} woman, "
            reply = _reply(rng, g)
            emp = round(1.2 - (0.4 if g == "Black" else 0.0) + rng.uniform(-0.3, 0.3), 3)
            rows.append(dict(post_id=f"P{i:03d}", group=g, text=cue + _post(i), reply=reply, model="gpt-x 2024",
                             empathy_a=emp, empathy_b=round(emp + rng.uniform(-0.2, 0.2), 3)))
    return pd.DataFrame(rows)


def _run(args: list[str], capsys) -> tuple[int, str, str]:
    status = cli_main(args)
    out = capsys.readouterr()
    return status, out.out, out.err


# --------------------------------------------------------------------------- shape (a): per-group TSV by rows


def test_headerless_per_group_tsv_release_to_report(tmp_path, capsys):
    spec_path = per_group_tsv_release(tmp_path / "release")
    run = tmp_path / "run"
    status, out, err = _run(["import", "--spec", str(spec_path), "--out", str(run)], capsys)
    assert status == 0, err
    assert f"imported {3 * N_POSTS} of {3 * N_POSTS} rows" in out and "Counterfactual design" in out
    with RunStore(run, create=False) as store:
        v = store.variants_df()
        assert sorted(v["group"].unique()) == ["Black", "White", "control"]
        assert v["post_id"].nunique() == N_POSTS and set(v.loc[v["group"] == "Black", "race"]) == {"Black"}
        q = store.replies_df()
        assert len(q) == 3 * N_POSTS and set(q["status"]) == {"ok"}
        assert q["endpoint_id"].str.startswith("import:").all()
        spec = store.latest_spec()
        assert spec.analysis.reference == "control" and spec.demographics.axes == ["race"]
        assert spec.scoring.inference_probe is False
        # each variant is its control post with the cue added: row k of every file is post k
        ctrl = v[v["group"] == "control"].set_index("post_id")["text"]
        for r in v[v["group"] != "control"].to_dict("records"):
            assert r["text"].endswith(ctrl[r["post_id"]])

    assert _run(["score", str(run), "--scorers", "length", "refusal", "sentiment"], capsys)[0] == 0
    status, out, err = _run(["analyze", str(run), "--json"], capsys)
    assert status == 0, err
    res = pd.DataFrame(json.loads(out))
    pooled = res[(res["outcome"] == "length.words") & (res["cue_type"] == "pooled") & (res["style"] == "pooled")]
    gaps = pooled.set_index("group")
    assert gaps.loc["Black", "estimate"] < -5 and bool(gaps.loc["Black", "significant_holm"])  # planted: -8 words
    assert not bool(gaps.loc["White", "significant_holm"])
    assert set(pooled["design"]) == {"counterfactual"} and set(pooled["n_clusters"]) == {N_POSTS}

    status, out, err = _run(["report", str(run)], capsys)
    assert status == 0, err
    result = json.loads((run / "results.json").read_text(encoding="utf-8"))
    meta = {m["key"]: m["value"] for m in result["analysis_meta"]}
    assert meta["design"] == "counterfactual"
    html = (run / "report.html").read_text(encoding="utf-8")
    assert "Counterfactual design" in html and "imported, not generated" in html
    imported = result["provenance"]["imported"]
    for name in ("control.tsv", "Black.tsv", "White.tsv"):
        sha = hashlib.sha256((tmp_path / "release" / name).read_bytes()).hexdigest()
        f = next(x for x in imported["files"] if x["name"] == name)
        assert f["sha256"] == sha and f["rows"] == N_POSTS and f["bytes"] == (tmp_path / "release" / name).stat().st_size
        assert sha in html
    assert result["provenance"]["reproduce"].startswith("empathy-audit import --spec ")


def test_reimport_is_idempotent_and_another_release_is_refused(tmp_path, capsys):
    spec_path = per_group_tsv_release(tmp_path / "release")
    run = tmp_path / "run"
    assert _run(["import", "--spec", str(spec_path), "--out", str(run)], capsys)[0] == 0
    with RunStore(run, create=False) as store:
        before = store.content_sha256()
    status, out, _ = _run(["import", "--spec", str(spec_path), "--out", str(run)], capsys)
    assert status == 0 and "already imported" in out
    with RunStore(run, create=False) as store:
        assert store.content_sha256() == before
    # the same files moved elsewhere are the same import
    moved = tmp_path / "moved"
    (tmp_path / "release").rename(moved)
    assert _run(["import", "--spec", str(moved / "import.yaml"), "--out", str(run)], capsys)[0] == 0
    with RunStore(run, create=False) as store:
        assert store.content_sha256() == before
    # different content: refused, and nothing stored is touched
    p = moved / "White.tsv"
    p.write_text(p.read_text(encoding="utf-8").replace("Take care.", "Be well.", 1), encoding="utf-8")
    status, _, err = _run(["import", "--spec", str(moved / "import.yaml"), "--out", str(run)], capsys)
    assert status == 2 and "holds another import" in err
    with RunStore(run, create=False) as store:
        assert store.content_sha256() == before


def test_misaligned_rows_are_refused_then_counted_when_forced(tmp_path, capsys):
    spec_path = per_group_tsv_release(tmp_path / "release", shuffle_white=True)
    status, _, err = _run(["import", "--spec", str(spec_path), "--out", str(tmp_path / "run")], capsys)
    assert status == 2
    assert f"{N_POSTS} of {2 * N_POSTS} variant rows (50%) do not match their original post" in err
    assert "White.tsv row 1" in err and "--force" in err
    assert not (tmp_path / "run").exists()  # a refused import writes nothing
    summary = import_release(load_import_spec(spec_path), tmp_path / "forced", force=True)
    assert summary.unmatched == N_POSTS and summary.unmatched_by_file == {"control.tsv": 0, "Black.tsv": 0,
                                                                         "White.tsv": N_POSTS}
    assert summary.imported == 2 * N_POSTS
    with RunStore(tmp_path / "forced", create=False) as store:
        assert "White" not in set(store.variants_df()["group"])
        meta = json.loads(store.get_meta("import"))
        assert meta["counts"]["unmatched"] == N_POSTS


def test_unequal_row_counts_are_refused_unless_forced(tmp_path):
    spec_path = per_group_tsv_release(tmp_path / "release", drop_last_white=True)
    with pytest.raises(AuditError, match=r"row counts differ \(control.tsv 14, Black.tsv 14, White.tsv 13\)"):
        import_release(load_import_spec(spec_path), tmp_path / "run")
    # forced: the White file is shorter, so the control row it lacks is simply not replied to by White;
    # every row that is there still matches
    s = import_release(load_import_spec(spec_path), tmp_path / "run", force=True)
    assert s.imported == 3 * N_POSTS - 1 and s.unmatched == 0


def test_empty_replies_are_stored_failed_and_counted_as_missing(tmp_path, capsys):
    spec_path = per_group_tsv_release(tmp_path / "release", empty_black=6)
    run = tmp_path / "run"
    summary = import_release(load_import_spec(spec_path), run)
    assert summary.replies_missing == 6 and summary.replies_ok == 3 * N_POSTS - 6
    with RunStore(run, create=False) as store:
        q = store.replies_df()
        failed = q[q["status"] == "failed"]
        assert len(failed) == 6 and set(failed["group"]) == {"Black"}
        assert failed["error"].str.contains("no reply in the release").all()
    assert _run(["score", str(run), "--scorers", "length"], capsys)[0] == 0
    # 6 of 14 Black replies missing against 0 of 14 in the control: differential, so refused
    status, _, err = _run(["analyze", str(run)], capsys)
    assert status == 2 and "missing outcomes differ: Black 6 of 14" in err
    # allowed (import spec allow_missing -> analysis.allow_missing): fitted, the counts beside the gap
    allowed = tmp_path / "allowed"
    import_release(load_import_spec(spec_path).model_copy(update={"allow_missing": True}), allowed)
    assert _run(["score", str(allowed), "--scorers", "length"], capsys)[0] == 0
    assert _run(["analyze", str(allowed)], capsys)[0] == 0
    assert _run(["report", str(allowed)], capsys)[0] == 0
    result = json.loads((allowed / "results.json").read_text(encoding="utf-8"))
    black = next(r for r in result["results"] if r["group"] == "Black" and r["cue_type"] == "pooled")
    assert (black["n_missing"], black["ref_n_missing"], black["n"]) == (6, 0, N_POSTS - 6)
    assert "missing outcomes differ" in black["warning"]
    assert "6 (ref. 0)" in (allowed / "report.html").read_text(encoding="utf-8")


# --------------------------------------------------------------------------- shape (b): long tables with scores


def test_long_csv_with_two_published_scorers_side_by_side_with_ours(tmp_path, capsys):
    df = long_release()
    path = tmp_path / "release.csv"
    df.to_csv(path, index=False)
    run = tmp_path / "run"
    status, out, err = _run(["import", str(path), "--out", str(run), "--post-id", "post_id", "--variant", "text",
                             "--reply", "reply", "--group", "group", "--model", "model",
                             "--score", "published.empathy=empathy_a", "--score", "rater_b.empathy=empathy_b"], capsys)
    assert status == 0, err
    with RunStore(run, create=False) as store:
        info = store.scorer_info()
        assert info["published"]["imported"] is True and info["published"]["columns"] == {"empathy": "empathy_a"}
        assert [m["name"] for m in info["published"]["measures"]] == ["empathy"]
        sc = store.scores_df()
        got = sc[sc["scorer"] == "published"].merge(store.replies_df()[["request_key", "reply"]], on="request_key")
        assert len(got) == len(df) and sorted(got["value"]) == sorted(df["empathy_a"])
        assert set(store.replies_df()["model_label"]) == {"gpt-x-2024"}
        assert set(store.replies_df()["model_name"]) == {"gpt-x 2024"}
    assert _run(["score", str(run), "--scorers", "epitome", "length"], capsys)[0] == 0
    assert _run(["analyze", str(run)], capsys)[0] == 0
    assert _run(["report", str(run)], capsys)[0] == 0
    result = json.loads((run / "results.json").read_text(encoding="utf-8"))
    outcomes = {r["outcome"] for r in result["results"]}
    assert {"published.empathy", "rater_b.empathy", "epitome.empathy"} <= outcomes
    pairs = {(a["scorer_a"], a["scorer_b"], a["measure"]) for a in result["scorer_agreement"]}
    assert ("epitome", "published", "empathy") in pairs and ("published", "rater_b", "empathy") in pairs
    pub = next(r for r in result["results"] if r["outcome"] == "published.empathy" and r["group"] == "Black"
               and r["cue_type"] == "pooled" and r["style"] == "pooled")
    assert pub["estimate"] < -0.25 and pub["significant_holm"]  # planted: -0.4 in the published scores
    # the report puts the scorers of one measure side by side (issue 14: two scorers in one report)
    assert result["scorer_comparison"]["n_compared"] > 0
    page = (run / "report.html").read_text(encoding="utf-8")
    table = page[page.index('id="scorer-comparison-table"'):]
    table = table[:table.index("</table>")]
    # the two published scorers (our epitome levels are constant on these short synthetic replies, so its
    # gap is not estimable and it is listed in the results, not in the comparison)
    assert all(f"<td>{s}</td>" in table for s in ("published", "rater_b"))
    assert "Does the conclusion depend on the scorer?" in page


def test_observational_release_is_stated_and_fitted_by_ols(tmp_path, capsys):
    df = long_release(observational=True)
    path = tmp_path / "release.csv"
    df.to_csv(path, index=False)
    run = tmp_path / "run"
    summary = import_release(import_spec_from_dict({
        "name": "obs", "files": [{"path": str(path)}], "match": "id",
        "columns": {"post_id": "post_id", "variant": "text", "reply": "reply", "group": "group"},
        "scores": {"published": {"empathy": "empathy_a"}}}), run)
    assert summary.design == "observational"
    assert summary.no_control == int((df["group"] != "control").sum())  # counted: their posts have no control row
    assert _run(["analyze", str(run)], capsys)[0] == 0
    assert _run(["report", str(run)], capsys)[0] == 0
    result = json.loads((run / "results.json").read_text(encoding="utf-8"))
    meta = {m["key"]: m["value"] for m in result["analysis_meta"]}
    assert meta["design"] == "observational"
    assert all("ols" in r["method"] for r in result["results"] if r["p_value"] is not None)
    html = (run / "report.html").read_text(encoding="utf-8")
    assert "Observational design" in html and "not a counterfactual comparison" in html


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_jsonl_and_parquet_releases_import_like_csv(tmp_path, fmt, capsys):
    df = long_release()
    base = tmp_path / "release.csv"
    df.to_csv(base, index=False)
    other = tmp_path / f"release.{fmt}"
    if fmt == "jsonl":
        df.to_json(other, orient="records", lines=True)
    else:
        df.to_parquet(other)
    flags = ["--post-id", "post_id", "--variant", "text", "--reply", "reply", "--group", "group",
             "--score", "published.empathy=empathy_a"]
    stores = {}
    for name, p in (("csv", base), (fmt, other)):
        assert _run(["import", str(p), "--out", str(tmp_path / name), *flags], capsys)[0] == 0
        with RunStore(tmp_path / name, create=False) as store:
            stores[name] = (store.variants_df().drop(columns=["variant_id"]).sort_values(["post_id", "group"])
                            .reset_index(drop=True),
                            sorted(store.replies_df()["reply"]), sorted(store.scores_df()["value"]))
    pd.testing.assert_frame_equal(stores["csv"][0], stores[fmt][0])
    assert stores["csv"][1] == stores[fmt][1]
    assert stores["csv"][2] == pytest.approx(stores[fmt][2], rel=1e-12)


# --------------------------------------------------------------------------- bad input


def test_bad_mapping_names_the_column_the_key_and_the_file(tmp_path, capsys):
    path = tmp_path / "release.csv"
    long_release().to_csv(path, index=False)
    status, _, err = _run(["import", str(path), "--out", str(tmp_path / "run"), "--post-id", "post_id",
                           "--variant", "text", "--reply", "answer", "--group", "group"], capsys)
    assert status == 2
    assert "column 'answer' (columns.reply) not found" in err and "release.csv" in err and "reply" in err
    spec = tmp_path / "bad.yaml"
    spec.write_text("name: x\nfiles: [{path: release.csv}]\ncolumns: {reply: reply, varient: text}\n", encoding="utf-8")
    status, _, err = _run(["import", "--spec", str(spec), "--out", str(tmp_path / "run2")], capsys)
    assert status == 2 and "line 3" in err and "unknown key 'varient'" in err
    status, _, err = _run(["import", str(path), "--out", str(tmp_path / "run3"), "--post-id", "post_id",
                           "--variant", "text", "--reply", "reply", "--group", "group",
                           "--score", "published.empathy=group"], capsys)
    assert status == 2 and "score column 'group' (scores.published.empathy) is not numeric: row 1" in err


def test_a_headerless_file_with_the_wrong_number_of_columns_is_refused(tmp_path):
    spec_path = per_group_tsv_release(tmp_path / "release")
    spec = load_import_spec(spec_path)
    spec.files[1].columns = ["post", "reply", "extra"]
    with pytest.raises(AuditError, match=r"has 2 column\(s\) but 'columns' names 3"):
        import_release(spec, tmp_path / "run")


def test_unencodable_text_is_replaced_and_flagged(tmp_path):
    records = long_release().to_dict("records")
    records[1]["reply"] = "Fine \udc80 text"  # JSON may carry a lone surrogate escape; UTF-8 cannot encode it
    path = tmp_path / "release.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in records), encoding="utf-8")
    import_release(import_spec_from_dict({
        "name": "u", "files": [{"path": str(path)}], "match": "id",
        "columns": {"post_id": "post_id", "variant": "text", "reply": "reply", "group": "group"}}), tmp_path / "run")
    with RunStore(tmp_path / "run", create=False) as store:
        q = store.replies_df()
        row = q[q["reply"].str.startswith("Fine")].iloc[0]
        assert row["reply"] == "Fine \ufffd text" and "unencodable" in row["flags"]


def test_texts_match_tells_a_cue_from_another_post():
    assert texts_match(_post(3), "As a Black woman, " + _post(3))
    assert texts_match("I can't sleep and work is awful.", "I cannot sleep, and work is so awful.")
    assert not texts_match(_post(3), _post(4))
    assert not texts_match("I can't sleep and work is awful.", "My cat died and I keep crying every evening.")


def test_two_axes_per_group_files_and_an_axis_the_control_file_lacks(tmp_path):
    rng = random.Random(2)
    cells = {"control": {"race": "control"}, "bw": {"race": "Black", "gender": "woman"},
             "wm": {"race": "White", "gender": "man"}}
    for name in cells:
        cue = "" if name == "control" else f"I'm a {cells[name]['race']} {cells[name]['gender']}. "
        (tmp_path / f"{name}.txt").write_text("".join(f"{cue}{_post(i)}\t{_reply(rng, 'x')}\n" for i in range(6)),
                                              encoding="utf-8")
    spec = import_spec_from_dict({
        "name": "two-axes", "match": "rows", "axes": ["race", "gender"],
        "columns": {"variant": "post", "reply": "reply"},
        "files": [{"path": str(tmp_path / f"{n}.txt"), "header": False, "columns": ["post", "reply"], "values": v}
                  for n, v in cells.items()]})
    s = import_release(spec, tmp_path / "run")
    assert s.groups == ["Black woman", "White man", "control"] and s.unmatched == 0
    with RunStore(tmp_path / "run", create=False) as store:
        v = store.variants_df()
        bw = v[v["group"] == "Black woman"]
        assert set(bw["race"]) == {"Black"} and set(bw["gender"]) == {"woman"}
        assert store.latest_spec().demographics.axes == ["race", "gender"]
    bad = spec.model_copy(update={"axes": ["race", "sex"]})
    with pytest.raises(AuditError, match=r"axis column 'sex' \(axes\[1\]\) is in none of the files"):
        import_release(bad, tmp_path / "run2")


def test_release_without_a_control_uses_the_named_reference(tmp_path, capsys):
    df = long_release(observational=True)
    df = df[df["group"] != "control"]
    path = tmp_path / "release.csv"
    df.to_csv(path, index=False)
    run = tmp_path / "run"
    status, out, err = _run(["import", str(path), "--out", str(run), "--post-id", "post_id", "--variant", "text",
                             "--reply", "reply", "--group", "group", "--no-control", "--reference", "White",
                             "--score", "published.empathy=empathy_a"], capsys)
    assert status == 0, err
    assert "Observational design" in out
    status, out, err = _run(["analyze", str(run), "--json"], capsys)
    assert status == 0, err
    res = pd.DataFrame(json.loads(out))
    row = res[(res["cue_type"] == "pooled") & (res["group"] == "Black")].iloc[0]
    assert row["reference"] == "White" and row["estimate"] < -0.25 and row["design"] == "observational"
    # the mapping is given once: flags beside --spec would be ignored, so they are refused
    spec = tmp_path / "i.yaml"
    spec.write_text("name: x\nfiles: [{path: release.csv}]\nmatch: id\n"
                    "columns: {post_id: post_id, variant: text, reply: reply, group: group}\n", encoding="utf-8")
    status, _, err = _run(["import", "--spec", str(spec), "--out", str(tmp_path / "r2"), "--reply", "x"], capsys)
    assert status == 2 and "--reply cannot be combined with --spec" in err


def test_rows_without_a_control_are_checked_against_the_first_file(tmp_path):
    spec_path = per_group_tsv_release(tmp_path / "release", shuffle_white=True)
    spec = load_import_spec(spec_path)
    spec = spec.model_copy(update={"files": spec.files[1:], "control": None, "reference": "Black"})
    with pytest.raises(AuditError, match=rf"{N_POSTS} of {N_POSTS} variant rows \(100%\) do not match"):
        import_release(spec, tmp_path / "run")


def test_imported_scores_cannot_pose_as_a_builtin_scorer(tmp_path):
    with pytest.raises(AuditError, match="may not take the name of a built-in scorer"):
        import_spec_from_dict({"name": "x", "files": [{"path": "a.csv"}], "match": "id",
                               "columns": {"post_id": "id", "variant": "t", "reply": "r", "group": "g"},
                               "scores": {"epitome": {"empathy": "e"}}})


def test_model_style_and_sample_columns_become_requests_and_the_spec(tmp_path):
    base = long_release()
    parts = []
    for model in ("model-a", "model b"):
        for style in ("plain", "peer"):
            for sample in (0, 1):
                parts.append(base.assign(model=model, style=style, sample=sample))
    df = pd.concat(parts, ignore_index=True)
    path = tmp_path / "release.parquet"
    df.to_parquet(path)
    s = import_release(import_spec_from_dict({
        "name": "multi", "files": [{"path": str(path)}], "match": "id",
        "columns": {"post_id": "post_id", "variant": "text", "reply": "reply", "group": "group", "model": "model",
                    "style": "style", "sample": "sample"}}), tmp_path / "run")
    assert s.imported == len(df) and s.models == ["model-a", "model-b"]
    with RunStore(tmp_path / "run", create=False) as store:
        q = store.replies_df()
        assert len(q) == len(df) and q["request_key"].is_unique
        assert q.groupby(["model_label", "style", "sample_index"]).size().eq(len(base)).all()
        assert store.variants_df()["variant_id"].nunique() == len(base)  # one variant, 8 replies each
        spec = store.latest_spec()
        assert [m.label for m in spec.models] == ["model-a", "model-b"] and [m.model for m in spec.models] == [
            "model-a", "model b"]
        assert spec.styles == ["peer", "plain"] and spec.samples == 2


def test_a_csv_saved_with_a_byte_order_mark_imports(tmp_path):
    path = tmp_path / "excel.csv"
    long_release().to_csv(path, index=False, encoding="utf-8-sig")  # what spreadsheet programs write
    s = import_release(import_spec_from_dict({
        "name": "bom", "files": [{"path": str(path)}], "match": "id",
        "columns": {"post_id": "post_id", "variant": "text", "reply": "reply", "group": "group"}}), tmp_path / "run")
    assert s.imported == 3 * N_POSTS and s.posts == N_POSTS
