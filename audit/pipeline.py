"""The whole audit in one call: variants -> generate -> score -> analyze -> report.

:func:`run` takes an :class:`~audit.spec.AuditSpec` and a run directory and runs every stage in
order. Each stage resumes from the run store: variants are content-addressed (stored once), a
request whose reply is stored is never sent again, a stored score is never recomputed, the analysis
is skipped when its inputs (the scores and the spec's analysis settings) are unchanged since it last
ran, and the report is re-rendered from the store. So re-running a finished audit costs seconds, and
re-running an interrupted one picks up where it stopped.

Before the stages, the run records its provenance in the store's ``meta`` table: the spec file's
hash, the templates' and corpus's hashes, the cue sources, software versions, the command line and
timestamps. The report reads all of it from the store alone.

>>> from audit.spec import load_spec                                  # doctest: +SKIP
>>> from audit.pipeline import run                                    # doctest: +SKIP
>>> result = run(load_spec("analyses/demo.yaml"))                     # doctest: +SKIP
>>> result.paths["html"]                                              # doctest: +SKIP
PosixPath('reports/demo/report.html')
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from . import __version__
from .errors import AuditError
from .resources import sha256_file, templates_dir
from .store import RunStore, canonical_json, now_iso

STAGES = ("variants", "generate", "score", "analyze", "report")


@dataclass
class StageRecord:
    name: str
    status: str            # 'done' | 'skipped' | 'failed'
    seconds: float
    detail: str = ""
    summary: Any = None


@dataclass
class PipelineResult:
    run_dir: Path
    stages: list[StageRecord] = field(default_factory=list)
    paths: dict[str, Path] = field(default_factory=dict)
    unanswered: int = 0    # requests failed or not answered at the end (left out; retried by the next run)

    def stage(self, name: str) -> StageRecord | None:
        return next((s for s in self.stages if s.name == name), None)

    @property
    def ok(self) -> bool:
        """Every stage done or up to date, and every request answered."""
        return all(s.status in ("done", "skipped") for s in self.stages) and self.unanswered == 0


def _say(echo: Callable[[str], None] | None, text: str) -> None:
    if echo is not None:
        echo(text)


def _describe(summary: Any) -> str:
    """A one-line account of a stage's summary object, whatever its shape."""
    if summary is None:
        return ""
    for meth in ("line", "one_line", "short"):
        fn = getattr(summary, meth, None)
        if callable(fn):
            try:
                return str(fn())
            except Exception:  # noqa: BLE001 - a summary that cannot describe itself is not an error
                break
    if dataclasses.is_dataclass(summary):
        parts = []
        for f in dataclasses.fields(summary):
            v = getattr(summary, f.name)
            if isinstance(v, (int, float)) and not isinstance(v, bool) and f.name not in ("seconds",):
                parts.append(f"{f.name.replace('_', ' ')} {v:g}" if isinstance(v, float) else f"{f.name.replace('_', ' ')} {v}")
        return ", ".join(parts[:8])
    if isinstance(summary, dict):
        return ", ".join(f"{k} {v}" for k, v in list(summary.items())[:8] if isinstance(v, (int, float, str)))
    return ""


# --------------------------------------------------------------------------- provenance


def _hash_tree(path: Path) -> str | None:
    from .report.provenance import hash_tree

    return hash_tree(path)


def record_provenance(store: RunStore, spec: Any, run_dir: Path, spec_argument: str | None = None) -> None:
    """Write what the run is made of into ``meta`` (hashes, sources, versions, command, times)."""
    from .report.provenance import command_line, software_versions

    facts: dict[str, Any] = {
        "tool_version": __version__,
        "run_started_at": now_iso(),
        "run_dir": str(run_dir),
        "command_line": command_line(),
        "software_versions": software_versions(),
    }
    if spec.source_path:
        facts["spec_argument"] = spec_argument or str(spec.source_path)
        if Path(spec.source_path).exists():
            facts["spec_file_sha256"] = sha256_file(spec.source_path)
    tdir = spec.resolve(spec.demographics.templates) if spec.demographics.templates else templates_dir()
    facts["templates_path"] = str(tdir)
    th = _hash_tree(tdir)
    if th:
        facts["templates_sha256"] = th
    src = spec.posts.source
    if src == "builtin":
        from .corpus import BUILTIN_POSTS

        facts["corpus_source"] = f"builtin ({BUILTIN_POSTS.name})"
        facts["corpus_sha256"] = sha256_file(BUILTIN_POSTS)
    else:
        p = spec.resolve(src)
        facts["corpus_source"] = str(p)
        if p.exists():
            facts["corpus_sha256"] = _hash_tree(p)
    sources = _cue_sources(tdir)
    if sources:
        facts["cue_sources"] = sources
    with store.transaction() as c:
        for k, v in facts.items():
            c.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)",
                      (k, v if isinstance(v, str) else canonical_json(v)))
        c.execute("INSERT OR IGNORE INTO meta(key, value) VALUES ('first_run_at', ?)", (facts["run_started_at"],))


