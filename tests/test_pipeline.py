"""The whole pipeline against a local OpenAI-compatible test server (127.0.0.1, in this process).

The server answers like a chat model whose replies are shorter for posts that mention "Black" and
carry markup, and it rejects some requests during the first run: the first run ends half-finished
(failed requests stored), the second sends exactly the missing ones, the third sends nothing and
refits nothing. The report, re-rendered from the store alone by the CLI, agrees with the store.
"""

from __future__ import annotations

import hashlib
import re
import json
from pathlib import Path

import pytest

from audit.cli import main as cli_main
from audit.spec import spec_from_dict
from audit.store import RunStore
from audit.testing import StubServer


def _bits(req: dict, text: str) -> int:
    return int(hashlib.sha256((text + str(req.get("seed"))).encode()).hexdigest(), 16)


def _reply(req: dict, text: str) -> str:
    """Shorter replies to posts that mention "Black"; markup in a third of them."""
    h = _bits(req, text)
    words = (8 if "Black" in text else 16) + h % 5
    reply = " ".join(["I hear you and it sounds really hard."] * (words // 8 + 1))
    return reply + " <script>alert(1)</script>" if h % 3 == 0 else reply


class FakeChat(StubServer):
    """The public fake server, answering with :func:`_reply` and rejecting (HTTP 400) a quarter of the
    requests, chosen by a hash of the prompt, while ``reject_some`` is set."""

    def __init__(self):
        self.reject_some = True
        super().__init__(model="fake-model", reply=_reply,
                         fault=lambda req, text: "400" if self.reject_some and _bits(req, text) % 4 == 0 else "ok")

    @property
    def served(self) -> int:
        return sum(1 for *_, fault in self.log if fault == "ok")

    @property
    def rejected(self) -> int:
        return sum(1 for *_, fault in self.log if fault == "400")


@pytest.fixture
def fake_chat():
    with FakeChat() as srv:
        yield srv


def _spec(base_url: str, run_dir: Path, n_posts: int = 5):
    spec = spec_from_dict({
        "name": "pipeline-test",
        "posts": {"source": "builtin", "limit": n_posts},
        "demographics": {"axes": ["race"], "groups": {"race": ["Black", "White"]}, "cue_types": ["explicit_tag"],
                         "alternatives": 1},
        "models": [{"label": "fake", "base_url": base_url, "model": "fake-model", "max_retries": 0,
                    "max_in_flight": 2, "timeout_s": 20}],
        "decoding": {"temperature": 0.7, "max_tokens": 32, "seed": 7},
        "samples": 2,
        "scoring": {"scorers": ["length", "refusal", "sentiment"], "inference_probe": False},
        "output": str(run_dir),
    })
    return spec


# issue 25 W: the analysis of a half-answered run hit fastlmm's inf barrier inside scipy's Brent step,
# and numpy's "invalid value encountered in scalar subtract" reached the console
@pytest.mark.filterwarnings("error::RuntimeWarning")
def test_run_resumes_a_half_finished_audit(fake_chat, tmp_path, capsys):
    from audit.pipeline import run

    run_dir = tmp_path / "run"
    spec = _spec(fake_chat.base_url, run_dir)
    first = run(spec, run_dir, progress=False)
    n_requests = 5 * 3 * 2  # posts x (control + 2 groups) x samples
    assert fake_chat.rejected > 0 and fake_chat.served + fake_chat.rejected == n_requests
    with RunStore(run_dir) as st:
        failed = st.conn.execute("SELECT COUNT(*) FROM replies WHERE status='failed'").fetchone()[0]
    assert failed == fake_chat.rejected
    assert first.paths["html"].exists()
    assert not first.ok and first.unanswered == failed
    html = first.paths["html"].read_text(encoding="utf-8")
    assert f"{failed} failed after retries" in html
    out = capsys.readouterr().out
    assert "variants" in out and "generate" in out and "report" in out and f"{failed} requests failed" in out
    closing = out.strip().splitlines()[-2:]   # where the report is and the headline; no embedded warning
    assert closing[0] == f"report: {first.paths['html']}" and closing[1].startswith("headline: ")
    assert "tests significant after Holm" in closing[1] or "tests is significant after Holm" in closing[1]
    assert "warning:" not in out

    # Second run: the server now answers everything; only the failed requests are sent again.
    fake_chat.reject_some = False
    served_before = fake_chat.served
    second = run(spec, run_dir, progress=False)
    assert fake_chat.served - served_before == failed
    assert second.stage("analyze").status == "done" and second.ok
    with RunStore(run_dir) as st:
        statuses = dict(st.conn.execute("SELECT status, COUNT(*) FROM replies GROUP BY status").fetchall())
        n_results = st.conn.execute("SELECT COUNT(*) FROM results").fetchone()[0]
    assert statuses == {"ok": n_requests}

    # Third run: nothing to send, nothing to score, nothing to refit; the report is rendered again.
    served_before = fake_chat.served
    third = run(spec, run_dir, progress=False)
    assert fake_chat.served == served_before
    assert [s.status for s in third.stages] == ["skipped", "skipped", "skipped", "skipped", "done"]

    data = json.loads((run_dir / "results.json").read_text(encoding="utf-8"))
    assert len(data["results"]) == n_results > 0
    words = [r for r in data["results"] if r["outcome"] == "length.words" and r["group"] == "Black"
             and r["cue_type"] == "pooled"]
    assert words and words[0]["estimate"] < 0, "replies to Black-cued posts are shorter on this server"
    assert data["provenance"]["templates_sha256"] and data["provenance"]["corpus_sha256"]
    assert data["limitations"]["embedded_model"] is None
    html = (run_dir / "report.html").read_text(encoding="utf-8")
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html and "<script" not in html


def test_report_command_rerenders_from_the_store_alone(tmp_path, capsys):
    from synthetic_store import fill_store

    run_dir = fill_store(tmp_path / "run")
    (run_dir / "report.html").write_text("stale", encoding="utf-8")
    assert cli_main(["report", str(run_dir)]) == 0
    html = (run_dir / "report.html").read_text(encoding="utf-8")
    assert html.startswith("<!DOCTYPE html>") and "Empathy audit: synthetic" in html
    assert "report.html" in capsys.readouterr().out


def test_report_command_without_a_store_is_one_line_error(tmp_path, capsys):
    assert cli_main(["report", str(tmp_path / "nothing")]) == 2
    err = capsys.readouterr().err
    assert "no run store found" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_run_command_with_a_bad_spec_is_one_line_error(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nsampels: 3\n", encoding="utf-8")
    assert cli_main(["run", str(bad), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "sampels" in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()


def test_analysis_error_is_stated_and_exit_status_is_1(fake_chat, tmp_path, capsys):
    """Four posts are too few clusters for a random-intercept model: every gap test is refused, so the
    analysis fails for a real reason; the report is still written and says why."""
    fake_chat.reject_some = False
    run_dir = tmp_path / "run"
    spec_path = tmp_path / "spec.yaml"
    import yaml

    spec_path.write_text(yaml.safe_dump(_spec(fake_chat.base_url, run_dir, n_posts=4).model_dump(mode="json",
                                                                                             exclude_none=True)),
                         encoding="utf-8")
    assert cli_main(["run", str(spec_path), "--no-progress"]) == 1
    out = capsys.readouterr().out
    assert re.search(r"analyze\s+FAILED", out)
    data = json.loads((run_dir / "results.json").read_text(encoding="utf-8"))
    assert data["results"] == [] and data["analysis_error"].startswith("no gap test could be fitted")
    assert "only 4 cluster(s) in 'post_id'; a random-intercept model needs at least 5" in data["analysis_error"]
    html = (run_dir / "report.html").read_text(encoding="utf-8")
    assert "the analysis could not be fitted (no gap test could be fitted" in html
    assert "only 4 cluster(s) in &#39;post_id&#39;" in html
    assert data["provenance"]["reproduce"] == f"empathy-audit run {spec_path} --out {run_dir}"
