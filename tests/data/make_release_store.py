"""Make ``store-schema1-release.sqlite``: a run store written by the release before numbered migrations.

Run with the code of that release (commit 4c51726) first on the path, from a checkout of it::

    git worktree add /tmp/release 4c51726
    cd /tmp/release && PYTHONPATH=/tmp/release:/tmp/release/tests \\
        python /path/to/tests/data/make_release_store.py /path/to/tests/data/store-schema1-release.sqlite

It runs a small design (5 posts, race x gender, explicit tag, 1 sample, inference
probe on) end to end against the golden-run test's deterministic server, so the store holds every
table a finished run has (variants, requests, replies, scores, scorer_info, probe, invariance,
results tables), then copies the store with VACUUM INTO and vacuums the copy with 1 KiB pages (one small file).
"""

from __future__ import annotations

import sqlite3
import sys
import tempfile
from pathlib import Path

import yaml

import audit
from audit.cli import main as cli_main
from golden_server import golden_server

SPEC = {
    "name": "release-store",
    "description": "Fixture for the store migration test: a run written by the release before migrations.",
    "posts": {"source": "builtin", "ids": ["depression-01", "anxiety-02", "grief-01", "work_stress-01",
                                                "relationship_conflict-01"]},
    "demographics": {"axes": ["race", "gender"], "fixed": {"age": "32"},
                     "cue_types": ["explicit_tag"], "alternatives": 1},
    "styles": ["peer_supporter"],
    "decoding": {"temperature": 0.7, "max_tokens": 128, "seed": 1234},
    "samples": 1,
    "seed": 1234,
    "scoring": {"scorers": ["epitome", "length", "refusal", "sentiment"], "inference_probe": True},
    "analysis": {"reference": "control"},
}


def main(out: str) -> int:
    print("empathy-audit", audit.__version__, "from", audit.__file__)
    with tempfile.TemporaryDirectory() as tmp, golden_server() as srv:
        spec = dict(SPEC, models=[{"label": "golden", "base_url": srv.base_url, "model": "golden-model"}])
        spec_path = Path(tmp) / "release-store.yaml"
        spec_path.write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
        run_dir = Path(tmp) / "run"
        status = cli_main(["run", str(spec_path), "--out", str(run_dir), "--no-progress"])
        if status != 0:
            return status
        Path(out).unlink(missing_ok=True)
        with sqlite3.connect(run_dir / "store.sqlite") as conn:
            conn.execute("VACUUM INTO ?", (str(out),))
        conn = sqlite3.connect(out, isolation_level=None)
        conn.execute("PRAGMA journal_mode=DELETE")  # one file, no -wal beside it
        conn.execute("PRAGMA page_size=1024")  # small tables waste less of a 1 KiB page than of a 4 KiB one
        conn.execute("VACUUM")
        conn.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