def _cue_sources(tdir: Path) -> dict[str, Any]:
    """{cue_type: {'source': text, 'alternatives': {id: source}}} from the template set, when it loads."""
    from .templates import load_templates

    try:
        ts = load_templates(tdir)
    except Exception:  # noqa: BLE001 - the variants stage reports bad templates with file and line
        return {}
    out: dict[str, Any] = {}
    for name, cf in ts.cues.items():
        alts = {}
        for item in (getattr(cf, "items", None) or []):
            if getattr(item, "source", None):
                alts[item.id] = item.source
        out[name] = {"source": " ".join(str(cf.source).split()), "alternatives": alts}
    return out


def _analysis_fingerprint(store: RunStore, spec: Any) -> str:
    """Hash of everything the analysis reads: the scores (with reply status) and the analysis settings."""
    h = hashlib.sha256()
    h.update(f"empathy-audit {__version__}\n".encode())  # a new version of the tool refits
    h.update(canonical_json(spec.analysis.model_dump(mode="json")).encode())
    for row in store.conn.execute(
        "SELECT s.request_key, s.scorer, s.measure, s.value, r.status FROM scores s "
        "LEFT JOIN replies r ON r.request_key = s.request_key ORDER BY s.request_key, s.scorer, s.measure"
    ):
        h.update(json.dumps(list(row)).encode())
    return h.hexdigest()


# --------------------------------------------------------------------------- the pipeline


