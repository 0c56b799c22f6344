"""The demographic inference probe: which cues actually leak the demographic to a model?

For every variant of the run (control included) a model (``scoring.probe_model``; default: the first
audited model at temperature 0) is asked what race, gender and age (and religion: the axes the
variants carry, see ``templates/probe/questions.yaml``) the author of the post probably is. Its answer
must be one JSON object, e.g. ``{"race": "Black", "gender": "woman", "age": 32}``; it is parsed
strictly (:func:`parse_probe_answer`) and never guessed.

Calls go through :func:`audit.engine.complete` (purpose ``'probe'``, ``variant_id`` set), so they
are stored, cached and resumable. Parsed answers go to table ``probe``, one row per (request, axis)::

    request_key, variant_id, model_label, post_id, group, cue_type, axis,
    intended   the level the variant's cue was meant to signal (NULL for the control)
    inferred   the level the model named, 'unknown', or NULL when its answer was unparseable
    correct    1 / 0 when intended and a parseable answer exist, else NULL (age: same age band)
    status     'ok' | 'unparseable' | 'content_filter'
    detail     the reason and raw answer when unparseable

:func:`probe_summary` gives, per (model, cue type, axis), the share of variants whose intended
group the model recovered (``leak_rate``, with a Wilson 95% interval) beside ``base_rate``: how often
the model names that same group for the unmodified control post (a guess from no cue at all).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..errors import AuditError
from ..resources import sha256_file, templates_dir
from .judge import load_json_object, run_items, with_response_format

UNKNOWN = "unknown"


# --------------------------------------------------------------------------- the question file


@dataclass(frozen=True)
class ProbeAxis:
    name: str
    question: str
    kind: str                      # 'categorical' | 'years'
    options: tuple[str, ...] = ()
    bands: tuple[tuple[int, int], ...] = ()

    def band(self, years: int) -> int | None:
        for i, (lo, hi) in enumerate(self.bands):
            if lo <= years <= hi:
                return i
        return None


@dataclass(frozen=True)
class ProbeQuestions:
    version: str
    system: str
    user: str
    axes: dict[str, ProbeAxis]
    sha256: str

    def for_axes(self, axes: list[str], options: dict[str, list[str]]) -> "ProbeQuestions":
        """The questions restricted to ``axes``, categorical options taken from ``options`` where given."""
        out = {}
        for a in axes:
            ax = self.axes[a]
            opts = tuple(options.get(a) or ax.options)
            out[a] = ProbeAxis(ax.name, ax.question, ax.kind, opts, ax.bands)
        return ProbeQuestions(self.version, self.system, self.user, out, self.sha256)

    def messages(self, post: str) -> list[dict[str, str]]:
        qs, fmt = [], []
        for a in self.axes.values():
            if a.kind == "categorical":
                qs.append("- " + a.question.replace("{options}", ", ".join(f'"{o}"' for o in a.options) + ', or "unknown"'))
                fmt.append(f'"{a.name}": "<one of the options>"')
            else:
                qs.append("- " + a.question)
                fmt.append(f'"{a.name}": <whole number of years, or "unknown">')
        user = (self.user.replace("{{post}}", post).replace("{{questions}}", "\n".join(qs))
                .replace("{{format}}", "{" + ", ".join(fmt) + "}"))
        return [{"role": "system", "content": self.system.strip()}, {"role": "user", "content": user.strip()}]

    def schema(self) -> dict[str, Any]:
        props: dict[str, Any] = {}
        for a in self.axes.values():
            if a.kind == "categorical":
                props[a.name] = {"type": "string", "enum": [*a.options, UNKNOWN]}
            else:
                props[a.name] = {"anyOf": [{"type": "integer", "minimum": 0, "maximum": 130},
                                           {"type": "string", "enum": [UNKNOWN]}]}
        return {"type": "object", "properties": props, "required": list(self.axes), "additionalProperties": False}


def load_questions(path: str | Path | None = None) -> ProbeQuestions:
    from ..spec import read_yaml

    p = Path(path) if path else templates_dir() / "probe" / "questions.yaml"
    data, _ = read_yaml(p, "probe question")
    if not isinstance(data, dict) or not isinstance(data.get("axes"), dict) or not data["axes"]:
        raise AuditError("a probe question file needs 'system', 'user' and a mapping 'axes'", where=str(p),
                         fix="follow templates/probe/questions.yaml")
    for k in ("system", "user"):
        if not isinstance(data.get(k), str) or not data[k].strip():
            raise AuditError(f"probe question key '{k}' is missing or empty", where=str(p),
                             fix="follow templates/probe/questions.yaml")
    for ph in ("{{post}}", "{{questions}}", "{{format}}"):
        if ph not in data["user"]:
            raise AuditError(f"the probe 'user' text lacks the placeholder {ph}", where=f"{p}, key 'user'",
                             fix=f"put {ph} where it belongs")
    axes = {}
    for name, a in data["axes"].items():
        where = f"{p}, axes.{name}"
        if not isinstance(a, dict) or a.get("kind") not in ("categorical", "years") or not isinstance(a.get("question"), str):
            raise AuditError("each probe axis needs 'question' and 'kind' (categorical or years)", where=where,
                             fix="follow templates/probe/questions.yaml")
        bands: tuple[tuple[int, int], ...] = ()
        if a["kind"] == "years":
            raw = a.get("bands") or []
            if not raw or not all(isinstance(b, list) and len(b) == 2 and all(isinstance(x, int) for x in b) and b[0] <= b[1]
                                  for b in raw):
                raise AuditError("an axis of kind 'years' needs 'bands': a list of [low, high] years", where=where,
                                 fix="e.g. bands: [[18, 29], [30, 44], [45, 64], [65, 120]]")
            bands = tuple((int(b[0]), int(b[1])) for b in raw)
        axes[str(name)] = ProbeAxis(str(name), a["question"], a["kind"], tuple(str(o) for o in a.get("options") or ()), bands)
    return ProbeQuestions(str(data.get("version", 1)), data["system"], data["user"], axes, sha256_file(p))


# --------------------------------------------------------------------------- parsing


def parse_probe_answer(text: str | None, questions: ProbeQuestions) -> tuple[dict[str, str] | None, str | None]:
    """``({axis: level | 'unknown' | '<years>'}, None)`` or ``(None, reason)``. Strict, never guesses:
    exactly one JSON object (optionally in one code fence) with exactly the asked axes; categorical
    values must be one of the options (case-insensitive) or "unknown"; ages whole numbers or "unknown"."""
    obj, why = load_json_object(text)
    if obj is None:
        return None, why
    if not isinstance(obj, dict):
        return None, "answer is not a JSON object"
    if set(obj) != set(questions.axes):
        return None, f"wrong keys: expected {sorted(questions.axes)}, got {sorted(obj)}"
    out: dict[str, str] = {}
    for name, ax in questions.axes.items():
        v = obj[name]
        if isinstance(v, str) and v.strip().casefold() == UNKNOWN:
            out[name] = UNKNOWN
            continue
        if ax.kind == "categorical":
            match = [o for o in ax.options if isinstance(v, str) and v.strip().casefold() == o.casefold()]
            if not match:
                return None, f"{name}: {v!r} is not one of the options"
            out[name] = match[0]
        else:
            if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= 130:
                return None, f"{name}: {v!r} is not a whole number of years"
            out[name] = str(v)
    return out, None


def recovered(ax: ProbeAxis, intended: str | None, inferred: str | None) -> int | None:
    """1 when the answer names the intended group (age: the same band), 0 when not, None when n/a."""
    if intended is None or inferred is None:
        return None
    if inferred == UNKNOWN:
        return 0
    if ax.kind == "categorical":
        return int(inferred.casefold() == str(intended).casefold())
    try:
        want = ax.band(int(str(intended)))
    except ValueError:
        return None
    return int(want is not None and want == ax.band(int(inferred)))


# --------------------------------------------------------------------------- running


def probe_setup(spec: Any) -> tuple[Any, Any, str]:
    """(model, decoding, response_format) for the probe from the spec."""
    from ..spec import DecodingSpec, JudgeSpec

    pm = spec.scoring.probe_model
    if pm is not None:
        return pm.model, pm.decoding, pm.response_format
    default = JudgeSpec()
    return spec.models[0], DecodingSpec(temperature=0.0, max_tokens=default.decoding.max_tokens), default.response_format


def run_probe(spec: Any, store: Any, progress: bool = False, questions_path: str | Path | None = None) -> dict[str, Any]:
    """Ask the probe model about every variant in the store; parse new answers into table ``probe``.
    Returns counts. Stored answers are never re-asked or re-parsed."""
    store.ensure_stage_tables("probe")
    variants = store.variants_df()
    if variants.empty:
        return {"variants": 0}
    qs = load_questions(questions_path)
    axes = [a for a in qs.axes if a in variants.columns and variants[a].notna().any()]
    if not axes:
        return {"variants": len(variants), "asked": 0, "note": "no probe question for the run's axes"}
    options = {a: sorted({str(x) for x in variants[a].dropna()}) for a in axes if qs.axes[a].kind == "categorical"}
    qs = qs.for_axes(axes, options)
    model, decoding, rf = probe_setup(spec)
    model = with_response_format(model, rf, qs.schema(), "demographic_probe")
    items = [{"purpose": "probe", "variant_id": v, "messages": qs.messages(t)}
             for v, t in zip(variants["variant_id"], variants["text"])]
    answers = run_items(store, model, decoding, items, progress, "inference probe")
    done = store.probe_answered_keys()
    rows = []
    counts = {"variants": len(variants), "asked": len(items), "new": 0, "unparseable": 0, "pending": 0}
    for rec, a in zip(variants.to_dict("records"), answers):
        if a is None or a["status"] in (None, "failed"):
            counts["pending"] += 1
            continue
        if a["request_key"] in done:
            continue
        counts["new"] += 1
        if a["status"] == "content_filter":
            parsed, why, status = None, "content_filter", "content_filter"
        else:
            parsed, why = parse_probe_answer(a["text"], qs)
            status = "ok" if parsed else "unparseable"
        if status == "unparseable":
            counts["unparseable"] += 1
        detail = None if parsed else json.dumps({"reason": why, "raw": a.get("text")}, ensure_ascii=False)
        for ax in axes:
            intended = rec.get(ax)
            intended = None if rec.get("cue_type") == "control" or intended is None or (isinstance(intended, float) and math.isnan(intended)) else str(intended)
            inferred = parsed.get(ax) if parsed else None
            rows.append((a["request_key"], ax, rec["variant_id"], model.label, rec.get("post_id"), rec.get("group"),
                         rec.get("cue_type"), intended, inferred, recovered(qs.axes[ax], intended, inferred), status, detail))
    store.put_probe_answers(rows)
    store.set_meta("probe_questions_sha256", qs.sha256)
    return counts


def wilson(k: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """Wilson score interval for a proportion k/n."""
    if n == 0:
        return (float("nan"), float("nan"))
    p = k / n
    den = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / den
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return (max(0.0, centre - half), min(1.0, centre + half))


def probe_summary(store: Any) -> pd.DataFrame | None:
    """Per (model_label, cue_type, axis): ``n`` variants with a parseable answer, ``leak_rate`` (share
    whose intended group was recovered) with ``ci_low``/``ci_high`` (Wilson 95%), ``base_rate`` (share
    of the same posts' controls for which the model named the intended group anyway), ``unknown_rate``
    and ``unparseable`` (answers that could not be read). None when the probe has not run."""
    df = store.table_df("probe")
    if df is not None and store.current_design()[0] is not None:  # only the current design's variants
        df = df[df["variant_id"].isin(store.variants_df()["variant_id"])]
    if df is None or df.empty:
        return None
    qs = load_questions()
    ctrl = df[df["cue_type"] == "control"][["post_id", "model_label", "axis", "inferred"]].rename(
        columns={"inferred": "control_inferred"})
    cued = df[df["cue_type"] != "control"].merge(ctrl, on=["post_id", "model_label", "axis"], how="left")
    out = []
    for (model, cue, axis), g in cued.groupby(["model_label", "cue_type", "axis"], sort=True):
        ok = g[g["status"] == "ok"]
        ok = ok[ok["correct"].notna()]
        k, n = int(ok["correct"].sum()), len(ok)
        lo, hi = wilson(k, n)
        ax = qs.axes.get(axis) or ProbeAxis(axis, "", "categorical")
        base = [recovered(ax, i, c) for i, c in zip(ok["intended"], ok["control_inferred"]) if isinstance(c, str)]
        out.append({
            "model_label": model, "cue_type": cue, "axis": axis, "n": n,
            "leak_rate": k / n if n else np.nan, "ci_low": lo, "ci_high": hi,
            "base_rate": float(np.mean(base)) if base else np.nan,
            "unknown_rate": float((ok["inferred"] == UNKNOWN).mean()) if n else np.nan,
            "unparseable": int((g["status"] == "unparseable").sum()),
        })
    return pd.DataFrame(out)
