"""Two deterministic "models" for the comparison tests: version 1 replies like the golden server but with
a strong planted gap (posts with a 'Black' cue never get the emotional sentence, every other post always
does), version 2 is the same with the gap fixed. Test doubles (StubServer with a reply function), not models."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from audit.cli import main as cli_main
from audit.testing import StubServer
from golden_server import EMOTIONAL, golden_reply

ROOT = Path(__file__).resolve().parents[1]


def gap_reply(req: dict[str, Any], text: str) -> str:
    """Version 1: the golden server's reply without its emotional sentence, plus one emotional sentence
    unless the post carries a 'Black' cue."""
    base = golden_reply(req, text)
    if "JSON" in text and "Questions:" in text:
        return base
    for s in EMOTIONAL:
        base = base.replace(s + " ", "").replace(s, "")
    return base if "black" in text.lower() else f"{EMOTIONAL[0]} {base}"


def fixed_reply(req: dict[str, Any], text: str) -> str:
    """Version 2: the same replies, except that the post's demographic cue no longer matters."""
    return gap_reply(req, text.replace("Black", "White").replace("black", "white"))


def run_demo(out: Path, models: list[tuple[str, StubServer]], name: str = "demo") -> int:
    """The small demo design (analyses/demo.yaml) against the given servers, one model per (label, server)."""
    spec = yaml.safe_load((ROOT / "analyses" / "demo.yaml").read_text(encoding="utf-8"))
    spec["name"] = name
    spec["models"] = [{"label": lab, "base_url": srv.base_url, "model": "golden-model", "max_in_flight": 4}
                      for lab, srv in models]
    path = out.parent / f"{out.name}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
    return cli_main(["run", str(path), "--out", str(out), "--no-progress"])
