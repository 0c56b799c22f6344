"""The stigma-demo spec on the embedded model, cut to CI size: 4 vignettes (White and African American
woman, schizophrenia and the daily-troubles control, college) x 2 counted questions = 8 one-letter
answers. Checks that the real stages fit together on a real model, that every answer is parsed or
counted as unparseable (none lost), and that the report carries the embedded-model warning and
passes the browser check."""

from __future__ import annotations

import json

import pytest

from audit.spec import load_spec
from audit.store import RunStore


@pytest.mark.embedded
def test_stigma_demo_runs_on_the_embedded_model(tmp_path):
    from audit.pipeline import run

    spec = load_spec("stigma-demo")
    spec.stigma.conditions = ["daily troubles", "schizophrenia"]
    spec.stigma.questions = ["work_closely", "violent_others"]
    spec.stigma.groups = {"race": ["White", "African American"], "gender": ["woman"], "education": ["college"]}
    spec.stigma.n_boot = 200
    said: list[str] = []
    res = run(spec, tmp_path / "run", progress=False, echo=said.append)
    assert [s.name for s in res.stages] == ["stimuli", "generate", "parse", "analyze", "report"]
    assert res.unanswered == 0
    assert said[-1].startswith("warning: ") and "not worth auditing" in said[-1]
    with RunStore(tmp_path / "run") as st:
        reps = st.replies_df()
        parse = st.table_df("stigma_parse")
        msgs = json.loads(reps["messages_json"].iloc[0])
    assert len(reps) == 8 and int(parse["n"].sum()) == 8
    assert msgs[1:3] == [{"role": "user", "content": "Is this a question?\n- (A) Yes\n - (B) No"},
                         {"role": "assistant", "content": "A"}]
    html = (tmp_path / "run" / "report.html").read_text(encoding="utf-8")
    assert "The embedded model is not a model worth auditing." in html
    assert "stated attitudes in a survey format, not behaviour in conversation" in html
    from audit.report.browser import check_report, find_chromium

    if find_chromium() is None:
        pytest.skip("no Chromium on this machine: the run and the HTML checks above ran, the browser check cannot")
    verdict = check_report(tmp_path / "run" / "report.html")
    assert verdict.ok, verdict.lines()
