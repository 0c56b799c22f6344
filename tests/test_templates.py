"""Template files: the built-in set is valid and sourced; malformed templates give one clear error."""

from __future__ import annotations

import shutil

import pytest
import yaml

from audit.errors import AuditError
from audit.resources import templates_dir
from audit.spec import spec_from_dict
from audit.templates import load_templates


@pytest.fixture
def tdir(tmp_path):
    """A private copy of the built-in axes and cues, to break."""
    root = tmp_path / "tpl"
    for sub in ("axes", "cues"):
        shutil.copytree(templates_dir() / sub, root / sub)
    return root


def _err(root) -> str:
    with pytest.raises(AuditError) as ei:
        load_templates(root)
    return ei.value.message


def _edit(path, old, new):
    text = path.read_text(encoding="utf-8")
    assert old in text, f"test setup: {old!r} not in {path.name}"
    path.write_text(text.replace(old, new, 1), encoding="utf-8")


def test_builtin_templates_cover_the_required_design():
    ts = load_templates()
    assert {"Black", "White", "Asian", "Hispanic"} <= set(ts.axes["race"].levels)
    assert {"woman", "man"} <= set(ts.axes["gender"].levels)
    assert ts.axes["age"].level("32") is not None and ts.axes["age"].level("7") is None
    assert {"explicit_tag", "explicit_statement", "implicit_name", "implicit_context"} <= set(ts.cues)
    assert ts.cues["implicit_dialect"].sensitive  # shipped, documented as sensitive, off by default


def test_every_cue_carries_a_source_or_rationale():
    ts = load_templates()
    for cf in ts.cues.values():
        assert len(cf.source) > 20
        for a in cf.alternatives or []:
            assert a.rationale
        for f in cf.frames or []:
            assert f.rationale
        for it in cf.items or []:
            assert it.rationale or it.strength is not None, f"{cf.cue_type}:{it.id} has no rationale or strength"
    for ax in ts.axes.values():
        assert ax.source
        for lvl in ax.levels.values():
            assert lvl.rationale


def test_names_record_association_strength_and_are_balanced():
    ts = load_templates()
    items = ts.cues["implicit_name"].items
    col = {"Black": "black", "White": "white", "Asian": "api", "Hispanic": "hispanic"}
    per_group: dict[tuple[str, str], list] = {}
    for it in items:
        assert it.strength is not None and 0.5 < it.strength <= 1
        # the recorded strength is the share of the group's own race column, and it is the largest share
        race = it.when["race"]
        assert it.shares[col[race]] == pytest.approx(it.strength)
        assert it.strength == max(it.shares.values())
        per_group.setdefault((race, it.when["gender"]), []).append(it)
    assert len(per_group) == 8
    assert len({len(v) for v in per_group.values()}) == 1, "every group has the same number of names"
    for v in per_group.values():
        s = [it.strength for it in v]
        assert s == sorted(s, reverse=True), "names are ordered by association strength"
    names = [it.text for it in items]
    assert len(set(names)) == len(names)


def test_context_items_are_parallel_across_groups():
    """Slot k of every race (and every gender) exists, so alternative k is comparable across groups."""
    ts = load_templates()
    items = ts.cues["implicit_context"].items
    by_race: dict[str, int] = {}
    by_gender: dict[str, int] = {}
    for it in items:
        if set(it.when) == {"race"}:
            by_race[it.when["race"]] = by_race.get(it.when["race"], 0) + 1
        if set(it.when) == {"gender"}:
            by_gender[it.when["gender"]] = by_gender.get(it.when["gender"], 0) + 1
    assert set(by_race) == {"Black", "White", "Asian", "Hispanic"} and len(set(by_race.values())) == 1
    assert set(by_gender) == {"woman", "man"} and len(set(by_gender.values())) == 1
    assert min(by_race.values()) >= 3


def test_unknown_key_in_axis_file(tdir):
    _edit(tdir / "axes" / "race.yaml", "order: 30", "order: 30\ncolour: red")
    msg = _err(tdir)
    assert "race.yaml" in msg and "unknown key 'colour'" in msg and "line " in msg


def test_missing_rationale_of_a_level(tdir):
    p = tdir / "axes" / "gender.yaml"
    _edit(p, "    rationale: Self-description most people who are men use in an English forum post.\n", "")
    msg = _err(tdir)
    assert "gender.yaml" in msg and "levels.man.rationale" in msg and "missing" in msg


