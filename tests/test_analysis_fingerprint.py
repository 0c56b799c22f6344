"""The analysis fingerprint (whether stored results are up to date) sees every score and reply status."""

from audit.spec import spec_from_dict
from audit.stats.stage import analysis_fingerprint
from audit.store import RunStore


def _spec(tmp_path):
    return spec_from_dict({"name": "fp", "output": str(tmp_path / "run"),
                           "models": [{"label": "m", "base_url": "http://127.0.0.1:9/v1", "model": "x"}]})


def test_fingerprint_changes_with_any_score_or_status_and_only_then(tmp_path):
    spec = _spec(tmp_path)
    with RunStore(tmp_path / "run") as st:
        st.put_scores([(f"k{i}", "epitome", m, float(i % 3), None) for i in range(50) for m in ("ER", "IP")])
        st.put_scores([("k50", "epitome", "ER", None, "unparseable")])
        st.conn.executemany("INSERT INTO replies(request_key, status, created_at) VALUES (?, ?, 'now')",
                            [(f"k{i}", "ok") for i in range(51)])
        first = analysis_fingerprint(st, spec)
        assert analysis_fingerprint(st, spec) == first
    with RunStore(tmp_path / "run", create=False) as st:
        assert analysis_fingerprint(st, spec) == first                      # reopened, unchanged
        st.conn.execute("UPDATE scores SET value = 2.0 WHERE request_key = 'k7' AND measure = 'IP'")
        changed = analysis_fingerprint(st, spec)
        assert changed != first                                             # one value
        st.conn.execute("UPDATE scores SET value = 1.0 WHERE request_key = 'k7' AND measure = 'IP'")
        assert analysis_fingerprint(st, spec) == first
        st.conn.execute("UPDATE scores SET value = 0.0 WHERE request_key = 'k50'")
        assert analysis_fingerprint(st, spec) != first                      # NULL -> 0 is a change
        st.conn.execute("UPDATE scores SET value = NULL WHERE request_key = 'k50'")
        st.conn.execute("UPDATE replies SET status = 'failed' WHERE request_key = 'k3'")
        assert analysis_fingerprint(st, spec) != first                      # a reply's status
