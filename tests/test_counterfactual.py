"""Counterfactual variants: counts match the spec, ids are deterministic, and every variant differs
from its control ONLY by the inserted cue (checked here independently of the library's own check)."""

from __future__ import annotations

import difflib
import hashlib
import json
import re
from pathlib import Path

import pandas as pd
import pytest
import yaml
from hypothesis import given, seed, settings
from hypothesis import strategies as st

from audit.cli import main
from audit.counterfactual import build_variant_set, build_variants, indefinite_article
from audit.errors import AuditError
from audit.resources import templates_dir
from audit.spec import load_spec, spec_from_dict
from audit.store import RunStore

REPO = Path(__file__).resolve().parents[1]

RACES = ["Black", "White", "Asian", "Hispanic"]
GENDERS = ["woman", "man"]
CONTRACT_COLUMNS = ["variant_id", "post_id", "topic", "risk", "group", "cue_type", "alternative", "cue_text", "text"]


def _yaml(name):
    return yaml.safe_load((templates_dir() / "cues" / f"{name}.yaml").read_text(encoding="utf-8"))


def n_alternatives(cue_type: str, race: str, gender: str) -> int:
    """Alternatives per group, counted straight from the template YAML (not via the library)."""
    d = _yaml(cue_type)
    if "alternatives" in d:
        return len(d["alternatives"])
    items = d["items"]
    joint = [i for i in items if i["when"] == {"race": race, "gender": gender}]
    if joint:
        return len(joint)
    r = [i for i in items if i["when"] == {"race": race}]
    g = [i for i in items if i["when"] == {"gender": gender}]
    return max(len(r), len(g))


@pytest.fixture(scope="module")
def demo():
    return build_variants(load_spec(REPO / "analyses" / "demo.yaml"))


@pytest.fixture(scope="module")
def full():
    return build_variants(load_spec(REPO / "analyses" / "can-ai-relate.yaml"))


# --------------------------------------------------------------------------- shape and counts


def test_contract_columns(demo):
    assert list(demo.columns[: len(CONTRACT_COLUMNS)]) == CONTRACT_COLUMNS
    assert {"race", "gender"} <= set(demo.columns)
    assert "age" not in demo.columns  # fixed, not audited: no axis column


def test_demo_counts(demo):
    spec_posts = 6
    assert demo["post_id"].nunique() == spec_posts
    assert len(demo) == spec_posts * (1 + 8 * 2)
    assert (demo["cue_type"] == "control").sum() == spec_posts
    assert set(demo["cue_type"]) == {"control", "explicit_tag", "implicit_name"}
    assert (demo["risk"] == "high").any(), "demo includes a high-risk post"


def test_full_design_counts_match_the_spec(full):
    posts = 65
    cue_types = ["explicit_tag", "explicit_statement", "implicit_name", "implicit_context"]
    per_post = 1 + sum(n_alternatives(ct, r, g) for ct in cue_types for r in RACES for g in GENDERS)
    assert per_post == 105
    assert len(full) == posts * per_post == 6825
    counts = full[full.cue_type != "control"].groupby(["cue_type", "group"]).size()
    for ct in cue_types:
        for r in RACES:
            for g in GENDERS:
                assert counts[(ct, f"{r} {g}")] == posts * n_alternatives(ct, r, g)
    assert full.groupby("post_id").size().eq(per_post).all()


def test_control_rows(full, demo):
    for df in (demo, full):
        c = df[df.cue_type == "control"]
        assert (c["group"] == "control").all() and (c["cue_text"] == "").all()
        assert c["race"].isna().all() and c["gender"].isna().all()
        assert c["alternative"].isna().all()
        v = df[df.cue_type != "control"]
        assert (v["group"] == v["race"] + " " + v["gender"]).all()


# --------------------------------------------------------------------------- ids


def test_ids_are_deterministic_and_unique(repo_root, demo):
    again = build_variants(load_spec(repo_root / "analyses" / "demo.yaml"))
    assert again["variant_id"].tolist() == demo["variant_id"].tolist()
    assert demo["variant_id"].is_unique
    assert demo["variant_id"].str.fullmatch(r"[0-9a-f]{16}").all()


def test_id_is_the_documented_content_hash(demo):
    row = demo[(demo.cue_type == "explicit_tag")].iloc[0]
    payload = json.dumps(
        {"post_id": row.post_id, "cue_type": row.cue_type, "group": row.group, "alternative": row.alternative,
         "attributes": {"race": row.race, "gender": row.gender}, "text": row.text},
        sort_keys=True, separators=(",", ":"), ensure_ascii=False,
    )
    assert row.variant_id == hashlib.sha256(payload.encode()).hexdigest()[:16]


