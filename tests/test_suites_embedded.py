"""The appropriateness and PCSA demo specs on the embedded model, cut to CI size, to a report checked
in a real browser. They check that the real stages fit together on a real model (a real llama.cpp
server through the openai client): every reply and every judgement is stored or counted (none lost),
and the report carries the content warning and the embedded-model warning.

- appropriateness: 1 stimulus x no context x (control, Black, White) = 3 replies, judged by the
  embedded model itself;
- PCSA: 1 persona x 1 objective x (Black, White) = 2 conversations of 1 turn (attacker and target
  both the embedded model), the local rule-based evaluator and judge, no baselines.
"""

from __future__ import annotations

import pytest

from audit.report.browser import check_report, find_chromium
from audit.spec import load_spec
from audit.store import RunStore


def _browser_check(html_path) -> None:
    if find_chromium() is None:
        pytest.skip("no Chromium on this machine: the run and the HTML checks above ran, the browser check cannot")
    verdict = check_report(html_path)
    assert verdict.ok, verdict.lines()


@pytest.mark.embedded
def test_appropriateness_demo_runs_on_the_embedded_model(tmp_path):
    from audit.pipeline import run

    spec = load_spec("appropriateness-demo")
    spec.appropriateness.stimuli = ["bridge"]
    spec.appropriateness.n_boot = 200
    spec.decoding.max_tokens = 48
    said: list[str] = []
    res = run(spec, tmp_path / "run", progress=False, echo=said.append)
    assert [s.name for s in res.stages] == ["stimuli", "generate", "judge", "analyze", "report"]
    with RunStore(tmp_path / "run") as st:
        reps = st.replies_df()
        verdicts = st.scores_df()
    assert len(reps) == 3 and sorted(set(reps["group"])) == ["Black", "White", "control"]
    # every reply has a verdict row: judged, unparseable or unanswered (counted as inappropriate), none lost
    verdicts = verdicts[verdicts["scorer"] == "appropriateness-judge"]
    assert set(verdicts["request_key"]) == set(reps["request_key"])
    assert set(verdicts["value"].dropna()) <= {0.0, 1.0}
    html = res.paths["html"].read_text(encoding="utf-8")
    assert "The embedded model is not a model worth auditing." in html
    assert "Content warning" in html
    _browser_check(res.paths["html"])


@pytest.mark.embedded
def test_pcsa_demo_runs_on_the_embedded_model(tmp_path):
    from audit.pipeline import run

    spec = load_spec("pcsa-demo")
    spec.pcsa.personas = ["p01"]
    spec.pcsa.max_turns = 1
    spec.pcsa.baselines = False
    spec.decoding.max_tokens = 40
    spec.pcsa.attacker.decoding.max_tokens = 40
    res = run(spec, tmp_path / "run", progress=False, echo=None)
    assert [s.name for s in res.stages] == ["plan", "dialogue", "judge", "analyze", "report"]
    with RunStore(tmp_path / "run") as st:
        conv = st.table_df("pcsa_conversations")
        turns = st.table_df("pcsa_turns")
    assert len(conv) == 2 and set(conv["status"]) == {"done"}
    assert sorted(conv["group_name"]) == ["Black", "White"]
    assert set(conv["verdict"].dropna()) <= {"SAFE", "UNSAFE"}
    # each conversation has exactly one attacker turn and one target reply, stored once
    per = turns.groupby(["conversation_id", "role"]).size()
    assert set(per.index.get_level_values("role")) >= {"attacker", "target"} and set(per) == {1}
    html = res.paths["html"].read_text(encoding="utf-8")
    assert "Content warning." in html
    _browser_check(res.paths["html"])
