"""The stage protocol: a suite is a list of stages run in order over one store; each stage reports
done / skipped / failed; an error stops the loop and is recorded; a new stage plugs in unchanged."""

from __future__ import annotations

import pytest

from audit.errors import AuditError
from audit.spec import spec_from_dict
from audit.stages import Stage, StageContext, StageSummary, run_stages
from audit.store import RunStore
from audit.suites import Suite, get_suite


class Counter:
    """A stage that counts the stored variants (reads only what earlier stages stored)."""

    name = "count"

    def run(self, ctx: StageContext) -> StageSummary:
        n = ctx.store.count_rows("variants")
        return StageSummary("done" if n else "skipped", f"{n} variants", n)


class Broken:
    name = "broken"

    def run(self, ctx: StageContext) -> StageSummary:
        raise AuditError("this stage cannot run", where="test", fix="none")


class NeverReached:
    name = "never"

    def run(self, ctx: StageContext) -> StageSummary:  # pragma: no cover - must not run
        raise AssertionError("a stage after an error ran")


def _ctx(tmp_path, store, lines):
    spec = spec_from_dict({"name": "t", "posts": {"limit": 2}, "demographics": {"axes": ["race"],
                           "cue_types": ["explicit_tag"], "alternatives": 1}})
    return StageContext(spec, tmp_path, store, progress=False, echo=lines.append)


def test_the_empathy_suite_lists_its_stages_in_order_and_each_follows_the_protocol():
    suite = get_suite("empathy")
    assert suite.stage_names == ["variants", "generate", "score", "analyze", "report"]
    assert all(isinstance(s, Stage) for s in suite.stages)
    with pytest.raises(AuditError, match="unknown audit suite"):
        get_suite("nope")


def test_a_new_stage_plugs_into_a_suite_and_sees_what_earlier_stages_stored(tmp_path):
    variants = get_suite("empathy").stages[0]
    lines: list[str] = []
    with RunStore(tmp_path) as store:
        ctx = _ctx(tmp_path, store, lines)
        recs = run_stages(Suite("mine", "variants then a count", (variants, Counter())).stages, ctx)
        assert [(r.name, r.status) for r in recs] == [("variants", "done"), ("count", "done")]
        n = len(ctx.summaries["variants"].data.frame)
        assert ctx.summaries["count"].data == n == 2 * (1 + 4)
        assert store.get_meta("stage.count").startswith("done at ")
        again = run_stages([variants, Counter()], ctx)       # resumes: nothing new to store
        assert [r.status for r in again] == ["skipped", "done"]
    assert any(line.split()[:2] == ["variants", "up"] for line in lines)


def test_an_error_stops_the_loop_is_recorded_and_keeps_what_was_stored(tmp_path):
    variants = get_suite("empathy").stages[0]
    with RunStore(tmp_path) as store:
        ctx = _ctx(tmp_path, store, [])
        with pytest.raises(AuditError, match="cannot run"):
            run_stages([variants, Broken(), NeverReached()], ctx)
        assert store.get_meta("stage.broken").startswith("error at ")
        assert store.get_meta("stage.never") is None
        assert store.count_rows("variants") == 10


def test_a_summary_must_have_a_known_status():
    with pytest.raises(ValueError, match="status"):
        StageSummary("finished")
