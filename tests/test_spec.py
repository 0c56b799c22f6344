"""Audit specs: the built-in specs load; malformed specs give ONE clear error naming file, line and key."""

from __future__ import annotations

import textwrap

import pytest

from audit.cli import main
from audit.errors import AuditError
from audit.spec import AuditSpec, load_spec, spec_from_dict

GOOD = textwrap.dedent(
    """\
    name: t
    posts:
      source: builtin
      limit: 2
    demographics:
      axes: [race, gender]
      fixed: {age: "32"}
      cue_types: [explicit_tag]
    styles: [plain]
    samples: 1
    """
)


def _write(tmp_path, text, name="spec.yaml"):
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


def _err(path) -> AuditError:
    with pytest.raises(AuditError) as ei:
        load_spec(path)
    return ei.value


@pytest.mark.parametrize("name", ["demo", "can-ai-relate"])
def test_builtin_specs_load(repo_root, name):
    spec = load_spec(repo_root / "analyses" / f"{name}.yaml")
    assert isinstance(spec, AuditSpec)
    assert spec.name == name
    assert spec.demographics.fixed == {"age": "32"}
    assert spec.demographics.include_control is True


def test_builtin_name_resolves_without_a_path():
    assert load_spec("demo").name == "demo"


def test_demo_is_small_and_seeded(repo_root):
    spec = load_spec(repo_root / "analyses" / "demo.yaml")
    assert spec.decoding.max_tokens <= 128
    assert spec.decoding.seed is not None
    assert all(m.is_embedded for m in spec.models)


def test_real_endpoint_spec_names_a_key_variable_not_a_key(repo_root):
    spec = load_spec(repo_root / "analyses" / "can-ai-relate.yaml")
    m = spec.models[0]
    assert m.base_url and m.model and m.api_key_env
    assert m.api_key_env.isupper() and "sk-" not in m.api_key_env


def test_unknown_key_names_file_line_and_key(tmp_path):
    text = GOOD.replace("  limit: 2\n", "  limit: 2\n  topcs: [grief]\n")
    p = _write(tmp_path, text)
    e = _err(p)
    msg = e.message
    assert str(p) in msg
    assert "unknown key 'topcs'" in msg
    assert "line 5" in msg  # 'topcs' is on line 5
    assert "posts.topcs" in msg


def test_nested_unknown_key_in_demographics(tmp_path):
    p = _write(tmp_path, GOOD.replace("  cue_types: [explicit_tag]\n", "  cue_types: [explicit_tag]\n  alternativs: 2\n"))
    msg = _err(p).message
    assert "demographics.alternativs" in msg and "line 9" in msg


def test_wrong_type_names_key_and_value(tmp_path):
    p = _write(tmp_path, GOOD.replace("samples: 1", "samples: many"))
    msg = _err(p).message
    assert "samples" in msg and "'many'" in msg and "line 10" in msg


def test_wrong_type_in_list_item(tmp_path):
    p = _write(tmp_path, GOOD.replace("[explicit_tag]", "[explicit_tag, explicit_tags]"))
    msg = _err(p).message
    assert "demographics.cue_types[1]" in msg
    assert "explicit_tags" in msg


def test_out_of_range_value(tmp_path):
    p = _write(tmp_path, GOOD.replace("limit: 2", "limit: 0"))
    msg = _err(p).message
    assert "posts.limit" in msg and "greater than or equal to 1" in msg


def test_missing_required_key(tmp_path):
    p = _write(tmp_path, GOOD.replace("name: t\n", ""))
    msg = _err(p).message
    assert "required key 'name' is missing" in msg


def test_bad_yaml_syntax_names_line_and_column(tmp_path):
    p = _write(tmp_path, GOOD.replace("axes: [race, gender]", "axes: [race, gender"))
    msg = _err(p).message
    assert "invalid YAML" in msg and str(p) in msg and "line " in msg and "column " in msg


def test_spec_must_be_a_mapping(tmp_path):
    p = _write(tmp_path, "- just\n- a list\n")
    assert "YAML mapping" in _err(p).message


def test_missing_file_is_a_clear_error(tmp_path):
    e = _err(tmp_path / "nope.yaml")
    assert "not found" in e.message


