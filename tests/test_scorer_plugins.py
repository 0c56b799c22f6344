"""Third-party scorers: a package installed beside empathy-audit registers a scorer through the
entry-point group ``empathy_audit.scorers``; it shows in ``scorers list``, scores a run, and the report
labels its measures as the package declares them. A broken plugin gives one clear error naming its
distribution and breaks nothing else.

The packages are laid out in a temporary directory as an installer lays out an installed
distribution (module + ``NAME-VERSION.dist-info/`` with METADATA and entry_points.txt), and the CLI
runs in a subprocess with that directory on PYTHONPATH.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from importlib.metadata import EntryPoint
from pathlib import Path

import pytest
import yaml

from audit.errors import AuditError
from audit.scorers.plugins import load_plugin
from audit.store import RunStore
from golden_server import golden_server

ROOT = Path(__file__).resolve().parents[1]

WARMTH = '''
"""Warm words per reply (a test plugin)."""
import pandas as pd
from audit.scorers.measures import Measure


class WarmthScorer:
    """warm words and questions in the reply (test lexicon)"""

    name = "warmth"
    declared_measures = (
        Measure("warm_words", "warm words (test lexicon)", kind="continuous", range=(0, 50), higher_is="warmer",
                decimals=0),
        Measure("asks", "share of replies asking the poster a question", kind="binary", higher_is="more curious"),
    )
    reads_post = False

    def __init__(self, spec=None):
        self.spec = spec

    def info(self):
        return {"name": self.name, "version": "0.1"}

    def score(self, posts, replies):
        words = ("sorry", "feel", "painful", "sad", "hard")
        return pd.DataFrame({
            "warm_words": [float(sum(r.lower().count(w) for w in words)) for r in replies],
            "asks": [1.0 if "?" in r else 0.0 for r in replies],
        })
'''

BROKEN = '''
raise ImportError("this scorer needs the package 'nonexistent-lib'")
'''


def _install(site: Path, project: str, version: str, module: str, source: str, entry: str) -> None:
    """Lay out an installed distribution: the module and its .dist-info (as pip would)."""
    (site / f"{module}.py").write_text(textwrap.dedent(source), encoding="utf-8")
    info = site / f"{project.replace('-', '_')}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {project}\nVersion: {version}\n", encoding="utf-8")
    (info / "entry_points.txt").write_text(f"[empathy_audit.scorers]\n{entry}\n", encoding="utf-8")
    (info / "RECORD").write_text("", encoding="utf-8")


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    site = tmp_path_factory.mktemp("site-packages")
    _install(site, "warmth-scorer", "0.1", "warmth_scorer", WARMTH, "warmth = warmth_scorer:WarmthScorer")
    _install(site, "broken-scorer", "0.2", "broken_scorer", BROKEN, "broken = broken_scorer:Scorer")
    return site


def _cli(site: Path, *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(ROOT)])}
    return subprocess.run([sys.executable, "-m", "audit", *args], capture_output=True, text=True, env=env,
                          timeout=timeout, cwd=str(site))


def test_scorers_list_shows_the_plugin_with_its_declared_measures_and_names_the_broken_one(site):
    p = _cli(site, "scorers", "list")
    assert "warmth" in p.stdout and "warm_words, asks" in p.stdout
    assert "[plugin: warmth-scorer 0.1]" in p.stdout
    assert "warm words (test lexicon) (continuous, 0..50; higher is warmer" in p.stdout
    assert "asks: share of replies asking the poster a question (binary" in p.stdout
    assert "epitome" in p.stdout and "refusal rate" in p.stdout  # the built-ins are still listed
    # the broken plugin: one line naming its distribution and the cause, no traceback
    assert p.returncode == 1
    assert "broken-scorer 0.2" in p.stderr and "nonexistent-lib" in p.stderr
    assert "Traceback" not in p.stderr
    rows = {r["name"]: r for r in json.loads(_cli(site, "scorers", "list", "--json").stdout)}
    assert rows["warmth"]["source"] == "warmth-scorer 0.1"
    assert [m["label"] for m in rows["warmth"]["declared"]] == [
        "warm words (test lexicon)", "share of replies asking the poster a question"]
    assert "broken-scorer 0.2" in rows["broken"]["error"]


def test_a_run_scored_by_the_plugin_is_labelled_with_its_declared_labels(site, tmp_path):
    spec = yaml.safe_load((ROOT / "analyses" / "demo.yaml").read_text(encoding="utf-8"))
    spec["name"] = "plugin"
    spec["samples"] = 1
    spec["demographics"]["cue_types"] = ["explicit_tag"]
    spec["scoring"] = {"scorers": ["warmth", "length"], "inference_probe": False}
    with golden_server() as srv:
        spec["models"] = [{"label": "golden", "base_url": srv.base_url, "model": "golden-model", "max_in_flight": 4}]
        spec_path = tmp_path / "plugin.yaml"
        spec_path.write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
        p = _cli(site, "run", str(spec_path), "--out", str(tmp_path / "run"), "--no-progress")
    assert p.returncode == 0, p.stderr[-3000:]
    with RunStore(tmp_path / "run", create=False) as store:
        info = store.scorer_info()["warmth"]
        stored = store.scores_df(wide=False)
    # the declaration and the distribution are stored with the scorer's info
    assert info["distribution"] == "warmth-scorer 0.1"
    assert [m["name"] for m in info["measures"]] == ["warm_words", "asks"]
    assert set(stored[stored["scorer"] == "warmth"]["measure"]) == {"warm_words", "asks"}
    res = json.loads((tmp_path / "run" / "results.json").read_text(encoding="utf-8"))
    assert {"warmth.warm_words", "warmth.asks"} <= {r["outcome"] for r in res["results"]}
    md = (tmp_path / "run" / "report.md").read_text(encoding="utf-8")
    html = (tmp_path / "run" / "report.html").read_text(encoding="utf-8")
    for text in (md, html):
        assert "warm words (test lexicon)" in text
        assert "share of replies asking the poster a question" in text
    # the binary measure's gaps are stated in percentage points, the continuous one's relative to control
    sentences = " ".join(res["summary"]["not_significant"] + res["summary"]["significant"])
    asks = [s for s in res["summary"]["not_significant"] if s.startswith("share of replies asking")]
    assert asks and "percentage points" in asks[0], sentences
    # the broken plugin beside it is only an error when it is asked for
    p = _cli(site, "score", str(tmp_path / "run"), "--scorers", "broken")
    assert p.returncode == 2 and "broken-scorer 0.2" in p.stderr and "Traceback" not in p.stderr


def test_a_plugin_must_declare_its_measures_and_use_its_entry_point_name(tmp_path, monkeypatch):
    (tmp_path / "bare_scorer.py").write_text(textwrap.dedent('''
        class Bare:
            name = "bare"
            measures = ("x",)
            def info(self): return {}
            def score(self, posts, replies): return None

        class Misnamed(Bare):
            name = "other"
        '''), encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(AuditError, match="does not declare its measures") as e:
        load_plugin([EntryPoint("bare", "bare_scorer:Bare", "empathy_audit.scorers")])
    assert "Measure(" in e.value.message
    with pytest.raises(AuditError, match="builds a scorer named 'other'"):
        load_plugin([EntryPoint("bare", "bare_scorer:Misnamed", "empathy_audit.scorers")])
    with pytest.raises(AuditError, match="cannot be imported: ModuleNotFoundError"):
        load_plugin([EntryPoint("gone", "gone_scorer:X", "empathy_audit.scorers")])
