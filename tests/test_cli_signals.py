"""Stopping a command with Ctrl-C or SIGTERM: a clear message, 128 + signal as exit status, nothing lost."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import time

import pytest

from audit.backends.stub import StubServer
from audit.generate import generate
from audit.spec import load_spec


def _stored(db) -> int:
    try:
        c = sqlite3.connect(db, timeout=5)
        try:
            return c.execute("SELECT COUNT(*) FROM replies").fetchone()[0]
        finally:
            c.close()
    except sqlite3.Error:
        return 0


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_stopped_generate_exits_128_plus_signal_and_resumes_without_resending(tmp_path, sig):
    run_dir = tmp_path / "run"
    spec_path = tmp_path / "spec.yaml"
    with StubServer(latency_s=0.05) as srv:
        spec_path.write_text(
            "name: signal-test\nposts: {source: builtin, limit: 4}\n"
            "demographics: {axes: [race], cue_types: [explicit_tag], alternatives: 1}\n"
            f"models: [{{label: stub, base_url: '{srv.base_url}', model: stub-model, max_in_flight: 2}}]\n"
            "decoding: {max_tokens: 8, seed: 1}\nsamples: 3\n")
        proc = subprocess.Popen([sys.executable, "-m", "audit.cli", "generate", str(spec_path), "--out", str(run_dir),
                                 "--no-progress"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            deadline = time.monotonic() + 120
            while _stored(run_dir / "store.sqlite") < 6 and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.02)
            assert proc.poll() is None, "the run finished before it could be stopped"
            proc.send_signal(sig)
            _, err = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
        assert proc.returncode == 128 + int(sig), err
        assert f"stopped by {sig.name}" in err and "Traceback" not in err
        stored = _stored(run_dir / "store.sqlite")
        sent_before = srv.count
        s = generate(load_spec(spec_path), run_dir, progress=False)
    assert 6 <= stored < s.total
    assert s.cached == stored and s.sent == s.total - stored == srv.count - sent_before
