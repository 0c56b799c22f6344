"""A run directory is one audit (issue 12): no silent mixing of designs, no secret or hostile byte
stored, end to end through `empathy-audit run` against a local OpenAI-compatible server."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pandas as pd
import yaml

from audit.testing import StubServer
from audit.cli import main as cli_main

IDS = ["depression-01", "anxiety-02", "grief-01", "work_stress-01", "relationship_conflict-01"]


def _spec(tmp_path: Path, url: str, name: str = "design", **over) -> Path:
    spec = {
        "name": name,
        "posts": {"ids": IDS},
        "demographics": {"axes": ["race"], "cue_types": ["explicit_tag"], "alternatives": 1},
        "models": [{"label": "stub", "base_url": url, "model": "stub-model", "max_in_flight": 4}],
        "decoding": {"temperature": 0.7, "max_tokens": 32, "seed": 5},
        "samples": 1,
        "scoring": {"scorers": ["length"], "inference_probe": False},
    }
    for key, value in over.items():
        section, _, field = key.partition("__")
        if field:
            spec[section] = {**spec[section], field: value}
        else:
            spec[section] = value
    path = tmp_path / f"{name}-{abs(hash(json.dumps(over, sort_keys=True)))}.yaml"
    path.write_text(yaml.safe_dump(spec), encoding="utf-8")
    return path


def _run(spec: Path, out: Path, *extra: str) -> int:
    return cli_main(["run", str(spec), "--out", str(out), "--no-progress", *extra])


def _replies(run: Path) -> pd.DataFrame:
    return pd.read_csv(run / "tables" / "replies.csv")


def test_a_different_spec_into_an_existing_run_is_refused_and_changes_nothing(tmp_path, capsys):
    run = tmp_path / "run"
    with StubServer() as srv:
        assert _run(_spec(tmp_path, srv.base_url), run) == 0
        before = (run / "results.json").read_bytes()
        sent = srv.count
        other = _spec(tmp_path, srv.base_url, name="other", posts={"limit": 6},
                      demographics={"axes": ["gender"], "cue_types": ["explicit_tag"], "alternatives": 1})
        capsys.readouterr()
        assert _run(other, run) == 2
        assert srv.count == sent                      # nothing was sent
    err = capsys.readouterr().err
    assert "another audit design" in err and "posts.ids" in err and "--reuse" in err and "--out" in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert (run / "results.json").read_bytes() == before


def test_narrowed_posts_are_refused_and_with_reuse_the_report_covers_only_the_new_design(tmp_path, capsys):
    run = tmp_path / "run"
    with StubServer() as srv:
        assert _run(_spec(tmp_path, srv.base_url), run) == 0
        assert _replies(run)["post_id"].nunique() == 5
        narrow = _spec(tmp_path, srv.base_url, posts={"ids": IDS[:3]})
        assert _run(narrow, run) == 2
        sent = srv.count
        status = _run(narrow, run, "--reuse")          # 3 posts: too few to fit the model, but reported
        assert srv.count == sent                       # every reply of the new design was stored already
    assert status == 1
    out = capsys.readouterr().out
    assert "reusing the stored replies" in out
    assert sorted(_replies(run)["post_id"].unique()) == sorted(IDS[:3])
    data = json.loads((run / "results.json").read_text(encoding="utf-8"))
    assert data["results"] == [] and "cluster" in data["analysis_error"]


def test_a_changed_temperature_never_mixes_replies_of_two_temperatures(tmp_path):
    run = tmp_path / "run"
    with StubServer() as srv:     # the stub's echo carries the temperature it was sent: "echo[seed|T]: ..."
        assert _run(_spec(tmp_path, srv.base_url), run) == 0
        hotter = _spec(tmp_path, srv.base_url, decoding={"temperature": 0.9, "max_tokens": 32, "seed": 5})
        assert _run(hotter, run) == 2
        assert _run(hotter, run, "--reuse") == 0
    replies = _replies(run)
    assert len(replies) == 5 * 5 and replies["reply"].str.contains(r"\|0\.9\]").all()
    with sqlite3.connect(run / "store.sqlite") as c:      # both temperatures are kept in the store
        assert c.execute("SELECT COUNT(*) FROM replies").fetchone()[0] == 2 * 25
    for extra, n in (([], 25), (["--all-designs"], 50)):  # exports: the current design, or everything
        out = run / f"scores{len(extra)}.csv"
        assert cli_main(["export", str(run), "--table", "scores", "--out", str(out), *extra]) == 0
        assert pd.read_csv(out)["request_key"].nunique() == n
    md = (run / "report.md").read_text(encoding="utf-8")
    assert "0.9" in md


def test_more_samples_extend_the_run_and_say_so(tmp_path, capsys):
    run = tmp_path / "run"
    with StubServer() as srv:
        assert _run(_spec(tmp_path, srv.base_url), run) == 0
        sent = srv.count
        capsys.readouterr()
        assert _run(_spec(tmp_path, srv.base_url, samples=2), run) == 0
        assert srv.count - sent == 25                    # only the new samples
    assert "extending the run: samples 1 -> 2" in capsys.readouterr().out
    assert len(_replies(run)) == 50


def test_a_reference_group_typo_is_caught_before_any_request(tmp_path, capsys):
    run = tmp_path / "run"
    with StubServer() as srv:
        assert _run(_spec(tmp_path, srv.base_url, analysis={"reference": "Blak"}), run) == 2
        assert srv.count == 0
    err = capsys.readouterr().err
    assert "'Blak' is not a group" in err and "Black" in err and "analysis.reference" in err


def test_a_reply_that_echoes_the_api_key_is_redacted_everywhere_and_reported(tmp_path, monkeypatch, capsys):
    key = "sk-live-ECHOED-0123456789abcdef"
    monkeypatch.setenv("ECHO_TEST_KEY", key)
    run = tmp_path / "run"
    with StubServer(reply=lambda req, text: f"Your key is {key}. I hear you" + " truly" * (len(text) % 7)) as srv:
        spec = _spec(tmp_path, srv.base_url, models=[{"label": "stub", "base_url": srv.base_url, "model": "stub-model",
                                                      "api_key_env": "ECHO_TEST_KEY"}])
        assert _run(spec, run) == 0
    for f in run.rglob("*"):
        if f.is_file():
            assert key.encode() not in f.read_bytes(), f"the key is in {f}"
    replies = _replies(run)
    assert replies["reply"].str.contains(r"\[REDACTED:ECHO_TEST_KEY\]").all()
    assert "redacted" in capsys.readouterr().out
    with sqlite3.connect(run / "store.sqlite") as c:
        flags = [json.loads(f) for (f,) in c.execute("SELECT flags FROM replies")]
    assert all(any("ECHO_TEST_KEY" in x for x in f) for f in flags)
    changed = json.loads((run / "results.json").read_text(encoding="utf-8"))["limitations"]["answers_changed"]
    assert changed[0]["kind"] == "redacted" and changed[0]["n"] == 25
    assert "25 × redacted" in (run / "report.md").read_text(encoding="utf-8")
    assert 'id="answers-changed"' in (run / "report.html").read_text(encoding="utf-8")


def test_a_reply_with_a_lone_surrogate_is_stored_with_the_rest_and_never_resent(tmp_path):
    run = tmp_path / "run"

    def reply(req, text):
        more = " really" * (len(text) % 5)
        return f"broken \udc80 reply{more}" if "[White]" in text else f"fine reply{more}"

    with StubServer(reply=reply) as srv:
        spec = _spec(tmp_path, srv.base_url)
        assert _run(spec, run) in (0, 1)     # 1: these made-up replies may leave no gap test estimable
        sent = srv.count
        assert _run(spec, run) in (0, 1)
        assert srv.count == sent
    replies = _replies(run)
    assert len(replies) == 25 and (replies["status"] == "ok").all()
    broken = replies[replies["reply"].str.startswith("broken")]
    assert len(broken) == 5 and broken["reply"].str.contains("\ufffd").all()
