"""One small end-to-end audit on the embedded model (SmolLM2-135M-Instruct on llama.cpp).

Tiny on purpose: 5 posts (the mixed model needs 5 clusters) x (control + 2 groups) x 1 explicit cue x
1 sample, 48 tokens a reply. Checks that the real stages fit together, that the report states the
embedded-model warning and the model's identity, and that a second run sends nothing.
"""

from __future__ import annotations

import json

import pytest

from audit.spec import spec_from_dict
from audit.store import RunStore


@pytest.mark.embedded
def test_tiny_audit_on_the_embedded_model(tmp_path):
    from audit.pipeline import run

    run_dir = tmp_path / "run"
    spec = spec_from_dict({
        "name": "tiny-embedded",
        "posts": {"source": "builtin", "limit": 5},
        "demographics": {"axes": ["race"], "groups": {"race": ["Black", "White"]}, "cue_types": ["explicit_tag"],
                         "alternatives": 1},
        "decoding": {"temperature": 0.7, "max_tokens": 48, "seed": 3},
        "samples": 1,
        "scoring": {"inference_probe": False},
    })
    said: list[str] = []
    first = run(spec, run_dir, progress=False, echo=said.append)
    assert said[-3] == f"report: {first.paths['html']}" and said[-2].startswith("headline: ")
    assert said[-1].startswith("warning: ") and "not worth auditing" in said[-1]
    assert [s.name for s in first.stages] == ["variants", "generate", "score", "analyze", "report"]
    assert first.ok, [(s.name, s.status, s.detail) for s in first.stages]
    with RunStore(run_dir) as st:
        reps = st.replies_df()
        assert len(reps) == 15 and (reps["status"] == "ok").sum() >= 13
        assert reps["endpoint_id"].str.startswith("embedded").all()
        n_results = st.conn.execute("SELECT COUNT(*) FROM results").fetchone()[0]
    data = json.loads((run_dir / "results.json").read_text(encoding="utf-8"))
    assert len(data["results"]) == n_results > 0
    assert data["limitations"]["embedded_model"] and "not a model worth auditing" in data["limitations"]["embedded_model"]
    html = (run_dir / "report.html").read_text(encoding="utf-8")
    assert "SmolLM2-135M-Instruct" in html and "not a model worth auditing" in html

    second = run(spec, run_dir, progress=False, echo=None)
    assert [s.status for s in second.stages[:4]] == ["skipped", "skipped", "skipped", "skipped"]
