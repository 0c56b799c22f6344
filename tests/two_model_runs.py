"""Two deterministic "models" for the comparison tests: the golden server's replies (with its planted
gap: posts with a 'Black' cue get the emotional sentence less often) and a second version of it that
has no gap. Test doubles (StubServer with a reply function), not models."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from audit.cli import main as cli_main
from audit.testing import StubServer
from golden_server import golden_reply

ROOT = Path(__file__).resolve().parents[1]


def fixed_reply(req: dict[str, Any], text: str) -> str:
    """Version 2: the same replies, except that the post's demographic cue no longer matters."""
    return golden_reply(req, text.replace("Black", "White").replace("black", "white"))


def run_demo(out: Path, models: list[tuple[str, StubServer]], name: str = "demo") -> int:
    """The small demo design (analyses/demo.yaml) against the given servers, one model per (label, server)."""
    spec = yaml.safe_load((ROOT / "analyses" / "demo.yaml").read_text(encoding="utf-8"))
    spec["name"] = name
    spec["models"] = [{"label": lab, "base_url": srv.base_url, "model": "golden-model", "max_in_flight": 4}
                      for lab, srv in models]
    path = out.parent / f"{out.name}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
    return cli_main(["run", str(path), "--out", str(out), "--no-progress"])