def run(spec: Any, run_dir: str | Path | None = None, *, progress: bool = True,
        echo: Callable[[str], None] | None = print, spec_argument: str | None = None,
        force_analysis: bool = False) -> PipelineResult:
    """Run (or resume) the whole audit of ``spec`` in ``run_dir`` (default: ``spec.run_dir()``).

    Prints one line per stage through ``echo`` (``None``: silent) and returns the stage records and
    the report's paths. Raises :class:`~audit.errors.AuditError` for anything the user can fix;
    everything finished before the error stays stored, so the same call resumes.
    """
    rd = Path(spec.run_dir(run_dir))
    result = PipelineResult(run_dir=rd)
    t_all = time.perf_counter()
    with RunStore(rd) as store:
        store.put_spec(spec)
        record_provenance(store, spec, rd, spec_argument)
    _say(echo, f"empathy-audit {__version__}: audit '{spec.name}' in {rd}")

    def stage(name: str, fn: Callable[[], tuple[str, str, Any]]) -> StageRecord:
        t0 = time.perf_counter()
        status, detail, summary = fn()
        rec = StageRecord(name, status, time.perf_counter() - t0, detail, summary)
        result.stages.append(rec)
        with RunStore(rd) as st:
            st.set_meta(f"stage.{name}", f"{status} at {now_iso()} ({rec.seconds:.1f} s)")
        mark = {"done": "done", "skipped": "up to date",
                "failed": "FAILED"}.get(status, status)
        _say(echo, f"  {name:<9} {mark:<13} {rec.seconds:7.1f} s  {detail}".rstrip())
        return rec

    # 1. variants
    def _variants():
        from .counterfactual import build_variants

        df = build_variants(spec)
        with RunStore(rd) as st:
            added = st.put_variants(df)
            total = len(st.variants_df())
            th = df.attrs.get("templates_sha256") if hasattr(df, "attrs") else None
            if th:
                st.set_meta("templates_digest", th)
        posts = df["post_id"].nunique()
        return ("done" if added else "skipped",
                f"{len(df)} variants of {posts} posts ({added} new; {total} stored)", dict(added=added, total=total))

    stage("variants", _variants)

    # 2. generate
    def _generate():
        from .generate import generate
        with RunStore(rd) as st:
            before = len(st.done_keys("reply"))
        summ = generate(spec, rd, progress=progress)
        with RunStore(rd) as st:
            after = len(st.done_keys("reply"))
            reps = st.replies_df("reply")
        failed = int((reps["status"] == "failed").sum()) if not reps.empty else 0
        pending = int(reps["status"].isna().sum()) if not reps.empty else 0
        new = after - before
        detail = f"{len(reps)} requests: {after} answered ({new} new), {failed} failed, {pending} pending"
        extra = _describe(summ)
        return ("done" if new or failed or pending else "skipped", detail + (f" [{extra}]" if extra else ""), summ)

    stage("generate", _generate)

    # 3. score
    def _score():
        from .scoring import score_run
        with RunStore(rd) as st:
            n_ok = len(st.done_keys("reply"))
            before = st.conn.execute("SELECT COUNT(*) FROM scores").fetchone()[0]
        if n_ok == 0:
            return "skipped", "no answered replies to score", None
        summ = score_run(spec, rd, progress=progress)
        with RunStore(rd) as st:
            after = st.conn.execute("SELECT COUNT(*) FROM scores").fetchone()[0]
        detail = f"{after} scores stored ({after - before} new)"
        extra = []
        probe = getattr(summ, "probe", None)
        if probe:
            extra.append("probe " + _describe(probe))
        inv = getattr(summ, "invariance", None)
        if isinstance(inv, dict) and inv:
            extra.append("invariance: " + "; ".join(f"{k} {v.split(';')[0]}" for k, v in inv.items()))
        return ("done" if after > before else "skipped", detail + (f" [{' | '.join(extra)}]" if extra else ""), summ)

    stage("score", _score)

    # 4. analyze
    def _analyze():
        from . import stats  # looked up at call time (tests substitute analyze_run)

        analyze = stats.analyze_run
        with RunStore(rd) as st:
            n_scores = st.conn.execute("SELECT COUNT(*) FROM scores WHERE value IS NOT NULL").fetchone()[0]
            fp = _analysis_fingerprint(st, spec)
            same = (st.get_meta("analysis_inputs_sha256") == fp and "results" in st.table_names())
        if n_scores == 0:
            return "skipped", "no scores to analyse", None
        if same and not force_analysis:
            with RunStore(rd) as st:
                n = st.conn.execute("SELECT COUNT(*) FROM results").fetchone()[0]
            return "skipped", f"inputs unchanged; {n} stored tests", None
        try:
            res = analyze(spec, rd)
        except AuditError as exc:
            # The report is still worth writing (replies, scores, limitations); it states why
            # there are no results, and the command exits non-zero.
            with RunStore(rd) as st:
                st.set_meta("analysis_error", exc.message)
            return "failed", f"the analysis could not be fitted: {exc.message}", exc
        with RunStore(rd) as st:
            st.set_meta("analysis_inputs_sha256", fp)
            st.conn.execute("DELETE FROM meta WHERE key='analysis_error'")
        r = getattr(res, "results", None)
        if r is not None and len(r):
            sig = int(r["significant_holm"].fillna(False).astype(bool).sum()) if "significant_holm" in r else 0
            detail = f"{len(r)} tests in the family, {sig} significant after Holm correction"
        else:
            detail = "no tests"
        return "done", detail, res

    stage("analyze", _analyze)

    with RunStore(rd) as st:
        st.set_meta("run_finished_at", now_iso())

    # 5. report
    def _report():
        from .report import render

        paths = render(rd)
        result.paths.update(paths)
        size = paths["html"].stat().st_size
        return "done", f"{paths['html']} ({size / 1024:.0f} KiB), report.md, results.json, tables/", paths

    stage("report", _report)
    missing = [s.name for s in result.stages if s.status == "failed"]
    _say(echo, f"finished in {time.perf_counter() - t_all:.1f} s"
               + (f"; stages not done: {', '.join(missing)} (the report says so)" if missing else "")
               + f". Open {result.paths.get('html', rd / 'report.html')}")
    with RunStore(rd) as st:
        reps = st.replies_df("reply")
    if not reps.empty:
        failed = int((reps["status"] == "failed").sum())
        pending = int(reps["status"].isna().sum())
        result.unanswered = failed + pending
        if failed or pending:
            _say(echo, f"note: {failed} requests failed and {pending} are unanswered; they are left out of the "
                       f"analysis. Run the same command again to retry them.")
    return result