def test_undecodable_spec_file(tmp_path):
    p = tmp_path / "latin1.yaml"
    p.write_bytes(GOOD.replace("name: t", "name: t\ndescription: caf\xe9").encode("latin-1"))
    assert "not valid UTF-8" in _err(p).message


def test_control_cannot_be_switched_off(tmp_path):
    p = _write(tmp_path, GOOD.replace("  cue_types:", "  include_control: false\n  cue_types:"))
    msg = _err(p).message
    assert "include_control" in msg and "control" in msg


def test_corrections_that_would_not_be_applied_are_refused(tmp_path):
    # Holm and BH are always both computed; a spec asking for one alone must not be silently ignored
    p = _write(tmp_path, GOOD + "analysis:\n  corrections: [bh]\n")
    msg = _err(p).message
    assert "analysis.corrections" in msg and "[holm, bh]" in msg
    p = _write(tmp_path, GOOD + "analysis:\n  corrections: [bh, holm]\n")
    assert load_spec(p).analysis.corrections == ["holm", "bh"]


def test_secret_header_is_refused(tmp_path):
    text = GOOD + textwrap.dedent(
        """\
        models:
          - label: x
            base_url: http://localhost:1/v1
            model: m
            headers: {Authorization: Bearer abc}
        """
    )
    msg = _err(_write(tmp_path, text)).message
    assert "api_key_env" in msg and "models[0]" in msg


def test_only_one_error_is_reported_with_a_count_of_the_rest(tmp_path):
    p = _write(tmp_path, GOOD.replace("samples: 1", "samples: many\nseeed: 3\nstyles2: [x]"))
    msg = _err(p).message
    assert msg.count("unknown key") + msg.count("valid integer") == 1
    assert "more problem(s)" in msg


def test_spec_from_dict_validates_too():
    with pytest.raises(AuditError) as ei:
        spec_from_dict({"name": "x", "demographics": {"axis": ["race"]}})
    assert "demographics.axis" in ei.value.message


def test_cli_prints_one_line_and_exits_2(tmp_path, capsys):
    p = _write(tmp_path, GOOD.replace("samples: 1", "samples: [1]"))
    assert main(["variants", str(p)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("empathy-audit: error: ")
    assert err.strip().count("\n") == 0
    assert "Traceback" not in err and "samples" in err


def test_demo_stays_within_the_reply_budget(repo_root):
    """The demo must finish in minutes on 2 CPU cores at ~1 reply/s: at most ~250 replies."""
    from audit.counterfactual import build_variants

    spec = load_spec(repo_root / "analyses" / "demo.yaml")
    replies = len(build_variants(spec)) * len(spec.styles) * spec.samples * len(spec.models)
    assert replies <= 110 and spec.decoding.max_tokens <= 64, replies   # issue 19: the demo in under 5 minutes
    # while staying a smoke test of every axis: at least two races, two genders and two cue types
    assert len(set(spec.demographics.cue_types)) >= 2 and set(spec.demographics.axes) >= {"race", "gender"}


@pytest.mark.parametrize("body, words", [
    ("name: a\nname: b\n", ["duplicate key 'name'", "line 2", "first at line 1"]),
    ("name: a\nposts: {limit: 2, limit: 3}\n", ["duplicate key 'limit'"]),
    ("name: a\nsamples: true\n", ["samples", "boolean"]),
    ("name: a\ndecoding: {max_tokens: false}\n", ["decoding.max_tokens", "boolean"]),
    ("name: ..\n", ["name", "pattern"]),
    ("name: .hidden\n", ["name"]),
    ("name: a\noutput: ../elsewhere\n", ["output", "'..'"]),
])
def test_ambiguous_or_escaping_specs_are_refused_with_one_line(tmp_path, body, words):
    p = tmp_path / "spec.yaml"
    p.write_text(body, encoding="utf-8")
    with pytest.raises(AuditError) as ei:
        load_spec(p)
    text = str(ei.value)
    assert all(w in text for w in words), text
    assert "\n" not in ei.value.message


def test_an_absolute_output_and_plain_numbers_are_accepted(tmp_path):
    p = tmp_path / "spec.yaml"
    p.write_text(f"name: a-1\nsamples: 2\ndecoding: {{temperature: 0}}\noutput: {tmp_path / 'run'}\n", encoding="utf-8")
    spec = load_spec(p)
    assert spec.samples == 2 and spec.decoding.temperature == 0 and spec.run_dir() == tmp_path / "run"