def test_unknown_placeholder_in_explicit_template(tdir):
    _edit(tdir / "cues" / "explicit_statement.yaml", "I'm {a_person}.", "I'm {a_persn}.")
    msg = _err(tdir)
    assert "explicit_statement.yaml" in msg and "{a_persn}" in msg and "alternatives[0].template" in msg


def test_frame_without_item_placeholder(tdir):
    _edit(tdir / "cues" / "implicit_name.yaml", 'template: "Hi, I\'m {item}."', 'template: "Hi there."')
    msg = _err(tdir)
    assert "implicit_name.yaml" in msg and "{item}" in msg


def test_item_with_unknown_level(tdir):
    _edit(tdir / "cues" / "implicit_context.yaml", "when: {race: Asian}", "when: {race: Asain}")
    msg = _err(tdir)
    assert "implicit_context.yaml" in msg and "Asain" in msg and "asian_dumplings" in msg


def test_item_with_unknown_axis(tdir):
    _edit(tdir / "cues" / "implicit_context.yaml", "when: {gender: woman}", "when: {gendre: woman}")
    msg = _err(tdir)
    assert "unknown axis 'gendre'" in msg


def test_bad_joiner(tdir):
    _edit(tdir / "cues" / "explicit_tag.yaml", 'joiner: " -- "', 'joiner: " and "')
    msg = _err(tdir)
    assert "joiner" in msg and "explicit_tag.yaml" in msg


def test_file_name_must_match_declared_axis(tdir):
    shutil.move(tdir / "axes" / "religion.yaml", tdir / "axes" / "faith.yaml")
    msg = _err(tdir)
    assert "faith.yaml" in msg and "religion" in msg


def test_yaml_syntax_error_in_template(tdir):
    _edit(tdir / "axes" / "age.yaml", "levels: {}", "levels: {")
    msg = _err(tdir)
    assert "invalid YAML" in msg and "age.yaml" in msg and "line " in msg


def test_duplicate_item_ids(tdir):
    _edit(tdir / "cues" / "implicit_name.yaml", "{id: latoya,", "{id: latonya,")
    msg = _err(tdir)
    assert "unique" in msg and "latonya" in msg


def test_item_text_with_braces_is_refused(tdir):
    _edit(tdir / "cues" / "implicit_name.yaml", "text: Lakisha,", "text: '{Lakisha}',")
    assert "must not contain {" in _err(tdir)


def test_explicit_file_with_items_is_refused(tdir):
    p = tdir / "cues" / "explicit_tag.yaml"
    data = yaml.safe_load(p.read_text())
    data["items"] = [{"id": "x", "text": "x", "when": {"race": "Black"}}]
    p.write_text(yaml.safe_dump(data))
    assert "explicit" in _err(tdir)


def test_spec_can_point_at_its_own_template_dir(tdir, tmp_path):
    # a new axis defined in data only: sexual orientation with explicit cues
    (tdir / "axes" / "orientation.yaml").write_text(
        "axis: orientation\nsource: test\nrole: adjective\norder: 40\nlevels:\n"
        "  gay: {label: gay, rationale: test}\n  straight: {label: straight, rationale: test}\n"
    )
    spec = spec_from_dict({
        "name": "t", "posts": {"limit": 1},
        "demographics": {"axes": ["orientation", "gender"], "fixed": {"age": "40"},
                         "cue_types": ["explicit_statement"], "templates": str(tdir)},
    })
    from audit.counterfactual import build_variants

    df = build_variants(spec)
    assert set(df["group"]) == {"control", "gay woman", "gay man", "straight woman", "straight man"}
    assert "For context, I'm a 40-year-old gay man." in set(df["cue_text"])


@pytest.mark.parametrize("axis", sorted(a for a, f in load_templates().axes.items() if f.levels))
def test_every_shipped_axis_works_with_explicit_cues(axis):
    from audit.counterfactual import build_variants

    ax = load_templates().axes[axis]
    df = build_variants(spec_from_dict({
        "name": "t", "posts": {"limit": 1},
        "demographics": {"axes": [axis], "fixed": {"age": "32"}, "cue_types": ["explicit_tag", "explicit_statement"]},
    }))
    assert len(df) == 1 + len(ax.levels) * 4
    for lvl in ax.levels.values():
        assert f"[32, {lvl.tag_text}]" in set(df["cue_text"])
        noun = "" if ax.role == "noun" else " person"
        assert f"I'm a 32-year-old {lvl.phrase_text}{noun}." in set(df["cue_text"])
