"""Hostile text (issue 12 G, J, Q and the property test): random Unicode, lone surrogates, NUL and
bidi controls go through the post loader, the request engine, the store, exports and the report
without a crash, and come out as text that shows what it holds."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from audit.cli import main as cli_main
from audit.corpus import read_post_file
from audit.engine import complete
from audit.errors import AuditError
from audit.scorers import get_scorer
from audit.spec import DecodingSpec, ModelSpec, load_spec
from audit.store import RunStore
from audit.testing import StubServer
from audit.untrusted import REPLACEMENT, replace_unencodable

ANY_TEXT = st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=0x10FFFF, blacklist_categories=()),
                   min_size=1, max_size=200)
INVISIBLE = "\u202e\u2066\u200b\x00\ufeff"
HOSTILE = "=HYPERLINK(\"http://x\")\u202eevil\u202c\x00 \udc80 <script>alert(1)</script> | `x` *y*"


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(texts=st.lists(ANY_TEXT, min_size=1, max_size=4))
def test_any_text_in_a_jsonl_post_file_loads_as_encodable_text(tmp_path, texts):
    path = tmp_path / "posts.jsonl"
    rows = [{"id": f"p{i}", "text": t} for i, t in enumerate(texts)]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")   # \\udc80 escapes allowed
    try:
        df, report = read_post_file(path, {})
    except AuditError as exc:       # e.g. a text that is only whitespace: one clear error, never a crash
        assert "empty text" in exc.message or "text" in exc.message
        return
    for t in df["text"]:
        t.encode("utf-8")
    replaced = sum(replace_unencodable(t)[1] for t in texts)
    assert (replaced > 0) == any("unencodable" in n for n in report.notes)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(reply=ANY_TEXT)
def test_any_reply_is_stored_encodable_and_read_back(tmp_path_factory, reply):
    run = tmp_path_factory.mktemp("any-reply")
    with StubServer(reply=lambda req, text: reply) as srv, RunStore(run) as st:
        s = complete(st, ModelSpec(label="s", base_url=srv.base_url, model="stub-model"),
                     DecodingSpec(max_tokens=64, seed=1),
                     [{"purpose": "reply", "messages": [{"role": "user", "content": "hello"}]}], progress=False)
        stored = st.replies_df()["reply"].iloc[0]
    assert s.ok == 1
    assert stored == replace_unencodable(reply)[0]   # what the server sent, lone surrogates replaced
    stored.encode("utf-8")
    for name in ("epitome", "length", "refusal", "sentiment"):   # every scorer takes it
        scores = get_scorer(name).score([reply[:50]], [stored])
        assert len(scores) == 1, name


def test_hostile_replies_render_as_visible_inert_text_in_report_and_exports(tmp_path, capsys):
    spec = {"name": "hostile", "posts": {"limit": 5},
            "demographics": {"axes": ["race"], "cue_types": ["explicit_tag"], "alternatives": 1},
            "decoding": {"max_tokens": 64, "seed": 2}, "scoring": {"scorers": ["length"], "inference_probe": False}}
    run = tmp_path / "run"
    with StubServer(reply=lambda req, text: HOSTILE + " more" * (len(text) % 4)) as srv:
        spec["models"] = [{"label": "s", "base_url": srv.base_url, "model": "stub-model"}]
        (tmp_path / "s.yaml").write_text(yaml.safe_dump(spec), encoding="utf-8")
        assert cli_main(["run", str(tmp_path / "s.yaml"), "--out", str(run), "--no-progress"]) in (0, 1)
    assert cli_main(["export", str(run), "--table", "replies", "--out", str(tmp_path / "x.csv")]) == 0
    for f in (run / "report.html", run / "report.md", run / "tables" / "replies.csv", tmp_path / "x.csv"):
        text = f.read_text(encoding="utf-8")
        assert not set(INVISIBLE) & set(text), f"raw invisible character in {f.name}"
        assert "<U+202E>" in text or "&lt;U+202E&gt;" in text, f.name
        assert "<script>" not in text or f.suffix == ".csv", f.name
    for f in (run / "tables" / "replies.csv", tmp_path / "x.csv"):
        cells = pd.read_csv(f, dtype=str, keep_default_na=False)["reply"]
        assert cells.str.startswith("'=HYPERLINK").all() and cells.str.contains(REPLACEMENT).all(), f.name


def test_a_lone_surrogate_escape_in_a_template_or_spec_is_one_clear_error(tmp_path):
    p = Path(tmp_path / "s.yaml")
    p.write_text('name: t\ndescription: "bad \\udc80 here"\n', encoding="utf-8")
    try:
        load_spec(p)
    except AuditError as exc:
        assert "lone UTF-16 surrogate" in exc.message and "description" in (exc.where or "")
    else:
        raise AssertionError("a spec with a lone surrogate escape was accepted")


@settings(max_examples=5, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(replies=st.lists(ANY_TEXT, min_size=2, max_size=4))
def test_any_replies_go_through_a_whole_run_into_a_readable_report(tmp_path_factory, replies):
    tmp = tmp_path_factory.mktemp("any-run")
    spec = {"name": "any", "posts": {"limit": 5},
            "demographics": {"axes": ["race"], "cue_types": ["explicit_tag"], "alternatives": 1},
            "decoding": {"max_tokens": 64, "seed": 2},
            "scoring": {"scorers": ["epitome", "length", "sentiment"], "inference_probe": False}}
    with StubServer(reply=lambda req, text: replies[len(text) % len(replies)]) as srv:
        spec["models"] = [{"label": "s", "base_url": srv.base_url, "model": "stub-model"}]
        (tmp / "s.yaml").write_text(yaml.safe_dump(spec), encoding="utf-8")
        assert cli_main(["run", str(tmp / "s.yaml"), "--out", str(tmp / "run"), "--no-progress"]) in (0, 1)
    html = (tmp / "run" / "report.html").read_text(encoding="utf-8")
    assert html.rstrip().endswith("</html>") and not set(INVISIBLE) & set(html)
    json.loads((tmp / "run" / "results.json").read_text(encoding="utf-8"))
    assert len(pd.read_csv(tmp / "run" / "tables" / "replies.csv", dtype=str, keep_default_na=False)) == 25