def test_ids_follow_content_not_position(repo_root):
    base = {"name": "t", "posts": {"ids": ["grief-01", "anxiety-01"]},
            "demographics": {"cue_types": ["explicit_tag"], "fixed": {"age": "32"}}}
    a = build_variants(spec_from_dict(base))
    b = build_variants(spec_from_dict({**base, "posts": {"ids": ["grief-01"]}}))
    older = build_variants(spec_from_dict({**base, "demographics": {**base["demographics"], "fixed": {"age": "45"}}}))
    ids_a = dict(zip(a.text, a.variant_id))
    assert all(ids_a[t] == i for t, i in zip(b.text, b.variant_id))  # same content, same id
    # a different fixed age changes every cued text and so every cued id; controls keep theirs
    ctrl = lambda d: set(d[d.cue_type == "control"].variant_id)  # noqa: E731
    assert ctrl(older) == ctrl(a)
    assert not (set(older[older.cue_type != "control"].variant_id) & set(a.variant_id))


# --------------------------------------------------------------------------- the diff check


def _inserted(control: str, variant: str) -> tuple[str, str]:
    """The single inserted segment (via difflib) and where; fails if anything else changed."""
    ops = [op for op in difflib.SequenceMatcher(None, control, variant, autojunk=False).get_opcodes()
           if op[0] != "equal"]
    assert len(ops) == 1, f"expected one insertion, got {ops}"
    tag, i1, i2, j1, j2 = ops[0]
    assert tag == "insert"
    assert i1 in (0, len(control)), "cue inserted in the middle of the post"
    return variant[j1:j2], ("start" if i1 == 0 else "end")


def _check_diff(df, sample_posts=None):
    controls = dict(zip(df[df.cue_type == "control"].post_id, df[df.cue_type == "control"].text))
    rows = df[df.cue_type != "control"]
    if sample_posts:
        rows = rows[rows.post_id.isin(sample_posts)]
    n = 0
    for r in rows.itertuples(index=False):
        ins, _ = _inserted(controls[r.post_id], r.text)
        assert r.cue_text in ins
        residue = ins.replace(r.cue_text, "", 1)
        assert residue.strip() in ("", "--"), f"join residue {residue!r}"
        assert residue != "", "cue glued to the post"
        n += 1
    return n


def test_diff_check_demo(demo):
    assert _check_diff(demo) == len(demo) - 6


def test_diff_check_full_design_sample(full):
    # difflib on every variant of three posts of different topics (every cue type, group, alternative)
    assert _check_diff(full, ["grief-03", "body_image-01", "self_harm-02"]) == 3 * 104


def test_every_full_design_variant_is_control_plus_cue(full):
    controls = dict(zip(full[full.cue_type == "control"].post_id, full[full.cue_type == "control"].text))
    for r in full[full.cue_type != "control"].itertuples(index=False):
        post = controls[r.post_id]
        if r.text.endswith(post):
            assert r.text[: -len(post)].rstrip(" -\n") == r.cue_text
        else:
            assert r.text.startswith(post)
            assert r.text[len(post):].lstrip(" \n") == r.cue_text


def test_diff_check_catches_a_changed_post():
    """The test's own checker must fail on a variant that changes the post's words."""
    with pytest.raises(AssertionError):
        _inserted("I feel sad today.", "[32, Black woman] -- I feel down today.")
    with pytest.raises(AssertionError):
        _inserted("I feel sad today. It is hard.", "I feel sad today. I'm a man. It is hard.")


# --------------------------------------------------------------------------- text quality

PLACEHOLDER = re.compile(r"\{[^{}]*\}")


def test_no_unfilled_placeholders(full):
    assert not full["cue_text"].str.contains(PLACEHOLDER).any()
    assert not full["text"].str.contains(PLACEHOLDER).any()
    assert not full["text"].str.contains("None|nan", regex=True).any()


def test_explicit_tag_shape(full):
    tags = full[full.cue_type == "explicit_tag"]
    assert tags["text"].str.match(r"^\[32, (Black|White|Asian|Hispanic) (woman|man)\] -- [A-Z]").all()


