"""Empty is missing (issue 28, item 3 and H2).

An endpoint that answers ``""``, whitespace or ``null`` only to prompts with the Black tag used to get
those replies stored as answered and scored 0 on every measure: "Black 100% lower, significant", with
the report saying "30 answered, 0 failed". Now such a reply is a failed reply with its reason, counted
per group, and the differential-missingness check refuses the Black gap (and says why) instead of a
p-value."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml

from audit.cli import main as cli_main
from audit.store import RunStore
from audit.testing import StubServer


def _reply(empty: str):
    def reply(req: dict, text: str) -> str:
        return empty if "Black" in text else "I hear you. That sounds really hard; I'm glad you wrote."
    return reply


def _spec(tmp: Path, base_url: str, **model) -> Path:
    spec = {"name": "empty", "posts": {"limit": 6},
            "demographics": {"axes": ["race"], "groups": {"race": ["Black", "White"]},
                             "cue_types": ["explicit_tag"], "alternatives": 1},
            "models": [{"label": "fake", "base_url": base_url, "model": "stub-model", "max_retries": 0, **model}],
            "decoding": {"max_tokens": 64, "seed": 3},
            "scoring": {"scorers": ["length", "refusal"], "inference_probe": False},
            "analysis": {"paired_check": False}}
    path = tmp / "spec.yaml"
    path.write_text(yaml.safe_dump(spec), encoding="utf-8")
    return path


def _replies(run: Path) -> pd.DataFrame:
    with RunStore(run, create=False) as st:
        return pd.read_sql_query(
            "SELECT v.group_name AS grp, r.status, r.text, r.error FROM replies r JOIN requests q USING (request_key)"
            " JOIN variants v USING (variant_id) WHERE q.purpose = 'reply'", st.conn)


@pytest.mark.parametrize("empty", ["", "   \n\t "])
def test_empty_replies_to_one_group_are_failed_and_the_gap_is_refused_not_significant(tmp_path, capsys, empty):
    with StubServer(reply=_reply(empty)) as srv:
        run = tmp_path / "run"
        rc = cli_main(["run", str(_spec(tmp_path, srv.base_url)), "--out", str(run), "--no-progress"])
    out = capsys.readouterr().out
    rep = _replies(run)
    black = rep[rep["grp"] == "Black"]
    assert len(black) == 6 and (black["status"] == "failed").all() and black["text"].isna().all()
    assert black["error"].str.startswith("empty reply").all()
    assert (rep.loc[rep["grp"] != "Black", "status"] == "ok").all()
    assert "6 requests failed" in out and rc != 0
    with RunStore(run, create=False) as st:
        scored = pd.read_sql_query("SELECT COUNT(*) AS n FROM scores s JOIN replies r USING (request_key)"
                                   " WHERE r.status != 'ok'", st.conn)["n"].iloc[0]
    assert scored == 0  # nothing scored 0 for a reply that is not there
    data = json.loads((run / "results.json").read_text(encoding="utf-8"))
    black_rows = [r for r in data.get("results") or [] if r.get("group") == "Black"]
    assert not any(r.get("significant_holm") for r in black_rows)
    assert all(r.get("p_value") is None for r in black_rows)
    html = (run / "report.html").read_text(encoding="utf-8")
    assert "empty reply" in html and "0 failed" not in html


def test_a_batch_output_line_with_null_content_is_a_failed_reply(tmp_path):
    """``content: null`` in a provider's (or vLLM's) batch output file: failed, with the reason, not ``""``."""
    with StubServer(reply=_reply("unused")) as srv:
        spec = _spec(tmp_path, srv.base_url, execution="batch", batch={"provider": "local"})
        run = tmp_path / "local"
        assert cli_main(["run", str(spec), "--out", str(run), "--no-progress"]) == 0
        (shard,) = (run / "batches" / "fake").glob("*.jsonl")
        rows = []
        for i, x in enumerate(json.loads(t) for t in shard.read_text().splitlines()):
            text = x["body"]["messages"][-1]["content"]
            body = srv._completion(x["body"], text, "ok")
            if "Black" in text:
                body["choices"][0]["message"]["content"] = None
            rows.append({"id": f"b-{i}", "custom_id": x["custom_id"],
                         "response": {"status_code": 200, "request_id": "", "body": body}, "error": None})
        out = tmp_path / "out.jsonl"
        out.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
        assert cli_main(["batch", "collect", str(run), "--from", str(out)]) == 0
    rep = _replies(run)
    black = rep[rep["grp"] == "Black"]
    assert len(black) == 6 and (black["status"] == "failed").all()
    assert black["error"].str.startswith("empty reply").all()
    with RunStore(run, create=False) as st:
        (b,) = st.batches()
        col = json.loads(b["collected_json"])
    assert col.get("failed") == 6 and col.get("ok") == len(rows) - 6


def test_content_parts_and_json_content_are_text_never_a_python_repr():
    from audit.backends.openai_backend import content_text

    assert content_text([{"type": "text", "text": "I hear "}, {"type": "text", "text": "you."}]) == "I hear you."
    assert content_text({"answer": "yes"}) == '{"answer": "yes"}'
    assert content_text(None) is None and content_text("x") == "x"


def test_an_imported_json_reply_is_stored_as_json_and_an_empty_one_as_failed(tmp_path):
    from audit.importer import import_release, import_spec_from_dict

    rows = []
    for p in range(6):
        for g in ("control", "Black", "White"):
            reply = {"text": f"I hear you ({p})", "tone": "warm"} if g == "White" else (
                "   " if g == "Black" and p == 0 else f"That sounds hard, post {p}.")
            rows.append({"post_id": f"P{p}", "group": g, "reply": reply,
                         "text": ("" if g == "control" else f"As a {g} person, ") + f"post number {p} " * 3})
    src = tmp_path / "r.jsonl"
    src.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    spec = import_spec_from_dict({"name": "j", "files": [{"path": str(src)}], "match": "id",
                                  "columns": {"post_id": "post_id", "variant": "text", "reply": "reply",
                                              "group": "group"}}, where="test")
    import_release(spec, tmp_path / "run")
    rep = _replies(tmp_path / "run")
    white = rep[rep["grp"] == "White"]["text"].tolist()
    assert all(json.loads(t)["tone"] == "warm" for t in white)  # JSON, not "{'text': ...}"
    black = rep[rep["grp"] == "Black"]
    assert (black["status"] == "failed").sum() == 1
