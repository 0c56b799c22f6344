"""Checks before the first paid request (issue 28, item 9): a scorer's missing extra is refused before
any request (it used to surface after 15 paid requests), and an llm-judge that would run on the
embedded 135M model is warned about before the first request."""

from __future__ import annotations

import sys
from pathlib import Path

import yaml

from audit.cli import main
from audit.testing import StubServer


def _spec(tmp: Path, base_url: str, scorers: list[str], **scoring) -> Path:
    spec = {"name": "pre", "posts": {"limit": 3},
            "demographics": {"axes": ["race"], "groups": {"race": ["Black", "White"]}, "cue_types": ["explicit_tag"],
                             "alternatives": 1},
            "models": [{"label": "paid", "base_url": base_url, "model": "stub-model", "max_retries": 0}],
            "decoding": {"max_tokens": 32, "seed": 1},
            "scoring": {"scorers": scorers, "inference_probe": False, **scoring}}
    path = tmp / "spec.yaml"
    path.write_text(yaml.safe_dump(spec), encoding="utf-8")
    return path


def test_a_missing_scorer_extra_is_refused_before_any_request(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # as if the `plus` extra were not installed
    with StubServer() as srv:
        for cmd in (["run"], ["generate"]):
            rc = main([*cmd, str(_spec(tmp_path, srv.base_url, ["length", "epitome-plus"])),
                       "--out", str(tmp_path / cmd[0]), "--no-progress"])
            err = capsys.readouterr().err
            assert rc == 2 and err.count("\n") == 1 and "empathy-audit[plus]" in err
        assert srv.count == 0
    assert not (tmp_path / "run" / "store.sqlite").exists()


def test_an_llm_judge_on_the_embedded_model_is_warned_about_before_the_first_request(tmp_path, capsys):
    seen_before_first_request: list[bool] = []

    def reply(req, text):
        if not seen_before_first_request:
            seen_before_first_request.append("embedded 135M model" in capsys.readouterr().out)
        return "I hear you."

    with StubServer(reply=reply) as srv:
        assert main(["generate", str(_spec(tmp_path, srv.base_url, ["length", "llm-judge"])),
                     "--out", str(tmp_path / "g"), "--no-progress"]) == 0
    assert seen_before_first_request == [True]


def test_score_with_an_llm_judge_on_the_embedded_model_warns_before_scoring(tmp_path, capsys, monkeypatch):
    import audit.scoring
    from audit.errors import AuditError
    from synthetic_store import fill_store

    run = tmp_path / "run"
    fill_store(run)

    def not_now(*a, **k):  # stands for the first judge request
        raise AuditError("the first judge request would be sent now")

    monkeypatch.setattr(audit.scoring, "score_run", not_now)
    assert main(["score", str(run), "--scorers", "llm-judge"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert "embedded 135M model" in err[0] and "first judge request" in err[1]