def test_explicit_statements_are_grammatical(full):
    st_ = full[full.cue_type == "explicit_statement"]
    for r in st_.drop_duplicates(["group", "alternative"]).itertuples():
        t = r.cue_text
        assert t[0].isupper() or t.startswith("(")
        assert t.endswith(".") or t.endswith(".)")
        art = "an" if r.race == "Asian" else "a"
        assert f"I'm a 32-year-old {r.race} {r.gender}" in t, t  # "32" takes "a"
        assert "  " not in t
    assert set(st_.drop_duplicates("alternative")["alternative"]) == {"opening", "for_context", "closing_aside"}


def test_articles():
    assert indefinite_article("Asian man") == "an"
    assert indefinite_article("Hispanic woman") == "a"
    assert indefinite_article("18-year-old Black woman") == "an"
    assert indefinite_article("80-year-old") == "an"
    assert indefinite_article("8-year-old") == "an"
    assert indefinite_article("11-year-old") == "an"
    assert indefinite_article("32-year-old") == "a"
    assert indefinite_article("100-year-old") == "a"
    assert indefinite_article("unemployed person") == "an"


def test_statement_article_without_fixed_age():
    df = build_variants(spec_from_dict({"name": "t", "posts": {"limit": 1},
                                        "demographics": {"cue_types": ["explicit_statement"]}}))
    texts = set(df["cue_text"])
    assert "I'm an Asian woman." in texts and "I'm a Hispanic man." in texts and "I'm a White woman." in texts
    tags = build_variants(spec_from_dict({"name": "t", "posts": {"limit": 1},
                                          "demographics": {"cue_types": ["explicit_tag"]}}))
    assert "[Black woman]" in set(tags["cue_text"])


def test_joins_are_clean(full):
    t = full["text"]
    assert not t.str.contains(r"[ \t]\n|\n{3,}|  |\.\.(?!\.)| \.", regex=True).any()


def test_names_and_contexts_appear_once(full):
    names = full[full.cue_type == "implicit_name"]
    for r in names.itertuples():
        name = r.alternative.capitalize()
        assert r.text.count(name) == 1
        assert r.cue_text in (f"Thanks for reading.\n{name}", f"Hi, I'm {name}.")
    ctx = full[full.cue_type == "implicit_context"]
    assert ctx["alternative"].str.fullmatch(r"[a-z_]+\+(woman|man)_[a-z_]+").all()
    assert ctx.groupby("group")["alternative"].nunique().eq(3).all()


def test_alternatives_cap(repo_root):
    spec = spec_from_dict({"name": "t", "posts": {"limit": 2},
                           "demographics": {"cue_types": ["implicit_name", "explicit_statement"], "alternatives": 2}})
    df = build_variants(spec)
    per = df[df.cue_type != "control"].groupby(["cue_type", "group"])["alternative"].nunique()
    assert per.eq(2).all()
    # the cap keeps the most strongly associated names (file order = strength order)
    bw = df[(df.cue_type == "implicit_name") & (df.group == "Black woman")]["alternative"].unique()
    assert list(bw) == ["latonya", "latoya"]


# --------------------------------------------------------------------------- property test

cue_sets = st.lists(st.sampled_from(["explicit_tag", "explicit_statement", "implicit_name", "implicit_context"]),
                    min_size=1, max_size=4, unique=True)


@seed(20261122)
@settings(max_examples=12, deadline=None, database=None)
@given(
    races=st.lists(st.sampled_from(RACES), min_size=1, max_size=4, unique=True),
    genders=st.lists(st.sampled_from(GENDERS), min_size=1, max_size=2, unique=True),
    cues=cue_sets,
    cap=st.one_of(st.none(), st.integers(1, 7)),
    n_posts=st.integers(1, 3),
)
def test_counts_match_any_design(races, genders, cues, cap, n_posts):
    spec = spec_from_dict({
        "name": "p", "posts": {"limit": n_posts},
        "demographics": {"axes": ["race", "gender"], "groups": {"race": races, "gender": genders},
                         "fixed": {"age": "32"}, "cue_types": cues, "alternatives": cap},
    })
    df = build_variants(spec)
    expect = n_posts * (1 + sum(
        min(n_alternatives(c, r, g), cap or 99) for c in cues for r in races for g in genders))
    assert len(df) == expect
    assert df["variant_id"].is_unique
    assert set(df[df.cue_type != "control"]["race"]) == set(races)
    assert _check_diff(df) == expect - n_posts


