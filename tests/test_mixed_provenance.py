"""Provenance from the current design's sources (issue 28, H6): `run SPEC --reuse` into an imported run
directory used to report "the replies were imported" with the import command to reproduce them, while
the analysis covered generated replies."""

from __future__ import annotations

import hashlib
import json

import yaml

from audit.cli import main
from audit.testing import StubServer
from test_import import per_group_tsv_release


def test_a_generated_design_in_an_imported_run_directory_says_where_its_replies_came_from(tmp_path, capsys):
    spec_path = per_group_tsv_release(tmp_path / "release")
    run = tmp_path / "run"
    assert main(["import", "--spec", str(spec_path), "--out", str(run)]) == 0
    def reply(req, text):
        h = int(hashlib.sha256(text.encode()).hexdigest(), 16)
        return "I hear you; that sounds hard." + " Take care." * (h % 7 + 2 * ("Black" in text))

    with StubServer(reply=reply) as srv:
        spec = {"name": "tsv-release", "posts": {"limit": 8},
                "demographics": {"axes": ["race"], "groups": {"race": ["Black", "White"]},
                                 "cue_types": ["explicit_tag"], "alternatives": 1},
                "models": [{"label": "fake", "base_url": srv.base_url, "model": "stub-model", "max_retries": 0}],
                "scoring": {"scorers": ["length"], "inference_probe": False}}
        sp = tmp_path / "gen.yaml"
        sp.write_text(yaml.safe_dump(spec), encoding="utf-8")
        rc = main(["run", str(sp), "--out", str(run), "--reuse", "--no-progress"])
    out = capsys.readouterr().out
    assert rc == 0, out[-1500:]
    prov = json.loads((run / "results.json").read_text(encoding="utf-8"))["provenance"]
    html = (run / "report.html").read_text(encoding="utf-8")
    assert "imported" not in prov  # the analysed replies (15) were all generated
    assert prov["reproduce"].startswith("empathy-audit run ") and "empathy-audit import" not in prov["reproduce"]
    assert "The replies were imported" not in html


def test_reply_origins_count_the_current_designs_imported_and_generated_replies():
    import pandas as pd

    from audit.report.build import reply_origins

    replies = pd.DataFrame({"status": ["ok", "failed", "ok", None], "runtime": ["import", "import", "vllm", None]})
    assert reply_origins(replies) == (2, 1)  # the unanswered request is neither


def test_a_design_with_imported_and_generated_replies_says_both(tmp_path, capsys):
    from audit.store import RunStore

    spec_path = per_group_tsv_release(tmp_path / "release")
    run = tmp_path / "run"
    assert main(["import", "--spec", str(spec_path), "--out", str(run)]) == 0
    with RunStore(run, create=False) as st:  # as if 10 of the design's replies had been generated here
        st.conn.execute("UPDATE replies SET runtime = 'vllm' WHERE request_key IN "
                        "(SELECT request_key FROM replies ORDER BY request_key LIMIT 10)")
    assert main(["score", str(run), "--scorers", "length"]) == 0
    main(["analyze", str(run)])
    assert main(["report", str(run)]) == 0
    capsys.readouterr()
    prov = json.loads((run / "results.json").read_text(encoding="utf-8"))["provenance"]
    assert prov["imported"]["mixed"] == {"imported": 32, "generated": 10}
    assert "empathy-audit import" in prov["reproduce"] and "--reuse" in prov["reproduce"]
    html = (run / "report.html").read_text(encoding="utf-8")
    assert "Mixed sources: 32 of the analysed replies were imported and 10 were generated" in html