def test_race_only_audit_uses_race_items_only():
    df = build_variants(spec_from_dict({"name": "t", "posts": {"limit": 1},
                                        "demographics": {"axes": ["race"], "cue_types": ["implicit_context"]}}))
    assert set(df["group"]) == {"control", "Black", "White", "Asian", "Hispanic"}
    ctx = df[df.cue_type == "implicit_context"]
    assert not ctx["cue_text"].str.contains("husband|wife|mom|dad|other men|other women").any()
    assert "gender" not in df.columns


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize("demo_over, expect", [
    ({"axes": ["race", "gender"], "fixed": {"gender": "woman"}}, "both audited and fixed"),
    ({"fixed": {"age": "7"}}, "'7' is not a level of axis 'age'"),
    ({"fixed": {"height": "tall"}}, "unknown demographic axis 'height'"),
    ({"groups": {"race": ["Black", "Martian"]}}, "unknown level 'Martian'"),
    ({"groups": {"religion": ["Muslim"]}}, "not audited"),
    ({"axes": ["race", "colour"]}, "unknown demographic axis 'colour'"),
    ({"cue_types": ["implicit_dialect"]}, "no implicit_dialect rules for group 'Black woman'"),
    ({"axes": ["race"], "cue_types": ["implicit_dialect"]}, "no implicit_dialect rules for group 'White'"),
    ({"axes": ["religion"], "cue_types": ["implicit_name"]}, "no implicit_name item signals religion"),
    ({"axes": ["age", "race"]}, "open levels"),
    ({"axes": ["race", "race"]}, "repeat"),
])
def test_design_errors_are_clear(demo_over, expect):
    spec = spec_from_dict({"name": "t", "posts": {"limit": 1}, "demographics": demo_over})
    with pytest.raises(AuditError) as ei:
        build_variants(spec)
    msg = ei.value.message
    assert expect in msg
    assert "demographics" in msg or "templates" in msg or ".yaml" in msg


def test_design_error_names_spec_file_line_and_key(tmp_path):
    p = tmp_path / "s.yaml"
    p.write_text("name: t\ndemographics:\n  axes: [race]\n  fixed:\n    age: '7'\n", encoding="utf-8")
    with pytest.raises(AuditError) as ei:
        build_variants(load_spec(p))
    msg = ei.value.message
    assert str(p) in msg and "line 5" in msg and "key 'demographics.fixed.age'" in msg
    assert "18" in msg  # says what is expected


def test_religion_axis_works_with_explicit_cues():
    df = build_variants(spec_from_dict({
        "name": "t", "posts": {"limit": 1},
        "demographics": {"axes": ["religion", "race", "gender"], "groups": {"religion": ["Muslim", "Jewish"],
                         "race": ["Black"]}, "fixed": {"age": "32"}, "cue_types": ["explicit_tag", "explicit_statement"]},
    }))
    assert "[32, Muslim Black woman]" in set(df["cue_text"])
    assert "I'm a 32-year-old Jewish Black man." in set(df["cue_text"])
    assert set(df.columns) >= {"religion", "race", "gender"}


def test_audited_age_levels():
    df = build_variants(spec_from_dict({
        "name": "t", "posts": {"limit": 1},
        "demographics": {"axes": ["age", "gender"], "groups": {"age": ["18", "45"]}, "cue_types": ["explicit_statement"]},
    }))
    assert "I'm an 18-year-old woman." in set(df["cue_text"])
    assert set(df["group"]) == {"control", "18-year-old woman", "18-year-old man", "45-year-old woman", "45-year-old man"}


# --------------------------------------------------------------------------- CLI and store


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".parquet"])
def test_cli_writes_the_table(repo_root, tmp_path, capsys, suffix):
    out = tmp_path / f"v{suffix}"
    assert main(["variants", str(repo_root / "analyses" / "demo.yaml"), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "variants: 102 = 6 posts x (1 control + 16 cued variants)" in text
    assert "by cue_type: control 6, explicit_tag 48, implicit_name 48" in text
    assert "held fixed in every variant: age=32" in text
    assert "102 variants x 1 style(s) x 1 sample(s) x 1 model(s) = 102 replies" in text
    df = {".csv": lambda p: pd.read_csv(p, dtype=str, keep_default_na=False),
          ".jsonl": lambda p: pd.read_json(p, lines=True, dtype=False),
          ".parquet": pd.read_parquet}[suffix](out)
    assert len(df) == 102 and list(df.columns[:9]) == CONTRACT_COLUMNS
    ref = build_variants(load_spec(repo_root / "analyses" / "demo.yaml"))
    assert df["text"].tolist() == ref["text"].tolist()  # multi-line texts survive the round trip


def test_cli_list_posts_and_show(capsys):
    assert main(["variants", "demo", "--list-posts"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 6 and lines[0].startswith("depression-01\tdepression\tmoderate\t")
    assert main(["variants", "demo", "--show", "2"]) == 0
    out = capsys.readouterr().out
    assert out.count("\n--- ") == 2 and "[32, Black woman] -- I don't really know" in out


def test_cli_refuses_unknown_output_type(repo_root, tmp_path, capsys):
    assert main(["variants", str(repo_root / "analyses" / "demo.yaml"), "--out", str(tmp_path / "v.xlsx")]) == 2
    err = capsys.readouterr().err
    # refused by the output-path check before any work, naming the extensions that are accepted
    assert "unsupported extension '.xlsx'" in err and ".csv, .jsonl, .parquet" in err
    assert not (tmp_path / "v.xlsx").exists()


def test_store_round_trip(demo, tmp_path):
    with RunStore(tmp_path / "run") as store:
        assert store.put_variants(demo) == len(demo)
        assert store.put_variants(demo) == 0  # idempotent: ids are content hashes
        back = store.variants_df()
    assert len(back) == len(demo)
    m = back.set_index("variant_id").loc[demo["variant_id"]]
    assert (m["text"].values == demo["text"].values).all()
    assert (m["group"].values == demo["group"].values).all()
    cued = demo.cue_type != "control"
    assert (m["race"].values[cued.values] == demo["race"].values[cued.values]).all()


# --------------------------------------------------------------------------- dialect (sensitive, off by default)


def _dialect_spec(**over):
    d = {"axes": ["race"], "groups": {"race": ["Black"]}, "cue_types": ["implicit_dialect"],
         "fixed": {"age": "32", "gender": "woman"}}
    d.update(over)
    return spec_from_dict({"name": "d", "demographics": d})


def test_dialect_is_off_by_default():
    assert "implicit_dialect" not in spec_from_dict({"name": "x"}).demographics.cue_types
    for name in ("demo", "can-ai-relate"):
        assert "implicit_dialect" not in load_spec(REPO / "analyses" / f"{name}.yaml").demographics.cue_types
    assert _yaml("implicit_dialect")["sensitive"] is True


def test_dialect_variants_change_only_what_the_rules_list():
    df = build_variants(_dialect_spec())
    controls = dict(zip(df[df.cue_type == "control"].post_id, df[df.cue_type == "control"].text))
    dia = df[df.cue_type == "implicit_dialect"]
    skipped = sum(build_variant_set(_dialect_spec()).skipped.values())
    assert len(dia) + skipped == 65 and len(dia) >= 20  # every post accounted for
    assert set(dia["alternative"]) == {"aae"} and set(dia["group"]) == {"Black"}
    for r in dia.itertuples():
        changes = [c.split(": ", 1)[1].split(" -> ") for c in r.cue_text.split("; ")]
        assert changes and all(len(c) == 2 for c in changes)
        olds = " ".join(o for o, _ in changes).lower().split()
        news = " ".join(n for _, n in changes).lower().split()
        a, b = controls[r.post_id].split(" "), r.text.split(" ")
        for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes():
            if tag == "equal":
                continue
            for w in a[i1:i2]:
                assert w.strip(".,?!").lower() in olds, (r.post_id, w)
            for w in b[j1:j2]:
                assert w.strip(".,?!").lower() in news, (r.post_id, w)
        assert len(r.text.split()) <= len(controls[r.post_id].split())  # no words added beyond the rules


def test_dialect_rules_keep_case_and_respect_clause_boundaries():
    from audit.counterfactual import rewrite
    from audit.templates import load_templates

    aae = load_templates().cues["implicit_dialect"].dialects[0]
    assert rewrite("Isn't it odd? There's nobody here.", aae)[0] == "Ain't it odd? It's nobody here."
    assert rewrite("I don't know if anyone cares.", aae)[0] == "I don't know if anyone cares."
    assert rewrite("I can't talk to anyone.", aae)[0] == "I can't talk to nobody."
    assert rewrite("My day was calm.", aae) == ("My day was calm.", [])


def test_dialect_rule_example_is_checked(tmp_path):
    import shutil

    from audit.templates import load_templates

    root = tmp_path / "t"
    for sub in ("axes", "cues"):
        shutil.copytree(templates_dir() / sub, root / sub)
    p = root / "cues" / "implicit_dialect.yaml"
    p.write_text(p.read_text().replace('example: "It doesn\'t help."', 'example: "It does not help."'))
    with pytest.raises(AuditError) as ei:
        load_templates(root)
    assert "dont_third_person" in ei.value.message and "not changed" in ei.value.message
